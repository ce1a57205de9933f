//! The source runtime: one way to write a source.
//!
//! A source is an async task that reads upstream and emits `(batch, position, dead letters)`
//! into an [`Output`]; [`spawn_source`] runs it in the background behind a bounded channel and
//! hands the graph a [`PositionedStream`]:
//!
//! * dropping the stream aborts the task (and whatever it spawned and owns);
//! * a task that returns an error ends the stream with it; a task that panics ends it with a
//!   FATAL error naming the source and the panic;
//! * the output skips the rows a resumed checkpoint already covers (the first `rows` good rows
//!   after the resume position), and passes every dead letter through, so a source never
//!   implements the skip itself;
//! * backpressure: at most `capacity` batches wait in the channel, so a slow sink slows the
//!   source instead of growing memory.
//!
//! [`CursorPollingSource`] builds a whole source from "read the rows after this cursor"
//! (async or blocking), handling the poll interval, the end of a backfill and the resume.
//!
//! ```
//! use arcane_core::{Position, PositionedBatch, SourceStart, Mode};
//! use arcane_core::testing::GeneratorSource;
//! use arcane_sources::runtime::spawn_source;
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> arcane_core::Result<()> {
//! let start = SourceStart { mode: Mode::Backfill, ..SourceStart::default() };
//! let mut stream = spawn_source("counter", &start, 2, |mut out| async move {
//!     for i in 0..3u64 {
//!         let batch = GeneratorSource::batch(i * 10, (i + 1) * 10);
//!         if out.emit(batch, Position::encode(&(i + 1))?, Vec::new()).await.is_err() {
//!             break; // the stream was dropped
//!         }
//!     }
//!     Ok(())
//! });
//! let mut rows = 0;
//! while let Some(item) = stream.next().await {
//!     rows += item?.batch.num_rows();
//! }
//! assert_eq!(rows, 30);
//! # Ok(())
//! # }
//! ```

mod cursor;

use std::future::Future;

use arcane_core::{
    DeadLetter, Error, Position, PositionedBatch, PositionedStream, Result, SourceStart,
};
use arrow_array::RecordBatch;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

pub use cursor::{
    BlockingCursor, CursorPage, CursorPollingSource, CursorRead, DEFAULT_CURSOR_BATCH_ROWS,
    DEFAULT_CURSOR_POLL_INTERVAL, OnBlockingPool,
};

/// The stream was dropped (the graph stopped): the source should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the stream was dropped")
    }
}

impl std::error::Error for Closed {}

/// Where a source task emits its batches.
#[derive(Debug)]
pub struct Output {
    tx: mpsc::Sender<Result<PositionedBatch>>,
    skip_rows: u64,
}

impl Output {
    /// Emit `batch`, ending at `position`, with the dead letters of the records it consumed.
    ///
    /// The first rows a resumed checkpoint covers are dropped here; the dead letters always go
    /// through (they travel with the batch's end, which the checkpoint does not cover). A batch
    /// may be empty (only the position moved, or every record was bad).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a batch being sent when the future is dropped is lost (do not race it
    /// in `select!`; check the stop condition between emits).
    pub async fn emit(
        &mut self,
        mut batch: RecordBatch,
        position: Position,
        dead_letters: Vec<DeadLetter>,
    ) -> std::result::Result<(), Closed> {
        let mut covered = 0;
        if self.skip_rows > 0 {
            let skip = (self.skip_rows as usize).min(batch.num_rows());
            batch = batch.slice(skip, batch.num_rows() - skip);
            self.skip_rows -= skip as u64;
            // A checkpoint inside this batch counts the rows cut from its front; a batch left
            // without rows says how many rows after its position are still covered.
            covered = if batch.num_rows() > 0 {
                skip as u64
            } else {
                self.skip_rows
            };
        }
        self.tx
            .send(Ok(PositionedBatch::new(batch, position)
                .with_dead_letters(dead_letters)
                .with_covered(covered)))
            .await
            .map_err(|_| Closed)
    }

    /// Rows still to skip (those a resumed checkpoint covers).
    pub fn rows_to_skip(&self) -> u64 {
        self.skip_rows
    }

