//! [`Runner`]: context → logging → metrics → build → run → drain → outcome.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use arcane_core::{
    Completion, DynStreamGraphBuilder, Error as StreamError, ExitCode, KillSwitch, RunReport,
    RunSummary, StreamContext, StreamGraph,
};
use clap::{CommandFactory, FromArgMatches, Parser};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::config::{
    DEFAULT_TERMINATION_LOG, ENV_TERMINATION_LOG, RunArgs, SCHEMA_MISMATCH_ANNOTATION_VALUE,
    Settings,
};
use crate::outcome::{Classifier, Escalation, Outcome, Stop, classify};
use crate::registry::Registry;
use crate::telemetry::{self, Health};
use crate::{kube_job, logging, progress};

/// After an abort, how long to wait for the stream's task before giving up on its report.
const ABORT_GRACE: Duration = Duration::from_secs(5);

/// Runs stream graphs as a Kubernetes Job process. See the crate docs.
#[derive(Default)]
pub struct Runner {
    registry: Registry,
    classifier: Option<Classifier>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("registry", &self.registry)
            .field("classifier", &self.classifier.is_some())
            .finish()
    }
}

/// The command line of a single-kind binary: the `run` flags at the top level.
#[derive(Debug, Parser)]
#[command(
    about = "Run an Arcane stream (a Kubernetes Job process).",
    after_help = crate::EXIT_CODES_HELP
)]
struct SingleCli {
    #[command(flatten)]
    run: RunArgs,
}

impl Runner {
    /// A runner hosting no kinds yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Host `builder` under `kind` (matched exactly or by snake_case against
    /// `STREAMCONTEXT__STREAM_KIND` / `--kind`).
    pub fn register(mut self, kind: &str, builder: impl DynStreamGraphBuilder) -> Self {
        self.registry.register(kind, builder);
        self
    }

    /// Use `builder` for any kind (what [`crate::run`] does); named kinds still win.
    pub fn with_default(mut self, builder: impl DynStreamGraphBuilder) -> Self {
        self.registry.set_default(builder);
        self
    }

    /// Let `classifier` choose the exit code of stream errors: `Some(code)` overrides the
    /// runner's mapping, `None` keeps it. A `Success` is still downgraded to `Restart` when rows
    /// were accepted but not committed.
    pub fn classify_errors(
        mut self,
        classifier: impl Fn(&StreamError) -> Option<ExitCode> + Send + Sync + 'static,
    ) -> Self {
        self.classifier = Some(Arc::new(classifier));
        self
    }

