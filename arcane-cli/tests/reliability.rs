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
    /// The sink's store or the source's server injects faults (through a fault proxy): a run
    /// may also end by itself with exit 2 (its retries ran out), never with 1.
    proxy_faults: bool,
    /// Faults between the source and its server, done once in the middle of every run (e.g.
    /// cutting every connection); a run may then also end by itself with exit 2, never 1.
    source_faults: Option<Box<dyn Fn()>>,
    /// At least once by design (MQTT: no message ids): duplicates are allowed, at most this
    /// many per SIGKILL (the unacknowledged window); nothing may be lost.
    duplicates_per_kill: Option<u64>,
    /// The malformed records mixed into the input (their exact payloads), which must be in
    /// the committed dead letters exactly once each.
    dead_letters: Option<BTreeSet<String>>,
    /// How long a run lives before its signal, in ms (a range), instead of the default
    /// schedule: a push source receives its input only while a run is up.
    run_for: Option<(u64, u64)>,
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
            proxy_faults: false,
            source_faults: None,
            dead_letters: None,
            run_for: None,
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
    /// Dead letters committed (malformed-input cells), counted in lost/dup/extra like rows.
    dead_letters: u64,
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

/// The payloads of the dead letters the manifests of a local sink commit for its current
/// generation (a dead-letter file no manifest names is not committed).
fn committed_dead_letters(sink_url: &str) -> Vec<String> {
    let dir = Path::new(sink_url.strip_prefix("file://").expect("a local sink"));
    let Ok(entries) = std::fs::read_dir(dir.join("_arcane/manifests")) else {
        return Vec::new();
    };
    let mut paths: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let manifests: Vec<Value> = paths
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    let Some(current) = manifests
        .last()
        .map(|m| m["state"]["currentGeneration"].clone())
    else {
        return Vec::new();
    };
    let mut payloads = Vec::new();
    for url in manifests
        .iter()
        .filter(|m| m["generation"] == current)
        .flat_map(|m| m["deadLetterFiles"].as_array().cloned().unwrap_or_default())
    {
        let path = url
            .as_str()
            .unwrap()
            .strip_prefix("file://")
            .unwrap()
            .to_string();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&path).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
        for row in rows_as_json(&batches) {
            payloads.push(row["payload"].as_str().unwrap().to_string());
        }
    }
    payloads
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
        if let Some(bad) = &prepared.dead_letters {
            // The malformed records: each in the committed dead letters exactly once.
            let letters = committed_dead_letters(&prepared.sink_url);
            let distinct: BTreeSet<String> = letters.iter().cloned().collect();
            tally.dead_letters += letters.len() as u64;
            tally.duplicated += (letters.len() - distinct.len()) as u64;
            tally.lost += bad.difference(&distinct).count() as u64;
            tally.extra += distinct.difference(bad).count() as u64;
        }
        (prepared.cleanup)();
        eprintln!(
            "reliability {kind} {}: trial {trial}: {tally:?}",
            fault.name()
        );
    }
    report(
        kind,
        fault.name(),
        seed,
        &tally,
        started.elapsed().as_secs_f64(),
    );
    assert!(
        tally.lost == 0
            && tally.duplicated <= allowed_duplicates
            && tally.extra == 0
            && tally.bad_exits.is_empty(),
        "{kind} under {}: {tally:#?} (seed {seed})",
        fault.name()
    );
}

