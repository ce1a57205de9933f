//! JSON Schema (as `schemars` generates it) → structural OpenAPI v3 schema (as a CRD needs it),
//! the Arcane operator's `status` schema, and the reverse direction for validating custom
//! resources with a JSON Schema validator.
//!
//! Kubernetes accepts only *structural* schemas in a CRD: every node has a `type` (or
//! `x-kubernetes-preserve-unknown-fields`/`x-kubernetes-int-or-string`), there are no `$ref`s,
//! `oneOf`/`anyOf` carry only value validations, and `properties` excludes
//! `additionalProperties`. [`structural_schema`] rewrites a `schemars` schema to that form:
//!
//! | JSON Schema | OpenAPI v3 (structural) |
//! |---|---|
//! | `$ref` into `$defs`/`definitions` | inlined (recursive types are an error) |
//! | `type: [T, "null"]`, `anyOf`/`oneOf` with a `null` branch, `enum` with `null` | `type: T`, `nullable: true` |
//! | `oneOf` of string `const`s (unit enum variants) | `type: string`, `enum: [...]`, variant docs appended to the description |
//! | `oneOf` of objects (tagged enums) | one object with the union of the properties; `required` is what every variant requires; `oneOf: [{required}]` when each variant has its own required key |
//! | `const: x` | `enum: [x]` |
//! | `exclusiveMinimum: n` (numeric) | `minimum: n`, `exclusiveMinimum: true` |
//! | `uniqueItems: true` | `x-kubernetes-list-type: set` for scalar items (Kubernetes forbids `uniqueItems`) |
//! | `additionalProperties: false` | dropped (Kubernetes prunes unknown fields) |
//! | `additionalProperties: {schema}` without properties (maps) | kept |
//! | `true`, `{}`, an object without properties, `additionalProperties: true` (open JSON) | `x-kubernetes-preserve-unknown-fields: true` |
//! | `$schema`, `$id`, `$comment`, `title`, `examples`, `readOnly`, `writeOnly`, `deprecated` | dropped |
//! | integer formats `uint32`, `uint64`, `int64`, ... / `uint16`, `int8`, ... | `int64` / `int32` |
//!
//! Descriptions (from doc comments), defaults (except `null`), enums, `required` and the
//! numeric/string/array bounds are kept.

use std::collections::BTreeSet;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

/// The `status.phase` values the Arcane operator writes.
pub const STATUS_PHASES: [&str; 7] = [
    "RESTARTING",
    "RUNNING",
    "RELOADING",
    "TERMINATING",
    "STOPPED",
    "SUSPENDED",
    "FAILED",
];

/// The `status.conditions[].type` values the Arcane operator writes.
pub const CONDITION_TYPES: [&str; 4] = ["WARNING", "ERROR", "INFO", "READY"];

/// The `status.conditions[].status` values.
pub const CONDITION_STATUSES: [&str; 2] = ["True", "False"];

/// The `status` schema of every stream resource, exactly as the Arcane operator defines it:
/// `phase` (enum [`STATUS_PHASES`]) and `conditions[]` with required `type` (enum
/// [`CONDITION_TYPES`]) and `status` (`"True"`/`"False"`), optional `message` and `phase`.
pub fn status_schema() -> Value {
    json!({
        "type": "object",
        "description": "Observed state of the stream, written by the Arcane operator.",
        "properties": {
            "phase": {
                "type": "string",
                "description": "Lifecycle phase of the stream.",
                "enum": STATUS_PHASES,
            },
            "conditions": {
                "type": "array",
                "description": "Latest observations of the stream's state.",
                "items": {
                    "type": "object",
                    "required": ["status", "type"],
                    "properties": {
                        "message": {"type": "string"},
                        "phase": {"type": "string"},
                        "type": {"type": "string", "enum": CONDITION_TYPES},
                        "status": {"type": "string", "enum": CONDITION_STATUSES},
                    },
                },
            },
        },
    })
}

