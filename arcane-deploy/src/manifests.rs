//! Everything a kind needs besides its CRD, as one YAML stream (`arcane manifests KIND`).

use serde_json::Value;

use crate::error::{Error, Result};
use crate::job::{
    JobTemplateOptions, StreamingJobTemplate, job_template, sharded_backfill_template,
};
use crate::kind::KindManifest;
use crate::rbac::{Rbac, rbac};
use crate::stream_class::{StreamClass, stream_class};
use crate::yaml::to_yaml_documents;

/// The objects of one kind that are not its CRD.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests {
    /// The operator's `StreamClass`.
    pub stream_class: StreamClass,
    /// ServiceAccount, Role, RoleBinding of the Jobs.
    pub rbac: Rbac,
    /// Job template for streaming mode.
    pub streaming_template: StreamingJobTemplate,
    /// Job template for backfill mode.
    pub backfill_template: StreamingJobTemplate,
    /// Backfill templates of sharded backfills, one per count of
    /// [`JobTemplateOptions::backfill_shard_counts`].
    pub sharded_backfill_templates: Vec<StreamingJobTemplate>,
}

/// Build [`Manifests`] for `kind` in `namespace`; `opts.backfill` is ignored (both templates are
/// built) and `opts.service_account` names the RBAC objects.
pub fn manifests(
    kind: &KindManifest,
    namespace: &str,
    opts: &JobTemplateOptions,
) -> Result<Manifests> {
    let streaming = JobTemplateOptions {
        backfill: false,
        ..opts.clone()
    };
    let backfill = JobTemplateOptions {
        backfill: true,
        ..opts.clone()
    };
    let with_namespace = |mut t: StreamingJobTemplate| {
        t.metadata.namespace = Some(namespace.to_string());
        t
    };
    Ok(Manifests {
        stream_class: stream_class(kind)?,
        rbac: rbac(namespace, &opts.service_account),
        streaming_template: with_namespace(job_template(kind, &streaming)?),
        backfill_template: with_namespace(job_template(kind, &backfill)?),
        sharded_backfill_templates: opts
            .backfill_shard_counts
            .iter()
            .map(|&n| sharded_backfill_template(kind, &backfill, n).map(with_namespace))
            .collect::<Result<_>>()?,
    })
}

impl Manifests {
    /// The objects in apply order, as JSON values.
    pub fn objects(&self) -> Result<Vec<Value>> {
        let to_value = |what: &str, v: serde_json::Result<Value>| {
            v.map_err(|source| Error::Json {
                what: format!("serialize {what}"),
                source,
            })
        };
        let mut objects = vec![
            to_value(
                "ServiceAccount",
                serde_json::to_value(&self.rbac.service_account),
            )?,
            to_value("Role", serde_json::to_value(&self.rbac.role))?,
            to_value("RoleBinding", serde_json::to_value(&self.rbac.role_binding))?,
            to_value("StreamClass", serde_json::to_value(&self.stream_class))?,
            to_value(
                "StreamingJobTemplate",
                serde_json::to_value(&self.streaming_template),
            )?,
            to_value(
                "StreamingJobTemplate",
                serde_json::to_value(&self.backfill_template),
            )?,
        ];
        for t in &self.sharded_backfill_templates {
            objects.push(to_value("StreamingJobTemplate", serde_json::to_value(t))?);
        }
        Ok(objects)
    }

    /// All objects as one `---`-separated YAML stream.
    pub fn to_yaml(&self) -> Result<String> {
        to_yaml_documents(&self.objects()?)
    }
}
