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
//! for a signed integer that is a sign and digits, read eight digits at a time into the same
//! value.
//! Anything else — a quoted field, a field count that is not the schema's, a value that does
//! not parse, invalid UTF-8, a null in a required column — gives up on the whole block, which
//! then takes the general path with its dead letters, bisection and messages. A block is
//! scanned in one pass (delimiters, quotes and carriage returns found eight bytes at a
//! time); what lies between its records (line breaks, the `\r` of a CRLF, blank lines
//! the framer skipped) is not read, so such a block gives the rows the general path gives
//! reading its records one by one.
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
        })
    }

    /// Decode the records `recs` of `buf` (each one CSV record without its line break), one
    /// row each, or give up.
    pub(crate) fn decode(&mut self, buf: &[u8], recs: &[Rec]) -> Result<RecordBatch, GiveUp> {
        if recs.is_empty() {
            return Err("no records");
        }
        let mut builders = builders(&self.columns, recs.len());
        let (first, last) = (recs[0], recs[recs.len() - 1]);
        // Records end at line breaks (ASCII): valid UTF-8 as a whole, valid one by one.
        let span = buf
            .get(first.start..last.end)
            .ok_or("records out of order")?;
        let text = simdutf8::basic::from_utf8(span).map_err(|_| "invalid UTF-8")?;
        let mut row = Row::new(&self.columns, builders.as_mut_slice(), text);
        let mut next = 0;
        row.start(recs, &mut next, first.start)?;
        // One pass over the whole block, eight bytes at a time: delimiters end fields; a
        // quote (which `csv_core` unquotes) or a carriage return (which ends a record there)
        // inside a record gives up. Between records there are line breaks, the `\r` of a
        // CRLF, and blank lines.
        for at in Special::new(span, [self.delimiter, self.quote, b'\r']) {
            while at >= row.end {
                row.finish()?;
                row.start(recs, &mut next, first.start)?;
            }
            if at < row.field_start {
                continue;
            }
            if span[at] != self.delimiter {
                return Err("a quote or a carriage return");
            }
            row.field(at)?;
        }
        loop {
            row.finish()?;
            if next == recs.len() {
                break;
            }
            row.start(recs, &mut next, first.start)?;
        }
        batch(&self.target, builders, &self.columns)
    }
}

/// The positions in a text of the bytes of a set of three, found eight bytes at a time (SWAR:
/// a word's bytes equal to one of them are the zero bytes of its XOR with that byte spread
/// over the word). Fields are short, so a search that stops at every delimiter (such as
/// `memchr3`) spends its time starting again.
struct Special<'a> {
    text: &'a [u8],
    /// Offset of the word `mask` belongs to.
    at: usize,
    /// High bit of each byte of that word that is one of the set, not yet returned.
    mask: u64,
    spread: [u64; 3],
}

const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const ONES: u64 = 0x0101_0101_0101_0101;

impl<'a> Special<'a> {
    fn new(text: &'a [u8], bytes: [u8; 3]) -> Self {
        let spread = bytes.map(|b| u64::from(b) * ONES);
        let mut this = Self {
            text,
            at: 0,
            mask: 0,
            spread,
        };
        this.mask = this.word_mask(0);
        this
    }

    /// The high bits of the bytes of the word at `at` that are in the set (exact: no carry
    /// crosses bytes).
    #[inline]
    fn word_mask(&self, at: usize) -> u64 {
        let zero = |x: u64| !(((x & LOW7) + LOW7) | x | LOW7);
        let found =
            |v: u64| zero(v ^ self.spread[0]) | zero(v ^ self.spread[1]) | zero(v ^ self.spread[2]);
        if let Some(word) = self.text.get(at..at + 8) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            return found(u64::from_le_bytes(bytes));
        }
        // The last, partial word: zero padding, which is not in the text.
        let rest = self.text.get(at..).unwrap_or_default();
        let mut bytes = [0u8; 8];
        bytes[..rest.len()].copy_from_slice(rest);
        found(u64::from_le_bytes(bytes)) & ((1u64 << (rest.len() * 8)) - 1)
    }
}

impl Iterator for Special<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.at += 8;
            if self.at >= self.text.len() {
                return None;
            }
            self.mask = self.word_mask(self.at);
        }
        let byte = (self.mask.trailing_zeros() / 8) as usize;
        self.mask &= self.mask - 1;
        Some(self.at + byte)
    }
}

