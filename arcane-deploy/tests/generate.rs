//! Every generated object parses back (through YAML) into its `k8s-openapi` type and follows
//! the operator's and the runner's contracts.

mod common;

use std::time::Duration;

use arcane_deploy::{
    JobTemplateOptions, Manifests, StreamClass, StreamInstance, StreamingJobTemplate, crd,
    from_yaml_documents, job_template, manifests, pod_failure_policy, rbac, stream_class,
    stream_job, to_yaml,
};
use common::{assert_job_spec, assert_rbac_minimal, sample_kinds};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Serialize to YAML and parse back into `T`; the result must equal the original.
fn round_trip<T: serde::Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    value: &T,
) -> T {
    let yaml = to_yaml(value).unwrap();
    let mut docs: Vec<T> = from_yaml_documents(&yaml).unwrap();
    assert_eq!(docs.len(), 1);
    let back = docs.remove(0);
    assert_eq!(&back, value, "YAML round trip changed the object:\n{yaml}");
    back
}

#[test]
fn crds_are_namespaced_with_the_operator_status_schema() {
    for kind in sample_kinds() {
        let crd = round_trip(&crd(&kind).unwrap());
        assert_eq!(crd.metadata.name.as_deref(), Some(kind.crd_name().as_str()));
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.group, "streaming.sneaksanddata.com");
        assert_eq!(crd.spec.names.kind, kind.crd_kind);
        assert_eq!(crd.spec.names.plural, kind.plural);
        let version = &crd.spec.versions[0];
        assert!(version.served && version.storage);
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns = version.additional_printer_columns.as_ref().unwrap();
        assert!(columns.iter().any(|c| c.json_path == ".status.phase"));

        let schema = serde_json::to_value(
            version
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            schema["properties"]["status"],
            json!({
                "type": "object",
                "description": "Observed state of the stream, written by the Arcane operator.",
                "properties": {
                    "phase": {"type": "string", "description": "Lifecycle phase of the stream.",
                              "enum": ["RESTARTING", "RUNNING", "RELOADING", "TERMINATING", "STOPPED", "SUSPENDED", "FAILED"]},
                    "conditions": {"type": "array", "description": "Latest observations of the stream's state.", "items": {
                        "type": "object",
                        "required": ["status", "type"],
                        "properties": {
                            "message": {"type": "string"},
                            "phase": {"type": "string"},
                            "type": {"type": "string", "enum": ["WARNING", "ERROR", "INFO", "READY"]},
                            "status": {"type": "string", "enum": ["True", "False"]}
                        }
                    }}
                }
            })
        );
        assert_eq!(schema["required"], json!(["spec"]));
        let spec = &schema["properties"]["spec"];
        for operator_field in ["jobTemplateRef", "backfillJobTemplateRef", "suspended"] {
            assert!(
                spec["properties"].get(operator_field).is_some(),
                "{operator_field}"
            );
        }
        assert_eq!(
            spec["properties"]["jobTemplateRef"]["default"]["name"],
            json!(kind.job_template_name)
        );
        assert_no_unstructural_keys(spec, "spec");
    }
}

