//! Backfill with `overwrite`: a backfill writes a new generation of the dataset; readers keep
//! seeing the current one until the backfill completes, an interrupted backfill resumes with
//! the same backfill id without re-committing what it finished, and the switch is one
//! manifest entry.
//!
//! ```sh
//! cargo run -p arcane-examples --example backfill
//! ```
//!
//! The same happens in a deployed stream when the operator restarts its Job with
//! `STREAMCONTEXT__BACKFILL=true` and `STREAMCONTEXT__BACKFILL_ID` (e.g. after a schema
//! mismatch); here the graph is driven from code to show each step.
#![allow(clippy::print_stdout)]

use std::num::NonZeroUsize;
use std::time::Duration;

use arcane_core::testing::GeneratorSource;
use arcane_core::{Completion, GroupLimits, StreamContext, StreamGraph};
use arcane_sinks::{BackfillBehavior, ParquetSink, ParquetSinkConfig, read_committed};

fn graph(url: &str, rows: u64) -> arcane_core::Result<StreamGraph> {
    let mut config = ParquetSinkConfig::new(url);
    config.backfill_behavior = BackfillBehavior::Overwrite;
    config.generation_retention = Duration::ZERO;
    config.rolling.max_rows_per_file = 10_000;
    Ok(StreamGraph::from_source(GeneratorSource::new(rows, 500))
        .grouped_within(GroupLimits::new(
            NonZeroUsize::new(2_000).unwrap_or(NonZeroUsize::MIN),
            Duration::from_secs(1),
        ))
        .to_sink(ParquetSink::new(config)?))
}

async fn rows(url: &str) -> arcane_core::Result<usize> {
    let batches = read_committed(url, &Default::default()).await?;
    Ok(batches.iter().map(|b| b.num_rows()).sum())
}

#[tokio::main]
async fn main() -> arcane_core::Result<()> {
    let dir = std::env::temp_dir().join(format!("arcane-backfill-example-{}", std::process::id()));
    let url = format!("file://{}", dir.display());

    // 1. The live stream has committed 30 000 rows.
    let live = StreamContext::new("orders", "generator", serde_json::json!({}));
    let report = graph(&url, 30_000)?.run(&live).join().await;
    println!(
        "stream:    {:?}, readers see {} rows",
        report.outcome?,
        rows(&url).await?
    );

    // 2. A backfill of the full history (100 000 rows) starts and is stopped half way.
    let backfill = live.clone().with_backfill("2026-11-25-reload");
    let running = graph(&url, 100_000)?.run(&backfill);
    while running.progress.snapshot().rows_committed < 40_000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.kill_switch.shutdown();
    let stopped = running.join().await;
    assert_eq!(stopped.outcome?, Completion::ShutDown);
    println!(
        "backfill:  stopped after committing {} rows; readers still see {} rows",
        stopped.summary.rows_committed,
        rows(&url).await?
    );

    // 3. The same backfill id resumes where it stopped and switches readers at the end.
    let resumed = graph(&url, 100_000)?.run(&backfill).join().await;
    println!(
        "backfill:  resumed from {}, committed {} more rows, {:?}; readers see {} rows",
        serde_json::to_string(&resumed.summary.resumed_from).unwrap_or_default(),
        resumed.summary.rows_committed,
        resumed.outcome?,
        rows(&url).await?
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
