//! [`BlobLandingSource`]: the [`Source`] over files landing under an object-store prefix.

use std::collections::HashSet;
use std::sync::Arc;

use arcane_core::metrics::MetricLabels;
use arcane_core::{
    Checkpoint, DeadLetter, Error, Mode, Position, PositionedStream, Result, Source, SourceStart,
};
use arcane_store::LocalMode;
use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::config::{
    BlobLandingSourceConfig, Compression, FileFormat, LATE_FILE_CLOCK_SKEW, LateFiles,
};
use super::event::{FileError, FileEvent, Progress};
use super::fetch::{ChunkReader, StoreRetry, open_decompressed, raw_offset, resolve_compression};
use super::listing::{FileFilter, Listing, list_all};
use super::parquet_file::{ParquetJob, parquet_schema, read_parquet_file};
use super::position::BlobLandingPosition;
use super::text::{Inferred, TextFormat, TextJob, TextReaders, infer_text_schema, read_text_file};
use crate::runtime::{Output, spawn_source};

/// Counter of late files (see `lateFiles`): files that landed with a path sorting before the
/// position the stream had read to.
pub const FILES_LATE: &str = "arcane.stream.files.late";

/// Batches decoded ahead of the consumer, per stage (file reader → source → graph).
///
/// Decoding runs on a blocking thread (NDJSON/CSV) or its own task (Parquet), so it overlaps
/// with the sink's encoding; this bound keeps memory at a few batches (the graph itself takes
/// the next group while the sink writes one, so that is where the slack is). Reading several files
/// at once would plug in here: start the next file's reader while the current one drains.
const DECODE_AHEAD_BATCHES: usize = 1;

/// Reads files that land under an object-store prefix (NDJSON, CSV, Parquet; gzip/zstd) and
/// yields them as Arrow batches.
///
/// * **Ordering.** Files are read in **lexicographic path order**; the
///   [`BlobLandingPosition`] after a batch is one file and how far into it, so it stays small
///   however many files exist. Name landed files so that they sort by arrival (e.g. a
///   timestamp prefix `2026-11-21T10:00:00Z-…`).
/// * **Modes.** In backfill mode every file present at start is read and the stream ends; in
///   streaming mode the whole prefix is then listed every `pollInterval`. A listing that finds
///   no file at all is said once per run at WARN (`no files under <prefix> (glob …, suffix
///   …)`), with the number of objects the filters rejected.
/// * **Late files.** A file whose path sorts at or before the position, but that the stream
///   had not listed when it read past that point, would never be read. Within a run each
///   listing is compared with the previous one; after a restart, a file sorting before the
///   stored position counts as late when the store dates it more than
///   [`LATE_FILE_CLOCK_SKEW`](super::LATE_FILE_CLOCK_SKEW) after the listing that found the
///   position's file finished (`listedAtMs`; clocks of the store and of this process may
///   differ by that much — a file landing within those seconds of that listing may go
///   unnoticed after a restart). Every late file is counted in [`FILES_LATE`]
///   (`arcane.stream.files.late`) and, as `lateFiles` says, logged at WARN and skipped
///   (`skip`, default; the run's summary counts it in `inputsSkipped` and its closing message
///   names the first) or fails the stream with a FATAL error naming it (`fail`). To read a
///   late file, rename it so that it sorts after the position, or backfill.
/// * **Schema inference.** Without `schema`, the schema is inferred from the first file read:
///   by default the whole file, in one streaming pass before it is read (`inferSchemaRecords`
///   limits it). Values of a field that disagree widen the column (integer and float →
///   `float64`; numbers, booleans and strings → `utf8`, numbers and booleans then read as
///   their JSON text). The inferred schema is logged at INFO. Later files are read with it;
///   values that do not fit are dead-lettered, within the sink's dead-letter budget. A number
///   with a fraction is never truncated into an integer column: the record is dead-lettered.
/// * **Dead letters.** A malformed record (bad JSON, wrong CSV field count, a value of the
///   wrong type) is a [`DeadLetter`] with the file, `line N`, the reason and the line; the
///   rest of the file is read. A file that cannot be read (corrupt compression, bad Parquet
///   footer) is one dead letter, and the next file is read. Dead letters travel with the
///   batch of the records they replace, and the sink commits them with those rows: a resumed
///   run re-emits the dead letters of the batch it resumes inside (they were not committed),
///   so each is committed exactly once. Origins are `s3://bucket/key` (or the URL of the
///   store) and absolute paths on the local file system.
/// * **Store errors.** A missing bucket, container or directory, denied access and bad
///   credentials are FATAL with the store's message. Network failures, timeouts and
///   throttling of a store call (listing, reading a file or a range of it) are retried under
///   `retry` ([`RetryConfig`](arcane_core::retry::RetryConfig)), each attempt logged at WARN
///   with its cause and the next delay; when the attempts run out the stream stops for a
///   restart (exit code 2) that resumes from the last commit, with the cause.
/// * **Resume** is exact: dead-lettered records count as consumed.
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
    /// The prefix's URL (without credentials), for logs and errors.
    display: String,
}

