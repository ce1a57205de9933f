//! The `generator` kind: deterministic synthetic rows, for trying out sinks, load tests and
//! demos without a data source.

use arcane_core::{Result, Source, StreamContext};
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
        Ok(Box::new(config.source(ctx.mode())?))
    }
}
