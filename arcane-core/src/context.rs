//! [`StreamContext`]: who this stream is and what it should do, as the Arcane operator says.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::env::{ENV_BACKFILL_SHARDS, ENV_SHARD_INDEX};
use crate::error::{Error, Result};

/// `STREAMCONTEXT__SPEC`: JSON of the stream resource's `.spec` (required).
pub const ENV_SPEC: &str = "STREAMCONTEXT__SPEC";
/// `STREAMCONTEXT__STREAM_ID`: the stream's id (required).
pub const ENV_STREAM_ID: &str = "STREAMCONTEXT__STREAM_ID";
/// `STREAMCONTEXT__STREAM_KIND`: the stream's kind (required).
pub const ENV_STREAM_KIND: &str = "STREAMCONTEXT__STREAM_KIND";
/// `STREAMCONTEXT__BACKFILL`: `true` to run in backfill mode (default `false`).
pub const ENV_BACKFILL: &str = "STREAMCONTEXT__BACKFILL";
/// `STREAMCONTEXT__BACKFILL_ID`: the backfill's id; the same id resumes an interrupted backfill.
pub const ENV_BACKFILL_ID: &str = "STREAMCONTEXT__BACKFILL_ID";
/// `STREAMCONTEXT__OVERRIDE`: optional JSON merged over the spec (RFC 7396 merge patch).
pub const ENV_OVERRIDE: &str = "STREAMCONTEXT__OVERRIDE";
/// `APPLICATION_VERSION`: the version of the stream binary, added to logs.
pub const ENV_APPLICATION_VERSION: &str = "APPLICATION_VERSION";
/// `ARCANE__LOGGING_PROPERTIES`: JSON object of extra fields added to every log line.
pub const ENV_LOGGING_PROPERTIES: &str = "ARCANE__LOGGING_PROPERTIES";

/// Whether the stream follows live changes or reads history and exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Run until stopped, following new data.
    #[default]
    Stream,
    /// Read the full history (or the configured range) and exit when done.
    Backfill,
}

impl Mode {
    /// `stream` or `backfill`, the value of the `mode` metric tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Stream => "stream",
            Mode::Backfill => "backfill",
        }
    }
}

/// Everything a stream knows about itself: identity, mode and its spec.
///
/// Built by the runner from the environment the Arcane operator sets ([`StreamContext::from_env`]),
/// or in code with [`StreamContext::new`] for tests and embedded use.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamContext {
    /// The stream's id (`STREAMCONTEXT__STREAM_ID`).
    pub stream_id: String,
    /// The stream's kind (`STREAMCONTEXT__STREAM_KIND`).
    pub stream_kind: String,
    /// Backfill mode (`STREAMCONTEXT__BACKFILL`).
    pub backfill: bool,
    /// The backfill's id (`STREAMCONTEXT__BACKFILL_ID`); resuming with the same id continues it.
    pub backfill_id: Option<String>,
    /// The spec with `STREAMCONTEXT__OVERRIDE` already merged over it.
    pub spec: Value,
    /// `APPLICATION_VERSION`.
    pub application_version: Option<String>,
    /// `ARCANE__LOGGING_PROPERTIES`: extra log fields.
    pub logging_properties: BTreeMap<String, Value>,
    /// Extra metric tags (e.g. from the spec) added to every metric of the stream.
    pub tags: BTreeMap<String, String>,
    /// `JOB_COMPLETION_INDEX`: the pod's index in an Indexed Job, the shard of a sharded
    /// backfill (see [`StreamContext::shard`]).
    pub shard_index: Option<u32>,
}

impl StreamContext {
    /// A context for a stream in streaming mode with the given spec.
    pub fn new(stream_id: impl Into<String>, stream_kind: impl Into<String>, spec: Value) -> Self {
        Self {
            stream_id: stream_id.into(),
            stream_kind: stream_kind.into(),
            backfill: false,
            backfill_id: None,
            spec,
            application_version: None,
            logging_properties: BTreeMap::new(),
            tags: BTreeMap::new(),
            shard_index: None,
        }
    }

    /// Switch to backfill mode with the given backfill id.
    pub fn with_backfill(mut self, backfill_id: impl Into<String>) -> Self {
        self.backfill = true;
        self.backfill_id = Some(backfill_id.into());
        self
    }

