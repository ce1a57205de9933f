//! The `arcane` binary end to end with the `rest-api` kind against a real HTTP API on
//! 127.0.0.1 ([`TestApi`]): a streaming run killed (SIGKILL) and stopped (SIGTERM) again and
//! again while the API throttles and fails, landing every record exactly once; a backfill
//! with dead letters; and the bundled example spec.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use arcane_test_support::rest_api::{ApiAuth, Fault, TestApi, record};
use nix::sys::signal::Signal;
use serde_json::{Map, Value, json};
use support::*;

type Row = Map<String, Value>;

/// The row the sink holds for record `id` (timestamps in epoch ms, `customer` flattened).
fn expected_row(id: u64) -> Row {
    let r = record(id);
    let at = chrono::DateTime::parse_from_rfc3339(r["updated_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    let mut row = Row::new();
    row.insert("id".into(), r["id"].clone());
    row.insert("updated_at".into(), json!(at));
    row.insert("name".into(), r["name"].clone());
    row.insert("amount".into(), r["amount"].clone());
    row.insert("customer_id".into(), r["customer"]["id"].clone());
    row.insert("customer_country".into(), r["customer"]["country"].clone());
    row
}

fn committed_rows(sink_url: &str) -> Vec<Row> {
    rows_as_json(&read_committed(sink_url, &BTreeMap::new()))
}

/// Rows sorted by id, compared as a whole: equal contents, no duplicates.
fn assert_same_rows(mut actual: Vec<Row>, expected: Vec<Row>) {
    actual.sort_by_key(|r| r["id"].as_u64().unwrap());
    let ids: BTreeSet<u64> = actual.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), actual.len(), "duplicate rows in the output");
    assert_eq!(actual.len(), expected.len(), "row count");
    for (a, e) in actual.iter().zip(&expected) {
        assert_eq!(a, e);
    }
}

fn spec(api: &TestApi, sink_url: &str, limit: u64, rate: f64) -> Value {
    json!({
        "apiVersion": "streaming.sneaksanddata.com/v1",
        "kind": "RestApiStream",
        "metadata": {"name": "items"},
        "spec": {
            "source": {
                "url": api.url("/items/cursor"),
                "query": {"updated_since": "{{watermark}}", "limit": limit.to_string()},
                "recordsPointer": "/data",
                "pagination": {"type": "cursor", "cursorPointer": "/next_cursor", "param": "cursor"},
                "watermark": {"field": "updated_at", "type": "timestamp", "idField": "id"},
                "auth": {"type": "bearer", "token": {"env": "ITEMS_API_TOKEN"}},
                "flattenNested": true,
                "schema": [
                    {"name": "id", "type": "int64", "nullable": false},
                    {"name": "updated_at", "type": "timestamp[ms, UTC]", "nullable": false},
                    {"name": "name", "type": "utf8"},
                    {"name": "amount", "type": "float64"},
                    {"name": "customer_id", "type": "int64"},
                    {"name": "customer_country", "type": "utf8"}
                ],
                "pollInterval": "100ms",
                "maxRequestsPerSecond": rate,
                "retryInitialBackoff": "20ms",
                "retryMaxBackoff": "200ms"
            },
            "sink": {
                "url": sink_url,
                "rolling": {"maxFileAge": "200ms", "targetFileSize": 16384}
            },
            "rowsPerGroup": 70,
            "groupingIntervalSeconds": 1
        }
    })
}

fn run_with_token(cwd: &Path, spec: &Value, args: &[&str], token: &str) -> Arcane {
    let file = cwd.join(format!("spec-{}.json", uuid_like()));
    std::fs::write(&file, spec.to_string()).unwrap();
    let mut all = vec!["run", "--spec", file.to_str().unwrap()];
    all.extend_from_slice(args);
    Arcane::spawn(cwd, &all, &[("ITEMS_API_TOKEN", token)])
}

