//! [`Broker`]: what differs between message brokers (connect, next delivery, ack a batch's
//! tokens), and [`BrokerSource`]: the one [`Source`] over any of them, which owns what does not
//! differ — the ack ledger, payload decoding, batching, the resume skip, dead letters, the end of
//! a backfill and reconnecting under the `retry` policy.

use std::fmt::Debug;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use arcane_core::retry::{Exhausted, RetryConfig, retry};
use arcane_core::{
    Checkpoint, DeadLetter, Error, ExitCode, Mode, Position, PositionedStream, Result, Retry,
    Source, SourceStart,
};
use arrow_schema::SchemaRef;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::config::PayloadConfig;
use super::payload::{BrokerMessage, PayloadDecoder};
use super::runtime::{Ledger, OUTPUT_BATCHES, sleep_until};
use crate::runtime::{Output, spawn_source};

/// What one delivery carries.
#[derive(Debug)]
pub enum Content {
    /// A message to decode into a row (or a dead letter when its payload does not fit).
    Message(BrokerMessage),
    /// A message refused before decoding (e.g. without a publisher sequence): a dead letter,
    /// acknowledged with its batch.
    Rejected(DeadLetter),
}

/// One message as a [`BrokerSession`] hands it over.
#[derive(Debug)]
pub struct Delivery<T> {
    /// What acknowledges it (see [`Broker::ack`]).
    pub token: T,
    /// Its strictly increasing sequence, when the broker or publisher gives one: deliveries at
    /// or below the highest sequence read (or committed, on resume) are redeliveries and are
    /// skipped (their tokens are still acknowledged with the batch).
    pub sequence: Option<u64>,
    /// The message.
    pub content: Content,
    /// In backfill mode: the broker says nothing is left after this delivery.
    pub last: bool,
}

/// Where a batch ends, for [`Broker::position`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchEnd {
    /// The source's run (a process-unique number; tokens are only valid in it).
    pub run: u64,
    /// The batch's number in the run, from 1.
    pub batch: u64,
    /// The highest sequence read so far.
    pub sequence: Option<u64>,
}

/// A live connection to a broker, delivering messages.
#[async_trait::async_trait]
pub trait BrokerSession: Send + 'static {
    /// What acknowledges a delivery.
    type Token: Send + 'static;

    /// The next delivery; `Ok(None)` when the broker closed the session (the source reconnects).
    /// A transient error also makes the source reconnect; any other error ends the stream.
    ///
    /// # Cancel safety
    ///
    /// Must be cancel safe: it is raced against the batch and idle deadlines.
    async fn next(&mut self) -> Result<Option<Delivery<Self::Token>>>;

    /// In backfill mode: has everything the broker holds for this source been delivered and
    /// read? Asked right after connecting for brokers without an idle timeout, otherwise after
    /// [`Broker::backfill_idle_timeout`] without a delivery. It must not answer `true` while
    /// delivered messages are still unread.
    async fn caught_up(&mut self) -> Result<bool>;
}

