//! NDJSON decoding speed of the blob-landing source's block decoder on one thread: the
//! `arrow_json` path against the schema-directed fast path (`arcane-sources`
//! `decode/fast.rs`), on numeric-heavy records generated in memory (two int64, three
//! full-precision float64, a bool, a string of 8 values, a 16-hex-digit id).
//!
//! ```text
//! cargo run --release -p arcane-benches --bin decode_speed [MB] [BATCH_ROWS] [fast|json]
//! cargo run --release -p arcane-benches --bin decode_speed file FILE SCHEMA [BATCH_ROWS] [fast|json]
//! ```
//!
//! With `fast` or `json`, only that path runs (e.g. under a profiler). With `file`, the
//! records are the lines of the NDJSON file `FILE` and the schema is `SCHEMA`, a landing
//! corpus's `schema.json` (`landing_corpus`: `[{"name", "type", "nullable"}]`), e.g. the
//! nested shape's first file.
//!
//! Prints, for each path, the best of three passes over the data in MB/s (decoded bytes,
//! line breaks included) and rows/s; the two paths' batches are checked to be equal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use arcane_sources::decode::bench::NdjsonBlocks;
use arcane_test_support::rng::SplitMix64;
use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema};

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("qty", DataType::Int64, true),
        Field::new("price", DataType::Float64, true),
        Field::new("lat", DataType::Float64, true),
        Field::new("lon", DataType::Float64, true),
        Field::new("paid", DataType::Boolean, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("trace", DataType::Utf8, true),
    ]))
}

/// About `bytes` of NDJSON records and the range of each line (without its line break).
fn generate(bytes: usize) -> (Vec<u8>, Vec<Range<usize>>) {
    const STATUS: [&str; 8] = [
        "created",
        "paid",
        "packed",
        "shipped",
        "delivered",
        "returned",
        "refunded",
        "cancelled",
    ];
    let mut rng = SplitMix64(42);
    let mut buf = Vec::with_capacity(bytes + 4096);
    let mut lines = Vec::new();
    let mut id: i64 = 1_000_000_000_000;
    while buf.len() < bytes {
        id += rng.between(1, 1000) as i64;
        let start = buf.len();
        let _ = write!(
            buf,
            r#"{{"id":{id},"qty":{},"price":{:?},"lat":{:?},"lon":{:?},"paid":{},"status":"{}","trace":"{:016x}"}}"#,
            rng.between(0, 100_000) as i64 - 50,
            rng.unit() * 10_000.0,
            rng.unit() * 180.0 - 90.0,
            rng.unit() * 360.0 - 180.0,
            rng.next_u64() & 1 == 0,
            STATUS[rng.between(0, 8) as usize],
            rng.next_u64(),
        );
        lines.push(start..buf.len());
        buf.push(b'\n');
    }
    (buf, lines)
}

/// Records: the bytes, each line's range (without its line break), and their schema.
type Records = (Vec<u8>, Vec<Range<usize>>, Arc<Schema>);

/// The lines of the NDJSON file at `path` (blank ones left out) and the schema of the corpus
/// `schema.json` at `schema`.
fn from_file(path: &str, schema: &str) -> Result<Records, String> {
    use arcane_sources::prelude::{FieldConfig, schema_from_fields};
    let buf = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut lines = Vec::new();
    let mut start = 0;
    for line in buf.split(|&b| b == b'\n') {
        if !line.iter().all(u8::is_ascii_whitespace) {
            lines.push(start..start + line.len());
        }
        start += line.len() + 1;
    }
    let text = std::fs::read_to_string(schema).map_err(|e| format!("cannot read {schema}: {e}"))?;
    let columns: Vec<serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| format!("{schema}: {e}"))?;
    let fields = columns
        .iter()
        .map(|c| {
            let name = c["name"]
                .as_str()
                .ok_or(format!("{schema}: a column without a name"))?;
            let data_type = c["type"]
                .as_str()
                .ok_or(format!("{schema}: {name} has no type"))?;
            let field = FieldConfig::new(name, data_type);
            Ok(match c["nullable"].as_bool() {
                Some(false) => field.required(),
                _ => field,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let schema = schema_from_fields(&fields, "schema").map_err(|e| e.to_string())?;
    Ok((buf, lines, schema))
}

/// Decode every block; the batches and the seconds taken.
fn pass(
    decoder: &mut NdjsonBlocks,
    buf: &[u8],
    lines: &[Range<usize>],
    batch_rows: usize,
) -> Result<(Vec<RecordBatch>, f64), String> {
    let started = Instant::now();
    let mut batches = Vec::with_capacity(lines.len() / batch_rows + 1);
    for block in lines.chunks(batch_rows) {
        batches.push(decoder.decode(buf, block)?);
    }
    Ok((batches, started.elapsed().as_secs_f64()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let (buf, lines, schema) = if args.first().is_some_and(|a| a == "file") {
        let (Some(path), Some(schema)) = (args.get(1), args.get(2)) else {
            return Err("usage: decode_speed file FILE SCHEMA [BATCH_ROWS] [fast|json]".into());
        };
        let read = from_file(path, schema)?;
        // The rest as without `file`, but for the size.
        args.splice(0..3, [String::new()]);
        read
    } else {
        let mb: usize = args.first().map_or(Ok(100), |a| a.parse())?;
        let (buf, lines) = generate(mb << 20);
        (buf, lines, schema())
    };
    let batch_rows: usize = args.get(1).map_or(Ok(8192), |a| a.parse())?;
    let only = args.get(2).map(String::as_str);
    let size = buf.len() as f64 / 1e6;
    println!(
        "{} records, {:.1} MB, blocks of {batch_rows} rows, one thread",
        lines.len(),
        size
    );
    let mut results = Vec::new();
    for (label, fast) in [("arrow_json path", false), ("fast path", true)] {
        if only.is_some_and(|o| o != if fast { "fast" } else { "json" }) {
            continue;
        }
        let mut decoder = NdjsonBlocks::new(schema.clone(), batch_rows, fast);
        if decoder.has_fast() != fast {
            return Err(format!("{label}: the schema should have a fast path").into());
        }
        let mut best = f64::MAX;
        let mut batches = Vec::new();
        for _ in 0..3 {
            let (b, secs) = pass(&mut decoder, &buf, &lines, batch_rows)?;
            best = best.min(secs);
            batches = b;
        }
        println!(
            "{label:>16}: {:8.1} MB/s {:10.0} rows/s ({best:.3} s)",
            size / best,
            lines.len() as f64 / best
        );
        results.push((best, batches));
    }
    let [(json_secs, json), (fast_secs, fast)] = results.as_slice() else {
        return Ok(());
    };
    if json != fast {
        return Err("the two paths made different batches".into());
    }
    println!(
        "same batches; the fast path is {:.1}x the arrow_json path",
        json_secs / fast_secs
    );
    Ok(())
}
