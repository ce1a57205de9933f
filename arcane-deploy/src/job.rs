//! The operator's Job templates (`StreamingJobTemplate`), Jobs for running a stream without the
//! operator, and the `podFailurePolicy` generated from the runner's exit codes.
//!
//! # What the templates match in the Arcane operator
//! - `StreamingJobTemplate` (`streaming.sneaksanddata.com/v1`) whose `spec` is a `batch/v1`
//!   `JobSpec`; streams pick one with `jobTemplateRef` / `backfillJobTemplateRef`.
//! - The operator adds `STREAMCONTEXT__STREAM_ID`, `STREAMCONTEXT__STREAM_KIND`,
//!   `STREAMCONTEXT__SPEC` and `STREAMCONTEXT__BACKFILL_ID` to the container and *refuses* a
//!   template that already sets `STREAMCONTEXT__STREAM_ID`/`STREAM_KIND`, so templates leave
//!   them out. It overwrites `STREAMCONTEXT__BACKFILL`, which the templates set (`false` for
//!   streaming, `true` for backfill) so the mode is right even before the operator touches it.
//! - The operator labels the Job `arcane/stream-id`, `arcane/stream-kind` and
//!   `arcane/backfilling`; templates put `arcane/stream-kind` and `arcane/backfilling` on the
//!   pods (their values are known per template).
//! - Secrets named by the `StreamClass`'s `secretRefs` are added by the operator as `envFrom`.
//!   Templates can add fixed secrets ([`JobTemplateOptions::secret_env_from`],
//!   [`JobTemplateOptions::secret_volumes`]); [`stream_job`] resolves `secretRefs` itself.
//! - Container `arcane-stream`, `restartPolicy: Never`, `backoffLimit` (3) and a
//!   `podFailurePolicy` that ignores exit code 2 and `DisruptionTarget`, as the platform's
//!   charts do.
//!
//! # Push endpoints
//! A kind whose streams receive pushed data ([`KindManifest::push_endpoint`]: the
//! `http-ingest` kind) runs, like every streaming kind, as a Job whose pod does not complete on
//! its own: it serves until SIGTERM (exit 0 after the drain; the operator then creates the
//! next Job) or a failure (exit 1 or 2; the Job controller creates a new pod). Its streaming
//! template adds a **readiness probe**, `GET /readyz` on the runner's `metrics` port (200
//! once the stream runs, 503 from SIGTERM on), so that the stream's Service
//! ([`stream_service`](crate::stream_service)) routes senders only to a pod that accepts.
//! It needs `metrics_addr` (the probe's port); without it there is no probe.
//!
//! # Sharded backfills
//! A backfill Job of a stream whose spec sets `backfillShards` to `N > 1` ([`stream_job`]) is
//! an **Indexed Job**: `completionMode: Indexed`, `completions: N`, `parallelism`
//! ([`JobTemplateOptions::shard_parallelism`], default `N`); Kubernetes sets
//! `JOB_COMPLETION_INDEX` ([`ENV_SHARD_INDEX`]) on each pod, the shard the runner reads, and
//! the Job sets `ARCANE_BACKFILL_SHARDS` ([`ENV_BACKFILL_SHARDS`]) to `N`.
//! Retries count per index (`backoffLimitPerIndex` = `backoffLimit`, whose Job-wide form is
//! then left unset), with the same `podFailurePolicy` rules applied to each index (exit code 2
//! and disruptions ignored, exit code 1 counted against that index's limit), and
//! `maxFailedIndexes: 0`: the backfill completes only when every shard does, so one index
//! out of retries fails the Job at once.
//!
//! ## Under the operator
//! The operator copies a `StreamingJobTemplate`'s `JobSpec` as it is and adds only the
//! stream's environment, labels, annotations and name: it substitutes nothing into
//! `completions`, so one backfill template shared by a kind's streams cannot follow each
//! stream's `backfillShards`. Instead there is one backfill template **per shard count**
//! ([`sharded_backfill_template`], named
//! [`KindManifest::sharded_backfill_job_template_name`]: `arcane-KIND-backfill-shards-N`),
//! the Indexed Job above with `completions: N` fixed, and `ARCANE_BACKFILL_SHARDS=N` in its
//! container. A stream picks it with `backfillJobTemplateRef`; its spec may then leave
//! `backfillShards` out (the runner takes `N` from the variable) or must set it to `N` (any
//! other value exits 1 naming both, before anything is read, since a count that differs from
//! the Job's completions leaves shards without a pod or pods without a shard). The chart
//! renders these templates for the counts in `jobTemplates.backfillShardCounts`.
//!
//! An operator that builds the Job of a sharded backfill from the kind's plain backfill
//! template instead must set, from the stream's `backfillShards` `N`:
//! `completionMode: Indexed`, `completions: N`, `parallelism` (at most `N`),
//! `backoffLimitPerIndex` (the template's `backoffLimit`) with `backoffLimit` removed,
//! `maxFailedIndexes: 0`, and the container variable `ARCANE_BACKFILL_SHARDS=N`; the
//! `podFailurePolicy` stays as it is.

