//! Conformance suites: every [`Source`] and [`Sink`] implementation runs these in its tests,
//! against every store or server it supports.
//!
//! They panic with a message saying which part of the contract was broken.

use std::future::Future;
use std::num::NonZeroUsize;
use std::time::Duration;

use arrow_array::RecordBatch;
use futures::StreamExt;

use crate::context::{Mode, StreamContext};
use crate::dead_letter::DeadLetterBudget;
use crate::error::Error;
use crate::graph::StreamGraph;
use crate::grouped_within::GroupLimits;
use crate::position::{Checkpoint, Group, PositionedBatch};
use crate::sink::{Sink, SinkContext};
use crate::source::{Source, SourceStart};
use crate::testing::{GeneratorSource, MemorySink, pretty_lines, total_rows};

async fn read_all(source: &mut dyn Source, start: SourceStart) -> Vec<PositionedBatch> {
    let mut stream = source
        .open(start)
        .await
        .unwrap_or_else(|e| panic!("source {} failed to open: {e}", source.name()));
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        out.push(item.unwrap_or_else(|e| panic!("source {} yielded an error: {e}", source.name())));
    }
    out
}

/// A fresh source from `make`, read to its end in backfill mode: its name and what it yields.
async fn read_backfill(
    make: &mut impl FnMut() -> Box<dyn Source>,
) -> (String, Vec<PositionedBatch>) {
    let mut source = make();
    let start = SourceStart {
        mode: Mode::Backfill,
        ..SourceStart::default()
    };
    let all = read_all(source.as_mut(), start).await;
    (source.name(), all)
}

fn sorted_lines(batches: &[RecordBatch]) -> Vec<String> {
    let mut lines = pretty_lines(batches);
    lines.sort();
    lines
}

/// A bounded source read in backfill mode ends, and resuming from any checkpoint — at the end of
/// a batch or inside one — yields exactly the rows after it: nothing lost, nothing repeated.
///
/// `make` creates a fresh source over the same data (as a restarted process would).
/// The source must yield at least 2 batches.
pub async fn source_resumes_exactly<F>(mut make: F)
where
    F: FnMut() -> Box<dyn Source>,
{
    let backfill = SourceStart {
        mode: Mode::Backfill,
        ..SourceStart::default()
    };
    let mut first = make();
    let all = read_all(first.as_mut(), backfill.clone()).await;
    assert!(
        all.len() >= 2,
        "source {} must yield at least 2 batches for this suite, yielded {}",
        first.name(),
        all.len()
    );
    let expected: Vec<RecordBatch> = all.iter().map(|b| b.batch.clone()).collect();

    // Resume after the first batch, and inside the second batch.
    let cut = all[1].batch.num_rows() / 2;
    for (checkpoint, skip_batches, skip_rows) in [
        (Checkpoint::at(all[0].position.clone()), 1, 0usize),
        (
            Checkpoint {
                position: Some(all[0].position.clone()),
                rows: cut as u64,
            },
            1,
            cut,
        ),
    ] {
        let mut resumed = make();
        let rest = read_all(
            resumed.as_mut(),
            SourceStart {
                resume_from: Some(checkpoint.clone()),
                ..backfill.clone()
            },
        )
        .await;
        let mut got: Vec<RecordBatch> = expected[..skip_batches].to_vec();
        if skip_rows > 0 {
            got.push(expected[skip_batches].slice(0, skip_rows));
        }
        got.extend(rest.into_iter().map(|b| b.batch));
        assert_eq!(
            sorted_lines(&expected),
            sorted_lines(&got),
            "source {}: resuming from {checkpoint:?} lost or repeated rows",
            resumed.name()
        );
    }
}

