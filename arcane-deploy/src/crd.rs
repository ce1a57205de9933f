//! The namespaced CustomResourceDefinition of a stream kind.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceSubresourceStatus,
    CustomResourceSubresources, CustomResourceValidation,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::kind::{DEFAULT_GROUP, JOB_TEMPLATE_KIND, KindManifest};
use crate::schema::{status_schema, structural_schema, to_props, validation_schema};

/// Spec fields the Arcane operator reads itself; [`crd`] adds them to every stream CRD (unless
/// the kind defines them or [`KindManifest::operator_fields`] is false). The operator passes
/// the whole `spec` in `STREAMCONTEXT__SPEC`, so a kind's spec type must accept (ignore) them.
pub const OPERATOR_SPEC_FIELDS: [&str; 3] =
    ["jobTemplateRef", "backfillJobTemplateRef", "suspended"];

/// Labels put on every generated object.
pub(crate) fn common_labels(kind: &KindManifest) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "arcane".to_string()),
        ("app.kubernetes.io/component".to_string(), kind.kind.clone()),
        (
            "app.kubernetes.io/part-of".to_string(),
            "arcane".to_string(),
        ),
    ])
}

/// The stream kind's CRD: namespaced, one served and stored version, `spec` from the kind's
/// JSON Schema (made structural, see [`crate::schema`]) plus the operator's fields, the
/// operator's exact `status` schema, the `status` subresource and `kubectl get` columns.
pub fn crd(kind: &KindManifest) -> Result<CustomResourceDefinition> {
    kind.validate()?;
    let mut spec = structural_schema(&kind.kind, "spec", &kind.spec_schema)?;
    let Value::Object(spec_map) = &mut spec else {
        return Err(kind.kind_error("the spec schema converted to a non-object".into()));
    };
    if spec_map.get("type").and_then(Value::as_str) != Some("object") {
        return Err(Error::Schema {
            kind: kind.kind.clone(),
            path: "spec".into(),
            message: "the spec must be a JSON object (a struct), found another type".into(),
        });
    }
    if kind.operator_fields {
        add_operator_fields(kind, spec_map);
    }
    let description = spec_map
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("Settings of the {} stream.", kind.kind));
    spec_map.insert("description".into(), Value::String(description));

    let root = json!({
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "properties": {
            "spec": spec,
            "status": status_schema(),
        },
    });
    let root = to_props(&format!("CRD schema of {}", kind.kind), root)?;

    let mut columns: Vec<CustomResourceColumnDefinition> = kind
        .printer_columns
        .iter()
        .map(|c| CustomResourceColumnDefinition {
            name: c.name.clone(),
            json_path: c.json_path.clone(),
            type_: c.type_.clone(),
            description: c.description.clone(),
            ..Default::default()
        })
        .collect();
    columns.push(CustomResourceColumnDefinition {
        name: "Phase".into(),
        json_path: ".status.phase".into(),
        type_: "string".into(),
        description: Some("Lifecycle phase of the stream.".into()),
        ..Default::default()
    });
    columns.push(CustomResourceColumnDefinition {
        name: "Age".into(),
        json_path: ".metadata.creationTimestamp".into(),
        type_: "date".into(),
        ..Default::default()
    });

    Ok(CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(kind.crd_name()),
            labels: Some(common_labels(kind)),
            ..Default::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: kind.group.clone(),
            scope: "Namespaced".into(),
            names: CustomResourceDefinitionNames {
                kind: kind.crd_kind.clone(),
                list_kind: Some(format!("{}List", kind.crd_kind)),
                plural: kind.plural.clone(),
                singular: Some(kind.singular.clone()),
                short_names: (!kind.short_names.is_empty()).then(|| kind.short_names.clone()),
                categories: Some(vec!["arcane".into(), "streams".into()]),
            },
            versions: vec![CustomResourceDefinitionVersion {
                name: kind.version.clone(),
                served: true,
                storage: true,
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(root),
                }),
                subresources: Some(CustomResourceSubresources {
                    status: Some(CustomResourceSubresourceStatus(Value::Object(Map::new()))),
                    scale: None,
                }),
                additional_printer_columns: Some(columns),
                ..Default::default()
            }],
            ..Default::default()
        },
        status: None,
    })
}

fn template_ref(description: &str, default_name: &str) -> Value {
    json!({
        "type": "object",
        "description": description,
        "properties": {
            "apiGroup": {"type": "string", "description": "API group of the template."},
            "kind": {"type": "string", "description": "Kind of the template."},
            "name": {"type": "string", "description": "Name of the template in the stream's namespace."},
        },
        "required": ["name"],
        "default": {"apiGroup": DEFAULT_GROUP, "kind": JOB_TEMPLATE_KIND, "name": default_name},
    })
}

fn add_operator_fields(kind: &KindManifest, spec: &mut Map<String, Value>) {
    let properties = spec
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(properties) = properties else {
        return;
    };
    let fields = [
        (
            "jobTemplateRef",
            template_ref(
                "StreamingJobTemplate the operator runs the stream with in streaming mode.",
                &kind.job_template_name,
            ),
        ),
        (
            "backfillJobTemplateRef",
            template_ref(
                "StreamingJobTemplate the operator runs the stream with in backfill mode.",
                &kind.backfill_job_template_name,
            ),
        ),
        (
            "suspended",
            json!({"type": "boolean", "description": "Stop the stream's Job and keep the resource; set back to false to resume.", "default": false}),
        ),
    ];
    for (name, schema) in fields {
        properties.entry(name).or_insert(schema);
    }
}

/// The JSON Schema (draft 4) of the CRD's stored version, for validating custom resources with
/// a JSON Schema validator; see [`validation_schema`].
pub fn crd_validation_schema(crd: &CustomResourceDefinition) -> Result<Value> {
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage)
        .ok_or_else(|| Error::Kind {
            kind: crd.spec.names.kind.clone(),
            message: "the CRD has no storage version".into(),
        })?;
    let props = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .ok_or_else(|| Error::Kind {
            kind: crd.spec.names.kind.clone(),
            message: format!("version {} has no openAPIV3Schema", version.name),
        })?;
    validation_schema(props)
}

/// The CRD as the YAML file checked into a chart's `crds/` directory: a comment naming its
/// origin, then the document. `arcane crd KIND` prints exactly this.
pub fn crd_yaml(kind: &KindManifest) -> Result<String> {
    let body = crate::yaml::to_yaml(&crd(kind)?)?;
    Ok(format!(
        "# Generated from the Rust spec type of stream kind `{}` by `arcane crd {}`; do not edit.\n---\n{body}",
        kind.kind, kind.kind
    ))
}
