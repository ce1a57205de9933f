//! The MQTT source (feature `mqtt`): topic filters subscribed with QoS 1 in a persistent
//! session, over MQTT 5 or, with `protocolVersion: "3.1.1"`, MQTT 3.1.1.
//!
//! A broker that refuses the version (a CONNACK "unacceptable/unsupported protocol version",
//! or closing the connection right after an MQTT 5 CONNECT) is a configuration error (exit
//! code 1) naming `protocolVersion`, never retried.
//!
//! * [`MqttSource`] — the [`Source`](arcane_core::Source).
//! * [`MqttSourceConfig`] — its settings (camelCase JSON, part of a stream's spec).
//! * [`MqttPosition`] — the position stored in the sink's manifest (only meaningful in the run
//!   that wrote it).
//!
//! # Guarantees: at least once, with documented duplicates
//!
//! The client connects with `clean_start = false`, a stable `clientId` and a session expiry
//! (`sessionExpiry`, default 7 days), so the broker keeps the subscription and queues QoS 1
//! messages while the source is down. Every message's `PUBACK` is sent from
//! [`Source::commit`](arcane_core::Source::commit) only, after the sink committed the batch
//! holding it (dead-lettered messages included), in the order the messages arrived. The broker
//! sends at most `maxUnacked` unacknowledged messages, so a slow sink stops consumption.
//!
//! MQTT gives a client no position to resume from and no sequence to recognise a message by:
//! the broker's session is the only state. So:
//!
//! * **No loss**: a message is acked only once it is durably in the output (or dead-lettered),
//!   and an unacked message is redelivered by the broker (with the `DUP` flag) after a
//!   reconnect or restart, as long as the session has not expired and the broker did not drop
//!   it (brokers cap queued messages per session, e.g. Mosquitto's `max_queued_messages`,
//!   default 1000 — raise it for streams that may be down for a while).
//! * **Duplicates** after a crash or SIGKILL: messages of groups committed whose acks were not
//!   sent yet, and the rows of a partly committed source batch (a group ending inside a batch)
//!   are delivered again and written again. A graceful stop (SIGTERM) commits and acks
//!   everything read, so it adds no duplicates. Rows carry no id from the protocol: put one in
//!   the payload to deduplicate downstream.
//! * Messages published with QoS 0 need no ack and are lost if the process dies before the
//!   sink commits them.
//! * The broker may deliver retained messages again on every subscribe.
//!
//! Backfill mode consumes until no message arrives for `backfillIdleTimeout`. Connection loss:
//! the client reconnects under the `retry` policy and resubscribes; it stops with a
//! transient error (exit code 2) after `maxAttempts` failures in a row.
//!
//! # Type mapping
//!
//! `json` payloads: the spec's `schema` (see [`FieldConfig`](crate::broker::FieldConfig)).
//! `raw`: `payload` (binary). Metadata columns (always for `raw`, with `metadataColumns` for
//! `json`): `_subject` (the topic), `_timestamp` (when the source received the message: MQTT
//! carries no timestamp), `_headers` (MQTT 5 user properties as a JSON object).

mod config;
mod source;

pub use config::{
    DEFAULT_MQTT_PORT, DEFAULT_SESSION_EXPIRY, MAX_RECEIVE_MAXIMUM, MqttProtocolVersion,
    MqttSourceConfig,
};
pub use source::{MqttBroker, MqttPosition, MqttSession, MqttSource};
