//! [`AmqpSource`]: the [`BrokerSource`] over a RabbitMQ queue consumed with manual acks
//! ([`AmqpBroker`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amqprs::callbacks::{DefaultChannelCallback, DefaultConnectionCallback};
use amqprs::channel::{
    BasicAckArguments, BasicCancelArguments, BasicConsumeArguments, BasicQosArguments, Channel,
    ConsumerMessage, ExchangeDeclareArguments, QueueBindArguments, QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::tls::TlsAdaptor;
use arcane_core::{DeadLetter, Error, Mode, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::config::AmqpSourceConfig;
use crate::broker::{
    BatchEnd, Broker, BrokerMessage, BrokerSession, BrokerSource, Content, Delivery,
};

/// The position after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmqpPosition {
    /// The highest publisher sequence read so far (with `sequence` configured): on resume,
    /// messages at or below it are duplicates and are acked without being read again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// The process run that yielded the batch (delivery tags are only valid in it).
    pub run: u64,
    /// The batch's number in that run.
    pub batch: u64,
}

/// The connection and channel acks go to, and its generation (bumped by every reconnect;
/// delivery tags of an older generation cannot be acked any more). It outlives the stream, so
/// the commits of a graceful stop are still acked, and is closed when the source is dropped or
/// opened again (the broker then requeues whatever was not acked).
type SharedChannel = Arc<Mutex<Option<Shared>>>;

struct Shared {
    generation: u64,
    connection: Connection,
    channel: Channel,
}

fn take_session(slot: &SharedChannel) -> Option<Shared> {
    slot.lock().ok().and_then(|mut s| s.take())
}

fn close_session(slot: &SharedChannel) {
    if let Some(session) = take_session(slot)
        && let Ok(handle) = tokio::runtime::Handle::try_current()
    {
        handle.spawn(async move {
            let _ = session.connection.close().await;
        });
    }
}

/// Consumes a RabbitMQ queue; see the [module docs](super).
pub type AmqpSource = BrokerSource<AmqpBroker>;

impl BrokerSource<AmqpBroker> {
    /// A source for `config`; errors name fields under `source`.
    pub fn new(config: AmqpSourceConfig) -> Result<Self> {
        Self::new_at(config, "source")
    }

    /// A source for `config`; `field` is the config's path in the spec (e.g. `spec.source`).
    pub fn new_at(config: AmqpSourceConfig, field: &str) -> Result<Self> {
        config.validate(field)?;
        let name = format!(
            "rabbitmq {}:{}{}{}",
            config.host,
            config.port,
            if config.virtual_host == "/" {
                "/"
            } else {
                "/vhost:"
            },
            config.queue
        );
        let settings = config.settings(field)?;
        let broker = AmqpBroker {
            name: name.clone(),
            window: settings.max_unacked.get(),
            origin: format!("rabbitmq queue {}", config.queue),
            config,
            field: field.to_string(),
            generation: AtomicU64::new(0),
            channel: SharedChannel::default(),
        };
        Self::with_broker(name, broker, settings, field)
    }

    /// The settings.
    pub fn config(&self) -> &AmqpSourceConfig {
        &self.broker().config
    }
}

/// RabbitMQ as a [`Broker`]: one queue, manual acks with `multiple = true`, deduplication by a
/// publisher sequence when configured.
pub struct AmqpBroker {
    name: String,
    /// `maxUnacked`, checked.
    window: usize,
    origin: String,
    config: AmqpSourceConfig,
    field: String,
    generation: AtomicU64,
    channel: SharedChannel,
}

impl std::fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpBroker")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Drop for AmqpBroker {
    fn drop(&mut self) {
        close_session(&self.channel);
    }
}

