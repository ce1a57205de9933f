//! Load client for the `http-ingest` kind: `--senders` concurrent senders each POST CloudEvents
//! to `--url` one request after the other for `--seconds`, `--events` events per request
//! (1: structured mode, `application/cloudevents+json`; more: batch mode,
//! `application/cloudevents-batch+json`), and the client records the latency of every request
//! from its send to its answer. The endpoint answers 200 only once the request's events are in
//! a committed Parquet file, so that latency is the acknowledgement latency.
//!
//! A request answered anything but 200 (429, 503, a connection error) is retried with the same
//! events and counted; its latency is not recorded. At the end one line of `key=value` pairs:
//! events acknowledged, events/s, p50/p90/p99/max latency of the acknowledged requests in ms.
//! Every event has a unique `(source, id)`, so the committed row count must equal
//! `events_acked` (`benches/http_ingest/run.sh` checks it with `arcane show`).
//!
//! ```text
//! cargo build --release -p arcane-benches --bin http_ingest_load
//! target/release/http_ingest_load --url http://127.0.0.1:8080/events --senders 16 --events 100 --seconds 20
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

/// One sender's record.
#[derive(Default)]
struct Tally {
    /// Latency of each acknowledged request, in microseconds.
    latencies_us: Vec<u64>,
    events_acked: u64,
    /// Answers other than 200, and connection errors.
    refused: u64,
    errors: u64,
}

fn body(sender: usize, first: u64, events: u64, payload: &str) -> (String, &'static str) {
    let event = |n: u64| {
        serde_json::json!({
            "specversion": "1.0",
            "id": format!("s{sender}-{n}"),
            "source": format!("/bench/sender-{sender}"),
            "type": "bench.event",
            "time": "2026-12-04T12:00:00Z",
            "data": {"sender": sender, "n": n, "payload": payload},
        })
    };
    if events == 1 {
        (event(first).to_string(), "application/cloudevents+json")
    } else {
        let batch: Vec<_> = (first..first + events).map(event).collect();
        (
            serde_json::Value::Array(batch).to_string(),
            "application/cloudevents-batch+json",
        )
    }
}

async fn sender(
    client: reqwest::Client,
    url: String,
    sender: usize,
    events: u64,
    until: Instant,
    payload: String,
) -> Tally {
    let mut tally = Tally::default();
    let mut next = 0u64;
    while Instant::now() < until {
        let (body, content_type) = body(sender, next, events, &payload);
        // The same request until it is acknowledged (a retry is deduplicated by the endpoint).
        loop {
            let start = Instant::now();
            let answer = client
                .post(&url)
                .header("Content-Type", content_type)
                .body(body.clone())
                .send()
                .await;
            match answer {
                Ok(r) if r.status() == reqwest::StatusCode::OK => {
                    let _ = r.bytes().await;
                    tally
                        .latencies_us
                        .push(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
                    tally.events_acked += events;
                    break;
                }
                Ok(r) => {
                    tally.refused += 1;
                    let _ = r.bytes().await;
                }
                Err(_) => tally.errors += 1,
            }
            if Instant::now() >= until + Duration::from_secs(60) {
                panic!("sender {sender}: a request was not acknowledged within 60 s of the end");
            }
            // A refused request waits a little before its retry (the server says Retry-After;
            // a benchmark retries after 10 ms to keep the pressure on).
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        next += events;
    }
    tally
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn main() {
    let url = arg("--url", "http://127.0.0.1:8080/events");
    let senders: usize = arg("--senders", "1").parse().expect("--senders");
    let events: u64 = arg("--events", "1").parse().expect("--events");
    let seconds: f64 = arg("--seconds", "20").parse().expect("--seconds");
    let payload_bytes: usize = arg("--payload-bytes", "100")
        .parse()
        .expect("--payload-bytes");
    let label = arg("--label", "-");
    assert!(
        senders > 0 && events > 0,
        "--senders and --events must be > 0"
    );
    let payload = "x".repeat(payload_bytes);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let tallies: Vec<Tally> = rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(senders)
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let tasks: Vec<_> = (0..senders)
            .map(|s| {
                tokio::spawn(sender(
                    client.clone(),
                    url.clone(),
                    s,
                    events,
                    until,
                    payload.clone(),
                ))
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let wall = start.elapsed().as_secs_f64();
    let mut latencies: Vec<u64> = tallies
        .iter()
        .flat_map(|t| t.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let acked: u64 = tallies.iter().map(|t| t.events_acked).sum();
    let refused: u64 = tallies.iter().map(|t| t.refused).sum();
    let errors: u64 = tallies.iter().map(|t| t.errors).sum();
    println!(
        "label={label} senders={senders} events_per_request={events} wall_s={wall:.1} requests_acked={} events_acked={acked} events_s={:.0} p50_ms={:.0} p90_ms={:.0} p99_ms={:.0} max_ms={:.0} refused={refused} errors={errors}",
        latencies.len(),
        acked as f64 / wall,
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 100.0),
    );
}
