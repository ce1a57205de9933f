//! The `stats` of an `add` action, from a Parquet footer: `numRecords`, and for top-level
//! primitive columns `nullCount`, `minValues`, `maxValues` (what Delta readers skip files by).

use arrow_schema::{DataType, Schema, TimeUnit};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use serde_json::{Map, Value, json};

/// Strings longer than this get no min/max (a truncated max would not be an upper bound).
const MAX_STRING_STAT: usize = 32;

/// The stats JSON of a file with footer `meta`, whose columns are those of `schema`.
///
/// Only exact statistics of every row group are used; a column without them gets no entry
/// (readers then scan the file). Booleans, binary, decimals and nested columns get no min/max.
/// Timestamps are written with millisecond precision, the minimum rounded down and the
/// maximum rounded up, so that they stay bounds of the microsecond values.
pub fn stats(meta: &ParquetMetaData, schema: &Schema) -> Value {
    let rows: i64 = meta.row_groups().iter().map(|g| g.num_rows()).sum();
    let mut null_count = Map::new();
    let mut min_values = Map::new();
    let mut max_values = Map::new();
    let descr = meta.file_metadata().schema_descr();
    for col in 0..descr.num_columns() {
        let path = descr.column(col).path().parts().to_vec();
        let [name] = path.as_slice() else {
            continue; // nested
        };
        let Ok(field) = schema.field_with_name(name) else {
            continue;
        };
        let mut nulls = Some(0u64);
        let mut acc: Option<(Value, Value)> = None;
        let mut bounds_ok = true;
        for rg in meta.row_groups() {
            let Some(s) = rg.column(col).statistics() else {
                nulls = None;
                bounds_ok = false;
                break;
            };
            nulls = nulls.zip(s.null_count_opt()).map(|(a, b)| a + b);
            if !bounds_ok {
                continue;
            }
            let rg_rows = rg.num_rows().max(0) as u64;
            if s.null_count_opt() == Some(rg_rows) {
                continue; // all null: no bounds, does not widen them
            }
            match bounds(s, field.data_type()) {
                Some((lo, hi)) => {
                    acc = Some(match acc.take() {
                        None => (lo, hi),
                        Some((a, b)) => (
                            if less(&lo, &a) { lo } else { a },
                            if less(&b, &hi) { hi } else { b },
                        ),
                    })
                }
                None => bounds_ok = false,
            }
        }
        if let Some(n) = nulls {
            null_count.insert(name.clone(), json!(n));
        }
        if bounds_ok && let Some((lo, hi)) = acc {
            min_values.insert(name.clone(), lo);
            max_values.insert(name.clone(), hi);
        }
    }
    let mut out = Map::new();
    out.insert("numRecords".into(), json!(rows));
    if !min_values.is_empty() {
        out.insert("minValues".into(), Value::Object(min_values));
        out.insert("maxValues".into(), Value::Object(max_values));
    }
    if !null_count.is_empty() {
        out.insert("nullCount".into(), Value::Object(null_count));
    }
    Value::Object(out)
}

/// Compare two bounds of the same column (numbers, or strings that order as the values do).
fn less(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x < y,
            _ => x.as_f64().unwrap_or(0.0) < y.as_f64().unwrap_or(0.0),
        },
        (Value::String(x), Value::String(y)) => x < y,
        _ => false,
    }
}

/// The (min, max) of one row group's column chunk as Delta stats values.
fn bounds(s: &Statistics, t: &DataType) -> Option<(Value, Value)> {
    if !s.min_is_exact() || !s.max_is_exact() {
        return None;
    }
    match (s, t) {
        (Statistics::Int32(v), DataType::Int8 | DataType::Int16 | DataType::Int32) => {
            Some((json!(*v.min_opt()?), json!(*v.max_opt()?)))
        }
        (Statistics::Int32(v), DataType::Date32) => Some((
            Value::String(date(*v.min_opt()?)?),
            Value::String(date(*v.max_opt()?)?),
        )),
        (Statistics::Int64(v), DataType::Int64) => {
            Some((json!(*v.min_opt()?), json!(*v.max_opt()?)))
        }
        (Statistics::Int64(v), DataType::Timestamp(TimeUnit::Microsecond, tz)) => {
            let (lo, hi) = (*v.min_opt()?, *v.max_opt()?);
            Some((
                Value::String(timestamp(lo.div_euclid(1000), tz.is_some())?),
                Value::String(timestamp(
                    hi.div_euclid(1000) + i64::from(hi.rem_euclid(1000) != 0),
                    tz.is_some(),
                )?),
            ))
        }
        (Statistics::Float(v), DataType::Float32) => {
            let (lo, hi) = (*v.min_opt()?, *v.max_opt()?);
            (lo.is_finite() && hi.is_finite()).then(|| (json!(lo), json!(hi)))
        }
        (Statistics::Double(v), DataType::Float64) => {
            let (lo, hi) = (*v.min_opt()?, *v.max_opt()?);
            (lo.is_finite() && hi.is_finite()).then(|| (json!(lo), json!(hi)))
        }
        (Statistics::ByteArray(v), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
            let lo = std::str::from_utf8(v.min_opt()?.data()).ok()?;
            let hi = std::str::from_utf8(v.max_opt()?.data()).ok()?;
            (lo.chars().count() <= MAX_STRING_STAT && hi.chars().count() <= MAX_STRING_STAT)
                .then(|| (json!(lo), json!(hi)))
        }
        _ => None,
    }
}