/// A sink commits what it is given, recovers the last checkpoint on reopen, forgets uncommitted
/// writes after a "crash", and raises `SchemaMismatch` after committing the previous rows.
///
/// `make` creates a sink over the same store (as a restarted process would); `read_back` reads
/// every committed row from the store.
pub async fn sink_commits_exactly<M, R, Fut>(mut make: M, read_back: R)
where
    M: FnMut() -> Box<dyn Sink>,
    R: Fn() -> Fut,
    Fut: Future<Output = Vec<RecordBatch>>,
{
    let ctx = SinkContext {
        stream_id: "conformance".into(),
        mode: Mode::Stream,
        ..SinkContext::default()
    };
    let batches: Vec<RecordBatch> = (0..4)
        .map(|i| GeneratorSource::batch(i * 100, (i + 1) * 100))
        .collect();
    let checkpoint = |i: u64| Checkpoint {
        position: Some(crate::Position(
            serde_json::json!({ "rows": (i + 1) * 100 }),
        )),
        rows: 0,
    };

    // 1. Fresh store: nothing to resume from; write two groups and flush.
    let mut sink = make();
    let name = sink.name();
    assert_eq!(
        sink.open(&ctx)
            .await
            .unwrap_or_else(|e| panic!("sink {name} failed to open: {e}")),
        None,
        "sink {name}: a fresh store must have no checkpoint"
    );
    for (i, batch) in batches[..2].iter().enumerate() {
        sink.write(Group::new(batch.clone(), checkpoint(i as u64)))
            .await
            .unwrap_or_else(|e| panic!("sink {name} failed to write: {e}"));
    }
    let commit = sink
        .flush()
        .await
        .unwrap_or_else(|e| panic!("sink {name} failed to flush: {e}"));
    if let Some(commit) = &commit {
        assert_eq!(
            commit.checkpoint,
            checkpoint(1),
            "sink {name}: flush must commit through the last group"
        );
    }
    drop(sink);
    let committed = read_back().await;
    assert_eq!(
        sorted_lines(&batches[..2]),
        sorted_lines(&committed),
        "sink {name}: flushed rows must be readable"
    );

    // 2. Reopen: resume from the last commit; write without flushing, then "crash".
    let mut sink = make();
    assert_eq!(
        sink.open(&ctx)
            .await
            .unwrap_or_else(|e| panic!("sink {name} failed to reopen: {e}")),
        Some(checkpoint(1)),
        "sink {name}: reopen must recover the last committed checkpoint"
    );
    let mut committed_early = None;
    let result = sink
        .write(Group::new(batches[2].clone(), checkpoint(2)))
        .await
        .unwrap_or_else(|e| panic!("sink {name} failed to write: {e}"));
    if let Some(c) = result {
        committed_early = Some(c.checkpoint);
    }
    drop(sink);

    // 3. Reopen after the crash: uncommitted rows are not visible and not resumed past.
    let mut sink = make();
    let recovered = sink
        .open(&ctx)
        .await
        .unwrap_or_else(|e| panic!("sink {name} failed to recover: {e}"));
    let visible = read_back().await;
    match committed_early.clone() {
        None => {
            assert_eq!(
                recovered,
                Some(checkpoint(1)),
                "sink {name}: an unflushed write must not move the checkpoint"
            );
            assert_eq!(
                total_rows(&visible),
                200,
                "sink {name}: an unflushed write must not be visible after a crash"
            );
        }
        Some(cp) => {
            assert_eq!(
                recovered,
                Some(cp),
                "sink {name}: recovery must return the last commit"
            );
            assert_eq!(
                total_rows(&visible),
                300,
                "sink {name}: a committed write must be visible"
            );
        }
    }

    // 4. Schema mismatch: earlier rows are committed, the new group is refused.
    let resume_rows = if committed_early.is_some() { 3 } else { 2 };
    sink.write(Group::new(batches[3].clone(), checkpoint(3)))
        .await
        .unwrap_or_else(|e| panic!("sink {name} failed to write: {e}"));
    let other = RecordBatch::try_from_iter([(
        "id",
        std::sync::Arc::new(arrow_array::StringArray::from(vec!["not-an-int"])) as _,
    )])
    .unwrap_or_else(|e| panic!("test batch: {e}"));
    let err = sink.write(Group::new(other, checkpoint(4))).await;
    match err {
        Err(Error::SchemaMismatch { .. }) => {}
        other => panic!("sink {name}: an incompatible batch must be SchemaMismatch, got {other:?}"),
    }
    drop(sink);
    let visible = read_back().await;
    assert_eq!(
        total_rows(&visible),
        (resume_rows + 1) * 100,
        "sink {name}: rows written before a schema mismatch must be committed"
    );
    let mut sink = make();
    assert_eq!(
        sink.open(&ctx)
            .await
            .unwrap_or_else(|e| panic!("sink {name} failed to reopen: {e}")),
        Some(checkpoint(3)),
        "sink {name}: the checkpoint before a schema mismatch must be durable"
    );
}

