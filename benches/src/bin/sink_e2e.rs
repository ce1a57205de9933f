//! End-to-end benchmark of the Parquet sink.
//!
//! * `compare`: writes the same batches with `ParquetSink` (file://) and with plain
//!   `parquet::arrow::ArrowWriter` to a local file, in the same run, and prints both
//!   throughputs and their ratio.
//! * `rss`: writes one Parquet file of `--gib` GiB through the sink and prints the peak RSS.
//! * `delta`: writes the same batches through the sink to `file://` as plain Parquet and as a
//!   Delta Lake table (`tableFormat: delta`), committing every `--commit-batches` batches, in
//!   the same run, and prints rows/s, MB/s and the mean commit (flush) time of each; the
//!   difference of the commit times is the Delta commit's latency (footer reads and the log
//!   put).
//! * `iceberg`: the same as `delta` with an Apache Iceberg table (`tableFormat: iceberg`) in a
//!   SQL catalog on PostgreSQL (`--catalog-uri`, default
//!   `postgresql://postgres@127.0.0.1:5432/test`) under a catalog name unique to the run,
//!   whose rows are deleted at the end (with `psql`); the difference of the commit times is
//!   the Iceberg commit's latency (footer reads, the parent's manifest list read, manifest,
//!   manifest list and metadata JSON puts, the catalog's compare-and-swap).
//!
//! * `encode`: writes the generator's batches with an added high-cardinality string column
//!   (`session`, 36 characters, every value distinct) through the sink to `file://`, three
//!   rounds, and prints rows/s and MB/s (of the Arrow input); `--encode-threads N` and
//!   `--dictionary auto|true|false` set `sink.writer.encodeThreads` and
//!   `sink.writer.dictionary` (absent: the sink's defaults).
//!
//! ```text
//! cargo run --release -p arcane-benches --bin sink_e2e -- compare --rows 4000000
//! cargo run --release -p arcane-benches --bin sink_e2e -- encode --rows 4000000 --encode-threads 1
//! cargo run --release -p arcane-benches --bin sink_e2e -- rss --gib 2
//! cargo run --release -p arcane-benches --bin sink_e2e -- delta --rows 4000000 --commit-batches 4
//! cargo run --release -p arcane-benches --bin sink_e2e -- iceberg --rows 4000000 --commit-batches 4
//! ```
#![allow(clippy::print_stdout)]

use std::time::Instant;

use arcane_core::testing::GeneratorSource;
use arcane_core::{Checkpoint, Group, Position, Sink, SinkContext};
use arcane_sinks::{
    DeltaConfig, IcebergCatalogConfig, IcebergConfig, ParquetSink, ParquetSinkConfig,
    SqlCatalogConfig, TableFormat,
};
use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;

const BATCH: u64 = 65_536;

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn str_arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.into())
}

fn fatal(e: impl std::fmt::Display) -> arcane_core::Error {
    arcane_core::Error::fatal(e.to_string())
}

