//! PostgreSQL column types → Arrow types, and text-format values → Arrow arrays.
//!
//! Values arrive in PostgreSQL's text format from both the snapshot (`col::text`) and
//! `pgoutput`, with the session set to `DateStyle=ISO`, `TimeZone=UTC`,
//! `extra_float_digits=3`, `bytea_output=hex`, so one parser serves both phases.

use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_schema::{DataType, TimeUnit};
use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Timelike};

/// Map a PostgreSQL type (OID and type modifier) to its Arrow type; `None` when unsupported.
pub fn arrow_type(type_oid: u32, typmod: i32) -> Option<DataType> {
    Some(match type_oid {
        16 => DataType::Boolean,
        21 => DataType::Int16,
        23 => DataType::Int32,
        20 => DataType::Int64,
        700 => DataType::Float32,
        701 => DataType::Float64,
        1700 => {
            // numeric(p, s): typmod = ((p << 16) | s) + 4; unconstrained numeric has no typmod.
            if typmod >= 4 {
                let t = typmod - 4;
                let (p, s) = ((t >> 16) & 0xFFFF, t & 0xFFFF);
                if (1..=38).contains(&p) && s <= p {
                    DataType::Decimal128(p as u8, s as i8)
                } else {
                    DataType::Utf8
                }
            } else {
                DataType::Utf8
            }
        }
        // text, varchar, bpchar, name, json, jsonb, uuid, xml, citext-like domains are not
        // resolved (their OID is the domain's).
        25 | 1043 | 1042 | 19 | 114 | 3802 | 2950 | 142 => DataType::Utf8,
        17 => DataType::Binary,
        1082 => DataType::Date32,
        1083 => DataType::Time64(TimeUnit::Microsecond),
        1114 => DataType::Timestamp(TimeUnit::Microsecond, None),
        1184 => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        _ => return None,
    })
}

/// The PostgreSQL types accepted (for error messages).
pub const SUPPORTED_TYPES: &str = "boolean, smallint, integer, bigint, real, double precision, numeric, text, varchar, char, name, json, jsonb, uuid, xml, bytea, date, time, timestamp, timestamptz";

/// Builds one Arrow column from text-format values.
#[derive(Debug)]
pub(crate) enum ColumnBuilder {
    /// boolean
    Bool(BooleanBuilder),
    /// smallint
    I16(Int16Builder),
    /// integer
    I32(Int32Builder),
    /// bigint
    I64(Int64Builder),
    /// real
    F32(Float32Builder),
    /// double precision
    F64(Float64Builder),
    /// numeric(p, s)
    Decimal(Decimal128Builder, u8, i8),
    /// text-like
    Utf8(StringBuilder),
    /// bytea
    Binary(BinaryBuilder),
    /// date
    Date(Date32Builder),
    /// time
    Time(Time64MicrosecondBuilder),
    /// timestamp / timestamptz
    Timestamp(TimestampMicrosecondBuilder, Option<Arc<str>>),
}

impl ColumnBuilder {
    /// A builder for `data_type` (one of [`arrow_type`]'s results).
    pub(crate) fn new(data_type: &DataType) -> Self {
        match data_type {
            DataType::Boolean => Self::Bool(BooleanBuilder::new()),
            DataType::Int16 => Self::I16(Int16Builder::new()),
            DataType::Int32 => Self::I32(Int32Builder::new()),
            DataType::Int64 => Self::I64(Int64Builder::new()),
            DataType::Float32 => Self::F32(Float32Builder::new()),
            DataType::Float64 => Self::F64(Float64Builder::new()),
            DataType::Decimal128(p, s) => Self::Decimal(Decimal128Builder::new(), *p, *s),
            DataType::Binary => Self::Binary(BinaryBuilder::new()),
            DataType::Date32 => Self::Date(Date32Builder::new()),
            DataType::Time64(_) => Self::Time(Time64MicrosecondBuilder::new()),
            DataType::Timestamp(_, tz) => {
                Self::Timestamp(TimestampMicrosecondBuilder::new(), tz.clone())
            }
            _ => Self::Utf8(StringBuilder::new()),
        }
    }

    /// Append NULL.
    pub(crate) fn append_null(&mut self) {
        match self {
            Self::Bool(b) => b.append_null(),
            Self::I16(b) => b.append_null(),
            Self::I32(b) => b.append_null(),
            Self::I64(b) => b.append_null(),
            Self::F32(b) => b.append_null(),
            Self::F64(b) => b.append_null(),
            Self::Decimal(b, ..) => b.append_null(),
            Self::Utf8(b) => b.append_null(),
            Self::Binary(b) => b.append_null(),
            Self::Date(b) => b.append_null(),
            Self::Time(b) => b.append_null(),
            Self::Timestamp(b, _) => b.append_null(),
        }
    }

