//! The `blob-landing` kind: files landing under an object-store prefix, as Parquet.

use arcane_core::{Checkpoint, Result, Source, StreamContext};
use arcane_sources::blob_landing::{
    BlobLandingPosition, BlobLandingSource, BlobLandingSourceConfig,
};

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

    async fn source(&self, ctx: &StreamContext, config: Self::Config) -> Result<Box<dyn Source>> {
        let source = BlobLandingSource::new_at(config, "spec.source")?;
        Ok(Box::new(match ctx.shard()? {
            Some(shard) => source.with_shard(shard),
            None => source,
        }))
    }

    /// Files are assigned to shards by the FNV-1a hash of their path under the prefix.
    fn can_shard(&self) -> bool {
        true
    }

    /// Files are read in path order: the position in the file that sorts last is where the
    /// stream goes on (every file before it belongs to a shard that read it).
    fn resume_after_shards(finals: &[Option<Checkpoint>]) -> Result<Option<Checkpoint>> {
        let mut best: Option<(String, &Checkpoint)> = None;
        for cp in finals.iter().flatten() {
            let Some(pos) = cp.decode::<BlobLandingPosition>("blob-landing")? else {
                continue;
            };
            if best.as_ref().is_none_or(|(f, _)| pos.file > *f) {
                best = Some((pos.file, cp));
            }
        }
        Ok(best.map(|(_, cp)| cp.clone()))
    }
}
