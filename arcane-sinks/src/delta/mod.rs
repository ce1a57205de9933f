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
//!   log (newest commit first) and every manifest after it is published, in order, before
//!   anything new is written. A crash between a manifest and its Delta commit therefore never
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
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use serde_json::{Value, json};

use crate::parquet::config::DeltaConfig;
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
    /// The table's id and creation time (kept in later `metaData` actions).
    table_id: Option<(String, Value)>,
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
            table_id: None,
        };
        let versions = log.list_versions().await?;
        log.version = versions.last().copied();
        let (mut have_txn, mut have_meta) = (false, false);
        for &v in versions.iter().rev() {
            let c = log.read_version(v).await?;
            if !have_txn && let Some(t) = c.txn_of(&log.app_id) {
                log.published = Some(t);
                have_txn = true;
            }
            if !have_meta && let Some(m) = c.metadata() {
                log.take_metadata(m, v)?;
                have_meta = true;
            }
            if have_txn && have_meta {
                break;
            }
        }
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
                    "the Delta log under {} has no metaData action: it is not a Delta table; write this stream to a new location",
                    log.loc.url_of(&log.loc.child(LOG_DIR))
                ),
                Retry::Permanent,
            ));
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
        let started = std::time::Instant::now();
        let switch = m.state.current_generation != previous;
        let files: Vec<FileEntry> = if switch {
            let mut seen = HashSet::new();
            manifests
                .unwrap_or_default()
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
            let mut actions = vec![self.commit_info(m, now, switch, files.len())];
            if v == 0 {
                let Some(s) = schema else {
                    // Nothing written yet (no schema): the table is created by the first
                    // manifest that has one.
                    self.published = Some(m.sequence);
                    return Ok(());
                };
                actions.push(schema::protocol(s));
            }
            if let Some(ds) = &delta_schema
                && (v == 0 || self.schema.as_ref() != Some(ds))
            {
                actions.push(self.metadata(ds, now));
            }
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
                    if let Some(ds) = delta_schema {
                        self.schema = Some(ds);
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

    fn commit_info(&self, m: &Manifest, now: i64, switch: bool, files: usize) -> Value {
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
            "partitionColumns": [],
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
        futures::stream::iter(files.iter().cloned())
            .map(|f| {
                let (store, sink, schema) = (store.clone(), sink.clone(), schema.clone());
                let path = self.loc.child(&f.path);
                let url = self.loc.url_of(&path);
                async move {
                    let meta = read_footer(store.as_ref(), &path, f.bytes)
                        .await
                        .map_err(|e| {
                            Error::sink(
                                sink,
                                format!("cannot read the footer of committed file {url} for its Delta statistics: {e}; if the file is gone, its rows are lost and a backfill is needed"),
                                Retry::Transient,
                                None,
                            )
                        })?;
                    let stats = match &schema {
                        Some(s) => stats::stats(&meta, s),
                        None => json!({"numRecords": f.rows}),
                    };
                    Ok::<_, Error>(json!({"add": {
                        "path": encode(&f.path),
                        "partitionValues": {},
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

/// Bytes read from the end of a file at first: the footer of most files fits.
const FOOTER_GUESS: u64 = 64 * 1024;

/// The Parquet footer of the `size`-byte file at `path` (one ranged read, two when the footer
/// is larger than [`FOOTER_GUESS`]).
async fn read_footer(
    store: &dyn object_store::ObjectStore,
    path: &Path,
    size: u64,
) -> std::result::Result<ParquetMetaData, String> {
    if size < 12 {
        return Err(format!("{size} bytes are too few for a Parquet file"));
    }
    let start = size.saturating_sub(FOOTER_GUESS);
    let tail = store
        .get_range(path, start..size)
        .await
        .map_err(|e| e.to_string())?;
    let n = tail.len();
    if n < 8 || &tail[n - 4..] != b"PAR1" {
        return Err("not a Parquet file (no PAR1 magic at its end)".into());
    }
    let len = u32::from_le_bytes([tail[n - 8], tail[n - 7], tail[n - 6], tail[n - 5]]) as u64;
    if len + 8 > size {
        return Err(format!("its footer length {len} is larger than the file"));
    }
    let meta = if len + 8 <= n as u64 {
        tail.slice(n - 8 - len as usize..n - 8)
    } else {
        store
            .get_range(path, size - 8 - len..size - 8)
            .await
            .map_err(|e| e.to_string())?
    };
    ParquetMetaDataReader::decode_metadata(&meta).map_err(|e| e.to_string())
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
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = path.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(h, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

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
