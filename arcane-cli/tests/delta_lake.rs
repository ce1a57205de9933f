//! A generator stream into a Delta Lake table (`sink.tableFormat.delta`) through the `arcane`
//! binary, on the local file system and on S3 (moto): killed with SIGKILL at seeded random
//! moments ten times, rerun until it finishes, then the table read back by an independent
//! reader (Python `deltalake`, `ARCANE_TEST_PYTHON`) and compared with the input: every row
//! exactly once, and the stream's last `txn.version` is the sink's last manifest sequence.
//! Also: two runners of one stream at once.

#![allow(clippy::print_stderr)] // the kill schedule's seed, to reproduce a failure

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use arcane_test_support::Store;
use arcane_test_support::delta::read_delta;
use arcane_test_support::rng::{SplitMix64, seed_from_env};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use support::*;

/// Rows of the stream, and their rate: a whole run takes 12 s, ten kills at most 15 s of it,
/// so most kill schedules stop it ten times before it is done.
const ROWS: i64 = 6000;
const RATE: i64 = 500;
const STREAM: &str = "orders-delta";

fn spec(sink: &str, options: &BTreeMap<String, String>) -> Value {
    json!({
        "apiVersion": "streaming.sneaksanddata.com/v1",
        "kind": "GeneratorStream",
        "metadata": {"name": STREAM},
        "spec": {
            "source": {"totalRows": ROWS, "batchRows": 40, "rowsPerSecond": RATE},
            "sink": {
                "url": sink,
                "storageOptions": options,
                "rolling": {"maxFileAge": "300ms"},
                "tableFormat": {"delta": {"name": "orders"}}
            },
            "rowsPerGroup": 200,
            "groupingIntervalSeconds": 1
        }
    })
}

/// The last manifest sequence of the sink at `url`.
fn last_sequence(url: &str, options: &BTreeMap<String, String>) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(arcane_sinks::latest_manifest(url, options))
        .expect("read manifests")
        .expect("a manifest")
        .sequence
}

fn killed_ten_times_then_finished(work: &Path, sink: &str, options: &BTreeMap<String, String>) {
    let seed = seed_from_env("ARCANE_DELTA_KILL_SEED");
    eprintln!("delta kill schedule: seed {seed} (ARCANE_DELTA_KILL_SEED={seed} replays it)");
    let mut rng = SplitMix64(seed);
    let spec = spec(sink, options);
    let mut kills = 0;
    while kills < 10 {
        let proc = Arcane::run(work, &spec, &[]);
        proc.wait_for_log("arcane runner starting");
        std::thread::sleep(Duration::from_millis(rng.between(100, 1500)));
        proc.signal(Signal::SIGKILL);
        let exit = proc.wait();
        if exit.code == 0 {
            eprintln!("finished before the signal after {kills} kills");
            break;
        }
        assert_eq!(exit.code, -1, "killed: {:?}", exit.termination);
        kills += 1;
    }
    let started = Instant::now();
    loop {
        let exit = Arcane::run(work, &spec, &[]).wait();
        if exit.code == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the stream does not finish: {:?}",
            exit.termination
        );
    }
    let read = read_delta(sink, options, STREAM);
    eprintln!(
        "{kills} kills; table version {}, {} files, txn {:?}",
        read.version, read.files, read.txn
    );
    assert!(
        kills >= 5,
        "the schedule killed the stream only {kills} times (seed {seed})"
    );
    assert_eq!(
        read.ids(),
        (0..ROWS).collect::<Vec<_>>(),
        "every row exactly once (seed {seed})"
    );
    assert_eq!(
        read.txn,
        Some(last_sequence(sink, options)),
        "the stream's txn is the last manifest sequence (seed {seed})"
    );
    let row = read.rows.iter().find(|r| r["id"] == 7).expect("row 7");
    assert_eq!(row["key"], "key-7");
}

#[test]
fn delta_on_local_fs_survives_kills() {
    let work = tempfile::tempdir().expect("temp dir");
    let sink = format!("file://{}/table", work.path().display());
    killed_ten_times_then_finished(work.path(), &sink, &BTreeMap::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_on_s3_survives_kills() {
    let store = Store::s3().await;
    let (sink, options) = (store.url(), store.options());
    tokio::task::spawn_blocking(move || {
        let work = tempfile::tempdir().expect("temp dir");
        killed_ten_times_then_finished(work.path(), &sink, &options);
    })
    .await
    .expect("test thread");
}

/// Two runners of one stream at once: one of them stops with an error saying so, and the
/// table holds every row once.
#[test]
fn two_runners_of_one_stream() {
    let work = tempfile::tempdir().expect("temp dir");
    let sink = format!("file://{}/table", work.path().display());
    let options = BTreeMap::new();
    let spec = spec(&sink, &options);
    let a = Arcane::run(work.path(), &spec, &[]);
    let b = Arcane::run(work.path(), &spec, &[]);
    let (a, b) = (a.wait(), b.wait());
    let codes = [a.code, b.code];
    let failed = if a.code == 0 { &b } else { &a };
    assert!(
        codes.contains(&0) && codes.contains(&2),
        "one finishes, the other stops with RESTART: {codes:?} {:?} {:?}",
        a.termination,
        b.termination
    );
    let message = failed.termination.to_string();
    assert!(message.contains("another runner"), "{message}");
    // The stopped one's rerun (what Kubernetes would do) finds everything done.
    let again = Arcane::run(work.path(), &spec, &[]).wait();
    assert_eq!(again.code, 0, "{:?}", again.termination);
    let read = read_delta(&sink, &options, STREAM);
    assert_eq!(read.ids(), (0..ROWS).collect::<Vec<_>>());
    assert_eq!(read.txn, Some(last_sequence(&sink, &options)));
}