/// Convert a `schemars` JSON Schema (draft 2020-12 or draft 7) into a structural OpenAPI v3
/// schema. `kind` is used in error messages; `root` names the schema's place (`spec`).
pub fn structural_schema(kind: &str, root: &str, schema: &Value) -> Result<Value> {
    let defs = collect_defs(schema);
    let mut converter = Converter {
        kind,
        defs,
        stack: Vec::new(),
    };
    converter.convert(schema, root)
}

/// Parse a structural schema into the `k8s-openapi` type.
pub fn to_props(what: &str, schema: Value) -> Result<JSONSchemaProps> {
    serde_json::from_value(schema).map_err(|source| Error::Json {
        what: format!("{what} as an apiextensions/v1 JSONSchemaProps"),
        source,
    })
}

fn collect_defs(schema: &Value) -> Map<String, Value> {
    let mut defs = Map::new();
    for key in ["definitions", "$defs"] {
        if let Some(Value::Object(map)) = schema.get(key) {
            for (name, def) in map {
                defs.insert(format!("#/{key}/{name}"), def.clone());
            }
        }
    }
    defs
}

struct Converter<'a> {
    kind: &'a str,
    defs: Map<String, Value>,
    stack: Vec<String>,
}

/// Keys copied unchanged from JSON Schema to OpenAPI.
const COPIED: [&str; 13] = [
    "description",
    "enum",
    "format",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
];

