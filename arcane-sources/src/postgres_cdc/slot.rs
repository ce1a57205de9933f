//! The replication slot and the publication: created when missing, the position a stream
//! starts from, and the slot advanced to what the sink committed.

use std::time::Duration;

use arcane_core::{Error, Mode, Result, SourceStart};
use tokio_postgres::Client;

use super::client::{WorkResult, is_object_in_use, pg_err, quote_ident};
use super::config::Settings;
use super::pgoutput::Lsn;
use super::position::{PgPosition, SnapshotProgress};

/// How long a start waits for another connection to release the slot it must drop.
const SLOT_RELEASE_WAIT: Duration = Duration::from_secs(30);

/// What setting a stream up on the server needs to know besides the client.
pub(super) struct SlotSetup<'a> {
    pub(super) settings: &'a Settings,
    /// The source's name, for errors.
    pub(super) name: &'a str,
    /// The spec path of the source's settings, for config errors.
    pub(super) prefix: &'a str,
}

/// How the stream starts, decided before anything is created.
#[derive(Debug)]
pub(super) enum StartPlan {
    /// From a committed position (the slot exists).
    Resume(PgPosition),
    /// From an existing slot's position, without a snapshot.
    AtSlot(Lsn),
    /// At a new slot's consistent point, dropping the uncommitted slot of an earlier run
    /// first when `replace` (the snapshot and the slot must agree).
    NewSlot {
        /// An earlier run's slot that committed nothing is dropped first.
        replace: bool,
    },
}

/// What this run created, dropped again when the run is refused after creating it.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Created {
    pub(super) publication: bool,
    pub(super) slot: bool,
}

