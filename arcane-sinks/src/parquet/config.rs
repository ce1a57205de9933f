//! [`ParquetSinkConfig`]: the spec of the Parquet sink, with documented defaults.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use arcane_core::retry::RetryConfig;
use arcane_core::{Error, Result};
use arrow_schema::{Schema, SchemaRef};
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default `rolling.targetFileSize`: 128 MiB of encoded Parquet.
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 128 * 1024 * 1024;
/// Default `rolling.maxRowsPerFile`: 50 million rows.
pub const DEFAULT_MAX_ROWS_PER_FILE: u64 = 50_000_000;
/// Default `rolling.maxFileAge`: 5 minutes.
pub const DEFAULT_MAX_FILE_AGE: Duration = Duration::from_secs(300);
/// Default `writer.compression`: `zstd(1)`.
pub const DEFAULT_COMPRESSION: &str = "zstd(1)";
/// Default `writer.rowGroupSize`: 1 Mi rows (parquet's own default).
pub const DEFAULT_ROW_GROUP_SIZE: usize = 1024 * 1024;
/// Default `writer.rowGroupBytes`: 16 MiB; a row group is flushed (and uploaded) when its
/// (predicted) encoded size reaches it, which bounds the writer's memory per open file. 16 MiB is about
/// 250 000 rows of 60 encoded bytes (a few MiB of zstd pages); DuckDB and Polars write row
/// groups of 120 000 and 80 000 such rows. Larger row groups compress no better
/// (benches/README.md: the landing corpus's files are the same size within 0.1 % at 8, 16 and
/// 64 MiB) and hold more memory: at 64 MiB the row group in progress was half the peak heap of a
/// landing run.
pub const DEFAULT_ROW_GROUP_BYTES: usize = 16 * 1024 * 1024;
/// Default `writer.dataPageSize`: 1 MiB.
pub const DEFAULT_DATA_PAGE_SIZE: usize = 1024 * 1024;
/// Default `writer.dictionary`: `auto`.
pub const DEFAULT_DICTIONARY: Dictionary = Dictionary::Auto;
/// With `writer.dictionary: auto`, how many non-null values of a string, binary or fixed-width
/// column the first batch of a file is sampled for.
pub const DICTIONARY_SAMPLE: usize = 8192;
/// With `writer.dictionary: auto`, the fewest sampled values a decision is taken on; a column
/// with fewer keeps the dictionary and is sampled again in the next file.
pub const DICTIONARY_MIN_SAMPLE: usize = 1024;
/// With `writer.dictionary: auto`, a column whose sampled values are more than this share
/// distinct is written without a dictionary.
pub const DICTIONARY_MAX_DISTINCT_RATIO: f64 = 0.5;
/// Default `writer.statistics`: `page`.
pub const DEFAULT_STATISTICS: StatisticsLevel = StatisticsLevel::Page;
/// Default `writer.pageIndex`: enabled.
pub const DEFAULT_PAGE_INDEX: bool = true;
/// Default `writer.createdBy`.
pub const DEFAULT_CREATED_BY: &str = concat!("arcane-sinks version ", env!("CARGO_PKG_VERSION"));
/// Default `writer.uploadPartSize`: 10 MiB (S3 requires at least 5 MiB).
pub const DEFAULT_UPLOAD_PART_SIZE: usize = 10 * 1024 * 1024;
/// Default `writer.uploadConcurrency`: 4 parts in flight per file.
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 4;
/// Default bloom filter false-positive probability.
pub const DEFAULT_BLOOM_FILTER_FPP: f64 = 0.05;
/// Default `maxOpenFiles`: 64 files open at once.
pub const DEFAULT_MAX_OPEN_FILES: usize = 64;
/// Default `backfillBehavior`: `overwrite`.
pub const DEFAULT_BACKFILL_BEHAVIOR: BackfillBehavior = BackfillBehavior::Overwrite;
/// Default `generationRetention`: 24 hours.
pub const DEFAULT_GENERATION_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Default `deadLetter.enabled`: rows that cannot be converted are dead-lettered.
pub const DEFAULT_DEAD_LETTER_ENABLED: bool = true;
/// Default dead-letter location relative to `url`.
pub const DEFAULT_DEAD_LETTER_DIR: &str = "_dead_letters";

/// The URL schemes the sink supports.
pub use arcane_store::SUPPORTED_SCHEMES;

