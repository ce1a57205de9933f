//! [`CursorPollingSource`]: a whole [`Source`] from "read the rows after this cursor".

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arcane_core::{
    Checkpoint, DeadLetter, Error, Mode, Position, PositionedStream, Result, Source, SourceStart,
};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::spawn_source;

/// Default poll interval of a [`CursorPollingSource`] in streaming mode.
pub const DEFAULT_CURSOR_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Default rows asked for per read.
pub const DEFAULT_CURSOR_BATCH_ROWS: usize = 10_000;

/// What one read returned.
#[derive(Debug, Clone)]
pub struct CursorPage<C> {
    /// The rows read, in cursor order (possibly none).
    pub batch: RecordBatch,
    /// The cursor after the last record read (rows and dead letters); `None` when nothing was
    /// read.
    pub cursor: Option<C>,
    /// Records read that cannot be decoded (they move the cursor too).
    pub dead_letters: Vec<DeadLetter>,
}

impl<C> CursorPage<C> {
    /// A page of `batch` ending at `cursor`.
    pub fn new(batch: RecordBatch, cursor: Option<C>) -> Self {
        Self {
            batch,
            cursor,
            dead_letters: Vec::new(),
        }
    }

    /// Add the records that could not be decoded.
    pub fn with_dead_letters(mut self, letters: Vec<DeadLetter>) -> Self {
        self.dead_letters = letters;
        self
    }
}

/// Reads records after a cursor, asynchronously. The cursor is whatever orders the records
/// (an id, a timestamp and id, an offset); it is stored in the sink's commit manifest.
#[async_trait::async_trait]
pub trait CursorRead: Send + Sync + Debug + 'static {
    /// The cursor.
    type Cursor: Serialize + DeserializeOwned + Clone + PartialEq + Debug + Send + Sync + 'static;

    /// Read at most `limit` records after `cursor` (`None`: from the beginning), in cursor
    /// order. The same call must return the same records while the data has not changed
    /// (a resume inside a batch skips rows by count).
    async fn read_after(
        &mut self,
        cursor: Option<&Self::Cursor>,
        limit: usize,
    ) -> Result<CursorPage<Self::Cursor>>;

    /// The schema of the rows, when known before reading.
    fn schema(&self) -> Option<SchemaRef> {
        None
    }
}

/// Reads records after a cursor with a blocking driver (SQLite, a synchronous client); run on
/// Tokio's blocking pool by [`CursorPollingSource::blocking`].
pub trait BlockingCursor: Send + Debug + 'static {
    /// The cursor.
    type Cursor: Serialize + DeserializeOwned + Clone + PartialEq + Debug + Send + Sync + 'static;

    /// As [`CursorRead::read_after`], blocking.
    fn read_after(
        &mut self,
        cursor: Option<&Self::Cursor>,
        limit: usize,
    ) -> Result<CursorPage<Self::Cursor>>;

    /// The schema of the rows, when known before reading.
    fn schema(&self) -> Option<SchemaRef> {
        None
    }
}

/// A [`BlockingCursor`] as a [`CursorRead`].
#[derive(Debug)]
pub struct OnBlockingPool<B>(Arc<Mutex<B>>);

#[async_trait::async_trait]
impl<B: BlockingCursor> CursorRead for OnBlockingPool<B> {
    type Cursor = B::Cursor;

    async fn read_after(
        &mut self,
        cursor: Option<&Self::Cursor>,
        limit: usize,
    ) -> Result<CursorPage<Self::Cursor>> {
        let inner = self.0.clone();
        let cursor = cursor.cloned();
        tokio::task::spawn_blocking(move || {
            let mut reader = inner.lock().unwrap_or_else(|p| p.into_inner());
            reader.read_after(cursor.as_ref(), limit)
        })
        .await
        .map_err(|e| {
            Error::fatal(format!(
                "the blocking reader failed: {}",
                super::panic_message(&*e.into_panic())
            ))
        })?
    }

    fn schema(&self) -> Option<SchemaRef> {
        self.0.lock().ok().and_then(|r| r.schema())
    }
}

