//! Shared fixtures and checks of the integration tests.
//!
//! The sample spec types exercise the generators with the serde/schemars shapes real kinds
//! use (camelCase, doc comments, defaults, enums, Options, maps, secret references). The
//! chart's own kinds are tested against the `arcane` binary in `arcane-cli/tests/chart.rs`,
//! which also uses the assertions here.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use arcane_deploy::KindManifest;
use k8s_openapi::api::batch::v1::JobSpec;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use schemars::JsonSchema;
use serde::Deserialize;

/// A reference to a Kubernetes Secret in the stream's namespace.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the Secret.
    pub name: String,
}

/// What happens to existing data when the stream is backfilled.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BackfillBehavior {
    /// Append the history into the live dataset.
    Merge,
    /// Write a new generation and switch readers to it when complete.
    Overwrite,
}

/// Format of the landed files.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum FileFormat {
    /// Newline-delimited JSON.
    Ndjson,
    /// Comma-separated values.
    Csv {
        /// Field delimiter.
        #[serde(default = "comma")]
        delimiter: String,
    },
}

fn comma() -> String {
    ",".into()
}

fn default_rows_per_group() -> u32 {
    10_000
}

/// A sample spec shaped like a file-landing kind.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SampleBlobLandingSpec {
    /// Object store URL to read files from (`s3://bucket/prefix`).
    pub source_location: String,
    /// Object store URL the Parquet files are written to.
    pub sink_location: String,
    /// Format of the source files.
    pub format: FileFormat,
    /// Rows per Parquet row group.
    #[serde(default = "default_rows_per_group")]
    pub rows_per_group: u32,
    /// Max seconds to wait for `rowsPerGroup` rows.
    #[schemars(range(min = 1, max = 3600))]
    #[serde(default)]
    pub grouping_interval_seconds: Option<u32>,
    /// What happens to existing data on backfill.
    #[serde(default)]
    pub backfill_behavior: Option<BackfillBehavior>,
    /// Secret with the object store credentials, passed to the Job as environment.
    pub storage_secret_ref: SecretRef,
    /// Extra metric tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Options passed to the object store client as is.
    #[serde(default)]
    pub client_options: Option<serde_json::Value>,
}

/// A sample spec shaped like a synthetic-rows kind.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SampleGeneratorSpec {
    /// Rows generated per second.
    #[schemars(range(min = 1))]
    pub rows_per_second: u64,
    /// Object store URL the Parquet files are written to.
    pub sink_location: String,
    /// Stop after this many rows (runs forever when unset).
    #[serde(default)]
    pub max_rows: Option<u64>,
}

