//! The NATS JetStream source against the NATS server on 127.0.0.1:4222: exact resume, dead
//! letters and metadata, acks only after commit, backpressure through `maxAckPending`, a
//! whole graph landing every well-formed message once, and messages lost with a cut connection
//! read again.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use arcane_core::testing::{MemorySink, conformance};
use arcane_core::{Checkpoint, Source};
use arcane_sources::broker::{FieldConfig, PayloadConfig};
use arcane_sources::nats::{NatsPosition, NatsSource, NatsSourceConfig};
use async_nats::jetstream;
use futures::StreamExt;
use support::*;

const URL: &str = "nats://127.0.0.1:4222";

/// A stream of its own, deleted on drop.
struct TestStream {
    js: jetstream::Context,
    name: String,
    subject: String,
}

impl TestStream {
    async fn new(tag: &str) -> Self {
        let client = async_nats::connect(URL)
            .await
            .expect("NATS on 127.0.0.1:4222");
        let js = jetstream::new(client);
        let uniq = format!(
            "{tag}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let name = format!("T_{uniq}");
        let subject = format!("t.{uniq}");
        js.create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{subject}.>")],
            ..Default::default()
        })
        .await
        .expect("create stream");
        Self { js, name, subject }
    }

    /// Publish `{"id": i}` for `ids`, and a malformed payload for every id in `bad`.
    async fn publish(&self, ids: std::ops::Range<i64>, bad: &BTreeSet<i64>) {
        let mut acks = Vec::new();
        for i in ids {
            let payload = if bad.contains(&i) {
                format!("{{\"id\": \"not a number {i}\"")
            } else {
                format!("{{\"id\": {i}, \"name\": \"n-{i}\"}}")
            };
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("origin", "test");
            acks.push(
                self.js
                    .publish_with_headers(
                        format!("{}.{}", self.subject, i % 3),
                        headers,
                        payload.into(),
                    )
                    .await
                    .expect("publish"),
            );
            // The context bounds the acks in flight: await them as they pile up.
            if acks.len() == 500 {
                for a in acks.drain(..) {
                    a.await.expect("publish ack");
                }
            }
        }
        for a in acks {
            a.await.expect("publish ack");
        }
    }

    fn config(&self, consumer: &str) -> NatsSourceConfig {
        let mut c = NatsSourceConfig::new(
            URL,
            &self.name,
            consumer,
            PayloadConfig::json(vec![
                FieldConfig::new("id", "int64").required(),
                FieldConfig::new("name", "utf8"),
            ]),
        );
        c.batch_rows = 40;
        c.batch_timeout = Duration::from_millis(50);
        c
    }

    async fn consumer_info(&self, consumer: &str) -> jetstream::consumer::Info {
        let stream = self.js.get_stream(&self.name).await.unwrap();
        let mut c: jetstream::consumer::PullConsumer = stream.get_consumer(consumer).await.unwrap();
        c.info().await.unwrap().clone()
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let js = self.js.clone();
        let name = self.name.clone();
        // Best effort: the test runtime may already be gone.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = js.delete_stream(name).await;
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_resumes_exactly_with_malformed_messages() {
    let s = TestStream::new("conf").await;
    s.publish(0..300, &BTreeSet::from([0, 5, 41, 42, 199, 299]))
        .await;
    let config = s.config("conf");
    conformance::source_resumes_exactly(|| {
        Box::new(NatsSource::new(config.clone()).unwrap()) as Box<dyn Source>
    })
    .await;
    conformance::source_survives_stop_and_abort(|| {
        Box::new(NatsSource::new(config.clone()).unwrap()) as Box<dyn Source>
    })
    .await;
    let _ = s.js.delete_stream(&s.name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_reads_every_good_message_once_and_dead_letters_the_rest() {
    let s = TestStream::new("dl").await;
    let bad = BTreeSet::from([3, 77, 149]);
    s.publish(0..150, &bad).await;
    let mut config = s.config("dl");
    config.payload.metadata_columns = true;
    let mut source = NatsSource::new(config).unwrap();
    let (batches, letters) = read_backfill(&mut source, None).await;
    let rows = rows_of(&batches);
    let expected: Vec<i64> = (0..150).filter(|i| !bad.contains(i)).collect();
    assert_eq!(ids(&rows), expected);
    // Metadata columns.
    let subjects = strings(&rows, "_subject");
    assert_eq!(subjects[0], format!("{}.0", s.subject));
    assert!(
        strings(&rows, "_headers")
            .iter()
            .all(|h| h == r#"{"origin":"test"}"#)
    );
    assert!(
        rows.iter()
            .all(|b| b.column_by_name("_timestamp").unwrap().null_count() == 0)
    );
    // Dead letters name the sequence (ids start at sequence 1) and keep the payload.
    let locators: Vec<&str> = letters.iter().map(|l| l.locator.as_str()).collect();
    assert_eq!(locators, ["sequence 4", "sequence 78", "sequence 150"]);
    assert!(
        letters[0]
            .payload
            .as_deref()
            .unwrap()
            .contains("not a number 3")
    );
    assert!(letters.iter().all(|l| l.origin.contains(&s.name)));
    // The last position is the stream's last sequence (a dead letter).
    let last: NatsPosition = batches.last().unwrap().position.decode("t").unwrap();
    assert_eq!(last.stream_sequence, 150);
    let _ = s.js.delete_stream(&s.name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_follow_commits_and_max_ack_pending_bounds_what_is_read() {
    let s = TestStream::new("ack").await;
    s.publish(0..500, &BTreeSet::new()).await;
    let mut config = s.config("ack");
    config.max_unacked = Some(100);
    let mut source = NatsSource::new(config).unwrap();
    let mut stream = open_stream(&mut source).await;
    let mut read = Vec::new();
    while ids(&read).len() < 100 {
        read.push(stream.next().await.unwrap().unwrap().batch);
    }
    // Nothing committed: nothing acked, and the server holds back the rest.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let info = s.consumer_info("ack").await;
    assert_eq!(info.ack_floor.stream_sequence, 0);
    assert_eq!(info.num_ack_pending, 100);
    let next = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
    assert!(next.is_err(), "read past maxAckPending without a commit");
    // Commit the first 80 rows (two batches of 40): acked through sequence 80.
    source
        .commit(&Checkpoint::at(
            arcane_core::Position::encode(&NatsPosition {
                stream_sequence: 80,
            })
            .unwrap(),
        ))
        .await
        .unwrap();
    eventually_async(|| async { s.consumer_info("ack").await.ack_floor.stream_sequence == 80 })
        .await;
    // Now more is delivered.
    let more = stream.next().await.unwrap().unwrap();
    assert_eq!(ids(&[more.batch])[0], 100);
    drop(stream);
    let _ = s.js.delete_stream(&s.name).await;
}

async fn eventually_async<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_lands_every_good_message_once_and_the_dead_letters() {
    let s = TestStream::new("graph").await;
    let bad = BTreeSet::from([10, 500, 999]);
    s.publish(0..1000, &bad).await;
    let store = MemorySink::new().store();
    let letters = Letters::default();
    let report = land(
        NatsSource::new(s.config("graph")).unwrap(),
        store.clone(),
        letters.clone(),
    )
    .await;
    assert_finished(&report);
    let mut got = ids(&store.batches());
    got.sort();
    let expected: Vec<i64> = (0..1000).filter(|i| !bad.contains(i)).collect();
    assert_eq!(got, expected);
    assert_eq!(letters.all().len(), 3);
    let info = s.consumer_info("graph").await;
    assert_eq!(
        info.ack_floor.stream_sequence, 1000,
        "everything acked after the commits"
    );
    let _ = s.js.delete_stream(&s.name).await;
}

/// Many more messages than `maxAckPending`, with a group size that divides neither it nor the
/// batch size: the acks sent on commit must keep freeing the window, so the backfill lands
/// everything without waiting for `ackWait` redeliveries. The timeout only detects a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_lands_far_more_than_max_ack_pending_without_stalling() {
    let s = TestStream::new("window").await;
    let n = 20_000;
    s.publish(0..n, &BTreeSet::new()).await;
    let mut config = s.config("window");
    config.max_unacked = Some(1000);
    config.batch_rows = 300;
    let store = MemorySink::new().store();
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        land_with(
            NatsSource::new(config).unwrap(),
            store.clone(),
            Letters::default(),
            700,
            Duration::from_secs(30),
        ),
    )
    .await
    .expect("the graph stalled: acks on commit did not free maxAckPending");
    assert_finished(&report);
    let mut got = ids(&store.batches());
    got.sort();
    assert_eq!(got, (0..n).collect::<Vec<_>>());
    let _ = s.js.delete_stream(&s.name).await;
}

/// Messages the server sent while the connection was dying never arrive; the pull request they
/// answered may still be open after the client reconnects, and the server goes on filling it
/// with the messages after them. The source must notice the gap and read the lost ones again
/// instead of carrying on after them. Every round: read what is there, hold the server's
/// messages at the proxy, publish a few (they are sent into the held connection and lost with
/// it), cut, and publish more as soon as the client is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_lost_with_a_cut_connection_are_read_again_not_skipped() {
    use arcane_test_support::proxy::Proxy;
    let s = TestStream::new("gap").await;
    let proxy = Proxy::start(([127, 0, 0, 1], 4222).into()).await;
    let mut config = s.config("gap");
    config.url = format!("nats://127.0.0.1:{}", proxy.port());
    config.batch_rows = 50;
    config.batch_timeout = Duration::from_millis(20);
    config.max_unacked = Some(100_000);
    config.retry.max_attempts = 50;
    config.retry.initial_delay = Duration::from_millis(10);
    config.retry.max_delay = Duration::from_millis(50);
    let mut source = NatsSource::new(config).unwrap();
    let mut stream = open_stream(&mut source).await;
    let mut got: Vec<i64> = Vec::new();
    let mut published = 0i64;
    for round in 0..12 {
        s.publish(published..published + 30, &BTreeSet::new()).await;
        published += 30;
        read_ids_until(&mut stream, &mut got, published).await;
        // The client has an open pull request now (it asks for more before it runs out).
        proxy.pause(true);
        s.publish(published..published + 10, &BTreeSet::new()).await;
        published += 10;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = proxy.accepted();
        proxy.cut();
        proxy.pause(false);
        let back = tokio::time::Instant::now() + Duration::from_secs(20);
        while proxy.accepted() == before {
            assert!(
                tokio::time::Instant::now() < back,
                "round {round}: no reconnect"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        s.publish(published..published + 30, &BTreeSet::new()).await;
        published += 30;
        read_ids_until(&mut stream, &mut got, published).await;
        assert_eq!(
            got,
            (0..published).collect::<Vec<_>>(),
            "round {round}: every message once, in order"
        );
    }
    drop(stream);
    let _ = s.js.delete_stream(&s.name).await;
}

/// Read batches from `stream` into `got` until it holds `n` ids (30 s at most).
async fn read_ids_until(stream: &mut arcane_core::PositionedStream, got: &mut Vec<i64>, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (got.len() as i64) < n {
        let item = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {n} ids read after 30 s: {got:?}", got.len()))
            .expect("the stream ended")
            .expect("a batch");
        got.extend(ids(std::slice::from_ref(&item.batch)));
    }
}
