//! Kubernetes packaging of Arcane streams.
//!
//! Arcane streams run as Kubernetes Jobs that the Arcane operator (SneaksAndData) creates per
//! stream custom resource. For each stream kind this crate generates, from plain data (no
//! dependency on the sources, sinks or runner):
//!
//! - the namespaced **CRD** ([`crd()`]) whose `spec` schema comes from the kind's Rust spec type
//!   (a `schemars` JSON Schema made structural, see [`schema`]) and whose `status` is the
//!   operator's ([`schema::status_schema`]);
//! - the operator's **`StreamClass`** ([`stream_class()`]);
//! - **RBAC** for the Jobs: `get` and `patch` on `batch/v1` `jobs`, nothing else ([`rbac()`]);
//! - the streaming and backfill **`StreamingJobTemplate`s** ([`job_template`]) with the
//!   `podFailurePolicy` generated from the runner's exit codes ([`pod_failure_policy`]), the
//!   Indexed-Job backfill templates of sharded backfills, one per shard count
//!   ([`sharded_backfill_template`]), and a plain Job for running one stream without the
//!   operator ([`stream_job`]);
//! - a **Service** and an **Ingress** in front of a stream that receives pushed data
//!   ([`stream_service`], [`stream_ingress`]), and the readiness probe of its pod
//!   ([`readiness_probe`]);
//! - YAML output ([`to_yaml`], [`Manifests::to_yaml`]);
//! - the table of kinds in `deploy/README.md` ([`kinds_table`]).
//!
//! ```
//! use arcane_deploy::{KindManifest, JobTemplateOptions, crd, manifests, to_yaml};
//!
//! let schema = serde_json::json!({
//!     "type": "object",
//!     "properties": {"sinkLocation": {"type": "string", "description": "Where Parquet files go."}},
//!     "required": ["sinkLocation"],
//! });
//! let kind = KindManifest::new("generator", schema)?.with_secret_refs(["storageSecretRef"]);
//! let crd_yaml = to_yaml(&crd(&kind)?)?;
//! assert!(crd_yaml.contains("generator-streams.streaming.sneaksanddata.com"));
//! let rest = manifests(&kind, "streams", &JobTemplateOptions::new("ghcr.io/acme/arcane:1.0.0"))?;
//! assert!(rest.to_yaml()?.contains("kind: StreamingJobTemplate"));
//! # Ok::<(), arcane_deploy::Error>(())
//! ```
//!
//! The Helm chart under `deploy/chart` is built from the same pieces: its `crds/` files are the
//! output of `arcane crd KIND`.

pub mod catalog;
pub mod crd;
mod error;
pub mod job;
pub mod kind;
mod manifests;
pub mod rbac;
pub mod schema;
pub mod service;
pub mod stream_class;
mod yaml;

pub use catalog::{kinds_table, secret_fields};
pub use crd::{OPERATOR_SPEC_FIELDS, crd, crd_validation_schema, crd_yaml};
pub use error::{Error, Result};
pub use job::{
    JobTemplateOptions, SecretVolume, StreamInstance, StreamingJobTemplate, exit_code_action,
    job_template, pod_failure_policy, readiness_probe, sharded_backfill_template, stream_job,
};
pub use kind::{DEFAULT_GROUP, DEFAULT_VERSION, KindManifest, PrinterColumn};
pub use manifests::{Manifests, manifests};
pub use rbac::{Rbac, rbac};
pub use service::{IngressOptions, stream_ingress, stream_service};
pub use stream_class::{StreamClass, StreamClassSpec, stream_class};
pub use yaml::{from_yaml_documents, to_yaml, to_yaml_documents};
