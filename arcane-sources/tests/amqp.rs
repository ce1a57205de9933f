//! The RabbitMQ source against the broker on 127.0.0.1:5672 (guest/guest): exact resume with a
//! publisher sequence, duplicates after a lost ack, dead letters, declared topology, acks only
//! after commit and a prefetch that bounds what is read.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use amqprs::channel::{
    BasicPublishArguments, Channel, QueueDeclareArguments, QueueDeleteArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{BasicProperties, FieldTable, FieldValue};
use arcane_core::testing::MemorySink;
use arcane_core::{Checkpoint, Mode, Source};
use arcane_sources::amqp::{
    AmqpPosition, AmqpSource, AmqpSourceConfig, DeclareConfig, ExchangeConfig, SequenceConfig,
};
use arcane_sources::broker::{FieldConfig, PayloadConfig};
use arrow_array::cast::AsArray;
use futures::StreamExt;
use support::*;

struct TestQueue {
    connection: Connection,
    channel: Channel,
    name: String,
}

impl TestQueue {
    async fn new(tag: &str) -> Self {
        let connection = Connection::open(&OpenConnectionArguments::new(
            "127.0.0.1",
            5672,
            "guest",
            "guest",
        ))
        .await
        .expect("RabbitMQ on 127.0.0.1:5672");
        let channel = connection.open_channel(None).await.unwrap();
        let name = format!(
            "arcane-test-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        Self {
            connection,
            channel,
            name,
        }
    }

    async fn declare(&self) {
        self.channel
            .queue_declare(
                QueueDeclareArguments::new(&self.name)
                    .durable(true)
                    .finish(),
            )
            .await
            .unwrap();
    }

    /// Publish `{"id": i}` for `ids` with the sequence `i + 1` in the `x-seq` header; ids in
    /// `bad` get a malformed payload.
    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        ids: std::ops::Range<i64>,
        bad: &BTreeSet<i64>,
    ) {
        for i in ids {
            self.publish_one(exchange, routing_key, i, Some(i + 1), bad.contains(&i))
                .await;
        }
    }

    async fn publish_one(
        &self,
        exchange: &str,
        routing_key: &str,
        id: i64,
        seq: Option<i64>,
        bad: bool,
    ) {
        let payload = if bad {
            format!("{{\"id\": \"not a number {id}\"")
        } else {
            format!("{{\"id\": {id}, \"name\": \"n-{id}\"}}")
        };
        let mut headers = FieldTable::new();
        if let Some(seq) = seq {
            headers.insert("x-seq".try_into().unwrap(), FieldValue::l(seq));
        }
        self.channel
            .basic_publish(
                BasicProperties::default()
                    .with_headers(headers)
                    .with_timestamp(1_700_000_000)
                    .with_persistence(true)
                    .finish(),
                payload.into_bytes(),
                BasicPublishArguments::new(exchange, routing_key),
            )
            .await
            .unwrap();
    }

    /// Messages ready in the queue (not delivered, or requeued).
    async fn ready(&self) -> u32 {
        let (_, ready, _) = self
            .channel
            .queue_declare(
                QueueDeclareArguments::new(&self.name)
                    .passive(true)
                    .finish(),
            )
            .await
            .unwrap()
            .unwrap();
        ready
    }

    fn config(&self) -> AmqpSourceConfig {
        let mut c = AmqpSourceConfig::new(
            "127.0.0.1",
            &self.name,
            PayloadConfig::json(vec![
                FieldConfig::new("id", "int64").required(),
                FieldConfig::new("name", "utf8"),
            ]),
        );
        c.sequence = Some(SequenceConfig {
            header: Some("x-seq".into()),
        });
        c.batch_rows = 40;
        c.batch_timeout = Duration::from_millis(50);
        c.backfill_idle_timeout = Duration::from_millis(1500);
        c
    }

    async fn delete(self) {
        let _ = self
            .channel
            .queue_delete(QueueDeleteArguments::new(&self.name))
            .await;
        let _ = self.connection.close().await;
    }
}

