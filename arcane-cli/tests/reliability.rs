//! The reliability oracle: for each kind, fresh input whose records carry unique ids, the
//! `arcane` binary stopped again and again at seeded random moments — by SIGKILL or by
//! SIGTERM — and rerun until everything is committed, then the committed output compared with
//! the input: records **lost**, **duplicated**, and **extra** (present but never sent). Each
//! run's exit is checked against what happened: SIGTERM must end with exit 0 and nothing
//! uncommitted, SIGKILL with the signal.
//!
//! Every cell prints its seed; `ARCANE_RELIABILITY_SEED=<seed>` replays the same schedule.
//! `ARCANE_RELIABILITY_TRIALS` sets the trials per cell (default 2, the short version the test
//! suite runs); `scripts/reliability.sh` runs the long version and writes `RELIABILITY.md` from
//! the JSON lines appended to `ARCANE_RELIABILITY_OUT`.

#![cfg(feature = "full")] // every kind
#![allow(clippy::print_stderr)] // each cell reports its seed and tally on stderr

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use arcane_test_support::brokers::{NatsStream, RabbitQueue, mqtt_publish};
use arcane_test_support::rng::{SplitMix64, seed_from_env};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use support::*;

/// Records per trial.
const N: i64 = 600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill,
    Term,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "SIGKILL",
            Fault::Term => "SIGTERM",
        }
    }
}

/// One trial's input: the spec, the log line that says the source is open, the ids sent, and
/// what to remove afterwards.
struct Prepared {
    spec: Value,
    opening: &'static str,
    expected: BTreeSet<i64>,
    /// The source makes ids 0, 1, 2, … without end (the generator): every id up to the
    /// largest committed one is expected, not only the first N.
    open_ended: bool,
    sink_url: String,
    /// How the test reads the sink back (directly, not through a fault proxy).
    read_options: BTreeMap<String, String>,
    /// The sink's store injects faults: a run may also end by itself with exit 2 (its
    /// retries ran out), never with 1.
    store_faults: bool,
    /// Faults between the source and its server, done once in the middle of every run (e.g.
    /// cutting every connection); a run may then also end by itself with exit 2, never 1.
    source_faults: Option<Box<dyn Fn()>>,
    /// At least once by design (MQTT: no message ids): duplicates are allowed, at most this
    /// many per SIGKILL (the unacknowledged window); nothing may be lost.
    duplicates_per_kill: Option<u64>,
    cleanup: Box<dyn FnOnce()>,
}

impl Prepared {
    /// Input whose ids are `expected`, read by `spec` into the local sink at `sink_url`, with no
    /// other fault than the cell's signal.
    fn new(spec: Value, opening: &'static str, expected: BTreeSet<i64>, sink_url: String) -> Self {
        Self {
            spec,
            opening,
            expected,
            open_ended: false,
            sink_url,
            read_options: BTreeMap::new(),
            store_faults: false,
            source_faults: None,
            duplicates_per_kill: None,
            cleanup: Box::new(|| {}),
        }
    }

    fn cleanup(mut self, cleanup: impl FnOnce() + 'static) -> Self {
        self.cleanup = Box::new(cleanup);
        self
    }
}

/// What one cell counted over its trials.
#[derive(Debug, Default)]
struct Tally {
    trials: u64,
    runs: u64,
    signals: u64,
    lost: u64,
    duplicated: u64,
    extra: u64,
    bad_exits: Vec<String>,
}

fn seed() -> u64 {
    seed_from_env("ARCANE_RELIABILITY_SEED")
}

