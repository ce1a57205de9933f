//! The stream graph: commits, acks, kill switch and conformance of the test implementations.

use std::num::NonZeroUsize;
use std::time::Duration;

use arcane_core::testing::{
    GeneratorPosition, GeneratorSource, MemorySink, MemoryStoreHandle, conformance,
};
use arcane_core::{
    Checkpoint, Completion, DeadLetterBudget, Error, ExitCode, GroupLimits, Position,
    StreamContext, StreamGraph,
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

/// A backfill from `source` to `sink` in groups of 500 rows.
async fn backfill_in_groups_of_500(
    source: impl arcane_core::Source,
    sink: impl arcane_core::Sink,
) -> arcane_core::RunReport {
    StreamGraph::from_source(source)
        .grouped_within(limits(500, Duration::from_secs(60)))
        .to_sink(sink)
        .run(&ctx().with_backfill("b1"))
        .join()
        .await
}

#[tokio::test]
async fn a_backfill_runs_to_the_end_and_commits_everything() {
    let sink = MemorySink::new();
    let store = sink.store();
    let source = GeneratorSource::new(1_050, 100);
    let acked = source.acked();
    let report = backfill_in_groups_of_500(source, sink).await;
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
    conformance::source_survives_stop_and_abort(|| {
        Box::new(GeneratorSource::new(2_000, 10).with_pause(Duration::from_millis(1)))
    })
    .await;
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

/// What a [`MappedSource`] does to each item of the generator's stream.
type ItemMap = std::sync::Arc<
    dyn Fn(
            arcane_core::Result<arcane_core::PositionedBatch>,
        ) -> arcane_core::Result<arcane_core::PositionedBatch>
        + Send
        + Sync,
>;

/// The generator with each item of its stream mapped, recording its acks in `order`.
struct MappedSource {
    inner: GeneratorSource,
    map: ItemMap,
    order: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl MappedSource {
    fn new(inner: GeneratorSource, map: ItemMap) -> Self {
        Self {
            inner,
            map,
            order: Default::default(),
        }
    }

    /// `per_batch` dead letters attached to each batch (as a source that rejects records
    /// between its positions would).
    fn picky(inner: GeneratorSource, per_batch: usize) -> Self {
        Self::new(
            inner,
            std::sync::Arc::new(move |item| {
                let item = item?;
                let pos = item.position.0.to_string();
                let letters = (0..per_batch)
                    .map(|i| {
                        arcane_core::DeadLetter::new("picky", format!("{pos} #{i}"), "too picky")
                            .with_payload("{}")
                    })
                    .collect();
                Ok(item.with_dead_letters(letters))
            }),
        )
    }

    /// Counts the batches the graph has taken in `taken`, and fails with a source error
    /// after `fail_after` batches when set.
    fn counted(
        inner: GeneratorSource,
        taken: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        fail_after: Option<usize>,
    ) -> Self {
        Self::new(
            inner,
            std::sync::Arc::new(move |item| {
                let n = taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                match fail_after {
                    Some(after) if n > after => Err(Error::source_transient(
                        "counted",
                        format!("the server hung up after {after} batches"),
                        std::io::Error::from(std::io::ErrorKind::ConnectionReset),
                    )),
                    _ => item,
                }
            }),
        )
    }
}

impl std::fmt::Debug for MappedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedSource")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[arcane_core::async_trait]
impl arcane_core::Source for MappedSource {
    fn name(&self) -> String {
        "mapped".into()
    }
    async fn open(
        &mut self,
        start: arcane_core::SourceStart,
    ) -> arcane_core::Result<arcane_core::PositionedStream> {
        use futures::StreamExt;
        let map = self.map.clone();
        let stream = self.inner.open(start).await?;
        Ok(stream.map(move |item| map(item)).boxed())
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

/// What a [`HookedSink`] runs before each write (the group it is given).
type BeforeWrite =
    Box<dyn FnMut(&arcane_core::Group) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// A [`MemorySink`] that does not store dead letters itself (the graph writes them) and runs
/// a hook before each write.
struct HookedSink {
    inner: MemorySink,
    before_write: BeforeWrite,
}

impl HookedSink {
    /// Asserts that the graph wrote the dead letters (the sink does not store them).
    fn plain() -> Self {
        Self {
            inner: MemorySink::new(),
            before_write: Box::new(|group| {
                assert!(
                    group.dead_letters.is_empty(),
                    "the graph writes dead letters for sinks that do not store them"
                );
                Box::pin(async {})
            }),
        }
    }

    /// The first write lasts until the source has given `batches` batches (counted in
    /// `taken`) or 5 s have passed; how many it had given then goes to `seen`.
    fn slow_first_write(
        taken: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        batches: usize,
        seen: std::sync::Arc<std::sync::Mutex<Option<usize>>>,
    ) -> Self {
        let mut first = true;
        Self {
            inner: MemorySink::new(),
            before_write: Box::new(move |_| {
                let (taken, seen, wait) = (taken.clone(), seen.clone(), first);
                first = false;
                Box::pin(async move {
                    if !wait {
                        return;
                    }
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                    let given = || taken.load(std::sync::atomic::Ordering::SeqCst);
                    while given() < batches && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    *seen.lock().unwrap() = Some(given());
                })
            }),
        }
    }
}

impl std::fmt::Debug for HookedSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookedSink").finish_non_exhaustive()
    }
}

#[arcane_core::async_trait]
impl arcane_core::Sink for HookedSink {
    fn name(&self) -> String {
        "hooked".into()
    }
    async fn open(
        &mut self,
        ctx: &arcane_core::SinkContext,
    ) -> arcane_core::Result<Option<Checkpoint>> {
        self.inner.open(ctx).await
    }
    async fn write(
        &mut self,
        group: arcane_core::Group,
    ) -> arcane_core::Result<Option<arcane_core::Commit>> {
        (self.before_write)(&group).await;
        self.inner.write(group).await
    }
    async fn flush(&mut self) -> arcane_core::Result<Option<arcane_core::Commit>> {
        self.inner.flush().await
    }
}

#[tokio::test]
async fn without_a_storing_sink_dead_letters_are_written_before_their_group() {
    let source = MappedSource::picky(GeneratorSource::new(300, 100), 1);
    let order = source.order.clone();
    let report = StreamGraph::from_source(source)
        .grouped_within(limits(200, Duration::from_secs(60)))
        .to_sink(HookedSink::plain())
        .dead_letter_to(RecordingDeadLetters(order.clone()))
        .with_dead_letter_budget(DeadLetterBudget::unlimited())
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
    assert_eq!(report.summary.rows_dead_lettered, 3);
}

#[tokio::test]
async fn dead_letters_commit_with_their_rows_once_across_a_restart() {
    // Groups of 250 split the second source batch: its letter goes with the group holding its
    // last row. The second group's write fails ("crash"); the rerun resumes inside that batch
    // and must not repeat the letters of the first commit.
    let store = MemoryStoreHandle::default();
    let first = StreamGraph::from_source(MappedSource::picky(GeneratorSource::new(300, 100), 1))
        .grouped_within(limits(150, Duration::from_secs(60)))
        .to_sink(MemorySink::with_store(store.clone()).fail_after_writes(1))
        .with_dead_letter_budget(DeadLetterBudget::unlimited())
        .run(&ctx())
        .join()
        .await;
    assert!(first.outcome.is_err());
    // The first group (rows 0..150) completes batch 0 only.
    assert_eq!(store.rows(), 150);
    assert_eq!(store.dead_letters().len(), 1);
    assert_eq!(first.summary.rows_dead_lettered, 1);

    let second = StreamGraph::from_source(MappedSource::picky(GeneratorSource::new(300, 100), 1))
        .grouped_within(limits(150, Duration::from_secs(60)))
        .to_sink(MemorySink::with_store(store.clone()))
        .with_dead_letter_budget(DeadLetterBudget::unlimited())
        .run(&ctx())
        .join()
        .await;
    second.outcome.unwrap();
    assert_eq!(committed_ids(&store), (0..300).collect::<Vec<_>>());
    let mut locators: Vec<String> = store
        .dead_letters()
        .iter()
        .map(|l| l.locator.clone())
        .collect();
    locators.sort();
    locators.dedup();
    assert_eq!(store.dead_letters().len(), 3, "{locators:?}");
    assert_eq!(locators.len(), 3, "a dead letter was committed twice");
    assert_eq!(second.summary.rows_dead_lettered, 2);
}

#[tokio::test]
async fn a_dead_letter_flood_fails_the_run_without_committing_the_group_over_budget() {
    // 2 letters per 100 rows: about 2 % of the records read, over the default 1 % (of at least
    // 1000 records). The first group (10 letters in 510 records) is within it, the second
    // (20 in 1020) crosses it.
    let sink = MemorySink::new();
    let store = sink.store();
    let report = StreamGraph::from_source(MappedSource::picky(GeneratorSource::new(5_000, 100), 2))
        .grouped_within(limits(500, Duration::from_secs(60)))
        .to_sink(sink)
        .run(&ctx().with_backfill("b1"))
        .join()
        .await;
    let err = report.outcome.unwrap_err();
    assert!(matches!(err, Error::DeadLetterBudget { .. }), "{err}");
    assert_eq!(err.exit_code(), ExitCode::Fatal);
    let text = err.to_string();
    assert!(text.contains("20 of 1020 records"), "{text}");
    assert!(text.contains("too picky"), "{text}");
    assert_eq!(
        store.rows(),
        500,
        "only the group within budget is committed"
    );
    assert_eq!(report.summary.rows_committed, 500);
    assert_eq!(report.summary.dead_letter_reasons.len(), 5);
}

#[tokio::test]
async fn a_small_run_with_more_bad_records_than_its_floor_fails_and_commits_nothing() {
    // 212 records, 12 dead letters: more than 1 % of the 1000-record floor.
    let sink = MemorySink::new();
    let store = sink.store();
    let report = StreamGraph::from_source(MappedSource::picky(GeneratorSource::new(200, 100), 6))
        .grouped_within(limits(1_000, Duration::from_secs(60)))
        .to_sink(sink)
        .run(&ctx().with_backfill("b1"))
        .join()
        .await;
    let err = report.outcome.unwrap_err();
    assert!(matches!(err, Error::DeadLetterBudget { .. }), "{err}");
    assert_eq!(store.rows(), 0);
    assert!(store.dead_letters().is_empty());

    // The same run within an explicit budget succeeds and commits the letters with the rows.
    let sink = MemorySink::new();
    let store = sink.store();
    let report = StreamGraph::from_source(MappedSource::picky(GeneratorSource::new(200, 100), 6))
        .grouped_within(limits(1_000, Duration::from_secs(60)))
        .to_sink(sink)
        .with_dead_letter_budget(DeadLetterBudget {
            max_ratio: 0.05,
            ..DeadLetterBudget::default()
        })
        .run(&ctx().with_backfill("b1"))
        .join()
        .await;
    report.outcome.unwrap();
    assert_eq!(store.rows(), 200);
    assert_eq!(store.dead_letters().len(), 12);
    assert_eq!(report.summary.rows_dead_lettered, 12);
}

/// The kill-switch suite fails on a source that loses the batch after its checkpoint.
#[tokio::test]
#[should_panic(expected = "rows were lost or repeated")]
async fn the_stop_suite_catches_a_source_that_skips_rows_on_resume() {
    conformance::source_survives_stop_and_abort(|| {
        Box::new(SkipsOnResume(
            GeneratorSource::new(2_000, 10).with_pause(Duration::from_millis(1)),
        ))
    })
    .await;
}

/// Resumes one batch too far: the rows of the batch after the checkpoint are lost.
#[derive(Debug)]
struct SkipsOnResume(GeneratorSource);

#[async_trait::async_trait]
impl arcane_core::Source for SkipsOnResume {
    fn name(&self) -> String {
        "skips-on-resume".into()
    }

    async fn open(
        &mut self,
        start: arcane_core::SourceStart,
    ) -> arcane_core::Result<arcane_core::PositionedStream> {
        use futures::StreamExt;
        let resumed = start.resume_from.is_some();
        let stream = self.0.open(start).await?;
        Ok(if resumed {
            stream.skip(1).boxed()
        } else {
            stream
        })
    }

    async fn commit(&mut self, checkpoint: &Checkpoint) -> arcane_core::Result<()> {
        self.0.commit(checkpoint).await
    }
}

#[tokio::test]
async fn the_next_group_is_read_while_the_sink_writes_one_group_not_more() {
    // Groups of 500 rows from batches of 100: while the sink writes the first group, the
    // graph takes the second group's five batches from the source (decoding and encoding
    // overlap) and then stops: one group ahead and the batch that does not fit in it.
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let sink = HookedSink::slow_first_write(taken.clone(), 10, seen.clone());
    let store = sink.inner.store();
    let source = MappedSource::counted(GeneratorSource::new(2_000, 100), taken.clone(), None);
    let report = backfill_in_groups_of_500(source, sink).await;
    assert_eq!(report.outcome.unwrap(), Completion::Finished);
    let seen = seen.lock().unwrap().expect("the sink wrote");
    assert!(
        (10..=11).contains(&seen),
        "batches taken from the source while the first group was written: {seen}"
    );
    assert_eq!(committed_ids(&store), (0..2_000).collect::<Vec<_>>());
    assert_eq!(report.summary.rows_committed, 2_000);
}

#[tokio::test]
async fn a_source_error_read_during_a_write_comes_after_that_group_commits() {
    // The source fails while the sink writes the first group: the group is committed, the
    // rows after it are not, and the run reports the source's error.
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sink = HookedSink::slow_first_write(taken.clone(), 8, Default::default());
    let store = sink.inner.store();
    let source = MappedSource::counted(GeneratorSource::new(2_000, 100), taken.clone(), Some(7));
    let report = backfill_in_groups_of_500(source, sink).await;
    let err = report.outcome.unwrap_err();
    assert!(err.to_string().contains("hung up after 7 batches"), "{err}");
    assert_eq!(err.exit_code(), ExitCode::Restart, "{err}");
    // The first group; the two batches of the second read before the error are neither
    // committed nor acked: the restart reads them again.
    assert_eq!(committed_ids(&store), (0..500).collect::<Vec<_>>());
    assert_eq!(report.summary.rows_committed, 500);
    assert_eq!(report.summary.rows_incoming, 700);
    assert_eq!(report.summary.rows_uncommitted, 200);
    assert_eq!(report.summary.last_checkpoint, Some(at(500)));
}
