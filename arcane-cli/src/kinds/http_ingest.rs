//! The `http-ingest` kind: CloudEvents and webhooks pushed over HTTP, answered 2xx only once
//! committed, as Parquet.

use std::time::Duration;

use arcane_core::{Result, Source, StreamContext};
use arcane_sources::http_ingest::{
    DEFAULT_HTTP_INGEST_GROUPING_INTERVAL_SECONDS, HttpIngestSource, HttpIngestSourceConfig,
};

use crate::kind::{KindSpec, SourceKind};

/// How soon the sink commits a group after it was written: a sender waits for that commit.
pub const HTTP_INGEST_MAX_FILE_AGE: Duration = Duration::from_millis(100);

/// An HTTP endpoint receiving CloudEvents (structured, binary, batch) and JSON/NDJSON webhooks,
/// deduplicated by `(source, id)`, acknowledged after commit; see
/// [`arcane_sources::http_ingest`].
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpIngest;

#[async_trait::async_trait]
impl SourceKind for HttpIngest {
    type Config = HttpIngestSourceConfig;

    fn name(&self) -> &'static str {
        "http-ingest"
    }

    fn description(&self) -> &'static str {
        "CloudEvents and JSON webhooks pushed over HTTP, deduplicated by (source, id) and answered 2xx only once committed, landed as Parquet"
    }

    async fn source(&self, _ctx: &StreamContext, config: Self::Config) -> Result<Box<dyn Source>> {
        Ok(Box::new(HttpIngestSource::new_at(config, "spec.source")?))
    }

    /// Senders wait for the commit: every group is committed right after it is written (files
    /// roll by age within [`HTTP_INGEST_MAX_FILE_AGE`]).
    fn adjust_spec(&self, spec: &mut KindSpec<Self::Config>) {
        if spec.sink.rolling.max_file_age > HTTP_INGEST_MAX_FILE_AGE {
            tracing::info!(
                max_file_age = ?HTTP_INGEST_MAX_FILE_AGE,
                "sink files commit right after each group: senders are answered only after the commit (spec.sink.rolling.maxFileAge)"
            );
            spec.sink.rolling.max_file_age = HTTP_INGEST_MAX_FILE_AGE;
        }
    }

    fn default_grouping_interval_seconds(&self) -> Option<u64> {
        Some(DEFAULT_HTTP_INGEST_GROUPING_INTERVAL_SECONDS)
    }

    fn commit_tick(&self) -> Option<Duration> {
        Some(HTTP_INGEST_MAX_FILE_AGE)
    }
}

#[cfg(test)]
mod tests {
    use arcane_core::StreamGraphBuilder;

    use super::*;
    use crate::kind::BuiltinKind;

    fn spec(extra: serde_json::Value) -> serde_json::Value {
        let mut spec = serde_json::json!({
            "source": {"address": "127.0.0.1:0", "dataFormat": "json"},
            "sink": {"url": "memory:///pushed"}
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    }

    async fn graph(spec: serde_json::Value) -> String {
        let ctx = StreamContext::new("pushed", "http-ingest", spec.clone());
        let typed = serde_json::from_value(spec).unwrap();
        format!(
            "{:?}",
            BuiltinKind(HttpIngest).build(&ctx, typed).await.unwrap()
        )
    }

    #[tokio::test]
    async fn groups_close_after_a_second_unless_the_spec_says_otherwise() {
        let g = graph(spec(serde_json::json!({}))).await;
        assert!(g.contains("max_interval: 1s"), "{g}");
        let g = graph(spec(serde_json::json!({"groupingIntervalSeconds": 7}))).await;
        assert!(g.contains("max_interval: 7s"), "{g}");
    }

    #[test]
    fn files_commit_right_after_each_group() {
        let mut spec: KindSpec<HttpIngestSourceConfig> =
            serde_json::from_value(spec(serde_json::json!({}))).unwrap();
        HttpIngest.adjust_spec(&mut spec);
        assert_eq!(spec.sink.rolling.max_file_age, HTTP_INGEST_MAX_FILE_AGE);
        spec.sink.rolling.max_file_age = Duration::from_millis(10);
        HttpIngest.adjust_spec(&mut spec);
        assert_eq!(spec.sink.rolling.max_file_age, Duration::from_millis(10));
    }
}
