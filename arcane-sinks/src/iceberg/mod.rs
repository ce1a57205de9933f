//! Apache Iceberg (format v2) over the Parquet sink's files (`sink.tableFormat: {"iceberg":
//! {…}}`, feature `iceberg`).
//!
//! The sink's `url` is the table location. The sink's own manifest stays the commit point of
//! the files (exactly once, deterministic names); after a manifest that commits files is
//! written and its files are visible, the sink **publishes** it as one Iceberg fast-append
//! snapshot:
//!
//! 1. a manifest (`{url}/metadata/{uuid}-m0.avro`) listing the files as ADDED, with metrics
//!    from their footers, and a manifest list (`snap-{id}-{attempt}-{uuid}.avro`) with it and
//!    the parent snapshot's manifests;
//! 2. new table metadata `{url}/metadata/{version:05}-{uuid}.metadata.json` with the
//!    snapshot (summary `arcane.stream-id`, `arcane.sequence`, `arcane.run-id`,
//!    `arcane.checkpoint`), `refs.main`, the snapshot and metadata logs, and the table property
//!    `arcane-watermark` (the manifest's commit time); a schema widened by
//!    `schemaEvolution: addNullableColumns` as a new schema;
//! 3. the catalog's commit: the SQL catalog's compare-and-swap of the table's metadata
//!    location (see [`catalog`]), or a REST catalog's commit with requirements (see [`rest`]),
//!    which writes the metadata itself from the same changes.
//!
//! * Lost swap (another writer committed first): the table is read again; a snapshot of this
//!   stream with a sequence `>=` the manifest's means it is published already (another start
//!   catching up); a newer snapshot of this stream by another run means another runner writes
//!   the stream (transient error naming it); otherwise the snapshot is rebuilt on the new
//!   table state and the swap retried.
//! * Unknown outcome (no answer, a REST catalog's 5xx): the table is read back, never
//!   guessed, so files are never appended twice.
//! * On open (after the manifest recovery) the stream's last published sequence is found by
//!   walking the current snapshot chain back to the stream's newest snapshot (Flink's
//!   `max-committed-checkpoint-id` pattern), and every manifest after it is published, in
//!   order, before anything new is written.
//! * Data files carry Iceberg field ids (`PARQUET:field_id`), assigned from the table's schema.
//! * An overwrite backfill's completion (the sink's generation switch) is one `overwrite`
//!   snapshot: a manifest adding the new generation's files, and one listing every live data
//!   file of the parent snapshot as DELETED, instead of the parent's manifests.
//!
//! Arcane writes the metadata, manifests and manifest lists itself (JSON with `serde_json`,
//! Avro with the encoder in [`avro`]) rather than through the `iceberg` crate, which depends
//! on older arrow releases than the workspace. See `docs/iceberg.md`.

pub mod avro;
pub mod catalog;
pub mod catalogs;
pub mod manifest;
pub mod partition;
pub mod rest;
pub mod schema;
pub mod stats;

use std::sync::Arc;

use arcane_core::retry::RetryConfig;
use arcane_core::{Error, Result, Retry};
use arrow_schema::Schema;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde_json::{Value, json};

use crate::parquet::config::{IcebergCatalogConfig, IcebergConfig};
use crate::parquet::footer::{FooterError, read_footer};
use crate::parquet::manifest::{FileEntry, Manifest};
use arcane_store::{Location, store_error};

use catalog::{SqlCatalog, Swap};
use catalogs::{Catalog, Commit, Loaded};
use manifest::{DataFile, ManifestFile};

/// Metric: seconds an Iceberg commit took (footers, manifests, metadata and the swap).
pub const COMMIT_DURATION: &str = "arcane.stream.iceberg.commit_duration";

/// Summary key of the stream id of a snapshot.
pub const SUMMARY_STREAM_ID: &str = "arcane.stream-id";
/// Summary key of the sink manifest sequence a snapshot publishes.
pub const SUMMARY_SEQUENCE: &str = "arcane.sequence";
/// Summary key of the run (process start) that wrote a snapshot.
pub const SUMMARY_RUN_ID: &str = "arcane.run-id";
/// Table property holding the commit time of the newest published manifest.
pub const WATERMARK_PROPERTY: &str = "arcane-watermark";

/// Footers read at once when a snapshot's metrics are gathered.
const FOOTER_CONCURRENCY: usize = 8;
/// Lost compare-and-swaps tolerated for one snapshot before giving up (exit 2).
const MAX_COMMIT_ATTEMPTS: u32 = 10;
/// Entries kept in the metadata log (Iceberg's `write.metadata.previous-versions-max`).
const METADATA_LOG_MAX: usize = 100;

