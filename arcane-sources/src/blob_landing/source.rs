//! [`BlobLandingSource`]: the [`Source`] over files landing under an object-store prefix.

use std::sync::Arc;

use arcane_core::{
    Checkpoint, DeadLetter, Error, Mode, Position, PositionedBatch, PositionedStream, Result,
    Source, SourceStart,
};
use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use tokio::sync::mpsc;

use super::config::{BlobLandingSourceConfig, Compression, FileFormat};
use super::event::{FileError, FileEvent, Progress};
use super::fetch::{AbortOnDrop, ChunkReader, open_decompressed, raw_offset, resolve_compression};
use super::listing::{FileFilter, list_files};
use super::parquet_file::{ParquetJob, parquet_schema, read_parquet_file};
use super::position::BlobLandingPosition;
use super::text::{TextFormat, TextJob, infer_text_schema, read_text_file};

/// Batches decoded ahead of the consumer, per stage (file reader → source → graph).
///
/// Decoding runs on a blocking thread (NDJSON/CSV) or its own task (Parquet), so it overlaps
/// with the sink's encoding; this bound keeps memory at a few batches. Reading several files
/// at once would plug in here: start the next file's reader while the current one drains.
const DECODE_AHEAD_BATCHES: usize = 2;

/// Reads files that land under an object-store prefix (NDJSON, CSV, Parquet; gzip/zstd) and
/// yields them as Arrow batches.
///
/// * Files are read in **lexicographic path order**; the [`BlobLandingPosition`] after a batch
///   is one file and how far into it, so it stays small however many files exist. A file that
///   appears later with a path sorting before the position is **not** read: name landed files
///   so that they sort by arrival (e.g. a timestamp prefix `2026-11-21T10:00:00Z-…`).
/// * In backfill mode every file present at start is read and the stream ends; in streaming
///   mode the prefix is then listed every `pollInterval` for new files.
/// * A malformed record (bad JSON, wrong CSV field count, a value of the wrong type) is a
///   [`DeadLetter`] with the file, `line N`, the reason and the line; the rest of the file is
///   read. A file that cannot be read (corrupt compression, bad Parquet footer) is one dead
///   letter, and the next file is read. Store failures stop the stream with a transient
///   error (the process is restarted and resumes).
/// * Resume is exact: dead-lettered records count as consumed, and the dead letters of the
///   records a checkpoint covers are not repeated. Dead letters of records after the
///   checkpoint may be written again by the resumed run (at least once).
/// * Objects must be complete when they become visible (true for object stores; on a local
///   file system write under another name and rename, or filter with `suffix`).
#[derive(Debug)]
pub struct BlobLandingSource {
    name: String,
    store: Arc<dyn ObjectStore>,
    filter: FileFilter,
    config: BlobLandingSourceConfig,
    schema: Option<SchemaRef>,
    csv: (u8, u8),
    /// The local directory the store's paths are relative to, for `file://` URLs (files are
    /// then read directly).
    local_root: Option<std::path::PathBuf>,
    /// What an object's path is prefixed with to name it in dead letters and logs:
    /// `s3://bucket/`, or `/` on the local file system.
    origin_root: String,
}

impl BlobLandingSource {
    /// A source over `config.url`; errors name the field under `source`.
    pub fn new(config: BlobLandingSourceConfig) -> Result<Self> {
        Self::new_at(config, "source")
    }

    /// A source over `config.url`; `field` is the config's path in the spec for errors (e.g.
    /// `spec.source`).
    pub fn new_at(config: BlobLandingSourceConfig, field: &str) -> Result<Self> {
        config.validate(field)?;
        let resolved = arcane_core::location::location_url(&config.url, &format!("{field}.url"))?;
        let url = url::Url::parse(&resolved).map_err(|e| {
            Error::config(
                format!("{field}.url"),
                format!(
                    "\"{}\" is not a URL ({e}); write e.g. file:///data/landing/, s3://bucket/prefix/, az://container/prefix/ or gs://bucket/prefix/",
                    config.url
                ),
            )
        })?;
        let (store, prefix) = object_store::parse_url_opts(&url, config.storage_options.iter())
            .map_err(|e| {
                Error::config(
                    format!("{field}.url"),
                    format!(
                        "cannot open \"{}\": {e}; supported schemes are file, s3, az, abfss, gs, memory, and storageOptions must use object_store keys",
                        display_url(&url)
                    ),
                )
            })?;
        let name = format!("blob-landing {}", display_url(&url));
        let mut source = Self::build(name, Arc::from(store), prefix, config, field)?;
        // `parse_url_opts` opens `file://` URLs as a local file system rooted at `/`.
        if url.scheme() == "file" {
            source.local_root = Some(std::path::PathBuf::from("/"));
            source.origin_root = "/".into();
        } else {
            source.origin_root =
                format!("{}://{}/", url.scheme(), url.host_str().unwrap_or_default());
        }
        Ok(source)
    }

