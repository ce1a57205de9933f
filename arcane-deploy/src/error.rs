//! The error type of `arcane-deploy`.

/// Result type of `arcane-deploy`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors while generating Kubernetes manifests.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A kind's name or settings cannot form valid Kubernetes names.
    #[error("stream kind {kind:?}: {message}")]
    Kind {
        /// The stream kind (`blob-landing`).
        kind: String,
        /// What is wrong and what to do.
        message: String,
    },

    /// The kind's spec JSON Schema cannot be turned into a structural OpenAPI v3 schema.
    #[error("spec schema of stream kind {kind:?} at {path}: {message}")]
    Schema {
        /// The stream kind.
        kind: String,
        /// JSON path in the spec (`spec.sink.url`).
        path: String,
        /// What is wrong and what to do.
        message: String,
    },

    /// Options of a generated object (Job template, Job, Service, Ingress) are inconsistent.
    #[error("option {field}: {message}")]
    Options {
        /// The option (`drain_timeout`).
        field: &'static str,
        /// What is wrong and what to do.
        message: String,
    },

    /// A generated value does not convert to or from its Kubernetes type.
    #[error("{what}: {source}")]
    Json {
        /// What was being converted.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// YAML serialization failed.
    #[error("YAML: {source}")]
    Yaml {
        /// The YAML error.
        #[from]
        source: serde_norway::Error,
    },
}