/// Configuration of the Parquet sink (the `sink` part of a stream spec).
///
/// ```json
/// { "url": "s3://bucket/orders", "rolling": { "targetFileSize": 134217728, "maxFileAge": "5m" } }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// Where the dataset lives: `s3://bucket/prefix`, `az://container/prefix`,
    /// `abfss://container@account.dfs.core.windows.net/prefix`, `gs://bucket/prefix`,
    /// `file:///absolute/path`, `memory:///prefix`, or a local directory path (relative paths
    /// are resolved against the working directory).
    pub url: String,
    /// Options of the object store, with `object_store` config keys (e.g. `aws_endpoint`,
    /// `aws_allow_http`, `aws_region`, `azure_storage_account_key`). The usual environment
    /// variables (`AWS_*`, `AZURE_*`, `GOOGLE_*`) apply too; these take precedence.
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
    /// When a file is closed and committed: whichever limit is reached first.
    #[serde(default)]
    pub rolling: RollingConfig,
    /// Parquet writer properties.
    #[serde(default)]
    pub writer: WriterConfig,
    /// Hive-style partitioning of files by column values and/or event time.
    #[serde(default)]
    pub partition_by: PartitionConfig,
    /// Maximum number of files open at once (one per partition). When a new partition would
    /// exceed it, the open files are committed first; a single group spanning more partitions
    /// than this is an error. Default 64.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: usize,
    /// What a backfill does to the dataset: `merge` appends the history into the live dataset;
    /// `overwrite` (default) writes a new generation that replaces the current one atomically
    /// when the backfill completes.
    #[serde(default = "default_backfill_behavior")]
    pub backfill_behavior: BackfillBehavior,
    /// How long the files of a replaced generation are kept after an `overwrite` backfill
    /// switched to a new one (humantime, e.g. `"24h"`, `"0s"`). Default 24h.
    #[serde(default = "default_generation_retention", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub generation_retention: Duration,
    /// The target schema: columns with `name`, `type` (`int64`, `utf8`, `timestamp[us, UTC]`,
    /// `decimal128(18, 2)`… — the same syntax as the sources' schemas; Arrow's own syntax such
    /// as `Timestamp(Microsecond, Some("UTC"))` is accepted too) and `nullable`. When absent the
    /// sink learns it from the first batch (and keeps it in its manifest).
    #[serde(default)]
    pub schema: Option<Vec<SchemaField>>,
    /// What a batch with columns the sink schema does not have does: `none` (default) raises
    /// `SchemaMismatch` (the runner annotates the Job so the operator can backfill);
    /// `addNullableColumns` widens the sink schema in place when every new column is nullable
    /// and every existing column keeps its type: open files are committed with the old schema
    /// and later files carry the new columns (readers see nulls for them in older files).
    /// Dropped or retyped columns are a `SchemaMismatch` either way.
    #[serde(default)]
    pub schema_evolution: SchemaEvolution,
    /// Where records that cannot be converted go, and how many the run tolerates.
    #[serde(default)]
    pub dead_letter: DeadLetterConfig,
    /// Whether an `overwrite` backfill that committed no rows may replace the current data with
    /// an empty dataset. Default false: such a backfill fails (exit 1) and the current data
    /// stays, because a typo'd source location reads nothing.
    #[serde(default)]
    pub allow_empty_overwrite: bool,
    /// How the sink's calls to S3, Azure Blob Storage and GCS are retried after connection
    /// failures, timeouts, throttling and server errors (the same `retry` block as the
    /// sources'). The store's client always adds jitter. When the attempts run out the
    /// stream exits with code 2 (RESTART) and resumes from the last commit.
    #[serde(default)]
    pub retry: RetryConfig,
    /// A table format the sink keeps over its files, so that query engines see a table with
    /// transactions instead of files: `{"delta": {}}` writes a Delta Lake transaction log under
    /// `{url}/_delta_log/` (one Delta commit per sink commit, exactly once; needs the `delta`
    /// feature of the binary); `{"iceberg": {…}}` keeps an Apache Iceberg (format v2) table
    /// at `url`, registered in a catalog (one snapshot per sink commit with files, exactly
    /// once; needs the `iceberg` feature). Absent (default): plain Parquet files and the
    /// sink's manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_format: Option<TableFormat>,
}

/// A table format kept over the sink's files (`sink.tableFormat`).
// Read once from the spec; boxing the larger variant would only complicate the spec's types.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum TableFormat {
    /// Delta Lake: the sink's prefix is the table root; see `docs/delta-lake.md`.
    Delta(DeltaConfig),
    /// Apache Iceberg (format v2): the sink's `url` is the table location; see
    /// `docs/iceberg.md`.
    Iceberg(IcebergConfig),
}

/// Default `sink.tableFormat.iceberg.catalogName`.
pub const DEFAULT_ICEBERG_CATALOG_NAME: &str = "default";

/// Options of an Apache Iceberg table (`sink.tableFormat.iceberg`). The table's location is
/// the sink's `url`; its metadata goes to `{url}/metadata/`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IcebergConfig {
    /// The catalog that holds the table's current metadata location, e.g.
    /// `{"sql": {"uri": "postgresql://iceberg@db:5432/catalog", "passwordEnv": "CATALOG_PASSWORD"}}`.
    pub catalog: IcebergCatalogConfig,
    /// The catalog's name (the `catalog_name` column of a SQL catalog; pyiceberg's
    /// `SqlCatalog(name, …)`). Default `default`.
    #[serde(default = "default_iceberg_catalog_name")]
    pub catalog_name: String,
    /// The table's namespace (dot-separated levels, e.g. `sales` or `sales.raw`); created in
    /// the catalog when missing.
    pub namespace: String,
    /// The table's name; the table is created (from the stream's schema) when missing.
    pub table: String,
    /// Catalog properties: a REST catalog's client properties (sent nowhere themselves, but
    /// merged over the server's `defaults` and under its `overrides`, as Iceberg clients do;
    /// e.g. `prefix`); the SQL catalog uses none and ignores them. Default none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub catalog_properties: BTreeMap<String, String>,
    /// Table properties written when the table is created (e.g. `{"owner": "data-team"}`).
    /// Default none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// The catalog of an Iceberg table: exactly one key naming its kind.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum IcebergCatalogConfig {
    /// A SQL catalog on PostgreSQL, the tables of pyiceberg's `SqlCatalog` and Iceberg
    /// Java's `JdbcCatalog` (`iceberg_tables`, `iceberg_namespace_properties`; created when
    /// missing).
    Sql(SqlCatalogConfig),
    /// An Iceberg REST catalog (the Arcane platform's Lakekeeper, or any catalog speaking the
    /// Iceberg REST protocol): `{"rest": {"uri": "https://lakekeeper:8181/catalog",
    /// "warehouse": "lake", "credentialEnv": "CATALOG_CREDENTIAL"}}`.
    Rest(RestCatalogConfig),
}

