//! The `arcane` binary end to end with the broker kinds against the servers on this machine
//! (NATS JetStream 4222, RabbitMQ 5672, Mosquitto 1883): messages published (some malformed),
//! the process SIGKILLed or SIGTERMed at random moments and restarted until everything is
//! committed, then the Parquet output read back: every well-formed message exactly once (NATS,
//! RabbitMQ with a publisher sequence) or at least once with duplicates bounded by the
//! unacknowledged window per crash (MQTT), and the malformed ones dead-lettered.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use arcane_test_support::brokers::{NatsStream, RabbitQueue, mqtt_publish};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use support::*;

fn uniq(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn payload(i: i64, bad: &BTreeSet<i64>) -> String {
    if bad.contains(&i) {
        format!("{{\"id\": \"malformed {i}\"")
    } else {
        format!("{{\"id\": {i}, \"name\": \"n-{i}\"}}")
    }
}

const N: i64 = 3000;
/// Messages of the MQTT test (see the queue limit there).
const N_MQTT: i64 = 1500;

fn bad_ids() -> BTreeSet<i64> {
    (0..N).filter(|i| i % 397 == 7).collect()
}

fn spec(kind: &str, source: Value, sink_url: &str) -> Value {
    json!({
        "apiVersion": "streaming.sneaksanddata.com/v1",
        "kind": kind,
        "metadata": {"name": "brokers"},
        "spec": {
            "source": source,
            "sink": {"url": sink_url, "rolling": {"maxFileAge": "200ms"}},
            "rowsPerGroup": 400,
            "groupingIntervalSeconds": 1
        }
    })
}

fn schema() -> Value {
    json!({"format": "json", "schema": [
        {"name": "id", "type": "int64", "nullable": false},
        {"name": "name", "type": "utf8"}
    ]})
}

fn committed_ids(sink_url: &str) -> Vec<i64> {
    rows_as_json(&read_committed(sink_url, &BTreeMap::new()))
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

/// Dead-lettered payloads under `{sink}/_dead_letters`.
fn dead_letter_payloads(sink_dir: &Path) -> Vec<String> {
    let dir = sink_dir.join("_dead_letters");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "parquet") {
            let file = std::fs::File::open(&path).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .build()
                    .unwrap();
            let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
            for r in rows_as_json(&batches) {
                out.push(r["payload"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    out
}

/// Run `spec` until `done(committed ids)`, stopping every run after a random delay with
/// SIGKILL or SIGTERM. Returns the number of SIGKILLs.
fn run_with_restarts(
    work: &Path,
    spec: &Value,
    opening: &str,
    sink_url: &str,
    done: impl Fn(&[i64]) -> bool,
) -> usize {
    let mut seed: u64 = 0x5eed_b20c_e250_0001;
    let mut kills = 0;
    for run in 1.. {
        assert!(run <= 40, "not done after {run} runs");
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = Duration::from_millis(300 + (seed >> 33) % 1200);
        let kill = (seed >> 13).is_multiple_of(2);
        let proc = Arcane::run(work, spec, &[]);
        proc.wait_for_log(opening);
        let all_in = done(&committed_ids(sink_url));
        std::thread::sleep(delay);
        proc.signal(if kill {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        });
        let exit = proc.wait();
        if kill {
            kills += 1;
            assert_eq!(exit.code, -1);
        } else {
            assert_eq!(exit.code, 0, "{:#?}", exit.lines);
            assert_eq!(exit.summary("rowsUncommitted"), 0);
        }
        if all_in {
            break;
        }
    }
    kills
}

fn assert_exactly_once(ids: Vec<i64>, bad: &BTreeSet<i64>) {
    let expected: Vec<i64> = (0..N).filter(|i| !bad.contains(i)).collect();
    let mut sorted = ids;
    sorted.sort();
    let distinct: BTreeSet<i64> = sorted.iter().copied().collect();
    assert_eq!(distinct.len(), sorted.len(), "duplicates in the output");
    assert_eq!(sorted, expected);
}

fn assert_dead_lettered(sink_dir: &Path, bad: &BTreeSet<i64>) {
    let payloads = dead_letter_payloads(sink_dir);
    for i in bad {
        assert!(
            payloads
                .iter()
                .any(|p| p.contains(&format!("malformed {i}\""))),
            "malformed message {i} not dead-lettered: {payloads:#?}"
        );
    }
}

#[test]
fn nats_jetstream_kills_and_restarts_land_every_message_exactly_once() {
    let rt = runtime();
    let name = uniq("E2E").replace('-', "_");
    let subject = format!("e2e.{name}");
    let bad = bad_ids();
    let stream = rt.block_on(NatsStream::create(
        &name,
        &subject,
        (0..N).map(|i| payload(i, &bad)),
    ));
    let work = tempfile::tempdir().unwrap();
    let sink_dir = work.path().join("out");
    let sink_url = format!("file://{}", sink_dir.display());
    let source = json!({
        "url": "nats://127.0.0.1:4222",
        "stream": name,
        "consumer": "arcane",
        "payload": schema(),
        "batchRows": 100,
        "batchTimeout": "50ms"
    });
    let spec = spec("NatsJetstreamStream", source, &sink_url);
    let expected_rows = N as usize - bad.len();
    run_with_restarts(
        work.path(),
        &spec,
        "nats-jetstream source opening",
        &sink_url,
        |ids| ids.len() >= expected_rows,
    );
    assert_exactly_once(committed_ids(&sink_url), &bad);
    assert_dead_lettered(&sink_dir, &bad);
    rt.block_on(stream.delete());
}

#[test]
fn rabbitmq_kills_and_restarts_land_every_message_exactly_once() {
    let rt = runtime();
    let queue = uniq("arcane-e2e");
    let bad = bad_ids();
    let q = rt.block_on(async {
        let q = RabbitQueue::declare(&queue).await;
        q.publish_sequenced("x-seq", 1, (0..N).map(|i| payload(i, &bad).into_bytes()))
            .await;
        q
    });
    let work = tempfile::tempdir().unwrap();
    let sink_dir = work.path().join("out");
    let sink_url = format!("file://{}", sink_dir.display());
    let source = json!({
        "host": "127.0.0.1",
        "queue": queue,
        "sequence": {"header": "x-seq"},
        "payload": schema(),
        "batchRows": 100,
        "batchTimeout": "50ms"
    });
    // The password comes from a file (credentials from env/files).
    let password_file = work.path().join("password");
    std::fs::write(&password_file, "guest\n").unwrap();
    let mut source = source;
    source["password"] = json!({"file": password_file.display().to_string()});
    let spec = spec("RabbitmqStream", source, &sink_url);
    let expected_rows = N as usize - bad.len();
    run_with_restarts(
        work.path(),
        &spec,
        "rabbitmq source opening",
        &sink_url,
        |ids| ids.len() >= expected_rows,
    );
    assert_exactly_once(committed_ids(&sink_url), &bad);
    assert_dead_lettered(&sink_dir, &bad);
    rt.block_on(q.delete());
}

#[test]
fn mqtt_kills_and_restarts_land_every_message_at_least_once() {
    let rt = runtime();
    let client_id = uniq("arcane-e2e");
    let topic = format!("arcane/e2e/{}", uniq("t"));
    let bad: BTreeSet<i64> = bad_ids().into_iter().filter(|i| *i < N_MQTT).collect();
    let work = tempfile::tempdir().unwrap();
    let sink_dir = work.path().join("out");
    let sink_url = format!("file://{}", sink_dir.display());
    // Mosquitto queues at most 1000 messages per session beyond the in-flight window (then
    // drops), so the window is large enough for every message of this test.
    let receive_maximum = 1000;
    let source = json!({
        "host": "127.0.0.1",
        "clientId": client_id,
        "topics": [topic],
        "payload": schema(),
        "batchRows": 100,
        "batchTimeout": "50ms",
        "receiveMaximum": receive_maximum,
        "sessionExpiry": "10m"
    });
    let spec = spec("MqttStream", source, &sink_url);
    // A first run creates the persistent session; then everything published is kept for it
    // (Mosquitto queues up to 1000 messages beyond the in-flight window while it is offline,
    // so the messages are published while a run is connected).
    let first = Arcane::run(work.path(), &spec, &[]);
    // Published messages reach the session only once the broker acknowledged the subscription.
    first.wait_for_log("\"message\":\"subscribed\"");
    rt.block_on(mqtt_publish(
        &uniq("pub"),
        &topic,
        (0..N_MQTT).map(|i| payload(i, &bad)).collect(),
    ));
    first.signal(Signal::SIGTERM);
    assert_eq!(first.wait().code, 0);
    let expected: BTreeSet<i64> = (0..N_MQTT).filter(|i| !bad.contains(i)).collect();
    let kills = run_with_restarts(
        work.path(),
        &spec,
        "mqtt source opening",
        &sink_url,
        |ids| {
            let got: BTreeSet<i64> = ids.iter().copied().collect();
            got == expected
        },
    );
    let ids = committed_ids(&sink_url);
    let distinct: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(distinct, expected, "a well-formed message is missing");
    // Duplicates come only from crashes, at most the unacknowledged window each.
    let duplicates = ids.len() - distinct.len();
    assert!(
        duplicates <= kills * receive_maximum,
        "{duplicates} duplicates after {kills} kills"
    );
    assert_dead_lettered(&sink_dir, &bad);
}
