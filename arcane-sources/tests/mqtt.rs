//! The MQTT source against Mosquitto on 127.0.0.1:1883: QoS 1 in a persistent session, acks
//! only after commit, redelivery after a crash (at least once, no loss), dead letters and
//! metadata.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use arcane_core::{Checkpoint, PositionedBatch, Source};
use arcane_sources::broker::{FieldConfig, PayloadConfig};
use arcane_sources::mqtt::{MqttSource, MqttSourceConfig};
use arrow_array::RecordBatch;
use futures::StreamExt;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
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

/// Publish `{"id": i}` with QoS 1 for `ids` (malformed for ids in `bad`) and wait for every
/// PUBACK.
async fn publish(topic: &str, ids: std::ops::Range<i64>, bad: &BTreeSet<i64>) {
    let mut opts = MqttOptions::new(uniq("pub"), "127.0.0.1", 1883);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let n = ids.end - ids.start;
    let poller = tokio::spawn(async move {
        let mut acked = 0;
        while acked < n {
            if let Event::Incoming(Packet::PubAck(_)) =
                eventloop.poll().await.expect("publisher connection")
            {
                acked += 1;
            }
        }
    });
    for i in ids {
        let payload = if bad.contains(&i) {
            format!("{{\"id\": \"not a number {i}\"")
        } else {
            format!("{{\"id\": {i}}}")
        };
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(60), poller)
        .await
        .expect("all published")
        .unwrap();
    let _ = client.disconnect().await;
}

fn config(client_id: &str, topic: &str) -> MqttSourceConfig {
    let mut c = MqttSourceConfig::new(
        "127.0.0.1",
        client_id,
        vec![topic.to_string()],
        PayloadConfig::json(vec![FieldConfig::new("id", "int64").required()]),
    );
    c.batch_rows = 40;
    c.batch_timeout = Duration::from_millis(100);
    c.backfill_idle_timeout = Duration::from_millis(1500);
    c.session_expiry = Duration::from_secs(300);
    c
}

