//! [`NatsSource`]: the [`Source`] over a JetStream stream, read by a durable pull consumer.

use std::path::PathBuf;
use std::time::Duration;

use arcane_core::{
    Checkpoint, Error, Mode, Position, PositionedStream, Result, Source, SourceStart,
};
use arrow_schema::SchemaRef;
use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::config::{NatsSourceConfig, NatsStart};
use crate::broker::{
    Backoff, BrokerMessage, Ledger, OUTPUT_BATCHES, Output, PayloadDecoder, sleep_until,
    spawn_stream,
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
#[derive(Debug)]
pub struct NatsSource {
    name: String,
    config: NatsSourceConfig,
    field: String,
    schema: SchemaRef,
    ledger: Ledger<jetstream::message::Acker>,
}

impl NatsSource {
    /// A source for `config`; errors name fields under `source`.
    pub fn new(config: NatsSourceConfig) -> Result<Self> {
        Self::new_at(config, "source")
    }

    /// A source for `config`; `field` is the config's path in the spec (e.g. `spec.source`).
    pub fn new_at(config: NatsSourceConfig, field: &str) -> Result<Self> {
        config.validate(field)?;
        let name = format!("nats-jetstream {}/{}", config.stream, config.consumer);
        let decoder = PayloadDecoder::new(&config.payload, &format!("{field}.payload"), "")?;
        Ok(Self {
            name,
            schema: decoder.schema().clone(),
            config,
            field: field.to_string(),
            ledger: Ledger::default(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &NatsSourceConfig {
        &self.config
    }
}

#[async_trait::async_trait]
impl Source for NatsSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn schema(&self) -> Option<SchemaRef> {
        Some(self.schema.clone())
    }

    async fn open(&mut self, start: SourceStart) -> Result<PositionedStream> {
        let (resume, skip) = match &start.resume_from {
            None => (None, 0),
            Some(c) => (c.decode::<NatsPosition>(&self.name)?, c.rows),
        };
        tracing::info!(source = %self.name, ?resume, skip, mode = start.mode.as_str(), "nats-jetstream source opening");
        self.ledger.clear();
        let decoder = PayloadDecoder::new(
            &self.config.payload,
            &format!("{}.payload", self.field),
            format!("nats stream {}", self.config.stream),
        )?;
        let (tx, rx) = mpsc::channel(OUTPUT_BATCHES);
        let output = Output::new(tx, decoder, skip);
        let run = Run {
            name: self.name.clone(),
            config: self.config.clone(),
            field: self.field.clone(),
            mode: start.mode,
            ledger: self.ledger.clone(),
            highest: resume.map(|p| p.stream_sequence).unwrap_or(0),
            resumed: resume.is_some(),
        };
        Ok(spawn_stream(rx, run.drive(output)))
    }

    async fn commit(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let Some(position) = checkpoint.decode::<NatsPosition>(&self.name)? else {
            return Ok(());
        };
        // `AckPolicy::All`: acking the last message of the committed batch acks everything
        // before it. Rows of the next batch covered by `checkpoint.rows` are not acked: they are
        // re-read and skipped by count on resume.
        if let Some(acker) = self.ledger.take_through(position.stream_sequence) {
            if let Err(e) = acker.double_ack_with(AckKind::Ack).await {
                // Harmless: the next ack covers it, and a restart repositions the consumer.
                tracing::warn!(source = %self.name, sequence = position.stream_sequence, error = %e, "ack failed");
            }
        }
        Ok(())
    }
}

struct Run {
    name: String,
    config: NatsSourceConfig,
    field: String,
    mode: Mode,
    ledger: Ledger<jetstream::message::Acker>,
    /// The highest stream sequence read (or committed, at start); anything at or below it is a
    /// redelivery.
    highest: u64,
    resumed: bool,
}

impl Run {
    async fn drive(mut self, mut output: Output) {
        if let Err(e) = self.consume(&mut output).await {
            output.fail(e).await;
        }
    }

    async fn connect(&self) -> Result<async_nats::Client> {
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

    /// (Re)create the durable consumer right after `self.highest` (or at the configured start).
    async fn consumer(
        &self,
        js: &jetstream::Context,
    ) -> Result<consumer::Consumer<consumer::pull::Config>> {
        let c = &self.config;
        let stream = js.get_stream(&c.stream).await.map_err(|e| {
            Error::source_transient(
                &self.name,
                format!("cannot open stream \"{}\" (does it exist?)", c.stream),
                e,
            )
        })?;
        let deliver_policy = if self.resumed || self.highest > 0 {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: self.highest + 1,
            }
        } else if let Some(at) = c.start_time(&self.field)? {
            consumer::DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from(at),
            }
        } else if c.start == NatsStart::New && self.mode == Mode::Stream {
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
            max_ack_pending: c.max_ack_pending() as i64,
            filter_subject: c.filter_subject.clone().unwrap_or_default(),
            ..Default::default()
        };
        stream
            .create_consumer(config)
            .await
            .map_err(|e| Error::source_transient(&self.name, "cannot create the consumer", e))
    }

    async fn consume(&mut self, output: &mut Output) -> Result<()> {
        let mut backoff = Backoff::new(self.config.reconnect.clone());
        let backfill = self.mode == Mode::Backfill;
        let mut buffer: Vec<BrokerMessage> = Vec::with_capacity(self.config.batch_rows);
        let mut last_acker: Option<jetstream::message::Acker> = None;
        'session: loop {
            // Connect and position the consumer, with backoff.
            let (_client, mut consumer) = loop {
                let attempt = async {
                    let client = self.connect().await?;
                    let js = jetstream::new(client.clone());
                    let consumer = self.consumer(&js).await?;
                    Ok::<_, Error>((client, consumer))
                };
                match attempt.await {
                    Ok(ok) => break ok,
                    Err(e @ Error::Config { .. }) => return Err(e),
                    Err(e) => backoff.failed(&self.name, "connecting", e).await?,
                }
            };
            if backfill {
                let pending = consumer.info().await.map(|i| i.num_pending).map_err(|e| {
                    Error::source_transient(&self.name, "cannot read consumer info", e)
                })?;
                if pending == 0 {
                    tracing::info!(source = %self.name, "backfill: the stream has nothing after the position; done");
                    return Ok(());
                }
            }
            let mut messages = match consumer
                .stream()
                .max_messages_per_batch(self.config.batch_rows.min(self.config.max_ack_pending()))
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    backoff.failed(&self.name, "pulling", e).await?;
                    continue 'session;
                }
            };
            let mut deadline: Option<tokio::time::Instant> = None;
            loop {
                let next = tokio::select! {
                    next = messages.next() => next,
                    () = sleep_until(deadline) => {
                        self.flush(output, &mut buffer, &mut last_acker).await?;
                        deadline = None;
                        continue;
                    }
                };
                match next {
                    Some(Ok(message)) => {
                        backoff.reset();
                        let info = message.info().map_err(|e| {
                            Error::source_transient(
                                &self.name,
                                "message without JetStream metadata",
                                e,
                            )
                        })?;
                        let sequence = info.stream_sequence;
                        let pending = info.pending;
                        let published = info.published.unix_timestamp_nanos() / 1_000_000;
                        if sequence <= self.highest {
                            // A redelivery of a message already read: the ack of a later one
                            // covers it.
                            continue;
                        }
                        let (message, acker) = message.split();
                        let headers = message
                            .headers
                            .as_ref()
                            .map(|h| {
                                h.iter()
                                    .flat_map(|(k, vs)| {
                                        vs.iter().map(move |v| (k.to_string(), v.to_string()))
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        buffer.push(BrokerMessage {
                            payload: message.payload,
                            subject: message.subject.to_string(),
                            timestamp_ms: Some(published as i64),
                            headers,
                            locator: format!("sequence {sequence}"),
                        });
                        self.highest = sequence;
                        last_acker = Some(acker);
                        if deadline.is_none() {
                            deadline =
                                Some(tokio::time::Instant::now() + self.config.batch_timeout);
                        }
                        let caught_up = backfill && pending == 0;
                        if buffer.len() >= self.config.batch_rows || caught_up {
                            self.flush(output, &mut buffer, &mut last_acker).await?;
                            deadline = None;
                        }
                        if caught_up {
                            tracing::info!(source = %self.name, sequence, "backfill caught up with the stream; done");
                            return Ok(());
                        }
                    }
                    Some(Err(e)) => {
                        // Missed heartbeats, server restarts: the client reconnects by itself;
                        // give up only after repeated failures.
                        backoff.failed(&self.name, "pulling messages", e).await?;
                    }
                    None => {
                        backoff
                            .failed(&self.name, "pulling messages", "the message stream ended")
                            .await?;
                        self.flush(output, &mut buffer, &mut last_acker).await?;
                        continue 'session;
                    }
                }
                if output.is_closed() {
                    return Ok(());
                }
            }
        }
    }

    async fn flush(
        &self,
        output: &mut Output,
        buffer: &mut Vec<BrokerMessage>,
        last_acker: &mut Option<jetstream::message::Acker>,
    ) -> Result<()> {
        if buffer.is_empty() {
            return Ok(());
        }
        if let Some(acker) = last_acker.take() {
            self.ledger.push(self.highest, acker);
        }
        let position = Position::encode(&NatsPosition {
            stream_sequence: self.highest,
        })?;
        if !output.emit(buffer, Vec::new(), position).await {
            return Err(Error::source_permanent(
                &self.name,
                "the stream was dropped",
            ));
        }
        buffer.clear();
        Ok(())
    }
}
