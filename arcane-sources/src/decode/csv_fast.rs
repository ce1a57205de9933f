//! The schema-directed fast path for CSV blocks: each record split at its delimiters and each
//! field parsed straight into the builders of the stream's schema, for the same column types
//! as the NDJSON fast path ([`super::fast`]).
//!
//! It reads a subset of what the `arrow_csv` path ([`BlockDecoder`]'s general path) reads and
//! makes exactly the same batch of it: records without the quote character and without a
//! carriage return (where `csv_core` would unquote or end a record), with exactly one field
//! per column; an empty field is a null, as `arrow_csv` reads it; every other field is parsed
//! by the function `arrow_csv` parses it with (`arrow_cast`'s [`Parser`] for numbers and
//! dates, `string_to_datetime` for timestamps, `true`/`false` in any case for booleans), but
//! for a signed integer that is a sign and digits and a float64 that is digits with a
//! fraction, read eight digits at a time into the same value ([`decimal_i64`],
//! [`decimal_f64`]).
//! Anything else — a quoted field, a field count that is not the schema's, a value that does
//! not parse, invalid UTF-8, a null in a required column — gives up on the whole block, which
//! then takes the general path with its dead letters, bisection and messages. A block is
//! split into fields in one pass (delimiters, quotes and carriage returns found 64 bytes at a
//! time), then each column is parsed in a loop of its own; what lies between its records
//! (line breaks, the `\r` of a CRLF, blank lines the framer skipped) is not read, so such a
//! block gives the rows the general path gives reading its records one by one.
//!
//! [`BlockDecoder`]: super::block::BlockDecoder

use arrow_array::RecordBatch;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use arrow_cast::parse::Parser;
use arrow_schema::SchemaRef;

use super::block::Rec;
use super::fast::{
    Builder, Column, GiveUp, Kind, batch, builders, columns, eight_digits, timestamp,
};

/// Decodes CSV blocks of a schema of top-level scalar columns (see the module's doc).
#[derive(Debug)]
pub(crate) struct CsvFastDecoder {
    target: SchemaRef,
    columns: Vec<Column>,
    delimiter: u8,
    quote: u8,
    /// The block's field bounds, kept for the next block: per record, its start and then the
    /// end of each field (a delimiter's offset, or the record's end for its last field).
    bounds: Vec<u32>,
}

impl CsvFastDecoder {
    /// A fast path for `target` (decoded by the general path as `decode_schema`), or none
    /// when a column's type is not one it reads or the delimiter is one it does not split at.
    pub(crate) fn new(
        target: &SchemaRef,
        decode_schema: &SchemaRef,
        delimiter: u8,
        quote: u8,
    ) -> Option<Self> {
        // A field is split at an ASCII delimiter that is not a line break or the quote.
        if !delimiter.is_ascii() || matches!(delimiter, b'\r' | b'\n') || delimiter == quote {
            return None;
        }
        Some(Self {
            target: target.clone(),
            columns: columns(target, decode_schema)?,
            delimiter,
            quote,
            bounds: Vec::new(),
        })
    }

    /// Decode the records `recs` of `buf` (each one CSV record without its line break), one
    /// row each, or give up.
    pub(crate) fn decode(&mut self, buf: &[u8], recs: &[Rec]) -> Result<RecordBatch, GiveUp> {
        if recs.is_empty() {
            return Err("no records");
        }
        let (first, last) = (recs[0], recs[recs.len() - 1]);
        // Records end at line breaks (ASCII): valid UTF-8 as a whole, valid one by one.
        let span = buf
            .get(first.start..last.end)
            .ok_or("records out of order")?;
        let text = simdutf8::basic::from_utf8(span).map_err(|_| "invalid UTF-8")?;
        // Offsets in the block are kept as `u32`.
        if u32::try_from(span.len()).is_err() {
            return Err("a block of 4 GiB or more");
        }
        let n = self.columns.len();
        self.bounds.clear();
        self.bounds.reserve(recs.len() * (n + 1));
        split(
            span,
            recs,
            first.start,
            n,
            [self.delimiter, self.quote, b'\r'],
            &mut self.bounds,
        )?;
        // Then each column on its own, in one loop per column type.
        let mut builders = builders(&self.columns, recs.len());
        for (c, (builder, column)) in builders.iter_mut().zip(&self.columns).enumerate() {
            let fields = self.bounds.chunks_exact(n + 1).map(|row| {
                // After the delimiter that ends the field before (none before the first).
                let start = row[c] as usize + usize::from(c != 0);
                text.get(start..row[c + 1] as usize).ok_or("invalid UTF-8")
            });
            append_column(builder, column, fields)?;
        }
        batch(&self.target, builders, &self.columns)
    }
}