fn uuid_like() -> String {
    format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[test]
fn restarts_after_sigkill_and_sigterm_land_every_record_exactly_once() {
    let total = 3_000;
    let api = TestApi::start(total);
    api.set_auth(ApiAuth::Bearer("e2e-token".into()));
    // Every 7th request fails with a 500 (retried), and the first ones are throttled.
    api.fail_every(Some(7));
    api.push_faults([
        Fault::TooManyRequests(1),
        Fault::Slow(Duration::from_millis(300)),
    ]);
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    // 40 records per page at 25 requests/s: a full read takes about 3 s, so the stops land
    // in the middle of it, inside pages and inside groups of equal timestamps.
    let spec = spec(&api, &sink_url, 40, 25.0);

    let mut seed: u64 = 0x5eed_0000_7e57_0001;
    let mut runs = 0;
    let mut resumed = 0;
    loop {
        runs += 1;
        assert!(runs <= 40, "not done after {runs} runs");
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = Duration::from_millis(300 + (seed >> 33) % 900);
        let kill = (seed >> 13) % 2 == 0;
        let proc = run_with_token(work.path(), &spec, &[], "e2e-token");
        proc.wait_for_log("rest-api source opening");
        if proc
            .lines()
            .iter()
            .any(|l| l.contains("rest-api source opening") && l.contains("watermark"))
        {
            resumed += 1;
        }
        let all_in = committed_rows(&sink_url).len() == total as usize;
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
            assert_eq!(exit.summary("rowsUncommitted"), 0);
        }
        assert!(
            !exit.lines.iter().any(|l| l.contains("e2e-token")),
            "the token appears in the logs"
        );
        if all_in {
            break;
        }
    }
    assert!(
        resumed > 0,
        "no run resumed from a watermark in {runs} runs"
    );
    assert_same_rows(
        committed_rows(&sink_url),
        (1..=total).map(expected_row).collect(),
    );

    // New records arrive while a streaming run is up: they land once too.
    api.grow_to(total + 500);
    let proc = run_with_token(work.path(), &spec, &[], "e2e-token");
    eventually("the new records committed", || {
        committed_rows(&sink_url).len() >= (total + 500) as usize
    });
    proc.signal(Signal::SIGTERM);
    let exit = proc.wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    assert_same_rows(
        committed_rows(&sink_url),
        (1..=total + 500).map(expected_row).collect(),
    );
}

#[test]
fn a_backfill_lands_everything_dead_letters_bad_records_and_exits() {
    let api = TestApi::start(500);
    api.set_auth(ApiAuth::Bearer("bf-token".into()));
    api.set_bad_ids(vec![3, 250]);
    let work = tempfile::tempdir().unwrap();
    let sink_dir = work.path().join("out");
    let sink_url = format!("file://{}", sink_dir.display());
    let spec = spec(&api, &sink_url, 100, 1000.0);
    let exit = run_with_token(
        work.path(),
        &spec,
        &["--backfill", "--backfill-id", "b1"],
        "bf-token",
    )
    .wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    assert_eq!(exit.summary("rowsCommitted"), 498);
    assert_same_rows(
        committed_rows(&sink_url),
        (1..=500)
            .filter(|i| *i != 3 && *i != 250)
            .map(expected_row)
            .collect(),
    );
    let letters = read_parquet_dir(&sink_dir.join("_dead_letters"));
    let mut found: Vec<(String, String)> = letters
        .iter()
        .map(|r| {
            (
                r["locator"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_eq!(found[0].0, "page 1 record 2");
    assert_eq!(found[1].0, "page 3 record 49");
    assert!(found[0].1.contains("amount"), "{found:#?}");

    // A wrong token: FATAL (exit 1) with the URL and status, never the token.
    let exit = run_with_token(
        work.path(),
        &spec,
        &["--backfill", "--backfill-id", "b2"],
        "wr0ng-t0ken",
    )
    .wait();
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    let message = exit.termination.to_string();
    assert!(
        message.contains("401") && message.contains("/items/cursor"),
        "{message}"
    );
    assert!(!exit.lines.iter().any(|l| l.contains("wr0ng-t0ken")));
    assert!(!message.contains("wr0ng-t0ken"));
}

#[test]
fn the_bundled_example_spec_runs_against_the_test_api() {
    let api = TestApi::start(1_000);
    let text = std::fs::read_to_string(repo_root().join("examples/rest-api.json")).unwrap();
    let mut resource: Value = serde_json::from_str(&text).unwrap();
    let url = resource["spec"]["source"]["url"]
        .as_str()
        .unwrap()
        .replace("http://127.0.0.1:8089", &api.base_url());
    resource["spec"]["source"]["url"] = json!(url);
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/items", work.path().display());
    resource["spec"]["sink"] = json!({"url": sink_url});
    let exit = Arcane::run(work.path(), &resource, &["--backfill"]).wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    assert_eq!(exit.summary("rowsCommitted"), 1_000);
    assert_eq!(committed_rows(&sink_url).len(), 1_000);
}
