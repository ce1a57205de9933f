//! [`EncodeWriter`]: the Parquet writer of the sink's open files, encoding the columns of a
//! batch on a small pool of threads ([`EncodePool`], `sink.writer.encodeThreads`).
//!
//! It writes what `parquet::arrow::AsyncArrowWriter` writes: the file is an
//! `ArrowWriter` turned into its `SerializedFileWriter` and `ArrowRowGroupWriterFactory`
//! (so the file metadata, the `ARROW:schema` key and every writer property are parquet's
//! own), batches are cut into row groups by the same rules as `ArrowWriter::write`
//! (`max_row_group_row_count`, and `max_row_group_bytes` against the bytes per row, here
//! predicted: see below),
//! and the bytes of flushed row groups are handed to the upload after each write, as
//! `AsyncArrowWriter` does, so uploads stream; a row group's column chunks reach it in pieces
//! of 1 MiB while they are appended (on a blocking thread), so that no column chunk is ever
//! one buffer in memory. Where the column writers run differs, and so may the sizes a cut is
//! decided on:
//! each top-level column has a lane (its writers, for all its leaves, and the arrays waiting
//! for them) that a pool thread runs; a column sees the batches in order, one after the other,
//! while the other columns' lanes run on the other threads — for the same write or already
//! for the next one, so that a write's slowest column does not hold back the next write's
//! columns. A write returns once the write before it is encoded (the lanes hold at most two
//! writes' arrays); an encoding failure is returned by the write that finds it, or by
//! `settle` or `finish`. A row group ends in the lanes too: each lane closes its column's
//! writers after its last array of the row group (the next row group's arrays may already
//! wait behind), and a task of its own appends the column chunks once all are closed and the
//! row group before is in the file, while the next row group is encoded.
//!
//! Where a row group is cut by `max_row_group_bytes` is decided by `ArrowWriter`'s rules on a prediction of the row group's size instead of its exact size:
//! the size after the write before the last (which every lane has encoded) and its bytes per
//! row for the rows written since. Deciding on exact sizes meant waiting for every lane
//! before each write near the limit, with one thread idle while the slowest column finished
//! (benches/README.md). A row group can therefore end up to about one write's rows away from
//! where `ArrowWriter` cuts it (the same rows in the same order, in row groups cut a little
//! earlier or later); cuts by `max_row_group_row_count` are exact. The prediction depends only
//! on the batches written, so the output depends neither on the number of threads nor on
//! their timing, and a writer settled after every write (as tests do) writes
//! `AsyncArrowWriter`'s file byte for byte.

use std::any::Any;
use std::mem;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{FieldRef, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::errors::{ParquetError, Result};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

use crate::parquet::spill::{FileSpill, SpillPages};

/// Default `writer.encodeThreads`: the available parallelism, at most this many.
pub(crate) const MAX_DEFAULT_ENCODE_THREADS: usize = 4;

/// The default number of encoding threads: the available parallelism, at most
/// [`MAX_DEFAULT_ENCODE_THREADS`].
pub(crate) fn default_encode_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(MAX_DEFAULT_ENCODE_THREADS)
}

/// A unit of work for a pool thread.
type Job = Box<dyn FnOnce() + Send>;

/// Threads that encode columns, kept for the sink's lifetime; with one thread, tasks run on
/// the calling thread instead. The threads exit when the pool is dropped.
pub(crate) struct EncodePool {
    /// Sends jobs to the threads; `None` when tasks run on the calling thread.
    jobs: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    /// Pool threads still running.
    live: Arc<AtomicUsize>,
}

impl std::fmt::Debug for EncodePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodePool")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

/// Counts a pool thread as live until it returns (or unwinds).
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EncodePool {
    /// A pool of `threads` threads; 0 or 1 runs every task on the calling thread.
    pub(crate) fn new(threads: usize) -> std::io::Result<Self> {
        let live = Arc::new(AtomicUsize::new(0));
        if threads <= 1 {
            return Ok(Self {
                jobs: None,
                threads: Vec::new(),
                live,
            });
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut pool = Self {
            jobs: Some(tx),
            threads: Vec::with_capacity(threads),
            live,
        };
        for i in 0..threads {
            let rx = rx.clone();
            let guard = LiveGuard(pool.live.clone());
            pool.live.fetch_add(1, Ordering::SeqCst);
            let spawned = std::thread::Builder::new()
                .name(format!("arcane-encode-{i}"))
                .spawn(move || {
                    let _guard = guard;
                    loop {
                        // Hold the lock only to take a job, not while running it.
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            // A job catches its own panics.
                            Ok(job) => job(),
                            // The pool was dropped.
                            Err(_) => return,
                        }
                    }
                });
            match spawned {
                Ok(handle) => pool.threads.push(handle),
                // Dropping `pool` stops the threads already started.
                Err(e) => return Err(e),
            }
        }
        Ok(pool)
    }

    /// Run `job` on a pool thread, or on the calling thread when the pool has none.
    fn spawn(&self, job: Job) {
        match &self.jobs {
            None => job(),
            Some(jobs) => {
                if let Err(mpsc::SendError(job)) = jobs.send(job) {
                    // No thread takes jobs any more (they cannot stop while the pool lives,
                    // but be safe): run it here.
                    job();
                }
            }
        }
    }

    /// Threads in the pool (0 when tasks run on the calling thread).
    #[cfg(test)]
    fn threads(&self) -> usize {
        self.threads.len()
    }
}