/// Split the records `recs` (at `base` in the buffer; `span` from the first's start to the
/// last's end) into the fields of `n` columns: per record, its start and the end of each field
/// go to `bounds`, as offsets in `span`. One pass over the whole span, 64 bytes at a time:
/// delimiters end fields; a quote (which `csv_core` unquotes) or a carriage return (which
/// ends a record there) inside a record gives up. Between records there are line breaks, the
/// `\r` of a CRLF, and blank lines, which are not read.
fn split(
    span: &[u8],
    recs: &[Rec],
    base: usize,
    n: usize,
    special: [u8; 3],
    bounds: &mut Vec<u32>,
) -> Result<(), GiveUp> {
    let delimiter = special[0];
    // Offsets fit a `u32` (the caller checked the span's length).
    let offset = |at: usize| at as u32;
    let mut specials = Special::new(span, special);
    let mut at = specials.next();
    let mut last_end = 0;
    for (i, rec) in recs.iter().enumerate() {
        let (start, end) = rec
            .start
            .checked_sub(base)
            .zip(rec.end.checked_sub(base))
            .filter(|&(start, end)| (i == 0 || start >= last_end) && start <= end)
            .ok_or("records out of order")?;
        // `csv_core` skips an empty line (no row).
        if start == end {
            return Err("an empty record");
        }
        last_end = end;
        bounds.push(offset(start));
        let mut fields = 1;
        while let Some(here) = at.filter(|&here| here < end) {
            at = specials.next();
            // Before the record: between it and the one before.
            if here < start {
                continue;
            }
            if span[here] != delimiter {
                return Err("a quote or a carriage return");
            }
            if fields == n {
                return Err("too many fields");
            }
            fields += 1;
            bounds.push(offset(here));
        }
        if fields != n {
            return Err("too few fields");
        }
        bounds.push(offset(end));
    }
    Ok(())
}

/// The positions in a text of the bytes of a set of three, found 64 bytes at a time (each
/// byte compared with the three, then the results gathered into a mask of 64 bits, eight at
/// a time: loops the compiler turns into vector compares). Fields are short, so a search that
/// stops at every delimiter (such as `memchr3`) spends its time starting again.
pub(crate) struct Special<'a> {
    text: &'a [u8],
    /// Offset of the 64 bytes `mask` belongs to.
    at: usize,
    /// One bit for each of those bytes that is one of the set and not yet returned.
    mask: u64,
    set: [u8; 3],
}

impl<'a> Special<'a> {
    pub(crate) fn new(text: &'a [u8], set: [u8; 3]) -> Self {
        let mut this = Self {
            text,
            at: 0,
            mask: 0,
            set,
        };
        this.mask = this.block_mask(0);
        this
    }

    /// The bytes in the set among the 64 at `at` (or the fewer left at the text's end).
    #[inline]
    fn block_mask(&self, at: usize) -> u64 {
        let rest = self.text.get(at..).unwrap_or_default();
        match <&[u8; 64]>::try_from(rest.get(..64).unwrap_or_default()) {
            Ok(block) => mask64(block, self.set),
            Err(_) => {
                // The last, partial block: padding that is not in the text is masked off.
                let mut block = [0u8; 64];
                block[..rest.len()].copy_from_slice(rest);
                mask64(&block, self.set) & ((1u64 << rest.len()) - 1)
            }
        }
    }
}

