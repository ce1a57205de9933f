//! Hive-style partitioning of a batch by column values and event time.

use std::collections::HashMap;

use arrow_array::{Array, RecordBatch, UInt32Array};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, TimeUnit};
use chrono::{DateTime, Utc};

use super::config::PartitionConfig;

/// Hive's name for the partition of null values.
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// The rows of a batch split by partition.
#[derive(Debug)]
pub(crate) struct Split {
    /// `(partition path, rows)` in order of first appearance.
    pub(crate) parts: Vec<(String, RecordBatch)>,
    /// Rows that cannot be placed in a partition, with the reason.
    pub(crate) rejected: Vec<(usize, String)>,
}

/// Split `batch` by `config`; an error names a column that cannot partition (missing or of an
/// unsupported type).
pub(crate) fn split(batch: &RecordBatch, config: &PartitionConfig) -> Result<Split, String> {
    if config.columns.is_empty() && config.event_time.is_none() {
        return Ok(Split {
            parts: vec![(String::new(), batch.clone())],
            rejected: Vec::new(),
        });
    }
    let n = batch.num_rows();
    let mut keys: Vec<String> = vec![String::new(); n];
    let mut rejected: Vec<(usize, String)> = Vec::new();
    let options = FormatOptions::default().with_null(NULL_PARTITION);
    for name in &config.columns {
        let col = batch
            .column_by_name(name)
            .ok_or_else(|| format!("partition column \"{name}\" is not in the batch"))?;
        let fmt = ArrayFormatter::try_new(col.as_ref(), &options)
            .map_err(|e| format!("partition column \"{name}\" cannot be formatted: {e}"))?;
        for (row, key) in keys.iter_mut().enumerate() {
            let value = if col.is_null(row) {
                NULL_PARTITION.to_string()
            } else {
                escape(&fmt.value(row).to_string())
            };
            if !key.is_empty() {
                key.push('/');
            }
            key.push_str(name);
            key.push('=');
            key.push_str(&value);
        }
    }
    if let Some(et) = &config.event_time {
        let col = batch
            .column_by_name(&et.column)
            .ok_or_else(|| format!("event-time column \"{}\" is not in the batch", et.column))?;
        let times = event_times(col.as_ref()).ok_or_else(|| {
            format!(
                "event-time column \"{}\" has type {}; expected a timestamp or date",
                et.column,
                col.data_type()
            )
        })?;
        for (row, key) in keys.iter_mut().enumerate() {
            match times(row) {
                Some(t) => {
                    if !key.is_empty() {
                        key.push('/');
                    }
                    key.push_str(&t.format(&et.format).to_string());
                }
                None => rejected.push((row, format!("event-time column \"{}\" is null or out of range; the row cannot be placed in a partition", et.column))),
            }
        }
    }
    let mut order: Vec<String> = Vec::new();
    let mut rows: HashMap<String, Vec<u32>> = HashMap::new();
    let mut is_rejected = vec![false; n];
    for (row, _) in &rejected {
        is_rejected[*row] = true;
    }
    for (row, key) in keys.into_iter().enumerate() {
        if is_rejected[row] {
            continue;
        }
        rows.entry(key.clone())
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push(row as u32);
    }
    let mut parts = Vec::with_capacity(order.len());
    for key in order {
        let idx = UInt32Array::from(rows.remove(&key).unwrap_or_default());
        let columns = batch
            .columns()
            .iter()
            .map(|c| arrow_select::take::take(c.as_ref(), &idx, None))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot split batch by partition: {e}"))?;
        let part = RecordBatch::try_new(batch.schema(), columns)
            .map_err(|e| format!("cannot split batch by partition: {e}"))?;
        parts.push((key, part));
    }
    Ok(Split { parts, rejected })
}

type TimeAt<'a> = Box<dyn Fn(usize) -> Option<DateTime<Utc>> + 'a>;