/// A message broker: connect from a position, deliver messages, acknowledge a committed batch's
/// tokens. [`BrokerSource`] does the rest.
#[async_trait::async_trait]
pub trait Broker: Send + Sync + Debug + 'static {
    /// What acknowledges a delivery.
    type Token: Send + 'static;
    /// The position stored in the sink's manifest.
    type Position: Serialize + DeserializeOwned + Debug + Send + Sync;
    /// A connection delivering messages.
    type Session: BrokerSession<Token = Self::Token>;

    /// The kind, for logs (`nats-jetstream`, `rabbitmq`, `mqtt`).
    fn kind(&self) -> &'static str;

    /// Where dead letters come from (`rabbitmq queue orders`).
    fn origin(&self) -> String;

    /// The highest sequence a committed position covers (deliveries at or below it are
    /// redeliveries).
    fn resumed_sequence(&self, position: &Self::Position) -> Option<u64>;

    /// Whether the rows a checkpoint covers after its position (`checkpoint.rows`) are
    /// delivered again in the same order on resume, so that they can be skipped by count.
    fn skips_resumed_rows(&self) -> bool;

    /// The position after a batch.
    fn position(&self, end: BatchEnd) -> Self::Position;

    /// The ledger key of a position (ordered like the batches), or `None` when its tokens are
    /// not of run `run` (nothing to acknowledge).
    fn ledger_key(&self, position: &Self::Position, run: u64) -> Option<u64>;

    /// In backfill mode, ask [`BrokerSession::caught_up`] after this long without a delivery;
    /// `None`: ask right after connecting and trust [`Delivery::last`].
    fn backfill_idle_timeout(&self) -> Option<Duration>;

    /// Connect and start delivering after sequence `after` (or at the configured start).
    /// Transient errors are retried under the `retry` policy; others end the stream.
    async fn connect(&self, after: Option<u64>, mode: Mode) -> Result<Self::Session>;

    /// Acknowledge `tokens`, the deliveries of committed batches, in delivery order.
    async fn ack(&self, tokens: Vec<Self::Token>) -> Result<()>;

    /// The source is opened again: drop the connection acks went to.
    async fn reset(&self) {}
}

/// The settings every broker source shares, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerSettings {
    /// How payloads become rows.
    pub payload: PayloadConfig,
    /// Messages per decoded batch.
    pub batch_rows: NonZeroUsize,
    /// How long a partly filled batch waits for more messages.
    pub batch_timeout: Duration,
    /// Messages delivered and not yet acknowledged (acks follow sink commits).
    pub max_unacked: NonZeroUsize,
    /// Reconnecting.
    pub retry: RetryConfig,
}

/// The source over a [`Broker`]; see the [module docs](super).
pub struct BrokerSource<B: Broker> {
    broker: Arc<B>,
    name: String,
    field: String,
    settings: BrokerSettings,
    schema: SchemaRef,
    run: u64,
    ledger: Ledger<Vec<B::Token>>,
}

impl<B: Broker> Debug for BrokerSource<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSource")
            .field("name", &self.name)
            .field("run", &self.run)
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

impl<B: Broker> BrokerSource<B> {
    /// A source named `name` over `broker`; `field` is the config's path in the spec (e.g.
    /// `spec.source`).
    pub fn with_broker(
        name: impl Into<String>,
        broker: B,
        settings: BrokerSettings,
        field: &str,
    ) -> Result<Self> {
        let decoder = PayloadDecoder::new(
            &settings.payload,
            &format!("{field}.payload"),
            broker.origin(),
        )?;
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        Ok(Self {
            broker: Arc::new(broker),
            name: name.into(),
            field: field.to_string(),
            schema: decoder.schema().clone(),
            settings,
            run,
            ledger: Ledger::default(),
        })
    }

    /// The broker.
    pub fn broker(&self) -> &B {
        &self.broker
    }

    /// The broker, shared (e.g. to [`Broker::reset`] a source that a test cannot drop).
    pub fn broker_handle(&self) -> Arc<B> {
        self.broker.clone()
    }

    /// The shared settings.
    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }
}

