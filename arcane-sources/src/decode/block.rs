//! Decoding blocks of NDJSON or CSV records straight into Arrow, isolating bad records.
//!
//! The good case costs one `arrow_json`/`arrow_csv` decode per block of records, directly on
//! the input bytes (no per-row values, no copies). When a block fails, it is split in halves
//! and each half decoded again, down to the single bad records, which the caller
//! dead-letters; the good rows of the block are kept in order. One bad record in a block of
//! `n` costs about `2·log2(n)` extra decodes of shrinking ranges.
//!
//! Blocks are first read by the format's fast path when the schema is one it reads
//! ([`FastDecoder`] for NDJSON: scalar columns, and structs and lists of them to any depth;
//! [`CsvFastDecoder`] for CSV: scalar columns, the block split into fields in one pass and
//! each column then parsed straight into its builder); a block it gives up on takes the `arrow_json` or `arrow_csv` path,
//! which makes the same batch of every block the fast path reads.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef};

use super::csv_fast::CsvFastDecoder;
use super::fast::{FastDecoder, GiveUp};

/// A line-oriented format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextFormat {
    /// One JSON object per line.
    Ndjson,
    /// CSV; records may span lines inside quoted fields.
    Csv {
        header: bool,
        delimiter: u8,
        quote: u8,
    },
}

/// A complete record in a buffer: bytes `start..end` (without the line break), starting on
/// line `line` (1-based).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rec {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) line: u64,
}

pub(crate) enum Piece {
    Good(RecordBatch),
    Bad(usize, String),
}

/// Why CSV records cannot be read into `schema`: the first column whose type `arrow_csv`
/// does not read from text (binary, nested and interval types, …), named with what to do.
pub(crate) fn csv_unreadable(schema: &SchemaRef) -> Option<String> {
    use arrow_schema::TimeUnit;
    let decoded = decode_schema(
        schema,
        TextFormat::Csv {
            header: false,
            delimiter: b',',
            quote: b'"',
        },
    );
    decoded.fields().iter().zip(schema.fields()).find_map(|(d, f)| {
        let readable = match d.data_type() {
            DataType::Dictionary(key, value) => {
                key.is_integer() && value.as_ref() == &DataType::Utf8
            }
            DataType::Time32(unit) => matches!(unit, TimeUnit::Second | TimeUnit::Millisecond),
            DataType::Time64(unit) => {
                matches!(unit, TimeUnit::Microsecond | TimeUnit::Nanosecond)
            }
            t => {
                t.is_numeric()
                    || matches!(
                        t,
                        DataType::Boolean
                            | DataType::Null
                            | DataType::Utf8
                            | DataType::Utf8View
                            | DataType::Date32
                            | DataType::Date64
                            | DataType::Timestamp(..)
                    )
            }
        };
        (!readable).then(|| {
            format!(
                "column \"{}\" has type {}, which CSV records cannot hold (CSV fields are read as text, numbers, booleans, decimals, dates, times and timestamps); declare it as utf8, or land these files as NDJSON or Parquet",
                f.name(),
                f.data_type()
            )
        })
    })
}

/// Decodes contiguous ranges of records.
pub(crate) struct BlockDecoder {
    format: TextFormat,
    /// The stream's schema.
    target: SchemaRef,
    /// The schema handed to the Arrow decoders: `target` with `UTC` time zones written as
    /// `+00:00` (Arrow parses named zones only with its `chrono-tz` feature).
    schema: SchemaRef,
    batch_rows: usize,
    /// Whether JSON numbers and booleans are read into string columns as their text.
    coerce_primitive: bool,
    json: Option<arrow_json::reader::Decoder>,
    /// The format's fast path, when the schema is one it reads and it is on.
    fast: Option<Fast>,
}

/// A format's fast path.
enum Fast {
    Ndjson(FastDecoder),
    Csv(CsvFastDecoder),
}

impl Fast {
    fn decode(&mut self, buf: &[u8], recs: &[Rec]) -> Result<RecordBatch, GiveUp> {
        match self {
            Self::Ndjson(d) => d.decode(buf, recs),
            Self::Csv(d) => d.decode(buf, recs),
        }
    }
}

