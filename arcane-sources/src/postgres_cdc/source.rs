//! [`PostgresCdcSource`]: the settings turned into a [`Source`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arcane_core::retry::retry;
use arcane_core::{
    Checkpoint, Error, Mode, PositionedStream, Result, Shard, ShardBoard, Source, SourceStart,
};
use tokio_postgres::Client;

use super::client::{PgConn, connect, pg_err, quote_ident, slot_busy};
use super::config::{PostgresCdcSourceConfig, Settings};
use super::pgoutput::Lsn;
use super::position::PgPosition;
use super::replication::Feedback;
use super::rows::{RowsBuilder, TableInfo, table_info};
use super::shards::{PLAN, ShardPlan, Sharding, plan_lock};
use super::slot::{Created, SlotSetup, advance_slot};
use super::worker::{Worker, gave_up, is_retryable};
use crate::runtime::spawn_source;

/// Gauge: bytes of WAL between the server's current position and the slot's committed position.
pub const REPLICATION_LAG_BYTES: &str = "arcane.source.postgres.replication_lag_bytes";
/// Gauge: seconds between now and the commit time of the last transaction read (0 when caught up).
pub const REPLICATION_LAG_SECONDS: &str = "arcane.source.postgres.replication_lag_seconds";
/// Gauge: bytes of WAL the slot keeps on the server (server position minus the slot's
/// `restart_lsn`): what the stream pins on the database's disk.
pub const SLOT_RETAINED_WAL_BYTES: &str = "arcane.source.postgres.slot_retained_wal_bytes";

/// How long a commit waits for the replication connection to write the status update that
/// confirms it, before it advances the slot itself.
const CONFIRM_WAIT: Duration = Duration::from_secs(2);

/// How often a commit tries (100 ms apart) to advance a slot another connection still holds.
const SLOT_BUSY_ATTEMPTS: usize = 50;

/// The PostgreSQL change-data-capture source; see the [module docs](super).
#[derive(Debug)]
pub struct PostgresCdcSource {
    settings: Settings,
    prefix: String,
    /// What the replication connection reports to the server; the sink's commits move it.
    feedback: Arc<Feedback>,
    ack_client: Option<PgConn>,
    /// What an attempt of `open` created and could not drop again (its connection failed):
    /// dropped by a later attempt's refusal, or when `open` gives up.
    created: Mutex<Created>,
    /// One shard of a sharded backfill.
    sharding: Option<Sharding>,
}

impl PostgresCdcSource {
    /// A source from its settings; errors name `spec.source.<field>`.
    pub fn new(config: PostgresCdcSourceConfig) -> Result<Self> {
        Self::new_at(config, "spec.source")
    }

    /// A source whose config errors name `{prefix}.<field>`.
    pub fn new_at(config: PostgresCdcSourceConfig, prefix: &str) -> Result<Self> {
        Ok(Self {
            settings: config.validate(prefix)?,
            prefix: prefix.to_string(),
            feedback: Arc::default(),
            ack_client: None,
            created: Mutex::new(Created::default()),
            sharding: None,
        })
    }

    /// This source as shard `shard` of a sharded backfill, sharing the plan of the table's
    /// split with the other shards through `board` (see "Sharded backfills" in the
    /// [module docs](super)).
    pub fn with_shard(mut self, shard: Shard, board: Arc<dyn ShardBoard>) -> Self {
        self.sharding = Some(Sharding { shard, board });
        self
    }

    fn qualified(&self) -> String {
        format!("{}.{}", self.settings.schema, self.settings.table)
    }

    /// Read the table's shape, check everything the run needs (nothing is created before the
    /// run can proceed), then create what is missing (the publication, the slot) and find the
    /// position to start from. A refusal after creating something drops what this run
    /// created (in this attempt or an earlier one).
    async fn prepare(&self, name: &str, start: &SourceStart) -> Result<(TableInfo, PgPosition)> {
        let client = connect(&self.settings)
            .await
            .map_err(|e| e.into_error(name, "connecting"))?;
        let info = table_info(&client, name, &self.settings.schema, &self.settings.table)
            .await
            .map_err(|e| e.into_error(name, "reading the table's columns"))?;
        let setup = SlotSetup {
            settings: &self.settings,
            name,
            prefix: &self.prefix,
        };
        let checked = setup.preflight(&client, &info).await?;
        if let Some(sharding) = &self.sharding
            && start.resume::<PgPosition>(name)?.0.is_none()
        {
            let pos = self
                .shard_start(&setup, &client, &info, sharding, start)
                .await?;
            return Ok((info, pos));
        }
        let plan = setup.plan_start(&client, start).await?;
        let mut created = self.take_created();
        let result = async {
            if checked.create_publication {
                setup.create_publication(&client).await?;
                created.publication = true;
            }
            setup
                .start_position(&client, plan, start.mode, &mut created)
                .await
        }
        .await;
        match result {
            Ok(pos) => Ok((info, pos)),
            Err(e) => {
                setup.undo(&client, &mut created).await;
                self.keep_created(created);
                Err(e)
            }
        }
    }

