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
        let kill = (seed >> 13).is_multiple_of(3);
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
    // The origin is the file's absolute path, leading `/` included.
    let origins: BTreeSet<String> = letters
        .iter()
        .map(|r| r["origin"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        origins,
        BTreeSet::from([
            landing.join("a.ndjson").display().to_string(),
            landing.join("b.ndjson.gz").display().to_string(),
        ])
    );
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

/// A backfill spec reading NDJSON with `schema` (or inferring it when `None`) from `source`
/// into `sink_url`; `source_extra` and `sink_extra` are merged into the source and sink.
fn ndjson_spec(
    source: &str,
    schema: Option<Value>,
    sink_url: &str,
    source_extra: Value,
    sink_extra: Value,
) -> Value {
    let mut source = json!({"url": source, "format": "ndjson", "pollInterval": "100ms"});
    if let Some(schema) = schema {
        source["schema"] = schema;
    }
    merge(&mut source, source_extra);
    let mut sink = json!({"url": sink_url, "rolling": {"maxFileAge": "200ms"}});
    merge(&mut sink, sink_extra);
    json!({
        "apiVersion": "streaming.sneaksanddata.com/v1",
        "kind": "BlobLandingStream",
        "metadata": {"name": "landing"},
        "spec": {
            "source": source,
            "sink": sink,
            "rowsPerGroup": 1000,
            "groupingIntervalSeconds": 1
        }
    })
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        for (k, v) in extra {
            into.insert(k, v);
        }
    }
}

fn id_schema() -> Value {
    json!([
        {"name": "id", "type": "int64", "nullable": false},
        {"name": "name", "type": "utf8"},
        {"name": "amount", "type": "float64"}
    ])
}

fn id_lines(ids: std::ops::Range<u64>) -> String {
    ids.map(|i| {
        format!(
            "{{\"id\": {i}, \"name\": \"n{i}\", \"amount\": {}.25}}\n",
            i
        )
    })
    .collect()
}

fn message(exit: &Exit) -> String {
    exit.termination["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no termination message: {:#?}", exit.lines))
        .to_string()
}

/// Log lines at `level` whose text contains `needle`.
fn logged(exit: &Exit, level: &str, needle: &str) -> Vec<Value> {
    exit.logs()
        .into_iter()
        .filter(|l| l["level"] == level && l.to_string().contains(needle))
        .collect()
}

#[test]
fn source_location_errors_are_fatal_and_name_the_setting() {
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/out", work.path().display());

    // A local directory that does not exist is a typo, not an empty source.
    let missing = work.path().join("landnig");
    let spec = ndjson_spec(
        &format!("file://{}/", missing.display()),
        Some(id_schema()),
        &sink_url,
        json!({}),
        json!({}),
    );
    let exit = Arcane::run(work.path(), &spec, &["--backfill"]).wait();
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    let text = message(&exit);
    assert!(text.starts_with("spec.source.url: "), "{text}");
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert_eq!(exit.termination["errorKind"], "Config");

    // An option the store does not know is an error naming it.
    let spec = ndjson_spec(
        "s3://landing/orders/",
        Some(id_schema()),
        &sink_url,
        json!({"storageOptions": {"aws_endpiont": "http://127.0.0.1:1"}}),
        json!({}),
    );
    let exit = Arcane::run(work.path(), &spec, &["--backfill"]).wait();
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    let text = message(&exit);
    assert!(
        text.starts_with("spec.source.storageOptions.aws_endpiont: "),
        "{text}"
    );
}

