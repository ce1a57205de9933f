//! The runner's own errors: everything else is an [`arcane_core::Error`].

use std::path::PathBuf;

/// Errors of `arcane-runner` that are not stream errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A stream error (configuration, build, run).
    #[error(transparent)]
    Stream(#[from] arcane_core::Error),

    /// The runner could not annotate its own Job after a schema mismatch, so the operator will
    /// not know to backfill.
    #[error("cannot annotate Job {namespace}/{job} with {key}: {reason}")]
    Annotation {
        /// The Job's namespace (`POD_NAMESPACE`), or `?` when unknown.
        namespace: String,
        /// The Job's name (`ARCANE_JOB_NAME`), or `?` when unknown.
        job: String,
        /// The annotation key (`ARCANE_JOB_ANNOTATION_KEY`).
        key: String,
        /// HTTP status of the Kubernetes API's answer, when it answered.
        status: Option<u16>,
        /// What went wrong and what to do.
        reason: String,
    },

    /// The termination message could not be written.
    #[error("cannot write the termination message to {path} (ARCANE_TERMINATION_LOG): {source}")]
    TerminationLog {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Result type of `arcane-runner`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
