//! CSV schema inference: what `arrow_csv::reader::Format::infer_schema` infers, with the same
//! reader (`csv`, the same settings), the same loop and the same errors, only faster: each
//! value's type is told by [`value_bits`], which answers numbers, `true`/`false` and values
//! that cannot be a number, a date or a boolean without `arrow_csv`'s set of regular
//! expressions (which it runs on every value), and asks the same set for the rest. A whole
//! file is inferred in blocks ([`infer_csv_in_blocks`]); a block without quotes and carriage
//! returns is split into records and fields without the reader, as the reader splits it
//! ([`infer_lines`]).

use std::io::Read;
use std::sync::LazyLock;

use arrow_schema::{ArrowError, DataType, Field, Fields, Schema, TimeUnit};
use regex::RegexSet;

use super::text::{LinesBlock, next_block};
use crate::decode::Special;

/// `arrow_csv`'s patterns, in its order: the lowest that matches gives the value's type bit
/// (boolean, integer, float, date, timestamps of seconds, milliseconds, microseconds and
/// nanoseconds).
static PATTERNS: LazyLock<Result<RegexSet, regex::Error>> = LazyLock::new(|| {
    RegexSet::new([
        r"(?i)^(true)$|^(false)$(?-i)",
        r"^[+-]?(\d+)$",
        r"^[+-]?((\d*\.\d+|\d+\.\d*)([eE][-+]?\d+)?|\d+([eE][-+]?\d+))$",
        r"^\d{4}-\d\d-\d\d$",
        r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[^\d\.].*)?$",
        r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d{1,3}(?:[^\d].*)?$",
        r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d{1,6}(?:[^\d].*)?$",
        r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d{1,9}(?:[^\d].*)?$",
    ])
});

const BOOLEAN: u16 = 1;
const INTEGER: u16 = 1 << 1;
const FLOAT: u16 = 1 << 2;
const UTF8: u16 = 1 << 8;

/// The type bit of one non-null value, as `arrow_csv`'s `InferredDataType::update` sets it.
fn value_bits(patterns: &RegexSet, value: &str) -> u16 {
    if value.starts_with('"') {
        return UTF8;
    }
    let bytes = value.as_bytes();
    match ascii_number(bytes) {
        // Only the integer pattern (index 1) matches: the boolean one needs letters.
        Some(Number::Integer) => return integer_bits(value),
        // Only the float pattern (index 2): a '.' or an exponent rules out 0 and 1.
        Some(Number::Float) => return FLOAT,
        None => {}
    }
    if value == "true" || value == "false" {
        return BOOLEAN;
    }
    let could_match = match bytes.first() {
        // Every pattern starts with a sign, a digit, a '.', or a `t`/`f` of any case; a
        // character outside ASCII may be a Unicode digit (`\d`): the patterns decide.
        Some(&b) if b.is_ascii() => {
            b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b't' | b'T' | b'f' | b'F')
        }
        _ => true,
    };
    // In ASCII `\d` is `[0-9]`: a value that is not a number (above) and starts with a digit,
    // a sign or a '.' can match only the date and timestamp patterns, which all begin with
    // `\d{4}-\d\d-\d\d`. Most strings are told here, without running the patterns.
    let ascii_not_a_date = value.is_ascii()
        && !matches!(bytes.first(), Some(b't' | b'T' | b'f' | b'F'))
        && !starts_like_a_date(bytes);
    if could_match
        && !ascii_not_a_date
        && let Some(m) = patterns.matches(value).into_iter().next()
    {
        return if m == 1 { integer_bits(value) } else { 1 << m };
    }
    if matches!(value, "NaN" | "nan" | "inf" | "-inf") {
        FLOAT
    } else {
        UTF8
    }
}

/// Whether ASCII `b` begins with `dddd-dd-dd`, as every date and timestamp pattern does.
fn starts_like_a_date(b: &[u8]) -> bool {
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() >= 10 && digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10)
}