/// Print a cell's JSON line and append it to `ARCANE_RELIABILITY_OUT`.
fn report(kind: &str, fault: &str, seed: u64, tally: &Tally, seconds: f64) {
    let line = json!({
        "kind": kind, "fault": fault, "trials": tally.trials, "runs": tally.runs,
        "signals": tally.signals, "lost": tally.lost, "duplicated": tally.duplicated,
        "extra": tally.extra, "deadLetters": tally.dead_letters,
        "badExits": tally.bad_exits.len(), "seconds": seconds.round(),
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
}

/// Start, wait for the source to open, let it run for a random moment, signal it; until a run
/// began with everything already committed.
fn run_trial(work: &Path, p: &Prepared, fault: Fault, rng: &mut SplitMix64, tally: &mut Tally) {
    let mut last_lines = Vec::new();
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
            let delay = match p.run_for {
                Some((lo, hi)) => rng.between(lo, hi),
                None if run % 5 == 0 => rng.between(1500, 3000),
                None => rng.between(50, 1200),
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
        let faults = p.proxy_faults || p.source_faults.is_some();
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
        last_lines = exit.lines;
    }
    // Not done: what is missing is counted as lost by the caller; what is missing and the last
    // run's log say where to look.
    let committed: BTreeSet<i64> = committed_ids(&p.sink_url, &p.read_options)
        .into_iter()
        .collect();
    let missing: Vec<i64> = p.expected.difference(&committed).copied().collect();
    eprintln!(
        "not done after {MAX_RUNS} runs: missing ids {}; the last run's log:",
        id_ranges(&missing)
    );
    for line in last_lines.iter().rev().take(200).rev() {
        eprintln!("  {line}");
    }
}

/// `ids` (sorted) as ranges: "3-7, 9, 20-39".
fn id_ranges(ids: &[i64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            ids[i].to_string()
        } else {
            format!("{}-{}", ids[i], ids[j])
        });
        i = j + 1;
    }
    out.join(", ")
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
    let p = rest_api_on(work, &api);
    p.cleanup(move || drop(api))
}

/// The spec of [`rest_api`] reading `api`.
fn rest_api_on(work: &Path, api: &arcane_test_support::rest_api::TestApi) -> Prepared {
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
    p.proxy_faults = true;
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
    through_proxy(prepare, port, host_field, None)
}

/// [`with_connection_cuts`] over a slow link as well: 5 ms added to every chunk each way and
/// 1 MB/s in each direction.
fn with_slow_link_and_cuts(
    prepare: fn(&Path, u64) -> Prepared,
    port: u16,
    host_field: &'static str,
) -> impl FnMut(&Path, u64) -> Prepared {
    through_proxy(
        prepare,
        port,
        host_field,
        Some((Duration::from_millis(5), 1_000_000)),
    )
}