/// Default `sink.tableFormat.iceberg.catalog.rest.scope`: the scope Iceberg's own clients
/// (Java, pyiceberg) request.
pub const DEFAULT_ICEBERG_REST_SCOPE: &str = "catalog";
/// Default `sink.tableFormat.iceberg.catalog.rest.requestTimeout`.
pub const DEFAULT_ICEBERG_REST_TIMEOUT: Duration = Duration::from_secs(30);

/// An Iceberg REST catalog. `catalogProperties` are sent as the client's properties: merged
/// between the server's `defaults` and `overrides` from `GET /v1/config`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestCatalogConfig {
    /// The catalog's base URI, without `/v1` (e.g. `https://lakekeeper.lake:8181/catalog`).
    pub uri: String,
    /// The warehouse, sent as `GET /v1/config?warehouse=…` (Lakekeeper: the warehouse's
    /// name). Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse: Option<String>,
    /// The environment variable holding OAuth2 client credentials as
    /// `client_id:client_secret`; tokens are requested with the client-credentials grant from
    /// `oauth2ServerUri` (default `{uri}/v1/oauth/tokens`) and refreshed before they expire.
    /// Optional; at most one of `credentialEnv` and `tokenEnv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_env: Option<String>,
    /// The environment variable holding a bearer token sent as is. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// The OAuth2 token endpoint for `credentialEnv` (e.g. Keycloak's
    /// `https://idp/realms/lake/protocol/openid-connect/token`). Default `{uri}/v1/oauth/tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2_server_uri: Option<String>,
    /// The OAuth2 scope requested with `credentialEnv`. Default `catalog`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// How long one request to the catalog may take (humantime); a commit without an answer
    /// in time has an unknown outcome, which is resolved by reading the table back. Default
    /// 30s.
    #[serde(
        default = "default_rest_timeout",
        with = "humantime_serde",
        skip_serializing_if = "is_default_rest_timeout"
    )]
    #[schemars(with = "String")]
    pub request_timeout: Duration,
}

fn default_rest_timeout() -> Duration {
    DEFAULT_ICEBERG_REST_TIMEOUT
}

fn is_default_rest_timeout(d: &Duration) -> bool {
    *d == DEFAULT_ICEBERG_REST_TIMEOUT
}

/// A SQL catalog on PostgreSQL.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SqlCatalogConfig {
    /// The database: `postgresql://user@host:5432/database` (without a password; a SQLAlchemy
    /// form such as `postgresql+psycopg2://…` is accepted too). Connections are unencrypted:
    /// TLS (`sslmode=require`) is not supported yet.
    pub uri: String,
    /// The environment variable holding the user's password. Optional (no password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

fn default_iceberg_catalog_name() -> String {
    DEFAULT_ICEBERG_CATALOG_NAME.into()
}

/// Options of a Delta Lake table (`sink.tableFormat.delta`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeltaConfig {
    /// The table's name (`metaData.name`), written when the table is created. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The table's description (`metaData.description`), written when the table is created.
    /// Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Table properties (`metaData.configuration`, e.g. `delta.logRetentionDuration`), written
    /// when the table is created. Default none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configuration: BTreeMap<String, String>,
}

/// When files roll.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollingConfig {
    /// Target encoded (compressed Parquet) size of a file in bytes; a file is committed once
    /// it reaches it. Default 128 MiB.
    #[serde(default = "default_target_file_size")]
    pub target_file_size: u64,
    /// Maximum rows per file. Default 50 000 000.
    #[serde(default = "default_max_rows_per_file")]
    pub max_rows_per_file: u64,
    /// Maximum age of an open file (humantime, e.g. `"5m"`); an older file is committed even
    /// when no new data arrives. Default 5m.
    #[serde(default = "default_max_file_age", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_file_age: Duration,
}

impl Default for RollingConfig {
    fn default() -> Self {
        Self {
            target_file_size: DEFAULT_TARGET_FILE_SIZE,
            max_rows_per_file: DEFAULT_MAX_ROWS_PER_FILE,
            max_file_age: DEFAULT_MAX_FILE_AGE,
        }
    }
}

/// Statistics written into Parquet files.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum StatisticsLevel {
    /// No statistics.
    None,
    /// Column-chunk statistics.
    Chunk,
    /// Column-chunk and page statistics (needed by the page index).
    Page,
}

