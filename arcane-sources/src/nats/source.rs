//! [`NatsSource`]: the [`BrokerSource`] over a JetStream stream, read by a durable pull
//! consumer ([`NatsBroker`]).

use std::path::PathBuf;
use std::time::Duration;

use arcane_core::{Error, Mode, Result};
use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::config::{NatsSourceConfig, NatsStart};
use crate::broker::{
    BatchEnd, Broker, BrokerMessage, BrokerSession, BrokerSource, Content, Delivery,
};

/// The position after a batch: the stream sequence of its last message (dead-lettered ones
/// included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NatsPosition {
    /// The JetStream stream sequence.
    pub stream_sequence: u64,
}

/// Reads a JetStream stream with a durable pull consumer; see the [module docs](super).
pub type NatsSource = BrokerSource<NatsBroker>;

impl BrokerSource<NatsBroker> {
    /// A source for `config`; errors name fields under `source`.
    pub fn new(config: NatsSourceConfig) -> Result<Self> {
        Self::new_at(config, "source")
    }

    /// A source for `config`; `field` is the config's path in the spec (e.g. `spec.source`).
    pub fn new_at(config: NatsSourceConfig, field: &str) -> Result<Self> {
        config.validate(field)?;
        let name = format!("nats-jetstream {}/{}", config.stream, config.consumer);
        let settings = config.settings(field)?;
        let broker = NatsBroker {
            name: name.clone(),
            window: settings.max_unacked.get(),
            config,
            field: field.to_string(),
        };
        Self::with_broker(name, broker, settings, field)
    }

    /// The settings.
    pub fn config(&self) -> &NatsSourceConfig {
        &self.broker().config
    }
}

/// JetStream as a [`Broker`]: a durable pull consumer (re)created at every connect right after
/// the highest sequence read, `ack_policy = all`.
#[derive(Debug)]
pub struct NatsBroker {
    name: String,
    /// `maxUnacked`, checked.
    window: usize,
    config: NatsSourceConfig,
    field: String,
}

impl NatsBroker {
    async fn connect_client(&self) -> Result<async_nats::Client> {
        let c = &self.config;
        let field = &self.field;
        let mut opts = async_nats::ConnectOptions::new()
            .name(format!("arcane {}", self.name))
            .connection_timeout(Duration::from_secs(10));
        if let (Some(user), Some(password)) = (&c.username, &c.password) {
            opts = opts.user_and_password(
                user.clone(),
                password.resolve(&format!("{field}.password"))?,
            );
        }
        if let Some(token) = &c.token {
            opts = opts.token(token.resolve(&format!("{field}.token"))?);
        }
        if let Some(tls) = &c.tls {
            opts = opts.require_tls(true);
            if let Some(ca) = &tls.ca_file {
                opts = opts.add_root_certificates(PathBuf::from(ca));
            }
            if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                opts = opts.add_client_certificate(PathBuf::from(cert), PathBuf::from(key));
            }
        }
        let servers: Vec<async_nats::ServerAddr> = c
            .url
            .split(',')
            .map(|s| {
                s.trim().parse().map_err(|e| {
                    Error::config(
                        format!("{field}.url"),
                        format!("\"{}\" is not a NATS server address ({e}); write e.g. nats://host:4222", s.trim()),
                    )
                })
            })
            .collect::<Result<_>>()?;
        opts.connect(servers)
            .await
            .map_err(|e| Error::source_transient(&self.name, "cannot connect", e))
    }

    /// (Re)create the durable consumer right after `after` (or at the configured start).
    async fn consumer(
        &self,
        js: &jetstream::Context,
        after: Option<u64>,
        mode: Mode,
    ) -> Result<consumer::Consumer<consumer::pull::Config>> {
        let c = &self.config;
        let stream = js.get_stream(&c.stream).await.map_err(|e| {
            Error::source_transient(
                &self.name,
                format!("cannot open stream \"{}\" (does it exist?)", c.stream),
                e,
            )
        })?;
        let deliver_policy = if let Some(after) = after {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            }
        } else if let Some(at) = c.start_time(&self.field)? {
            consumer::DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from(at),
            }
        } else if c.start == NatsStart::New && mode == Mode::Stream {
            consumer::DeliverPolicy::New
        } else {
            consumer::DeliverPolicy::All
        };
        // The committed position is the truth: drop whatever state the consumer had.
        let _ = stream.delete_consumer(&c.consumer).await;
        let config = consumer::pull::Config {
            durable_name: Some(c.consumer.clone()),
            deliver_policy,
            ack_policy: consumer::AckPolicy::All,
            ack_wait: c.ack_wait,
            max_ack_pending: self.window as i64,
            filter_subject: c.filter_subject.clone().unwrap_or_default(),
            ..Default::default()
        };
        stream
            .create_consumer(config)
            .await
            .map_err(|e| Error::source_transient(&self.name, "cannot create the consumer", e))
    }
}