/// No `$ref`, `$schema`, `$defs`, `title`, `const`, `uniqueItems`, and every node typed (or an
/// explicit escape hatch): what the API server requires of a structural schema.
fn assert_no_unstructural_keys(node: &Value, path: &str) {
    let Value::Object(map) = node else { return };
    for key in [
        "$ref",
        "$schema",
        "$defs",
        "definitions",
        "title",
        "const",
        "uniqueItems",
        "examples",
        "anyOf",
    ] {
        assert!(!map.contains_key(key), "{path} has {key}: {node}");
    }
    let escape = map.contains_key("x-kubernetes-preserve-unknown-fields")
        || map.contains_key("x-kubernetes-int-or-string");
    assert!(
        map.contains_key("type") || escape,
        "{path} has no type: {node}"
    );
    if map.contains_key("properties") {
        assert!(
            !map.contains_key("additionalProperties"),
            "{path}: properties and additionalProperties"
        );
    }
    if let Some(Value::Object(props)) = map.get("properties") {
        for (name, prop) in props {
            assert_no_unstructural_keys(prop, &format!("{path}.{name}"));
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = map.get(key) {
            assert_no_unstructural_keys(child, &format!("{path}.{key}"));
        }
    }
    if let Some(Value::Array(branches)) = map.get("oneOf") {
        for branch in branches {
            let keys: Vec<&String> = branch.as_object().unwrap().keys().collect();
            assert_eq!(
                keys,
                ["required"],
                "{path}: oneOf branches carry only value validations"
            );
        }
    }
}

#[test]
fn spec_schema_keeps_docs_defaults_enums_and_required_fields() {
    let kind = &sample_kinds()[0];
    let crd = crd(kind).unwrap();
    let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
    let props = &spec["properties"];
    assert!(
        spec["description"]
            .as_str()
            .unwrap()
            .starts_with("A sample spec shaped like a file-landing kind."),
        "the type's doc comment is the spec description"
    );
    assert_eq!(
        props["sourceLocation"]["description"],
        json!("Object store URL to read files from (`s3://bucket/prefix`).")
    );
    assert_eq!(props["rowsPerGroup"]["default"], json!(10_000));
    assert_eq!(props["rowsPerGroup"]["type"], json!("integer"));
    assert_eq!(props["rowsPerGroup"]["format"], json!("int64"));
    assert_eq!(props["groupingIntervalSeconds"]["nullable"], json!(true));
    assert_eq!(
        props["groupingIntervalSeconds"]["maximum"].as_f64(),
        Some(3600.0)
    );
    assert_eq!(
        props["backfillBehavior"]["enum"],
        json!(["merge", "overwrite"])
    );
    assert_eq!(props["backfillBehavior"]["nullable"], json!(true));
    assert!(
        props["backfillBehavior"]["description"]
            .as_str()
            .unwrap()
            .contains("`overwrite`: Write a new generation")
    );
    assert_eq!(
        props["format"]["properties"]["type"]["enum"],
        json!(["ndjson", "csv"])
    );
    assert_eq!(props["format"]["required"], json!(["type"]));
    assert_eq!(
        props["format"]["properties"]["delimiter"]["default"],
        json!(",")
    );
    assert_eq!(
        props["tags"]["additionalProperties"],
        json!({"type": "string"})
    );
    assert_eq!(
        props["clientOptions"]["x-kubernetes-preserve-unknown-fields"],
        json!(true)
    );
    assert_eq!(props["storageSecretRef"]["required"], json!(["name"]));
    let mut required: Vec<String> = serde_json::from_value(spec["required"].clone()).unwrap();
    required.sort();
    assert_eq!(
        required,
        [
            "format",
            "sinkLocation",
            "sourceLocation",
            "storageSecretRef"
        ]
    );
    // Exactly the fields of an open map/JSON preserve unknown fields; the rest is pruned.
    assert!(spec.get("x-kubernetes-preserve-unknown-fields").is_none());
    assert!(
        props["storageSecretRef"]
            .get("x-kubernetes-preserve-unknown-fields")
            .is_none()
    );
}

#[test]
fn stream_class_names_the_crd_and_its_secret_fields() {
    let kind = &sample_kinds()[0];
    let class: StreamClass = round_trip(&stream_class(kind).unwrap());
    let value = serde_json::to_value(&class).unwrap();
    assert_eq!(value["apiVersion"], json!("streaming.sneaksanddata.com/v1"));
    assert_eq!(value["kind"], json!("StreamClass"));
    assert_eq!(
        value["spec"],
        json!({
            "apiGroupRef": "streaming.sneaksanddata.com",
            "kindRef": "BlobLandingStream",
            "apiVersion": "v1",
            "pluralName": "blob-landing-streams",
            "secretRefs": ["storageSecretRef"],
        })
    );
}

#[test]
fn rbac_grants_only_get_and_patch_on_jobs() {
    let objects = rbac("streams", "arcane-stream");
    let sa: ServiceAccount = round_trip(&objects.service_account);
    let role: Role = round_trip(&objects.role);
    let binding: RoleBinding = round_trip(&objects.role_binding);
    assert_rbac_minimal(&sa, &role, &binding);
    assert_eq!(sa.metadata.namespace.as_deref(), Some("streams"));
}

#[test]
fn job_templates_follow_the_runner_and_operator_contracts() {
    for kind in sample_kinds() {
        for backfill in [false, true] {
            let opts = JobTemplateOptions {
                backfill,
                drain_timeout: Duration::from_secs(90),
                ..JobTemplateOptions::new("ghcr.io/acme/arcane:1.2.3")
            };
            let template: StreamingJobTemplate = round_trip(&job_template(&kind, &opts).unwrap());
            assert_eq!(template.api_version, "streaming.sneaksanddata.com/v1");
            assert_eq!(template.kind, "StreamingJobTemplate");
            let expected_name = if backfill {
                &kind.backfill_job_template_name
            } else {
                &kind.job_template_name
            };
            assert_eq!(template.metadata.name.as_ref(), Some(expected_name));
            assert_job_spec(&template.spec, backfill, 3);
            let pod = template.spec.template.spec.as_ref().unwrap();
            assert_eq!(pod.termination_grace_period_seconds, Some(105));
            let container = &pod.containers[0];
            assert_eq!(
                container.image.as_deref(),
                Some("ghcr.io/acme/arcane:1.2.3")
            );
            let env = container.env.as_ref().unwrap();
            let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
            // The operator adds these and rejects templates that already have them.
            for operator_owned in [
                "STREAMCONTEXT__STREAM_ID",
                "STREAMCONTEXT__STREAM_KIND",
                "STREAMCONTEXT__SPEC",
            ] {
                assert!(
                    !names.contains(&operator_owned),
                    "{operator_owned} in {names:?}"
                );
            }
            let app_version = env
                .iter()
                .find(|e| e.name == "APPLICATION_VERSION")
                .unwrap();
            assert_eq!(app_version.value.as_deref(), Some("1.2.3"));
            let drain = env
                .iter()
                .find(|e| e.name == "ARCANE_DRAIN_TIMEOUT")
                .unwrap();
            assert_eq!(drain.value.as_deref(), Some("1m 30s"));
        }
    }
}

#[test]
fn pod_failure_policy_is_generated_from_the_exit_code_table() {
    let policy = serde_json::to_value(pod_failure_policy()).unwrap();
    assert_eq!(
        policy,
        json!({"rules": [
            {"action": "Ignore", "onExitCodes": {"containerName": "arcane-stream", "operator": "In", "values": [2]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "Count", "onExitCodes": {"containerName": "arcane-stream", "operator": "In", "values": [1]}},
        ]})
    );
}

#[test]
fn stream_job_carries_the_whole_stream_context_and_its_secrets() {
    let kind = &sample_kinds()[0];
    let spec = json!({
        "sourceLocation": "s3://in/orders", "sinkLocation": "s3://out/orders",
        "format": {"type": "ndjson"}, "storageSecretRef": {"name": "orders-s3"}
    });
    let stream = StreamInstance {
        stream_id: "orders".into(),
        namespace: "streams".into(),
        spec: spec.clone(),
        backfill_id: Some("bf-1".into()),
    };
    let job: Job =
        round_trip(&stream_job(kind, &stream, &JobTemplateOptions::default().backfill()).unwrap());
    assert_eq!(job.metadata.name.as_deref(), Some("orders-backfill"));
    let labels = job.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["arcane/stream-id"], "orders");
    assert_eq!(labels["arcane/stream-kind"], "BlobLandingStream");
    assert_eq!(labels["arcane/backfilling"], "true");
    let job_spec = job.spec.as_ref().unwrap();
    assert_job_spec(job_spec, true, 3);
    let container = &job_spec.template.spec.as_ref().unwrap().containers[0];
    let env = container.env.as_ref().unwrap();
    let get = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(
        serde_json::from_str::<Value>(&get("STREAMCONTEXT__SPEC").unwrap()).unwrap(),
        spec
    );
    assert_eq!(get("STREAMCONTEXT__STREAM_ID").as_deref(), Some("orders"));
    assert_eq!(
        get("STREAMCONTEXT__STREAM_KIND").as_deref(),
        Some("BlobLandingStream")
    );
    assert_eq!(get("STREAMCONTEXT__BACKFILL").as_deref(), Some("true"));
    assert_eq!(get("STREAMCONTEXT__BACKFILL_ID").as_deref(), Some("bf-1"));
    let env_from = container.env_from.as_ref().unwrap();
    assert_eq!(env_from[0].secret_ref.as_ref().unwrap().name, "orders-s3");

    let missing_id = StreamInstance {
        backfill_id: None,
        ..stream
    };
    let err = stream_job(kind, &missing_id, &JobTemplateOptions::default().backfill()).unwrap_err();
    assert!(
        err.to_string().contains("STREAMCONTEXT__BACKFILL_ID"),
        "{err}"
    );
}

#[test]
fn manifests_yaml_stream_parses_document_by_document() {
    let kind = &sample_kinds()[1];
    let bundle: Manifests = manifests(kind, "streams", &JobTemplateOptions::default()).unwrap();
    let docs: Vec<Value> = from_yaml_documents(&bundle.to_yaml().unwrap()).unwrap();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "StreamClass",
            "StreamingJobTemplate",
            "StreamingJobTemplate"
        ]
    );
    let sa: ServiceAccount = serde_json::from_value(docs[0].clone()).unwrap();
    let role: Role = serde_json::from_value(docs[1].clone()).unwrap();
    let binding: RoleBinding = serde_json::from_value(docs[2].clone()).unwrap();
    assert_rbac_minimal(&sa, &role, &binding);
    let _: StreamClass = serde_json::from_value(docs[3].clone()).unwrap();
    for (doc, backfill) in [(&docs[4], false), (&docs[5], true)] {
        let template: StreamingJobTemplate = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(template.metadata.namespace.as_deref(), Some("streams"));
        assert_job_spec(&template.spec, backfill, 3);
    }
}