/// The record being read: its end and the start of its next field (offsets in the block's
/// text), and the column that field goes to.
struct Row<'a, 'b> {
    columns: &'a [Column],
    builders: &'b mut [Builder],
    text: &'a str,
    end: usize,
    field_start: usize,
    column: usize,
}

impl<'a, 'b> Row<'a, 'b> {
    fn new(columns: &'a [Column], builders: &'b mut [Builder], text: &'a str) -> Self {
        Self {
            columns,
            builders,
            text,
            end: 0,
            field_start: 0,
            column: 0,
        }
    }

    /// Start the record `recs[*next]` (at `base` in the buffer), after the one before.
    fn start(&mut self, recs: &[Rec], next: &mut usize, base: usize) -> Result<(), GiveUp> {
        let rec = recs.get(*next).ok_or("records out of order")?;
        let (start, end) = rec
            .start
            .checked_sub(base)
            .zip(rec.end.checked_sub(base))
            .filter(|&(start, end)| (*next == 0 || start >= self.end) && start <= end)
            .ok_or("records out of order")?;
        // `csv_core` skips an empty line (no row).
        if start == end {
            return Err("an empty record");
        }
        *next += 1;
        self.end = end;
        self.field_start = start;
        self.column = 0;
        Ok(())
    }

    /// The field ending at the delimiter at `at`.
    fn field(&mut self, at: usize) -> Result<(), GiveUp> {
        if self.column + 1 == self.columns.len() {
            return Err("too many fields");
        }
        self.append(at)?;
        self.column += 1;
        self.field_start = at + 1;
        Ok(())
    }

    /// The record's last field, ending with it.
    fn finish(&mut self) -> Result<(), GiveUp> {
        if self.column + 1 != self.columns.len() {
            return Err("too few fields");
        }
        self.append(self.end)
    }

    fn append(&mut self, end: usize) -> Result<(), GiveUp> {
        let field = self
            .text
            .get(self.field_start..end)
            .ok_or("invalid UTF-8")?;
        append(
            &mut self.builders[self.column],
            &self.columns[self.column],
            field,
        )
    }
}

/// Append `field` to `builder` as `arrow_csv` reads it into the column's type.
#[inline]
fn append(builder: &mut Builder, column: &Column, field: &str) -> Result<(), GiveUp> {
    // `arrow_csv`'s default null: the empty field, in every column type.
    if field.is_empty() {
        builder.append_null();
        return Ok(());
    }
    macro_rules! parsed {
        ($b:expr, $t:ty) => {
            $b.append_value(<$t>::parse(field).ok_or("a value that does not parse")?)
        };
    }
    // A signed integer that is a sign and digits is read eight digits at a time; anything
    // else (or a value past the type) is left to the parser, which gives the same or refuses.
    macro_rules! signed {
        ($b:expr, $t:ty) => {
            $b.append_value(
                match decimal_i64(field.as_bytes()).and_then(|v| v.try_into().ok()) {
                    Some(v) => v,
                    None => <$t>::parse(field).ok_or("a value that does not parse")?,
                },
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
        Builder::Float64(b) => parsed!(b, Float64Type),
        Builder::Date32(b) => parsed!(b, Date32Type),
        Builder::Boolean(b) => b.append_value(if field.eq_ignore_ascii_case("true") {
            true
        } else if field.eq_ignore_ascii_case("false") {
            false
        } else {
            return Err("not a boolean");
        }),
        Builder::Utf8(b) => b.append_value(field),
        Builder::LargeUtf8(b) => b.append_value(field),
        Builder::Timestamp(b) => match &column.kind {
            Kind::Timestamp(unit, zone) => b.append_value(timestamp(field, *unit, zone)?),
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
    let mut value: u64 = 0;
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
    // At most 19 digits: below 10^19, within a u64.
    if negative {
        0i64.checked_sub_unsigned(value)
    } else {
        i64::try_from(value).ok()
    }
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

    #[test]
    fn integers_read_eight_digits_at_a_time_are_what_arrow_cast_reads() {
        use arrow_array::types::Int64Type;
        use arrow_cast::parse::Parser;
        let mut rng = SplitMix64(0x1264);
        let mut texts: Vec<String> = [
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
        ]
        .map(String::from)
        .to_vec();
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
        for _ in 0..2000 {
            let len = rng.between(0, 40) as usize;
            let text: Vec<u8> = (0..len)
                .map(|_| {
                    *[b'a', b',', b'"', b'\r', 0x80, 0xff, 0, b'\n']
                        .get(rng.between(0, 8) as usize)
                        .unwrap()
                })
                .collect();
            let set = [b',', b'"', b'\r'];
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