/// The S3 server's options given as `AWS_*` environment variables.
fn s3_env(options: &BTreeMap<String, String>) -> Vec<(String, String)> {
    options
        .iter()
        .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_source_takes_credentials_from_the_environment_and_names_dead_letters_by_url() {
    let store = Store::s3().await;
    let Store::S3 { bucket, .. } = &store else {
        unreachable!()
    };
    let bucket = bucket.clone();
    let mut lines = id_lines(0..500);
    lines.push_str("{\"id\": \"not a number\"}\n");
    store
        .put("landing/2026-11-20.ndjson", lines.into_bytes())
        .await;
    let work = tempfile::tempdir().unwrap();
    let sink_dir = work.path().join("out");
    let sink_url = format!("file://{}", sink_dir.display());
    // No storageOptions: endpoint, region and credentials come from AWS_* variables.
    let spec = ndjson_spec(
        &store.url_of("landing/"),
        Some(id_schema()),
        &sink_url,
        json!({}),
        json!({}),
    );
    let env = s3_env(&store.options());
    let exit = tokio::task::spawn_blocking({
        let work = work.path().to_path_buf();
        move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            Arcane::run_with_env(&work, &spec, &["--backfill"], &env).wait()
        }
    })
    .await
    .unwrap();
    store.cleanup().await;
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    let rows = rows_as_json(
        &arcane_sinks::read_committed(&sink_url, &BTreeMap::new())
            .await
            .unwrap(),
    );
    assert_eq!(rows.len(), 500);
    let letters = read_parquet_dir(&sink_dir.join("_dead_letters"));
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(
        letters[0]["origin"],
        format!("s3://{bucket}/landing/2026-11-20.ndjson")
    );
    assert_eq!(letters[0]["locator"], "line 501");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_fatal_with_the_stores_message() {
    let store = Store::s3().await;
    let options = store.options();
    let missing = arcane_test_support::unique("arcane-missing-");
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    let spec = ndjson_spec(
        &format!("s3://{missing}/landing/"),
        Some(id_schema()),
        &sink_url,
        json!({"storageOptions": options}),
        json!({}),
    );
    let exit = tokio::task::spawn_blocking({
        let work = work.path().to_path_buf();
        move || Arcane::run(&work, &spec, &[]).wait()
    })
    .await
    .unwrap();
    store.cleanup().await;
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    let text = message(&exit);
    assert!(text.contains(&format!("s3://{missing}/landing/")), "{text}");
    // The store's own words.
    assert!(text.contains("NoSuchBucket"), "{text}");
    assert_eq!(exit.termination["errorKind"], "Source");
}

#[test]
fn an_unreachable_store_is_a_restart_with_the_cause() {
    // A port nobody listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    let options = json!({
        "aws_endpoint": format!("http://127.0.0.1:{port}"),
        "aws_allow_http": "true",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "aws_region": "us-east-1"
    });
    let spec = ndjson_spec(
        "s3://landing/orders/",
        Some(id_schema()),
        &sink_url,
        json!({"storageOptions": options, "retry": {"maxAttempts": 3}}),
        json!({}),
    );
    let exit = Arcane::run(work.path(), &spec, &[]).wait();
    assert_eq!(exit.code, 2, "{:#?}", exit.lines);
    let text = message(&exit);
    assert!(text.contains("s3://landing/orders/"), "{text}");
    assert!(
        text.to_lowercase().contains("connection refused"),
        "the cause is kept: {text}"
    );
    // Every attempt before giving up is a warning with its cause and the next delay.
    let retries = logged(&exit, "WARN", "retrying in");
    assert_eq!(retries.len(), 2, "{:#?}", exit.lines);
    for (n, line) in retries.iter().enumerate() {
        let text = line["message"].as_str().unwrap().to_lowercase();
        assert!(text.contains(&format!("attempt {} of 3", n + 1)), "{text}");
        assert!(text.contains("connection refused"), "{text}");
    }
}

#[test]
fn an_overwrite_backfill_of_an_empty_prefix_keeps_the_live_data_unless_allowed() {
    let work = tempfile::tempdir().unwrap();
    let landing = work.path().join("landing");
    std::fs::create_dir(&landing).unwrap();
    std::fs::write(landing.join("a.ndjson"), id_lines(0..300)).unwrap();
    let empty = work.path().join("landing-empty");
    std::fs::create_dir(&empty).unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    let spec = |dir: &Path, allow: bool| {
        ndjson_spec(
            &format!("file://{}/", dir.display()),
            Some(id_schema()),
            &sink_url,
            json!({}),
            json!({"backfillBehavior": "overwrite", "allowEmptyOverwrite": allow}),
        )
    };
    let live = Arcane::run(work.path(), &spec(&landing, false), &["--backfill"]).wait();
    assert_eq!(live.code, 0, "{:#?}", live.lines);
    let before = rows_as_json(&read_committed(&sink_url, &BTreeMap::new()));
    assert_eq!(before.len(), 300);

    // A backfill from a prefix with no files would replace the dataset with nothing.
    let exit = Arcane::run(work.path(), &spec(&empty, false), &["--backfill"]).wait();
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    assert_eq!(exit.termination["errorKind"], "EmptyOverwrite");
    let text = message(&exit);
    assert!(
        text.contains(&format!("file://{}/", empty.display())),
        "the message names the source prefix: {text}"
    );
    assert!(text.contains("allowEmptyOverwrite"), "{text}");
    let said = logged(&exit, "WARN", "no files under");
    assert_eq!(said.len(), 1, "{:#?}", exit.lines);
    assert_eq!(
        rows_as_json(&read_committed(&sink_url, &BTreeMap::new())),
        before,
        "the live data is unchanged"
    );

    // Allowed explicitly, the empty generation is published.
    let exit = Arcane::run(work.path(), &spec(&empty, true), &["--backfill"]).wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    assert!(rows_as_json(&read_committed(&sink_url, &BTreeMap::new())).is_empty());
}

