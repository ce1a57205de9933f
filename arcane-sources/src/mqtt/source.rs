//! [`MqttSource`]: the [`BrokerSource`] over MQTT topic filters, QoS 1 in a persistent
//! session ([`MqttBroker`]).

use std::sync::Mutex;
use std::time::Duration;

use arcane_core::{Error, Mode, Result};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, Publish};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::config::{MqttProtocolVersion, MqttSourceConfig};
use crate::broker::{
    BatchEnd, Broker, BrokerMessage, BrokerSession, BrokerSource, Content, Delivery, now_ms,
};

/// The position after a batch. MQTT has no position a client can resume from: the broker's
/// session holds what is not acknowledged, so this only identifies the batch to ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MqttPosition {
    /// The process run that yielded the batch.
    pub run: u64,
    /// The batch's number in that run.
    pub batch: u64,
}

/// Reads MQTT topics; see the [module docs](super).
pub type MqttSource = BrokerSource<MqttBroker>;

impl BrokerSource<MqttBroker> {
    /// A source for `config`; errors name fields under `source`.
    pub fn new(config: MqttSourceConfig) -> Result<Self> {
        Self::new_at(config, "source")
    }

    /// A source for `config`; `field` is the config's path in the spec (e.g. `spec.source`).
    pub fn new_at(config: MqttSourceConfig, field: &str) -> Result<Self> {
        config.validate(field)?;
        let name = format!("mqtt {}:{} {}", config.host, config.port, config.client_id);
        let settings = config.settings(field)?;
        let broker = MqttBroker {
            name: name.clone(),
            window: settings.max_unacked.get(),
            config,
            field: field.to_string(),
            client: Mutex::default(),
        };
        Self::with_broker(name, broker, settings, field)
    }

    /// The settings.
    pub fn config(&self) -> &MqttSourceConfig {
        &self.broker().config
    }
}

/// The connected client acks go to, with its generation (bumped by every connect: packet ids of
/// an older connection must not be acked on a newer one), and its event loop. It outlives the
/// stream (so the acks of the commits after a graceful stop are still sent) and stops when the
/// source is dropped or opened again.
struct Connected {
    generation: u64,
    client: MqttClient,
    _poller: AbortOnDropHandle<()>,
}

/// MQTT as a [`Broker`]: QoS 1 subscriptions in a persistent session, one PUBACK per message
/// after its batch is committed.
pub struct MqttBroker {
    name: String,
    /// `maxUnacked`, checked.
    window: usize,
    config: MqttSourceConfig,
    field: String,
    client: Mutex<Option<Connected>>,
}

impl std::fmt::Debug for MqttBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttBroker")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A client of either protocol version.
#[derive(Clone)]
enum MqttClient {
    V5(AsyncClient),
    V311(rumqttc::AsyncClient),
}

/// A received PUBLISH to acknowledge (without its payload), of either protocol version.
#[derive(Debug, Clone)]
pub enum MqttAck {
    /// MQTT 5.
    V5(Publish),
    /// MQTT 3.1.1.
    V311(rumqttc::Publish),
}

impl MqttAck {
    fn pkid(&self) -> u16 {
        match self {
            MqttAck::V5(p) => p.pkid,
            MqttAck::V311(p) => p.pkid,
        }
    }
}

impl MqttBroker {
    fn options_v311(&self) -> Result<rumqttc::MqttOptions> {
        let c = &self.config;
        let v5 = self.options_v5()?;
        let mut opts = rumqttc::MqttOptions::new(&c.client_id, &c.host, c.port);
        opts.set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(64 * 1024 * 1024, 64 * 1024 * 1024)
            .set_transport(v5.transport());
        if let Some(login) = v5.credentials() {
            opts.set_credentials(login.username, login.password);
        }
        Ok(opts)
    }

