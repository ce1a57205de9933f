//! `grouped_within`: timing with a paused clock, and properties of the grouping.

use std::num::NonZeroUsize;
use std::time::Duration;

use arcane_core::testing::{GeneratorPosition, GeneratorSource, total_rows};
use arcane_core::{Checkpoint, GroupLimits, GroupedWithinExt, Position, PositionedBatch};
use arrow_array::{Array, Int64Array};
use futures::{SinkExt, StreamExt};
use proptest::prelude::*;

fn positioned(start: u64, end: u64) -> arcane_core::Result<PositionedBatch> {
    Ok(PositionedBatch::new(
        GeneratorSource::batch(start, end),
        Position::encode(&GeneratorPosition { rows: end })?,
    ))
}

fn limits(rows: usize, secs: u64) -> GroupLimits {
    GroupLimits::new(NonZeroUsize::new(rows).unwrap(), Duration::from_secs(secs))
}

fn ids(batch: &arrow_array::RecordBatch) -> Vec<i64> {
    batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .values()
        .to_vec()
}

#[tokio::test(start_paused = true)]
async fn a_partial_group_is_emitted_when_the_interval_elapses_after_its_first_row() {
    let (mut tx, rx) = futures::channel::mpsc::channel(16);
    let t0 = tokio::time::Instant::now();
    // The consumer polls all the time and records when each group comes out.
    let consumer = tokio::spawn(async move {
        let mut groups = Box::pin(rx.grouped_within(limits(100, 10)));
        let mut out = Vec::new();
        while let Some(group) = groups.next().await {
            out.push((t0.elapsed(), group.unwrap()));
        }
        out
    });

    // Nothing buffered for a minute: no deadline is armed.
    tokio::time::sleep(Duration::from_secs(60)).await;
    tx.send(positioned(0, 30)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    tx.send(positioned(30, 40)).await.unwrap();
    // The next group's deadline starts with its own first row, 25 s later.
    tokio::time::sleep(Duration::from_secs(31)).await;
    tx.send(positioned(40, 45)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    drop(tx);
    let out = consumer.await.unwrap();

    let times: Vec<u64> = out.iter().map(|(t, _)| t.as_secs()).collect();
    assert_eq!(
        times,
        vec![70, 105],
        "the deadline is armed on the group's first row, not on the last or on stream start"
    );
    assert_eq!(ids(&out[0].1.batch), (0..40).collect::<Vec<_>>());
    assert_eq!(
        out[0].1.checkpoint,
        Checkpoint::at(Position::encode(&GeneratorPosition { rows: 40 }).unwrap())
    );
    assert_eq!(ids(&out[1].1.batch), (40..45).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn full_groups_are_emitted_without_waiting() {
    let input = futures::stream::iter(vec![positioned(0, 250)]).chain(futures::stream::pending());
    let mut groups = Box::pin(input.grouped_within(limits(100, 3600)));
    let started = tokio::time::Instant::now();
    let a = groups.next().await.unwrap().unwrap();
    let b = groups.next().await.unwrap().unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!((a.batch.num_rows(), b.batch.num_rows()), (100, 100));
    // A group cut inside a source batch carries the rows taken from it.
    assert_eq!(
        a.checkpoint,
        Checkpoint {
            position: None,
            rows: 100
        }
    );
    assert_eq!(
        b.checkpoint,
        Checkpoint {
            position: None,
            rows: 200
        }
    );
    // The tail waits for the interval.
    let c = groups.next().await.unwrap().unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(3600));
    assert_eq!(ids(&c.batch), (200..250).collect::<Vec<_>>());
    assert_eq!(
        c.checkpoint,
        Checkpoint::at(Position::encode(&GeneratorPosition { rows: 250 }).unwrap())
    );
}

#[tokio::test]
async fn the_tail_is_flushed_at_end_of_stream_and_errors_pass_through() {
    let input = futures::stream::iter(vec![
        positioned(0, 7),
        Err(arcane_core::Error::source_permanent("test", "boom")),
    ]);
    let out: Vec<_> = input.grouped_within(limits(5, 60)).collect().await;
    assert_eq!(out[0].as_ref().unwrap().batch.num_rows(), 5);
    assert!(out[1].is_err(), "the error must reach the consumer at once");

    let out: Vec<_> = futures::stream::iter(vec![positioned(0, 7)])
        .grouped_within(limits(5, 60))
        .collect()
        .await;
    let sizes: Vec<usize> = out
        .iter()
        .map(|g| g.as_ref().unwrap().batch.num_rows())
        .collect();
    assert_eq!(sizes, vec![5, 2]);
}

#[tokio::test]
async fn the_byte_limit_closes_groups() {
    let one_row_bytes = GeneratorSource::batch(0, 1000).get_array_memory_size() / 1000;
    let limit = GroupLimits::new(
        NonZeroUsize::new(1_000_000).unwrap(),
        Duration::from_secs(60),
    )
    .with_max_bytes(NonZeroUsize::new(one_row_bytes * 100).unwrap());
    let out: Vec<_> = futures::stream::iter(vec![positioned(0, 1000)])
        .grouped_within(limit)
        .map(|g| g.unwrap().batch.num_rows())
        .collect()
        .await;
    assert_eq!(out.iter().sum::<usize>(), 1000);
    assert!(
        out.len() >= 9,
        "1000 rows of ~{one_row_bytes} B in groups of ~100 rows: {out:?}"
    );
    assert!(out.iter().all(|&n| n <= 101), "{out:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Grouping never loses, duplicates or reorders rows; every group but the last is exactly
    /// `max_rows`; each group's checkpoint resumes exactly after its last row.
    #[test]
    fn grouping_preserves_rows_and_limits(
        sizes in proptest::collection::vec(0u64..40, 0..30),
        max_rows in 1usize..50,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let mut start = 0;
        let mut input = Vec::new();
        let mut boundaries = vec![];
        for n in &sizes {
            input.push(positioned(start, start + n));
            start += n;
            boundaries.push(start);
        }
        let total = start;
        let groups: Vec<_> = rt.block_on(
            futures::stream::iter(input).grouped_within(limits(max_rows, 3600)).collect::<Vec<_>>(),
        );
        let groups: Vec<_> = groups.into_iter().map(|g| g.unwrap()).collect();
        let all: Vec<i64> = groups.iter().flat_map(|g| ids(&g.batch)).collect();
        prop_assert_eq!(all, (0..total as i64).collect::<Vec<_>>());
        let nonempty: Vec<_> = groups.iter().filter(|g| g.batch.num_rows() > 0).collect();
        for g in nonempty.iter().rev().skip(1) {
            prop_assert_eq!(g.batch.num_rows(), max_rows);
        }
        prop_assert!(total_rows(&groups.iter().map(|g| g.batch.clone()).collect::<Vec<_>>()) as u64 == total);
        // Resuming from a checkpoint = the rows up to it.
        let mut seen = 0u64;
        for g in &groups {
            seen += g.batch.num_rows() as u64;
            let pos: Option<GeneratorPosition> = g.checkpoint.decode("test").unwrap();
            prop_assert_eq!(pos.map_or(0, |p| p.rows) + g.checkpoint.rows, seen);
        }
        if !sizes.is_empty() {
            let last: Option<GeneratorPosition> = groups.last().unwrap().checkpoint.decode("test").unwrap();
            prop_assert_eq!(last.map(|p| p.rows), Some(total));
        }
    }
}

#[tokio::test]
async fn a_schema_change_closes_the_group() {
    let other = arrow_array::RecordBatch::try_from_iter([(
        "name",
        std::sync::Arc::new(arrow_array::StringArray::from(vec!["a", "b"])) as _,
    )])
    .unwrap();
    let input = futures::stream::iter(vec![
        positioned(0, 3),
        Ok(PositionedBatch::new(
            other,
            Position(serde_json::json!({"rows": 5})),
        )),
    ]);
    let out: Vec<_> = input.grouped_within(limits(100, 60)).collect().await;
    let out: Vec<_> = out.into_iter().map(|g| g.unwrap()).collect();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].batch.num_rows(), 3);
    assert_eq!(out[1].batch.schema().field(0).name(), "name");
    assert!(out[1].batch.column(0).len() == 2);
}

#[tokio::test]
async fn a_position_only_tail_keeps_the_schema_of_the_rows_before_it() {
    let (mut tx, rx) = futures::channel::mpsc::channel(16);
    tx.send(positioned(0, 10)).await.unwrap();
    // An empty batch that only moves the position (a file finished).
    tx.send(Ok(PositionedBatch::new(
        GeneratorSource::batch(10, 10),
        Position::encode(&GeneratorPosition { rows: 11 }).unwrap(),
    )))
    .await
    .unwrap();
    drop(tx);
    let groups: Vec<_> = rx
        .grouped_within(limits(10, 60))
        .map(|g| g.unwrap())
        .collect()
        .await;
    assert_eq!(groups.len(), 2);
    assert_eq!(ids(&groups[0].batch), (0..10).collect::<Vec<_>>());
    let tail = &groups[1];
    assert_eq!(tail.batch.num_rows(), 0);
    assert_eq!(tail.batch.schema(), groups[0].batch.schema());
    assert_eq!(
        tail.checkpoint,
        Checkpoint::at(Position::encode(&GeneratorPosition { rows: 11 }).unwrap())
    );
}

#[tokio::test(start_paused = true)]
async fn a_position_only_batch_reaches_the_sink_within_the_interval_without_more_rows() {
    // A streaming source whose records were all dead-lettered yields an empty batch that only
    // moves the position; the position must be committed (and so acked upstream) within the
    // interval even though no rows follow.
    let (mut tx, rx) = futures::channel::mpsc::channel(16);
    let t0 = tokio::time::Instant::now();
    let consumer = tokio::spawn(async move {
        let mut groups = Box::pin(rx.grouped_within(limits(100, 10)));
        let mut out = Vec::new();
        while let Some(group) = groups.next().await {
            out.push((t0.elapsed().as_secs(), group.unwrap()));
        }
        out
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    tx.send(Ok(PositionedBatch::new(
        GeneratorSource::batch(0, 0),
        Position::encode(&GeneratorPosition { rows: 7 }).unwrap(),
    )))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    drop(tx);
    let out = consumer.await.unwrap();
    assert_eq!(
        out.len(),
        1,
        "one position-only group, none at end of stream"
    );
    assert_eq!(
        out[0].0, 15,
        "emitted when the interval armed by the empty batch elapsed"
    );
    assert_eq!(out[0].1.batch.num_rows(), 0);
    assert_eq!(
        out[0].1.checkpoint,
        Checkpoint::at(Position::encode(&GeneratorPosition { rows: 7 }).unwrap())
    );
}

/// After a resume inside a batch, checkpoints inside the rest of that batch count the rows the
/// resumed checkpoint covered: a second crash inside the same batch must not resume earlier.
#[tokio::test]
async fn a_resume_inside_a_batch_keeps_counting_from_the_resumed_checkpoint() {
    let start = Position(serde_json::json!({"file": "a", "records": 0}));
    let end = Position(serde_json::json!({"file": "a", "records": 1000}));
    let resumed = Checkpoint {
        position: Some(start.clone()),
        rows: 650,
    };
    // The source runtime's way: the resume point again (650 rows still covered), then the
    // batch with its first 650 rows cut.
    let empty = arrow_array::RecordBatch::new_empty(GeneratorSource::batch(0, 1).schema());
    let input = futures::stream::iter(vec![
        Ok(PositionedBatch::new(empty, start.clone()).with_covered(650)),
        Ok(PositionedBatch::new(GeneratorSource::batch(650, 1000), end.clone()).with_covered(650)),
    ]);
    let groups: Vec<_> = arcane_core::GroupedWithin::new(input, limits(50, 60))
        .resumed_from(Some(&resumed))
        .collect()
        .await;
    let checkpoints: Vec<Checkpoint> = groups
        .into_iter()
        .map(|g| g.unwrap())
        .filter(|g| g.batch.num_rows() > 0)
        .map(|g| g.checkpoint)
        .collect();
    assert_eq!(
        checkpoints[0],
        Checkpoint {
            position: Some(start.clone()),
            rows: 700
        }
    );
    assert_eq!(
        checkpoints[5],
        Checkpoint {
            position: Some(start),
            rows: 950
        }
    );
    assert_eq!(checkpoints.last().unwrap(), &Checkpoint::at(end));

    // A source that skips the covered rows itself (no position-only batch, nothing cut by the
    // runtime): the first batch still continues the resumed checkpoint.
    let at = Position::encode(&GeneratorPosition { rows: 100 }).unwrap();
    let resumed = Checkpoint {
        position: Some(at.clone()),
        rows: 30,
    };
    let input = futures::stream::iter(vec![positioned(130, 200)]);
    let groups: Vec<_> = arcane_core::GroupedWithin::new(input, limits(20, 60))
        .resumed_from(Some(&resumed))
        .collect()
        .await;
    assert_eq!(
        groups[0].as_ref().unwrap().checkpoint,
        Checkpoint {
            position: Some(at),
            rows: 50
        }
    );
}
