//! The `arcane` binary end to end with the `blob-landing` kind: the quickstart on the bundled
//! data, the same through the S3 server (moto) and the Azure Blob emulator (azurite), streaming
//! mode picking up new files, restarts after SIGTERM/SIGKILL without loss or duplicates, and
//! dead letters for bad files and lines.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use arcane_test_support::Store;
use nix::sys::signal::Signal;
use serde_json::{Map, Value, json};
use support::*;

type Row = Map<String, Value>;

/// The bundled order events, as the sink should hold them: `event_time` in epoch
/// milliseconds, nulls omitted (as arrow-json writes rows).
fn bundled_rows() -> Vec<Row> {
    let dir = repo_root().join("examples/data/orders");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut rows = Vec::new();
    for file in files {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            rows.push(expected_row(line));
        }
    }
    rows
}

fn expected_row(line: &str) -> Row {
    let mut row: Row = serde_json::from_str(line).unwrap();
    let at = row["event_time"].as_str().unwrap();
    let ms = chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .timestamp_millis();
    row.insert("event_time".into(), json!(ms));
    row.retain(|_, v| !v.is_null());
    row
}

/// Rows sorted by `order_id`, compared as a whole: equal contents, no duplicates.
fn assert_same_rows(mut actual: Vec<Row>, mut expected: Vec<Row>) {
    let key = |r: &Row| r["order_id"].as_str().unwrap().to_string();
    actual.sort_by_key(key);
    expected.sort_by_key(key);
    let ids: BTreeSet<String> = actual.iter().map(key).collect();
    assert_eq!(ids.len(), actual.len(), "duplicate rows in the output");
    assert_eq!(actual.len(), expected.len(), "row count");
    for (a, e) in actual.iter().zip(&expected) {
        assert_eq!(a, e);
    }
}

/// The quickstart's spec with the sink (and optionally the source) moved.
fn quickstart_spec(
    source_url: Option<&str>,
    sink_url: &str,
    options: &BTreeMap<String, String>,
) -> Value {
    let text = std::fs::read_to_string(repo_root().join("examples/quickstart.json")).unwrap();
    let mut resource: Value = serde_json::from_str(&text).unwrap();
    let spec = &mut resource["spec"];
    if let Some(url) = source_url {
        spec["source"]["url"] = json!(url);
        spec["source"]["storageOptions"] = json!(options);
    }
    spec["sink"]["url"] = json!(sink_url);
    spec["sink"]["storageOptions"] = json!(options);
    resource
}

/// Data files on disk under `dir`, wherever they are (generations included).
fn parquet_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out
}

