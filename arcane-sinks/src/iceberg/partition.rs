//! Identity partition specs from `sink.partitionBy.columns`: the spec a new table gets, the
//! fields of a table's default spec, each data file's partition tuple (parsed back from the
//! Hive directory the sink wrote it under), its Avro form in a manifest's
//! `data_file.partition`, and a manifest list's field summaries.

use serde_json::{Value, json};

use super::avro::{Datum, write_bool, write_long, write_string, write_union_branch};
use super::manifest::PartitionSummary;

/// The first partition field id (Iceberg's `PARTITION_DATA_ID_START`).
pub const FIRST_FIELD_ID: i64 = 1000;

/// The Iceberg type of a partition field (its source column's): the types whose Hive
/// directory value (Arrow's display form) reads back exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `int`.
    Int,
    /// `long`.
    Long,
    /// `string`.
    Str,
    /// `boolean`.
    Bool,
    /// `date` (days since 1970-01-01).
    Date,
}

impl Kind {
    fn of(iceberg_type: &Value) -> Option<Self> {
        Some(match iceberg_type.as_str()? {
            "int" => Kind::Int,
            "long" => Kind::Long,
            "string" => Kind::Str,
            "boolean" => Kind::Bool,
            "date" => Kind::Date,
            _ => return None,
        })
    }
}

/// A partition value (`Long` for int, long and date).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PartitionValue {
    /// int, long, date.
    Long(i64),
    /// string.
    Str(String),
    /// boolean.
    Bool(bool),
}

/// A file's partition tuple: one value per spec field, `None` for null.
pub type Tuple = Vec<Option<PartitionValue>>;

/// One identity field of a partition spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// `field-id`.
    pub field_id: i64,
    /// `name`.
    pub name: String,
    /// `source-id`.
    pub source_id: i64,
    /// The source column's name.
    pub column: String,
    /// The source column's type.
    pub kind: Kind,
}

/// The top-level column `name` of Iceberg schema `schema`: its id and partition kind.
fn column(schema: &Value, name: &str) -> Result<(i64, Kind), String> {
    let f = schema["fields"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["name"] == name))
        .ok_or_else(|| {
            format!("sink.partitionBy.columns names {name:?}, which is not a top-level column of the stream's schema")
        })?;
    let kind = Kind::of(&f["type"]).ok_or_else(|| {
        format!(
            "sink.partitionBy.columns names {name:?}, of Iceberg type {}; an identity partition of an Iceberg table is written for int, long, string, boolean and date columns: partition by one of those, or drop it from sink.partitionBy",
            f["type"]
        )
    })?;
    let id = f["id"]
        .as_i64()
        .ok_or_else(|| format!("column {name:?} has no id in the Iceberg schema"))?;
    Ok((id, kind))
}

/// The spec of a new table: one identity field per column, ids from [`FIRST_FIELD_ID`].
pub fn new_spec(columns: &[String], schema: &Value) -> Result<Vec<Field>, String> {
    columns
        .iter()
        .zip(FIRST_FIELD_ID..)
        .map(|(c, field_id)| {
            let (source_id, kind) = column(schema, c)?;
            Ok(Field {
                field_id,
                name: c.clone(),
                source_id,
                column: c.clone(),
                kind,
            })
        })
        .collect()
}