/// Scale of the decimal that top-level integer columns of JSON are decoded as: fractional
/// digits up to this many are seen (and the record rejected) instead of truncated.
pub(super) const INTEGER_SCALE: i8 = 18;
/// Precision of the decimal that top-level integer columns of JSON are decoded as.
pub(super) const INTEGER_PRECISION: u8 = 38;
/// The decimal that top-level integer columns of JSON are decoded as (every `i64`/`u64` fits
/// with [`INTEGER_SCALE`] fractional digits).
const INTEGER_AS_DECIMAL: DataType = DataType::Decimal128(INTEGER_PRECISION, INTEGER_SCALE);

/// The schema handed to the Arrow decoders for `target`, at any depth (columns, and fields
/// of structs, lists and maps):
///
/// * `UTC` time zones written as the offset `+00:00` (Arrow parses named zones only with its
///   `chrono-tz` feature);
/// * for JSON, integer types as [`INTEGER_AS_DECIMAL`]: `arrow_json` reads a
///   number with a fraction into an integer column by truncating it (`1000.5` becomes
///   `1000`), which would change data silently; decoded as a decimal, the fraction is seen
///   and the record rejected (see [`BlockDecoder::decode`]).
fn decode_schema(schema: &SchemaRef, format: TextFormat) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| decode_field(f, format))
        .collect();
    if fields
        .iter()
        .zip(schema.fields())
        .all(|(a, b)| a.data_type() == b.data_type())
    {
        schema.clone()
    } else {
        Arc::new(Schema::new(fields))
    }
}

/// `field` with the type the Arrow decoders are given for it (see [`decode_schema`]), at any
/// depth: inside structs, lists and maps too.
fn decode_field(field: &Field, format: TextFormat) -> Field {
    field
        .clone()
        .with_data_type(decode_type(field.data_type(), format))
}

fn decode_type(t: &DataType, format: TextFormat) -> DataType {
    let inner = |f: &FieldRef| Arc::new(decode_field(f, format));
    match t {
        DataType::Timestamp(unit, Some(tz)) if is_utc(tz) => {
            DataType::Timestamp(*unit, Some("+00:00".into()))
        }
        t if t.is_integer() && format == TextFormat::Ndjson => INTEGER_AS_DECIMAL,
        // `arrow_csv` reads strings into `utf8` columns only.
        DataType::LargeUtf8 if format != TextFormat::Ndjson => DataType::Utf8,
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| decode_field(f, format)).collect())
        }
        DataType::List(f) => DataType::List(inner(f)),
        DataType::LargeList(f) => DataType::LargeList(inner(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(inner(f), *n),
        DataType::Map(f, sorted) => DataType::Map(inner(f), *sorted),
        other => other.clone(),
    }
}

/// `column`, decoded with the type [`decode_type`] gave `field`, as `field`'s own type: UTC
/// relabelled, integers decoded as decimals checked whole and in range ([`integer_column`]),
/// at any depth. `path` names the value in errors: `items[].qty` for the field `qty` of the
/// structs in the list `items`.
fn conform_column(column: &ArrayRef, field: &Field, path: &str) -> Result<ArrayRef, String> {
    use arrow_array::cast::AsArray;
    use arrow_array::{
        Array, FixedSizeListArray, LargeListArray, ListArray, MapArray, StructArray,
    };
    if column.data_type() == field.data_type() {
        return Ok(column.clone());
    }
    let err = |e: arrow_schema::ArrowError| e.to_string();
    Ok(match field.data_type() {
        t if t.is_integer() => integer_column(column, field, path)?,
        DataType::Struct(fields) => {
            let s = column.as_struct();
            let children = s
                .columns()
                .iter()
                .zip(fields)
                .map(|(c, f)| conform_column(c, f, &format!("{path}.{}", f.name())))
                .collect::<Result<Vec<_>, _>>()?;
            Arc::new(
                StructArray::try_new(fields.clone(), children, s.nulls().cloned()).map_err(err)?,
            )
        }
        DataType::List(f) => {
            let l = column.as_list::<i32>();
            let values = conform_column(l.values(), f, &format!("{path}[]"))?;
            Arc::new(
                ListArray::try_new(f.clone(), l.offsets().clone(), values, l.nulls().cloned())
                    .map_err(err)?,
            )
        }
        DataType::LargeList(f) => {
            let l = column.as_list::<i64>();
            let values = conform_column(l.values(), f, &format!("{path}[]"))?;
            Arc::new(
                LargeListArray::try_new(f.clone(), l.offsets().clone(), values, l.nulls().cloned())
                    .map_err(err)?,
            )
        }
        DataType::FixedSizeList(f, n) => {
            let l = column.as_fixed_size_list();
            let values = conform_column(l.values(), f, &format!("{path}[]"))?;
            Arc::new(
                FixedSizeListArray::try_new(f.clone(), *n, values, l.nulls().cloned())
                    .map_err(err)?,
            )
        }
        DataType::Map(f, sorted) => {
            let m = column.as_map();
            let entries: ArrayRef = Arc::new(m.entries().clone());
            let entries = conform_column(&entries, f, &format!("{path}{{}}"))?;
            Arc::new(
                MapArray::try_new(
                    f.clone(),
                    m.offsets().clone(),
                    entries.as_struct().clone(),
                    m.nulls().cloned(),
                    *sorted,
                )
                .map_err(err)?,
            )
        }
        t => arrow_cast::cast(column, t).map_err(err)?,
    })
}