    /// A source over `prefix` in an existing `store` (`config.url` is only used in names).
    pub fn with_store(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        config: BlobLandingSourceConfig,
    ) -> Result<Self> {
        config.validate("source")?;
        let name = format!("blob-landing {store}/{prefix}");
        let mut source = Self::build(name, store.clone(), prefix, config, "source")?;
        source.origin_root = format!("{store}/");
        Ok(source)
    }

    fn build(
        name: String,
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        config: BlobLandingSourceConfig,
        field: &str,
    ) -> Result<Self> {
        let schema = config.arrow_schema(field)?;
        let csv = config.csv.bytes(&format!("{field}.csv"))?;
        Ok(Self {
            name,
            store,
            filter: FileFilter {
                prefix,
                glob: config.glob.clone(),
                suffix: config.suffix.clone(),
            },
            config,
            schema,
            csv,
            local_root: None,
            origin_root: String::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &BlobLandingSourceConfig {
        &self.config
    }
}

/// The URL without credentials or query (SAS tokens), for names and errors.
fn display_url(url: &url::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.path()
    )
}

#[async_trait::async_trait]
impl Source for BlobLandingSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn schema(&self) -> Option<SchemaRef> {
        self.schema.clone()
    }

    async fn open(&mut self, start: SourceStart) -> Result<PositionedStream> {
        let (resume, skip) = match &start.resume_from {
            None => (None, 0),
            Some(checkpoint) => (
                checkpoint.decode::<BlobLandingPosition>(&self.name)?,
                checkpoint.rows,
            ),
        };
        tracing::info!(source = %self.name, resume = ?resume, skip, mode = start.mode.as_str(), "blob-landing source opening");
        let (tx, rx) = mpsc::channel(DECODE_AHEAD_BATCHES);
        let mut run = Run {
            name: self.name.clone(),
            store: self.store.clone(),
            filter: self.filter.clone(),
            config: self.config.clone(),
            schema: self.schema.clone(),
            csv: self.csv,
            mode: start.mode,
            out: tx,
            local_root: self.local_root.clone(),
            origin_root: self.origin_root.clone(),
        };
        let task = tokio::spawn(async move {
            if let Err(e) = run.drive(resume, skip).await {
                let _ = run.out.send(Err(e)).await;
            }
        });
        let stream =
            futures::stream::unfold((rx, AbortOnDrop(task)), |(mut rx, guard)| async move {
                rx.recv().await.map(|item| (item, (rx, guard)))
            });
        Ok(stream.boxed())
    }

    async fn commit(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        // Files are left in place; the sink's manifest holds the position.
        tracing::debug!(source = %self.name, ?checkpoint, "committed");
        Ok(())
    }
}

/// The state of one opened stream.
struct Run {
    name: String,
    store: Arc<dyn ObjectStore>,
    filter: FileFilter,
    config: BlobLandingSourceConfig,
    schema: Option<SchemaRef>,
    csv: (u8, u8),
    mode: Mode,
    out: mpsc::Sender<Result<PositionedBatch>>,
    local_root: Option<std::path::PathBuf>,
    origin_root: String,
}

/// Whether to go on (with the rows still to skip) or stop because the consumer is gone.
type Next = Option<u64>;

impl Run {
    async fn drive(&mut self, resume: Option<BlobLandingPosition>, mut skip: u64) -> Result<()> {
        let mut after: Option<Path> = None;
        if let Some(position) = resume {
            let path = Path::parse(&position.file).map_err(|e| {
                Error::source_permanent(
                    &self.name,
                    format!(
                        "stored position names file \"{}\", which is not a valid path ({e}); use a new sink location or backfill",
                        position.file
                    ),
                )
            })?;
            after = Some(path.clone());
            if !position.done {
                match self.store.head(&path).await {
                    Ok(meta) => match self.read_file(&meta, position, skip).await? {
                        Some(left) => skip = left,
                        None => return Ok(()),
                    },
                    Err(object_store::Error::NotFound { .. }) => {
                        tracing::warn!(
                            source = %self.name,
                            file = %position.file,
                            records = position.records,
                            "the partly read file of the stored position no longer exists; continuing with the next file"
                        );
                    }
                    Err(e) => return Err(self.store_error(&position.file, e)),
                }
            }
        }
        let limit = self.config.max_files_per_poll.map(|n| n.get());
        loop {
            let files = list_files(&self.store, &self.filter, after.as_ref(), limit)
                .await
                .map_err(|e| self.store_error(self.filter.prefix.as_ref(), e))?;
            let full = limit.is_some_and(|l| files.len() >= l);
            tracing::debug!(source = %self.name, files = files.len(), "listed new files");
            for meta in &files {
                let start = BlobLandingPosition::start(meta.location.as_ref());
                match self.read_file(meta, start, skip).await? {
                    Some(left) => skip = left,
                    None => return Ok(()),
                }
                after = Some(meta.location.clone());
            }
            if full {
                continue;
            }
            match self.mode {
                Mode::Backfill => return Ok(()),
                Mode::Stream => tokio::time::sleep(self.config.poll_interval).await,
            }
        }
    }

