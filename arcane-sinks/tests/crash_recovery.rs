//! Kill a writing process with SIGKILL at each point of the commit protocol, restart it, and
//! check that every row is committed exactly once, that nothing uncommitted was ever at a path
//! a reader lists, and that nothing is left behind: no incomplete multipart upload (checked on
//! the S3 server with ListMultipartUploads), no upload marker, no staging file.
//!
//! The test binary re-executes itself: `crash_child` (ignored unless run by the parent) writes a
//! stream through the real graph into a Parquet sink; `ARCANE_SINK_PAUSE_AT` makes the sink stop
//! at a named point and create a marker file, and the parent then kills it. The memory store
//! lives in one process, so its crashes are simulated in-process by aborting the graph's task
//! while the sink is paused.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arcane_core::testing::GeneratorSource;
use arcane_core::{Completion, GroupLimits, Mode, Sink, SinkContext, StreamContext, StreamGraph};
use arcane_sinks::{ParquetSink, ParquetSinkConfig, committed_files};
use common::{SinkStore, Store, ids};
use futures::TryStreamExt;

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
    config.writer.dictionary = false.into();
    config.writer.row_group_size = 20_000;
    config.writer.upload_part_size = 5 * 1024 * 1024;
    config
}

fn graph(sink: ParquetSink) -> StreamGraph {
    StreamGraph::from_source(GeneratorSource::new(TOTAL, 10_000))
        .grouped_within(GroupLimits::new(
            NonZeroUsize::new(10_000).expect("non-zero"),
            Duration::from_secs(600),
        ))
        .to_sink(sink)
}

fn stream_ctx() -> StreamContext {
    StreamContext::new("crash-test", "synthetic", serde_json::json!({}))
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
    let report = graph(sink).run(&stream_ctx()).join().await;
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

/// Every object under the dataset's prefix, relative to it.
async fn objects(store: &Store) -> Vec<String> {
    let loc = arcane_store::open_location(&store.url(), &store.options(), "url").expect("store");
    let mut out: Vec<String> = loc
        .store
        .list(Some(&loc.prefix))
        .map_ok(|m| loc.relative(&m.location))
        .try_collect()
        .await
        .expect("list");
    out.sort();
    out
}

/// What a reader listing the dataset sees: `.parquet` files outside `_`- and `.`-prefixed
/// directories (the Hive convention).
fn live(objects: &[String]) -> BTreeSet<String> {
    objects
        .iter()
        .filter(|o| o.ends_with(".parquet"))
        .filter(|o| {
            !o.split('/')
                .any(|c| c.starts_with('_') || c.starts_with('.'))
        })
        .cloned()
        .collect()
}

fn under<'a>(objects: &'a [String], dir: &str) -> Vec<&'a String> {
    objects.iter().filter(|o| o.starts_with(dir)).collect()
}

/// Checks of the dataset as a killed run left it, before any recovery.
async fn check_left_behind(store: &Store, point: &str) {
    let committed = committed_files(&store.url(), &store.options())
        .await
        .expect("files");
    let objects = objects(store).await;
    let live = live(&objects);
    match point {
        "mid-part" | "after-upload-before-manifest" => {
            assert!(committed.is_empty(), "nothing is committed yet at {point}");
            assert!(
                live.is_empty(),
                "nothing uncommitted may be at a live path at {point}: {live:?}"
            );
        }
        "after-manifest" => {
            assert_eq!(committed.len(), 1, "the first file is committed at {point}");
            assert!(
                live.is_empty(),
                "the committed file becomes visible only after its manifest: {live:?}"
            );
            // A reader in between is told why, and that the next start finishes it.
            let err = arcane_sinks::read_committed(&store.url(), &store.options())
                .await
                .expect_err("the committed file is not visible yet");
            let message = err.to_string();
            assert!(
                message.contains("is not visible")
                    && message.contains("the next start of the stream finishes the commit"),
                "{message}"
            );
        }
        "after-completion" => {
            assert_eq!(committed.len(), 1, "the first file is committed at {point}");
            assert_eq!(
                live,
                BTreeSet::from([committed[0].path.clone()]),
                "the committed file is visible at {point}"
            );
        }
        other => unreachable!("{other}"),
    }
    if !matches!(store, Store::Local(_)) {
        assert!(
            !under(&objects, "_arcane/uploads/").is_empty(),
            "the upload is recorded by a marker at {point}: {objects:?}"
        );
    }
    if let Some(uploads) = store.incomplete_uploads().await {
        match point {
            "after-completion" => assert!(uploads.is_empty(), "{uploads:?}"),
            _ => assert!(
                !uploads.is_empty(),
                "the killed run left an incomplete multipart upload at {point}"
            ),
        }
    }
    if let (Store::Local(_), "after-upload-before-manifest" | "after-manifest") = (store, point) {
        assert!(
            !under(&objects, "_arcane/staging/").is_empty(),
            "the file waits under _arcane/staging at {point}: {objects:?}"
        );
    }
}

