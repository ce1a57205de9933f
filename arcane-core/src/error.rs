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
    #[error("environment variable {name} is not set or empty; {hint}")]
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

    /// More records were dead-lettered than the run's
    /// [`DeadLetterBudget`](crate::DeadLetterBudget) allows; the group that crossed it was not
    /// committed.
    #[error(
        "{dead} of {records} records read ({percent:.2}%) were dead-lettered, over the budget ({limit}); the group that crossed it was not committed and will be re-read. First reasons: {reasons}. Fix the schema or the input (or raise sink.deadLetter.maxRatio / maxCount), then rerun",
        percent = crate::dead_letter::ratio(*dead, *records) * 100.0,
        limit = budget_text(*max_ratio, *max_count),
        reasons = if reasons.is_empty() { "none recorded".to_string() } else { reasons.join("; ") }
    )]
    DeadLetterBudget {
        /// Dead letters so far.
        dead: u64,
        /// Records read so far (rows plus dead letters).
        records: u64,
        /// The budget's ratio.
        max_ratio: f64,
        /// The budget's absolute count, if any.
        max_count: Option<u64>,
        /// The first reasons.
        reasons: Vec<String>,
    },

    /// An `overwrite` backfill read no records: publishing its empty generation would replace
    /// the live dataset with nothing, so it is refused.
    #[error(
        "the overwrite backfill {backfill_id:?} committed no rows from {source_name}, so {sink_name} keeps its current data instead of being replaced by an empty dataset. Check the source location (a typo'd bucket or prefix reads nothing), or set sink.allowEmptyOverwrite: true to publish an empty dataset on purpose"
    )]
    EmptyOverwrite {
        /// The backfill's id.
        backfill_id: String,
        /// The source that read nothing.
        source_name: String,
        /// The sink whose data was kept.
        sink_name: String,
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
    /// | `Config`, `MissingEnv`, `MissingSecret`, `Fatal`, `Arrow`, `DeadLetterBudget`, `EmptyOverwrite`, permanent `Source`/`Sink` | [`ExitCode::Fatal`] |
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
            | Error::DeadLetterBudget { .. }
            | Error::EmptyOverwrite { .. }
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
            Error::DeadLetterBudget { .. } => "DeadLetterBudget",
            Error::EmptyOverwrite { .. } => "EmptyOverwrite",
            Error::Fatal { .. } => "Fatal",
        }
    }

    /// True for [`Error::SchemaMismatch`].
    pub fn is_schema_mismatch(&self) -> bool {
        matches!(self, Error::SchemaMismatch { .. })
    }
}

fn budget_text(max_ratio: f64, max_count: Option<u64>) -> String {
    match max_count {
        Some(n) => format!("at most {:.2}% and {n} records", max_ratio * 100.0),
        None => format!("at most {:.2}%", max_ratio * 100.0),
    }
}

/// An error with its whole cause chain: `what failed: cause: cause of the cause`.
///
/// Causes whose text the message already contains are not repeated, so errors that format their
/// source into their message (as many do) print it once.
///
/// ```
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
/// let err = arcane_core::Error::source_transient("rest-api http://x", "GET http://x failed", io);
/// assert_eq!(
///     arcane_core::error::Report(&err).to_string(),
///     "source rest-api http://x: GET http://x failed: connection refused"
/// );
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(c) = cause {
            let part = c.to_string();
            if !part.is_empty() && !text.contains(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            cause = c.source();
        }
        f.write_str(&text)
    }
}

impl Error {
    /// This error with its cause chain ([`Report`]).
    pub fn report(&self) -> String {
        Report(self).to_string()
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
