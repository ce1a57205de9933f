//! [`BlobLandingSourceConfig`]: the serde/JSON Schema form of the source's settings.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use std::time::Duration;

use arcane_core::retry::RetryConfig;
use arcane_core::{Error, Result};
use arrow_schema::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::decode::FieldConfig;
use crate::decode::schema_from_fields;

/// Default rows per decoded batch (`batchRows`).
pub const DEFAULT_BATCH_ROWS: usize = 8192;
/// Default interval between listings of the prefix in streaming mode (`pollInterval`).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// Clock skew allowed between this process and the object store when telling late files
/// across restarts (see [`LateFiles`]): a file sorting before the stored position counts as
/// late when the store dated it more than this after the listing that found the position's
/// file had finished.
pub const LATE_FILE_CLOCK_SKEW: Duration = Duration::from_secs(5);
/// Default CSV delimiter.
pub const DEFAULT_CSV_DELIMITER: char = ',';
/// Default CSV quote character.
pub const DEFAULT_CSV_QUOTE: char = '"';

/// Settings of the blob-landing source: files landing under an object-store prefix.
///
/// ```json
/// {
///   "url": "s3://landing/orders/",
///   "storageOptions": { "aws_region": "eu-west-1" },
///   "format": "ndjson",
///   "compression": "auto",
///   "suffix": ".ndjson.gz",
///   "schema": [
///     { "name": "order_id", "type": "utf8", "nullable": false },
///     { "name": "amount", "type": "float64" },
///     { "name": "event_time", "type": "timestamp[ms, UTC]" }
///   ],
///   "batchRows": 8192,
///   "pollInterval": "10s"
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlobLandingSourceConfig {
    /// The prefix files land under, as an `object_store` URL: `file:///data/landing/`,
    /// `s3://bucket/prefix/`, `az://container/prefix/` (also `abfss://`), `gs://bucket/prefix/`,
    /// or a local directory path (relative paths are resolved against the working directory).
    /// A local directory must exist. Every file under it (recursively) that passes
    /// `glob`/`suffix` is read, in lexicographic path order.
    pub url: String,
    /// Options for the object store (`object_store` keys such as `aws_region`,
    /// `aws_endpoint`, `aws_allow_http`, `azure_storage_account_name`); a key the store does
    /// not know is an error. They apply over the environment's `AWS_*`, `AZURE_*` and
    /// `GOOGLE_*` variables, where credentials are usually better kept.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub storage_options: BTreeMap<String, String>,
    /// The file format: `ndjson` (one JSON object per line), `csv`, `parquet`, or `auto`
    /// (default) to tell by the extension (`.ndjson`, `.jsonl`, `.json`, `.csv`, `.parquet`,
    /// before any `.gz`/`.zst`). A line of an NDJSON or CSV file is at most 64 MiB: at a
    /// longer one the rest of the file is dead-lettered (one dead letter naming the line; the
    /// rows before it land), and schema inference refuses the file.
    #[serde(default)]
    pub format: FileFormat,
    /// Compression of NDJSON and CSV files: `auto` (default; `.gz` is gzip, `.zst` is zstd,
    /// anything else is uncompressed), `none`, `gzip` or `zstd`. Parquet files carry their
    /// own compression.
    #[serde(default)]
    pub compression: Compression,
    /// Only read files whose path relative to `url` matches this glob: `*` matches within a
    /// path segment, `**` across segments, `?` one character (e.g. `2026-*/**/*.ndjson`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glob: Option<String>,
    /// Only read files whose name ends with this suffix (e.g. `.ndjson.gz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// The schema of the rows. When omitted it is inferred from the first file read (see
    /// `inferSchemaRecords`), which is convenient but can change when that file changes; set
    /// it for production streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<FieldConfig>>,
    /// When `schema` is omitted: how many records of the first file read the schema is
    /// inferred from. Default: the whole first file (a streaming pass over its decompressed
    /// content before it is read, by `decodeThreads` threads in blocks of 4 MiB; memory stays
    /// bounded; a CSV file with the quote character, a record of another field count or
    /// invalid UTF-8 is then read again by one thread, from its start). Where values of a
    /// field disagree, the inferred column is widened: integers and floats give `float64`;
    /// numbers, booleans and strings mixed give `utf8` (numbers and booleans are then read as
    /// their JSON text).
    /// A field that is an object in some records and a scalar in others keeps the first
    /// type seen; the other records are dead-lettered. Files read later are decoded with the
    /// inferred schema: their values of another type are dead-lettered (within
    /// `sink.deadLetter`'s budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infer_schema_records: Option<usize>,
    /// CSV settings (used when the format is `csv`). An empty field is null in every column
    /// type (in a required column the record is dead-lettered). CSV columns hold text
    /// (`utf8`, `large_utf8`), numbers, decimals, booleans (`true`/`false` in any case), dates,
    /// times and timestamps; a schema with a column of another type (binary, list, struct,
    /// map) is refused when a CSV file is read, naming the column (exit 1).
    #[serde(default)]
    pub csv: CsvConfig,
    /// Rows per decoded batch, at most (NDJSON and CSV batches also end after about 512 KiB
    /// of input).
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// How often the prefix is listed for new files in streaming mode (humantime: `10s`,
    /// `1m`).
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub poll_interval: Duration,
    /// At most this many new files are taken from one listing (the rest wait for the next
    /// one); unlimited when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_files_per_poll: Option<NonZeroUsize>,
    /// What to do with a **late file**: one whose path sorts at or before the position the
    /// stream has read to, but that was not there when the stream listed past it (files are
    /// read in path order, so it would never be read). `skip` (default) logs it at WARN and
    /// counts it in the metric `arcane.stream.files.late`; `fail` stops the stream with a
    /// FATAL error (exit code 1) naming the file. Within a run every listing is compared with
    /// the previous one; across restarts a file sorting before the stored position counts as
    /// late when its last-modified time is more than a few seconds (clock skew) after the
    /// listing that found the position's file.
    #[serde(default)]
    pub late_files: LateFiles,
    /// Threads decoding NDJSON/CSV blocks (`batchRows` records or about 512 KiB) in parallel
    /// while the file is read (results are taken back in file order), and inferring a schema
    /// from a whole NDJSON file in blocks of 4 MiB (merged in file order: the schema one thread
    /// infers). Default: the number of CPUs available (`1` decodes on the reading thread).
    /// Memory grows by about two blocks per thread. The threads and the read segments are made
    /// by the first file and kept for the next ones, so memory does not grow with the number
    /// of files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_threads: Option<NonZeroUsize>,
    /// How a store call (listing the prefix, reading a file or a range of it) is retried when
    /// it fails transiently (network failures, timeouts, throttling, 5xx): `maxAttempts`
    /// (default 8, the first included), `initialDelay` (default 250ms, doubled per attempt
    /// with random jitter), `maxDelay` (default 30s), `jitter` (default true). Each retry is
    /// logged at WARN with its cause and the next delay; when the attempts run out the stream
    /// stops with exit code 2 (RESTART) and resumes from its last commit. A missing bucket,
    /// container or object, denied access and bad credentials are not retried (exit code 1).
    /// The store client's own retries of each request come on top of these.
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_batch_rows() -> usize {
    DEFAULT_BATCH_ROWS
}
fn default_poll_interval() -> Duration {
    DEFAULT_POLL_INTERVAL
}

impl BlobLandingSourceConfig {
    /// Settings for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            storage_options: BTreeMap::new(),
            format: FileFormat::default(),
            compression: Compression::default(),
            glob: None,
            suffix: None,
            schema: None,
            infer_schema_records: None,
            csv: CsvConfig::default(),
            batch_rows: DEFAULT_BATCH_ROWS,
            poll_interval: DEFAULT_POLL_INTERVAL,
            max_files_per_poll: None,
            late_files: LateFiles::default(),
            decode_threads: None,
            retry: RetryConfig::default(),
        }
    }

    /// The decode threads to use: `decodeThreads`, else the CPUs available (at most 8).
    pub fn decode_threads(&self) -> usize {
        self.decode_threads
            .map(NonZeroUsize::get)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(NonZeroUsize::get)
                    .unwrap_or(1)
                    .min(8)
            })
    }

    /// The explicit schema as Arrow, or `None` when it is to be inferred. `field` is the
    /// config's path for errors (e.g. `spec.source`).
    pub fn arrow_schema(&self, field: &str) -> Result<Option<SchemaRef>> {
        match &self.schema {
            None => Ok(None),
            Some(fields) if fields.is_empty() => Err(Error::config(
                format!("{field}.schema"),
                "the schema has no fields; list the columns or omit `schema` to infer it",
            )),
            Some(fields) => schema_from_fields(fields, &format!("{field}.schema")).map(Some),
        }
    }

    /// Check every setting; `field` is the config's path for errors (e.g. `spec.source`).
    pub fn validate(&self, field: &str) -> Result<()> {
        if self.url.trim().is_empty() {
            return Err(Error::config(
                format!("{field}.url"),
                "the URL is empty; set the prefix files land under, e.g. s3://bucket/landing/",
            ));
        }
        if self.batch_rows == 0 {
            return Err(Error::config(
                format!("{field}.batchRows"),
                format!("must be at least 1 (default {DEFAULT_BATCH_ROWS})"),
            ));
        }
        if self.infer_schema_records == Some(0) {
            return Err(Error::config(
                format!("{field}.inferSchemaRecords"),
                "must be at least 1; omit it to infer the schema from the whole first file",
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::config(
                format!("{field}.pollInterval"),
                "must be longer than zero, e.g. \"10s\"",
            ));
        }
        self.csv.bytes(&format!("{field}.csv"))?;
        if let Some(glob) = &self.glob
            && glob.is_empty()
        {
            return Err(Error::config(
                format!("{field}.glob"),
                "the glob is empty; omit it to read every file",
            ));
        }
        self.retry.validate(&format!("{field}.retry"))?;
        self.arrow_schema(field)?;
        Ok(())
    }
}

