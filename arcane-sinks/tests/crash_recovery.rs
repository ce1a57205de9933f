//! Kill a writing process with SIGKILL at chosen points of the commit protocol, restart it, and
//! check that every row is committed exactly once.
//!
//! The test binary re-executes itself: `crash_child` (ignored unless run by the parent) writes a
//! stream through the real graph into a Parquet sink; `ARCANE_SINK_PAUSE_AT` makes the sink stop
//! at a named point and create a marker file, and the parent then kills it.

mod common;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arcane_core::testing::GeneratorSource;
use arcane_core::{Completion, GroupLimits, StreamContext, StreamGraph};
use arcane_sinks::{ParquetSink, ParquetSinkConfig, committed_files};
use common::{SinkStore, Store, ids};

const TOTAL: u64 = 400_000;
const ENV_URL: &str = "ARCANE_CRASH_CHILD_URL";
const ENV_OPTIONS: &str = "ARCANE_CRASH_CHILD_OPTIONS";

fn sink_config(url: &str, options: BTreeMap<String, String>) -> ParquetSinkConfig {
    let mut config = ParquetSinkConfig::new(url);
    config.storage_options = options;
    // Uncompressed rows of ~32 bytes: a 300 000-row file is ~9 MiB, so it uploads at least
    // one 5 MiB part before it is complete ("mid-part").
    config.rolling.max_rows_per_file = 300_000;
    config.writer.compression = "uncompressed".into();
    config.writer.dictionary = false;
    config.writer.row_group_size = 20_000;
    config.writer.upload_part_size = 5 * 1024 * 1024;
    config
}

/// The writing process. Runs only when started by a test below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "started as a child process by the crash tests"]
async fn crash_child() {
    let Ok(url) = std::env::var(ENV_URL) else {
        return;
    };
    let options: BTreeMap<String, String> =
        serde_json::from_str(&std::env::var(ENV_OPTIONS).unwrap_or_else(|_| "{}".into()))
            .expect("options");
    let sink = ParquetSink::new(sink_config(&url, options)).expect("sink");
    let graph = StreamGraph::from_source(GeneratorSource::new(TOTAL, 10_000))
        .grouped_within(GroupLimits::new(
            NonZeroUsize::new(10_000).expect("non-zero"),
            Duration::from_secs(600),
        ))
        .to_sink(sink);
    let ctx = StreamContext::new("crash-test", "synthetic", serde_json::json!({}));
    let report = graph.run(&ctx).join().await;
    assert_eq!(report.outcome.expect("run"), Completion::Finished);
}

fn child(store: &Store, pause_at: Option<&str>, marker: &Path) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", "crash_child", "--ignored", "--nocapture"])
        .env(ENV_URL, store.url())
        .env(
            ENV_OPTIONS,
            serde_json::to_string(&store.options()).expect("json"),
        )
        .env("ARCANE_SINK_PAUSE_MARKER", marker)
        .env_remove("ARCANE_SINK_PAUSE_AT")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(p) = pause_at {
        cmd.env("ARCANE_SINK_PAUSE_AT", p);
    }
    cmd.spawn().expect("spawn child")
}

async fn crash_and_recover(store: &Store, point: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let marker = dir.path().join("paused");
    let mut first = child(store, Some(point), &marker);
    let deadline = Instant::now() + Duration::from_secs(300);
    while !marker.exists() {
        if let Some(status) = first.try_wait().expect("wait") {
            panic!("the child exited ({status}) before reaching {point}");
        }
        assert!(Instant::now() < deadline, "the child did not reach {point}");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    let before = committed_files(&store.url(), &store.options())
        .await
        .expect("files");
    match point {
        "mid-part" | "after-upload-before-manifest" => {
            assert!(before.is_empty(), "nothing is committed yet at {point}")
        }
        _ => assert_eq!(before.len(), 1, "the first file is committed at {point}"),
    }
    if let (Store::Local(root), "after-upload-before-manifest") = (store, point) {
        let on_disk = std::fs::read_dir(root.path().join("stream"))
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
            .count();
        assert_eq!(
            on_disk, 1,
            "the completed but uncommitted file is on disk before recovery"
        );
    }
    let mut second = child(store, None, &marker);
    let status = second.wait().expect("wait");
    assert!(status.success(), "the restarted child failed: {status}");
    let rows = ids(&store.read().await);
    assert_eq!(
        rows.len() as u64,
        TOTAL,
        "exactly-once after a crash at {point}"
    );
    assert_eq!(
        rows,
        (0..TOTAL as i64).collect::<Vec<_>>(),
        "exactly-once after a crash at {point}"
    );
    let files = committed_files(&store.url(), &store.options())
        .await
        .expect("files");
    assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), TOTAL);
    if let Store::Local(root) = store {
        let on_disk = std::fs::read_dir(root.path().join("stream"))
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".parquet"))
            .count();
        assert_eq!(
            on_disk,
            files.len(),
            "no uncommitted or staging files remain"
        );
    }
}

#[tokio::test]
async fn killed_mid_part_local_fs() {
    crash_and_recover(&Store::local(), "mid-part").await;
}

#[tokio::test]
async fn killed_after_upload_before_manifest_local_fs() {
    crash_and_recover(&Store::local(), "after-upload-before-manifest").await;
}

#[tokio::test]
async fn killed_after_manifest_local_fs() {
    crash_and_recover(&Store::local(), "after-manifest").await;
}

#[tokio::test]
async fn killed_mid_part_s3_moto() {
    let store = Store::s3().await;
    crash_and_recover(&store, "mid-part").await;
    store.cleanup().await;
}

#[tokio::test]
async fn killed_after_upload_before_manifest_s3_moto() {
    let store = Store::s3().await;
    crash_and_recover(&store, "after-upload-before-manifest").await;
    store.cleanup().await;
}
