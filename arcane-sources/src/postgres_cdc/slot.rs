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

/// What [`start_position`] needs to know besides the client.
pub(super) struct SlotSetup<'a> {
    pub(super) settings: &'a Settings,
    /// The source's name, for errors.
    pub(super) name: &'a str,
    /// The spec path of the source's settings, for config errors.
    pub(super) prefix: &'a str,
}

impl SlotSetup<'_> {
    fn qualified(&self) -> String {
        format!("{}.{}", self.settings.schema, self.settings.table)
    }

    /// Create the publication when it is missing (or say how to).
    pub(super) async fn ensure_publication(&self, client: &Client) -> Result<()> {
        let cfg = &self.settings.config;
        let has_pub = client
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[&cfg.publication],
            )
            .await
            .map_err(|e| pg_err(self.name, "reading publications", e))?
            .is_some();
        if has_pub {
            return Ok(());
        }
        if !cfg.create_publication {
            return Err(Error::config(
                format!("{}.publication", self.prefix),
                format!(
                    "publication {} does not exist; create it (CREATE PUBLICATION {} FOR TABLE {}) or set createPublication: true",
                    cfg.publication,
                    cfg.publication,
                    self.qualified()
                ),
            ));
        }
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE {}.{}",
                quote_ident(&cfg.publication),
                quote_ident(&self.settings.schema),
                quote_ident(&self.settings.table)
            ))
            .await
            .map_err(|e| pg_err(self.name, "creating the publication", e))?;
        tracing::info!(source = %self.name, publication = %cfg.publication, "publication created");
        Ok(())
    }

    /// Where the stream starts: the resumed position (the slot must still exist), or a fresh
    /// one at a new slot's consistent point (with a snapshot to take) or at an existing slot's
    /// position. (The rows after it that the checkpoint covers are skipped by the output.)
    pub(super) async fn start_position(
        &self,
        client: &Client,
        start: &SourceStart,
    ) -> Result<PgPosition> {
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
        match resume {
            Some(pos) if slot_lsn.is_none() => Err(Error::source_permanent(
                self.name,
                format!(
                    "replication slot {} is missing, so the changes after the committed position {} are lost; backfill the stream (it creates a new slot)",
                    cfg.slot, pos.lsn
                ),
            )),
            Some(pos) => Ok(pos),
            None => self.fresh_position(client, slot_lsn, start.mode).await,
        }
    }

    /// Nothing committed yet. A slot left by an earlier run that committed nothing is
    /// recreated so that the snapshot and the slot agree.
    async fn fresh_position(
        &self,
        client: &Client,
        slot_lsn: Option<Lsn>,
        mode: Mode,
    ) -> Result<PgPosition> {
        let cfg = &self.settings.config;
        let snapshot = cfg.snapshot || mode == Mode::Backfill;
        let lsn = match slot_lsn {
            Some(lsn) if !snapshot => lsn,
            Some(_) => {
                self.drop_uncommitted_slot(client).await?;
                self.create_slot(client).await?
            }
            None => self.create_slot(client).await?,
        };
        Ok(PgPosition {
            lsn,
            tx: None,
            snapshot: snapshot.then_some(SnapshotProgress { after_pk: None }),
            segments: Vec::new(),
        })
    }

    async fn drop_uncommitted_slot(&self, client: &Client) -> Result<()> {
        let cfg = &self.settings.config;
        if !cfg.create_slot {
            return Err(Error::config(
                format!("{}.createSlot", self.prefix),
                format!(
                    "slot {} exists but nothing was committed from it; a snapshot needs a new slot: drop it or set createSlot: true",
                    cfg.slot
                ),
            ));
        }
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
        if !cfg.create_slot {
            return Err(Error::config(
                format!("{}.slot", self.prefix),
                format!(
                    "replication slot {} does not exist; create it (SELECT pg_create_logical_replication_slot('{}', 'pgoutput')) or set createSlot: true",
                    cfg.slot, cfg.slot
                ),
            ));
        }
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
