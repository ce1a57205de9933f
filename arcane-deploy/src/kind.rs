//! [`KindManifest`]: everything the manifests need to know about one stream kind.

use serde_json::Value;

use crate::error::{Error, Result};

/// The API group of the Arcane operator and of the stream custom resources.
pub const DEFAULT_GROUP: &str = "streaming.sneaksanddata.com";
/// The API version of generated stream CRDs.
pub const DEFAULT_VERSION: &str = "v1";
/// The kind of the operator's Job template resource (`jobTemplateRef.kind`).
pub const JOB_TEMPLATE_KIND: &str = "StreamingJobTemplate";
/// The API version of the operator's `StreamClass` and `StreamingJobTemplate` resources.
pub const OPERATOR_API_VERSION: &str = "streaming.sneaksanddata.com/v1";

/// A column `kubectl get` shows for the kind's custom resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// JSON path into the resource (`.spec.sinkLocation`).
    pub json_path: String,
    /// OpenAPI type: `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// Optional description.
    pub description: Option<String>,
}

impl PrinterColumn {
    /// A column of the given type.
    pub fn new(
        name: impl Into<String>,
        json_path: impl Into<String>,
        type_: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            json_path: json_path.into(),
            type_: type_.into(),
            description: None,
        }
    }
}

/// One stream kind as Kubernetes sees it: names, API group, the spec's JSON Schema and the
/// spec fields that name secrets.
///
/// Built from plain data, so a binary with its own kinds can use it without depending on the
/// Arcane sources, sinks or runner:
///
/// ```
/// use arcane_deploy::KindManifest;
/// let schema = serde_json::json!({"type": "object", "properties": {"rowsPerGroup": {"type": "integer"}}});
/// let kind = KindManifest::new("blob-landing", schema).unwrap();
/// assert_eq!(kind.crd_kind, "BlobLandingStream");
/// assert_eq!(kind.plural, "blob-landing-streams");
/// assert_eq!(kind.crd_name(), "blob-landing-streams.streaming.sneaksanddata.com");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct KindManifest {
    /// The stream kind as the binary registers it, lower-case with dashes (`blob-landing`).
    pub kind: String,
    /// The custom resource kind (`BlobLandingStream`). The operator passes this value as
    /// `STREAMCONTEXT__STREAM_KIND` and in the `arcane/stream-kind` label.
    pub crd_kind: String,
    /// Plural resource name (`blob-landing-streams`).
    pub plural: String,
    /// Singular resource name (`blob-landing-stream`).
    pub singular: String,
    /// `kubectl` short names.
    pub short_names: Vec<String>,
    /// API group (default [`DEFAULT_GROUP`]).
    pub group: String,
    /// API version (default [`DEFAULT_VERSION`]).
    pub version: String,
    /// JSON Schema of the kind's spec, as `schemars` generates it.
    pub spec_schema: Value,
    /// Spec fields holding a secret reference (`{"name": "secret"}`); the operator passes the
    /// named secrets to the Job as environment (`envFrom`). Listed in the `StreamClass`.
    pub secret_refs: Vec<String>,
    /// One-line description of the kind (the CRD's top-level description).
    pub description: String,
    /// Extra `kubectl get` columns (Phase and Age are always added).
    pub printer_columns: Vec<PrinterColumn>,
    /// Add the operator's own spec fields (`jobTemplateRef`, `backfillJobTemplateRef`,
    /// `suspended`) to the CRD when the kind's schema does not define them (default true).
    pub operator_fields: bool,
    /// Name of the streaming `StreamingJobTemplate` the CRD's `jobTemplateRef` defaults to
    /// (`arcane-blob-landing-stream`).
    pub job_template_name: String,
    /// Name of the backfill `StreamingJobTemplate` the CRD's `backfillJobTemplateRef`
    /// defaults to (`arcane-blob-landing-backfill`).
    pub backfill_job_template_name: String,
}

impl KindManifest {
    /// Name of the backfill `StreamingJobTemplate` for backfills of `shards` shards (an
    /// Indexed Job of that many completions): the backfill template's name plus `-shards-N`
    /// (`arcane-blob-landing-backfill-shards-4`). A stream picks it with
    /// `backfillJobTemplateRef`.
    pub fn sharded_backfill_job_template_name(&self, shards: u32) -> String {
        format!("{}-shards-{shards}", self.backfill_job_template_name)
    }

    /// A kind with names derived from `kind`: `blob-landing` → `BlobLandingStream`,
    /// `blob-landing-streams`, templates `arcane-blob-landing-stream` and
    /// `arcane-blob-landing-backfill`.
    ///
    /// `kind` must be a DNS label: lower-case letters, digits and `-`, starting with a letter.
    pub fn new(kind: impl Into<String>, spec_schema: Value) -> Result<Self> {
        let kind = kind.into();
        validate_dns_label(&kind, "kind")?;
        let crd_kind = format!("{}Stream", pascal_case(&kind));
        let singular = format!("{kind}-stream");
        Ok(Self {
            plural: format!("{singular}s"),
            singular,
            crd_kind,
            short_names: Vec::new(),
            group: DEFAULT_GROUP.to_string(),
            version: DEFAULT_VERSION.to_string(),
            spec_schema,
            secret_refs: Vec::new(),
            description: format!("An Arcane stream of kind {kind}."),
            printer_columns: Vec::new(),
            operator_fields: true,
            job_template_name: format!("arcane-{kind}-stream"),
            backfill_job_template_name: format!("arcane-{kind}-backfill"),
            kind,
        })
    }