/// The two sample kinds.
pub fn sample_kinds() -> Vec<KindManifest> {
    vec![
        KindManifest::new(
            "blob-landing",
            serde_json::to_value(schemars::schema_for!(SampleBlobLandingSpec)).unwrap(),
        )
        .unwrap()
        .with_description("Lands files from object storage as Parquet.")
        .with_secret_refs(["storageSecretRef"])
        .with_printer_column(arcane_deploy::PrinterColumn::new(
            "Sink",
            ".spec.sinkLocation",
            "string",
        )),
        KindManifest::new(
            "generator",
            serde_json::to_value(schemars::schema_for!(SampleGeneratorSpec)).unwrap(),
        )
        .unwrap()
        .with_description("Writes synthetic rows as Parquet.")
        .with_printer_column(arcane_deploy::PrinterColumn::new(
            "Sink",
            ".spec.sinkLocation",
            "string",
        )),
    ]
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The RBAC grants `get` and `patch` on `batch` `jobs`, nothing else, to exactly the
/// ServiceAccount, in its namespace.
pub fn assert_rbac_minimal(sa: &ServiceAccount, role: &Role, binding: &RoleBinding) {
    let rules = role.rules.as_ref().expect("Role has rules");
    assert_eq!(rules.len(), 1, "exactly one rule: {rules:?}");
    let rule = &rules[0];
    assert_eq!(rule.api_groups.as_deref(), Some(&["batch".to_string()][..]));
    assert_eq!(rule.resources.as_deref(), Some(&["jobs".to_string()][..]));
    let mut verbs = rule.verbs.clone();
    verbs.sort();
    assert_eq!(verbs, ["get", "patch"]);
    assert!(
        rule.resource_names.is_none()
            || rule.resource_names.as_ref().is_some_and(|n| !n.is_empty())
    );
    assert!(rule.non_resource_urls.is_none(), "no non-resource URLs");
    for field in [&rule.api_groups, &rule.resources] {
        assert!(
            !field.as_ref().unwrap().iter().any(|v| v == "*"),
            "no wildcards"
        );
    }
    assert_eq!(
        binding.role_ref.kind, "Role",
        "a namespaced Role, not a ClusterRole"
    );
    assert_eq!(binding.role_ref.name, role.metadata.name.clone().unwrap());
    let subjects = binding.subjects.as_ref().expect("binding has subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(subjects[0].name.clone()), sa.metadata.name);
    assert_eq!(subjects[0].namespace, sa.metadata.namespace);
    assert_eq!(role.metadata.namespace, sa.metadata.namespace);
    assert_eq!(binding.metadata.namespace, sa.metadata.namespace);
}

/// The Job spec follows the runner's contract: `restartPolicy: Never`, `backoffLimit`, grace
/// period above the drain deadline, podFailurePolicy from the exit-code table, downward API.
pub fn assert_job_spec(spec: &JobSpec, backfill: bool, expected_backoff_limit: i32) {
    assert_eq!(spec.backoff_limit, Some(expected_backoff_limit));
    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));

    let policy = spec.pod_failure_policy.as_ref().expect("podFailurePolicy");
    let action_for_code = |code: i32| {
        policy
            .rules
            .iter()
            .find(|r| {
                r.on_exit_codes
                    .as_ref()
                    .is_some_and(|e| e.operator == "In" && e.values.contains(&code))
            })
            .map(|r| r.action.clone())
    };
    assert_eq!(
        action_for_code(2).as_deref(),
        Some("Ignore"),
        "exit 2 RESTART is ignored"
    );
    assert_eq!(
        action_for_code(1).as_deref(),
        Some("Count"),
        "exit 1 FATAL counts against backoffLimit"
    );
    assert_eq!(action_for_code(0), None, "exit 0 is not a failure");
    let disruption = policy
        .rules
        .iter()
        .find(|r| {
            r.on_pod_conditions
                .as_ref()
                .is_some_and(|c| c.iter().any(|p| p.type_ == "DisruptionTarget"))
        })
        .expect("a DisruptionTarget rule");
    assert_eq!(disruption.action, "Ignore");
    assert!(
        policy
            .rules
            .iter()
            .all(|r| r.action == "Ignore" || r.action == "Count"),
        "no rule fails the Job outright: {policy:?}"
    );

    let container = &pod.containers[0];
    let env = container.env.as_ref().expect("env");
    let value = |name: &str| env.iter().find(|e| e.name == name);
    let field_path = |name: &str| {
        value(name)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone())
    };
    assert_eq!(
        field_path("POD_NAMESPACE").as_deref(),
        Some("metadata.namespace")
    );
    assert_eq!(
        field_path("ARCANE_JOB_NAME").as_deref(),
        Some("metadata.labels['batch.kubernetes.io/job-name']")
    );
    assert_eq!(
        value("STREAMCONTEXT__BACKFILL").and_then(|e| e.value.clone()),
        Some(backfill.to_string())
    );
    assert!(value("APPLICATION_VERSION").is_some());
    let drain = value("ARCANE_DRAIN_TIMEOUT")
        .and_then(|e| e.value.clone())
        .expect("ARCANE_DRAIN_TIMEOUT");
    let drain_secs = parse_seconds(&drain);
    let grace = pod
        .termination_grace_period_seconds
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace as f64 > drain_secs,
        "terminationGracePeriodSeconds {grace} must exceed the drain timeout {drain}"
    );
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .expect("pod labels");
    assert_eq!(
        labels.get("arcane/backfilling"),
        Some(&backfill.to_string())
    );
    assert!(labels.contains_key("arcane/stream-kind"));
    let security = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(security.run_as_non_root, Some(true));
}

/// Seconds of a humantime duration made of `h`, `m`, `s`, `ms` parts (`1m 30s`).
pub fn parse_seconds(text: &str) -> f64 {
    text.split_whitespace()
        .map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            let n: f64 = digits
                .parse()
                .unwrap_or_else(|_| panic!("bad duration {text:?}"));
            match &part[digits.len()..] {
                "h" => n * 3600.0,
                "m" | "min" => n * 60.0,
                "s" => n,
                "ms" => n / 1000.0,
                unit => panic!("unit {unit:?} in {text:?}"),
            }
        })
        .sum()
}
