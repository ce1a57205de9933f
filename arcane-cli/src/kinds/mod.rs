//! The built-in stream kinds, one module (and cargo feature) each.
//!
//! | kind | feature | source |
//! |---|---|---|
//! | `blob-landing` | `blob-landing` | files landing under an object-store prefix ([`arcane_sources::blob_landing`]) |
//! | `generator` | `generator` | deterministic synthetic rows ([`GeneratorConfig`]) |
//! | `postgres-cdc` | `postgres-cdc` | a PostgreSQL table's snapshot and changes ([`arcane_sources::postgres_cdc`]) |

#[cfg(feature = "blob-landing")]
mod blob_landing;
#[cfg(feature = "generator")]
mod generator;
#[cfg(feature = "postgres-cdc")]
mod postgres_cdc;

#[cfg(feature = "blob-landing")]
pub use blob_landing::BlobLanding;
#[cfg(feature = "generator")]
pub use generator::{DEFAULT_GENERATOR_BATCH_ROWS, Generator, GeneratorConfig};
#[cfg(feature = "postgres-cdc")]
pub use postgres_cdc::PostgresCdc;

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
    #[cfg(feature = "postgres-cdc")]
    let runner = register(runner, PostgresCdc);
    runner
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