/// Bit `i` set where `block[i]` is one of `set`.
#[inline]
fn mask64(block: &[u8; 64], set: [u8; 3]) -> u64 {
    let mut found = [0u8; 64];
    for (f, &b) in found.iter_mut().zip(block) {
        *f = u8::from((b == set[0]) | (b == set[1]) | (b == set[2]));
    }
    let mut mask = 0;
    for (i, eight) in found.chunks_exact(8).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(eight);
        // Bytes of 0 or 1: the multiplication moves byte j's bit to bit 56 + j, with no
        // carries (every byte's product lands on bits of its own).
        mask |= (u64::from_le_bytes(word).wrapping_mul(0x0102_0408_1020_4080) >> 56) << (i * 8);
    }
    mask
}

impl Iterator for Special<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.at += 64;
            if self.at >= self.text.len() {
                return None;
            }
            self.mask = self.block_mask(self.at);
        }
        let bit = self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(self.at + bit)
    }
}

/// Append a column's `fields` to its `builder` as `arrow_csv` reads them into the column's
/// type: one loop per type.
fn append_column<'t>(
    builder: &mut Builder,
    column: &Column,
    fields: impl Iterator<Item = Result<&'t str, GiveUp>>,
) -> Result<(), GiveUp> {
    // `arrow_csv`'s default null: the empty field, in every column type.
    macro_rules! each {
        ($b:expr, |$field:ident| $value:expr) => {
            for $field in fields {
                let $field = $field?;
                if $field.is_empty() {
                    $b.append_null();
                } else {
                    $b.append_value($value);
                }
            }
        };
    }
    macro_rules! parsed {
        ($b:expr, $t:ty) => {
            each!($b, |field| <$t>::parse(field)
                .ok_or("a value that does not parse")?)
        };
    }
    // A signed integer that is a sign and digits is read eight digits at a time; anything
    // else (or a value past the type) is left to the parser, which gives the same or refuses.
    macro_rules! signed {
        ($b:expr, $t:ty) => {
            each!(
                $b,
                |field| match decimal_i64(field.as_bytes()).and_then(|v| v.try_into().ok()) {
                    Some(v) => v,
                    None => <$t>::parse(field).ok_or("a value that does not parse")?,
                }
            )
        };
    }
    match builder {
        Builder::Int8(b) => signed!(b, Int8Type),
        Builder::Int16(b) => signed!(b, Int16Type),
        Builder::Int32(b) => signed!(b, Int32Type),
        Builder::Int64(b) => signed!(b, Int64Type),
        Builder::UInt8(b) => parsed!(b, UInt8Type),
        Builder::UInt16(b) => parsed!(b, UInt16Type),
        Builder::UInt32(b) => parsed!(b, UInt32Type),
        Builder::UInt64(b) => parsed!(b, UInt64Type),
        Builder::Float32(b) => parsed!(b, Float32Type),
        Builder::Float64(b) => each!(b, |field| match decimal_f64(field.as_bytes()) {
            Some(v) => v,
            None => Float64Type::parse(field).ok_or("a value that does not parse")?,
        }),
        Builder::Date32(b) => parsed!(b, Date32Type),
        Builder::Boolean(b) => each!(b, |field| if field.eq_ignore_ascii_case("true") {
            true
        } else if field.eq_ignore_ascii_case("false") {
            false
        } else {
            return Err("not a boolean");
        }),
        Builder::Utf8(b) => each!(b, |field| field),
        Builder::LargeUtf8(b) => each!(b, |field| field),
        Builder::Timestamp(b) => match &column.kind {
            Kind::Timestamp(unit, zone) => each!(b, |field| timestamp(field, *unit, zone)?),
            _ => return Err("not a timestamp column"),
        },
    }
    Ok(())
}

