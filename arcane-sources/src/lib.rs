//! Reusable sources for Arcane streams, one module and cargo feature per service.
//!
//! | feature | module | source |
//! |---|---|---|
//! | `blob-landing` (default) | [`blob_landing`] | files landing under an object-store prefix: NDJSON, CSV, Parquet, gzip/zstd; on the local store and `memory://` |
//! | `s3`, `azure`, `gcs` | [`blob_landing`] | the `blob-landing` source on Amazon S3, Azure Blob Storage, Google Cloud Storage |
//! | `rest-api` | [`rest_api`] | records polled from an HTTP (REST) API: pagination, watermark, auth, retries |
//! | `nats` | [`nats`] | NATS JetStream, durable pull consumer, exactly once |
//! | `amqp` | [`amqp`] | RabbitMQ (AMQP 0-9-1) queues, acks after commit |
//! | `mqtt` | [`mqtt`] | MQTT 3.1.1/5 topics, QoS 1 persistent session, at least once |
//! | `broker` (enabled by the broker sources) | [`broker`] | the `Broker` trait and the one generic broker source: payload decoding, acks after commit, batching, credentials, TLS, retries |
//! | `http-ingest` | [`http_ingest`] | CloudEvents (structured, binary, batch) and JSON/NDJSON webhooks pushed over HTTP, answered 2xx only once committed, deduplicated by `(source, id)` |
//! | `postgres-cdc` | [`postgres_cdc`] | PostgreSQL change data capture: consistent snapshot + `pgoutput` logical decoding |
//! | `plugin` | [`plugin`] | out-of-process source plugins in any language: Arrow Flight over a Unix socket, positions in the sink's manifest, restarts with backoff (`docs/plugins.md`) |
//! | `decode` (enabled by the sources) | [`decode`] | explicit schemas in specs and JSON → Arrow decoding with bad-record isolation |
//! | always | [`generator`] | deterministic synthetic rows with exact resume (the `generator` kind) |
//! | always | [`prelude`] | `use arcane_sources::prelude::*;`: what a source needs (core traits, the runtime, arrow, futures, tracing, serde) |
//! | always | [`runtime`] | the source runtime every source uses: a background task emitting into an [`Output`](runtime::Output) that skips resumed rows and carries dead letters; [`CursorPollingSource`](runtime::CursorPollingSource) for "read the rows after this cursor" |
//!
//! ## Example
//!
//! A directory of NDJSON files backfilled into a sink (here the in-memory test sink of
//! `arcane_core::testing`; a stream uses the Parquet sink of `arcane-sinks`):
//!
//! ```
//! use std::num::NonZeroUsize;
//! use std::time::Duration;
//! use arcane_core::testing::MemorySink;
//! use arcane_core::{Completion, GroupLimits, StreamContext, StreamGraph};
//! use arcane_sources::blob_landing::{BlobLandingSource, BlobLandingSourceConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("arcane-sources-example-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! std::fs::write(dir.join("orders-1.ndjson"), "{\"id\": 1, \"amount\": 9.5}\n{\"id\": 2, \"amount\": 3.0}\n")?;
//! let config: BlobLandingSourceConfig = serde_json::from_value(serde_json::json!({
//!     "url": format!("{}/", dir.display()),
//!     "format": "ndjson",
//!     "schema": [{"name": "id", "type": "int64"}, {"name": "amount", "type": "float64"}],
//! }))?;
//! let sink = MemorySink::new();
//! let rows = sink.store();
//! let limits = GroupLimits::new(NonZeroUsize::new(1_000).unwrap(), Duration::from_secs(5));
//! let ctx = StreamContext::new("orders", "blob-landing", serde_json::json!({})).with_backfill("b1");
//! let report = StreamGraph::from_source(BlobLandingSource::new(config)?)
//!     .grouped_within(limits)
//!     .to_sink(sink)
//!     .run(&ctx)
//!     .join()
//!     .await;
//! std::fs::remove_dir_all(&dir)?;
//! assert_eq!(report.outcome?, Completion::Finished);
//! assert_eq!(rows.rows(), 2);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(feature = "blob-landing")]
pub mod blob_landing;
#[cfg(feature = "broker")]
pub mod broker;
#[cfg(feature = "decode")]
pub mod decode;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod generator;
#[cfg(feature = "http-ingest")]
pub mod http_ingest;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "plugin")]
pub mod plugin;
#[cfg(feature = "postgres-cdc")]
pub mod postgres_cdc;
pub mod prelude;
#[cfg(feature = "rest-api")]
pub mod rest_api;
pub mod runtime;