#[test]
fn an_empty_prefix_in_a_merge_backfill_or_a_stream_says_it_read_nothing() {
    let work = tempfile::tempdir().unwrap();
    let landing = work.path().join("landing");
    std::fs::create_dir(&landing).unwrap();
    // An object that the suffix filter rejects: the warning counts it.
    std::fs::write(landing.join("a.json.tmp"), id_lines(0..3)).unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    let spec = ndjson_spec(
        &format!("file://{}/", landing.display()),
        Some(id_schema()),
        &sink_url,
        json!({"suffix": ".ndjson"}),
        json!({"backfillBehavior": "merge"}),
    );
    let exit = Arcane::run(work.path(), &spec, &["--backfill"]).wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    let said = logged(&exit, "WARN", "no files under");
    assert_eq!(said.len(), 1, "{:#?}", exit.lines);
    let text = said[0]["message"].as_str().unwrap();
    assert!(
        text.contains(&format!("no files under file://{}/", landing.display())),
        "{text}"
    );
    assert!(text.contains("suffix .ndjson"), "{text}");
    assert!(text.contains("1 other objects do not match"), "{text}");

    // Streaming: said once per run, not at every poll.
    let proc = Arcane::run(work.path(), &spec, &[]);
    proc.wait_for_log("no files under");
    std::thread::sleep(Duration::from_millis(700));
    proc.signal(Signal::SIGTERM);
    let exit = proc.wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    assert_eq!(logged(&exit, "WARN", "no files under").len(), 1);
}

/// `n` NDJSON records whose `amount` is an integer in the first `ints` records and a float
/// after them.
fn widening_lines(n: u64, ints: u64) -> String {
    (0..n)
        .map(|i| {
            let amount = if i < ints {
                format!("{i}")
            } else {
                format!("{i}.5")
            };
            format!("{{\"id\": {i}, \"name\": \"n{i}\", \"amount\": {amount}}}\n")
        })
        .collect()
}

/// Dead letters under `dir` (none when it does not exist).
fn dead_letters_in(dir: &Path) -> Vec<Row> {
    if dir.exists() {
        read_parquet_dir(dir)
    } else {
        Vec::new()
    }
}

#[test]
fn a_type_that_widens_after_the_inference_sample_fails_by_the_budget() {
    let work = tempfile::tempdir().unwrap();
    let landing = work.path().join("landing");
    std::fs::create_dir(&landing).unwrap();
    std::fs::write(landing.join("a.ndjson"), widening_lines(50_000, 1_000)).unwrap();
    let sink_dir = work.path().join("out");
    let sink_url = format!("file://{}", sink_dir.display());
    let spec = ndjson_spec(
        &format!("file://{}/", landing.display()),
        None,
        &sink_url,
        json!({"inferSchemaRecords": 1000}),
        json!({}),
    );
    let exit = Arcane::run(work.path(), &spec, &["--backfill"]).wait();
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    assert_eq!(exit.termination["errorKind"], "DeadLetterBudget");
    let text = message(&exit);
    // The first reasons: a float where the inferred column is an integer.
    assert!(text.contains("First reasons:"), "{text}");
    assert!(text.contains("amount"), "{text}");
    assert!(text.contains("1000.5"), "{text}");
    // Nothing past the budget was committed.
    let rows = rows_as_json(&read_committed(&sink_url, &BTreeMap::new()));
    let letters = dead_letters_in(&sink_dir.join("_dead_letters"));
    assert!(rows.iter().all(|r| r["id"].as_u64().unwrap() < 1_000));
    assert!(
        letters.len() as f64 <= 0.01 * (rows.len() + letters.len()).max(1_000) as f64,
        "{} dead letters committed with {} rows",
        letters.len(),
        rows.len()
    );
}