fn through_proxy(
    prepare: fn(&Path, u64) -> Prepared,
    port: u16,
    host_field: &'static str,
    slow: Option<(Duration, u64)>,
) -> impl FnMut(&Path, u64) -> Prepared {
    move |work, seed| {
        use arcane_test_support::proxy::Proxy;
        let mut p = prepare(work, seed);
        let rt = runtime();
        let proxy = rt.block_on(Proxy::start(([127, 0, 0, 1], port).into()));
        if let Some((latency, bandwidth)) = slow {
            proxy.set_latency(latency);
            proxy.set_bandwidth(Some(bandwidth));
        }
        let through = proxy.port();
        match host_field {
            "url" => p.spec["spec"]["source"]["url"] = json!(format!("nats://127.0.0.1:{through}")),
            "connection" => {
                let conn = p.spec["spec"]["source"]["connection"].as_str().unwrap();
                assert!(conn.contains(&format!("port={port}")), "{conn}");
                p.spec["spec"]["source"]["connection"] =
                    json!(conn.replace(&format!("port={port}"), &format!("port={through}")));
            }
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
        // A feeder that failed leaves rows uninserted, which the tally would count as lost:
        // say so instead, once the slot is dropped.
        let feeder_failed = if feeder.is_finished() {
            rt.block_on(feeder).err()
        } else {
            feeder.abort();
            None
        };
        let sql = format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{table}'; \
             DROP PUBLICATION IF EXISTS {table}; DROP TABLE IF EXISTS {table};"
        );
        // A killed run's backend may hold the slot for a moment.
        let mut dropped = false;
        for _ in 0..80 {
            if rt.block_on(client.batch_execute(&sql)).is_ok() {
                dropped = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        if let Some(e) = feeder_failed {
            panic!("the test's inserts into {table} failed: {e}");
        }
        assert!(dropped, "could not drop the slot {table}: drop it by hand");
    })
}

/// [`blob_landing`]'s files with malformed lines mixed in (lines that are not JSON, and
/// records whose id is not a number), within a dead-letter budget that admits them: the good
/// records must be committed exactly once and the bad ones dead-lettered exactly once.
fn malformed_input(work: &Path, seed: u64) -> Prepared {
    let mut p = blob_landing(work, seed);
    let bad = add_malformed_lines(work, seed ^ 0x5eed, MALFORMED);
    p.spec["spec"]["sink"]["deadLetter"] = json!({"maxRatio": 0.1, "minRecords": 1000});
    p.dead_letters = Some(bad);
    p
}

/// Malformed lines per trial of the malformed-input cells.
const MALFORMED: usize = 30;

/// Insert `count` malformed lines, each unique, at seeded places in the landing files of
/// [`blob_landing`]; returns the lines.
fn add_malformed_lines(work: &Path, seed: u64, count: usize) -> BTreeSet<String> {
    let landing = work.join("landing");
    let mut rng = SplitMix64(seed);
    let mut files: Vec<Vec<String>> = (0..10)
        .map(|f| {
            std::fs::read_to_string(landing.join(format!("part-{f:03}.json")))
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect()
        })
        .collect();
    let mut bad = BTreeSet::new();
    for k in 0..count {
        let line = if k % 2 == 0 {
            format!("{{\"id\": \"bad-{seed:x}-{k}\", \"name\": \"not a number\"}}")
        } else {
            format!("{{\"id\": {k}, \"name\": \"cut short {seed:x}-{k}\"")
        };
        let file = &mut files[rng.between(0, 10) as usize];
        let at = rng.between(0, file.len() as u64 + 1) as usize;
        file.insert(at, line.clone());
        bad.insert(line);
    }
    for (f, lines) in files.iter().enumerate() {
        std::fs::write(
            landing.join(format!("part-{f:03}.json")),
            lines.join("\n") + "\n",
        )
        .unwrap();
    }
    bad
}

/// More malformed lines than the dead-letter budget admits: every run must refuse with exit 1
/// naming the budget, commit nothing beyond what the budget allowed (rows and dead letters
/// each at most once, no dead letter past the budget), and once the budget is raised the rerun
/// must commit every good record and every bad one exactly once: nothing read by the refused
/// runs was lost.
fn over_budget_cell() {
    let kind = "blob-landing (local) with malformed input over the dead-letter budget";
    let seed = seed();
    eprintln!("reliability {kind}: seed {seed} (ARCANE_RELIABILITY_SEED={seed} replays it)");
    let mut rng = SplitMix64(seed);
    let mut tally = Tally::default();
    let started = Instant::now();
    let max_count = 10u64;
    for trial in 0..trials() {
        let work = tempfile::tempdir().unwrap();
        let mut p = blob_landing(work.path(), rng.next_u64());
        let bad = add_malformed_lines(work.path(), rng.next_u64(), MALFORMED);
        p.spec["spec"]["sink"]["deadLetter"] = json!({"maxCount": max_count});
        let refused = Arcane::run(work.path(), &p.spec, &[]).wait();
        tally.runs += 1;
        let message = refused.termination["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if refused.code != 1 || !message.contains("over the budget") {
            tally.bad_exits.push(format!(
                "over the budget: exit {}: {:?}",
                refused.code, refused.termination
            ));
        }
        // What the refused run committed: good records and bad ones at most once each, and
        // no more dead letters than the budget.
        let letters = committed_dead_letters(&p.sink_url);
        let ids = committed_ids(&p.sink_url, &p.read_options);
        let distinct: BTreeSet<i64> = ids.iter().copied().collect();
        let distinct_letters: BTreeSet<String> = letters.iter().cloned().collect();
        tally.duplicated +=
            (ids.len() - distinct.len() + letters.len() - distinct_letters.len()) as u64;
        tally.extra += (distinct.difference(&p.expected).count()
            + distinct_letters.difference(&bad).count()) as u64;
        if letters.len() as u64 > max_count {
            tally.bad_exits.push(format!(
                "over the budget: {} dead letters committed, the budget is {max_count}",
                letters.len()
            ));
        }
        // Raise the budget: the rerun resumes and, once everything is in, stops cleanly.
        p.spec["spec"]["sink"]["deadLetter"] = json!({"maxCount": MALFORMED, "maxRatio": 0.1});
        let rerun = Arcane::run(work.path(), &p.spec, &[]);
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline
            && !rerun.lines().iter().any(|l| l.contains("\"exit_code\""))
        {
            let ids: BTreeSet<i64> = committed_ids(&p.sink_url, &p.read_options)
                .into_iter()
                .collect();
            let letters: BTreeSet<String> =
                committed_dead_letters(&p.sink_url).into_iter().collect();
            if p.expected.is_subset(&ids) && bad.is_subset(&letters) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        rerun.signal(Signal::SIGTERM);
        let rerun = rerun.wait();
        tally.runs += 1;
        if rerun.code != 0 {
            tally.bad_exits.push(format!(
                "rerun within the budget: exit {}: {:?}",
                rerun.code, rerun.termination
            ));
        }
        let ids = committed_ids(&p.sink_url, &p.read_options);
        let distinct: BTreeSet<i64> = ids.iter().copied().collect();
        let letters = committed_dead_letters(&p.sink_url);
        let distinct_letters: BTreeSet<String> = letters.iter().cloned().collect();
        tally.trials += 1;
        tally.dead_letters += letters.len() as u64;
        tally.duplicated +=
            (ids.len() - distinct.len() + letters.len() - distinct_letters.len()) as u64;
        tally.lost += (p.expected.difference(&distinct).count()
            + bad.difference(&distinct_letters).count()) as u64;
        tally.extra += (distinct.difference(&p.expected).count()
            + distinct_letters.difference(&bad).count()) as u64;
        eprintln!("reliability {kind}: trial {trial}: {tally:?}");
    }
    report(
        kind,
        "budget exceeded",
        seed,
        &tally,
        started.elapsed().as_secs_f64(),
    );
    assert!(
        tally.lost == 0 && tally.duplicated == 0 && tally.extra == 0 && tally.bad_exits.is_empty(),
        "{kind}: {tally:#?} (seed {seed})"
    );
}

/// The `http-ingest` kind: senders push N events with unique ids (CloudEvents in batches, and
/// webhooks with an `Idempotency-Key`), retrying every request that did not get a 2xx, while
/// the process is stopped and restarted. Expected: every event sent (all are acknowledged in
/// the end), each once.
fn http_ingest(work: &Path, seed: u64) -> Prepared {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let sink_url = sink_url(work);
    let source = json!({"address": addr, "schema": id_schema()});
    let mut rng = SplitMix64(seed);
    let mut requests = Vec::new();
    let mut next = 0;
    while next < N {
        let size = rng.between(1, 20) as i64;
        let ids: Vec<i64> = (next..(next + size).min(N)).collect();
        next += ids.len() as i64;
        let key = requests.len();
        let request = if rng.between(0, 3) == 0 {
            let body: Vec<Value> = ids
                .iter()
                .map(|i| json!({"id": i, "name": format!("n-{i}")}))
                .collect();
            (
                vec![
                    ("Content-Type", "application/json".to_string()),
                    ("Idempotency-Key", format!("req-{seed:x}-{key}")),
                ],
                Value::Array(body).to_string(),
            )
        } else {
            let body: Vec<Value> = ids
                .iter()
                .map(|i| {
                    json!({"specversion": "1.0", "id": format!("ev-{i}"), "source": "/reliability",
                           "type": "test.event", "data": {"id": i, "name": format!("n-{i}")}})
                })
                .collect();
            (
                vec![(
                    "Content-Type",
                    "application/cloudevents-batch+json".to_string(),
                )],
                Value::Array(body).to_string(),
            )
        };
        requests.push((ids, request));
    }
    let queue = Arc::new(Mutex::new(requests));
    let acked: Arc<Mutex<BTreeSet<i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|i| {
            let (queue, acked, stop, addr) =
                (queue.clone(), acked.clone(), stop.clone(), addr.clone());
            let mut pace = SplitMix64(seed ^ i as u64);
            std::thread::spawn(move || {
                loop {
                    // Popped on its own line: the queue's lock is not held while sending.
                    let next = queue.lock().unwrap().pop();
                    let Some((ids, (headers, body))) = next else {
                        return;
                    };
                    loop {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        if let Ok(200..=299) = post_status(&addr, &headers, &body) {
                            acked.lock().unwrap().extend(ids.iter().copied());
                            // A pause between requests, so that the input arrives over
                            // several runs and the signals land while requests are in flight.
                            std::thread::sleep(Duration::from_millis(pace.between(20, 200)));
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(30));
                    }
                }
            })
        })
        .collect();
    let mut p = Prepared::new(
        spec("HttpIngestStream", source, &sink_url),
        "http-ingest source opening",
        (0..N).collect(),
        sink_url.clone(),
    );
    // Requests are answered once committed: groups of 20 rows (or 1 s) keep the answers
    // coming while requests are in flight, and a run lives long enough for some: 0.4 to 2.5 s.
    p.spec["spec"]["rowsPerGroup"] = json!(20);
    p.run_for = Some((400, 2500));
    p.cleanup(move || {
        stop.store(true, Ordering::SeqCst);
        for s in senders {
            s.join().unwrap();
        }
        // Lost means acknowledged but not committed: the trial ran until everything sent was
        // committed, so every acknowledged event is too.
        let committed: BTreeSet<i64> = committed_ids(&sink_url, &BTreeMap::new())
            .into_iter()
            .collect();
        let acked = acked.lock().unwrap();
        assert!(
            acked.is_subset(&committed),
            "acknowledged but not committed: {:?}",
            acked.difference(&committed).collect::<Vec<_>>()
        );
    })
}

/// Concurrent senders of the http-ingest cells, each with one request in flight.
const SENDERS: usize = 4;

/// One HTTP/1.0 POST; the status, or an error when the connection failed or no answer came.
fn post_status(addr: &str, headers: &[(&str, String)], body: &str) -> std::io::Result<u16> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!(
        "POST /events HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {response:?}")))
}