    /// The hosted kinds.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Parse `std::env::args` (the `run` flags at the top level) and run. `--help` prints the
    /// flags, their environment variables and the exit codes; invalid flags exit 1 (FATAL).
    pub fn run(self) -> std::process::ExitCode {
        let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let name = argv
            .first()
            .and_then(|a| std::path::Path::new(a).file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("arcane-stream")
            .to_string();
        // Leaked once per process: clap's `Str` takes `&'static str` without its `string` feature.
        let matches = SingleCli::command()
            .name(clap::builder::Str::from(name.leak() as &'static str))
            .try_get_matches_from(argv);
        match matches.and_then(|m| SingleCli::from_arg_matches(&m)) {
            Ok(cli) => self.run_with_args(cli.run),
            Err(e) => exit_on_cli_error(e),
        }
    }

    /// Run with parsed flags (for binaries with their own command line) and return the exit
    /// code.
    pub fn run_with_args(self, args: RunArgs) -> std::process::ExitCode {
        self.execute(args).process_exit_code()
    }

    /// Run with parsed flags on a new Tokio runtime and return the typed outcome (already logged
    /// and written to the termination message file).
    pub fn execute(self, args: RunArgs) -> Outcome {
        match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("arcane")
            .build()
        {
            Ok(rt) => {
                let outcome = rt.block_on(self.execute_async(args));
                rt.shutdown_timeout(Duration::from_secs(1));
                outcome
            }
            Err(e) => {
                let err = StreamError::fatal(format!("cannot start the Tokio runtime: {e}"));
                let outcome = Outcome::from_setup_error(&err, self.classifier.as_ref());
                report_without_logging(&outcome, None);
                outcome
            }
        }
    }

    /// Like [`Runner::execute`], on the current Tokio runtime (which must have I/O and time
    /// enabled). Installs the global logger and metrics recorder unless already installed.
    pub async fn execute_async(self, args: RunArgs) -> Outcome {
        let started = std::time::Instant::now();
        let default_kind = self.registry.has_default().then(binary_name);
        let settings = args.settings();
        let resolved = args.context(default_kind.as_deref());

        // Logging first, with whatever identity is known, so that every error is logged.
        let (format, filter) = match &settings {
            Ok(s) => (s.log_format, s.log_filter.clone()),
            Err(_) => (crate::config::LogFormat::Json, "info".into()),
        };
        let fields = match &resolved {
            Ok(r) => logging::context_fields(&r.context),
            Err(_) => Default::default(),
        };
        let log_err = logging::install(format, &filter, fields).err();
        logging::log_panics();

        let termination_log = match &settings {
            Ok(s) => s.termination_log.clone(),
            Err(_) => args.termination_log_path(),
        };
        let setup = settings.and_then(|s| resolved.map(|r| (s, r)));
        let (settings, resolved) = match (setup, log_err) {
            (Ok(ok), None) => ok,
            (Err(e), _) | (Ok(_), Some(e)) => {
                let outcome = Outcome::from_setup_error(&e, self.classifier.as_ref());
                return finish(outcome, termination_log.as_deref(), started, false);
            }
        };
        for note in &resolved.notes {
            tracing::warn!("{note}");
        }
        let ctx = resolved.context;
        tracing::info!(
            mode = ctx.mode().as_str(),
            drain_timeout = ?settings.drain_timeout,
            metrics_addr = settings.metrics_addr.as_deref().unwrap_or("off"),
            dogstatsd_addr = settings.dogstatsd_addr.as_deref().unwrap_or("off"),
            "arcane runner starting"
        );
        let live = progress::live_line(settings.log_format == crate::config::LogFormat::Text);
        let outcome = self
            .run_stream(&settings, &ctx, live)
            .await
            .with_context(&ctx);
        finish(outcome, settings.termination_log.as_deref(), started, live)
    }

    async fn run_stream(&self, settings: &Settings, ctx: &StreamContext, live: bool) -> Outcome {
        let setup_error = |e: StreamError| {
            classify(
                ctx.mode(),
                Err(&e),
                RunSummary::default(),
                Stop::default(),
                self.classifier.as_ref(),
                None,
            )
        };

        let health = Arc::new(Health::default());
        // Both live until the run ends: dropping them stops the exporters and the endpoint.
        let _telemetry = match start_endpoint(settings, health.clone()).await {
            Ok(telemetry) => telemetry,
            Err(e) => return setup_error(e),
        };
        let mut signals = match Signals::new() {
            Ok(s) => s,
            Err(e) => {
                return setup_error(StreamError::fatal(format!(
                    "cannot install signal handlers: {e}"
                )));
            }
        };

        // A pod of an Indexed Job whose index the spec's backfillShards does not cover (or a
        // sharded backfill without an index) would read what another pod reads: refused for
        // every kind, before anything is built.
        if let Err(e) = ctx.shard() {
            tracing::error!(error = %e.report(), "cannot tell which shard of the backfill this pod is");
            return setup_error(e);
        }

        // Build, unless a signal arrives first.
        let builder = match self.registry.resolve(&ctx.stream_kind) {
            Ok(b) => b,
            Err(e) => return setup_error(e),
        };
        let graph = {
            let build = pin!(build_graph(builder, ctx));
            tokio::select! {
                graph = build => graph,
                sig = signals.recv() => {
                    tracing::info!(signal = sig, "stopped before the stream started; nothing was read");
                    let stop = Stop { signal: Some(sig), escalation: None };
                    return classify(ctx.mode(), Ok(Completion::ShutDown), RunSummary::default(), stop, self.classifier.as_ref(), None);
                }
            }
        };
        let graph = match graph {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e.report(), kind = e.kind(), "cannot build the stream graph");
                return setup_error(e);
            }
        };

        // Run and drain.
        let running = graph.run(ctx);
        health.set_ready(true);
        let reporter =
            progress::Reporter::start(running.progress.clone(), live, settings.progress_interval);
        let (report, stop) = drain(
            running.handle,
            running.kill_switch,
            &mut signals,
            settings,
            &health,
        )
        .await;
        drop(reporter);
        health.set_ready(false);
        self.conclude(settings, ctx, report, stop).await
    }

    /// Classify how the run ended; a schema mismatch (not claimed by the classifier) first
    /// annotates the Job so the operator backfills the stream.
    async fn conclude(
        &self,
        settings: &Settings,
        ctx: &StreamContext,
        report: RunReport,
        stop: Stop,
    ) -> Outcome {
        let RunReport {
            mut summary,
            outcome,
        } = report;
        let skipped = arcane_core::skipped::take();
        summary.inputs_skipped = skipped.count;
        summary.skipped_reasons = skipped.reasons;
        if let Err(e) = &outcome
            && e.is_schema_mismatch()
            && self.classifier.as_ref().and_then(|c| c(e)).is_none()
        {
            tracing::error!(error = %e.report(), "schema mismatch: annotating the Job so the operator backfills the stream");
            let annotation =
                kube_job::annotate_job(&settings.kube, SCHEMA_MISMATCH_ANNOTATION_VALUE).await;
            match &annotation {
                Ok(()) => tracing::info!(
                    annotation = %settings.kube.annotation_key,
                    value = SCHEMA_MISMATCH_ANNOTATION_VALUE,
                    namespace = settings.kube.namespace.as_deref().unwrap_or(""),
                    job = settings.kube.job_name.as_deref().unwrap_or(""),
                    "Job annotated"
                ),
                Err(why) => {
                    tracing::error!(error = %why, "cannot annotate the Job; exiting FATAL so the failure is visible")
                }
            }
            return classify(
                ctx.mode(),
                Err(e),
                summary,
                stop,
                self.classifier.as_ref(),
                Some(&annotation),
            );
        }
        classify(
            ctx.mode(),
            outcome.as_ref().map(|c| *c),
            summary,
            stop,
            self.classifier.as_ref(),
            None,
        )
    }
}

/// Install the metrics exporters and serve `/metrics`, `/healthz` and `/readyz` when
/// configured; a port already taken is a WARN unless the settings require the endpoint.
async fn start_endpoint(
    settings: &Settings,
    health: Arc<Health>,
) -> Result<(telemetry::Exporters, Option<telemetry::Endpoint>), StreamError> {
    let exporters = telemetry::install_metrics(
        settings.metrics_addr.is_some(),
        settings.dogstatsd_addr.as_deref(),
    )?;
    let endpoint = match &settings.metrics_addr {
        None => None,
        Some(addr) => match telemetry::serve(addr, exporters.prometheus.clone(), health).await {
            Ok(endpoint) => {
                tracing::info!(addr = %endpoint.local_addr, "metrics endpoint listening (/metrics, /healthz, /readyz)");
                Some(endpoint)
            }
            Err(e) if !settings.metrics_required => {
                tracing::warn!(error = %e.report(), "metrics endpoint not started; the run goes on without /metrics, /healthz and /readyz (set ARCANE_METRICS_ADDR to a free HOST:PORT, or off)");
                None
            }
            Err(e) => return Err(e),
        },
    };
    Ok((exporters, endpoint))
}

/// Wait for the stream to end; the first signal drains (flush and commit what was read) within
/// the drain timeout, a second signal or the deadline aborts.
async fn drain(
    mut handle: tokio::task::JoinHandle<RunReport>,
    kill_switch: KillSwitch,
    signals: &mut Signals,
    settings: &Settings,
    health: &Health,
) -> (RunReport, Stop) {
    let mut stop = Stop::default();
    let mut deadline = pin!(tokio::time::sleep(Duration::MAX));
    let mut deadline_armed = false;
    let mut abort_grace = pin!(tokio::time::sleep(Duration::MAX));
    let mut aborting = false;
    let report: RunReport = loop {
        tokio::select! {
            joined = &mut handle => break match joined {
                Ok(report) => report,
                Err(e) => RunReport {
                    summary: RunSummary::default(),
                    outcome: Err(StreamError::fatal(format!("stream task failed: {e}"))),
                },
            },
            sig = signals.recv() => {
                if stop.signal.is_none() {
                    stop.signal = Some(sig);
                    health.set_ready(false);
                    tracing::info!(signal = sig, drain_timeout = ?settings.drain_timeout, "shutting down: flushing and committing what was read");
                    kill_switch.shutdown();
                    deadline.as_mut().reset(tokio::time::Instant::now() + settings.drain_timeout);
                    deadline_armed = true;
                } else if !aborting {
                    tracing::warn!(signal = sig, "second signal: aborting; uncommitted rows are not acknowledged and will be re-read");
                    stop.escalation = Some(Escalation::SecondSignal(sig));
                    kill_switch.abort();
                    aborting = true;
                    deadline_armed = false;
                    abort_grace.as_mut().reset(tokio::time::Instant::now() + ABORT_GRACE);
                }
            }
            () = &mut deadline, if deadline_armed => {
                tracing::warn!(drain_timeout = ?settings.drain_timeout, "drain deadline passed: aborting; uncommitted rows are not acknowledged and will be re-read");
                stop.escalation = Some(Escalation::Deadline(settings.drain_timeout));
                kill_switch.abort();
                aborting = true;
                deadline_armed = false;
                abort_grace.as_mut().reset(tokio::time::Instant::now() + ABORT_GRACE);
            }
            () = &mut abort_grace, if aborting => {
                handle.abort();
                break RunReport {
                    summary: RunSummary::default(),
                    outcome: Err(StreamError::fatal(format!(
                        "the stream did not stop within {ABORT_GRACE:?} after it was aborted; nothing uncommitted was acknowledged"
                    ))),
                };
            }
        }
    };
    (report, stop)
}

/// Build the graph; a panicking builder becomes a FATAL outcome.
fn build_graph<'a>(
    builder: &'a dyn DynStreamGraphBuilder,
    ctx: &'a StreamContext,
) -> impl Future<Output = Result<StreamGraph, StreamError>> + 'a {
    let fut = builder.build_dyn(ctx);
    async move {
        use futures::FutureExt;
        match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(StreamError::fatal(format!(
                    "the stream graph builder panicked: {what}"
                )))
            }
        }
    }
}

