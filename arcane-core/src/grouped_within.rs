//! [`GroupedWithin`]: cut a stream of positioned batches into groups of exactly N rows,
//! at most N bytes, or whatever arrived within an interval.

use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use futures::stream::{Fuse, FusedStream};
use futures::{Stream, StreamExt};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::dead_letter::DeadLetter;
use crate::error::Result;
use crate::position::{Checkpoint, Group, Position, PositionedBatch};

/// Default rows per group (the platform's `rowsPerGroup`).
pub const DEFAULT_ROWS_PER_GROUP: usize = 10_000;
/// Default grouping interval (the platform's `groupingIntervalSeconds`).
pub const DEFAULT_GROUPING_INTERVAL: Duration = Duration::from_secs(15);
/// Default upper bound on a group's in-memory (Arrow) size for the built-in kinds (the
/// platform's `groupMaxBytes`): 2 MiB. A group of wide rows (1.3 KB each, 120 columns) held
/// 85 MB at 65 536 rows; bounded in bytes, the landing benchmark's peak RSS halved and it ran
/// faster (benches/README.md). The graph holds up to three groups (the one the sink's encoder
/// finishes, the one it encodes and the next, read meanwhile), so the peak memory of a landing
/// moves with this bound: 2 MiB instead of 8 took 10–35 MiB off every shape of the benchmark
/// at the same CPU time. Groups are not commits: a file and its commits are cut by the sink's
/// rolling policy, whatever the groups' size.
pub const DEFAULT_GROUP_MAX_BYTES: usize = 2 * 1024 * 1024;

/// Limits of a group: whichever is reached first closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimits {
    /// Exact number of rows in a full group.
    pub max_rows: NonZeroUsize,
    /// Upper bound on the in-memory size of a group (Arrow buffers, estimated per row from the
    /// source batch); a group is closed at the first row that reaches it.
    pub max_bytes: Option<NonZeroUsize>,
    /// A group is emitted at most this long after its first row arrived.
    pub max_interval: Duration,
}

impl GroupLimits {
    /// Groups of `max_rows` rows or whatever arrived within `max_interval`.
    pub fn new(max_rows: NonZeroUsize, max_interval: Duration) -> Self {
        Self {
            max_rows,
            max_bytes: None,
            max_interval,
        }
    }

    /// Also bound a group's in-memory size.
    pub fn with_max_bytes(mut self, max_bytes: NonZeroUsize) -> Self {
        self.max_bytes = Some(max_bytes);
        self
    }
}

impl Default for GroupLimits {
    fn default() -> Self {
        Self::new(
            NonZeroUsize::new(DEFAULT_ROWS_PER_GROUP).unwrap_or(NonZeroUsize::MIN),
            DEFAULT_GROUPING_INTERVAL,
        )
    }
}

/// Extension trait adding [`grouped_within`](GroupedWithinExt::grouped_within) to streams of
/// positioned batches.
pub trait GroupedWithinExt: Stream<Item = Result<PositionedBatch>> + Sized {
    /// Group this stream; see [`GroupedWithin`].
    fn grouped_within(self, limits: GroupLimits) -> GroupedWithin<Self> {
        GroupedWithin::new(self, limits)
    }
}

impl<S: Stream<Item = Result<PositionedBatch>>> GroupedWithinExt for S {}

#[derive(Debug)]
struct Pending {
    batch: PositionedBatch,
    /// Rows before the batch's first row that the last position does not include but the
    /// checkpoint covers (a resume inside a batch).
    base: u64,
    offset: usize,
    bytes_per_row: usize,
}

