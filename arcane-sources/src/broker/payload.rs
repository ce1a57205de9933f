//! [`PayloadDecoder`]: broker messages into Arrow batches (JSON payloads or raw bytes, plus
//! metadata columns), with the messages that do not fit set aside as dead letters.

use std::sync::Arc;

use arcane_core::{DeadLetter, Result};
use arrow_array::builder::{BinaryBuilder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;

use super::config::{PayloadConfig, PayloadFormat};
use crate::decode::JsonDecoder;

/// Name of the raw payload column.
pub const PAYLOAD_COLUMN: &str = "payload";
/// Name of the subject / routing key / topic column.
pub const SUBJECT_COLUMN: &str = "_subject";
/// Name of the timestamp column (milliseconds, UTC).
pub const TIMESTAMP_COLUMN: &str = "_timestamp";
/// Name of the headers column (a JSON object).
pub const HEADERS_COLUMN: &str = "_headers";

/// One message as the broker sources see it.
#[derive(Debug, Clone)]
pub struct BrokerMessage {
    /// The payload.
    pub payload: Bytes,
    /// Subject, routing key or topic.
    pub subject: String,
    /// Broker or publisher timestamp, epoch milliseconds.
    pub timestamp_ms: Option<i64>,
    /// Headers / user properties, in the broker's order.
    pub headers: Vec<(String, String)>,
    /// Where it is, for dead letters: `sequence 42`, `delivery 7`.
    pub locator: String,
}

/// Decodes [`BrokerMessage`]s into batches of one schema.
#[derive(Debug)]
pub struct PayloadDecoder {
    json: Option<JsonDecoder>,
    metadata: bool,
    schema: SchemaRef,
    origin: String,
}

/// One decoded batch of messages.
#[derive(Debug)]
pub struct DecodedMessages {
    /// The rows, in message order.
    pub batch: RecordBatch,
    /// The messages that could not be decoded.
    pub dead_letters: Vec<DeadLetter>,
}

impl PayloadDecoder {
    /// A decoder for `config`; `field` is the config's path (e.g. `spec.source.payload`);
    /// `origin` names the stream/queue/topic in dead letters.
    pub fn new(config: &PayloadConfig, field: &str, origin: impl Into<String>) -> Result<Self> {
        let payload_schema = config.payload_schema(field)?;
        let metadata = config.metadata_columns || config.format == PayloadFormat::Raw;
        let mut fields: Vec<Arc<Field>> = match &payload_schema {
            Some(s) => s.fields().iter().cloned().collect(),
            None => vec![Arc::new(Field::new(
                PAYLOAD_COLUMN,
                DataType::Binary,
                false,
            ))],
        };
        if metadata {
            for name in [SUBJECT_COLUMN, TIMESTAMP_COLUMN, HEADERS_COLUMN] {
                if fields.iter().any(|f| f.name() == name) {
                    return Err(arcane_core::Error::config(
                        format!("{field}.schema"),
                        format!(
                            "column \"{name}\" clashes with a metadata column; rename it or set metadataColumns to false"
                        ),
                    ));
                }
            }
            fields.push(Arc::new(Field::new(SUBJECT_COLUMN, DataType::Utf8, false)));
            fields.push(Arc::new(Field::new(
                TIMESTAMP_COLUMN,
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            )));
            fields.push(Arc::new(Field::new(HEADERS_COLUMN, DataType::Utf8, true)));
        }
        Ok(Self {
            json: payload_schema.map(JsonDecoder::new),
            metadata,
            schema: Arc::new(Schema::new(fields)),
            origin: origin.into(),
        })
    }

    /// The schema of every batch.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decode `messages`; those that do not fit become dead letters.
    pub fn decode(&mut self, messages: &[BrokerMessage]) -> DecodedMessages {
        let mut dead_letters = Vec::new();
        let (mut columns, kept): (Vec<ArrayRef>, Vec<usize>) = match &mut self.json {
            Some(json) => {
                let payloads: Vec<&[u8]> = messages.iter().map(|m| m.payload.as_ref()).collect();
                let out = json.decode(&payloads);
                let mut rejected = out.rejected.iter().peekable();
                let mut kept = Vec::with_capacity(messages.len());
                for (i, m) in messages.iter().enumerate() {
                    if rejected.peek().is_some_and(|(r, _)| *r == i) {
                        let reason = rejected.next().map(|(_, r)| r.clone()).unwrap_or_default();
                        dead_letters.push(
                            DeadLetter::new(&self.origin, &m.locator, reason)
                                .with_payload(String::from_utf8_lossy(&m.payload)),
                        );
                    } else {
                        kept.push(i);
                    }
                }
                (out.batch.columns().to_vec(), kept)
            }
            None => {
                let mut b = BinaryBuilder::with_capacity(
                    messages.len(),
                    messages.iter().map(|m| m.payload.len()).sum(),
                );
                for m in messages {
                    b.append_value(&m.payload);
                }
                (vec![Arc::new(b.finish())], (0..messages.len()).collect())
            }
        };
        if self.metadata {
            let mut subject = StringBuilder::new();
            let mut ts = TimestampMillisecondBuilder::new().with_timezone("UTC");
            let mut headers = StringBuilder::new();
            for &i in &kept {
                let m = &messages[i];
                subject.append_value(&m.subject);
                ts.append_option(m.timestamp_ms);
                if m.headers.is_empty() {
                    headers.append_null();
                } else {
                    let map: serde_json::Map<String, serde_json::Value> = m
                        .headers
                        .iter()
                        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                        .collect();
                    headers.append_value(serde_json::Value::Object(map).to_string());
                }
            }
            columns.push(Arc::new(subject.finish()));
            columns.push(Arc::new(ts.finish()));
            columns.push(Arc::new(headers.finish()));
        }
        let batch = match RecordBatch::try_new(self.schema.clone(), columns) {
            Ok(batch) => batch,
            Err(e) => {
                // Never drop accepted messages silently: they are acked with this batch, so
                // each one goes to the dead letters with the reason.
                for &i in &kept {
                    let m = &messages[i];
                    dead_letters.push(
                        DeadLetter::new(
                            &self.origin,
                            &m.locator,
                            format!("cannot assemble the batch for the payload schema: {e}"),
                        )
                        .with_payload(String::from_utf8_lossy(&m.payload)),
                    );
                }
                RecordBatch::new_empty(self.schema.clone())
            }
        };
        DecodedMessages {
            batch,
            dead_letters,
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::{Array, BinaryArray, Int64Array, StringArray};

    use super::*;
    use crate::decode::FieldConfig;

    fn msg(payload: &str, i: usize) -> BrokerMessage {
        BrokerMessage {
            payload: Bytes::from(payload.to_string()),
            subject: format!("orders.{i}"),
            timestamp_ms: Some(1_700_000_000_000 + i as i64),
            headers: if i == 0 {
                vec![("k".into(), "v".into())]
            } else {
                vec![]
            },
            locator: format!("sequence {i}"),
        }
    }

    #[test]
    fn json_payloads_with_metadata_and_dead_letters() {
        let mut config = PayloadConfig::json(vec![FieldConfig::new("id", "int64").required()]);
        config.metadata_columns = true;
        let mut d = PayloadDecoder::new(&config, "spec.source.payload", "stream s").unwrap();
        let out = d.decode(&[msg(r#"{"id":1}"#, 0), msg("nope", 1), msg(r#"{"id":3}"#, 2)]);
        assert_eq!(out.batch.num_rows(), 2);
        let ids = out
            .batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.values(), &[1, 3]);
        let subjects = out
            .batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(subjects.value(1), "orders.2");
        let headers = out
            .batch
            .column(3)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(headers.value(0), r#"{"k":"v"}"#);
        assert!(headers.is_null(1));
        assert_eq!(out.dead_letters.len(), 1);
        assert_eq!(out.dead_letters[0].locator, "sequence 1");
        assert_eq!(out.dead_letters[0].payload.as_deref(), Some("nope"));
    }

    #[test]
    fn raw_payloads_keep_bytes() {
        let mut d = PayloadDecoder::new(&PayloadConfig::raw(), "p", "q").unwrap();
        let out = d.decode(&[msg("\u{1}x", 0), msg("", 1)]);
        assert_eq!(out.batch.num_columns(), 4);
        let p = out
            .batch
            .column(0)
            .as_any()
            .downcast_ref::<BinaryArray>()
            .unwrap();
        assert_eq!(p.value(0), b"\x01x");
        assert_eq!(p.value(1), b"");
        assert!(out.dead_letters.is_empty());
    }

    #[test]
    fn json_without_schema_names_the_field() {
        let config = PayloadConfig {
            format: PayloadFormat::Json,
            schema: None,
            metadata_columns: false,
        };
        let err = PayloadDecoder::new(&config, "spec.source.payload", "q").unwrap_err();
        assert!(
            err.to_string().contains("spec.source.payload.schema"),
            "{err}"
        );
    }
}
