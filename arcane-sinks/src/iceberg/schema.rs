//! Arrow schema → Iceberg schema (format v2, with field ids), and the Parquet field ids of the
//! data files (`PARQUET:field_id` field metadata, which the parquet crate writes as the
//! Parquet schema's `field_id`).
//!
//! Ids are assigned depth first (a field, then its children), continuing after the table's
//! `last-column-id`; a column the table has keeps its id. The same function computes the ids
//! of the files a sink writes and of the schema it publishes, so they agree.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, TimeUnit};
use serde_json::{Value, json};

/// The Arrow field metadata key the parquet crate writes as a Parquet field id.
pub const PARQUET_FIELD_ID: &str = "PARQUET:field_id";

/// The Iceberg schema (`{"type": "struct", "fields": …}` without `schema-id`) of `arrow`,
/// reusing the ids of `table` (the table's current schema, when it exists) by name and
/// numbering new fields after `last_column_id`; with the new last column id. Errors name the
/// column and what to do.
pub fn iceberg_schema(
    arrow: &Schema,
    table: Option<&Value>,
    last_column_id: i64,
) -> Result<(Value, i64), String> {
    let mut next = last_column_id;
    let fields = struct_fields(arrow.fields(), table, &mut next, "")?;
    Ok((json!({"type": "struct", "fields": fields}), next))
}

fn struct_fields(
    fields: &Fields,
    table: Option<&Value>,
    next: &mut i64,
    prefix: &str,
) -> Result<Vec<Value>, String> {
    let theirs: Vec<&Value> = table
        .and_then(|t| t["fields"].as_array())
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    for tf in &theirs {
        let name = tf["name"].as_str().unwrap_or_default();
        if !fields.iter().any(|f| f.name() == name) {
            let column = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}.{name}")
            };
            return Err(format!(
                "the Iceberg table has column {column:?}, which the stream's schema lacks; write the stream to a new table"
            ));
        }
    }
    let mut out = Vec::with_capacity(fields.len());
    for f in fields {
        let path = if prefix.is_empty() {
            f.name().clone()
        } else {
            format!("{prefix}.{}", f.name())
        };
        let existing = theirs
            .iter()
            .find(|t| t["name"] == f.name().as_str())
            .copied();
        match existing {
            Some(t) => {
                let id = t["id"].as_i64().ok_or_else(|| {
                    format!(
                        "the Iceberg table's column {path:?} has no id; the metadata is damaged"
                    )
                })?;
                if t["required"] == true && f.is_nullable() {
                    return Err(format!(
                        "the Iceberg table has column {path:?} as required, the stream's schema has it nullable; make it non-nullable in sink.schema or write to a new table"
                    ));
                }
                let ty = typed(f.data_type(), Some(&t["type"]), next, &path)?;
                out.push(json!({"id": id, "name": f.name(), "required": t["required"] == true, "type": ty}));
            }
            None if table.is_some() && !f.is_nullable() => {
                return Err(format!(
                    "the stream's column {path:?} is not in the Iceberg table and is not nullable; only nullable columns can be added to a table"
                ));
            }
            None => {
                *next += 1;
                let id = *next;
                let ty = typed(f.data_type(), None, next, &path)?;
                out.push(
                    json!({"id": id, "name": f.name(), "required": !f.is_nullable(), "type": ty}),
                );
            }
        }
    }
    Ok(out)
}

/// The Iceberg type of `t`; `table` is the table's type of the same column (its nested ids
/// are kept, and it must be the same type).
fn typed(t: &DataType, table: Option<&Value>, next: &mut i64, path: &str) -> Result<Value, String> {
    let mismatch = |ours: &str, theirs: &Value| {
        format!(
            "the Iceberg table has column {path:?} as {theirs}, the stream's schema has it as {ours}; the table cannot change a column's type: write the stream to a new table"
        )
    };
    match t {
        DataType::Struct(fs) => {
            if let Some(theirs) = table
                && theirs["type"] != "struct"
            {
                return Err(mismatch("struct", theirs));
            }
            Ok(json!({"type": "struct", "fields": struct_fields(fs, table, next, path)?}))
        }
        DataType::List(item) | DataType::LargeList(item) => {
            if let Some(theirs) = table
                && theirs["type"] != "list"
            {
                return Err(mismatch("list", theirs));
            }
            let element_id = match table {
                Some(theirs) => theirs["element-id"].as_i64().ok_or_else(|| {
                    format!("the Iceberg table's list column {path:?} has no element-id; the metadata is damaged")
                })?,
                None => {
                    *next += 1;
                    *next
                }
            };
            let element = typed(
                item.data_type(),
                table.map(|t| &t["element"]),
                next,
                &format!("{path}.element"),
            )?;
            let required = match table {
                Some(theirs) => theirs["element-required"] == true,
                None => !item.is_nullable(),
            };
            if required && item.is_nullable() {
                return Err(format!(
                    "the Iceberg table's list column {path:?} has required elements, the stream's elements are nullable; write to a new table"
                ));
            }
            Ok(
                json!({"type": "list", "element-id": element_id, "element": element, "element-required": required}),
            )
        }
        DataType::Dictionary(_, values) => typed(values, table, next, path),
        other => {
            let ours = primitive(other, path)?;
            match table {
                Some(theirs) if !same_primitive(theirs, &ours) => Err(mismatch(&ours, theirs)),
                _ => Ok(Value::String(ours)),
            }
        }
    }
}