/// The rows of `batches` (all of `schema`) as one batch, as `concat_batches` makes it, one
/// column at a time: each column's arrays are dropped once copied, so the group is held about
/// once, not twice, while it is concatenated (a group is up to `groupMaxBytes`; the largest
/// transient allocation of a landing was this copy).
fn concat_column_by_column(
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    if batches.is_empty() {
        return Ok(RecordBatch::new_empty(schema.clone()));
    }
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    let fields = schema.fields().len();
    let mut columns: Vec<Vec<arrow_array::ArrayRef>> = (0..fields)
        .map(|_| Vec::with_capacity(batches.len()))
        .collect();
    for batch in batches {
        if batch.num_columns() != fields {
            return Err(arrow_schema::ArrowError::InvalidArgumentError(format!(
                "a batch of {} columns in a group of {fields}",
                batch.num_columns()
            )));
        }
        for (column, array) in columns.iter_mut().zip(batch.columns()) {
            column.push(array.clone());
        }
    }
    let mut arrays = Vec::with_capacity(fields);
    for column in &mut columns {
        let parts: Vec<&dyn arrow_array::Array> = column.iter().map(AsRef::as_ref).collect();
        arrays.push(arrow_select::concat::concat(&parts)?);
        drop(parts);
        *column = Vec::new();
    }
    RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &arrow_array::RecordBatchOptions::new().with_row_count(Some(rows)),
    )
}

pin_project! {
    /// Groups a stream of positioned batches into [`Group`]s.
    ///
    /// * A group holds exactly `max_rows` rows unless it was closed by `max_bytes`, by
    ///   `max_interval` (armed when the group's first row arrives), by a schema change, or by the
    ///   end of the input — batches are sliced and concatenated as needed.
    /// * Rows are never lost, duplicated or reordered. Each group carries the [`Checkpoint`] its
    ///   last row ends at, which may fall inside a source batch.
    /// * Dead letters of a source batch join the group that completes the batch (the one whose
    ///   checkpoint covers the batch's position); a group is also closed when it holds
    ///   `max_rows` dead letters.
    /// * On end of input the buffered tail is emitted. Graceful shutdown ends the input
    ///   (`take_until`), so the tail is flushed then too.
    /// * Errors from the input are passed through at once; buffered rows were not committed, so
    ///   they are not acked and will be re-read.
    ///
    /// # Cancel safety
    ///
    /// `next()` on this stream is cancel safe: buffered rows stay in the stream's state.
    #[must_use = "streams do nothing unless polled"]
    #[derive(Debug)]
    pub struct GroupedWithin<S: Stream> {
        #[pin]
        input: Fuse<S>,
        #[pin]
        deadline: Option<Sleep>,
        limits: GroupLimits,
        buffer: Vec<RecordBatch>,
        schema: Option<SchemaRef>,
        // Schema of the last rows seen, for position-only (empty) groups.
        last_schema: Option<SchemaRef>,
        buffered_rows: usize,
        buffered_bytes: usize,
        // Dead letters of the source batches completed in this group.
        letters: Vec<DeadLetter>,
        pending: Option<Pending>,
        // Checkpoint after the last buffered row.
        checkpoint: Checkpoint,
        // Position of the last fully consumed source batch.
        last_full: Option<Position>,
        // Whether `checkpoint` moved since the last emitted group.
        checkpoint_moved: bool,
        // After a resume inside a batch: the rows of the resumed checkpoint, the base of the
        // first batch with rows unless a position-only batch comes first.
        resume_base: Option<u64>,
    }
}

impl<S: Stream<Item = Result<PositionedBatch>>> GroupedWithin<S> {
    /// Group `input` within `limits`.
    pub fn new(input: S, limits: GroupLimits) -> Self {
        Self {
            input: input.fuse(),
            deadline: None,
            limits,
            buffer: Vec::new(),
            schema: None,
            last_schema: None,
            buffered_rows: 0,
            buffered_bytes: 0,
            letters: Vec::new(),
            pending: None,
            checkpoint: Checkpoint::default(),
            last_full: None,
            checkpoint_moved: false,
            resume_base: None,
        }
    }
}

impl<S: Stream<Item = Result<PositionedBatch>>> GroupedWithin<S> {
    /// The stream resumes after `checkpoint` (the sink's last commit): a checkpoint inside
    /// the first batch is relative to its position, whose rows the source skipped (see
    /// [`PositionedBatch::covered`]).
    pub fn resumed_from(mut self, checkpoint: Option<&Checkpoint>) -> Self {
        if let Some(cp) = checkpoint {
            self.last_full = cp.position.clone();
            self.checkpoint = cp.clone();
            self.resume_base = Some(cp.rows);
        }
        self
    }

