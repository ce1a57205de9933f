//! The `arcane` binary end to end with the `rest-api` kind against a real HTTP API on
//! 127.0.0.1 ([`TestApi`]): a streaming run killed (SIGKILL) and stopped (SIGTERM) again and
//! again while the API throttles and fails, landing every record exactly once — also against
//! an API that pages over its ids and then filters (empty pages with a next cursor) while its
//! data grows and changes; a backfill resumed after SIGKILL and after exit 2; records out of
//! watermark order; a server that is down, a missing page and HTML error pages; a backfill
//! with dead letters; and the bundled example spec.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use arcane_test_support::rest_api::{ApiAuth, Fault, TestApi, record};
use arcane_test_support::unique;
use nix::sys::signal::Signal;
use serde_json::{Map, Value, json};
use support::*;

type Row = Map<String, Value>;

/// The row the sink holds for record `id` (timestamps in epoch ms, `customer` flattened).
fn expected_row(id: u64) -> Row {
    row_of(&record(id))
}

/// The row the sink holds for the record `r` as the API serves it.
fn row_of(r: &Value) -> Row {
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
    spec_at(&api.url("/items/cursor"), sink_url, limit, rate)
}

/// The spec of a stream reading the cursor-paged endpoint at `url`.
fn spec_at(url: &str, sink_url: &str, limit: u64, rate: f64) -> Value {
    json!({
        "apiVersion": "streaming.sneaksanddata.com/v1",
        "kind": "RestApiStream",
        "metadata": {"name": "items"},
        "spec": {
            "source": {
                "url": url,
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
                "retry": {"initialDelay": "20ms", "maxDelay": "200ms"}
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
        let kill = (seed >> 13).is_multiple_of(2);
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

/// A seed for the random moments of a test: `ARCANE_TEST_SEED`, or `default`.
#[allow(clippy::print_stderr)]
fn seed(default: u64) -> u64 {
    let seed = std::env::var("ARCANE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("seed {seed} (rerun with ARCANE_TEST_SEED={seed})");
    seed
}

fn next_random(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *state >> 33
}

/// Rows as comparable text.
fn texts<'a>(rows: impl IntoIterator<Item = &'a Row>) -> BTreeSet<String> {
    rows.into_iter()
        .map(|r| Value::Object(r.clone()).to_string())
        .collect()
}

/// Every version the API holds now is committed.
fn complete(api: &TestApi, sink_url: &str) -> bool {
    let rows = committed_rows(sink_url);
    let committed = texts(&rows);
    api.records()
        .iter()
        .all(|r| committed.contains(&Value::Object(row_of(r)).to_string()))
}

/// The committed rows against the API's data: each `(id, updated_at)` once, each row a version
/// the API held, and the current version of every record there.
fn assert_every_version_once(rows: &[Row], api: &TestApi, seed: u64) {
    let mut seen = BTreeSet::new();
    for r in rows {
        let key = (r["id"].as_u64().unwrap(), r["updated_at"].as_i64().unwrap());
        assert!(seen.insert(key), "seed {seed}: {key:?} landed twice");
    }
    let history: Vec<Row> = api.history().iter().map(row_of).collect();
    let history = texts(&history);
    let committed = texts(rows);
    for r in &committed {
        assert!(
            history.contains(r),
            "seed {seed}: {r} is no version of the API"
        );
    }
    let current = api.records();
    for r in &current {
        assert!(
            committed.contains(&Value::Object(row_of(r)).to_string()),
            "seed {seed}: the current version of record {} is missing: {r}",
            r["id"]
        );
    }
    let ids: BTreeSet<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), current.len(), "seed {seed}: records missing");
}

/// The number of the latest commit of the sink at `url` (0 before any).
fn commits(sink_url: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(arcane_sinks::latest_manifest(sink_url, &BTreeMap::new()))
        .unwrap()
        .map_or(0, |m| m.sequence + 1)
}

fn oauth2(api: &TestApi) -> Value {
    json!({
        "type": "oauth2ClientCredentials",
        "tokenUrl": api.url("/oauth/token"),
        "clientId": "arcane",
        "clientSecret": {"env": "ITEMS_API_TOKEN"},
        "refreshBeforeExpiry": "1s"
    })
}

#[test]
fn streaming_over_filtered_pages_with_growing_data_lands_every_version_once() {
    let seed = seed(0x5eed_f117_e2ed_0001);
    let mut rng = seed;
    // The API pages over its id range and then filters by updated_since: once the first pass
    // is committed, every pass starts with empty pages that have a next cursor.
    let api = TestApi::start(2_000);
    // Tokens live 400 ms although announced for an hour: requests meet 401s and refresh.
    api.set_auth(ApiAuth::OAuth2 {
        client_id: "arcane".into(),
        client_secret: "e2e-s3cret".into(),
        expires_in: 3600,
        lifetime: Duration::from_millis(400),
    });
    api.fail_every(Some(13));
    api.push_faults([
        Fault::TooManyRequests(1),
        Fault::Unavailable,
        Fault::Malformed,
    ]);
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    let mut spec = spec_at(&api.url("/items/filtered"), &sink_url, 50, 60.0);
    spec["spec"]["source"]["auth"] = oauth2(&api);

    let (mut appended, mut updated) = (0, 0);
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs <= 40, "seed {seed}: not done after {runs} runs");
        let kill = next_random(&mut rng).is_multiple_of(2);
        let proc = run_with_token(work.path(), &spec, &[], "e2e-s3cret");
        proc.wait_for_log("rest-api source opening");
        std::thread::sleep(Duration::from_millis(150 + next_random(&mut rng) % 600));
        // The data grows and changes while the job runs.
        if appended < 6 {
            api.grow_to(api.records().len() as u64 + 37);
            appended += 1;
        }
        if updated < 4 && runs % 2 == 0 {
            let ids: Vec<u64> = (0..25)
                .map(|_| 1 + next_random(&mut rng) % api.records().len() as u64)
                .collect();
            api.update(&ids);
            updated += 1;
        }
        std::thread::sleep(Duration::from_millis(100 + next_random(&mut rng) % 700));
        proc.signal(if kill {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        });
        let exit = proc.wait();
        if kill {
            assert_eq!(exit.code, -1, "seed {seed}");
        } else {
            assert_eq!(exit.code, 0, "seed {seed}: {:#?}", exit.lines);
            assert_eq!(exit.summary("rowsUncommitted"), 0, "seed {seed}");
        }
        assert!(
            !exit.lines.iter().any(|l| l.contains("e2e-s3cret")),
            "seed {seed}: the secret appears in the logs"
        );
        if appended == 6 && updated == 4 && complete(&api, &sink_url) {
            break;
        }
    }
    // A last run catches up with whatever the stops left behind, and stops cleanly.
    let proc = run_with_token(work.path(), &spec, &[], "e2e-s3cret");
    eventually("every version committed", || complete(&api, &sink_url));
    proc.signal(Signal::SIGTERM);
    let exit = proc.wait();
    assert_eq!(exit.code, 0, "seed {seed}: {:#?}", exit.lines);
    assert!(api.stats().empty_pages_with_next > 0, "{:?}", api.stats());
    assert_every_version_once(&committed_rows(&sink_url), &api, seed);
}

#[test]
fn a_backfill_over_filtered_pages_resumed_after_sigkill_and_exit_2_lands_every_record() {
    let api = TestApi::start(6_000);
    api.set_auth(ApiAuth::Bearer("bf-token".into()));
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    let mut spec = spec_at(&api.url("/items/filtered"), &sink_url, 100, 20.0);
    spec["spec"]["rowsPerGroup"] = json!(250);
    spec["spec"]["source"]["retry"]["maxAttempts"] = json!(4);
    spec["spec"]["source"]["retry"]["initialDelay"] = json!("50ms");
    let args = ["--backfill", "--backfill-id", "bf-filtered"];

    // Killed in the middle of its only pass.
    let proc = run_with_token(work.path(), &spec, &args, "bf-token");
    eventually("a few commits", || commits(&sink_url) >= 4);
    proc.signal(Signal::SIGKILL);
    assert_eq!(proc.wait().code, -1);

    // Resumed, it goes on with the pass; then the API fails for good: exit 2 (RESTART), after
    // a warning for each retry.
    let before = commits(&sink_url);
    let proc = run_with_token(work.path(), &spec, &args, "bf-token");
    eventually("a commit of the resumed run", || {
        commits(&sink_url) > before
    });
    api.set_persistent_fault(Some(Fault::Unavailable));
    let exit = proc.wait();
    assert_eq!(exit.code, 2, "{:#?}", exit.lines);
    let retries: Vec<&String> = exit
        .lines
        .iter()
        .filter(|l| l.contains(r#""level":"WARN""#) && l.contains("503 Service Unavailable"))
        .collect();
    assert_eq!(retries.len(), 3, "{:#?}", exit.lines);
    assert!(retries.iter().all(|l| l.contains("retrying in")));
    let message = exit.termination["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("/items/filtered")
            && message.contains("503")
            && message.contains("after 4 attempts"),
        "{message}"
    );
    assert_eq!(exit.termination["exitCode"], 2);

    // The API is back: the rerun finishes the backfill with every record exactly once.
    api.set_persistent_fault(None);
    let exit = run_with_token(work.path(), &spec, &args, "bf-token").wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    assert_same_rows(
        committed_rows(&sink_url),
        (1..=6_000).map(expected_row).collect(),
    );
}

#[test]
fn records_out_of_watermark_order_land_once_across_a_sigkill() {
    let seed = seed(0x5eed_0d0e_0001);
    let api = TestApi::start_shuffled(30_000, seed);
    let work = tempfile::tempdir().unwrap();
    let sink_dir = work.path().join("out");
    let sink_url = format!("file://{}", sink_dir.display());
    let mut spec = spec_at(&api.url("/items/filtered"), &sink_url, 500, 20.0);
    spec["spec"]["rowsPerGroup"] = json!(1_000);
    spec["spec"]["source"]
        .as_object_mut()
        .unwrap()
        .remove("auth");
    let args = ["--backfill", "--backfill-id", "shuffled"];

    let proc = run_with_token(work.path(), &spec, &args, "unused");
    eventually("a few commits", || commits(&sink_url) >= 4);
    proc.signal(Signal::SIGKILL);
    assert_eq!(proc.wait().code, -1);

    let exit = run_with_token(work.path(), &spec, &args, "unused").wait();
    assert_eq!(exit.code, 0, "seed {seed}: {:#?}", exit.lines);
    let rows = committed_rows(&sink_url);
    assert_every_version_once(&rows, &api, seed);
    assert_eq!(rows.len(), 30_000, "seed {seed}");
    // Nothing was dead-lettered.
    let letters = std::fs::read_dir(sink_dir.join("_dead_letters"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(letters, 0, "seed {seed}: dead letters were written");
}

#[test]
fn an_api_that_is_down_is_retried_with_warnings_then_exits_2_with_the_cause() {
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    let mut spec = spec_at(&TestApi::refused_url("/items/cursor"), &sink_url, 10, 100.0);
    spec["spec"]["source"]["retry"]["maxAttempts"] = json!(4);
    let exit = run_with_token(
        work.path(),
        &spec,
        &["--backfill", "--backfill-id", &unique("down")],
        "down-token",
    )
    .wait();
    assert_eq!(exit.code, 2, "{:#?}", exit.lines);
    let warnings: Vec<Value> = exit
        .logs()
        .into_iter()
        .filter(|l| l["level"] == "WARN" && l["target"] == "arcane_sources::rest_api::http")
        .collect();
    assert_eq!(warnings.len(), 3, "{:#?}", exit.lines);
    for (i, w) in warnings.iter().enumerate() {
        let text = w["message"].as_str().unwrap();
        assert!(
            text.contains(&format!("attempt {} of 4", i + 1))
                && text.contains("Connection refused")
                && text.contains("retrying in"),
            "{text}"
        );
    }
    let message = exit.termination["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Connection refused") && message.contains("after 4 attempts over"),
        "{message}"
    );
    assert_eq!(exit.termination["status"], "RESTART");
}

#[test]
fn a_missing_page_is_fatal_and_names_the_url() {
    let api = TestApi::start(10);
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/out", work.path().display());
    let mut spec = spec_at(&api.url("/items/nowhere"), &sink_url, 10, 100.0);
    spec["spec"]["source"]
        .as_object_mut()
        .unwrap()
        .remove("auth");
    let exit = run_with_token(work.path(), &spec, &["--backfill"], "unused-token").wait();
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    let message = exit.termination["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&api.url("/items/nowhere")) && message.contains("404"),
        "{message}"
    );
    assert_eq!(api.stats().requests, 1, "a 404 is not retried");
}

#[test]
fn an_html_page_with_status_200_is_retried_and_fatal_only_when_it_persists() {
    let api = TestApi::start(300);
    let work = tempfile::tempdir().unwrap();
    let sink_url = format!("file://{}/once", work.path().display());
    let mut spec = spec_at(&api.url("/items/cursor"), &sink_url, 100, 100.0);
    spec["spec"]["source"]
        .as_object_mut()
        .unwrap()
        .remove("auth");
    spec["spec"]["source"]["retry"]["maxAttempts"] = json!(3);

    // Once (a proxy's hiccup): retried with a warning, and the run succeeds.
    api.push_faults([Fault::Malformed]);
    let exit = run_with_token(work.path(), &spec, &["--backfill"], "unused-token").wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    assert_same_rows(
        committed_rows(&sink_url),
        (1..=300).map(expected_row).collect(),
    );
    assert!(
        exit.lines.iter().any(|l| l.contains(r#""level":"WARN""#)
            && l.contains("not JSON")
            && l.contains("attempt 1 of 3")),
        "{:#?}",
        exit.lines
    );

    // Every time: FATAL, with the URL, the status and the start of the body.
    api.set_persistent_fault(Some(Fault::Malformed));
    let sink_url = format!("file://{}/always", work.path().display());
    spec["spec"]["sink"]["url"] = json!(sink_url);
    let exit = run_with_token(work.path(), &spec, &["--backfill"], "unused-token").wait();
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    let message = exit.termination["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("/items/cursor")
            && message.contains("HTTP 200 OK")
            && message.contains("not JSON")
            && message.contains("<html><head><title>502 Bad Gateway")
            && message.contains("after 3 attempts"),
        "{message}"
    );
}