    /// The object's path on the local file system, when the store is one.
    fn local_path(&self, location: &Path) -> Option<std::path::PathBuf> {
        self.local_root
            .as_ref()
            .map(|root| root.join(location.as_ref()))
    }

    fn store_error(&self, what: &str, e: object_store::Error) -> Error {
        Error::source_transient(
            &self.name,
            format!(
                "reading \"{what}\" from the store failed; the stream will be restarted and resume"
            ),
            e,
        )
    }

    fn marker_schema(&self) -> SchemaRef {
        self.schema
            .clone()
            .unwrap_or_else(|| Arc::new(Schema::empty()))
    }

    /// How `path` is named in dead letters and logs (`s3://bucket/key`, `/abs/path`).
    fn origin(&self, path: &str) -> String {
        format!("{}{path}", self.origin_root)
    }

    /// Send a batch with its position and the dead letters it covers; `None` when the
    /// consumer is gone.
    async fn send(
        &self,
        batch: RecordBatch,
        position: &BlobLandingPosition,
        dead_letters: Vec<DeadLetter>,
    ) -> Result<Next> {
        let position = Position::encode(position)?;
        Ok(self
            .out
            .send(Ok(
                PositionedBatch::new(batch, position).with_dead_letters(dead_letters)
            ))
            .await
            .ok()
            .map(|()| 0))
    }

    /// Dead-letter a whole file and move past it.
    async fn reject_file(&self, path: &str, reason: String, skip: u64) -> Result<Next> {
        tracing::warn!(source = %self.name, file = %self.origin(path), %reason, "file dead-lettered");
        let letter = DeadLetter::new(self.origin(path), "file", reason);
        let mut done = BlobLandingPosition::start(path);
        done.done = true;
        let empty = RecordBatch::new_empty(self.marker_schema());
        Ok(self.send(empty, &done, vec![letter]).await?.map(|_| skip))
    }

