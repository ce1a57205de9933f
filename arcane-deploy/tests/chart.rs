//! The Helm chart under `deploy/chart`, rendered and linted offline with the PyPI package
//! `helm-python-sdk` (Helm embedded as a library; `deploy/tests/render_chart.py`), and the
//! non-template YAML checked with `yamllint`. The rendered objects are checked like the
//! generated ones: they parse into `k8s-openapi` types, RBAC grants only jobs get/patch, the
//! Job templates carry the generated podFailurePolicy.
//!
//! Needs `ARCANE_TEST_PYTHON`: a Python with `helm-python-sdk` and `yamllint` installed
//! (`scripts/test.sh` sets it up).

mod common;

use std::process::Command;

use arcane_deploy::{
    JobTemplateOptions, StreamClass, StreamingJobTemplate, crd, job_template, pod_failure_policy,
    stream_class,
};
use common::{assert_job_spec, assert_rbac_minimal, repo_root, sample_kinds};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn python() -> String {
    std::env::var("ARCANE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "ARCANE_TEST_PYTHON is not set: point it at a Python with helm-python-sdk and yamllint \
             (scripts/test.sh installs them into .tools/venv and exports it), e.g. \
             ARCANE_TEST_PYTHON=.tools/venv/bin/python"
        )
    })
}

struct Rendered {
    lint: Value,
    objects: Vec<Value>,
    crds: Vec<Value>,
}

fn render(values: Value) -> Result<Rendered, String> {
    let root = repo_root();
    let output = Command::new(python())
        .arg(root.join("deploy/tests/render_chart.py"))
        .arg(root.join("deploy/chart"))
        .arg("--values-json")
        .arg(values.to_string())
        .output()
        .expect("run deploy/tests/render_chart.py");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let out: Value = serde_json::from_slice(&output.stdout).expect("render_chart.py prints JSON");
    let objects = |key: &str| -> Vec<Value> {
        out[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["object"].clone())
            .collect()
    };
    Ok(Rendered {
        lint: out["lint"].clone(),
        objects: objects("objects"),
        crds: objects("crds"),
    })
}

fn of_kind<T: DeserializeOwned>(objects: &[Value], kind: &str) -> Vec<T> {
    objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .map(|o| {
            serde_json::from_value(o.clone())
                .unwrap_or_else(|e| panic!("rendered {kind} does not parse: {e}\n{o:#}"))
        })
        .collect()
}