use std::collections::BTreeMap;
use std::time::Duration;

use arcane_core::ExitCode;
use arcane_core::context::{
    ENV_APPLICATION_VERSION, ENV_BACKFILL, ENV_BACKFILL_ID, ENV_SPEC, ENV_STREAM_ID,
    ENV_STREAM_KIND,
};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    EnvVarSource, HTTPGetAction, LocalObjectReference, ObjectFieldSelector, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretEnvSource,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::crd::common_labels;
use crate::error::{Error, Result};
use crate::kind::{KindManifest, OPERATOR_API_VERSION};
use crate::rbac::DEFAULT_SERVICE_ACCOUNT;

/// Name of the stream container (as in the platform's charts).
pub const CONTAINER_NAME: &str = "arcane-stream";
/// Label with the stream's id (set by the operator on the Job).
pub const LABEL_STREAM_ID: &str = "arcane/stream-id";
/// Label with the stream's kind (the CRD kind).
pub const LABEL_STREAM_KIND: &str = "arcane/stream-kind";
/// Label `true`/`false`: whether the Job backfills.
pub const LABEL_BACKFILLING: &str = "arcane/backfilling";
/// Label of a sharded backfill template: its shard count.
pub const LABEL_BACKFILL_SHARDS: &str = "arcane/backfill-shards";
/// The Job-name label Kubernetes (1.27+) puts on a Job's pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
pub use arcane_core::env::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_METRICS_ADDR, ENV_BACKFILL_SHARDS, ENV_DRAIN_TIMEOUT,
    ENV_JOB_NAME, ENV_METRICS_ADDR, ENV_POD_NAMESPACE, ENV_SHARD_INDEX,
};
/// Default time Kubernetes waits past the drain deadline before SIGKILL.
pub const DEFAULT_GRACE_MARGIN: Duration = Duration::from_secs(15);
/// Default `backoffLimit`.
pub const DEFAULT_BACKOFF_LIMIT: i32 = 3;
/// Default image.
pub const DEFAULT_IMAGE: &str = "ghcr.io/sneaksanddata/arcane:latest";
/// Seconds between the readiness probes of a push endpoint's pod (see the module docs).
pub const READINESS_PERIOD_SECONDS: i32 = 2;
/// The name of the container port of the runner's metrics endpoint (and of `/readyz`).
pub const METRICS_PORT_NAME: &str = "metrics";
/// The UID of the `nonroot` user of the distroless runtime image.
pub const NONROOT_UID: i64 = 65532;

/// A secret mounted into the stream container as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretVolume {
    /// The Secret's name.
    pub secret_name: String,
    /// Where its keys appear as files.
    pub mount_path: String,
}

