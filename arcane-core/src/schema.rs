//! [`FieldConfig`]: the columns of an explicit schema in a spec, and their type names — one
//! syntax for every schema of a spec (sources and the sink).

use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, Result};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One column of an explicit schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldConfig {
    /// The column name (the JSON key, the CSV column in header order, or the Parquet column).
    pub name: String,
    /// The column type: `bool`, `int8`, `int16`, `int32`, `int64`, `uint8`, `uint16`,
    /// `uint32`, `uint64`, `float32`, `float64`, `utf8` (or `string`), `large_utf8`,
    /// `date32`, `date64`, `timestamp[s|ms|us|ns]` or with a time zone
    /// `timestamp[ms, UTC]` (UTC or an offset such as `+01:00`), `decimal128(precision, scale)`;
    /// any other Arrow type in Arrow's own syntax (e.g. `List(Int64)`).
    #[serde(rename = "type", alias = "dataType")]
    pub data_type: String,
    /// Whether the column may be null or missing (default true). A record without a value
    /// for a non-nullable column is dead-lettered.
    #[serde(default = "default_true")]
    pub nullable: bool,
}

impl FieldConfig {
    /// A nullable column.
    pub fn new(name: impl Into<String>, data_type: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            data_type: data_type.into(),
            nullable: true,
        }
    }

    /// Make the column non-nullable.
    pub fn required(mut self) -> Self {
        self.nullable = false;
        self
    }
}

fn default_true() -> bool {
    true
}

/// The Arrow schema of `fields`; `field` is the list's path in the spec for errors
/// (`spec.source.schema`), so an error names the column: `spec.source.schema[2].type`.
pub fn schema_from_fields(fields: &[FieldConfig], field: &str) -> Result<SchemaRef> {
    if fields.is_empty() {
        return Err(Error::config(
            field,
            "the schema has no fields; list the columns (name, type, nullable)",
        ));
    }
    let mut out = Vec::with_capacity(fields.len());
    for (i, f) in fields.iter().enumerate() {
        if f.name.is_empty() {
            return Err(Error::config(
                format!("{field}[{i}].name"),
                "the column name is empty",
            ));
        }
        if fields[..i].iter().any(|other| other.name == f.name) {
            return Err(Error::config(
                format!("{field}[{i}].name"),
                format!("column \"{}\" is listed twice", f.name),
            ));
        }
        let data_type = parse_type(&f.data_type)
            .map_err(|message| Error::config(format!("{field}[{i}].type"), message))?;
        out.push(Field::new(&f.name, data_type, f.nullable));
    }
    Ok(Arc::new(Schema::new(out)))
}

/// The names of UTC a time zone may be given as.
pub fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "utc" | "Z" | "Etc/UTC" | "+00:00")
}

/// Parse a type name of [`FieldConfig::data_type`].
pub fn parse_type(name: &str) -> Result<DataType, String> {
    let trimmed = name.trim();
    let lower = trimmed.to_ascii_lowercase();
    let simple = match lower.as_str() {
        "bool" | "boolean" => Some(DataType::Boolean),
        "int8" => Some(DataType::Int8),
        "int16" => Some(DataType::Int16),
        "int32" => Some(DataType::Int32),
        "int64" => Some(DataType::Int64),
        "uint8" => Some(DataType::UInt8),
        "uint16" => Some(DataType::UInt16),
        "uint32" => Some(DataType::UInt32),
        "uint64" => Some(DataType::UInt64),
        "float32" => Some(DataType::Float32),
        "float64" => Some(DataType::Float64),
        "utf8" | "string" => Some(DataType::Utf8),
        "large_utf8" => Some(DataType::LargeUtf8),
        "date32" => Some(DataType::Date32),
        "date64" => Some(DataType::Date64),
        _ => None,
    };
    if let Some(t) = simple {
        return Ok(t);
    }
    if let Some(inner) = lower
        .strip_prefix("timestamp[")
        .and_then(|r| r.strip_suffix(']'))
    {
        // Keep the time zone's original case (`Europe/Amsterdam`).
        let original = &trimmed["timestamp[".len()..trimmed.len() - 1];
        let (unit, tz) = match inner.split_once(',') {
            Some((unit, _)) => {
                let tz = original
                    .split_once(',')
                    .map(|(_, tz)| tz.trim())
                    .unwrap_or_default();
                (unit.trim(), Some(tz))
            }
            None => (inner.trim(), None),
        };
        let unit = match unit {
            "s" => TimeUnit::Second,
            "ms" => TimeUnit::Millisecond,
            "us" => TimeUnit::Microsecond,
            "ns" => TimeUnit::Nanosecond,
            other => {
                return Err(format!(
                    "unknown time unit \"{other}\" in \"{name}\"; use s, ms, us or ns, e.g. timestamp[ms, UTC]"
                ));
            }
        };
        if let Some(tz) = tz {
            let offset = tz.len() == 6
                && (tz.starts_with('+') || tz.starts_with('-'))
                && tz.as_bytes()[3] == b':';
            if !(is_utc(tz) || offset) {
                return Err(format!(
                    "time zone \"{tz}\" in \"{name}\" is not supported; use UTC or an offset such as +01:00, e.g. timestamp[ms, UTC]"
                ));
            }
        }
        return Ok(DataType::Timestamp(unit, tz.map(Into::into)));
    }
    if let Some(inner) = lower
        .strip_prefix("decimal128(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let parsed = inner
            .split_once(',')
            .and_then(|(p, s)| Some((p.trim().parse::<u8>().ok()?, s.trim().parse::<i8>().ok()?)));
        return match parsed {
            Some((p, s)) if (1..=38).contains(&p) && i16::from(s) <= i16::from(p) => {
                Ok(DataType::Decimal128(p, s))
            }
            _ => Err(format!(
                "\"{name}\" is not a valid decimal; write decimal128(precision, scale) with precision 1..=38 and scale <= precision"
            )),
        };
    }
    DataType::from_str(trimmed).map_err(|_| {
        format!(
            "unknown type \"{name}\"; use bool, int8..int64, uint8..uint64, float32, float64, utf8, large_utf8, date32, date64, timestamp[ms, UTC], decimal128(10, 2) or an Arrow type such as List(Int64)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_names_parse() {
        assert_eq!(parse_type("int64"), Ok(DataType::Int64));
        assert_eq!(parse_type("string"), Ok(DataType::Utf8));
        assert_eq!(
            parse_type("timestamp[ms, UTC]"),
            Ok(DataType::Timestamp(
                TimeUnit::Millisecond,
                Some("UTC".into())
            ))
        );
        assert_eq!(
            parse_type("timestamp[us, +01:00]"),
            Ok(DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("+01:00".into())
            ))
        );
        assert!(parse_type("timestamp[us, Europe/Amsterdam]").is_err());
        assert_eq!(
            parse_type("timestamp[ns]"),
            Ok(DataType::Timestamp(TimeUnit::Nanosecond, None))
        );
        assert_eq!(
            parse_type("decimal128(10, 2)"),
            Ok(DataType::Decimal128(10, 2))
        );
        assert_eq!(
            parse_type("List(Int64)"),
            Ok(DataType::new_list(DataType::Int64, true))
        );
    }

    #[test]
    fn unknown_names_say_what_is_accepted() {
        let err = parse_type("integer").unwrap_err();
        assert!(err.contains("unknown type \"integer\""), "{err}");
        let err = parse_type("timestamp[days]").unwrap_err();
        assert!(err.contains("unknown time unit"), "{err}");
        assert!(parse_type("decimal128(40, 2)").is_err());
    }
}