    /// Parse a text-format value; on error nothing is appended.
    pub(crate) fn append_text(&mut self, v: &str) -> Result<(), String> {
        let bad = |what: &str| format!("{v:?} is not a valid {what}");
        match self {
            Self::Bool(b) => match v {
                "t" | "true" => b.append_value(true),
                "f" | "false" => b.append_value(false),
                _ => return Err(bad("boolean")),
            },
            Self::I16(b) => b.append_value(v.parse().map_err(|_| bad("smallint"))?),
            Self::I32(b) => b.append_value(v.parse().map_err(|_| bad("integer"))?),
            Self::I64(b) => b.append_value(v.parse().map_err(|_| bad("bigint"))?),
            Self::F32(b) => b.append_value(v.parse().map_err(|_| bad("real"))?),
            Self::F64(b) => b.append_value(v.parse().map_err(|_| bad("double precision"))?),
            Self::Decimal(b, p, s) => {
                let d = arrow_cast::parse::parse_decimal::<arrow_array::types::Decimal128Type>(
                    v, *p, *s,
                )
                .map_err(|_| bad(&format!("numeric({p},{s}) (NaN and infinity do not fit)")))?;
                b.append_value(d)
            }
            Self::Utf8(b) => b.append_value(v),
            Self::Binary(b) => {
                let hex = v.strip_prefix("\\x").ok_or_else(|| bad("hex bytea"))?;
                b.append_value(decode_hex(hex).ok_or_else(|| bad("hex bytea"))?)
            }
            Self::Date(b) => {
                let d = NaiveDate::parse_from_str(v, "%Y-%m-%d")
                    .map_err(|_| bad("date (infinity and BC dates are not supported)"))?;
                let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
                b.append_value((d - epoch).num_days() as i32)
            }
            Self::Time(b) => {
                let t = NaiveTime::parse_from_str(v, "%H:%M:%S%.f").map_err(|_| bad("time"))?;
                b.append_value(
                    i64::from(t.num_seconds_from_midnight()) * 1_000_000
                        + i64::from(t.nanosecond() / 1_000),
                )
            }
            Self::Timestamp(b, tz) => {
                // timestamptz prints as `2026-01-02 03:04:05.123456+00` with TimeZone=UTC.
                let text = if tz.is_some() {
                    v.strip_suffix("+00")
                        .ok_or_else(|| bad("UTC timestamptz"))?
                } else {
                    v
                };
                let ts = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                    .map_err(|_| bad("timestamp (infinity and BC are not supported)"))?;
                b.append_value(ts.and_utc().timestamp_micros())
            }
        }
        Ok(())
    }

    /// The finished column.
    pub(crate) fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Bool(b) => Arc::new(b.finish()),
            Self::I16(b) => Arc::new(b.finish()),
            Self::I32(b) => Arc::new(b.finish()),
            Self::I64(b) => Arc::new(b.finish()),
            Self::F32(b) => Arc::new(b.finish()),
            Self::F64(b) => Arc::new(b.finish()),
            Self::Decimal(b, p, s) => Arc::new(
                b.finish()
                    .with_precision_and_scale(*p, *s)
                    .unwrap_or_else(|_| arrow_array::Decimal128Array::from(Vec::<i128>::new())),
            ),
            Self::Utf8(b) => Arc::new(b.finish()),
            Self::Binary(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Time(b) => Arc::new(b.finish()),
            Self::Timestamp(b, tz) => Arc::new(b.finish().with_timezone_opt(tz.clone())),
        }
    }

    /// Values appended so far.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        use arrow_array::builder::ArrayBuilder;
        match self {
            Self::Bool(b) => b.len(),
            Self::I16(b) => b.len(),
            Self::I32(b) => b.len(),
            Self::I64(b) => b.len(),
            Self::F32(b) => b.len(),
            Self::F64(b) => b.len(),
            Self::Decimal(b, ..) => b.len(),
            Self::Utf8(b) => b.len(),
            Self::Binary(b) => b.len(),
            Self::Date(b) => b.len(),
            Self::Time(b) => b.len(),
            Self::Timestamp(b, _) => b.len(),
        }
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Date32Type, TimestampMicrosecondType};

    #[test]
    fn parses_text_values_of_each_type() {
        let mut ts = ColumnBuilder::new(&arrow_type(1184, -1).unwrap());
        ts.append_text("1970-01-01 00:00:01.5+00").unwrap();
        assert!(ts.append_text("1970-01-01 00:00:01+02").is_err());
        let a = ts.finish();
        assert_eq!(
            a.as_primitive::<TimestampMicrosecondType>().value(0),
            1_500_000
        );

        let mut d = ColumnBuilder::new(&arrow_type(1082, -1).unwrap());
        d.append_text("1970-01-11").unwrap();
        assert_eq!(d.finish().as_primitive::<Date32Type>().value(0), 10);

        let numeric = arrow_type(1700, ((10 << 16) | 2) + 4).unwrap();
        assert_eq!(numeric, DataType::Decimal128(10, 2));
        let mut n = ColumnBuilder::new(&numeric);
        n.append_text("12.34").unwrap();
        assert!(n.append_text("NaN").is_err());
        assert_eq!(n.len(), 1);

        let mut b = ColumnBuilder::new(&DataType::Binary);
        b.append_text("\\x00ff").unwrap();
        assert_eq!(b.finish().as_binary::<i32>().value(0), &[0u8, 255]);
        assert_eq!(arrow_type(600, -1), None); // point
    }
}