fn same_primitive(theirs: &Value, ours: &str) -> bool {
    let norm = |s: &str| s.replace(' ', "");
    theirs.as_str().is_some_and(|t| norm(t) == norm(ours))
}

fn primitive(t: &DataType, path: &str) -> Result<String, String> {
    Ok(match t {
        DataType::Int8 | DataType::Int16 | DataType::Int32 => "int".into(),
        DataType::Int64 => "long".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(TimeUnit::Microsecond, None) => "timestamp".into(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => "timestamptz".into(),
        DataType::Timestamp(unit, tz) => {
            return Err(format!(
                "column {path:?} is a timestamp in {unit:?}s; Iceberg (format v2) timestamps are microseconds. Incoming second and millisecond timestamps are converted to microseconds, nanoseconds are not (that would drop precision): produce microseconds at the source, and declare the column in sink.schema (if you declare one) as {}",
                if tz.is_some() {
                    "timestamp[us, UTC]"
                } else {
                    "timestamp[us]"
                }
            ));
        }
        DataType::Decimal128(p, s) if *p <= 38 && *s >= 0 && (*s as u8) <= *p => {
            format!("decimal({p}, {s})")
        }
        other => {
            return Err(format!(
                "column {path:?} has type {other}, which the Iceberg table format is not written for here; declare it in sink.schema as one of int8/16/32/64, float32/64, utf8, binary, bool, date32, timestamp[us, UTC], timestamp[us], decimal128(p, s) with p <= 38, or a struct or list of those{}",
                match other {
                    DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 =>
                        " (Iceberg has no unsigned integers: use the next wider signed type)",
                    DataType::Map(..) => " (Iceberg maps are not supported by the sink yet)",
                    _ => "",
                }
            ));
        }
    })
}

/// `arrow` with the Iceberg field ids of `iceberg` (a schema from [`iceberg_schema`] of the
/// same Arrow schema) as `PARQUET:field_id` metadata on every field, nested ones included.
pub fn with_field_ids(arrow: &Schema, iceberg: &Value) -> Schema {
    Schema::new_with_metadata(
        tag_fields(arrow.fields(), iceberg),
        arrow.metadata().clone(),
    )
}

fn tag_fields(fields: &Fields, iceberg_struct: &Value) -> Vec<FieldRef> {
    let theirs = iceberg_struct["fields"].as_array();
    fields
        .iter()
        .map(
            |f| match theirs.and_then(|t| t.iter().find(|x| x["name"] == f.name().as_str())) {
                Some(x) => Arc::new(tag(f, x["id"].as_i64(), &x["type"])),
                None => f.clone(),
            },
        )
        .collect()
}

fn tag(f: &Field, id: Option<i64>, ty: &Value) -> Field {
    let data_type = match (f.data_type(), ty["type"].as_str()) {
        (DataType::Struct(fs), Some("struct")) => {
            DataType::Struct(Fields::from(tag_fields(fs, ty)))
        }
        (DataType::List(item), Some("list")) => DataType::List(Arc::new(tag(
            item,
            ty["element-id"].as_i64(),
            &ty["element"],
        ))),
        (DataType::LargeList(item), Some("list")) => DataType::LargeList(Arc::new(tag(
            item,
            ty["element-id"].as_i64(),
            &ty["element"],
        ))),
        (other, _) => other.clone(),
    };
    let mut metadata: HashMap<String, String> = f.metadata().clone().into();
    if let Some(id) = id {
        metadata.insert(PARQUET_FIELD_ID.into(), id.to_string());
    }
    f.clone().with_data_type(data_type).with_metadata(metadata)
}

/// The ids of the top-level and nested primitive fields by Parquet leaf path (`a`, `s.x`,
/// `l.list.element`), with their Iceberg type: what column statistics are keyed by.
pub fn field_types(iceberg_struct: &Value) -> HashMap<i64, String> {
    let mut out = HashMap::new();
    fn walk(fields: &Value, out: &mut HashMap<i64, String>) {
        for f in fields["fields"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            match &f["type"] {
                Value::String(s) => {
                    if let Some(id) = f["id"].as_i64() {
                        out.insert(id, s.clone());
                    }
                }
                t if t["type"] == "struct" => walk(t, out),
                _ => {}
            }
        }
    }
    walk(iceberg_struct, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrow() -> Schema {
        Schema::new(vec![
            Field::new("i8", DataType::Int8, false),
            Field::new("i64", DataType::Int64, true),
            Field::new("f", DataType::Float32, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("b", DataType::Binary, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("d", DataType::Date32, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new(
                "tz",
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
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            ),
        ])
    }

    #[test]
    fn types_and_fresh_ids_depth_first() {
        let (s, last) = iceberg_schema(&arrow(), None, 0).expect("supported");
        assert_eq!(last, 14);
        let f = s["fields"].as_array().expect("fields");
        let types: Vec<String> = f.iter().map(|x| x["type"].to_string()).collect();
        assert_eq!(
            types,
            [
                r#""int""#,
                r#""long""#,
                r#""float""#,
                r#""string""#,
                r#""binary""#,
                r#""boolean""#,
                r#""date""#,
                r#""timestamp""#,
                r#""timestamptz""#,
                r#""decimal(18, 2)""#,
                r#"{"fields":[{"id":12,"name":"x","required":false,"type":"int"}],"type":"struct"}"#,
                r#"{"element":"string","element-id":14,"element-required":false,"type":"list"}"#,
            ]
        );
        let ids: Vec<i64> = f.iter().map(|x| x["id"].as_i64().expect("id")).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]);
        assert_eq!(f[0]["required"], true);
        assert_eq!(f[1]["required"], false);
        let tagged = with_field_ids(&arrow(), &s);
        assert_eq!(tagged.field(1).metadata()[PARQUET_FIELD_ID], "2");
        let DataType::List(item) = tagged.field(11).data_type() else {
            panic!("list")
        };
        assert_eq!(item.metadata()[PARQUET_FIELD_ID], "14");
        let DataType::Struct(fs) = tagged.field(10).data_type() else {
            panic!("struct")
        };
        assert_eq!(fs[0].metadata()[PARQUET_FIELD_ID], "12");
    }

    #[test]
    fn existing_ids_are_kept_and_new_nullable_columns_numbered_after_the_last() {
        let table = json!({"type": "struct", "fields": [
            {"id": 5, "name": "id", "required": true, "type": "long"},
            {"id": 9, "name": "name", "required": false, "type": "string"}]});
        let arrow = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("extra", DataType::Float64, true),
        ]);
        let (s, last) = iceberg_schema(&arrow, Some(&table), 9).expect("compatible");
        assert_eq!(last, 10);
        assert_eq!(s["fields"][0]["id"], 5);
        assert_eq!(
            s["fields"][2],
            json!({"id": 10, "name": "extra", "required": false, "type": "double"})
        );
        let required = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("extra", DataType::Float64, false),
        ]);
        let e = iceberg_schema(&required, Some(&table), 9).expect_err("required");
        assert!(e.contains(r#""extra""#) && e.contains("nullable"), "{e}");
        let retyped = Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("name", DataType::Utf8, true),
        ]);
        let e = iceberg_schema(&retyped, Some(&table), 9).expect_err("retyped");
        assert!(e.contains(r#""id""#) && e.contains("long"), "{e}");
        let dropped = Schema::new(vec![Field::new("id", DataType::Int64, false)]);
        assert!(iceberg_schema(&dropped, Some(&table), 9).is_err());
    }

    #[test]
    fn unsupported_types_name_the_column() {
        for (t, needle) in [
            (DataType::UInt32, "unsigned"),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                "timestamp[us]",
            ),
            (DataType::Decimal256(50, 2), "decimal128"),
        ] {
            let s = Schema::new(vec![Field::new("c", t, true)]);
            let e = iceberg_schema(&s, None, 0).expect_err("unsupported");
            assert!(e.contains(r#"column "c""#) && e.contains(needle), "{e}");
        }
    }
}