/// `column`, decoded as [`INTEGER_AS_DECIMAL`], as the integer type of `field`; an error
/// naming the value's `path` (see [`conform_column`]) and the value when a value has a
/// fraction or does not fit.
fn integer_column(column: &ArrayRef, field: &Field, path: &str) -> Result<ArrayRef, String> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Decimal128Type;
    let decimals = column.as_primitive::<Decimal128Type>();
    let unit = 10i128.pow(INTEGER_SCALE as u32);
    let describe = |i: usize| {
        let text = arrow_cast::display::array_value_to_string(column, i).unwrap_or_default();
        match text.split_once('.') {
            Some((int, frac)) => match frac.trim_end_matches('0') {
                "" => int.to_string(),
                frac => format!("{int}.{frac}"),
            },
            None => text,
        }
    };
    for i in 0..decimals.len() {
        if decimals.is_valid(i) && decimals.value(i) % unit != 0 {
            return Err(format!(
                "field \"{}\": {} is not an integer, but the column is {}",
                path,
                describe(i),
                field.data_type()
            ));
        }
    }
    let options = arrow_cast::CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow_cast::cast_with_options(column, field.data_type(), &options).map_err(|_| {
        let at = (0..decimals.len())
            .find(|&i| {
                decimals.is_valid(i)
                    && arrow_cast::cast_with_options(
                        &column.slice(i, 1),
                        field.data_type(),
                        &options,
                    )
                    .is_err()
            })
            .map(describe)
            .unwrap_or_default();
        format!(
            "field \"{}\": {at} does not fit the column's type {}",
            path,
            field.data_type()
        )
    })
}

/// Whether a time zone name means UTC.
pub(crate) use arcane_core::schema::is_utc;

impl BlockDecoder {
    pub(crate) fn new(format: TextFormat, target: SchemaRef, batch_rows: usize) -> Self {
        let schema = decode_schema(&target, format);
        let mut decoder = Self {
            format,
            schema,
            target,
            batch_rows,
            coerce_primitive: false,
            json: None,
            fast: None,
        };
        decoder.fast = decoder.fast_decoder();
        decoder
    }

    /// The fast path for this decoder's format, schema and options, if it has one.
    fn fast_decoder(&self) -> Option<Fast> {
        match self.format {
            TextFormat::Ndjson => {
                FastDecoder::new(&self.target, &self.schema, self.coerce_primitive)
                    .map(Fast::Ndjson)
            }
            TextFormat::Csv {
                delimiter, quote, ..
            } => CsvFastDecoder::new(&self.target, &self.schema, delimiter, quote).map(Fast::Csv),
        }
    }

    /// Whether blocks are first read by the format's fast path (on by default, when the
    /// schema is one it reads); off, every block takes the `arrow_json` or `arrow_csv` path
    /// (the fast path's oracle in tests, the baseline in benchmarks).
    pub(crate) fn with_fast(mut self, on: bool) -> Self {
        self.fast = if on { self.fast_decoder() } else { None };
        self
    }

    /// Whether blocks are first read by the fast path.
    pub(crate) fn has_fast(&self) -> bool {
        self.fast.is_some()
    }

