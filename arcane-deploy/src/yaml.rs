//! YAML output: one document or a `---`-separated stream, as `kubectl apply -f` reads them.

use serde::de::DeserializeOwned;
use serde::{Deserialize as _, Serialize};

use crate::error::{Error, Result};

/// Serialize one object to a YAML document (no leading `---`).
///
/// Objects go through `serde_json::Value` first so `k8s-openapi` types serialize exactly as
/// their JSON form (`apiVersion`/`kind` included, absent fields omitted).
pub fn to_yaml(value: &impl Serialize) -> Result<String> {
    let json = serde_json::to_value(value).map_err(|source| Error::Json {
        what: "serialize manifest".into(),
        source,
    })?;
    Ok(serde_norway::to_string(&json)?)
}

/// Serialize several objects to one YAML stream, each document starting with `---`.
pub fn to_yaml_documents<T: Serialize>(values: &[T]) -> Result<String> {
    let mut out = String::new();
    for value in values {
        out.push_str("---\n");
        out.push_str(&to_yaml(value)?);
    }
    Ok(out)
}

/// Parse a YAML stream into its documents (empty documents are skipped).
pub fn from_yaml_documents<T: DeserializeOwned>(text: &str) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(document)?;
        if value.is_null() {
            continue;
        }
        out.push(serde_json::from_value(value).map_err(|source| Error::Json {
            what: "parse YAML document".into(),
            source,
        })?);
    }
    Ok(out)
}