/// The bit of a value the integer pattern matches: a string when it overflows `i64`.
fn integer_bits(value: &str) -> u16 {
    if value.len() >= 19 && value.parse::<i64>().is_err() {
        UTF8
    } else {
        INTEGER
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Number {
    Integer,
    Float,
}

/// What `^[+-]?(\d+)$` (an integer) or the float pattern match, in ASCII digits; `None` for
/// anything else (which the patterns themselves then judge, Unicode digits included).
fn ascii_number(b: &[u8]) -> Option<Number> {
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let whole = digits(i);
    i += whole;
    let mut fraction = None;
    if b.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        fraction = Some(n);
        i += 1 + n;
    }
    let mut exponent = false;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digits(i);
        if n == 0 {
            return None;
        }
        i += n;
        exponent = true;
    }
    if i != b.len() {
        return None;
    }
    match fraction {
        Some(n) if whole + n > 0 => Some(Number::Float),
        Some(_) => None,
        None if whole == 0 => None,
        None if exponent => Some(Number::Float),
        None => Some(Number::Integer),
    }
}

/// The type of a column whose values set `bits` (`InferredDataType::get`).
fn column_type(bits: u16) -> DataType {
    match bits {
        0 => DataType::Null,
        1 => DataType::Boolean,
        2 => DataType::Int64,
        4 | 6 => DataType::Float64,
        b if b != 0 && (b & !0b1111_1000) == 0 => match b.leading_zeros() {
            8 => DataType::Timestamp(TimeUnit::Nanosecond, None),
            9 => DataType::Timestamp(TimeUnit::Microsecond, None),
            10 => DataType::Timestamp(TimeUnit::Millisecond, None),
            11 => DataType::Timestamp(TimeUnit::Second, None),
            _ => DataType::Date32,
        },
        _ => DataType::Utf8,
    }
}

/// `arrow_csv`'s message for a `csv` error (`map_csv_error`).
fn csv_error(error: &csv::Error) -> ArrowError {
    let at = |pos: Option<&csv::Position>| {
        pos.map(|pos| format!(" at line {}", pos.line()))
            .unwrap_or_default()
    };
    ArrowError::CsvError(match error.kind() {
        csv::ErrorKind::Io(e) => e.to_string(),
        csv::ErrorKind::Utf8 { pos, err } => format!(
            "Encountered UTF-8 error while reading CSV file: {err}{}",
            at(pos.as_ref())
        ),
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => format!(
            "Encountered unequal lengths between records on CSV file. Expected {expected_len} \
             records, found {len} records{}",
            at(pos.as_ref())
        ),
        _ => "Error reading CSV file".to_string(),
    })
}

/// The schema of the CSV records of `reader` and how many records it was inferred from (the
/// first `max_records`, or all): `arrow_csv::reader::Format::infer_schema` with this header,
/// delimiter and quote, the same result and the same errors.
pub(crate) fn infer_csv_schema<R: Read>(
    reader: R,
    header: bool,
    delimiter: u8,
    quote: u8,
    max_records: Option<usize>,
) -> Result<(Schema, usize), ArrowError> {
    let patterns = PATTERNS.as_ref().map_err(|e| {
        ArrowError::CsvError(format!("the patterns of CSV types do not compile: {e}"))
    })?;
    let mut csv_reader = csv::ReaderBuilder::new()
        .has_headers(header)
        .flexible(false)
        .delimiter(delimiter)
        .escape(None)
        .quote(quote)
        .from_reader(reader);
    let first = csv_reader.headers().map_err(|e| csv_error(&e))?;
    let names: Vec<String> = if header {
        first.iter().map(str::to_string).collect()
    } else {
        (1..=first.len()).map(|i| format!("column_{i}")).collect()
    };
    let mut bits = vec![0u16; names.len()];
    let mut records = 0;
    let mut record = csv::StringRecord::new();
    let max_records = max_records.unwrap_or(usize::MAX);
    while records < max_records {
        if !csv_reader
            .read_record(&mut record)
            .map_err(|e| csv_error(&e))?
        {
            break;
        }
        records += 1;
        add_bits(&mut bits, &record, patterns);
    }
    Ok((schema_of(&names, &bits), records))
}

