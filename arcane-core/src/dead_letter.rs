//! Dead letters: records that cannot be processed, kept with the reason instead of being
//! dropped or stopping the stream.
//!
//! Sources push [`DeadLetter`]s into the [`DeadLetterQueue`] they get in
//! [`SourceStart`](crate::SourceStart); sinks may push rows they cannot convert. The graph writes
//! queued letters to its [`DeadLetterSink`] **before** it acks the checkpoint that covers them,
//! so a dead letter is never lost either.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::metrics::{self as m, MetricLabels};

/// One record that could not be processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Where it came from: file path, topic, table, URL (never secrets).
    pub origin: String,
    /// Where in the origin: `line 12`, `offset 41`, `row 3`.
    pub locator: String,
    /// Why it was rejected.
    pub reason: String,
    /// The raw record (or its first bytes), when available.
    pub payload: Option<String>,
}

impl DeadLetter {
    /// A dead letter without payload.
    pub fn new(
        origin: impl Into<String>,
        locator: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            origin: origin.into(),
            locator: locator.into(),
            reason: reason.into(),
            payload: None,
        }
    }

    /// Attach the raw record, truncated to 64 KiB.
    pub fn with_payload(mut self, payload: impl Into<String>) -> Self {
        let mut payload = payload.into();
        if payload.len() > MAX_PAYLOAD {
            let mut end = MAX_PAYLOAD;
            while !payload.is_char_boundary(end) {
                end -= 1;
            }
            payload.truncate(end);
        }
        self.payload = Some(payload);
        self
    }
}

const MAX_PAYLOAD: usize = 64 * 1024;

/// Where dead letters are written durably.
#[async_trait::async_trait]
pub trait DeadLetterSink: Send + Sync + Debug + 'static {
    /// Write `letters` durably (called before the covering checkpoint is acked).
    async fn write(&mut self, stream_id: &str, letters: Vec<DeadLetter>) -> Result<()>;
}

/// The default dead-letter sink: logs every letter at `warn` level.
#[derive(Debug, Default)]
pub struct LogDeadLetterSink;

#[async_trait::async_trait]
impl DeadLetterSink for LogDeadLetterSink {
    async fn write(&mut self, stream_id: &str, letters: Vec<DeadLetter>) -> Result<()> {
        for l in letters {
            tracing::warn!(
                stream_id,
                origin = %l.origin,
                locator = %l.locator,
                reason = %l.reason,
                "dead letter"
            );
        }
        Ok(())
    }
}

/// A cheap, cloneable queue of dead letters, drained by the graph.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterQueue {
    inner: Arc<Mutex<Vec<DeadLetter>>>,
    labels: MetricLabels,
}

impl DeadLetterQueue {
    /// A queue whose metric carries `labels`.
    pub fn new(labels: MetricLabels) -> Self {
        Self {
            inner: Arc::default(),
            labels,
        }
    }

    /// Queue a letter and count it in `arcane.stream.rows.dead_lettered`.
    pub fn push(&self, letter: DeadLetter) {
        metrics::counter!(m::ROWS_DEAD_LETTERED, self.labels.to_vec()).increment(1);
        if let Ok(mut q) = self.inner.lock() {
            q.push(letter);
        }
    }

    /// Take every queued letter.
    pub fn drain(&self) -> Vec<DeadLetter> {
        self.inner
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }

    /// Letters waiting to be written.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
