//! [`StreamGraph`]: *source → grouped batches → sink*, its builder traits and its running form.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use futures::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::context::StreamContext;
use crate::dead_letter::{DeadLetterBudget, DeadLetterSink, DeadLetterTally, LogDeadLetterSink};
use crate::error::{Error, Result};
use crate::grouped_within::{GroupLimits, GroupedWithin};
use crate::kill_switch::KillSwitch;
use crate::metrics::{self as m, MetricLabels};
use crate::position::{Checkpoint, Group, PositionedBatch};
use crate::sink::{Commit, Sink, SinkContext};
use crate::source::{Source, SourceStart};

/// A transformation of batches.
pub type MapFn = Arc<dyn Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync + 'static>;

/// Builds the graph of one stream kind from its typed spec.
///
/// ```
/// use arcane_core::{StreamContext, StreamGraph, StreamGraphBuilder, Result};
/// use arcane_core::testing::{GeneratorSource, MemorySink};
///
/// #[derive(serde::Deserialize)]
/// #[serde(rename_all = "camelCase")]
/// struct Spec { rows: u64 }
///
/// struct Synthetic;
///
/// #[async_trait::async_trait]
/// impl StreamGraphBuilder for Synthetic {
///     type Spec = Spec;
///     async fn build(&self, _ctx: &StreamContext, spec: Spec) -> Result<StreamGraph> {
///         Ok(StreamGraph::from_source(GeneratorSource::new(spec.rows, 100))
///             .to_sink(MemorySink::new()))
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait StreamGraphBuilder: Send + Sync + 'static {
    /// The typed spec (the stream resource's `.spec`, camelCase JSON).
    type Spec: serde::de::DeserializeOwned + Send;

    /// Build the graph.
    async fn build(&self, ctx: &StreamContext, spec: Self::Spec) -> Result<StreamGraph>;

    /// A one-line description of the kind, for listings.
    fn description(&self) -> &str {
        ""
    }

    /// The JSON Schema of [`Self::Spec`], when the builder can generate it.
    fn spec_schema(&self) -> Option<Value> {
        None
    }
}

/// The object-safe form of [`StreamGraphBuilder`], for binaries hosting several stream kinds.
#[async_trait::async_trait]
pub trait DynStreamGraphBuilder: Send + Sync + 'static {
    /// Parse the context's spec and build the graph.
    async fn build_dyn(&self, ctx: &StreamContext) -> Result<StreamGraph>;
    /// See [`StreamGraphBuilder::description`].
    fn description(&self) -> &str;
    /// See [`StreamGraphBuilder::spec_schema`].
    fn spec_schema(&self) -> Option<Value>;
}

#[async_trait::async_trait]
impl<B: StreamGraphBuilder> DynStreamGraphBuilder for B {
    async fn build_dyn(&self, ctx: &StreamContext) -> Result<StreamGraph> {
        let spec = ctx.spec::<B::Spec>()?;
        self.build(ctx, spec).await
    }
    fn description(&self) -> &str {
        StreamGraphBuilder::description(self)
    }
    fn spec_schema(&self) -> Option<Value> {
        StreamGraphBuilder::spec_schema(self)
    }
}

/// The first half of a graph: a source and its stages, waiting for a sink.
#[must_use = "a flow does nothing until it is connected to a sink and run"]
pub struct Flow {
    source: Box<dyn Source>,
    before_group: Vec<MapFn>,
    after_group: Vec<MapFn>,
    limits: Option<GroupLimits>,
}