impl Drop for EncodePool {
    fn drop(&mut self) {
        // Closing the channel ends each thread's loop once it has finished its job.
        self.jobs = None;
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Run `task`, turning a panic into an error naming `name`.
fn run_caught<T>(name: &str, task: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(task)).unwrap_or_else(|payload| {
        Err(ParquetError::General(format!(
            "encoding {name} panicked: {}",
            panic_message(payload.as_ref())
        )))
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

/// `e` with `what` (a column) in front of its message, of the same kind.
fn in_column(what: &str, e: ParquetError) -> ParquetError {
    match e {
        ParquetError::General(m) => ParquetError::General(format!("{what}: {m}")),
        ParquetError::NYI(m) => ParquetError::NYI(format!("{what}: {m}")),
        ParquetError::ArrowError(m) => ParquetError::ArrowError(format!("{what}: {m}")),
        other => other,
    }
}

/// The column writers of the leaves of one top-level column, for the current row group.
struct ColumnWriters {
    field: FieldRef,
    writers: Vec<ArrowColumnWriter>,
}

impl ColumnWriters {
    /// Encode `array` (this column of a batch) into the writers.
    fn write(&mut self, array: &ArrayRef) -> Result<()> {
        let leaves = compute_leaves(self.field.as_ref(), array)?;
        if leaves.len() != self.writers.len() {
            return Err(ParquetError::General(format!(
                "the array has {} leaf columns, the file's column {}",
                leaves.len(),
                self.writers.len()
            )));
        }
        for (writer, leaf) in self.writers.iter_mut().zip(&leaves) {
            writer.write(leaf)?;
        }
        Ok(())
    }

    fn estimated_bytes(&self) -> usize {
        self.writers
            .iter()
            .map(ArrowColumnWriter::get_estimated_total_bytes)
            .sum()
    }
}

/// One top-level column of a file: its writers for the row group in progress and the arrays
/// waiting for them. A lane encodes its arrays one after the other, in the order written, on
/// whichever pool thread runs it; the lanes of the other columns run meanwhile, for this
/// write or the next one, so that a write does not wait for its slowest column before the
/// next write's columns start.
struct Lane {
    name: String,
    state: Mutex<LaneState>,
    /// Woken after each array a lane of this file encodes.
    progress: Arc<tokio::sync::Notify>,
    /// Called with the write's number before each array is encoded (tests hold a lane here).
    #[cfg(test)]
    gate: std::sync::OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
}

/// A lane's work, in the order written.
enum LaneJob {
    /// The writers of the next row group (its index in the file).
    Start(usize, ColumnWriters),
    /// This column's array of a write (its number).
    Write(u64, ArrayRef),
    /// The end of the row group: close its writers and send their column chunks.
    Cut(tokio::sync::oneshot::Sender<Result<Vec<ArrowColumnChunk>>>),
}

#[derive(Default)]
struct LaneState {
    /// The writers of the row group the lane is at, here while no thread runs the lane (taken
    /// by the thread that does).
    writers: Option<ColumnWriters>,
    /// Work to do: row groups' writers, arrays and row groups' ends.
    queue: std::collections::VecDeque<LaneJob>,
    running: bool,
    /// The last write whose array this lane has encoded.
    done: u64,
    /// The row group (index in the file) the lane's writers belong to.
    row_group: usize,
    /// `(row group, write, rows, estimated bytes)` of a row group after each of the last two
    /// writes this lane encoded, the latest last.
    history: [(usize, u64, usize, usize); 2],
    /// How long the last array took.
    cost: Duration,
    /// The first failure; the writers are dropped and later arrays skipped.
    failed: Option<ParquetError>,
}

impl Lane {
    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A pool thread's turn at `lane`: do its queued work until none is left.
fn run_lane(lane: &Lane) {
    let mut writers = lane.lock().writers.take();
    loop {
        let next = {
            let mut state = lane.lock();
            match state.queue.pop_front() {
                Some(next) => next,
                None => {
                    state.writers = writers;
                    state.running = false;
                    drop(state);
                    lane.progress.notify_waiters();
                    return;
                }
            }
        };
        let (write, array) = match next {
            LaneJob::Start(row_group, next) => {
                let mut state = lane.lock();
                state.row_group = row_group;
                // A lane that failed encodes nothing more (the writer is broken).
                if state.failed.is_none() {
                    writers = Some(next);
                }
                continue;
            }
            LaneJob::Cut(reply) => {
                let closed = match writers.take() {
                    Some(column) => run_caught(&lane.name, || {
                        column
                            .writers
                            .into_iter()
                            .map(ArrowColumnWriter::close)
                            .collect::<Result<_>>()
                            .map_err(|e| in_column(&lane.name, e))
                    }),
                    None => Err(ParquetError::General(format!(
                        "{}: its writers are gone",
                        lane.name
                    ))),
                };
                // The row group's append is gone when its writer was dropped: nothing to do.
                let _ = reply.send(closed);
                continue;
            }
            LaneJob::Write(write, array) => (write, array),
        };
        let started = Instant::now();
        let result = match writers.as_mut() {
            Some(w) => run_caught(&lane.name, || {
                #[cfg(test)]
                if let Some(gate) = lane.gate.get() {
                    gate(write);
                }
                w.write(&array).map_err(|e| in_column(&lane.name, e))
            }),
            // Failed before: nothing more is encoded.
            None => Ok(()),
        };
        let mut state = lane.lock();
        state.done = write;
        state.cost = started.elapsed();
        match result {
            Ok(()) => {
                if let Some(w) = &writers {
                    let (row_group, _, rows, _) = state.history[1];
                    let before = if row_group == state.row_group {
                        rows
                    } else {
                        0
                    };
                    let now = (
                        state.row_group,
                        write,
                        before + array.len(),
                        w.estimated_bytes(),
                    );
                    state.history = [state.history[1], now];
                }
            }
            Err(e) => {
                writers = None;
                if state.failed.is_none() {
                    state.failed = Some(e);
                }
            }
        }
        drop(state);
        lane.progress.notify_waiters();
    }
}

/// The row group being written (`ArrowWriter`'s in-progress row group): its column writers
/// are in the lanes.
struct RowGroup {
    rows: usize,
}

/// Writes one Parquet file to `W`: `AsyncArrowWriter`'s output, the columns encoded on an
/// [`EncodePool`]. See the [module documentation](self).
pub(crate) struct EncodeWriter<W> {
    /// The file writer; with the upload, taken by a row group's append ([`Appending`]) and
    /// not given back when that failed or was abandoned (the writer is then `broken`).
    file: Option<SerializedFileWriter<Pending>>,
    /// The last flushed row group's append, while it runs: the next row group is encoded
    /// meanwhile.
    appending: Option<Appending<W>>,
    /// Row groups flushed (appended or being appended).
    row_groups: usize,
    /// What [`bytes_written`](Self::bytes_written) reports.
    written: usize,
    /// The bytes the file writer wrote and the upload has not been given yet.
    pending: Pending,
    factory: ArrowRowGroupWriterFactory,
    /// Where the row group in progress keeps its pages, when not on the heap.
    spill: Option<Arc<FileSpill>>,
    schema: SchemaRef,
    /// Leaf columns of each top-level column.
    leaves: Vec<usize>,
    in_progress: Option<RowGroup>,
    max_rows: Option<usize>,
    max_bytes: Option<usize>,
    pool: Arc<EncodePool>,
    /// One lane per top-level column.
    lanes: Vec<Arc<Lane>>,
    progress: Arc<tokio::sync::Notify>,
    /// Writes handed to the lanes so far (each write's number).
    writes: u64,
    /// The last write after which the lanes were settled.
    settled: u64,
    /// Decide row group cuts on exact sizes, settling the lanes before each decision: the
    /// row groups of `ArrowWriter`, for tests to compare with (the sink decides on
    /// predictions, which do not wait for the lanes).
    exact_cuts: bool,
    /// Encoded bytes per row of the last row group flushed (its predicted size over its rows).
    last_row_bytes: Option<f64>,
    upload: Option<W>,
    /// Why the file cannot be written any more: an encoding failed (its column writers are
    /// gone), or a row group's append failed or was abandoned.
    broken: Option<String>,
}

impl<W> std::fmt::Debug for EncodeWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodeWriter")
            .field("bytes_written", &self.bytes_written())
            .field(
                "in_progress_rows",
                &self.in_progress.as_ref().map(|r| r.rows),
            )
            .finish_non_exhaustive()
    }
}

impl<W> EncodeWriter<W> {
    /// Bytes written to the file so far (handed to the upload or buffered for it): after
    /// [`settle`](Self::settle) and [`finish`](Self::finish), `AsyncArrowWriter::bytes_written`;
    /// after a row group's flush, the bytes before it and the row group's predicted size
    /// (its columns are still being closed), whether or not its append has ended, so that
    /// the figure (and a file rolled by it) does not depend on the threads' timing.
    pub(crate) fn bytes_written(&self) -> usize {
        self.written
    }
}

impl<W: AsyncFileWriter + Send + 'static> EncodeWriter<W> {
    /// A writer of a file of `schema` with `props` to `upload`, encoding on `pool`.
    pub(crate) fn try_new(
        upload: W,
        schema: SchemaRef,
        props: WriterProperties,
        pool: Arc<EncodePool>,
        spill: Option<SpillPages>,
    ) -> Result<Self> {
        let max_rows = props.max_row_group_row_count();
        let max_bytes = props.max_row_group_bytes();
        if props.content_defined_chunking().is_some() {
            return Err(ParquetError::NYI(
                "content-defined chunking is not supported by the sink's writer".into(),
            ));
        }
        // `ArrowWriter` adds the `ARROW:schema` key and builds the Parquet schema exactly as
        // `AsyncArrowWriter` does; nothing is written but the magic.
        let pending = Pending::default();
        let (file, factory) = ArrowWriter::try_new(pending.clone(), schema.clone(), Some(props))?
            .into_serialized_writer()?;
        // The encoded pages of a row group in progress wait in an unnamed file, not on the heap.
        let spill = spill.map(|spill| spill.for_file());
        let factory = match &spill {
            Some(spill) => factory.with_page_store_factory(spill.clone()),
            None => factory,
        };
        let mut leaves = vec![0; schema.fields().len()];
        let descr = file.schema_descr();
        for leaf in 0..descr.num_columns() {
            let root = descr.get_column_root_idx(leaf);
            match leaves.get_mut(root) {
                Some(n) => *n += 1,
                None => {
                    return Err(ParquetError::General(format!(
                        "leaf column {leaf} belongs to column {root}, not in the schema"
                    )));
                }
            }
        }
        let progress = Arc::new(tokio::sync::Notify::new());
        let lanes = schema
            .fields()
            .iter()
            .map(|f| {
                Arc::new(Lane {
                    name: format!("column {}", f.name()),
                    state: Mutex::default(),
                    progress: progress.clone(),
                    #[cfg(test)]
                    gate: std::sync::OnceLock::new(),
                })
            })
            .collect();
        let written = file.bytes_written();
        Ok(Self {
            file: Some(file),
            appending: None,
            row_groups: 0,
            written,
            pending,
            factory,
            spill,
            lanes,
            progress,
            writes: 0,
            settled: 0,
            exact_cuts: false,
            last_row_bytes: None,
            schema,
            leaves,
            in_progress: None,
            max_rows,
            max_bytes,
            pool,
            upload: Some(upload),
            broken: None,
        })
    }

    /// The file writer (there is none only after a row group's append was abandoned, which
    /// leaves the writer `broken`).
    fn file(&mut self) -> Result<&mut SerializedFileWriter<Pending>> {
        let broken = &self.broken;
        self.file.as_mut().ok_or_else(|| no_file(broken))
    }

    /// Estimated encoded size of the row group in progress: `AsyncArrowWriter::in_progress_size`
    /// once the lanes are [`settle`](Self::settle)d, a prediction from the sizes the lanes
    /// have reported before (see `predicted_bytes`) while they encode.
    pub(crate) fn in_progress_size(&self) -> usize {
        self.predicted_bytes()
    }

    /// The lanes' estimates of the row group in progress, summed (exact when they are idle).
    fn lanes_bytes(&self) -> usize {
        self.lanes
            .iter()
            .map(|lane| match lane.lock().history[1] {
                (row_group, _, _, bytes) if row_group == self.row_groups => bytes,
                _ => 0,
            })
            .sum()
    }

    /// The rows and estimated bytes of the row group in progress after write `write`, which
    /// every lane has encoded: the same whatever the threads' timing (none when `write` went
    /// to an earlier row group).
    fn size_after(&self, write: u64) -> (usize, usize) {
        let mut rows = 0;
        let mut bytes = 0;
        for lane in &self.lanes {
            let state = lane.lock();
            if let Some(&(_, _, r, b)) = state
                .history
                .iter()
                .find(|(g, w, _, _)| *g == self.row_groups && *w == write)
            {
                rows = r;
                bytes += b;
            }
        }
        (rows, bytes)
    }

    /// The estimated size of the row group in progress: exact once
    /// [`settle`](Self::settle)d since the last write; otherwise the size after the write
    /// before the last (which the lanes have encoded), its bytes per row counted for the rows
    /// written since (the last row group's bytes per row while none is known). It depends
    /// only on the batches written, never on how far the threads have come: given the same
    /// batches, row groups are cut and files rolled in the same places in every run.
    fn predicted_bytes(&self) -> usize {
        let Some(rg) = &self.in_progress else {
            return 0;
        };
        if self.settled == self.writes {
            return self.lanes_bytes();
        }
        let (rows, bytes) = self.size_after(self.writes.saturating_sub(1));
        let per_row = if rows > 0 {
            bytes as f64 / rows as f64
        } else {
            self.last_row_bytes.unwrap_or(0.0)
        };
        let more = rg.rows.saturating_sub(rows) as f64 * per_row;
        bytes + more as usize
    }

    /// The upload; none when a row group's append failed or is still running (call it after
    /// [`finish`](Self::finish)).
    pub(crate) fn into_inner(mut self) -> Option<W> {
        self.upload.take()
    }

    fn usable(&mut self) -> Result<()> {
        if self.broken.is_none() {
            for lane in &self.lanes {
                if let Some(e) = lane.lock().failed.take() {
                    self.broken = Some(e.to_string());
                    return Err(e);
                }
            }
        }
        match &self.broken {
            None => Ok(()),
            Some(why) => Err(ParquetError::General(format!(
                "the file cannot be written after an earlier failure: {why}"
            ))),
        }
    }

    /// Wait until every lane has encoded the arrays of write `write` and those before it
    /// and, when `idle`, has given its writers back.
    async fn wait_for(&mut self, write: u64, idle: bool) -> Result<()> {
        loop {
            let progress = self.progress.clone();
            let notified = progress.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before looking, so that a lane finishing meanwhile wakes this.
            notified.as_mut().enable();
            if self.lanes.iter().all(|lane| {
                let state = lane.lock();
                state.done >= write && !(idle && state.running)
            }) {
                break;
            }
            notified.await;
        }
        self.usable()
    }

    /// Wait until the lanes have encoded everything written and the last flushed row group
    /// is appended (then [`in_progress_size`](Self::in_progress_size) and
    /// [`bytes_written`](Self::bytes_written) are `AsyncArrowWriter`'s); an encoding or
    /// upload failure is returned here if not before.
    pub(crate) async fn settle(&mut self) -> Result<()> {
        self.wait_for(self.writes, true).await?;
        self.settled = self.writes;
        self.appended().await?;
        self.written = self.file()?.bytes_written();
        Ok(())
    }

    /// The size of the row group in progress to decide a cut on: the prediction, or the
    /// exact size once the lanes are settled when there is nothing to predict from (no
    /// bytes per row known: the file's first write is not encoded yet) or with `exact_cuts`.
    async fn bytes_to_decide_on(&mut self) -> Result<usize> {
        let unknown =
            self.last_row_bytes.is_none() && self.size_after(self.writes.saturating_sub(1)).0 == 0;
        if self.exact_cuts || unknown {
            self.settle().await?;
        }
        Ok(self.predicted_bytes())
    }

    /// Encode `batch`, flushing row groups as `ArrowWriter::write` does, then hand the bytes
    /// of any flushed row group to the upload. The columns are encoded in their lanes: this
    /// returns once the write before this one is encoded (two writes in flight at most),
    /// so an encoding failure may be returned by the next write, or by
    /// [`settle`](Self::settle) or [`finish`](Self::finish). Row groups are cut by the rules
    /// of `ArrowWriter::write`, on the predicted size of the row group in progress
    /// (`predicted_bytes`): the lanes are not waited for to decide a cut.
    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.usable()?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if batch.num_columns() != self.schema.fields().len() {
            return Err(ParquetError::General(format!(
                "the batch has {} columns, the file {}",
                batch.num_columns(),
                self.schema.fields().len()
            )));
        }
        self.appended_if_done().await?;
        let mut remaining = batch.clone();
        loop {
            if self.in_progress.is_none() {
                self.new_row_group()?;
            }
            let buffered_rows = self.in_progress.as_ref().map_or(0, |rg| rg.rows);
            // Leading rows of `remaining` that still fit in the row group, when the rest has
            // to go to a later one.
            let mut split_at = match self.max_rows {
                Some(max) if buffered_rows + remaining.num_rows() > max => {
                    Some(max - buffered_rows)
                }
                _ => None,
            };
            let candidate_rows = split_at.unwrap_or_else(|| remaining.num_rows());
            if let Some(max_bytes) = self.max_bytes
                && buffered_rows > 0
            {
                let current_bytes = self.bytes_to_decide_on().await?;
                if current_bytes >= max_bytes {
                    self.flush_row_group().await?;
                    continue;
                }
                let avg_row_bytes = current_bytes / buffered_rows;
                if let Some(rows_that_fit) = (max_bytes - current_bytes).checked_div(avg_row_bytes)
                    && candidate_rows > rows_that_fit
                {
                    if rows_that_fit > 0 {
                        split_at = Some(rows_that_fit);
                    } else {
                        self.flush_row_group().await?;
                        continue;
                    }
                }
            }
            let rest = split_at.map(|to_write| {
                let rest = remaining.slice(to_write, remaining.num_rows() - to_write);
                remaining = remaining.slice(0, to_write);
                rest
            });
            self.encode(&remaining).await?;
            let rows = self.in_progress.as_ref().map_or(0, |rg| rg.rows);
            let mut should_flush = self.max_rows.is_some_and(|max| rows >= max);
            if !should_flush && let Some(max_bytes) = self.max_bytes {
                should_flush = self.bytes_to_decide_on().await? >= max_bytes;
            }
            if should_flush {
                self.flush_row_group().await?;
            }
            match rest {
                Some(rest) => remaining = rest,
                None => break,
            }
        }
        Ok(())
    }

    /// Flush the row group in progress, write the footer, hand the rest to the upload and
    /// complete it (`AsyncArrowWriter::finish`).
    pub(crate) async fn finish(&mut self) -> Result<()> {
        self.usable()?;
        self.flush_row_group().await?;
        self.appended().await?;
        self.file()?.finish()?;
        self.written = self.file()?.bytes_written();
        let Some(upload) = self.upload.as_mut() else {
            return Err(no_file(&self.broken));
        };
        push(&self.pending, upload).await?;
        upload.complete().await
    }

    /// Wait for the last row group's append (if one runs): the file writer and the upload
    /// are back, or its failure is returned (and the writer `broken`).
    async fn appended(&mut self) -> Result<()> {
        let Some(mut appending) = self.appending.take() else {
            return Ok(());
        };
        let before = self
            .broken
            .replace("a row group's append was abandoned".into());
        let (file, upload) = match (&mut appending.task).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                self.broken = Some(e.to_string());
                return Err(e);
            }
            Err(e) => {
                let e = ParquetError::General(format!(
                    "appending the row group's column chunks failed: {e}"
                ));
                self.broken = Some(e.to_string());
                return Err(e);
            }
        };
        self.file = Some(file);
        self.upload = Some(upload);
        self.broken = before;
        Ok(())
    }

    /// [`appended`](Self::appended), when the append has ended: its failure is returned
    /// by the next write.
    async fn appended_if_done(&mut self) -> Result<()> {
        match &self.appending {
            Some(appending) if appending.task.is_finished() => self.appended().await,
            _ => Ok(()),
        }
    }

    /// Column writers for the next row group, one lane per top-level column.
    fn new_row_group(&mut self) -> Result<()> {
        if let Some(spill) = &self.spill {
            spill.next_row_group()?;
        }
        let mut writers = self
            .factory
            .create_column_writers(self.row_groups)?
            .into_iter();
        for ((lane, field), n) in self
            .lanes
            .iter()
            .zip(self.schema.fields())
            .zip(&self.leaves)
        {
            let column = ColumnWriters {
                field: field.clone(),
                writers: writers.by_ref().take(*n).collect(),
            };
            self.to_lane(lane, LaneJob::Start(self.row_groups, column));
        }
        self.in_progress = Some(RowGroup { rows: 0 });
        Ok(())
    }

    /// Queue `job` in `lane`, which a pool thread runs unless one already does.
    fn to_lane(&self, lane: &Arc<Lane>, job: LaneJob) {
        let start = {
            let mut state = lane.lock();
            state.queue.push_back(job);
            !mem::replace(&mut state.running, true)
        };
        if start {
            let lane = lane.clone();
            self.pool.spawn(Box::new(move || run_lane(&lane)));
        }
    }

    /// Hand every column of `batch` to its lane (the costliest lanes started first), then wait
    /// for the write before this one to be encoded.
    async fn encode(&mut self, batch: &RecordBatch) -> Result<()> {
        let Some(rg) = self.in_progress.as_mut() else {
            return Ok(());
        };
        rg.rows += batch.num_rows();
        self.writes += 1;
        let write = self.writes;
        let mut order: Vec<(Duration, usize)> = self
            .lanes
            .iter()
            .enumerate()
            .map(|(i, lane)| (lane.lock().cost, i))
            .collect();
        order.sort_by_key(|&(cost, _)| std::cmp::Reverse(cost));
        for (_, i) in order {
            self.to_lane(
                &self.lanes[i],
                LaneJob::Write(write, batch.column(i).clone()),
            );
        }
        self.wait_for(write - 1, false).await
    }

    /// End the row group in progress: each lane closes its writers after its last array of
    /// the row group (the next row group's arrays may already follow), and a task of its own
    /// appends the column chunks to the file in column order (`ArrowWriter::flush`) once
    /// every lane has closed its writers and the row group before is appended. This waits
    /// only for that append (of the row group before, which had this one's encoding time),
    /// not for the lanes.
    async fn flush_row_group(&mut self) -> Result<()> {
        let predicted = self.predicted_bytes();
        let Some(rg) = self.in_progress.take() else {
            return Ok(());
        };
        if rg.rows > 0 {
            self.last_row_bytes = Some(predicted as f64 / rg.rows as f64);
        }
        // The row group before this one is in the file (row groups are appended in order;
        // it was appended while this one was encoded). Its spill file is then free for the
        // next row group: a Parquet file uses two at a time.
        self.appended().await?;
        let (Some(file), Some(upload)) = (self.file.take(), self.upload.take()) else {
            return Err(no_file(&self.broken));
        };
        let mut closed = Vec::with_capacity(self.lanes.len());
        for lane in &self.lanes {
            let (reply, chunks) = tokio::sync::oneshot::channel();
            self.to_lane(lane, LaneJob::Cut(reply));
            closed.push((lane.name.clone(), chunks));
        }
        // The row group counts by its predicted size until it is appended (and `settle`d):
        // the figure depends only on the batches written.
        self.written = file.bytes_written() + predicted;
        self.row_groups += 1;
        let pending = self.pending.clone();
        self.appending = Some(Appending {
            task: tokio::spawn(async move {
                let mut chunks = Vec::with_capacity(closed.len());
                for (name, column) in closed {
                    match column.await {
                        Ok(column) => chunks.push(column?),
                        Err(_) => {
                            return Err(ParquetError::General(format!(
                                "{name}: its writers were dropped before the row group ended"
                            )));
                        }
                    }
                }
                // The chunks are appended on a blocking thread (spilled pages are read back
                // from disk), which hands their bytes over in pieces while this task gives
                // them to the upload: the encoded row group is in memory a piece at a time,
                // never as a whole column chunk nor as one contiguous copy of itself.
                let mut upload = upload;
                let file = append_chunks(file, &pending, &mut upload, chunks).await?;
                Ok((file, upload))
            }),
        });
        Ok(())
    }
}