/// The conformance suite's resume cases (at a batch end, inside a batch) for a queue: unlike
/// the suite, the first source is dropped before resuming, as a restarted process's is (a live
/// consumer holds its unacknowledged deliveries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_exactly_at_and_inside_a_batch_with_a_publisher_sequence() {
    let q = TestQueue::new("conf").await;
    q.declare().await;
    let bad = BTreeSet::from([0, 41, 42, 150]);
    q.publish("", &q.name, 0..200, &bad).await;
    let config = q.config();
    let mut first = AmqpSource::new(config.clone()).unwrap();
    let (all, letters) = read_backfill(&mut first, None).await;
    drop(first);
    assert_eq!(letters.len(), 4);
    assert!(all.len() >= 3);
    let expected: Vec<i64> = (0..200).filter(|i| !bad.contains(i)).collect();
    assert_eq!(ids(&rows_of(&all)), expected);
    let cut = all[1].batch.num_rows() / 2;
    for (checkpoint, before) in [
        (
            Checkpoint::at(all[0].position.clone()),
            ids(&[all[0].batch.clone()]),
        ),
        (
            Checkpoint {
                position: Some(all[0].position.clone()),
                rows: cut as u64,
            },
            ids(&[all[0].batch.clone(), all[1].batch.slice(0, cut)]),
        ),
    ] {
        // Everything is back in the queue once the previous consumer is gone.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while q.ready().await != 200 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "deliveries not requeued"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut resumed = AmqpSource::new(config.clone()).unwrap();
        let (rest, _) = read_backfill(&mut resumed, Some(checkpoint.clone())).await;
        drop(resumed);
        let mut got = before;
        got.extend(ids(&rows_of(&rest)));
        assert_eq!(
            got, expected,
            "resuming from {checkpoint:?} lost or repeated rows"
        );
    }
    q.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_topology_metadata_and_dead_letters() {
    let q = TestQueue::new("topo").await;
    let exchange = format!("{}-x", q.name);
    let mut config = q.config();
    config.declare = Some(DeclareConfig {
        exchange: Some(ExchangeConfig {
            name: exchange.clone(),
            exchange_type: "topic".into(),
        }),
        binding_keys: vec!["orders.*".into()],
    });
    config.payload.metadata_columns = true;
    // A first run declares the queue, exchange and binding (nothing to read yet).
    let mut source = AmqpSource::new(config.clone()).unwrap();
    let (batches, _) = read_backfill(&mut source, None).await;
    assert!(rows_of(&batches).is_empty());
    q.publish(&exchange, "orders.eu", 0..30, &BTreeSet::from([7]))
        .await;
    q.publish(&exchange, "ignored.eu", 30..40, &BTreeSet::new())
        .await;
    q.publish_one(&exchange, "orders.us", 40, None, false).await;
    q.publish(&exchange, "orders.us", 41..50, &BTreeSet::new())
        .await;
    let mut source = AmqpSource::new(config).unwrap();
    let (batches, letters) = read_backfill(&mut source, None).await;
    let rows = rows_of(&batches);
    let expected: Vec<i64> = (0..30).chain(41..50).filter(|i| *i != 7).collect();
    assert_eq!(ids(&rows), expected);
    let subjects = strings(&rows, "_subject");
    assert_eq!(subjects[0], "orders.eu");
    assert_eq!(subjects.last().unwrap(), "orders.us");
    assert_eq!(strings(&rows, "_headers")[0], r#"{"x-seq":"1"}"#);
    let ts = rows[0].column_by_name("_timestamp").unwrap();
    let ts = ts.as_primitive::<arrow_array::types::TimestampMillisecondType>();
    assert_eq!(ts.value(0), 1_700_000_000_000);
    assert_eq!(letters.len(), 2, "{letters:#?}");
    let malformed = letters
        .iter()
        .find(|l| l.payload.as_deref().unwrap().contains("not a number 7"))
        .unwrap();
    assert!(!malformed.reason.contains("sequence"), "{letters:#?}");
    let unsequenced = letters
        .iter()
        .find(|l| l.payload.as_deref().unwrap().contains("\"id\": 40"))
        .unwrap();
    assert!(
        unsequenced.reason.contains("header x-seq is missing"),
        "{letters:#?}"
    );
    assert!(
        letters
            .iter()
            .all(|l| l.origin.contains(&q.name) && l.locator.starts_with("delivery "))
    );
    q.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_follow_commits_the_prefetch_bounds_reads_and_redeliveries_are_recognised() {
    let q = TestQueue::new("ack").await;
    q.declare().await;
    q.publish("", &q.name, 0..300, &BTreeSet::new()).await;
    let mut config = q.config();
    config.max_unacked = Some(100);
    let mut source = AmqpSource::new(config.clone()).unwrap();
    let mut stream = open_stream(&mut source).await;
    let mut read = Vec::new();
    while ids(&read
        .iter()
        .map(|b: &arcane_core::PositionedBatch| b.batch.clone())
        .collect::<Vec<_>>())
    .len()
        < 100
    {
        read.push(stream.next().await.unwrap().unwrap());
    }
    let next = tokio::time::timeout(Duration::from_millis(700), stream.next()).await;
    assert!(next.is_err(), "read past the prefetch without a commit");
    assert_eq!(q.ready().await, 200);
    // Commit the first batch (ids 0..40): acked with multiple=true, 40 more are delivered.
    source
        .commit(&Checkpoint::at(read[0].position.clone()))
        .await
        .unwrap();
    let more = stream.next().await.unwrap().unwrap();
    assert_eq!(ids(std::slice::from_ref(&more.batch))[0], 100);
    // A crash now: the sink committed through the second batch (ids 40..80), the ack was lost.
    let committed = Checkpoint::at(read[1].position.clone());
    let position: AmqpPosition = read[1].position.decode("t").unwrap();
    assert_eq!(position.sequence, Some(80));
    drop(stream);
    drop(source);
    // The broker requeues the 100 unacked deliveries once the connection is gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while q.ready().await != 260 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries not requeued"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    config.max_unacked = None;
    let mut resumed = AmqpSource::new(config).unwrap();
    let (batches, letters) = read_backfill(&mut resumed, Some(committed)).await;
    assert!(letters.is_empty());
    let got = ids(&rows_of(&batches));
    assert_eq!(
        got,
        (80..300).collect::<Vec<_>>(),
        "redelivered 40..80 must be recognised"
    );
    q.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_lands_every_good_message_once_and_acks_them() {
    let q = TestQueue::new("graph").await;
    q.declare().await;
    let bad = BTreeSet::from([10, 500, 999]);
    q.publish("", &q.name, 0..1000, &bad).await;
    let store = MemorySink::new().store();
    let letters = Letters::default();
    let report = land(
        AmqpSource::new(q.config()).unwrap(),
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(q.ready().await, 0, "everything acked after the commits");
    q.delete().await;
}

#[test]
fn bad_settings_name_their_field() {
    let mut c = AmqpSourceConfig::new("127.0.0.1", "q", PayloadConfig::raw());
    c.max_unacked = Some(0);
    let err = AmqpSource::new_at(c, "spec.source")
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec.source.maxUnacked"), "{err}");
    let c = AmqpSourceConfig::new("127.0.0.1", "", PayloadConfig::raw());
    let err = AmqpSource::new_at(c, "spec.source")
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec.source.queue"), "{err}");
}

/// Deliveries pause while a full prefetch window waits for the sink to commit (here the group
/// never fills, so each commit waits for the grouping interval, longer than
/// `backfillIdleTimeout`): the backfill must not take that pause for the queue's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_outlasts_pauses_of_a_full_prefetch_window() {
    let q = TestQueue::new("window").await;
    q.declare().await;
    let n = 400;
    q.publish("", &q.name, 0..n, &BTreeSet::new()).await;
    let mut config = q.config();
    config.max_unacked = Some(100);
    config.backfill_idle_timeout = Duration::from_millis(1000);
    let store = MemorySink::new().store();
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        land_with(
            AmqpSource::new(config).unwrap(),
            store.clone(),
            Letters::default(),
            1000,
            Duration::from_secs(3),
        ),
    )
    .await
    .expect("the backfill hung");
    assert_finished(&report);
    let mut got = ids(&store.batches());
    got.sort();
    assert_eq!(got, (0..n).collect::<Vec<_>>(), "every message landed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(q.ready().await, 0, "everything acked after the commits");
    q.delete().await;
}

/// The shared conformance suite with malformed messages. The suite keeps each source alive
/// while it makes the next one; a restarted process's predecessor is gone, so every new source
/// first closes the previous one's connection (the broker then requeues its unacknowledged
/// deliveries, in order) and waits until the queue holds everything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_resumes_exactly_with_malformed_messages() {
    use std::sync::{Arc, Mutex};
    let q = TestQueue::new("suite").await;
    q.declare().await;
    q.publish("", &q.name, 0..200, &BTreeSet::from([0, 41, 42, 150]))
        .await;
    let config = q.config();
    let previous: Arc<Mutex<Option<Arc<arcane_sources::amqp::AmqpBroker>>>> = Arc::default();
    let queue = &q;
    arcane_core::testing::conformance::source_resumes_exactly(|| {
        if let Some(broker) = previous.lock().unwrap().take() {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    use arcane_sources::broker::Broker;
                    broker.reset().await;
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                    while queue.ready().await != 200 {
                        assert!(
                            tokio::time::Instant::now() < deadline,
                            "deliveries not requeued"
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
            });
        }
        let source = AmqpSource::new(config.clone()).unwrap();
        *previous.lock().unwrap() = Some(source.broker_handle());
        Box::new(source) as Box<dyn Source>
    })
    .await;
    q.delete().await;
}

/// Read deliveries until `read` holds `n` messages' locators; the deliveries' tokens.
async fn read_until(
    session: &mut arcane_sources::amqp::AmqpSession,
    read: &mut Vec<String>,
    n: usize,
    what: &str,
) -> Vec<(u64, u64)> {
    use arcane_sources::broker::{BrokerSession, Content};
    let mut tokens = Vec::new();
    while read.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(10), session.next())
            .await
            .unwrap_or_else(|_| panic!("{what} is not delivered"))
            .unwrap()
            .expect("a delivery");
        tokens.push(d.token);
        if let Content::Message(m) = d.content {
            read.push(m.locator);
        }
    }
    tokens
}