impl BlobLandingSource {
    /// A source over `config.url`; errors name the field under `source`.
    pub fn new(config: BlobLandingSourceConfig) -> Result<Self> {
        Self::new_at(config, "source")
    }

    /// A source over `config.url`; `field` is the config's path in the spec for errors (e.g.
    /// `spec.source`).
    ///
    /// The store is opened by [`arcane_store::open_location_with`]: a local directory must
    /// exist (a typo'd path is a configuration error, not an empty source), `storageOptions`
    /// keys must be options of the store, and the environment's `AWS_*`, `AZURE_*` and
    /// `GOOGLE_*` variables apply.
    pub fn new_at(config: BlobLandingSourceConfig, field: &str) -> Result<Self> {
        config.validate(field)?;
        let url_field = format!("{field}.url");
        let location = arcane_store::open_location_with(
            &config.url,
            config.storage_options.iter(),
            &url_field,
            LocalMode::ExistingDirectory,
        )?;
        let url = arcane_store::parse_url(&config.url, &url_field)?;
        let name = format!("blob-landing {}", location.display);
        let mut source = Self::build(name, location.store, location.prefix, config, field)?;
        source.display = location.display;
        if url.scheme() == "file" {
            // The store is the whole file system: object paths are absolute paths without
            // their leading `/`.
            source.local_root = location.local_root;
            source.origin_root = "/".into();
        } else {
            // `abfss://container@account…/`: the container is the URL's user name.
            let user = match url.username() {
                "" => String::new(),
                user => format!("{user}@"),
            };
            source.origin_root = format!(
                "{}://{user}{}/",
                url.scheme(),
                url.host_str().unwrap_or_default()
            );
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
        let mut source = Self::build(name, store.clone(), prefix.clone(), config, "source")?;
        source.origin_root = format!("{store}/");
        source.display = format!("{store}/{prefix}");
        Ok(source)
    }

    /// Read only the files of `shard` of a sharded backfill: those whose path relative to the
    /// prefix hashes to it ([`Shard::owns_key`](arcane_core::Shard::owns_key), FNV-1a).
    pub fn with_shard(mut self, shard: arcane_core::Shard) -> Self {
        self.filter.shard = Some(shard);
        self
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
                shard: None,
            },
            config,
            schema,
            csv,
            local_root: None,
            origin_root: String::new(),
            display: String::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &BlobLandingSourceConfig {
        &self.config
    }
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
        let name = self.name.clone();
        let retry = StoreRetry {
            policy: self.config.retry,
            source: Arc::from(self.name.as_str()),
        };
        let (store, filter, config) =
            (self.store.clone(), self.filter.clone(), self.config.clone());
        let (schema, csv, mode) = (self.schema.clone(), self.csv, start.mode);
        let (local_root, origin_root) = (self.local_root.clone(), self.origin_root.clone());
        let (display, labels) = (self.display.clone(), start.labels.clone());
        Ok(spawn_source(
            &self.name,
            &start,
            DECODE_AHEAD_BATCHES,
            move |out| async move {
                Run {
                    name,
                    store,
                    filter,
                    config,
                    schema,
                    csv,
                    mode,
                    out,
                    local_root,
                    origin_root,
                    display,
                    labels,
                    retry,
                    inferred: false,
                    text_readers: Arc::default(),
                }
                .drive(resume)
                .await
            },
        ))
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
    /// Skips the rows a resumed checkpoint covers.
    out: Output,
    local_root: Option<std::path::PathBuf>,
    origin_root: String,
    display: String,
    labels: MetricLabels,
    retry: StoreRetry,
    /// Whether `schema` was inferred (its string columns then take numbers and booleans).
    inferred: bool,
    /// The text files' decode threads and buffers, kept from one file to the next.
    text_readers: Arc<TextReaders>,
}

/// Whether to go on, or stop because the consumer is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    GoOn,
    Stop,
}