    fn take_group(self: Pin<&mut Self>) -> Result<Group> {
        let mut this = self.project();
        let batches = std::mem::take(this.buffer);
        let batch = match (batches.len(), this.schema.take()) {
            (1, _) => batches.into_iter().next().unwrap_or_else(|| unreachable!()),
            (_, Some(schema)) => concat_column_by_column(&schema, batches)?,
            (_, None) => RecordBatch::new_empty(
                this.last_schema
                    .clone()
                    .unwrap_or_else(|| std::sync::Arc::new(arrow_schema::Schema::empty())),
            ),
        };
        *this.buffered_rows = 0;
        *this.buffered_bytes = 0;
        this.deadline.set(None);
        *this.checkpoint_moved = false;
        Ok(Group {
            batch,
            checkpoint: this.checkpoint.clone(),
            dead_letters: std::mem::take(this.letters),
        })
    }

    fn is_full(&self) -> bool {
        self.buffered_rows >= self.limits.max_rows.get()
            // Dead letters are held in memory until their group commits: bound them too.
            || self.letters.len() >= self.limits.max_rows.get()
            || self
                .limits
                .max_bytes
                .is_some_and(|max| self.buffered_bytes >= max.get())
    }

    /// Move rows from the pending batch into the buffer, up to the limits.
    fn fill_from_pending(self: Pin<&mut Self>) {
        let mut this = self.project();
        let Some(pending) = this.pending.as_mut() else {
            return;
        };
        let total = pending.batch.batch.num_rows();
        let mut take =
            (total - pending.offset).min(this.limits.max_rows.get() - *this.buffered_rows);
        if let Some(max_bytes) = this.limits.max_bytes {
            let room = max_bytes.get().saturating_sub(*this.buffered_bytes);
            let rows_in_room = room.div_ceil(pending.bytes_per_row).max(1);
            take = take.min(rows_in_room);
        }
        if take > 0 {
            if this.deadline.is_none() {
                this.deadline.set(Some(tokio::time::sleep_until(
                    Instant::now() + this.limits.max_interval,
                )));
            }
            let slice = if pending.offset == 0 && take == total {
                pending.batch.batch.clone()
            } else {
                pending.batch.batch.slice(pending.offset, take)
            };
            if this.schema.is_none() {
                *this.schema = Some(slice.schema());
                *this.last_schema = Some(slice.schema());
            }
            this.buffer.push(slice);
            *this.buffered_rows += take;
            *this.buffered_bytes += take * pending.bytes_per_row;
            pending.offset += take;
        }
        if pending.offset == total {
            let done = this.pending.take().map(|p| {
                this.letters.extend(p.batch.dead_letters);
                p.batch.position
            });
            *this.last_full = done.clone();
            *this.checkpoint = Checkpoint {
                position: done,
                rows: 0,
            };
        } else {
            *this.checkpoint = Checkpoint {
                position: this.last_full.clone(),
                rows: pending.base + pending.offset as u64,
            };
        }
        *this.checkpoint_moved = true;
    }
}

