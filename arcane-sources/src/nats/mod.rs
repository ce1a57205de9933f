//! The NATS JetStream source (feature `nats`): one stream read by a durable pull consumer.
//!
//! * [`NatsSource`] — the [`Source`](arcane_core::Source).
//! * [`NatsSourceConfig`] — its settings (camelCase JSON, part of a stream's spec).
//! * [`NatsPosition`] — the position stored in the sink's manifest: the stream sequence.
//!
//! # Guarantees: exactly once
//!
//! * A batch's position is the JetStream **stream sequence** of its last message (dead-lettered
//!   messages included). The sink stores it with the files it commits.
//! * At every start the durable consumer is deleted and created again with
//!   `deliver_policy = by_start_sequence(position + 1)` (or `all`/`new`/`startTime` when nothing
//!   was committed), `ack_policy = all`: the sink's manifest, not the server's ack floor, says
//!   where to continue. The first `checkpoint.rows` rows read are skipped (a group can end inside
//!   a batch), so every message is in the output once.
//! * Acks are sent from [`Source::commit`](arcane_core::Source::commit) only, after the sink
//!   committed: one ack of the batch's last message, which with `ack_policy = all` acks every
//!   message before it. Rows of a partly committed batch are not acked until their batch is.
//! * Redeliveries (after `ackWait`, or after a reconnect) of messages already read are
//!   recognised by their sequence and dropped.
//! * Backpressure: at most `maxUnacked` messages are delivered and not yet acked; the
//!   `nats-jetstream` kind sets it to twice `rowsPerGroup` by default.
//! * Backfill mode reads from the start (or `startTime`, or the committed position) and ends
//!   when the consumer has no pending message left (the stream's end at the time it is reached).
//! * Connection loss: the source reconnects and recreates the consumer after the highest
//!   sequence read, under the `retry` policy; when it keeps failing the source stops with a
//!   transient error (exit code 2) and
//!   the restarted process resumes from the committed position.
//! * Messages lost in transit: the server numbers a consumer's deliveries without gaps. A
//!   pull request can outlive a broken connection and the server goes on filling it after the
//!   client reconnects, so the messages sent into the dying connection can be followed by
//!   later ones; a delivery whose consumer sequence skips some ends the session before it is
//!   taken (counted in `arcane.source.nats.delivery_gaps`), and the consumer is recreated
//!   after the highest sequence read, which delivers the lost ones again.
//!
//! # Type mapping
//!
//! `json` payloads: the spec's `schema` (see [`FieldConfig`](crate::broker::FieldConfig)).
//! `raw`: `payload` (binary). Metadata columns (always for `raw`, with `metadataColumns` for
//! `json`): `_subject` (the message subject), `_timestamp` (the time the server stored the
//! message, ms UTC), `_headers` (NATS headers as a JSON object; repeated names keep the last
//! value).

mod config;
mod source;

pub use config::{DEFAULT_ACK_WAIT, NatsSourceConfig, NatsStart};
pub use source::{NatsBroker, NatsPosition, NatsSession, NatsSource};
