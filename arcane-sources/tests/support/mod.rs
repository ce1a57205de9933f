//! Helpers shared by the blob-landing tests.
#![allow(dead_code, unreachable_pub)]

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arcane_core::testing::{MemorySink, MemoryStoreHandle};
use arcane_core::{
    Completion, DeadLetter, DeadLetterBudget, DeadLetterSink, GroupLimits, Mode, PositionedBatch,
    Result, RunReport, Source, SourceStart, StreamContext, StreamGraph,
};
use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use futures::StreamExt;

/// A dead-letter sink that keeps every letter.
#[derive(Debug, Clone, Default)]
pub struct Letters(pub Arc<Mutex<Vec<DeadLetter>>>);

impl Letters {
    pub fn all(&self) -> Vec<DeadLetter> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl DeadLetterSink for Letters {
    async fn write(&mut self, _stream_id: &str, letters: Vec<DeadLetter>) -> Result<()> {
        self.0.lock().unwrap().extend(letters);
        Ok(())
    }
}

/// Open `source` in stream mode from the start.
pub async fn open_stream(source: &mut dyn Source) -> arcane_core::PositionedStream {
    source
        .open(SourceStart {
            mode: Mode::Stream,
            ..SourceStart::default()
        })
        .await
        .expect("source opens")
}

/// Read a source to its end in backfill mode; returns its batches and the dead letters.
pub async fn read_backfill(
    source: &mut dyn Source,
    resume_from: Option<arcane_core::Checkpoint>,
) -> (Vec<PositionedBatch>, Vec<DeadLetter>) {
    let mut stream = source
        .open(SourceStart {
            resume_from,
            mode: Mode::Backfill,
            ..SourceStart::default()
        })
        .await
        .expect("source opens");
    let mut out = Vec::new();
    let mut letters = Vec::new();
    while let Some(item) = stream.next().await {
        let item = item.expect("source yields batches");
        letters.extend(item.dead_letters.iter().cloned());
        out.push(item);
    }
    (out, letters)
}

/// The non-empty batches.
/// The `id` (int64) column of `batches`, in order.
pub fn ids(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .expect("an id column")
                .as_primitive::<arrow_array::types::Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

pub fn rows_of(batches: &[PositionedBatch]) -> Vec<RecordBatch> {
    batches
        .iter()
        .map(|b| b.batch.clone())
        .filter(|b| b.num_rows() > 0)
        .collect()
}

/// Run a graph over `source` into a memory sink in backfill mode.
pub async fn land(source: impl Source, store: MemoryStoreHandle, letters: Letters) -> RunReport {
    land_with(source, store, letters, 1000, Duration::from_secs(5)).await
}

/// [`land`] with groups of `rows_per_group` rows cut at least every `interval`; the dead
/// letters the sink committed in this run are added to `letters` (no budget: these tests are
/// about the source).
pub async fn land_with(
    source: impl Source,
    store: MemoryStoreHandle,
    letters: Letters,
    rows_per_group: usize,
    interval: Duration,
) -> RunReport {
    let ctx = StreamContext::new("test", "blob_landing", serde_json::json!({})).with_backfill("b1");
    let before = store.dead_letters().len();
    let report = StreamGraph::from_source(source)
        .grouped_within(GroupLimits::new(
            NonZeroUsize::new(rows_per_group).unwrap(),
            interval,
        ))
        .to_sink(MemorySink::with_store(store.clone()))
        .with_dead_letter_budget(DeadLetterBudget::unlimited())
        .run(&ctx)
        .join()
        .await;
    letters
        .0
        .lock()
        .unwrap()
        .extend(store.dead_letters().into_iter().skip(before));
    report
}

pub fn assert_finished(report: &RunReport) {
    match &report.outcome {
        Ok(Completion::Finished) => {}
        other => panic!("expected the run to finish, got {other:?}"),
    }
}

/// Values of a string column across batches.
pub fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(column).expect("column exists");
            let c = arrow_cast::cast(c, &arrow_schema::DataType::Utf8).unwrap();
            let c = c.as_string::<i32>().clone();
            (0..c.len())
                .map(|i| {
                    if c.is_null(i) {
                        "null".to_string()
                    } else {
                        c.value(i).to_string()
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `file://` URL of a directory.
pub fn file_url(dir: &Path) -> String {
    format!("file://{}/", dir.display())
}

/// NDJSON lines `{"id":i,"name":"n-i","amount":i*1.5}` for `ids`.
pub fn ndjson(ids: std::ops::Range<i64>) -> String {
    ids.map(|i| {
        format!(
            "{{\"id\":{i},\"name\":\"n-{i}\",\"amount\":{}}}\n",
            i as f64 * 1.5
        )
    })
    .collect()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 1).unwrap()
}

/// Wait (up to 60 s) until `cond` holds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