    /// Decode the records `recs` of `buf` with the fast path alone: `Err` with the reason it
    /// gave up (its oracle compares its batches with the general path's).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn decode_fast(&mut self, buf: &[u8], recs: &[Rec]) -> Result<RecordBatch, String> {
        match &mut self.fast {
            Some(fast) => fast.decode(buf, recs).map_err(str::to_string),
            None => Err("no fast path for this schema".into()),
        }
    }

    /// Read JSON numbers and booleans into string (`utf8`) columns as their JSON text instead
    /// of rejecting the record (for inferred schemas, whose string columns may come from
    /// fields seen with several types).
    pub(crate) fn with_coerce_primitive(mut self, coerce: bool) -> Self {
        self.coerce_primitive = coerce;
        self.json = None;
        if self.fast.is_some() {
            self.fast = self.fast_decoder();
        }
        self
    }

    /// Decode the records `recs` of `buf`, one row each.
    pub(crate) fn decode(&mut self, buf: &[u8], recs: &[Rec]) -> Result<RecordBatch, String> {
        // The fast path reads at most what the general path reads in one batch (a longer
        // block fails there, and is bisected).
        if let Some(fast) = &mut self.fast
            && !recs.is_empty()
            && recs.len() <= self.batch_rows + 1
            && let Ok(batch) = fast.decode(buf, recs)
        {
            return Ok(batch);
        }
        let batch = self.decode_raw(buf, recs)?;
        if Arc::ptr_eq(&self.schema, &self.target) {
            return Ok(batch);
        }
        // Relabel `+00:00` columns as the stream's `UTC` (same values); integers decoded as
        // decimals must be whole and fit their type; at any depth.
        let columns = batch
            .columns()
            .iter()
            .zip(self.target.fields())
            .map(|(c, f)| conform_column(c, f, f.name()))
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(self.target.clone(), columns).map_err(|e| e.to_string())
    }

    fn decode_raw(&mut self, buf: &[u8], recs: &[Rec]) -> Result<RecordBatch, String> {
        let expected = recs.len();
        let result = match (self.format, recs) {
            (_, []) => Ok(RecordBatch::new_empty(self.schema.clone())),
            (TextFormat::Ndjson, _) => self.decode_json(buf, recs),
            (
                TextFormat::Csv {
                    delimiter, quote, ..
                },
                [first, .., last] | [first @ last],
            ) => self.decode_csv(&buf[first.start..last.end], expected, delimiter, quote),
        };
        match result {
            Ok(batch) if batch.num_rows() == expected => Ok(batch),
            Ok(batch) => {
                self.json = None;
                Err(match self.format {
                    TextFormat::Ndjson => format!(
                        "the line holds {} JSON values; expected exactly one object per line",
                        batch.num_rows()
                    ),
                    TextFormat::Csv { .. } => format!(
                        "the record holds {} CSV records; expected one",
                        batch.num_rows()
                    ),
                })
            }
            Err(e) => {
                self.json = None;
                Err(e)
            }
        }
    }

    /// Decode JSON records one after the other into one batch. Each record must be exactly
    /// one complete value: `arrow_json` reads strings across line breaks, so a record that
    /// ends inside a string would otherwise run into the next one (two records, one row), and
    /// a line with two objects next to it would make the row count come out right.
    fn decode_json(&mut self, buf: &[u8], recs: &[Rec]) -> Result<RecordBatch, String> {
        let decoder = match &mut self.json {
            Some(d) => d,
            None => {
                let d = arrow_json::ReaderBuilder::new(self.schema.clone())
                    // Never stop early on a valid block; a line with extra values overflows.
                    .with_batch_size(self.batch_rows + 1)
                    .with_coerce_primitive(self.coerce_primitive)
                    .build_decoder()
                    .map_err(|e| e.to_string())?;
                self.json.insert(d)
            }
        };
        for rec in recs {
            let rewritten = unescape_surrogate_pairs(&buf[rec.start..rec.end]);
            let bytes = rewritten.as_deref().unwrap_or(&buf[rec.start..rec.end]);
            let before = decoder.len();
            let consumed = decoder.decode(bytes).map_err(|e| json_reason(&e))?;
            if consumed < bytes.len() {
                return Err(
                    "the line holds more than one JSON value; expected exactly one object per line"
                        .into(),
                );
            }
            // The line break ends a trailing number; inside a string it is part of the string.
            decoder.decode(b"\n").map_err(|e| json_reason(&e))?;
            if decoder.has_partial_record() {
                return Err("incomplete JSON: the line ends inside a value".into());
            }
            let values = decoder.len() - before;
            if values != 1 {
                return Err(format!(
                    "the line holds {values} JSON values; expected exactly one object per line"
                ));
            }
        }
        let batch = decoder.flush().map_err(|e| json_reason(&e))?;
        Ok(batch.unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone())))
    }

    fn decode_csv(
        &mut self,
        bytes: &[u8],
        expected: usize,
        delimiter: u8,
        quote: u8,
    ) -> Result<RecordBatch, String> {
        let mut decoder = arrow_csv::ReaderBuilder::new(self.schema.clone())
            .with_header(false)
            .with_delimiter(delimiter)
            .with_quote(quote)
            .with_batch_size(expected + 1)
            .build_decoder();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = decoder.decode(rest).map_err(|e| csv_reason(&e))?;
            if n == 0 {
                break;
            }
            rest = &rest[n..];
        }
        if !rest.is_empty() {
            return Err("the record holds more than one CSV record".into());
        }
        // The last record's line break was cut off by the splitter.
        decoder.decode(b"\n").map_err(|e| csv_reason(&e))?;
        let batch = decoder.flush().map_err(|e| csv_reason(&e))?;
        Ok(batch.unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone())))
    }

    /// Decode records `lo..hi` of `recs`, splitting ranges that fail.
    pub(crate) fn decode_range(
        &mut self,
        buf: &[u8],
        recs: &[Rec],
        lo: usize,
        hi: usize,
        out: &mut Vec<Piece>,
    ) {
        match self.decode(buf, &recs[lo..hi]) {
            Ok(batch) => out.push(Piece::Good(batch)),
            Err(reason) if hi - lo == 1 => {
                let bytes = &buf[recs[lo].start..recs[lo].end];
                let reason = self.explain_integer_error(bytes, reason);
                out.push(Piece::Bad(lo, reason));
            }
            Err(_) => {
                let mid = lo + (hi - lo) / 2;
                self.decode_range(buf, recs, lo, mid, out);
                self.decode_range(buf, recs, mid, hi, out);
            }
        }
    }
}