/// The Iceberg table of one sink: what this run knows of it and how it publishes manifests.
#[derive(Debug)]
pub(crate) struct IcebergTable {
    loc: Location,
    config: IcebergConfig,
    sink: String,
    stream_id: String,
    run_id: String,
    catalog: Catalog,
    /// The table location (the sink's URL).
    location: String,
    /// The current metadata and where it is; `None` before the table exists.
    metadata: Option<(Value, String)>,
    /// The stream's newest published manifest sequence.
    pub(crate) published: Option<u64>,
    /// The newest manifest sequence this run has published or found nothing to publish in.
    pub(crate) considered: Option<u64>,
    /// The parent snapshot's manifests, read once per parent.
    parent_manifests: Option<(i64, Vec<ManifestFile>)>,
    /// The sink generation current after the newest manifest considered (kept by the sink's
    /// publishing loop, which detects generation switches).
    pub(crate) generation: Option<String>,
    /// The stream's partition columns (`sink.partitionBy.columns`): identity fields of the
    /// spec of a table the sink creates.
    partition_columns: Vec<String>,
    /// The fields of the table's default partition spec (its source columns are
    /// `partition_columns`).
    spec: Vec<partition::Field>,
}

impl IcebergTable {
    /// Connect to the catalog, create its tables when missing, and read the table (if it
    /// exists): its current metadata and the stream's last published sequence.
    pub(crate) async fn open(
        loc: Location,
        config: IcebergConfig,
        sink: String,
        stream_id: String,
        retry: RetryConfig,
        partition_columns: Vec<String>,
    ) -> Result<Self> {
        let catalog = match &config.catalog {
            IcebergCatalogConfig::Sql(sql) => {
                let field = "sink.tableFormat.iceberg.catalog.sql";
                let (pg, display) = catalog::parse_config(sql, field)?;
                Catalog::Sql(Box::new(SqlCatalog::new(
                    pg,
                    display,
                    config.catalog_name.clone(),
                    config.namespace.clone(),
                    config.table.clone(),
                    sink.clone(),
                    retry,
                )))
            }
            IcebergCatalogConfig::Rest(c) => {
                let field = "sink.tableFormat.iceberg.catalog.rest";
                let settings = rest::parse_config(c, &config.catalog_properties, field)?;
                Catalog::Rest(Box::new(rest::RestCatalog::new(
                    settings,
                    &config.namespace,
                    config.table.clone(),
                    sink.clone(),
                    retry,
                )?))
            }
        };
        let location = loc.display.trim_end_matches('/').to_string();
        let mut t = Self {
            loc,
            config,
            sink,
            stream_id,
            run_id: uuid::Uuid::new_v4().to_string(),
            catalog,
            location,
            metadata: None,
            published: None,
            considered: None,
            parent_manifests: None,
            generation: None,
            partition_columns,
            spec: Vec::new(),
        };
        t.catalog.init().await?;
        if let Some(at) = t.catalog.load().await? {
            t.take_metadata(at).await?;
        }
        tracing::info!(table = %t.catalog.identifier(), location = %t.location, last_sequence = ?t.published, "iceberg table opened");
        Ok(t)
    }

    fn err(&self, message: String, retry: Retry) -> Error {
        Error::sink(self.sink.clone(), message, retry, None)
    }

