//! [`MqttSource`]: the [`Source`] over MQTT topic filters, QoS 1 in a persistent session.

use std::time::Duration;

use arcane_core::{
    Checkpoint, Error, Mode, Position, PositionedStream, Result, Source, SourceStart,
};
use arrow_schema::SchemaRef;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::config::MqttSourceConfig;
use crate::broker::{
    AbortOnDrop, Backoff, BrokerMessage, Ledger, OUTPUT_BATCHES, Output, PayloadDecoder, now_ms,
    sleep_until, spawn_stream,
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
#[derive(Debug)]
pub struct MqttSource {
    name: String,
    config: MqttSourceConfig,
    field: String,
    schema: SchemaRef,
    run: u64,
    ledger: Ledger<Vec<Publish>>,
    client: Option<AsyncClient>,
    /// The client's event loop. It outlives the stream (so the acks of the commits after a
    /// graceful stop are still sent) and stops when the source is dropped or opened again.
    poller: Option<AbortOnDrop>,
}

impl std::fmt::Debug for AbortOnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AbortOnDrop")
    }
}

impl MqttSource {
    /// A source for `config`; errors name fields under `source`.
    pub fn new(config: MqttSourceConfig) -> Result<Self> {
        Self::new_at(config, "source")
    }

    /// A source for `config`; `field` is the config's path in the spec (e.g. `spec.source`).
    pub fn new_at(config: MqttSourceConfig, field: &str) -> Result<Self> {
        config.validate(field)?;
        let name = format!("mqtt {}:{} {}", config.host, config.port, config.client_id);
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
            client: None,
            poller: None,
        })
    }

    /// The settings.
    pub fn config(&self) -> &MqttSourceConfig {
        &self.config
    }

    fn options(&self) -> Result<MqttOptions> {
        let c = &self.config;
        let field = &self.field;
        let mut opts = MqttOptions::new(&c.client_id, &c.host, c.port);
        opts.set_clean_start(false)
            .set_manual_acks(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_session_expiry_interval(Some(
                u32::try_from(c.session_expiry.as_secs()).unwrap_or(u32::MAX),
            ))
            .set_receive_maximum(Some(c.receive_maximum()))
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
}

#[async_trait::async_trait]
impl Source for MqttSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn schema(&self) -> Option<SchemaRef> {
        Some(self.schema.clone())
    }

    async fn open(&mut self, start: SourceStart) -> Result<PositionedStream> {
        tracing::info!(source = %self.name, resume = ?start.resume_from, mode = start.mode.as_str(), "mqtt source opening (the broker's session says where to continue)");
        self.ledger.clear();
        self.poller = None;
        let decoder = PayloadDecoder::new(
            &self.config.payload,
            &format!("{}.payload", self.field),
            format!("mqtt {}", self.config.topics.join(",")),
        )?;
        let (client, eventloop) = AsyncClient::new(self.options()?, 1024);
        self.client = Some(client.clone());
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::channel(OUTPUT_BATCHES);
        let output = Output::new(tx, decoder, 0);
        let run = Run {
            name: self.name.clone(),
            config: self.config.clone(),
            mode: start.mode,
            ledger: self.ledger.clone(),
            run: self.run,
            batch: 0,
        };
        let poller = poll(
            self.name.clone(),
            self.config.clone(),
            client,
            eventloop,
            events_tx,
        );
        self.poller = Some(AbortOnDrop(tokio::spawn(poller)));
        Ok(spawn_stream(rx, run.drive(output, events_rx)))
    }

    async fn commit(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let Some(position) = checkpoint.decode::<MqttPosition>(&self.name)? else {
            return Ok(());
        };
        if position.run != self.run {
            return Ok(());
        }
        let Some(client) = &self.client else {
            return Ok(());
        };
        for batch in self.ledger.drain_through(position.batch) {
            for publish in batch {
                if let Err(e) = client.ack(&publish).await {
                    tracing::warn!(source = %self.name, pkid = publish.pkid, error = %e, "ack failed; the broker will redeliver");
                    return Ok(());
                }
            }
        }
        // The event loop writes the PUBACKs; give it a moment before a stopping process exits.
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(())
    }
}

/// What the event loop reports.
enum Incoming {
    Publish(Publish),
    Failed(Error),
}

