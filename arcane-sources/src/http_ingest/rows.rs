//! Events into Arrow rows: the CloudEvents attributes as `ce_*` columns, then the data decoded
//! into the spec's columns (or kept as a `data` JSON string column).

use std::sync::Arc;

use arcane_core::schema::FieldConfig;
use arcane_core::{Error, Result};
use arrow_array::builder::{MapBuilder, StringBuilder};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::config::{DataFormat, ExtensionsFormat};
use super::event::{Data, Event, Invalid};
use crate::decode::JsonDecoder;

/// `id` attribute column.
pub const ID_COLUMN: &str = "ce_id";
/// `source` attribute column.
pub const SOURCE_COLUMN: &str = "ce_source";
/// `type` attribute column.
pub const TYPE_COLUMN: &str = "ce_type";
/// `subject` attribute column.
pub const SUBJECT_COLUMN: &str = "ce_subject";
/// `time` attribute column (`timestamp[ms, UTC]`).
pub const TIME_COLUMN: &str = "ce_time";
/// `datacontenttype` attribute column.
pub const DATACONTENTTYPE_COLUMN: &str = "ce_datacontenttype";
/// `dataschema` attribute column.
pub const DATASCHEMA_COLUMN: &str = "ce_dataschema";
/// Extension attributes, as a JSON object string or a `map<utf8, utf8>`.
pub const EXTENSIONS_COLUMN: &str = "ce_extensions";
/// The data as JSON text (`dataFormat: json`).
pub const DATA_COLUMN: &str = "data";

const ATTRIBUTE_COLUMNS: usize = 8;

/// Turns the valid events of a request into one batch of the stream's schema.
#[derive(Debug, Clone)]
pub(crate) struct RowBuilder {
    schema: SchemaRef,
    data: Option<SchemaRef>,
    extensions: ExtensionsFormat,
}

fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
}

/// The rows of a request.
#[derive(Debug)]
pub(crate) struct Rows {
    /// The events that fit, in request order.
    pub(crate) batch: RecordBatch,
    /// `(source, id)` of each row (None for webhooks without an idempotency key).
    pub(crate) ids: Vec<Option<(String, String)>>,
    /// The events that do not fit.
    pub(crate) invalid: Vec<Invalid>,
}

impl RowBuilder {
    /// The builder for `format` and the spec's data `schema`; `at` names the source config.
    pub(crate) fn new(
        format: DataFormat,
        extensions: ExtensionsFormat,
        schema: Option<&[FieldConfig]>,
        at: &str,
    ) -> Result<Self> {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let mut fields = vec![
            Field::new(ID_COLUMN, DataType::Utf8, true),
            Field::new(SOURCE_COLUMN, DataType::Utf8, true),
            Field::new(TYPE_COLUMN, DataType::Utf8, true),
            Field::new(SUBJECT_COLUMN, DataType::Utf8, true),
            Field::new(TIME_COLUMN, ts, true),
            Field::new(DATACONTENTTYPE_COLUMN, DataType::Utf8, true),
            Field::new(DATASCHEMA_COLUMN, DataType::Utf8, true),
            match extensions {
                ExtensionsFormat::Json => Field::new(EXTENSIONS_COLUMN, DataType::Utf8, true),
                ExtensionsFormat::Map => Field::new(
                    EXTENSIONS_COLUMN,
                    map_builder().finish().data_type().clone(),
                    true,
                ),
            },
        ];
        let data = match format {
            DataFormat::Json => {
                fields.push(Field::new(DATA_COLUMN, DataType::Utf8, true));
                None
            }
            DataFormat::Columns => {
                let Some(schema) = schema else {
                    return Err(Error::config(
                        format!("{at}.schema"),
                        "is required when dataFormat is columns",
                    ));
                };
                let data = crate::decode::schema_from_fields(schema, &format!("{at}.schema"))?;
                for (i, f) in data.fields().iter().enumerate() {
                    if fields.iter().any(|a| a.name() == f.name()) {
                        return Err(Error::config(
                            format!("{at}.schema[{i}].name"),
                            format!(
                                "{:?} is an attribute column of the kind (ce_*); rename the data column",
                                f.name()
                            ),
                        ));
                    }
                }
                fields.extend(data.fields().iter().map(|f| f.as_ref().clone()));
                Some(data)
            }
        };
        Ok(Self {
            schema: Arc::new(Schema::new(fields)),
            data,
            extensions,
        })
    }