/// Parquet writer properties.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WriterConfig {
    /// Codec and level: `uncompressed`, `snappy`, `lz4_raw`, `gzip(6)`, `zstd(1)` … `zstd(22)`.
    /// Default `zstd(1)`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Maximum rows per row group. Default 1 048 576.
    #[serde(default = "default_row_group_size")]
    pub row_group_size: usize,
    /// Maximum encoded bytes per row group; the row group is flushed and uploaded when its
    /// size, predicted from what its columns have encoded so far, reaches it (it may pass it
    /// by about one group's encoded bytes). It bounds the memory of each open file. Default
    /// 16 MiB.
    #[serde(default = "default_row_group_bytes")]
    pub row_group_bytes: usize,
    /// Target data page size in bytes. Default 1 MiB.
    #[serde(default = "default_data_page_size")]
    pub data_page_size: usize,
    /// Dictionary encoding: `true` (every column, falling back to plain within a row group
    /// whose dictionary outgrows the dictionary page), `false` (none), or `auto` (default):
    /// like `true`, except that a column of strings, bytes, numbers, decimals, dates, times or
    /// timestamps whose values are mostly distinct
    /// (more than half of the first 8192 non-null values of the first batch a file gets) is
    /// written without a dictionary, so that the writer does not intern its values in every
    /// row group until the dictionary outgrows its page; decided once per column for the
    /// sink's lifetime (a column with fewer than 1024 values in that batch is decided by a
    /// later file).
    #[serde(default = "default_dictionary")]
    pub dictionary: Dictionary,
    /// Statistics level: `none`, `chunk` or `page`. Default `page`.
    #[serde(default = "default_statistics")]
    pub statistics: StatisticsLevel,
    /// Write the page index (column and offset indexes). Default true.
    #[serde(default = "default_page_index")]
    pub page_index: bool,
    /// Bloom filters, per column. Default none.
    #[serde(default)]
    pub bloom_filters: Vec<BloomFilterConfig>,
    /// Sorting columns declared in the file metadata (the sink does not sort rows; declare
    /// only what the source guarantees). Default none.
    #[serde(default)]
    pub sorting_columns: Vec<SortingColumnConfig>,
    /// The `created_by` of the file metadata. Default `arcane-sinks version X`.
    #[serde(default = "default_created_by")]
    pub created_by: String,
    /// Key-value metadata added to every file. Default none.
    #[serde(default)]
    pub key_value_metadata: BTreeMap<String, String>,
    /// Size of a multipart upload part in bytes (at least 5 MiB for S3). Default 10 MiB.
    /// On an object store (S3, Azure, GCS) each open file holds up to `uploadPartSize` ×
    /// (`uploadConcurrency` + 1) bytes of parts not yet acknowledged: 50 MiB by default;
    /// 5 MiB × 2 holds 15 MiB, at the price of fewer bytes in flight to a distant store.
    #[serde(default = "default_upload_part_size")]
    pub upload_part_size: usize,
    /// Parts uploaded concurrently per file (see `uploadPartSize` for the memory). Default 4.
    #[serde(default = "default_upload_concurrency")]
    pub upload_concurrency: usize,
    /// Threads encoding the columns of a batch at once (1 to 64), kept for the sink's
    /// lifetime and shared by its open files: the top-level columns of each batch are encoded
    /// (and compressed) in parallel, the file's bytes are the same whatever the number. `1`
    /// encodes on the sink's own thread. Default: the available parallelism, at most 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub encode_threads: Option<usize>,
    /// Keep the encoded pages of each row group in progress in unnamed temporary files in
    /// `spillDirectory` until the row group is complete, instead of on the heap: the process
    /// then holds about one page per column, not `rowGroupBytes` per open file (the files'
    /// pages are in the kernel's page cache, which it can write out and reclaim under memory
    /// pressure). On a memory-backed file system (tmpfs, an `emptyDir` with `medium: Memory`)
    /// the pages still take memory, only not the process's. Nothing is left in the directory,
    /// even if the process is killed. `false` keeps them in memory (no disk needed; up to two
    /// row groups' pages per open file: one being uploaded while the next is encoded). Default
    /// true.
    #[serde(default = "default_spill_pages")]
    pub spill_pages: bool,
    /// Directory for the spilled pages: a writable local file system with room for two row
    /// groups' pages (2 × `rowGroupBytes`) per open file, whose row groups write over the
    /// same two spill files until it is complete. Checked when the first file is opened; a missing or
    /// read-only directory is a configuration error. Default: the system's temporary directory
    /// (`$TMPDIR`, else `/tmp`; the Helm chart mounts an `emptyDir` there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spill_directory: Option<String>,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            compression: DEFAULT_COMPRESSION.into(),
            row_group_size: DEFAULT_ROW_GROUP_SIZE,
            row_group_bytes: DEFAULT_ROW_GROUP_BYTES,
            data_page_size: DEFAULT_DATA_PAGE_SIZE,
            dictionary: DEFAULT_DICTIONARY,
            statistics: DEFAULT_STATISTICS,
            page_index: DEFAULT_PAGE_INDEX,
            bloom_filters: Vec::new(),
            sorting_columns: Vec::new(),
            created_by: DEFAULT_CREATED_BY.into(),
            key_value_metadata: BTreeMap::new(),
            upload_part_size: DEFAULT_UPLOAD_PART_SIZE,
            upload_concurrency: DEFAULT_UPLOAD_CONCURRENCY,
            encode_threads: None,
            spill_pages: true,
            spill_directory: None,
        }
    }
}

impl WriterConfig {
    /// The number of encoding threads: `encodeThreads`, or the available parallelism capped
    /// at 4.
    pub fn encode_threads(&self) -> usize {
        self.encode_threads
            .unwrap_or_else(crate::parquet::encode::default_encode_threads)
    }

