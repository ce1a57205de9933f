//! The operator's `StreamClass`: tells the Arcane operator which CRD to watch for a stream kind.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::crd::common_labels;
use crate::error::Result;
use crate::kind::{KindManifest, OPERATOR_API_VERSION};

/// A `streaming.sneaksanddata.com/v1` `StreamClass`, as the Arcane operator defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamClass {
    /// `streaming.sneaksanddata.com/v1`.
    pub api_version: String,
    /// `StreamClass`.
    pub kind: String,
    /// Name (the kind's plural) and labels.
    pub metadata: ObjectMeta,
    /// Which CRD to watch.
    pub spec: StreamClassSpec,
}

/// What the operator watches for one stream kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamClassSpec {
    /// API group of the stream CRD.
    pub api_group_ref: String,
    /// Kind of the stream CRD (`BlobLandingStream`).
    pub kind_ref: String,
    /// API version of the stream CRD (`v1`).
    pub api_version: String,
    /// Plural name of the stream CRD (`blob-landing-streams`).
    pub plural_name: String,
    /// Spec fields naming secrets; the operator passes those secrets to the Job as `envFrom`.
    #[serde(default)]
    pub secret_refs: Vec<String>,
}

/// The `StreamClass` of a kind, named after the kind's plural.
pub fn stream_class(kind: &KindManifest) -> Result<StreamClass> {
    kind.validate()?;
    Ok(StreamClass {
        api_version: OPERATOR_API_VERSION.into(),
        kind: "StreamClass".into(),
        metadata: ObjectMeta {
            name: Some(format!("arcane-{}", kind.kind)),
            labels: Some(common_labels(kind)),
            ..Default::default()
        },
        spec: StreamClassSpec {
            api_group_ref: kind.group.clone(),
            kind_ref: kind.crd_kind.clone(),
            api_version: kind.version.clone(),
            plural_name: kind.plural.clone(),
            secret_refs: kind.secret_refs.clone(),
        },
    })
}