#[test]
fn crd_yaml_parses_into_the_apiextensions_type() {
    for kind in sample_kinds() {
        let text = arcane_deploy::crd_yaml(&kind).unwrap();
        assert!(text.starts_with("# Generated from the Rust spec type"));
        let docs: Vec<CustomResourceDefinition> = from_yaml_documents(&text).unwrap();
        assert_eq!(docs, vec![crd(&kind).unwrap()]);
    }
}

#[test]
fn a_sharded_backfill_is_an_indexed_job_with_retries_per_index() {
    let kind = &sample_kinds()[0];
    let stream = StreamInstance {
        stream_id: "orders".into(),
        namespace: "streams".into(),
        spec: json!({"sinkLocation": "s3://out/orders", "backfillShards": 8}),
        backfill_id: Some("bf-1".into()),
    };
    let opts = JobTemplateOptions {
        shard_parallelism: Some(3),
        backoff_limit: 4,
        ..JobTemplateOptions::default().backfill()
    };
    let job = serde_json::to_value(stream_job(kind, &stream, &opts).unwrap()).unwrap();
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    assert_eq!(spec["completions"], 8);
    assert_eq!(spec["parallelism"], 3);
    assert_eq!(spec["backoffLimitPerIndex"], 4);
    assert_eq!(spec["maxFailedIndexes"], 0);
    assert!(spec.get("backoffLimit").is_none(), "{spec}");
    assert_eq!(
        spec["podFailurePolicy"],
        serde_json::to_value(pod_failure_policy()).unwrap()
    );
    // The pods get the index from Kubernetes, under the name the runner reads.
    assert_eq!(arcane_deploy::job::ENV_SHARD_INDEX, "JOB_COMPLETION_INDEX");
    // It round-trips through the Kubernetes types.
    let _: Job = serde_json::from_value(job.clone()).unwrap();

    // Parallelism defaults to every shard; the streaming Job and unsharded backfills are plain.
    let all = serde_json::to_value(
        stream_job(kind, &stream, &JobTemplateOptions::default().backfill()).unwrap(),
    )
    .unwrap();
    assert_eq!(all["spec"]["parallelism"], 8);
    let streaming =
        serde_json::to_value(stream_job(kind, &stream, &JobTemplateOptions::default()).unwrap())
            .unwrap();
    assert!(streaming["spec"].get("completionMode").is_none());
    assert_eq!(streaming["spec"]["backoffLimit"], 3);
    let one = StreamInstance {
        spec: json!({"sinkLocation": "s3://out/orders", "backfillShards": 1}),
        ..stream.clone()
    };
    let plain = serde_json::to_value(
        stream_job(kind, &one, &JobTemplateOptions::default().backfill()).unwrap(),
    )
    .unwrap();
    assert!(plain["spec"].get("completionMode").is_none());
    let bad = StreamInstance {
        spec: json!({"backfillShards": 0}),
        ..stream
    };
    let err = stream_job(kind, &bad, &JobTemplateOptions::default().backfill()).unwrap_err();
    assert!(err.to_string().contains("spec.backfillShards"), "{err}");
}

