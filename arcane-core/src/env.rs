//! The names shared by the runner (which reads them) and the manifest generator (which sets
//! them): environment variables, annotations and their defaults — defined once, here.
//!
//! The operator's `STREAMCONTEXT__*` variables are in [`crate::context`] and re-exported here.

use std::time::Duration;

pub use crate::context::{
    ENV_APPLICATION_VERSION, ENV_BACKFILL, ENV_BACKFILL_ID, ENV_LOGGING_PROPERTIES, ENV_OVERRIDE,
    ENV_SPEC, ENV_STREAM_ID, ENV_STREAM_KIND,
};

/// `ARCANE_DRAIN_TIMEOUT`: how long a graceful shutdown may take before the stream is aborted.
pub const ENV_DRAIN_TIMEOUT: &str = "ARCANE_DRAIN_TIMEOUT";
/// `ARCANE_METRICS_ADDR`: address of the `/metrics`, `/healthz`, `/readyz` endpoint.
pub const ENV_METRICS_ADDR: &str = "ARCANE_METRICS_ADDR";
/// `ARCANE_DOGSTATSD_ADDR`: DogStatsD agent (`host:port` for UDP, `unix:///path` or
/// `unixgram:///path`, or a bare absolute path for a datagram Unix socket).
pub const ENV_DOGSTATSD_ADDR: &str = "ARCANE_DOGSTATSD_ADDR";
/// `ARCANE_TERMINATION_LOG`: where the one-line JSON outcome is written.
pub const ENV_TERMINATION_LOG: &str = "ARCANE_TERMINATION_LOG";
/// `ARCANE_LOG_FORMAT`: `json`, `text` or `auto`.
pub const ENV_LOG_FORMAT: &str = "ARCANE_LOG_FORMAT";
/// `ARCANE_PROGRESS_INTERVAL`: how often progress is logged when not on a terminal.
pub const ENV_PROGRESS_INTERVAL: &str = "ARCANE_PROGRESS_INTERVAL";
/// `RUST_LOG`: log filter directives.
pub const ENV_LOG_FILTER: &str = "RUST_LOG";
/// `ARCANE_JOB_ANNOTATION_KEY`: annotation set on the Job after a schema mismatch.
pub const ENV_JOB_ANNOTATION_KEY: &str = "ARCANE_JOB_ANNOTATION_KEY";
/// `POD_NAMESPACE`: the pod's (and Job's) namespace, from the downward API.
pub const ENV_POD_NAMESPACE: &str = "POD_NAMESPACE";
/// `ARCANE_JOB_NAME`: the Job's name, from the downward API (the pod label
/// `batch.kubernetes.io/job-name`).
pub const ENV_JOB_NAME: &str = "ARCANE_JOB_NAME";
/// `ARCANE_KUBE_API_URL`: Kubernetes API URL (default
/// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`).
pub const ENV_KUBE_API_URL: &str = "ARCANE_KUBE_API_URL";
/// `ARCANE_KUBE_TOKEN_FILE`: service-account token file.
pub const ENV_KUBE_TOKEN_FILE: &str = "ARCANE_KUBE_TOKEN_FILE";
/// `ARCANE_KUBE_CA_FILE`: CA bundle of the Kubernetes API (for `https` URLs).
pub const ENV_KUBE_CA_FILE: &str = "ARCANE_KUBE_CA_FILE";

/// `JOB_COMPLETION_INDEX`: the pod's index in a Kubernetes Indexed Job, set by Kubernetes; the
/// shard of a sharded backfill (see [`crate::shard`]).
pub const ENV_SHARD_INDEX: &str = "JOB_COMPLETION_INDEX";

/// `ARCANE_BACKFILL_SHARDS`: the shard count of a sharded backfill, set by a Job template made
/// for that count (its Indexed Job's `completions`), so that a template shared by many streams
/// can carry it: it stands for the spec's `backfillShards` when the spec leaves it out, and
/// must equal it when the spec sets it (see [`crate::shard::apply_template_shards`]).
pub const ENV_BACKFILL_SHARDS: &str = "ARCANE_BACKFILL_SHARDS";

/// Default drain deadline.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default metrics address in a pod: all interfaces, so Prometheus and kubelet probes reach
/// the pod IP.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9090";
/// Default metrics address outside a pod: loopback only, so a laptop exposes nothing to its
/// network.
pub const DEFAULT_LOCAL_METRICS_ADDR: &str = "127.0.0.1:9090";
/// Default termination message path in a pod (the pod's `terminationMessagePath`).
pub const DEFAULT_TERMINATION_LOG: &str = "/dev/termination-log";
/// Default annotation key, the one the Arcane operator watches.
pub const DEFAULT_JOB_ANNOTATION_KEY: &str = "arcane.streaming.sneaksanddata.com/state";
/// The annotation value after a schema mismatch.
pub const SCHEMA_MISMATCH_ANNOTATION_VALUE: &str = "schema-mismatch";