/// A [`Source`] that polls "the records after the cursor": in backfill mode it reads until a
/// read returns nothing and ends; in streaming mode it then polls every `poll_interval`. The
/// position is the cursor; a restart resumes after the committed cursor and skips the rows of
/// the next batch the checkpoint covers. Exactly once as long as the reader returns records in
/// cursor order and the same records for the same cursor.
///
/// ```
/// use arcane_core::{Result, Mode, SourceStart, Source};
/// use arcane_core::testing::GeneratorSource;
/// use arcane_sources::runtime::{BlockingCursor, CursorPage, CursorPollingSource};
/// use futures::StreamExt;
///
/// /// Rows 0..250 of a "table", read by id.
/// #[derive(Debug)]
/// struct Table;
///
/// impl BlockingCursor for Table {
///     type Cursor = u64;
///     fn read_after(&mut self, after: Option<&u64>, limit: usize) -> Result<CursorPage<u64>> {
///         let from = after.map_or(0, |c| c + 1);
///         let to = (from + limit as u64).min(250);
///         let batch = GeneratorSource::batch(from, to.max(from));
///         Ok(CursorPage::new(batch, (to > from).then(|| to - 1)))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<()> {
/// let mut source = CursorPollingSource::blocking("table", Table).with_batch_rows(100);
/// let start = SourceStart { mode: Mode::Backfill, ..SourceStart::default() };
/// let batches: Vec<_> = source.open(start).await?.collect().await;
/// assert_eq!(batches.len(), 3);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct CursorPollingSource<R: CursorRead> {
    name: String,
    reader: Arc<tokio::sync::Mutex<R>>,
    schema: Option<SchemaRef>,
    poll_interval: Duration,
    batch_rows: usize,
}

impl<R: CursorRead> CursorPollingSource<R> {
    /// A source named `name` over `reader`.
    pub fn new(name: impl Into<String>, reader: R) -> Self {
        let schema = reader.schema();
        Self {
            name: name.into(),
            reader: Arc::new(tokio::sync::Mutex::new(reader)),
            schema,
            poll_interval: DEFAULT_CURSOR_POLL_INTERVAL,
            batch_rows: DEFAULT_CURSOR_BATCH_ROWS,
        }
    }

    /// How long a streaming source waits after a read that returned nothing.
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// How many records each read asks for (at least 1).
    pub fn with_batch_rows(mut self, rows: usize) -> Self {
        self.batch_rows = rows.max(1);
        self
    }
}

impl<B: BlockingCursor> CursorPollingSource<OnBlockingPool<B>> {
    /// A source over a blocking reader, run on Tokio's blocking pool.
    pub fn blocking(name: impl Into<String>, reader: B) -> Self {
        Self::new(name, OnBlockingPool(Arc::new(Mutex::new(reader))))
    }
}

#[async_trait::async_trait]
impl<R: CursorRead> Source for CursorPollingSource<R> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn schema(&self) -> Option<SchemaRef> {
        self.schema.clone()
    }

    async fn open(&mut self, start: SourceStart) -> Result<PositionedStream> {
        let (resume, _) = start.resume::<R::Cursor>(&self.name)?;
        let reader = self.reader.clone();
        let (mode, every, limit) = (start.mode, self.poll_interval, self.batch_rows);
        let name = self.name.clone();
        tracing::info!(source = %name, resume = ?resume, mode = mode.as_str(), "cursor source opening");
        Ok(spawn_source(
            &self.name,
            &start,
            2,
            move |mut out| async move {
                let mut reader = reader.lock().await;
                let mut cursor = resume;
                loop {
                    let page = reader.read_after(cursor.as_ref(), limit).await?;
                    let moved = page.cursor.is_some() && page.cursor != cursor;
                    if page.batch.num_rows() == 0 && page.dead_letters.is_empty() && !moved {
                        match mode {
                            Mode::Backfill => {
                                tracing::info!(source = %name, cursor = ?cursor, "caught up; backfill done");
                                return Ok(());
                            }
                            Mode::Stream => {
                                tokio::time::sleep(every).await;
                                continue;
                            }
                        }
                    }
                    if !moved {
                        return Err(Error::source_permanent(
                            &name,
                            format!(
                                "a read after {cursor:?} returned {} rows but did not move the cursor; return the cursor of the last record read",
                                page.batch.num_rows()
                            ),
                        ));
                    }
                    cursor = page.cursor;
                    let position = Position::encode(&cursor)?;
                    if out
                        .emit(page.batch, position, page.dead_letters)
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            },
        ))
    }

    async fn commit(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        tracing::debug!(source = %self.name, ?checkpoint, "committed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arcane_core::testing::{GeneratorSource, conformance};

    use super::*;

    #[derive(Debug)]
    struct Table(u64);

    impl BlockingCursor for Table {
        type Cursor = u64;
        fn read_after(&mut self, after: Option<&u64>, limit: usize) -> Result<CursorPage<u64>> {
            let from = after.map_or(0, |c| c + 1);
            let to = (from + limit as u64).min(self.0);
            let batch = GeneratorSource::batch(from, to.max(from));
            Ok(CursorPage::new(batch, (to > from).then(|| to - 1)))
        }
    }

    #[tokio::test]
    async fn a_cursor_source_resumes_exactly() {
        conformance::source_resumes_exactly(|| {
            Box::new(CursorPollingSource::blocking("table", Table(1_000)).with_batch_rows(300))
        })
        .await;
        conformance::source_survives_stop_and_abort(|| {
            Box::new(
                CursorPollingSource::blocking("table", Table(1_000))
                    .with_batch_rows(30)
                    .with_poll_interval(std::time::Duration::from_millis(50)),
            )
        })
        .await;
    }
}