/// A row group's append ([`append_chunks`]) running on a task of its own; it gives the file
/// writer and the upload back. Dropped with its writer, it is stopped (its blocking thread
/// ends at its next piece, which nobody takes).
struct Appending<W> {
    task: tokio::task::JoinHandle<Result<(SerializedFileWriter<Pending>, W)>>,
}

impl<W> Drop for Appending<W> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The error of a writer whose file writer is gone (an append was abandoned).
fn no_file(broken: &Option<String>) -> ParquetError {
    ParquetError::General(format!(
        "the file cannot be written after an earlier failure: {}",
        broken
            .as_deref()
            .unwrap_or("a row group's append was abandoned")
    ))
}

/// The size of the pieces in which an appended row group's bytes are handed to the upload.
const PIECE_BYTES: usize = 1 << 20;

/// Append `chunks` to the next row group of `file` in order and close it, on a blocking
/// thread, while giving the bytes written to `upload` in pieces of [`PIECE_BYTES`] as they
/// come (at most one piece waits between the two); returns the file writer.
async fn append_chunks<W: AsyncFileWriter>(
    mut file: SerializedFileWriter<Pending>,
    pending: &Pending,
    upload: &mut W,
    chunks: Vec<Vec<ArrowColumnChunk>>,
) -> Result<SerializedFileWriter<Pending>> {
    // What the file writer wrote before (e.g. the magic) goes first.
    push(pending, upload).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let streaming = pending.clone();
    let appending = tokio::task::spawn_blocking(move || {
        // Dropped however the append ends (an error, a panic): the sender goes, and the
        // receiving loop below ends.
        let _stream = streaming.stream_to(tx);
        let appended = (|| {
            let mut row_group = file.next_row_group()?;
            for chunk in chunks.into_iter().flatten() {
                chunk.append_to_row_group(&mut row_group)?;
            }
            row_group.close().map(|_| ())
        })();
        appended.map(|()| file)
    });
    while let Some(piece) = rx.recv().await {
        // On an upload's error the receiver is dropped with this function: the thread's next
        // piece fails to be sent, which ends its append.
        upload.write(Bytes::from(piece)).await?;
    }
    let file = match appending.await {
        Ok(appended) => appended?,
        Err(e) => {
            return Err(ParquetError::General(format!(
                "appending the row group's column chunks failed: {e}"
            )));
        }
    };
    push(pending, upload).await?;
    Ok(file)
}

