//! The built-in stream kinds, one module (and cargo feature) each.
//!
//! | kind | feature | source |
//! |---|---|---|
//! | `blob-landing` | `blob-landing` | files landing under an object-store prefix ([`arcane_sources::blob_landing`]) |
//! | `generator` | `generator` | deterministic synthetic rows ([`GeneratorConfig`]) |
//! | `rest-api` | `rest-api` | records polled from an HTTP API ([`arcane_sources::rest_api`]) |
//! | `nats-jetstream` | `nats-jetstream` | a JetStream stream, durable pull consumer ([`arcane_sources::nats`]) |
//! | `rabbitmq` | `rabbitmq` | a RabbitMQ queue over AMQP 0-9-1 ([`arcane_sources::amqp`]) |
//! | `mqtt` | `mqtt` | MQTT 5 or 3.1.1 topics, QoS 1 persistent session ([`arcane_sources::mqtt`]) |
//! | `http-ingest` | `http-ingest` | CloudEvents and webhooks pushed over HTTP, acknowledged after commit ([`arcane_sources::http_ingest`]) |
//! | `postgres-cdc` | `postgres-cdc` | a PostgreSQL table's snapshot and changes ([`arcane_sources::postgres_cdc`]) |
//! | `plugin` | `plugin` | an out-of-process source plugin speaking Arrow Flight over a Unix socket ([`arcane_sources::plugin`]) |

#[cfg(feature = "blob-landing")]
mod blob_landing;
#[cfg(feature = "generator")]
mod generator;
#[cfg(feature = "http-ingest")]
mod http_ingest;
#[cfg(feature = "mqtt")]
mod mqtt;
#[cfg(feature = "nats-jetstream")]
mod nats_jetstream;
#[cfg(feature = "plugin")]
mod plugin;
#[cfg(feature = "postgres-cdc")]
mod postgres_cdc;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
#[cfg(feature = "rest-api")]
mod rest_api;

#[cfg(feature = "blob-landing")]
pub use blob_landing::BlobLanding;
#[cfg(feature = "generator")]
pub use generator::{DEFAULT_GENERATOR_BATCH_ROWS, Generator, GeneratorConfig};
#[cfg(feature = "http-ingest")]
pub use http_ingest::{HTTP_INGEST_MAX_FILE_AGE, HttpIngest};
#[cfg(feature = "mqtt")]
pub use mqtt::Mqtt;
#[cfg(feature = "nats-jetstream")]
pub use nats_jetstream::NatsJetStream;
#[cfg(feature = "plugin")]
pub use plugin::{Plugin, PluginConfig};
#[cfg(feature = "postgres-cdc")]
pub use postgres_cdc::PostgresCdc;
#[cfg(feature = "postgres-cdc")]
pub(crate) use postgres_cdc::retire_postgres_cdc;
#[cfg(feature = "rabbitmq")]
pub use rabbitmq::RabbitMq;
#[cfg(feature = "rest-api")]
pub use rest_api::RestApi;

use arcane_deploy::{KindManifest, PrinterColumn};
use arcane_runner::Runner;

use crate::kind::{BuiltinKind, SECRET_REF_FIELDS, SourceKind};

/// Register a [`SourceKind`] under its name.
pub fn register<K: SourceKind>(runner: Runner, kind: K) -> Runner {
    let name = kind.name();
    runner.register(name, BuiltinKind(kind))
}

/// A runner hosting every built-in kind compiled in.
pub fn runner() -> Runner {
    let runner = Runner::new();
    #[cfg(feature = "blob-landing")]
    let runner = register(runner, BlobLanding);
    #[cfg(feature = "generator")]
    let runner = register(runner, Generator);
    #[cfg(feature = "rest-api")]
    let runner = register(runner, RestApi);
    #[cfg(feature = "nats-jetstream")]
    let runner = register(runner, NatsJetStream);
    #[cfg(feature = "rabbitmq")]
    let runner = register(runner, RabbitMq);
    #[cfg(feature = "mqtt")]
    let runner = register(runner, Mqtt);
    #[cfg(feature = "postgres-cdc")]
    let runner = register(runner, PostgresCdc);
    #[cfg(feature = "http-ingest")]
    let runner = register(runner, HttpIngest);
    #[cfg(feature = "plugin")]
    let runner = register(runner, Plugin);
    runner
}

