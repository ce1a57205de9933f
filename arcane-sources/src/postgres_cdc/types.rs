//! PostgreSQL column types → Arrow types, and text-format values → Arrow arrays.
//!
//! Values arrive in PostgreSQL's text format from both the snapshot (`col::text`) and
//! `pgoutput`, with the session set to `DateStyle=ISO`, `TimeZone=UTC`,
//! `extra_float_digits=3`, `bytea_output=hex`, so one parser serves both phases.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, ListArray};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer};
use arrow_schema::{DataType, Field, FieldRef, TimeUnit};
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
pub const SUPPORTED_TYPES: &str = "boolean, smallint, integer, bigint, real, double precision, numeric, text, varchar, char, name, json, jsonb, uuid, xml, bytea, date, time, timestamp, timestamptz, enums, domains over these, and one-dimensional arrays of them";

/// What the catalog (`pg_type`) says about a type that [`arrow_type`] does not know by OID:
/// enums, domains and arrays, whose OIDs are not fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TypeMeta {
    /// `typtype`: `b` base, `e` enum, `d` domain, `c` composite, `r` range, `p` pseudo.
    pub(crate) typtype: u8,
    /// `typcategory`: `A` for arrays.
    pub(crate) category: u8,
    /// `typelem`: the element type of an array, else 0.
    pub(crate) elem: u32,
    /// `typbasetype`: the type a domain is over, else 0.
    pub(crate) base: u32,
    /// `typtypmod`: a domain's type modifier (e.g. its numeric precision), else -1.
    pub(crate) base_typmod: i32,
}

/// The catalog query behind [`TypeMeta`] (`$1`: the OIDs, `oid[]`), following domains and
/// array elements one level (their element/base types are fetched by a second round).
pub(crate) const TYPE_META_SQL: &str = "SELECT oid, typtype::text, typcategory::text, typelem, typbasetype, typtypmod \
                                        FROM pg_type WHERE oid = ANY($1)";

/// Map a column's type to Arrow with the catalog's help: the built-in types of
/// [`arrow_type`]; an **enum** becomes `Utf8` (its label); a **domain** the type it is over
/// (with the domain's precision when the column has none); a one-dimensional **array** a
/// `List` of its element type (`item`, nullable). `None` when unsupported (composite, range,
/// arrays of arrays of unsupported elements, ...).
pub(crate) fn resolve_type(
    type_oid: u32,
    typmod: i32,
    meta: &HashMap<u32, TypeMeta>,
) -> Option<DataType> {
    resolve(type_oid, typmod, meta, 0)
}

fn resolve(
    type_oid: u32,
    typmod: i32,
    meta: &HashMap<u32, TypeMeta>,
    depth: u8,
) -> Option<DataType> {
    if let Some(dt) = arrow_type(type_oid, typmod) {
        return Some(dt);
    }
    // Domains over domains are legal; a bound keeps a catalog cycle from looping.
    if depth > 8 {
        return None;
    }
    let m = meta.get(&type_oid)?;
    match m.typtype {
        b'e' => Some(DataType::Utf8),
        b'd' => {
            let typmod = if typmod >= 0 { typmod } else { m.base_typmod };
            resolve(m.base, typmod, meta, depth + 1)
        }
        b'b' if m.category == b'A' && m.elem != 0 => {
            // An array column's typmod is its element's (numeric(10,2)[]).
            match resolve(m.elem, typmod, meta, depth + 1)? {
                DataType::List(_) => None,
                item => Some(DataType::List(Arc::new(Field::new("item", item, true)))),
            }
        }
        _ => None,
    }
}

