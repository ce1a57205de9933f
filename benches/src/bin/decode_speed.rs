//! NDJSON decoding speed of the blob-landing source's block decoder on one thread: the
//! `arrow_json` path against the schema-directed fast path (`arcane-sources`
//! `decode/fast.rs`), on numeric-heavy records generated in memory (two int64, three
//! full-precision float64, a bool, a string of 8 values, a 16-hex-digit id).
//!
//! ```text
//! cargo run --release -p arcane-benches --bin decode_speed [MB] [BATCH_ROWS] [fast|json]
//! ```
//!
//! With `fast` or `json`, only that path runs (e.g. under a profiler).
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mb: usize = args.first().map_or(Ok(100), |a| a.parse())?;
    let batch_rows: usize = args.get(1).map_or(Ok(8192), |a| a.parse())?;
    let only = args.get(2).map(String::as_str);
    let (buf, lines) = generate(mb << 20);
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
        let mut decoder = NdjsonBlocks::new(schema(), batch_rows, fast);
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