/// Hand the bytes in `pending` to `upload` (`AsyncArrowWriter::do_write`). The upload's error
/// is passed on as it is (`AsyncArrowWriter` wraps it once more), so that the sink still finds
/// the store's error in it and classifies it: a permission error is fatal, not a restart.
async fn push<W: AsyncFileWriter>(pending: &Pending, upload: &mut W) -> Result<()> {
    let bytes = pending.take();
    if bytes.is_empty() {
        return Ok(());
    }
    upload.write(Bytes::from(bytes)).await
}

/// The `Write` the Parquet file writer writes to: bytes waiting for the upload, shared with
/// the [`EncodeWriter`] that hands them over after each write and row group. While a row
/// group is appended ([`stream_to`](Self::stream_to)), its bytes are sent on in pieces of at
/// most [`PIECE_BYTES`] (a larger page is a piece of its own) as they are written, the writing
/// thread waiting while the upload is behind.
#[derive(Debug, Clone, Default)]
struct Pending(Arc<Mutex<PendingBytes>>);

#[derive(Debug, Default)]
struct PendingBytes {
    bytes: Vec<u8>,
    stream: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
}

/// Stops [`Pending::stream_to`] when dropped.
struct Streaming(Pending);

impl Drop for Streaming {
    fn drop(&mut self) {
        self.0.lock().stream = None;
    }
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingBytes> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bytes written (and not streamed) since the last call.
    fn take(&self) -> Vec<u8> {
        mem::take(&mut self.lock().bytes)
    }

