//! # arcane-core
//!
//! The contracts of [Arcane](https://github.com/SneaksAndData/arcane-rs), a framework for
//! streaming-ingestion jobs that run as Kubernetes Jobs: a team implements a
//! [`StreamGraphBuilder`] for its kind of stream, and the runner (`arcane-runner`) turns it into
//! a running graph *source → grouped batches → sink* with a kill switch, typed exit codes and
//! metrics.
//!
//! * [`StreamContext`] — identity, mode and spec of the stream, from the operator's environment.
//! * [`Source`] / [`Sink`] — Arrow batches tagged with source [`Position`]s flow from sources to
//!   sinks; sinks report durable [`Commit`]s and only then do sources ack upstream.
//! * [`StreamGraph`] — `from_source(..).grouped_within(..).map(..).to_sink(..)`, materialized
//!   into a [`RunningStream`] with a [`KillSwitch`].
//! * [`GroupedWithin`] — exact-size, byte- and time-bounded grouping.
//! * [`Error`] / [`ExitCode`] — the error taxonomy and the platform's exit codes.
//! * [`metrics`] — metric names compatible with the platform's dashboards.
//! * [`schema`] — the one column-type syntax of every schema in a spec (`int64`,
//!   `timestamp[ms, UTC]`, `decimal128(10, 2)`, …).
//! * [`retry`] — the one retry policy (`retry` block of specs) for calls to network services.
//! * `testing` (feature) — a generator source, an in-memory sink and conformance suites.
//!
//! ```
//! use std::num::NonZeroUsize;
//! use std::time::Duration;
//! use arcane_core::{Completion, GroupLimits, StreamContext, StreamGraph};
//! use arcane_core::testing::{GeneratorSource, MemorySink};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let sink = MemorySink::new();
//! let store = sink.store();
//! let graph = StreamGraph::from_source(GeneratorSource::new(2_500, 300))
//!     .grouped_within(GroupLimits::new(NonZeroUsize::new(1_000).unwrap(), Duration::from_secs(5)))
//!     .to_sink(sink);
//! let ctx = StreamContext::new("demo", "synthetic", serde_json::json!({})).with_backfill("b1");
//! let report = graph.run(&ctx).join().await;
//! assert_eq!(report.outcome.unwrap(), Completion::Finished);
//! assert_eq!(store.rows(), 2_500);
//! assert_eq!(report.summary.rows_committed, 2_500);
//! # }
//! ```

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod context;
pub mod dead_letter;
pub mod env;
pub mod error;
pub mod generator;
pub mod graph;
pub mod grouped_within;
pub mod kill_switch;
pub mod location;
pub mod metrics;
pub mod position;
pub mod retry;
pub mod schema;
pub mod shard;
pub mod sink;
pub mod skipped;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;

pub use context::{Mode, StreamContext};
pub use dead_letter::{
    DeadLetter, DeadLetterBudget, DeadLetterCounts, DeadLetterSink, DeadLetterTally,
    LogDeadLetterSink,
};
pub use error::{BoxError, Error, ExitCode, Report, Result, Retry};
pub use graph::{
    Completion, DynStreamGraphBuilder, Flow, Progress, RunReport, RunSummary, RunningStream,
    StreamGraph, StreamGraphBuilder,
};
pub use grouped_within::{GroupLimits, GroupedWithin, GroupedWithinExt};
pub use kill_switch::KillSwitch;
pub use position::{Checkpoint, Group, Position, PositionedBatch};
pub use retry::RetryConfig;
pub use shard::{Shard, ShardBoard};
pub use sink::{Commit, Sink, SinkContext};
pub use source::{PositionedStream, Source, SourceStart};

// Re-exported so implementers need no direct dependency for the trait attribute.
pub use async_trait::async_trait;