/// SIGTERM and SIGINT.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next signal's name.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a signal not yet received stays pending.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

fn binary_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "stream".into())
}

/// Log the outcome and what was (not) committed, write the termination message, print the
/// summary line on a terminal, return the outcome.
fn finish(
    outcome: Outcome,
    termination_log: Option<&std::path::Path>,
    started: std::time::Instant,
    live: bool,
) -> Outcome {
    let elapsed = started.elapsed();
    let s = &outcome.summary;
    let checkpoint = s
        .last_checkpoint
        .as_ref()
        .and_then(|c| serde_json::to_string(c).ok())
        .unwrap_or_default();
    if outcome.exit_code == ExitCode::Success {
        tracing::info!(
            exit_code = outcome.exit_code.code(),
            status = %outcome.exit_code,
            reason = outcome.reason.as_str(),
            rows_committed = s.rows_committed,
            rows_dead_lettered = s.rows_dead_lettered,
            files_committed = s.files_committed,
            bytes_committed = s.bytes_committed,
            commits = s.commits,
            elapsed_secs = elapsed.as_secs_f64(),
            last_checkpoint = %checkpoint,
            "{}", outcome.message
        );
    } else {
        tracing::error!(
            exit_code = outcome.exit_code.code(),
            status = %outcome.exit_code,
            reason = outcome.reason.as_str(),
            error_kind = outcome.error_kind.as_deref().unwrap_or(""),
            rows_committed = s.rows_committed,
            rows_uncommitted = s.rows_uncommitted,
            rows_dead_lettered = s.rows_dead_lettered,
            files_committed = s.files_committed,
            bytes_committed = s.bytes_committed,
            commits = s.commits,
            elapsed_secs = elapsed.as_secs_f64(),
            last_checkpoint = %checkpoint,
            "{}", outcome.message
        );
    }
    if s.rows_uncommitted > 0 {
        tracing::warn!(
            rows_uncommitted = s.rows_uncommitted,
            "rows read but not committed were not acknowledged upstream; the next run re-reads them"
        );
    }
    if s.rows_dead_lettered > 0 || !s.dead_letter_reasons.is_empty() {
        tracing::warn!(
            rows_dead_lettered = s.rows_dead_lettered,
            first_reasons = %s.dead_letter_reasons.join("; "),
            "records were dead-lettered: they are not in the output but kept with their reasons in the dead letters"
        );
    }
    if outcome.exit_code == ExitCode::Success
        && s.rows_incoming == 0
        && s.rows_dead_lettered == 0
        && s.resumed_from.is_none()
        && !s.backfill_already_completed
    {
        tracing::warn!("the source had no records; nothing was written");
    }
    if let Some(path) = termination_log
        && let Err(e) = outcome.write_termination_message(path)
    {
        tracing::warn!(error = %e, "termination message not written");
    }
    progress::print_summary(&outcome, elapsed, live);
    outcome
}

