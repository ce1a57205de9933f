//! [`Registry`]: the stream kinds a binary hosts.

use std::collections::BTreeMap;
use std::fmt;

use arcane_core::context::snake_case;
use arcane_core::{DynStreamGraphBuilder, Error as StreamError};
use serde::Serialize;
use serde_json::Value;

/// A stream kind in a [`Registry`] listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KindInfo {
    /// The kind's name, as in `STREAMCONTEXT__STREAM_KIND` / `--kind`.
    pub name: String,
    /// The builder's one-line description.
    pub description: String,
    /// Whether the builder provides a JSON Schema of its spec.
    pub has_spec_schema: bool,
}

/// Stream kinds (name → builder) of a binary that hosts several.
///
/// Kinds match exactly, or else by their snake_case form without a trailing `Stream`, so the
/// operator's CRD kind `BlobLandingStream` (which it passes as `STREAMCONTEXT__STREAM_KIND`)
/// finds a builder registered as `blob-landing`.
#[derive(Default)]
pub struct Registry {
    kinds: BTreeMap<String, Box<dyn DynStreamGraphBuilder>>,
    default: Option<Box<dyn DynStreamGraphBuilder>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.kinds.keys().collect::<Vec<_>>())
            .field("default", &self.default.is_some())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `builder` for `kind` (replacing an earlier one of the same name).
    pub fn register(&mut self, kind: impl Into<String>, builder: impl DynStreamGraphBuilder) {
        self.kinds.insert(kind.into(), Box::new(builder));
    }

    /// Register the builder used for any kind (single-kind binaries: `arcane_runner::run`).
    pub fn set_default(&mut self, builder: impl DynStreamGraphBuilder) {
        self.default = Some(Box::new(builder));
    }

    /// True when a default builder is set.
    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }

    /// The registered kinds, sorted by name.
    pub fn kinds(&self) -> Vec<KindInfo> {
        self.kinds
            .iter()
            .map(|(name, b)| KindInfo {
                name: name.clone(),
                description: b.description().to_string(),
                has_spec_schema: b.spec_schema().is_some(),
            })
            .collect()
    }

    /// The builder for `kind`: an exact match, else a match of the snake_case forms without a
    /// trailing `Stream` (`BlobLandingStream` = `blob-landing`), else the default.
    pub fn get(&self, kind: &str) -> Option<&dyn DynStreamGraphBuilder> {
        self.named(kind).or(self.default.as_deref())
    }

    /// The registered name `kind` resolves to, if any (see [`Registry::get`]).
    pub fn canonical_name(&self, kind: &str) -> Option<&str> {
        if let Some((name, _)) = self.kinds.get_key_value(kind) {
            return Some(name.as_str());
        }
        let wanted = normalized(kind);
        self.kinds
            .keys()
            .find(|name| normalized(name) == wanted)
            .map(String::as_str)
    }

    fn named(&self, kind: &str) -> Option<&dyn DynStreamGraphBuilder> {
        self.canonical_name(kind)
            .and_then(|name| self.kinds.get(name))
            .map(Box::as_ref)
    }

    /// Like [`Registry::get`], with an error naming `STREAMCONTEXT__STREAM_KIND` and the hosted
    /// kinds when nothing matches.
    pub fn resolve(&self, kind: &str) -> Result<&dyn DynStreamGraphBuilder, StreamError> {
        self.get(kind).ok_or_else(|| {
            StreamError::config(
                "STREAMCONTEXT__STREAM_KIND (--kind)",
                format!(
                    "unknown stream kind {kind:?}; this binary hosts: {}",
                    self.known()
                ),
            )
        })
    }

    /// The JSON Schema of `kind`'s spec: `Ok(None)` when the builder provides none, an error
    /// when the kind is unknown.
    pub fn spec_schema(&self, kind: &str) -> Result<Option<Value>, StreamError> {
        let builder = self.named(kind).ok_or_else(|| {
            StreamError::config(
                "KIND",
                format!(
                    "unknown stream kind {kind:?}; this binary hosts: {}",
                    self.known()
                ),
            )
        })?;
        Ok(builder.spec_schema())
    }

    pub(crate) fn known(&self) -> String {
        if self.kinds.is_empty() {
            "no named kinds".into()
        } else {
            self.kinds.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

/// snake_case without a trailing `_stream`: `BlobLandingStream`, `blob-landing` → `blob_landing`.
fn normalized(kind: &str) -> String {
    let snake = snake_case(kind);
    match snake.strip_suffix("_stream") {
        Some(stem) if !stem.is_empty() => stem.to_string(),
        _ => snake,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arcane_core::testing::{GeneratorSource, MemorySink};
    use arcane_core::{StreamContext, StreamGraph, StreamGraphBuilder};
    use serde_json::json;

    struct Synthetic(&'static str);

    #[async_trait::async_trait]
    impl StreamGraphBuilder for Synthetic {
        type Spec = Value;
        async fn build(
            &self,
            _ctx: &StreamContext,
            _spec: Value,
        ) -> arcane_core::Result<StreamGraph> {
            Ok(StreamGraph::from_source(GeneratorSource::new(1, 1)).to_sink(MemorySink::new()))
        }
        fn description(&self) -> &str {
            self.0
        }
        fn spec_schema(&self) -> Option<Value> {
            (self.0 == "with schema").then(|| json!({"type": "object"}))
        }
    }

    #[test]
    fn lists_kinds_and_resolves_by_exact_or_snake_case_name() {
        let mut r = Registry::new();
        r.register("blob-landing", Synthetic("lands files"));
        r.register("Generator", Synthetic("with schema"));
        assert_eq!(
            r.kinds(),
            vec![
                KindInfo {
                    name: "Generator".into(),
                    description: "with schema".into(),
                    has_spec_schema: true
                },
                KindInfo {
                    name: "blob-landing".into(),
                    description: "lands files".into(),
                    has_spec_schema: false
                },
            ]
        );
        assert_eq!(
            r.resolve("BlobLanding").unwrap().description(),
            "lands files"
        );
        assert_eq!(r.resolve("generator").unwrap().description(), "with schema");
        assert_eq!(
            r.resolve("BlobLandingStream").unwrap().description(),
            "lands files"
        );
        assert_eq!(r.canonical_name("BlobLandingStream"), Some("blob-landing"));
        let err = r.resolve("nats").err().unwrap();
        assert_eq!(
            err.to_string(),
            "STREAMCONTEXT__STREAM_KIND (--kind): unknown stream kind \"nats\"; this binary hosts: Generator, blob-landing"
        );
        assert_eq!(
            r.spec_schema("generator").unwrap(),
            Some(json!({"type": "object"}))
        );
        assert_eq!(r.spec_schema("blob-landing").unwrap(), None);
        assert!(r.spec_schema("nats").is_err());
    }

    #[test]
    fn default_builder_serves_any_kind() {
        let mut r = Registry::new();
        r.set_default(Synthetic("any"));
        assert_eq!(r.resolve("whatever").unwrap().description(), "any");
        assert!(r.kinds().is_empty());
    }
}
