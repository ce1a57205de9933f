//! [`SourceKind`], [`KindSpec`] and [`BuiltinKind`]: a built-in stream kind is one source, grouped
//! into batches, landed by the Parquet sink.
//!
//! Every built-in kind has the same spec around its source's settings, so that operators learn
//! one shape:
//!
//! ```json
//! {
//!   "source": { "...": "the kind's own settings" },
//!   "sink": { "url": "s3://lake/orders", "partitionBy": { "columns": ["country"] } },
//!   "rowsPerGroup": 10000,
//!   "groupingIntervalSeconds": 15,
//!   "tags": { "team": "commerce" },
//!   "storageSecretRef": { "name": "lake-credentials" },
//!   "sourceSecretRef": { "name": "orders-api-token" }
//! }
//! ```
//!
//! The secret references name Kubernetes Secrets that the Arcane operator passes to the Job as
//! environment (the kinds' `StreamClass` lists them); the runner itself never reads them. The
//! operator's own fields (`jobTemplateRef`, `backfillJobTemplateRef`, `suspended`) are accepted
//! and ignored.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use arcane_core::grouped_within::{
    DEFAULT_GROUP_MAX_BYTES, DEFAULT_GROUPING_INTERVAL, DEFAULT_ROWS_PER_GROUP,
};
use arcane_core::{Checkpoint, Error, GroupLimits, Result, Source, StreamContext, StreamGraph};
use arcane_sinks::{ParquetSink, ParquetSinkConfig};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The source part of a built-in kind.
///
/// Implement it for a new source and register `BuiltinKind(MySource)` to get a kind whose spec
/// is [`KindSpec<MySource::Config>`](KindSpec), whose graph ends in the Parquet sink, and whose
/// CRD and manifests `arcane crd`/`arcane manifests` print.
#[async_trait::async_trait]
pub trait SourceKind: Send + Sync + 'static {
    /// The source's settings: the spec's `source` field (camelCase, `deny_unknown_fields`, doc
    /// comments on every field: they become the CRD's descriptions).
    type Config: DeserializeOwned + JsonSchema + Send + 'static;

    /// The kind's name, a DNS label (`blob-landing`); the CRD kind is its PascalCase form plus
    /// `Stream` (`BlobLandingStream`).
    fn name(&self) -> &'static str;

    /// One line describing the kind (`arcane kinds`, the CRD's description).
    fn description(&self) -> &'static str;

    /// Build the source from its settings; errors name fields under `spec.source`.
    async fn source(&self, ctx: &StreamContext, config: Self::Config) -> Result<Box<dyn Source>>;

    /// The source of one shard of a sharded backfill. `board` holds values all the shards of
    /// the backfill share (see [`ShardBoard`](arcane_core::ShardBoard)), for a kind whose
    /// shards must agree on something before they read. Default: [`source`](Self::source),
    /// which finds its part with [`StreamContext::shard`].
    async fn shard_source(
        &self,
        ctx: &StreamContext,
        config: Self::Config,
        _shard: arcane_core::Shard,
        _board: std::sync::Arc<dyn arcane_core::ShardBoard>,
    ) -> Result<Box<dyn Source>> {
        self.source(ctx, config).await
    }

    /// Whether the kind's backfill can be split into shards (`backfillShards` > 1): its
    /// [`source`](Self::source) then reads only the part of the input that
    /// [`StreamContext::shard`] owns. Default: no — a spec asking for shards is refused
    /// (exit code 1) naming the kind.
    fn can_shard(&self) -> bool {
        false
    }

    /// Why the kind cannot shard its backfill, for the refusal of a spec that asks for shards
    /// (when [`can_shard`](Self::can_shard) is false). Default: it reads its input as one
    /// sequence.
    fn why_not_sharded(&self) -> &'static str {
        "it reads its input as one sequence"
    }

    /// After a sharded backfill, the checkpoint the stream resumes from, given the shards'
    /// final checkpoints in index order (`None` for a shard that read nothing). Default: none
    /// (the stream starts from the beginning); kinds that can shard return the furthest.
    fn resume_after_shards(_finals: &[Option<Checkpoint>]) -> Result<Option<Checkpoint>>
    where
        Self: Sized,
    {
        Ok(None)
    }

    /// Adjust the parsed spec before the source and sink are built (e.g. a source that acks
    /// only after commits defaults its unacked window from `rowsPerGroup`, and needs files to
    /// commit before that window fills). Default: none.
    fn adjust_spec(&self, _spec: &mut KindSpec<Self::Config>) {}

    /// The kind's `groupingIntervalSeconds` when the spec does not set it; `None`: the shared
    /// default (15). A source that answers its senders only after commits keeps it short.
    fn default_grouping_interval_seconds(&self) -> Option<u64> {
        None
    }

    /// How often the sink is asked for commits that are due by age (see
    /// [`StreamGraph::with_commit_tick`]); `None`: the graph's default (1 s).
    fn commit_tick(&self) -> Option<Duration> {
        None
    }
}