    /// Set the spec fields that hold secret references.
    pub fn with_secret_refs<S: Into<String>>(mut self, refs: impl IntoIterator<Item = S>) -> Self {
        self.secret_refs = refs.into_iter().map(Into::into).collect();
        self
    }

    /// Set the description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Set the API group.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// Set the API version.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Add a `kubectl` short name.
    pub fn with_short_name(mut self, name: impl Into<String>) -> Self {
        self.short_names.push(name.into());
        self
    }

    /// Add a `kubectl get` column.
    pub fn with_printer_column(mut self, column: PrinterColumn) -> Self {
        self.printer_columns.push(column);
        self
    }

    /// Set the names of the default streaming and backfill Job templates.
    pub fn with_job_template_names(
        mut self,
        streaming: impl Into<String>,
        backfill: impl Into<String>,
    ) -> Self {
        self.job_template_name = streaming.into();
        self.backfill_job_template_name = backfill.into();
        self
    }

    /// Whether the kind's streams receive pushed data: their spec has `source.address`, the
    /// address they listen on (as the `http-ingest` kind's). Their streaming Jobs get a
    /// readiness probe ([`job_template`](crate::job_template)), and each stream a Service
    /// ([`stream_service`](crate::stream_service)).
    pub fn push_endpoint(&self) -> bool {
        crate::schema::structural_schema(&self.kind, "spec", &self.spec_schema)
            .ok()
            .is_some_and(|s| s.pointer("/properties/source/properties/address").is_some())
    }

    /// `plural.group`, the CRD's name.
    pub fn crd_name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }

    /// `group/version`, the custom resources' `apiVersion`.
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// Check the names Kubernetes will validate.
    pub fn validate(&self) -> Result<()> {
        validate_dns_label(&self.kind, "kind")?;
        validate_dns_label(&self.plural, "plural")?;
        validate_dns_label(&self.singular, "singular")?;
        validate_dns_label(&self.job_template_name, "job_template_name")?;
        validate_dns_label(
            &self.backfill_job_template_name,
            "backfill_job_template_name",
        )?;
        if !self
            .crd_kind
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_uppercase())
            || !self.crd_kind.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(self.kind_error(format!(
                "crd_kind {:?} must be CamelCase letters and digits starting with an upper-case letter",
                self.crd_kind
            )));
        }
        if !self.group.contains('.') {
            return Err(self.kind_error(format!(
                "group {:?} must be a DNS subdomain with at least one dot, e.g. {DEFAULT_GROUP}",
                self.group
            )));
        }
        Ok(())
    }

    pub(crate) fn kind_error(&self, message: String) -> Error {
        Error::Kind {
            kind: self.kind.clone(),
            message,
        }
    }
}

fn validate_dns_label(value: &str, field: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && !value.ends_with('-')
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::Kind {
            kind: value.to_string(),
            message: format!(
                "{field} {value:?} must be a DNS label: 1-63 lower-case letters, digits or '-', starting with a letter"
            ),
        })
    }
}

/// `blob-landing` → `BlobLanding`.
fn pascal_case(kind: &str) -> String {
    kind.split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_derived_from_the_kind() {
        let kind = KindManifest::new("generator", serde_json::json!({"type": "object"})).unwrap();
        assert_eq!(kind.crd_kind, "GeneratorStream");
        assert_eq!(kind.plural, "generator-streams");
        assert_eq!(kind.singular, "generator-stream");
        assert_eq!(kind.api_version(), "streaming.sneaksanddata.com/v1");
        assert_eq!(kind.job_template_name, "arcane-generator-stream");
        kind.validate().unwrap();
        assert!(!kind.push_endpoint());
    }

    #[test]
    fn kinds_whose_source_has_an_address_receive_pushed_data() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"source": {"$ref": "#/$defs/Source"}},
            "$defs": {"Source": {"type": "object", "properties": {"address": {"type": "string"}}}}
        });
        assert!(
            KindManifest::new("http-ingest", schema)
                .unwrap()
                .push_endpoint()
        );
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"source": {"type": "object", "properties": {"url": {"type": "string"}}}}
        });
        assert!(
            !KindManifest::new("rest-api", schema)
                .unwrap()
                .push_endpoint()
        );
    }

    #[test]
    fn invalid_kind_names_are_rejected() {
        let err = KindManifest::new("Blob_Landing", Value::Null).unwrap_err();
        assert!(err.to_string().contains("DNS label"), "{err}");
    }
}
