//! The worker behind a [`PostgresCdcSource`](super::PostgresCdcSource)'s stream: the snapshot,
//! then the change stream, reconnecting after a lost connection. It runs under
//! [`spawn_source`](crate::runtime::spawn_source): dropping the stream stops it (and closes its
//! connection), and its [`Output`] skips the rows a resumed checkpoint covers.

use std::sync::Arc;

use arcane_core::error::Report;
use arcane_core::metrics::MetricLabels;
use arcane_core::retry::{Exhausted, retry};
use arcane_core::{DeadLetter, Error, Mode, Position, Result, Retry};
use tokio_postgres::Client;

use super::client::{WorkError, WorkResult, connect, quote_ident};
use super::config::Settings;
use super::position::PgPosition;
use super::replication::Feedback;
use super::rows::{RowsBuilder, TableInfo};
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
    /// The positions reported on the replication connection.
    pub(super) feedback: Arc<Feedback>,
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
    /// Batches emitted so far (progress, which renews the retry budget).
    pub(super) emitted: u64,
    /// When the retained-WAL warning was last logged.
    pub(super) retained_warned: Option<std::time::Instant>,
}

/// How an attempt ended without an error the retry policy counts.
enum Attempt {
    /// The stream was dropped, or the backfill is done.
    Done,
    /// The connection failed transiently after the attempt made progress.
    Lost(Error),
}

/// Whether a retry may help.
pub(super) fn is_retryable(e: &Error) -> bool {
    matches!(
        e,
        Error::Source {
            retry: Retry::Transient,
            ..
        }
    )
}

/// The error once the retry budget is spent: transient (RESTART), with the last error as its
/// cause; a permanent error is returned as it is (FATAL).
pub(super) fn gave_up(name: &str, exhausted: Exhausted<Error>) -> Error {
    if !exhausted.transient {
        return exhausted.error;
    }
    Error::Source {
        source_name: name.to_string(),
        message: format!(
            "gave up after {} attempts in {:.1}s (spec.source.retry); nothing after the last commit was acknowledged, so the restarted stream resumes from there",
            exhausted.attempts,
            exhausted.elapsed.as_secs_f64()
        ),
        retry: Retry::Transient,
        source: Some(Box::new(exhausted.error)),
    }
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
        self.emitted += 1;
        Ok(())
    }

    /// Run until the stream is dropped (or, in backfill mode, the snapshot is read).
    ///
    /// Each connection is an attempt under the spec's `retry` policy: a transient failure
    /// (lost connection, server restarting, refused connection) is logged at WARN and retried
    /// with backoff; a permanent one (authentication, permissions, a missing table) ends the
    /// stream at once. The attempt budget starts afresh once an attempt has emitted something,
    /// so a stream that keeps making progress survives any number of separate outages.
    pub(super) async fn run(self) -> Result<()> {
        let policy = self.settings.config.retry;
        let name = self.name.clone();
        let worker = &tokio::sync::Mutex::new(self);
        loop {
            let attempt = || async move { worker.lock().await.attempt().await };
            match retry(&policy, "reading PostgreSQL", attempt, is_retryable, None).await {
                Ok(Attempt::Done) => return Ok(()),
                // `maxAttempts: 1` disables retries, progress or not.
                Ok(Attempt::Lost(e)) if policy.max_attempts <= 1 => return Err(e),
                Ok(Attempt::Lost(e)) => {
                    tracing::warn!(source = %name, error = %Report(&e), "connection lost after progress; reconnecting with a fresh retry budget");
                }
                Err(exhausted) => return Err(gave_up(&name, exhausted)),
            }
        }
    }

    /// One connection's worth of work: connect, then the snapshot and the change stream.
    async fn attempt(&mut self) -> Result<Attempt> {
        let emitted = self.emitted;
        let conn = connect(&self.settings)
            .await
            .map_err(|e| e.into_error(&self.name, "connecting"))?;
        let what = |w: &Self| {
            if w.pos.snapshot.is_some() {
                "reading the snapshot"
            } else {
                "reading changes"
            }
        };
        match self.phases(&conn).await {
            Ok(()) | Err(WorkError::Closed) => Ok(Attempt::Done),
            Err(e) => {
                let e = e.into_error(&self.name, what(self));
                if self.emitted > emitted && is_retryable(&e) {
                    Ok(Attempt::Lost(e))
                } else {
                    Err(e)
                }
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