impl SlotSetup<'_> {
    pub(super) fn qualified(&self) -> String {
        format!("{}.{}", self.settings.schema, self.settings.table)
    }

    /// Create the publication (the checks found it missing and creatable).
    pub(super) async fn create_publication(&self, client: &Client) -> Result<()> {
        let cfg = &self.settings.config;
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE {}.{} WITH (publish = '{}')",
                quote_ident(&cfg.publication),
                quote_ident(&self.settings.schema),
                quote_ident(&self.settings.table),
                self.publish()
            ))
            .await
            .map_err(|e| pg_err(self.name, "creating the publication", e))?;
        tracing::info!(source = %self.name, publication = %cfg.publication, publish = self.publish(), "publication created");
        Ok(())
    }

    /// Where the stream starts: the resumed position (the slot must still exist), or a fresh
    /// one at a new slot's consistent point (with a snapshot to take) or at an existing slot's
    /// position. Nothing is created: a new slot is only checked for (a free one, `createSlot`).
    pub(super) async fn plan_start(
        &self,
        client: &Client,
        start: &SourceStart,
    ) -> Result<StartPlan> {
        let cfg = &self.settings.config;
        let (resume, _) = start.resume::<PgPosition>(self.name)?;
        let slot_row = client
            .query_opt(
                "SELECT confirmed_flush_lsn::text, plugin::text FROM pg_replication_slots \
                 WHERE slot_name = $1 AND database = current_database()",
                &[&cfg.slot],
            )
            .await
            .map_err(|e| pg_err(self.name, "reading replication slots", e))?;
        let slot_lsn = slot_row
            .as_ref()
            .and_then(|r| r.get::<_, Option<String>>(0))
            .and_then(|s| Lsn::parse(&s));
        let snapshot = cfg.snapshot || start.mode == Mode::Backfill;
        match (resume, slot_lsn) {
            (Some(pos), None) => Err(Error::source_permanent(
                self.name,
                format!(
                    "replication slot {} is missing, so the changes after the committed position {} are lost; backfill the stream (it creates a new slot)",
                    cfg.slot, pos.lsn
                ),
            )),
            // The slot moves only after the sink committed (to the committed position), so a
            // slot ahead of the committed position was moved by someone else: the changes in
            // between are gone from it.
            (Some(pos), Some(lsn)) if lsn > pos.lsn => Err(Error::source_permanent(
                self.name,
                format!(
                    "replication slot {} is at {lsn}, past this stream's committed position {}: another process advanced it (a second stream or backfill with the same slot, or pg_replication_slot_advance), so the changes between the two are no longer in the slot and would be missing from the output; backfill the stream (it takes a new snapshot), and give every stream its own slot",
                    cfg.slot, pos.lsn
                ),
            )),
            (Some(pos), Some(_)) => Ok(StartPlan::Resume(pos)),
            (None, Some(lsn)) if !snapshot => Ok(StartPlan::AtSlot(lsn)),
            (None, Some(_)) if !cfg.create_slot => Err(Error::config(
                format!("{}.createSlot", self.prefix),
                format!(
                    "slot {} exists but nothing was committed from it; a snapshot needs a new slot: drop it or set createSlot: true",
                    cfg.slot
                ),
            )),
            (None, Some(_)) => Ok(StartPlan::NewSlot { replace: true }),
            (None, None) if !cfg.create_slot => Err(Error::config(
                format!("{}.slot", self.prefix),
                format!(
                    "replication slot {} does not exist; create it (SELECT pg_create_logical_replication_slot('{}', 'pgoutput')) or set createSlot: true",
                    cfg.slot, cfg.slot
                ),
            )),
            (None, None) => {
                self.check_free_slot(client).await?;
                Ok(StartPlan::NewSlot { replace: false })
            }
        }
    }

    /// Carry out the plan (creating the slot when it says so, noted in `created`); the
    /// position the stream starts from.
    pub(super) async fn start_position(
        &self,
        client: &Client,
        plan: StartPlan,
        mode: Mode,
        created: &mut Created,
    ) -> Result<PgPosition> {
        let snapshot = self.settings.config.snapshot || mode == Mode::Backfill;
        let lsn = match plan {
            StartPlan::Resume(pos) => return Ok(pos),
            StartPlan::AtSlot(lsn) => lsn,
            StartPlan::NewSlot { replace } => {
                if replace {
                    self.drop_uncommitted_slot(client).await?;
                }
                let lsn = self.create_slot(client).await?;
                created.slot = true;
                lsn
            }
        };
        Ok(PgPosition {
            lsn,
            tx: None,
            snapshot: snapshot.then(SnapshotProgress::default),
            segments: Vec::new(),
        })
    }

    /// Drop what this run created (after a refusal that came later); failures are logged.
    pub(super) async fn undo(&self, client: &Client, created: &mut Created) {
        let cfg = &self.settings.config;
        if created.slot {
            match client
                .execute("SELECT pg_drop_replication_slot($1)", &[&cfg.slot])
                .await
            {
                Ok(_) => {
                    created.slot = false;
                    tracing::info!(source = %self.name, slot = %cfg.slot, "dropped the replication slot this run created")
                }
                Err(e) => {
                    tracing::warn!(source = %self.name, slot = %cfg.slot, error = %e, "could not drop the replication slot this run created; drop it by hand (SELECT pg_drop_replication_slot('{}')) or with `arcane retire`", cfg.slot)
                }
            }
        }
        if created.publication {
            let sql = format!(
                "DROP PUBLICATION IF EXISTS {}",
                quote_ident(&cfg.publication)
            );
            match client.batch_execute(&sql).await {
                Ok(()) => {
                    created.publication = false;
                    tracing::info!(source = %self.name, publication = %cfg.publication, "dropped the publication this run created")
                }
                Err(e) => {
                    tracing::warn!(source = %self.name, publication = %cfg.publication, error = %e, "could not drop the publication this run created; drop it by hand ({sql})")
                }
            }
        }
    }

    async fn drop_uncommitted_slot(&self, client: &Client) -> Result<()> {
        let cfg = &self.settings.config;
        tracing::warn!(source = %self.name, slot = %cfg.slot, "dropping the slot of an earlier run that committed nothing, to take a consistent snapshot");
        // The slot stays active until the backend of the run that held it has gone (a run that
        // was just stopped, or killed, whose connection the server has not yet seen close).
        let deadline = tokio::time::Instant::now() + SLOT_RELEASE_WAIT;
        loop {
            match client
                .execute("SELECT pg_drop_replication_slot($1)", &[&cfg.slot])
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_object_in_use(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) if is_object_in_use(&e) => {
                    let message = format!(
                        "dropping the old slot {}: it is still in use by another connection after {SLOT_RELEASE_WAIT:?} ({}); a stopped run's connection may still be closing (the next start retries), or a second run of this stream is running: stop it",
                        cfg.slot,
                        e.as_db_error()
                            .map_or_else(|| e.to_string(), |d| d.message().to_string())
                    );
                    return Err(Error::source_transient(self.name, message, e));
                }
                Err(e) => return Err(pg_err(self.name, "dropping the old slot", e)),
            }
        }
    }

    /// Create the slot; its consistent point is where the change stream starts.
    async fn create_slot(&self, client: &Client) -> Result<Lsn> {
        let cfg = &self.settings.config;
        let row = client
            .query_one(
                "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&cfg.slot],
            )
            .await
            .map_err(|e| {
                pg_err(
                    self.name,
                    "creating the replication slot (is wal_level = logical?)",
                    e,
                )
            })?;
        let lsn = Lsn::parse(row.get::<_, &str>(0)).unwrap_or_default();
        tracing::info!(source = %self.name, slot = %cfg.slot, consistent_point = %lsn, "replication slot created");
        Ok(lsn)
    }
}

/// Move the slot's confirmed position to `lsn` (not backwards).
pub(super) async fn advance_slot(client: &Client, slot: &str, lsn: Lsn) -> WorkResult<()> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    let confirmed = row
        .and_then(|r| r.get::<_, Option<String>>(0))
        .and_then(|s| Lsn::parse(&s));
    if confirmed.is_some_and(|c| c >= lsn) {
        return Ok(());
    }
    client
        .execute(
            "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
            &[&slot, &lsn.to_string()],
        )
        .await?;
    Ok(())
}
