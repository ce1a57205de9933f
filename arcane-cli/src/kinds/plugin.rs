//! The `plugin` kind: rows from an out-of-process source plugin (any language) speaking Arrow
//! Flight over a Unix socket; see `docs/plugins.md`.

use arcane_core::{Result, Source, StreamContext};
pub use arcane_sources::plugin::PluginConfig;

use crate::kind::SourceKind;

/// An out-of-process source plugin; see [`PluginConfig`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Plugin;

#[async_trait::async_trait]
impl SourceKind for Plugin {
    type Config = PluginConfig;

    fn name(&self) -> &'static str {
        "plugin"
    }

    fn description(&self) -> &'static str {
        "rows from an out-of-process source plugin in any language (Arrow Flight over a Unix socket), resumed from the sink's committed position"
    }

    async fn source(&self, _ctx: &StreamContext, config: Self::Config) -> Result<Box<dyn Source>> {
        Ok(Box::new(config.source()?))
    }
}
