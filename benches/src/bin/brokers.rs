//! End-to-end benchmark of the broker sources: for each broker, publish N JSON messages and
//! time the broker's own publish rate, then time the same messages through Arcane's graph
//! (source → `grouped_within` → `ParquetSink` on `file://`, the graph the `arcane` binary
//! builds for the broker kinds) until every row is committed, in the same run.
//!
//! * NATS JetStream (127.0.0.1:4222): publish (waiting for every ack), then a backfill that ends
//!   when the consumer caught up.
//! * RabbitMQ (127.0.0.1:5672): publish (persistent messages), then a backfill that ends after
//!   `backfillIdleTimeout` (subtracted from the time).
//! * MQTT (127.0.0.1:1883): a persistent session first, then the publish runs while the graph
//!   consumes (Mosquitto drops messages queued beyond `max_queued_messages` for an offline
//!   client); the end-to-end time runs from the first publish to the last commit.
//!
//! ```text
//! cargo run --release -p arcane-benches --features brokers --bin brokers -- --messages 200000
//! ```
#![allow(clippy::print_stdout)]

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use arcane_core::{Completion, GroupLimits, Source, StreamContext, StreamGraph};
use arcane_sinks::{ParquetSink, ParquetSinkConfig};
use arcane_sources::amqp::{AmqpSource, AmqpSourceConfig, SequenceConfig};
use arcane_sources::broker::{FieldConfig, PayloadConfig};
use arcane_sources::mqtt::{MqttSource, MqttSourceConfig};
use arcane_sources::nats::{NatsSource, NatsSourceConfig};

const ROWS_PER_GROUP: usize = 20_000;
const IDLE: Duration = Duration::from_secs(1);

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn uniq(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}

fn message(i: u64) -> String {
    format!(
        "{{\"id\":{i},\"customer\":\"c-{}\",\"amount\":{}.5,\"status\":\"paid\",\"event_time\":\"2026-11-25T10:00:00Z\"}}",
        i % 9973,
        i % 1000
    )
}

fn payload() -> PayloadConfig {
    PayloadConfig::json(vec![
        FieldConfig::new("id", "int64").required(),
        FieldConfig::new("customer", "utf8"),
        FieldConfig::new("amount", "float64"),
        FieldConfig::new("status", "utf8"),
        FieldConfig::new("event_time", "timestamp[ms, UTC]"),
    ])
}

/// Run `source` through the kinds' graph into a fresh local Parquet sink, in backfill mode;
/// returns the rows committed.
async fn land(source: impl Source) -> u64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = ParquetSinkConfig::new(format!("file://{}/out", dir.path().display()));
    // A file must commit (and so ack) before the broker's unacked window (twice a group) fills;
    // with the default rolling (128 MiB or 5m) consumption would stall until the file ages out.
    config.rolling.max_rows_per_file = ROWS_PER_GROUP as u64;
    let sink = ParquetSink::new(config).expect("sink");
    let ctx = StreamContext::new("bench", "broker", serde_json::json!({})).with_backfill("b");
    let report = StreamGraph::from_source(source)
        .grouped_within(GroupLimits::new(
            NonZeroUsize::new(ROWS_PER_GROUP).unwrap_or(NonZeroUsize::MIN),
            Duration::from_secs(1),
        ))
        .to_sink(sink)
        .run(&ctx)
        .join()
        .await;
    match report.outcome {
        Ok(Completion::Finished) => {}
        other => panic!("the graph did not finish: {other:?}"),
    }
    report.summary.rows_committed
}

fn print(broker: &str, n: u64, publish: Duration, e2e: Duration, rows: u64) {
    let p = n as f64 / publish.as_secs_f64();
    let e = n as f64 / e2e.as_secs_f64();
    println!(
        "broker={broker} messages={n} rows_committed={rows} publish_s={:.2} publish_msg_s={p:.0} e2e_s={:.2} e2e_msg_s={e:.0} ratio={:.2}",
        publish.as_secs_f64(),
        e2e.as_secs_f64(),
        e / p
    );
}

async fn nats(n: u64) {
    let client = async_nats::connect("nats://127.0.0.1:4222")
        .await
        .expect("NATS");
    let js = async_nats::jetstream::new(client);
    let name = uniq("BENCH").replace('-', "_");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("bench.{name}")],
        ..Default::default()
    })
    .await
    .expect("stream");
    let start = Instant::now();
    let mut acks = Vec::with_capacity(4096);
    for i in 0..n {
        acks.push(
            js.publish(format!("bench.{name}"), message(i).into())
                .await
                .expect("publish"),
        );
        if acks.len() == 4096 {
            for a in acks.drain(..) {
                a.await.expect("ack");
            }
        }
    }
    for a in acks {
        a.await.expect("ack");
    }
    let publish = start.elapsed();
    let mut config = NatsSourceConfig::new("nats://127.0.0.1:4222", &name, "bench", payload());
    config.max_unacked = Some(2 * ROWS_PER_GROUP);
    config.batch_rows = 2000;
    let start = Instant::now();
    let rows = land(NatsSource::new(config).expect("source")).await;
    print("nats-jetstream", n, publish, start.elapsed(), rows);
    let _ = js.delete_stream(&name).await;
}