/// The value of `text` when it is an optional sign and 1 to 19 ASCII digits that fit an `i64`
/// (what `Int64Type::parse` gives for it), eight digits at a time; `None` for anything else,
/// which the caller leaves to `Int64Type::parse` (whitespace, more digits, an overflow, ...).
#[inline]
fn decimal_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    // At most 19 digits: below 10^19, within a u64.
    let value = append_digits(0, digits)?;
    if negative {
        0i64.checked_sub_unsigned(value)
    } else {
        i64::try_from(value).ok()
    }
}

/// The `f64` of `text` when it is an optional `-`, digits (no leading zero but for a lone
/// `0`) and optionally a `.` and digits, with at most 19 digits in all: the nearest `f64` to
/// its value, which is what `arrow_cast`'s parser (`lexical_core`) gives for it. `None`
/// for anything else (an exponent, more digits, `inf`, ...) or a value too near a halfway
/// point between two `f64`s to round here: the caller leaves those to the full parser.
///
/// The digits are read eight at a time into one integer `w` with `text` = `w`·10^`q`; when `w`
/// is at most 2^53, it and 10^-`q` (at most 10^19 ≤ 10^22) are exact `f64`s and their
/// quotient is rounded once (Clinger's fast path); else the Eisel–Lemire algorithm of
/// `lexical_parse_float`, the one `lexical_core` runs itself next.
#[inline]
fn decimal_f64(text: &[u8]) -> Option<f64> {
    const POWERS_OF_TEN: [f64; 20] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19,
    ];
    let (negative, rest) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    // A point must have digits after it. (A number is short: a loop over its bytes costs less
    // than a call to `memchr`.)
    let (integer, fraction) = match rest.iter().position(|&b| b == b'.') {
        Some(dot) => (&rest[..dot], rest.get(dot + 1..).filter(|f| !f.is_empty())?),
        None => (rest, &[][..]),
    };
    if integer.is_empty()
        || integer.len() + fraction.len() > 19
        || (integer.len() > 1 && integer[0] == b'0')
    {
        return None;
    }
    // At most 19 digits: below 10^19, within a u64. Both parts are checked to be digits.
    let w = append_digits(append_digits(0, integer)?, fraction)?;
    let scale = fraction.len();
    let v = if w <= 1 << 53 {
        w as f64 / POWERS_OF_TEN[scale]
    } else {
        let fp = lexical_parse_float::lemire::compute_float::<f64>(-(scale as i64), w, false);
        // A negative exponent: too near a halfway point to round from `w` alone.
        if fp.exp < 0 {
            return None;
        }
        lexical_parse_float::float::extended_to_float::<f64>(fp)
    };
    Some(if negative { -v } else { v })
}

