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
//!   [`ReconnectConfig`] — exponential reconnect backoff.
//!
//! Flow control is the same for all three: decoded batches go through a channel of
//! [`OUTPUT_BATCHES`](self) batches, and the broker delivers at most its own bound of
//! unacknowledged messages (JetStream `maxAckPending`, AMQP `prefetch`, MQTT receive maximum).
//! Acks are sent only from [`Source::commit`](arcane_core::Source::commit), after the sink
//! committed, so a slow sink stops consumption instead of buffering without bound.
//!
//! The sink must therefore commit before that bound is reached: a sink that keeps more
//! unacknowledged rows open than the broker lets through (e.g. the Parquet sink's default
//! rolling, 128 MiB or `maxFileAge` 5m) stalls consumption until it commits by age. Keep the
//! window (`maxAckPending`, `prefetch`) above the sink's `rolling.maxRowsPerFile`.

mod config;
mod payload;
mod runtime;

pub use config::{
    DEFAULT_BACKFILL_IDLE_TIMEOUT, DEFAULT_BATCH_TIMEOUT, DEFAULT_BROKER_BATCH_ROWS,
    DEFAULT_RECONNECT_INITIAL_DELAY, DEFAULT_RECONNECT_MAX_ATTEMPTS, DEFAULT_RECONNECT_MAX_DELAY,
    FieldConfig, PayloadConfig, PayloadFormat, ReconnectConfig, SecretValue, TlsConfig,
};
#[allow(unused_imports)]
pub(crate) use config::{
    default_backfill_idle_timeout, default_batch_rows, default_batch_timeout, validate_batching,
};
pub use payload::{
    BrokerMessage, DecodedMessages, HEADERS_COLUMN, PAYLOAD_COLUMN, PayloadDecoder, SUBJECT_COLUMN,
    TIMESTAMP_COLUMN,
};
#[allow(unused_imports)]
pub(crate) use runtime::{
    AbortOnDrop, Backoff, Ledger, OUTPUT_BATCHES, Output, now_ms, sleep_until, spawn_stream,
};
