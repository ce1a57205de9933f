//! The `generator` kind: deterministic synthetic rows, for trying out sinks, load tests and
//! demos without a data source.

use std::time::Duration;

use arcane_core::testing::GeneratorSource;
use arcane_core::{Error, Mode, Result, Source, StreamContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::kind::SourceKind;

/// Default `batchRows`.
pub const DEFAULT_GENERATOR_BATCH_ROWS: usize = 1_000;

/// Settings of the `generator` source: rows `id` (int64), `key` (utf8, `key-{id % 97}`),
/// `value` (float64, `id / 2`) and `event_time` (timestamp[ms, UTC], one second apart from
/// 2026-01-01), resumed exactly after the last committed row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Rows in total; the stream ends after them. Required in backfill mode; without it a
    /// streaming run generates rows until stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_rows: Option<u64>,
    /// Rows per generated batch. Default 1000.
    #[serde(default = "default_batch_rows")]
    #[schemars(range(min = 1))]
    pub batch_rows: usize,
    /// Approximate rate in rows per second; unlimited when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rows_per_second: Option<u64>,
}

fn default_batch_rows() -> usize {
    DEFAULT_GENERATOR_BATCH_ROWS
}

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
        if config.batch_rows == 0 {
            return Err(Error::config(
                "spec.source.batchRows",
                "must be at least 1 (default 1000)",
            ));
        }
        let source = match (config.total_rows, ctx.mode()) {
            (Some(total), _) => GeneratorSource::new(total, config.batch_rows),
            (None, Mode::Stream) => GeneratorSource::unbounded(config.batch_rows),
            (None, Mode::Backfill) => {
                return Err(Error::config(
                    "spec.source.totalRows",
                    "is required in backfill mode, which must end; set the number of rows to generate",
                ));
            }
        };
        let source = match config.rows_per_second {
            None => source,
            Some(0) => {
                return Err(Error::config(
                    "spec.source.rowsPerSecond",
                    "must be at least 1; omit it for no limit",
                ));
            }
            Some(rate) => source.with_pause(Duration::from_secs_f64(
                config.batch_rows as f64 / rate as f64,
            )),
        };
        Ok(Box::new(source))
    }
}