/// What the source does with a late file (see `lateFiles`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LateFiles {
    /// Log the file at WARN, count it in `arcane.stream.files.late`, and go on without it.
    #[default]
    Skip,
    /// Stop the stream with a FATAL error naming the file.
    Fail,
}

/// The format of the landed files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FileFormat {
    /// Tell by the file extension.
    #[default]
    Auto,
    /// Newline-delimited JSON: one object per line.
    Ndjson,
    /// Comma- (or `csv.delimiter`-) separated values.
    Csv,
    /// Apache Parquet.
    Parquet,
}

/// The compression of NDJSON/CSV files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Compression {
    /// Tell by the file extension (`.gz`/`.gzip` gzip, `.zst`/`.zstd` zstd, else none).
    #[default]
    Auto,
    /// Not compressed.
    None,
    /// gzip (concatenated members are read as one stream).
    Gzip,
    /// zstd.
    Zstd,
}

/// CSV settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CsvConfig {
    /// Whether the first record of each file is a header (default true). Columns are matched
    /// by position; the header names the columns when the schema is inferred.
    #[serde(default = "default_true")]
    pub header: bool,
    /// The field delimiter, one ASCII character (default `,`).
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// The quote character, one ASCII character (default `"`); a quote inside a quoted field
    /// is written twice.
    #[serde(default = "default_quote")]
    pub quote: char,
}

fn default_delimiter() -> char {
    DEFAULT_CSV_DELIMITER
}
fn default_quote() -> char {
    DEFAULT_CSV_QUOTE
}

impl Default for CsvConfig {
    fn default() -> Self {
        Self {
            header: true,
            delimiter: DEFAULT_CSV_DELIMITER,
            quote: DEFAULT_CSV_QUOTE,
        }
    }
}

impl CsvConfig {
    /// Delimiter and quote as bytes; `field` is the config's path for errors.
    pub(crate) fn bytes(&self, field: &str) -> Result<(u8, u8)> {
        let ascii = |c: char, name: &str| {
            if c.is_ascii() && c != '\n' && c != '\r' {
                Ok(c as u8)
            } else {
                Err(Error::config(
                    format!("{field}.{name}"),
                    format!("{c:?} is not a single ASCII character other than a line break"),
                ))
            }
        };
        let delimiter = ascii(self.delimiter, "delimiter")?;
        let quote = ascii(self.quote, "quote")?;
        if delimiter == quote {
            return Err(Error::config(
                format!("{field}.quote"),
                "the quote character must differ from the delimiter",
            ));
        }
        Ok((delimiter, quote))
    }
}

fn default_true() -> bool {
    true
}