/// Settings of the generated Jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct JobTemplateOptions {
    /// Container image of the stream binary.
    pub image: String,
    /// `imagePullPolicy` (default `IfNotPresent`).
    pub image_pull_policy: String,
    /// Names of `imagePullSecrets`.
    pub image_pull_secrets: Vec<String>,
    /// ServiceAccount of the pods (see [`mod@crate::rbac`]).
    pub service_account: String,
    /// Backfill template (`STREAMCONTEXT__BACKFILL=true`, label `arcane/backfilling=true`).
    pub backfill: bool,
    /// The runner's drain deadline (`ARCANE_DRAIN_TIMEOUT`).
    pub drain_timeout: Duration,
    /// Added to the drain deadline for `terminationGracePeriodSeconds` (must be > 0).
    pub grace_margin: Duration,
    /// `backoffLimit` of the Job (failures with exit code 1 count; exit code 2 does not).
    pub backoff_limit: i32,
    /// CPU/memory requests and limits.
    pub resources: Option<ResourceRequirements>,
    /// `APPLICATION_VERSION` (default: the image tag).
    pub application_version: Option<String>,
    /// `ARCANE_METRICS_ADDR`, also exposed as container port `metrics`; `None` leaves the
    /// runner's default and exposes no port.
    pub metrics_addr: Option<String>,
    /// Arguments of the binary.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<EnvVar>,
    /// Secrets passed whole as environment (`envFrom.secretRef`).
    pub secret_env_from: Vec<String>,
    /// Secrets mounted as files.
    pub secret_volumes: Vec<SecretVolume>,
    /// `ttlSecondsAfterFinished` (the platform's charts use 1: the operator reads the Job's
    /// outcome from its events and recreates it).
    pub ttl_seconds_after_finished: Option<i32>,
    /// Extra labels on the pods.
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the pods.
    pub annotations: BTreeMap<String, String>,
    /// Pods of a sharded backfill running at once (`parallelism` of its Indexed Job); `None`:
    /// every shard at once.
    pub shard_parallelism: Option<i32>,
    /// Shard counts for which [`manifests`](crate::manifests()) also builds a sharded backfill
    /// template ([`sharded_backfill_template`]); empty: none.
    pub backfill_shard_counts: Vec<u32>,
}

impl Default for JobTemplateOptions {
    fn default() -> Self {
        Self {
            image: DEFAULT_IMAGE.into(),
            image_pull_policy: "IfNotPresent".into(),
            image_pull_secrets: Vec::new(),
            service_account: DEFAULT_SERVICE_ACCOUNT.into(),
            backfill: false,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            grace_margin: DEFAULT_GRACE_MARGIN,
            backoff_limit: DEFAULT_BACKOFF_LIMIT,
            resources: None,
            application_version: None,
            metrics_addr: Some(DEFAULT_METRICS_ADDR.into()),
            args: Vec::new(),
            env: Vec::new(),
            secret_env_from: Vec::new(),
            secret_volumes: Vec::new(),
            ttl_seconds_after_finished: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            shard_parallelism: None,
            backfill_shard_counts: Vec::new(),
        }
    }
}

impl JobTemplateOptions {
    /// Options for the given image.
    pub fn new(image: impl Into<String>) -> Self {
        Self {
            image: image.into(),
            ..Self::default()
        }
    }

    /// The same options for backfill Jobs.
    pub fn backfill(mut self) -> Self {
        self.backfill = true;
        self
    }

    /// `terminationGracePeriodSeconds`: the drain deadline plus the margin, rounded up.
    pub fn termination_grace_period_seconds(&self) -> Result<i64> {
        if self.grace_margin.is_zero() {
            return Err(Error::Options {
                field: "grace_margin",
                message: "must be greater than zero so Kubernetes waits longer than the drain deadline before SIGKILL".into(),
            });
        }
        let total = self.drain_timeout + self.grace_margin;
        let secs = total.as_secs() + u64::from(total.subsec_nanos() > 0);
        i64::try_from(secs).map_err(|_| Error::Options {
            field: "drain_timeout",
            message: format!("{:?} is too long", self.drain_timeout),
        })
    }

    fn validate(&self) -> Result<()> {
        if self.image.trim().is_empty() {
            return Err(Error::Options {
                field: "image",
                message: "must name the stream binary's image".into(),
            });
        }
        if self.backoff_limit < 0 {
            return Err(Error::Options {
                field: "backoff_limit",
                message: format!("{} is negative", self.backoff_limit),
            });
        }
        self.termination_grace_period_seconds()?;
        Ok(())
    }
}

