//! Delta Lake over the Parquet sink's files (`sink.tableFormat: {"delta": {}}`, feature `delta`).
//!
//! The sink's prefix is the table root. The sink's own manifest stays the commit point of
//! the files (exactly once, deterministic names); after manifest `S` is written and its files
//! are visible, the sink **publishes** it as Delta commit `_delta_log/{V:020}.json`, with
//! `V` = the log's newest version + 1, written put-if-absent (`PutMode::Create`: S3
//! `If-None-Match`, Azure `If-None-Match`, an exclusive create on a local disk). The commit
//! holds `commitInfo` (with an `arcane` object: stream id, sequence, checkpoint, run id), a
//! `txn` action `{appId: streamId, version: S}` and the manifest's files as `add` actions with
//! stats from their footers; version 0 also holds `protocol` and `metaData`. Every manifest is
//! published, so the stream's last `txn.version` is the sink's last committed sequence.
//!
//! * A version somebody else took: if it carries this stream's `txn` with a version `>= S`,
//!   manifest `S` is published already (this run's own put retried after a lost answer, or
//!   another start of the stream catching up): done. Otherwise (another engine's commit, an
//!   `OPTIMIZE`) the next version is tried. Versions are tried upwards from the newest one
//!   this run has seen, so a publication of `S` is always found before a free version.
//! * Two runners of one stream: with a table format the sink's manifests are written
//!   put-if-absent and every start first claims the next sequence (an empty manifest) before
//!   its recovery discards anything, so the runner that started earlier fails at its next
//!   commit (exit 2, "another runner of stream …") and never commits what the other one's
//!   recovery discarded.
//! * On open (after the manifest recovery) the stream's last `txn.version` is read from the
//!   log (newest commit first, down to the stream's last commit, whose `commitInfo.arcane`
//!   points at the versions holding the table's `metaData` and `protocol`) and every manifest
//!   after it is published, in order, before anything new is written.
//! * Before each manifest, the sink's schema is checked against the table's (columns kept,
//!   new ones nullable) and its protocol (no writer feature Arcane does not honour), so that
//!   every committed manifest can be published. A crash between a manifest and its Delta commit therefore never
//!   loses or duplicates a file in the table.
//! * An `overwrite` backfill's files are not in the table while it runs (its commits publish
//!   only their `txn`); the manifest that makes its generation current is published as one
//!   Delta commit that `remove`s every file live in the table (from a replay of the log) and
//!   `add`s every file of the new generation.
//! * A widened schema (`schemaEvolution: addNullableColumns`) is published as a `metaData`
//!   action in the commit that first carries it.
//! * Dead letters are not part of the table.
//!
//! Arcane writes the log itself (the Delta protocol's JSON actions with `serde_json`, through
//! the sink's `object_store` client) rather than through `deltalake-core`, which depends on
//! older arrow/parquet/object_store releases than the workspace: no arrow type crosses a
//! library boundary and the feature adds no dependency. See `docs/delta-lake.md`.

pub mod schema;
pub mod stats;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arcane_core::{Error, Result, Retry};
use arrow_schema::Schema;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde_json::{Value, json};

use crate::parquet::config::DeltaConfig;
use crate::parquet::footer::{FooterError, read_footer};
use crate::parquet::manifest::{FileEntry, Manifest};
use arcane_store::{Location, store_error};

/// The log directory, relative to the table root (the sink's prefix).
pub const LOG_DIR: &str = "_delta_log";

/// Footers read at once when a commit's stats are gathered.
const FOOTER_CONCURRENCY: usize = 8;