/// For failures before logging exists (flags, runtime): print to stderr and write the
/// termination message to `ARCANE_TERMINATION_LOG` (or, in a pod, the default) if possible.
#[allow(clippy::print_stderr)]
fn report_without_logging(outcome: &Outcome, path: Option<std::path::PathBuf>) {
    eprintln!("{}", outcome.termination_message());
    let path = path.or_else(|| match std::env::var(ENV_TERMINATION_LOG) {
        Ok(v) if !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case(crate::config::AUTO) => {
            Some(v.into())
        }
        _ => crate::config::in_pod().then(|| DEFAULT_TERMINATION_LOG.into()),
    });
    if let Some(path) = path {
        let _ = outcome.write_termination_message(&path);
    }
}

/// Print a command-line error and map it to an exit code: `--help`/`--version` exit 0, any
/// other command-line error is a FATAL (1) configuration error (clap's own code 2 would mean
/// RESTART to the Job).
pub fn exit_on_cli_error(e: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            std::process::ExitCode::SUCCESS
        }
        _ => {
            let _ = e.print();
            let err = StreamError::config("command line", e.kind().to_string());
            let outcome = Outcome::from_setup_error(&err, None);
            let path = std::env::var(ENV_TERMINATION_LOG)
                .ok()
                .map(std::path::PathBuf::from);
            if let Some(path) = path {
                let _ = outcome.write_termination_message(&path);
            }
            outcome.process_exit_code()
        }
    }
}
