//! The `generator` kind: deterministic synthetic rows, for trying out sinks, load tests and
//! demos without a data source.

use arcane_core::{Checkpoint, Result, Source, StreamContext};
use arcane_sources::generator::GeneratorPosition;
pub use arcane_sources::generator::{DEFAULT_GENERATOR_BATCH_ROWS, GeneratorConfig};

use crate::kind::SourceKind;

/// Synthetic rows; see [`GeneratorConfig`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Generator;

#[async_trait::async_trait]
impl SourceKind for Generator {
    type Config = GeneratorConfig;

    fn name(&self) -> &'static str {
        "generator"
    }

    fn description(&self) -> &'static str {
        "deterministic synthetic rows (id, key, value, event_time), for trying out sinks, load tests and demos"
    }

    async fn source(&self, ctx: &StreamContext, config: Self::Config) -> Result<Box<dyn Source>> {
        let source = config.source(ctx.mode())?;
        Ok(Box::new(match ctx.shard()? {
            Some(shard) => source.with_shard(shard),
            None => source,
        }))
    }

    /// Rows are split into contiguous ranges, one per shard.
    fn can_shard(&self) -> bool {
        true
    }

    /// The furthest row any shard reached (the end of the last range).
    fn resume_after_shards(finals: &[Option<Checkpoint>]) -> Result<Option<Checkpoint>> {
        let mut best: Option<(u64, &Checkpoint)> = None;
        for cp in finals.iter().flatten() {
            let rows = cp
                .decode::<GeneratorPosition>("generator")?
                .map_or(0, |p| p.rows)
                + cp.rows;
            if best.is_none_or(|(r, _)| rows > r) {
                best = Some((rows, cp));
            }
        }
        Ok(best.map(|(_, cp)| cp.clone()))
    }
}