    /// What a failed MQTT 3.1.1 connect means (see [`Self::connect_error`]).
    fn connect_error_v311(&self, e: rumqttc::ConnectionError) -> Error {
        let field = &self.field;
        let address = format!("{}:{}", self.config.host, self.config.port);
        match &e {
            rumqttc::ConnectionError::ConnectionRefused(
                rumqttc::ConnectReturnCode::RefusedProtocolVersion,
            ) => Error::config(
                format!("{field}.protocolVersion"),
                format!(
                    "the broker at {address} refused MQTT 3.1.1 ({e}); set protocolVersion: \"5\""
                ),
            ),
            rumqttc::ConnectionError::ConnectionRefused(
                code @ (rumqttc::ConnectReturnCode::BadUserNamePassword
                | rumqttc::ConnectReturnCode::NotAuthorized
                | rumqttc::ConnectReturnCode::BadClientId),
            ) => Error::config(
                format!("{field}.username"),
                format!(
                    "the broker at {address} refused the connection ({code:?}); check the credentials and the clientId"
                ),
            ),
            _ => Error::source_transient(&self.name, format!("cannot connect to {address}"), e),
        }
    }
    fn options_v5(&self) -> Result<MqttOptions> {
        let c = &self.config;
        let field = &self.field;
        let mut opts = MqttOptions::new(&c.client_id, &c.host, c.port);
        opts.set_clean_start(false)
            .set_manual_acks(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_session_expiry_interval(Some(
                u32::try_from(c.session_expiry.as_secs()).unwrap_or(u32::MAX),
            ))
            .set_receive_maximum(Some(u16::try_from(self.window).unwrap_or(u16::MAX)))
            .set_max_packet_size(Some(64 * 1024 * 1024));
        if let Some(user) = &c.username {
            let password = match &c.password {
                Some(p) => p.resolve(&format!("{field}.password"))?,
                None => String::new(),
            };
            opts.set_credentials(user.clone(), password);
        }
        if let Some(tls) = &c.tls {
            let read = |name: &str, path: &str| {
                std::fs::read(path).map_err(|e| {
                    Error::config(
                        format!("{field}.tls.{name}"),
                        format!("cannot read {path}: {e}"),
                    )
                })
            };
            let Some(ca_file) = &tls.ca_file else {
                return Err(Error::config(
                    format!("{field}.tls.caFile"),
                    "the mqtt source needs the CA certificate(s) of the broker as a PEM file",
                ));
            };
            let ca = read("caFile", ca_file)?;
            let client_auth = match (&tls.cert_file, &tls.key_file) {
                (Some(cert), Some(key)) => Some((read("certFile", cert)?, read("keyFile", key)?)),
                _ => None,
            };
            opts.set_transport(rumqttc::Transport::tls(ca, client_auth, None));
        }
        Ok(opts)
    }

    /// A subscription the client could not queue (its request channel closed): transient.
    fn subscribe_error(&self, topic: &str, e: impl Into<arcane_core::BoxError>) -> Error {
        Error::source_transient(&self.name, format!("cannot subscribe to {topic}"), e)
    }

    /// What a failed connect means: a refused protocol version or credentials are
    /// configuration errors (retrying cannot help), anything else is transient.
    fn connect_error(&self, e: ConnectionError) -> Error {
        let field = &self.field;
        let address = format!("{}:{}", self.config.host, self.config.port);
        match &e {
            ConnectionError::ConnectionRefused(
                ConnectReturnCode::UnsupportedProtocolVersion
                | ConnectReturnCode::RefusedProtocolVersion,
            )
            | ConnectionError::MqttState(
                StateError::ConnectionAborted | StateError::Deserialization(_),
            ) => Error::config(
                format!("{field}.protocolVersion"),
                format!(
                    "the broker at {address} refused MQTT 5 ({e}); it speaks MQTT 3.1.1 only: set protocolVersion: \"3.1.1\""
                ),
            ),
            ConnectionError::ConnectionRefused(
                code @ (ConnectReturnCode::BadUserNamePassword
                | ConnectReturnCode::NotAuthorized
                | ConnectReturnCode::BadAuthenticationMethod
                | ConnectReturnCode::Banned
                | ConnectReturnCode::ClientIdentifierNotValid
                | ConnectReturnCode::BadClientId),
            ) => Error::config(
                format!("{field}.username"),
                format!(
                    "the broker at {address} refused the connection ({code:?}); check the credentials and the clientId"
                ),
            ),
            _ => Error::source_transient(&self.name, format!("cannot connect to {address}"), e),
        }
    }
}

#[async_trait::async_trait]
impl Broker for MqttBroker {
    /// The connection's generation and the received PUBLISH (without its payload).
    type Token = (u64, MqttAck);
    type Position = MqttPosition;
    type Session = MqttSession;

    fn kind(&self) -> &'static str {
        "mqtt"
    }

    fn origin(&self) -> String {
        format!("mqtt {}", self.config.topics.join(","))
    }

    fn resumed_sequence(&self, _position: &MqttPosition) -> Option<u64> {
        None
    }