#[test]
fn quickstart_lands_every_bundled_row_once_and_a_rerun_replaces_the_dataset() {
    let out = tempfile::tempdir().unwrap();
    let sink = out.path().join("orders");
    let sink_url = format!("file://{}", sink.display());
    let dead_letters = format!("file://{}", out.path().join("dead-letters").display());
    let override_ =
        json!({"sink": {"url": sink_url, "deadLetter": {"url": dead_letters}}}).to_string();
    let run = || {
        Arcane::spawn(
            &repo_root(),
            &[
                "run",
                "--spec",
                "examples/quickstart.json",
                "--backfill",
                "--override",
                &override_,
            ],
            &[],
        )
        .wait()
    };
    let first = run();
    assert_eq!(first.code, 0, "{:#?}", first.lines);
    assert_eq!(first.termination["status"], "SUCCESS");
    assert_eq!(first.termination["streamId"], "quickstart-orders");
    assert_eq!(first.summary("rowsCommitted"), 24_000);
    let logs = first.logs();
    assert!(logs.iter().all(|l| l["streamId"] == "quickstart-orders"));

    let expected = bundled_rows();
    assert_eq!(expected.len(), 24_000);
    assert_same_rows(
        rows_as_json(&read_committed(&sink_url, &BTreeMap::new())),
        expected.clone(),
    );
    let files = parquet_files(&sink);
    let dates: BTreeSet<String> = files
        .iter()
        .map(|f| {
            f.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        dates,
        BTreeSet::from([
            "date=2026-11-20".to_string(),
            "date=2026-11-21".into(),
            "date=2026-11-22".into(),
            "date=2026-11-23".into()
        ])
    );

    // A rerun is a new backfill: it writes a new generation that replaces the first one
    // atomically; with `generationRetention: 0s` the old files are gone at the end.
    let second = run();
    assert_eq!(second.code, 0, "{:#?}", second.lines);
    assert_eq!(second.summary("rowsCommitted"), 24_000);
    assert_same_rows(
        rows_as_json(&read_committed(&sink_url, &BTreeMap::new())),
        expected,
    );
    let after = parquet_files(&sink);
    assert_eq!(after.len(), files.len());
    assert!(after.iter().all(|f| !files.contains(f)), "{after:?}");

    // `arcane show` describes the committed dataset.
    let shown = std::process::Command::new(env!("CARGO_BIN_EXE_arcane"))
        .args(["show", &sink_url, "--limit", "2"])
        .output()
        .unwrap();
    assert!(shown.status.success(), "{shown:?}");
    let text = String::from_utf8(shown.stdout).unwrap();
    assert!(text.contains("files       4 (24000 rows"), "{text}");
    assert!(
        text.contains("backfill    unnamed (Overwrite, completed)"),
        "{text}"
    );
    assert!(text.contains("| ord-00000001 | 22047"), "{text}");
    assert!(
        text.contains("event_time: Timestamp(ms, \"UTC\") not null"),
        "{text}"
    );
}

/// Upload the bundled files under `landing/` of `store`, land them into `out/` of the same
/// store with the binary, and compare.
async fn quickstart_on(store: Store) {
    let dir = repo_root().join("examples/data/orders");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        store
            .put(&format!("landing/{name}"), std::fs::read(&path).unwrap())
            .await;
    }
    let options = store.options();
    let sink_url = store.url_of("out/orders");
    let spec = quickstart_spec(Some(&store.url_of("landing/")), &sink_url, &options);
    let work = tempfile::tempdir().unwrap();
    let exit = tokio::task::spawn_blocking({
        let work = work.path().to_path_buf();
        move || Arcane::run(&work, &spec, &["--backfill", "--backfill-id", "b1"]).wait()
    })
    .await
    .unwrap();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    let batches = arcane_sinks::read_committed(&sink_url, &options)
        .await
        .unwrap();
    assert_same_rows(rows_as_json(&batches), bundled_rows());
    store.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_on_s3_lands_every_row_once() {
    quickstart_on(Store::s3().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_on_azure_blob_lands_every_row_once() {
    quickstart_on(Store::azure().await).await;
}

/// A streaming spec over `landing` into `sink` that commits quickly.
fn streaming_spec(landing: &Path, sink_url: &str, batch_rows: usize) -> Value {
    json!({
        "apiVersion": "streaming.sneaksanddata.com/v1",
        "kind": "BlobLandingStream",
        "metadata": {"name": "orders"},
        "spec": {
            "source": {
                "url": format!("file://{}/", landing.display()),
                "format": "ndjson",
                "pollInterval": "100ms",
                "batchRows": batch_rows,
                "schema": [
                    {"name": "order_id", "type": "utf8", "nullable": false},
                    {"name": "customer_id", "type": "int64"},
                    {"name": "event_time", "type": "timestamp[ms, UTC]", "nullable": false},
                    {"name": "status", "type": "utf8"},
                    {"name": "amount", "type": "float64"},
                    {"name": "currency", "type": "utf8"},
                    {"name": "items", "type": "int32"},
                    {"name": "country", "type": "utf8"},
                    {"name": "channel", "type": "utf8"},
                    {"name": "coupon", "type": "utf8"}
                ]
            },
            "sink": {
                "url": sink_url,
                "rolling": {"maxFileAge": "200ms", "targetFileSize": 16384}
            },
            "rowsPerGroup": 500,
            "groupingIntervalSeconds": 1
        }
    })
}

fn copy_bundled(landing: &Path, names: &[&str]) {
    let dir = repo_root().join("examples/data/orders");
    for name in names {
        // Land atomically: write next to the prefix, then rename into it.
        let staged = landing.parent().unwrap().join(format!(".{name}.tmp"));
        std::fs::copy(dir.join(name), &staged).unwrap();
        std::fs::rename(&staged, landing.join(name)).unwrap();
    }
}

fn rows_of_files(names: &[&str]) -> Vec<Row> {
    let dir = repo_root().join("examples/data/orders");
    names
        .iter()
        .flat_map(|n| {
            std::fs::read_to_string(dir.join(n))
                .unwrap()
                .lines()
                .map(expected_row)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn streaming_mode_picks_up_a_file_that_lands_while_it_runs() {
    let work = tempfile::tempdir().unwrap();
    let landing = work.path().join("landing");
    std::fs::create_dir(&landing).unwrap();
    copy_bundled(&landing, &["orders-2026-11-20.ndjson"]);
    let sink_url = format!("file://{}/out", work.path().display());
    let proc = Arcane::run(work.path(), &streaming_spec(&landing, &sink_url, 1000), &[]);
    let committed = || read_committed(&sink_url, &BTreeMap::new());
    eventually("the first file committed", || {
        rows_as_json(&committed()).len() == 6_000
    });
    copy_bundled(&landing, &["orders-2026-11-21.ndjson"]);
    eventually("the landed file committed", || {
        rows_as_json(&committed()).len() == 12_000
    });
    proc.signal(Signal::SIGTERM);
    let exit = proc.wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    assert_eq!(exit.termination["reason"], "shutDown");
    assert_same_rows(
        rows_as_json(&committed()),
        rows_of_files(&["orders-2026-11-20.ndjson", "orders-2026-11-21.ndjson"]),
    );
}

#[test]
fn restarts_after_sigterm_and_sigkill_skip_committed_files_and_finish_partly_read_ones() {
    // Eight files of 24 000 rows (the bundled rows with distinct order ids each).
    let bundled: Vec<String> = ["20", "21", "22", "23"]
        .iter()
        .flat_map(|d| {
            std::fs::read_to_string(
                repo_root().join(format!("examples/data/orders/orders-2026-11-{d}.ndjson")),
            )
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
        })
        .collect();
    let work = tempfile::tempdir().unwrap();
    let landing = work.path().join("landing");
    std::fs::create_dir(&landing).unwrap();
    let mut expected = Vec::new();
    for k in 0..8 {
        let lines: Vec<String> = bundled
            .iter()
            .map(|l| l.replacen("\"ord-", &format!("\"ord{k}-"), 1))
            .collect();
        expected.extend(lines.iter().map(|l| expected_row(l)));
        std::fs::write(
            landing.join(format!("part-{k}.ndjson")),
            lines.join("\n") + "\n",
        )
        .unwrap();
    }
    let sink_url = format!("file://{}/out", work.path().display());
    // Small batches, so reading a file takes long enough to be interrupted inside it.
    let spec = streaming_spec(&landing, &sink_url, 50);
    let committed = || rows_as_json(&read_committed(&sink_url, &BTreeMap::new())).len();

    let mut seed: u64 = 0x5eed_a2ca_2e00_0001;
    let mut resumed_mid_file = 0;
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs <= 40, "not done after {runs} runs");
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = Duration::from_millis(100 + (seed >> 33) % 500);
        let kill = (seed >> 13) % 3 == 0;
        let proc = Arcane::run(work.path(), &spec, &[]);
        proc.wait_for_log("blob-landing source opening");
        let resumed = proc
            .lines()
            .into_iter()
            .find(|l| l.contains("blob-landing source opening"))
            .unwrap_or_default();
        if resumed.contains("done: false") {
            resumed_mid_file += 1;
        }
        let all_in = committed() == expected.len();
        std::thread::sleep(delay);
        proc.signal(if kill {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        });
        let exit = proc.wait();
        if kill {
            assert_eq!(exit.code, -1);
        } else {
            assert_eq!(exit.code, 0, "{:#?}", exit.lines);
            // What a graceful stop reports committed is in the files.
            assert_eq!(exit.summary("rowsUncommitted"), 0);
        }
        if all_in {
            break;
        }
    }
    assert_same_rows(
        rows_as_json(&read_committed(&sink_url, &BTreeMap::new())),
        expected,
    );
    assert!(
        resumed_mid_file > 0,
        "no run resumed inside a partly read file in {runs} runs"
    );
}

#[test]
fn bad_lines_and_bad_files_are_dead_lettered_with_reasons_and_the_rest_lands() {
    let work = tempfile::tempdir().unwrap();
    let landing = work.path().join("landing");
    std::fs::create_dir(&landing).unwrap();
    let good =
        std::fs::read_to_string(repo_root().join("examples/data/orders/orders-2026-11-20.ndjson"))
            .unwrap();
    let mut lines: Vec<&str> = good.lines().take(100).collect();
    lines.insert(2, r#"{"order_id": "bad-1", "amount": "#);
    lines.insert(50, r#"{"order_id": "bad-2", "customer_id": "not a number", "event_time": "2026-11-20T00:00:00Z"}"#);
    std::fs::write(landing.join("a.ndjson"), lines.join("\n") + "\n").unwrap();
    std::fs::write(landing.join("b.ndjson.gz"), b"this is not gzip at all").unwrap();
    let sink_dir = work.path().join("out");
    let sink_url = format!("file://{}", sink_dir.display());
    let exit = Arcane::run(
        work.path(),
        &streaming_spec(&landing, &sink_url, 1000),
        &["--backfill", "--backfill-id", "dl"],
    )
    .wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    let expected: Vec<Row> = good.lines().take(100).map(expected_row).collect();
    assert_same_rows(
        rows_as_json(&read_committed(&sink_url, &BTreeMap::new())),
        expected,
    );

    // Dead letters are Parquet files under {sink}/_dead_letters.
    let letters = read_parquet_dir(&sink_dir.join("_dead_letters"));
    let mut found: Vec<(String, String, String)> = letters
        .iter()
        .map(|r| {
            (
                r["origin"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
                r["locator"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_eq!(
        (found[0].0.as_str(), found[0].1.as_str()),
        ("a.ndjson", "line 3")
    );
    assert_eq!(
        (found[1].0.as_str(), found[1].1.as_str()),
        ("a.ndjson", "line 51")
    );
    assert!(
        found[1].2.contains("customer_id") || found[1].2.to_lowercase().contains("number"),
        "{found:#?}"
    );
    assert_eq!(found[2].0, "b.ndjson.gz");
    assert!(
        found[2].2.to_lowercase().contains("gzip") || found[2].2.contains("header"),
        "{found:#?}"
    );
    assert!(letters.iter().all(|r| r["stream_id"] == "orders"));
}
