//! The `rest-api` kind: records polled from an HTTP API, as Parquet.

use arcane_core::{Result, Source, StreamContext};
use arcane_sources::rest_api::{RestApiSource, RestApiSourceConfig};

use crate::kind::SourceKind;

/// Records polled from an HTTP (REST) API with pagination, a watermark, authentication and
/// retries; see [`arcane_sources::rest_api`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RestApi;

#[async_trait::async_trait]
impl SourceKind for RestApi {
    type Config = RestApiSourceConfig;

    fn name(&self) -> &'static str {
        "rest-api"
    }

    fn description(&self) -> &'static str {
        "records polled from an HTTP (REST) API, page by page and incrementally by a watermark field, landed as Parquet"
    }

    async fn source(&self, _ctx: &StreamContext, config: Self::Config) -> Result<Box<dyn Source>> {
        Ok(Box::new(RestApiSource::new_at(config, "spec.source")?))
    }
}