    /// True once the stream was dropped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Run the source task `task` in the background and return its stream.
///
/// `start` gives the rows to skip after the resume position (`start.resume_from.rows`);
/// `capacity` is how many batches may wait for the graph. See the [module docs](self).
pub fn spawn_source<F, Fut>(
    name: &str,
    start: &SourceStart,
    capacity: usize,
    task: F,
) -> PositionedStream
where
    F: FnOnce(Output) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(capacity.max(1));
    let output = Output {
        tx: tx.clone(),
        skip_rows: start.resume_from.as_ref().map_or(0, |c| c.rows),
    };
    let name = name.to_string();
    let fut = task(output);
    let handle = AbortOnDropHandle::new(tokio::spawn(async move {
        let outcome = std::panic::AssertUnwindSafe(fut).catch_unwind().await;
        let error = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(panic) => Error::fatal(format!(
                "source {name} panicked: {}; nothing it read after the last commit was acknowledged",
                panic_message(&*panic)
            )),
        };
        let _ = tx.send(Err(error)).await;
    }));
    futures::stream::poll_fn(move |cx| {
        // The handle lives as long as the stream: dropping the stream aborts the task.
        let _keep = &handle;
        rx.poll_recv(cx)
    })
    .boxed()
}

/// The text of a panic payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use arcane_core::testing::GeneratorSource;
    use arcane_core::{Checkpoint, Mode};

    use super::*;

    fn start(rows: u64) -> SourceStart {
        SourceStart {
            mode: Mode::Backfill,
            resume_from: Some(Checkpoint {
                position: Some(Position(serde_json::json!(0))),
                rows,
            }),
            ..SourceStart::default()
        }
    }

    #[tokio::test]
    async fn the_output_skips_what_the_checkpoint_covers_and_keeps_every_dead_letter() {
        let stream = spawn_source("t", &start(15), 4, |mut out| async move {
            for i in 0..3u64 {
                let letters = vec![DeadLetter::new("t", format!("batch {i}"), "bad")];
                let batch = GeneratorSource::batch(i * 10, (i + 1) * 10);
                if out
                    .emit(batch, Position::encode(&(i + 1))?, letters)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Ok(())
        });
        let items: Vec<PositionedBatch> = stream.map(|i| i.unwrap()).collect().await;
        let rows: Vec<usize> = items.iter().map(|b| b.batch.num_rows()).collect();
        assert_eq!(rows, vec![0, 5, 10]);
        // What was cut is said: the first batch left 5 covered rows after its position, the
        // second lost 5 rows from its front.
        let covered: Vec<u64> = items.iter().map(|b| b.covered).collect();
        assert_eq!(covered, vec![5, 5, 0]);
        assert_eq!(
            items.iter().map(|b| b.dead_letters.len()).sum::<usize>(),
            3,
            "dead letters are never skipped"
        );
    }

    #[tokio::test]
    async fn errors_and_panics_end_the_stream_with_an_error() {
        let mut stream = spawn_source("failing", &SourceStart::default(), 1, |_out| async {
            Err(Error::source_permanent("failing", "upstream said no"))
        });
        let err = stream.next().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("upstream said no"), "{err}");
        assert!(stream.next().await.is_none());

        let mut stream = spawn_source("buggy", &SourceStart::default(), 1, |_out| async {
            if true {
                panic!("index out of bounds");
            }
            Ok(())
        });
        let err = stream.next().await.unwrap().unwrap_err();
        assert_eq!(err.exit_code(), arcane_core::ExitCode::Fatal);
        assert!(
            err.to_string()
                .contains("source buggy panicked: index out of bounds"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn dropping_the_stream_stops_the_task() {
        let stopped = Arc::new(AtomicBool::new(false));
        struct SetOnDrop(Arc<AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let guard = SetOnDrop(stopped.clone());
        let mut stream = spawn_source(
            "forever",
            &SourceStart::default(),
            1,
            move |mut out| async move {
                let _guard = guard;
                let mut i = 0u64;
                loop {
                    i += 1;
                    let batch = GeneratorSource::batch(0, 1);
                    if out
                        .emit(batch, Position::encode(&i)?, Vec::new())
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            },
        );
        stream.next().await.unwrap().unwrap();
        drop(stream);
        for _ in 0..100 {
            if stopped.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the task still runs after its stream was dropped");
    }
}
