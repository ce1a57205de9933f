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
    /// A command-line flag's value is refused.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag (`--backfill-shards`).
        flag: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
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

impl Error {
    /// A manifests option error, naming the `arcane manifests` flag that set the option
    /// rather than the option's field.
    pub(crate) fn from_manifest_options(e: arcane_deploy::Error) -> Self {
        let arcane_deploy::Error::Options { field, message } = e else {
            return Error::Deploy(e);
        };
        let flag = match field {
            "backfill_shard_counts" => "--backfill-shards",
            "drain_timeout" | "grace_margin" => "--drain-timeout",
            "backoff_limit" => "--backoff-limit",
            "image" => "--image",
            _ => return Error::Deploy(arcane_deploy::Error::Options { field, message }),
        };
        Error::Flag { flag, message }
    }
}