#[test]
fn default_inference_reads_the_whole_first_file_and_widens_int_to_float() {
    let work = tempfile::tempdir().unwrap();
    let landing = work.path().join("landing");
    std::fs::create_dir(&landing).unwrap();
    std::fs::write(landing.join("a.ndjson"), widening_lines(50_000, 1_000)).unwrap();
    let sink_dir = work.path().join("out");
    let sink_url = format!("file://{}", sink_dir.display());
    let spec = ndjson_spec(
        &format!("file://{}/", landing.display()),
        None,
        &sink_url,
        json!({}),
        json!({}),
    );
    let exit = Arcane::run(work.path(), &spec, &["--backfill"]).wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    let inferred = logged(&exit, "INFO", "schema inferred from 50000 records");
    assert_eq!(inferred.len(), 1, "{:#?}", exit.lines);
    assert!(
        inferred[0]["message"]
            .as_str()
            .unwrap()
            .contains("amount: Float64"),
        "{inferred:#?}"
    );
    let batches = read_committed(&sink_url, &BTreeMap::new());
    assert_eq!(
        batches[0]
            .schema()
            .field_with_name("amount")
            .unwrap()
            .data_type(),
        &arrow_schema::DataType::Float64
    );
    let rows = rows_as_json(&batches);
    assert_eq!(rows.len(), 50_000);
    let mut amounts: Vec<(u64, f64)> = rows
        .iter()
        .map(|r| (r["id"].as_u64().unwrap(), r["amount"].as_f64().unwrap()))
        .collect();
    amounts.sort_by_key(|a| a.0);
    for (i, (id, amount)) in amounts.iter().enumerate() {
        let i = i as u64;
        let expected = if i < 1_000 { i as f64 } else { i as f64 + 0.5 };
        assert_eq!((*id, *amount), (i, expected));
    }
    assert!(dead_letters_in(&sink_dir.join("_dead_letters")).is_empty());
    assert_eq!(exit.summary("rowsCommitted"), 50_000);
}

#[test]
fn a_misspelled_required_column_fails_by_the_budget() {
    let work = tempfile::tempdir().unwrap();
    let landing = work.path().join("landing");
    std::fs::create_dir(&landing).unwrap();
    std::fs::write(landing.join("a.ndjson"), id_lines(0..5_000)).unwrap();
    let sink_dir = work.path().join("out");
    let sink_url = format!("file://{}", sink_dir.display());
    let schema = json!([
        {"name": "idd", "type": "int64", "nullable": false},
        {"name": "name", "type": "utf8"}
    ]);
    let spec = ndjson_spec(
        &format!("file://{}/", landing.display()),
        Some(schema),
        &sink_url,
        json!({}),
        json!({}),
    );
    let exit = Arcane::run(work.path(), &spec, &["--backfill"]).wait();
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    assert_eq!(exit.termination["errorKind"], "DeadLetterBudget");
    let text = message(&exit);
    assert!(text.contains("idd"), "the reason names the column: {text}");
    assert!(rows_as_json(&read_committed(&sink_url, &BTreeMap::new())).is_empty());
    assert!(dead_letters_in(&sink_dir.join("_dead_letters")).is_empty());
}