/// The broker kinds ack only after the sink committed, and the broker delivers at most
/// `maxUnacked` unacknowledged messages. Without an explicit value the window is twice
/// `rowsPerGroup` (at most `cap`, the broker's limit), so a group can fill while the previous one
/// is committed and acked; and a Parquet file must commit after at most half the window, or a
/// full window would wait for `rolling.maxFileAge` (5m by default).
#[cfg_attr(
    not(any(feature = "nats-jetstream", feature = "rabbitmq", feature = "mqtt")),
    allow(dead_code)
)]
pub(crate) fn fit_broker_window(
    max_unacked: &mut Option<usize>,
    rows_per_group: usize,
    cap: usize,
    sink: &mut arcane_sinks::ParquetSinkConfig,
) {
    let window = *max_unacked.get_or_insert(rows_per_group.saturating_mul(2).clamp(1, cap));
    let files = u64::try_from(window / 2).unwrap_or(u64::MAX).max(1);
    if sink.rolling.max_rows_per_file > files {
        tracing::info!(
            window,
            max_rows_per_file = files,
            "sink files commit every {files} rows so that acks free the broker's window (spec.source.maxUnacked)"
        );
        sink.rolling.max_rows_per_file = files;
    }
}

/// The Kubernetes description of a hosted kind, for `arcane crd` and `arcane manifests`:
/// names derived from `kind`, the spec schema from its Rust types, the secret-reference fields
/// of [`KindSpec`](crate::KindSpec), and a `Sink` column.
pub fn kind_manifest(runner: &Runner, kind: &str) -> Result<KindManifest, crate::Error> {
    let registry = runner.registry();
    let name = registry
        .canonical_name(kind)
        .ok_or_else(|| crate::Error::UnknownKind {
            kind: kind.to_string(),
            known: registry.kinds().into_iter().map(|k| k.name).collect(),
        })?
        .to_string();
    let schema = registry
        .spec_schema(&name)
        .map_err(|e| crate::Error::Stream(Box::new(e)))?
        .ok_or_else(|| crate::Error::NoSchema { kind: name.clone() })?;
    let info = registry
        .kinds()
        .into_iter()
        .find(|k| k.name == name)
        .map(|k| k.description)
        .unwrap_or_default();
    let manifest = KindManifest::new(&name, schema)?
        .with_description(format!("An Arcane {name} stream: {info}."))
        .with_secret_refs(SECRET_REF_FIELDS)
        .with_printer_column(PrinterColumn::new("Sink", ".spec.sink.url", "string"));
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::fit_broker_window;
    use arcane_sinks::ParquetSinkConfig;

    #[test]
    fn broker_files_commit_within_half_the_window() {
        // An explicit window is kept.
        let mut window = Some(1000);
        let mut sink = ParquetSinkConfig::new("memory:///x");
        fit_broker_window(&mut window, 300, usize::MAX, &mut sink);
        assert_eq!((window, sink.rolling.max_rows_per_file), (Some(1000), 500));
        // Without one: twice the group, capped by the broker's limit.
        let mut window = None;
        let mut sink = ParquetSinkConfig::new("memory:///x");
        fit_broker_window(&mut window, 300, usize::MAX, &mut sink);
        assert_eq!((window, sink.rolling.max_rows_per_file), (Some(600), 300));
        let mut window = None;
        fit_broker_window(&mut window, 60_000, 65_535, &mut sink);
        assert_eq!(window, Some(65_535));
        // A smaller setting of the user's is kept.
        assert_eq!(sink.rolling.max_rows_per_file, 300);
    }
}
