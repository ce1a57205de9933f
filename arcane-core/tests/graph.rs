//! The stream graph: commits, acks, kill switch and conformance of the test implementations.

use std::num::NonZeroUsize;
use std::time::Duration;

use arcane_core::testing::{
    GeneratorPosition, GeneratorSource, MemorySink, MemoryStoreHandle, conformance,
};
use arcane_core::{
    Checkpoint, Completion, Error, ExitCode, GroupLimits, Position, StreamContext, StreamGraph,
};
use arrow_array::Int64Array;

fn ctx() -> StreamContext {
    StreamContext::new("s1", "synthetic", serde_json::json!({}))
}

fn limits(rows: usize, interval: Duration) -> GroupLimits {
    GroupLimits::new(NonZeroUsize::new(rows).unwrap(), interval)
}

fn committed_ids(store: &MemoryStoreHandle) -> Vec<i64> {
    store
        .batches()
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

fn at(rows: u64) -> Checkpoint {
    Checkpoint::at(Position::encode(&GeneratorPosition { rows }).unwrap())
}

#[tokio::test]
async fn a_backfill_runs_to_the_end_and_commits_everything() {
    let sink = MemorySink::new();
    let store = sink.store();
    let source = GeneratorSource::new(1_050, 100);
    let acked = source.acked();
    let report = StreamGraph::from_source(source)
        .grouped_within(limits(500, Duration::from_secs(60)))
        .to_sink(sink)
        .run(&ctx().with_backfill("b1"))
        .join()
        .await;
    assert_eq!(report.outcome.unwrap(), Completion::Finished);
    assert_eq!(committed_ids(&store), (0..1_050).collect::<Vec<_>>());
    assert_eq!(report.summary.rows_committed, 1_050);
    assert_eq!(report.summary.rows_incoming, 1_050);
    assert_eq!(report.summary.rows_uncommitted, 0);
    assert_eq!(report.summary.commits, 3);
    assert_eq!(report.summary.last_checkpoint, Some(at(1_050)));
    // Groups of 500 cut batches of 100 exactly at batch ends here.
    assert_eq!(*acked.lock().unwrap(), vec![at(500), at(1_000), at(1_050)]);
}

#[tokio::test]
async fn positions_are_acked_only_after_the_sink_commits() {
    // The sink commits every 3 groups: the source must see acks only for committed groups.
    let sink = MemorySink::new().commit_every(3);
    let store = sink.store();
    let source = GeneratorSource::new(700, 100);
    let acked = source.acked();
    let report = StreamGraph::from_source(source)
        .grouped_within(limits(100, Duration::from_secs(60)))
        .to_sink(sink)
        .run(&ctx())
        .join()
        .await;
    report.outcome.unwrap();
    assert_eq!(*acked.lock().unwrap(), vec![at(300), at(600), at(700)]);
    assert_eq!(store.commits(), 3);
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_flushes_and_commits_the_partial_group() {
    let sink = MemorySink::new();
    let store = sink.store();
    let source = GeneratorSource::unbounded(10).with_pause(Duration::from_millis(100));
    let acked = source.acked();
    let running = StreamGraph::from_source(source)
        .grouped_within(limits(1_000, Duration::from_secs(3600)))
        .to_sink(sink)
        .run(&ctx());
    // 2.5 s at 10 rows per 100 ms: ~250 rows buffered, no group full, no deadline reached.
    tokio::time::sleep(Duration::from_millis(2_550)).await;
    assert_eq!(
        store.rows(),
        0,
        "nothing is committed before the group closes"
    );
    running.kill_switch.shutdown();
    let report = running.join().await;
    assert_eq!(report.outcome.unwrap(), Completion::ShutDown);
    let ids = committed_ids(&store);
    assert_eq!(ids, (0..250).collect::<Vec<_>>());
    assert_eq!(report.summary.rows_uncommitted, 0);
    assert_eq!(*acked.lock().unwrap(), vec![at(250)]);
}

#[tokio::test(start_paused = true)]
async fn abort_drops_uncommitted_rows_without_acking_them_and_resume_loses_nothing() {
    let sink = MemorySink::new();
    let store = sink.store();
    let source = GeneratorSource::unbounded(10).with_pause(Duration::from_millis(100));
    let acked = source.acked();
    let running = StreamGraph::from_source(source)
        .grouped_within(limits(100, Duration::from_secs(3600)))
        .to_sink(sink)
        .run(&ctx());
    tokio::time::sleep(Duration::from_millis(1_550)).await;
    running.kill_switch.abort();
    let report = running.join().await;
    let err = report.outcome.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Aborted {
                uncommitted_rows: 50
            }
        ),
        "{err}"
    );
    assert_eq!(err.exit_code(), ExitCode::Restart);
    assert_eq!(committed_ids(&store), (0..100).collect::<Vec<_>>());
    assert_eq!(*acked.lock().unwrap(), vec![at(100)]);

    // A restarted run resumes at the committed checkpoint: no loss, no duplicate.
    let report = StreamGraph::from_source(GeneratorSource::new(230, 10))
        .grouped_within(limits(100, Duration::from_secs(3600)))
        .to_sink(MemorySink::with_store(store.clone()))
        .run(&ctx())
        .join()
        .await;
    report.outcome.unwrap();
    assert_eq!(report.summary.resumed_from, Some(at(100)));
    assert_eq!(committed_ids(&store), (0..230).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_sink_failure_is_reported_with_what_was_committed() {
    let sink = MemorySink::new().fail_after_writes(2);
    let store = sink.store();
    let report = StreamGraph::from_source(GeneratorSource::new(1_000, 100))
        .grouped_within(limits(100, Duration::from_secs(60)))
        .to_sink(sink)
        .run(&ctx())
        .join()
        .await;
    let err = report.outcome.unwrap_err();
    assert_eq!(err.exit_code(), ExitCode::Restart, "{err}");
    assert_eq!(store.rows(), 200);
    assert_eq!(report.summary.rows_committed, 200);
    assert!(report.summary.rows_uncommitted > 0);
}

#[tokio::test]
async fn maps_after_grouping_may_filter_and_maps_before_must_keep_row_counts() {
    let sink = MemorySink::new();
    let store = sink.store();
    let report = StreamGraph::from_source(GeneratorSource::new(100, 10))
        .grouped_within(limits(50, Duration::from_secs(60)))
        .map(|b| Ok(b.slice(0, b.num_rows() / 2)))
        .to_sink(sink)
        .run(&ctx())
        .join()
        .await;
    report.outcome.unwrap();
    assert_eq!(store.rows(), 50);
    assert_eq!(report.summary.rows_uncommitted, 0);

    let report = StreamGraph::from_source(GeneratorSource::new(100, 10))
        .map(|b| Ok(b.slice(0, 1)))
        .grouped_within(limits(50, Duration::from_secs(60)))
        .to_sink(MemorySink::new())
        .run(&ctx())
        .join()
        .await;
    let err = report.outcome.unwrap_err();
    assert!(
        err.to_string()
            .contains("changed the row count from 10 to 1"),
        "{err}"
    );
}

#[tokio::test]
async fn generator_source_conforms() {
    conformance::source_resumes_exactly(|| Box::new(GeneratorSource::new(1_000, 64))).await;
}

#[tokio::test]
async fn memory_sink_conforms() {
    let store = MemoryStoreHandle::default();
    let read = store.clone();
    conformance::sink_commits_exactly(
        move || Box::new(MemorySink::with_store(store.clone())),
        move || {
            let read = read.clone();
            async move { read.batches() }
        },
    )
    .await;
}

/// A source that dead-letters every 10th row of the generator.
#[derive(Debug)]
struct PickySource {
    inner: GeneratorSource,
    order: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

#[arcane_core::async_trait]
impl arcane_core::Source for PickySource {
    fn name(&self) -> String {
        "picky".into()
    }
    async fn open(
        &mut self,
        start: arcane_core::SourceStart,
    ) -> arcane_core::Result<arcane_core::PositionedStream> {
        use futures::StreamExt;
        let dead_letters = start.dead_letters.clone();
        let stream = self.inner.open(start).await?;
        Ok(stream
            .map(move |item| {
                let item = item?;
                let end = item.batch.num_rows();
                dead_letters.push(
                    arcane_core::DeadLetter::new("picky", format!("batch of {end}"), "too picky")
                        .with_payload("{}"),
                );
                Ok(item)
            })
            .boxed())
    }
    async fn commit(&mut self, checkpoint: &Checkpoint) -> arcane_core::Result<()> {
        self.order
            .lock()
            .unwrap()
            .push(format!("ack {:?}", checkpoint.position));
        self.inner.commit(checkpoint).await
    }
}

#[derive(Debug)]
struct RecordingDeadLetters(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

#[arcane_core::async_trait]
impl arcane_core::DeadLetterSink for RecordingDeadLetters {
    async fn write(
        &mut self,
        stream_id: &str,
        letters: Vec<arcane_core::DeadLetter>,
    ) -> arcane_core::Result<()> {
        self.0
            .lock()
            .unwrap()
            .push(format!("{stream_id}: {} letters", letters.len()));
        Ok(())
    }
}

#[tokio::test]
async fn dead_letters_are_written_before_the_checkpoint_covering_them_is_acked() {
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let report = StreamGraph::from_source(PickySource {
        inner: GeneratorSource::new(300, 100),
        order: order.clone(),
    })
    .grouped_within(limits(200, Duration::from_secs(60)))
    .to_sink(MemorySink::new())
    .dead_letter_to(RecordingDeadLetters(order.clone()))
    .run(&ctx())
    .join()
    .await;
    report.outcome.unwrap();
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order,
        vec![
            "s1: 2 letters".to_string(),
            format!("ack {:?}", at(200).position),
            "s1: 1 letters".to_string(),
            format!("ack {:?}", at(300).position),
        ]
    );
}