/// The fields of table metadata `m`'s default spec, resolved against its current schema. An
/// error says what Arcane does not write (a transform other than identity, a source type
/// other than int, long, string, boolean or date).
pub fn table_spec(m: &Value) -> Result<Vec<Field>, String> {
    let spec_id = m["default-spec-id"].as_i64().unwrap_or(0);
    let Some(spec) = m["partition-specs"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["spec-id"].as_i64() == Some(spec_id)))
    else {
        return Ok(Vec::new());
    };
    let schema_id = m["current-schema-id"].as_i64().unwrap_or(0);
    let schema = m["schemas"]
        .as_array()
        .and_then(|s| {
            s.iter()
                .find(|s| s["schema-id"].as_i64() == Some(schema_id))
        })
        .cloned()
        .unwrap_or(Value::Null);
    spec["fields"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|f| {
            let name = f["name"].as_str().unwrap_or_default().to_string();
            if f["transform"] != "identity" {
                return Err(format!(
                    "its partition field {name:?} has transform {}; Arcane writes identity partitions only (sink.partitionBy.columns)",
                    f["transform"]
                ));
            }
            let source_id = f["source-id"].as_i64().unwrap_or(-1);
            let col = schema["fields"]
                .as_array()
                .and_then(|fs| fs.iter().find(|c| c["id"].as_i64() == Some(source_id)))
                .ok_or_else(|| {
                    format!("its partition field {name:?} has source column {source_id}, which is not a top-level column of the current schema")
                })?;
            let column = col["name"].as_str().unwrap_or_default().to_string();
            let kind = Kind::of(&col["type"]).ok_or_else(|| {
                format!(
                    "its partition field {name:?} is on column {column:?} of type {}, which Arcane does not write partition values of",
                    col["type"]
                )
            })?;
            Ok(Field {
                field_id: f["field-id"].as_i64().unwrap_or(-1),
                name,
                source_id,
                column,
                kind,
            })
        })
        .collect()
}

/// A spec's fields as metadata JSON (`partition-specs[].fields`, a manifest's
/// `partition-spec` header).
pub fn spec_json(fields: &[Field]) -> Value {
    Value::Array(
        fields
            .iter()
            .map(|f| {
                json!({"source-id": f.source_id, "field-id": f.field_id, "name": f.name, "transform": "identity"})
            })
            .collect(),
    )
}

/// An Avro name from a column name (letters, digits and `_`; not starting with a digit).
fn avro_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

/// The Avro schema of `data_file.partition` (record `r102`) for a spec.
pub fn avro_record(fields: &[Field]) -> String {
    let fs: Vec<Value> = fields
        .iter()
        .map(|f| {
            let ty = match f.kind {
                Kind::Int => json!("int"),
                Kind::Long => json!("long"),
                Kind::Str => json!("string"),
                Kind::Bool => json!("boolean"),
                Kind::Date => json!({"type": "int", "logicalType": "date"}),
            };
            json!({"name": avro_name(&f.name), "type": ["null", ty], "default": null, "field-id": f.field_id})
        })
        .collect();
    json!({"type": "record", "name": "r102", "fields": fs}).to_string()
}

/// Write a tuple as the record of [`avro_record`].
pub fn write_tuple(out: &mut Vec<u8>, fields: &[Field], tuple: &Tuple) {
    for (i, _) in fields.iter().enumerate() {
        let v = tuple.get(i).and_then(Option::as_ref);
        write_union_branch(out, v.is_some());
        match v {
            Some(PartitionValue::Long(n)) => write_long(out, *n),
            Some(PartitionValue::Str(s)) => write_string(out, s),
            Some(PartitionValue::Bool(b)) => write_bool(out, *b),
            None => {}
        }
    }
}

/// A file's tuple from the values of its directory (as `column_values` read them).
pub fn parse(fields: &[Field], values: &[Option<String>]) -> Result<Tuple, String> {
    fields
        .iter()
        .zip(values)
        .map(|(f, v)| {
            let Some(v) = v else { return Ok(None) };
            let bad = || {
                format!(
                    "partition value {v:?} of column {:?} is not a {:?}",
                    f.column, f.kind
                )
            };
            Ok(Some(match f.kind {
                Kind::Int => PartitionValue::Long(i64::from(v.parse::<i32>().map_err(|_| bad())?)),
                Kind::Long => PartitionValue::Long(v.parse::<i64>().map_err(|_| bad())?),
                Kind::Str => PartitionValue::Str(v.clone()),
                Kind::Bool => PartitionValue::Bool(v.parse::<bool>().map_err(|_| bad())?),
                Kind::Date => {
                    let d = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| bad())?;
                    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
                    PartitionValue::Long((d - epoch).num_days())
                }
            }))
        })
        .collect()
}