    /// Read the context from the process environment, exactly as the Arcane operator sets it.
    ///
    /// Missing `STREAMCONTEXT__SPEC`, `STREAMCONTEXT__STREAM_ID` or `STREAMCONTEXT__STREAM_KIND`
    /// is an [`Error::MissingEnv`] naming the variable; malformed JSON or booleans are an
    /// [`Error::Config`] naming it.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`StreamContext::from_env`], reading variables through `lookup` (for tests and CLIs).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let required = |name: &'static str, hint: &'static str| {
            get(name).ok_or(Error::MissingEnv { name, hint })
        };
        let spec_text = required(
            ENV_SPEC,
            "set it to the JSON of the stream resource's .spec",
        )?;
        let stream_id = required(ENV_STREAM_ID, "set it to the stream's id")?;
        let stream_kind = required(ENV_STREAM_KIND, "set it to the stream's kind")?;
        let backfill = match get(ENV_BACKFILL) {
            None => false,
            Some(v) => parse_bool(ENV_BACKFILL, &v)?,
        };
        let mut spec = parse_json(ENV_SPEC, &spec_text)?;
        if let Some(text) = get(ENV_OVERRIDE) {
            let patch = parse_json(ENV_OVERRIDE, &text)?;
            merge_patch(&mut spec, patch);
        }
        crate::shard::apply_template_shards(&mut spec, get(ENV_BACKFILL_SHARDS).as_deref())?;
        let logging_properties = match get(ENV_LOGGING_PROPERTIES) {
            None => BTreeMap::new(),
            Some(text) => match parse_json(ENV_LOGGING_PROPERTIES, &text)? {
                Value::Object(map) => map.into_iter().collect(),
                other => {
                    return Err(Error::config(
                        ENV_LOGGING_PROPERTIES,
                        format!(
                            "expected a JSON object of log fields, found {}",
                            json_type(&other)
                        ),
                    ));
                }
            },
        };
        Ok(Self {
            stream_id,
            stream_kind,
            backfill,
            backfill_id: get(ENV_BACKFILL_ID),
            spec,
            application_version: get(ENV_APPLICATION_VERSION),
            logging_properties,
            tags: BTreeMap::new(),
            shard_index: get(ENV_SHARD_INDEX)
                .map(|v| crate::shard::parse_index(&v))
                .transpose()?,
        })
    }

    /// Set the shard index (`JOB_COMPLETION_INDEX`).
    pub fn with_shard_index(mut self, index: u32) -> Self {
        self.shard_index = Some(index);
        self
    }

    /// The shard this run is, from the spec's `backfillShards` and `JOB_COMPLETION_INDEX`:
    /// `None` when not sharded (streaming mode, which ignores `backfillShards`, or a backfill
    /// of one shard). Errors are configuration errors naming the setting; see
    /// [`Shard::resolve`](crate::shard::Shard::resolve).
    pub fn shard(&self) -> Result<Option<crate::shard::Shard>> {
        crate::shard::Shard::resolve(&self.spec, self.shard_index, self.mode())
    }

    /// The mode the stream runs in.
    pub fn mode(&self) -> Mode {
        if self.backfill {
            Mode::Backfill
        } else {
            Mode::Stream
        }
    }

    /// The spec deserialized into `T`.
    ///
    /// Errors name the JSON path that failed, e.g. `spec.sink.url: missing field`.
    pub fn spec<T: DeserializeOwned>(&self) -> Result<T> {
        deserialize_at("spec", &self.spec)
    }

    /// Apply an RFC 7396 JSON merge patch over the spec.
    pub fn merge_override(&mut self, patch: Value) {
        merge_patch(&mut self.spec, patch);
    }

    /// The stream kind in snake_case, as used in the `kind` metric tag.
    pub fn kind_tag(&self) -> String {
        snake_case(&self.stream_kind)
    }
}

/// Deserialize `value` into `T`; errors are [`Error::Config`] whose field is `root` plus the
/// JSON path that failed (`spec.sink.url`).
pub fn deserialize_at<T: DeserializeOwned>(root: &str, value: &Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." || path.is_empty() {
            root.to_string()
        } else {
            format!("{root}.{path}")
        };
        Error::config(field, err.into_inner().to_string())
    })
}

fn parse_json(var: &'static str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| {
        Error::config(
            var,
            format!("not valid JSON ({e}); it must hold a JSON object"),
        )
    })
}

/// Exactly the values the platform sets: `true` or `false` (any case). Anything else — `yes`,
/// `1`, a template left unrendered — is refused rather than guessed: taking a typo for `true`
/// would run an overwrite backfill that replaces the dataset.
fn parse_bool(var: &'static str, text: &str) -> Result<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::config(
            var,
            format!("expected true or false, found {:?}", text.trim()),
        )),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// RFC 7396 JSON merge patch: objects merge recursively, `null` removes a key, anything else
/// replaces.
pub fn merge_patch(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(map) = target {
                for (key, value) in patch {
                    if value.is_null() {
                        map.remove(&key);
                    } else {
                        merge_patch(map.entry(key).or_insert(Value::Null), value);
                    }
                }
            }
        }
        other => *target = other,
    }
}

