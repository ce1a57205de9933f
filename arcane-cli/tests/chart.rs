//! The Helm chart under `deploy/chart` packages the `arcane` binary's kinds:
//!
//! * its `crds/` files are the output of `arcane crd KIND`, byte for byte, one per hosted kind
//!   (regenerate with `scripts/generate-crds.sh`);
//! * it renders and lints offline with the PyPI package `helm-python-sdk` (Helm embedded as a
//!   library; `deploy/tests/render_chart.py`), and the rendered objects are checked like the
//!   generated ones: they parse into `k8s-openapi` types, RBAC grants only jobs get/patch, the
//!   Job templates carry the generated podFailurePolicy, a StreamClass per kind;
//! * the example resources in `deploy/examples/` pass the CRD schemas (JSON Schema validator)
//!   and the invalid ones fail where their `test.arcane/expected-error` annotation says;
//! * `yamllint` passes on the non-template YAML.
//!
//! Needs `ARCANE_TEST_PYTHON`: a Python with `helm-python-sdk` and `yamllint` installed
//! (`scripts/test.sh` sets it up).

#[path = "../../arcane-deploy/tests/common/mod.rs"]
mod deploy_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use arcane_deploy::{
    JobTemplateOptions, KindManifest, StreamClass, StreamingJobTemplate, crd,
    crd_validation_schema, from_yaml_documents, job_template, pod_failure_policy, stream_class,
};
use deploy_common::{assert_job_spec, assert_rbac_minimal, repo_root};

/// The hosted kinds as Kubernetes sees them.
fn kinds() -> Vec<KindManifest> {
    let runner = arcane_cli::kinds::runner();
    runner
        .registry()
        .kinds()
        .into_iter()
        .map(|k| arcane_cli::kinds::kind_manifest(&runner, &k.name).unwrap())
        .collect()
}

