//! Dead letters: records that cannot be processed, kept with the reason instead of being
//! dropped or stopping the stream.
//!
//! A source attaches the [`DeadLetter`]s of the records a batch consumed to that batch
//! ([`PositionedBatch::dead_letters`](crate::PositionedBatch)), so they travel with the
//! position that covers them: through grouping into the [`Group`](crate::Group), and into the
//! sink's commit. A sink that [stores dead letters](crate::Sink::stores_dead_letters) commits
//! them atomically with the rows (exactly once, like the rows: a resumed run does not write
//! them again); for other sinks the graph writes them to its [`DeadLetterSink`] before the
//! group is handed to the sink (at least once). Either way a dead letter is never lost, and the
//! run's [`DeadLetterTally`] judges them against the [`DeadLetterBudget`].

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
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

    /// `origin locator: reason`, for logs and error messages.
    pub fn describe(&self) -> String {
        format!("{} {}: {}", self.origin, self.locator, self.reason)
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

/// How many dead letters a run may produce before it is refused.
///
/// A dead letter is a record that was read but is not in the output; a run that exits 0 must
/// have every record it read committed, or dead-lettered **within this budget**. It is judged
/// before each group is written, over everything the run has read so far (rows plus dead
/// letters), and exceeded when
///
/// * more than `max_ratio × max(records read, min_records)` records were dead-lettered — a
///   share of what was read, with a floor so that a small run may have a few bad records
///   (with the defaults: up to 10 in a run of up to 1 000 records, then 1 %), or
/// * more than `max_count` records were dead-lettered (when set).
///
/// Exceeding it is [`Error::DeadLetterBudget`] (FATAL): the
/// group that crossed it is **not committed** (nor acknowledged upstream), so a rerun after
/// fixing the schema or the input reads those records again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeadLetterBudget {
    /// Largest tolerated share of dead letters among the records read, in `[0, 1]`.
    pub max_ratio: f64,
    /// Largest tolerated number of dead letters in one run (`None`: no absolute limit).
    pub max_count: Option<u64>,
    /// The ratio is taken of at least this many records, so that a run's first few records do
    /// not decide alone.
    pub min_records: u64,
}

/// Default [`DeadLetterBudget::max_ratio`]: 1 %.
pub const DEFAULT_MAX_DEAD_LETTER_RATIO: f64 = 0.01;
/// Default [`DeadLetterBudget::min_records`]: 1 000.
pub const DEFAULT_DEAD_LETTER_MIN_RECORDS: u64 = 1_000;
/// How many reasons the tally keeps for messages and summaries.
pub const DEAD_LETTER_REASONS_KEPT: usize = 5;

impl Default for DeadLetterBudget {
    fn default() -> Self {
        Self {
            max_ratio: DEFAULT_MAX_DEAD_LETTER_RATIO,
            max_count: None,
            min_records: DEFAULT_DEAD_LETTER_MIN_RECORDS,
        }
    }
}

impl DeadLetterBudget {
    /// A budget that never refuses (for tests and sinks that keep every letter on purpose).
    pub fn unlimited() -> Self {
        Self {
            max_ratio: 1.0,
            max_count: None,
            min_records: 0,
        }
    }
}

/// What a run has read and dead-lettered so far, shared by the graph and the sink (which adds
/// the rows it cannot convert), and judged against the [`DeadLetterBudget`].
///
/// Cheap to clone; clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterTally {
    inner: Arc<Mutex<TallyState>>,
    budget: DeadLetterBudget,
    labels: MetricLabels,
}

#[derive(Debug, Default, Clone)]
struct TallyState {
    /// Records read: rows handed to the sink plus dead letters from the source.
    records: u64,
    /// Dead letters (from the source and rejected by the sink).
    dead: u64,
    /// The first reasons, with where they came from.
    reasons: Vec<String>,
}

/// A snapshot of a [`DeadLetterTally`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterCounts {
    /// Records read (rows plus dead letters).
    pub records: u64,
    /// Dead letters.
    pub dead: u64,
    /// The first few reasons (`origin locator: reason`).
    pub reasons: Vec<String>,
}

impl DeadLetterTally {
    /// A tally judged against `budget`, whose metric carries `labels`.
    pub fn new(budget: DeadLetterBudget, labels: MetricLabels) -> Self {
        Self {
            inner: Arc::default(),
            budget,
            labels,
        }
    }

    /// The budget.
    pub fn budget(&self) -> DeadLetterBudget {
        self.budget
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, TallyState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count a group read from the source: `rows` rows and `letters` dead letters. Returns the
    /// budget error if this group takes the run over its budget.
    pub fn add_read(&self, rows: u64, letters: &[DeadLetter]) -> Result<()> {
        {
            let mut s = self.locked();
            s.records += rows + letters.len() as u64;
            s.dead += letters.len() as u64;
            keep_reasons(&mut s.reasons, letters);
        }
        if !letters.is_empty() {
            metrics::counter!(m::ROWS_DEAD_LETTERED, self.labels.to_vec())
                .increment(letters.len() as u64);
        }
        self.check()
    }

    /// Count rows the sink cannot convert (already counted as read by [`add_read`](Self::add_read)),
    /// then judge the budget.
    pub fn add_rejected(&self, letters: &[DeadLetter]) -> Result<()> {
        {
            let mut s = self.locked();
            s.dead += letters.len() as u64;
            keep_reasons(&mut s.reasons, letters);
        }
        if !letters.is_empty() {
            metrics::counter!(m::ROWS_DEAD_LETTERED, self.labels.to_vec())
                .increment(letters.len() as u64);
        }
        self.check()
    }

    /// Judge the budget over what was counted so far.
    pub fn check(&self) -> Result<()> {
        let s = self.locked().clone();
        let b = self.budget;
        let over_count = b.max_count.is_some_and(|max| s.dead > max);
        let allowed = b.max_ratio * s.records.max(b.min_records) as f64;
        let over_ratio = s.dead as f64 > allowed;
        if over_count || over_ratio {
            return Err(Error::DeadLetterBudget {
                dead: s.dead,
                records: s.records,
                max_ratio: b.max_ratio,
                max_count: b.max_count,
                reasons: s.reasons,
            });
        }
        Ok(())
    }

    /// The counts so far.
    pub fn counts(&self) -> DeadLetterCounts {
        let s = self.locked();
        DeadLetterCounts {
            records: s.records,
            dead: s.dead,
            reasons: s.reasons.clone(),
        }
    }
}

/// `dead / records`, 0 when nothing was read.
pub fn ratio(dead: u64, records: u64) -> f64 {
    if records == 0 {
        0.0
    } else {
        dead as f64 / records as f64
    }
}

fn keep_reasons(kept: &mut Vec<String>, letters: &[DeadLetter]) {
    for l in letters {
        if kept.len() >= DEAD_LETTER_REASONS_KEPT {
            return;
        }
        kept.push(l.describe());
    }
}
