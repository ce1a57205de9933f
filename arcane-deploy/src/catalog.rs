//! The table of kinds in `deploy/README.md`: for each kind, its resource names, what it reads
//! from, and the secrets it needs, generated from the same [`KindManifest`]s as the CRDs.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::Value;

use crate::KindManifest;

/// Spec schema definitions whose values are secrets (read from the environment, a file or, for
/// `SecretValue`, given inline).
const SECRET_DEFINITIONS: [&str; 2] = ["SecretValue", "SecretSource"];

/// The spec fields of `schema` that hold a secret, as dotted paths (`source.password`): fields
/// of a secret type (`SecretValue`, `SecretSource`) and string fields named `…Env` (the name
/// of an environment variable holding a secret, e.g. `source.passwordEnv`).
pub fn secret_fields(schema: &Value) -> Vec<String> {
    let mut found = BTreeSet::new();
    walk(schema, schema, "", &mut Vec::new(), &mut found);
    found.into_iter().collect()
}

fn walk(
    root: &Value,
    node: &Value,
    path: &str,
    seen: &mut Vec<String>,
    found: &mut BTreeSet<String>,
) {
    let Some(obj) = node.as_object() else { return };
    for key in ["anyOf", "oneOf", "allOf"] {
        for branch in obj.get(key).and_then(Value::as_array).into_iter().flatten() {
            walk(root, branch, path, seen, found);
        }
    }
    if let Some(name) = obj
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next())
    {
        if SECRET_DEFINITIONS.contains(&name) {
            found.insert(path.to_string());
            return;
        }
        if seen.iter().any(|s| s == name) {
            return;
        }
        if let Some(def) = root.pointer(&format!("/$defs/{name}")) {
            seen.push(name.to_string());
            walk(root, def, path, seen, found);
            seen.pop();
        }
    }
    for (name, prop) in obj
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let child = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        if name.ends_with("Env") && name.len() > 3 {
            found.insert(child.clone());
        }
        walk(root, prop, &child, seen, found);
    }
    if let Some(items) = obj.get("items") {
        walk(root, items, &format!("{path}[]"), seen, found);
    }
}

/// The Markdown table of `kinds` for `deploy/README.md`: kind (and its cargo feature of
/// `arcane-cli`), custom resource, what the stream reads, and what it needs from Secrets.
pub fn kinds_table(kinds: &[KindManifest]) -> String {
    let mut out = String::from(
        "| kind (cargo feature) | resource (`kubectl get`) | reads | secrets |\n|---|---|---|---|\n",
    );
    for kind in kinds {
        let reads = kind
            .description
            .split_once(": ")
            .map_or(kind.description.as_str(), |(_, what)| what)
            .trim_end_matches('.')
            .replace('|', "\\|")
            .replace('\n', " ");
        let source_secrets: Vec<String> = secret_fields(&kind.spec_schema)
            .into_iter()
            .filter(|f| f.starts_with("source."))
            .map(|f| format!("`{f}`"))
            .collect();
        let mut secrets = Vec::new();
        if kind.secret_refs.iter().any(|r| r == "storageSecretRef") {
            secrets.push(
                "`storageSecretRef`: object-store credentials (e.g. `AWS_ACCESS_KEY_ID`, \
                 `AZURE_STORAGE_ACCOUNT_KEY`) for the sink"
                    .to_string(),
            );
        }
        if kind.secret_refs.iter().any(|r| r == "sourceSecretRef") {
            if source_secrets.is_empty() {
                secrets.push("`sourceSecretRef`: optional (no secret field)".to_string());
            } else {
                secrets.push(format!(
                    "`sourceSecretRef`: the environment variables named by {}",
                    source_secrets.join(", ")
                ));
            }
        }
        let _ = writeln!(
            out,
            "| `{}` | `{}` (`{}`) | {} | {} |",
            kind.kind,
            kind.crd_kind,
            kind.plural,
            reads,
            if secrets.is_empty() {
                "none".to_string()
            } else {
                secrets.join("; ")
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_secret_fields_behind_references_and_options() {
        let schema = json!({
            "type": "object",
            "properties": {
                "source": {"$ref": "#/$defs/Source"},
                "sink": {"type": "object", "properties": {"url": {"type": "string"}}},
            },
            "$defs": {
                "Source": {"type": "object", "properties": {
                    "password": {"anyOf": [{"$ref": "#/$defs/SecretValue"}, {"type": "null"}]},
                    "passwordEnv": {"type": "string"},
                    "auth": {"oneOf": [{"type": "object", "properties": {"token": {"$ref": "#/$defs/SecretSource"}}}]},
                    "next": {"$ref": "#/$defs/Source"},
                }},
                "SecretValue": {"type": "object"},
                "SecretSource": {"type": "object"},
            },
        });
        assert_eq!(
            secret_fields(&schema),
            ["source.auth.token", "source.password", "source.passwordEnv"]
        );
    }
}
