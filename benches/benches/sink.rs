//! Criterion micro-benchmarks (`Throughput::Bytes` of in-memory Arrow data):
//!
//! * `parquet_sink/sink_memory` — groups written through `ParquetSink` to `memory://` and
//!   committed, vs `parquet_sink/arrow_writer` — the same batches with plain `ArrowWriter`
//!   into a `Vec`, with the same writer properties (zstd(1)).
//! * `grouped_within` — regrouping source batches of 1 000 rows into groups of 10 000.
//!
//! ```text
//! cargo bench -p arcane-benches --bench sink
//! ```

use std::num::NonZeroUsize;
use std::time::Duration;

use arcane_core::testing::GeneratorSource;
use arcane_core::{
    Checkpoint, Group, GroupLimits, GroupedWithinExt, Position, PositionedBatch, Sink, SinkContext,
};
use arcane_sinks::{ParquetSink, ParquetSinkConfig};
use arrow_array::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

const ROWS: u64 = 262_144;
const BATCH: u64 = 16_384;

fn batches() -> Vec<RecordBatch> {
    (0..ROWS / BATCH)
        .map(|i| GeneratorSource::batch(i * BATCH, (i + 1) * BATCH))
        .collect()
}

fn bytes(batches: &[RecordBatch]) -> u64 {
    batches
        .iter()
        .map(|b| b.get_array_memory_size() as u64)
        .sum()
}

fn checkpoint(rows: u64) -> Checkpoint {
    Checkpoint::at(Position(serde_json::json!({ "rows": rows })))
}

fn parquet_sink(c: &mut Criterion) {
    let input = batches();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("parquet_sink");
    group.throughput(Throughput::Bytes(bytes(&input)));
    group.sample_size(10);
    let mut run = 0u64;
    group.bench_function("sink_memory", |b| {
        b.iter(|| {
            run += 1;
            rt.block_on(async {
                let mut sink = ParquetSink::new(ParquetSinkConfig::new(format!(
                    "memory://bench-{run}/orders"
                )))
                .expect("sink");
                let ctx = SinkContext {
                    stream_id: "bench".into(),
                    ..SinkContext::default()
                };
                sink.open(&ctx).await.expect("open");
                for (i, batch) in input.iter().enumerate() {
                    let group = Group::new(batch.clone(), checkpoint((i as u64 + 1) * BATCH));
                    sink.write(group).await.expect("write");
                }
                sink.flush().await.expect("flush")
            })
        })
    });
    group.bench_function("arrow_writer", |b| {
        b.iter(|| {
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("level")))
                .build();
            let mut writer =
                ArrowWriter::try_new(Vec::new(), input[0].schema(), Some(props)).expect("writer");
            for batch in &input {
                writer.write(batch).expect("write");
            }
            writer.into_inner().expect("close").len()
        })
    });
    group.finish();
}

fn grouped_within(c: &mut Criterion) {
    let input: Vec<PositionedBatch> = (0..ROWS / 1_000)
        .map(|i| {
            PositionedBatch::new(
                GeneratorSource::batch(i * 1_000, (i + 1) * 1_000),
                Position(serde_json::json!({ "rows": (i + 1) * 1_000 })),
            )
        })
        .collect();
    let data: Vec<RecordBatch> = input.iter().map(|p| p.batch.clone()).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("grouped_within");
    group.throughput(Throughput::Bytes(bytes(&data)));
    group.bench_function("1000_into_10000", |b| {
        b.iter(|| {
            rt.block_on(async {
                let limits = GroupLimits::new(
                    NonZeroUsize::new(10_000).expect("non-zero"),
                    Duration::from_secs(60),
                );
                futures::stream::iter(input.iter().cloned().map(Ok))
                    .grouped_within(limits)
                    .fold(0usize, |n, g| async move {
                        n + g.expect("group").batch.num_rows()
                    })
                    .await
            })
        })
    });
    group.finish();
}

criterion_group!(benches, parquet_sink, grouped_within);
criterion_main!(benches);
