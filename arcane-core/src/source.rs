//! The [`Source`] trait.

use std::fmt::Debug;
use std::pin::Pin;

use arrow_schema::SchemaRef;
use futures::Stream;

use crate::context::Mode;
use crate::error::Result;
use crate::metrics::MetricLabels;
use crate::position::{Checkpoint, PositionedBatch};

/// The stream of positioned batches a source yields. Dropping it cancels the source's work.
pub type PositionedStream = Pin<Box<dyn Stream<Item = Result<PositionedBatch>> + Send + 'static>>;

/// What a source is told when it is opened.
#[derive(Debug, Clone, Default)]
pub struct SourceStart {
    /// Where to resume: the checkpoint the sink recovered from its manifest, or `None` to start
    /// from the beginning (backfill) or from "now" (streaming, source-defined).
    pub resume_from: Option<Checkpoint>,
    /// Streaming or backfill.
    pub mode: Mode,
    /// Tags for the source's own metrics.
    pub labels: MetricLabels,
}

impl SourceStart {
    /// The position to resume from, decoded into the source's own type, and the rows of the
    /// batch after it that the checkpoint already covers (to skip). `(None, 0)` for a fresh
    /// start. `source` names the source in errors.
    pub fn resume<P: serde::de::DeserializeOwned>(&self, source: &str) -> Result<(Option<P>, u64)> {
        match &self.resume_from {
            None => Ok((None, 0)),
            Some(checkpoint) => Ok((checkpoint.decode(source)?, checkpoint.rows)),
        }
    }
}

/// A source of Arrow batches.
///
/// # Contract
///
/// * **Order.** Batches are yielded in source order; each carries the [`Position`](crate::Position)
///   its last row ends at, and positions are monotonic.
/// * **Acknowledgement.** The graph calls [`Source::commit`] with a [`Checkpoint`] only after the
///   sink has durably committed every row up to it. Only then may the source ack, commit or
///   advance anything upstream (broker ack, replication slot, saved cursor). Rows yielded but not
///   yet committed must be redelivered after a crash — never acked early.
/// * **Resume.** On restart the source is opened with the checkpoint recovered from the sink, and
///   must continue right after it (skipping `checkpoint.rows` rows of the batch after
///   `checkpoint.position`). Together with a sink that commits positions atomically with its
///   files, this gives exactly-once output; a source that cannot resume precisely (MQTT) gives
///   at-least-once and documents the duplicates.
/// * **Retries.** The source retries transient upstream failures itself (reconnect with backoff)
///   and yields an error only when it gives up; the error's [`Retry`](crate::Retry) tells the
///   runner whether a restart may help.
/// * **Backfill.** In [`Mode::Backfill`] the stream ends when the history (or configured range) is
///   read; in [`Mode::Stream`] it runs until dropped.
/// * **Bad records.** A record that cannot be decoded is never silently dropped: it is attached
///   as a [`DeadLetter`](crate::DeadLetter) to the batch whose position covers it
///   ([`PositionedBatch::with_dead_letters`]), so it is committed with that position and not
///   repeated after a resume; or the source yields an error naming it.
///
/// Methods run once per node (open) or once per sink commit (commit), never per row.
#[async_trait::async_trait]
pub trait Source: Send + Sync + Debug + 'static {
    /// A short name for logs and errors (kind and endpoint, never secrets).
    fn name(&self) -> String;

    /// The schema of the batches, when known before opening.
    fn schema(&self) -> Option<SchemaRef> {
        None
    }

    /// Open the source and return its stream of batches.
    async fn open(&mut self, start: SourceStart) -> Result<PositionedStream>;

    /// Everything up to `checkpoint` is durably committed: ack it upstream.
    ///
    /// Called in checkpoint order; may be called after the stream was dropped (during graceful
    /// shutdown), so acking state must live outside the stream.
    async fn commit(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let _ = checkpoint;
        Ok(())
    }

    /// The graph is done with the source: the stream ended or was stopped, and the last
    /// commit was acknowledged. Release what lives outside the stream (e.g. stop a child
    /// process gracefully). Called once, after a finished, shut-down or failed run; not after
    /// an abort (the source is then dropped). Default: nothing.
    async fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A boxed source is a source, so builders can choose one at run time.
#[async_trait::async_trait]
impl Source for Box<dyn Source> {
    fn name(&self) -> String {
        (**self).name()
    }

    fn schema(&self) -> Option<SchemaRef> {
        (**self).schema()
    }

    async fn open(&mut self, start: SourceStart) -> Result<PositionedStream> {
        (**self).open(start).await
    }

    async fn commit(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        (**self).commit(checkpoint).await
    }

    async fn close(&mut self) -> Result<()> {
        (**self).close().await
    }
}