/// A reference to a Kubernetes Secret in the stream's namespace, passed to the Job as
/// environment by the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the Secret.
    pub name: String,
}

/// Default `groupingIntervalSeconds`.
pub const DEFAULT_GROUPING_INTERVAL_SECONDS: u64 = DEFAULT_GROUPING_INTERVAL.as_secs();

/// The spec of a built-in kind around its source's settings `C`; see the [module docs](self).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KindSpec<C> {
    /// Where the rows come from: the settings of the kind's source.
    pub source: C,
    /// Where the rows land: Parquet files on blob storage, committed exactly once.
    pub sink: ParquetSinkConfig,
    /// Rows per group handed to the sink (groups are exactly this size unless the grouping
    /// interval or `groupMaxBytes` closes them first). Default 10000.
    #[serde(default = "default_rows_per_group")]
    #[schemars(range(min = 1))]
    pub rows_per_group: usize,
    /// Seconds a group waits for `rowsPerGroup` rows after its first row arrived. Default 15.
    #[serde(default = "default_grouping_interval_seconds")]
    #[schemars(range(min = 1))]
    pub grouping_interval_seconds: u64,
    /// Split a backfill into this many shards, one pod each: the backfill Job is a Kubernetes
    /// Indexed Job (`completions` = this), each pod reads the part of the input its
    /// `JOB_COMPLETION_INDEX` owns and commits it on its own, and the backfill completes (for
    /// `overwrite`, readers switch to the new data) when every shard is done. Default 1, or
    /// the count of the backfill's Job template (`ARCANE_BACKFILL_SHARDS`, set by the chart's
    /// `arcane-KIND-backfill-shards-N` templates), which it must equal when set.
    /// Streaming runs ignore it. Only kinds that can split their input accept more than 1
    /// (blob-landing: files by a hash of their path; generator: row ranges; postgres-cdc: key
    /// or block ranges of the table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub backfill_shards: Option<u32>,
    /// Upper bound on a group's in-memory (Arrow) size in bytes: a group is handed to the sink
    /// at `rowsPerGroup` rows or at this size, whichever comes first, which bounds the memory
    /// of wide rows. Default 2 MiB (2097152).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub group_max_bytes: Option<usize>,
    /// Extra tags on every metric of the stream (after `kind`, `mode`, `stream_id`,
    /// `backfill_id`, which they cannot replace).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Secret with the object-store credentials (`AWS_*`, `AZURE_*`, `GOOGLE_*` keys), passed
    /// to the Job as environment by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_secret_ref: Option<SecretRef>,
    /// Secret with the source's credentials (the variables its settings name), passed to the
    /// Job as environment by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_secret_ref: Option<SecretRef>,
    /// The operator's Job template reference (used by the operator, ignored here).
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub job_template_ref: Option<Value>,
    /// The operator's backfill Job template reference (used by the operator, ignored here).
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub backfill_job_template_ref: Option<Value>,
    /// Whether the operator suspends the stream (used by the operator, ignored here).
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub suspended: Option<bool>,
}

