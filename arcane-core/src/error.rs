//! The error taxonomy shared by every Arcane crate, and the exit codes it maps to.

use std::fmt;

/// A boxed error from a source, sink or user code.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result type of `arcane-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether an I/O-style failure may succeed when the process is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The failure is transient (network, throttling, retries exhausted): restart the process.
    Transient,
    /// Retrying cannot help (bad credentials, missing bucket, invalid data): fail the Job.
    Permanent,
}

/// Errors of an Arcane stream.
///
/// Every variant maps to one of the platform's exit codes through [`Error::exit_code`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A required environment variable is missing or empty.
    #[error("environment variable {name} is not set; {hint}")]
    MissingEnv {
        /// The variable.
        name: &'static str,
        /// What the variable should contain.
        hint: &'static str,
    },

    /// Configuration or spec is invalid; `field` names the setting (e.g. `spec.sink.url`).
    #[error("{field}: {message}")]
    Config {
        /// The setting that is wrong, as a path (`spec.sink.url`, `STREAMCONTEXT__BACKFILL`).
        field: String,
        /// What is wrong and what to do.
        message: String,
    },

    /// A secret named by the spec cannot be read.
    #[error("secret {name}: {message}")]
    MissingSecret {
        /// The secret's environment variable or file.
        name: String,
        /// What is wrong.
        message: String,
    },

    /// Upstream schema changed incompatibly; the stream must be backfilled.
    #[error("schema mismatch in {location}: {message}")]
    SchemaMismatch {
        /// Where the mismatch was found (table, sink path, file).
        location: String,
        /// What differs (column, expected and found types).
        message: String,
    },

    /// A transient disagreement between schemas (e.g. a change not yet visible everywhere); retry.
    #[error("schema inconsistent in {location}: {message}")]
    SchemaInconsistent {
        /// Where the inconsistency was found.
        location: String,
        /// What differs.
        message: String,
    },

    /// A source failed.
    #[error("source {source_name}: {message}")]
    Source {
        /// The source (its kind or endpoint, never secrets).
        source_name: String,
        /// What failed.
        message: String,
        /// Whether a restart may help.
        retry: Retry,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// A sink failed.
    #[error("sink {sink_name}: {message}")]
    Sink {
        /// The sink (its kind or location, never secrets).
        sink_name: String,
        /// What failed.
        message: String,
        /// Whether a restart may help.
        retry: Retry,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// Arrow failed to process a batch (concatenation, casting, ...).
    #[error("arrow: {source}")]
    Arrow {
        /// The Arrow error.
        #[from]
        source: arrow_schema::ArrowError,
    },

    /// Graceful shutdown did not finish within the drain deadline; uncommitted rows were not acked.
    #[error(
        "drain deadline of {deadline:?} exceeded with {uncommitted_rows} rows accepted but not committed; they were not acknowledged upstream and will be re-read"
    )]
    DrainTimeout {
        /// The drain deadline.
        deadline: std::time::Duration,
        /// Rows accepted from the source but not committed by the sink.
        uncommitted_rows: u64,
    },

    /// The stream was aborted with data accepted but not committed.
    #[error(
        "stream aborted with {uncommitted_rows} rows accepted but not committed; they were not acknowledged upstream and will be re-read"
    )]
    Aborted {
        /// Rows accepted from the source but not committed by the sink.
        uncommitted_rows: u64,
    },

    /// An unrecoverable error in user code.
    #[error("{message}")]
    Fatal {
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// Convenience constructor for [`Error::Config`].
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Convenience constructor for a transient [`Error::Source`].
    pub fn source_transient(
        source_name: impl Into<String>,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Source {
            source_name: source_name.into(),
            message: message.into(),
            retry: Retry::Transient,
            source: Some(source.into()),
        }
    }

    /// Convenience constructor for a permanent [`Error::Source`] without an underlying error.
    pub fn source_permanent(source_name: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Source {
            source_name: source_name.into(),
            message: message.into(),
            retry: Retry::Permanent,
            source: None,
        }
    }

    /// Convenience constructor for [`Error::Sink`].
    pub fn sink(
        sink_name: impl Into<String>,
        message: impl Into<String>,
        retry: Retry,
        source: Option<BoxError>,
    ) -> Self {
        Self::Sink {
            sink_name: sink_name.into(),
            message: message.into(),
            retry,
            source,
        }
    }

    /// Convenience constructor for [`Error::Fatal`].
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::Fatal {
            message: message.into(),
            source: None,
        }
    }

    /// The exit code this error maps to under the Arcane platform's contract.
    ///
    /// | error | code |
    /// |---|---|
    /// | `SchemaMismatch` | [`ExitCode::Fatal`] until the runner has annotated its Job, then [`ExitCode::Success`] (decided by the runner) |
    /// | `SchemaInconsistent`, `DrainTimeout`, `Aborted`, transient `Source`/`Sink` | [`ExitCode::Restart`] |
    /// | `Config`, `MissingEnv`, `MissingSecret`, `Fatal`, `Arrow`, permanent `Source`/`Sink` | [`ExitCode::Fatal`] |
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::SchemaInconsistent { .. }
            | Error::DrainTimeout { .. }
            | Error::Aborted { .. } => ExitCode::Restart,
            Error::Source { retry, .. } | Error::Sink { retry, .. } => match retry {
                Retry::Transient => ExitCode::Restart,
                Retry::Permanent => ExitCode::Fatal,
            },
            Error::SchemaMismatch { .. }
            | Error::MissingEnv { .. }
            | Error::Config { .. }
            | Error::MissingSecret { .. }
            | Error::Arrow { .. }
            | Error::Fatal { .. } => ExitCode::Fatal,
        }
    }

    /// A short, stable name of the variant for logs and the termination message.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::MissingEnv { .. } => "MissingEnv",
            Error::Config { .. } => "Config",
            Error::MissingSecret { .. } => "MissingSecret",
            Error::SchemaMismatch { .. } => "SchemaMismatch",
            Error::SchemaInconsistent { .. } => "SchemaInconsistent",
            Error::Source { .. } => "Source",
            Error::Sink { .. } => "Sink",
            Error::Arrow { .. } => "Arrow",
            Error::DrainTimeout { .. } => "DrainTimeout",
            Error::Aborted { .. } => "Aborted",
            Error::Fatal { .. } => "Fatal",
        }
    }

    /// True for [`Error::SchemaMismatch`].
    pub fn is_schema_mismatch(&self) -> bool {
        matches!(self, Error::SchemaMismatch { .. })
    }
}