impl Converter<'_> {
    fn error(&self, path: &str, message: impl Into<String>) -> Error {
        Error::Schema {
            kind: self.kind.to_string(),
            path: path.to_string(),
            message: message.into(),
        }
    }

    /// Resolve `$ref` and single-element `allOf` into one flat JSON Schema object whose
    /// sibling keys override the referenced schema's. Returns the names of the definitions
    /// entered (for recursion detection).
    fn flatten(&self, schema: &Value, path: &str) -> Result<(Map<String, Value>, Vec<String>)> {
        let mut entered = Vec::new();
        let mut current = match schema {
            Value::Bool(true) => Map::new(),
            Value::Bool(false) => {
                return Err(self.error(path, "the schema `false` accepts nothing"));
            }
            Value::Object(map) => map.clone(),
            other => return Err(self.error(path, format!("not a schema: {other}"))),
        };
        loop {
            if let Some(reference) = current.remove("$ref") {
                let reference = reference
                    .as_str()
                    .ok_or_else(|| self.error(path, "$ref is not a string"))?
                    .to_string();
                if self.stack.contains(&reference) || entered.contains(&reference) {
                    return Err(self.error(
                        path,
                        format!(
                            "recursive type {reference}: a CRD schema cannot express recursion; use serde_json::Value (with #[schemars(with = \"serde_json::Value\")]) for this field"
                        ),
                    ));
                }
                let target = self.defs.get(&reference).ok_or_else(|| {
                    self.error(path, format!("unresolved $ref {reference:?}; only local $defs/definitions are supported"))
                })?;
                let mut merged = match target {
                    Value::Object(map) => map.clone(),
                    Value::Bool(true) => Map::new(),
                    _ => {
                        return Err(
                            self.error(path, format!("$ref {reference} is not an object schema"))
                        );
                    }
                };
                entered.push(reference);
                for (k, v) in current {
                    merged.insert(k, v);
                }
                current = merged;
                continue;
            }
            if let Some(Value::Array(all)) = current.get("allOf").cloned() {
                current.remove("allOf");
                let mut merged = Map::new();
                for part in &all {
                    let (flat, names) = self.flatten(part, path)?;
                    entered.extend(names);
                    merge_object_schemas(&mut merged, flat);
                }
                for (k, v) in current {
                    if k == "properties" || k == "required" {
                        merge_object_schemas(&mut merged, Map::from_iter([(k, v)]));
                    } else {
                        merged.insert(k, v);
                    }
                }
                current = merged;
                continue;
            }
            return Ok((current, entered));
        }
    }

    fn convert(&mut self, schema: &Value, path: &str) -> Result<Value> {
        let (flat, entered) = self.flatten(schema, path)?;
        let depth = self.stack.len();
        self.stack.extend(entered);
        let result = self.convert_flat(flat, path);
        self.stack.truncate(depth);
        result
    }

    fn convert_flat(&mut self, mut s: Map<String, Value>, path: &str) -> Result<Value> {
        let mut out = Map::new();
        let mut nullable = false;

        // `anyOf`/`oneOf`: Option<T>, unit enums with docs, tagged enums.
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = s.remove(key) {
                let mut flat_branches = Vec::new();
                let mut entered = Vec::new();
                for branch in &branches {
                    let (flat, names) = self.flatten(branch, path)?;
                    entered.extend(names);
                    if is_null_schema(&flat) {
                        nullable = true;
                    } else {
                        flat_branches.push(flat);
                    }
                }
                let depth = self.stack.len();
                self.stack.extend(entered);
                let combined = self.combine_branches(&s, flat_branches, path);
                self.stack.truncate(depth);
                let mut combined = combined?;
                if nullable && let Value::Object(map) = &mut combined {
                    map.insert("nullable".into(), Value::Bool(true));
                    if map.get("default") == Some(&Value::Null) {
                        map.remove("default");
                    }
                }
                return Ok(combined);
            }
        }

        // `type`
        let mut types: Vec<String> = match s.remove("type") {
            None => Vec::new(),
            Some(Value::String(t)) => vec![t],
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect(),
            Some(other) => return Err(self.error(path, format!("invalid type {other}"))),
        };
        if types.iter().any(|t| t == "null") {
            nullable = true;
            types.retain(|t| t != "null");
        }
        if let Some(c) = s.remove("const") {
            s.insert("enum".into(), Value::Array(vec![c]));
        }
        if let Some(Value::Array(values)) = s.get_mut("enum") {
            if values.iter().any(Value::is_null) {
                nullable = true;
                values.retain(|v| !v.is_null());
            }
            if types.is_empty() {
                let inferred: BTreeSet<&str> = values.iter().filter_map(json_type_name).collect();
                if inferred.len() == 1 {
                    types = inferred.into_iter().map(str::to_string).collect();
                }
            }
        }
        if types.is_empty()
            && (s.contains_key("properties") || s.contains_key("additionalProperties"))
        {
            types.push("object".into());
        }
        if types.is_empty() && s.contains_key("items") {
            types.push("array".into());
        }

        for key in COPIED {
            if let Some(v) = s.get(key) {
                out.insert(key.to_string(), v.clone());
            }
        }
        if let Some(default) = s.get("default")
            && !default.is_null()
        {
            out.insert("default".into(), default.clone());
        }
        for (key, bound) in [
            ("exclusiveMinimum", "minimum"),
            ("exclusiveMaximum", "maximum"),
        ] {
            match s.get(key) {
                Some(Value::Number(n)) => {
                    out.insert(bound.into(), Value::Number(n.clone()));
                    out.insert(key.into(), Value::Bool(true));
                }
                Some(Value::Bool(b)) => {
                    out.insert(key.into(), Value::Bool(*b));
                }
                _ => {}
            }
        }
        for (k, v) in &s {
            if k.starts_with("x-kubernetes-") {
                out.insert(k.clone(), v.clone());
            }
        }

        match types.as_slice() {
            [] => {
                // Any JSON value: only Kubernetes' escape hatch can express it.
                out.remove("format");
                out.insert(
                    "x-kubernetes-preserve-unknown-fields".into(),
                    Value::Bool(true),
                );
            }
            [t] => {
                out.insert("type".into(), Value::String(t.clone()));
                match t.as_str() {
                    "object" => self.convert_object(&s, &mut out, path)?,
                    "array" => self.convert_array(&s, &mut out, path)?,
                    "integer" => normalize_integer_format(&mut out),
                    "number" => {
                        if !matches!(
                            out.get("format").and_then(Value::as_str),
                            Some("float" | "double")
                        ) {
                            out.remove("format");
                        }
                    }
                    "string" => {
                        let keep = matches!(
                            out.get("format").and_then(Value::as_str),
                            Some(
                                "date-time"
                                    | "date"
                                    | "uri"
                                    | "email"
                                    | "uuid"
                                    | "byte"
                                    | "duration"
                                    | "hostname"
                                    | "ipv4"
                                    | "ipv6"
                                    | "password"
                            )
                        );
                        if !keep {
                            out.remove("format");
                        }
                    }
                    "boolean" => {}
                    other => return Err(self.error(path, format!("unsupported type {other:?}"))),
                }
            }
            many => {
                let set: BTreeSet<&str> = many.iter().map(String::as_str).collect();
                out.remove("format");
                if set == BTreeSet::from(["integer", "string"]) {
                    out.insert("x-kubernetes-int-or-string".into(), Value::Bool(true));
                } else {
                    out.insert(
                        "x-kubernetes-preserve-unknown-fields".into(),
                        Value::Bool(true),
                    );
                }
            }
        }
        if nullable {
            out.insert("nullable".into(), Value::Bool(true));
        }
        Ok(Value::Object(out))
    }

    fn convert_object(
        &mut self,
        s: &Map<String, Value>,
        out: &mut Map<String, Value>,
        path: &str,
    ) -> Result<()> {
        let properties = s.get("properties").and_then(Value::as_object);
        let additional = s.get("additionalProperties");
        match properties {
            Some(props) if !props.is_empty() => {
                let mut converted = Map::new();
                for (name, prop) in props {
                    converted.insert(name.clone(), self.convert(prop, &format!("{path}.{name}"))?);
                }
                out.insert("properties".into(), Value::Object(converted));
                if let Some(Value::Array(required)) = s.get("required")
                    && !required.is_empty()
                {
                    out.insert("required".into(), Value::Array(required.clone()));
                }
                match additional {
                    None | Some(Value::Bool(false)) => {}
                    // Structural schemas cannot combine properties with additionalProperties
                    // (e.g. #[serde(flatten)] of a map): keep unknown fields instead of pruning.
                    Some(_) => {
                        out.insert(
                            "x-kubernetes-preserve-unknown-fields".into(),
                            Value::Bool(true),
                        );
                    }
                }
            }
            _ => match additional {
                Some(Value::Object(map)) if !map.is_empty() => {
                    let values = self.convert(&Value::Object(map.clone()), &format!("{path}.*"))?;
                    out.insert("additionalProperties".into(), values);
                }
                // An empty object schema or an open map: any JSON object.
                _ => {
                    out.insert(
                        "x-kubernetes-preserve-unknown-fields".into(),
                        Value::Bool(true),
                    );
                }
            },
        }
        Ok(())
    }

    fn convert_array(
        &mut self,
        s: &Map<String, Value>,
        out: &mut Map<String, Value>,
        path: &str,
    ) -> Result<()> {
        let items = match (s.get("prefixItems"), s.get("items")) {
            (None, Some(items @ (Value::Object(_) | Value::Bool(true)))) => {
                self.convert(items, &format!("{path}[]"))?
            }
            // Tuples cannot be expressed structurally.
            _ => json!({"x-kubernetes-preserve-unknown-fields": true}),
        };
        if s.get("uniqueItems") == Some(&Value::Bool(true)) {
            let scalar = matches!(
                items.get("type").and_then(Value::as_str),
                Some("string" | "integer" | "number" | "boolean")
            );
            if scalar {
                out.insert("x-kubernetes-list-type".into(), Value::String("set".into()));
            }
        }
        out.insert("items".into(), items);
        Ok(())
    }

    /// Combine the non-null branches of an `anyOf`/`oneOf` (with the outer schema's sibling
    /// keys `outer`) into one structural schema.
    fn combine_branches(
        &mut self,
        outer: &Map<String, Value>,
        branches: Vec<Map<String, Value>>,
        path: &str,
    ) -> Result<Value> {
        let outer_description = outer
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string);
        let with_outer = |mut schema: Map<String, Value>| {
            for (k, v) in outer {
                schema.insert(k.clone(), v.clone());
            }
            schema
        };
        match branches.len() {
            0 => self.convert_flat(with_outer(Map::new()), path),
            1 => {
                let branch = branches.into_iter().next().unwrap_or_default();
                self.convert_flat(with_outer(branch), path)
            }
            _ if branches.iter().all(is_scalar_enum_branch) => {
                let mut values = Vec::new();
                let mut docs = Vec::new();
                for branch in &branches {
                    let branch_values: Vec<Value> = match (branch.get("const"), branch.get("enum"))
                    {
                        (Some(c), _) => vec![c.clone()],
                        (None, Some(Value::Array(e))) => e.clone(),
                        _ => Vec::new(),
                    };
                    if let Some(doc) = branch.get("description").and_then(Value::as_str) {
                        let names: Vec<String> = branch_values
                            .iter()
                            .map(|v| format!("`{}`", display_value(v)))
                            .collect();
                        docs.push(format!("- {}: {}", names.join(", "), doc));
                    }
                    values.extend(branch_values);
                }
                let mut merged = Map::new();
                merged.insert("enum".into(), Value::Array(values));
                let description = join_description(outer_description.as_deref(), &docs);
                let mut merged = with_outer(merged);
                if let Some(description) = description {
                    merged.insert("description".into(), Value::String(description));
                }
                self.convert_flat(merged, path)
            }
            _ if branches.iter().all(is_object_branch) => {
                let mut properties = Map::new();
                let mut required_sets: Vec<BTreeSet<String>> = Vec::new();
                let mut docs = Vec::new();
                for branch in &branches {
                    let required: BTreeSet<String> = branch
                        .get("required")
                        .and_then(Value::as_array)
                        .map(|r| {
                            r.iter()
                                .filter_map(|v| v.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    if let Some(Value::Object(props)) = branch.get("properties") {
                        for (name, prop) in props {
                            merge_property(&mut properties, name, prop.clone());
                        }
                    }
                    if let Some(doc) = branch.get("description").and_then(Value::as_str) {
                        let keys: Vec<String> = required.iter().map(|k| format!("`{k}`")).collect();
                        docs.push(format!("- {}: {}", keys.join(", "), doc));
                    }
                    required_sets.push(required);
                }
                let common: BTreeSet<String> = required_sets
                    .iter()
                    .skip(1)
                    .fold(required_sets[0].clone(), |acc, r| {
                        acc.intersection(r).cloned().collect()
                    });
                let mut merged = Map::new();
                merged.insert("type".into(), Value::String("object".into()));
                merged.insert("properties".into(), Value::Object(properties));
                if !common.is_empty() {
                    merged.insert(
                        "required".into(),
                        Value::Array(common.iter().map(|k| Value::String(k.clone())).collect()),
                    );
                }
                let mut merged = with_outer(merged);
                if let Some(description) = join_description(outer_description.as_deref(), &docs) {
                    merged.insert("description".into(), Value::String(description));
                }
                let mut converted = self.convert_flat(merged, path)?;
                // Each variant has its own required key (externally tagged enums): exactly one.
                let distinct: Vec<BTreeSet<String>> =
                    required_sets.iter().map(|r| r - &common).collect();
                let exclusive = distinct.iter().all(|r| !r.is_empty())
                    && distinct.iter().enumerate().all(|(i, a)| {
                        distinct
                            .iter()
                            .enumerate()
                            .all(|(j, b)| i == j || a.is_disjoint(b))
                    });
                if exclusive {
                    let one_of: Vec<Value> = distinct
                        .iter()
                        .map(|r| json!({"required": r.iter().collect::<Vec<_>>()}))
                        .collect();
                    if let Value::Object(map) = &mut converted {
                        map.insert("oneOf".into(), Value::Array(one_of));
                    }
                }
                Ok(converted)
            }
            _ => {
                // Mixed shapes (e.g. untagged enums of a string or an object).
                let mut merged = Map::new();
                if let Some(description) = outer_description {
                    merged.insert("description".into(), Value::String(description));
                }
                if let Some(default) = outer.get("default") {
                    merged.insert("default".into(), default.clone());
                }
                merged.insert(
                    "x-kubernetes-preserve-unknown-fields".into(),
                    Value::Bool(true),
                );
                Ok(Value::Object(merged))
            }
        }
    }
}

fn is_null_schema(s: &Map<String, Value>) -> bool {
    s.get("type").and_then(Value::as_str) == Some("null")
        || s.get("const") == Some(&Value::Null)
        || s.get("enum") == Some(&Value::Array(vec![Value::Null]))
}

fn is_scalar_enum_branch(s: &Map<String, Value>) -> bool {
    let values: Vec<&Value> = match (s.get("const"), s.get("enum")) {
        (Some(c), _) => vec![c],
        (None, Some(Value::Array(e))) => e.iter().collect(),
        _ => return false,
    };
    !values.is_empty()
        && values
            .iter()
            .all(|v| v.is_string() || v.is_number() || v.is_boolean())
}

fn is_object_branch(s: &Map<String, Value>) -> bool {
    s.get("type").and_then(Value::as_str) == Some("object") || s.contains_key("properties")
}

fn json_type_name(v: &Value) -> Option<&'static str> {
    match v {
        Value::String(_) => Some("string"),
        Value::Bool(_) => Some("boolean"),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some("integer"),
        Value::Number(_) => Some("number"),
        _ => None,
    }
}