#[test]
fn a_sharded_backfill_template_per_count_carries_the_count_for_the_operator() {
    let kind = &sample_kinds()[0];
    let opts = JobTemplateOptions::new("ghcr.io/acme/arcane:1.2.3");
    let t = arcane_deploy::sharded_backfill_template(kind, &opts, 4).unwrap();
    assert_eq!(
        t.metadata.name.as_deref(),
        Some(format!("{}-shards-4", kind.backfill_job_template_name).as_str())
    );
    let spec = serde_json::to_value(&t.spec).unwrap();
    assert_eq!(spec["completionMode"], "Indexed");
    assert_eq!(spec["completions"], 4);
    assert_eq!(spec["parallelism"], 4);
    assert_eq!(spec["backoffLimitPerIndex"], 3);
    assert_eq!(spec["maxFailedIndexes"], 0);
    assert!(spec.get("backoffLimit").is_none(), "{spec}");
    let env = &spec["template"]["spec"]["containers"][0]["env"];
    let value = |name: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(value("ARCANE_BACKFILL_SHARDS"), Some(json!("4")));
    assert_eq!(value("STREAMCONTEXT__BACKFILL"), Some(json!("true")));
    // The operator adds the stream's id and kind; the template must not set them.
    assert_eq!(value("STREAMCONTEXT__STREAM_ID"), None);
    assert_eq!(value("STREAMCONTEXT__STREAM_KIND"), None);
    assert_eq!(
        t.metadata.labels.as_ref().unwrap()["arcane/backfill-shards"],
        "4"
    );
    let err = arcane_deploy::sharded_backfill_template(kind, &opts, 1).unwrap_err();
    assert!(err.to_string().contains("at least 2 shards"), "{err}");

    // `manifests` adds one per asked count, after the plain templates.
    let with = JobTemplateOptions {
        backfill_shard_counts: vec![2, 8],
        ..opts.clone()
    };
    let m = arcane_deploy::manifests(kind, "streams", &with).unwrap();
    let names: Vec<String> = m
        .sharded_backfill_templates
        .iter()
        .map(|t| t.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            kind.sharded_backfill_job_template_name(2),
            kind.sharded_backfill_job_template_name(8)
        ]
    );
    assert!(
        m.sharded_backfill_templates
            .iter()
            .all(|t| t.metadata.namespace.as_deref() == Some("streams"))
    );
    let docs: Vec<Value> = from_yaml_documents(&m.to_yaml().unwrap()).unwrap();
    assert_eq!(docs.len(), 8);

    // A plain Job of a sharded backfill carries the count too.
    let stream = StreamInstance {
        stream_id: "orders".into(),
        namespace: "streams".into(),
        spec: json!({"sinkLocation": "s3://out/orders", "backfillShards": 3}),
        backfill_id: Some("bf-1".into()),
    };
    let job =
        serde_json::to_value(stream_job(kind, &stream, &opts.clone().backfill()).unwrap()).unwrap();
    let env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        env.iter()
            .any(|e| e["name"] == "ARCANE_BACKFILL_SHARDS" && e["value"] == "3"),
        "{env:?}"
    );
}
