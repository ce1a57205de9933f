//! Arrow schema → Delta Lake schema (`metaData.schemaString`), and the protocol versions the
//! types need.

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use serde_json::{Value, json};

/// The Delta schema of `schema` (a `struct` type as the protocol's "Schema Serialization
/// Format" describes), or a message naming the first column Delta cannot hold and what to do.
pub fn delta_schema(schema: &Schema) -> Result<Value, String> {
    let fields = schema
        .fields()
        .iter()
        .map(|f| field(f, f.name()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({ "type": "struct", "fields": fields }))
}

/// Whether the schema has a timestamp without time zone anywhere (Delta's `timestamp_ntz`,
/// which needs reader version 3, writer version 7 and the `timestampNtz` table feature).
pub fn needs_timestamp_ntz(schema: &Schema) -> bool {
    fn walk(t: &DataType) -> bool {
        match t {
            DataType::Timestamp(_, None) => true,
            DataType::Struct(fs) => fs.iter().any(|f| walk(f.data_type())),
            DataType::List(f) | DataType::LargeList(f) | DataType::Map(f, _) => walk(f.data_type()),
            DataType::Dictionary(_, v) => walk(v),
            _ => false,
        }
    }
    schema.fields().iter().any(|f| walk(f.data_type()))
}

/// The `protocol` action a table of `schema` needs.
pub fn protocol(schema: &Schema) -> Value {
    if needs_timestamp_ntz(schema) {
        json!({ "protocol": {
            "minReaderVersion": 3,
            "minWriterVersion": 7,
            "readerFeatures": ["timestampNtz"],
            "writerFeatures": ["timestampNtz"],
        }})
    } else {
        json!({ "protocol": { "minReaderVersion": 1, "minWriterVersion": 2 } })
    }
}

/// `batch` with its top-level second and millisecond timestamp columns converted to
/// microseconds (lossless), the unit Delta Lake stores; other columns as they are.
pub fn to_micros(batch: RecordBatch) -> Result<RecordBatch, arrow_schema::ArrowError> {
    crate::parquet::schema::to_micros(batch)
}

fn field(f: &Field, path: &str) -> Result<Value, String> {
    Ok(json!({
        "name": f.name(),
        "type": data_type(f.data_type(), path)?,
        "nullable": f.is_nullable(),
        "metadata": {},
    }))
}

fn data_type(t: &DataType, path: &str) -> Result<Value, String> {
    let primitive = |s: &str| Ok(Value::String(s.into()));
    match t {
        DataType::Int8 => primitive("byte"),
        DataType::Int16 => primitive("short"),
        DataType::Int32 => primitive("integer"),
        DataType::Int64 => primitive("long"),
        DataType::Float32 => primitive("float"),
        DataType::Float64 => primitive("double"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => primitive("string"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => primitive("binary"),
        DataType::Boolean => primitive("boolean"),
        DataType::Date32 => primitive("date"),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => primitive("timestamp"),
        DataType::Timestamp(TimeUnit::Microsecond, None) => primitive("timestamp_ntz"),
        DataType::Timestamp(unit, tz) => Err(format!(
            "column {path:?} is a timestamp in {unit:?}s; Delta Lake timestamps are microseconds. Incoming second and millisecond timestamps are converted to microseconds, nanoseconds are not (that would drop precision): produce microseconds at the source, and declare the column in sink.schema (if you declare one) as {}",
            if tz.is_some() {
                "timestamp[us, UTC]"
            } else {
                "timestamp[us]"
            }
        )),
        DataType::Decimal128(p, s) if *p <= 38 && *s >= 0 && (*s as u8) <= *p => {
            primitive(&format!("decimal({p},{s})"))
        }
        DataType::Struct(fs) => {
            let fields = fs
                .iter()
                .map(|f| field(f, &format!("{path}.{}", f.name())))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(json!({ "type": "struct", "fields": fields }))
        }
        DataType::List(item) | DataType::LargeList(item) => Ok(json!({
            "type": "array",
            "elementType": data_type(item.data_type(), &format!("{path}[]"))?,
            "containsNull": item.is_nullable(),
        })),
        DataType::Map(entries, _) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return Err(format!(
                    "column {path:?} is a map whose entries are not a struct; Delta Lake cannot hold it"
                ));
            };
            let (Some(k), Some(v)) = (kv.first(), kv.get(1)) else {
                return Err(format!(
                    "column {path:?} is a map without a key and a value field; Delta Lake cannot hold it"
                ));
            };
            Ok(json!({
                "type": "map",
                "keyType": data_type(k.data_type(), &format!("{path}.key"))?,
                "valueType": data_type(v.data_type(), &format!("{path}.value"))?,
                "valueContainsNull": v.is_nullable(),
            }))
        }
        // The Parquet writer stores dictionary columns as their values.
        DataType::Dictionary(_, values) => data_type(values, path),
        other => Err(format!(
            "column {path:?} has type {other}, which Delta Lake has no type for; declare it in sink.schema as one of int8/16/32/64, float32/64, utf8, binary, bool, date32, timestamp[us, UTC], timestamp[us], decimal128(p, s) with p <= 38, or a struct, list or map of those{}",
            match other {
                DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 =>
                    " (Delta has no unsigned integers: use the next wider signed type)",
                _ => "",
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::Fields;
    use std::sync::Arc;

    #[test]
    fn converts_every_supported_type() {
        let schema = Schema::new(vec![
            Field::new("i8", DataType::Int8, false),
            Field::new("i16", DataType::Int16, true),
            Field::new("i32", DataType::Int32, true),
            Field::new("i64", DataType::Int64, false),
            Field::new("f32", DataType::Float32, true),
            Field::new("f64", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("ls", DataType::LargeUtf8, true),
            Field::new("b", DataType::Binary, true),
            Field::new("flag", DataType::Boolean, true),
            Field::new("d", DataType::Date32, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("amount", DataType::Decimal128(18, 2), true),
            Field::new(
                "st",
                DataType::Struct(Fields::from(vec![Field::new("x", DataType::Int32, true)])),
                true,
            ),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, false))),
                true,
            ),
            Field::new_map(
                "attrs",
                "entries",
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", DataType::Int64, true),
                false,
                true,
            ),
        ]);
        let got = delta_schema(&schema).expect("supported");
        let types: Vec<String> = got["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .map(|f| f["type"].to_string())
            .collect();
        assert_eq!(
            types,
            [
                r#""byte""#,
                r#""short""#,
                r#""integer""#,
                r#""long""#,
                r#""float""#,
                r#""double""#,
                r#""string""#,
                r#""string""#,
                r#""binary""#,
                r#""boolean""#,
                r#""date""#,
                r#""timestamp""#,
                r#""decimal(18,2)""#,
                r#"{"fields":[{"metadata":{},"name":"x","nullable":true,"type":"integer"}],"type":"struct"}"#,
                r#"{"containsNull":false,"elementType":"string","type":"array"}"#,
                r#"{"keyType":"string","type":"map","valueContainsNull":true,"valueType":"long"}"#,
            ]
        );
        assert_eq!(got["fields"][0]["nullable"], false);
        assert_eq!(got["fields"][1]["nullable"], true);
        assert_eq!(got["fields"][0]["name"], "i8");
        assert_eq!(
            protocol(&schema),
            json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}})
        );
    }

    #[test]
    fn millisecond_timestamps_become_microseconds() {
        let batch = arcane_core::testing::GeneratorSource::batch(0, 3);
        let got = to_micros(batch).expect("cast");
        assert_eq!(
            got.schema()
                .field_with_name("event_time")
                .expect("column")
                .data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        let ts = got
            .column_by_name("event_time")
            .expect("column")
            .as_any()
            .downcast_ref::<arrow_array::TimestampMicrosecondArray>()
            .expect("micros");
        assert_eq!(ts.value(1), (1_767_225_600_000 + 1_000) * 1_000);
        assert!(delta_schema(&got.schema()).is_ok());
    }

    #[test]
    fn timestamp_without_time_zone_needs_the_timestamp_ntz_feature() {
        let schema = Schema::new(vec![Field::new(
            "local",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        )]);
        assert_eq!(
            delta_schema(&schema).expect("supported")["fields"][0]["type"],
            "timestamp_ntz"
        );
        assert_eq!(
            protocol(&schema)["protocol"]["readerFeatures"],
            json!(["timestampNtz"])
        );
        assert_eq!(protocol(&schema)["protocol"]["minWriterVersion"], 7);
    }

    #[test]
    fn unsupported_types_name_the_column_and_the_fix() {
        let nanos = Schema::new(vec![Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            true,
        )]);
        let e = delta_schema(&nanos).expect_err("nanoseconds");
        assert!(
            e.contains(r#"column "at""#) && e.contains("timestamp[us, UTC]"),
            "{e}"
        );
        let unsigned = Schema::new(vec![Field::new(
            "n",
            DataType::Struct(Fields::from(vec![Field::new("u", DataType::UInt32, true)])),
            true,
        )]);
        let e = delta_schema(&unsigned).expect_err("unsigned");
        assert!(
            e.contains(r#"column "n.u""#) && e.contains("unsigned"),
            "{e}"
        );
        let wide = Schema::new(vec![Field::new("d", DataType::Decimal256(50, 2), true)]);
        assert!(delta_schema(&wide).is_err());
    }
}