fn default_rows_per_group() -> usize {
    DEFAULT_ROWS_PER_GROUP
}

fn default_grouping_interval_seconds() -> u64 {
    DEFAULT_GROUPING_INTERVAL_SECONDS
}

/// The spec fields of every built-in kind that name Secrets (the `StreamClass`'s `secretRefs`).
pub const SECRET_REF_FIELDS: [&str; 2] = ["storageSecretRef", "sourceSecretRef"];

impl<C> KindSpec<C> {
    /// The grouping limits, validated.
    pub fn group_limits(&self) -> Result<GroupLimits> {
        let rows = NonZeroUsize::new(self.rows_per_group).ok_or_else(|| {
            Error::config(
                "spec.rowsPerGroup",
                "must be at least 1; it is the number of rows per group (default 10000)",
            )
        })?;
        if self.grouping_interval_seconds == 0 {
            return Err(Error::config(
                "spec.groupingIntervalSeconds",
                "must be at least 1 second (default 15)",
            ));
        }
        let limits = GroupLimits::new(rows, Duration::from_secs(self.grouping_interval_seconds));
        let bytes = self.group_max_bytes.unwrap_or(DEFAULT_GROUP_MAX_BYTES);
        let bytes = NonZeroUsize::new(bytes).ok_or_else(|| {
            Error::config(
                "spec.groupMaxBytes",
                "must be at least 1 byte (default 2097152, 2 MiB)",
            )
        })?;
        Ok(limits.with_max_bytes(bytes))
    }
}

/// A [`SourceKind`] as a [`StreamGraphBuilder`](arcane_core::StreamGraphBuilder):
/// *source → `grouped_within` → [`ParquetSink`]*; dead letters are committed by the sink with
/// the rows (by default under `{sink.url}/_dead_letters`), within `sink.deadLetter`'s budget.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinKind<K>(pub K);

#[async_trait::async_trait]
impl<K: SourceKind> arcane_core::StreamGraphBuilder for BuiltinKind<K> {
    type Spec = KindSpec<K::Config>;

    async fn build(&self, ctx: &StreamContext, mut spec: Self::Spec) -> Result<StreamGraph> {
        if let Some(seconds) = self.0.default_grouping_interval_seconds()
            && ctx
                .spec
                .get("groupingIntervalSeconds")
                .is_none_or(Value::is_null)
        {
            spec.grouping_interval_seconds = seconds;
        }
        self.0.adjust_spec(&mut spec);
        let limits = spec.group_limits()?;
        let shards = spec.backfill_shards.unwrap_or(1);
        if shards > 1 && !self.0.can_shard() {
            // The count may come from the Job template rather than the spec.
            let remedy = match std::env::var(arcane_core::env::ENV_BACKFILL_SHARDS) {
                Ok(n) => format!(
                    "the count comes from {}={n}, set by a sharded backfill Job template: run this stream's backfill with the kind's plain backfill template",
                    arcane_core::env::ENV_BACKFILL_SHARDS
                ),
                Err(_) => "remove backfillShards or set it to 1".to_string(),
            };
            return Err(Error::config(
                "spec.backfillShards",
                format!(
                    "the {} kind cannot shard its backfill ({shards} shards asked): {}; {remedy}",
                    self.0.name(),
                    self.0.why_not_sharded()
                ),
            ));
        }
        // Streaming runs ignore backfillShards; an index out of range is refused here.
        let shard = ctx.shard()?;
        if shards > 1 && shard.is_none() {
            tracing::info!(
                shards,
                "spec.backfillShards applies to backfills only; this streaming run reads everything"
            );
        }
        let sink_config = spec.sink.clone();
        let mut sink = ParquetSink::new_at(sink_config.clone(), "spec.sink")?;
        let source = match shard {
            Some(shard) => {
                tracing::info!(
                    shard = shard.index(),
                    shards = shard.count(),
                    "backfilling one shard of a sharded backfill"
                );
                let board = sink.shard_board(ctx.backfill_id.as_deref(), shard);
                sink = sink.with_shard(shard, K::resume_after_shards);
                self.0.shard_source(ctx, spec.source, shard, board).await?
            }
            None => self.0.source(ctx, spec.source).await?,
        };
        tracing::info!(
            kind = self.0.name(),
            source = %source.name(),
            sink = %spec.sink.url,
            rows_per_group = spec.rows_per_group,
            grouping_interval_seconds = spec.grouping_interval_seconds,
            "stream graph built"
        );
        let graph = StreamGraph::from_source(source)
            .grouped_within(limits)
            .to_sink(sink)
            .with_dead_letter_budget(sink_config.dead_letter.budget())
            .with_tags(spec.tags);
        Ok(match self.0.commit_tick() {
            Some(every) => graph.with_commit_tick(every),
            None => graph,
        })
    }