/// The OIDs [`resolve_type`] needs from the catalog to resolve `type_oid`, given what `meta`
/// already holds: empty when it can be resolved (or refused) without another query.
pub(crate) fn missing_meta(type_oid: u32, meta: &HashMap<u32, TypeMeta>) -> Vec<u32> {
    let mut oid = type_oid;
    for _ in 0..=8 {
        if arrow_type(oid, -1).is_some() || arrow_type(oid, 4).is_some() {
            return Vec::new();
        }
        let Some(m) = meta.get(&oid) else {
            return vec![oid];
        };
        oid = match m.typtype {
            b'd' => m.base,
            b'b' if m.category == b'A' && m.elem != 0 => m.elem,
            _ => return Vec::new(),
        };
    }
    Vec::new()
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// Days between the Unix epoch and PostgreSQL's.
const PG_EPOCH_DAYS: i32 = 10_957;

/// The type a snapshot casts a column of Arrow type `dt` to, so that binary `COPY` sends it
/// in a format [`ColumnBuilder::append_binary`] reads: the fixed-size types as themselves
/// (a domain as its base type), everything else as `text` (its bytes are the text format).
pub(crate) fn binary_cast(dt: &DataType) -> &'static str {
    match dt {
        DataType::Boolean => "bool",
        DataType::Int16 => "int2",
        DataType::Int32 => "int4",
        DataType::Int64 => "int8",
        DataType::Float32 => "float4",
        DataType::Float64 => "float8",
        DataType::Binary => "bytea",
        DataType::Decimal128(..) => "numeric",
        DataType::Date32 => "date",
        DataType::Time64(_) => "time",
        DataType::Timestamp(_, None) => "timestamp",
        DataType::Timestamp(_, Some(_)) => "timestamptz",
        _ => "text",
    }
}