fn group(batch: RecordBatch, rows: u64) -> Group {
    Group::new(
        batch,
        Checkpoint::at(Position(serde_json::json!({ "rows": rows }))),
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> arcane_core::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "compare".into());
    let dir = tempfile::tempdir().map_err(|e| arcane_core::Error::fatal(e.to_string()))?;
    let ctx = SinkContext {
        stream_id: "bench".into(),
        ..SinkContext::default()
    };
    match mode.as_str() {
        "rss" => {
            let target = (arg("--gib", 2.0) * 1024.0 * 1024.0 * 1024.0) as u64;
            let mut config = ParquetSinkConfig::new(format!("file://{}/rss", dir.path().display()));
            config.rolling.target_file_size = target;
            config.rolling.max_rows_per_file = u64::MAX / 2;
            config.writer.compression = "uncompressed".into();
            config.writer.dictionary = false.into();
            let mut sink = ParquetSink::new(config)?;
            sink.open(&ctx).await?;
            let started = Instant::now();
            let mut rows = 0;
            // Distinct batches so that the file is not a repetition of one block.
            loop {
                let batch = GeneratorSource::batch(rows, rows + BATCH);
                rows += BATCH;
                if let Some(c) = sink.write(group(batch, rows)).await? {
                    println!(
                        "mode=rss file_bytes={} rows={} files={} secs={:.1} peak_rss_mib={:.1}",
                        c.bytes,
                        c.rows,
                        c.files.len(),
                        started.elapsed().as_secs_f64(),
                        peak_rss_mib()
                    );
                    break;
                }
            }
        }
        "encode" => encode_rounds(&dir, &ctx).await?,
        "delta" => {
            table_format_rounds(&dir, &ctx, "delta", |_| {
                TableFormat::Delta(DeltaConfig::default())
            })
            .await?
        }
        "iceberg" => {
            let uri = str_arg("--catalog-uri", "postgresql://postgres@127.0.0.1:5432/test");
            // A catalog name of this run only, in a database other runs and tests share.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let catalog_name = format!("arcane_bench_{}_{nanos}", std::process::id());
            let result = table_format_rounds(&dir, &ctx, "iceberg", |round| {
                TableFormat::Iceberg(IcebergConfig {
                    catalog: IcebergCatalogConfig::Sql(SqlCatalogConfig {
                        uri: uri.clone(),
                        password_env: None,
                    }),
                    catalog_name: catalog_name.clone(),
                    namespace: "bench".into(),
                    table: format!("sink_e2e_{round}"),
                    catalog_properties: Default::default(),
                    properties: Default::default(),
                })
            })
            .await;
            let cleaned = delete_catalog(&uri, &catalog_name);
            result?;
            cleaned?;
        }
        _ => {
            let total = arg("--rows", 4_000_000.0) as u64;
            let batches: Vec<RecordBatch> = (0..total / BATCH)
                .map(|i| GeneratorSource::batch(i * BATCH, (i + 1) * BATCH))
                .collect();
            let input: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
            let mut config =
                ParquetSinkConfig::new(format!("file://{}/sink", dir.path().display()));
            config.rolling.target_file_size = u64::MAX / 2;
            config.rolling.max_rows_per_file = u64::MAX / 2;
            let props = config.writer_properties(&batches[0].schema())?;
            for round in 0..3 {
                // Plain ArrowWriter to a local file.
                let started = Instant::now();
                let file = std::fs::File::create(dir.path().join(format!("plain-{round}.parquet")))
                    .map_err(|e| arcane_core::Error::fatal(e.to_string()))?;
                let mut w = ArrowWriter::try_new(file, batches[0].schema(), Some(props.clone()))
                    .map_err(|e| arcane_core::Error::fatal(e.to_string()))?;
                for b in &batches {
                    w.write(b)
                        .map_err(|e| arcane_core::Error::fatal(e.to_string()))?;
                }
                w.close()
                    .map_err(|e| arcane_core::Error::fatal(e.to_string()))?;
                let plain = started.elapsed().as_secs_f64();
                // The sink.
                let mut sink = ParquetSink::new(config.clone())?;
                sink.open(&ctx).await?;
                let started = Instant::now();
                let mut rows = 0;
                for b in &batches {
                    rows += b.num_rows() as u64;
                    sink.write(group(b.clone(), rows)).await?;
                }
                sink.flush().await?;
                let ours = started.elapsed().as_secs_f64();
                let mb = input as f64 / 1e6;
                println!(
                    "mode=compare round={round} rows={total} input_mb={mb:.0} arrow_writer_mb_s={:.1} sink_mb_s={:.1} ratio={:.3}",
                    mb / plain,
                    mb / ours,
                    plain / ours
                );
                config.url = format!("file://{}/sink{round}", dir.path().display());
            }
        }
    }
    Ok(())
}

/// Writes the generator's batches through the sink to `file://` as plain Parquet and with the
/// table format `format(round)`, flushing every `--commit-batches` batches, three rounds, and
/// prints the throughputs and the mean flush time of each (`mode={name}`).
async fn table_format_rounds(
    dir: &tempfile::TempDir,
    ctx: &SinkContext,
    name: &str,
    format: impl Fn(usize) -> TableFormat,
) -> arcane_core::Result<()> {
    let total = arg("--rows", 4_000_000.0) as u64;
    let every = (arg("--commit-batches", 4.0) as usize).max(1);
    let batches: Vec<RecordBatch> = (0..total / BATCH)
        .map(|i| GeneratorSource::batch(i * BATCH, (i + 1) * BATCH))
        .collect();
    let mb = arrow_mb(&batches);
    let rows = (batches.len() as u64 * BATCH) as f64;
    for round in 0..3 {
        let mut secs = [0.0; 2];
        let mut commit_ms = [0.0; 2];
        for (i, with_format) in [false, true].into_iter().enumerate() {
            let mut config = ParquetSinkConfig::new(format!(
                "file://{}/{}-{round}",
                dir.path().display(),
                if with_format { name } else { "parquet" }
            ));
            if with_format {
                config.table_format = Some(format(round));
            }
            let mut sink = ParquetSink::new(config)?;
            sink.open(ctx).await?;
            let started = Instant::now();
            let (mut written, mut commits, mut in_commits) = (0, 0u32, 0.0);
            for (n, b) in batches.iter().enumerate() {
                written += b.num_rows() as u64;
                sink.write(group(b.clone(), written)).await?;
                if (n + 1) % every == 0 || n + 1 == batches.len() {
                    let t = Instant::now();
                    sink.flush().await?;
                    in_commits += t.elapsed().as_secs_f64();
                    commits += 1;
                }
            }
            secs[i] = started.elapsed().as_secs_f64();
            commit_ms[i] = in_commits * 1e3 / f64::from(commits.max(1));
        }
        println!(
            "mode={name} round={round} rows={} input_mb={mb:.0} commits={} parquet_rows_s={:.0} parquet_mb_s={:.1} {name}_rows_s={:.0} {name}_mb_s={:.1} ratio={:.3} parquet_commit_ms={:.1} {name}_commit_ms={:.1} {name}_latency_ms={:.1}",
            rows as u64,
            batches.len().div_ceil(every),
            rows / secs[0],
            mb / secs[0],
            rows / secs[1],
            mb / secs[1],
            secs[0] / secs[1],
            commit_ms[0],
            commit_ms[1],
            commit_ms[1] - commit_ms[0],
        );
    }
    Ok(())
}