    /// Where a shard of a sharded backfill starts when its own lineage has no checkpoint: its
    /// range of the plan. Under an advisory lock on the slot's name (the shards of one backfill
    /// wait for each other here), the plan is read from the board, or, by the first shard to
    /// get here, made: the publication and the slot created as an unsharded start would, the
    /// table split, the plan written put-if-absent. A shard that finds the plan checks that the
    /// slot is still at the plan's consistent point.
    async fn shard_start(
        &self,
        setup: &SlotSetup<'_>,
        client: &Client,
        info: &TableInfo,
        sharding: &Sharding,
        start: &SourceStart,
    ) -> Result<PgPosition> {
        let name = setup.name;
        let lock = plan_lock(&self.settings.config.slot);
        client
            .execute("SELECT pg_advisory_lock($1)", &[&lock])
            .await
            .map_err(|e| pg_err(name, "waiting for the sharded backfill's plan lock", e))?;
        let result = self.shard_plan(setup, client, info, sharding, start).await;
        if let Err(e) = client
            .execute("SELECT pg_advisory_unlock($1)", &[&lock])
            .await
        {
            tracing::warn!(source = %name, error = %e, "could not release the sharded backfill's plan lock; it is released when this connection closes");
        }
        let plan = result?;
        let index = sharding.shard.index();
        let pos = plan.start(index);
        tracing::info!(source = %name, shard = index, shards = sharding.shard.count(), consistent_point = %plan.consistent_point, after_key = ?pos.snapshot.as_ref().and_then(|s| s.after_key.clone()), until_key = ?pos.snapshot.as_ref().and_then(|s| s.until_key.clone()), next_block = ?pos.snapshot.as_ref().and_then(|s| s.next_block), until_block = ?pos.snapshot.as_ref().and_then(|s| s.until_block), "this shard's part of the table");
        Ok(pos)
    }

    /// The plan, read or (first shard) made; see [`shard_start`](Self::shard_start).
    async fn shard_plan(
        &self,
        setup: &SlotSetup<'_>,
        client: &Client,
        info: &TableInfo,
        sharding: &Sharding,
        start: &SourceStart,
    ) -> Result<ShardPlan> {
        let name = setup.name;
        let (table, slot) = (self.qualified(), self.settings.config.slot.clone());
        let at = sharding.board.location(PLAN);
        if let Some(bytes) = sharding.board.get(PLAN).await? {
            let plan = ShardPlan::parse(&bytes, &at, name, (&table, &slot), sharding.shard)?;
            let row = client
                .query_opt(
                    "SELECT confirmed_flush_lsn::text FROM pg_replication_slots                      WHERE slot_name = $1 AND database = current_database()",
                    &[&slot],
                )
                .await
                .map_err(|e| pg_err(name, "reading replication slots", e))?;
            let confirmed = row
                .and_then(|r| r.get::<_, Option<String>>(0))
                .and_then(|s| Lsn::parse(&s));
            return match confirmed {
                None => Err(Error::source_permanent(
                    name,
                    format!(
                        "replication slot {slot}, created for this sharded backfill at {} (plan {at}), is gone, so the changes after it would be lost; start a new backfill (another backfill id)",
                        plan.consistent_point
                    ),
                )),
                Some(lsn) if lsn > plan.consistent_point => Err(Error::source_permanent(
                    name,
                    format!(
                        "replication slot {slot} was advanced to {lsn} past this sharded backfill's consistent point {} (plan {at}): a streaming run of the stream ran during the backfill, and the changes in between are no longer in the slot; stop the streaming run and start a new backfill (another backfill id)",
                        plan.consistent_point
                    ),
                )),
                Some(_) => Ok(plan),
            };
        }
        // Checked again under the lock: a shard killed after creating the publication but
        // before writing the plan left it behind since this shard's first check.
        let checked = setup.preflight(client, info).await?;
        let mut created = self.take_created();
        let result = async {
            if checked.create_publication {
                setup.create_publication(client).await?;
                created.publication = true;
            }
            let slot_plan = setup.plan_start(client, start).await?;
            let pos = setup
                .start_position(client, slot_plan, Mode::Backfill, &mut created)
                .await?;
            let plan = ShardPlan::make(
                client,
                name,
                info,
                &format!(
                    "{}.{}",
                    quote_ident(&self.settings.schema),
                    quote_ident(&self.settings.table)
                ),
                (&table, &slot),
                sharding.shard.count(),
                pos.lsn,
            )
            .await?;
            let bytes = serde_json::to_vec_pretty(&plan)
                .map_err(|e| Error::fatal(format!("cannot encode the shard plan: {e}")))?;
            if !sharding.board.put_if_absent(PLAN, bytes).await? {
                return Err(Error::source_transient(
                    name,
                    format!("another process wrote the sharded backfill's plan {at} while this one held the plan lock: two backfills of this stream with the same backfill id against different slots? the next start reads the plan"),
                    std::io::Error::other("plan written concurrently"),
                ));
            }
            tracing::info!(source = %name, plan = %at, shards = plan.shards, consistent_point = %plan.consistent_point, bounds = ?plan.bounds, blocks = ?plan.blocks, "sharded backfill planned: the slot is created and the table split");
            Ok(plan)
        }
        .await;
        if result.is_err() {
            // Once the plan is written the slot is the backfill's, never dropped by a shard.
            setup.undo(client, &mut created).await;
            self.keep_created(created);
        }
        result
    }