    /// The stream's schema.
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The rows of `events`; invalid events (and data that does not fit) are set aside.
    pub(crate) fn build(&self, events: Vec<std::result::Result<Event, Invalid>>) -> Result<Rows> {
        let mut invalid = Vec::new();
        let mut good: Vec<(usize, Event)> = Vec::with_capacity(events.len());
        for (i, e) in events.into_iter().enumerate() {
            match e {
                Ok(e) => good.push((i, e)),
                Err(bad) => invalid.push(bad),
            }
        }
        let data_columns: Vec<ArrayRef> = match &self.data {
            None => {
                let values: Vec<Option<String>> = good
                    .iter()
                    .map(|(_, e)| match &e.data {
                        Data::None => None,
                        Data::Json(v) => Some(v.to_string()),
                        Data::Text(t) | Data::Base64(t) => Some(t.clone()),
                    })
                    .collect();
                vec![Arc::new(StringArray::from(values))]
            }
            Some(schema) => {
                // Data that is not a JSON object cannot fill columns.
                let mut records = Vec::with_capacity(good.len());
                let mut kept = Vec::with_capacity(good.len());
                for (i, e) in good {
                    match &e.data {
                        Data::Json(v @ serde_json::Value::Object(_)) => {
                            records.push(v.to_string());
                            kept.push((i, e));
                        }
                        Data::None => {
                            records.push("{}".to_string());
                            kept.push((i, e));
                        }
                        other => invalid.push(Invalid {
                            index: i,
                            reason: format!(
                                "[{i}].data: expected a JSON object for the columns of the spec's schema, found {}",
                                describe(other)
                            ),
                            payload: match other {
                                Data::Json(v) => v.to_string(),
                                Data::Text(t) | Data::Base64(t) => t.clone(),
                                Data::None => String::new(),
                            },
                        }),
                    }
                }
                let mut decoder = JsonDecoder::new(schema.clone());
                let decoded = decoder.decode(&records);
                let mut rejected = decoded.rejected.into_iter().peekable();
                good = Vec::with_capacity(kept.len());
                for (n, (i, e)) in kept.into_iter().enumerate() {
                    if rejected.peek().is_some_and(|(r, _)| *r == n) {
                        let (_, reason) = rejected.next().unwrap_or_default();
                        invalid.push(Invalid {
                            index: i,
                            reason: format!("[{i}].data: {reason}"),
                            payload: records[n].clone(),
                        });
                    } else {
                        good.push((i, e));
                    }
                }
                decoded.batch.columns().to_vec()
            }
        };
        invalid.sort_by_key(|b| b.index);
        let text = |f: &dyn Fn(&Event) -> Option<&str>| -> ArrayRef {
            Arc::new(StringArray::from_iter(good.iter().map(|(_, e)| f(e))))
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(ATTRIBUTE_COLUMNS + data_columns.len());
        columns.push(text(&|e| e.id.as_deref()));
        columns.push(text(&|e| e.source.as_deref()));
        columns.push(text(&|e| e.ty.as_deref()));
        columns.push(text(&|e| e.subject.as_deref()));
        columns.push(Arc::new(
            TimestampMillisecondArray::from_iter(good.iter().map(|(_, e)| e.time))
                .with_timezone("UTC"),
        ));
        columns.push(text(&|e| e.datacontenttype.as_deref()));
        columns.push(text(&|e| e.dataschema.as_deref()));
        columns.push(self.extensions_column(&good));
        columns.extend(data_columns);
        let batch = RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| {
            Error::fatal(format!(
                "http-ingest: cannot assemble the rows of a request: {e}"
            ))
        })?;
        let ids = good
            .into_iter()
            .map(|(_, e)| match (e.source, e.id) {
                (source, Some(id)) => Some((source.unwrap_or_default(), id)),
                (_, None) => None,
            })
            .collect();
        Ok(Rows {
            batch,
            ids,
            invalid,
        })
    }
}

impl RowBuilder {
    fn extensions_column(&self, events: &[(usize, Event)]) -> ArrayRef {
        match self.extensions {
            ExtensionsFormat::Json => {
                Arc::new(StringArray::from_iter(events.iter().map(|(_, e)| {
                    e.extensions
                        .as_ref()
                        .map(|m| serde_json::Value::Object(m.clone()).to_string())
                })))
            }
            ExtensionsFormat::Map => {
                let mut b = map_builder();
                for (_, e) in events {
                    match &e.extensions {
                        None => {
                            let _ = b.append(false);
                        }
                        Some(m) => {
                            for (k, v) in m {
                                b.keys().append_value(k);
                                match v {
                                    serde_json::Value::String(s) => b.values().append_value(s),
                                    serde_json::Value::Null => b.values().append_null(),
                                    other => b.values().append_value(other.to_string()),
                                }
                            }
                            let _ = b.append(true);
                        }
                    }
                }
                Arc::new(b.finish())
            }
        }
    }
}

