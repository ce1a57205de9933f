//! The worker behind a [`PostgresCdcSource`](super::PostgresCdcSource)'s stream: the snapshot,
//! then the change stream, reconnecting after a lost connection.

use std::sync::Arc;
use std::time::Duration;

use arcane_core::metrics::MetricLabels;
use arcane_core::{DeadLetter, Mode, Position, PositionedBatch, Result};
use tokio::sync::mpsc;
use tokio_postgres::Client;

use super::client::{WorkError, WorkResult, connect, is_transient, pg_err, quote_ident};
use super::config::Settings;
use super::position::PgPosition;
use super::rows::{RowsBuilder, TableInfo};
use super::source::Shared;

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
    pub(super) tx: mpsc::Sender<Result<PositionedBatch>>,
    /// Position after the last emitted row.
    pub(super) pos: PgPosition,
    /// Rows after `pos` to skip (the checkpoint's `rows`).
    pub(super) skip_rows: u64,
    pub(super) table: TableInfo,
    /// Relation column → output column, from the last Relation message.
    pub(super) mapping: Vec<Option<usize>>,
    pub(super) rows: RowsBuilder,
    /// The position last sent downstream.
    pub(super) sent: Option<PgPosition>,
}

/// Stop: the stream was dropped.
pub(super) struct Closed;

/// Go on, or stop because the stream was dropped.
pub(super) type Flow = std::result::Result<(), Closed>;

impl Worker {
    pub(super) async fn send(&mut self) -> Flow {
        let batch = match self.rows.finish() {
            Ok(b) => b,
            Err(e) => {
                let _ = self.tx.send(Err(e)).await;
                return Err(Closed);
            }
        };
        let position = match Position::encode(&self.pos) {
            Ok(p) => p,
            Err(e) => {
                let _ = self.tx.send(Err(e)).await;
                return Err(Closed);
            }
        };
        self.sent = Some(self.pos.clone());
        let letters = std::mem::take(&mut self.dead_letters);
        self.tx
            .send(Ok(
                PositionedBatch::new(batch, position).with_dead_letters(letters)
            ))
            .await
            .map_err(|_| Closed)
    }

    pub(super) async fn run(mut self) {
        let mut attempts = 0u32;
        let mut client: Option<Client> = None;
        loop {
            let result = async {
                let c = match client.take() {
                    Some(c) => c,
                    None => connect(&self.settings).await?,
                };
                let r = self.phases(&c).await;
                client = Some(c);
                r
            }
            .await;
            match result {
                Ok(Ok(())) | Ok(Err(Closed)) => return,
                Err(WorkError::Pg(e))
                    if is_transient(&e) && attempts < self.settings.config.reconnect_attempts =>
                {
                    attempts += 1;
                    client = None;
                    let wait =
                        Duration::from_secs(1 << attempts.min(5)).min(Duration::from_secs(30));
                    tracing::warn!(source = %self.name, error = %e, attempt = attempts, wait = ?wait, "postgres connection lost; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.tx.closed() => return,
                    }
                }
                Err(WorkError::Pg(e)) => {
                    let _ = self
                        .tx
                        .send(Err(pg_err(&self.name, "reading changes", e)))
                        .await;
                    return;
                }
                Err(WorkError::Typed(e)) => {
                    let _ = self.tx.send(Err(e)).await;
                    return;
                }
            }
        }
    }

    async fn phases(&mut self, client: &Client) -> WorkResult<Flow> {
        if self.pos.snapshot.is_some() {
            if let Err(closed) = self.snapshot(client).await? {
                return Ok(Err(closed));
            }
        }
        if self.mode == Mode::Backfill {
            return Ok(Ok(()));
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

pub(super) fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<PositionedBatch>>,
) -> impl futures::Stream<Item = Result<PositionedBatch>> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