impl BlockDecoder {
    /// The reason a record was rejected, in terms of the stream's schema: errors about the
    /// decimals that JSON integer columns are decoded as (see [`decode_schema`]) name the
    /// field, its type and the value instead.
    fn explain_integer_error(&self, record: &[u8], reason: String) -> String {
        if self.format != TextFormat::Ndjson || !reason.contains("ecimal") {
            return reason;
        }
        let generic = || {
            reason
                .replace("Decimal128(38, 18)", "an integer type")
                .replace("expected decimal", "expected an integer")
                .replace("Invalid decimal format", "not an integer")
        };
        let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(record) else {
            return generic();
        };
        for field in self.target.fields() {
            if !field.data_type().is_integer() {
                continue;
            }
            match map.get(field.name()) {
                None | Some(serde_json::Value::Null) if !field.is_nullable() => {
                    return format!(
                        "field \"{}\" is missing or null, but the column is {} and not nullable",
                        field.name(),
                        field.data_type()
                    );
                }
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::Number(n))
                    if n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) => {
                }
                Some(serde_json::Value::String(s)) if s.trim().parse::<i128>().is_ok() => {}
                Some(value) => {
                    let mut text = value.to_string();
                    if text.len() > 64 {
                        let mut cut = 61;
                        while !text.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        text.truncate(cut);
                        text.push_str("...");
                    }
                    return format!(
                        "field \"{}\": expected an integer ({}), found {text}",
                        field.name(),
                        field.data_type()
                    );
                }
            }
        }
        generic()
    }
}