/// `MyStreamKind` / `my-stream-kind` → `my_stream_kind`.
pub fn snake_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut prev_lower = false;
    for c in s.chars() {
        if c == '-' || c == ' ' || c == '.' {
            out.push('_');
            prev_lower = false;
        } else if c.is_uppercase() {
            if prev_lower {
                out.push('_');
            }
            out.extend(c.to_lowercase());
            prev_lower = false;
        } else {
            out.push(c);
            prev_lower = c.is_lowercase() || c.is_ascii_digit();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Spec {
        rows_per_group: u32,
        sink: SinkSpec,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct SinkSpec {
        url: String,
    }

    #[test]
    fn reads_the_operator_environment() {
        let ctx = StreamContext::from_lookup(lookup(&[
            (
                ENV_SPEC,
                r#"{"rowsPerGroup": 10, "sink": {"url": "file:///a"}}"#,
            ),
            (ENV_STREAM_ID, "orders"),
            (ENV_STREAM_KIND, "BlobLanding"),
            (ENV_BACKFILL, "true"),
            (ENV_BACKFILL_ID, "bf-1"),
            (ENV_OVERRIDE, r#"{"sink": {"url": "s3://b/p"}}"#),
            (ENV_APPLICATION_VERSION, "1.2.3"),
            (ENV_LOGGING_PROPERTIES, r#"{"team": "data"}"#),
        ]))
        .unwrap();
        assert_eq!(ctx.stream_id, "orders");
        assert_eq!(ctx.mode(), Mode::Backfill);
        assert_eq!(ctx.backfill_id.as_deref(), Some("bf-1"));
        assert_eq!(ctx.application_version.as_deref(), Some("1.2.3"));
        assert_eq!(ctx.logging_properties["team"], json!("data"));
        assert_eq!(ctx.kind_tag(), "blob_landing");
        let spec: Spec = ctx.spec().unwrap();
        assert_eq!(
            spec,
            Spec {
                rows_per_group: 10,
                sink: SinkSpec {
                    url: "s3://b/p".into()
                }
            }
        );
    }

    #[test]
    fn missing_required_variable_is_named() {
        let err = StreamContext::from_lookup(lookup(&[(ENV_SPEC, "{}"), (ENV_STREAM_KIND, "k")]))
            .unwrap_err();
        assert!(matches!(
            err,
            Error::MissingEnv {
                name: ENV_STREAM_ID,
                ..
            }
        ));
        assert!(err.to_string().contains("STREAMCONTEXT__STREAM_ID"));
        assert_eq!(err.exit_code(), crate::ExitCode::Fatal);

        let err =
            StreamContext::from_lookup(lookup(&[(ENV_STREAM_ID, "a"), (ENV_STREAM_KIND, "k")]))
                .unwrap_err();
        assert!(err.to_string().contains("STREAMCONTEXT__SPEC"), "{err}");
    }

    #[test]
    fn malformed_values_are_config_errors_naming_the_variable() {
        let base = [(ENV_STREAM_ID, "a"), (ENV_STREAM_KIND, "k")];
        let err = StreamContext::from_lookup(lookup(&[base[0], base[1], (ENV_SPEC, "{not json")]))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("STREAMCONTEXT__SPEC: not valid JSON"),
            "{err}"
        );
        let err = StreamContext::from_lookup(lookup(&[
            base[0],
            base[1],
            (ENV_SPEC, "{}"),
            (ENV_BACKFILL, "maybe"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "STREAMCONTEXT__BACKFILL: expected true or false, found \"maybe\""
        );
        for loose in ["yes", "1", "TRUE ", "{{ .backfill }}"] {
            let r = StreamContext::from_lookup(lookup(&[
                base[0],
                base[1],
                (ENV_SPEC, "{}"),
                (ENV_BACKFILL, loose),
            ]));
            match loose.trim() {
                "TRUE" => assert!(r.unwrap().backfill),
                _ => assert!(r.is_err(), "{loose:?} must not be taken as a boolean"),
            }
        }
    }

    #[test]
    fn typed_spec_errors_name_the_json_path() {
        let ctx = StreamContext::new("s", "k", json!({"rowsPerGroup": 1, "sink": {}}));
        let err = ctx.spec::<Spec>().unwrap_err();
        assert_eq!(err.to_string(), "spec.sink: missing field `url`");

        let ctx = StreamContext::new("s", "k", json!({"rowsPerGroup": "x", "sink": {"url": "u"}}));
        let err = ctx.spec::<Spec>().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("spec.rowsPerGroup: invalid type: string \"x\""),
            "{err}"
        );

        let ctx = StreamContext::new(
            "s",
            "k",
            json!({"rowsPerGroup": 1, "sink": {"url": "u", "urll": 1}}),
        );
        let err = ctx.spec::<Spec>().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("spec.sink.urll: unknown field `urll`"),
            "{err}"
        );
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut v, json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(v, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn snake_case_kinds() {
        assert_eq!(snake_case("RestApi"), "rest_api");
        assert_eq!(snake_case("postgres-cdc"), "postgres_cdc");
        assert_eq!(snake_case("nats"), "nats");
    }
}