impl<S: Stream<Item = Result<PositionedBatch>>> Stream for GroupedWithin<S> {
    type Item = Result<Group>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.is_full() {
                return Poll::Ready(Some(self.as_mut().take_group()));
            }
            if let Some(pending) = &self.pending {
                // A schema change closes the current group before the new rows join it.
                let same_schema = self
                    .schema
                    .as_ref()
                    .is_none_or(|s| *s == pending.batch.batch.schema());
                if !same_schema && self.buffered_rows > 0 {
                    return Poll::Ready(Some(self.as_mut().take_group()));
                }
                self.as_mut().fill_from_pending();
                continue;
            }
            if self.buffered_rows > 0 || self.checkpoint_moved {
                let this = self.as_mut().project();
                if let Some(deadline) = this.deadline.as_pin_mut()
                    && deadline.poll(cx).is_ready()
                {
                    return Poll::Ready(Some(self.as_mut().take_group()));
                }
            }
            let mut this = self.as_mut().project();
            match ready!(this.input.poll_next(cx)) {
                Some(Ok(batch)) => {
                    let rows = batch.batch.num_rows();
                    if rows == 0 {
                        if this.last_schema.is_none() {
                            *this.last_schema = Some(batch.batch.schema());
                        }
                        // An empty batch still moves the position (e.g. a watermark advanced,
                        // or every record was dead-lettered): it reaches the sink within the
                        // interval, so the source can ack upstream even when no rows follow.
                        if this.deadline.is_none() {
                            this.deadline.set(Some(tokio::time::sleep_until(
                                Instant::now() + this.limits.max_interval,
                            )));
                        }
                        *this.last_full = Some(batch.position.clone());
                        *this.resume_base = None;
                        // Rows after it that a resumed checkpoint covers stay covered.
                        *this.checkpoint = Checkpoint {
                            position: Some(batch.position),
                            rows: batch.covered,
                        };
                        *this.checkpoint_moved = true;
                        this.letters.extend(batch.dead_letters);
                        continue;
                    }
                    let bytes_per_row = batch.batch.get_array_memory_size().div_ceil(rows).max(1);
                    // The first batch after a resume continues the resumed checkpoint: the
                    // source skipped its covered rows (itself, or through the runtime, which
                    // says so in `covered`).
                    let base = this.resume_base.take().unwrap_or(batch.covered);
                    *this.pending = Some(Pending {
                        batch,
                        base,
                        offset: 0,
                        bytes_per_row,
                    });
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    if self.buffered_rows > 0 || self.checkpoint_moved {
                        return Poll::Ready(Some(self.as_mut().take_group()));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl<S: Stream<Item = Result<PositionedBatch>>> FusedStream for GroupedWithin<S> {
    fn is_terminated(&self) -> bool {
        self.input.is_terminated()
            && self.pending.is_none()
            && self.buffered_rows == 0
            && !self.checkpoint_moved
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        Array, ArrayRef, Float64Array, Int64Array, RecordBatchOptions, StringArray, StructArray,
    };
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    /// Concatenated one column at a time, a group is the batch `concat_batches` makes: strings,
    /// nulls, structs, sliced batches (whose buffers are shared with the rest of their source
    /// batch), batches without rows, and a schema without columns.
    #[test]
    fn a_group_concatenated_column_by_column_is_what_concat_batches_makes() {
        let inner = Field::new("x", DataType::Float64, true);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
            Field::new("st", DataType::Struct(vec![inner.clone()].into()), true),
        ]));
        let batch = |from: i64, n: usize| {
            let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(from..from + n as i64));
            let strings: ArrayRef = Arc::new(StringArray::from_iter(
                (0..n).map(|i| (i % 3 != 0).then(|| "é".repeat(i % 7))),
            ));
            let xs: ArrayRef = Arc::new(Float64Array::from_iter(
                (0..n).map(|i| (i % 4 != 1).then_some(i as f64 / 3.0)),
            ));
            let st: ArrayRef = Arc::new(StructArray::new(
                vec![inner.clone()].into(),
                vec![xs],
                Some((0..n).map(|i| i % 5 != 2).collect()),
            ));
            RecordBatch::try_new(schema.clone(), vec![ids, strings, st]).expect("batch")
        };
        let big = batch(1_000, 50);
        let batches = vec![
            batch(0, 7),
            big.slice(10, 20),
            batch(100, 0),
            big.slice(30, 20),
            batch(200, 33),
        ];
        let want = arrow_select::concat::concat_batches(&schema, &batches).expect("concat");
        let got = concat_column_by_column(&schema, batches).expect("by column");
        assert_eq!(got, want);
        assert_eq!(got.num_rows(), 80);
        assert_eq!(got.column(1).null_count(), want.column(1).null_count());

        let none = Arc::new(Schema::empty());
        let rows = |n| {
            RecordBatch::try_new_with_options(
                none.clone(),
                vec![],
                &RecordBatchOptions::new().with_row_count(Some(n)),
            )
            .expect("rows")
        };
        let got = concat_column_by_column(&none, vec![rows(3), rows(4)]).expect("no columns");
        assert_eq!(got.num_rows(), 7);
        assert_eq!(
            concat_column_by_column(&schema, Vec::new()).expect("empty"),
            RecordBatch::new_empty(schema.clone())
        );
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .expect("one column");
        let err = concat_column_by_column(&schema, vec![batch(0, 2), other]).expect_err("columns");
        assert!(
            err.to_string().contains("1 columns in a group of 3"),
            "{err}"
        );
    }
}