/// [`rest_api`] with the API behind an HTTP fault proxy on a seeded schedule: 500, 503 and
/// 429 with `Retry-After`, connections closed before and after the API answered, stalls past
/// the source's timeout, and bodies cut short; the source retries under `source.retry`.
fn rest_api_source_faults(work: &Path, seed: u64) -> Prepared {
    use arcane_test_support::http_faults::{Fault as F, FaultProxy, Rule};
    let api = arcane_test_support::rest_api::TestApi::start_shuffled(N as u64, seed);
    let mut p = rest_api_on(work, &api);
    let proxy = FaultProxy::start(
        &api.base_url(),
        seed,
        vec![
            Rule::any(F::Status(500), 0.03),
            Rule::any(F::Status(503), 0.03),
            Rule::any(F::Status(429), 0.03),
            Rule::any(F::ResetBefore, 0.02),
            Rule::any(F::ResetAfter, 0.02),
            Rule::any(F::Stall(Duration::from_millis(1500)), 0.01),
            Rule::any(F::Truncate, 0.03),
        ],
    );
    let url = p.spec["spec"]["source"]["url"]
        .as_str()
        .unwrap()
        .replace(&api.base_url(), &proxy.url());
    p.spec["spec"]["source"]["url"] = json!(url);
    p.spec["spec"]["source"]["httpTimeout"] = json!("1s");
    p.spec["spec"]["source"]["retry"] =
        json!({"maxAttempts": 6, "initialDelay": "20ms", "maxDelay": "200ms"});
    p.proxy_faults = true;
    p.cleanup(move || {
        eprintln!("source faults injected: {:?}", proxy.injected());
        drop(proxy);
        drop(api);
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
    postgres_slow_link_cuts: "postgres-cdc with connections cut over a slow link",
        with_slow_link_and_cuts(postgres, 5432, "connection");
    http_ingest_senders: "http-ingest", http_ingest;
    rest_api_http_faults: "rest-api with source faults", rest_api_source_faults;
    malformed_within_budget: "blob-landing (local) with malformed input", malformed_input;
    rabbitmq_connection_cuts: "rabbitmq with connections cut",
        with_connection_cuts(rabbitmq, 5672, "port");
}

/// Malformed input over the dead-letter budget: refused, and nothing lost (no signal).
#[test]
fn malformed_over_budget() {
    over_budget_cell();
}