impl fmt::Debug for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flow")
            .field("source", &self.source)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Flow {
    /// Group the source's batches; see [`GroupedWithin`].
    /// Without it, each source batch is one group.
    pub fn grouped_within(mut self, limits: GroupLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Transform batches. Before `grouped_within` it runs per source batch and must keep the
    /// row count (positions count rows); after it, it runs per group and may filter.
    pub fn map<F>(mut self, f: F) -> Self
    where
        F: Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync + 'static,
    {
        let f: MapFn = Arc::new(f);
        if self.limits.is_some() {
            self.after_group.push(f);
        } else {
            self.before_group.push(f);
        }
        self
    }

    /// Connect the sink, completing the graph.
    pub fn to_sink(self, sink: impl Sink) -> StreamGraph {
        StreamGraph {
            flow: self,
            sink: Box::new(sink),
            dead_letter_sink: Box::new(LogDeadLetterSink),
            dead_letter_budget: DeadLetterBudget::default(),
            commit_tick: DEFAULT_COMMIT_TICK,
            tags: BTreeMap::new(),
        }
    }
}

/// How often the sink is asked for due commits (age-based file rolls) when no data arrives.
pub const DEFAULT_COMMIT_TICK: Duration = Duration::from_secs(1);

/// A complete stream graph: *source → grouped batches → sink*.
#[must_use = "a graph does nothing until it is run"]
pub struct StreamGraph {
    flow: Flow,
    sink: Box<dyn Sink>,
    dead_letter_sink: Box<dyn DeadLetterSink>,
    dead_letter_budget: DeadLetterBudget,
    commit_tick: Duration,
    tags: BTreeMap<String, String>,
}

impl fmt::Debug for StreamGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamGraph")
            .field("flow", &self.flow)
            .field("sink", &self.sink)
            .finish_non_exhaustive()
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Checkpoint the run resumed from (recovered by the sink).
    pub resumed_from: Option<Checkpoint>,
    /// Rows received from the source.
    pub rows_incoming: u64,
    /// Rows received but not (yet) committed; always 0 after a clean stop.
    pub rows_uncommitted: u64,
    /// Rows committed by the sink (after maps).
    pub rows_committed: u64,
    /// Encoded bytes committed.
    pub bytes_committed: u64,
    /// Files committed.
    pub files_committed: u64,
    /// Dead letters committed (records read that are not in the output, kept with a reason).
    pub rows_dead_lettered: u64,
    /// The first reasons records were dead-lettered (`origin locator: reason`).
    pub dead_letter_reasons: Vec<String>,
    /// Inputs the source left out on purpose, as its settings say (see
    /// [`skipped`](crate::skipped)); filled in by the runner when the run ends.
    pub inputs_skipped: u64,
    /// The first reasons inputs were skipped.
    pub skipped_reasons: Vec<String>,
    /// The run was a rerun of a backfill that had already completed: nothing was read.
    pub backfill_already_completed: bool,
    /// Commits made.
    pub commits: u64,
    /// The last committed checkpoint, acked to the source.
    pub last_checkpoint: Option<Checkpoint>,
}

/// How a run ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The source ended (backfill done) and everything was committed.
    Finished,
    /// Graceful shutdown: the tail was flushed and everything was committed.
    ShutDown,
}

/// The result of a run: what it did and how it ended.
#[derive(Debug)]
pub struct RunReport {
    /// What the run did (also filled when it failed).
    pub summary: RunSummary,
    /// How it ended.
    pub outcome: Result<Completion>,
}

/// A materialized graph: the Rust form of Arcane's `(UniqueKillSwitch, Task)`.
#[derive(Debug)]
pub struct RunningStream {
    /// Stops the stream.
    pub kill_switch: KillSwitch,
    /// Resolves to the run's report.
    pub handle: JoinHandle<RunReport>,
    /// What the run has done so far (for progress displays).
    pub progress: Progress,
}

/// A live view of a running stream's [`RunSummary`]; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<RunSummary>>);