/// The operator's Job template resource: a `batch/v1` `JobSpec` under
/// `streaming.sneaksanddata.com/v1` `StreamingJobTemplate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamingJobTemplate {
    /// `streaming.sneaksanddata.com/v1`.
    pub api_version: String,
    /// `StreamingJobTemplate`.
    pub kind: String,
    /// Name (what `jobTemplateRef.name` points at) and labels.
    pub metadata: ObjectMeta,
    /// The Job the operator creates per stream, before it adds the stream's values.
    pub spec: JobSpec,
}

/// What the runner does with each exit code, as a `podFailurePolicy` action; `None` for codes
/// that are not failures. Exhaustive over [`ExitCode`], so a new code forces a decision here.
///
/// | code | action | why |
/// |---|---|---|
/// | 0 SUCCESS | – | not a failure |
/// | 1 FATAL | `Count` | retrying cannot help, but a failure that is really transient (a secret created a moment later) gets `backoffLimit` tries before the Job fails; `FailJob` would fail on the first |
/// | 2 RESTART | `Ignore` | transient; re-run without counting against `backoffLimit` |
pub fn exit_code_action(code: ExitCode) -> Option<&'static str> {
    match code {
        ExitCode::Success => None,
        ExitCode::Fatal => Some("Count"),
        ExitCode::Restart => Some("Ignore"),
    }
}

/// The `podFailurePolicy` of every stream Job, generated from [`exit_code_action`]: pods that
/// exit with RESTART (2) or are disrupted (node drain, preemption: `DisruptionTarget`) are
/// re-run without counting against `backoffLimit`; FATAL (1) counts.
pub fn pod_failure_policy() -> PodFailurePolicy {
    let mut rules = Vec::new();
    for action in ["Ignore", "Count", "FailJob"] {
        let codes: Vec<i32> = [ExitCode::Success, ExitCode::Fatal, ExitCode::Restart]
            .into_iter()
            .filter(|code| exit_code_action(*code) == Some(action))
            .map(ExitCode::code)
            .collect();
        if !codes.is_empty() {
            rules.push(PodFailurePolicyRule {
                action: action.into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(CONTAINER_NAME.into()),
                    operator: "In".into(),
                    values: codes,
                }),
                on_pod_conditions: None,
            });
        }
        if action == "Ignore" {
            rules.push(PodFailurePolicyRule {
                action: "Ignore".into(),
                on_exit_codes: None,
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".into(),
                    status: Some("True".into()),
                }]),
            });
        }
    }
    PodFailurePolicy { rules }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn env_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".into()),
                field_path: field_path.into(),
            }),
            ..Default::default()
        }),
    }
}

