//! # arcane-cli
//!
//! The `arcane` binary: Arcane's built-in stream kinds in one process, so that a platform can
//! run any of them without writing Rust, plus the commands that print what Kubernetes needs
//! to run them.
//!
//! | command | what it does |
//! |---|---|
//! | `arcane run --spec FILE [--backfill]` | run a stream (see `arcane_runner` for flags, environment and exit codes); `arcane` alone runs from the `STREAMCONTEXT__*` environment |
//! | `arcane kinds` | list the hosted kinds with a one-line description |
//! | `arcane retire --spec FILE` | retire a deleted stream: drop what it keeps upstream (a `postgres-cdc` stream's replication slot and publication); idempotent |
//! | `arcane show URL` | what a sink committed there: generation, files, rows, checkpoint, schema, first rows |
//! | `arcane spec-schema KIND` | JSON Schema of the kind's spec, generated from its Rust types |
//! | `arcane crd KIND` | the kind's CustomResourceDefinition (YAML) |
//! | `arcane manifests KIND` | ServiceAccount, Role, RoleBinding, StreamClass and Job templates (YAML) |
//!
//! Every built-in kind is a [`SourceKind`] wrapped in a [`BuiltinKind`]: its spec is a
//! [`KindSpec`] (`source`, `sink`, `rowsPerGroup`, `groupingIntervalSeconds`, `tags`, secret
//! references) and its graph is *source → `grouped_within` → Parquet sink*. A team can host
//! the built-in kinds next to its own in one binary:
//!
//! ```no_run
//! # use arcane_core::{StreamContext, StreamGraph, StreamGraphBuilder, Result};
//! # struct MyKind;
//! # #[async_trait::async_trait]
//! # impl StreamGraphBuilder for MyKind {
//! #     type Spec = serde_json::Value;
//! #     async fn build(&self, _: &StreamContext, _: Self::Spec) -> Result<StreamGraph> { todo!() }
//! # }
//! fn main() -> std::process::ExitCode {
//!     let runner = arcane_cli::kinds::runner().register("my-kind", MyKind);
//!     arcane_cli::main_with(runner)
//! }
//! ```
//!
//! ## Features
//!
//! The default build is small: the `blob-landing` and `generator` kinds on the local store
//! (paths, `file://`) and `memory://`, with no cloud SDK, database, broker, Kubernetes or HTTP
//! client compiled in. `full` is everything (what the container image ships).
//!
//! | feature | default | what |
//! |---|---|---|
//! | `full` | no | every kind below, every object store and `kube` |
//! | `blob-landing` | yes | the `blob-landing` kind |
//! | `generator` | yes | the `generator` kind (synthetic rows) |
//! | `rest-api` | no | the `rest-api` kind (HTTP APIs) |
//! | `nats-jetstream`, `rabbitmq`, `mqtt` | no | the message-broker kinds |
//! | `postgres-cdc` | no | the `postgres-cdc` kind (PostgreSQL change data capture) |
//! | `http-ingest` | no | the `http-ingest` kind (CloudEvents and webhooks pushed over HTTP, acknowledged after commit) |
//! | `s3`, `azure`, `gcs` | no | object stores of the sink and of the `blob-landing` source |
//! | `kube` | no | the Kubernetes client: the Job annotation after a schema mismatch (without it, a schema mismatch exits FATAL saying so) |

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod cli;
mod error;
pub mod kind;
pub mod kinds;
#[cfg(feature = "plugin")]
mod plugin;
mod show;

pub use cli::{Cli, Command, main_with};
pub use error::Error;
pub use kind::{BuiltinKind, KindSpec, SecretRef, SourceKind};