impl Progress {
    /// The summary as of now.
    pub fn snapshot(&self) -> RunSummary {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl RunningStream {
    /// Wait for the run to end. A panic in the stream's task is reported as [`Error::Fatal`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the handle is consumed; use `&mut self.handle` in `select!`.
    pub async fn join(self) -> RunReport {
        match self.handle.await {
            Ok(report) => report,
            Err(e) => RunReport {
                summary: RunSummary::default(),
                outcome: Err(Error::fatal(format!("stream task failed: {e}"))),
            },
        }
    }
}

impl StreamGraph {
    /// Start a graph from a source.
    pub fn from_source(source: impl Source) -> Flow {
        Flow {
            source: Box::new(source),
            before_group: Vec::new(),
            after_group: Vec::new(),
            limits: None,
        }
    }

    /// Where dead letters go when the sink does not [store them](Sink::stores_dead_letters)
    /// itself (default: [`LogDeadLetterSink`], a `warn` log line each).
    pub fn dead_letter_to(mut self, sink: impl DeadLetterSink) -> Self {
        self.dead_letter_sink = Box::new(sink);
        self
    }

    /// The run's dead-letter budget (default [`DeadLetterBudget::default`]: at most 1 % of the
    /// records read); exceeding it fails the run with
    /// [`Error::DeadLetterBudget`] without committing the group that crossed it.
    pub fn with_dead_letter_budget(mut self, budget: DeadLetterBudget) -> Self {
        self.dead_letter_budget = budget;
        self
    }

    /// How often the sink's [`Sink::tick`] hook is called.
    pub fn with_commit_tick(mut self, every: Duration) -> Self {
        self.commit_tick = every;
        self
    }

    /// Add metric tags (e.g. a spec's `tags`) to every metric of the stream, after the
    /// context's own (`kind`, `mode`, `stream_id`, `backfill_id`), which they cannot replace.
    pub fn with_tags<K: Into<String>, V: Into<String>>(
        mut self,
        tags: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.tags
            .extend(tags.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Spawn the graph on the current Tokio runtime.
    pub fn run(self, ctx: &StreamContext) -> RunningStream {
        let kill_switch = KillSwitch::new();
        let progress = Progress::default();
        let handle =
            tokio::spawn(self.run_inner(ctx.clone(), kill_switch.clone(), progress.clone()));
        RunningStream {
            kill_switch,
            handle,
            progress,
        }
    }

    /// Run the graph to completion on the current task, controlled by `kill_switch`.
    pub async fn run_with(self, ctx: StreamContext, kill_switch: KillSwitch) -> RunReport {
        self.run_inner(ctx, kill_switch, Progress::default()).await
    }

    async fn run_inner(
        mut self,
        ctx: StreamContext,
        kill_switch: KillSwitch,
        progress: Progress,
    ) -> RunReport {
        let state = progress.0;
        let mut labels = MetricLabels::for_stream(&ctx);
        for (k, v) in std::mem::take(&mut self.tags) {
            if !labels.0.iter().any(|l| l.key() == k) {
                labels.0.push(metrics::Label::new(k, v));
            }
        }
        let drive = Driver {
            ctx: &ctx,
            state: state.clone(),
            kill_switch: kill_switch.clone(),
            labels,
        }
        .drive(self);
        let outcome = tokio::select! {
            biased;
            () = kill_switch.abort_requested() => Err(()),
            r = drive => Ok(r),
        };
        let mut summary = state.lock().map(|s| s.clone()).unwrap_or_default();
        let outcome = match outcome {
            Ok(r) => r,
            Err(()) => {
                if summary.rows_uncommitted == 0 {
                    Ok(Completion::ShutDown)
                } else {
                    Err(Error::Aborted {
                        uncommitted_rows: summary.rows_uncommitted,
                    })
                }
            }
        };
        if outcome.is_ok() {
            summary.rows_uncommitted = 0;
        }
        RunReport { summary, outcome }
    }
}

struct Driver<'a> {
    ctx: &'a StreamContext,
    state: Arc<Mutex<RunSummary>>,
    kill_switch: KillSwitch,
    labels: MetricLabels,
}

impl Driver<'_> {
    fn update(&self, f: impl FnOnce(&mut RunSummary)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s)
        }
    }