impl Run {
    async fn drive(&mut self, resume: Option<BlobLandingPosition>) -> Result<()> {
        let mut after: Option<Path> = None;
        let mut resume_listed_at = None;
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
            resume_listed_at = position.listed_at_ms;
            if !position.done {
                let what = format!("reading {}", self.origin(&position.file));
                let (store, at) = (&self.store, &path);
                match self
                    .retry
                    .call(&what, || store.head(at))
                    .await
                    .map_err(|e| e.error)
                {
                    Ok(meta) => {
                        if self.read_file(&meta, position).await? == Next::Stop {
                            return Ok(());
                        }
                    }
                    Err(object_store::Error::NotFound { .. }) => {
                        tracing::warn!(
                            source = %self.name,
                            file = %self.origin(&position.file),
                            records = position.records,
                            "the partly read file of the stored position no longer exists; continuing with the next file"
                        );
                    }
                    Err(e) => {
                        return Err(self.store_error(
                            format!("cannot read {}", self.origin(&position.file)),
                            e,
                        ));
                    }
                }
            }
        }
        let limit = self.config.max_files_per_poll.map(|n| n.get());
        // Files of the previous listing that sort at or before the position (and the files
        // read since): a file at or before the position that is not among them is late.
        let mut seen: HashSet<Path> = HashSet::new();
        let mut first_listing = true;
        let mut said_empty = false;
        loop {
            let listing = self.list().await?;
            let listed_at = now_ms();
            if listing.files.is_empty() && !said_empty {
                said_empty = true;
                let glob = self.filter.glob.as_deref().unwrap_or("none");
                let suffix = self.filter.suffix.as_deref().unwrap_or("none");
                let then = match self.mode {
                    Mode::Backfill => "nothing was read",
                    Mode::Stream => "waiting for files to land",
                };
                tracing::warn!(
                    source = %self.name,
                    other_objects = listing.others,
                    "no files under {} (glob {glob}, suffix {suffix}; {} other objects do not match); {then}",
                    self.display,
                    listing.others,
                );
            }
            let mut listed_before: HashSet<Path> = HashSet::new();
            let mut new = Vec::new();
            for meta in listing.files {
                let Some(position) = after.as_ref().filter(|a| meta.location <= **a) else {
                    new.push(meta);
                    continue;
                };
                let late = if first_listing {
                    meta.location != *position
                        && resume_listed_at.is_some_and(|at| {
                            meta.last_modified.timestamp_millis()
                                > at.saturating_add(LATE_FILE_CLOCK_SKEW.as_millis() as i64)
                        })
                } else {
                    !seen.contains(&meta.location)
                };
                if late {
                    self.late_file(&meta, position)?;
                }
                listed_before.insert(meta.location);
            }
            let full = limit.is_some_and(|l| new.len() > l);
            if let Some(limit) = limit {
                new.truncate(limit);
            }
            tracing::debug!(source = %self.name, files = new.len(), "listed new files");
            for meta in &new {
                let mut start = BlobLandingPosition::start(meta.location.as_ref());
                start.listed_at_ms = Some(listed_at);
                if self.read_file(meta, start).await? == Next::Stop {
                    return Ok(());
                }
                after = Some(meta.location.clone());
                listed_before.insert(meta.location.clone());
            }
            seen = listed_before;
            first_listing = false;
            if full {
                continue;
            }
            match self.mode {
                Mode::Backfill => return Ok(()),
                Mode::Stream => tokio::time::sleep(self.config.poll_interval).await,
            }
        }
    }

    /// List the prefix, retrying transient failures under `retry` (each logged at WARN with
    /// its cause and the delay before the next attempt); the store client retries each
    /// request as well.
    async fn list(&self) -> Result<Listing> {
        let what = format!("listing {}", self.display);
        let (store, filter) = (&self.store, &self.filter);
        self.retry
            .call(&what, || list_all(store, filter))
            .await
            .map_err(|e| {
                let attempts = match e.attempts {
                    1 => String::new(),
                    n => format!(" after {n} attempts in {:.1?}", e.elapsed),
                };
                self.store_error(format!("cannot list {}{attempts}", self.display), e.error)
            })
    }

    /// A file sorting at or before `position` that was not listed before: it will not be
    /// read. Counted, then skipped with a warning or failed, as `lateFiles` says.
    fn late_file(&self, meta: &ObjectMeta, position: &Path) -> Result<()> {
        metrics::counter!(FILES_LATE, self.labels.to_vec()).increment(1);
        let file = self.origin(meta.location.as_ref());
        let position = self.origin(position.as_ref());
        match self.config.late_files {
            LateFiles::Skip => {
                arcane_core::skipped::record(format!(
                    "late file {file}: it sorts before {position}, which the stream had read past (lateFiles: skip); rename it so that it sorts after {position}, or backfill to read it"
                ));
                tracing::warn!(
                    source = %self.name,
                    file = %file,
                    position = %position,
                    last_modified = %meta.last_modified.to_rfc3339(),
                    "late file {file}: it sorts before {position}, which the stream has already read past, so it is not read (lateFiles: skip). Rename it so that it sorts after {position}, or backfill to read it"
                );
                Ok(())
            }
            LateFiles::Fail => Err(Error::source_permanent(
                &self.name,
                format!(
                    "late file {file}: it landed after the stream had read past {position}, and files are read in path order, so it would never be read (lateFiles: fail). Rename it so that it sorts after {position} (e.g. with a later timestamp prefix), or backfill to read it; set lateFiles: skip to skip late files with a warning"
                ),
            )),
        }
    }

    /// The object's path on the local file system, when the store is one.
    fn local_path(&self, location: &Path) -> Option<std::path::PathBuf> {
        self.local_root
            .as_ref()
            .map(|root| root.join(location.as_ref()))
    }

    /// A store failure as a source error: a missing bucket, container or object, denied
    /// access and bad credentials are permanent (exit code 1), the rest transient (2).
    fn store_error(&self, what: String, e: object_store::Error) -> Error {
        arcane_store::source_store_error(&self.name, what, e)
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

    /// Send a batch with its position and the dead letters it covers (the output skips the
    /// rows a resumed checkpoint covers).
    async fn send(
        &mut self,
        batch: RecordBatch,
        position: &BlobLandingPosition,
        dead_letters: Vec<DeadLetter>,
    ) -> Result<Next> {
        let position = Position::encode(position)?;
        Ok(match self.out.emit(batch, position, dead_letters).await {
            Ok(()) => Next::GoOn,
            Err(_closed) => Next::Stop,
        })
    }

    /// Dead-letter a whole file and move past it.
    async fn reject_file(
        &mut self,
        position: &BlobLandingPosition,
        reason: String,
    ) -> Result<Next> {
        let path = position.file.as_str();
        tracing::warn!(source = %self.name, file = %self.origin(path), %reason, "file dead-lettered");
        let letter = DeadLetter::new(self.origin(path), "file", reason);
        let mut done = BlobLandingPosition::start(path);
        done.done = true;
        done.listed_at_ms = position.listed_at_ms;
        let empty = RecordBatch::new_empty(self.marker_schema());
        self.send(empty, &done, vec![letter]).await
    }

    /// Read one file from `position`.
    async fn read_file(
        &mut self,
        meta: &ObjectMeta,
        position: BlobLandingPosition,
    ) -> Result<Next> {
        let path = meta.location.as_ref().to_string();
        let Some(format) = self.resolve_format(&path) else {
            return self
                .reject_file(
                    &position,
                    "cannot tell the format from the file name; set `format` to ndjson, csv or parquet, or filter files with `suffix`/`glob`".into(),
                )
                .await;
        };
        let compression = resolve_compression(self.config.compression, &path);
        let schema = match &self.schema {
            Some(s) => s.clone(),
            None => match self.infer(meta, format, compression).await {
                Ok(inferred) => {
                    let columns = inferred
                        .schema
                        .fields()
                        .iter()
                        .map(|f| format!("{}: {}", f.name(), f.data_type()))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let from = match inferred.records {
                        Some(n) => format!("{n} records of"),
                        None => "the Parquet schema of".into(),
                    };
                    tracing::info!(
                        source = %self.name,
                        file = %self.origin(&path),
                        schema = %columns,
                        "schema inferred from {from} the first file: {columns}"
                    );
                    self.schema = Some(inferred.schema.clone());
                    self.inferred = true;
                    inferred.schema
                }
                Err(FileError::Store(e)) => {
                    return Err(self.store_error(format!("cannot read {}", self.origin(&path)), e));
                }
                Err(FileError::Content(reason)) => {
                    return self
                        .reject_file(
                            &position,
                            format!("cannot infer a schema from the file: {reason}"),
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
            == Next::Stop
        {
            return Ok(Next::Stop);
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
                    self.retry.clone(),
                    &self.origin(&path),
                );
                let job = TextJob {
                    path: path.clone(),
                    format: text,
                    schema: schema.clone(),
                    batch_rows: self.config.batch_rows,
                    origin: self.origin(&path),
                    decode_threads: self.config.decode_threads(),
                    coerce_primitive: self.inferred,
                    kept: self.text_readers.clone(),
                };
                let offset = position.offset;
                tokio::task::spawn_blocking(move || {
                    let reader = open_decompressed(raw, compression, offset);
                    read_text_file(&job, reader, start, &tx);
                })
            }
            Format::Parquet => tokio::spawn(read_parquet_file(
                ParquetJob {
                    store: self.store.clone(),
                    meta: meta.clone(),
                    schema: schema.clone(),
                    batch_rows: self.config.batch_rows,
                    origin: self.origin(&path),
                    retry: self.retry.clone(),
                },
                start,
                tx,
            )),
        };
        let worker = AbortOnDropHandle::new(worker);
        let listed_at_ms = position.listed_at_ms;
        let at = |progress: Progress, done: bool| BlobLandingPosition {
            file: path.clone(),
            records: progress.records,
            lines: progress.lines,
            offset: progress.offset,
            done,
            listed_at_ms,
        };
        while let Some(event) = rx.recv().await {
            match event {
                FileEvent::Batch {
                    batch,
                    dead_letters,
                    progress,
                } => {
                    if self.send(batch, &at(progress, false), dead_letters).await? == Next::Stop {
                        return Ok(Next::Stop);
                    }
                }
                FileEvent::Done {
                    progress,
                    dead_letters,
                } => {
                    tracing::debug!(source = %self.name, file = %path, records = progress.records, "file done");
                    let done = at(progress, true);
                    return self
                        .send(RecordBatch::new_empty(schema), &done, dead_letters)
                        .await;
                }
                FileEvent::Store(e) => {
                    return Err(self.store_error(format!("cannot read {}", self.origin(&path)), e));
                }
                FileEvent::Failed(message) => {
                    return Err(Error::source_permanent(&self.name, message));
                }
            }
        }
        let outcome = match worker.is_finished() {
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
    ) -> Result<Inferred, FileError> {
        match format {
            Format::Parquet => parquet_schema(
                &self.store,
                meta,
                &self.retry,
                &self.origin(meta.location.as_ref()),
            )
            .await
            .map(|schema| Inferred {
                schema,
                records: None,
            }),
            Format::Text(text) => {
                let (store, location) = (self.store.clone(), meta.location.clone());
                let (size, local) = (meta.size, self.local_path(&meta.location));
                let (retry, origin) = (self.retry.clone(), self.origin(meta.location.as_ref()));
                // Inference may read the file a second time (see `infer_text_schema`).
                let open = move || {
                    let raw = ChunkReader::open(
                        store.clone(),
                        location.clone(),
                        0,
                        size,
                        local.clone(),
                        retry.clone(),
                        &origin,
                    );
                    open_decompressed(raw, compression, 0)
                };
                let max = self.config.infer_schema_records;
                let threads = self.config.decode_threads();
                tokio::task::spawn_blocking(move || infer_text_schema(open, text, max, threads))
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

/// Now, in epoch milliseconds (this process's clock).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