/// Humantime form of a duration (`30s`, `1m 30s`).
fn humantime(d: Duration) -> String {
    let mut secs = d.as_secs();
    let millis = d.subsec_millis();
    let mut parts = Vec::new();
    for (unit, size) in [("h", 3600), ("m", 60)] {
        if secs >= size {
            parts.push(format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if secs > 0 {
        parts.push(format!("{secs}s"));
    }
    if millis > 0 {
        parts.push(format!("{millis}ms"));
    }
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

fn image_tag(image: &str) -> Option<&str> {
    let last = image.rsplit('/').next()?;
    let last = last.split('@').next()?;
    last.split_once(':').map(|(_, tag)| tag)
}

/// The pod-level labels of a kind's Jobs.
fn pod_labels(kind: &KindManifest, opts: &JobTemplateOptions) -> BTreeMap<String, String> {
    let mut labels = common_labels(kind);
    labels.insert(LABEL_STREAM_KIND.into(), kind.crd_kind.clone());
    labels.insert(LABEL_BACKFILLING.into(), opts.backfill.to_string());
    labels.extend(opts.labels.clone());
    labels
}

/// The `JobSpec` shared by templates and concrete Jobs; `stream_env` and `stream_env_from` are
/// the stream-specific values (empty for operator templates).
fn job_spec(
    kind: &KindManifest,
    opts: &JobTemplateOptions,
    extra_labels: BTreeMap<String, String>,
    stream_env: Vec<EnvVar>,
    stream_env_from: Vec<EnvFromSource>,
) -> Result<JobSpec> {
    opts.validate()?;
    let mut env_vars = stream_env;
    env_vars.push(env(ENV_BACKFILL, opts.backfill.to_string()));
    let version = opts
        .application_version
        .clone()
        .or_else(|| image_tag(&opts.image).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    env_vars.push(env(ENV_APPLICATION_VERSION, version));
    env_vars.push(env_field(ENV_POD_NAMESPACE, "metadata.namespace"));
    env_vars.push(env_field(
        ENV_JOB_NAME,
        &format!("metadata.labels['{JOB_NAME_LABEL}']"),
    ));
    env_vars.push(env(ENV_DRAIN_TIMEOUT, humantime(opts.drain_timeout)));
    let mut ports = None;
    if let Some(addr) = &opts.metrics_addr {
        env_vars.push(env(ENV_METRICS_ADDR, addr.clone()));
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<i32>().ok())
            .ok_or_else(|| Error::Options {
                field: "metrics_addr",
                message: format!(
                    "{addr:?} has no port; expected host:port like {DEFAULT_METRICS_ADDR}"
                ),
            })?;
        ports = Some(vec![ContainerPort {
            name: Some(METRICS_PORT_NAME.into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]);
    }
    env_vars.extend(opts.env.iter().cloned());

    let mut env_from = stream_env_from;
    env_from.extend(opts.secret_env_from.iter().map(|name| EnvFromSource {
        secret_ref: Some(SecretEnvSource {
            name: name.clone(),
            optional: Some(false),
        }),
        ..Default::default()
    }));

    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    }];
    for (i, secret) in opts.secret_volumes.iter().enumerate() {
        let name = format!("secret-{i}");
        volumes.push(Volume {
            name: name.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.secret_name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name,
            mount_path: secret.mount_path.clone(),
            read_only: Some(true),
            ..Default::default()
        });
    }

    let mut labels = pod_labels(kind, opts);
    labels.extend(extra_labels);
    let container = Container {
        name: CONTAINER_NAME.into(),
        image: Some(opts.image.clone()),
        image_pull_policy: Some(opts.image_pull_policy.clone()),
        args: (!opts.args.is_empty()).then(|| opts.args.clone()),
        env: Some(env_vars),
        env_from: (!env_from.is_empty()).then_some(env_from),
        ports,
        resources: opts.resources.clone(),
        readiness_probe: readiness_probe(kind, opts),
        volume_mounts: Some(mounts),
        termination_message_path: Some("/dev/termination-log".into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(JobSpec {
        backoff_limit: Some(opts.backoff_limit),
        ttl_seconds_after_finished: opts.ttl_seconds_after_finished,
        pod_failure_policy: Some(pod_failure_policy()),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels),
                annotations: (!opts.annotations.is_empty()).then(|| opts.annotations.clone()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                restart_policy: Some("Never".into()),
                service_account_name: Some(opts.service_account.clone()),
                termination_grace_period_seconds: Some(opts.termination_grace_period_seconds()?),
                image_pull_secrets: (!opts.image_pull_secrets.is_empty()).then(|| {
                    opts.image_pull_secrets
                        .iter()
                        .map(|name| LocalObjectReference { name: name.clone() })
                        .collect()
                }),
                security_context: Some(PodSecurityContext {
                    run_as_non_root: Some(true),
                    run_as_user: Some(NONROOT_UID),
                    run_as_group: Some(NONROOT_UID),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "RuntimeDefault".into(),
                        localhost_profile: None,
                    }),
                    ..Default::default()
                }),
                containers: vec![container],
                volumes: Some(volumes),
                ..Default::default()
            }),
        },
        ..Default::default()
    })
}

/// The readiness probe of a push endpoint's streaming pod: `GET /readyz` on the runner's
/// metrics port (see the module docs); `None` for other kinds, backfills, or without a
/// metrics address.
pub fn readiness_probe(kind: &KindManifest, opts: &JobTemplateOptions) -> Option<Probe> {
    (kind.push_endpoint() && !opts.backfill && opts.metrics_addr.is_some()).then(|| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/readyz".into()),
            port: IntOrString::String(METRICS_PORT_NAME.into()),
            ..Default::default()
        }),
        period_seconds: Some(READINESS_PERIOD_SECONDS),
        timeout_seconds: Some(1),
        success_threshold: Some(1),
        failure_threshold: Some(1),
        ..Default::default()
    })
}