fn batch_ids(batches: &[PositionedBatch]) -> Vec<i64> {
    ids(&batches.iter().map(|b| b.batch.clone()).collect::<Vec<_>>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_messages_are_redelivered_after_a_crash_and_committed_ones_are_not() {
    let client_id = uniq("arcane-test");
    let topic = format!("arcane/test/{}", uniq("t"));
    let mut config = config(&client_id, &topic);
    config.payload.metadata_columns = true;
    // The first run creates the persistent session; nothing is published yet.
    let mut source = MqttSource::new(config.clone()).unwrap();
    let (batches, _) = read_backfill(&mut source, None).await;
    assert!(rows_of(&batches).is_empty());
    drop(source);

    // Published while no consumer is connected: queued in the session.
    let bad = BTreeSet::from([5, 150]);
    publish(&topic, 0..200, &bad).await;
    let mut source = MqttSource::new(config.clone()).unwrap();
    let mut stream = open_stream(&mut source).await;
    let mut read: Vec<PositionedBatch> = Vec::new();
    while batch_ids(&read).len() < 80 {
        read.push(stream.next().await.unwrap().unwrap());
    }
    // Metadata and the dead letter of id 5.
    let rows: Vec<RecordBatch> = read.iter().map(|b| b.batch.clone()).collect();
    assert_eq!(strings(&rows, "_subject")[0], topic);
    // Dead letters travel with the batches that cover them.
    let dead: Vec<_> = read.iter().flat_map(|b| b.dead_letters.clone()).collect();
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert!(
        dead[0]
            .payload
            .as_deref()
            .unwrap()
            .contains("not a number 5"),
        "{dead:#?}"
    );
    // Commit the first batch only, then crash.
    let first = batch_ids(&read[..1]);
    source
        .commit(&Checkpoint::at(read[0].position.clone()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stream);
    drop(source);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut resumed = MqttSource::new(config).unwrap();
    let (batches, letters) = read_backfill(&mut resumed, None).await;
    let again: BTreeSet<i64> = ids(&rows_of(&batches)).into_iter().collect();
    // Nothing committed comes back; everything else does (at least once: nothing lost).
    for id in &first {
        assert!(
            !again.contains(id),
            "committed and acked id {id} was redelivered"
        );
    }
    let expected: BTreeSet<i64> = (0..200)
        .filter(|i| !bad.contains(i) && !first.contains(i))
        .collect();
    assert_eq!(again, expected);
    // Malformed messages after the committed batch are dead-lettered (again, for id 5 when it
    // was read but not committed before the crash).
    let five_committed = first.iter().any(|&i| i > 5);
    let expected_letters = if five_committed { 1 } else { 2 };
    assert_eq!(letters.len(), expected_letters, "{letters:#?}");
    assert!(
        letters
            .iter()
            .any(|l| l.payload.as_deref().unwrap().contains("not a number 150"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receive_maximum_bounds_what_is_read_until_a_commit() {
    let client_id = uniq("arcane-test");
    let topic = format!("arcane/test/{}", uniq("t"));
    let mut config = config(&client_id, &topic);
    config.max_unacked = Some(50);
    let mut source = MqttSource::new(config.clone()).unwrap();
    let (batches, _) = read_backfill(&mut source, None).await;
    assert!(rows_of(&batches).is_empty());
    publish(&topic, 0..300, &BTreeSet::new()).await;
    let mut source = MqttSource::new(config).unwrap();
    let mut stream = open_stream(&mut source).await;
    let mut read: Vec<PositionedBatch> = Vec::new();
    while batch_ids(&read).len() < 50 {
        read.push(stream.next().await.unwrap().unwrap());
    }
    let next = tokio::time::timeout(Duration::from_millis(1000), stream.next()).await;
    assert!(
        next.is_err(),
        "read past the receive maximum without a commit"
    );
    source
        .commit(&Checkpoint::at(read.last().unwrap().position.clone()))
        .await
        .unwrap();
    let more = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("more after the commit");
    assert_eq!(batch_ids(&[more.unwrap().unwrap()])[0], 50);
}

/// A broker that speaks MQTT 3.1.1 only: it reads the CONNECT packet and answers CONNACK with
/// return code 0x01 ("unacceptable protocol version"), then closes. Returns its port.
async fn mqtt_311_only_broker() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(&[0x20, 0x02, 0x00, 0x01]).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_refusing_mqtt_5_is_a_config_error_naming_the_version() {
    let port = mqtt_311_only_broker().await;
    let mut config = config("arcane-v5", "t/#");
    config.port = port;
    let mut source = MqttSource::new_at(config, "spec.source").unwrap();
    let mut stream = open_stream(&mut source).await;
    let err = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("the source gave up at once instead of retrying")
        .expect("an error")
        .unwrap_err();
    assert_eq!(err.exit_code(), arcane_core::ExitCode::Fatal, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("spec.source.protocolVersion")
            && text.contains("MQTT 5")
            && text.contains("protocolVersion: \"3.1.1\""),
        "{text}"
    );
}

/// MQTT 3.1.1 against Mosquitto: every message lands once across a crash after a partial
/// commit (the committed batch is not redelivered, everything else is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_1_lands_every_message_and_resumes_after_a_crash() {
    use arcane_sources::mqtt::MqttProtocolVersion;
    let client_id = uniq("arcane-311");
    let topic = format!("arcane/test/{}", uniq("t"));
    let mut config = config(&client_id, &topic);
    config.protocol_version = MqttProtocolVersion::V311;
    // The first run creates the persistent session.
    let mut source = MqttSource::new(config.clone()).unwrap();
    let (batches, _) = read_backfill(&mut source, None).await;
    assert!(rows_of(&batches).is_empty());
    drop(source);
    publish(&topic, 0..100, &BTreeSet::new()).await;
    let mut source = MqttSource::new(config.clone()).unwrap();
    let mut stream = open_stream(&mut source).await;
    let first = stream.next().await.unwrap().unwrap();
    let first_ids = batch_ids(std::slice::from_ref(&first));
    assert!(!first_ids.is_empty());
    source
        .commit(&Checkpoint::at(first.position.clone()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stream);
    drop(source);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut resumed = MqttSource::new(config).unwrap();
    let (batches, _) = read_backfill(&mut resumed, None).await;
    let mut again = ids(&rows_of(&batches));
    again.sort();
    let expected: Vec<i64> = (0..100).filter(|i| !first_ids.contains(i)).collect();
    assert_eq!(again, expected, "lost or repeated rows after the crash");
}