    /// The path in the sink's store of `url`, a file of this table.
    fn path_of(&self, url: &str) -> Result<Path> {
        let rel = url
            .strip_prefix(&self.location)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| {
                self.err(
                    format!(
                        "the Iceberg table {} refers to {url}, which is outside its location {} (the sink's url); Arcane reads and writes tables only under sink.url: point sink.url at the table's location or use a new table",
                        self.catalog.identifier(),
                        self.location
                    ),
                    Retry::Permanent,
                )
            })?;
        Ok(self.loc.child(rel))
    }

    async fn get(&self, url: &str, what: &str) -> Result<Bytes> {
        let path = self.path_of(url)?;
        let what = format!("cannot read the Iceberg {what} {url}");
        self.loc
            .store
            .get(&path)
            .await
            .map_err(|e| store_error(&self.sink, what.clone(), e))?
            .bytes()
            .await
            .map_err(|e| store_error(&self.sink, what, e))
    }

    async fn put(&self, rel: &str, bytes: Vec<u8>, create: bool) -> Result<String> {
        let path = self.loc.child(rel);
        let opts = if create {
            PutOptions::from(PutMode::Create)
        } else {
            PutOptions::default()
        };
        self.loc
            .store
            .put_opts(&path, PutPayload::from(Bytes::from(bytes)), opts)
            .await
            .map_err(|e| {
                store_error(
                    &self.sink,
                    format!("cannot write Iceberg file {}", self.loc.url_of(&path)),
                    e,
                )
            })?;
        Ok(self.loc.url_of(&path))
    }

    /// Read the metadata at `at` and make it current: check that Arcane can write the table,
    /// and find the stream's newest published sequence.
    async fn take_metadata(&mut self, loaded: Loaded) -> Result<()> {
        let at = loaded.location;
        let m: Value = match loaded.metadata {
            Some(m) => m,
            None => {
                let raw = self.get(&at, "table metadata").await?;
                serde_json::from_slice(&raw).map_err(|e| {
                    self.err(
                        format!("the Iceberg table metadata {at} is not JSON ({e}); restore it or point the catalog at a valid version"),
                        Retry::Permanent,
                    )
                })?
            }
        };
        let id = self.catalog.identifier();
        if m["format-version"] != 2 {
            return Err(self.err(
                format!(
                    "the Iceberg table {id} has format version {}; Arcane writes format version 2 tables only: upgrade the table (ALTER TABLE … SET TBLPROPERTIES ('format-version'='2')) or use a new table",
                    m["format-version"]
                ),
                Retry::Permanent,
            ));
        }
        let theirs = m["location"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('/');
        if theirs != self.location {
            return Err(Error::config(
                "sink.url",
                format!(
                    "the Iceberg table {id} is located at {theirs}, but sink.url is {}; set sink.url to the table's location",
                    self.location
                ),
            ));
        }
        let spec = partition::table_spec(&m).map_err(|why| {
            Error::config(
                "sink.partitionBy",
                format!("the Iceberg table {id}: {why}; write the stream to a new table"),
            )
        })?;
        let columns: Vec<&str> = spec.iter().map(|f| f.column.as_str()).collect();
        if columns != self.partition_columns {
            return Err(Error::config(
                "sink.partitionBy",
                format!(
                    "the Iceberg table {id} is partitioned by {columns:?} (identity), but sink.partitionBy.columns is {:?}; Arcane does not change a table's partition spec: set sink.partitionBy.columns to the table's, or write the stream to a new table",
                    self.partition_columns
                ),
            ));
        }
        self.spec = spec;
        self.published = stream_published(&m, &self.stream_id).map_err(|message| {
            self.err(
                format!("the Iceberg table {id}: {message}"),
                Retry::Permanent,
            )
        })?;
        self.metadata = Some((m, at));
        Ok(())
    }

    /// The table's current schema and the last column id (none before the table exists).
    fn current_schema(&self) -> (Option<&Value>, i64, i64) {
        let Some((m, _)) = &self.metadata else {
            return (None, 0, -1);
        };
        let id = m["current-schema-id"].as_i64().unwrap_or(0);
        let schema = m["schemas"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["schema-id"].as_i64() == Some(id)));
        (schema, m["last-column-id"].as_i64().unwrap_or(0), id)
    }

    /// The id a new schema of the table gets: one more than the largest.
    fn next_schema_id(&self) -> i64 {
        self.metadata
            .as_ref()
            .and_then(|(m, _)| m["schemas"].as_array())
            .and_then(|s| s.iter().filter_map(|s| s["schema-id"].as_i64()).max())
            .map_or(0, |max| max + 1)
    }

    /// Whether the table can take files of `schema` (checked before a manifest is written,
    /// so that every committed manifest can be published).
    pub(crate) fn check(&self, schema: &Schema) -> std::result::Result<(), String> {
        let (current, last, _) = self.current_schema();
        let (ice, _) = schema::iceberg_schema(schema, current, last)
            .map_err(|m| format!("table {}: {m}", self.catalog.identifier()))?;
        if self.metadata.is_none() {
            partition::new_spec(&self.partition_columns, &ice)
                .map_err(|m| format!("table {}: {m}", self.catalog.identifier()))?;
        }
        Ok(())
    }

    /// `schema` with the table's field ids, for the Parquet writer.
    pub(crate) fn file_schema(&self, schema: &Schema) -> std::result::Result<Schema, String> {
        let (current, last, _) = self.current_schema();
        let (ice, _) = schema::iceberg_schema(schema, current, last)
            .map_err(|m| format!("table {}: {m}", self.catalog.identifier()))?;
        Ok(schema::with_field_ids(schema, &ice))
    }

    /// Create the table (and its namespace) from `schema` when the catalog has none.
    pub(crate) async fn ensure_table(&mut self, arrow: &Schema) -> Result<()> {
        if self.metadata.is_some() {
            return Ok(());
        }
        let (ice, last) = schema::iceberg_schema(arrow, None, 0)
            .map_err(|m| Error::config("sink.tableFormat.iceberg", m))?;
        let spec = partition::new_spec(&self.partition_columns, &ice)
            .map_err(|m| Error::config("sink.partitionBy", m))?;
        let mut s = ice;
        s["schema-id"] = json!(0);
        let now = chrono::Utc::now().timestamp_millis();
        let metadata = json!({
            "format-version": 2,
            "table-uuid": uuid::Uuid::new_v4().to_string(),
            "location": self.location,
            "last-sequence-number": 0,
            "last-updated-ms": now,
            "last-column-id": last,
            "current-schema-id": 0,
            "schemas": [s],
            "default-spec-id": 0,
            "partition-specs": [{"spec-id": 0, "fields": partition::spec_json(&spec)}],
            "last-partition-id": partition::FIRST_FIELD_ID - 1 + spec.len() as i64,
            "default-sort-order-id": 0,
            "sort-orders": [{"order-id": 0, "fields": []}],
            "properties": self.config.properties,
            "current-snapshot-id": -1,
            "refs": {},
            "snapshots": [],
            "snapshot-log": [],
            "metadata-log": [],
        });
        if let Catalog::Rest(rest) = &mut self.catalog {
            // The REST catalog writes the first metadata itself (and may assign other field
            // ids: the table's are used from here on).
            let (loaded, created) = rest.create(&metadata).await?;
            if created {
                tracing::info!(table = %self.catalog.identifier(), metadata = %loaded.location, "iceberg table created");
            }
            return self.take_metadata(loaded).await;
        }
        let Catalog::Sql(sql) = &mut self.catalog else {
            return Err(Error::fatal("the Iceberg catalog changed kind"));
        };
        let rel = format!("metadata/00000-{}.metadata.json", uuid::Uuid::new_v4());
        let path = self.loc.child(&rel);
        let at = self.loc.url_of(&path);
        self.loc
            .store
            .put_opts(
                &path,
                PutPayload::from(Bytes::from(encode(&metadata)?)),
                PutOptions::from(PutMode::Create),
            )
            .await
            .map_err(|e| store_error(&self.sink, format!("cannot write Iceberg file {at}"), e))?;
        if sql.create(&at).await? {
            tracing::info!(table = %sql.identifier(), metadata = %at, "iceberg table created");
            self.metadata = Some((metadata, at));
            self.spec = spec;
            return Ok(());
        }
        // Created by another writer meanwhile: use theirs.
        let _ = self.loc.store.delete(&path).await;
        match self.catalog.load().await? {
            Some(theirs) => self.take_metadata(theirs).await,
            None => Err(self.err(
                format!("the table {} could not be created in the catalog and is not there; the stream restarts and retries", self.catalog.identifier()),
                Retry::Transient,
            )),
        }
    }

    /// Publish manifest `m` as one snapshot (when it commits files of the current generation
    /// `current`); `schema` is the sink's schema after `m`. `replace`: `m` switches the sink
    /// to a new generation (an overwrite backfill completed) whose files these are: one
    /// `overwrite` snapshot removes every live data file and adds them.
    pub(crate) async fn publish(
        &mut self,
        m: &Manifest,
        current: &str,
        schema: Option<&Schema>,
        replace: Option<Vec<FileEntry>>,
    ) -> Result<()> {
        if self.published.is_some_and(|p| p >= m.sequence)
            || self.considered.is_some_and(|p| p >= m.sequence)
        {
            return Ok(());
        }
        let overwrite = replace.is_some();
        let files: Vec<FileEntry> = match replace {
            Some(files) => files,
            None if m.generation == m.state.current_generation && m.generation == current => {
                m.files.clone()
            }
            None => Vec::new(),
        };
        // An overwrite of a table that does not exist yet with no files changes nothing.
        if files.is_empty() && (!overwrite || self.metadata.is_none()) {
            self.considered = Some(m.sequence);
            return Ok(());
        }
        let Some(schema) = schema else {
            return Err(self.err(
                format!("manifest {} commits files but no schema is known for them; the manifests were edited by hand", m.sequence),
                Retry::Permanent,
            ));
        };
        let started = std::time::Instant::now();
        self.ensure_table(schema).await?;
        let (current_schema, last, _) = self.current_schema();
        let (ice, _) = schema::iceberg_schema(schema, current_schema, last)
            .map_err(|message| Error::config("sink.tableFormat.iceberg", message))?;
        let data_files = self.data_files(&files, &ice, m).await?;
        let snapshot_id = new_snapshot_id();
        let mut attempt = 0;
        let manifest_url = {
            // The schema the snapshot will have: the current one, or the next id when the
            // stream's schema widens it.
            let (current, _, current_id) = self.current_schema();
            let schema_id = match current {
                Some(c) if c["fields"] == ice["fields"] => current_id,
                _ => self.next_schema_id(),
            };
            let mut header_schema = ice.clone();
            header_schema["schema-id"] = json!(schema_id);
            let bytes = manifest::write_manifest(
                &data_files,
                snapshot_id,
                &self.spec,
                &manifest::manifest_header(&header_schema, schema_id, &self.spec),
            );
            let len = bytes.len() as i64;
            let url = self
                .put(
                    &format!("metadata/{}-m0.avro", uuid::Uuid::new_v4()),
                    bytes,
                    false,
                )
                .await?;
            (url, len)
        };
        loop {
            attempt += 1;
            match self
                .commit_snapshot(
                    m,
                    schema,
                    &data_files,
                    snapshot_id,
                    &manifest_url,
                    attempt,
                    overwrite,
                )
                .await?
            {
                None => {
                    self.published = Some(m.sequence);
                    self.considered = Some(m.sequence);
                    metrics::histogram!(COMMIT_DURATION).record(started.elapsed().as_secs_f64());
                    return Ok(());
                }
                Some(winner) => {
                    let (theirs, at) = winner;
                    self.take_metadata(at).await?;
                    if self.published.is_some_and(|p| p >= m.sequence) {
                        tracing::info!(
                            sequence = m.sequence,
                            "the manifest is already published in the Iceberg table"
                        );
                        self.considered = Some(m.sequence);
                        return Ok(());
                    }
                    if let Some((stream, run)) = theirs
                        && stream == self.stream_id
                        && run != self.run_id
                    {
                        return Err(self.err(
                            format!(
                                "another runner of stream {:?} (run {run}) committed to the Iceberg table {} while this one was committing manifest {}; this runner stops without committing (the table stays consistent) and its rerun continues after the other's commits; run one runner per stream",
                                self.stream_id,
                                self.catalog.identifier(),
                                m.sequence
                            ),
                            Retry::Transient,
                        ));
                    }
                    if attempt >= MAX_COMMIT_ATTEMPTS {
                        return Err(self.err(
                            format!(
                                "the Iceberg table {} changed under {attempt} commits of manifest {} in a row (other writers); the stream restarts and retries",
                                self.catalog.identifier(),
                                m.sequence
                            ),
                            Retry::Transient,
                        ));
                    }
                    tracing::info!(
                        attempt,
                        sequence = m.sequence,
                        "another writer committed to the Iceberg table first; retrying on its snapshot"
                    );
                }
            }
        }
    }

    /// One attempt: the manifest list and metadata on top of the current metadata, and the
    /// swap. `None`: committed. `Some((writer, location))`: lost to the writer of the table's
    /// newest snapshot (its stream id and run id, when Arcane's), now at `location`.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    async fn commit_snapshot(
        &mut self,
        m: &Manifest,
        arrow: &Schema,
        files: &[DataFile],
        snapshot_id: i64,
        (manifest_url, manifest_len): &(String, i64),
        attempt: u32,
        overwrite: bool,
    ) -> Result<Option<(Option<(String, String)>, Loaded)>> {
        let Some((base, base_at)) = self.metadata.clone() else {
            return Err(Error::fatal(
                "publishing to an Iceberg table that was not created",
            ));
        };
        let id = self.catalog.identifier();
        let (current_schema, last, schema_id) = self.current_schema();
        let (ice, new_last) = schema::iceberg_schema(arrow, current_schema, last)
            .map_err(|message| Error::config("sink.tableFormat.iceberg", message))?;
        for f in files {
            check_ids(f, &ice).map_err(|message| self.err(message, Retry::Permanent))?;
        }
        let widened = current_schema.is_none_or(|c| c["fields"] != ice["fields"]);
        let mut metadata = base.clone();
        // The changes as a REST catalog's updates (the SQL catalog applies them to `metadata`
        // here and writes it).
        let mut updates = Vec::new();
        let schema_id = if widened {
            let next = self.next_schema_id();
            let mut s = ice.clone();
            s["schema-id"] = json!(next);
            updates.push(
                json!({"action": "add-schema", "schema": s, "last-column-id": new_last.max(last)}),
            );
            updates.push(json!({"action": "set-current-schema", "schema-id": -1}));
            push(&mut metadata, "schemas", s);
            metadata["current-schema-id"] = json!(next);
            metadata["last-column-id"] = json!(new_last.max(last));
            next
        } else {
            schema_id
        };
        let sequence = base["last-sequence-number"].as_i64().unwrap_or(0) + 1;
        let parent = base["current-snapshot-id"].as_i64().filter(|p| *p >= 0);
        let rows: i64 = files.iter().map(|f| f.metrics.record_count).sum();
        let bytes: i64 = files.iter().map(|f| f.size).sum();
        let spec = self.spec.clone();
        let ours = ManifestFile {
            path: manifest_url.clone(),
            length: *manifest_len,
            spec_id: 0,
            content: 0,
            sequence_number: sequence,
            min_sequence_number: sequence,
            added_snapshot_id: snapshot_id,
            files: [files.len() as i64, 0, 0],
            rows: [rows, 0, 0],
            partitions: Some(partition::summaries(
                &spec,
                files.iter().map(|f| &f.partition),
            )),
            key_metadata: None,
        };
        let mut list = vec![ours];
        // An overwrite: the parent's manifests are left out and one manifest lists their live
        // data files as DELETED (delete files go with them: they only applied to those files).
        let mut removed = (0i64, 0i64, 0i64);
        if let Some(p) = parent {
            let parents = self.manifests_of(&base, p).await?;
            if overwrite {
                let live = self.live_files(&parents).await?;
                removed = (
                    live.len() as i64,
                    live.iter().map(|f| f.record_count).sum(),
                    live.iter().map(|f| f.size).sum(),
                );
                if !live.is_empty() {
                    let schema = self.current_schema().0.cloned().unwrap_or(Value::Null);
                    let bytes = manifest::write_deleted_manifest(
                        &live,
                        snapshot_id,
                        &spec,
                        &manifest::manifest_header(&schema, schema_id, &spec),
                    );
                    let length = bytes.len() as i64;
                    let path = self
                        .put(
                            &format!("metadata/{}-m1.avro", uuid::Uuid::new_v4()),
                            bytes,
                            false,
                        )
                        .await?;
                    list.push(ManifestFile {
                        path,
                        length,
                        spec_id: 0,
                        content: 0,
                        sequence_number: sequence,
                        min_sequence_number: sequence,
                        added_snapshot_id: snapshot_id,
                        files: [0, 0, removed.0],
                        rows: [0, 0, removed.1],
                        partitions: Some(partition::summaries(
                            &spec,
                            live.iter().map(|f| &f.partition),
                        )),
                        key_metadata: None,
                    });
                }
            } else {
                list.extend(parents);
            }
        }
        let header = [
            ("snapshot-id", snapshot_id.to_string()),
            (
                "parent-snapshot-id",
                parent.map_or("null".into(), |p| p.to_string()),
            ),
            ("sequence-number", sequence.to_string()),
            ("format-version", "2".to_string()),
        ];
        let list_url = self
            .put(
                &format!(
                    "metadata/snap-{snapshot_id}-{attempt}-{}.avro",
                    uuid::Uuid::new_v4()
                ),
                manifest::write_manifest_list(&list, &header),
                false,
            )
            .await?;
        let now = chrono::Utc::now()
            .timestamp_millis()
            .max(base["last-updated-ms"].as_i64().unwrap_or(0));
        let parent_summary = parent
            .and_then(|p| snapshot(&base, p))
            .map(|s| &s["summary"]);
        let total = |key: &str, added: i64| {
            if overwrite {
                // Everything live before is removed: the totals are what this adds.
                return Some(added.to_string());
            }
            parent_summary
                .map(|s| s[key].as_str().and_then(|v| v.parse::<i64>().ok()))
                .unwrap_or(Some(0))
                .map(|t| (t + added).to_string())
        };
        let mut summary = json!({
            "operation": if overwrite { "overwrite" } else { "append" },
            "added-data-files": files.len().to_string(),
            "added-records": rows.to_string(),
            "added-files-size": bytes.to_string(),
            SUMMARY_STREAM_ID: self.stream_id,
            SUMMARY_SEQUENCE: m.sequence.to_string(),
            SUMMARY_RUN_ID: self.run_id,
            "engine-name": "arcane",
            "engine-version": env!("CARGO_PKG_VERSION"),
        });
        for (key, added) in [
            ("total-data-files", files.len() as i64),
            ("total-records", rows),
            ("total-files-size", bytes),
            ("total-delete-files", 0),
            ("total-position-deletes", 0),
            ("total-equality-deletes", 0),
        ] {
            if let Some(v) = total(key, added) {
                summary[key] = json!(v);
            }
        }
        if overwrite {
            summary["deleted-data-files"] = json!(removed.0.to_string());
            summary["deleted-records"] = json!(removed.1.to_string());
            summary["removed-files-size"] = json!(removed.2.to_string());
        }
        if let Some(c) = &m.checkpoint
            && let Ok(text) = serde_json::to_string(c)
        {
            summary["arcane.checkpoint"] = json!(text);
        }
        let mut snap = json!({
            "snapshot-id": snapshot_id,
            "sequence-number": sequence,
            "timestamp-ms": now,
            "manifest-list": list_url,
            "summary": summary,
            "schema-id": schema_id,
        });
        if let Some(p) = parent {
            snap["parent-snapshot-id"] = json!(p);
        }
        updates.push(json!({"action": "add-snapshot", "snapshot": snap}));
        updates.push(json!({"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": snapshot_id}));
        updates.push(
            json!({"action": "set-properties", "updates": {WATERMARK_PROPERTY: m.committed_at}}),
        );
        push(&mut metadata, "snapshots", snap);
        push(
            &mut metadata,
            "snapshot-log",
            json!({"snapshot-id": snapshot_id, "timestamp-ms": now}),
        );
        push(
            &mut metadata,
            "metadata-log",
            json!({"metadata-file": base_at, "timestamp-ms": base["last-updated-ms"]}),
        );
        if let Some(log) = metadata["metadata-log"].as_array_mut()
            && log.len() > METADATA_LOG_MAX
        {
            let excess = log.len() - METADATA_LOG_MAX;
            log.drain(..excess);
        }
        metadata["last-sequence-number"] = json!(sequence);
        metadata["last-updated-ms"] = json!(now);
        metadata["current-snapshot-id"] = json!(snapshot_id);
        if !metadata["refs"].is_object() {
            metadata["refs"] = json!({});
        }
        metadata["refs"]["main"] = json!({"snapshot-id": snapshot_id, "type": "branch"});
        if !metadata["properties"].is_object() {
            metadata["properties"] = json!({});
        }
        metadata["properties"][WATERMARK_PROPERTY] = json!(m.committed_at);
        let mut written = None;
        let outcome = match &mut self.catalog {
            Catalog::Rest(rest) => rest.commit(&base, updates, snapshot_id).await?,
            Catalog::Sql(_) => {
                let version = metadata_version(&base_at)
                    .unwrap_or_else(|| base["metadata-log"].as_array().map_or(0, Vec::len) as u64)
                    + 1;
                let rel = format!(
                    "metadata/{version:05}-{}.metadata.json",
                    uuid::Uuid::new_v4()
                );
                let at = self.put(&rel, encode(&metadata)?, true).await?;
                written = Some(at.clone());
                let Catalog::Sql(sql) = &mut self.catalog else {
                    return Err(Error::fatal("the Iceberg catalog changed kind"));
                };
                match sql.swap(&base_at, &at).await? {
                    Swap::Committed => Commit::Committed(Loaded {
                        location: at,
                        metadata: Some(metadata),
                    }),
                    Swap::Lost(theirs) => Commit::Lost(theirs.map(|location| Loaded {
                        location,
                        metadata: None,
                    })),
                }
            }
        };
        match outcome {
            Commit::Committed(loaded) => {
                tracing::debug!(table = %id, snapshot = snapshot_id, sequence = m.sequence, files = files.len(), "iceberg commit");
                // The next commit's parent is this snapshot: its manifest list is `list`, not
                // to be read back.
                self.parent_manifests = Some((snapshot_id, list));
                match loaded.metadata {
                    Some(metadata) => self.metadata = Some((metadata, loaded.location)),
                    None => self.take_metadata(loaded).await?,
                }
                Ok(None)
            }
            Commit::Lost(None) => Err(self.err(
                format!("the table {id} was dropped from the catalog while the stream was writing it; recreate it (restart the stream) or restore the catalog entry"),
                Retry::Permanent,
            )),
            Commit::Lost(Some(mut theirs)) => {
                if theirs.metadata.is_none() {
                    let raw = self.get(&theirs.location, "table metadata").await?;
                    theirs.metadata = serde_json::from_slice::<Value>(&raw).ok();
                }
                let table = theirs.metadata.clone();
                if table
                    .as_ref()
                    .is_some_and(|t| snapshot(t, snapshot_id).is_some())
                {
                    // An attempt whose answer was lost did apply, and another writer built
                    // on it since: this snapshot is committed, its files are referenced.
                    tracing::info!(table = %id, snapshot = snapshot_id, sequence = m.sequence, "an earlier attempt of this commit applied after all");
                    self.take_metadata(theirs).await?;
                    return Ok(None);
                }
                // Never referenced (the table moved on from the metadata this attempt was
                // built on, so no earlier attempt can apply it any more): remove what this
                // attempt wrote (best effort).
                for url in written.iter().chain([&list_url]) {
                    if let Ok(p) = self.path_of(url) {
                        let _ = self.loc.store.delete(&p).await;
                    }
                }
                let writer = table.and_then(|t| {
                    let s = snapshot(&t, t["current-snapshot-id"].as_i64()?)?;
                    Some((
                        s["summary"][SUMMARY_STREAM_ID].as_str()?.to_string(),
                        s["summary"][SUMMARY_RUN_ID].as_str()?.to_string(),
                    ))
                });
                Ok(Some((writer, theirs)))
            }
        }
    }

    /// The manifests of snapshot `id` (its manifest list, read once per parent).
    async fn manifests_of(&mut self, metadata: &Value, id: i64) -> Result<Vec<ManifestFile>> {
        if let Some((p, list)) = &self.parent_manifests
            && *p == id
        {
            return Ok(list.clone());
        }
        let table = self.catalog.identifier();
        let url = snapshot(metadata, id)
            .and_then(|s| s["manifest-list"].as_str())
            .ok_or_else(|| {
                self.err(
                    format!("the Iceberg table {table}'s current snapshot {id} has no manifest list; the metadata is damaged or written by a format v1 writer"),
                    Retry::Permanent,
                )
            })?
            .to_string();
        let raw = self.get(&url, "manifest list").await?;
        let list = avro::read_container(&raw)
            .and_then(|c| manifest::read_manifest_list(&c.records))
            .map_err(|e| {
                self.err(
                    format!(
                        "the Iceberg manifest list {url} cannot be read: {e}; the table is damaged"
                    ),
                    Retry::Permanent,
                )
            })?;
        // The snapshot this run commits next has this one's list plus its own manifest.
        self.parent_manifests = Some((id, list.clone()));
        Ok(list)
    }

    /// The live data files of the data manifests among `manifests` (an overwrite removes them).
    async fn live_files(&self, manifests: &[ManifestFile]) -> Result<Vec<manifest::LiveFile>> {
        let mut live = Vec::new();
        for mf in manifests.iter().filter(|mf| mf.content == 0) {
            let raw = self.get(&mf.path, "manifest").await?;
            let files = avro::read_container(&raw)
                .and_then(|c| manifest::read_live_files(&c.records, mf, &self.spec))
                .map_err(|e| {
                    self.err(
                        format!(
                            "the Iceberg manifest {} cannot be read: {e}; the table is damaged",
                            mf.path
                        ),
                        Retry::Permanent,
                    )
                })?;
            live.extend(files);
        }
        Ok(live)
    }

    /// The data files of `files` with metrics from their footers.
    async fn data_files(
        &self,
        files: &[FileEntry],
        ice: &Value,
        m: &Manifest,
    ) -> Result<Vec<DataFile>> {
        let types = Arc::new(schema::field_types(ice));
        let columns: Vec<String> = self.spec.iter().map(|f| f.column.clone()).collect();
        let tuples = files
            .iter()
            .map(|f| {
                crate::parquet::partition::column_values(&f.partition, &columns)
                    .and_then(|values| partition::parse(&self.spec, &values))
                    .map_err(|why| {
                        self.err(
                            format!(
                                "file {} of manifest {}: {why}; the file was written with another sink.partitionBy: set it back, or write the stream to a new table and backfill",
                                f.path, m.sequence
                            ),
                            Retry::Permanent,
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        futures::stream::iter(files.iter().cloned().zip(tuples))
            .map(|(f, tuple)| {
                let store = self.loc.store.clone();
                let sink = self.sink.clone();
                let types = types.clone();
                let path = self.loc.child(&f.path);
                let url = self.loc.url_of(&path);
                async move {
                    let what = format!(
                        "cannot read the footer of committed file {url} (manifest {}) for its Iceberg metrics",
                        m.sequence
                    );
                    let meta = match read_footer(store.as_ref(), &path, f.bytes).await {
                        Ok(meta) => meta,
                        Err(FooterError::Store(e)) => return Err(store_error(&sink, what, e)),
                        Err(FooterError::Bad(why)) => {
                            return Err(Error::sink(
                                sink,
                                format!("{what}: {why}; the file is corrupt: restore it from the store's versions or a backup, or rebuild the output (remove the sink's prefix and the catalog row, and backfill)"),
                                Retry::Permanent,
                                None,
                            ));
                        }
                    };
                    Ok::<_, Error>(DataFile {
                        path: url,
                        size: f.bytes as i64,
                        metrics: stats::metrics(&meta, &types),
                        partition: tuple,
                    })
                }
            })
            .buffered(FOOTER_CONCURRENCY)
            .try_collect()
            .await
    }
}

/// A file's top-level field ids must be the table's (they are, unless another writer changed
/// the table's schema between the file's writing and its publication).
fn check_ids(f: &DataFile, ice: &Value) -> std::result::Result<(), String> {
    for field in ice["fields"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = field["name"].as_str().unwrap_or_default();
        let want = field["id"].as_i64();
        match f.metrics.top_level_ids.get(name) {
            Some(got) if Some(i64::from(*got)) != want => {
                return Err(format!(
                    "committed file {} has field id {got} for column {name:?}, the Iceberg table has {}: the table's schema was changed by another writer after the file was written; write the stream to a new table",
                    f.path,
                    want.unwrap_or(-1)
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn snapshot(metadata: &Value, id: i64) -> Option<&Value> {
    metadata["snapshots"]
        .as_array()?
        .iter()
        .find(|s| s["snapshot-id"].as_i64() == Some(id))
}

fn push(metadata: &mut Value, key: &str, v: Value) {
    match metadata[key].as_array_mut() {
        Some(a) => a.push(v),
        None => metadata[key] = json!([v]),
    }
}

fn encode(v: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::fatal(format!("cannot encode Iceberg metadata: {e}")))
}

/// A new snapshot id: random, positive.
fn new_snapshot_id() -> i64 {
    let b = uuid::Uuid::new_v4().as_u64_pair().0;
    (b >> 1) as i64
}

/// The version of a metadata file named `{version}-{uuid}.metadata.json`.
fn metadata_version(url: &str) -> Option<u64> {
    let name = url.rsplit('/').next()?;
    let (v, _) = name.split_once('-')?;
    v.parse().ok()
}

/// The stream's newest published manifest sequence: from the newest snapshot of the stream
/// on the current snapshot's ancestry (`main`); when that chain was cut by snapshot
/// expiration before reaching one, the newest among the retained snapshots.
pub(crate) fn stream_published(
    metadata: &Value,
    stream_id: &str,
) -> std::result::Result<Option<u64>, String> {
    let of = |s: &Value| -> Option<u64> {
        (s["summary"][SUMMARY_STREAM_ID].as_str() == Some(stream_id))
            .then(|| s["summary"][SUMMARY_SEQUENCE].as_str()?.parse().ok())
            .flatten()
    };
    let mut at = metadata["current-snapshot-id"].as_i64().filter(|i| *i >= 0);
    let mut seen = 0;
    while let Some(id) = at {
        let Some(s) = snapshot(metadata, id) else {
            // The chain was cut (expired snapshots): fall back to every retained snapshot.
            let best = metadata["snapshots"]
                .as_array()
                .map(|a| a.iter().filter_map(of).max())
                .unwrap_or(None);
            return match best {
                Some(b) => Ok(Some(b)),
                None => Err(format!(
                    "the snapshot history was expired before this stream's newest snapshot (snapshot {id} is gone), so what the stream published cannot be told; write the stream to a new table"
                )),
            };
        };
        if let Some(seq) = of(s) {
            return Ok(Some(seq));
        }
        seen += 1;
        if seen > 1_000_000 {
            return Err("the snapshot chain loops; the metadata is damaged".into());
        }
        at = s["parent-snapshot-id"].as_i64();
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_position_is_the_newest_snapshot_of_the_stream_on_main() {
        let snap = |id: i64, parent: Option<i64>, stream: &str, seq: u64| {
            json!({"snapshot-id": id, "parent-snapshot-id": parent,
                   "summary": {"operation": "append", SUMMARY_STREAM_ID: stream, SUMMARY_SEQUENCE: seq.to_string()}})
        };
        let m = json!({"current-snapshot-id": 4, "snapshots": [
            snap(1, None, "a", 3), snap(2, Some(1), "b", 9), snap(3, Some(2), "a", 7),
            {"snapshot-id": 4, "parent-snapshot-id": 3, "summary": {"operation": "replace"}}]});
        assert_eq!(stream_published(&m, "a"), Ok(Some(7)));
        assert_eq!(stream_published(&m, "b"), Ok(Some(9)));
        assert_eq!(stream_published(&m, "c"), Ok(None));
        let empty = json!({"current-snapshot-id": -1, "snapshots": []});
        assert_eq!(stream_published(&empty, "a"), Ok(None));
        let cut = json!({"current-snapshot-id": 4, "snapshots": [
            {"snapshot-id": 4, "parent-snapshot-id": 3, "summary": {"operation": "replace"}}]});
        assert!(stream_published(&cut, "a").is_err());
        assert_eq!(
            metadata_version("file:///t/metadata/00012-ab-cd.metadata.json"),
            Some(12)
        );
        assert!(new_snapshot_id() > 0);
    }
}