fn date(days: i32) -> Option<String> {
    let d = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?
        .checked_add_signed(chrono::Duration::days(i64::from(days)))?;
    Some(d.format("%Y-%m-%d").to_string())
}

fn timestamp(millis: i64, utc: bool) -> Option<String> {
    let t = chrono::DateTime::from_timestamp_millis(millis)?;
    Some(if utc {
        t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    } else {
        t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{
        ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
        StringArray, StructArray, TimestampMicrosecondArray,
    };
    use arrow_schema::{Field, Fields};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    use parquet::file::reader::FileReader;
    use parquet::file::serialized_reader::SerializedFileReader;
    use std::sync::Arc;

    fn footer(batches: &[RecordBatch], props: WriterProperties) -> ParquetMetaData {
        let mut buf = Vec::new();
        let mut w =
            ArrowWriter::try_new(&mut buf, batches[0].schema(), Some(props)).expect("writer");
        for b in batches {
            w.write(b).expect("write");
            w.flush().expect("flush"); // one row group per batch
        }
        w.close().expect("close");
        SerializedFileReader::new(bytes::Bytes::from(buf))
            .expect("read")
            .metadata()
            .clone()
    }

    fn batch(ids: Vec<Option<i64>>, names: Vec<Option<&str>>, ts: Vec<i64>) -> RecordBatch {
        let n = ids.len();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(names)),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            Arc::new(Float64Array::from(vec![1.5; n])),
            Arc::new(BooleanArray::from(vec![true; n])),
            Arc::new(Date32Array::from(vec![Some(20_000); n])),
            Arc::new(Int32Array::from(vec![7; n])),
            Arc::new(StructArray::from(vec![(
                Arc::new(Field::new("x", DataType::Int32, true)),
                Arc::new(Int32Array::from(vec![1; n])) as ArrayRef,
            )])),
        ];
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("score", DataType::Float64, false),
            Field::new("ok", DataType::Boolean, false),
            Field::new("day", DataType::Date32, true),
            Field::new("small", DataType::Int32, false),
            Field::new(
                "nested",
                DataType::Struct(Fields::from(vec![Field::new("x", DataType::Int32, true)])),
                false,
            ),
        ]);
        RecordBatch::try_new(Arc::new(schema), cols).expect("batch")
    }

    #[test]
    fn stats_over_row_groups() {
        let a = batch(
            vec![Some(5), None, Some(9)],
            vec![Some("m"), Some("b"), None],
            vec![1_000_500, 2_000_000, 3_000_000],
        );
        let b = batch(
            vec![Some(-3), Some(4)],
            vec![Some("z"), Some("c")],
            vec![4_000_001, 500],
        );
        let schema = a.schema();
        let meta = footer(&[a, b], WriterProperties::builder().build());
        let got = stats(&meta, &schema);
        assert_eq!(
            got,
            json!({
                "numRecords": 5,
                "minValues": {"id": -3, "name": "b", "ts": "1970-01-01T00:00:00.000Z",
                              "score": 1.5, "day": "2024-10-04", "small": 7},
                "maxValues": {"id": 9, "name": "z", "ts": "1970-01-01T00:00:04.001Z",
                              "score": 1.5, "day": "2024-10-04", "small": 7},
                "nullCount": {"id": 1, "name": 1, "ts": 0, "score": 0, "ok": 0, "day": 0,
                              "small": 0},
            })
        );
    }

    #[test]
    fn no_statistics_gives_only_the_row_count_and_long_strings_no_bounds() {
        let long = "x".repeat(40);
        let a = batch(vec![Some(1)], vec![Some(long.as_str())], vec![0]);
        let schema = a.schema();
        let none = WriterProperties::builder()
            .set_statistics_enabled(parquet::file::properties::EnabledStatistics::None)
            .build();
        assert_eq!(
            stats(&footer(std::slice::from_ref(&a), none), &schema),
            json!({"numRecords": 1})
        );
        let got = stats(&footer(&[a], WriterProperties::builder().build()), &schema);
        assert!(got["minValues"].get("name").is_none(), "{got}");
        assert_eq!(got["nullCount"]["name"], 0);
    }
}
