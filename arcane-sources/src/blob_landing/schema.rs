//! Column type names of an explicit schema.

use std::str::FromStr;

use arrow_schema::{DataType, TimeUnit};

/// Parse a type name of [`FieldConfig::data_type`](super::FieldConfig::data_type).
pub(crate) fn parse_type(name: &str) -> Result<DataType, String> {
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
            if !(super::text::is_utc(tz) || offset) {
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