/// The kill switch loses nothing: a run stopped gracefully commits every row it read (nothing
/// left uncommitted), a run aborted commits nothing partial, and in both cases a rerun from the
/// committed checkpoint yields the rest, so the committed rows are the source's rows exactly
/// once. The runs are streaming runs (a backfill rerun may start over); the stop comes after
/// the first commit (or when the run ended by itself, for a source too small to stop in the
/// middle), the rerun is stopped once it committed every row (or ended).
///
/// `make` creates a fresh source over the same data (as a restarted process would).
pub async fn source_survives_stop_and_abort<F>(mut make: F)
where
    F: FnMut() -> Box<dyn Source>,
{
    let (name, all) = read_backfill(&mut make).await;
    let expected: Vec<RecordBatch> = all.into_iter().map(|b| b.batch).collect();
    let total = total_rows(&expected);
    assert!(
        total >= 2,
        "source {name} must yield at least 2 rows for this suite"
    );
    let per_group = NonZeroUsize::new((total / 4).max(1)).unwrap_or(NonZeroUsize::MIN);
    let limits = GroupLimits::new(per_group, Duration::from_millis(200));
    let ctx = StreamContext::new("conformance", "conformance", serde_json::json!({}));
    let run = |source: Box<dyn Source>, store: &crate::testing::MemoryStoreHandle| {
        StreamGraph::from_source(source)
            .grouped_within(limits)
            .to_sink(MemorySink::with_store(store.clone()))
            .with_dead_letter_budget(DeadLetterBudget::unlimited())
            .run(&ctx)
    };
    for abort in [false, true] {
        let how = if abort { "abort" } else { "graceful stop" };
        let store = MemorySink::new().store();
        let running = run(make(), &store);
        let waited = tokio::time::timeout(Duration::from_secs(60), async {
            while running.progress.snapshot().rows_committed == 0 && !running.handle.is_finished() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "source {name}: nothing committed within 60 s"
        );
        if abort {
            running.kill_switch.abort();
        } else {
            running.kill_switch.shutdown();
        }
        let report = running.join().await;
        if !abort {
            assert!(
                report.outcome.is_ok(),
                "source {name}: a graceful stop must end cleanly: {:?}",
                report.outcome
            );
            assert_eq!(
                report.summary.rows_uncommitted, 0,
                "source {name}: a graceful stop must commit every row it read"
            );
        }
        let rerun = run(make(), &store);
        let _ = tokio::time::timeout(Duration::from_secs(60), async {
            while store.rows() < total && !rerun.handle.is_finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        // Anything read beyond the expected rows would be a repeat: let it commit, then stop.
        tokio::time::sleep(Duration::from_millis(300)).await;
        rerun.kill_switch.shutdown();
        let rerun = rerun.join().await;
        assert!(
            rerun.outcome.is_ok(),
            "source {name}: the rerun after a {how} failed: {:?}",
            rerun.outcome
        );
        assert_eq!(
            sorted_lines(&expected),
            sorted_lines(&store.batches()),
            "source {name}: after a {how} and a rerun, rows were lost or repeated"
        );
    }
}