fn display_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn join_description(outer: Option<&str>, docs: &[String]) -> Option<String> {
    match (outer, docs.is_empty()) {
        (None, true) => None,
        (Some(o), true) => Some(o.to_string()),
        (None, false) => Some(docs.join("\n")),
        (Some(o), false) => Some(format!("{o}\n{}", docs.join("\n"))),
    }
}

/// Merge `prop` into `properties[name]`: the same property in several enum variants with
/// different `const`/`enum` values (the tag of an internally tagged enum) becomes one enum.
fn merge_property(properties: &mut Map<String, Value>, name: &str, prop: Value) {
    let Some(existing) = properties.get_mut(name) else {
        properties.insert(name.to_string(), prop);
        return;
    };
    let values = |v: &Value| -> Option<Vec<Value>> {
        match (v.get("const"), v.get("enum")) {
            (Some(c), _) => Some(vec![c.clone()]),
            (None, Some(Value::Array(e))) => Some(e.clone()),
            _ => None,
        }
    };
    if let (Some(mut a), Some(b)) = (values(existing), values(&prop)) {
        for v in b {
            if !a.contains(&v) {
                a.push(v);
            }
        }
        if let Value::Object(map) = existing {
            map.remove("const");
            map.insert("enum".into(), Value::Array(a));
        }
    }
}