    fn skips_resumed_rows(&self) -> bool {
        // The broker's session says where to continue: what it redelivers was not acked.
        false
    }

    fn position(&self, end: BatchEnd) -> MqttPosition {
        MqttPosition {
            run: end.run,
            batch: end.batch,
        }
    }

    fn ledger_key(&self, position: &MqttPosition, run: u64) -> Option<u64> {
        (position.run == run).then_some(position.batch)
    }

    fn backfill_idle_timeout(&self) -> Option<Duration> {
        Some(self.config.backfill_idle_timeout)
    }

    async fn connect(&self, _after: Option<u64>, _mode: Mode) -> Result<MqttSession> {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (client, poller) = match self.config.protocol_version {
            MqttProtocolVersion::V5 => {
                let (client, mut eventloop) = AsyncClient::new(self.options_v5()?, 1024);
                // The first poll connects: wait for the broker's CONNACK.
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                            tracing::info!(source = %self.name, session_present = ack.session_present, "connected");
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => return Err(self.connect_error(e)),
                    }
                }
                for topic in &self.config.topics {
                    client
                        .subscribe(topic.clone(), QoS::AtLeastOnce)
                        .await
                        .map_err(|e| self.subscribe_error(topic, e))?;
                }
                let poller = tokio::spawn(poll_v5(self.name.clone(), eventloop, events_tx));
                (MqttClient::V5(client), poller)
            }
            MqttProtocolVersion::V311 => {
                let (client, mut eventloop) = rumqttc::AsyncClient::new(self.options_v311()?, 1024);
                loop {
                    match eventloop.poll().await {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => {
                            tracing::info!(source = %self.name, session_present = ack.session_present, "connected");
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => return Err(self.connect_error_v311(e)),
                    }
                }
                for topic in &self.config.topics {
                    client
                        .subscribe(topic.clone(), rumqttc::QoS::AtLeastOnce)
                        .await
                        .map_err(|e| self.subscribe_error(topic, e))?;
                }
                let poller = tokio::spawn(poll_v311(self.name.clone(), eventloop, events_tx));
                (MqttClient::V311(client), poller)
            }
        };
        let poller = AbortOnDropHandle::new(poller);
        let mut slot = self.client.lock().map_err(|_| {
            Error::fatal(format!("source {}: the client lock is poisoned", self.name))
        })?;
        let generation = slot.as_ref().map_or(0, |c| c.generation) + 1;
        *slot = Some(Connected {
            generation,
            client,
            _poller: poller,
        });
        Ok(MqttSession {
            name: self.name.clone(),
            generation,
            events: events_rx,
        })
    }

    async fn ack(&self, tokens: Vec<(u64, MqttAck)>) -> Result<()> {
        let client = self
            .client
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| (c.generation, c.client.clone())));
        let Some((generation, client)) = client else {
            return Ok(());
        };
        for (g, publish) in tokens {
            if g != generation {
                // Delivered on an older connection: the broker redelivers it (at least once).
                continue;
            }
            let acked = match (&client, &publish) {
                (MqttClient::V5(c), MqttAck::V5(p)) => c.ack(p).await.map_err(|e| e.to_string()),
                (MqttClient::V311(c), MqttAck::V311(p)) => {
                    c.ack(p).await.map_err(|e| e.to_string())
                }
                _ => Err("the protocol version changed".to_string()),
            };
            if let Err(e) = acked {
                tracing::warn!(source = %self.name, pkid = publish.pkid(), error = %e, "ack failed; the broker will redeliver");
                return Ok(());
            }
        }
        // The event loop writes the PUBACKs; give it a moment before a stopping process exits.
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(())
    }

    async fn reset(&self) {
        if let Ok(mut slot) = self.client.lock() {
            *slot = None;
        }
    }
}

/// What the event loop reports.
enum Incoming {
    Message(Box<(BrokerMessage, MqttAck)>),
    Failed(Error),
}

fn message(
    topic: &str,
    payload: &Bytes,
    pkid: u16,
    dup: bool,
    headers: Vec<(String, String)>,
) -> BrokerMessage {
    BrokerMessage {
        payload: payload.clone(),
        subject: topic.to_string(),
        // MQTT carries no timestamp: the time the source received it.
        timestamp_ms: Some(now_ms()),
        headers,
        locator: format!(
            "topic {topic} packet {pkid}{}",
            if dup { " (redelivered)" } else { "" }
        ),
    }
}