#[async_trait::async_trait]
impl<B: Broker> Source for BrokerSource<B> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn schema(&self) -> Option<SchemaRef> {
        Some(self.schema.clone())
    }

    async fn open(&mut self, mut start: SourceStart) -> Result<PositionedStream> {
        let resume = match &start.resume_from {
            None => None,
            Some(c) => c.decode::<B::Position>(&self.name)?,
        };
        if !self.broker.skips_resumed_rows() {
            // Nothing tells already committed rows from new ones: nothing is skipped (at
            // least once).
            if let Some(c) = start.resume_from.as_mut() {
                c.rows = 0;
            }
        }
        let skip = start.resume_from.as_ref().map_or(0, |c| c.rows);
        tracing::info!(source = %self.name, ?resume, skip, mode = start.mode.as_str(), "{} source opening", self.broker.kind());
        self.ledger.clear();
        self.broker.reset().await;
        let decoder = PayloadDecoder::new(
            &self.settings.payload,
            &format!("{}.payload", self.field),
            self.broker.origin(),
        )?;
        let run = Run {
            broker: self.broker.clone(),
            name: self.name.clone(),
            settings: self.settings.clone(),
            mode: start.mode,
            ledger: self.ledger.clone(),
            run: self.run,
            batch: 0,
            highest: resume
                .as_ref()
                .and_then(|p| self.broker.resumed_sequence(p)),
            decoder,
        };
        Ok(spawn_source(
            &self.name,
            &start,
            OUTPUT_BATCHES,
            move |out| run.consume(out),
        ))
    }

    async fn commit(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let Some(position) = checkpoint.decode::<B::Position>(&self.name)? else {
            return Ok(());
        };
        // Rows of the next batch covered by `checkpoint.rows` are not acked: they are read
        // again and skipped by count on resume.
        let Some(key) = self.broker.ledger_key(&position, self.run) else {
            return Ok(());
        };
        let tokens: Vec<B::Token> = self
            .ledger
            .drain_through(key)
            .into_iter()
            .flatten()
            .collect();
        if tokens.is_empty() {
            return Ok(());
        }
        self.broker.ack(tokens).await
    }
}

/// Deliveries since the last flush.
struct Pending<T> {
    messages: Vec<BrokerMessage>,
    rejected: Vec<DeadLetter>,
    tokens: Vec<T>,
    deadline: Option<tokio::time::Instant>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Self {
            messages: Vec::new(),
            rejected: Vec::new(),
            tokens: Vec::new(),
            deadline: None,
        }
    }
}

/// The background task of one open stream.
struct Run<B: Broker> {
    broker: Arc<B>,
    name: String,
    settings: BrokerSettings,
    mode: Mode,
    ledger: Ledger<Vec<B::Token>>,
    run: u64,
    batch: u64,
    highest: Option<u64>,
    decoder: PayloadDecoder,
}

fn is_transient(e: &Error) -> bool {
    e.exit_code() == ExitCode::Restart
}

/// The error of an operation whose retries ran out (or that failed for good).
fn gave_up(name: &str, what: &str, e: Exhausted<Error>) -> Error {
    if !e.transient {
        return e.error;
    }
    Error::Source {
        source_name: name.to_string(),
        message: format!(
            "{what} failed {} times in {:.1}s; giving up (the restarted process resumes from the last commit)",
            e.attempts,
            e.elapsed.as_secs_f64()
        ),
        retry: Retry::Transient,
        source: Some(Box::new(e.error)),
    }
}