/// Poll the MQTT event loop for ever (it must run for acks and keep-alives to be sent, so it
/// never waits for the sink): publishes go to `events`, which the broker's receive maximum
/// bounds. Subscribes after every connect; reconnects with backoff.
async fn poll(
    name: String,
    config: MqttSourceConfig,
    client: AsyncClient,
    mut eventloop: EventLoop,
    events: mpsc::UnboundedSender<Incoming>,
) {
    let mut backoff = Backoff::new(config.reconnect.clone());
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if events.send(Incoming::Publish(p)).is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                tracing::info!(source = %name, session_present = ack.session_present, "connected");
                for topic in &config.topics {
                    if let Err(e) = client.try_subscribe(topic.clone(), QoS::AtLeastOnce) {
                        tracing::warn!(source = %name, topic, error = %e, "subscribe failed");
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                if let Err(fatal) = backoff.failed(&name, "connecting", e).await {
                    let _ = events.send(Incoming::Failed(fatal));
                    return;
                }
            }
        }
    }
}

struct Run {
    name: String,
    config: MqttSourceConfig,
    mode: Mode,
    ledger: Ledger<Vec<Publish>>,
    run: u64,
    batch: u64,
}

impl Run {
    async fn drive(mut self, mut output: Output, mut events: mpsc::UnboundedReceiver<Incoming>) {
        if let Err(e) = self.consume(&mut output, &mut events).await {
            output.fail(e).await;
        }
    }

    async fn consume(
        &mut self,
        output: &mut Output,
        events: &mut mpsc::UnboundedReceiver<Incoming>,
    ) -> Result<()> {
        let backfill = self.mode == Mode::Backfill;
        let idle = self.config.backfill_idle_timeout;
        let mut messages: Vec<BrokerMessage> = Vec::new();
        let mut tokens: Vec<Publish> = Vec::new();
        let mut deadline = None;
        let mut last_activity = tokio::time::Instant::now();
        loop {
            let idle_at = backfill.then(|| last_activity + idle);
            tokio::select! {
                event = events.recv() => match event {
                    Some(Incoming::Publish(p)) => {
                        last_activity = tokio::time::Instant::now();
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        let headers = p
                            .properties
                            .as_ref()
                            .map(|pr| pr.user_properties.clone())
                            .unwrap_or_default();
                        messages.push(BrokerMessage {
                            payload: p.payload.clone(),
                            subject: topic.clone(),
                            // MQTT carries no timestamp: the time the source received it.
                            timestamp_ms: Some(now_ms()),
                            headers,
                            locator: format!("topic {topic} packet {}{}", p.pkid, if p.dup { " (redelivered)" } else { "" }),
                        });
                        let mut token = p;
                        token.payload = Bytes::new();
                        token.properties = None;
                        tokens.push(token);
                        if deadline.is_none() {
                            deadline = Some(tokio::time::Instant::now() + self.config.batch_timeout);
                        }
                        if messages.len() >= self.config.batch_rows {
                            self.flush(output, &mut messages, &mut tokens).await?;
                            deadline = None;
                        }
                    }
                    Some(Incoming::Failed(e)) => return Err(e),
                    None => return Err(Error::source_permanent(&self.name, "the MQTT event loop stopped")),
                },
                () = sleep_until(deadline) => {
                    self.flush(output, &mut messages, &mut tokens).await?;
                    deadline = None;
                }
                () = sleep_until(idle_at) => {
                    self.flush(output, &mut messages, &mut tokens).await?;
                    tracing::info!(source = %self.name, ?idle, "backfill: no message for the idle timeout; done");
                    return Ok(());
                }
            }
            if output.is_closed() {
                return Ok(());
            }
        }
    }

    async fn flush(
        &mut self,
        output: &mut Output,
        messages: &mut Vec<BrokerMessage>,
        tokens: &mut Vec<Publish>,
    ) -> Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        self.batch += 1;
        self.ledger.push(self.batch, std::mem::take(tokens));
        let position = Position::encode(&MqttPosition {
            run: self.run,
            batch: self.batch,
        })?;
        if !output.emit(messages, Vec::new(), position).await {
            return Err(Error::source_permanent(
                &self.name,
                "the stream was dropped",
            ));
        }
        messages.clear();
        Ok(())
    }
}