fn merge_object_schemas(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        match (k.as_str(), into.get_mut(&k), v) {
            ("properties", Some(Value::Object(existing)), Value::Object(new)) => {
                for (name, prop) in new {
                    existing.insert(name, prop);
                }
            }
            ("required", Some(Value::Array(existing)), Value::Array(new)) => {
                for r in new {
                    if !existing.contains(&r) {
                        existing.push(r);
                    }
                }
            }
            (_, _, v) => {
                into.insert(k, v);
            }
        }
    }
}

fn normalize_integer_format(out: &mut Map<String, Value>) {
    let format = out
        .get("format")
        .and_then(Value::as_str)
        .map(str::to_string);
    match format.as_deref() {
        Some("int8" | "int16" | "int32" | "uint8" | "uint16") => {
            out.insert("format".into(), Value::String("int32".into()));
        }
        Some("int64" | "uint32" | "uint64" | "uint" | "int" | "uint128" | "int128") => {
            out.insert("format".into(), Value::String("int64".into()));
        }
        _ => {
            out.remove("format");
        }
    }
}

/// Turn a CRD's structural OpenAPI v3 schema into a JSON Schema (draft 4, whose boolean
/// `exclusiveMinimum` matches OpenAPI v3.0) that a JSON Schema validator can check custom
/// resources against, with the API server's checks made explicit:
///
/// - `nullable: true` → the type also admits `null`;
/// - `x-kubernetes-int-or-string` → `type: [integer, string]`;
/// - objects with `properties` and without `x-kubernetes-preserve-unknown-fields` reject
///   unknown fields (`additionalProperties: false`), as `kubectl apply --validate=strict` does;
/// - at the root, `apiVersion`, `kind` and `metadata` are allowed.
pub fn validation_schema(props: &JSONSchemaProps) -> Result<Value> {
    let value = serde_json::to_value(props).map_err(|source| Error::Json {
        what: "serialize openAPIV3Schema".into(),
        source,
    })?;
    let mut schema = openapi_to_json_schema(value);
    if let Value::Object(root) = &mut schema {
        let properties = root
            .entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(properties) = properties {
            properties.insert("apiVersion".into(), json!({"type": "string"}));
            properties.insert("kind".into(), json!({"type": "string"}));
            properties.insert("metadata".into(), json!({"type": "object"}));
        }
        root.insert(
            "$schema".into(),
            json!("http://json-schema.org/draft-04/schema#"),
        );
    }
    Ok(schema)
}