/// Poll the MQTT 5 event loop until it fails (it must run for acks and keep-alives to be
/// sent, so it never waits for the sink): publishes go to `events`, which the broker's receive
/// maximum bounds. It keeps running after the stream is dropped, for the acks of the last
/// commits.
async fn poll_v5(name: String, mut eventloop: EventLoop, events: mpsc::UnboundedSender<Incoming>) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                let headers = p
                    .properties
                    .as_ref()
                    .map(|pr| pr.user_properties.clone())
                    .unwrap_or_default();
                let m = message(&topic, &p.payload, p.pkid, p.dup, headers);
                let mut token = p;
                token.payload = Bytes::new();
                token.properties = None;
                // Once the stream is gone the message stays unacked and is redelivered later.
                let _ = events.send(Incoming::Message(Box::new((m, MqttAck::V5(token)))));
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode as Code;
                let refused: Vec<String> = ack
                    .return_codes
                    .iter()
                    .filter(|c| !matches!(c, Code::Success(_)))
                    .map(|c| format!("{c:?}"))
                    .collect();
                if !refused.is_empty() {
                    let reason = ack
                        .properties
                        .and_then(|p| p.reason_string)
                        .unwrap_or_default();
                    let _ = events.send(subscription_refused(&name, &refused, &reason));
                    return;
                }
                tracing::info!(source = %name, "subscribed");
            }
            Ok(_) => {}
            Err(e) => {
                let _ = events.send(connection_failed(&name, e));
                return;
            }
        }
    }
}

/// What the event loop reports when the broker refuses a subscription (SUBACK with a failure
/// code): nothing would ever arrive, so the run stops with a FATAL error naming the codes.
fn subscription_refused(name: &str, codes: &[String], reason: &str) -> Incoming {
    let reason = if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    };
    Incoming::Failed(Error::Source {
        source_name: name.to_string(),
        message: format!(
            "the broker refused the subscription to spec.source.topics: {}{reason}; check the topic filters and the client's permissions (ACL) on the broker",
            codes.join(", ")
        ),
        retry: arcane_core::Retry::Permanent,
        source: None,
    })
}

/// What the event loop reports when its connection fails (the source reconnects).
fn connection_failed(name: &str, e: impl Into<arcane_core::BoxError>) -> Incoming {
    Incoming::Failed(Error::source_transient(
        name,
        "the connection to the broker failed",
        e,
    ))
}

/// [`poll_v5`] for MQTT 3.1.1 (the broker's in-flight limit bounds the publishes).
async fn poll_v311(
    name: String,
    mut eventloop: rumqttc::EventLoop,
    events: mpsc::UnboundedSender<Incoming>,
) {
    loop {
        match eventloop.poll().await {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                let m = message(&p.topic, &p.payload, p.pkid, p.dup, Vec::new());
                let mut token = p;
                token.payload = Bytes::new();
                let _ = events.send(Incoming::Message(Box::new((m, MqttAck::V311(token)))));
            }
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(ack))) => {
                let refused: Vec<String> = ack
                    .return_codes
                    .iter()
                    .filter(|c| !matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
                    .map(|c| format!("{c:?}"))
                    .collect();
                if !refused.is_empty() {
                    let _ = events.send(subscription_refused(&name, &refused, ""));
                    return;
                }
                tracing::info!(source = %name, "subscribed");
            }
            Ok(_) => {}
            Err(e) => {
                let _ = events.send(connection_failed(&name, e));
                return;
            }
        }
    }
}

/// The publishes of one connection.
pub struct MqttSession {
    name: String,
    generation: u64,
    events: mpsc::UnboundedReceiver<Incoming>,
}

impl std::fmt::Debug for MqttSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSession")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl BrokerSession for MqttSession {
    type Token = (u64, MqttAck);

    async fn next(&mut self) -> Result<Option<Delivery<(u64, MqttAck)>>> {
        match self.events.recv().await {
            Some(Incoming::Message(boxed)) => {
                let (message, ack) = *boxed;
                Ok(Some(Delivery {
                    token: (self.generation, ack),
                    sequence: None,
                    content: Content::Message(message),
                    last: false,
                }))
            }
            Some(Incoming::Failed(e)) => Err(e),
            None => Err(Error::source_transient(
                &self.name,
                "the MQTT event loop stopped",
                "no more events",
            )),
        }
    }

    async fn caught_up(&mut self) -> Result<bool> {
        // A topic has no end to ask for: no message for the idle timeout is the end.
        Ok(true)
    }
}