    /// Where the pages of row groups in progress spill to: `spillDirectory`, or the system's
    /// temporary directory; `None` when `spillPages` is false.
    pub fn spill_directory(&self) -> Option<std::path::PathBuf> {
        self.spill_pages.then(|| {
            self.spill_directory
                .as_ref()
                .map_or_else(std::env::temp_dir, std::path::PathBuf::from)
        })
    }
}

/// Whether columns are dictionary-encoded (`sink.writer.dictionary`): `true`, `false` or
/// `"auto"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dictionary {
    /// `"auto"`: dictionary encoding, except for columns (not booleans or nested types) whose
    /// values are mostly distinct.
    #[default]
    Auto,
    /// `true`: dictionary encoding for every column.
    On,
    /// `false`: no dictionary encoding.
    Off,
}

impl From<bool> for Dictionary {
    fn from(on: bool) -> Self {
        if on { Dictionary::On } else { Dictionary::Off }
    }
}

impl Serialize for Dictionary {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Dictionary::Auto => s.serialize_str("auto"),
            Dictionary::On => s.serialize_bool(true),
            Dictionary::Off => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for Dictionary {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Dictionary;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or \"auto\"")
            }
            fn visit_bool<E: serde::de::Error>(
                self,
                v: bool,
            ) -> std::result::Result<Dictionary, E> {
                Ok(v.into())
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Dictionary, E> {
                match v {
                    "auto" => Ok(Dictionary::Auto),
                    "true" => Ok(Dictionary::On),
                    "false" => Ok(Dictionary::Off),
                    other => Err(E::invalid_value(
                        serde::de::Unexpected::Str(other),
                        &"true, false or \"auto\"",
                    )),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl JsonSchema for Dictionary {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Dictionary".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["boolean", "string"],
            "enum": [true, false, "auto"]
        })
    }
}

/// A bloom filter on one column.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BloomFilterConfig {
    /// The column (top-level name or dotted path of a nested leaf).
    pub column: String,
    /// False-positive probability, in (0, 1). Default 0.05.
    #[serde(default = "default_bloom_fpp")]
    pub fpp: f64,
    /// Expected distinct values per row group. Default: the row group's row count.
    #[serde(default)]
    pub ndv: Option<u64>,
}

/// A sorting column declared in the file metadata.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SortingColumnConfig {
    /// The column (top-level name or dotted path of a nested leaf).
    pub column: String,
    /// Descending order. Default false.
    #[serde(default)]
    pub descending: bool,
    /// Nulls first. Default false.
    #[serde(default)]
    pub nulls_first: bool,
}

/// Hive-style partitioning.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PartitionConfig {
    /// Columns whose values name partitions (`col=value/…`, values percent-encoded).
    /// The columns stay in the files. Default none.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Partitions from an event-time column, after the column partitions.
    #[serde(default)]
    pub event_time: Option<EventTimePartition>,
}

/// Partitions from an event-time column.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventTimePartition {
    /// A timestamp or date column.
    pub column: String,
    /// A chrono `strftime` format in UTC producing the partition path,
    /// e.g. `date=%Y-%m-%d/hour=%H`.
    pub format: String,
}

/// What a backfill does to the dataset.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum BackfillBehavior {
    /// Append the history into the live dataset.
    Merge,
    /// Write a new generation; it becomes current when the backfill completes.
    Overwrite,
}

impl ParquetSinkConfig {
    /// `sink.tableFormat`: Delta Lake needs the `delta` feature, and a declared schema Delta
    /// can hold; Iceberg the `iceberg` feature, its names and catalog, and a declared schema
    /// Iceberg can hold.
    fn validate_table_format(&self) -> Result<()> {
        let Some(format) = &self.table_format else {
            return Ok(());
        };
        if let TableFormat::Iceberg(c) = format {
            return self.validate_iceberg(c);
        }
        if !cfg!(feature = "delta") {
            return Err(Error::config(
                "sink.tableFormat.delta",
                "this binary was built without Delta Lake support; build it with the `delta` feature (arcane-cli `--features delta` or `full`, the container image has it)",
            ));
        }
        #[cfg(feature = "delta")]
        {
            if let Some(schema) = self.target_schema()? {
                crate::delta::schema::delta_schema(&schema)
                    .map_err(|message| Error::config("sink.schema", message))?;
            }
        }
        Ok(())
    }
}

impl ParquetSinkConfig {
    fn validate_iceberg(&self, c: &IcebergConfig) -> Result<()> {
        if !cfg!(feature = "iceberg") {
            return Err(Error::config(
                "sink.tableFormat.iceberg",
                "this binary was built without Apache Iceberg support; build it with the `iceberg` feature (arcane-cli `--features iceberg` or `full`, the container image has it)",
            ));
        }
        for (v, field) in [
            (&c.catalog_name, "catalogName"),
            (&c.namespace, "namespace"),
            (&c.table, "table"),
        ] {
            if v.trim().is_empty() || v.len() > 255 {
                return Err(Error::config(
                    format!("sink.tableFormat.iceberg.{field}"),
                    format!("{v:?} must be 1 to 255 characters (the SQL catalog's column width)"),
                ));
            }
        }
        if c.namespace.split('.').any(str::is_empty) {
            return Err(Error::config(
                "sink.tableFormat.iceberg.namespace",
                format!(
                    "{:?} has an empty level; use levels separated by single dots, e.g. \"sales.raw\"",
                    c.namespace
                ),
            ));
        }
        if c.table.contains('.') {
            return Err(Error::config(
                "sink.tableFormat.iceberg.table",
                format!(
                    "{:?} contains a dot; put the levels in namespace and the name in table",
                    c.table
                ),
            ));
        }
        #[cfg(feature = "iceberg")]
        {
            match &c.catalog {
                IcebergCatalogConfig::Sql(sql) => {
                    crate::iceberg::catalog::parse_config(
                        sql,
                        "sink.tableFormat.iceberg.catalog.sql",
                    )?;
                }
                IcebergCatalogConfig::Rest(rest) => {
                    crate::iceberg::rest::parse_config(
                        rest,
                        &c.catalog_properties,
                        "sink.tableFormat.iceberg.catalog.rest",
                    )?;
                }
            }
            if let Some(schema) = self.target_schema()? {
                crate::iceberg::schema::iceberg_schema(&schema, None, 0)
                    .map_err(|message| Error::config("sink.schema", message))?;
            }
        }
        Ok(())
    }
}