    async fn drive(self, graph: StreamGraph) -> Result<Completion> {
        let StreamGraph {
            flow,
            mut sink,
            mut dead_letter_sink,
            dead_letter_budget,
            commit_tick,
            tags: _,
        } = graph;
        let tally = DeadLetterTally::new(dead_letter_budget, self.labels.clone());
        let Flow {
            mut source,
            before_group,
            after_group,
            limits,
        } = flow;
        let sink_ctx = SinkContext {
            stream_id: self.ctx.stream_id.clone(),
            mode: self.ctx.mode(),
            backfill_id: self.ctx.backfill_id.clone(),
            labels: self.labels.clone(),
            dead_letters: tally.clone(),
            source_name: source.name(),
        };
        let resume_from = sink.open(&sink_ctx).await?;
        tracing::info!(
            source = %source.name(),
            sink = %sink.name(),
            resume_from = ?resume_from,
            mode = self.ctx.mode().as_str(),
            "stream starting"
        );
        self.update(|s| s.resumed_from = resume_from.clone());
        if self.ctx.backfill && sink.backfill_already_completed() {
            tracing::info!(
                backfill_id = self.ctx.backfill_id.as_deref().unwrap_or(""),
                "the backfill already completed; nothing to read"
            );
            self.update(|s| s.backfill_already_completed = true);
            return Ok(Completion::Finished);
        }
        let resumed = resume_from.clone();
        let stream = source
            .open(SourceStart {
                resume_from,
                mode: self.ctx.mode(),
                labels: self.labels.clone(),
            })
            .await?;
        let sink_stores_letters = sink.stores_dead_letters();
        let mut acker = Acker {
            source: &mut source,
            sink_stores_letters,
            in_flight: VecDeque::new(),
        };

        let incoming = metrics::counter!(m::ROWS_INCOMING, self.labels.to_vec());
        let state = self.state.clone();
        let stream = stream.map(move |item| {
            let item = item?;
            let rows = item.batch.num_rows() as u64;
            incoming.increment(rows);
            if let Ok(mut s) = state.lock() {
                s.rows_incoming += rows;
                s.rows_uncommitted += rows;
            }
            apply_before_group(&before_group, item)
        });
        let kill = self.kill_switch.clone();
        let stream = stream.take_until(Box::pin(async move { kill.shutdown_requested().await }));
        let limits = limits.unwrap_or(GroupLimits {
            max_rows: std::num::NonZeroUsize::MAX,
            max_bytes: None,
            max_interval: Duration::ZERO,
        });
        let mut groups =
            std::pin::pin!(GroupedWithin::new(stream, limits).resumed_from(resumed.as_ref()));

        let batch_rows = metrics::histogram!(m::BATCH_ROWS, self.labels.to_vec());
        let mut ticker = tokio::time::interval(commit_tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.reset();

        // The next group, taken from the source while the sink was writing the one before
        // (`None` inside: the source had ended).
        let mut ready: Option<Option<Result<Group>>> = None;
        let result: Result<()> = async {
            loop {
                let group = match ready.take() {
                    Some(group) => group,
                    None => tokio::select! {
                        group = groups.next() => group,
                        _ = ticker.tick() => {
                            if let Some(commit) = sink.tick().await? {
                                self.on_commit(&mut acker, commit).await?;
                            }
                            continue;
                        }
                    },
                };
                let Some(group) = group else {
                    return Ok(());
                };
                let mut group = group?;
                let received = group.batch.num_rows() as u64;
                // Judge the budget before anything of this group is committed.
                tally.add_read(received, &group.dead_letters)?;
                let letters = group.dead_letters.len() as u64;
                if !sink_stores_letters && !group.dead_letters.is_empty() {
                    let letters = std::mem::take(&mut group.dead_letters);
                    dead_letter_sink.write(&self.ctx.stream_id, letters).await?;
                }
                for f in &after_group {
                    group.batch = f(group.batch)?;
                }
                batch_rows.record(group.batch.num_rows() as f64);
                acker.in_flight.push_back(InFlight {
                    checkpoint: group.checkpoint.clone(),
                    rows: received,
                    letters,
                });
                // While the sink writes this group, the next one is read, decoded and
                // grouped (one group ahead, no more): the source does not wait for the sink,
                // nor the sink for the source, as long as either has work.
                let write = sink.write(group);
                let mut write = std::pin::pin!(write);
                let written = loop {
                    tokio::select! {
                        biased;
                        written = &mut write => break written,
                        group = groups.next(), if ready.is_none() => ready = Some(group),
                    }
                };
                if let Some(commit) = written? {
                    self.on_commit(&mut acker, commit).await?;
                }
            }
        }
        .await;

        self.update(|s| s.dead_letter_reasons = tally.counts().reasons);
        let outcome = async {
            match result {
                Ok(()) => {
                    if let Some(commit) = sink.flush().await? {
                        self.on_commit(&mut acker, commit).await?;
                    }
                    if self.kill_switch.is_shutdown_requested() {
                        tracing::info!(
                            "stream shut down gracefully; everything received was committed"
                        );
                        Ok(Completion::ShutDown)
                    } else {
                        sink.finish().await?;
                        tracing::info!("source completed; everything received was committed");
                        Ok(Completion::Finished)
                    }
                }
                Err(e)
                    if !matches!(
                        e,
                        Error::Sink { .. }
                            | Error::SchemaMismatch { .. }
                            | Error::EmptyOverwrite { .. }
                    ) =>
                {
                    // The source or a map failed: commit what the sink already holds, so that
                    // nothing accepted is lost, then report the error.
                    match sink.flush().await {
                        Ok(Some(commit)) => {
                            self.on_commit(&mut acker, commit).await?;
                        }
                        Ok(None) => {}
                        Err(flush_err) => {
                            tracing::warn!(error = %flush_err, "flush after source error failed; uncommitted rows will be re-read");
                        }
                    }
                    Err(e)
                }
                Err(e) => Err(e),
            }
        }
        .await;
        drop(acker);
        if let Err(e) = source.close().await {
            tracing::warn!(
                source = %source.name(),
                error = %e.report(),
                "closing the source failed"
            );
        }
        outcome
    }

    async fn on_commit(&self, acker: &mut Acker<'_>, commit: Commit) -> Result<()> {
        let started = Instant::now();
        let in_flight = &mut acker.in_flight;
        let mut received = 0;
        let mut letters = 0;
        if in_flight.iter().any(|g| g.checkpoint == commit.checkpoint) {
            while let Some(g) = in_flight.pop_front() {
                received += g.rows;
                letters += g.letters;
                if g.checkpoint == commit.checkpoint {
                    break;
                }
            }
        }
        // A sink storing dead letters says how many it committed (its own rejects included);
        // otherwise they were written before their groups.
        let letters = if acker.sink_stores_letters {
            commit.dead_letters
        } else {
            letters
        };
        let labels = self.labels.to_vec();
        metrics::counter!(m::ROWS_WRITTEN, labels.clone()).increment(commit.rows);
        metrics::counter!(m::BYTES_WRITTEN, labels.clone()).increment(commit.bytes);
        metrics::counter!(m::FILES_COMMITTED, labels).increment(commit.files.len() as u64);
        self.update(|s| {
            s.rows_committed += commit.rows;
            s.bytes_committed += commit.bytes;
            s.files_committed += commit.files.len() as u64;
            s.commits += 1;
            s.rows_dead_lettered += letters;
            s.rows_uncommitted = s.rows_uncommitted.saturating_sub(received);
            s.last_checkpoint = Some(commit.checkpoint.clone());
        });
        tracing::debug!(rows = commit.rows, dead_letters = letters, files = ?commit.files, checkpoint = ?commit.checkpoint, "committed");
        acker.source.commit(&commit.checkpoint).await?;
        tracing::trace!(elapsed = ?started.elapsed(), "source acked");
        Ok(())
    }
}

/// What acking a commit needs: the source and the groups handed to the sink and not yet
/// committed.
struct Acker<'a> {
    source: &'a mut Box<dyn Source>,
    sink_stores_letters: bool,
    in_flight: VecDeque<InFlight>,
}

/// A group handed to the sink and not yet committed.
struct InFlight {
    checkpoint: Checkpoint,
    /// Rows received from the source.
    rows: u64,
    /// Dead letters it carried.
    letters: u64,
}

fn apply_before_group(maps: &[MapFn], mut item: PositionedBatch) -> Result<PositionedBatch> {
    for f in maps {
        let rows = item.batch.num_rows();
        item.batch = f(item.batch)?;
        if item.batch.num_rows() != rows {
            return Err(Error::config(
                "graph.map",
                format!(
                    "a map before grouped_within changed the row count from {rows} to {}; source positions count rows, so place row-count-changing maps after grouped_within",
                    item.batch.num_rows()
                ),
            ));
        }
    }
    Ok(item)
}
