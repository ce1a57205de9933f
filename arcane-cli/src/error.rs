//! Errors of the `arcane` command's non-run subcommands.

/// Errors of `arcane kinds`, `spec-schema`, `crd` and `manifests`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kind is not hosted by this binary.
    #[error("unknown stream kind {kind:?}; this binary hosts: {}; see `arcane kinds`", known.join(", "))]
    UnknownKind {
        /// The kind asked for.
        kind: String,
        /// The hosted kinds.
        known: Vec<String>,
    },
    /// The kind's builder provides no spec schema.
    #[error("stream kind {kind:?} provides no spec schema")]
    NoSchema {
        /// The kind.
        kind: String,
    },
    /// Generating manifests failed.
    #[error(transparent)]
    Deploy(#[from] arcane_deploy::Error),
    /// A stream error (e.g. an invalid kind name).
    #[error(transparent)]
    Stream(Box<arcane_core::Error>),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// Serializing the output failed.
    #[error("cannot serialize the output: {0}")]
    Json(#[from] serde_json::Error),
}