/// How the sink schema may change while a stream runs; see `ParquetSinkConfig::schema_evolution`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum SchemaEvolution {
    /// Any difference from the sink schema is a `SchemaMismatch`.
    #[default]
    None,
    /// New nullable columns are added to the sink schema; anything else is a `SchemaMismatch`.
    AddNullableColumns,
}

/// One field of the target schema: the same [`FieldConfig`](arcane_core::schema::FieldConfig)
/// (`name`, `type`, `nullable`) as the sources' schemas, with the same type names.
pub type SchemaField = arcane_core::schema::FieldConfig;

/// Where records that cannot be converted go, and the run's dead-letter budget.
///
/// Dead letters are Parquet files (columns of [`dead_letter_schema`](crate::dead_letter_schema))
/// committed in the same manifest entry as the rows read with them, so a resumed run does not
/// write them again. A run whose dead letters exceed
/// `maxRatio × max(records read, minRecords)` (or `maxCount`) fails with exit code 1 before
/// committing the group that crossed the budget.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// When false, a row the sink cannot convert fails the stream instead. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Where dead letters are written; default `{url}/_dead_letters`.
    #[serde(default)]
    pub url: Option<String>,
    /// Largest tolerated share of dead letters among the records a run reads (0 to 1).
    /// Default 0.01 (1 %).
    #[serde(default = "default_max_dead_letter_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_ratio: f64,
    /// Largest tolerated number of dead letters in one run. Default: no absolute limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
    /// The ratio is taken of at least this many records, so a small run may have a few bad
    /// records (with the defaults up to 10). Default 1000.
    #[serde(default = "default_dead_letter_min_records")]
    pub min_records: u64,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        Self {
            enabled: DEFAULT_DEAD_LETTER_ENABLED,
            url: None,
            max_ratio: arcane_core::dead_letter::DEFAULT_MAX_DEAD_LETTER_RATIO,
            max_count: None,
            min_records: arcane_core::dead_letter::DEFAULT_DEAD_LETTER_MIN_RECORDS,
        }
    }
}

impl DeadLetterConfig {
    /// The run's budget.
    pub fn budget(&self) -> arcane_core::DeadLetterBudget {
        arcane_core::DeadLetterBudget {
            max_ratio: self.max_ratio,
            max_count: self.max_count,
            min_records: self.min_records,
        }
    }
}

fn default_max_dead_letter_ratio() -> f64 {
    arcane_core::dead_letter::DEFAULT_MAX_DEAD_LETTER_RATIO
}

fn default_dead_letter_min_records() -> u64 {
    arcane_core::dead_letter::DEFAULT_DEAD_LETTER_MIN_RECORDS
}

fn default_true() -> bool {
    true
}
fn default_max_open_files() -> usize {
    DEFAULT_MAX_OPEN_FILES
}
fn default_backfill_behavior() -> BackfillBehavior {
    DEFAULT_BACKFILL_BEHAVIOR
}
fn default_generation_retention() -> Duration {
    DEFAULT_GENERATION_RETENTION
}
fn default_target_file_size() -> u64 {
    DEFAULT_TARGET_FILE_SIZE
}
fn default_max_rows_per_file() -> u64 {
    DEFAULT_MAX_ROWS_PER_FILE
}
fn default_max_file_age() -> Duration {
    DEFAULT_MAX_FILE_AGE
}
fn default_compression() -> String {
    DEFAULT_COMPRESSION.into()
}
fn default_row_group_size() -> usize {
    DEFAULT_ROW_GROUP_SIZE
}
fn default_row_group_bytes() -> usize {
    DEFAULT_ROW_GROUP_BYTES
}
fn default_data_page_size() -> usize {
    DEFAULT_DATA_PAGE_SIZE
}
fn default_dictionary() -> Dictionary {
    DEFAULT_DICTIONARY
}
fn default_statistics() -> StatisticsLevel {
    DEFAULT_STATISTICS
}
fn default_page_index() -> bool {
    DEFAULT_PAGE_INDEX
}
fn default_created_by() -> String {
    DEFAULT_CREATED_BY.into()
}
fn default_upload_part_size() -> usize {
    DEFAULT_UPLOAD_PART_SIZE
}
fn default_upload_concurrency() -> usize {
    DEFAULT_UPLOAD_CONCURRENCY
}
fn default_spill_pages() -> bool {
    true
}
fn default_bloom_fpp() -> f64 {
    DEFAULT_BLOOM_FILTER_FPP
}

