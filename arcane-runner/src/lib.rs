//! # arcane-runner
//!
//! The process around an Arcane stream graph, made to run as a Kubernetes Job under the Arcane
//! operator (and as a plain local process). A stream binary's `main` is one call:
//!
//! ```no_run
//! # use arcane_core::{StreamContext, StreamGraph, StreamGraphBuilder, Result};
//! # struct MyBuilder;
//! # #[async_trait::async_trait]
//! # impl StreamGraphBuilder for MyBuilder {
//! #     type Spec = serde_json::Value;
//! #     async fn build(&self, _: &StreamContext, _: Self::Spec) -> Result<StreamGraph> { todo!() }
//! # }
//! fn main() -> std::process::ExitCode {
//!     arcane_runner::run(MyBuilder)
//! }
//! ```
//!
//! or, for a binary hosting several kinds (the kind comes from `STREAMCONTEXT__STREAM_KIND` /
//! `--kind`), `Runner::new().register("rest-api", RestApi).register("nats", Nats).run()`.
//!
//! The runner then:
//!
//! 1. reads the [stream context](arcane_core::StreamContext) and its own settings from the
//!    environment the operator sets, or the same settings as flags ([`RunArgs`]; `--help`
//!    lists every flag with its variable);
//! 2. installs `tracing` logs: JSON lines on stderr (text when stderr is a terminal; stdout is left to command output), each carrying
//!    `streamId`, `streamKind`, `ApplicationVersion`, `BackfillId` and the
//!    `ARCANE__LOGGING_PROPERTIES` fields, filtered by `RUST_LOG`;
//! 3. installs the metrics exporters: Prometheus text on `/metrics` next to `/healthz` and
//!    `/readyz` (ready once the graph runs), and DogStatsD (UDP or Unix socket, tags prefixed
//!    `arcane.sneaksanddata.com/`) when configured;
//! 4. builds and runs the graph; on SIGTERM or SIGINT it shuts the graph down gracefully (stop
//!    reading, flush, commit, ack), waits up to `ARCANE_DRAIN_TIMEOUT`, then aborts; a second
//!    signal aborts at once;
//! 5. in backfill mode (`STREAMCONTEXT__BACKFILL=true`) the sources read the history and the
//!    process exits when done; in streaming mode it runs until stopped;
//! 6. maps the outcome to an exit code, logs it with what was committed (and what was not),
//!    and writes it as one JSON line to the termination message file.
//!
//! ## The rule
//!
//! **A run exits 0 only if every record it read is in the committed output, or counted in the
//! dead letters within the configured budget.** Anything else is a non-zero exit whose message
//! says what was lost or refused, where, and what to do: rows read but not committed give 2
//! (they were not acknowledged, the next run reads them again); a dead-letter budget crossed
//! (`sink.deadLetter.maxRatio`/`maxCount`, [`arcane_core::DeadLetterBudget`]) or an overwrite
//! backfill that committed nothing gives 1. Errors are logged and written with their whole
//! cause chain ([`arcane_core::error::Report`]).
//!
//! ## Exit codes
//!
//! The Arcane platform's codes; the Job templates' `podFailurePolicy` ignores 2.
//!
//! | code | name | when |
//! |---|---|---|
//! | 0 | SUCCESS | backfill finished; streaming stopped by SIGTERM/SIGINT with everything committed; the source ended with everything committed; `SchemaMismatch` after the Job was annotated `arcane.streaming.sneaksanddata.com/state: schema-mismatch` |
//! | 1 | FATAL | retrying cannot help: invalid flags, settings or spec (the message names the setting; `STREAMCONTEXT__BACKFILL` other than `true`/`false`, an empty required setting, a missing stream id inside a pod), missing secret, permanent source/sink error (not found, access denied, invalid credentials), dead-letter budget exceeded, overwrite backfill that committed no rows, unhandled error or panic, `SchemaMismatch` when the Job could not be annotated (403, API unreachable, not in a cluster) |
//! | 2 | RESTART | transient: `SchemaInconsistent`, transient source/sink error (retries exhausted), stopped during a backfill (rerun with the same backfill id resumes), drain deadline or second signal with rows read but not committed |
//!
//! Rows read but not committed never exit 0 (they were not acknowledged upstream, so a rerun
//! re-reads them), with one exception: after a `SchemaMismatch` the rows of the mismatching
//! group cannot be committed by this sink, and the backfill the annotation triggers re-reads
//! them. A [`Runner::classify_errors`] handler may choose the code of its own errors.
//!
//! The termination message (`/dev/termination-log`, shown by `kubectl describe pod`) is one
//! line of JSON:
//!
//! ```json
//! {"exitCode":0,"status":"SUCCESS","reason":"shutDown","errorKind":null,"message":"stopped by SIGTERM; everything read was committed","streamId":"orders","streamKind":"rest-api","mode":"stream","backfillId":null,"summary":{"rowsIncoming":5000,"rowsCommitted":5000,"rowsUncommitted":0,"rowsDeadLettered":0,"deadLetterReasons":[],"inputsSkipped":0,"skippedReasons":[],"bytesCommitted":81234,"filesCommitted":5,"commits":5,"resumedFrom":null,"lastCheckpoint":{"position":{"cursor":"abc"}}}}
//! ```
//!
//! ## Configuration
//!
//! Every setting is a flag and an environment variable; flags win.
//!
//! | variable | flag | default | meaning |
//! |---|---|---|---|
//! | `STREAMCONTEXT__SPEC` | `--spec` | required | JSON of the stream resource's `.spec` (the flag also takes a file path) |
//! | `STREAMCONTEXT__STREAM_KIND` | `--kind` | required for multi-kind binaries | the stream kind; single-kind binaries default it to the binary's name |
//! | `STREAMCONTEXT__STREAM_ID` | `--stream-id` | outside a pod: the resource's name, else the spec file's name, else the kind; required inside a pod | the stream's id |
//! | `STREAMCONTEXT__BACKFILL` | `--backfill` | `false` | backfill mode |
//! | `STREAMCONTEXT__BACKFILL_ID` | `--backfill-id` | — | backfill id; the same id resumes an interrupted backfill |
//! | `STREAMCONTEXT__OVERRIDE` | `--override` | — | JSON merge patch over the spec |
//! | `APPLICATION_VERSION` | `--application-version` | — | added to logs as `ApplicationVersion` |
//! | `ARCANE__LOGGING_PROPERTIES` | `--logging-properties` | — | JSON object of extra log fields |
//! | `ARCANE_DRAIN_TIMEOUT` | `--drain-timeout` | `30s` | graceful shutdown deadline (humantime) |
//! | `ARCANE_METRICS_ADDR` | `--metrics-addr` | `auto`: `0.0.0.0:9090` in a pod, `127.0.0.1:9090` elsewhere (a taken port then only warns) | `/metrics`, `/healthz`, `/readyz`; `0`/`off` disables; an explicit address that cannot be bound is FATAL |
//! | `ARCANE_DOGSTATSD_ADDR` | `--dogstatsd-addr` | off | `host:port` (UDP), `unix:///path`, `unixgram:///path` or `/path` |
//! | `ARCANE_TERMINATION_LOG` | `--termination-log` | `auto`: `/dev/termination-log` in a pod, none elsewhere | outcome file; `off` disables; unwritable is a warning |
//! | `ARCANE_LOG_FORMAT` | `--log-format` | `auto` | `json`, `text`, `auto` (text on a terminal) |
//! | `RUST_LOG` | `--log` | `info` | log filter directives |
//! | `ARCANE_JOB_ANNOTATION_KEY` | `--job-annotation-key` | `arcane.streaming.sneaksanddata.com/state` | annotation set to `schema-mismatch` |
//! | `POD_NAMESPACE` | `--namespace` | service account's `namespace` file | the Job's namespace (downward API `metadata.namespace`) |
//! | `ARCANE_JOB_NAME` | `--job-name` | — | the Job's name (downward API `metadata.labels['batch.kubernetes.io/job-name']`) |
//! | `ARCANE_KUBE_API_URL` | `--kube-api-url` | `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT` | Kubernetes API |
//! | `ARCANE_KUBE_TOKEN_FILE` | `--kube-token-file` | `/var/run/secrets/kubernetes.io/serviceaccount/token` | service-account token (never logged) |
//! | `ARCANE_KUBE_CA_FILE` | `--kube-ca-file` | `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt` | CA of the API (https) |
//!
//! The Job template must set `POD_NAMESPACE` and `ARCANE_JOB_NAME` from the downward API and
//! give the pod's service account `patch` on `jobs` (see [`kube_job`]).
//!
//! ## Modules
//!
//! * [`Runner`], [`run`] — the process.
//! * [`RunArgs`], [`Settings`] — flags and settings.
//! * [`Registry`] — the kinds of a multi-kind binary (`arcane kinds`, `arcane spec-schema`).
//! * [`Outcome`], [`classify`] — the exit-code policy and termination message.
//! * [`logging`], [`telemetry`], [`kube_job`] — logs, metrics/health endpoint, Job annotation.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
pub mod error;
#[cfg(feature = "fixture")]
#[doc(hidden)]
pub mod fixture;
pub mod kube_job;
pub mod logging;
pub mod outcome;
mod progress;
pub mod registry;
pub mod runner;
pub mod telemetry;