/// The Delta log of one sink: what this run knows of it and how it publishes manifests.
#[derive(Debug)]
pub(crate) struct DeltaLog {
    loc: Location,
    config: DeltaConfig,
    sink: String,
    app_id: String,
    /// Identifies this run in `commitInfo.arcane.runId` (its own commits vs another writer's).
    run_id: String,
    /// The newest version seen in the log.
    version: Option<u64>,
    /// The stream's newest `txn.version` in the log: the last published manifest sequence.
    pub(crate) published: Option<u64>,
    /// The stream's current generation after the manifest `published` (kept by the sink).
    pub(crate) generation: Option<String>,
    /// The table's schema (`metaData.schemaString`, parsed) as of `version`.
    schema: Option<Value>,
    /// The version holding the table's newest `metaData`.
    metadata_version: Option<u64>,
    /// The table's newest `protocol` action and its version.
    protocol: Option<(Value, u64)>,
    /// The table's id and creation time (kept in later `metaData` actions).
    table_id: Option<(String, Value)>,
    /// The stream's partition columns (`sink.partitionBy.columns`): the table's
    /// `partitionColumns` when the sink creates it.
    partition_columns: Vec<String>,
    /// The table's `metaData.partitionColumns` as of `metadata_version`.
    table_partitions: Option<Vec<String>>,
}

/// One version's actions, parsed.
struct Commit {
    actions: Vec<Value>,
}

impl Commit {
    fn txn_of(&self, app_id: &str) -> Option<u64> {
        self.actions
            .iter()
            .filter_map(|a| a.get("txn"))
            .filter(|t| t["appId"] == app_id)
            .filter_map(|t| t["version"].as_u64())
            .max()
    }
    fn metadata(&self) -> Option<&Value> {
        self.actions.iter().find_map(|a| a.get("metaData"))
    }
    fn protocol(&self) -> Option<&Value> {
        self.actions.iter().find_map(|a| a.get("protocol"))
    }
    /// Where this stream's commit says the table's `metaData` and `protocol` are.
    fn pointers(&self) -> (Option<u64>, Option<u64>) {
        let a = self
            .actions
            .iter()
            .find_map(|a| a.get("commitInfo"))
            .map(|c| &c["arcane"]);
        (
            a.and_then(|a| a["metadataVersion"].as_u64()),
            a.and_then(|a| a["protocolVersion"].as_u64()),
        )
    }
    fn run_id(&self) -> Option<&str> {
        self.actions
            .iter()
            .find_map(|a| a.get("commitInfo"))
            .and_then(|c| c["arcane"]["runId"].as_str())
    }
}

impl DeltaLog {
    /// Read what the sink needs from the log under `loc` (newest commit first): the newest
    /// version, the stream's last `txn`, the table's schema.
    pub(crate) async fn open(
        loc: Location,
        config: DeltaConfig,
        sink: String,
        app_id: String,
        partition_columns: Vec<String>,
    ) -> Result<Self> {
        let mut log = Self {
            loc,
            config,
            sink,
            app_id,
            run_id: uuid::Uuid::new_v4().to_string(),
            version: None,
            published: None,
            generation: None,
            schema: None,
            metadata_version: None,
            protocol: None,
            table_id: None,
            partition_columns,
            table_partitions: None,
        };
        let versions = log.list_versions().await?;
        log.version = versions.last().copied();
        // Newest first: commits newer than this stream's last one are read whole (another
        // engine may have changed the metadata or protocol); that commit points at the
        // versions holding the metadata and protocol it was written with, so a start reads a
        // few commits, not the whole log.
        let (mut have_txn, mut have_meta, mut have_protocol) = (false, false, false);
        for &v in versions.iter().rev() {
            let c = log.read_version(v).await?;
            if !have_meta && let Some(m) = c.metadata() {
                log.take_metadata(m, v)?;
                have_meta = true;
            }
            if !have_protocol && let Some(p) = c.protocol() {
                log.protocol = Some((p.clone(), v));
                have_protocol = true;
            }
            if !have_txn && let Some(t) = c.txn_of(&log.app_id) {
                log.published = Some(t);
                have_txn = true;
                let (meta_at, protocol_at) = c.pointers();
                if !have_meta
                    && let Some(at) = meta_at
                    && let Some(c) = log.read_version_if_exists(at).await?
                    && let Some(m) = c.metadata()
                {
                    log.take_metadata(m, at)?;
                    have_meta = true;
                }
                if !have_protocol
                    && let Some(at) = protocol_at
                    && let Some(c) = log.read_version_if_exists(at).await?
                    && let Some(p) = c.protocol()
                {
                    log.protocol = Some((p.clone(), at));
                    have_protocol = true;
                }
            }
            if have_txn && have_meta && have_protocol {
                break;
            }
        }
        let have_meta = have_meta && have_protocol;
        if log.version.is_some() && !(have_txn && have_meta) && versions.first() != Some(&0) {
            return Err(log.err(format!(
                "the Delta log under {} has no JSON commits before version {} (they were cleaned up after a checkpoint), and the stream's last transaction or the table's metadata is only in the Parquet checkpoint, which arcane-sinks does not read yet; keep the log's JSON commits (raise delta.logRetentionDuration) or write this stream to a new table",
                log.loc.url_of(&log.loc.child(LOG_DIR)),
                versions.first().copied().unwrap_or(0)
            ), Retry::Permanent));
        }
        if log.version.is_some() && !have_meta {
            return Err(log.err(
                format!(
                    "the Delta log under {} has no metaData or protocol action: it is not a Delta table; write this stream to a new location",
                    log.loc.url_of(&log.loc.child(LOG_DIR))
                ),
                Retry::Permanent,
            ));
        }
        if let Some((p, _)) = &log.protocol {
            writable(p).map_err(|message| {
                log.err(
                    format!("the Delta table under {}: {message}", log.loc.display),
                    Retry::Permanent,
                )
            })?;
        }
        tracing::info!(table = %log.loc.display, version = ?log.version, last_sequence = ?log.published, "delta table opened");
        Ok(log)
    }