#[test]
fn dead_letters_and_rows_are_committed_exactly_once_across_sigkills() {
    // 5 files of 10 000 good lines, with 40 bad lines each spread among them: 200 bad lines
    // (0.4 %, within the default budget of 1 %).
    let work = tempfile::tempdir().unwrap();
    let landing = work.path().join("landing");
    std::fs::create_dir(&landing).unwrap();
    let mut bad_lines = BTreeSet::new();
    for f in 0..5u64 {
        let mut text = String::new();
        for i in 0..10_000u64 {
            let id = f * 10_000 + i;
            text.push_str(&format!(
                "{{\"id\": {id}, \"name\": \"n{id}\", \"amount\": {id}.25}}\n"
            ));
            if i % 250 == 125 {
                let bad = if i % 500 == 125 {
                    format!("{{\"id\": \"bad-{f}-{i}\", \"name\": \"x\"}}")
                } else {
                    format!("{{\"id\": {id}, \"name\": \"broken-{f}-{i}\"")
                };
                text.push_str(&bad);
                text.push('\n');
                bad_lines.insert(bad);
            }
        }
        std::fs::write(landing.join(format!("part-{f}.ndjson")), text).unwrap();
    }
    assert_eq!(bad_lines.len(), 200);
    let sink_dir = work.path().join("out");
    let sink_url = format!("file://{}", sink_dir.display());
    let mut spec = ndjson_spec(
        &format!("file://{}/", landing.display()),
        Some(id_schema()),
        &sink_url,
        // Small batches, so that kills land inside files and between a batch's rows and
        // its dead letters.
        json!({"batchRows": 300}),
        // Small files, so that commits are frequent.
        json!({
            "deadLetter": {"maxRatio": 0.01},
            "rolling": {"maxFileAge": "100ms", "targetFileSize": 16384}
        }),
    );
    spec["spec"]["rowsPerGroup"] = json!(600);
    let manifest_dir = sink_dir.join("_arcane/manifests");
    let manifests = || {
        std::fs::read_dir(&manifest_dir)
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
                })
                .count()
            })
            .unwrap_or(0)
    };

    let seed = arcane_test_support::rng::seed_from_env("ARCANE_TEST_SEED");
    println!("seed {seed} (rerun with ARCANE_TEST_SEED={seed})");
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let mut kills = 0;
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs <= 60, "seed {seed}: not done after {runs} runs");
        let proc = Arcane::run(work.path(), &spec, &["--backfill", "--backfill-id", "dl"]);
        // Kill after 1 to 6 more commits and up to 40 ms (a run takes well under a second,
        // so a timer alone would often miss it).
        let before = manifests();
        let commits = 1 + next() as usize % 6;
        let jitter = Duration::from_millis(next() % 40);
        let started = std::time::Instant::now();
        while manifests() < before + commits
            && started.elapsed() < Duration::from_secs(10)
            && !proc.lines().iter().any(|l| l.contains("\"exit_code\""))
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(jitter);
        proc.signal(Signal::SIGKILL);
        let exit = proc.wait();
        match exit.code {
            -1 => kills += 1,
            0 => break,
            code => panic!("seed {seed}: exit code {code}: {:#?}", exit.lines),
        }
    }
    println!("{kills} runs killed before one finished");
    assert!(kills >= 2, "seed {seed}: only {kills} runs were killed");

    let rows = rows_as_json(&read_committed(&sink_url, &BTreeMap::new()));
    let ids: BTreeSet<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), rows.len(), "seed {seed}: duplicate rows");
    assert_eq!(ids, (0..50_000).collect(), "seed {seed}: missing rows");

    // The dead letters the manifests commit for the current generation: each bad line once.
    let manifests: Vec<Value> = {
        // Manifests only (a killed run may leave the staging file of one behind).
        let mut paths: Vec<_> = std::fs::read_dir(&manifest_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    };
    let current = manifests.last().unwrap()["state"]["currentGeneration"].clone();
    let named: Vec<String> = manifests
        .iter()
        .filter(|m| m["generation"] == current)
        .flat_map(|m| m["deadLetterFiles"].as_array().cloned().unwrap_or_default())
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    let mut payloads = Vec::new();
    for url in &named {
        let path = url.strip_prefix("file://").unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(path).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
        for row in rows_as_json(&batches) {
            payloads.push(row["payload"].as_str().unwrap().to_string());
        }
    }
    let distinct: BTreeSet<String> = payloads.iter().cloned().collect();
    assert_eq!(
        payloads.len(),
        distinct.len(),
        "seed {seed}: dead letters committed more than once after {kills} kills"
    );
    assert_eq!(distinct, bad_lines, "seed {seed}");
    // No dead-letter file is left that no manifest names (recovery deletes uncommitted ones).
    let all_named: BTreeSet<String> = manifests
        .iter()
        .flat_map(|m| m["deadLetterFiles"].as_array().cloned().unwrap_or_default())
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    for entry in std::fs::read_dir(sink_dir.join("_dead_letters")).unwrap() {
        let url = format!("file://{}", entry.unwrap().path().display());
        assert!(all_named.contains(&url), "seed {seed}: uncommitted {url}");
    }
}

/// A streaming spec with `lateFiles: policy`.
fn late_files_spec(landing: &Path, sink_url: &str, policy: &str) -> Value {
    ndjson_spec(
        &format!("file://{}/", landing.display()),
        Some(id_schema()),
        sink_url,
        json!({"lateFiles": policy}),
        json!({}),
    )
}

/// Land `text` as `name` under `landing` atomically (written beside it, then renamed).
fn land(landing: &Path, name: &str, text: &str) {
    let staged = landing.parent().unwrap().join(format!(".{name}.tmp"));
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, landing.join(name)).unwrap();
}