impl ParquetSinkConfig {
    /// A configuration with every default and the given URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            storage_options: BTreeMap::new(),
            rolling: RollingConfig::default(),
            writer: WriterConfig::default(),
            partition_by: PartitionConfig::default(),
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            backfill_behavior: DEFAULT_BACKFILL_BEHAVIOR,
            generation_retention: DEFAULT_GENERATION_RETENTION,
            schema: None,
            schema_evolution: SchemaEvolution::None,
            dead_letter: DeadLetterConfig::default(),
            allow_empty_overwrite: false,
            retry: RetryConfig::default(),
            table_format: None,
        }
    }

    /// Keep an Apache Iceberg table over the files (`sink.tableFormat.iceberg`).
    pub fn with_iceberg(mut self, iceberg: IcebergConfig) -> Self {
        self.table_format = Some(TableFormat::Iceberg(iceberg));
        self
    }

    /// Keep a Delta Lake transaction log over the files (`sink.tableFormat.delta`).
    pub fn with_delta(mut self, delta: DeltaConfig) -> Self {
        self.table_format = Some(TableFormat::Delta(delta));
        self
    }

    /// Add an object-store option (e.g. `aws_endpoint`).
    pub fn with_storage_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.storage_options.insert(key.into(), value.into());
        self
    }

    /// Check every setting; errors name the field (`sink.url`, `sink.writer.compression`…).
    pub fn validate(&self) -> Result<()> {
        parse_url(&self.url, "sink.url")?;
        self.validate_table_format()?;
        self.retry.validate("sink.retry")?;
        if self.rolling.target_file_size == 0 {
            return Err(Error::config(
                "sink.rolling.targetFileSize",
                "must be greater than 0; use e.g. 134217728 (128 MiB)",
            ));
        }
        if self.rolling.max_rows_per_file == 0 {
            return Err(Error::config(
                "sink.rolling.maxRowsPerFile",
                "must be greater than 0",
            ));
        }
        if self.rolling.max_file_age.is_zero() {
            return Err(Error::config(
                "sink.rolling.maxFileAge",
                "must be greater than 0; use e.g. \"5m\"",
            ));
        }
        if self.max_open_files == 0 {
            return Err(Error::config("sink.maxOpenFiles", "must be greater than 0"));
        }
        if !(0.0..=1.0).contains(&self.dead_letter.max_ratio) {
            return Err(Error::config(
                "sink.deadLetter.maxRatio",
                format!(
                    "{} is not a share between 0 and 1; use e.g. 0.01 for 1 %",
                    self.dead_letter.max_ratio
                ),
            ));
        }
        let w = &self.writer;
        parse_compression(&w.compression)?;
        for (v, field) in [
            (w.row_group_size, "sink.writer.rowGroupSize"),
            (w.row_group_bytes, "sink.writer.rowGroupBytes"),
            (w.data_page_size, "sink.writer.dataPageSize"),
            (w.upload_concurrency, "sink.writer.uploadConcurrency"),
        ] {
            if v == 0 {
                return Err(Error::config(field, "must be greater than 0"));
            }
        }
        if let Some(n) = w.encode_threads
            && !(1..=64).contains(&n)
        {
            return Err(Error::config(
                "sink.writer.encodeThreads",
                format!(
                    "{n} is not between 1 and 64; use 1 to encode on the sink's thread, or leave it out for the available parallelism (at most 4)"
                ),
            ));
        }
        if w.spill_directory.as_deref().is_some_and(str::is_empty) {
            return Err(Error::config(
                "sink.writer.spillDirectory",
                "is empty; give a writable local directory (e.g. /tmp), leave it out for the system's temporary directory, or set spillPages: false",
            ));
        }
        if w.upload_part_size < 5 * 1024 * 1024 {
            return Err(Error::config(
                "sink.writer.uploadPartSize",
                format!(
                    "{} is below 5 MiB, the smallest multipart part S3 accepts; use at least 5242880",
                    w.upload_part_size
                ),
            ));
        }
        for (i, b) in w.bloom_filters.iter().enumerate() {
            if !(b.fpp > 0.0 && b.fpp < 1.0) {
                return Err(Error::config(
                    format!("sink.writer.bloomFilters[{i}].fpp"),
                    format!("{} is not a probability in (0, 1); use e.g. 0.05", b.fpp),
                ));
            }
        }
        if let Some(et) = &self.partition_by.event_time {
            validate_time_format(&et.format)?;
        }
        if let Some(schema) = self.target_schema()? {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            for (i, c) in self.partition_by.columns.iter().enumerate() {
                if !names.contains(&c.as_str()) {
                    return Err(Error::config(
                        format!("sink.partitionBy.columns[{i}]"),
                        format!("column \"{c}\" is not in sink.schema; expected one of {names:?}"),
                    ));
                }
            }
        }
        if let Some(url) = &self.dead_letter.url {
            parse_url(url, "sink.deadLetter.url")?;
        }
        Ok(())
    }

    /// The explicit target schema, if configured.
    pub fn target_schema(&self) -> Result<Option<SchemaRef>> {
        match &self.schema {
            None => Ok(None),
            Some(fields) if fields.is_empty() => Err(Error::config(
                "sink.schema",
                "is empty; list the columns or remove it to learn the schema from the first batch",
            )),
            Some(fields) => {
                arcane_core::schema::schema_from_fields(fields, "sink.schema").map(Some)
            }
        }
    }

    /// The Parquet writer properties for files of `schema`.
    pub fn writer_properties(&self, schema: &Schema) -> Result<WriterProperties> {
        let w = &self.writer;
        let statistics = match (w.statistics, w.page_index) {
            (StatisticsLevel::None, _) => EnabledStatistics::None,
            (StatisticsLevel::Chunk, _) | (StatisticsLevel::Page, false) => {
                EnabledStatistics::Chunk
            }
            (StatisticsLevel::Page, true) => EnabledStatistics::Page,
        };
        let mut b = WriterProperties::builder()
            .set_compression(parse_compression(&w.compression)?)
            .set_max_row_group_row_count(Some(w.row_group_size))
            .set_max_row_group_bytes(Some(w.row_group_bytes))
            .set_data_page_size_limit(w.data_page_size)
            .set_dictionary_enabled(w.dictionary != Dictionary::Off)
            .set_statistics_enabled(statistics)
            .set_offset_index_disabled(!w.page_index)
            .set_created_by(w.created_by.clone());
        if !w.key_value_metadata.is_empty() {
            b = b.set_key_value_metadata(Some(
                w.key_value_metadata
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                    .collect(),
            ));
        }
        let leaves = leaf_paths(schema)?;
        for (i, bf) in w.bloom_filters.iter().enumerate() {
            if !leaves.contains(&bf.column) {
                return Err(Error::config(
                    format!("sink.writer.bloomFilters[{i}].column"),
                    format!(
                        "column \"{}\" is not in the schema; expected one of {leaves:?}",
                        bf.column
                    ),
                ));
            }
            let path = ColumnPath::new(bf.column.split('.').map(str::to_string).collect());
            b = b
                .set_column_bloom_filter_enabled(path.clone(), true)
                .set_column_bloom_filter_fpp(path.clone(), bf.fpp);
            if let Some(ndv) = bf.ndv {
                b = b.set_column_bloom_filter_max_ndv(path, ndv);
            }
        }
        if !w.sorting_columns.is_empty() {
            let mut cols = Vec::new();
            for (i, s) in w.sorting_columns.iter().enumerate() {
                let idx = leaves.iter().position(|l| *l == s.column).ok_or_else(|| {
                    Error::config(
                        format!("sink.writer.sortingColumns[{i}].column"),
                        format!(
                            "column \"{}\" is not in the schema; expected one of {leaves:?}",
                            s.column
                        ),
                    )
                })?;
                cols.push(parquet::file::metadata::SortingColumn {
                    column_idx: idx as i32,
                    descending: s.descending,
                    nulls_first: s.nulls_first,
                });
            }
            b = b.set_sorting_columns(Some(cols));
        }
        Ok(b.build())
    }
}