/// A `numeric` in PostgreSQL's binary format (`ndigits`, `weight`, `sign`, `dscale`, then
/// `ndigits` base-10000 digits, the first one worth 10000^`weight`) as a `Decimal128(p, s)`
/// value, i.e. scaled by 10^`s`. NaN, infinities, values with more than `p` digits and values
/// with non-zero digits beyond the scale are refused, never rounded.
fn numeric_binary(v: &[u8], p: u8, s: i8) -> Result<i128, String> {
    let word = |i: usize| v.get(i..i + 2).map(|w| u16::from_be_bytes([w[0], w[1]]));
    let (Some(ndigits), Some(weight), Some(sign)) = (word(0), word(2), word(4)) else {
        return Err(format!("{} bytes are not a binary numeric", v.len()));
    };
    let (ndigits, weight) = (usize::from(ndigits), i64::from(weight as i16));
    if v.len() != 8 + 2 * ndigits {
        return Err(format!(
            "{} bytes are not a binary numeric of {ndigits} digits",
            v.len()
        ));
    }
    let negative = match sign {
        0x0000 => false,
        0x4000 => true,
        _ => return Err(format!("NaN and infinity do not fit numeric({p},{s})")),
    };
    let too_big =
        || format!("the value has more than {p} digits, which do not fit numeric({p},{s})");
    let mut value: i128 = 0;
    for i in 0..ndigits {
        let digit = i128::from(word(8 + 2 * i).unwrap_or(0));
        if digit >= 10_000 {
            return Err(format!(
                "{digit} is not a base-10000 digit of a binary numeric"
            ));
        }
        // This digit's power of ten once scaled by 10^s.
        let exp = 4 * (weight - i as i64) + i64::from(s);
        let part = if exp >= 0 {
            u32::try_from(exp)
                .ok()
                .and_then(|e| 10i128.checked_pow(e))
                .and_then(|m| digit.checked_mul(m))
                .ok_or_else(too_big)?
        } else {
            let div = u32::try_from(-exp)
                .ok()
                .and_then(|e| 10i128.checked_pow(e))
                .unwrap_or(i128::MAX);
            if digit % div != 0 {
                return Err(format!(
                    "the value has non-zero digits beyond the scale of numeric({p},{s})"
                ));
            }
            digit / div
        };
        value = value.checked_add(part).ok_or_else(too_big)?;
    }
    if value >= 10i128.pow(u32::from(p)) {
        return Err(too_big());
    }
    Ok(if negative { -value } else { value })
}

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
    /// one-dimensional array: its elements, one offset per row (starting with 0), validity
    List {
        field: FieldRef,
        items: Box<ColumnBuilder>,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
    },
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
            DataType::List(field) => Self::List {
                field: field.clone(),
                items: Box::new(Self::new(field.data_type())),
                offsets: vec![0],
                nulls: NullBufferBuilder::new(0),
            },
            _ => Self::Utf8(StringBuilder::new()),
        }
    }

    /// An empty builder of the same column with room for `rows` values (and `bytes` bytes of
    /// variable-size values), so that a batch as large as the last one does not grow it step
    /// by step (each step a copy of what it holds).
    fn emptied(&self, rows: usize, bytes: usize) -> Self {
        match self {
            Self::Bool(_) => Self::Bool(BooleanBuilder::with_capacity(rows)),
            Self::I16(_) => Self::I16(Int16Builder::with_capacity(rows)),
            Self::I32(_) => Self::I32(Int32Builder::with_capacity(rows)),
            Self::I64(_) => Self::I64(Int64Builder::with_capacity(rows)),
            Self::F32(_) => Self::F32(Float32Builder::with_capacity(rows)),
            Self::F64(_) => Self::F64(Float64Builder::with_capacity(rows)),
            Self::Decimal(_, p, s) => Self::Decimal(Decimal128Builder::with_capacity(rows), *p, *s),
            Self::Utf8(_) => Self::Utf8(StringBuilder::with_capacity(rows, bytes)),
            Self::Binary(_) => Self::Binary(BinaryBuilder::with_capacity(rows, bytes)),
            Self::Date(_) => Self::Date(Date32Builder::with_capacity(rows)),
            Self::Time(_) => Self::Time(Time64MicrosecondBuilder::with_capacity(rows)),
            Self::Timestamp(_, tz) => {
                Self::Timestamp(TimestampMicrosecondBuilder::with_capacity(rows), tz.clone())
            }
            // The elements' count is not known per row: a list column starts small.
            Self::List { field, items, .. } => Self::List {
                field: field.clone(),
                items: Box::new(items.emptied(0, 0)),
                offsets: {
                    let mut offsets = Vec::with_capacity(rows + 1);
                    offsets.push(0);
                    offsets
                },
                nulls: NullBufferBuilder::new(rows),
            },
        }
    }

    /// The finished column, the builder left empty with room for as many values and bytes as
    /// it held (see [`ColumnBuilder::emptied`]).
    pub(crate) fn finish_sized(&mut self) -> ArrayRef {
        let bytes = match self {
            Self::Utf8(b) => b.values_slice().len(),
            Self::Binary(b) => b.values_slice().len(),
            _ => 0,
        };
        let fresh = self.emptied(self.len(), bytes);
        std::mem::replace(self, fresh).finish()
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
            Self::List { offsets, nulls, .. } => {
                offsets.push(offsets.last().copied().unwrap_or(0));
                nulls.append_null();
            }
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
            Self::List {
                field,
                items,
                offsets,
                nulls,
            } => {
                let elements =
                    parse_array(v).map_err(|why| format!("{v:?} is not a valid array: {why}"))?;
                // All or nothing: every element is checked before any is appended.
                let mut check = Self::new(field.data_type());
                for (i, e) in elements.iter().enumerate() {
                    if let Some(e) = e {
                        check
                            .append_text(e)
                            .map_err(|why| format!("array element {}: {why}", i + 1))?;
                    }
                }
                for e in &elements {
                    match e {
                        Some(e) => items.append_text(e)?,
                        None => items.append_null(),
                    }
                }
                let end = offsets.last().copied().unwrap_or(0) + elements.len() as i32;
                offsets.push(end);
                nulls.append_non_null();
            }
        }
        Ok(())
    }

    /// Append a value in PostgreSQL's binary format of the type [`binary_cast`] names for
    /// this column (the text format's bytes for the types cast to `text`); on error nothing
    /// is appended. Infinite dates and timestamps are refused, as in the text format.
    pub(crate) fn append_binary(&mut self, v: &[u8]) -> Result<(), String> {
        fn fixed<const N: usize>(v: &[u8], what: &str) -> Result<[u8; N], String> {
            v.try_into()
                .map_err(|_| format!("{} bytes are not a binary {what}", v.len()))
        }
        match self {
            Self::Bool(b) => b.append_value(fixed::<1>(v, "boolean")?[0] != 0),
            Self::I16(b) => b.append_value(i16::from_be_bytes(fixed(v, "smallint")?)),
            Self::I32(b) => b.append_value(i32::from_be_bytes(fixed(v, "integer")?)),
            Self::I64(b) => b.append_value(i64::from_be_bytes(fixed(v, "bigint")?)),
            Self::F32(b) => b.append_value(f32::from_be_bytes(fixed(v, "real")?)),
            Self::F64(b) => b.append_value(f64::from_be_bytes(fixed(v, "double precision")?)),
            Self::Binary(b) => b.append_value(v),
            Self::Date(b) => {
                let days = i32::from_be_bytes(fixed(v, "date")?);
                let unix = (days != i32::MAX && days != i32::MIN)
                    .then(|| days.checked_add(PG_EPOCH_DAYS))
                    .flatten()
                    .ok_or("an infinite date is not supported")?;
                b.append_value(unix)
            }
            Self::Time(b) => b.append_value(i64::from_be_bytes(fixed(v, "time")?)),
            Self::Timestamp(b, _) => {
                let us = i64::from_be_bytes(fixed(v, "timestamp")?);
                let unix = (us != i64::MAX && us != i64::MIN)
                    .then(|| us.checked_add(PG_EPOCH_US))
                    .flatten()
                    .ok_or("an infinite timestamp is not supported")?;
                b.append_value(unix)
            }
            Self::Decimal(b, p, s) => b.append_value(numeric_binary(v, *p, *s)?),
            Self::Utf8(_) | Self::List { .. } => {
                // Checked with SIMD; the standard library's check only to say what is wrong.
                let text =
                    simdutf8::basic::from_utf8(v).map_err(|_| match std::str::from_utf8(v) {
                        Err(e) => format!("not UTF-8 text: {e}"),
                        Ok(_) => "not UTF-8 text".to_string(),
                    })?;
                self.append_text(text)?
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
            Self::List {
                field,
                items,
                offsets,
                nulls,
            } => {
                let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                let values = items.finish();
                // Offsets, values and validity are built together: the array is valid.
                Arc::new(ListArray::new(
                    field.clone(),
                    offsets,
                    values,
                    nulls.finish(),
                ))
            }
        }
    }

    /// Values appended so far.
    pub(crate) fn len(&self) -> usize {
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
            Self::List { offsets, .. } => offsets.len().saturating_sub(1),
        }
    }
}

