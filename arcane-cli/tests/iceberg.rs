//! A generator stream into an Apache Iceberg table (`sink.tableFormat.iceberg`, SQL catalog
//! on the machine's PostgreSQL) through the `arcane` binary: killed with SIGKILL at seeded
//! random moments ten times, rerun until it finishes, then the table read back by an
//! independent reader (pyiceberg's `SqlCatalog` on the same database, `ARCANE_TEST_PYTHON`)
//! and compared with the input: every row exactly once, and the snapshots carry the stream id
//! and increasing manifest sequences. Also: two runners of one stream at once, and a column
//! added to a blob-landing stream's schema between two runs (`addNullableColumns`).

#![allow(clippy::print_stderr)] // the kill schedule's seed, to reproduce a failure

mod support;

use std::time::{Duration, Instant};

use arcane_test_support::iceberg::TestCatalog;
use arcane_test_support::rng::{SplitMix64, seed_from_env};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use support::*;

/// Rows of the stream, and their rate: a whole run takes 12 s, ten kills at most 15 s of it.
const ROWS: i64 = 6000;
const RATE: i64 = 500;
const STREAM: &str = "orders-iceberg";
const NS: &str = "shop";
const TABLE: &str = "orders";

fn spec(sink: &str, catalog: &TestCatalog) -> Value {
    json!({
        "apiVersion": "streaming.sneaksanddata.com/v1",
        "kind": "GeneratorStream",
        "metadata": {"name": STREAM},
        "spec": {
            "source": {"totalRows": ROWS, "batchRows": 40, "rowsPerSecond": RATE},
            "sink": {
                "url": sink,
                "rolling": {"maxFileAge": "300ms"},
                "backfillBehavior": "merge",
                "tableFormat": catalog.table_format(NS, TABLE)
            },
            "rowsPerGroup": 200,
            "groupingIntervalSeconds": 1
        }
    })
}

/// The last manifest sequence of the sink at `url`.
fn last_sequence(url: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(arcane_sinks::latest_manifest(url, &Default::default()))
        .expect("read manifests")
        .expect("a manifest")
        .sequence
}

fn assert_snapshots_of_the_stream(read: &arcane_test_support::iceberg::IcebergRead, sink: &str) {
    let sequences = read.sequences(STREAM);
    assert_eq!(
        sequences.len(),
        read.snapshots.len(),
        "every snapshot is the stream's"
    );
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "increasing sequences: {sequences:?}"
    );
    assert!(
        sequences.last().is_some_and(|s| *s <= last_sequence(sink)),
        "{sequences:?}"
    );
    assert!(read.properties.contains_key("arcane-watermark"));
}

#[test]
fn iceberg_survives_kills() {
    let work = tempfile::tempdir().expect("temp dir");
    let catalog = TestCatalog::new();
    let sink = format!("file://{}/table", work.path().display());
    let seed = seed_from_env("ARCANE_ICEBERG_KILL_SEED");
    eprintln!("iceberg kill schedule: seed {seed} (ARCANE_ICEBERG_KILL_SEED={seed} replays it)");
    let mut rng = SplitMix64(seed);
    let spec = spec(&sink, &catalog);
    let mut kills = 0;
    while kills < 10 {
        let proc = Arcane::run(work.path(), &spec, &[]);
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
        let exit = Arcane::run(work.path(), &spec, &[]).wait();
        if exit.code == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the stream does not finish: {:?}",
            exit.termination
        );
    }
    let read = catalog.read(NS, TABLE);
    eprintln!(
        "{kills} kills; {} snapshots, {} files",
        read.snapshots.len(),
        read.files
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
    assert_snapshots_of_the_stream(&read, &sink);
    let row = read.rows.iter().find(|r| r["id"] == 7).expect("row 7");
    assert_eq!(row["key"], "key-7");
}