#[async_trait::async_trait]
impl Broker for NatsBroker {
    /// The stream sequence and the acker of one message (`ack_policy = all`: acking the highest
    /// acks everything before it).
    type Token = (u64, jetstream::message::Acker);
    type Position = NatsPosition;
    type Session = NatsSession;

    fn kind(&self) -> &'static str {
        "nats-jetstream"
    }

    fn origin(&self) -> String {
        format!("nats stream {}", self.config.stream)
    }

    fn resumed_sequence(&self, position: &NatsPosition) -> Option<u64> {
        Some(position.stream_sequence)
    }

    fn skips_resumed_rows(&self) -> bool {
        true
    }

    fn position(&self, end: BatchEnd) -> NatsPosition {
        NatsPosition {
            stream_sequence: end.sequence.unwrap_or(0),
        }
    }

    fn ledger_key(&self, position: &NatsPosition, _run: u64) -> Option<u64> {
        Some(position.stream_sequence)
    }

    fn backfill_idle_timeout(&self) -> Option<Duration> {
        None
    }

    async fn connect(&self, after: Option<u64>, mode: Mode) -> Result<NatsSession> {
        let client = self.connect_client().await?;
        let js = jetstream::new(client.clone());
        let consumer = self.consumer(&js, after, mode).await?;
        let connects = connects(&client);
        // A consumer made just now has delivered nothing yet; one that survived a failed delete
        // goes on from its own count.
        let next_delivery = consumer.cached_info().delivered.consumer_sequence + 1;
        Ok(NatsSession {
            name: self.name.clone(),
            client,
            connects,
            consumer,
            messages: None,
            next_delivery,
            pull_batch: self.config.batch_rows.min(self.window).max(1),
            backfill: mode == Mode::Backfill,
        })
    }

    async fn ack(&self, tokens: Vec<Self::Token>) -> Result<()> {
        let Some((sequence, acker)) = tokens.into_iter().max_by_key(|(s, _)| *s) else {
            return Ok(());
        };
        if let Err(e) = acker.double_ack_with(AckKind::Ack).await {
            // Harmless: the next ack covers it, and a restart repositions the consumer.
            tracing::warn!(source = %self.name, sequence, error = %e, "ack failed");
        }
        Ok(())
    }
}

/// A connection with its consumer; the pull starts at the first [`BrokerSession::next`].
pub struct NatsSession {
    name: String,
    client: async_nats::Client,
    /// The client's connection count when the session began: a higher count means the
    /// connection was lost and made again, and the pull request may have been lost with it.
    connects: u64,
    consumer: consumer::Consumer<consumer::pull::Config>,
    messages: Option<consumer::pull::Stream>,
    /// The consumer sequence the next delivery must have: the server numbers its deliveries
    /// without gaps, so a higher one means deliveries were lost in transit.
    next_delivery: u64,
    pull_batch: usize,
    backfill: bool,
}

impl std::fmt::Debug for NatsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSession")
            .field("name", &self.name)
            .field("pulling", &self.messages.is_some())
            .finish_non_exhaustive()
    }
}

impl NatsSession {
    /// The running pull, started when none is.
    async fn messages(&mut self) -> Result<&mut consumer::pull::Stream> {
        let running = match self.messages.take() {
            Some(m) => m,
            None => self
                .consumer
                .stream()
                .max_messages_per_batch(self.pull_batch)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
                .map_err(|e| Error::source_transient(&self.name, "cannot pull messages", e))?,
        };
        Ok(self.messages.insert(running))
    }