impl AmqpBroker {
    async fn open_channel(
        &self,
    ) -> Result<(
        Connection,
        Channel,
        String,
        mpsc::UnboundedReceiver<ConsumerMessage>,
    )> {
        let c = &self.config;
        let field = &self.field;
        let password = match &c.password {
            Some(p) => p.resolve(&format!("{field}.password"))?,
            None => "guest".to_string(),
        };
        let mut args = OpenConnectionArguments::new(&c.host, c.port, &c.username, &password);
        args.virtual_host(&c.virtual_host)
            .connection_name(&format!("arcane {}", self.name));
        if let Some(tls) = &c.tls {
            let adaptor = TlsAdaptor::without_client_auth(
                tls.ca_file.as_deref().map(std::path::Path::new),
                c.host.clone(),
            )
            .map_err(|e| {
                Error::config(
                    format!("{field}.tls.caFile"),
                    format!("cannot read the CA certificates: {e}"),
                )
            })?;
            args.tls_adaptor(adaptor);
        }
        let transient = |what: &str| {
            let what = what.to_string();
            let name = self.name.clone();
            move |e: amqprs::error::Error| Error::source_transient(name, what, e)
        };
        let connection = Connection::open(&args)
            .await
            .map_err(transient("cannot connect"))?;
        connection
            .register_callback(DefaultConnectionCallback)
            .await
            .map_err(transient("cannot register the connection callback"))?;
        let channel = connection
            .open_channel(None)
            .await
            .map_err(transient("cannot open a channel"))?;
        channel
            .register_callback(DefaultChannelCallback)
            .await
            .map_err(transient("cannot register the channel callback"))?;
        channel
            .basic_qos(BasicQosArguments::new(
                0,
                u16::try_from(self.window).unwrap_or(u16::MAX),
                false,
            ))
            .await
            .map_err(transient("cannot set the prefetch"))?;
        if let Some(declare) = &c.declare {
            channel
                .queue_declare(QueueDeclareArguments::new(&c.queue).durable(true).finish())
                .await
                .map_err(transient("cannot declare the queue"))?;
            if let Some(ex) = &declare.exchange {
                channel
                    .exchange_declare(
                        ExchangeDeclareArguments::new(&ex.name, &ex.exchange_type)
                            .durable(true)
                            .finish(),
                    )
                    .await
                    .map_err(transient("cannot declare the exchange"))?;
                let keys = if declare.binding_keys.is_empty() {
                    vec![if ex.exchange_type == "topic" {
                        "#".to_string()
                    } else {
                        c.queue.clone()
                    }]
                } else {
                    declare.binding_keys.clone()
                };
                for key in keys {
                    channel
                        .queue_bind(QueueBindArguments::new(&c.queue, &ex.name, &key))
                        .await
                        .map_err(transient("cannot bind the queue"))?;
                }
            }
        }
        let (tag, rx) = channel
            .basic_consume_rx(
                BasicConsumeArguments::new(&c.queue, "")
                    .manual_ack(true)
                    // One consumer at a time: a restarted process cannot start before the
                    // previous connection's deliveries went back to the queue, in order.
                    .exclusive(true)
                    .finish(),
            )
            .await
            .map_err(transient("cannot consume the queue (does it exist?)"))?;
        Ok((connection, channel, tag, rx))
    }
}

#[async_trait::async_trait]
impl Broker for AmqpBroker {
    /// The channel generation and the delivery tag.
    type Token = (u64, u64);
    type Position = AmqpPosition;
    type Session = AmqpSession;

    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    fn origin(&self) -> String {
        self.origin.clone()
    }

    fn resumed_sequence(&self, position: &AmqpPosition) -> Option<u64> {
        position.sequence
    }

    fn skips_resumed_rows(&self) -> bool {
        // Without a publisher sequence, already committed rows cannot be told apart from new
        // ones: nothing is skipped (at least once).
        self.config.sequence.is_some()
    }

    fn position(&self, end: BatchEnd) -> AmqpPosition {
        AmqpPosition {
            sequence: end.sequence,
            run: end.run,
            batch: end.batch,
        }
    }

    fn ledger_key(&self, position: &AmqpPosition, run: u64) -> Option<u64> {
        (position.run == run).then_some(position.batch)
    }

    fn backfill_idle_timeout(&self) -> Option<Duration> {
        Some(self.config.backfill_idle_timeout)
    }