fn openapi_to_json_schema(value: Value) -> Value {
    let Value::Object(mut map) = value else {
        return value;
    };
    let preserve = map.remove("x-kubernetes-preserve-unknown-fields") == Some(Value::Bool(true));
    let nullable = map.remove("nullable") == Some(Value::Bool(true));
    if map.remove("x-kubernetes-int-or-string") == Some(Value::Bool(true)) {
        map.insert("type".into(), json!(["integer", "string"]));
    }
    map.retain(|k, _| !k.starts_with("x-kubernetes-"));
    for key in ["properties", "patternProperties"] {
        if let Some(Value::Object(props)) = map.remove(key) {
            let converted = props
                .into_iter()
                .map(|(k, v)| (k, openapi_to_json_schema(v)))
                .collect();
            map.insert(key.into(), Value::Object(converted));
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(v) = map.remove(key) {
            map.insert(key.into(), openapi_to_json_schema(v));
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(vs)) = map.remove(key) {
            map.insert(
                key.into(),
                Value::Array(vs.into_iter().map(openapi_to_json_schema).collect()),
            );
        }
    }
    if !preserve && map.contains_key("properties") && !map.contains_key("additionalProperties") {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    if nullable {
        match map.get("type").cloned() {
            Some(Value::String(t)) => {
                map.insert("type".into(), json!([t, "null"]));
            }
            Some(Value::Array(mut ts)) => {
                ts.push(json!("null"));
                map.insert("type".into(), Value::Array(ts));
            }
            _ => {}
        }
        if let Some(Value::Array(values)) = map.get_mut("enum") {
            values.push(Value::Null);
        }
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(schema: Value) -> Value {
        structural_schema("test", "spec", &schema).unwrap()
    }

    #[test]
    fn refs_are_inlined_and_nullable_options_collapse() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Spec",
            "type": "object",
            "properties": {
                "sink": {"$ref": "#/$defs/Sink", "description": "Where rows go."},
                "limit": {"type": ["integer", "null"], "format": "uint32", "minimum": 0, "default": null},
                "mode": {"anyOf": [{"$ref": "#/$defs/Mode"}, {"type": "null"}]},
            },
            "required": ["sink"],
            "additionalProperties": false,
            "$defs": {
                "Sink": {"title": "Sink", "type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]},
                "Mode": {"oneOf": [
                    {"type": "string", "const": "merge", "description": "Append."},
                    {"type": "string", "const": "overwrite", "description": "Replace."}
                ]}
            }
        });
        let out = convert(schema);
        assert_eq!(
            out,
            json!({
                "type": "object",
                "required": ["sink"],
                "properties": {
                    "sink": {"type": "object", "description": "Where rows go.", "required": ["url"], "properties": {"url": {"type": "string"}}},
                    "limit": {"type": "integer", "format": "int64", "minimum": 0, "nullable": true},
                    "mode": {"type": "string", "enum": ["merge", "overwrite"], "nullable": true,
                             "description": "- `merge`: Append.\n- `overwrite`: Replace."},
                }
            })
        );
    }

    #[test]
    fn open_json_preserves_unknown_fields_and_maps_keep_value_schemas() {
        let out = convert(json!({
            "type": "object",
            "properties": {
                "extra": true,
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "options": {"type": "object", "additionalProperties": true},
                "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
                "count": {"type": "integer", "exclusiveMinimum": 0}
            }
        }));
        let p = &out["properties"];
        assert_eq!(
            p["extra"],
            json!({"x-kubernetes-preserve-unknown-fields": true})
        );
        assert_eq!(
            p["labels"]["additionalProperties"],
            json!({"type": "string"})
        );
        assert_eq!(
            p["options"]["x-kubernetes-preserve-unknown-fields"],
            json!(true)
        );
        assert_eq!(p["tags"]["x-kubernetes-list-type"], json!("set"));
        assert!(p["tags"].get("uniqueItems").is_none());
        assert_eq!(p["count"]["minimum"], json!(0));
        assert_eq!(p["count"]["exclusiveMinimum"], json!(true));
    }

    #[test]
    fn tagged_enums_become_one_object() {
        let out = convert(json!({
            "oneOf": [
                {"type": "object", "properties": {"s3": {"type": "object", "properties": {"bucket": {"type": "string"}}}}, "required": ["s3"], "additionalProperties": false},
                {"type": "object", "properties": {"local": {"type": "string"}}, "required": ["local"], "additionalProperties": false}
            ]
        }));
        assert_eq!(out["type"], json!("object"));
        assert_eq!(
            out["oneOf"],
            json!([{"required": ["s3"]}, {"required": ["local"]}])
        );
        assert!(out["properties"]["s3"]["properties"]["bucket"].is_object());

        let internal = convert(json!({
            "oneOf": [
                {"type": "object", "properties": {"type": {"type": "string", "const": "csv"}, "delimiter": {"type": "string"}}, "required": ["type"]},
                {"type": "object", "properties": {"type": {"type": "string", "const": "json"}}, "required": ["type"]}
            ]
        }));
        assert_eq!(internal["required"], json!(["type"]));
        assert_eq!(
            internal["properties"]["type"]["enum"],
            json!(["csv", "json"])
        );
        assert!(internal.get("oneOf").is_none());
    }

    #[test]
    fn recursive_types_are_an_error_naming_the_path() {
        let err = structural_schema(
            "k",
            "spec",
            &json!({"$ref": "#/$defs/Node", "$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}}}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("spec.child"), "{err}");
        assert!(err.to_string().contains("recursive"), "{err}");
    }

    #[test]
    fn status_schema_matches_the_operator() {
        let status = status_schema();
        assert_eq!(status["properties"]["phase"]["enum"], json!(STATUS_PHASES));
        let item = &status["properties"]["conditions"]["items"];
        assert_eq!(item["required"], json!(["status", "type"]));
        assert_eq!(
            item["properties"]["status"]["enum"],
            json!(["True", "False"])
        );
        to_props("status", status).unwrap();
    }
}
