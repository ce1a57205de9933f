//! Metric names, descriptions and tags, compatible with the Arcane platform's dashboards.
//!
//! Libraries only use the `metrics` facade; the runner installs the exporters (Prometheus
//! text on `/metrics`, where dots become underscores, and DogStatsD).

use metrics::{Label, Unit};

use crate::context::StreamContext;

/// Rows received from the source.
pub const ROWS_INCOMING: &str = "arcane.stream.rows.incoming";
/// Rows durably committed by the sink.
pub const ROWS_WRITTEN: &str = "arcane.stream.rows.written";
/// Encoded bytes durably committed by the sink.
pub const BYTES_WRITTEN: &str = "arcane.stream.bytes.written";
/// Files committed by the sink.
pub const FILES_COMMITTED: &str = "arcane.stream.files.committed";
/// Rows sent to the dead-letter sink.
pub const ROWS_DEAD_LETTERED: &str = "arcane.stream.rows.dead_lettered";
/// Rows per group (histogram).
pub const BATCH_ROWS: &str = "arcane.stream.batch.rows";
/// Duration of a sink commit in seconds (histogram).
pub const BATCH_COMMIT_DURATION: &str = "arcane.stream.batch.commit_duration";
/// Age in seconds of the newest committed source position (event time), when the source knows it.
pub const WATERMARK_AGE: &str = "arcane.stream.watermark.age";
/// Files currently open in the sink.
pub const FILES_OPEN: &str = "arcane.stream.files.open";

/// Tag: snake_case stream kind.
pub const TAG_KIND: &str = "kind";
/// Tag: `stream` or `backfill`.
pub const TAG_MODE: &str = "mode";
/// Tag: stream id.
pub const TAG_STREAM_ID: &str = "stream_id";
/// Tag: backfill id, when backfilling.
pub const TAG_BACKFILL_ID: &str = "backfill_id";
/// Tag: the shard index of a sharded backfill (`JOB_COMPLETION_INDEX`).
pub const TAG_SHARD: &str = "shard";
/// Tag: the shard count of a sharded backfill (`backfillShards`).
pub const TAG_SHARDS: &str = "shards";

/// Register descriptions and units of every metric with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(ROWS_INCOMING, Unit::Count, "Rows received from the source");
    metrics::describe_counter!(
        ROWS_WRITTEN,
        Unit::Count,
        "Rows durably committed by the sink"
    );
    metrics::describe_counter!(
        BYTES_WRITTEN,
        Unit::Bytes,
        "Encoded bytes committed by the sink"
    );
    metrics::describe_counter!(FILES_COMMITTED, Unit::Count, "Files committed by the sink");
    metrics::describe_counter!(
        ROWS_DEAD_LETTERED,
        Unit::Count,
        "Rows sent to the dead-letter sink"
    );
    metrics::describe_histogram!(BATCH_ROWS, Unit::Count, "Rows per group");
    metrics::describe_histogram!(
        BATCH_COMMIT_DURATION,
        Unit::Seconds,
        "Duration of a sink commit"
    );
    metrics::describe_gauge!(
        WATERMARK_AGE,
        Unit::Seconds,
        "Age of the newest committed source position"
    );
    metrics::describe_gauge!(FILES_OPEN, Unit::Count, "Files open in the sink");
}

/// The tags every metric of a stream carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricLabels(pub Vec<Label>);

impl MetricLabels {
    /// `kind`, `mode`, `stream_id` and (when backfilling) `backfill_id` of `ctx`, plus its tags.
    pub fn for_stream(ctx: &StreamContext) -> Self {
        let mut labels = vec![
            Label::new(TAG_KIND, ctx.kind_tag()),
            Label::new(TAG_MODE, ctx.mode().as_str()),
            Label::new(TAG_STREAM_ID, ctx.stream_id.clone()),
        ];
        if ctx.backfill
            && let Some(id) = &ctx.backfill_id
        {
            labels.push(Label::new(TAG_BACKFILL_ID, id.clone()));
        }
        if let Ok(Some(shard)) = ctx.shard() {
            labels.push(Label::new(TAG_SHARD, shard.index().to_string()));
            labels.push(Label::new(TAG_SHARDS, shard.count().to_string()));
        }
        for (k, v) in &ctx.tags {
            labels.push(Label::new(k.clone(), v.clone()));
        }
        Self(labels)
    }

    /// The labels as a vector for the `metrics` macros.
    pub fn to_vec(&self) -> Vec<Label> {
        self.0.clone()
    }
}
