//! A deterministic synthetic source: the `generator` kind's source (see
//! `arcane_sources::generator` for its spec), and the source the graph's own tests run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::{Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::position::{Checkpoint, Position, PositionedBatch};
use crate::source::{PositionedStream, Source, SourceStart};

/// The generator's position: rows emitted so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratorPosition {
    /// Rows emitted up to and including the batch.
    pub rows: u64,
}

/// Schema of generated rows: `id` (Int64), `key` (Utf8), `value` (Float64), `event_time`
/// (Timestamp ms, UTC).
pub fn generator_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
    ]))
}

/// Row `id` of the generator, as the generator makes it (for assertions).
pub fn generated_row(id: i64) -> (i64, String, f64, i64) {
    (
        id,
        format!("key-{}", id % 97),
        (id as f64) * 0.5,
        1_767_225_600_000 + id * 1_000,
    )
}

/// A deterministic source of rows `0..total` in batches of `batch_rows`.
///
/// Resumes exactly from a [`Checkpoint`]; in streaming mode with [`GeneratorSource::unbounded`]
/// it never ends. Every commit is recorded in [`GeneratorSource::acked`].
#[derive(Debug, Clone)]
pub struct GeneratorSource {
    /// The first row id (0, or the start of a shard's range).
    start: u64,
    total: Option<u64>,
    batch_rows: usize,
    pause: Option<Duration>,
    acked: Arc<Mutex<Vec<Checkpoint>>>,
}

impl GeneratorSource {
    /// `total` rows in batches of `batch_rows` (at least 1).
    pub fn new(total: u64, batch_rows: usize) -> Self {
        Self {
            start: 0,
            total: Some(total),
            batch_rows: batch_rows.max(1),
            pause: None,
            acked: Arc::default(),
        }
    }

    /// Rows without end (until the stream is stopped).
    pub fn unbounded(batch_rows: usize) -> Self {
        Self {
            total: None,
            ..Self::new(0, batch_rows)
        }
    }

    /// Only the rows of `shard` of a sharded backfill: its contiguous part of `0..total`
    /// ([`Shard::range_of`](crate::shard::Shard::range_of)); positions stay absolute row ids, so
    /// the furthest shard's position is the end of every row. An unbounded generator is not
    /// split.
    pub fn with_shard(mut self, shard: crate::shard::Shard) -> Self {
        if let Some(total) = self.total {
            let range = shard.range_of(total);
            self.start = range.start;
            self.total = Some(range.end);
        }
        self
    }

    /// Sleep between batches.
    pub fn with_pause(mut self, pause: Duration) -> Self {
        self.pause = Some(pause);
        self
    }

    /// Checkpoints acked through [`Source::commit`], in order.
    pub fn acked(&self) -> Arc<Mutex<Vec<Checkpoint>>> {
        self.acked.clone()
    }

    /// Build the batch of rows `start..end`.
    pub fn batch(start: u64, end: u64) -> RecordBatch {
        let ids: Vec<i64> = (start as i64..end as i64).collect();
        let rows: Vec<_> = ids.iter().map(|&id| generated_row(id)).collect();
        let columns: Vec<arrow_array::ArrayRef> = vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.1.as_str()),
            )),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.3))
                    .with_timezone("UTC"),
            ),
        ];
        RecordBatch::try_new(generator_schema(), columns)
            .unwrap_or_else(|e| unreachable!("generator columns match their schema: {e}"))
    }
}

#[async_trait::async_trait]
impl Source for GeneratorSource {
    fn name(&self) -> String {
        "generator".into()
    }

    fn schema(&self) -> Option<SchemaRef> {
        Some(generator_schema())
    }

    async fn open(&mut self, start: SourceStart) -> Result<PositionedStream> {
        let from = match &start.resume_from {
            None => self.start,
            Some(cp) => {
                let pos: Option<GeneratorPosition> = cp.decode("generator")?;
                pos.map_or(self.start, |p| p.rows) + cp.rows
            }
        };
        // A bounded generator ends in both modes; an unbounded one never does.
        let total = self.total;
        let batch_rows = self.batch_rows as u64;
        let pause = self.pause;
        let stream = futures::stream::unfold(from, move |next| async move {
            if total.is_some_and(|t| next >= t) {
                return None;
            }
            if let Some(p) = pause {
                tokio::time::sleep(p).await;
            }
            let end = total.map_or(next + batch_rows, |t| (next + batch_rows).min(t));
            let batch = GeneratorSource::batch(next, end);
            let position = Position::encode(&GeneratorPosition { rows: end });
            Some((position.map(|p| PositionedBatch::new(batch, p)), end))
        });
        Ok(stream.boxed())
    }

    async fn commit(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        if let Ok(mut acked) = self.acked.lock() {
            acked.push(checkpoint.clone());
        }
        Ok(())
    }
}