fn event_times(col: &dyn Array) -> Option<TimeAt<'_>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    Some(match col.data_type() {
        DataType::Timestamp(unit, _) => {
            let unit = *unit;
            let at = move |v: i64| match unit {
                TimeUnit::Second => DateTime::from_timestamp(v, 0),
                TimeUnit::Millisecond => DateTime::from_timestamp_millis(v),
                TimeUnit::Microsecond => DateTime::from_timestamp_micros(v),
                TimeUnit::Nanosecond => Some(DateTime::from_timestamp_nanos(v)),
            };
            let values: Box<dyn Fn(usize) -> Option<i64>> = match unit {
                TimeUnit::Second => {
                    let a = col.as_primitive::<TimestampSecondType>();
                    Box::new(move |i| a.is_valid(i).then(|| a.value(i)))
                }
                TimeUnit::Millisecond => {
                    let a = col.as_primitive::<TimestampMillisecondType>();
                    Box::new(move |i| a.is_valid(i).then(|| a.value(i)))
                }
                TimeUnit::Microsecond => {
                    let a = col.as_primitive::<TimestampMicrosecondType>();
                    Box::new(move |i| a.is_valid(i).then(|| a.value(i)))
                }
                TimeUnit::Nanosecond => {
                    let a = col.as_primitive::<TimestampNanosecondType>();
                    Box::new(move |i| a.is_valid(i).then(|| a.value(i)))
                }
            };
            Box::new(move |i| values(i).and_then(at))
        }
        DataType::Date32 => {
            let a = col.as_primitive::<Date32Type>();
            Box::new(move |i| {
                a.is_valid(i)
                    .then(|| a.value(i))
                    .and_then(|d| DateTime::from_timestamp(i64::from(d) * 86_400, 0))
            })
        }
        DataType::Date64 => {
            let a = col.as_primitive::<Date64Type>();
            Box::new(move |i| {
                a.is_valid(i)
                    .then(|| a.value(i))
                    .and_then(DateTime::from_timestamp_millis)
            })
        }
        _ => return None,
    })
}

/// Percent-encode the characters Hive escapes in partition values.
pub(crate) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_control()
            || matches!(
                c,
                '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '{' | '[' | ']' | '^'
            )
        {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    if out.is_empty() {
        NULL_PARTITION.to_string()
    } else {
        out
    }
}

/// The inverse of [`escape`]: `%XX` sequences decoded as UTF-8 bytes.
#[cfg(any(feature = "delta", feature = "iceberg", test))]
pub(crate) fn unescape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = value.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(h, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The values of the partition `columns` in a file's partition directory, as [`split`] wrote
/// it (`a=1/b=x%2Fy`, then any event-time directories): unescaped, `None` for the Hive null
/// partition (also the sink's directory for an empty string). An error says which column the
/// directory lacks (a file written with another `sink.partitionBy`).
#[cfg(any(feature = "delta", feature = "iceberg", test))]
pub(crate) fn column_values(
    partition: &str,
    columns: &[String],
) -> Result<Vec<Option<String>>, String> {
    let mut segments = partition.split('/').filter(|s| !s.is_empty());
    columns
        .iter()
        .map(|name| {
            let value = segments
                .next()
                .and_then(|s| s.strip_prefix(name.as_str()))
                .and_then(|s| s.strip_prefix('='))
                .ok_or_else(|| {
                    format!(
                        "its directory {partition:?} does not start with the partition column {name:?}"
                    )
                })?;
            Ok((value != NULL_PARTITION).then(|| unescape(value)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_values_read_back_what_split_wrote() {
        let cols = ["city".to_string(), "n".to_string()];
        let dir = format!(
            "city={}/n={NULL_PARTITION}/date=2026-11-23",
            escape("a/b=c%é")
        );
        assert_eq!(
            column_values(&dir, &cols).expect("values"),
            [Some("a/b=c%é".to_string()), None]
        );
        assert_eq!(escape(""), NULL_PARTITION);
        assert!(column_values("", &[]).expect("none").is_empty());
        let e = column_values("n=1/city=x", &cols).expect_err("order");
        assert!(e.contains("\"city\""), "{e}");
    }
}