pub use config::{KubeSettings, LogFormat, ResolvedContext, RunArgs, Settings};
pub use error::{Error, Result};
pub use outcome::{Classifier, Escalation, Outcome, Reason, Stop, classify};
pub use registry::{KindInfo, Registry};
pub use runner::{Runner, exit_on_cli_error};

/// The exit-code table printed after `--help`.
pub const EXIT_CODES_HELP: &str = exit_codes_help!();

/// Examples and the exit-code table, printed after `run --help`.
pub const RUN_HELP: &str = concat!(
    "Examples:
  # the quickstart: a whole stream resource (JSON or YAML), backfilled once
  arcane run --spec examples/quickstart.json --backfill
  # a bare spec needs its kind; the stream id defaults to the file name outside a pod
  arcane run --kind generator --stream-id demo --spec '{\"source\": {\"totalRows\": 1000}, \"sink\": {\"url\": \"arcane-out/demo\"}}' --backfill
  # as the Arcane operator runs it: everything from the environment
  STREAMCONTEXT__SPEC=\"$(cat spec.json)\" STREAMCONTEXT__STREAM_ID=orders STREAMCONTEXT__STREAM_KIND=blob-landing arcane run

",
    exit_codes_help!()
);

macro_rules! exit_codes_help {
    () => {
        "\
Exit codes:
  0 SUCCESS  backfill finished; stopped by SIGTERM/SIGINT with everything committed;
             schema mismatch after the Job was annotated (the operator backfills)
  1 FATAL    invalid flags/settings/spec, missing secret, permanent or unhandled error,
             dead-letter budget exceeded, empty overwrite backfill,
             schema mismatch when the Job could not be annotated
  2 RESTART  transient error, schema inconsistent, stopped during a backfill,
             drain deadline or second signal with rows not committed

The outcome is also written as one JSON line to ARCANE_TERMINATION_LOG (by default
/dev/termination-log inside a pod)."
    };
}
use exit_codes_help;

/// Run a single-kind stream binary: parse flags/environment, run `builder`'s graph until it
/// finishes or is stopped, and return the exit code. The whole `main`.
pub fn run<B: arcane_core::StreamGraphBuilder>(builder: B) -> std::process::ExitCode {
    Runner::new().with_default(builder).run()
}
