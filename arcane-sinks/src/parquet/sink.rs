//! [`ParquetSink`]: the [`Sink`] writing Parquet files to an object store with a commit manifest.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arcane_core::metrics as m;
use arcane_core::{
    Checkpoint, Commit, DeadLetter, DeadLetterTally, Error, Group, Mode, Result, Retry, Sink,
    SinkContext,
};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use futures::{StreamExt, TryStreamExt};
use metrics::Label;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;

use super::config::{BackfillBehavior, ParquetSinkConfig, SchemaEvolution};
use super::dead_letter::{dead_letter_url, encode_dead_letters};
use super::failpoint::Failpoints;
use super::manifest::{
    self, Action, BackfillState, Completion, DeadLetterCompletion, FileEntry, GENERATIONS_DIR,
    MANIFEST_VERSION, Manifest, RetiredGeneration, State,
};
use super::partition;
use super::schema;
use super::store::{Location, open_location, store_error};
use super::upload::{self, FileUpload, MarkerFile, NewUpload, REQUEST_CONCURRENCY};

/// Streams Arrow groups into Parquet files on an object store, exactly once.
///
/// See the [crate documentation](crate) for the layout and the commit protocol.
pub struct ParquetSink {
    config: ParquetSinkConfig,
    loc: Location,
    /// Where dead letters are written (by default `{url}/_dead_letters`).
    dl_loc: Location,
    failpoints: Failpoints,
    // Set by `open`.
    stream_id: String,
    file_stem: String,
    labels: Vec<Label>,
    dead_letters: DeadLetterTally,
    source_name: String,
    /// Dead letters of the groups written since the last commit (committed with them).
    pending_letters: Vec<DeadLetter>,
    state: State,
    /// The sequence the next commit gets (and the files open now carry).
    next_seq: u64,
    /// The generation files are written to in this run.
    generation: String,
    /// True when this run is a backfill (checkpoints go to `state.backfill`).
    backfilling: bool,
    /// This run is a rerun of a backfill that already completed: nothing to do.
    already_completed: bool,
    opened: bool,
    target: Option<SchemaRef>,
    props: Option<WriterProperties>,
    open_files: BTreeMap<String, SyncCell<OpenFile>>,
    /// Files closed (uploaded) in this sequence but not yet in a manifest.
    closed: Vec<FileEntry>,
    /// Upload markers of this sequence (deleted once its files are complete).
    markers: Vec<Path>,
    /// A commit whose manifest is written but whose files are not all visible yet (a
    /// completion failed): finished before any other manifest is written.
    unfinished: Option<(Manifest, Vec<Path>)>,
    files_in_seq: u32,
    last_checkpoint: Option<Checkpoint>,
    /// Groups written since the last commit.
    dirty: bool,
}

impl fmt::Debug for ParquetSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParquetSink")
            .field("location", &self.loc.display)
            .field("generation", &self.generation)
            .field("next_seq", &self.next_seq)
            .field("open_files", &self.open_files.len())
            .finish_non_exhaustive()
    }
}

/// Makes a `Send` value `Sync` by exclusive access (the Parquet writer is not `Sync`, the
/// [`Sink`] trait requires it; the sink only touches files through `&mut self`).
struct SyncCell<T>(std::sync::Mutex<T>);