/// Checks after a complete rerun: exactly once, nothing left behind.
async fn check_recovered(store: &Store, point: &str) {
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
    let objects = objects(store).await;
    assert_eq!(
        live(&objects),
        files
            .iter()
            .map(|f| f.path.clone())
            .collect::<BTreeSet<_>>(),
        "a reader listing the dataset sees exactly the committed files"
    );
    assert!(
        under(&objects, "_arcane/uploads/").is_empty()
            && under(&objects, "_arcane/staging/").is_empty(),
        "no upload marker or staging file remains: {objects:?}"
    );
    if let Some(uploads) = store.incomplete_uploads().await {
        assert!(
            uploads.is_empty(),
            "every incomplete multipart upload was aborted: {uploads:?}"
        );
    }
    if let Store::Local(root) = store {
        assert!(
            !root.path().join("stream/_arcane/staging").exists(),
            "no staging directory (or partial file) remains"
        );
    }
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
    check_left_behind(store, point).await;
    let mut second = child(store, None, &marker);
    let status = second.wait().expect("wait");
    assert!(status.success(), "the restarted child failed: {status}");
    check_recovered(store, point).await;
}

/// The memory store lives in this process: "kill" the run by aborting its task while the sink
/// is paused at `point`, then run again.
async fn crash_in_process_and_recover(store: &Store, point: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let marker = dir.path().join("paused");
    let sink = ParquetSink::new(sink_config(&store.url(), store.options()))
        .expect("sink")
        .with_pause_at(point, 1, Some(&marker));
    let running = graph(sink).run(&stream_ctx());
    let deadline = Instant::now() + Duration::from_secs(300);
    while !marker.exists() {
        assert!(
            !running.handle.is_finished(),
            "the run ended before reaching {point}"
        );
        assert!(Instant::now() < deadline, "the run did not reach {point}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.handle.abort();
    assert!(running.handle.await.is_err(), "aborted");
    check_left_behind(store, point).await;
    let sink = ParquetSink::new(sink_config(&store.url(), store.options())).expect("sink");
    let report = graph(sink).run(&stream_ctx()).join().await;
    assert_eq!(report.outcome.expect("rerun"), Completion::Finished);
    check_recovered(store, point).await;
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
async fn killed_after_manifest_before_rename_local_fs() {
    crash_and_recover(&Store::local(), "after-manifest").await;
}

#[tokio::test]
async fn killed_after_rename_local_fs() {
    crash_and_recover(&Store::local(), "after-completion").await;
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

#[tokio::test]
async fn killed_after_manifest_before_completion_s3_moto() {
    let store = Store::s3().await;
    crash_and_recover(&store, "after-manifest").await;
    store.cleanup().await;
}

#[tokio::test]
async fn killed_after_completion_before_marker_deletion_s3_moto() {
    let store = Store::s3().await;
    crash_and_recover(&store, "after-completion").await;
    store.cleanup().await;
}

#[tokio::test]
async fn killed_mid_part_azure_azurite() {
    let store = Store::azure().await;
    crash_and_recover(&store, "mid-part").await;
    store.cleanup().await;
}

#[tokio::test]
async fn killed_after_manifest_before_completion_azure_azurite() {
    let store = Store::azure().await;
    crash_and_recover(&store, "after-manifest").await;
    store.cleanup().await;
}

#[tokio::test]
async fn killed_after_completion_before_marker_deletion_azure_azurite() {
    let store = Store::azure().await;
    crash_and_recover(&store, "after-completion").await;
    store.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_at_every_point_memory() {
    for point in [
        "mid-part",
        "after-upload-before-manifest",
        "after-manifest",
        "after-completion",
    ] {
        crash_in_process_and_recover(&Store::memory(), point).await;
    }
}

/// A committed file whose upload vanished before recovery completed it (a lifecycle rule
/// aborting incomplete uploads, a manual abort) is lost data: FATAL, naming the file, never
/// a silent success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_upload_that_vanished_is_a_fatal_error_naming_the_file() {
    let store = Store::memory();
    let dir = tempfile::tempdir().expect("tmp");
    let marker = dir.path().join("paused");
    let sink = ParquetSink::new(sink_config(&store.url(), store.options()))
        .expect("sink")
        .with_pause_at("after-manifest", 1, Some(&marker));
    let running = graph(sink).run(&stream_ctx());
    while !marker.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.handle.abort();
    let _ = running.handle.await;
    let loc = arcane_store::open_location(&store.url(), &store.options(), "url").expect("store");
    let committed = committed_files(&store.url(), &store.options())
        .await
        .expect("files");
    let Some(arcane_sinks::parquet::manifest::Completion::Multipart { upload_id, .. }) =
        &committed[0].completion
    else {
        panic!("a multipart completion: {committed:?}")
    };
    let path = loc.child(&committed[0].path);
    loc.multipart
        .as_ref()
        .expect("memory has multipart")
        .abort_multipart(&path, upload_id)
        .await
        .expect("abort");

    let mut sink = ParquetSink::new(sink_config(&store.url(), store.options())).expect("sink");
    let ctx = SinkContext {
        stream_id: "crash-test".into(),
        mode: Mode::Stream,
        ..SinkContext::default()
    };
    let err = sink
        .open(&ctx)
        .await
        .expect_err("the committed file is lost");
    assert_eq!(err.exit_code(), arcane_core::ExitCode::Fatal, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&committed[0].path) && text.contains("its rows are lost"),
        "{text}"
    );
}
