//! [`ParquetDeadLetterSink`]: dead letters as Parquet files on an object store.

use std::collections::BTreeMap;
use std::sync::Arc;

use arcane_core::{DeadLetter, DeadLetterSink, Error, Result, Retry};
use arrow_array::{RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;

use super::config::{DEFAULT_DEAD_LETTER_DIR, ParquetSinkConfig};
use super::sink::sanitize;
use super::store::{Location, open_location, store_error};

/// Where the dead letters of `config` go: `deadLetter.url`, by default `{url}/_dead_letters`.
pub(crate) fn dead_letter_url(config: &ParquetSinkConfig) -> String {
    match &config.dead_letter.url {
        Some(u) => u.clone(),
        None => format!(
            "{}/{DEFAULT_DEAD_LETTER_DIR}",
            config.url.trim_end_matches('/')
        ),
    }
}

/// The schema of dead-letter files.
pub fn dead_letter_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("stream_id", DataType::Utf8, false),
        Field::new("origin", DataType::Utf8, false),
        Field::new("locator", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("payload", DataType::Utf8, true),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

/// Writes each batch of dead letters as one Parquet file
/// `{url}/part-{streamId}-{yyyymmddThhmmss.ffffff}-{uuid}.parquet` with the columns of
/// [`dead_letter_schema`], in a single atomic put (dead letters are small).
///
/// This is the graph-level dead-letter sink for sinks that do not store dead letters
/// themselves (at least once). [`ParquetSink`](crate::ParquetSink) commits dead letters with
/// its manifest instead (exactly once) and does not need it.
#[derive(Debug)]
pub struct ParquetDeadLetterSink {
    loc: Location,
}

impl ParquetDeadLetterSink {
    /// Dead letters under `url` (any URL the Parquet sink accepts) with store `options`.
    pub fn new(url: &str, options: &BTreeMap<String, String>) -> Result<Self> {
        Self::new_at(url, options, "sink.deadLetter.url")
    }

    /// Like [`new`](Self::new); `field` names the URL's setting in errors.
    pub fn new_at(url: &str, options: &BTreeMap<String, String>, field: &str) -> Result<Self> {
        Ok(Self {
            loc: open_location(url, options, field)?,
        })
    }

    /// Dead letters where `config.deadLetter.url` says, by default `{url}/_dead_letters`,
    /// with the sink's storage options.
    pub fn from_config(config: &ParquetSinkConfig) -> Result<Self> {
        Self::new(&dead_letter_url(config), &config.storage_options)
    }
}

/// Encode `letters` of `stream_id` as one Parquet file (columns of [`dead_letter_schema`]).
pub(crate) fn encode_dead_letters(
    stream_id: &str,
    letters: &[DeadLetter],
    name: &str,
) -> Result<Bytes> {
    let now = chrono::Utc::now();
    let n = letters.len();
    let col =
        |f: &dyn Fn(&DeadLetter) -> &str| StringArray::from_iter_values(letters.iter().map(f));
    let batch = RecordBatch::try_new(
        dead_letter_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                stream_id, n,
            ))),
            Arc::new(col(&|l| &l.origin)),
            Arc::new(col(&|l| &l.locator)),
            Arc::new(col(&|l| &l.reason)),
            Arc::new(StringArray::from_iter(
                letters.iter().map(|l| l.payload.as_deref()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(std::iter::repeat_n(
                    now.timestamp_micros(),
                    n,
                ))
                .with_timezone("UTC"),
            ),
        ],
    )?;
    let encode_error = |e: parquet::errors::ParquetError| {
        Error::sink(
            name,
            format!("cannot encode dead letters: {e}"),
            Retry::Permanent,
            Some(Box::new(e)),
        )
    };
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), None).map_err(encode_error)?;
    w.write(&batch).map_err(encode_error)?;
    w.close().map_err(encode_error)?;
    Ok(Bytes::from(buf))
}

#[async_trait::async_trait]
impl DeadLetterSink for ParquetDeadLetterSink {
    async fn write(&mut self, stream_id: &str, letters: Vec<DeadLetter>) -> Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        let name = format!("dead letters {}", self.loc.display);
        let buf = encode_dead_letters(stream_id, &letters, &name)?;
        let file = format!(
            "part-{}-{}-{}.parquet",
            sanitize(stream_id),
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.6f"),
            uuid::Uuid::new_v4().simple()
        );
        let path = self.loc.child(&file);
        self.loc
            .store
            .put(&path, PutPayload::from(buf))
            .await
            .map_err(|e| store_error(&name, format!("cannot write dead letters to {path}"), e))?;
        Ok(())
    }
}
