//! [`Outcome`]: how a run ended, the exit code it maps to, and the termination message.
//!
//! | code | name | outcome |
//! |---|---|---|
//! | 0 | SUCCESS | backfill finished; source ended with everything committed; streaming stopped by SIGTERM/SIGINT with everything committed; `SchemaMismatch` after the Job was annotated |
//! | 1 | FATAL | bad spec/config/flags (the message names the setting), missing secret, permanent source/sink errors, unhandled errors, `SchemaMismatch` when the Job could not be annotated |
//! | 2 | RESTART | `SchemaInconsistent`, transient source/sink errors (retries exhausted), stopped during a backfill (resumable by backfill id), drain deadline or second signal with uncommitted rows |
//!
//! Rows accepted but not committed never give 0, with one exception: a `SchemaMismatch` whose
//! Job was annotated. The rows of the mismatching group cannot be committed by this sink; they
//! were not acknowledged upstream and the backfill the annotation triggers re-reads them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arcane_core::{Completion, Error as StreamError, ExitCode, Mode, RunSummary, StreamContext};
use serde_json::{Value, json};

use crate::error::Error;

/// The Kubernetes limit on a termination message (bytes).
pub const TERMINATION_MESSAGE_MAX: usize = 4096;

/// A user-supplied classification of stream errors: `Some(code)` overrides the runner's
/// mapping for that error, `None` keeps it. A `Success` is still downgraded to `Restart` when
/// rows were accepted but not committed.
pub type Classifier = Arc<dyn Fn(&StreamError) -> Option<ExitCode> + Send + Sync + 'static>;

/// Why the run ended (stable names in the termination message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The source ended (backfill done) and everything was committed.
    Finished,
    /// Stopped by a signal in streaming mode with everything committed.
    ShutDown,
    /// Stopped by a signal during a backfill; rerun with the same backfill id resumes it.
    StoppedDuringBackfill,
    /// The drain deadline passed with rows accepted but not committed.
    DrainTimeout,
    /// A second signal aborted the drain with rows accepted but not committed.
    Aborted,
    /// Schema mismatch; the Job was annotated so the operator backfills.
    SchemaMismatch,
    /// Schema mismatch, but annotating the Job failed.
    AnnotationFailed,
    /// Configuration, flags or spec are invalid.
    InvalidConfig,
    /// The stream failed; the exit code follows the error.
    Failed,
    /// The stream failed and the user's classifier chose the exit code.
    Classified,
    /// A successful ending was downgraded because rows were accepted but not committed.
    Uncommitted,
    /// More records were dead-lettered than the budget allows; the group that crossed it was
    /// not committed.
    DeadLetterBudget,
    /// An overwrite backfill committed no rows; the current data was kept.
    EmptyOverwrite,
}

impl Reason {
    /// The name used in the termination message and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Finished => "finished",
            Reason::ShutDown => "shutDown",
            Reason::StoppedDuringBackfill => "stoppedDuringBackfill",
            Reason::DrainTimeout => "drainTimeout",
            Reason::Aborted => "aborted",
            Reason::SchemaMismatch => "schemaMismatch",
            Reason::AnnotationFailed => "annotationFailed",
            Reason::InvalidConfig => "invalidConfig",
            Reason::Failed => "failed",
            Reason::Classified => "classified",
            Reason::Uncommitted => "uncommitted",
            Reason::DeadLetterBudget => "deadLetterBudget",
            Reason::EmptyOverwrite => "emptyOverwrite",
        }
    }
}

/// How a run ended: the exit code, why, and what was committed.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The exit code of the process.
    pub exit_code: ExitCode,
    /// Why.
    pub reason: Reason,
    /// [`arcane_core::Error::kind`] of the error, if the run failed.
    pub error_kind: Option<String>,
    /// A human-readable explanation (the error message, or what happened).
    pub message: String,
    /// What the run did.
    pub summary: RunSummary,
    /// The stream's id, when known.
    pub stream_id: Option<String>,
    /// The stream's kind, when known.
    pub stream_kind: Option<String>,
    /// The mode, when known.
    pub mode: Option<Mode>,
    /// The backfill id, when known.
    pub backfill_id: Option<String>,
}

