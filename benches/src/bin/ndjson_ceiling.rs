//! The ceiling of the landing benchmark: NDJSON files decoded with `arrow_json` and written with
//! plain `parquet::arrow::ArrowWriter` (zstd(1)) to one local file, on one thread, nothing else
//! (no positions, no manifest, no object store).
//!
//! ```text
//! ndjson_ceiling OUT.parquet IN.ndjson...
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::BufReader;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// The order events' schema (as in `examples/quickstart.json`).
fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Utf8, false),
        Field::new("customer_id", DataType::Int64, true),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            false,
        ),
        Field::new("status", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("currency", DataType::Utf8, true),
        Field::new("items", DataType::Int32, true),
        Field::new("country", DataType::Utf8, true),
        Field::new("channel", DataType::Utf8, true),
        Field::new("coupon", DataType::Utf8, true),
    ]))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, inputs) = args
        .split_first()
        .ok_or("usage: ndjson_ceiling OUT.parquet IN.ndjson...")?;
    let started = std::time::Instant::now();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .build();
    let mut writer = ArrowWriter::try_new(std::fs::File::create(out)?, schema(), Some(props))?;
    let mut rows = 0;
    for input in inputs {
        let reader = arrow_json::ReaderBuilder::new(schema())
            .with_batch_size(8192)
            .build(BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(input)?,
            ))?;
        for batch in reader {
            let batch = batch?;
            rows += batch.num_rows();
            writer.write(&batch)?;
        }
    }
    writer.close()?;
    println!("rows={rows} secs={:.3}", started.elapsed().as_secs_f64());
    Ok(())
}