/// The generator's batch of rows `from..to` with a high-cardinality string column `session`
/// (a UUID-like text, distinct for every row).
fn high_cardinality_batch(from: u64, to: u64) -> arcane_core::Result<RecordBatch> {
    let base = GeneratorSource::batch(from, to);
    let session: arrow_array::StringArray = (from..to)
        .map(|i| {
            let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i >> 7);
            Some(format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                h >> 32,
                (h >> 16) & 0xffff,
                h & 0xffff,
                i & 0xffff,
                i.wrapping_mul(0x2545_F491_4F6C_DD1D) & 0xffff_ffff_ffff
            ))
        })
        .collect();
    let mut fields: Vec<arrow_schema::FieldRef> = base.schema().fields().iter().cloned().collect();
    fields.push(std::sync::Arc::new(arrow_schema::Field::new(
        "session",
        arrow_schema::DataType::Utf8,
        false,
    )));
    let mut columns = base.columns().to_vec();
    columns.push(std::sync::Arc::new(session));
    RecordBatch::try_new(
        std::sync::Arc::new(arrow_schema::Schema::new(fields)),
        columns,
    )
    .map_err(fatal)
}

/// `encode`: the generator's batches with a high-cardinality string column through the sink
/// to `file://`, with `--encode-threads` and `--dictionary` when given, three rounds.
async fn encode_rounds(dir: &tempfile::TempDir, ctx: &SinkContext) -> arcane_core::Result<()> {
    let total = arg("--rows", 4_000_000.0) as u64;
    let batches = (0..total / BATCH)
        .map(|i| high_cardinality_batch(i * BATCH, (i + 1) * BATCH))
        .collect::<arcane_core::Result<Vec<_>>>()?;
    let mb = arrow_mb(&batches);
    let rows = (batches.len() as u64 * BATCH) as f64;
    let threads = str_arg("--encode-threads", "");
    let dictionary = str_arg("--dictionary", "");
    for round in 0..3 {
        let mut writer = serde_json::Map::new();
        if !threads.is_empty() {
            let n: u64 = threads.parse().map_err(fatal)?;
            writer.insert("encodeThreads".into(), n.into());
        }
        match dictionary.as_str() {
            "" => {}
            "true" => _ = writer.insert("dictionary".into(), true.into()),
            "false" => _ = writer.insert("dictionary".into(), false.into()),
            other => _ = writer.insert("dictionary".into(), other.into()),
        }
        let config: ParquetSinkConfig = serde_json::from_value(serde_json::json!({
            "url": format!("file://{}/encode-{round}", dir.path().display()),
            "rolling": { "targetFileSize": u64::MAX / 2, "maxRowsPerFile": u64::MAX / 2 },
            "writer": writer,
        }))
        .map_err(fatal)?;
        let mut sink = ParquetSink::new(config)?;
        sink.open(ctx).await?;
        let started = Instant::now();
        let mut written = 0;
        for b in &batches {
            written += b.num_rows() as u64;
            sink.write(group(b.clone(), written)).await?;
        }
        let commit = sink.flush().await?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "mode=encode round={round} rows={} input_mb={mb:.0} encode_threads={} dictionary={} secs={secs:.2} rows_s={:.0} mb_s={:.1} file_bytes={}",
            rows as u64,
            if threads.is_empty() {
                "default"
            } else {
                &threads
            },
            if dictionary.is_empty() {
                "default"
            } else {
                &dictionary
            },
            rows / secs,
            mb / secs,
            commit.map_or(0, |c| c.bytes),
        );
    }
    Ok(())
}

/// Deletes the rows of catalog `name` from the SQL catalog's tables at `uri` (with `psql`).
fn delete_catalog(uri: &str, name: &str) -> arcane_core::Result<()> {
    let sql = format!(
        "DELETE FROM iceberg_tables WHERE catalog_name = '{name}'; \
         DELETE FROM iceberg_namespace_properties WHERE catalog_name = '{name}';"
    );
    let out = std::process::Command::new("psql")
        .args([uri, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql.as_str()])
        .output()
        .map_err(|e| fatal(format!("psql: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fatal(format!(
            "psql could not delete catalog {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// Megabytes of Arrow memory in `batches`.
fn arrow_mb(batches: &[RecordBatch]) -> f64 {
    batches
        .iter()
        .map(RecordBatch::get_array_memory_size)
        .sum::<usize>() as f64
        / 1e6
}