/// The last commit's ack frees the prefetch window and the broker delivers the queue's last
/// messages, but RabbitMQ may answer a message count asked right after that ack before those
/// deliveries (the count reports them as no longer ready): the backfill must not take the
/// queue for empty while they are on their way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_not_caught_up_while_the_last_window_is_on_its_way() {
    use arcane_sources::broker::{Broker, BrokerSession};
    for round in 0..30u32 {
        let q = TestQueue::new("last-window").await;
        q.declare().await;
        let window = 50usize;
        q.publish("", &q.name, 0..2 * window as i64, &BTreeSet::new())
            .await;
        // Publishes are queued asynchronously: start once all of them are.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while q.ready().await < 2 * window as u32 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the publishes were not queued"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut config = q.config();
        config.max_unacked = Some(window);
        let source = AmqpSource::new(config).unwrap();
        let broker = source.broker_handle();
        let mut session = broker.connect(None, Mode::Backfill).await.unwrap();
        let mut read = Vec::new();
        let tokens = read_until(&mut session, &mut read, window, "the first window").await;
        assert!(
            !session.caught_up().await.unwrap(),
            "round {round}: the second window waits behind the first"
        );
        // The ack goes out from another task, as a commit's does, at varying moments around
        // the count.
        let acker = broker.clone();
        let delay = Duration::from_micros(u64::from(round) * 150);
        let acked = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            acker.ack(tokens).await.unwrap();
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        let caught_up = session.caught_up().await.unwrap();
        acked.await.unwrap();
        assert!(
            !caught_up,
            "round {round}: caught up right after the ack that frees the last window"
        );
        let tokens = read_until(&mut session, &mut read, 2 * window, "the last window").await;
        broker.ack(tokens).await.unwrap();
        assert!(
            session.caught_up().await.unwrap(),
            "round {round}: everything read and acked is the end of the backfill"
        );
        drop(session);
        drop(source);
        q.delete().await;
    }
}