/// The elements of a one-dimensional array in PostgreSQL's text format (`{1,NULL,"a b"}`,
/// optionally with bounds `[0:2]={...}`): quoted elements with backslash escapes, unquoted
/// ones trimmed, an unquoted `NULL` (any case) is null. Arrays of more dimensions are refused.
pub(crate) fn parse_array(v: &str) -> Result<Vec<Option<String>>, &'static str> {
    let body = if v.starts_with('[') {
        v.split_once('=')
            .map(|(_, b)| b)
            .ok_or("bounds without `=`")?
    } else {
        v
    };
    let inner = body
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or("it does not start with `{` and end with `}`")?;
    let mut out = Vec::new();
    if inner.trim().is_empty() {
        return Ok(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        match chars.peek() {
            Some('{') => return Err("arrays of more than one dimension are not supported"),
            Some('"') => {
                chars.next();
                let mut e = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => e.push(chars.next().ok_or("it ends inside an escape")?),
                        Some('"') => break,
                        Some(c) => e.push(c),
                        None => return Err("a quoted element is not closed"),
                    }
                }
                out.push(Some(e));
                while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
            }
            _ => {
                let mut e = String::new();
                while let Some(c) = chars.next_if(|c| *c != ',') {
                    match c {
                        '\\' => e.push(chars.next().ok_or("it ends inside an escape")?),
                        '{' | '}' | '"' => return Err("unexpected `{`, `}` or `\"` in an element"),
                        c => e.push(c),
                    }
                }
                let e = e.trim_end();
                if e.is_empty() {
                    return Err("an element is empty");
                }
                out.push(if e.eq_ignore_ascii_case("NULL") {
                    None
                } else {
                    Some(e.to_string())
                });
            }
        }
        match chars.next() {
            Some(',') => {}
            None => return Ok(out),
            Some(_) => return Err("elements must be separated by `,`"),
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
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Date32Type, TimestampMicrosecondType};

    /// `numeric_send`'s form of a value: base-10000 digits, the first worth 10000^weight.
    fn numeric(sign: u16, weight: i16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = (digits.len() as u16).to_be_bytes().to_vec();
        v.extend(weight.to_be_bytes());
        v.extend(sign.to_be_bytes());
        v.extend(dscale.to_be_bytes());
        digits.iter().for_each(|d| v.extend(d.to_be_bytes()));
        v
    }

    #[test]
    fn binary_numerics_are_read_exactly_or_refused() {
        let ok = |v: Vec<u8>, p, s| numeric_binary(&v, p, s).unwrap();
        assert_eq!(ok(numeric(0, 0, 2, &[12, 3400]), 10, 2), 1234);
        assert_eq!(ok(numeric(0x4000, -1, 2, &[500]), 10, 2), -5); // -0.05
        assert_eq!(ok(numeric(0, 0, 0, &[]), 10, 2), 0);
        // 123456789.01: digits 1|2345|6789 . 0100
        assert_eq!(
            ok(numeric(0, 2, 2, &[1, 2345, 6789, 100]), 12, 2),
            12_345_678_901
        );
        // 10^36 (trailing zero digits are not sent) into numeric(38, 0) and (38, 1).
        assert_eq!(ok(numeric(0, 9, 0, &[1]), 38, 0), 10i128.pow(36));
        assert_eq!(ok(numeric(0, 9, 0, &[1]), 38, 1), 10i128.pow(37));
        // The largest numeric(38, 0).
        let mut nines = vec![99u16];
        nines.extend([9999; 9]);
        assert_eq!(ok(numeric(0, 9, 0, &nines), 38, 0), 10i128.pow(38) - 1);
        // 0.0001 into numeric(4, 4).
        assert_eq!(ok(numeric(0, -1, 4, &[1]), 4, 4), 1);

        let err = |v: Vec<u8>, p, s| numeric_binary(&v, p, s).unwrap_err();
        for special in [0xC000, 0xD000, 0xF000] {
            assert!(err(numeric(special, 0, 0, &[]), 10, 2).contains("NaN and infinity"));
        }
        assert!(err(numeric(0, 9, 0, &[1]), 38, 2).contains("more than 38 digits"));
        assert!(err(numeric(0, 2, 0, &[1, 0, 0]), 8, 0).contains("more than 8 digits"));
        assert!(err(numeric(0, 100, 0, &[1]), 38, 0).contains("more than 38 digits"));
        assert!(err(numeric(0, -1, 3, &[1234]), 10, 2).contains("beyond the scale"));
        assert!(err(numeric(0, 0, 0, &[10_000]), 10, 2).contains("base-10000 digit"));
        let mut short = numeric(0, 0, 2, &[12, 3400]);
        short.pop();
        assert!(err(short, 10, 2).contains("not a binary numeric"));
        assert!(err(vec![0, 1], 10, 2).contains("not a binary numeric"));
        // A builder keeps nothing of a refused value.
        let mut b = ColumnBuilder::new(&DataType::Decimal128(10, 2));
        assert!(b.append_binary(&numeric(0xC000, 0, 0, &[])).is_err());
        b.append_binary(&numeric(0, 0, 2, &[1, 5000])).unwrap();
        assert_eq!(b.len(), 1);
    }

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

    #[test]
    fn array_literals_split_into_elements() {
        let some = |v: &[&str]| v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
        assert_eq!(parse_array("{}"), Ok(vec![]));
        assert_eq!(parse_array("{1,2,3}"), Ok(some(&["1", "2", "3"])));
        assert_eq!(
            parse_array(r#"{"a b","with \"quote\"",NULL,"NULL", x ,"back\\slash","c,d"}"#),
            Ok(vec![
                Some("a b".into()),
                Some("with \"quote\"".into()),
                None,
                Some("NULL".into()),
                Some("x".into()),
                Some("back\\slash".into()),
                Some("c,d".into()),
            ])
        );
        assert_eq!(parse_array("[0:1]={7,8}"), Ok(some(&["7", "8"])));
        assert_eq!(parse_array(r#"{"\\x00ff"}"#), Ok(some(&["\\x00ff"])));
        for bad in [
            "{{1,2},{3,4}}",
            "1,2",
            "{1,,2}",
            "{\"open}",
            "{1",
            "{a\"b}",
            "{1,2,}",
        ] {
            assert!(parse_array(bad).is_err(), "{bad}");
        }
    }

    fn meta(typtype: u8, category: u8, elem: u32, base: u32, base_typmod: i32) -> TypeMeta {
        TypeMeta {
            typtype,
            category,
            elem,
            base,
            base_typmod,
        }
    }

    #[test]
    fn enums_domains_and_arrays_resolve_through_the_catalog() {
        let meta = HashMap::from([
            (90001, meta(b'e', b'E', 0, 0, -1)),
            (90002, meta(b'b', b'A', 90001, 0, -1)),
            (90003, meta(b'd', b'N', 0, 1700, ((5 << 16) | 1) + 4)),
            (1007, meta(b'b', b'A', 23, 0, -1)),
            (1231, meta(b'b', b'A', 1700, 0, -1)),
            (90004, meta(b'c', b'C', 0, 0, -1)),
            (90005, meta(b'b', b'A', 90004, 0, -1)),
        ]);
        let list = |dt: DataType| DataType::List(Arc::new(Field::new("item", dt, true)));
        assert_eq!(resolve_type(90001, -1, &meta), Some(DataType::Utf8));
        assert_eq!(resolve_type(90002, -1, &meta), Some(list(DataType::Utf8)));
        assert_eq!(
            resolve_type(90003, -1, &meta),
            Some(DataType::Decimal128(5, 1))
        );
        assert_eq!(resolve_type(1007, -1, &meta), Some(list(DataType::Int32)));
        assert_eq!(
            resolve_type(1231, ((10 << 16) | 2) + 4, &meta),
            Some(list(DataType::Decimal128(10, 2)))
        );
        assert_eq!(resolve_type(90004, -1, &meta), None);
        assert_eq!(resolve_type(90005, -1, &meta), None);
        assert_eq!(resolve_type(424242, -1, &meta), None);
        assert_eq!(missing_meta(424242, &meta), vec![424242]);
        assert!(missing_meta(90002, &meta).is_empty());
        assert!(missing_meta(25, &meta).is_empty());
    }

    #[test]
    fn an_array_row_is_appended_whole_or_not_at_all() {
        let meta = HashMap::from([(1007, meta(b'b', b'A', 23, 0, -1))]);
        let mut b = ColumnBuilder::new(&resolve_type(1007, -1, &meta).unwrap());
        b.append_text("{1,NULL,3}").unwrap();
        let err = b.append_text("{4,x,6}").unwrap_err();
        assert!(
            err.contains("array element 2") && err.contains("\"x\" is not a valid integer"),
            "{err}"
        );
        assert!(
            b.append_text("{{1}}")
                .unwrap_err()
                .contains("more than one dimension")
        );
        b.append_null();
        b.append_text("{}").unwrap();
        assert_eq!(b.len(), 3);
        let a = b.finish();
        let list = a.as_list::<i32>();
        assert_eq!(list.len(), 3);
        assert!(list.is_null(1));
        assert_eq!(list.value(2).len(), 0);
        let first = list.value(0);
        let ints = first.as_primitive::<arrow_array::types::Int32Type>();
        assert_eq!(ints.len(), 3);
        assert_eq!(
            (ints.value(0), ints.is_null(1), ints.value(2)),
            (1, true, 3)
        );
        // The builder starts afresh after finish.
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn a_builder_finished_with_room_for_the_next_batch_builds_it_as_a_new_one_would() {
        let meta = HashMap::from([(1007, meta(b'b', b'A', 23, 0, -1))]);
        let types = [
            arrow_type(16, -1).unwrap(),
            arrow_type(20, -1).unwrap(),
            arrow_type(1700, (12 << 16 | 2) + 4).unwrap(),
            arrow_type(25, -1).unwrap(),
            arrow_type(17, -1).unwrap(),
            arrow_type(1082, -1).unwrap(),
            arrow_type(1083, -1).unwrap(),
            arrow_type(1184, -1).unwrap(),
            resolve_type(1007, -1, &meta).unwrap(),
        ];
        let first = [
            "t",
            "7",
            "1.25",
            "héllo",
            "\\x0102",
            "2026-01-02",
            "10:11:12",
            "2026-01-02 03:04:05+00",
            "{1,2}",
        ];
        let second = [
            "f",
            "-9",
            "-3.50",
            "",
            "\\x",
            "1999-12-31",
            "00:00:00.5",
            "1970-01-01 00:00:00+00",
            "{NULL,4,5}",
        ];
        for (data_type, (a, b)) in types.iter().zip(first.iter().zip(second)) {
            let mut reused = ColumnBuilder::new(data_type);
            for _ in 0..3 {
                reused.append_text(a).unwrap();
            }
            reused.append_null();
            let one = reused.finish_sized();
            assert_eq!((one.len(), one.null_count()), (4, 1), "{data_type}");
            assert_eq!(reused.len(), 0, "{data_type}");
            let mut fresh = ColumnBuilder::new(data_type);
            for builder in [&mut reused, &mut fresh] {
                builder.append_null();
                builder.append_text(b).unwrap();
                builder.append_text(a).unwrap();
            }
            let (two, expected) = (reused.finish_sized(), fresh.finish());
            assert_eq!(two.data_type(), data_type);
            assert_eq!(&*two, &*expected, "{data_type}");
        }
    }
}