impl<T> SyncCell<T> {
    fn new(v: T) -> Self {
        Self(std::sync::Mutex::new(v))
    }
    fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }
    fn into_inner(self) -> T {
        self.0.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

struct OpenFile {
    rel: String,
    partition: String,
    writer: AsyncArrowWriter<FileUpload>,
    rows: u64,
    opened_at: tokio::time::Instant,
}

impl ParquetSink {
    /// Validate `config` and open its store (no I/O happens until [`Sink::open`]); errors
    /// name fields under `sink`.
    pub fn new(config: ParquetSinkConfig) -> Result<Self> {
        Self::new_at(config, "sink")
    }

    /// Like [`new`](Self::new); errors name fields under `at` (e.g. `spec.sink`), where the
    /// configuration sits in the stream's spec.
    pub fn new_at(config: ParquetSinkConfig, at: &str) -> Result<Self> {
        Self::build(config).map_err(|e| rebase_config_error(e, at))
    }

    fn build(config: ParquetSinkConfig) -> Result<Self> {
        config.validate()?;
        let loc = open_location(&config.url, &config.storage_options, "sink.url")?;
        let dl_loc = open_location(
            &dead_letter_url(&config),
            &config.storage_options,
            "sink.deadLetter.url",
        )?;
        let target = config.target_schema()?;
        Ok(Self {
            config,
            loc,
            dl_loc,
            failpoints: Failpoints::from_env(),
            stream_id: String::new(),
            file_stem: String::new(),
            labels: Vec::new(),
            dead_letters: DeadLetterTally::default(),
            source_name: String::new(),
            pending_letters: Vec::new(),
            state: State::default(),
            next_seq: 0,
            generation: String::new(),
            backfilling: false,
            already_completed: false,
            opened: false,
            target,
            props: None,
            open_files: BTreeMap::new(),
            closed: Vec::new(),
            markers: Vec::new(),
            unfinished: None,
            files_in_seq: 0,
            last_checkpoint: None,
            dirty: false,
        })
    }

    /// For crash tests: stop forever the `nth` time the sink reaches the commit-protocol point
    /// `point` (see [`failpoint`](crate::parquet::failpoint)), after creating the file `marker`
    /// (if any), so that the test can drop or kill the writer exactly there.
    pub fn with_pause_at(
        mut self,
        point: &str,
        nth: u32,
        marker: Option<&std::path::Path>,
    ) -> Self {
        self.failpoints =
            Failpoints::at(point, nth, marker.map(|m| m.to_string_lossy().into_owned()));
        self
    }

    /// The configuration.
    pub fn config(&self) -> &ParquetSinkConfig {
        &self.config
    }

    fn sink_name(&self) -> String {
        format!("parquet {}", self.loc.display)
    }

    fn err(&self, message: impl Into<String>, retry: Retry) -> Error {
        Error::sink(self.sink_name(), message, retry, None)
    }

    fn parquet_err(&self, what: String, e: ParquetError) -> Error {
        // Store failures surface through the writer as `External` errors.
        match e {
            ParquetError::External(inner) => match inner.downcast::<object_store::Error>() {
                Ok(store) => store_error(&self.sink_name(), what, *store),
                Err(other) => Error::sink(
                    self.sink_name(),
                    format!("{what}: {other}"),
                    Retry::Transient,
                    Some(other),
                ),
            },
            other => Error::sink(
                self.sink_name(),
                format!("{what}: {other}"),
                Retry::Permanent,
                Some(Box::new(other)),
            ),
        }
    }

    fn set_files_open_gauge(&self) {
        metrics::gauge!(m::FILES_OPEN, self.labels.clone()).set(self.open_files.len() as f64);
    }

    /// Recovery: make the files of the newest manifest visible where that was interrupted
    /// (roll forward), abort the multipart uploads and delete the staging files no manifest
    /// commits. Returns how many uploads and staging files were discarded.
    async fn recover(&self, latest: Option<&Manifest>) -> Result<usize> {
        let name = self.sink_name();
        // Multipart uploads, by their markers.
        let markers = upload::list_markers(&self.loc, &name).await?;
        let (mut completed, mut aborted) = (0usize, 0usize);
        let mut done = Vec::with_capacity(markers.len());
        for (marker_path, marker) in markers {
            let covering = match latest {
                Some(m) if m.sequence == marker.sequence => Some(m.clone()),
                Some(m) if marker.sequence < m.sequence => {
                    manifest::read_if_exists(&self.loc, &name, marker.sequence).await?
                }
                _ => None,
            };
            let (loc, path) = match (&marker.path, &marker.dead_letter_file) {
                (Some(p), _) => (self.loc.clone(), self.loc.child(p)),
                (None, Some(url)) => self.locate_dead_letter(url)?,
                (None, None) => {
                    return Err(self.err(
                        format!("upload marker {marker_path} names no file; it was edited by hand; delete it once no run of the stream is active"),
                        Retry::Permanent,
                    ));
                }
            };
            match covering.as_ref().and_then(|m| committed_upload(m, &marker)) {
                Some((completion, bytes)) => {
                    upload::complete(&loc, &path, &completion, bytes, &name).await?;
                    completed += 1;
                }
                None => {
                    upload::abort(&loc, &path, &marker.upload_id, &name).await?;
                    aborted += 1;
                }
            }
            done.push(marker_path);
        }
        upload::delete_all(&self.loc, done, &name).await?;
        if completed > 0 {
            tracing::info!(
                files = completed,
                "completed the uploads of the last commit, interrupted after its manifest"
            );
        }
        if aborted > 0 {
            tracing::info!("aborted {aborted} incomplete uploads left by an interrupted run");
        }
        // Local staging files: rename those the newest manifest commits, delete the rest.
        let mut staged = upload::list_staging(&self.loc, &name).await?;
        let dl_separate = self.dl_loc.display != self.loc.display;
        let mut dl_staged = if dl_separate {
            upload::list_staging(&self.dl_loc, &name).await?
        } else {
            Vec::new()
        };
        let mut renamed = 0usize;
        if let Some(m) = latest {
            let mut jobs = Vec::new();
            for f in &m.files {
                if let Some(c @ Completion::Rename { from }) = &f.completion {
                    if take(&mut staged, &self.loc.child(from)) {
                        jobs.push((
                            self.loc.clone(),
                            self.loc.child(&f.path),
                            c.clone(),
                            f.bytes,
                        ));
                    }
                }
            }
            for d in &m.dead_letter_completions {
                if let c @ Completion::Rename { from } = &d.completion {
                    let (loc, path) = self.locate_dead_letter(&d.url)?;
                    let pending = if loc.display == self.loc.display {
                        take(&mut staged, &loc.child(from))
                    } else if loc.display == self.dl_loc.display {
                        take(&mut dl_staged, &loc.child(from))
                    } else {
                        // Written with another sink.deadLetter.url than the one configured now.
                        self.staged(&loc, from).await?
                    };
                    if pending {
                        jobs.push((loc, path, c.clone(), d.bytes));
                    }
                }
            }
            renamed = jobs.len();
            for (loc, path, c, bytes) in jobs {
                upload::complete(&loc, &path, &c, bytes, &name).await?;
            }
        }
        if renamed > 0 {
            tracing::info!(
                files = renamed,
                "moved the files of the last commit into place, interrupted after its manifest"
            );
        }
        let discarded = staged.len() + dl_staged.len();
        upload::remove_staging(&self.loc, staged, &name).await?;
        if dl_separate {
            upload::remove_staging(&self.dl_loc, dl_staged, &name).await?;
        }
        if discarded > 0 {
            tracing::info!(
                "deleted {discarded} uncommitted staging files left by an interrupted run"
            );
        }
        Ok(aborted + discarded)
    }

    /// Whether the staging file `from` of `loc` exists.
    async fn staged(&self, loc: &Location, from: &str) -> Result<bool> {
        match loc.store.head(&loc.child(from)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(store_error(
                &self.sink_name(),
                format!("cannot check staging file {}", loc.url_of(&loc.child(from))),
                e,
            )),
        }
    }

    /// Delete data and dead-letter files of sequences that never got a manifest (left by a
    /// crash of a version before manifest format 3, which completed files before writing their
    /// manifest), and on a local file system the partial files of uploads that never
    /// completed.
    async fn remove_uncommitted(&self) -> Result<usize> {
        let mut removed = self.remove_uncommitted_in(&self.loc).await?;
        let dl_inside = self
            .dl_loc
            .display
            .starts_with(self.loc.display.trim_end_matches('/'));
        if !dl_inside {
            removed += self.remove_uncommitted_in(&self.dl_loc).await?;
        }
        Ok(removed)
    }

    async fn remove_uncommitted_in(&self, loc: &Location) -> Result<usize> {
        let name = self.sink_name();
        let metas: Vec<_> = loc
            .store
            .list(Some(&loc.prefix))
            .try_collect()
            .await
            .map_err(|e| store_error(&name, format!("cannot list {}", loc.display), e))?;
        let stem = format!("part-{}-", self.file_stem);
        let mut removed = 0;
        for meta in metas {
            let rel = loc.relative(&meta.location);
            if rel.starts_with(manifest::META_DIR) {
                continue;
            }
            let Some(file) = meta.location.filename() else {
                continue;
            };
            let Some(seq) = file
                .strip_prefix(&stem)
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            if seq >= self.next_seq {
                tracing::info!(file = %meta.location, "deleting uncommitted file left by an interrupted run");
                loc.store.delete(&meta.location).await.map_err(|e| {
                    store_error(
                        &name,
                        format!("cannot delete uncommitted {}", meta.location),
                        e,
                    )
                })?;
                removed += 1;
            }
        }
        if let Some(root) = &loc.local_root {
            removed += remove_local_staging(root, &stem);
        }
        Ok(removed)
    }

    /// The next file of this sequence: its relative path and its marker name.
    fn file_path(&mut self, partition: &str) -> (String, String) {
        let n = self.files_in_seq;
        self.files_in_seq += 1;
        let name = format!(
            "part-{}-{:08}-{:04}.parquet",
            self.file_stem, self.next_seq, n
        );
        let mut rel = String::new();
        for part in [self.generation.as_str(), partition] {
            if !part.is_empty() {
                rel.push_str(part);
                rel.push('/');
            }
        }
        rel.push_str(&name);
        (rel, format!("{n:04}"))
    }

    async fn open_file(&mut self, partition: &str, schema: &SchemaRef) -> Result<OpenFile> {
        let props = match &self.props {
            Some(p) => p.clone(),
            None => {
                let p = self.config.writer_properties(schema)?;
                self.props = Some(p.clone());
                p
            }
        };
        let (rel, marker_name) = self.file_path(partition);
        let (upload, marker) = upload::start(
            NewUpload {
                loc: &self.loc,
                rel: &rel,
                sequence: self.next_seq,
                meta: &self.loc,
                marker_name: &marker_name,
                marker_file: MarkerFile::Data(rel.clone()),
                part_size: self.config.writer.upload_part_size,
                concurrency: self.config.writer.upload_concurrency,
            },
            &self.sink_name(),
        )
        .await?;
        self.markers.extend(marker);
        let writer = AsyncArrowWriter::try_new(upload, schema.clone(), Some(props))
            .map_err(|e| self.parquet_err(format!("cannot create {rel}"), e))?;
        Ok(OpenFile {
            rel,
            partition: partition.to_string(),
            writer,
            rows: 0,
            opened_at: tokio::time::Instant::now(),
        })
    }

    /// Finish a file: every part uploaded (or the staging file written), not yet visible.
    async fn close_file(&mut self, mut file: OpenFile) -> Result<()> {
        file.writer.finish().await.map_err(|e| {
            self.parquet_err(format!("cannot finish the upload of {}", file.rel), e)
        })?;
        let bytes = file.writer.bytes_written() as u64;
        let completion = file.writer.into_inner().completion();
        self.closed.push(FileEntry {
            path: file.rel,
            partition: file.partition,
            rows: file.rows,
            bytes,
            completion: Some(completion),
        });
        Ok(())
    }

    /// Close every open file and commit them with the last checkpoint in one manifest entry:
    /// upload everything, write the manifest (the commit point), then make the files visible
    /// and delete their upload markers.
    async fn commit_all(&mut self) -> Result<Option<Commit>> {
        self.finish_unfinished().await?;
        if !self.dirty
            && self.open_files.is_empty()
            && self.closed.is_empty()
            && self.pending_letters.is_empty()
        {
            return Ok(None);
        }
        let started = Instant::now();
        let files = std::mem::take(&mut self.open_files);
        for (_, file) in files {
            self.close_file(file.into_inner()).await?;
        }
        self.set_files_open_gauge();
        let dead_letter_completion = self.write_pending_letters().await?;
        self.failpoints.reach("after-upload-before-manifest").await;
        let checkpoint = self.last_checkpoint.clone();
        let mut state = self.state.clone();
        match (&mut state.backfill, self.backfilling) {
            (Some(b), true) => b.checkpoint = checkpoint.clone(),
            _ => state.stream_checkpoint = checkpoint.clone(),
        }
        let files = std::mem::take(&mut self.closed);
        let rows = files.iter().map(|f| f.rows).sum();
        let bytes = files.iter().map(|f| f.bytes).sum();
        let dead_letters = if dead_letter_completion.is_some() {
            self.pending_letters.len() as u64
        } else {
            0
        };
        let entry = Manifest {
            version: MANIFEST_VERSION,
            sequence: self.next_seq,
            stream_id: self.stream_id.clone(),
            committed_at: chrono::Utc::now().to_rfc3339(),
            action: Action::Commit,
            generation: self.generation.clone(),
            files,
            rows,
            bytes,
            checkpoint: checkpoint.clone(),
            dead_letters,
            dead_letter_files: dead_letter_completion
                .iter()
                .map(|d| d.url.clone())
                .collect(),
            dead_letter_completions: dead_letter_completion.into_iter().collect(),
            state,
        };
        manifest::write(&self.loc, &self.sink_name(), &entry).await?;
        // Committed: whatever happens next, the state moves on; the files of this entry are
        // made visible now or, if that fails, before any later manifest (or by recovery).
        self.pending_letters.clear();
        self.state = entry.state.clone();
        self.next_seq += 1;
        self.files_in_seq = 0;
        self.dirty = false;
        let markers = std::mem::take(&mut self.markers);
        self.failpoints.reach("after-manifest").await;
        if let Err(e) = self.finish_commit(&entry, markers.clone()).await {
            self.unfinished = Some((entry, markers));
            return Err(e);
        }
        metrics::histogram!(m::BATCH_COMMIT_DURATION, self.labels.clone())
            .record(started.elapsed().as_secs_f64());
        tracing::debug!(
            sequence = entry.sequence,
            files = entry.files.len(),
            rows,
            dead_letters,
            "committed"
        );
        Ok(Some(Commit {
            checkpoint: checkpoint.unwrap_or_default(),
            rows,
            bytes,
            files: entry
                .files
                .iter()
                .map(|f| format!("{}/{}", self.loc.display.trim_end_matches('/'), f.path))
                .collect(),
            dead_letters,
        }))
    }

    /// Make every file of the written manifest `entry` visible, then delete its upload
    /// `markers` and local staging directory. Harmless to repeat.
    async fn finish_commit(&self, entry: &Manifest, markers: Vec<Path>) -> Result<()> {
        let name = self.sink_name();
        let mut jobs = Vec::new();
        for f in &entry.files {
            if let Some(c) = &f.completion {
                jobs.push((
                    self.loc.clone(),
                    self.loc.child(&f.path),
                    c.clone(),
                    f.bytes,
                ));
            }
        }
        for d in &entry.dead_letter_completions {
            let (loc, path) = self.locate_dead_letter(&d.url)?;
            jobs.push((loc, path, d.completion.clone(), d.bytes));
        }
        futures::stream::iter(jobs)
            .map(|(loc, path, completion, bytes)| {
                let name = name.clone();
                async move { upload::complete(&loc, &path, &completion, bytes, &name).await }
            })
            .buffer_unordered(REQUEST_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        self.failpoints.reach("after-completion").await;
        upload::delete_all(&self.loc, markers, &name).await?;
        upload::remove_local_staging_dir(&self.loc, entry.sequence);
        if !entry.dead_letter_completions.is_empty() {
            upload::remove_local_staging_dir(&self.dl_loc, entry.sequence);
        }
        Ok(())
    }

    /// Finish a commit whose completion failed earlier in this run, before anything else is
    /// committed: recovery only rolls the newest manifest forward.
    async fn finish_unfinished(&mut self) -> Result<()> {
        if let Some((entry, markers)) = self.unfinished.take() {
            if let Err(e) = self.finish_commit(&entry, markers.clone()).await {
                self.unfinished = Some((entry, markers));
                return Err(e);
            }
        }
        Ok(())
    }

    /// The location and path of the dead-letter file `url` (a URL recorded by a manifest or
    /// an upload marker).
    fn locate_dead_letter(&self, url: &str) -> Result<(Location, Path)> {
        let base = format!("{}/", self.dl_loc.display.trim_end_matches('/'));
        if let Some(rel) = url.strip_prefix(&base) {
            return Ok((self.dl_loc.clone(), self.dl_loc.child(rel)));
        }
        // Written with another sink.deadLetter.url than the one configured now.
        let (dir, file) = url.rsplit_once('/').ok_or_else(|| {
            self.err(
                format!("dead-letter file URL {url:?} in a manifest is not a URL; the manifest was edited by hand"),
                Retry::Permanent,
            )
        })?;
        let loc = open_location(dir, &self.config.storage_options, "sink.deadLetter.url")?;
        let path = loc.child(file);
        Ok((loc, path))
    }

    /// Upload the pending dead letters as one file of this sequence (invisible until the
    /// manifest commits it, like the data files).
    async fn write_pending_letters(&mut self) -> Result<Option<DeadLetterCompletion>> {
        if self.pending_letters.is_empty() {
            return Ok(None);
        }
        let name = self.sink_name();
        let buf = encode_dead_letters(&self.stream_id, &self.pending_letters, &name)?;
        let file = format!(
            "part-{}-{:08}-dead-letters.parquet",
            self.file_stem, self.next_seq
        );
        let url = format!("{}/{file}", self.dl_loc.display.trim_end_matches('/'));
        let marker_name = format!("{:04}", self.files_in_seq);
        self.files_in_seq += 1;
        let (mut up, marker) = upload::start(
            NewUpload {
                loc: &self.dl_loc,
                rel: &file,
                sequence: self.next_seq,
                meta: &self.loc,
                marker_name: &marker_name,
                marker_file: MarkerFile::DeadLetter(url.clone()),
                part_size: self.config.writer.upload_part_size,
                concurrency: self.config.writer.upload_concurrency,
            },
            &name,
        )
        .await?;
        self.markers.extend(marker);
        let bytes = buf.len() as u64;
        let written = match up.write(buf).await {
            Ok(()) => up.complete().await,
            Err(e) => Err(e),
        };
        written.map_err(|e| self.parquet_err(format!("cannot write dead letters to {url}"), e))?;
        Ok(Some(DeadLetterCompletion {
            url,
            bytes,
            completion: up.completion(),
        }))
    }

    /// Write a manifest entry that only changes the state.
    async fn write_state(&mut self, action: Action, state: State) -> Result<()> {
        self.finish_unfinished().await?;
        let entry = Manifest {
            version: MANIFEST_VERSION,
            sequence: self.next_seq,
            stream_id: self.stream_id.clone(),
            committed_at: chrono::Utc::now().to_rfc3339(),
            action,
            generation: self.generation.clone(),
            files: Vec::new(),
            rows: 0,
            bytes: 0,
            checkpoint: self.last_checkpoint.clone(),
            dead_letters: 0,
            dead_letter_files: Vec::new(),
            dead_letter_completions: Vec::new(),
            state,
        };
        manifest::write(&self.loc, &self.sink_name(), &entry).await?;
        self.state = entry.state;
        self.next_seq += 1;
        self.files_in_seq = 0;
        Ok(())
    }

    /// Delete generations whose retention expired, then record it.
    async fn remove_expired_generations(&mut self) -> Result<()> {
        let now = unix_now();
        let retention = self.config.generation_retention.as_secs();
        let (expired, kept): (Vec<_>, Vec<_>) = self
            .state
            .retired
            .iter()
            .cloned()
            .partition(|r| r.retired_at.saturating_add(retention) <= now);
        if expired.is_empty() {
            return Ok(());
        }
        let name = self.sink_name();
        let manifests = manifest::all(&self.loc, &name).await?;
        for r in &expired {
            let mut paths: Vec<Path> = manifest::files_of(&manifests, &r.generation)
                .map(|f| self.loc.child(&f.path))
                .collect();
            if r.generation.starts_with(GENERATIONS_DIR) {
                let dir = self.loc.child(&r.generation);
                let listed: Vec<_> = self
                    .loc
                    .store
                    .list(Some(&dir))
                    .try_collect()
                    .await
                    .map_err(|e| store_error(&name, format!("cannot list {dir}"), e))?;
                paths.extend(listed.into_iter().map(|m| m.location));
            }
            paths.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
            paths.dedup();
            tracing::info!(generation = %r.generation, files = paths.len(), "deleting expired generation");
            for p in paths {
                match self.loc.store.delete(&p).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(store_error(&name, format!("cannot delete {p}"), e)),
                }
            }
        }
        let mut state = self.state.clone();
        state.retired = kept;
        self.write_state(Action::Cleanup, state).await
    }

    /// An `overwrite` backfill whose generation holds no rows must not replace the current
    /// data (unless `allowEmptyOverwrite`).
    async fn refuse_empty_overwrite(&self) -> Result<()> {
        let Some(b) = self.state.backfill.as_ref().filter(|b| !b.completed) else {
            return Ok(());
        };
        if b.behavior != BackfillBehavior::Overwrite || self.config.allow_empty_overwrite {
            return Ok(());
        }
        let manifests = manifest::all(&self.loc, &self.sink_name()).await?;
        let rows: u64 = manifest::files_of(&manifests, &b.generation)
            .map(|f| f.rows)
            .sum();
        if rows > 0 {
            return Ok(());
        }
        Err(Error::EmptyOverwrite {
            backfill_id: b.id.clone(),
            source_name: if self.source_name.is_empty() {
                "the source".into()
            } else {
                self.source_name.clone()
            },
            sink_name: self.sink_name(),
        })
    }

    fn target_for(&mut self, batch: &RecordBatch) -> SchemaRef {
        if let Some(t) = &self.target {
            return t.clone();
        }
        let learned = schema::learn(&batch.schema());
        self.state.schema = Some(learned.as_ref().clone());
        self.target = Some(learned.clone());
        learned
    }

    /// The rows of `batch` that cannot be converted, as dead letters.
    fn dead_letters_of(
        &self,
        batch: &RecordBatch,
        rows: &[(usize, String)],
        checkpoint: &Checkpoint,
    ) -> Vec<DeadLetter> {
        let mut out = Vec::with_capacity(rows.len());
        for (row, reason) in rows {
            let mut letter = DeadLetter::new(
                self.sink_name(),
                format!(
                    "row {row} of the group ending at {}",
                    checkpoint_text(checkpoint)
                ),
                reason.clone(),
            );
            if let Some(json) = row_json(batch, *row) {
                letter = letter.with_payload(json);
            }
            out.push(letter);
        }
        out
    }

    async fn write_part(&mut self, key: String, part: RecordBatch) -> Result<()> {
        let max_rows = self.config.rolling.max_rows_per_file;
        let mut offset = 0;
        while offset < part.num_rows() {
            let file = match self.open_files.remove(&key) {
                Some(f) => f.into_inner(),
                None => self.open_file(&key, &part.schema()).await?,
            };
            let mut file = file;
            let room = (max_rows - file.rows).min((part.num_rows() - offset) as u64) as usize;
            let slice = part.slice(offset, room);
            let write = file.writer.write(&slice).await;
            if let Err(e) = write {
                let err = self.parquet_err(format!("cannot write {}", file.rel), e);
                return Err(err);
            }
            file.rows += room as u64;
            offset += room;
            if file.writer.bytes_written() > self.config.writer.upload_part_size {
                self.failpoints.reach("mid-part").await;
            }
            if file.rows >= max_rows {
                self.close_file(file).await?;
            } else {
                self.open_files.insert(key.clone(), SyncCell::new(file));
            }
        }
        Ok(())
    }

    fn size_of(file: &OpenFile) -> u64 {
        (file.writer.bytes_written() + file.writer.in_progress_size()) as u64
    }

    fn roll_due(&self) -> bool {
        let r = &self.config.rolling;
        !self.closed.is_empty()
            || self.open_files.values().any(|f| {
                f.with(|f| Self::size_of(f) >= r.target_file_size || f.rows >= r.max_rows_per_file)
            })
    }

    fn ensure_open(&self) -> Result<()> {
        if self.opened {
            Ok(())
        } else {
            Err(self.err(
                "the sink was used before Sink::open; open it first",
                Retry::Permanent,
            ))
        }
    }
}

/// Remove `path` from `listed`; whether it was there.
fn take(listed: &mut Vec<Path>, path: &Path) -> bool {
    match listed.iter().position(|p| p == path) {
        Some(i) => {
            listed.swap_remove(i);
            true
        }
        None => false,
    }
}

/// The completion and size of the upload `marker` records, if the manifest `m` commits it.
fn committed_upload(m: &Manifest, marker: &upload::UploadMarker) -> Option<(Completion, u64)> {
    let same = |c: &Completion| matches!(c, Completion::Multipart { upload_id, .. } if *upload_id == marker.upload_id);
    if let Some(p) = &marker.path {
        return m
            .files
            .iter()
            .find(|f| &f.path == p && f.completion.as_ref().is_some_and(same))
            .and_then(|f| f.completion.clone().map(|c| (c, f.bytes)));
    }
    let url = marker.dead_letter_file.as_ref()?;
    m.dead_letter_completions
        .iter()
        .find(|d| &d.url == url && same(&d.completion))
        .map(|d| (d.completion.clone(), d.bytes))
}

fn merge(a: Option<Commit>, b: Option<Commit>) -> Option<Commit> {
    match (a, b) {
        (Some(mut a), Some(b)) => {
            a.checkpoint = b.checkpoint;
            a.rows += b.rows;
            a.bytes += b.bytes;
            a.files.extend(b.files);
            a.dead_letters += b.dead_letters;
            Some(a)
        }
        (a, b) => b.or(a),
    }
}

#[async_trait::async_trait]
impl Sink for ParquetSink {
    fn name(&self) -> String {
        self.sink_name()
    }

    /// Recover: read the newest manifest, delete files of commits that never completed,
    /// delete expired generations, and return the checkpoint to resume from.
    async fn open(&mut self, ctx: &SinkContext) -> Result<Option<Checkpoint>> {
        let name = self.sink_name();
        self.stream_id = ctx.stream_id.clone();
        self.file_stem = sanitize(&ctx.stream_id);
        self.labels = ctx.labels.to_vec();
        self.dead_letters = ctx.dead_letters.clone();
        self.source_name = ctx.source_name.clone();
        self.pending_letters.clear();
        self.open_files.clear();
        self.closed.clear();
        self.markers.clear();
        self.unfinished = None;
        self.files_in_seq = 0;
        self.dirty = false;
        let latest = manifest::latest(&self.loc, &name).await?;
        let (state, next_seq) = match &latest {
            Some(m) => (m.state.clone(), m.sequence + 1),
            None => (State::default(), 0),
        };
        self.state = state;
        self.next_seq = next_seq;
        let mut removed = self.recover(latest.as_ref()).await?;
        if latest.as_ref().is_none_or(|m| m.version < 3) {
            // Written by an older version, which completed files before their manifest: delete
            // the completed files of commits that never got one.
            removed += self.remove_uncommitted().await?;
        }
        if self.config.schema.is_none() {
            self.target = self.state.schema.clone().map(std::sync::Arc::new);
        }
        let resume = match ctx.mode {
            Mode::Stream => {
                self.backfilling = false;
                self.generation = self.state.current_generation.clone();
                self.state.stream_checkpoint.clone()
            }
            Mode::Backfill => {
                self.backfilling = true;
                self.already_completed = false;
                let id = ctx.backfill_id.clone().unwrap_or_else(|| "unnamed".into());
                let completed_before = ctx.backfill_id.is_some()
                    && (self.state.completed_backfills.contains(&id)
                        || self
                            .state
                            .backfill
                            .as_ref()
                            .is_some_and(|b| b.id == id && b.completed));
                match self.state.backfill.clone() {
                    // A rerun of a finished backfill (a pod restarted after the backfill
                    // completed, before it could exit): running it again would append the
                    // history twice (merge) or rewrite it (overwrite).
                    _ if completed_before => {
                        tracing::info!(backfill_id = %id, generation = %self.state.current_generation, "this backfill already completed; nothing to do");
                        self.already_completed = true;
                        self.backfilling = false;
                        self.generation = self.state.current_generation.clone();
                        None
                    }
                    Some(b) if b.id == id && !b.completed => {
                        tracing::info!(backfill_id = %id, generation = %b.generation, "resuming backfill");
                        self.generation = b.generation.clone();
                        b.checkpoint
                    }
                    previous => {
                        if let Some(p) = previous.filter(|p| {
                            !p.completed && p.generation != self.state.current_generation
                        }) {
                            // An abandoned overwrite generation: never became current, delete it.
                            self.state.retired.push(RetiredGeneration {
                                generation: p.generation,
                                retired_at: 0,
                            });
                        }
                        let generation = match self.config.backfill_behavior {
                            BackfillBehavior::Merge => self.state.current_generation.clone(),
                            BackfillBehavior::Overwrite => {
                                format!("{GENERATIONS_DIR}/{}-{:08}", sanitize(&id), self.next_seq)
                            }
                        };
                        tracing::info!(backfill_id = %id, generation = %generation, "starting backfill");
                        self.generation = generation.clone();
                        self.state.backfill = Some(BackfillState {
                            id,
                            behavior: self.config.backfill_behavior,
                            generation,
                            checkpoint: None,
                            completed: false,
                        });
                        None
                    }
                }
            }
        };
        self.last_checkpoint = resume.clone();
        self.opened = true;
        self.remove_expired_generations().await?;
        self.set_files_open_gauge();
        tracing::info!(sink = %name, next_sequence = self.next_seq, removed_uncommitted = removed, resume_from = ?resume, "parquet sink opened");
        Ok(resume)
    }

    async fn write(&mut self, group: Group) -> Result<Option<Commit>> {
        self.ensure_open()?;
        let Group {
            batch,
            checkpoint,
            dead_letters,
        } = group;
        if !dead_letters.is_empty() {
            // Committed with the rows of this group, in the same manifest entry.
            self.pending_letters.extend(dead_letters);
            self.dirty = true;
        }
        if batch.num_rows() == 0 {
            // Only the position moved (a file finished, a watermark advanced): nothing to
            // write or check against the schema; the checkpoint is committed with the next
            // commit (or the flush).
            self.last_checkpoint = Some(checkpoint);
            self.dirty = true;
            return Ok(if self.roll_due() {
                self.commit_all().await?
            } else {
                None
            });
        }
        let mut target = self.target_for(&batch);
        let mut commit = None;
        if self.config.schema_evolution == SchemaEvolution::AddNullableColumns {
            if let Some((widened, added)) = schema::widen(&target, &batch.schema()) {
                // Files keep one schema: commit the open ones, later files carry the new columns.
                commit = self.commit_all().await?;
                tracing::info!(sink = %self.loc.display, added = ?added, "sink schema widened with new nullable columns");
                self.state.schema = Some(widened.as_ref().clone());
                self.target = Some(widened.clone());
                self.dirty = true;
                target = widened;
            }
        }
        let conformed = match schema::conform(&batch, &target) {
            Ok(c) => c,
            Err(message) => {
                // Commit what came before, then refuse the group.
                self.commit_all().await?;
                return Err(Error::SchemaMismatch {
                    location: self.loc.display.clone(),
                    message,
                });
            }
        };
        let mut rejected = conformed.rejected;
        let split = partition::split(&conformed.batch, &self.config.partition_by).map_err(|m| {
            Error::config(
                "sink.partitionBy",
                format!("{m}; partition by columns of the sink schema"),
            )
        })?;
        if !split.rejected.is_empty() {
            // Indices of `split` refer to the conformed batch; map them back.
            let kept: Vec<usize> = (0..batch.num_rows())
                .filter(|i| !rejected.iter().any(|(r, _)| r == i))
                .collect();
            rejected.extend(split.rejected.into_iter().map(|(i, r)| (kept[i], r)));
        }
        if !rejected.is_empty() {
            if !self.config.dead_letter.enabled {
                self.commit_all().await?;
                let (row, reason) = &rejected[0];
                return Err(self.err(
                    format!("{} rows cannot be converted (row {row}: {reason}); enable sink.deadLetter to keep them aside, or fix the source", rejected.len()),
                    Retry::Permanent,
                ));
            }
            let letters = self.dead_letters_of(&batch, &rejected, &checkpoint);
            if let Err(over_budget) = self.dead_letters.add_rejected(&letters) {
                // Commit what came before; this group is refused.
                self.commit_all().await?;
                return Err(over_budget);
            }
            self.pending_letters.extend(letters);
        }

        // Roll before writing when this group would push a file past a limit.
        let r = &self.config.rolling;
        let pre_roll = split.parts.iter().any(|(key, part)| {
            self.open_files.get(key).is_some_and(|f| {
                f.with(|f| {
                    let size = Self::size_of(f);
                    let per_row = size as f64 / f.rows.max(1) as f64;
                    let projected = size + (per_row * part.num_rows() as f64) as u64;
                    f.rows > 0
                        && projected > r.target_file_size
                        && projected - r.target_file_size
                            > r.target_file_size - size.min(r.target_file_size)
                })
            })
        });
        let new_keys = split
            .parts
            .iter()
            .filter(|(k, _)| !self.open_files.contains_key(k))
            .count();
        if split.parts.len() > self.config.max_open_files {
            self.commit_all().await?;
            return Err(self.err(
                format!(
                    "a group spans {} partitions, more than sink.maxOpenFiles = {}; raise sink.maxOpenFiles or use coarser partitions",
                    split.parts.len(),
                    self.config.max_open_files
                ),
                Retry::Permanent,
            ));
        }
        if pre_roll || self.open_files.len() + new_keys > self.config.max_open_files {
            commit = merge(commit, self.commit_all().await?);
        }
        for (key, part) in split.parts {
            self.write_part(key, part).await?;
        }
        self.last_checkpoint = Some(checkpoint);
        self.dirty = true;
        self.set_files_open_gauge();
        if self.roll_due() {
            commit = merge(commit, self.commit_all().await?);
        }
        Ok(commit)
    }

    async fn flush(&mut self) -> Result<Option<Commit>> {
        self.ensure_open()?;
        self.commit_all().await
    }

    async fn tick(&mut self) -> Result<Option<Commit>> {
        if !self.opened {
            return Ok(None);
        }
        let max_age = self.config.rolling.max_file_age;
        if self
            .open_files
            .values()
            .any(|f| f.with(|f| f.opened_at.elapsed() >= max_age))
        {
            return self.commit_all().await;
        }
        Ok(None)
    }

    /// At the end of a backfill: record it complete; for `overwrite`, make its generation
    /// current (atomically, in one manifest entry) and retire the previous one.
    async fn finish(&mut self) -> Result<()> {
        self.ensure_open()?;
        self.commit_all().await?;
        if self.backfilling {
            self.refuse_empty_overwrite().await?;
            let mut state = self.state.clone();
            if let Some(b) = state.backfill.as_mut().filter(|b| !b.completed) {
                b.completed = true;
                state.stream_checkpoint = b.checkpoint.clone();
                let id = b.id.clone();
                if !state.completed_backfills.contains(&id) {
                    state.completed_backfills.push(id);
                    let over = state
                        .completed_backfills
                        .len()
                        .saturating_sub(manifest::COMPLETED_BACKFILLS_KEPT);
                    state.completed_backfills.drain(..over);
                }
                if b.behavior == BackfillBehavior::Overwrite
                    && b.generation != state.current_generation
                {
                    let old =
                        std::mem::replace(&mut state.current_generation, b.generation.clone());
                    state.retired.push(RetiredGeneration {
                        generation: old,
                        retired_at: unix_now(),
                    });
                }
                tracing::info!(backfill_id = %b.id, generation = %state.current_generation, "backfill complete");
                self.write_state(Action::CompleteBackfill, state).await?;
                self.backfilling = false;
            }
        }
        self.remove_expired_generations().await
    }

    fn stores_dead_letters(&self) -> bool {
        true
    }

    fn backfill_already_completed(&self) -> bool {
        self.already_completed
    }
}

/// Config errors of the sink name fields under `sink`; re-root them under `at`.
fn rebase_config_error(e: Error, at: &str) -> Error {
    match e {
        Error::Config { field, message } if at != "sink" => {
            let field = match field.strip_prefix("sink") {
                Some(rest) if rest.is_empty() || rest.starts_with('.') => format!("{at}{rest}"),
                _ => field,
            };
            Error::Config { field, message }
        }
        other => other,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Characters allowed in file names; others become `_`.
pub(crate) fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() { "stream".into() } else { out }
}

fn checkpoint_text(c: &Checkpoint) -> String {
    serde_json::to_string(c).unwrap_or_else(|_| format!("{c:?}"))
}

fn row_json(batch: &RecordBatch, row: usize) -> Option<String> {
    let mut buf = Vec::new();
    let mut w = arrow_json::LineDelimitedWriter::new(&mut buf);
    w.write(&batch.slice(row, 1)).ok()?;
    w.finish().ok()?;
    String::from_utf8(buf)
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// Remove `part-{stem}*.parquet#N` staging files of local uploads that never completed.
fn remove_local_staging(root: &std::path::Path, stem: &str) -> usize {
    let mut removed = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((file, suffix)) = name.split_once('#') {
                if file.starts_with(stem)
                    && suffix.bytes().all(|b| b.is_ascii_digit())
                    && std::fs::remove_file(&path).is_ok()
                {
                    tracing::info!(file = %path.display(), "deleted staging file of an upload that never completed");
                    removed += 1;
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod request_counts {
    //! Object-store requests per commit, counted on the in-memory store.

    use super::*;
    use crate::parquet::counting::{Counts, counting_location, total};
    use arcane_core::Position;
    use arcane_core::testing::GeneratorSource;

    fn checkpoint(rows: u64) -> Checkpoint {
        Checkpoint::at(Position(serde_json::json!({ "rows": rows })))
    }

    fn group(from: u64, to: u64) -> Group {
        Group::new(GeneratorSource::batch(from, to), checkpoint(to))
    }

    fn sink(config: serde_json::Value, loc: &Location) -> ParquetSink {
        let config: ParquetSinkConfig = serde_json::from_value(config).expect("config");
        let mut sink = ParquetSink::new(config).expect("sink");
        sink.loc = loc.clone();
        sink.dl_loc = loc.clone();
        sink
    }

    fn ctx() -> SinkContext {
        SinkContext {
            stream_id: "orders".into(),
            ..SinkContext::default()
        }
    }

    /// Requests of one step, printed for the record.
    fn step(counts: &Counts, what: &str) -> usize {
        let c = counts.take();
        let n = total(&c);
        #[allow(clippy::print_stderr)]
        {
            eprintln!("{what:<44} {n:>3} requests  {c:?}");
        }
        n
    }

    async fn requests_per_commit(multipart: bool) -> Vec<usize> {
        let (loc, counts) = counting_location("orders", multipart);
        let config = serde_json::json!({
            "url": "memory:///orders",
            "partitionBy": { "eventTime": { "column": "event_time", "format": "hour=%H" } },
            "writer": { "compression": "uncompressed", "dictionary": false, "rowGroupSize": 20000,
                        "uploadPartSize": 5 * 1024 * 1024 },
            "rolling": { "maxRowsPerFile": 1000000 },
        });
        let mut out = Vec::new();
        let mut s = sink(config.clone(), &loc);
        s.open(&ctx()).await.expect("open");
        out.push(step(&counts, "open (empty location)"));
        s.write(group(0, 1000)).await.expect("write");
        s.flush().await.expect("flush").expect("commit");
        out.push(step(&counts, "commit: 1 small file"));
        s.write(group(1000, 3000)).await.expect("write");
        s.flush().await.expect("flush").expect("commit");
        out.push(step(&counts, "commit: 1 small file (2nd)"));
        s.write(group(3600, 3600 * 5)).await.expect("write");
        s.flush().await.expect("flush").expect("commit");
        out.push(step(&counts, "commit: 4 small files (4 partitions)"));
        // Hour 06: 3600 rows per hour; one hour of 400 000 rows does not fit, so use many ids of
        // one hour by writing the same hour's range repeatedly.
        for _ in 0..100 {
            s.write(group(3600 * 6, 3600 * 7)).await.expect("write");
        }
        s.flush().await.expect("flush").expect("commit");
        out.push(step(&counts, "commit: 1 file of 360 000 rows (~11 MiB)"));
        drop(s);
        let mut s = sink(config, &loc);
        s.open(&ctx()).await.expect("reopen");
        out.push(step(&counts, "reopen after a clean stop"));
        out
    }

    /// Multipart stores: per file one create, one marker put, its parts and one completion;
    /// per commit one manifest put and one bulk marker deletion. Opening lists manifests and
    /// markers (never the whole dataset) and reads the newest manifest.
    #[tokio::test]
    async fn object_store_requests_per_commit() {
        let counts = requests_per_commit(true).await;
        assert_eq!(counts, [3, 6, 6, 18, 8, 3]);
    }

    /// Without a multipart API (the local file system, here the memory store without one,
    /// whose rename is a copy and a delete): per file a staging write and a rename.
    #[tokio::test]
    async fn local_requests_per_commit() {
        let counts = requests_per_commit(false).await;
        assert_eq!(counts, [4, 4, 4, 13, 8, 4]);
    }
}
