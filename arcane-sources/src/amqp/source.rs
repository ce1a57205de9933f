//! [`AmqpSource`]: the [`Source`] over a RabbitMQ queue, consumed with manual acks.

use std::sync::{Arc, Mutex};

use amqprs::callbacks::{DefaultChannelCallback, DefaultConnectionCallback};
use amqprs::channel::{
    BasicAckArguments, BasicCancelArguments, BasicConsumeArguments, BasicQosArguments, Channel,
    ConsumerMessage, ExchangeDeclareArguments, QueueBindArguments, QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::tls::TlsAdaptor;
use arcane_core::{
    Checkpoint, DeadLetter, Error, Mode, Position, PositionedStream, Result, Source, SourceStart,
};
use arrow_schema::SchemaRef;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::config::AmqpSourceConfig;
use crate::broker::{
    Backoff, BrokerMessage, Ledger, OUTPUT_BATCHES, Output, PayloadDecoder, sleep_until,
    spawn_stream,
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
type SharedChannel = Arc<Mutex<Option<Session>>>;

struct Session {
    generation: u64,
    connection: Connection,
    channel: Channel,
}

fn close_session(slot: &SharedChannel) {
    let session = slot.lock().ok().and_then(|mut s| s.take());
    if let Some(session) = session {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = session.connection.close().await;
            });
        }
    }
}

/// Consumes a RabbitMQ queue; see the [module docs](super).
pub struct AmqpSource {
    name: String,
    config: AmqpSourceConfig,
    field: String,
    schema: SchemaRef,
    run: u64,
    ledger: Ledger<(u64, u64)>,
    channel: SharedChannel,
}

impl std::fmt::Debug for AmqpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSource")
            .field("name", &self.name)
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

