//! The chart's CRD schemas accept the example custom resources in `deploy/examples/` and
//! reject the invalid ones (`invalid-*.yaml`) where their `test.arcane/expected-error`
//! annotation says, checked with a JSON Schema validator.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use arcane_deploy::{crd_validation_schema, from_yaml_documents};
use common::repo_root;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

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
    assert!(out.len() >= 2, "the chart has a CRD per built-in kind");
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
    doc["spec"]
        .as_object_mut()
        .unwrap()
        .remove("sourceLocation");
    let errs = errors(validator, &doc);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].1.contains("sourceLocation"), "{errs:?}");
}