/// The value of the counter `name` (Prometheus text) at `addr`, 0 when absent.
fn counter(addr: &str, name: &str) -> f64 {
    http_get(addr, "/metrics")
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn late_files_are_warned_and_counted_when_skipped_also_after_a_restart() {
    let work = tempfile::tempdir().unwrap();
    let landing = work.path().join("landing");
    std::fs::create_dir(&landing).unwrap();
    land(&landing, "2026-11-21T10.ndjson", &id_lines(0..100));
    let sink_url = format!("file://{}/out", work.path().display());
    let spec = late_files_spec(&landing, &sink_url, "skip");
    let committed = || rows_as_json(&read_committed(&sink_url, &BTreeMap::new())).len();

    let proc = Arcane::run(work.path(), &spec, &["--metrics-addr", "127.0.0.1:0"]);
    let metrics = proc.metrics_addr();
    eventually("the first file committed", || committed() == 100);
    // A file named before the position lands while the stream runs: it is not read, but
    // said and counted; a file after the position is read.
    land(&landing, "2026-11-21T09.ndjson", &id_lines(100..150));
    land(&landing, "2026-11-21T11.ndjson", &id_lines(200..300));
    eventually("the later file committed", || committed() == 200);
    proc.wait_for_log("late file");
    assert_eq!(counter(&metrics, "arcane_stream_files_late"), 1.0);
    proc.signal(Signal::SIGTERM);
    let exit = proc.wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    // Not a plain success: the run's summary and message say what was left out.
    assert_eq!(exit.summary("inputsSkipped"), 1, "{}", exit.termination);
    let message = exit.termination["message"].as_str().unwrap();
    assert!(
        message.contains("1 input(s) skipped") && message.contains("2026-11-21T09.ndjson"),
        "{message}"
    );
    let reasons = &exit.termination["summary"]["skippedReasons"];
    assert!(
        reasons[0].as_str().unwrap().contains("rename it"),
        "{reasons}"
    );
    let late = logged(&exit, "WARN", "late file");
    assert_eq!(late.len(), 1, "{:#?}", exit.lines);
    let text = late[0]["message"].as_str().unwrap();
    let early = landing.join("2026-11-21T09.ndjson");
    // The position when it was listed: the first file (the later one was read after).
    let position = landing.join("2026-11-21T10.ndjson");
    assert!(text.contains(&early.display().to_string()), "{text}");
    assert!(text.contains(&position.display().to_string()), "{text}");
    assert!(text.contains("Rename it"), "{text}");

    // While the stream is down, another file lands before the position; the store dates it
    // later than the listing that found the position's file (beyond the clock skew allowed).
    land(&landing, "2026-11-21T08.ndjson", &id_lines(300..310));
    let file = std::fs::File::options()
        .write(true)
        .open(landing.join("2026-11-21T08.ndjson"))
        .unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    drop(file);
    let proc = Arcane::run(work.path(), &spec, &[]);
    proc.wait_for_log("late file");
    std::thread::sleep(Duration::from_millis(500));
    proc.signal(Signal::SIGTERM);
    let exit = proc.wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    assert_eq!(exit.summary("inputsSkipped"), 1, "{}", exit.termination);
    let late = logged(&exit, "WARN", "late file");
    assert_eq!(
        late.len(),
        1,
        "only the file landed while stopped: {late:#?}"
    );
    assert!(
        late[0]["message"]
            .as_str()
            .unwrap()
            .contains("2026-11-21T08.ndjson"),
        "{late:#?}"
    );
    assert_eq!(committed(), 200);
}

#[test]
fn a_late_file_fails_the_stream_when_late_files_is_fail() {
    let work = tempfile::tempdir().unwrap();
    let landing = work.path().join("landing");
    std::fs::create_dir(&landing).unwrap();
    land(&landing, "2026-11-21T10.ndjson", &id_lines(0..100));
    let sink_url = format!("file://{}/out", work.path().display());
    let spec = late_files_spec(&landing, &sink_url, "fail");
    let committed = || rows_as_json(&read_committed(&sink_url, &BTreeMap::new())).len();
    let proc = Arcane::run(work.path(), &spec, &[]);
    eventually("the first file committed", || committed() == 100);
    land(&landing, "2026-11-21T09.ndjson", &id_lines(100..150));
    let exit = proc.wait();
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    let text = message(&exit);
    let early = landing.join("2026-11-21T09.ndjson");
    assert!(text.contains(&early.display().to_string()), "{text}");
    assert!(text.contains("lateFiles: fail"), "{text}");
    assert!(text.contains("Rename it"), "{text}");
    assert!(text.contains("backfill"), "{text}");
    assert_eq!(committed(), 100);
}