    /// Refuse the delivery numbered `consumer_sequence` when deliveries before it never
    /// arrived. The server sent them into a connection that then broke; the pull request they
    /// answered can outlive the connection, and the server goes on filling it after the client
    /// reconnects. Taking the delivery would move the highest sequence read past the lost
    /// ones, and a reconnect after it would never ask for them again. Ending the session
    /// instead starts over from the highest sequence read, which delivers them again.
    fn check_gap(&mut self, consumer_sequence: u64, stream_sequence: u64) -> Result<()> {
        let expected = self.next_delivery;
        if consumer_sequence > expected {
            self.messages = None;
            metrics::counter!("arcane.source.nats.delivery_gaps").increment(1);
            return Err(Error::source_transient(
                &self.name,
                format!(
                    "deliveries {expected} to {} of the consumer did not arrive (lost with a connection); stream sequence {} came next",
                    consumer_sequence - 1,
                    stream_sequence
                ),
                "pulling again from the highest sequence read",
            ));
        }
        self.next_delivery = expected.max(consumer_sequence + 1);
        Ok(())
    }

    /// The delivery of a pulled `message`, refused when deliveries before it were lost
    /// ([`check_gap`](Self::check_gap)).
    fn delivery(
        &mut self,
        message: jetstream::Message,
    ) -> Result<Delivery<(u64, jetstream::message::Acker)>> {
        let info = message.info().map_err(|e| {
            Error::source_transient(&self.name, "message without JetStream metadata", e)
        })?;
        self.check_gap(info.consumer_sequence, info.stream_sequence)?;
        let sequence = info.stream_sequence;
        let last = self.backfill && info.pending == 0;
        let published = info.published.unix_timestamp_nanos() / 1_000_000;
        let (message, acker) = message.split();
        let headers = message
            .headers
            .as_ref()
            .map(|h| {
                h.iter()
                    .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Delivery {
            token: (sequence, acker),
            sequence: Some(sequence),
            content: Content::Message(BrokerMessage {
                payload: message.payload,
                subject: message.subject.to_string(),
                timestamp_ms: Some(published as i64),
                headers,
                locator: format!("sequence {sequence}"),
            }),
            last,
        })
    }
}

/// How often a session waiting for messages checks whether its connection was made again.
const RECONNECT_CHECK: Duration = Duration::from_millis(200);

/// How many times `client` has connected.
fn connects(client: &async_nats::Client) -> u64 {
    client
        .statistics()
        .connects
        .load(std::sync::atomic::Ordering::Relaxed)
}

#[async_trait::async_trait]
impl BrokerSession for NatsSession {
    type Token = (u64, jetstream::message::Acker);

    async fn next(&mut self) -> Result<Option<Delivery<Self::Token>>> {
        loop {
            // After a reconnect the client pulls again only if the server no longer counts
            // the old pull request as waiting; if it still does, messages stop until two
            // heartbeats are missed (10 s). Start over from the highest sequence read instead.
            if connects(&self.client) != self.connects {
                self.messages = None;
                return Err(Error::source_transient(
                    &self.name,
                    "the connection to the server was lost and made again",
                    "pulling again from the highest sequence read",
                ));
            }
            let messages = self.messages().await?;
            // Waiting for the next message is cancel-safe: nothing is lost by the timeout.
            let message = match tokio::time::timeout(RECONNECT_CHECK, messages.next()).await {
                Err(_elapsed) => continue,
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => {
                    // Missed heartbeats, server restarts: reconnect from the highest sequence
                    // read.
                    self.messages = None;
                    return Err(Error::source_transient(
                        &self.name,
                        "pulling messages failed",
                        e,
                    ));
                }
                Ok(Some(Ok(message))) => message,
            };
            return self.delivery(message).map(Some);
        }
    }

    async fn caught_up(&mut self) -> Result<bool> {
        // Asked before the pull starts: messages pulled but not read are not "pending" any more.
        let pending = self
            .consumer
            .info()
            .await
            .map(|i| i.num_pending)
            .map_err(|e| Error::source_transient(&self.name, "cannot read consumer info", e))?;
        Ok(pending == 0)
    }
}
