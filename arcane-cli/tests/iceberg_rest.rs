//! A generator stream into an Apache Iceberg table in an Iceberg REST catalog (the test
//! catalog of `arcane_test_support::iceberg_rest`, with OAuth2 client credentials) through the
//! `arcane` binary: killed with SIGKILL at seeded random moments, rerun until it finishes, then
//! read back by pyiceberg's `RestCatalog` on the same server: every row exactly once. Also:
//! refused client credentials are FATAL naming the setting (and never logged), short-lived
//! tokens are refreshed before they expire, and a sharded overwrite backfill of two processes
//! is published once.

#![allow(clippy::print_stderr)] // the kill schedule's seed, to reproduce a failure

mod support;

use std::time::{Duration, Instant};

use arcane_test_support::iceberg_rest::{CatalogAuth, RestCatalogServer};
use arcane_test_support::rng::{SplitMix64, seed_from_env};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use support::*;

const STREAM: &str = "orders-iceberg-rest";
const NS: &str = "shop";
const TABLE: &str = "orders";
const CLIENT: &str = "arcane-writer";
const SECRET: &str = "s3cret-client-secret";

fn server(lifetime: Duration) -> RestCatalogServer {
    RestCatalogServer::start(
        CatalogAuth::OAuth2 {
            client_id: CLIENT.into(),
            client_secret: SECRET.into(),
            lifetime,
        },
        "warehouse-1",
    )
}

fn spec(sink: &str, server: &RestCatalogServer, rows: i64, rate: i64) -> Value {
    json!({
        "apiVersion": "streaming.sneaksanddata.com/v1",
        "kind": "GeneratorStream",
        "metadata": {"name": STREAM},
        "spec": {
            "source": {"totalRows": rows, "batchRows": 40, "rowsPerSecond": rate},
            "sink": {
                "url": sink,
                "rolling": {"maxFileAge": "300ms"},
                "backfillBehavior": "merge",
                "tableFormat": server.table_format(NS, TABLE, json!({
                    "warehouse": "lake",
                    "credentialEnv": "CATALOG_CREDENTIAL",
                    "requestTimeout": "5s"
                }))
            },
            "rowsPerGroup": 200,
            "groupingIntervalSeconds": 1
        }
    })
}

fn credential() -> String {
    format!("{CLIENT}:{SECRET}")
}

#[test]
fn iceberg_rest_survives_kills() {
    const ROWS: i64 = 6000;
    let work = tempfile::tempdir().expect("temp dir");
    let server = server(Duration::from_secs(600));
    let sink = format!("file://{}/table", work.path().display());
    let seed = seed_from_env("ARCANE_ICEBERG_KILL_SEED");
    eprintln!("iceberg kill schedule: seed {seed} (ARCANE_ICEBERG_KILL_SEED={seed} replays it)");
    let mut rng = SplitMix64(seed);
    let spec = spec(&sink, &server, ROWS, 500);
    let credential = credential();
    let env = [("CATALOG_CREDENTIAL", credential.as_str())];
    let mut kills = 0;
    while kills < 10 {
        let proc = Arcane::run_with_env(work.path(), &spec, &[], &env);
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
        let exit = Arcane::run_with_env(work.path(), &spec, &[], &env).wait();
        if exit.code == 0 {
            assert!(
                !exit.lines.iter().any(|l| l.contains(SECRET)),
                "the secret is never logged"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the stream does not finish: {:?}",
            exit.termination
        );
    }
    let read = server
        .read(NS, TABLE, Some(&credential))
        .expect("pyiceberg reads the table");
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
    let sequences = read.sequences(STREAM);
    assert_eq!(sequences.len(), read.snapshots.len());
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "increasing sequences: {sequences:?}"
    );
    assert!(read.properties.contains_key("arcane-watermark"));
    // Every catalog request but the token requests carried a token.
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.path == "/v1/oauth/tokens" || r.authorized)
    );
}

#[test]
fn bad_client_credentials_exit_1_naming_the_setting() {
    let work = tempfile::tempdir().expect("temp dir");
    let server = server(Duration::from_secs(600));
    let sink = format!("file://{}/table", work.path().display());
    let wrong = format!("{CLIENT}:not-the-secret");
    let exit = Arcane::run_with_env(
        work.path(),
        &spec(&sink, &server, 100, 1000),
        &[],
        &[("CATALOG_CREDENTIAL", wrong.as_str())],
    )
    .wait();
    assert_eq!(exit.code, 1, "{:?}", exit.termination);
    let message = exit.termination.to_string();
    assert!(
        message.contains("sink.tableFormat.iceberg.catalog.rest.credentialEnv"),
        "{message}"
    );
    assert!(message.contains("invalid_client"), "{message}");
    assert!(
        !exit.lines.iter().any(|l| l.contains("not-the-secret")),
        "the secret is never logged"
    );
    assert!(!message.contains("not-the-secret"));
    assert!(server.metadata(NS, TABLE).is_none(), "nothing was written");
}