fn leaf_paths(schema: &Schema) -> Result<Vec<String>> {
    let descr = parquet::arrow::ArrowSchemaConverter::new()
        .convert(schema)
        .map_err(|e| Error::config("sink.schema", format!("cannot be written as Parquet: {e}")))?;
    Ok(descr.columns().iter().map(|c| c.path().string()).collect())
}

/// Parse `compression` (`zstd(1)`, `snappy`…), naming the field in errors.
pub(crate) fn parse_compression(s: &str) -> Result<Compression> {
    let lower = s.trim().to_ascii_lowercase();
    let supported = "uncompressed, snappy, lz4_raw, lz4, gzip(0..=9) or zstd(1..=22)";
    if lower.starts_with("brotli") || lower.starts_with("lzo") {
        return Err(Error::config(
            "sink.writer.compression",
            format!("\"{s}\" is not built into this binary; use {supported}"),
        ));
    }
    // `zstd` and `gzip` without a level mean the default level.
    let with_level = match lower.as_str() {
        "zstd" => "zstd(1)".to_string(),
        "gzip" => "gzip(6)".to_string(),
        "none" => "uncompressed".to_string(),
        other => other.to_string(),
    };
    // Guard the shape before parquet's parser, which slices the level without checking.
    if let Some((_, level)) = with_level.split_once('(')
        && (level.len() < 2 || !level.ends_with(')'))
    {
        return Err(Error::config(
            "sink.writer.compression",
            format!(
                "\"{s}\" is invalid; write the level in parentheses, e.g. zstd(3); use {supported}"
            ),
        ));
    }
    Compression::from_str(&with_level).map_err(|e| {
        Error::config(
            "sink.writer.compression",
            format!("\"{s}\" is invalid ({e}); use {supported}"),
        )
    })
}

fn validate_time_format(format: &str) -> Result<()> {
    use chrono::format::{Item, StrftimeItems};
    if format.is_empty() {
        return Err(Error::config(
            "sink.partitionBy.eventTime.format",
            "is empty; use e.g. \"date=%Y-%m-%d/hour=%H\"",
        ));
    }
    if StrftimeItems::new(format).any(|i| matches!(i, Item::Error)) {
        return Err(Error::config(
            "sink.partitionBy.eventTime.format",
            format!(
                "\"{format}\" is not a valid strftime format; use e.g. \"date=%Y-%m-%d/hour=%H\""
            ),
        ));
    }
    Ok(())
}

/// Parse and check the scheme of a sink URL.
pub(crate) use arcane_store::parse_url;