impl AmqpSource {
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
        let decoder = PayloadDecoder::new(&config.payload, &format!("{field}.payload"), "")?;
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        Ok(Self {
            name,
            schema: decoder.schema().clone(),
            config,
            field: field.to_string(),
            run,
            ledger: Ledger::default(),
            channel: SharedChannel::default(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &AmqpSourceConfig {
        &self.config
    }
}

#[async_trait::async_trait]
impl Source for AmqpSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn schema(&self) -> Option<SchemaRef> {
        Some(self.schema.clone())
    }

    async fn open(&mut self, start: SourceStart) -> Result<PositionedStream> {
        let resume = start
            .resume_from
            .as_ref()
            .map(|c| c.decode::<AmqpPosition>(&self.name))
            .transpose()?
            .flatten();
        // Without a publisher sequence, already committed rows cannot be told apart from new
        // ones: nothing is skipped (at least once).
        let skip = match (&self.config.sequence, &start.resume_from) {
            (Some(_), Some(c)) => c.rows,
            _ => 0,
        };
        tracing::info!(source = %self.name, ?resume, skip, mode = start.mode.as_str(), "rabbitmq source opening");
        self.ledger.clear();
        let previous = self.channel.lock().ok().and_then(|mut s| s.take());
        if let Some(previous) = previous {
            let _ = previous.connection.close().await;
        }
        let decoder = PayloadDecoder::new(
            &self.config.payload,
            &format!("{}.payload", self.field),
            format!("rabbitmq queue {}", self.config.queue),
        )?;
        let (tx, rx) = mpsc::channel(OUTPUT_BATCHES);
        let output = Output::new(tx, decoder, skip);
        let run = Run {
            name: self.name.clone(),
            config: self.config.clone(),
            field: self.field.clone(),
            mode: start.mode,
            ledger: self.ledger.clone(),
            channel: self.channel.clone(),
            run: self.run,
            batch: 0,
            highest: resume.and_then(|p| p.sequence),
            origin: format!("rabbitmq queue {}", self.config.queue),
        };
        Ok(spawn_stream(rx, run.drive(output)))
    }

    async fn commit(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let Some(position) = checkpoint.decode::<AmqpPosition>(&self.name)? else {
            return Ok(());
        };
        if position.run != self.run {
            return Ok(());
        }
        // Rows of the next batch covered by `checkpoint.rows` are not acked: they stay in the
        // queue and are skipped by count after the sequence filter on resume.
        let Some((generation, tag)) = self.ledger.take_through(position.batch) else {
            return Ok(());
        };
        let channel = self.channel.lock().ok().and_then(|c| {
            c.as_ref()
                .filter(|s| s.generation == generation)
                .map(|s| s.channel.clone())
        });
        match channel {
            Some(channel) => {
                if let Err(e) = channel.basic_ack(BasicAckArguments::new(tag, true)).await {
                    tracing::warn!(source = %self.name, tag, error = %e, "ack failed; the messages will be redelivered");
                }
            }
            None => {
                tracing::debug!(source = %self.name, tag, "the channel of these deliveries is gone; they are redelivered and recognised")
            }
        }
        Ok(())
    }
}

impl Drop for AmqpSource {
    fn drop(&mut self) {
        close_session(&self.channel);
    }
}

struct Run {
    name: String,
    config: AmqpSourceConfig,
    field: String,
    mode: Mode,
    ledger: Ledger<(u64, u64)>,
    channel: SharedChannel,
    run: u64,
    batch: u64,
    highest: Option<u64>,
    origin: String,
}

/// Deliveries since the last flush.
#[derive(Default)]
struct Pending {
    messages: Vec<BrokerMessage>,
    /// Deliveries refused before decoding (no publisher sequence).
    rejected: Vec<DeadLetter>,
    /// The last delivery tag received (of any message: read, duplicate or dead-lettered).
    last_tag: Option<(u64, u64)>,
    deadline: Option<tokio::time::Instant>,
}

impl Run {
    async fn drive(mut self, mut output: Output) {
        if let Err(e) = self.consume(&mut output).await {
            output.fail(e).await;
        }
    }

    async fn connect(
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
            .basic_qos(BasicQosArguments::new(0, c.prefetch(), false))
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

    async fn consume(&mut self, output: &mut Output) -> Result<()> {
        let mut backoff = Backoff::new(self.config.reconnect.clone());
        let backfill = self.mode == Mode::Backfill;
        let idle = self.config.backfill_idle_timeout;
        let mut generation = 0u64;
        let mut pending = Pending::default();
        let mut last_activity = tokio::time::Instant::now();
        loop {
            let (connection, channel, consumer_tag, mut rx) = match self.connect().await {
                Ok(ok) => ok,
                Err(e @ Error::Config { .. }) => return Err(e),
                Err(e) => {
                    backoff.failed(&self.name, "connecting", e).await?;
                    continue;
                }
            };
            generation += 1;
            close_session(&self.channel);
            if let Ok(mut shared) = self.channel.lock() {
                *shared = Some(Session {
                    generation,
                    connection: connection.clone(),
                    channel: channel.clone(),
                });
            }
            tracing::info!(source = %self.name, generation, "consuming");
            let io_failure = connection.listen_network_io_failure();
            tokio::pin!(io_failure);
            let lost = loop {
                let idle_at = backfill.then(|| last_activity + idle);
                tokio::select! {
                    delivery = rx.recv() => match delivery {
                        Some(delivery) => {
                            backoff.reset();
                            last_activity = tokio::time::Instant::now();
                            self.accept(generation, delivery, &mut pending);
                            if pending.messages.len() >= self.config.batch_rows {
                                self.flush(output, &mut pending).await?;
                            }
                        }
                        None => break "the consumer was cancelled or the channel closed",
                    },
                    _ = &mut io_failure => break "network failure",
                    () = sleep_until(pending.deadline) => self.flush(output, &mut pending).await?,
                    () = sleep_until(idle_at) => {
                        self.flush(output, &mut pending).await?;
                        // Deliveries also pause while a full prefetch window waits for the sink
                        // to commit: the backfill is done only when the queue has no message
                        // ready left (everything it held was delivered to this consumer).
                        let declare = QueueDeclareArguments::new(&self.config.queue)
                            .passive(true)
                            .finish();
                        match channel.queue_declare(declare).await {
                            Ok(Some((_, 0, _))) if !rx.is_empty() => {
                                // The broker answers on this channel in order: deliveries it
                                // pushed before the count (after the last commit's acks freed
                                // the window) are already here, and are not "ready" any more.
                                tracing::debug!(source = %self.name, waiting = rx.len(), "backfill: the queue is empty but its last deliveries are not read yet");
                                last_activity = tokio::time::Instant::now();
                            }
                            Ok(Some((_, 0, _))) => {
                                tracing::info!(source = %self.name, ?idle, "backfill: the queue stayed idle and is empty; done");
                                // Stop deliveries but keep the channel: the last commits still ack.
                                let _ = channel.basic_cancel(BasicCancelArguments::new(&consumer_tag)).await;
                                return Ok(());
                            }
                            Ok(ready) => {
                                let ready = ready.map(|(_, n, _)| n);
                                tracing::debug!(source = %self.name, ?ready, "backfill: idle but messages wait behind unacked deliveries");
                                last_activity = tokio::time::Instant::now();
                            }
                            Err(e) => {
                                tracing::warn!(source = %self.name, error = %e, "cannot read the queue's message count");
                                break "cannot read the queue's message count";
                            }
                        }
                    }
                }
                if output.is_closed() {
                    return Ok(());
                }
            };
            // Deliveries of the lost channel are requeued by the broker; what was yielded is
            // still committed by the sink, and their redeliveries are recognised by sequence.
            self.flush(output, &mut pending).await?;
            close_session(&self.channel);
            backoff.failed(&self.name, "consuming", lost).await?;
        }
    }

    /// Take one delivery: a row to decode, a duplicate to skip, or a dead letter.
    fn accept(&mut self, generation: u64, delivery: ConsumerMessage, pending: &mut Pending) {
        let (Some(deliver), Some(content)) = (delivery.deliver, delivery.content) else {
            return;
        };
        let tag = deliver.delivery_tag();
        pending.last_tag = Some((generation, tag));
        if pending.deadline.is_none() {
            pending.deadline = Some(tokio::time::Instant::now() + self.config.batch_timeout);
        }
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
        if let Some(seq_config) = &self.config.sequence {
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
                Some(Ok(seq)) => {
                    if self.highest.is_some_and(|h| seq <= h) {
                        metrics::counter!("arcane.source.rabbitmq.duplicates").increment(1);
                        tracing::debug!(source = %self.name, seq, "duplicate delivery skipped");
                        return;
                    }
                    self.highest = Some(seq);
                }
                Some(Err(_)) | None => {
                    pending.rejected.push(
                        DeadLetter::new(
                            &self.origin,
                            &locator,
                            format!(
                                "no publisher sequence: {what} is {}; expected an unsigned integer",
                                raw.map(|r| format!("\"{r}\""))
                                    .unwrap_or_else(|| "missing".into())
                            ),
                        )
                        .with_payload(String::from_utf8_lossy(&content)),
                    );
                    return;
                }
            }
        }
        pending.messages.push(BrokerMessage {
            payload: content.into(),
            subject: deliver.routing_key().clone(),
            timestamp_ms: props
                .as_ref()
                .and_then(|p| p.timestamp())
                .map(|s| (s as i64).saturating_mul(1000)),
            headers,
            locator,
        });
    }

    /// Yield what arrived since the last flush (possibly no rows: duplicates and dead letters
    /// still need their acks) and record the ack token.
    async fn flush(&mut self, output: &mut Output, pending: &mut Pending) -> Result<()> {
        pending.deadline = None;
        let Some(token) = pending.last_tag.take() else {
            return Ok(());
        };
        self.batch += 1;
        self.ledger.push(self.batch, token);
        let position = Position::encode(&AmqpPosition {
            sequence: self.highest,
            run: self.run,
            batch: self.batch,
        })?;
        let rejected = std::mem::take(&mut pending.rejected);
        if !output.emit(&pending.messages, rejected, position).await {
            return Err(Error::source_permanent(
                &self.name,
                "the stream was dropped",
            ));
        }
        pending.messages.clear();
        Ok(())
    }
}