/// `value` followed by the decimal `digits` (`None` if one is not an ASCII digit), eight at a
/// time; the caller keeps the result within a `u64` (at most 19 digits in all).
#[inline]
fn append_digits(value: u64, digits: &[u8]) -> Option<u64> {
    let mut value = value;
    let mut chunks = digits.chunks_exact(8);
    for chunk in &mut chunks {
        value = value * 100_000_000 + eight_digits(chunk)?;
    }
    for &b in chunks.remainder() {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u64::from(b - b'0');
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    //! The differential test: generated CSV records, valid and hostile, decoded by the fast
    //! path and by the `arrow_csv` path; whatever the fast path accepts, the `arrow_csv`
    //! path accepts with the same batch, and bisection gives the same rows and dead letters.

    use arcane_test_support::rng::SplitMix64;
    use arrow_array::RecordBatch;
    use arrow_schema::{DataType, Field, Schema};

    use super::super::block::{BlockDecoder, TextFormat};
    use super::super::fast::tests::{
        Tally, date_text, float_text, hostile_value, int_in, int_text, numeric_schema, pick,
        run_blocks, string_text, timestamp_text, wide_schema,
    };

    fn csv(delimiter: u8) -> TextFormat {
        TextFormat::Csv {
            header: false,
            delimiter,
            quote: b'"',
        }
    }

    /// A JSON string's text without its quotes (its escapes stay, as text).
    fn unquoted(json: String) -> String {
        json.strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .map(str::to_string)
            .unwrap_or(json)
    }

    /// A field for the column `f`.
    fn field(rng: &mut SplitMix64, f: &Field, hostile: bool, delimiter: u8) -> String {
        if hostile && rng.between(0, 6) == 0 {
            return match rng.between(0, 9) {
                0 => String::new(),
                1 => format!("\"{}\"", unquoted(string_text(rng))),
                2 => "\"a\"\"b\"".into(),
                3 => "x\ry".into(),
                4 => format!("{}{}", char::from(delimiter), int_text(rng)),
                5 => pick(
                    rng,
                    &[" 1", "1 ", "+1", "1e3", "0x10", "TRUE", "False", "yes", "1"],
                )
                .into(),
                6 => pick(
                    rng,
                    &["inf", "-inf", "NaN", "nan", "infinity", "-0", ".5", "5."],
                )
                .into(),
                7 => "\u{FFFD}é😀".into(),
                _ => hostile_value(rng),
            };
        }
        if (hostile || f.is_nullable()) && rng.between(0, 12) == 0 {
            return String::new();
        }
        // Valid records mostly hold values of the column's type; every generator also makes
        // some that do not parse (`1e300` for a float32, `1.000` for an integer, …).
        let typed = !hostile || rng.between(0, 2) == 0;
        match f.data_type() {
            DataType::Float32 | DataType::Float64 if typed && rng.between(0, 8) != 0 => {
                format!("{}", (rng.next_u64() % 2_000_000) as f64 / 64.0 - 15_000.0)
            }
            DataType::Float32 | DataType::Float64 => float_text(rng),
            DataType::Boolean => pick(rng, &["true", "false", "TRUE", "False"]).into(),
            DataType::Utf8 | DataType::LargeUtf8 => unquoted(string_text(rng)),
            DataType::Timestamp(..) if typed => pick(
                rng,
                &[
                    "2026-11-25T10:00:00Z",
                    "2026-11-25T10:00:00.123456789+02:00",
                    "2026-11-25 10:00:00",
                    "2026-11-25",
                    "1970-01-01T00:00:00-00:30",
                ],
            )
            .into(),
            DataType::Timestamp(..) => unquoted(timestamp_text(rng)),
            DataType::Date32 if typed => {
                pick(rng, &["2026-11-25", "1970-01-01", "1600-02-29"]).into()
            }
            DataType::Date32 => unquoted(date_text(rng)),
            // Plain digits (`int_in` also writes `5.000` and `5e0`, which JSON reads).
            t if typed => {
                let v = int_in(rng, t);
                match v.bytes().all(|b| b == b'-' || b.is_ascii_digit()) {
                    true => v,
                    false => "7".into(),
                }
            }
            _ => int_text(rng),
        }
    }

    fn record(rng: &mut SplitMix64, schema: &Schema, hostile: bool, delimiter: u8) -> Vec<u8> {
        let mut fields: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| field(rng, f, hostile, delimiter))
            .collect();
        if hostile {
            match rng.between(0, 30) {
                0 => {
                    fields.pop();
                }
                1 => fields.push("extra".into()),
                2 => fields.clear(),
                _ => {}
            }
        }
        let mut line = fields.join(&char::from(delimiter).to_string()).into_bytes();
        if hostile && rng.between(0, 40) == 0 {
            // Invalid UTF-8.
            line.push(0xFF);
        }
        // A field may hold a line break from the JSON generators: not a record of one line.
        line.retain(|&b| b != b'\n');
        line
    }

    fn run(schema: &Schema, delimiter: u8, hostile: bool, seed: u64, blocks: usize) -> Tally {
        let schema = std::sync::Arc::new(schema.clone());
        let total = run_blocks(csv(delimiter), &schema, false, seed, blocks, |rng| {
            record(rng, &schema, hostile, delimiter)
        });
        println!("csv {delimiter} hostile={hostile}: {total:?}");
        total
    }

    #[test]
    fn csv_records_read_by_the_fast_path_are_read_the_same_by_arrow_csv() {
        for (seed, schema, delimiter) in [
            (1, wide_schema(), b','),
            (2, numeric_schema(), b','),
            (3, numeric_schema(), b'\t'),
            (4, wide_schema(), b';'),
        ] {
            let valid = run(&schema, delimiter, false, seed, 60);
            let hostile = run(&schema, delimiter, true, seed + 100, 60);
            assert!(valid.records_fast * 4 > valid.records, "{valid:?}");
            assert!(valid.blocks_fast > 0, "{valid:?}");
            for tally in [&valid, &hostile] {
                // It gives up only where arrow_csv refuses the record too, except on quotes
                // and carriage returns, which it leaves to arrow_csv.
                for (reason, (_, read_by_arrow_csv)) in &tally.gave_up {
                    assert!(
                        reason == "a quote or a carriage return" || *read_by_arrow_csv == 0,
                        "gave up on {read_by_arrow_csv} records arrow_csv reads: {reason}"
                    );
                }
            }
            assert!(hostile.records > hostile.records_fast, "{hostile:?}");
        }
    }

    /// Number texts both eight-digit readers are checked on, besides generated ones: edges of
    /// `i64` and of `f64`'s exact integers, 19 and 20 digits, signs, spaces, points, exponents
    /// and digits that are not ASCII.
    const NUMBER_TEXTS: &[&str] = &[
        "0",
        "-0",
        "+0",
        "7",
        "-",
        "+",
        "",
        "--1",
        "+-1",
        "1-",
        " 1",
        "1 ",
        "01234567",
        "12345678",
        "123456789",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "-9223372036854775809",
        "9999999999999999999",
        "10000000000000000000",
        "00000000000000000001",
        "1234567/",
        "1234567:",
        "12a45678",
        "１２",
        "1e3",
        "1.0",
        "0x10",
        "١٢٣",
        "0.0",
        "-0.0",
        "00",
        "01.5",
        "1.",
        ".5",
        "-.5",
        "+1.5",
        "1.2.3",
        "1e5",
        " 1.5",
        "1.5 ",
        "1_0.5",
        "0.",
        "\u{661}.5",
        "9007199254740992",
        "9007199254740993",
        "9007199254740995",
        "-9007199254740993",
        "18446744073709551615",
        "99999999999999999999",
        "0.0000000000000000001",
        "0.000000000000000001",
        "1.7976931348623157",
        "4.9406564584124654",
        "0.30000000000000004",
        "123456789012345678.9",
    ];

    /// `decimal_f64` gives exactly what `lexical_core` and `arrow_cast`'s parser give, for
    /// every text it reads (bit for bit), and leaves everything else to them: the float
    /// generator's texts, decimals of 1 to 21 digits cut anywhere by the point (so past 2^53,
    /// through Eisel–Lemire, and past 19 digits), values near halfway points, hostile texts.
    #[test]
    fn floats_read_from_their_digits_are_what_lexical_reads() {
        use arrow_array::types::Float64Type;
        use arrow_cast::parse::Parser;
        let mut rng = SplitMix64(0xf64);
        let mut texts: Vec<String> = NUMBER_TEXTS.iter().map(|s| s.to_string()).collect();
        for _ in 0..100_000 {
            texts.push(float_text(&mut rng));
        }
        for _ in 0..200_000 {
            let len = rng.between(1, 22) as usize;
            let mut t: String = (0..len)
                .map(|_| char::from(b'0' + rng.between(0, 10) as u8))
                .collect();
            if rng.between(0, 4) != 0 {
                t.insert(rng.between(0, len as u64 + 1) as usize, '.');
            }
            if rng.between(0, 2) == 0 {
                t.insert(0, '-');
            }
            texts.push(t);
        }
        // Just above and below the halfway point between neighbouring f64s, to 17-19 digits.
        for _ in 0..50_000 {
            let v = f64::from_bits(rng.next_u64() >> 2);
            if v.is_finite() && v > 1e-5 && v < 1e15 {
                let mid = (v + f64::from_bits(v.to_bits() + 1)) / 2.0;
                for digits in 16..19 {
                    texts.push(format!("{mid:.digits$}"));
                    texts.push(format!("{v:.digits$}"));
                }
            }
        }
        let (mut read, mut long) = (0, 0);
        for t in &texts {
            let Some(v) = super::decimal_f64(t.as_bytes()) else {
                continue;
            };
            read += 1;
            long += usize::from(t.bytes().filter(u8::is_ascii_digit).count() > 16);
            let lexical = lexical_core::parse::<f64>(t.as_bytes()).map(f64::to_bits);
            assert_eq!(Ok(v.to_bits()), lexical, "{t:?}: {v:?}");
            assert_eq!(
                Some(v.to_bits()),
                Float64Type::parse(t).map(f64::to_bits),
                "{t:?}"
            );
        }
        // Most of the texts are read here, many past 2^53.
        assert!(read * 2 > texts.len(), "{read} of {}", texts.len());
        assert!(long > 20_000, "{long}");
    }

    #[test]
    fn integers_read_eight_digits_at_a_time_are_what_arrow_cast_reads() {
        use arrow_array::types::Int64Type;
        use arrow_cast::parse::Parser;
        let mut rng = SplitMix64(0x1264);
        let mut texts: Vec<String> = NUMBER_TEXTS.iter().map(|s| s.to_string()).collect();
        let alphabet = b"0123456789+- /:.e\x7f";
        for _ in 0..20_000 {
            let len = rng.between(0, 22) as usize;
            let text: String = (0..len)
                .map(|_| {
                    let b = if rng.between(0, 10) < 8 {
                        b'0' + rng.between(0, 10) as u8
                    } else {
                        alphabet[rng.between(0, alphabet.len() as u64) as usize]
                    };
                    char::from(b)
                })
                .collect();
            texts.push(text);
            texts.push(rng.next_u64().to_string());
            texts.push((rng.next_u64() as i64).to_string());
            texts.push(format!("-{}", rng.next_u64() >> rng.between(0, 64)));
        }
        /// A column of `T` reads `text` as `T`'s parser does: the eight-digit value when it
        /// fits, else the parser's answer.
        fn agrees<T: arrow_array::ArrowPrimitiveType + Parser>(text: &str)
        where
            T::Native: TryFrom<i64> + PartialEq + std::fmt::Debug,
        {
            let read = super::decimal_i64(text.as_bytes())
                .and_then(|v| T::Native::try_from(v).ok())
                .or_else(|| T::parse(text));
            assert_eq!(read, T::parse(text), "{text:?} as {}", T::DATA_TYPE);
        }
        for edge in [
            "127",
            "-128",
            "128",
            "-129",
            "32767",
            "-32768",
            "32768",
            "-32769",
            "2147483647",
            "-2147483648",
            "2147483648",
            "-2147483649",
        ] {
            texts.push(edge.to_string());
        }
        let mut fast = 0;
        for text in &texts {
            agrees::<arrow_array::types::Int8Type>(text);
            agrees::<arrow_array::types::Int16Type>(text);
            agrees::<arrow_array::types::Int32Type>(text);
            agrees::<Int64Type>(text);
            let want = Int64Type::parse(text);
            if let Some(got) = super::decimal_i64(text.as_bytes()) {
                fast += 1;
                assert_eq!(Some(got), want, "{text:?}");
            }
            // What the fast path leaves to arrow_cast is either not a plain integer or one
            // arrow_cast refuses too (but for more than 19 digits).
            if want.is_some() && super::decimal_i64(text.as_bytes()).is_none() {
                let digits = text.trim_start_matches(['-', '+']);
                assert!(digits.len() > 19 || digits.trim() != digits, "{text:?}");
            }
        }
        assert!(fast > texts.len() / 2, "{fast} of {}", texts.len());
    }

    #[test]
    fn special_bytes_are_found_where_they_are() {
        let mut rng = SplitMix64(11);
        for i in 0..4000 {
            // Across 64-byte blocks, ending anywhere in one.
            let len = rng.between(0, 200) as usize;
            let text: Vec<u8> = (0..len)
                .map(|_| {
                    *[b'a', b',', b'"', b'\r', 0x80, 0xff, 0, b'\n']
                        .get(rng.between(0, 8) as usize)
                        .unwrap()
                })
                .collect();
            // A NUL delimiter too: the zeros that pad the last block are not found.
            let set = [if i % 2 == 0 { b',' } else { 0 }, b'"', b'\r'];
            let expected: Vec<usize> = (0..len).filter(|&i| set.contains(&text[i])).collect();
            let got: Vec<usize> = super::Special::new(&text, set).collect();
            assert_eq!(got, expected, "{text:?}");
        }
    }

    #[test]
    fn quoted_fields_and_carriage_returns_are_left_to_arrow_csv() {
        let schema = numeric_schema();
        let d = || BlockDecoder::new(csv(b','), schema.clone(), 64);
        for line in [
            "1,2,1.5,2.5,3.5,true,\"a\",b",
            "1,2,1.5,2.5,3.5,true,a\"b,c",
            "1,2,1.5,2.5,3.5,true,a\rb,c",
            "",
            "1,2,1.5,2.5,3.5,true,a",
            "1,2,1.5,2.5,3.5,true,a,b,c",
        ] {
            let recs = [super::super::block::Rec {
                start: 0,
                end: line.len(),
                line: 1,
            }];
            assert!(d().decode_fast(line.as_bytes(), &recs).is_err(), "{line:?}");
        }
        let line = "1,,1.5,,-0,TRUE,,z";
        let recs = [super::super::block::Rec {
            start: 0,
            end: line.len(),
            line: 1,
        }];
        let fast = d().decode_fast(line.as_bytes(), &recs).unwrap();
        let general = d().with_fast(false).decode(line.as_bytes(), &recs).unwrap();
        assert_eq!(fast, general);
        assert_eq!(fast.column(1).null_count(), 1, "an empty field is a null");
        assert_eq!(fast.column(6).null_count(), 1, "also in a string column");

        // A block as the framer hands it over: CRLF line ends and a blank line between the
        // records, outside them.
        let lines = [
            "1,2,1.5,2.5,3.5,true,a,b",
            "2,3,1,2,3,false,,c",
            "3,4,0,0,0,TRUE,d,",
        ];
        let buf = format!("{}\r\n{}\r\n \t\r\n{}\r\n", lines[0], lines[1], lines[2]);
        let mut recs = Vec::new();
        let mut from = 0;
        for (i, line) in lines.iter().enumerate() {
            let start = from + buf[from..].find(line).unwrap();
            recs.push(super::super::block::Rec {
                start,
                end: start + line.len(),
                line: i as u64 + 1,
            });
            from = start + line.len();
        }
        let fast = d().decode_fast(buf.as_bytes(), &recs).unwrap();
        // The general path reads the block's bytes as one CSV text, the blank line too (a
        // record of one field, which fails the block, which is then bisected): the same rows
        // are its records read one by one.
        let mut general = d().with_fast(false);
        let alone: Vec<RecordBatch> = recs
            .iter()
            .map(|r| {
                general
                    .decode(buf.as_bytes(), std::slice::from_ref(r))
                    .unwrap()
            })
            .collect();
        let general = arrow_select::concat::concat_batches(&schema, &alone).unwrap();
        assert_eq!(fast, general);
        assert_eq!(fast.num_rows(), 3);
        // Records out of order are refused, not read.
        recs.swap(0, 2);
        assert!(d().decode_fast(buf.as_bytes(), &recs).is_err());
    }
}