    fn take_created(&self) -> Created {
        self.created
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }

    fn keep_created(&self, created: Created) {
        if let Ok(mut c) = self.created.lock() {
            *c = created;
        }
    }

    /// `open` gave up: drop what its attempts created and could not drop (best effort).
    async fn undo_created(&self, name: &str) {
        let mut created = self.take_created();
        if !(created.slot || created.publication) {
            return;
        }
        let setup = SlotSetup {
            settings: &self.settings,
            name,
            prefix: &self.prefix,
        };
        match connect(&self.settings).await {
            Ok(client) => setup.undo(&client, &mut created).await,
            Err(e) => {
                let e = e.into_error(name, "connecting");
                tracing::warn!(source = %name, error = %e, ?created, "cannot connect to drop what this run created; drop it with `arcane retire`")
            }
        }
    }
}

#[async_trait::async_trait]
impl Source for PostgresCdcSource {
    fn name(&self) -> String {
        format!(
            "postgres-cdc {} (slot {})",
            self.qualified(),
            self.settings.config.slot
        )
    }

    async fn open(&mut self, start: SourceStart) -> Result<PositionedStream> {
        let name = self.name();
        let this = &*self;
        let prepared = retry(
            &self.settings.config.retry,
            "connecting to PostgreSQL",
            || this.prepare(&name, &start),
            is_retryable,
            None,
        )
        .await;
        let (info, pos) = match prepared {
            Ok(ok) => ok,
            Err(exhausted) => {
                self.undo_created(&name).await;
                return Err(gave_up(&name, exhausted));
            }
        };
        if pos.snapshot.is_none() {
            // Committed already: the resumed position, or the slot's own.
            self.feedback.committed(pos.lsn);
        }
        let (settings, feedback) = (self.settings.clone(), self.feedback.clone());
        let qualified = self.qualified();
        let (mode, labels) = (start.mode, start.labels.clone());
        Ok(spawn_source(&name.clone(), &start, 2, move |out| {
            Worker {
                settings,
                name,
                qualified,
                mode,
                labels,
                dead_letters: Vec::new(),
                feedback,
                out,
                pos,
                mapping: (0..info.columns.len()).map(Some).collect(),
                rows: RowsBuilder::new(&info.columns),
                table: info,
                sent: None,
                emitted: 0,
                retained_warned: None,
            }
            .run()
        }))
    }

    async fn commit(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let name = self.name();
        let Some(pos) = checkpoint.decode::<PgPosition>(&name)? else {
            return Ok(());
        };
        if pos.snapshot.is_some() {
            return Ok(());
        }
        // While a replication connection holds the slot, its status update moves it; when the
        // connection is gone (or going: the stream was just dropped), the slot is advanced here.
        self.feedback.committed(pos.lsn);
        if self.feedback.confirmed(pos.lsn, CONFIRM_WAIT).await {
            return Ok(());
        }
        if self.ack_client.as_ref().is_none_or(|c| c.is_closed()) {
            let settings = &self.settings;
            let conn = retry(
                &settings.config.retry,
                "connecting to PostgreSQL to advance the slot",
                || async {
                    connect(settings)
                        .await
                        .map_err(|e| e.into_error(&name, "connecting to advance the slot"))
                },
                is_retryable,
                None,
            )
            .await
            .map_err(|exhausted| gave_up(&name, exhausted))?;
            self.ack_client = Some(conn);
        }
        let Some(client) = self.ack_client.as_ref() else {
            return Ok(());
        };
        // A replication connection that just ended can hold the slot a moment longer; retry,
        // then leave it to the next stream's status updates. The target is the highest
        // position committed so far (a later commit may have raised it meanwhile).
        let slot = &self.settings.config.slot;
        for _ in 0..SLOT_BUSY_ATTEMPTS {
            match advance_slot(client, slot, self.feedback.committed_lsn()).await {
                Ok(()) => return Ok(()),
                Err(e) if slot_busy(&e) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => return Err(e.into_error(&name, "advancing the replication slot")),
            }
        }
        // Nothing is lost: the output holds the position; the server only keeps the WAL
        // after the slot's position until the next run confirms it.
        tracing::warn!(source = %name, slot = %slot, committed = %self.feedback.committed_lsn(), "the replication slot stayed in use by another connection; it is advanced to the committed position by the stream's next start");
        Ok(())
    }
}
