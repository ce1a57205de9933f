//! The guide's example, checked as a user would: the source passes the shared conformance
//! suites, and the binary built from it lands a table (malformed lines dead-lettered), resumes
//! after what it committed, and prints its spec schema and CRD.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use arcane_core::testing::conformance;
use arcane_example_custom_source::JsonLinesTable;
use arcane_sources::prelude::Int64Array;
use arcane_sources::runtime::CursorPollingSource;

/// Lines `from..to` of the table; every 50th line is not JSON.
fn append(path: &Path, from: u64, to: u64) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in from..to {
        if i % 50 == 49 {
            writeln!(file, "{{\"id\": {i}, broken").unwrap();
        } else {
            writeln!(file, r#"{{"id": {i}, "name": "n{i}", "amount": {i}.5}}"#).unwrap();
        }
    }
}

#[tokio::test]
async fn the_source_passes_the_conformance_suites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table.jsonl");
    append(&path, 0, 1_000);
    let make = || -> Box<dyn arcane_core::Source> {
        Box::new(
            CursorPollingSource::blocking("jsonl-table", JsonLinesTable::new(&path))
                .with_batch_rows(70),
        )
    };
    conformance::source_resumes_exactly(make).await;
    conformance::source_survives_stop_and_abort(make).await;
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jsonl-table-stream"))
}

fn run(spec: &serde_json::Value, dir: &Path) -> std::process::Output {
    binary()
        .current_dir(dir)
        .args([
            "run",
            "--kind",
            "jsonl-table",
            "--backfill",
            "--spec",
            &spec.to_string(),
        ])
        .env("ARCANE_METRICS_ADDR", "off")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap()
}

fn committed_ids(url: &str) -> Vec<i64> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let batches = runtime
        .block_on(arcane_sinks::read_committed(url, &Default::default()))
        .unwrap();
    let mut ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let ids = b
                .column_by_name("id")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone();
            ids.values().to_vec()
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn the_binary_lands_the_table_and_resumes_after_what_it_committed() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.jsonl");
    append(&table, 0, 500);
    let url = format!("file://{}", dir.path().join("out").display());
    let spec = serde_json::json!({
        "source": {"path": table, "pollIntervalSeconds": 1},
        "sink": {"url": url, "deadLetter": {"maxRatio": 0.05}, "rolling": {"maxRowsPerFile": 100, "maxFileAge": "1s"}},
        "rowsPerGroup": 100,
        "groupingIntervalSeconds": 1,
    });
    let good = |to: i64| -> Vec<i64> { (0..to).filter(|i| i % 50 != 49).collect() };

    // A backfill lands every good line once and counts the malformed ones.
    let first = run(&spec, dir.path());
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(0), "{stderr}");
    assert_eq!(
        committed_ids(&url),
        good(500),
        "every good line landed once"
    );
    assert!(
        stderr.contains("\"rows_dead_lettered\":10"),
        "the 10 malformed lines are counted: {stderr}"
    );

    // Streaming resumes after the committed cursor: lines appended later land, none twice.
    append(&table, 500, 700);
    let mut stream = binary()
        .current_dir(dir.path())
        .args(["run", "--kind", "jsonl-table", "--spec", &spec.to_string()])
        .env("ARCANE_METRICS_ADDR", "off")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while committed_ids(&url) != good(700) {
        assert!(
            std::time::Instant::now() < deadline,
            "the appended lines did not land: {:?}",
            committed_ids(&url).len()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    append(&table, 700, 800);
    while committed_ids(&url) != good(800) {
        assert!(
            std::time::Instant::now() < deadline,
            "lines appended while streaming did not land"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let term = Command::new("kill")
        .args(["-TERM", &stream.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = stream.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM drains and exits 0");
    assert_eq!(committed_ids(&url), good(800), "nothing landed twice");
}

#[test]
fn the_binary_prints_its_spec_schema_and_crd() {
    let schema = binary()
        .args(["spec-schema", "jsonl-table"])
        .output()
        .unwrap();
    assert_eq!(schema.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&schema.stdout).unwrap();
    let source = &schema["$defs"]["JsonLinesConfig"];
    assert!(
        source["properties"]["pollIntervalSeconds"].is_object(),
        "the source's own settings are in the schema: {schema}"
    );
    let crd = binary().args(["crd", "jsonl-table"]).output().unwrap();
    assert_eq!(crd.status.code(), Some(0));
    let crd = String::from_utf8_lossy(&crd.stdout);
    assert!(crd.contains("kind: CustomResourceDefinition"), "{crd}");
    assert!(crd.contains("JsonlTableStream"), "{crd}");
}
