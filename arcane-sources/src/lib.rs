//! Reusable sources for Arcane streams, one module and cargo feature per service.
//!
//! | feature | module | source |
//! |---|---|---|
//! | `blob-landing` (default) | [`blob_landing`] | files landing under an object-store prefix: NDJSON, CSV, Parquet, gzip/zstd |
//! | `rest-api` | [`rest_api`] | records polled from an HTTP (REST) API: pagination, watermark, auth, retries |
//! | `nats` | [`nats`] | NATS JetStream, durable pull consumer, exactly once |
//! | `amqp` | [`amqp`] | RabbitMQ (AMQP 0-9-1) queues, acks after commit |
//! | `mqtt` | [`mqtt`] | MQTT 3.1.1/5 topics, QoS 1 persistent session, at least once |
//! | `broker` (enabled by the broker sources) | [`broker`] | the `Broker` trait and the one generic broker source: payload decoding, acks after commit, batching, credentials, TLS, retries |
//! | `postgres-cdc` | [`postgres_cdc`] | PostgreSQL change data capture: consistent snapshot + `pgoutput` logical decoding |
//! | `decode` (enabled by the sources) | [`decode`] | explicit schemas in specs and JSON → Arrow decoding with bad-record isolation |
//! | always | [`generator`] | deterministic synthetic rows with exact resume (the `generator` kind) |
//! | always | [`prelude`] | `use arcane_sources::prelude::*;`: what a source needs (core traits, the runtime, arrow, futures, tracing, serde) |
//! | always | [`runtime`] | the source runtime every source uses: a background task emitting into an [`Output`](runtime::Output) that skips resumed rows and carries dead letters; [`CursorPollingSource`](runtime::CursorPollingSource) for "read the rows after this cursor" |

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(feature = "blob-landing")]
pub mod blob_landing;
#[cfg(feature = "broker")]
pub mod broker;
#[cfg(feature = "decode")]
pub mod decode;
pub mod generator;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "postgres-cdc")]
pub mod postgres_cdc;
pub mod prelude;
#[cfg(feature = "rest-api")]
pub mod rest_api;
pub mod runtime;
