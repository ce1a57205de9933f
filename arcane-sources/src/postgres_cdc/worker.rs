//! The worker behind a [`PostgresCdcSource`](super::PostgresCdcSource)'s stream: the snapshot,
//! then the change stream, reconnecting after a lost connection. It runs under
//! [`spawn_source`](crate::runtime::spawn_source): dropping the stream stops it (and closes its
//! connection), and its [`Output`] skips the rows a resumed checkpoint covers.

use std::sync::Arc;
use std::time::Duration;

use arcane_core::metrics::MetricLabels;
use arcane_core::{DeadLetter, Mode, Position, Result};
use tokio_postgres::Client;

use super::client::{WorkError, WorkResult, connect, is_transient, pg_err, quote_ident};
use super::config::Settings;
use super::position::PgPosition;
use super::rows::{RowsBuilder, TableInfo};
use super::source::Shared;
use crate::runtime::Output;

/// The worker behind the stream: snapshot, then the change stream.
pub(super) struct Worker {
    pub(super) settings: Settings,
    pub(super) name: String,
    pub(super) qualified: String,
    pub(super) mode: Mode,
    pub(super) labels: MetricLabels,
    /// Rows dead-lettered since the last batch was sent (they travel with its position).
    pub(super) dead_letters: Vec<DeadLetter>,
    pub(super) shared: Arc<Shared>,
    /// Where batches go.
    pub(super) out: Output,
    /// Position after the last emitted row.
    pub(super) pos: PgPosition,
    pub(super) table: TableInfo,
    /// Relation column → output column, from the last Relation message.
    pub(super) mapping: Vec<Option<usize>>,
    pub(super) rows: RowsBuilder,
    /// The position last sent downstream.
    pub(super) sent: Option<PgPosition>,
}

impl Worker {
    /// Emit the rows collected since the last batch, ending at the current position, with the
    /// dead letters of the records they consumed.
    pub(super) async fn send(&mut self) -> WorkResult<()> {
        let batch = self.rows.finish()?;
        let position = Position::encode(&self.pos)?;
        self.sent = Some(self.pos.clone());
        let letters = std::mem::take(&mut self.dead_letters);
        self.out.emit(batch, position, letters).await?;
        Ok(())
    }

    /// Run until the stream is dropped (or, in backfill mode, the snapshot is read).
    pub(super) async fn run(mut self) -> Result<()> {
        let mut attempts = 0u32;
        loop {
            let result = match connect(&self.settings).await {
                Ok(c) => self.phases(&c).await,
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(()) | Err(WorkError::Closed) => return Ok(()),
                Err(WorkError::Pg(e))
                    if is_transient(&e) && attempts < self.settings.config.reconnect_attempts =>
                {
                    attempts += 1;
                    let wait =
                        Duration::from_secs(1 << attempts.min(5)).min(Duration::from_secs(30));
                    tracing::warn!(source = %self.name, error = %e, attempt = attempts, wait = ?wait, "postgres connection lost; reconnecting");
                    tokio::time::sleep(wait).await;
                }
                Err(WorkError::Pg(e)) => return Err(pg_err(&self.name, "reading changes", e)),
                Err(e) => return Err(e.into_error(&self.name, "reading changes")),
            }
        }
    }

    async fn phases(&mut self, client: &Client) -> WorkResult<()> {
        if self.pos.snapshot.is_some() {
            self.snapshot(client).await?;
        }
        if self.mode == Mode::Backfill {
            return Ok(());
        }
        self.stream(client).await
    }

    pub(super) fn qualified_sql(&self) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.settings.schema),
            quote_ident(&self.settings.table)
        )
    }

    pub(super) fn dead_letter(&mut self, locator: &str, reason: String) {
        tracing::warn!(source = %self.name, locator, reason = %reason, "row dead-lettered");
        self.dead_letters
            .push(DeadLetter::new(self.qualified.clone(), locator, reason));
    }
}