fn describe(data: &Data) -> &'static str {
    match data {
        Data::None => "nothing",
        Data::Json(serde_json::Value::Array(_)) => "an array",
        Data::Json(serde_json::Value::String(_)) => "a string",
        Data::Json(serde_json::Value::Number(_)) => "a number",
        Data::Json(serde_json::Value::Bool(_)) => "a boolean",
        Data::Json(_) => "JSON",
        Data::Text(_) => "non-JSON text",
        Data::Base64(_) => "binary (base64) data",
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::{Array, Int64Array};

    use super::*;

    fn event(id: &str, data: Data) -> Event {
        Event {
            id: Some(id.into()),
            source: Some("/s".into()),
            ty: Some("t".into()),
            time: Some(5),
            data,
            ..Event::default()
        }
    }

    #[test]
    fn data_is_decoded_into_the_schema_and_misfits_are_named() {
        let schema: Vec<FieldConfig> = serde_json::from_value(serde_json::json!([
            {"name": "n", "type": "int64", "nullable": false}
        ]))
        .unwrap();
        let b = RowBuilder::new(
            DataFormat::Columns,
            ExtensionsFormat::Json,
            Some(&schema),
            "spec.source",
        )
        .unwrap();
        let rows = b
            .build(vec![
                Ok(event("1", Data::Json(serde_json::json!({"n": 1})))),
                Ok(event("2", Data::Json(serde_json::json!({"n": "x"})))),
                Ok(event("3", Data::Text("hello".into()))),
                Ok(event("4", Data::Json(serde_json::json!({"n": 4})))),
            ])
            .unwrap();
        assert_eq!(rows.batch.num_rows(), 2);
        let n = rows
            .batch
            .column(8)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(n.values(), &[1, 4]);
        assert_eq!(
            rows.ids,
            vec![
                Some(("/s".into(), "1".into())),
                Some(("/s".into(), "4".into()))
            ]
        );
        let bad: Vec<_> = rows.invalid.iter().map(|i| i.reason.as_str()).collect();
        assert!(bad[0].starts_with("[1].data: "), "{bad:?}");
        assert!(
            bad[1].starts_with("[2].data: expected a JSON object"),
            "{bad:?}"
        );

        let clash: Vec<FieldConfig> =
            serde_json::from_value(serde_json::json!([{"name": "ce_id", "type": "utf8"}])).unwrap();
        let err = RowBuilder::new(
            DataFormat::Columns,
            ExtensionsFormat::Json,
            Some(&clash),
            "spec.source",
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("spec.source.schema[0].name: "),
            "{err}"
        );
    }

    #[test]
    fn extensions_as_a_json_string_or_a_map() {
        let mut with = event("1", Data::None);
        with.extensions = Some(
            serde_json::json!({"traceparent": "00-ab", "sampled": true})
                .as_object()
                .unwrap()
                .clone(),
        );
        let events = || vec![Ok(with.clone()), Ok(event("2", Data::None))];
        let b = RowBuilder::new(DataFormat::Json, ExtensionsFormat::Json, None, "s").unwrap();
        let rows = b.build(events()).unwrap();
        let col = rows.batch.column_by_name(EXTENSIONS_COLUMN).unwrap();
        let col = col.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(col.value(0), r#"{"sampled":true,"traceparent":"00-ab"}"#);
        assert!(col.is_null(1));

        let b = RowBuilder::new(DataFormat::Json, ExtensionsFormat::Map, None, "s").unwrap();
        let rows = b.build(events()).unwrap();
        let col = rows.batch.column_by_name(EXTENSIONS_COLUMN).unwrap();
        let map = col
            .as_any()
            .downcast_ref::<arrow_array::MapArray>()
            .unwrap();
        assert!(map.is_null(1));
        let entries = map.value(0);
        let keys = entries
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let values = entries
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let pairs: Vec<_> = (0..keys.len())
            .map(|i| (keys.value(i), values.value(i)))
            .collect();
        assert_eq!(pairs, vec![("sampled", "true"), ("traceparent", "00-ab")]);
    }

    #[test]
    fn data_kept_as_json_text() {
        let b = RowBuilder::new(
            DataFormat::Json,
            ExtensionsFormat::Json,
            None,
            "spec.source",
        )
        .unwrap();
        let rows = b
            .build(vec![
                Ok(event("1", Data::Json(serde_json::json!({"n": 1})))),
                Ok(event("2", Data::None)),
            ])
            .unwrap();
        let data = rows
            .batch
            .column_by_name(DATA_COLUMN)
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(data.value(0), r#"{"n":1}"#);
        assert!(data.is_null(1));
    }
}
