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
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;

use crate::parquet::config::{BackfillBehavior, ParquetSinkConfig, SchemaEvolution};
use crate::parquet::dead_letter::{dead_letter_url, encode_dead_letters};
use crate::parquet::dictionary::DictionaryAuto;
use crate::parquet::encode::{EncodePool, EncodeWriter};
use crate::parquet::failpoint::Failpoints;
use crate::parquet::manifest::{
    self, Action, BackfillState, Completion, DeadLetterCompletion, FileEntry, GENERATIONS_DIR,
    MANIFEST_VERSION, Manifest, RetiredGeneration, State,
};
use crate::parquet::partition;
use crate::parquet::schema;
use crate::parquet::store::{Location, open_location_retrying, store_error};
use crate::parquet::upload::{self, FileUpload, MarkerFile, NewUpload, REQUEST_CONCURRENCY};

mod commit;
mod generations;
mod recovery;
mod shards;
mod table;
mod writer;

pub use shards::{ShardProgress, ShardResume, ShardedBackfillProgress, sharded_backfills};

use commit::merge;

/// Streams Arrow groups into Parquet files on an object store, exactly once.
///
/// See the [crate documentation](crate) for the layout and the commit protocol.
pub struct ParquetSink {
    config: ParquetSinkConfig,
    loc: Location,
    /// Where manifests and upload markers go: `loc`, or for a shard of a sharded backfill its
    /// own directory under `_arcane/shards/`.
    meta: Location,
    /// Set by [`ParquetSink::with_shard`]: the shard this sink writes when backfilling.
    shard: Option<(arcane_core::Shard, ShardResume)>,
    /// True when this run writes a shard of a sharded backfill.
    sharded: bool,
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
    /// `writer.dictionary: auto`: the columns written without a dictionary, decided so far.
    dictionary_auto: DictionaryAuto,
    /// The threads encoding columns (`writer.encodeThreads`), started with the first file.
    encode_pool: Option<std::sync::Arc<EncodePool>>,
    /// Where row groups in progress keep their pages (`writer.spillPages`), checked with the
    /// first file.
    spill: Option<crate::parquet::spill::SpillPages>,
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
    /// When the first group after the last commit was written (position-only groups and dead
    /// letters, which open no file, are committed `rolling.maxFileAge` after it).
    dirty_since: Option<tokio::time::Instant>,
    /// The Delta Lake log kept over the files (`sink.tableFormat.delta`), set by `open`.
    #[cfg(feature = "delta")]
    delta: Option<crate::delta::DeltaLog>,
    /// The Iceberg table kept over the files (`sink.tableFormat.iceberg`), set by `open`.
    #[cfg(feature = "iceberg")]
    iceberg: Option<crate::iceberg::IcebergTable>,
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
    writer: EncodeWriter<FileUpload>,
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
        let loc = open_location_retrying(
            &config.url,
            &config.storage_options,
            "sink.url",
            &config.retry,
        )?;
        let dl_loc = open_location_retrying(
            &dead_letter_url(&config),
            &config.storage_options,
            "sink.deadLetter.url",
            &config.retry,
        )?;
        let target = config.target_schema()?;
        Ok(Self {
            config,
            meta: loc.clone(),
            shard: None,
            sharded: false,
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
            dictionary_auto: DictionaryAuto::default(),
            encode_pool: None,
            spill: None,
            open_files: BTreeMap::new(),
            closed: Vec::new(),
            markers: Vec::new(),
            unfinished: None,
            files_in_seq: 0,
            last_checkpoint: None,
            dirty: false,
            dirty_since: None,
            #[cfg(feature = "delta")]
            delta: None,
            #[cfg(feature = "iceberg")]
            iceberg: None,
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

    /// Write shard `shard` of a sharded backfill when the stream runs in backfill mode (a
    /// streaming run ignores it): this shard's files and positions are committed in its own
    /// manifest lineage, and the backfill completes (for `overwrite`, its generation becomes
    /// current) when every shard is done, by the shard that finds the others done. `resume`
    /// gives the checkpoint the stream resumes from after the backfill, from the final
    /// checkpoints of the shards. See `MANIFEST.md`.
    pub fn with_shard(mut self, shard: arcane_core::Shard, resume: ShardResume) -> Self {
        self.shard = Some((shard, resume));
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

    /// Write `entry`: put-if-absent for a shard (whose lineage two pods of the same index
    /// could write at once), a plain put otherwise.
    async fn write_manifest(&self, entry: &Manifest) -> Result<()> {
        if !self.sharded && self.config.table_format.is_none() {
            return manifest::write(&self.meta, &self.sink_name(), entry).await;
        }
        if manifest::write_if_absent(&self.meta, &self.sink_name(), entry).await? {
            return Ok(());
        }
        Err(if self.sharded {
            self.concurrent_writer(entry.sequence)
        } else {
            self.concurrent_stream_writer(entry.sequence)
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
        self.dirty_since = None;
        self.sharded = false;
        self.meta = self.loc.clone();
        #[cfg(feature = "delta")]
        {
            self.delta = None;
        }
        #[cfg(feature = "iceberg")]
        {
            self.iceberg = None;
        }
        if ctx.mode == Mode::Backfill
            && let Some((shard, _)) = self.shard
        {
            return self.open_shard(ctx, shard).await;
        }
        let latest = manifest::latest(&self.loc, &name).await?;
        let (state, next_seq) = match &latest {
            Some(m) => {
                let next = m.sequence.checked_add(1).ok_or_else(|| {
                    self.err(
                        format!(
                            "the newest manifest has sequence {}, the last there can be; use a new sink location",
                            m.sequence
                        ),
                        Retry::Permanent,
                    )
                })?;
                (m.state.clone(), next)
            }
            None => (State::default(), 0),
        };
        self.state = state;
        self.next_seq = next_seq;
        let committing = self.claim(latest.as_ref()).await?;
        let mut removed = self.recover(committing.as_ref()).await?;
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
            Mode::Backfill => self.select_backfill(ctx),
        };
        self.last_checkpoint = resume.clone();
        self.opened = true;
        // Publish what the table lacks before the cleanup deletes replaced files.
        self.open_table().await?;
        self.remove_expired_generations().await?;
        self.set_files_open_gauge();
        tracing::info!(sink = %name, next_sequence = self.next_seq, removed_uncommitted = removed, resume_from = ?resume, "parquet sink opened");
        Ok(resume)
    }

    async fn write(&mut self, group: Group) -> Result<Option<Commit>> {
        self.ensure_open()?;
        self.dirty_since
            .get_or_insert_with(tokio::time::Instant::now);
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
        let batch = if self.config.table_format.is_some() {
            schema::to_micros(batch).map_err(|e| {
                self.err(
                    format!("cannot convert timestamps to microseconds for the table format: {e}"),
                    Retry::Permanent,
                )
            })?
        } else {
            batch
        };
        let mut target = self.target_for(&batch);
        let mut commit = None;
        if self.config.schema_evolution == SchemaEvolution::AddNullableColumns
            && let Some((widened, added)) = schema::widen(&target, &batch.schema())
        {
            // Files keep one schema: commit the open ones, later files carry the new columns.
            commit = self.commit_all().await?;
            tracing::info!(sink = %self.loc.display, added = ?added, "sink schema widened with new nullable columns");
            self.state.schema = Some(widened.as_ref().clone());
            self.target = Some(widened.clone());
            self.dirty = true;
            target = widened;
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
        let split = self
            .split_and_reject(&batch, conformed, &checkpoint)
            .await?;

        // Roll before writing when this group would push a file past a limit.
        let pre_roll = self.pre_roll_due(&split.parts);
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
        // Files past their age; or only positions and dead letters waiting that long (they
        // open no file, and a source acking after commits waits for them).
        let positions_due = self.open_files.is_empty()
            && (self.dirty || !self.pending_letters.is_empty())
            && self.dirty_since.is_some_and(|t| t.elapsed() >= max_age);
        if positions_due
            || self
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
        if self.sharded {
            return self.finish_shard().await;
        }
        if self.backfilling {
            self.refuse_empty_overwrite().await?;
            self.complete_backfill().await?;
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