/// How the run was asked to stop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stop {
    /// The first signal received (`SIGTERM`, `SIGINT`), if any.
    pub signal: Option<&'static str>,
    /// Why the graceful drain was cut short, if it was.
    pub escalation: Option<Escalation>,
}

/// Why a graceful drain was turned into an abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escalation {
    /// The drain deadline (`ARCANE_DRAIN_TIMEOUT`) passed.
    Deadline(Duration),
    /// A second signal arrived.
    SecondSignal(&'static str),
}

/// The result of annotating the Job after a schema mismatch.
pub type AnnotationResult = Result<(), Error>;

impl Outcome {
    fn new(exit_code: ExitCode, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            exit_code,
            reason,
            error_kind: None,
            message: message.into(),
            summary: RunSummary::default(),
            stream_id: None,
            stream_kind: None,
            mode: None,
            backfill_id: None,
        }
    }

    /// An outcome for an error before the stream ran (flags, settings, context, build).
    pub fn from_setup_error(err: &StreamError, classifier: Option<&Classifier>) -> Self {
        classify(
            Mode::Stream,
            Err(err),
            RunSummary::default(),
            Stop::default(),
            classifier,
            None,
        )
    }

    /// Attach the stream's identity.
    pub fn with_context(mut self, ctx: &StreamContext) -> Self {
        self.stream_id = Some(ctx.stream_id.clone());
        self.stream_kind = Some(ctx.stream_kind.clone());
        self.mode = Some(ctx.mode());
        self.backfill_id = ctx.backfill_id.clone();
        self
    }

    /// The process exit code.
    pub fn process_exit_code(&self) -> std::process::ExitCode {
        self.exit_code.into()
    }

    /// The outcome as a JSON object (the termination message's content).
    pub fn to_json(&self) -> Value {
        let s = &self.summary;
        json!({
            "exitCode": self.exit_code.code(),
            "status": self.exit_code,
            "reason": self.reason.as_str(),
            "errorKind": self.error_kind,
            "message": self.message,
            "streamId": self.stream_id,
            "streamKind": self.stream_kind,
            "mode": self.mode.map(Mode::as_str),
            "backfillId": self.backfill_id,
            "summary": {
                "rowsIncoming": s.rows_incoming,
                "rowsCommitted": s.rows_committed,
                "rowsUncommitted": s.rows_uncommitted,
                "rowsDeadLettered": s.rows_dead_lettered,
                "deadLetterReasons": s.dead_letter_reasons,
                "inputsSkipped": s.inputs_skipped,
                "skippedReasons": s.skipped_reasons,
                "bytesCommitted": s.bytes_committed,
                "filesCommitted": s.files_committed,
                "commits": s.commits,
                "resumedFrom": s.resumed_from,
                "lastCheckpoint": s.last_checkpoint,
            },
        })
    }

    /// One line of JSON, at most [`TERMINATION_MESSAGE_MAX`] bytes (the message and then the
    /// checkpoints are shortened if needed).
    pub fn termination_message(&self) -> String {
        let mut value = self.to_json();
        let line = value.to_string();
        if line.len() <= TERMINATION_MESSAGE_MAX {
            return line;
        }
        if let Some(summary) = value.get_mut("summary").and_then(Value::as_object_mut) {
            summary.remove("resumedFrom");
            summary.remove("lastCheckpoint");
            summary.remove("deadLetterReasons");
            summary.remove("skippedReasons");
        }
        let over = value
            .to_string()
            .len()
            .saturating_sub(TERMINATION_MESSAGE_MAX);
        if over > 0 {
            let keep = self.message.len().saturating_sub(over + 16);
            let mut cut = keep;
            while cut > 0 && !self.message.is_char_boundary(cut) {
                cut -= 1;
            }
            value["message"] = Value::String(format!("{}… (truncated)", &self.message[..cut]));
        }
        value.to_string()
    }

    /// Write the termination message to `path` (create or truncate).
    pub fn write_termination_message(&self, path: &Path) -> Result<(), Error> {
        let mut line = self.termination_message();
        line.push('\n');
        std::fs::write(path, line).map_err(|source| Error::TerminationLog {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// True when the run read no records (neither rows nor dead letters) and resumed from
/// nothing: the source was empty, which a user should be told.
fn read_nothing(s: &RunSummary) -> bool {
    s.rows_incoming == 0 && s.rows_dead_lettered == 0 && s.resumed_from.is_none()
}

/// Map how a run ended to an [`Outcome`] (the exit-code policy of the crate docs).
///
/// * `completion`: the stream's result.
/// * `summary`: what it did; `rows_uncommitted > 0` never gives `Success` (except after an
///   annotated schema mismatch).
/// * `stop`: signals received and how the drain ended.
/// * `classifier`: the user's override for errors.
/// * `annotation`: for a [`StreamError::SchemaMismatch`], the result of annotating the Job
///   (`None`: not attempted, which is FATAL).
pub fn classify(
    mode: Mode,
    completion: Result<Completion, &StreamError>,
    summary: RunSummary,
    stop: Stop,
    classifier: Option<&Classifier>,
    annotation: Option<&AnnotationResult>,
) -> Outcome {
    let mut outcome = match completion {
        Ok(Completion::Finished) => Outcome::new(
            ExitCode::Success,
            Reason::Finished,
            match (mode, read_nothing(&summary)) {
                _ if summary.backfill_already_completed => {
                    "this backfill had already completed (a rerun of its id); nothing was read or written"
                }
                (Mode::Backfill, false) => "backfill finished; everything read was committed",
                (Mode::Backfill, true) => {
                    "backfill finished; the source had no records, so nothing was written"
                }
                (Mode::Stream, false) => "source ended; everything read was committed",
                (Mode::Stream, true) => "source ended; it had no records, so nothing was written",
            },
        ),
        Ok(Completion::ShutDown) => match mode {
            Mode::Backfill => Outcome::new(
                ExitCode::Restart,
                Reason::StoppedDuringBackfill,
                format!(
                    "stopped by {} during a backfill; everything read was committed and a rerun with the same backfill id resumes it",
                    stop.signal.unwrap_or("a shutdown request")
                ),
            ),
            Mode::Stream => Outcome::new(
                ExitCode::Success,
                Reason::ShutDown,
                format!(
                    "stopped by {}; everything read was committed",
                    stop.signal.unwrap_or("a shutdown request")
                ),
            ),
        },
        Err(err) => classify_error(err, stop, classifier, annotation),
    };
    if outcome.exit_code == ExitCode::Success
        && summary.rows_uncommitted > 0
        && outcome.reason != Reason::SchemaMismatch
    {
        outcome.message = format!(
            "{}; but {} rows were accepted and not committed (not acknowledged upstream, so they are re-read on restart)",
            outcome.message, summary.rows_uncommitted
        );
        outcome.exit_code = ExitCode::Restart;
        outcome.reason = Reason::Uncommitted;
    }
    if outcome.exit_code == ExitCode::Success && summary.rows_dead_lettered > 0 {
        outcome.message = format!(
            "{} ({} records dead-lettered within the budget; first: {})",
            outcome.message,
            summary.rows_dead_lettered,
            summary
                .dead_letter_reasons
                .first()
                .map_or("-", String::as_str)
        );
    }
    if outcome.exit_code == ExitCode::Success && summary.inputs_skipped > 0 {
        outcome.message = format!(
            "{}; {} input(s) skipped as the settings say, not read (first: {})",
            outcome.message,
            summary.inputs_skipped,
            summary.skipped_reasons.first().map_or("-", String::as_str)
        );
    }
    outcome.summary = summary;
    outcome.mode = Some(mode);
    outcome
}

fn classify_error(
    err: &StreamError,
    stop: Stop,
    classifier: Option<&Classifier>,
    annotation: Option<&AnnotationResult>,
) -> Outcome {
    let mut outcome = if let Some(code) = classifier.and_then(|c| c(err)) {
        Outcome::new(code, Reason::Classified, err.report())
    } else {
        match err {
            StreamError::SchemaMismatch { .. } => match annotation {
                Some(Ok(())) => Outcome::new(
                    ExitCode::Success,
                    Reason::SchemaMismatch,
                    format!("{err}; the Job was annotated so the operator backfills the stream"),
                ),
                Some(Err(why)) => Outcome::new(
                    ExitCode::Fatal,
                    Reason::AnnotationFailed,
                    format!("{err}; {why}"),
                ),
                None => Outcome::new(
                    ExitCode::Fatal,
                    Reason::AnnotationFailed,
                    format!("{err}; the Job was not annotated, so the operator cannot backfill"),
                ),
            },
            StreamError::Aborted { uncommitted_rows } => match stop.escalation {
                Some(Escalation::Deadline(deadline)) => Outcome::new(
                    ExitCode::Restart,
                    Reason::DrainTimeout,
                    StreamError::DrainTimeout {
                        deadline,
                        uncommitted_rows: *uncommitted_rows,
                    }
                    .to_string(),
                ),
                Some(Escalation::SecondSignal(sig)) => Outcome::new(
                    ExitCode::Restart,
                    Reason::Aborted,
                    format!("second signal {sig}: {err}"),
                ),
                None => Outcome::new(ExitCode::Restart, Reason::Aborted, err.report()),
            },
            StreamError::DrainTimeout { .. } => {
                Outcome::new(ExitCode::Restart, Reason::DrainTimeout, err.report())
            }
            StreamError::Config { .. } | StreamError::MissingEnv { .. } => {
                Outcome::new(err.exit_code(), Reason::InvalidConfig, err.report())
            }
            StreamError::DeadLetterBudget { .. } => {
                Outcome::new(err.exit_code(), Reason::DeadLetterBudget, err.report())
            }
            StreamError::EmptyOverwrite { .. } => {
                Outcome::new(err.exit_code(), Reason::EmptyOverwrite, err.report())
            }
            _ => Outcome::new(err.exit_code(), Reason::Failed, err.report()),
        }
    };
    outcome.error_kind = Some(err.kind().to_string());
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn summary(committed: u64, uncommitted: u64) -> RunSummary {
        RunSummary {
            rows_incoming: committed + uncommitted,
            rows_committed: committed,
            rows_uncommitted: uncommitted,
            ..RunSummary::default()
        }
    }

    fn sigterm() -> Stop {
        Stop {
            signal: Some("SIGTERM"),
            escalation: None,
        }
    }

    fn mismatch() -> StreamError {
        StreamError::SchemaMismatch {
            location: "sink".into(),
            message: "column a: expected Int64, found Utf8".into(),
        }
    }

    #[test]
    fn graceful_shutdown_in_streaming_mode_with_everything_committed_is_success() {
        let o = classify(
            Mode::Stream,
            Ok(Completion::ShutDown),
            summary(100, 0),
            sigterm(),
            None,
            None,
        );
        assert_eq!(o.exit_code, ExitCode::Success);
        assert_eq!(o.reason, Reason::ShutDown);
        assert!(o.message.contains("SIGTERM"), "{}", o.message);
    }

    #[test]
    fn shutdown_during_backfill_is_restart() {
        let o = classify(
            Mode::Backfill,
            Ok(Completion::ShutDown),
            summary(100, 0),
            sigterm(),
            None,
            None,
        );
        assert_eq!(o.exit_code, ExitCode::Restart);
        assert_eq!(o.reason, Reason::StoppedDuringBackfill);
    }

    #[test]
    fn finished_backfill_is_success() {
        let o = classify(
            Mode::Backfill,
            Ok(Completion::Finished),
            summary(100, 0),
            Stop::default(),
            None,
            None,
        );
        assert_eq!(o.exit_code, ExitCode::Success);
        assert_eq!(o.reason, Reason::Finished);
    }

    #[test]
    fn aborted_and_drain_timeout_are_restart() {
        let err = StreamError::Aborted {
            uncommitted_rows: 7,
        };
        let stop = Stop {
            signal: Some("SIGTERM"),
            escalation: Some(Escalation::Deadline(Duration::from_secs(30))),
        };
        let o = classify(Mode::Stream, Err(&err), summary(10, 7), stop, None, None);
        assert_eq!(o.exit_code, ExitCode::Restart);
        assert_eq!(o.reason, Reason::DrainTimeout);
        assert!(o.message.contains("drain deadline of 30s"), "{}", o.message);
        assert!(o.message.contains("7 rows"), "{}", o.message);

        let stop = Stop {
            signal: Some("SIGTERM"),
            escalation: Some(Escalation::SecondSignal("SIGINT")),
        };
        let o = classify(Mode::Stream, Err(&err), summary(10, 7), stop, None, None);
        assert_eq!(
            (o.exit_code, o.reason),
            (ExitCode::Restart, Reason::Aborted)
        );

        let err = StreamError::DrainTimeout {
            deadline: Duration::from_secs(1),
            uncommitted_rows: 3,
        };
        let o = classify(
            Mode::Stream,
            Err(&err),
            summary(0, 3),
            sigterm(),
            None,
            None,
        );
        assert_eq!(o.exit_code, ExitCode::Restart);
        assert_eq!(o.error_kind.as_deref(), Some("DrainTimeout"));
    }

    #[test]
    fn uncommitted_rows_never_exit_zero() {
        for (mode, completion) in [
            (Mode::Stream, Completion::ShutDown),
            (Mode::Stream, Completion::Finished),
            (Mode::Backfill, Completion::Finished),
        ] {
            let o = classify(mode, Ok(completion), summary(10, 1), sigterm(), None, None);
            assert_eq!(o.exit_code, ExitCode::Restart, "{mode:?} {completion:?}");
            assert_eq!(o.reason, Reason::Uncommitted);
        }
        // Not even when a user classifier says success.
        let always_ok: Classifier = Arc::new(|_| Some(ExitCode::Success));
        let err = StreamError::fatal("boom");
        let o = classify(
            Mode::Stream,
            Err(&err),
            summary(10, 5),
            Stop::default(),
            Some(&always_ok),
            None,
        );
        assert_eq!(o.exit_code, ExitCode::Restart);
    }

    #[test]
    fn schema_mismatch_is_success_only_after_the_job_was_annotated() {
        let err = mismatch();
        let ok: AnnotationResult = Ok(());
        let o = classify(
            Mode::Stream,
            Err(&err),
            summary(10, 5),
            Stop::default(),
            None,
            Some(&ok),
        );
        assert_eq!(o.exit_code, ExitCode::Success);
        assert_eq!(o.reason, Reason::SchemaMismatch);
        assert_eq!(o.error_kind.as_deref(), Some("SchemaMismatch"));

        let refused: AnnotationResult = Err(Error::Annotation {
            namespace: "ns".into(),
            job: "job".into(),
            key: "k".into(),
            status: Some(403),
            reason: "forbidden".into(),
        });
        let o = classify(
            Mode::Stream,
            Err(&err),
            summary(10, 5),
            Stop::default(),
            None,
            Some(&refused),
        );
        assert_eq!(o.exit_code, ExitCode::Fatal);
        assert_eq!(o.reason, Reason::AnnotationFailed);
        assert!(o.message.contains("forbidden"), "{}", o.message);

        let o = classify(
            Mode::Stream,
            Err(&err),
            summary(10, 5),
            Stop::default(),
            None,
            None,
        );
        assert_eq!(o.exit_code, ExitCode::Fatal);
    }

    #[test]
    fn errors_follow_the_core_mapping() {
        let cases = [
            (
                StreamError::SchemaInconsistent {
                    location: "t".into(),
                    message: "m".into(),
                },
                ExitCode::Restart,
                Reason::Failed,
            ),
            (
                StreamError::source_transient("api", "retries exhausted", "timeout"),
                ExitCode::Restart,
                Reason::Failed,
            ),
            (
                StreamError::config("spec.sink.url", "missing"),
                ExitCode::Fatal,
                Reason::InvalidConfig,
            ),
            (
                StreamError::MissingSecret {
                    name: "DB_PASSWORD".into(),
                    message: "not set".into(),
                },
                ExitCode::Fatal,
                Reason::Failed,
            ),
            (StreamError::fatal("bug"), ExitCode::Fatal, Reason::Failed),
        ];
        for (err, code, reason) in cases {
            let o = classify(
                Mode::Stream,
                Err(&err),
                summary(0, 0),
                Stop::default(),
                None,
                None,
            );
            assert_eq!((o.exit_code, o.reason), (code, reason), "{err}");
            assert_eq!(o.message, err.report());
        }
    }

    #[test]
    fn user_classifier_overrides_the_mapping() {
        let classifier: Classifier = Arc::new(|e| match e {
            StreamError::Source { source_name, .. } if source_name == "api" => {
                Some(ExitCode::Restart)
            }
            StreamError::SchemaMismatch { .. } => Some(ExitCode::Restart),
            _ => None,
        });
        let err = StreamError::source_permanent("api", "HTTP 404");
        let o = classify(
            Mode::Stream,
            Err(&err),
            summary(0, 0),
            Stop::default(),
            Some(&classifier),
            None,
        );
        assert_eq!(
            (o.exit_code, o.reason),
            (ExitCode::Restart, Reason::Classified)
        );
        let o = classify(
            Mode::Stream,
            Err(&mismatch()),
            summary(0, 0),
            Stop::default(),
            Some(&classifier),
            None,
        );
        assert_eq!(o.exit_code, ExitCode::Restart);
        // Errors it does not classify keep the default mapping.
        let err = StreamError::source_permanent("db", "bad password");
        let o = classify(
            Mode::Stream,
            Err(&err),
            summary(0, 0),
            Stop::default(),
            Some(&classifier),
            None,
        );
        assert_eq!((o.exit_code, o.reason), (ExitCode::Fatal, Reason::Failed));
    }

    #[test]
    fn termination_message_is_one_line_of_json_within_the_kubernetes_limit() {
        let mut o = classify(
            Mode::Backfill,
            Ok(Completion::Finished),
            summary(42, 0),
            Stop::default(),
            None,
            None,
        )
        .with_context(&StreamContext::new("orders", "Generator", json!({})).with_backfill("b1"));
        let line = o.termination_message();
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["exitCode"], 0);
        assert_eq!(v["status"], "SUCCESS");
        assert_eq!(v["reason"], "finished");
        assert_eq!(v["streamId"], "orders");
        assert_eq!(v["mode"], "backfill");
        assert_eq!(v["backfillId"], "b1");
        assert_eq!(v["summary"]["rowsCommitted"], 42);

        o.message = "é".repeat(5000);
        let line = o.termination_message();
        assert!(line.len() <= TERMINATION_MESSAGE_MAX, "{}", line.len());
        let v: Value = serde_json::from_str(&line).unwrap();
        assert!(v["message"].as_str().unwrap().ends_with("(truncated)"));
    }

    #[test]
    fn termination_message_is_written_and_unwritable_paths_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let o =
            Outcome::from_setup_error(&StreamError::config("ARCANE_DRAIN_TIMEOUT", "bad"), None);
        assert_eq!(o.exit_code, ExitCode::Fatal);
        let path = dir.path().join("termination-log");
        o.write_termination_message(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["errorKind"], "Config");
        assert_eq!(v["message"], "ARCANE_DRAIN_TIMEOUT: bad");
        let err = o
            .write_termination_message(&dir.path().join("missing/dir/log"))
            .unwrap_err();
        assert!(err.to_string().contains("ARCANE_TERMINATION_LOG"), "{err}");
    }
}