    /// Send what is written to `to` in pieces of [`PIECE_BYTES`] until the result is dropped
    /// (from a thread that may block: sending waits for the receiver).
    fn stream_to(&self, to: tokio::sync::mpsc::Sender<Vec<u8>>) -> Streaming {
        self.lock().stream = Some(to);
        Streaming(self.clone())
    }
}

impl std::io::Write for Pending {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.lock();
        // A piece is sent before the write that would take it past `PIECE_BYTES` (a page
        // larger than that is a piece of its own), so that its buffer never grows.
        if !pending.bytes.is_empty()
            && pending.bytes.len() + buf.len() > PIECE_BYTES
            && let Some(to) = pending.stream.clone()
        {
            let piece = mem::replace(
                &mut pending.bytes,
                Vec::with_capacity(PIECE_BYTES.max(buf.len())),
            );
            drop(pending);
            to.blocking_send(piece).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "the upload stopped taking the row group's bytes",
                )
            })?;
            pending = self.lock();
        }
        pending.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_array::{Array, Float64Array, Int32Array, Int64Array, StringArray, StructArray};
    use arrow_schema::{DataType, Field, Fields, Schema};
    use parquet::arrow::AsyncArrowWriter;
    use parquet::file::metadata::{KeyValue, SortingColumn};
    use parquet::file::properties::EnabledStatistics;
    use parquet::schema::types::ColumnPath;

    use super::*;

    /// Rows `from..to` with flat, nullable, list and struct columns (several leaves each).
    fn batch(from: i64, to: i64) -> RecordBatch {
        let mut tags = ListBuilder::new(StringBuilder::new());
        for i in from..to {
            if i % 7 == 0 {
                tags.append_null();
            } else {
                for t in 0..(i % 3) {
                    tags.values().append_value(format!("tag-{}", (i + t) % 11));
                }
                tags.append(true);
            }
        }
        let tags = tags.finish();
        let inner = StructArray::new(
            Fields::from(vec![
                Field::new("a", DataType::Int32, false),
                Field::new("b", DataType::Float64, true),
            ]),
            vec![
                Arc::new(Int32Array::from_iter_values(
                    (from..to).map(|i| (i % 1000) as i32),
                )),
                Arc::new(Float64Array::from_iter(
                    (from..to).map(|i| (i % 5 != 0).then_some(i as f64 / 3.0)),
                )),
            ],
            None,
        );
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("cat", DataType::Utf8, true),
            Field::new("tags", tags.data_type().clone(), true),
            Field::new("s", inner.data_type().clone(), false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(from..to)),
                Arc::new(StringArray::from_iter_values((from..to).map(|i| {
                    format!("{:016x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
                }))),
                Arc::new(StringArray::from_iter(
                    (from..to).map(|i| (i % 4 != 0).then(|| format!("c{}", i % 13))),
                )),
                Arc::new(tags),
                Arc::new(inner),
            ],
        )
        .expect("batch")
    }

    fn props(max_rows: usize, max_bytes: usize) -> WriterProperties {
        WriterProperties::builder()
            .set_max_row_group_row_count(Some(max_rows))
            .set_max_row_group_bytes(Some(max_bytes))
            .set_data_page_size_limit(4096)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_column_bloom_filter_enabled(ColumnPath::from("name"), true)
            .set_column_dictionary_enabled(ColumnPath::from("name"), false)
            .set_sorting_columns(Some(vec![SortingColumn {
                column_idx: 0,
                descending: false,
                nulls_first: false,
            }]))
            .set_key_value_metadata(Some(vec![KeyValue::new("owner".into(), "t".to_string())]))
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build()
    }

    /// An upload refusing bytes (permission denied) mid-file.
    struct Refusing;

    impl AsyncFileWriter for Refusing {
        fn write(&mut self, _: Bytes) -> futures::future::BoxFuture<'_, Result<()>> {
            Box::pin(async {
                Err(ParquetError::External(Box::new(
                    object_store::Error::PermissionDenied {
                        path: "bucket/part".into(),
                        source: "403 AccessDenied".into(),
                    },
                )))
            })
        }

        fn complete(&mut self) -> futures::future::BoxFuture<'_, Result<()>> {
            Box::pin(async { Ok(()) })
        }
    }

    /// The store's error comes back as the upload gave it, not wrapped again: the sink
    /// finds the `object_store::Error` in it (and classifies a permission error as fatal).
    #[tokio::test]
    async fn an_upload_error_mid_file_is_the_stores_own() {
        let data = batch(0, 5000);
        for threads in [1, 2] {
            let pool = Arc::new(EncodePool::new(threads).expect("pool"));
            let mut w =
                EncodeWriter::try_new(Refusing, data.schema(), props(1000, 1 << 30), pool, None)
                    .expect("writer");
            let e = w.write(&data).await.expect_err("refused");
            let ParquetError::External(inner) = e else {
                panic!("{threads} threads: {e:?}");
            };
            let store = inner
                .downcast::<object_store::Error>()
                .unwrap_or_else(|other| panic!("not the store's error: {other:?}"));
            assert!(
                matches!(*store, object_store::Error::PermissionDenied { .. }),
                "{store:?}"
            );
        }
    }

    /// An upload recording the size of each write, refusing (permission denied) the write
    /// numbered `refuse_at` if set.
    #[derive(Default)]
    struct Recording {
        writes: Vec<usize>,
        bytes: Vec<u8>,
        refuse_at: Option<usize>,
    }

    impl AsyncFileWriter for Recording {
        fn write(&mut self, bs: Bytes) -> futures::future::BoxFuture<'_, Result<()>> {
            Box::pin(async move {
                if self.refuse_at == Some(self.writes.len()) {
                    return Refusing.write(bs).await;
                }
                self.writes.push(bs.len());
                self.bytes.extend_from_slice(&bs);
                Ok(())
            })
        }

        fn complete(&mut self) -> futures::future::BoxFuture<'_, Result<()>> {
            Box::pin(async { Ok(()) })
        }
    }

    /// A row group of 6 MiB in one column chunk reaches the upload in pieces of about
    /// `PIECE_BYTES` while it is appended, its pages on the heap or spilled: never the whole
    /// chunk at once. The file is `AsyncArrowWriter`'s; an upload refusing a piece in the
    /// middle ends the append with the store's error (the appending thread does not wait
    /// for a piece nobody takes).
    #[tokio::test]
    async fn a_row_group_reaches_the_upload_in_pieces() {
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let blobs = StringArray::from_iter_values((0..6144).map(|_| {
            (0..64)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    format!("{state:016x}")
                })
                .collect::<String>()
        }));
        let schema = Arc::new(Schema::new(vec![Field::new("blob", DataType::Utf8, false)]));
        let data = RecordBatch::try_new(schema.clone(), vec![Arc::new(blobs)]).expect("batch");
        let props = WriterProperties::builder()
            .set_dictionary_enabled(false)
            .set_max_row_group_row_count(Some(1 << 20))
            .set_max_row_group_bytes(Some(1 << 30))
            .build();
        let mut reference =
            AsyncArrowWriter::try_new(Vec::new(), schema.clone(), Some(props.clone())).expect("w");
        reference.write(&data).await.expect("write");
        reference.finish().await.expect("finish");
        let expected = reference.into_inner();
        assert!(expected.len() > 6 << 20, "{} bytes", expected.len());
        let spill_dir = tempfile::tempdir().expect("spill dir");
        let spill = SpillPages::new(spill_dir.path().to_path_buf()).expect("spill");
        for (threads, spilled) in [(1, false), (2, true)] {
            let what = format!("{threads} threads, spilled {spilled}");
            let pool = Arc::new(EncodePool::new(threads).expect("pool"));
            let pages = spilled.then(|| spill.clone());
            let mut w = EncodeWriter::try_new(
                Recording::default(),
                schema.clone(),
                props.clone(),
                pool.clone(),
                pages.clone(),
            )
            .expect("writer");
            w.write(&data).await.expect("write");
            w.finish().await.expect("finish");
            let upload = w.into_inner().expect("the upload, after finish");
            assert!(
                upload.bytes == expected,
                "{what}: not AsyncArrowWriter's file"
            );
            let largest = upload.writes.iter().max().copied().unwrap_or_default();
            // A piece is sent before the write that would take it past `PIECE_BYTES`; a page
            // (at most the default 1 MiB and its header) may be a piece of its own.
            assert!(
                largest <= PIECE_BYTES + 4096,
                "{what}: a write of {largest} bytes ({:?})",
                upload.writes
            );
            assert!(
                upload.writes.len() >= expected.len() / PIECE_BYTES,
                "{what}: {:?}",
                upload.writes
            );

            let refusing = Recording {
                refuse_at: Some(2),
                ..Recording::default()
            };
            let mut w = EncodeWriter::try_new(refusing, schema.clone(), props.clone(), pool, pages)
                .expect("writer");
            w.write(&data).await.expect("write");
            let e = tokio::time::timeout(Duration::from_secs(60), w.finish())
                .await
                .expect("the append ends")
                .expect_err("refused");
            let ParquetError::External(inner) = e else {
                panic!("{what}: {e:?}");
            };
            assert!(
                inner.downcast_ref::<object_store::Error>().is_some(),
                "{what}: not the store's error: {inner:?}"
            );
            let again = w.finish().await.expect_err("broken").to_string();
            assert!(again.contains("earlier failure"), "{what}: {again}");
        }
    }

    /// The rows of a Parquet file, and its row groups' row counts.
    fn read_back(file: Vec<u8>) -> (Vec<RecordBatch>, Vec<i64>) {
        let file = Bytes::from(file);
        let groups = parquet::file::reader::SerializedFileReader::new(file.clone())
            .map(|r| {
                use parquet::file::reader::FileReader;
                r.metadata()
                    .row_groups()
                    .iter()
                    .map(|g| g.num_rows())
                    .collect()
            })
            .expect("metadata");
        let rows = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 100_000)
            .expect("reader")
            .collect::<std::result::Result<Vec<_>, _>>()
            .expect("rows");
        (rows, groups)
    }

    /// The same batches through `AsyncArrowWriter` and through `EncodeWriter` with 1 and 3
    /// threads, pages on the heap or spilled. Cut on exact sizes and settled after each write,
    /// the sizes reported after every write and the bytes are the reference's. As the sink
    /// writes (row groups cut on predicted sizes, not settled): the bytes are the reference's
    /// where only rows cut them; with a byte limit the rows are the reference's, in as many row
    /// groups give or take one (the first within a quarter of the reference's first), none
    /// half as large again as the reference's largest, and the file is the same whatever the
    /// threads and the spill.
    #[tokio::test]
    async fn files_are_those_of_async_arrow_writer() {
        let sizes = [1000, 3333, 7, 5000, 1, 12_000, 2500];
        let mut batches = Vec::new();
        let mut at = 0;
        for n in sizes {
            batches.push(batch(at, at + n));
            at += n;
        }
        let schema = batches[0].schema();
        let spill_dir = tempfile::tempdir().expect("spill dir");
        let spill = SpillPages::new(spill_dir.path().to_path_buf()).expect("spill");
        for (max_rows, max_bytes) in [(4000, 1 << 30), (1 << 20, 40_000), (3000, 60_000)] {
            let props = props(max_rows, max_bytes);
            let mut reference =
                AsyncArrowWriter::try_new(Vec::new(), schema.clone(), Some(props.clone()))
                    .expect("reference");
            let mut trace = Vec::new();
            for b in &batches {
                reference.write(b).await.expect("write");
                trace.push((reference.bytes_written(), reference.in_progress_size()));
            }
            reference.finish().await.expect("finish");
            trace.push((reference.bytes_written(), 0));
            let expected = reference.into_inner();
            let (expected_rows, expected_groups) = read_back(expected.clone());
            let cut_by_rows_only = max_bytes == 1 << 30;
            let mut unsettled: Option<Vec<u8>> = None;
            for (threads, settled, spilled) in [
                (1, true, false),
                (3, true, false),
                (1, false, false),
                (3, false, false),
                (1, true, true),
                (3, false, true),
            ] {
                let what = format!(
                    "exact {settled}, spilled {spilled}, {threads} threads, {max_rows}/{max_bytes}"
                );
                let pool = Arc::new(EncodePool::new(threads).expect("pool"));
                let pages = spilled.then(|| spill.clone());
                let mut w =
                    EncodeWriter::try_new(Vec::new(), schema.clone(), props.clone(), pool, pages)
                        .expect("writer");
                w.exact_cuts = settled;
                let mut ours = Vec::new();
                for b in &batches {
                    w.write(b).await.expect("write");
                    if settled {
                        w.settle().await.expect("settle");
                        ours.push((w.bytes_written(), w.in_progress_size()));
                    }
                }
                w.finish().await.expect("finish");
                if settled {
                    ours.push((w.bytes_written(), w.in_progress_size()));
                    assert_eq!(ours, trace, "sizes, {what}");
                }
                let got = w.into_inner().expect("the upload, after finish");
                if settled || cut_by_rows_only {
                    assert!(
                        got == expected,
                        "{what}: {} bytes vs {}",
                        got.len(),
                        expected.len()
                    );
                    continue;
                }
                let (rows, groups) = read_back(got.clone());
                assert_eq!(rows, expected_rows, "rows, {what}");
                let largest = |g: &[i64]| g.iter().copied().max().unwrap_or(0);
                assert!(
                    groups.len().abs_diff(expected_groups.len()) <= 1
                        && 2 * largest(&groups) <= 3 * largest(&expected_groups)
                        // The first cut, before any bytes per row are known, waits for the
                        // lanes: it is near the reference's.
                        && 4 * groups[0].abs_diff(expected_groups[0]) <= expected_groups[0] as u64,
                    "{what}: row groups {groups:?}, the reference's {expected_groups:?}"
                );
                match &unsettled {
                    None => unsettled = Some(got),
                    Some(first) => assert!(*first == got, "{what}: not the file of 1 thread"),
                }
            }
        }
    }

    /// Open file descriptors of this process (nextest runs each test in a process of its own).
    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .count()
    }

    /// A file of 300 columns spilling its row groups holds one spill file open at a time, not
    /// one per column: a sink of many open files of many columns stays within the process's
    /// limit of file descriptors.
    #[tokio::test]
    async fn spilled_row_groups_share_one_file_whatever_the_columns() {
        let fields: Vec<Field> = (0..300)
            .map(|i| Field::new(format!("c{i}"), DataType::Int64, false))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let batch = |from: i64| {
            let columns: Vec<ArrayRef> = (0..300)
                .map(|c| {
                    Arc::new(Int64Array::from_iter_values(
                        (from..from + 500).map(|i| i * c),
                    )) as ArrayRef
                })
                .collect();
            RecordBatch::try_new(schema.clone(), columns).expect("batch")
        };
        let dir = tempfile::tempdir().expect("dir");
        let spill = SpillPages::new(dir.path().to_path_buf()).expect("spill");
        let pool = Arc::new(EncodePool::new(3).expect("pool"));
        let before = open_fds();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(1200))
            .set_data_page_size_limit(1024)
            .build();
        let mut w = EncodeWriter::try_new(Vec::new(), schema.clone(), props, pool, Some(spill))
            .expect("writer");
        let mut most = 0;
        for i in 0..7 {
            w.write(&batch(i * 500)).await.expect("write");
            w.settle().await.expect("settle");
            most = most.max(open_fds() - before);
        }
        w.finish().await.expect("finish");
        assert!(most >= 1, "the row group in progress spilled to a file");
        assert!(
            most <= 2,
            "{most} files open for one row group of 300 columns"
        );
        let bytes = Bytes::from(w.into_inner().expect("the upload, after finish"));
        let rows: usize =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                .expect("reader")
                .build()
                .expect("batches")
                .map(|b| b.expect("batch").num_rows())
                .sum();
        assert_eq!(rows, 3500);
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
    }

    /// A column whose array does not have the file's type: an error naming the column, with
    /// one thread or several, and the file refuses further writes.
    #[tokio::test]
    async fn a_mistyped_column_is_an_error_not_a_panic() {
        let good = batch(0, 100);
        let schema = good.schema();
        let mut columns = good.columns().to_vec();
        // `name` is Utf8 in the file: an Int64 array makes the byte-array encoder panic;
        // `id` is Int64: a Utf8 array is an error of the Int64 writer.
        for (i, array) in [
            (
                1,
                Arc::new(Int64Array::from_iter_values(0..100)) as ArrayRef,
            ),
            (
                0,
                Arc::new(StringArray::from_iter_values(
                    (0..100).map(|i| i.to_string()),
                )),
            ),
        ] {
            columns[i] = array.clone();
            let fields: Vec<FieldRef> = schema
                .fields()
                .iter()
                .enumerate()
                .map(|(j, f)| {
                    if j == i {
                        Arc::new(Field::new(f.name(), array.data_type().clone(), false))
                    } else {
                        f.clone()
                    }
                })
                .collect();
            let bad =
                RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.clone()).expect("bad");
            columns = good.columns().to_vec();
            for threads in [1, 3] {
                let pool = Arc::new(EncodePool::new(threads).expect("pool"));
                let mut w = EncodeWriter::try_new(
                    Vec::new(),
                    schema.clone(),
                    props(1000, 1 << 20),
                    pool,
                    None,
                )
                .expect("writer");
                w.write(&good).await.expect("good batch");
                // The bad column fails in its lane: the error comes with this write, or at the
                // latest when the lanes are settled.
                let e = match w.write(&bad).await {
                    Err(e) => e,
                    Ok(()) => w.settle().await.expect_err("mistyped batch"),
                }
                .to_string();
                let name = schema.field(i).name();
                assert!(e.contains(&format!("column {name}")), "{e}");
                let again = w.write(&good).await.expect_err("broken file").to_string();
                assert!(again.contains("earlier failure"), "{again}");
                assert!(w.finish().await.is_err());
            }
        }
    }

    /// Row groups of `max_rows`, cut by rows only.
    fn rows_only(max_rows: usize) -> WriterProperties {
        WriterProperties::builder()
            .set_max_row_group_bytes(None)
            .set_max_row_group_row_count(Some(max_rows))
            .build()
    }

    /// Rows `from..to` of two plain columns, `a` and `b`.
    fn two_columns(from: i64, to: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("b", DataType::Int64, false),
        ]));
        let a: ArrayRef = Arc::new(Int64Array::from_iter_values(from..to));
        let b: ArrayRef = Arc::new(Int64Array::from_iter_values((from..to).map(|i| i * 7)));
        RecordBatch::try_new(schema, vec![a, b]).expect("batch")
    }

    /// The values of column `a` (int64, the first) of `rows`, in order.
    fn column_a(rows: &[RecordBatch]) -> Vec<i64> {
        rows.iter()
            .flat_map(|b| {
                let a = b.column(0).as_any().downcast_ref::<Int64Array>();
                a.expect("a").values().to_vec()
            })
            .collect()
    }

    /// A writer of [`two_columns`] on two threads whose column `a`, in the first write, waits
    /// for a message on the sender returned (`wait` at most); whether it came is in the flag.
    fn writer_holding_a(
        wait: Duration,
        max_rows: usize,
    ) -> (
        EncodeWriter<Vec<u8>>,
        mpsc::Sender<()>,
        Arc<std::sync::atomic::AtomicBool>,
    ) {
        let pool = Arc::new(EncodePool::new(2).expect("pool"));
        let w = EncodeWriter::try_new(
            Vec::new(),
            two_columns(0, 1).schema(),
            rows_only(max_rows),
            pool,
            None,
        )
        .expect("writer");
        let (tx, rx) = mpsc::channel::<()>();
        let rx = Mutex::new(rx);
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = released.clone();
        let set = w.lanes[0].gate.set(Box::new(move |write| {
            if write == 1 {
                let came = rx
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .recv_timeout(wait)
                    .is_ok();
                flag.store(came, Ordering::SeqCst);
            }
        }));
        assert!(set.is_ok());
        (w, tx, released)
    }

    /// Column `b` of the second write is encoded while column `a` of the first is still being
    /// encoded: a write does not wait for its slowest column before the next one's columns
    /// start, nor does the end of a row group (each write a row group of its own, the second
    /// time). (`a` waits, in its first write, until `b` starts on the second: with a barrier
    /// after each write or row group they never meet, and `a` goes on after 5 s without the
    /// message.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_next_writes_columns_start_while_a_slow_column_is_encoded() {
        for max_rows in [1 << 20, 100] {
            let (mut w, tx, released) = writer_holding_a(Duration::from_secs(5), max_rows);
            let tx = Mutex::new(tx);
            let set = w.lanes[1].gate.set(Box::new(move |write| {
                if write == 2 {
                    let _ = tx.lock().unwrap_or_else(|p| p.into_inner()).send(());
                }
            }));
            assert!(set.is_ok());
            w.write(&two_columns(0, 100)).await.expect("first write");
            w.write(&two_columns(100, 200)).await.expect("second write");
            w.finish().await.expect("finish");
            assert!(
                released.load(Ordering::SeqCst),
                "row groups of {max_rows}: column b of write 2 did not start during write 1"
            );
            let file = w.into_inner().expect("the upload, after finish");
            let (rows, groups) = read_back(file);
            assert_eq!(
                groups,
                if max_rows == 100 {
                    vec![100, 100]
                } else {
                    vec![200]
                }
            );
            assert_eq!(column_a(&rows), (0..200).collect::<Vec<i64>>());
        }
    }

    /// A write returns only once the write before it is encoded: at most two writes' arrays
    /// are held by the lanes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_waits_for_the_one_before_it() {
        let (mut w, tx, _) = writer_holding_a(Duration::from_secs(10), 1 << 20);
        // The first write returns while its column `a` is held.
        tokio::time::timeout(Duration::from_secs(5), w.write(&two_columns(0, 10)))
            .await
            .expect("the first write does not wait for itself")
            .expect("first write");
        let second = two_columns(10, 20);
        {
            let mut write = std::pin::pin!(w.write(&second));
            let waited = tokio::time::timeout(Duration::from_millis(300), &mut write).await;
            assert!(
                waited.is_err(),
                "the second write returned while the first was encoded"
            );
            tx.send(()).expect("release");
            tokio::time::timeout(Duration::from_secs(5), write)
                .await
                .expect("the second write returns once the first is encoded")
                .expect("second write");
        }
        w.finish().await.expect("finish");
    }

    /// An upload whose writes each wait for a permit of `gate`.
    struct Held {
        bytes: Vec<u8>,
        gate: Arc<tokio::sync::Semaphore>,
    }

    impl AsyncFileWriter for Held {
        fn write(&mut self, bs: Bytes) -> futures::future::BoxFuture<'_, Result<()>> {
            Box::pin(async move {
                let permit = self.gate.acquire().await;
                permit
                    .map_err(|e| ParquetError::External(Box::new(e)))?
                    .forget();
                self.bytes.extend_from_slice(&bs);
                Ok(())
            })
        }

        fn complete(&mut self) -> futures::future::BoxFuture<'_, Result<()>> {
            Box::pin(async { Ok(()) })
        }
    }

    /// A flushed row group is appended (and uploaded) while the next one is encoded: with
    /// the upload held, the write that flushes a row group returns, and so does the next
    /// one; only the next flush waits for the append before it (row groups reach the file in
    /// order). Released, the file holds every row in its row groups.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_next_row_group_is_encoded_while_the_last_is_appended() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let upload = Held {
            bytes: Vec::new(),
            gate: gate.clone(),
        };
        let pool = Arc::new(EncodePool::new(2).expect("pool"));
        // Row groups of 20 000 rows: more than the file writer's buffer, so that appending
        // one writes to the upload.
        const N: i64 = 20_000;
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(N as usize))
            .build();
        let mut w = EncodeWriter::try_new(upload, two_columns(0, 1).schema(), props, pool, None)
            .expect("writer");
        for (from, to) in [(0, N), (N, N + N / 2)] {
            tokio::time::timeout(Duration::from_secs(5), w.write(&two_columns(from, to)))
                .await
                .expect("a write does not wait for the upload of the row group before")
                .expect("write");
        }
        {
            let second = two_columns(N + N / 2, 2 * N);
            let mut write = std::pin::pin!(w.write(&second));
            let waited = tokio::time::timeout(Duration::from_millis(300), &mut write).await;
            assert!(
                waited.is_err(),
                "the second row group was flushed before the first was appended: {waited:?}"
            );
            gate.add_permits(1 << 20);
            tokio::time::timeout(Duration::from_secs(5), write)
                .await
                .expect("the flush goes on once the upload does")
                .expect("second flush");
        }
        w.write(&two_columns(2 * N, 2 * N + N / 2))
            .await
            .expect("write");
        w.finish().await.expect("finish");
        let file = w.into_inner().expect("the upload, after finish").bytes;
        let (rows, groups) = read_back(file);
        assert_eq!(groups, [N, N, N / 2]);
        assert_eq!(column_a(&rows), (0..2 * N + N / 2).collect::<Vec<i64>>());
    }

    #[test]
    fn default_threads_are_capped() {
        let n = default_encode_threads();
        assert!((1..=MAX_DEFAULT_ENCODE_THREADS).contains(&n));
    }

    #[test]
    fn a_panic_is_an_error_naming_the_task() {
        let e = run_caught("two", || -> Result<u32> { panic!("boom") })
            .expect_err("panic")
            .to_string();
        assert!(e.contains("encoding two panicked: boom"), "{e}");
        assert_eq!(run_caught("one", || Ok(1)).expect("one"), 1);
    }

    #[tokio::test]
    async fn threads_exit_when_the_pool_is_dropped() {
        let pool = EncodePool::new(3).expect("pool");
        assert_eq!(pool.threads(), 3);
        let live = pool.live.clone();
        assert_eq!(live.load(Ordering::SeqCst), 3);
        let (tx, rx) = mpsc::channel();
        pool.spawn(Box::new(move || {
            let _ = tx.send(());
        }));
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the job ran");
        drop(pool);
        assert_eq!(live.load(Ordering::SeqCst), 0);
        assert_eq!(EncodePool::new(1).expect("inline").threads(), 0);
    }
}