/// Tokens that live 2 s, a stream that runs about 6 s: the sink asks for new tokens before the
/// old ones expire, so the catalog never answers 401.
#[test]
fn short_lived_tokens_are_refreshed_before_they_expire() {
    let work = tempfile::tempdir().expect("temp dir");
    let server = server(Duration::from_secs(2));
    let sink = format!("file://{}/table", work.path().display());
    let credential = credential();
    let exit = Arcane::run_with_env(
        work.path(),
        &spec(&sink, &server, 3000, 500),
        &[],
        &[("CATALOG_CREDENTIAL", credential.as_str())],
    )
    .wait();
    assert_eq!(exit.code, 0, "{:?}", exit.termination);
    let requests = server.requests();
    let refused: Vec<_> = requests.iter().filter(|r| r.status == 401).collect();
    assert!(refused.is_empty(), "{refused:?}");
    assert!(
        server.tokens_issued() >= 3,
        "{} tokens for a 6 s run of 2 s tokens",
        server.tokens_issued()
    );
    let commits = requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/tables/orders"))
        .count();
    assert!(commits >= 4, "{commits} commits");
    let read = server.read(NS, TABLE, Some(&credential)).expect("read");
    assert_eq!(read.ids(), (0..3000).collect::<Vec<_>>());
}

/// A sharded `overwrite` backfill of a blob-landing stream into an Iceberg table: two `arcane`
/// processes (`JOB_COMPLETION_INDEX` 0 and 1, as the pods of an Indexed Job) write their
/// shards; the one that completes the backfill publishes one overwrite snapshot with every
/// shard's files, read back by pyiceberg with every row once.
#[test]
fn a_sharded_overwrite_backfill_is_published_once() {
    let work = tempfile::tempdir().expect("temp dir");
    let landing = work.path().join("landing");
    std::fs::create_dir_all(&landing).expect("landing dir");
    for k in 0..4i64 {
        let lines: String = (k * 500..(k + 1) * 500)
            .map(|i| format!("{{\"id\": {i}, \"name\": \"n{i}\"}}\n"))
            .collect();
        std::fs::write(landing.join(format!("{k}.ndjson")), lines).expect("file");
    }
    let server = RestCatalogServer::start(CatalogAuth::None, "p");
    let sink = format!("file://{}/table", work.path().display());
    let spec = json!({
        "apiVersion": "streaming.sneaksanddata.com/v1",
        "kind": "BlobLandingStream",
        "metadata": {"name": "landing-sharded"},
        "spec": {
            "source": {"url": format!("file://{}/", landing.display()), "format": "ndjson",
                       "suffix": ".ndjson",
                       "schema": [{"name": "id", "type": "int64", "nullable": false},
                                  {"name": "name", "type": "utf8"}]},
            "sink": {"url": sink, "backfillBehavior": "overwrite",
                     "rolling": {"maxRowsPerFile": 200},
                     "tableFormat": server.table_format(NS, TABLE, json!({}))},
            "backfillShards": 2,
            "rowsPerGroup": 200,
            "groupingIntervalSeconds": 1
        }
    });
    let procs: Vec<Arcane> = (0..2)
        .map(|i| {
            let index = i.to_string();
            Arcane::run_with_env(
                work.path(),
                &spec,
                &["--backfill", "--backfill-id", "s1"],
                &[("JOB_COMPLETION_INDEX", index.as_str())],
            )
        })
        .collect();
    for (i, p) in procs.into_iter().enumerate() {
        let exit = p.wait();
        assert_eq!(exit.code, 0, "shard {i}: {:?}", exit.termination);
    }
    let read = server.read(NS, TABLE, None).expect("read");
    assert_eq!(read.ids(), (0..2000).collect::<Vec<_>>(), "every row once");
    assert_eq!(read.snapshots.len(), 1, "published once");
    assert_eq!(read.snapshots[0]["summary"]["operation"], "overwrite");
    assert_eq!(read.snapshots[0]["summary"]["total-records"], "2000");
    assert_eq!(read.field_ids, [1, 2]);
}

/// `tokenEnv`: a bearer token sent as is; a refused one is FATAL naming `tokenEnv`.
#[test]
fn a_bearer_token_from_the_environment_is_used_and_a_refused_one_is_fatal() {
    let work = tempfile::tempdir().expect("temp dir");
    let server = RestCatalogServer::start(CatalogAuth::Bearer("good-token".into()), "p");
    let sink = format!("file://{}/table", work.path().display());
    let mut spec = spec(&sink, &server, 300, 1000);
    spec["spec"]["sink"]["tableFormat"]["iceberg"]["catalog"]["rest"] =
        json!({"uri": server.uri(), "tokenEnv": "CATALOG_TOKEN"});
    let bad =
        Arcane::run_with_env(work.path(), &spec, &[], &[("CATALOG_TOKEN", "stale-token")]).wait();
    assert_eq!(bad.code, 1, "{:?}", bad.termination);
    let message = bad.termination.to_string();
    assert!(
        message.contains("sink.tableFormat.iceberg.catalog.rest.tokenEnv"),
        "{message}"
    );
    assert!(!message.contains("stale-token"), "{message}");
    let good =
        Arcane::run_with_env(work.path(), &spec, &[], &[("CATALOG_TOKEN", "good-token")]).wait();
    assert_eq!(good.code, 0, "{:?}", good.termination);
    assert!(!good.lines.iter().any(|l| l.contains("good-token")));
    let read = arcane_test_support::iceberg::pyiceberg_read(
        "rest",
        "t",
        NS,
        TABLE,
        &[
            ("uri".to_string(), server.uri()),
            ("token".to_string(), "good-token".to_string()),
        ]
        .into(),
    )
    .expect("read");
    assert_eq!(read.ids(), (0..300).collect::<Vec<_>>());
}
