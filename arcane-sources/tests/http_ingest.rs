//! The `http-ingest` source in a graph over the in-memory sink, with a real HTTP client:
//! answers held until the commit, duplicates dropped (also after a restart, also for a request
//! a commit split in two), a failing commit answered 503, and the refusals (400, 401, 403, 413,
//! 415, 429) with the message naming what is wrong.
#![cfg(feature = "http-ingest")]

use std::num::NonZeroUsize;
use std::time::Duration;

use arcane_core::testing::{MemorySink, MemoryStoreHandle};
use arcane_core::{GroupLimits, RunningStream, StreamContext, StreamGraph};
use arcane_sources::http_ingest::{HttpIngestSource, HttpIngestSourceConfig};
use arrow_array::cast::AsArray;
use serde_json::{Value, json};

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn config(addr: &str) -> HttpIngestSourceConfig {
    serde_json::from_value(json!({
        "address": addr,
        "schema": [{"name": "n", "type": "int64", "nullable": false}],
    }))
    .unwrap()
}

fn start(config: HttpIngestSourceConfig, sink: MemorySink, rows: usize) -> RunningStream {
    let limits = GroupLimits::new(NonZeroUsize::new(rows).unwrap(), Duration::from_secs(1));
    let ctx = StreamContext::new("ingest", "http-ingest", json!({}));
    StreamGraph::from_source(HttpIngestSource::new(config).unwrap())
        .grouped_within(limits)
        .to_sink(sink)
        .run(&ctx)
}

async fn post(
    addr: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        let mut req = client
            .post(format!("http://{addr}/events"))
            .header("content-type", content_type)
            .body(body.clone());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap();
                return (
                    status,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                );
            }
            // Not listening yet.
            Err(e) if e.is_connect() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("request failed: {e}"),
        }
    }
    panic!("the source never listened on {addr}");
}

fn event(id: &str, n: i64) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "/test", "type": "t", "data": {"n": n}})
}