fn trials() -> u64 {
    std::env::var("ARCANE_RELIABILITY_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

fn committed_ids(sink_url: &str, options: &BTreeMap<String, String>) -> Vec<i64> {
    rows_as_json(&read_committed(sink_url, options))
        .iter()
        .map(|r| r["id"].as_i64().expect("an id column"))
        .collect()
}

/// Run every trial of a cell and check the tally: nothing lost, duplicated or extra, and every
/// exit as its signal demands.
fn cell(kind: &str, fault: Fault, mut prepare: impl FnMut(&Path, u64) -> Prepared) {
    let seed = seed();
    eprintln!(
        "reliability {kind} {}: seed {seed} (ARCANE_RELIABILITY_SEED={seed} replays it)",
        fault.name()
    );
    let mut rng = SplitMix64(seed);
    let mut tally = Tally::default();
    let mut allowed_duplicates = 0;
    let started = Instant::now();
    for trial in 0..trials() {
        let work = tempfile::tempdir().unwrap();
        let prepared = prepare(work.path(), rng.next_u64());
        let kills_before = tally.signals;
        run_trial(work.path(), &prepared, fault, &mut rng, &mut tally);
        if let Some(window) = prepared.duplicates_per_kill
            && fault == Fault::Kill
        {
            allowed_duplicates += window * (tally.signals - kills_before);
        }
        let ids = committed_ids(&prepared.sink_url, &prepared.read_options);
        let distinct: BTreeSet<i64> = ids.iter().copied().collect();
        let expected: BTreeSet<i64> = match (prepared.open_ended, distinct.last()) {
            (true, Some(&last)) => (0..=last.max(N - 1)).collect(),
            _ => prepared.expected.clone(),
        };
        tally.trials += 1;
        tally.duplicated += (ids.len() - distinct.len()) as u64;
        tally.lost += expected.difference(&distinct).count() as u64;
        tally.extra += distinct.difference(&expected).count() as u64;
        (prepared.cleanup)();
        eprintln!(
            "reliability {kind} {}: trial {trial}: {tally:?}",
            fault.name()
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let line = json!({
        "kind": kind, "fault": fault.name(), "trials": tally.trials, "runs": tally.runs,
        "signals": tally.signals, "lost": tally.lost, "duplicated": tally.duplicated,
        "extra": tally.extra, "badExits": tally.bad_exits.len(), "seconds": seconds.round(),
        "seed": seed.to_string(),
    });
    eprintln!("RELIABILITY {line}");
    if let Ok(out) = std::env::var("ARCANE_RELIABILITY_OUT") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }
    assert!(
        tally.lost == 0
            && tally.duplicated <= allowed_duplicates
            && tally.extra == 0
            && tally.bad_exits.is_empty(),
        "{kind} under {}: {tally:#?} (seed {seed})",
        fault.name()
    );
}

/// Start, wait for the source to open, let it run for a random moment, signal it; until a run
/// began with everything already committed.
fn run_trial(work: &Path, p: &Prepared, fault: Fault, rng: &mut SplitMix64, tally: &mut Tally) {
    for run in 1..=MAX_RUNS {
        let proc = Arcane::run(work, &p.spec, &[]);
        let opened = wait_open(&proc, p.opening);
        let committed: BTreeSet<i64> = committed_ids(&p.sink_url, &p.read_options)
            .into_iter()
            .collect();
        let all_in = p.expected.is_subset(&committed);
        if opened {
            if let Some(chaos) = &p.source_faults {
                std::thread::sleep(Duration::from_millis(rng.between(20, 600)));
                chaos();
            }
            // Mostly before the grouping interval (1 s) commits anything; every fifth run lives
            // long enough to commit a partial group, so a trial always makes progress.
            let delay = if run % 5 == 0 {
                rng.between(1500, 3000)
            } else {
                rng.between(50, 1200)
            };
            std::thread::sleep(Duration::from_millis(delay));
            proc.signal(match fault {
                Fault::Kill => Signal::SIGKILL,
                Fault::Term => Signal::SIGTERM,
            });
        }
        let exit = proc.wait();
        tally.runs += 1;
        tally.signals += u64::from(opened);
        let faults = p.store_faults || p.source_faults.is_some();
        let ok = match fault {
            // A run may end by itself (its retries ran out) when the cell injects faults.
            _ if faults && exit.code == 2 => true,
            _ if !opened => false,
            Fault::Kill => exit.code == -1,
            Fault::Term => exit.code == 0 && exit.summary("rowsUncommitted") == 0,
        };
        if !ok {
            tally.bad_exits.push(format!(
                "run {run}: exit {} after {}: {:?}",
                exit.code,
                if opened { fault.name() } else { "no signal" },
                exit.termination
            ));
        }
        if all_in {
            return;
        }
    }
    // Not done: what is missing is counted as lost by the caller.
    eprintln!("not done after {MAX_RUNS} runs");
}

/// Runs of one trial at the most: a trial that is not done by then lost records.
const MAX_RUNS: u32 = 60;

/// Wait until the process logs `opening` (true) or exits first (false).
fn wait_open(proc: &Arcane, opening: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let lines = proc.lines();
        if lines.iter().any(|l| l.contains(opening)) {
            return true;
        }
        if lines.iter().any(|l| l.contains("\"exit_code\"")) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "no log line with {opening:?} within 120 s: {:#?}",
        proc.lines()
    );
}

fn spec(kind: &str, source: Value, sink_url: &str) -> Value {
    json!({
        "apiVersion": "streaming.sneaksanddata.com/v1",
        "kind": kind,
        "metadata": {"name": "reliability"},
        "spec": {
            "source": source,
            "sink": {"url": sink_url, "rolling": {"maxFileAge": "200ms"}},
            "rowsPerGroup": 100,
            "groupingIntervalSeconds": 1
        }
    })
}

fn id_schema() -> Value {
    json!([
        {"name": "id", "type": "int64", "nullable": false},
        {"name": "name", "type": "utf8"}
    ])
}

fn record(i: i64) -> String {
    format!("{{\"id\": {i}, \"name\": \"n-{i}\"}}")
}

fn sink_url(work: &Path) -> String {
    format!("file://{}", work.join("out").display())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Ten NDJSON files in a landing directory, read by a streaming run.
fn blob_landing(work: &Path, _seed: u64) -> Prepared {
    let landing = work.join("landing");
    std::fs::create_dir_all(&landing).unwrap();
    for f in 0..10 {
        let lines: Vec<String> = (f * N / 10..(f + 1) * N / 10).map(record).collect();
        std::fs::write(
            landing.join(format!("part-{f:03}.json")),
            lines.join("\n") + "\n",
        )
        .unwrap();
    }
    let sink_url = sink_url(work);
    let source = json!({
        "url": format!("file://{}/", landing.display()),
        "format": "ndjson",
        "pollInterval": "100ms",
        "batchRows": 50,
        "schema": id_schema()
    });
    Prepared::new(
        spec("BlobLandingStream", source, &sink_url),
        "blob-landing source opening",
        (0..N).collect(),
        sink_url,
    )
}

/// A streaming run of the generator: the ids it makes are 0, 1, 2, …; a trial is done once
/// the first N are committed, and nothing beyond what was committed is expected.
fn generator(work: &Path, _seed: u64) -> Prepared {
    let sink_url = sink_url(work);
    let source = json!({"batchRows": 40, "rowsPerSecond": 2000});
    let mut p = Prepared::new(
        spec("GeneratorStream", source, &sink_url),
        "arcane runner starting",
        (0..N).collect(),
        sink_url,
    );
    p.open_ended = true;
    p
}

/// A REST API serving N records (ids 1..=N) out of watermark order, read with a watermark
/// and cursor pages.
fn rest_api(work: &Path, seed: u64) -> Prepared {
    let api = arcane_test_support::rest_api::TestApi::start_shuffled(N as u64, seed);
    let sink_url = sink_url(work);
    let source = json!({
        "url": api.url("/items/cursor"),
        "query": {"updated_since": "{{watermark}}", "limit": "37"},
        "recordsPointer": "/data",
        "pagination": {"type": "cursor", "cursorPointer": "/next_cursor", "param": "cursor"},
        "watermark": {"field": "updated_at", "type": "timestamp", "idField": "id"},
        "schema": [
            {"name": "id", "type": "int64", "nullable": false},
            {"name": "updated_at", "type": "timestamp[ms, UTC]", "nullable": false},
            {"name": "name", "type": "utf8"}
        ],
        "pollInterval": "100ms",
        "retry": {"initialDelay": "20ms", "maxDelay": "200ms"}
    });
    Prepared::new(
        spec("RestApiStream", source, &sink_url),
        "rest-api source opening",
        (1..=N).collect(),
        sink_url,
    )
    .cleanup(move || drop(api))
}

/// A JetStream stream holding N messages.
fn nats(work: &Path, seed: u64) -> Prepared {
    let rt = runtime();
    let stream = rt.block_on(NatsStream::create(
        &format!("REL_{seed:x}"),
        &format!("rel.{seed:x}"),
        (0..N).map(record),
    ));
    let sink_url = sink_url(work);
    let source = json!({
        "url": "nats://127.0.0.1:4222",
        "stream": stream.name,
        "consumer": "arcane",
        "payload": {"format": "json", "schema": id_schema()},
        "batchRows": 50,
        "batchTimeout": "50ms"
    });
    Prepared::new(
        spec("NatsJetstreamStream", source, &sink_url),
        "nats-jetstream source opening",
        (0..N).collect(),
        sink_url,
    )
    .cleanup(move || rt.block_on(stream.delete()))
}

/// A durable RabbitMQ queue holding N messages numbered by a publisher sequence header.
fn rabbitmq(work: &Path, seed: u64) -> Prepared {
    let rt = runtime();
    let queue = rt.block_on(async {
        let queue = RabbitQueue::declare(&format!("arcane-rel-{seed:x}")).await;
        queue
            .publish_sequenced("x-seq", 1, (0..N).map(|i| record(i).into_bytes()))
            .await;
        queue
    });
    let sink_url = sink_url(work);
    let source = json!({
        "host": "127.0.0.1",
        "queue": queue.name,
        "sequence": {"header": "x-seq"},
        "password": {"value": "guest"},
        "payload": {"format": "json", "schema": id_schema()},
        "batchRows": 50,
        "batchTimeout": "50ms"
    });
    Prepared::new(
        spec("RabbitmqStream", source, &sink_url),
        "rabbitmq source opening",
        (0..N).collect(),
        sink_url,
    )
    .cleanup(move || rt.block_on(queue.delete()))
}

/// The blob-landing input of [`blob_landing`] landed on the S3 server (moto) or the Azure Blob
/// emulator (azurite) through a proxy that injects store faults on a seeded schedule: 503s and
/// 500s, connections closed before and after a call was carried out, stalls past the client's
/// timeout, truncated reads, and more of them on the calls that commit (part uploads,
/// completions, the manifest's put).
fn with_store_faults(azure: bool) -> impl FnMut(&Path, u64) -> Prepared {
    move |work, seed| store_faults(work, seed, azure)
}

fn store_faults(work: &Path, seed: u64, azure: bool) -> Prepared {
    use arcane_test_support::Store;
    use arcane_test_support::http_faults::{Call, Fault as F, FaultProxy, Rule};
    let mut p = blob_landing(work, seed);
    let rt = runtime();
    let store = rt.block_on(async {
        if azure {
            Store::azure().await
        } else {
            Store::s3().await
        }
    });
    let (endpoint, endpoint_key, path) = match &store {
        Store::S3 { endpoint, .. } => (endpoint.clone(), "aws_endpoint", String::new()),
        Store::Azure { endpoint, .. } => {
            // http://127.0.0.1:PORT/devstoreaccount1: the proxy takes the origin, the client
            // keeps the account's path.
            let rest = endpoint.trim_start_matches("http://");
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            (
                format!("http://{host}"),
                "azure_storage_endpoint",
                format!("/{path}"),
            )
        }
        _ => unreachable!(),
    };
    let proxy = FaultProxy::start(
        &endpoint,
        seed,
        vec![
            Rule::any(F::Status(503), 0.03),
            Rule::any(F::Status(500), 0.02),
            Rule::any(F::ResetBefore, 0.02),
            Rule::any(F::ResetAfter, 0.02),
            Rule::any(F::Stall(Duration::from_millis(2500)), 0.01),
            Rule::on(Call::List, F::Truncate, 0.05),
            Rule::on(Call::Read, F::Truncate, 0.05),
            Rule::on(Call::UploadPart, F::ResetAfter, 0.05),
            Rule::on(Call::CompleteUpload, F::ResetAfter, 0.10),
            Rule::on(Call::CompleteUpload, F::Status(503), 0.10),
            Rule::on(Call::ManifestPut, F::ResetAfter, 0.10),
            Rule::on(Call::ManifestPut, F::Status(500), 0.05),
        ],
    );
    let mut through = store.options();
    through.insert(endpoint_key.into(), format!("{}{path}", proxy.url()));
    through.insert("timeout".into(), "2s".into());
    let sink_url = store.url();
    p.spec["spec"]["sink"]["url"] = json!(sink_url);
    p.spec["spec"]["sink"]["storageOptions"] = json!(through);
    p.spec["spec"]["sink"]["retry"] =
        json!({"maxAttempts": 4, "initialDelay": "20ms", "maxDelay": "200ms"});
    p.sink_url = sink_url;
    p.read_options = store.options();
    p.store_faults = true;
    p.cleanup(move || {
        eprintln!("store faults injected: {:?}", proxy.injected());
        drop(proxy);
        rt.block_on(store.cleanup());
    })
}

/// `prepare`'s broker reached through a TCP proxy that cuts every connection once in the middle
/// of each run (the broker redelivers what was not acknowledged).
fn with_connection_cuts(
    prepare: fn(&Path, u64) -> Prepared,
    port: u16,
    host_field: &'static str,
) -> impl FnMut(&Path, u64) -> Prepared {
    move |work, seed| {
        use arcane_test_support::proxy::Proxy;
        let mut p = prepare(work, seed);
        let rt = runtime();
        let proxy = rt.block_on(Proxy::start(([127, 0, 0, 1], port).into()));
        let through = proxy.port();
        match host_field {
            "url" => p.spec["spec"]["source"]["url"] = json!(format!("nats://127.0.0.1:{through}")),
            _ => p.spec["spec"]["source"]["port"] = json!(through),
        }
        p.spec["spec"]["source"]["retry"] =
            json!({"maxAttempts": 20, "initialDelay": "20ms", "maxDelay": "200ms"});
        let proxy = std::sync::Arc::new(proxy);
        let cutter = proxy.clone();
        p.source_faults = Some(Box::new(move || cutter.cut()));
        let cleanup = std::mem::replace(&mut p.cleanup, Box::new(|| {}));
        p.cleanup = Box::new(move || {
            // Every run connected through the proxy, and reconnected after the cuts.
            assert!(
                proxy.accepted() >= 2,
                "the source did not go through the proxy"
            );
            eprintln!("connections through the proxy: {}", proxy.accepted());
            drop(proxy);
            drop(rt);
            cleanup();
        });
        p
    }
}

/// An MQTT topic: a persistent session created by a first run, N messages published (QoS 1)
/// while it is connected, so the broker keeps them for the session.
fn mqtt(work: &Path, seed: u64) -> Prepared {
    let client_id = format!("arcane-rel-{seed:x}");
    let topic = format!("arcane/rel/{seed:x}");
    let sink_url = sink_url(work);
    // Mosquitto keeps at most 1000 messages per offline session beyond the in-flight window.
    let window = 1000u64;
    let source = json!({
        "host": "127.0.0.1",
        "clientId": client_id,
        "topics": [topic],
        "payload": {"format": "json", "schema": id_schema()},
        "batchRows": 50,
        "batchTimeout": "50ms",
        "maxUnacked": window,
        "sessionExpiry": "10m"
    });
    let spec = spec("MqttStream", source, &sink_url);
    let first = Arcane::run(work, &spec, &[]);
    // Published messages reach the session only once the broker acknowledged the subscription.
    first.wait_for_log("\"message\":\"subscribed\"");
    runtime().block_on(mqtt_publish(
        &format!("pub-{seed:x}"),
        &topic,
        (0..N).map(record).collect(),
    ));
    first.signal(Signal::SIGTERM);
    assert_eq!(first.wait().code, 0, "the run that created the session");
    let mut p = Prepared::new(spec, "mqtt source opening", (0..N).collect(), sink_url);
    p.duplicates_per_kill = Some(window);
    p
}

/// A PostgreSQL table (the machine's server, database `test`) with N/2 rows taken by the
/// snapshot, and N/2 more inserted in small transactions while the runs go on (changes).
fn postgres(work: &Path, seed: u64) -> Prepared {
    let conn = std::env::var("ARCANE_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into());
    let table = format!("rel_{seed:x}");
    let rt = runtime();
    let client = rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432");
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "CREATE TABLE {table} (id int8 PRIMARY KEY, name text);
                 INSERT INTO {table} SELECT g, 'n-' || g FROM generate_series(0, {}) g;",
                N / 2 - 1
            ))
            .await
            .expect("create the table");
        client
    });
    let client = std::sync::Arc::new(client);
    let feeder = {
        let (client, table) = (client.clone(), table.clone());
        rt.spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for from in (N / 2..N).step_by(20) {
                let sql = format!(
                    "INSERT INTO {table} SELECT g, 'n-' || g FROM generate_series({from}, {}) g",
                    (from + 19).min(N - 1)
                );
                client.batch_execute(&sql).await.expect("insert");
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    let sink_url = sink_url(work);
    let source = json!({
        "connection": conn,
        "table": table,
        "slot": table,
        "publication": table,
        "batchRows": 50,
        "pollInterval": "100ms",
        "retry": {"maxAttempts": 3}
    });
    Prepared::new(
        spec("PostgresCdcStream", source, &sink_url),
        "stream starting",
        (0..N).collect(),
        sink_url,
    )
    .cleanup(move || {
        feeder.abort();
        let sql = format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{table}'; \
             DROP PUBLICATION IF EXISTS {table}; DROP TABLE IF EXISTS {table};"
        );
        // A killed run's backend may hold the slot for a moment.
        for _ in 0..80 {
            if rt.block_on(client.batch_execute(&sql)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("could not drop the slot {table}: drop it by hand");
    })
}

macro_rules! cells {
    ($($name:ident: $kind:literal, $prepare:expr;)*) => {
        mod sigkill {
            use super::*;
            $(#[test] fn $name() { cell($kind, Fault::Kill, $prepare); })*
        }
        mod sigterm {
            use super::*;
            $(#[test] fn $name() { cell($kind, Fault::Term, $prepare); })*
        }
    };
}

cells! {
    blob_landing_local: "blob-landing (local)", blob_landing;
    generator_stream: "generator", generator;
    rest_api_stream: "rest-api", rest_api;
    nats_jetstream: "nats-jetstream", nats;
    rabbitmq_queue: "rabbitmq", rabbitmq;
    s3_store_faults: "blob-landing → S3 with store faults", with_store_faults(false);
    mqtt_session: "mqtt (at least once)", mqtt;
    postgres_cdc: "postgres-cdc (snapshot and inserts)", postgres;
    azure_store_faults: "blob-landing → Azure Blob with store faults", with_store_faults(true);
    nats_connection_cuts: "nats-jetstream with connections cut",
        with_connection_cuts(nats, 4222, "url");
    rabbitmq_connection_cuts: "rabbitmq with connections cut",
        with_connection_cuts(rabbitmq, 5672, "port");
}