#[test]
fn chart_renders_lints_and_matches_the_generated_objects() {
    let rendered = render(json!({})).unwrap_or_else(|e| panic!("helm template failed: {e}"));
    let messages = rendered.lint["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        messages
            .iter()
            .all(|m| m["severity"].as_i64().unwrap_or(0) < 2),
        "helm lint --strict: {messages:?}"
    );
    assert_eq!(rendered.lint["errors"], json!([]));

    let kinds: Vec<&str> = rendered
        .objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "Role",
            "RoleBinding",
            "ServiceAccount",
            "StreamClass",
            "StreamClass",
            "StreamingJobTemplate",
            "StreamingJobTemplate",
            "StreamingJobTemplate",
            "StreamingJobTemplate",
        ],
        "no other objects (no ClusterRole, no extra permissions)"
    );

    let sa: Vec<ServiceAccount> = of_kind(&rendered.objects, "ServiceAccount");
    let roles: Vec<Role> = of_kind(&rendered.objects, "Role");
    let bindings: Vec<RoleBinding> = of_kind(&rendered.objects, "RoleBinding");
    assert_rbac_minimal(&sa[0], &roles[0], &bindings[0]);
    assert_eq!(sa[0].metadata.namespace.as_deref(), Some("streams"));

    let classes: Vec<StreamClass> = of_kind(&rendered.objects, "StreamClass");
    let templates: Vec<StreamingJobTemplate> = of_kind(&rendered.objects, "StreamingJobTemplate");
    let crds: Vec<CustomResourceDefinition> = rendered
        .crds
        .iter()
        .map(|o| {
            serde_json::from_value(o.clone())
                .expect("crds/ file parses into CustomResourceDefinition")
        })
        .collect();
    assert_eq!(crds.len(), sample_kinds().len());

    for kind in sample_kinds() {
        let generated = stream_class(&kind).unwrap();
        let class = classes
            .iter()
            .find(|c| c.spec.kind_ref == kind.crd_kind)
            .unwrap_or_else(|| panic!("no StreamClass for {}", kind.crd_kind));
        assert_eq!(
            class.spec, generated.spec,
            "chart values.kinds must match the kind"
        );
        assert_eq!(class.metadata.name, generated.metadata.name);

        let crd_file = crds
            .iter()
            .find(|c| c.spec.names.kind == kind.crd_kind)
            .unwrap_or_else(|| panic!("no CRD for {}", kind.crd_kind));
        assert_eq!(crd_file, &crd(&kind).unwrap());

        for backfill in [false, true] {
            let generated = job_template(
                &kind,
                &JobTemplateOptions {
                    backfill,
                    ..Default::default()
                },
            )
            .unwrap();
            let template = templates
                .iter()
                .find(|t| t.metadata.name == generated.metadata.name)
                .unwrap_or_else(|| {
                    panic!(
                        "no template {:?}; the CRD's jobTemplateRef defaults to it",
                        generated.metadata.name
                    )
                });
            assert_job_spec(&template.spec, backfill, 3);
            assert_eq!(template.spec.pod_failure_policy, Some(pod_failure_policy()));
            let env_names = |t: &StreamingJobTemplate| -> Vec<String> {
                t.spec.template.spec.as_ref().unwrap().containers[0]
                    .env
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|e| e.name.clone())
                    .collect()
            };
            assert_eq!(env_names(template), env_names(&generated));
            let pod = template.spec.template.spec.as_ref().unwrap();
            let generated_pod = generated.spec.template.spec.as_ref().unwrap();
            assert_eq!(
                pod.termination_grace_period_seconds,
                generated_pod.termination_grace_period_seconds
            );
            assert_eq!(pod.security_context, generated_pod.security_context);
            assert_eq!(
                pod.containers[0].security_context,
                generated_pod.containers[0].security_context
            );
            assert_eq!(pod.containers[0].ports, generated_pod.containers[0].ports);
            assert!(
                pod.containers[0]
                    .resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .is_some()
            );
            let labels = template.metadata.labels.as_ref().unwrap();
            assert_eq!(labels["arcane/stream-kind"], kind.crd_kind);
        }
    }
}

#[test]
fn chart_values_change_the_job_templates() {
    let rendered = render(json!({
        "jobTemplates": {
            "drainTimeoutSeconds": 120,
            "backoffLimit": 5,
            "secretEnvFrom": ["shared-credentials"],
            "secretVolumes": [{"secretName": "ca", "mountPath": "/etc/arcane/ca"}],
        },
        "image": {"tag": "2.0.0"},
    }))
    .unwrap_or_else(|e| panic!("helm template failed: {e}"));
    let templates: Vec<StreamingJobTemplate> = of_kind(&rendered.objects, "StreamingJobTemplate");
    assert_eq!(templates.len(), 4);
    for template in &templates {
        let backfill = template
            .metadata
            .name
            .as_ref()
            .unwrap()
            .ends_with("-backfill");
        assert_job_spec(&template.spec, backfill, 5);
        let pod = template.spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.termination_grace_period_seconds, Some(135));
        let container = &pod.containers[0];
        assert!(container.image.as_ref().unwrap().ends_with(":2.0.0"));
        let env_from = container.env_from.as_ref().unwrap();
        assert_eq!(
            env_from[0].secret_ref.as_ref().unwrap().name,
            "shared-credentials"
        );
        let mounts = container.volume_mounts.as_ref().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.mount_path == "/etc/arcane/ca" && m.read_only == Some(true))
        );
    }
}

#[test]
fn chart_refuses_a_grace_period_not_above_the_drain_timeout() {
    let err = render(json!({"jobTemplates": {"graceMarginSeconds": 0}}))
        .err()
        .expect("rendering must fail");
    assert!(err.contains("graceMarginSeconds must be > 0"), "{err}");
}

#[test]
fn yamllint_passes_on_the_non_template_yaml() {
    let root = repo_root();
    let output = Command::new(python())
        .current_dir(root.join("deploy"))
        .args([
            "-m",
            "yamllint",
            "--strict",
            "-c",
            ".yamllint",
            "examples",
            "chart/Chart.yaml",
            "chart/values.yaml",
            "chart/crds",
        ])
        .output()
        .expect("run yamllint");
    assert!(
        output.status.success(),
        "yamllint:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