    /// Read one file from `position`; returns the rows still to skip.
    async fn read_file(
        &mut self,
        meta: &ObjectMeta,
        position: BlobLandingPosition,
        skip: u64,
    ) -> Result<Next> {
        let path = meta.location.as_ref().to_string();
        let Some(format) = self.resolve_format(&path) else {
            return self
                .reject_file(
                    &path,
                    "cannot tell the format from the file name; set `format` to ndjson, csv or parquet, or filter files with `suffix`/`glob`".into(),
                    skip,
                )
                .await;
        };
        let compression = resolve_compression(self.config.compression, &path);
        let schema = match &self.schema {
            Some(s) => s.clone(),
            None => match self.infer(meta, format, compression).await {
                Ok(schema) => {
                    tracing::info!(source = %self.name, file = %path, ?schema, "schema inferred from the first file");
                    self.schema = Some(schema.clone());
                    schema
                }
                Err(FileError::Store(e)) => return Err(self.store_error(&path, e)),
                Err(FileError::Content(reason)) => {
                    return self
                        .reject_file(
                            &path,
                            format!("cannot infer a schema from the file: {reason}"),
                            skip,
                        )
                        .await;
                }
            },
        };
        tracing::debug!(source = %self.name, file = %path, size = meta.size, ?format, ?compression, from_record = position.records, "reading file");

        // The file's start (or resume point) comes first, so that a checkpoint inside the
        // file's first batch is relative to this file, whatever lands before it later.
        if self
            .send(
                RecordBatch::new_empty(schema.clone()),
                &position,
                Vec::new(),
            )
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let start = Progress {
            records: position.records,
            lines: position.lines,
            offset: position.offset,
        };
        let (tx, mut rx) = mpsc::channel(DECODE_AHEAD_BATCHES);
        let worker = match format {
            Format::Text(text) => {
                let raw = ChunkReader::open(
                    self.store.clone(),
                    meta.location.clone(),
                    raw_offset(compression, position.offset),
                    meta.size,
                    self.local_path(&meta.location),
                );
                let job = TextJob {
                    path: path.clone(),
                    format: text,
                    schema: schema.clone(),
                    batch_rows: self.config.batch_rows,
                    origin: self.origin(&path),
                    decode_threads: self.config.decode_threads(),
                };
                let offset = position.offset;
                tokio::task::spawn_blocking(move || {
                    let reader = open_decompressed(raw, compression, offset);
                    read_text_file(&job, reader, start, skip, &tx);
                })
            }
            Format::Parquet => tokio::spawn(read_parquet_file(
                ParquetJob {
                    store: self.store.clone(),
                    meta: meta.clone(),
                    schema: schema.clone(),
                    batch_rows: self.config.batch_rows,
                    origin: self.origin(&path),
                },
                start,
                skip,
                tx,
            )),
        };
        let worker = AbortOnDrop(worker);
        let at = |progress: Progress, done: bool| BlobLandingPosition {
            file: path.clone(),
            records: progress.records,
            lines: progress.lines,
            offset: progress.offset,
            done,
        };
        while let Some(event) = rx.recv().await {
            match event {
                FileEvent::Batch {
                    batch,
                    dead_letters,
                    progress,
                } => {
                    if self
                        .send(batch, &at(progress, false), dead_letters)
                        .await?
                        .is_none()
                    {
                        return Ok(None);
                    }
                }
                FileEvent::Done {
                    progress,
                    skip,
                    dead_letters,
                } => {
                    tracing::debug!(source = %self.name, file = %path, records = progress.records, "file done");
                    let done = at(progress, true);
                    return Ok(self
                        .send(RecordBatch::new_empty(schema), &done, dead_letters)
                        .await?
                        .map(|_| skip));
                }
                FileEvent::Store(e) => return Err(self.store_error(&path, e)),
                FileEvent::Failed(message) => {
                    return Err(Error::source_permanent(&self.name, message));
                }
            }
        }
        let outcome = match worker.0.is_finished() {
            true => "stopped",
            false => "hung up",
        };
        Err(Error::fatal(format!(
            "{}: the reader of \"{path}\" {outcome} without finishing the file",
            self.name
        )))
    }

    fn resolve_format(&self, path: &str) -> Option<Format> {
        let (delimiter, quote) = self.csv;
        let csv = Format::Text(TextFormat::Csv {
            header: self.config.csv.header,
            delimiter,
            quote,
        });
        match self.config.format {
            FileFormat::Ndjson => Some(Format::Text(TextFormat::Ndjson)),
            FileFormat::Csv => Some(csv),
            FileFormat::Parquet => Some(Format::Parquet),
            FileFormat::Auto => {
                let lower = path.to_ascii_lowercase();
                let base = [".gz", ".gzip", ".zst", ".zstd"]
                    .iter()
                    .find_map(|ext| lower.strip_suffix(ext))
                    .unwrap_or(&lower);
                let ext = base.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
                match ext {
                    "ndjson" | "jsonl" | "json" => Some(Format::Text(TextFormat::Ndjson)),
                    "csv" => Some(csv),
                    "parquet" | "pq" => Some(Format::Parquet),
                    _ => None,
                }
            }
        }
    }

    async fn infer(
        &self,
        meta: &ObjectMeta,
        format: Format,
        compression: Compression,
    ) -> Result<SchemaRef, FileError> {
        match format {
            Format::Parquet => parquet_schema(&self.store, meta).await,
            Format::Text(text) => {
                let raw = ChunkReader::open(
                    self.store.clone(),
                    meta.location.clone(),
                    0,
                    meta.size,
                    self.local_path(&meta.location),
                );
                let max = self.config.infer_schema_records;
                tokio::task::spawn_blocking(move || {
                    infer_text_schema(open_decompressed(raw, compression, 0), text, max)
                })
                .await
                .unwrap_or_else(|e| {
                    Err(FileError::Content(format!("schema inference failed: {e}")))
                })
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Text(TextFormat),
    Parquet,
}