    fn err(&self, message: String, retry: Retry) -> Error {
        Error::sink(self.sink.clone(), message, retry, None)
    }

    fn take_metadata(&mut self, m: &Value, v: u64) -> Result<()> {
        let schema = m["schemaString"]
            .as_str()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .ok_or_else(|| {
                self.err(
                    format!("Delta commit {v} under {} has a metaData action without a valid schemaString; the log was edited by another tool", self.loc.display),
                    Retry::Permanent,
                )
            })?;
        self.schema = Some(schema);
        self.metadata_version = Some(v);
        self.table_partitions = Some(
            m["partitionColumns"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        );
        if let Some(id) = m["id"].as_str() {
            self.table_id = Some((id.to_string(), m["createdTime"].clone()));
        }
        Ok(())
    }

    fn version_path(&self, v: u64) -> Path {
        self.loc.child(&format!("{LOG_DIR}/{v:020}.json"))
    }

    async fn list_versions(&self) -> Result<Vec<u64>> {
        let dir = self.loc.child(LOG_DIR);
        let metas: Vec<_> = self
            .loc
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| store_error(&self.sink, format!("cannot list the Delta log {dir}"), e))?;
        let mut versions: Vec<u64> = metas
            .iter()
            .filter_map(|m| {
                let name = m.location.filename()?;
                let stem = name.strip_suffix(".json")?;
                (stem.len() == 20).then(|| stem.parse().ok())?
            })
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// Version `v`, or `None` when it is gone (cleaned up after a checkpoint).
    async fn read_version_if_exists(&self, v: u64) -> Result<Option<Commit>> {
        match self.loc.store.head(&self.version_path(v)).await {
            Ok(_) => Ok(Some(self.read_version(v).await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(
                &self.sink,
                format!("cannot read Delta commit {}", self.version_path(v)),
                e,
            )),
        }
    }

    async fn read_version(&self, v: u64) -> Result<Commit> {
        let path = self.version_path(v);
        let bytes = self
            .loc
            .store
            .get(&path)
            .await
            .map_err(|e| store_error(&self.sink, format!("cannot read Delta commit {path}"), e))?
            .bytes()
            .await
            .map_err(|e| store_error(&self.sink, format!("cannot read Delta commit {path}"), e))?;
        let mut actions = Vec::new();
        for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let action: Value = serde_json::from_slice(line).map_err(|e| {
                self.err(
                    format!("Delta commit {path} line {} is not JSON ({e}); the log is damaged; restore the file from a backup", n + 1),
                    Retry::Permanent,
                )
            })?;
            actions.push(action);
        }
        Ok(Commit { actions })
    }

    /// The files live in the table (path → its `add` action), replaying every JSON commit.
    async fn live_files(&self) -> Result<BTreeMap<String, Value>> {
        let versions = self.list_versions().await?;
        if versions.first().is_some_and(|&v| v != 0) {
            return Err(self.err(
                format!(
                    "replacing the table's files needs every Delta commit, but the log under {} starts at version {} (older ones are only in a Parquet checkpoint, which arcane-sinks does not read yet); keep the log's JSON commits (raise delta.logRetentionDuration) or write the backfill to a new table",
                    self.loc.display, versions[0]
                ),
                Retry::Permanent,
            ));
        }
        let mut live = BTreeMap::new();
        for v in versions {
            for a in self.read_version(v).await?.actions {
                if let Some(add) = a.get("add")
                    && let Some(p) = add["path"].as_str()
                {
                    live.insert(decode(p), add.clone());
                } else if let Some(p) = a.get("remove").and_then(|r| r["path"].as_str()) {
                    live.remove(&decode(p));
                }
            }
        }
        Ok(live)
    }

    /// Publish manifest `m` (its files visible) as the next Delta commit. `previous` is the
    /// stream's current generation before `m`; `manifests` every manifest, needed only when
    /// `m` switches the generation (an `overwrite` backfill completing); `schema` the sink's
    /// schema after `m`.
    pub(crate) async fn publish(
        &mut self,
        m: &Manifest,
        previous: &str,
        manifests: Option<&[Manifest]>,
        schema: Option<&Schema>,
    ) -> Result<()> {
        if self.published.is_some_and(|p| p >= m.sequence) {
            return Ok(());
        }
        self.check_partitions()
            .map_err(|message| Error::config("sink.partitionBy", message))?;
        let started = std::time::Instant::now();
        let switch = m.state.current_generation != previous;
        let files: Vec<FileEntry> = if switch {
            // Without them the commit would remove every live file and add none.
            let Some(manifests) = manifests else {
                return Err(Error::fatal(format!(
                    "publishing manifest {} of sink {}: the generation switch needs every manifest of generation {:?}, which were not read",
                    m.sequence, self.sink, m.state.current_generation
                )));
            };
            let mut seen = HashSet::new();
            manifests
                .iter()
                .filter(|x| x.generation == m.state.current_generation && x.sequence <= m.sequence)
                .flat_map(|x| x.files.iter())
                .chain(m.files.iter())
                .filter(|f| seen.insert(f.path.clone()))
                .cloned()
                .collect()
        } else if m.generation == m.state.current_generation {
            m.files.clone()
        } else {
            Vec::new() // an overwrite backfill in progress: not in the table yet
        };
        let adds = self.adds(&files, schema, m).await?;
        let delta_schema = match schema {
            Some(s) => Some(
                schema::delta_schema(s)
                    .map_err(|message| Error::config("sink.tableFormat.delta", message))?,
            ),
            None => None,
        };
        let now = chrono::Utc::now().timestamp_millis();
        loop {
            let v = self.version.map_or(0, |v| v + 1);
            let mut actions = Vec::new();
            let mut protocol_at = self.protocol.as_ref().map(|(_, at)| *at);
            if v == 0 {
                let Some(s) = schema else {
                    // Nothing written yet (no schema): the table is created by the first
                    // manifest that has one.
                    self.published = Some(m.sequence);
                    return Ok(());
                };
                actions.push(schema::protocol(s));
                protocol_at = Some(0);
            }
            let mut metadata_at = self.metadata_version;
            let new_metadata = delta_schema
                .as_ref()
                .filter(|ds| v == 0 || !self.schema.as_ref().is_some_and(|t| same_fields(t, ds)));
            if let Some(ds) = new_metadata {
                actions.push(self.metadata(ds, now));
                metadata_at = Some(v);
            }
            actions.insert(
                0,
                self.commit_info(m, now, switch, files.len(), metadata_at, protocol_at),
            );
            actions.push(json!({"txn": {
                "appId": self.app_id,
                "version": m.sequence,
                "lastUpdated": now,
            }}));
            if switch {
                for (_, add) in self.live_files().await? {
                    actions.push(json!({"remove": {
                        "path": add["path"],
                        "deletionTimestamp": now,
                        "dataChange": true,
                        "extendedFileMetadata": true,
                        "partitionValues": add.get("partitionValues").cloned().unwrap_or(json!({})),
                        "size": add["size"],
                    }}));
                }
            }
            actions.extend(adds.iter().cloned());
            let mut body = Vec::new();
            for a in &actions {
                serde_json::to_writer(&mut body, a)
                    .map_err(|e| Error::fatal(format!("cannot encode a Delta action: {e}")))?;
                body.push(b'\n');
            }
            let path = self.version_path(v);
            match self
                .loc
                .store
                .put_opts(
                    &path,
                    PutPayload::from(Bytes::from(body)),
                    PutOptions::from(PutMode::Create),
                )
                .await
            {
                Ok(_) => {
                    self.version = Some(v);
                    self.published = Some(m.sequence);
                    if v == 0
                        && let Some(s) = schema
                    {
                        self.protocol = Some((schema::protocol(s)["protocol"].clone(), 0));
                    }
                    if let Some(ds) = new_metadata {
                        self.schema = Some(ds.clone());
                        self.metadata_version = Some(v);
                    }
                    metrics::histogram!(crate::delta::COMMIT_DURATION)
                        .record(started.elapsed().as_secs_f64());
                    tracing::debug!(
                        version = v,
                        sequence = m.sequence,
                        files = files.len(),
                        "delta commit"
                    );
                    return Ok(());
                }
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => {
                    let taken = self.read_version(v).await?;
                    if let Some(t) = taken.txn_of(&self.app_id)
                        && t >= m.sequence
                    {
                        // Published already: by this run (a put answered as failed and
                        // retried) or by another start of the stream catching up on the same
                        // manifests (which are written put-if-absent, so the same content).
                        tracing::info!(
                            version = v,
                            sequence = t,
                            own = taken.run_id() == Some(self.run_id.as_str()),
                            "the manifest is already published in the Delta log"
                        );
                        self.version = Some(v);
                        self.published = Some(t);
                        return Ok(());
                    }
                    // Another writer's commit (e.g. OPTIMIZE): take it into account, go on.
                    if let Some(md) = taken.metadata() {
                        self.take_metadata(md, v)?;
                    }
                    if let Some(p) = taken.protocol() {
                        writable(p).map_err(|message| {
                            self.err(
                                format!(
                                    "Delta commit {v} under {} changed the protocol: {message}",
                                    self.loc.display
                                ),
                                Retry::Permanent,
                            )
                        })?;
                        self.protocol = Some((p.clone(), v));
                    }
                    self.version = Some(v);
                }
                Err(e) => {
                    return Err(store_error(
                        &self.sink,
                        format!("cannot write Delta commit {path}"),
                        e,
                    ));
                }
            }
        }
    }

    /// Whether this table can take files of `schema`: a schema Delta can hold, the table's
    /// columns kept (same name, type and nullability), new columns nullable, and a protocol
    /// that has the features the schema needs. Checked before a manifest is written, so that
    /// every committed manifest can be published.
    pub(crate) fn check(&self, schema: &Schema) -> std::result::Result<(), String> {
        let ours = schema::delta_schema(schema)?;
        self.check_partitions()?;
        for name in &self.partition_columns {
            let Some(field) = schema.fields().iter().find(|f| f.name() == name) else {
                return Err(format!(
                    "sink.partitionBy.columns names {name:?}, which is not in the stream's schema; name one of its columns"
                ));
            };
            if !partition_type(field.data_type()) {
                return Err(format!(
                    "sink.partitionBy.columns names {name:?}, of type {}; a Delta table's partition column must be a string, integer, boolean or date column: partition by one of those, or drop it from sink.partitionBy",
                    field.data_type()
                ));
            }
        }
        if let Some(table) = &self.schema {
            let theirs = fields(table);
            let mine = fields(&ours);
            for (name, t) in &theirs {
                match mine.iter().find(|(n, _)| n == name) {
                    Some((_, m)) if m == t => {}
                    Some((_, m)) => {
                        return Err(format!(
                            "the Delta table under {} has column {name:?} as {t}, the stream's schema has it as {m}; the table cannot change a column: write the stream to a new table, or backfill into a new one",
                            self.loc.display
                        ));
                    }
                    None => {
                        return Err(format!(
                            "the Delta table under {} has column {name:?} ({t}), which the stream's schema lacks; write the stream to a new table",
                            self.loc.display
                        ));
                    }
                }
            }
            for (name, m) in &mine {
                if !theirs.iter().any(|(n, _)| n == name) && m["nullable"] != true {
                    return Err(format!(
                        "the stream's column {name:?} is not in the Delta table under {} and is not nullable; only nullable columns can be added to a table",
                        self.loc.display
                    ));
                }
            }
        }
        if schema::needs_timestamp_ntz(schema)
            && let Some((p, _)) = &self.protocol
            && !has_feature(p, "timestampNtz")
        {
            return Err(format!(
                "the stream has a timestamp column without time zone, but the Delta table under {} was created without the timestampNtz feature; give the column a time zone (timestamp[us, UTC]) or write to a new table",
                self.loc.display
            ));
        }
        Ok(())
    }

    /// The table's partition columns are the stream's (`sink.partitionBy.columns`, in order).
    fn check_partitions(&self) -> std::result::Result<(), String> {
        match &self.table_partitions {
            Some(table) if *table != self.partition_columns => Err(format!(
                "the Delta table under {} is partitioned by {table:?}, but sink.partitionBy.columns is {:?}; a table's partition columns cannot change: set sink.partitionBy.columns to the table's, or write the stream to a new table (sink.url)",
                self.loc.display, self.partition_columns
            )),
            _ => Ok(()),
        }
    }

    fn commit_info(
        &self,
        m: &Manifest,
        now: i64,
        switch: bool,
        files: usize,
        metadata_version: Option<u64>,
        protocol_version: Option<u64>,
    ) -> Value {
        json!({"commitInfo": {
            "timestamp": now,
            "operation": "STREAMING UPDATE",
            "operationParameters": {
                "outputMode": if switch { "Complete" } else { "Append" },
                "queryId": self.app_id,
                "epochId": m.sequence.to_string(),
            },
            "isBlindAppend": !switch,
            "operationMetrics": {"numFiles": files.to_string()},
            "engineInfo": concat!("arcane-sinks/", env!("CARGO_PKG_VERSION")),
            "arcane": {
                "streamId": self.app_id,
                "sequence": m.sequence,
                "action": m.action,
                "generation": m.state.current_generation,
                "checkpoint": m.checkpoint,
                "runId": self.run_id,
                "metadataVersion": metadata_version,
                "protocolVersion": protocol_version,
            },
        }})
    }

    fn metadata(&self, delta_schema: &Value, now: i64) -> Value {
        let (id, created) = self
            .table_id
            .clone()
            .unwrap_or_else(|| (uuid::Uuid::new_v4().to_string(), json!(now)));
        let mut md = json!({
            "id": id,
            "format": {"provider": "parquet", "options": {}},
            "schemaString": delta_schema.to_string(),
            "partitionColumns": self.partition_columns,
            "createdTime": created,
            "configuration": self.config.configuration,
        });
        if let Some(n) = &self.config.name {
            md["name"] = json!(n);
        }
        if let Some(d) = &self.config.description {
            md["description"] = json!(d);
        }
        json!({ "metaData": md })
    }

    /// `add` actions for `files`, with stats from their footers.
    async fn adds(
        &self,
        files: &[FileEntry],
        schema: Option<&Schema>,
        m: &Manifest,
    ) -> Result<Vec<Value>> {
        let modified = chrono::DateTime::parse_from_rfc3339(&m.committed_at)
            .map(|t| t.timestamp_millis())
            .unwrap_or_else(|_| chrono::Utc::now().timestamp_millis());
        let store = self.loc.store.clone();
        let sink = self.sink.clone();
        let schema = schema.cloned().map(Arc::new);
        let partitions = files
            .iter()
            .map(|f| {
                partition_values(&f.partition, &self.partition_columns).map_err(|why| {
                    self.err(
                        format!(
                            "file {} of manifest {}: {why}; the file was written with another sink.partitionBy: set it back, or write the stream to a new table (sink.url) and backfill",
                            f.path, m.sequence
                        ),
                        Retry::Permanent,
                    )
                })
            })
            .collect::<Result<Vec<Value>>>()?;
        futures::stream::iter(files.iter().cloned().zip(partitions))
            .map(|(f, partition_values)| {
                let (store, sink, schema) = (store.clone(), sink.clone(), schema.clone());
                let path = self.loc.child(&f.path);
                let url = self.loc.url_of(&path);
                // The object's key (the store's encoding of the relative path: a `%` of an
                // escaped partition value is `%25` in the key), as a URI.
                let uri = encode(&self.loc.relative(&path));
                async move {
                    let what = format!(
                        "cannot read the footer of committed file {url} (manifest {}) for its Delta statistics",
                        m.sequence
                    );
                    let meta = match read_footer(store.as_ref(), &path, f.bytes).await {
                        Ok(meta) => meta,
                        // Missing or unreadable: permanent (a retry would only loop).
                        Err(FooterError::Store(e)) => return Err(store_error(&sink, what, e)),
                        Err(FooterError::Bad(why)) => {
                            return Err(Error::sink(
                                sink,
                                format!(
                                    "{what}: {why}; the file is corrupt: restore it from the store's versions or a backup, or rebuild the output (remove the sink's prefix, table included, and backfill)"
                                ),
                                Retry::Permanent,
                                None,
                            ));
                        }
                    };
                    let stats = match &schema {
                        Some(s) => stats::stats(&meta, s),
                        None => json!({"numRecords": f.rows}),
                    };
                    Ok::<_, Error>(json!({"add": {
                        "path": uri,
                        "partitionValues": partition_values,
                        "size": f.bytes,
                        "modificationTime": modified,
                        "dataChange": true,
                        "stats": stats.to_string(),
                    }}))
                }
            })
            .buffered(FOOTER_CONCURRENCY)
            .try_collect()
            .await
    }
}

/// Arrow types whose Hive directory value (Arrow's display form) is also the Delta protocol's
/// serialization of a partition value.
fn partition_type(t: &arrow_schema::DataType) -> bool {
    use arrow_schema::DataType as D;
    matches!(
        t,
        D::Utf8
            | D::LargeUtf8
            | D::Utf8View
            | D::Int8
            | D::Int16
            | D::Int32
            | D::Int64
            | D::Boolean
            | D::Date32
    )
}

/// An `add` action's `partitionValues` from a file's partition directory (as the sink wrote
/// it): one entry per partition column, the value unescaped, the Hive null partition as JSON
/// null. Directories after the columns (`sink.partitionBy.eventTime`) are not partition
/// columns of the table.
fn partition_values(partition: &str, columns: &[String]) -> std::result::Result<Value, String> {
    let values = crate::parquet::partition::column_values(partition, columns)?;
    Ok(Value::Object(
        columns
            .iter()
            .cloned()
            .zip(
                values
                    .into_iter()
                    .map(|v| v.map_or(Value::Null, Value::String)),
            )
            .collect(),
    ))
}

/// A schema's fields as (name, field without metadata), to compare schemas by what matters.
fn fields(schema: &Value) -> Vec<(String, Value)> {
    schema["fields"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    (
                        f["name"].as_str().unwrap_or_default().to_string(),
                        json!({"type": f["type"], "nullable": f["nullable"]}),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn same_fields(a: &Value, b: &Value) -> bool {
    fields(a) == fields(b)
}

fn has_feature(protocol: &Value, feature: &str) -> bool {
    protocol["readerFeatures"]
        .as_array()
        .is_some_and(|fs| fs.iter().any(|f| f == feature))
}

/// Writer features Arcane honours: `appendOnly` and `invariants` (implied by writer version 2;
/// Arcane adds no invariants and removes files only in an overwrite backfill's switch) and
/// `timestampNtz`.
const WRITER_FEATURES: &[&str] = &["appendOnly", "invariants", "timestampNtz"];

/// Whether Arcane can write a table with this protocol; else what it lacks.
fn writable(protocol: &Value) -> std::result::Result<(), String> {
    let writer = protocol["minWriterVersion"].as_u64().unwrap_or(0);
    let features: Vec<&str> = protocol["writerFeatures"]
        .as_array()
        .map(|fs| fs.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let unknown: Vec<&str> = features
        .iter()
        .copied()
        .filter(|f| !WRITER_FEATURES.contains(f))
        .collect();
    match writer {
        0..=2 => Ok(()),
        7 if unknown.is_empty() => Ok(()),
        7 => Err(format!(
            "its protocol needs the writer features {unknown:?}, which arcane-sinks does not support (it supports {WRITER_FEATURES:?}); write the stream to a new table"
        )),
        _ => Err(format!(
            "its protocol needs writer version {writer} (check constraints, change data feed, generated or identity columns, column mapping), which arcane-sinks does not write; write the stream to a new table"
        )),
    }
}

/// Metric: seconds a Delta commit took (stats, conflicts and the put).
pub const COMMIT_DURATION: &str = "arcane.stream.delta.commit_duration";

/// A relative path as an `add` action's URI: every byte but unreserved characters, `/` and
/// `=` percent-encoded (RFC 3986, as the protocol asks).
pub(crate) fn encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b'=') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`encode`] (for any writer's paths).
pub(crate) fn decode(path: &str) -> String {
    crate::parquet::partition::unescape(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_arcane_cannot_honour_are_refused() {
        assert!(writable(&json!({"minReaderVersion": 1, "minWriterVersion": 2})).is_ok());
        assert!(
            writable(&json!({"minReaderVersion": 3, "minWriterVersion": 7,
                "readerFeatures": ["timestampNtz"], "writerFeatures": ["timestampNtz", "appendOnly"]}))
            .is_ok()
        );
        let e = writable(&json!({"minReaderVersion": 2, "minWriterVersion": 5})).expect_err("v5");
        assert!(e.contains("writer version 5"), "{e}");
        let e = writable(&json!({"minReaderVersion": 3, "minWriterVersion": 7,
            "readerFeatures": ["deletionVectors"], "writerFeatures": ["deletionVectors"]}))
        .expect_err("deletion vectors");
        assert!(e.contains("deletionVectors"), "{e}");
    }

    #[test]
    fn schemas_compare_by_name_type_and_nullability() {
        let a = json!({"type": "struct", "fields": [
            {"name": "id", "type": "long", "nullable": false, "metadata": {}}]});
        let b = json!({"type": "struct", "fields": [
            {"name": "id", "type": "long", "nullable": false, "metadata": {"comment": "x"}}]});
        let c = json!({"type": "struct", "fields": [
            {"name": "id", "type": "long", "nullable": true, "metadata": {}}]});
        assert!(same_fields(&a, &b));
        assert!(!same_fields(&a, &c));
    }

    #[test]
    fn partition_values_are_read_back_from_the_sink_directories() {
        let cols = ["city".to_string(), "n".to_string()];
        let dir = format!(
            "city={}/n={}/date=2026-11-23",
            crate::parquet::partition::escape("a/b=c%"),
            crate::parquet::partition::NULL_PARTITION
        );
        assert_eq!(
            partition_values(&dir, &cols).expect("values"),
            json!({"city": "a/b=c%", "n": null})
        );
        assert_eq!(partition_values("", &[]).expect("none"), json!({}));
        let e = partition_values("n=1/city=x", &cols).expect_err("order");
        assert!(e.contains("\"city\""), "{e}");
    }

    #[test]
    fn paths_are_uri_encoded_and_decoded() {
        let p = "date=2026-11-23/city=São Paulo/part-a b-00000001-0000.parquet";
        let e = encode(p);
        assert_eq!(
            e,
            "date=2026-11-23/city=S%C3%A3o%20Paulo/part-a%20b-00000001-0000.parquet"
        );
        assert_eq!(decode(&e), p);
    }
}