/// Two runners of one stream at once: one of them stops with an error saying so, and the
/// table holds every row once.
#[test]
fn two_runners_of_one_stream() {
    let work = tempfile::tempdir().expect("temp dir");
    let catalog = TestCatalog::new();
    let sink = format!("file://{}/table", work.path().display());
    let spec = spec(&sink, &catalog);
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
    // The table is readable and consistent; the stopped one's rerun finds everything done.
    let read = catalog.read(NS, TABLE);
    let mut ids = read.ids();
    ids.dedup();
    assert_eq!(ids.len(), read.rows.len(), "no row twice");
    let again = Arcane::run(work.path(), &spec, &[]).wait();
    assert_eq!(again.code, 0, "{:?}", again.termination);
    let read = catalog.read(NS, TABLE);
    assert_eq!(read.ids(), (0..ROWS).collect::<Vec<_>>());
    assert_snapshots_of_the_stream(&read, &sink);
}

/// A blob-landing stream whose source schema gains a nullable column between two runs, with
/// `schemaEvolution: addNullableColumns`: the table gets a second schema with a new field id,
/// and pyiceberg reads the new column (nulls in the older rows).
#[test]
fn an_added_nullable_column_is_read_back_by_pyiceberg() {
    let work = tempfile::tempdir().expect("temp dir");
    let catalog = TestCatalog::new();
    let landing = work.path().join("landing");
    std::fs::create_dir(&landing).expect("landing dir");
    let sink = format!("file://{}/table", work.path().display());
    let spec = |with_note: bool| {
        let mut schema = vec![
            json!({"name": "id", "type": "int64", "nullable": false}),
            json!({"name": "name", "type": "utf8"}),
        ];
        if with_note {
            schema.push(json!({"name": "note", "type": "utf8", "nullable": true}));
        }
        json!({
            "apiVersion": "streaming.sneaksanddata.com/v1",
            "kind": "BlobLandingStream",
            "metadata": {"name": "landing"},
            "spec": {
                "source": {"url": format!("file://{}/", landing.display()), "format": "ndjson",
                           "pollInterval": "100ms", "schema": schema},
                "sink": {"url": sink, "rolling": {"maxFileAge": "200ms"},
                         "schemaEvolution": "addNullableColumns",
                         "tableFormat": catalog.table_format(NS, TABLE)},
                "rowsPerGroup": 1000,
                "groupingIntervalSeconds": 1
            }
        })
    };
    let lines = |ids: std::ops::Range<i64>, note: bool| -> String {
        ids.map(|i| {
            if note {
                format!("{{\"id\": {i}, \"name\": \"n{i}\", \"note\": \"note-{i}\"}}\n")
            } else {
                format!("{{\"id\": {i}, \"name\": \"n{i}\"}}\n")
            }
        })
        .collect()
    };
    // Stream until pyiceberg sees `n` rows, then stop it with SIGTERM (exit 0).
    let run_until = |spec: &Value, n: usize| {
        let proc = Arcane::run(work.path(), spec, &[]);
        let started = Instant::now();
        loop {
            if catalog.try_read(NS, TABLE).is_ok_and(|r| r.rows.len() >= n) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the rows do not arrive"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        proc.signal(Signal::SIGTERM);
        let exit = proc.wait();
        assert_eq!(exit.code, 0, "{:?}", exit.termination);
    };
    std::fs::write(landing.join("a.ndjson"), lines(0..50, false)).expect("file");
    run_until(&spec(false), 50);
    std::fs::write(landing.join("b.ndjson"), lines(50..100, true)).expect("file");
    run_until(&spec(true), 100);
    let read = catalog.read(NS, TABLE);
    assert_eq!(read.columns, ["id", "name", "note"]);
    assert_eq!(read.field_ids, [1, 2, 3]);
    assert_eq!(read.schemas, 2);
    assert_eq!(read.ids(), (0..100).collect::<Vec<_>>());
    for r in &read.rows {
        let id = r["id"].as_i64().expect("id");
        let want = if id < 50 {
            Value::Null
        } else {
            Value::String(format!("note-{id}"))
        };
        assert_eq!(r["note"], want, "row {id}");
    }
}