impl<B: Broker> Run<B> {
    async fn consume(mut self, mut out: Output) -> Result<()> {
        let backfill = self.mode == Mode::Backfill;
        let idle = self.broker.backfill_idle_timeout();
        let policy = self.settings.retry;
        let mut pending = Pending::default();
        // Connections lost in a row without a delivery.
        let mut losses = 0u32;
        loop {
            let broker = self.broker.clone();
            let (after, mode) = (self.highest, self.mode);
            let mut session = retry(
                &policy,
                &format!("connecting {}", self.name),
                || broker.connect(after, mode),
                is_transient,
                None,
            )
            .await
            .map_err(|e| gave_up(&self.name, "connecting", e))?;
            if backfill && idle.is_none() && session.caught_up().await? {
                tracing::info!(source = %self.name, "backfill: nothing left after the position; done");
                return Ok(());
            }
            let mut delivered = false;
            let mut last_activity = tokio::time::Instant::now();
            let lost: Error = loop {
                let idle_at = idle.filter(|_| backfill).map(|d| last_activity + d);
                tokio::select! {
                    next = session.next() => match next {
                        Ok(Some(delivery)) => {
                            delivered = true;
                            last_activity = tokio::time::Instant::now();
                            let last = backfill && delivery.last;
                            self.accept(delivery, &mut pending);
                            if (pending.messages.len() >= self.settings.batch_rows.get() || last)
                                && !self.flush(&mut out, &mut pending).await?
                            {
                                return Ok(());
                            }
                            if last {
                                tracing::info!(source = %self.name, sequence = ?self.highest, "backfill caught up with the broker; done");
                                return Ok(());
                            }
                        }
                        Ok(None) => break Error::source_transient(&self.name, "the broker closed the session", "no more deliveries"),
                        Err(e) if is_transient(&e) => break e,
                        Err(e) => return Err(e),
                    },
                    () = sleep_until(pending.deadline) => {
                        if !self.flush(&mut out, &mut pending).await? {
                            return Ok(());
                        }
                    }
                    () = sleep_until(idle_at) => {
                        if !self.flush(&mut out, &mut pending).await? {
                            return Ok(());
                        }
                        match session.caught_up().await {
                            Ok(true) => {
                                tracing::info!(source = %self.name, ?idle, "backfill: no delivery for the idle timeout and nothing left; done");
                                return Ok(());
                            }
                            Ok(false) => last_activity = tokio::time::Instant::now(),
                            Err(e) if is_transient(&e) => break e,
                            Err(e) => return Err(e),
                        }
                    }
                }
                if out.is_closed() {
                    return Ok(());
                }
            };
            // What was read is yielded (the sink still commits it); redeliveries after the
            // reconnect are recognised by sequence where the broker gives one.
            if !self.flush(&mut out, &mut pending).await? {
                return Ok(());
            }
            drop(session);
            losses = if delivered { 1 } else { losses + 1 };
            if losses >= policy.max_attempts {
                return Err(Error::Source {
                    source_name: self.name.clone(),
                    message: format!(
                        "the connection was lost {losses} times in a row without a delivery; giving up (the restarted process resumes from the last commit)"
                    ),
                    retry: Retry::Transient,
                    source: Some(Box::new(lost)),
                });
            }
            let delay = policy
                .delays()
                .nth(losses.saturating_sub(1) as usize)
                .unwrap_or(policy.initial_delay);
            tracing::warn!(source = %self.name, attempt = losses, max_attempts = policy.max_attempts, next_delay = ?delay, error = %lost.report(), "connection lost; reconnecting");
            tokio::time::sleep(delay).await;
        }
    }

    /// Take one delivery: a row to decode, a redelivery to skip, or a dead letter.
    fn accept(&mut self, delivery: Delivery<B::Token>, pending: &mut Pending<B::Token>) {
        pending.tokens.push(delivery.token);
        if pending.deadline.is_none() {
            pending.deadline = Some(tokio::time::Instant::now() + self.settings.batch_timeout);
        }
        if let Some(sequence) = delivery.sequence {
            if self.highest.is_some_and(|h| sequence <= h) {
                metrics::counter!("arcane.source.broker.redeliveries").increment(1);
                tracing::debug!(source = %self.name, sequence, "redelivery of a message already read; skipped");
                return;
            }
            self.highest = Some(sequence);
        }
        match delivery.content {
            Content::Message(m) => pending.messages.push(m),
            Content::Rejected(letter) => pending.rejected.push(letter),
        }
    }

    /// Yield what arrived since the last flush (possibly no rows: redeliveries and dead letters
    /// still need their acks) and record its tokens. `false` when the stream was dropped.
    async fn flush(&mut self, out: &mut Output, pending: &mut Pending<B::Token>) -> Result<bool> {
        pending.deadline = None;
        if pending.tokens.is_empty() {
            return Ok(true);
        }
        self.batch += 1;
        let position = self.broker.position(BatchEnd {
            run: self.run,
            batch: self.batch,
            sequence: self.highest,
        });
        let tokens = std::mem::take(&mut pending.tokens);
        if let Some(key) = self.broker.ledger_key(&position, self.run) {
            self.ledger.push(key, tokens);
        }
        let position = Position::encode(&position)?;
        let decoded = self.decoder.decode(&pending.messages);
        metrics::counter!("arcane.source.broker.messages")
            .increment((pending.messages.len() + pending.rejected.len()) as u64);
        pending.messages.clear();
        let mut letters = std::mem::take(&mut pending.rejected);
        letters.extend(decoded.dead_letters);
        Ok(out.emit(decoded.batch, position, letters).await.is_ok())
    }
}
