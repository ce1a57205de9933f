//! What the message-broker sources ([`nats`](crate::nats), [`amqp`](crate::amqp),
//! [`mqtt`](crate::mqtt)) share (feature `broker`, enabled by each of them).
//!
//! * [`PayloadConfig`] — payloads as JSON objects decoded into an explicit schema (through
//!   [`JsonDecoder`](crate::decode::JsonDecoder)) or as raw bytes, optionally with the metadata
//!   columns `_subject`, `_timestamp` (`timestamp[ms, UTC]`) and `_headers` (a JSON object).
//! * [`PayloadDecoder`] — messages into batches; a message that does not decode is a
//!   [`DeadLetter`](arcane_core::DeadLetter) (origin, `sequence N`/`delivery N`, the reason, the
//!   payload) and is acknowledged with the batch, so it never blocks the stream.
//! * [`SecretValue`] — passwords and tokens inline, from an environment variable or a file;
//!   [`TlsConfig`] — TLS with extra CA and client certificates from PEM files;
//!   [`RetryConfig`] — the `retry` block (exponential backoff with jitter, every attempt logged).
//! * [`Broker`] — what differs between brokers: connect after a sequence, deliver messages
//!   ([`BrokerSession`]), acknowledge a committed batch's tokens.
//! * [`BrokerSource`] — the one [`Source`](arcane_core::Source) over any [`Broker`]: the ack
//!   ledger, payload decoding, batching, skipping redeliveries and resumed rows, dead letters,
//!   the end of a backfill, reconnecting under `retry`. It runs on
//!   [`spawn_source`](crate::runtime::spawn_source): dropping the stream stops it.
//!
//! Every broker config has the same shape: the connection (broker-specific fields, `tls`,
//! credentials), `payload`, batching (`batchRows`, `batchTimeout`, `backfillIdleTimeout` where the
//! broker has no end to ask for), `maxUnacked` and `retry`.
//!
//! Flow control is the same for all three: decoded batches go through a channel of
//! [`OUTPUT_BATCHES`](self) batches, and the broker delivers at most `maxUnacked`
//! unacknowledged messages (JetStream `max_ack_pending`, AMQP prefetch, MQTT 5 receive maximum;
//! the old names `maxAckPending`, `prefetch` and `receiveMaximum` are still accepted).
//! Acks are sent only from [`Source::commit`](arcane_core::Source::commit), after the sink
//! committed, so a slow sink stops consumption instead of buffering without bound.
//!
//! The sink must therefore commit before that bound is reached: a sink that keeps more
//! unacknowledged rows open than the broker lets through (e.g. the Parquet sink's default
//! rolling, 128 MiB or `maxFileAge` 5m) stalls consumption until it commits by age. Keep the
//! window (`maxUnacked`) above the sink's `rolling.maxRowsPerFile`.

mod config;
mod payload;
mod runtime;
mod source;

pub use arcane_core::retry::RetryConfig;
pub use config::{
    DEFAULT_BACKFILL_IDLE_TIMEOUT, DEFAULT_BATCH_TIMEOUT, DEFAULT_BROKER_BATCH_ROWS,
    DEFAULT_MAX_UNACKED, FieldConfig, PayloadConfig, PayloadFormat, SecretValue, TlsConfig,
};
#[allow(unused_imports)]
pub(crate) use config::{
    broker_settings, default_backfill_idle_timeout, default_batch_rows, default_batch_timeout,
};
pub use payload::{
    BrokerMessage, DecodedMessages, HEADERS_COLUMN, PAYLOAD_COLUMN, PayloadDecoder, SUBJECT_COLUMN,
    TIMESTAMP_COLUMN,
};
#[allow(unused_imports)]
pub(crate) use runtime::now_ms;
pub use source::{
    BatchEnd, Broker, BrokerSession, BrokerSettings, BrokerSource, Content, Delivery,
};