/// The process exit codes of the Arcane platform, which its Job templates'
/// `podFailurePolicy` relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExitCode {
    /// Clean stop with everything committed, backfill finished, or schema mismatch after the
    /// Job was annotated. The operator restarts the stream.
    Success = 0,
    /// Cannot succeed by retrying; counts against the Job's `backoffLimit`.
    Fatal = 1,
    /// Transient; the Job template's `podFailurePolicy` ignores it, so the pod is re-run
    /// without counting against `backoffLimit`.
    Restart = 2,
}

impl ExitCode {
    /// The numeric code.
    pub fn code(self) -> i32 {
        self as i32
    }
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ExitCode::Success => "SUCCESS",
            ExitCode::Fatal => "FATAL",
            ExitCode::Restart => "RESTART",
        };
        write!(f, "{name} ({})", self.code())
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_platform_contract() {
        assert_eq!(ExitCode::Success.code(), 0);
        assert_eq!(ExitCode::Fatal.code(), 1);
        assert_eq!(ExitCode::Restart.code(), 2);
        assert_eq!(
            Error::config("spec.sink.url", "missing").exit_code(),
            ExitCode::Fatal
        );
        assert_eq!(
            Error::SchemaInconsistent {
                location: "t".into(),
                message: "m".into()
            }
            .exit_code(),
            ExitCode::Restart
        );
        assert_eq!(
            Error::source_transient("nats", "connection reset", "io").exit_code(),
            ExitCode::Restart
        );
        assert_eq!(
            Error::source_permanent("nats", "stream not found").exit_code(),
            ExitCode::Fatal
        );
        assert_eq!(
            Error::Aborted {
                uncommitted_rows: 3
            }
            .exit_code(),
            ExitCode::Restart
        );
        assert_eq!(
            Error::SchemaMismatch {
                location: "t".into(),
                message: "m".into()
            }
            .exit_code(),
            ExitCode::Fatal,
            "without the Job annotation a schema mismatch must not look like success"
        );
    }
}