/// Add the type bits of `record`'s values to `bits`, one per column.
fn add_bits(bits: &mut [u16], record: &csv::StringRecord, patterns: &RegexSet) {
    for (column, value) in bits.iter_mut().zip(record.iter()) {
        add_value(column, value, patterns);
    }
}

/// Add the type bit of `value` to its `column`'s.
#[inline]
fn add_value(column: &mut u16, value: &str, patterns: &RegexSet) {
    // Without a null pattern, the empty value is the null. A column that had a string is a
    // string whatever else it holds (`column_type`): its values need no look.
    if !value.is_empty() && *column & UTF8 == 0 {
        *column |= value_bits(patterns, value);
    }
}

fn schema_of(names: &[String], bits: &[u16]) -> Schema {
    let fields: Fields = bits
        .iter()
        .zip(names)
        .map(|(&b, name)| Field::new(name, column_type(b), true))
        .collect();
    Schema::new(fields)
}

/// The UTF-8 byte order mark, which `csv_core` drops at the start of its input.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// What [`infer_csv_schema`] infers from all the records of `reader` (no `max_records`), by
/// `threads` threads at once, each reading blocks of about `block_size` bytes of whole lines;
/// or `None` where this cannot tell that it is the same, and the caller infers again from
/// the start with [`infer_csv_schema`], which then also gives the error with its line.
///
/// Without the quote character, a line break always ends a record, so a block that starts
/// after one starts a record and `csv` reads it as it reads those bytes in the whole file.
/// So a file (or the rest of it) with a quote character, a record whose field count is not
/// the first record's, invalid UTF-8, or a block starting with a byte order mark (which
/// `csv_core` would drop) gives `None`. Types are merged by or-ing the bits of each block's
/// values, in any order, as one pass merges them value by value. Errors are the reader's.
pub(crate) fn infer_csv_in_blocks<R: Read>(
    reader: R,
    header: bool,
    delimiter: u8,
    quote: u8,
    threads: usize,
    block_size: usize,
) -> std::io::Result<Option<(Schema, usize)>> {
    let Ok(patterns) = PATTERNS.as_ref() else {
        return Ok(None);
    };
    let mut input = std::io::BufReader::with_capacity(1 << 20, reader);
    let mut names: Option<Vec<String>> = None;
    let mut bits: Vec<u16> = Vec::new();
    let mut records = 0;
    loop {
        let mut blocks = Vec::with_capacity(threads.max(1));
        let mut ended = false;
        while blocks.len() < threads.max(1) {
            match next_block(&mut input, block_size, MAX_LINE_REST)? {
                LinesBlock::Lines(block) => blocks.push(block),
                LinesBlock::End => {
                    ended = true;
                    break;
                }
                // One pass reads such a line (a file of `\r` line breaks, say) in bounded
                // memory.
                LinesBlock::LineTooLong => return Ok(None),
            }
        }
        let starts_file = names.is_none();
        if blocks.is_empty() && !starts_file {
            break;
        }
        // An empty file is left to the one pass (`csv` tells what it holds).
        if blocks.is_empty()
            || blocks.iter().any(|b| memchr::memchr(quote, b).is_some())
            || blocks
                .iter()
                .enumerate()
                .any(|(i, b)| (i > 0 || !starts_file) && b.starts_with(BOM))
        {
            return Ok(None);
        }
        let parts: Vec<Option<Part>> = std::thread::scope(|scope| {
            let handles: Vec<_> = blocks
                .iter()
                .enumerate()
                .map(|(i, block)| {
                    let first = starts_file && i == 0;
                    scope.spawn(move || {
                        infer_lines(block, first, header, delimiter, patterns).unwrap_or_else(
                            || infer_records(block, first, header, delimiter, quote, patterns),
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().ok().flatten())
                .collect()
        });
        for part in parts {
            let Some(part) = part else {
                return Ok(None);
            };
            if let Some(first) = part.names {
                bits = vec![0; first.len()];
                names = Some(first);
            }
            let width = names.as_ref().map_or(0, Vec::len);
            if width == 0 || part.width.is_some_and(|w| w != width) {
                return Ok(None);
            }
            for (column, b) in bits.iter_mut().zip(&part.bits) {
                *column |= b;
            }
            records += part.records;
        }
        if ended {
            break;
        }
    }
    Ok(names.map(|names| (schema_of(&names, &bits), records)))
}

/// How far past its `size` bytes a block is read to the end of its line.
const MAX_LINE_REST: u64 = 1 << 20;

/// What one block of records infers (see [`infer_csv_in_blocks`]).
#[derive(Debug, PartialEq)]
struct Part {
    /// The column names, from the block that starts the file.
    names: Option<Vec<String>>,
    /// The field count of every record of the block (none without records).
    width: Option<usize>,
    bits: Vec<u16>,
    records: usize,
}

/// Infer from the records of `block` (the start of the file when `first`) by the `csv`
/// reader; `None` when its records do not all have the same field count or one is not valid
/// UTF-8. [`infer_lines`] infers the same from most blocks, faster.
fn infer_records(
    block: &[u8],
    first: bool,
    header: bool,
    delimiter: u8,
    quote: u8,
    patterns: &RegexSet,
) -> Option<Part> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(first && header)
        .flexible(true)
        .delimiter(delimiter)
        .escape(None)
        .quote(quote)
        .from_reader(block);
    let names = if first {
        let row = reader.headers().ok()?;
        Some(if header {
            row.iter().map(str::to_string).collect::<Vec<_>>()
        } else {
            (1..=row.len()).map(|i| format!("column_{i}")).collect()
        })
    } else {
        None
    };
    let mut width = names.as_ref().map(Vec::len);
    let mut bits = vec![0u16; width.unwrap_or(0)];
    let mut record = csv::StringRecord::new();
    let mut records = 0;
    while reader.read_record(&mut record).ok()? {
        match width {
            None => {
                width = Some(record.len());
                bits = vec![0; record.len()];
            }
            Some(w) if w != record.len() => return None,
            Some(_) => {}
        }
        records += 1;
        add_bits(&mut bits, &record, patterns);
    }
    Some(Part {
        names,
        width,
        bits,
        records,
    })
}

/// [`infer_records`] without the `csv` reader, for a block (without the quote character, as
/// every block is) that is valid UTF-8 and has no carriage return nor byte order mark, with an
/// ASCII delimiter other than a line break: `csv` reads such bytes as records that are the
/// non-empty lines (it skips empty ones), each split at every delimiter. Line breaks and
/// delimiters are found 64 bytes at a time by the CSV fast path's scan ([`Special`]; the
/// `csv` reader was nearly half of the instructions of inferring a numeric CSV file). `None` for any
/// other block, which the reader reads.
fn infer_lines(
    block: &[u8],
    first: bool,
    header: bool,
    delimiter: u8,
    patterns: &RegexSet,
) -> Option<Option<Part>> {
    if !delimiter.is_ascii()
        || matches!(delimiter, b'\n' | b'\r')
        || memchr::memchr(b'\r', block).is_some()
        || block.starts_with(BOM)
    {
        return None;
    }
    let text = std::str::from_utf8(block).ok()?;
    let mut names: Option<Vec<String>> = None;
    let mut width: Option<usize> = None;
    let mut bits = Vec::new();
    let mut records = 0;
    // The fields of the current line; each ends at a delimiter, a line break or the block's
    // end (ASCII bytes: every field is valid UTF-8).
    let mut record: Vec<&str> = Vec::new();
    let mut start = 0;
    let ends = Special::new(block, [delimiter, b'\n', b'\n']).chain(std::iter::once(block.len()));
    for end in ends {
        record.push(text.get(start..end)?);
        start = end + 1;
        if block.get(end) == Some(&delimiter) {
            continue;
        }
        if let [""] = record[..] {
            // An empty line, which `csv` skips.
            record.clear();
            continue;
        }
        if first && names.is_none() {
            let n = record.len();
            if header {
                names = Some(record.drain(..).map(str::to_string).collect());
                width = Some(n);
                bits = vec![0; n];
                continue;
            }
            names = Some((1..=n).map(|i| format!("column_{i}")).collect());
        }
        let expected = *width.get_or_insert_with(|| {
            bits = vec![0; record.len()];
            record.len()
        });
        if record.len() != expected {
            return Some(None);
        }
        for (column, value) in bits.iter_mut().zip(record.drain(..)) {
            add_value(column, value, patterns);
        }
        records += 1;
    }
    if first && names.is_none() {
        // A block of no record is left to the reader (it tells the empty file).
        return None;
    }
    Some(Some(Part {
        names,
        width,
        bits,
        records,
    }))
}

/// What `text` infers here and what `arrow_csv` infers from it (schema and record count, or
/// the error's message), in that order.
#[cfg(any(test, feature = "fuzzing"))]
type Inferences = [Result<(Schema, usize), String>; 2];

/// `text` inferred here and by `arrow_csv`, with `"` for quotes (the differential tests and
/// the `text_infer` fuzz target).
#[cfg(any(test, feature = "fuzzing"))]
fn ours_and_arrows(text: &[u8], header: bool, delimiter: u8, max: Option<usize>) -> Inferences {
    let ours = infer_csv_schema(std::io::Cursor::new(text), header, delimiter, b'"', max)
        .map_err(|e| e.to_string());
    let arrow = arrow_csv::reader::Format::default()
        .with_header(header)
        .with_delimiter(delimiter)
        .with_quote(b'"')
        .infer_schema(std::io::Cursor::new(text), max)
        .map_err(|e| e.to_string());
    [ours, arrow]
}

/// `text` inferred as the source infers a whole file (`threads` threads, blocks of `block`
/// bytes, `"` for quotes), as [`ours_and_arrows`] gives it, and how many times the file was
/// opened.
#[cfg(any(test, feature = "fuzzing"))]
fn as_the_source(
    text: &[u8],
    header: bool,
    delimiter: u8,
    threads: usize,
    block: usize,
) -> (Result<(Schema, usize), String>, usize) {
    use super::event::FileError;
    use super::text::{TextFormat, infer_text_in_blocks};
    let opened = std::cell::Cell::new(0);
    let open = || -> std::io::Result<Box<dyn Read + Send>> {
        opened.set(opened.get() + 1);
        Ok(Box::new(std::io::Cursor::new(text.to_vec())))
    };
    let format = TextFormat::Csv {
        header,
        delimiter,
        quote: b'"',
    };
    let got = match infer_text_in_blocks(open, format, None, threads, block) {
        Ok(inferred) => Ok((
            Schema::new(inferred.schema.fields().clone()),
            inferred
                .records
                .and_then(|r| usize::try_from(r).ok())
                .unwrap_or_default(),
        )),
        // `arrow_csv` infers no columns where the source refuses the file.
        Err(FileError::Content(m)) if m.starts_with("the file has no columns") => {
            Ok((Schema::empty(), 0))
        }
        Err(FileError::Content(m)) => Err(m),
        Err(other) => Err(format!("{other:?}")),
    };
    (got, opened.get())
}

/// `text` inferred here and by `arrow_csv` gives the same schema and record count, or the same
/// error. Panics otherwise (the `text_infer` fuzz target).
#[cfg(feature = "fuzzing")]
pub(crate) fn csv_inference_agrees(text: &[u8], header: bool, delimiter: u8, max: Option<usize>) {
    let [ours, arrow] = ours_and_arrows(text, header, delimiter, max);
    assert_eq!(ours, arrow);
    if max.is_none() {
        // The whole file as the source reads it: in blocks of a few records, two threads.
        let (got, _) = as_the_source(text, header, delimiter, 2, 1 + text.len() / 5);
        assert_eq!(got, arrow);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Comma-separated `text` inferred here and by `arrow_csv`.
    fn both(text: impl AsRef<[u8]>, header: bool, max: Option<usize>) -> Inferences {
        ours_and_arrows(text.as_ref(), header, b',', max)
    }

    /// Values that look like numbers, booleans, dates and timestamps (and almost do), in every
    /// mix, with and without a header and a record limit: the schema, record count and error
    /// are `arrow_csv`'s.
    #[test]
    fn inference_is_arrow_csvs_on_values_shaped_to_confuse_it() {
        let values = [
            "0",
            "-12",
            "+7",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "00000000000000000001",
            "1.5",
            ".5",
            "5.",
            "-.5e3",
            "1e5",
            "1E+05",
            "1e",
            "e5",
            ".",
            "+",
            "-",
            "+.e1",
            "1.2.3",
            "1_000",
            " 1",
            "1 ",
            "٣",
            "٣.٥",
            "true",
            "false",
            "TRUE",
            "False",
            "tRuE",
            "falſe",
            "truth",
            "t",
            "f",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "+inf",
            "Infinity",
            "2024-01-31",
            "2024-1-31",
            "2024-01-31T10:20:30",
            "2024-01-31 10:20:30Z",
            "2024-01-31T10:20:30.123",
            "2024-01-31T10:20:30.123456",
            "2024-01-31T10:20:30.123456789",
            "2024-01-31T10:20:30.1234567891",
            "2024-01-31T10:20:30.5+02:00",
            "2024-01-31x",
            "2024-01-3",
            "2024-0a-31",
            "2024_01-31",
            "20240-1-31",
            "+2024-01-31",
            "-2024-01-31",
            ".2024-01-31",
            "2024-01-31T10:20:3",
            "2024-01-31 10:20:30.",
            "2024-01-31T10:20:30.x",
            "2024-٠١-31",
            "1-2",
            "3fa2c9",
            "12ab",
            "0x1F",
            "1e5x",
            "-x",
            "+-1",
            ".x",
            "\"\"quoted\"\"",
            "x",
            "é",
            "",
            "\u{feff}1",
            "a\nb",
            "1\r\n2",
        ];
        let mut rng = arcane_test_support::rng::SplitMix64(0x853c_49e6_748f_ea9b);
        let mut next = move |n: usize| rng.between(0, n as u64) as usize;
        let quote = |v: &str| {
            if v.contains(['"', ',', '\n', '\r']) || v.starts_with(' ') {
                format!("\"{}\"", v.replace('"', "\"\""))
            } else {
                v.to_string()
            }
        };
        for trial in 0..400 {
            let columns = 1 + next(4);
            // A column draws from a few values, so that some columns settle on a type.
            let pools: Vec<Vec<&str>> = (0..columns)
                .map(|_| {
                    (0..1 + next(3))
                        .map(|_| values[next(values.len())])
                        .collect()
                })
                .collect();
            let mut text = String::new();
            let header = next(2) == 0;
            if header {
                let names: Vec<String> = (0..columns).map(|c| format!("c{c}")).collect();
                text.push_str(&names.join(","));
                text.push('\n');
            }
            for _ in 0..1 + next(30) {
                let row: Vec<String> = pools.iter().map(|p| quote(p[next(p.len())])).collect();
                text.push_str(&row.join(","));
                // Now and then a short or long record, a blank line or a CRLF.
                match next(40) {
                    0 => text.push_str(",extra"),
                    1 => text.push('\n'),
                    2 => text.push('\r'),
                    _ => {}
                }
                text.push('\n');
            }
            let max = (next(3) == 0).then(|| next(20));
            let [ours, arrow] = both(&text, header, max);
            assert_eq!(
                ours, arrow,
                "trial {trial}, header {header}, max {max:?}:\n{text}"
            );
            // The whole file, in blocks of a few records read by several threads.
            let [_, whole] = both(&text, header, None);
            let (threads, block) = (2 + next(2), 1 + next(80));
            let (got, _) = as_the_source(text.as_bytes(), header, b',', threads, block);
            assert_eq!(
                got, whole,
                "trial {trial}, header {header}, {threads} threads, blocks of {block}:\n{text}"
            );
        }
    }

    /// A file without quotes is inferred in blocks, read once; a quote anywhere, a record of
    /// another field count or invalid UTF-8 has it read again in one pass, which gives what
    /// `arrow_csv` gives, errors and their lines included.
    #[test]
    fn files_are_inferred_in_blocks_unless_that_cannot_tell() {
        let rows: String = (0..200)
            .map(|i| format!("{i},{}.5,{},x{i}\n", i * 3, i % 2 == 0))
            .collect();
        let plain = format!("a,b,c,d\n{rows}");
        let (got, opened) = as_the_source(plain.as_bytes(), true, b',', 2, 64);
        let [_, want] = both(plain.as_bytes(), true, None);
        assert_eq!(got, want);
        assert_eq!(opened, 1, "a file without quotes is read once");
        let (types, records) = got.expect("inferred");
        assert_eq!(records, 200);
        let types: Vec<_> = types
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(
            types,
            [
                DataType::Int64,
                DataType::Float64,
                DataType::Boolean,
                DataType::Utf8
            ]
        );
        let mut invalid = plain.clone().into_bytes();
        invalid.extend_from_slice(b"1,2,true,\xff\n");
        for (what, text, again) in [
            (
                "a quote at the end",
                format!("{plain}1,2,true,\"q\"\n").into_bytes(),
                Some(true),
            ),
            (
                "a quoted name",
                format!("a,b,c,\"d\"\n{rows}").into_bytes(),
                Some(true),
            ),
            (
                "a short record at the end",
                format!("{plain}1,2\n").into_bytes(),
                Some(true),
            ),
            (
                "a long record inside",
                format!("{plain}1,2,3,4,5\n{rows}").into_bytes(),
                Some(true),
            ),
            ("invalid UTF-8", invalid, Some(true)),
            (
                "a float among integers",
                format!("{plain}1.5,2,true,x\n").into_bytes(),
                Some(false),
            ),
            (
                "a carriage return alone",
                format!("{plain}1,2,true,x\r3,4,false,y\n").into_bytes(),
                Some(false),
            ),
            // Read again when a block starts with it (which `csv_core` would drop).
            (
                "a byte order mark",
                format!("{plain}\u{feff}1,2,true,x\n").into_bytes(),
                None,
            ),
        ] {
            let (got, opened) = as_the_source(&text, true, b',', 2, 64);
            let [_, want] = both(&text, true, None);
            assert_eq!(got, want, "{what}");
            if let Some(again) = again {
                assert_eq!(opened, if again { 2 } else { 1 }, "{what}: times opened");
            }
        }
        let (got, _) = as_the_source(&[0xff], true, b',', 2, 64);
        assert!(
            got.expect_err("invalid").contains("at line 1"),
            "the error names its line"
        );

        // Records ended by `\r` alone: no line break for more than a block can read past its
        // size, so the file is read in one pass (in bounded memory).
        let text: Vec<u8> = std::iter::once(&b"a\r"[..])
            .chain(std::iter::repeat_n(&b"1\r"[..], MAX_LINE_REST as usize))
            .flatten()
            .copied()
            .collect();
        let (got, opened) = as_the_source(&text, true, b',', 2, 64);
        let want = infer_csv_schema(std::io::Cursor::new(&text), true, b',', b'"', None)
            .map_err(|e| e.to_string());
        assert_eq!(got, want);
        assert_eq!(
            opened, 2,
            "a line longer than a block can hold is read in one pass"
        );
    }

    /// A block read without the `csv` reader infers what the reader infers from it: names,
    /// widths, types and record counts, and `None` alike, on blocks of every mix of empty
    /// lines, short and long records, delimiters at the ends, spaces, non-ASCII text, values
    /// that are almost numbers, dates and booleans; blocks it does not read (carriage returns,
    /// a byte order mark, invalid UTF-8) are left to the reader.
    #[test]
    fn blocks_split_at_line_breaks_infer_what_the_csv_reader_infers() {
        use arcane_test_support::rng::SplitMix64;
        const PIECES: &[&str] = &[
            "1",
            "-2",
            "+3",
            "0.5",
            ".5",
            "5.",
            "1e3",
            "1e",
            "true",
            "False",
            "t",
            "nan",
            "x",
            "é",
            " ",
            "",
            "2026-11-25",
            "2026-11-25T10:00:00",
            "2026-11-25 10:00:00.123",
            "9223372036854775808",
            "\u{feff}",
            ";",
            "\t",
            "\r",
            "\u{a0}",
        ];
        let Ok(patterns) = PATTERNS.as_ref() else {
            panic!("the patterns compile");
        };
        let mut rng = SplitMix64(0x69_6e66_6572);
        let (mut read, mut left) = (0, 0);
        for round in 0..20_000u64 {
            let delimiter = [b',', b';', b'\t', b'|'][(round % 4) as usize];
            let columns = rng.between(1, 5);
            let mut text = Vec::new();
            if rng.between(0, 8) == 0 {
                text.push(b'\n');
            }
            for _ in 0..rng.between(0, 12) {
                let mut fields = columns;
                if rng.between(0, 15) == 0 {
                    fields = rng.between(1, 6);
                }
                if rng.between(0, 10) == 0 {
                    fields = 0;
                }
                for f in 0..fields {
                    if f > 0 {
                        text.push(delimiter);
                    }
                    let piece = PIECES[rng.between(0, PIECES.len() as u64) as usize];
                    if piece.contains('\r') && rng.between(0, 4) != 0 {
                        continue;
                    }
                    text.extend_from_slice(piece.as_bytes());
                }
                text.push(b'\n');
            }
            if rng.between(0, 40) == 0 {
                text.push(0xff);
            }
            if rng.between(0, 3) == 0 {
                text.pop();
            }
            let first = round % 3 != 0;
            let header = round % 5 != 0;
            let want = infer_records(&text, first, header, delimiter, b'"', patterns);
            match infer_lines(&text, first, header, delimiter, patterns) {
                Some(got) => {
                    read += 1;
                    assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&text));
                }
                None => left += 1,
            }
        }
        assert!(read > 10_000 && left > 1_000, "{read} read, {left} left");
    }

    /// Every value alone, in a column of its own: its type bit is the one `arrow_csv`'s
    /// patterns give.
    #[test]
    fn each_value_has_the_type_arrow_csv_gives_it() {
        for value in [
            "1",
            "-1",
            "1.0",
            "1e9",
            "1.e9",
            ".1e-9",
            "x1",
            "1x",
            "0x10",
            "١٢",
            "2020-02-30",
            "9999-99-99",
            "2020-02-02T02:02:02",
            "2020-02-02T02:02:02.",
            "true",
            "false",
            "FALSE",
            "NaN",
            "-nan",
            "inf",
        ] {
            let text = format!("h\n{value}\n");
            let [ours, arrow] = both(&text, true, None);
            assert_eq!(ours, arrow, "{value}");
        }
    }

    #[test]
    fn ascii_numbers_are_the_integer_and_float_patterns() {
        for (s, want) in [
            ("12", Some(Number::Integer)),
            ("-0", Some(Number::Integer)),
            ("1.", Some(Number::Float)),
            (".1", Some(Number::Float)),
            ("1e5", Some(Number::Float)),
            ("1.5E-3", Some(Number::Float)),
            (".", None),
            ("e1", None),
            ("1e", None),
            ("1e+", None),
            ("", None),
            ("-", None),
            ("1.2.3", None),
        ] {
            assert_eq!(ascii_number(s.as_bytes()), want, "{s}");
        }
    }
}
