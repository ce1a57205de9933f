//! Parquet files: read with the async Arrow reader, columns matched to the stream's schema by
//! name.

use std::sync::Arc;

use arcane_core::DeadLetter;
use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use arrow_schema::{Schema, SchemaRef};
use std::ops::Range;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use tokio::sync::mpsc;

use super::event::{FileError, FileEvent, Progress};
use super::fetch::StoreRetry;

fn classify(e: ParquetError) -> FileError {
    if let ParquetError::External(inner) = e {
        return match inner.downcast::<object_store::Error>() {
            Ok(store) => FileError::Store(*store),
            Err(other) => FileError::Content(other.to_string()),
        };
    }
    FileError::Content(e.to_string())
}

/// Reads a Parquet object of known size with ranged requests, each retried as `retry` says.
#[derive(Debug, Clone)]
struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    retry: StoreRetry,
    /// `reading <origin>`, for the retries' log lines.
    what: Arc<str>,
}

fn store_err(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            let (store, path) = (&self.store, &self.path);
            self.retry
                .call(&self.what, || store.get_range(path, range.clone()))
                .await
                .map_err(|e| store_err(e.error))
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            let (store, path, ranges) = (&self.store, &self.path, &ranges);
            self.retry
                .call(&self.what, || store.get_ranges(path, ranges))
                .await
                .map_err(|e| store_err(e.error))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

async fn open(
    store: &Arc<dyn ObjectStore>,
    meta: &ObjectMeta,
    retry: &StoreRetry,
    origin: &str,
) -> Result<ParquetRecordBatchStreamBuilder<ObjectReader>, FileError> {
    let reader = ObjectReader {
        store: store.clone(),
        path: meta.location.clone(),
        size: meta.size,
        retry: retry.clone(),
        what: Arc::from(format!("reading {origin}")),
    };
    ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(classify)
}

/// The Arrow schema of a Parquet file (without metadata); `origin` names it in logs.
pub(crate) async fn parquet_schema(
    store: &Arc<dyn ObjectStore>,
    meta: &ObjectMeta,
    retry: &StoreRetry,
    origin: &str,
) -> Result<SchemaRef, FileError> {
    let builder = open(store, meta, retry, origin).await?;
    Ok(Arc::new(Schema::new(builder.schema().fields().clone())))
}

/// What reading one Parquet file needs.
#[derive(Debug, Clone)]
pub(crate) struct ParquetJob {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) meta: ObjectMeta,
    pub(crate) schema: SchemaRef,
    pub(crate) batch_rows: usize,
    /// How the file is named in dead letters.
    pub(crate) origin: String,
    pub(crate) retry: StoreRetry,
}

/// Read a Parquet file from row `start.records`, reporting batches on `out`.
pub(crate) async fn read_parquet_file(
    job: ParquetJob,
    start: Progress,
    out: mpsc::Sender<FileEvent>,
) {
    let mut progress = start;
    let dead_letter = |progress: &Progress, reason: String| {
        let locator = if progress.records == 0 {
            "file".to_string()
        } else {
            format!("from row {}", progress.records + 1)
        };
        vec![DeadLetter::new(
            job.origin.clone(),
            locator,
            format!("{reason}; the rest of the file is skipped"),
        )]
    };
    let builder = match open(&job.store, &job.meta, &job.retry, &job.origin).await {
        Ok(b) => b,
        Err(FileError::Store(e)) => {
            let _ = out.send(FileEvent::Store(e)).await;
            return;
        }
        Err(FileError::Content(reason)) => {
            let dead_letters =
                dead_letter(&progress, format!("not a readable Parquet file: {reason}"));
            let _ = out
                .send(FileEvent::Done {
                    progress,
                    dead_letters,
                })
                .await;
            return;
        }
    };
    let total = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    let from = progress.records.min(total);
    progress.records = from;

    // Match columns by name; missing nullable columns are filled with nulls.
    let file_schema = builder.schema().clone();
    let mut roots = Vec::new();
    for field in job.schema.fields() {
        match file_schema.index_of(field.name()) {
            Ok(i) => roots.push(i),
            Err(_) if field.is_nullable() => {}
            Err(_) => {
                let dead_letters = dead_letter(
                    &progress,
                    format!(
                        "the file has no column \"{}\", which the schema requires",
                        field.name()
                    ),
                );
                let _ = out
                    .send(FileEvent::Done {
                        progress,
                        dead_letters,
                    })
                    .await;
                return;
            }
        }
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let stream = builder
        .with_batch_size(job.batch_rows)
        .with_offset(usize::try_from(from).unwrap_or(usize::MAX))
        .with_projection(mask)
        .build();
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => {
            match classify(e) {
                FileError::Store(e) => {
                    let _ = out.send(FileEvent::Store(e)).await;
                }
                FileError::Content(reason) => {
                    let dead_letters = dead_letter(&progress, reason);
                    let _ = out
                        .send(FileEvent::Done {
                            progress,
                            dead_letters,
                        })
                        .await;
                }
            }
            return;
        }
    };
    let mut dead_letters = Vec::new();
    while let Some(item) = stream.next().await {
        let converted = match item {
            Ok(batch) => conform(&batch, &job.schema).map_err(FileError::Content),
            Err(e) => Err(classify(e)),
        };
        match converted {
            Ok(batch) => {
                progress.records += batch.num_rows() as u64;
                if out
                    .send(FileEvent::Batch {
                        batch,
                        dead_letters: Vec::new(),
                        progress,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(FileError::Store(e)) => {
                let _ = out.send(FileEvent::Store(e)).await;
                return;
            }
            Err(FileError::Content(reason)) => {
                dead_letters = dead_letter(&progress, reason);
                break;
            }
        }
    }
    let _ = out
        .send(FileEvent::Done {
            progress,
            dead_letters,
        })
        .await;
}

/// Reorder, fill and cast the columns of `batch` to `schema`.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, String> {
    let rows = batch.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = match batch.column_by_name(field.name()) {
            None => new_null_array(field.data_type(), rows),
            Some(c) if c.data_type() == field.data_type() => c.clone(),
            Some(c) => arrow_cast::cast(c, field.data_type()).map_err(|e| {
                format!(
                    "column \"{}\" of type {} cannot be read as {}: {e}",
                    field.name(),
                    c.data_type(),
                    field.data_type()
                )
            })?,
        };
        columns.push(column);
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}