async fn rabbitmq(n: u64) {
    use amqprs::channel::{BasicPublishArguments, QueueDeclareArguments, QueueDeleteArguments};
    use amqprs::connection::{Connection, OpenConnectionArguments};
    use amqprs::{BasicProperties, FieldTable, FieldValue};
    let connection = Connection::open(&OpenConnectionArguments::new(
        "127.0.0.1",
        5672,
        "guest",
        "guest",
    ))
    .await
    .expect("RabbitMQ");
    let channel = connection.open_channel(None).await.expect("channel");
    let queue = uniq("arcane-bench");
    channel
        .queue_declare(QueueDeclareArguments::new(&queue).durable(true).finish())
        .await
        .expect("declare");
    let start = Instant::now();
    for i in 0..n {
        let mut headers = FieldTable::new();
        if let Ok(k) = "x-seq".try_into() {
            headers.insert(k, FieldValue::l(i as i64 + 1));
        }
        channel
            .basic_publish(
                BasicProperties::default()
                    .with_headers(headers)
                    .with_persistence(true)
                    .finish(),
                message(i).into_bytes(),
                BasicPublishArguments::new("", &queue),
            )
            .await
            .expect("publish");
    }
    // Wait until the broker has every message (publishes are asynchronous).
    loop {
        let ready = channel
            .queue_declare(QueueDeclareArguments::new(&queue).passive(true).finish())
            .await
            .ok()
            .flatten()
            .map(|(_, ready, _)| ready)
            .unwrap_or(0);
        if u64::from(ready) >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let publish = start.elapsed();
    let mut config = AmqpSourceConfig::new("127.0.0.1", &queue, payload());
    config.sequence = Some(SequenceConfig {
        header: Some("x-seq".into()),
    });
    config.max_unacked = Some((2 * ROWS_PER_GROUP).min(usize::from(u16::MAX)));
    config.batch_rows = 2000;
    config.backfill_idle_timeout = IDLE;
    let start = Instant::now();
    let rows = land(AmqpSource::new(config).expect("source")).await;
    print(
        "rabbitmq",
        n,
        publish,
        start.elapsed().saturating_sub(IDLE),
        rows,
    );
    let _ = channel
        .queue_delete(QueueDeleteArguments::new(&queue))
        .await;
    let _ = connection.close().await;
}

async fn mqtt(n: u64) {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let topic = format!("arcane/bench/{}", uniq("t"));
    let mut config = MqttSourceConfig::new(
        "127.0.0.1",
        uniq("arcane-bench"),
        vec![topic.clone()],
        payload(),
    );
    config.max_unacked = Some(usize::from(u16::MAX));
    config.batch_rows = 2000;
    config.backfill_idle_timeout = IDLE;
    // Create the session.
    land(MqttSource::new(config.clone()).expect("source")).await;
    let consumer = tokio::spawn(async move {
        let rows = land(MqttSource::new(config).expect("source")).await;
        (rows, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut opts = MqttOptions::new(uniq("pub"), "127.0.0.1", 1883);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
    let start = Instant::now();
    let poller = tokio::spawn(async move {
        let mut acked = 0;
        while acked < n {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = eventloop.poll().await {
                acked += 1;
            }
        }
        Instant::now()
    });
    for i in 0..n {
        client
            .publish(&topic, QoS::AtLeastOnce, false, message(i))
            .await
            .expect("publish");
    }
    let published = poller.await.expect("publisher");
    let _ = client.disconnect().await;
    let (rows, done) = consumer.await.expect("consumer");
    print(
        "mqtt",
        n,
        published - start,
        (done - start).saturating_sub(IDLE),
        rows,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = arg("--messages", 200_000);
    let only: Option<String> = std::env::args()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[0] == "--only")
        .map(|w| w[1].clone());
    let want = |b: &str| only.as_deref().is_none_or(|o| o == b);
    if want("nats") {
        nats(n).await;
    }
    if want("rabbitmq") {
        rabbitmq(n).await;
    }
    if want("mqtt") {
        mqtt(n).await;
    }
}