/// The `StreamingJobTemplate` the operator uses for a kind: named
/// [`KindManifest::job_template_name`] (or the backfill name when `opts.backfill`), without the
/// values the operator adds per stream (see the module docs).
pub fn job_template(
    kind: &KindManifest,
    opts: &JobTemplateOptions,
) -> Result<StreamingJobTemplate> {
    kind.validate()?;
    let name = if opts.backfill {
        &kind.backfill_job_template_name
    } else {
        &kind.job_template_name
    };
    let mut labels = common_labels(kind);
    labels.insert(LABEL_STREAM_KIND.into(), kind.crd_kind.clone());
    labels.insert(LABEL_BACKFILLING.into(), opts.backfill.to_string());
    Ok(StreamingJobTemplate {
        api_version: OPERATOR_API_VERSION.into(),
        kind: "StreamingJobTemplate".into(),
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: job_spec(kind, opts, BTreeMap::new(), Vec::new(), Vec::new())?,
    })
}

/// The operator's backfill template of `kind` for backfills of `shards` shards: the backfill
/// template ([`job_template`] with `backfill`) as an Indexed Job of `completions: shards`, with
/// `ARCANE_BACKFILL_SHARDS` set to `shards`, named
/// [`KindManifest::sharded_backfill_job_template_name`] (see the module docs).
///
/// Errors: `shards` below 2 (one shard is the plain backfill template), or the options'.
pub fn sharded_backfill_template(
    kind: &KindManifest,
    opts: &JobTemplateOptions,
    shards: u32,
) -> Result<StreamingJobTemplate> {
    if shards < 2 {
        return Err(Error::Options {
            field: "backfill_shard_counts",
            message: format!(
                "{shards}: a sharded backfill has at least 2 shards; one shard is the plain backfill template {}",
                kind.backfill_job_template_name
            ),
        });
    }
    let opts = JobTemplateOptions {
        backfill: true,
        ..opts.clone()
    };
    let mut template = job_template(kind, &opts)?;
    template.metadata.name = Some(kind.sharded_backfill_job_template_name(shards));
    if let Some(labels) = template.metadata.labels.as_mut() {
        labels.insert(LABEL_BACKFILL_SHARDS.into(), shards.to_string());
    }
    index_by_shard(&mut template.spec, shards, &opts)?;
    Ok(template)
}

/// One stream, for running it as a plain Job without the operator.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInstance {
    /// The stream's id (the custom resource's name); also the Job's name.
    pub stream_id: String,
    /// Namespace of the Job.
    pub namespace: String,
    /// The stream's `spec`.
    pub spec: Value,
    /// `STREAMCONTEXT__BACKFILL_ID` for backfill Jobs.
    pub backfill_id: Option<String>,
}