/// A tuple read back from a manifest's `data_file.partition` (fields by field id; a field
/// the record lacks is null).
pub fn from_datum(fields: &[Field], partition: Option<&Datum>) -> Tuple {
    fields
        .iter()
        .map(|f| match partition.and_then(|p| p.field(f.field_id)) {
            Some(Datum::Long(n)) => Some(PartitionValue::Long(*n)),
            Some(Datum::Str(s)) => Some(PartitionValue::Str(s.clone())),
            Some(Datum::Bool(b)) => Some(PartitionValue::Bool(*b)),
            _ => None,
        })
        .collect()
}

/// Iceberg's single-value serialization of a value of `kind`.
fn single_value(kind: Kind, v: &PartitionValue) -> Vec<u8> {
    match v {
        PartitionValue::Long(n) => match kind {
            Kind::Int | Kind::Date => (*n as i32).to_le_bytes().to_vec(),
            _ => n.to_le_bytes().to_vec(),
        },
        PartitionValue::Str(s) => s.as_bytes().to_vec(),
        PartitionValue::Bool(b) => vec![u8::from(*b)],
    }
}

/// A manifest list entry's `partitions`: per field, whether a tuple has a null and the
/// lowest and highest values.
pub fn summaries<'a>(
    fields: &[Field],
    tuples: impl Iterator<Item = &'a Tuple> + Clone,
) -> Vec<PartitionSummary> {
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let values = tuples.clone().map(|t| t.get(i).cloned().flatten());
            let contains_null = values.clone().any(|v| v.is_none());
            let present = values.flatten();
            let lo = present.clone().min();
            let hi = present.max();
            (
                contains_null,
                None,
                lo.map(|v| single_value(f.kind, &v)),
                hi.map(|v| single_value(f.kind, &v)),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_tuples_and_summaries() {
        let schema = json!({"type": "struct", "fields": [
            {"id": 1, "name": "id", "required": true, "type": "long"},
            {"id": 2, "name": "city", "required": false, "type": "string"},
            {"id": 3, "name": "day", "required": false, "type": "date"},
            {"id": 4, "name": "x", "required": false, "type": "double"}]});
        let spec = new_spec(&["city".into(), "day".into()], &schema).expect("spec");
        assert_eq!(
            spec_json(&spec),
            json!([{"source-id": 2, "field-id": 1000, "name": "city", "transform": "identity"},
                   {"source-id": 3, "field-id": 1001, "name": "day", "transform": "identity"}])
        );
        let e = new_spec(&["x".into()], &schema).expect_err("double");
        assert!(e.contains("sink.partitionBy") && e.contains("\"x\""), "{e}");
        let m = json!({"default-spec-id": 0, "current-schema-id": 0,
            "schemas": [{"schema-id": 0, "fields": schema["fields"]}],
            "partition-specs": [{"spec-id": 0, "fields": spec_json(&spec)}]});
        assert_eq!(table_spec(&m).expect("table spec"), spec);
        let a = parse(&spec, &[Some("a/b".into()), Some("1970-01-03".into())]).expect("a");
        assert_eq!(
            a,
            [
                Some(PartitionValue::Str("a/b".into())),
                Some(PartitionValue::Long(2))
            ]
        );
        let b = parse(&spec, &[None, Some("1970-01-02".into())]).expect("b");
        assert!(parse(&spec, &[None, Some("x".into())]).is_err());
        let s = summaries(&spec, [a, b].iter());
        assert_eq!(
            s[0],
            (true, None, Some(b"a/b".to_vec()), Some(b"a/b".to_vec()))
        );
        assert_eq!(
            s[1],
            (
                false,
                None,
                Some(1i32.to_le_bytes().to_vec()),
                Some(2i32.to_le_bytes().to_vec())
            )
        );
        let _: Value = serde_json::from_str(&avro_record(&spec)).expect("json");
    }
}
