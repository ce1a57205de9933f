//! The RabbitMQ source (feature `amqp`): one queue consumed over AMQP 0-9-1 with manual acks.
//!
//! * [`AmqpSource`] — the [`Source`](arcane_core::Source).
//! * [`AmqpSourceConfig`] — its settings (camelCase JSON, part of a stream's spec).
//! * [`AmqpPosition`] — the position stored in the sink's manifest.
//!
//! # Guarantees
//!
//! Acks are sent from [`Source::commit`](arcane_core::Source::commit) only, after the sink
//! committed: one `basic.ack` with `multiple = true` of the last delivery of the committed
//! batch (duplicates and dead-lettered messages included). At most `maxUnacked` messages are
//! unacknowledged, so a slow sink stops consumption; the `rabbitmq` kind sets it to twice
//! `rowsPerGroup` by default (AMQP caps it at 65535).
//!
//! AMQP delivery tags belong to one channel and do not survive a reconnect or a restart, and
//! RabbitMQ requeues every unacknowledged message when a consumer goes away. A crash between
//! the sink's commit and the ack therefore brings committed messages back. What the source
//! guarantees depends on `sequence`:
//!
//! * **With `sequence`** (the publisher puts a strictly increasing integer in a header or in
//!   `message_id`, e.g. an outbox id): **exactly once**. The highest sequence read is part of
//!   every position; on restart (and after a reconnect) deliveries at or below the committed
//!   sequence are recognised as duplicates and acked without being read, and the first
//!   `checkpoint.rows` rows after it are skipped. This relies on the queue's FIFO order for a
//!   single consumer (requeued messages go back to their original place), so exactly one
//!   `arcane` process may consume the queue, and it must be a **classic queue**. A quorum
//!   queue puts the messages a lost connection or a stopped consumer returns *behind* later
//!   ones (RabbitMQ 3.10 here: deliveries in flight when a connection closed came back after
//!   the rest of the queue), where their sequence would make them look like duplicates. Its
//!   redeliveries carry `x-delivery-count`; with `sequence`, the first one stops the source
//!   with a configuration error (exit code 1) before anything after it is read: consume a
//!   classic queue, or drop `sequence`. A message without a valid sequence is dead-lettered.
//! * **Without `sequence`**: **at least once**. Nothing is lost, but after a crash the messages
//!   of the last batches (committed but not yet acked, or committed as part of a group that
//!   ended inside a batch) are written again.
//!
//! Backfill mode consumes until no delivery came for `backfillIdleTimeout`, two passive declares
//! in a row report no ready message left and every delivery was read (a full prefetch window
//! waiting for a commit is not the end; RabbitMQ may answer the first count before deliveries the
//! queue sent just before counting, the second comes after them; a queue has no history beyond
//! what it holds). Connection loss: the source reconnects under the `retry`
//! policy, and stops with a transient error (exit code 2) when it keeps failing.
//!
//! # Type mapping
//!
//! `json` payloads: the spec's `schema` (see [`FieldConfig`](crate::broker::FieldConfig)).
//! `raw`: `payload` (binary). Metadata columns (always for `raw`, with `metadataColumns` for
//! `json`): `_subject` (the routing key), `_timestamp` (the `timestamp` property, second
//! precision, null when the publisher did not set it), `_headers` (the headers table as a JSON
//! object of strings).

mod config;
mod source;

pub use config::{
    AmqpSourceConfig, DEFAULT_AMQP_PORT, DeclareConfig, ExchangeConfig, MAX_PREFETCH,
    SequenceConfig,
};
pub use source::{AmqpBroker, AmqpPosition, AmqpSession, AmqpSource};
