//! The `blob-landing` kind: files landing under an object-store prefix, as Parquet.

use arcane_core::{Result, Source, StreamContext};
use arcane_sources::blob_landing::{BlobLandingSource, BlobLandingSourceConfig};

use crate::kind::SourceKind;

/// Files (NDJSON, CSV, Parquet; gzip/zstd) landing under an object-store prefix; see
/// [`arcane_sources::blob_landing`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BlobLanding;

#[async_trait::async_trait]
impl SourceKind for BlobLanding {
    type Config = BlobLandingSourceConfig;

    fn name(&self) -> &'static str {
        "blob-landing"
    }

    fn description(&self) -> &'static str {
        "files (NDJSON, CSV, Parquet; gzip/zstd) landing under an object-store prefix, landed as Parquet"
    }

    async fn source(&self, _ctx: &StreamContext, config: Self::Config) -> Result<Box<dyn Source>> {
        Ok(Box::new(BlobLandingSource::new_at(config, "spec.source")?))
    }
}