#[test]
fn chart_crds_are_the_output_of_arcane_crd_for_every_kind() {
    let dir = repo_root().join("deploy/chart/crds");
    let mut expected_files = Vec::new();
    let mut stale = Vec::new();
    for kind in kinds() {
        let out = Command::new(env!("CARGO_BIN_EXE_arcane"))
            .args(["crd", &kind.kind])
            .output()
            .unwrap();
        assert!(out.status.success(), "arcane crd {}: {out:?}", kind.kind);
        let file = format!("{}.yaml", kind.plural);
        match std::fs::read(dir.join(&file)) {
            Ok(actual) if actual == out.stdout => {}
            _ => stale.push(file.clone()),
        }
        expected_files.push(file);
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    expected_files.sort();
    assert!(
        stale.is_empty() && present == expected_files,
        "deploy/chart/crds is out of date (stale: {stale:?}, present: {present:?}, expected: {expected_files:?}); run scripts/generate-crds.sh"
    );
}

#[test]
fn chart_values_list_every_kind_with_its_names_and_secret_refs() {
    let text = std::fs::read_to_string(repo_root().join("deploy/chart/values.yaml")).unwrap();
    let values: Vec<Value> = from_yaml_documents(&text).unwrap();
    let listed: Vec<Value> = values[0]["kinds"].as_array().unwrap().clone();
    let expected: Vec<Value> = kinds()
        .iter()
        .map(|k| {
            json!({
                "kind": k.kind,
                "crdKind": k.crd_kind,
                "plural": k.plural,
                "secretRefs": k.secret_refs,
            })
        })
        .collect();
    assert_eq!(
        listed, expected,
        "deploy/chart/values.yaml `kinds` must list the hosted kinds (scripts/generate-crds.sh prints the list)"
    );
}
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
    let n = self::kinds().len();
    let mut expected = vec!["Role", "RoleBinding", "ServiceAccount"];
    expected.extend(std::iter::repeat_n("StreamClass", n));
    expected.extend(std::iter::repeat_n("StreamingJobTemplate", 2 * n));
    assert_eq!(
        sorted, expected,
        "a StreamClass and two Job templates per kind, no other objects (no ClusterRole, no extra permissions)"
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
    assert_eq!(crds.len(), self::kinds().len());

    for kind in self::kinds() {
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
    assert_eq!(templates.len(), 2 * kinds().len());
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

fn yaml_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Validators of the chart's CRDs, by `apiVersion` and `kind`.
fn validators() -> BTreeMap<(String, String), jsonschema::Validator> {
    let mut out = BTreeMap::new();
    for path in yaml_files(&repo_root().join("deploy/chart/crds")) {
        let text = std::fs::read_to_string(&path).unwrap();
        let crds: Vec<CustomResourceDefinition> =
            from_yaml_documents(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for crd in crds {
            let schema = crd_validation_schema(&crd).unwrap();
            let validator = jsonschema::draft4::new(&schema)
                .unwrap_or_else(|e| panic!("{}: not a valid JSON Schema: {e}", path.display()));
            let version = crd.spec.versions.iter().find(|v| v.storage).unwrap();
            let api_version = format!("{}/{}", crd.spec.group, version.name);
            out.insert((api_version, crd.spec.names.kind.clone()), validator);
        }
    }
    assert_eq!(
        out.len(),
        kinds().len(),
        "the chart has a CRD per hosted kind"
    );
    out
}

fn examples() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for path in yaml_files(&repo_root().join("deploy/examples")) {
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Value> = from_yaml_documents(&text).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        for doc in docs {
            out.push((name.clone(), doc));
        }
    }
    out
}

fn errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<(String, String)> {
    validator
        .iter_errors(doc)
        .map(|e| (e.instance_path().to_string(), e.to_string()))
        .collect()
}

#[test]
fn valid_examples_pass_the_crd_schema() {
    let validators = validators();
    let mut checked = 0;
    for (file, doc) in examples()
        .into_iter()
        .filter(|(f, _)| !f.starts_with("invalid-"))
    {
        let key = (
            doc["apiVersion"].as_str().unwrap().to_string(),
            doc["kind"].as_str().unwrap().to_string(),
        );
        let validator = validators
            .get(&key)
            .unwrap_or_else(|| panic!("{file}: no CRD for {key:?}"));
        let errs = errors(validator, &doc);
        assert!(errs.is_empty(), "{file} is rejected: {errs:?}");
        checked += 1;
    }
    assert!(checked >= 3, "every kind has a valid example");
}

#[test]
fn invalid_examples_fail_where_they_say() {
    let validators = validators();
    let mut checked = 0;
    for (file, doc) in examples()
        .into_iter()
        .filter(|(f, _)| f.starts_with("invalid-"))
    {
        let key = (
            doc["apiVersion"].as_str().unwrap().to_string(),
            doc["kind"].as_str().unwrap().to_string(),
        );
        let validator = validators
            .get(&key)
            .unwrap_or_else(|| panic!("{file}: no CRD for {key:?}"));
        let expected = doc["metadata"]["annotations"]["test.arcane/expected-error"]
            .as_str()
            .unwrap_or_else(|| panic!("{file} has no test.arcane/expected-error annotation"));
        let errs = errors(validator, &doc);
        assert!(
            !errs.is_empty() && errs.iter().all(|(path, _)| path.starts_with(expected)),
            "{file}: expected errors only at or under {expected}, got {errs:?}"
        );
        checked += 1;
    }
    assert!(checked >= 4);
}

#[test]
fn the_validator_rejects_a_wrong_phase_even_when_the_rest_is_valid() {
    let validators = validators();
    let (_, mut doc) = examples()
        .into_iter()
        .find(|(f, _)| f == "blob-landing-stream-csv.yaml")
        .unwrap();
    let key = (
        doc["apiVersion"].as_str().unwrap().to_string(),
        doc["kind"].as_str().unwrap().to_string(),
    );
    let validator = &validators[&key];
    assert!(errors(validator, &doc).is_empty());
    doc["status"]["phase"] = Value::String("Running".into());
    assert_eq!(errors(validator, &doc).len(), 1, "phases are upper-case");
    doc["status"]["phase"] = Value::String("RUNNING".into());
    doc["spec"].as_object_mut().unwrap().remove("source");
    let errs = errors(validator, &doc);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].1.contains("source"), "{errs:?}");
}