/// A quorum queue puts the messages a lost consumer returns behind later ones (RabbitMQ 3.10:
/// deliveries in flight when a connection closed came back after the rest of the queue), where
/// a publisher sequence would take them for duplicates and drop them. Its redeliveries carry
/// `x-delivery-count`: with `sequence`, the first one stops the source with a configuration
/// error naming `sequence`; without `sequence` the same queue is read with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_is_refused_for_exactly_once_at_its_first_redelivery() {
    let q = TestQueue::new("quorum").await;
    let mut arguments = FieldTable::new();
    arguments.insert(
        "x-queue-type".try_into().unwrap(),
        FieldValue::S("quorum".try_into().unwrap()),
    );
    q.channel
        .queue_declare(
            QueueDeclareArguments::new(&q.name)
                .durable(true)
                .arguments(arguments)
                .finish(),
        )
        .await
        .unwrap();
    q.publish("", &q.name, 0..60, &BTreeSet::new()).await;
    let mut config = q.config();
    config.batch_rows = 10;
    // Read a batch and go away without committing: every delivery is returned to the queue.
    {
        let mut source = AmqpSource::new(config.clone()).unwrap();
        let mut stream = open_stream(&mut source).await;
        let first = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a batch within 30 s")
            .unwrap()
            .unwrap();
        assert!(first.batch.num_rows() > 0);
    }
    let mut source = AmqpSource::new(config.clone()).unwrap();
    let mut stream = open_stream(&mut source).await;
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("refused within 30 s")
        {
            Some(Ok(_)) => continue,
            Some(Err(e)) => break e,
            None => panic!("the stream ended without refusing the quorum queue"),
        }
    };
    assert_eq!(err.exit_code(), arcane_core::ExitCode::Fatal, "{err}");
    assert!(
        matches!(&err, arcane_core::Error::Config { field, message } if field == "source.sequence" && message.contains("quorum queue") && message.contains(&q.name)),
        "{err}"
    );
    drop(stream);
    drop(source);
    // Without a sequence: at least once, every message read.
    config.sequence = None;
    let mut source = AmqpSource::new(config).unwrap();
    let mut stream = open_stream(&mut source).await;
    let mut seen = BTreeSet::new();
    while seen.len() < 60 {
        let item = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .unwrap_or_else(|_| panic!("{} of 60 ids after 30 s", seen.len()))
            .unwrap()
            .unwrap();
        seen.extend(ids(std::slice::from_ref(&item.batch)));
    }
    assert_eq!(seen, (0..60).collect::<BTreeSet<i64>>());
    drop(stream);
    q.delete().await;
}