fn committed_ns(store: &MemoryStoreHandle) -> Vec<i64> {
    let mut out = Vec::new();
    for b in store.batches() {
        let col = b.column_by_name("n").unwrap();
        out.extend(
            col.as_primitive::<arrow_array::types::Int64Type>()
                .values()
                .iter()
                .copied(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_wait_for_the_commit_and_duplicates_are_dropped() {
    let addr = free_addr();
    let sink = MemorySink::new();
    let store = sink.store();
    let running = start(config(&addr), sink, 1000);

    let (status, body) = post(
        &addr,
        "application/cloudevents+json",
        &[],
        event("e1", 1).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(
        committed_ns(&store),
        vec![1],
        "answered only once committed"
    );

    // Binary mode, batch mode (with a retried event), NDJSON webhooks.
    let (status, body) = post(
        &addr,
        "application/json",
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "e2"),
            ("ce-source", "/test"),
            ("ce-type", "t"),
        ],
        json!({"n": 2}).to_string(),
    )
    .await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (200, json!(1)),
        "{body}"
    );
    let batch = json!([event("e1", 1), event("e3", 3), event("e4", 4)]).to_string();
    let (status, body) = post(&addr, "application/cloudevents-batch+json", &[], batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].clone(), body["duplicates"].clone()),
        (json!(2), json!(1))
    );
    let (status, body) = post(
        &addr,
        "application/x-ndjson",
        &[("idempotency-key", "hook-1")],
        "{\"n\": 5}\n{\"n\": 6}\n".into(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &addr,
        "application/x-ndjson",
        &[("idempotency-key", "hook-1")],
        "{\"n\": 5}\n{\"n\": 6}\n".into(),
    )
    .await;
    assert_eq!(
        (status, body["duplicates"].clone()),
        (200, json!(2)),
        "{body}"
    );

    let mut ns = committed_ns(&store);
    ns.sort();
    assert_eq!(ns, vec![1, 2, 3, 4, 5, 6]);

    running.kill_switch.shutdown();
    let report = running.join().await;
    assert!(report.outcome.is_ok(), "{:?}", report.outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_what_is_wrong() {
    let addr = free_addr();
    // The secret is read from an environment variable; the test cannot set one (the process's
    // environment is shared), so it signs with one every process has.
    let var = "PATH";
    let secret = std::env::var(var).unwrap();
    let mut config = config(&addr);
    config.allowed_sources = vec!["/test*".into()];
    config.max_body_bytes = 2048;
    config.max_in_flight_bytes = 4096;
    config.max_events_per_request = 3;
    config.auth = Some(serde_json::from_value(json!({"hmacSecretEnv": var})).unwrap());
    let sink = MemorySink::new();
    let store = sink.store();
    let running = start(config, sink, 1000);

    let sign = |body: &str| {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
        let tag = aws_lc_rs::hmac::sign(&key, body.as_bytes());
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    };
    let good = event("ok", 1).to_string();
    let (status, body) = post(
        &addr,
        "application/cloudevents+json",
        &[("x-hub-signature-256", &sign(&good))],
        good.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = post(
        &addr,
        "application/cloudevents+json",
        &[("x-hub-signature-256", "sha256=00")],
        good.clone(),
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("signature does not match"),
        "{body}"
    );
    assert!(
        !body.to_string().contains(&secret),
        "never echoes the secret"
    );

    let missing =
        json!({"specversion": "1.0", "source": "/test", "type": "t", "data": {"n": 1}}).to_string();
    let (status, body) = post(
        &addr,
        "application/cloudevents+json",
        &[("x-hub-signature-256", &sign(&missing))],
        missing,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "invalid event: [0].id: required attribute is missing"
    );

    let malformed = "{\"specversion\": ".to_string();
    let (status, body) = post(
        &addr,
        "application/cloudevents+json",
        &[("x-hub-signature-256", &sign(&malformed))],
        malformed,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("body: malformed JSON"),
        "{body}"
    );

    let stranger =
        json!({"specversion": "1.0", "id": "x", "source": "/other", "type": "t", "data": {"n": 1}})
            .to_string();
    let (status, body) = post(
        &addr,
        "application/cloudevents+json",
        &[("x-hub-signature-256", &sign(&stranger))],
        stranger,
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("\"/other\" may not write"),
        "{body}"
    );

    let big = json!([event("a", 1), event("b", 2), event("c", 3), event("d", 4)]).to_string();
    let (status, body) = post(
        &addr,
        "application/cloudevents-batch+json",
        &[("x-hub-signature-256", &sign(&big))],
        big,
    )
    .await;
    assert_eq!(status, 413);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("maxEventsPerRequest"),
        "{body}"
    );

    let huge = format!("[{}]", vec![event("z", 0).to_string(); 40].join(","));
    let (status, body) = post(&addr, "application/cloudevents-batch+json", &[], huge).await;
    assert_eq!(status, 413);
    assert!(
        body["error"].as_str().unwrap().contains("maxBodyBytes"),
        "{body}"
    );

    let (status, _) = post(&addr, "text/csv", &[], "a,b".into()).await;
    assert_eq!(status, 415);

    assert_eq!(committed_ns(&store), vec![1], "nothing refused was written");
    running.kill_switch.shutdown();
    assert!(running.join().await.outcome.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_is_answered_503_and_a_restart_dedupes_a_split_request() {
    let addr = free_addr();
    let store = MemoryStoreHandle::default();
    // Groups of 3 rows: the request's 5 events are split; the first group commits, the second
    // write fails.
    let sink = MemorySink::with_store(store.clone()).fail_after_writes(1);
    let running = start(config(&addr), sink, 3);
    let request = json!([
        event("a", 1),
        event("b", 2),
        event("c", 3),
        event("d", 4),
        event("e", 5)
    ])
    .to_string();
    let (status, body) = post(
        &addr,
        "application/cloudevents-batch+json",
        &[],
        request.clone(),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let report = running.join().await;
    assert!(report.outcome.is_err());
    assert_eq!(
        committed_ns(&store),
        vec![1, 2, 3],
        "the first group committed"
    );

    // The sender retries against the restarted stream: only the two events not committed are
    // written.
    let addr = free_addr();
    let running = start(config(&addr), MemorySink::with_store(store.clone()), 1000);
    let (status, body) = post(&addr, "application/cloudevents-batch+json", &[], request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].clone(), body["duplicates"].clone()),
        (json!(2), json!(3))
    );
    assert_eq!(committed_ns(&store), vec![1, 2, 3, 4, 5]);
    running.kill_switch.shutdown();
    assert!(running.join().await.outcome.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_not_committed_in_time_is_answered_503_and_its_retry_is_deduplicated() {
    let addr = free_addr();
    let mut slow = config(&addr);
    slow.request_timeout = Duration::from_millis(500);
    slow.retry_after_seconds = 7;
    let sink = MemorySink::new();
    let store = sink.store();
    // Groups wait 30 s for rows: nothing commits before the timeout.
    let limits = GroupLimits::new(NonZeroUsize::new(1000).unwrap(), Duration::from_secs(30));
    let ctx = StreamContext::new("ingest", "http-ingest", json!({}));
    let running = StreamGraph::from_source(HttpIngestSource::new(slow).unwrap())
        .grouped_within(limits)
        .to_sink(sink)
        .run(&ctx);
    let body = event("slow", 7).to_string();
    // Wait until it listens (this webhook too times out; it is committed at the stop).
    let (status, _) = post(&addr, "application/json", &[], "{\"n\": 0}".into()).await;
    assert_eq!(status, 503);
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/"))
        .header("content-type", "application/cloudevents+json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["retry-after"], "7");
    let text = resp.text().await.unwrap();
    assert!(text.contains("requestTimeout"), "{text}");

    // A stop commits what was accepted; the retry after a restart is a duplicate.
    running.kill_switch.shutdown();
    assert!(running.join().await.outcome.is_ok());
    assert_eq!(committed_ns(&store), vec![0, 7]);
    let addr = free_addr();
    let running = start(config(&addr), MemorySink::with_store(store.clone()), 1000);
    let (status, answer) = post(&addr, "application/cloudevents+json", &[], body).await;
    assert_eq!(
        (status, answer["duplicates"].clone()),
        (200, json!(1)),
        "{answer}"
    );
    assert_eq!(committed_ns(&store), vec![0, 7]);
    running.kill_switch.shutdown();
    assert!(running.join().await.outcome.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_is_answered_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let addr = free_addr();
    let mut slow = config(&addr);
    slow.request_timeout = Duration::from_millis(300);
    let running = start(slow, MemorySink::new(), 1000);
    // Wait until it listens (the commit takes longer than the timeout: 503).
    let (status, _) = post(
        &addr,
        "application/cloudevents+json",
        &[],
        event("a", 1).to_string(),
    )
    .await;
    assert_eq!(status, 503);
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: 100\r\n\r\n{\"n\":")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("requestTimeout"), "{response}");
    running.kill_switch.shutdown();
    assert!(running.join().await.outcome.is_ok());
}