/// `record` with every escaped UTF-16 surrogate pair (`\ud84d\ude00`) written as its
/// character in UTF-8; `None` when it has none. `arrow_json` (60.1) combines the two halves of
/// a pair with a bitwise or where a sum is due, which silently gives another character for
/// code points from U+20000 (U+23600 became U+13600); JSON allows any character unescaped in
/// a string, so the value is the same. Lone surrogates and other escapes are left as they are
/// (an escaped backslash is skipped whole, so `\\ud84d` stays text).
pub(crate) fn unescape_surrogate_pairs(record: &[u8]) -> Option<Vec<u8>> {
    let hex4 = |at: usize| super::fast::hex4(record, at).ok().map(u32::from);
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while let Some(off) = record.get(i..).and_then(|rest| memchr::memchr(b'\\', rest)) {
        let at = i + off;
        i = at + 2;
        if record.get(at + 1) != Some(&b'u') {
            continue;
        }
        let pair = match (hex4(at + 2), record.get(at + 6..at + 8), hex4(at + 8)) {
            (Some(high @ 0xD800..=0xDBFF), Some(b"\\u"), Some(low @ 0xDC00..=0xDFFF)) => {
                char::from_u32(0x1_0000 + ((high - 0xD800) << 10) + (low - 0xDC00))
            }
            _ => None,
        };
        if let Some(c) = pair {
            let o = out.get_or_insert_with(|| Vec::with_capacity(record.len()));
            o.extend_from_slice(&record[copied..at]);
            o.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            i = at + 12;
            copied = i;
        }
    }
    out.map(|mut o| {
        o.extend_from_slice(&record[copied..]);
        o
    })
}

fn json_reason(e: &arrow_schema::ArrowError) -> String {
    let s = e.to_string();
    s.strip_prefix("Json error: ").unwrap_or(&s).to_string()
}

/// arrow-csv numbers lines within the decoded range; the dead letter's locator has the real
/// line, so drop them from the message.
fn csv_reason(e: &arrow_schema::ArrowError) -> String {
    let s = e.to_string();
    let mut s = s
        .strip_prefix("Csv error: ")
        .or_else(|| s.strip_prefix("Parser error: "))
        .unwrap_or(&s)
        .to_string();
    for marker in [" at line ", " for line "] {
        if let Some(i) = s.find(marker) {
            let tail = &s[i + marker.len()..];
            let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
            let rest = &tail[digits..];
            s = format!("{}{}", &s[..i], rest);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_one(d: &mut BlockDecoder, line: &str) -> Result<RecordBatch, String> {
        let recs = [Rec {
            start: 0,
            end: line.len(),
            line: 1,
        }];
        let mut out = Vec::new();
        d.decode_range(line.as_bytes(), &recs, 0, 1, &mut out);
        match out.pop() {
            Some(Piece::Good(batch)) => Ok(batch),
            Some(Piece::Bad(_, reason)) => Err(reason),
            None => Err("nothing decoded".into()),
        }
    }

    #[test]
    fn json_integers_are_never_truncated_and_errors_name_the_field() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("small", DataType::Int8, true),
        ]));
        let mut d = BlockDecoder::new(TextFormat::Ndjson, schema, 10);
        let bad = [
            (
                r#"{"id": 1000.5}"#,
                r#"field "id": 1000.5 is not an integer, but the column is Int64"#,
            ),
            (
                r#"{"id": "x"}"#,
                r#"field "id": expected an integer (Int64), found "x""#,
            ),
            (
                r#"{"id": true}"#,
                r#"field "id": expected an integer (Int64), found true"#,
            ),
            (
                r#"{"id": [1]}"#,
                r#"field "id": expected an integer (Int64), found [1]"#,
            ),
            (
                r#"{"small": 3}"#,
                r#"field "id" is missing or null, but the column is Int64 and not nullable"#,
            ),
            (
                r#"{"id": 1, "small": 300}"#,
                r#"field "small": 300 does not fit the column's type Int8"#,
            ),
        ];
        for (line, reason) in bad {
            assert_eq!(decode_one(&mut d, line).unwrap_err(), reason, "{line}");
        }
        for (line, id) in [
            (r#"{"id": 12}"#, 12),
            (r#"{"id": "12"}"#, 12),
            (r#"{"id": 1e3}"#, 1000),
            (r#"{"id": 12.0}"#, 12),
            (r#"{"id": 9223372036854775807}"#, i64::MAX),
            (r#"{"id": -9223372036854775808}"#, i64::MIN),
        ] {
            let batch = decode_one(&mut d, line).unwrap();
            let ids = batch
                .column(0)
                .as_any()
                .downcast_ref::<arrow_array::Int64Array>()
                .unwrap();
            assert_eq!(ids.value(0), id, "{line}");
        }
    }
}
