//! Sharded backfills in the Parquet sink, in process: shards that finish at the same moment
//! complete the backfill exactly once, and a second writer of the same shard is fenced off.

mod common;

use arcane_core::testing::GeneratorSource;
use arcane_core::{Checkpoint, ExitCode, Group, Mode, Result, Shard, Sink, SinkContext};
use arcane_sinks::{BackfillBehavior, ParquetSink, latest_manifest, sharded_backfills};
use common::{SinkStore, Store, checkpoint, ids};

fn ctx() -> SinkContext {
    SinkContext {
        stream_id: "orders".into(),
        mode: Mode::Backfill,
        backfill_id: Some("b1".into()),
        ..SinkContext::default()
    }
}

/// The last shard's final checkpoint (the test's shards read increasing ranges).
fn resume(finals: &[Option<Checkpoint>]) -> Result<Option<Checkpoint>> {
    Ok(finals.iter().flatten().last().cloned())
}

fn sink(store: &Store, index: u32, shards: u32) -> ParquetSink {
    let mut config = store.config();
    config.backfill_behavior = BackfillBehavior::Overwrite;
    ParquetSink::new(config)
        .expect("sink")
        .with_shard(Shard::new(index, shards).expect("shard"), resume)
}

fn group(from: u64, to: u64) -> Group {
    Group::new(GeneratorSource::batch(from, to), checkpoint(to))
}

async fn shards_finishing_together_complete_once(store: &Store) {
    let n = 4u32;
    let mut sinks = Vec::new();
    for i in 0..n {
        let mut s = sink(store, i, n);
        assert_eq!(s.open(&ctx()).await.expect("open"), None);
        let (from, to) = (u64::from(i) * 100, u64::from(i + 1) * 100);
        s.write(group(from, to)).await.expect("write");
        s.flush().await.expect("flush").expect("a commit");
        sinks.push(s);
    }
    // Every shard committed its part; nothing is visible yet.
    assert!(store.read().await.is_empty());
    let progress = sharded_backfills(&store.url(), &store.options())
        .await
        .expect("progress");
    assert_eq!(progress.len(), 1);
    assert!(!progress[0].complete);
    assert!(
        progress[0]
            .progress
            .iter()
            .all(|s| s.rows == 100 && !s.done)
    );

    let finished = futures::future::join_all(sinks.iter_mut().map(|s| s.finish())).await;
    for r in finished {
        r.expect("finish");
    }
    // Exactly one manifest of the stream: the completion, written by one of the shards.
    let latest = latest_manifest(&store.url(), &store.options())
        .await
        .expect("manifest")
        .expect("a manifest");
    assert_eq!(
        latest.sequence, 0,
        "the backfill was completed more than once"
    );
    assert_eq!(latest.state.current_generation, "_generations/b1-of-4");
    assert_eq!(latest.state.stream_checkpoint, Some(checkpoint(400)));
    assert_eq!(ids(&store.read().await), (0..400).collect::<Vec<i64>>());
    let progress = sharded_backfills(&store.url(), &store.options())
        .await
        .expect("progress");
    assert!(progress[0].complete);
    assert!(progress[0].progress.iter().all(|s| s.done));

    // A shard started again does nothing.
    let mut again = sink(store, 2, n);
    assert_eq!(again.open(&ctx()).await.expect("open"), None);
    assert!(again.backfill_already_completed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shards_finishing_together_complete_once_in_memory() {
    for _ in 0..10 {
        shards_finishing_together_complete_once(&Store::memory()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shards_finishing_together_complete_once_on_local_disk() {
    for _ in 0..5 {
        shards_finishing_together_complete_once(&Store::local()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shards_finishing_together_complete_once_on_s3() {
    let store = Store::s3().await;
    shards_finishing_together_complete_once(&store).await;
    store.cleanup().await;
}

#[tokio::test]
async fn a_second_writer_of_a_shard_fences_the_first_off() {
    let store = Store::local();
    let mut first = sink(&store, 0, 2);
    first.open(&ctx()).await.expect("open");
    first.write(group(0, 100)).await.expect("write");
    first.flush().await.expect("flush");

    // A second pod of index 0 resumes from what the first committed...
    let mut second = sink(&store, 0, 2);
    assert_eq!(
        second.open(&ctx()).await.expect("open"),
        Some(checkpoint(100))
    );
    // ...and the first one can no longer commit.
    first.write(group(100, 200)).await.expect("write");
    let err = first
        .flush()
        .await
        .expect_err("the first writer is fenced off");
    assert!(
        err.to_string()
            .contains("was written by another process: another pod of the same shard"),
        "{err}"
    );
    assert_eq!(err.exit_code(), ExitCode::Restart);
    drop(first);

    second.write(group(100, 200)).await.expect("write");
    second.flush().await.expect("flush");
    second.finish().await.expect("finish");
    let mut other = sink(&store, 1, 2);
    other.open(&ctx()).await.expect("open");
    other.write(group(200, 300)).await.expect("write");
    other.finish().await.expect("finish");
    assert_eq!(ids(&store.read().await), (0..300).collect::<Vec<i64>>());
}
