//! The [`Sink`] trait.

use std::fmt::Debug;

use crate::context::Mode;
use crate::dead_letter::DeadLetterTally;
use crate::error::Result;
use crate::metrics::MetricLabels;
use crate::position::{Checkpoint, Group};

/// What a sink is told when it is opened.
#[derive(Debug, Clone, Default)]
pub struct SinkContext {
    /// The stream's id, used in file names.
    pub stream_id: String,
    /// Streaming or backfill.
    pub mode: Mode,
    /// The backfill's id when backfilling.
    pub backfill_id: Option<String>,
    /// Tags for the sink's own metrics.
    pub labels: MetricLabels,
    /// The run's dead-letter tally: a sink that rejects rows it cannot convert counts them
    /// here ([`DeadLetterTally::add_rejected`]) and fails with its error when the budget is
    /// exceeded, before committing them.
    pub dead_letters: DeadLetterTally,
    /// The source's name, for messages about what it read.
    pub source_name: String,
}

/// What a sink made durable in one commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// Every row up to this checkpoint is durable.
    pub checkpoint: Checkpoint,
    /// Rows made durable by this commit.
    pub rows: u64,
    /// Bytes written by this commit (encoded).
    pub bytes: u64,
    /// Files (or objects) made visible by this commit.
    pub files: Vec<String>,
    /// Dead letters made durable by this commit (sinks that
    /// [store dead letters](Sink::stores_dead_letters)).
    pub dead_letters: u64,
}

/// A destination of grouped batches.
///
/// # Contract
///
/// * [`Sink::open`] recovers: it cleans up anything a crashed run left uncommitted and returns the
///   checkpoint of the last commit, which the source resumes from.
/// * [`Sink::write`] receives groups in order (one call per group of thousands of rows, not per
///   source batch), one call at a time; while a call runs, the graph reads and groups the next
///   group (at most one ahead). It may buffer; when it makes rows durable (e.g. closes a file)
///   it returns a [`Commit`] whose checkpoint covers every row written so far that is now
///   durable.
/// * [`Sink::flush`] makes everything written so far durable (graceful shutdown, end of a
///   backfill) and returns the commit, or `None` when nothing was pending.
/// * A commit and its checkpoint become durable **atomically** (manifest entry written with the
///   file), so that after a crash every row is either committed with its position or not at all.
/// * An incompatible schema is [`Error::SchemaMismatch`](crate::Error::SchemaMismatch), raised
///   after committing what came before.
/// * Dead letters: a sink that returns `true` from [`Sink::stores_dead_letters`] commits each
///   group's [`dead_letters`](Group::dead_letters) atomically with its rows (and counts them in
///   [`Commit::dead_letters`]); otherwise the graph writes them to its dead-letter sink before
///   the group is written. Rows the sink itself rejects are counted in
///   [`SinkContext::dead_letters`] and kept with the same guarantee.
#[async_trait::async_trait]
pub trait Sink: Send + Sync + Debug + 'static {
    /// A short name for logs and errors (kind and location, never secrets).
    fn name(&self) -> String;

    /// Recover and return the checkpoint to resume from.
    async fn open(&mut self, ctx: &SinkContext) -> Result<Option<Checkpoint>>;

    /// Write one group; return a commit when rows became durable.
    async fn write(&mut self, group: Group) -> Result<Option<Commit>>;

    /// Make everything written so far durable.
    async fn flush(&mut self) -> Result<Option<Commit>>;

    /// Called about once a second (and between groups) so the sink can commit what is due
    /// without new data, e.g. a file that reached its maximum age.
    async fn tick(&mut self) -> Result<Option<Commit>> {
        Ok(None)
    }

    /// Called once when the stream completes normally, after the final flush (e.g. switch the
    /// current generation at the end of an overwrite backfill).
    async fn finish(&mut self) -> Result<()> {
        Ok(())
    }

    /// Whether the sink commits groups' dead letters itself, atomically with the rows (exactly
    /// once). Default `false`: the graph writes them to its dead-letter sink (at least once).
    fn stores_dead_letters(&self) -> bool {
        false
    }

    /// After [`Sink::open`] in backfill mode: true when this backfill id already completed
    /// (e.g. its pod was restarted after the backfill finished, before it could exit). The
    /// graph then reads nothing and finishes at once; running it again would append the
    /// history twice. Default `false`.
    fn backfill_already_completed(&self) -> bool {
        false
    }
}

/// A boxed sink is a sink, so builders can choose one at run time.
#[async_trait::async_trait]
impl Sink for Box<dyn Sink> {
    fn name(&self) -> String {
        (**self).name()
    }

    async fn open(&mut self, ctx: &SinkContext) -> Result<Option<Checkpoint>> {
        (**self).open(ctx).await
    }

    async fn write(&mut self, group: Group) -> Result<Option<Commit>> {
        (**self).write(group).await
    }

    async fn flush(&mut self) -> Result<Option<Commit>> {
        (**self).flush().await
    }

    async fn tick(&mut self) -> Result<Option<Commit>> {
        (**self).tick().await
    }

    async fn finish(&mut self) -> Result<()> {
        (**self).finish().await
    }

    fn stores_dead_letters(&self) -> bool {
        (**self).stores_dead_letters()
    }

    fn backfill_already_completed(&self) -> bool {
        (**self).backfill_already_completed()
    }
}