    async fn connect(&self, _after: Option<u64>, _mode: Mode) -> Result<AmqpSession> {
        let (connection, channel, consumer_tag, rx) = self.open_channel().await?;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        close_session(&self.channel);
        if let Ok(mut shared) = self.channel.lock() {
            *shared = Some(Shared {
                generation,
                connection: connection.clone(),
                channel: channel.clone(),
            });
        }
        tracing::info!(source = %self.name, generation, "consuming");
        let watched = connection.clone();
        Ok(AmqpSession {
            name: self.name.clone(),
            field: self.field.clone(),
            origin: self.origin.clone(),
            config: self.config.clone(),
            generation,
            _connection: connection,
            channel,
            consumer_tag,
            rx,
            io_failure: Box::pin(async move { watched.listen_network_io_failure().await }),
        })
    }

    async fn ack(&self, tokens: Vec<(u64, u64)>) -> Result<()> {
        let channel = self
            .channel
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|s| (s.generation, s.channel.clone())));
        let Some((generation, channel)) = channel else {
            tracing::debug!(source = %self.name, "the channel of these deliveries is gone; they are redelivered and recognised");
            return Ok(());
        };
        // Delivery tags grow on a channel: acking the highest with `multiple` acks them all.
        let Some(tag) = tokens
            .iter()
            .filter(|(g, _)| *g == generation)
            .map(|(_, t)| *t)
            .max()
        else {
            tracing::debug!(source = %self.name, "the channel of these deliveries is gone; they are redelivered and recognised");
            return Ok(());
        };
        if let Err(e) = channel.basic_ack(BasicAckArguments::new(tag, true)).await {
            tracing::warn!(source = %self.name, tag, error = %e, "ack failed; the messages will be redelivered");
        }
        Ok(())
    }

    async fn reset(&self) {
        if let Some(previous) = take_session(&self.channel) {
            let _ = previous.connection.close().await;
        }
    }
}

/// A channel consuming the queue.
pub struct AmqpSession {
    name: String,
    /// The config's path in the spec, for errors that name a setting.
    field: String,
    origin: String,
    config: AmqpSourceConfig,
    generation: u64,
    _connection: Connection,
    channel: Channel,
    consumer_tag: String,
    rx: mpsc::UnboundedReceiver<ConsumerMessage>,
    io_failure: Pin<Box<dyn Future<Output = bool> + Send>>,
}

impl std::fmt::Debug for AmqpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSession")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl BrokerSession for AmqpSession {
    type Token = (u64, u64);

    async fn next(&mut self) -> Result<Option<Delivery<(u64, u64)>>> {
        loop {
            tokio::select! {
                delivery = self.rx.recv() => match delivery {
                    Some(delivery) => {
                        if let Some(d) = self.accept(delivery)? {
                            return Ok(Some(d));
                        }
                    }
                    None => return Ok(None),
                },
                _ = &mut self.io_failure => {
                    return Err(Error::source_transient(&self.name, "consuming failed", "network failure"));
                }
            }
        }
    }

    async fn caught_up(&mut self) -> Result<bool> {
        // Deliveries also pause while a full prefetch window waits for the sink to commit: the
        // backfill is done only when the queue has no message ready left (everything it held
        // was delivered to this consumer) and every delivery was read.
        //
        // A count alone does not show that: RabbitMQ's channel answers it as soon as the queue
        // counted, possibly before forwarding deliveries the queue sent just before counting
        // (after an ack freed the prefetch window, the queue's last messages are no longer
        // "ready" but still on their way). A second count, asked after the first answer, is
        // answered after those deliveries: they are read first.
        for _ in 0..2 {
            let ready = self.ready().await?;
            if ready != Some(0) {
                tracing::debug!(source = %self.name, ?ready, "backfill: idle but messages wait behind unacked deliveries");
                return Ok(false);
            }
        }
        if !self.rx.is_empty() {
            tracing::debug!(source = %self.name, waiting = self.rx.len(), "backfill: the queue is empty but its last deliveries are not read yet");
            return Ok(false);
        }
        // Stop deliveries but keep the channel: the last commits still ack.
        let _ = self
            .channel
            .basic_cancel(BasicCancelArguments::new(&self.consumer_tag))
            .await;
        if !self.rx.is_empty() {
            // Published after the counts and delivered before the cancel: read (the session
            // then ends, and the source reconnects to read what else came).
            tracing::debug!(source = %self.name, waiting = self.rx.len(), "backfill: deliveries arrived before the consumer was cancelled");
            return Ok(false);
        }
        Ok(true)
    }
}