    fn description(&self) -> &str {
        self.0.description()
    }

    fn spec_schema(&self) -> Option<Value> {
        let mut schema = serde_json::to_value(schemars::schema_for!(KindSpec<K::Config>)).ok()?;
        if let Value::Object(map) = &mut schema {
            map.insert(
                "title".into(),
                Value::String(format!("{}StreamSpec", pascal_case(self.0.name()))),
            );
            map.insert(
                "description".into(),
                Value::String(format!(
                    "Spec of a {} stream: {}",
                    self.0.name(),
                    self.0.description()
                )),
            );
        }
        Some(schema)
    }
}

/// `blob-landing` → `BlobLanding`.
pub(crate) fn pascal_case(kind: &str) -> String {
    kind.split(['-', '_'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_limits_are_validated_with_the_field_named() {
        let spec: KindSpec<Value> = serde_json::from_value(serde_json::json!({
            "source": {}, "sink": {"url": "memory:///x"}, "rowsPerGroup": 0
        }))
        .unwrap();
        let err = spec.group_limits().unwrap_err();
        assert!(err.to_string().starts_with("spec.rowsPerGroup: "), "{err}");

        let spec: KindSpec<Value> = serde_json::from_value(serde_json::json!({
            "source": {}, "sink": {"url": "memory:///x"}, "groupMaxBytes": 0
        }))
        .unwrap();
        let err = spec.group_limits().unwrap_err();
        assert!(err.to_string().starts_with("spec.groupMaxBytes: "), "{err}");

        let spec: KindSpec<Value> = serde_json::from_value(serde_json::json!({
            "source": {}, "sink": {"url": "memory:///x"}
        }))
        .unwrap();
        let limits = spec.group_limits().unwrap();
        assert_eq!(
            limits.max_bytes.map(NonZeroUsize::get),
            Some(DEFAULT_GROUP_MAX_BYTES)
        );

        let spec: KindSpec<Value> = serde_json::from_value(serde_json::json!({
            "source": {}, "sink": {"url": "memory:///x"},
            "groupingIntervalSeconds": 2, "groupMaxBytes": 1024,
            "jobTemplateRef": {"name": "t"}, "suspended": false
        }))
        .unwrap();
        let limits = spec.group_limits().unwrap();
        assert_eq!(limits.max_rows.get(), DEFAULT_ROWS_PER_GROUP);
        assert_eq!(limits.max_interval, Duration::from_secs(2));
        assert_eq!(limits.max_bytes.map(NonZeroUsize::get), Some(1024));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_value::<KindSpec<Value>>(serde_json::json!({
            "source": {}, "sink": {"url": "memory:///x"}, "rowPerGroup": 5
        }))
        .unwrap_err();
        assert!(err.to_string().contains("rowPerGroup"), "{err}");
    }
}