/// A complete `batch/v1` Job for one stream, with everything the operator would add: the
/// `STREAMCONTEXT__*` environment, the `arcane/*` labels and the secrets named by the kind's
/// `secretRefs` spec fields (`{"name": "secret"}`) as `envFrom`.
pub fn stream_job(
    kind: &KindManifest,
    stream: &StreamInstance,
    opts: &JobTemplateOptions,
) -> Result<Job> {
    kind.validate()?;
    let spec_json = serde_json::to_string(&stream.spec).map_err(|source| Error::Json {
        what: "serialize the stream spec".into(),
        source,
    })?;
    let mut stream_env = vec![
        env(ENV_SPEC, spec_json),
        env(ENV_STREAM_ID, stream.stream_id.clone()),
        env(ENV_STREAM_KIND, kind.crd_kind.clone()),
    ];
    if opts.backfill {
        let id = stream.backfill_id.clone().ok_or_else(|| Error::Options {
            field: "backfill_id",
            message:
                "a backfill Job needs STREAMCONTEXT__BACKFILL_ID; set StreamInstance::backfill_id"
                    .into(),
        })?;
        stream_env.push(env(ENV_BACKFILL_ID, id));
    }
    let mut env_from = Vec::new();
    for field in &kind.secret_refs {
        match stream.spec.get(field) {
            None | Some(Value::Null) => {}
            Some(reference) => {
                let name = reference
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::Options {
                        field: "spec",
                        message: format!("secret reference spec.{field} must be an object {{\"name\": \"<secret>\"}}, found {reference}"),
                    })?;
                env_from.push(EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: name.to_string(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                });
            }
        }
    }
    let id_labels = BTreeMap::from([(LABEL_STREAM_ID.to_string(), stream.stream_id.clone())]);
    let mut labels = pod_labels(kind, opts);
    labels.extend(id_labels.clone());
    let mut spec = job_spec(kind, opts, id_labels, stream_env, env_from)?;
    if opts.backfill {
        let shards = arcane_core::shard::shard_count(&stream.spec).map_err(|e| Error::Options {
            field: "spec",
            message: e.to_string(),
        })?;
        if shards > 1 {
            index_by_shard(&mut spec, shards, opts)?;
        }
    }
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(if opts.backfill {
                format!("{}-backfill", stream.stream_id)
            } else {
                stream.stream_id.clone()
            }),
            namespace: Some(stream.namespace.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// Make `spec` the Indexed Job of a backfill of `shards` shards (see the module docs).
fn index_by_shard(spec: &mut JobSpec, shards: u32, opts: &JobTemplateOptions) -> Result<()> {
    let completions = i32::try_from(shards).map_err(|_| Error::Options {
        field: "spec",
        message: format!("backfillShards = {shards} is too large for a Job"),
    })?;
    let parallelism = opts.shard_parallelism.unwrap_or(completions);
    if parallelism < 1 {
        return Err(Error::Options {
            field: "shard_parallelism",
            message: format!("{parallelism} is not a positive number of pods"),
        });
    }
    spec.completion_mode = Some("Indexed".into());
    spec.completions = Some(completions);
    spec.parallelism = Some(parallelism.min(completions));
    spec.backoff_limit = None;
    spec.backoff_limit_per_index = Some(opts.backoff_limit);
    spec.max_failed_indexes = Some(0);
    spec.pod_failure_policy = Some(pod_failure_policy());
    for container in spec
        .template
        .spec
        .iter_mut()
        .flat_map(|pod| pod.containers.iter_mut())
        .filter(|c| c.name == CONTAINER_NAME)
    {
        let vars = container.env.get_or_insert_with(Vec::new);
        vars.retain(|v| v.name != ENV_BACKFILL_SHARDS);
        vars.push(env(ENV_BACKFILL_SHARDS, shards.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humantime_matches_the_runner_format() {
        assert_eq!(humantime(Duration::from_secs(30)), "30s");
        assert_eq!(humantime(Duration::from_secs(90)), "1m 30s");
        assert_eq!(humantime(Duration::from_millis(1500)), "1s 500ms");
    }

    #[test]
    fn grace_period_exceeds_the_drain_deadline() {
        let opts = JobTemplateOptions {
            drain_timeout: Duration::from_millis(30_500),
            ..Default::default()
        };
        assert_eq!(opts.termination_grace_period_seconds().unwrap(), 46);
        let zero = JobTemplateOptions {
            grace_margin: Duration::ZERO,
            ..Default::default()
        };
        assert!(zero.termination_grace_period_seconds().is_err());
    }

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("ghcr.io/a/b:1.2.3"), Some("1.2.3"));
        assert_eq!(image_tag("localhost:5000/a/b"), None);
        assert_eq!(image_tag("b@sha256:abc"), None);
    }
}