impl AmqpSession {
    /// The queue's ready messages (not delivered to a consumer, or requeued); `None` when the
    /// broker did not say.
    async fn ready(&mut self) -> Result<Option<u32>> {
        let declare = QueueDeclareArguments::new(&self.config.queue)
            .passive(true)
            .finish();
        self.channel
            .queue_declare(declare)
            .await
            .map(|answer| answer.map(|(_, ready, _)| ready))
            .map_err(|e| {
                Error::source_transient(&self.name, "cannot read the queue's message count", e)
            })
    }

    /// Take one delivery: a row to decode, a duplicate to skip, or a dead letter.
    fn accept(&mut self, delivery: ConsumerMessage) -> Result<Option<Delivery<(u64, u64)>>> {
        let (Some(deliver), Some(content)) = (delivery.deliver, delivery.content) else {
            return Ok(None);
        };
        let tag = deliver.delivery_tag();
        let token = (self.generation, tag);
        let props = delivery.basic_properties;
        let headers: Vec<(String, String)> = props
            .as_ref()
            .and_then(|p| p.headers())
            .map(|h| {
                h.as_ref()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let locator = format!("delivery {tag}");
        let mut sequence = None;
        if let Some(seq_config) = &self.config.sequence {
            // Only a quorum queue marks redeliveries with a delivery count. It puts the messages
            // a lost connection returns behind the later ones, where the sequence would take
            // them for duplicates and drop them: refused, before anything is read after it.
            if let Some((_, count)) = headers.iter().find(|(k, _)| k == "x-delivery-count") {
                return Err(Error::config(
                    format!("{}.sequence", self.field),
                    format!(
                        "queue \"{}\" redelivered {locator} with x-delivery-count {count}: it is a quorum queue, which puts messages returned by a lost connection or a restart behind later ones, so a sequence cannot tell them from duplicates and would drop them; consume a classic queue, or remove `sequence` (at least once: nothing lost, the last batches may be written again after a crash)",
                        self.config.queue
                    ),
                ));
            }
            let raw = match &seq_config.header {
                Some(name) => headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone()),
                None => props.as_ref().and_then(|p| p.message_id()).cloned(),
            };
            let what = seq_config
                .header
                .as_ref()
                .map(|h| format!("header {h}"))
                .unwrap_or_else(|| "message_id".to_string());
            match raw.as_deref().map(str::trim).map(str::parse::<u64>) {
                Some(Ok(seq)) => sequence = Some(seq),
                Some(Err(_)) | None => {
                    let letter = DeadLetter::new(
                        &self.origin,
                        &locator,
                        format!(
                            "no publisher sequence: {what} is {}; expected an unsigned integer",
                            raw.map(|r| format!("\"{r}\""))
                                .unwrap_or_else(|| "missing".into())
                        ),
                    )
                    .with_payload(String::from_utf8_lossy(&content));
                    return Ok(Some(Delivery {
                        token,
                        sequence: None,
                        content: Content::Rejected(letter),
                        last: false,
                    }));
                }
            }
        }
        Ok(Some(Delivery {
            token,
            sequence,
            content: Content::Message(BrokerMessage {
                payload: content.into(),
                subject: deliver.routing_key().clone(),
                timestamp_ms: props
                    .as_ref()
                    .and_then(|p| p.timestamp())
                    .map(|s| (s as i64).saturating_mul(1000)),
                headers,
                locator,
            }),
            last: false,
        }))
    }
}
