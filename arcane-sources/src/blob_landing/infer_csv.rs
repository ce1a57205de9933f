//! CSV schema inference: what `arrow_csv::reader::Format::infer_schema` infers, with the same
//! reader (`csv`, the same settings), the same loop and the same errors, only faster: each
//! value's type is told by [`value_bits`], which answers numbers, `true`/`false` and values
//! that cannot be a number, a date or a boolean without `arrow_csv`'s set of regular
//! expressions (which it runs on every value), and asks the same set for the rest.

use std::io::Read;
use std::sync::LazyLock;

use arrow_schema::{ArrowError, DataType, Field, Fields, Schema, TimeUnit};
use regex::RegexSet;

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
        for (column, value) in bits.iter_mut().zip(record.iter()) {
            // Without a null pattern, the empty value is the null.
            if !value.is_empty() {
                *column |= value_bits(patterns, value);
            }
        }
    }
    let fields: Fields = bits
        .iter()
        .zip(&names)
        .map(|(&b, name)| Field::new(name, column_type(b), true))
        .collect();
    Ok((Schema::new(fields), records))
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

/// `text` inferred here and by `arrow_csv` gives the same schema and record count, or the same
/// error. Panics otherwise (the `text_infer` fuzz target).
#[cfg(feature = "fuzzing")]
pub(crate) fn csv_inference_agrees(text: &[u8], header: bool, delimiter: u8, max: Option<usize>) {
    let [ours, arrow] = ours_and_arrows(text, header, delimiter, max);
    assert_eq!(ours, arrow);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Comma-separated `text` inferred here and by `arrow_csv`.
    fn both(text: &str, header: bool, max: Option<usize>) -> Inferences {
        ours_and_arrows(text.as_bytes(), header, b',', max)
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
        }
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
