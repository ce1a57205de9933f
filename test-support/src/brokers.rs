//! Input on the machine's brokers for end-to-end tests: a NATS JetStream stream, a durable
//! RabbitMQ queue with a publisher sequence header, MQTT messages published with QoS 1. Each
//! waits until the broker holds every message.

use std::time::Duration;

/// A JetStream stream on 127.0.0.1:4222 holding the messages published by [`NatsStream::create`].
#[derive(Debug)]
pub struct NatsStream {
    /// The stream's name.
    pub name: String,
    js: async_nats::jetstream::Context,
}

impl NatsStream {
    /// Create stream `name` over `{subject}.>` and publish `payloads` on `{subject}.x`,
    /// waiting for every acknowledgement.
    pub async fn create(
        name: &str,
        subject: &str,
        payloads: impl IntoIterator<Item = String>,
    ) -> Self {
        let client = async_nats::connect("nats://127.0.0.1:4222")
            .await
            .expect("NATS on 127.0.0.1:4222");
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.to_string(),
            subjects: vec![format!("{subject}.>")],
            ..Default::default()
        })
        .await
        .expect("create the stream");
        let mut acks = Vec::new();
        for payload in payloads {
            acks.push(
                js.publish(format!("{subject}.x"), payload.into())
                    .await
                    .expect("publish"),
            );
        }
        for a in acks {
            a.await.expect("publish acknowledged");
        }
        Self {
            name: name.to_string(),
            js,
        }
    }

    /// Delete the stream.
    pub async fn delete(&self) {
        let _ = self.js.delete_stream(&self.name).await;
    }
}

/// A durable queue on RabbitMQ at 127.0.0.1:5672 (guest/guest).
pub struct RabbitQueue {
    /// The queue's name.
    pub name: String,
    connection: amqprs::connection::Connection,
    channel: amqprs::channel::Channel,
}

impl std::fmt::Debug for RabbitQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitQueue")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RabbitQueue {
    /// Declare the durable queue `name`.
    pub async fn declare(name: &str) -> Self {
        use amqprs::channel::QueueDeclareArguments;
        use amqprs::connection::{Connection, OpenConnectionArguments};
        let connection = Connection::open(&OpenConnectionArguments::new(
            "127.0.0.1",
            5672,
            "guest",
            "guest",
        ))
        .await
        .expect("RabbitMQ on 127.0.0.1:5672");
        let channel = connection.open_channel(None).await.expect("channel");
        channel
            .queue_declare(QueueDeclareArguments::new(name).durable(true).finish())
            .await
            .expect("declare the queue");
        Self {
            name: name.to_string(),
            connection,
            channel,
        }
    }

    /// Publish persistent messages, each with its publisher sequence (1, 2, …, counting from
    /// `first_seq`) in `header`, and wait until the queue holds them.
    pub async fn publish_sequenced(
        &self,
        header: &str,
        first_seq: i64,
        payloads: impl IntoIterator<Item = Vec<u8>>,
    ) {
        use amqprs::channel::BasicPublishArguments;
        use amqprs::{BasicProperties, FieldTable, FieldValue};
        let before = self.ready().await;
        let mut published = 0u32;
        for (i, payload) in payloads.into_iter().enumerate() {
            let mut headers = FieldTable::new();
            headers.insert(
                header.try_into().expect("a header name"),
                FieldValue::l(first_seq + i as i64),
            );
            self.channel
                .basic_publish(
                    BasicProperties::default()
                        .with_headers(headers)
                        .with_persistence(true)
                        .finish(),
                    payload,
                    BasicPublishArguments::new("", &self.name),
                )
                .await
                .expect("publish");
            published += 1;
        }
        // Publishes are asynchronous: wait until the broker has them.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.ready().await < before + published {
            assert!(
                std::time::Instant::now() < deadline,
                "RabbitMQ did not take the messages"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Messages ready in the queue.
    pub async fn ready(&self) -> u32 {
        use amqprs::channel::QueueDeclareArguments;
        self.channel
            .queue_declare(
                QueueDeclareArguments::new(&self.name)
                    .passive(true)
                    .finish(),
            )
            .await
            .ok()
            .flatten()
            .map_or(0, |(_, ready, _)| ready)
    }

    /// Delete the queue and close the connection.
    pub async fn delete(self) {
        use amqprs::channel::QueueDeleteArguments;
        let _ = self
            .channel
            .queue_delete(QueueDeleteArguments::new(&self.name))
            .await;
        let _ = self.connection.close().await;
    }
}

/// Publish `payloads` on `topic` of Mosquitto at 127.0.0.1:1883 with QoS 1 (MQTT 5), as
/// client `client_id`, and wait for every acknowledgement.
pub async fn mqtt_publish(client_id: &str, topic: &str, payloads: Vec<String>) {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", 1883);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let expected = payloads.len();
    let poller = tokio::spawn(async move {
        let mut acked = 0;
        while acked < expected {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.expect("MQTT") {
                acked += 1;
            }
        }
    });
    for payload in payloads {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }
    poller.await.expect("every publish acknowledged");
    let _ = client.disconnect().await;
}
