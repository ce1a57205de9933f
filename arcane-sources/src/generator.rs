//! The `generator` source: deterministic synthetic rows `id` (int64), `key` (utf8,
//! `key-{id % 97}`), `value` (float64, `id / 2`) and `event_time` (timestamp[ms, UTC], one second
//! apart from 2026-01-01), resumed exactly after the last committed row. For trying out sinks,
//! load tests and demos without a data source.
//!
//! ```
//! use arcane_core::Mode;
//! use arcane_sources::generator::GeneratorConfig;
//!
//! let config: GeneratorConfig = serde_json::from_value(serde_json::json!({
//!     "totalRows": 10_000, "batchRows": 500
//! }))
//! .unwrap();
//! let source = config.source(Mode::Backfill).unwrap();
//! assert_eq!(arcane_core::Source::name(&source), "generator");
//! ```

use std::time::Duration;

use arcane_core::{Error, Mode, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use arcane_core::generator::{
    GeneratorPosition, GeneratorSource, generated_row, generator_schema,
};

/// Default `batchRows`.
pub const DEFAULT_GENERATOR_BATCH_ROWS: usize = 1_000;

/// Settings of the `generator` source (`spec.source` of the `generator` kind).
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

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            total_rows: None,
            batch_rows: DEFAULT_GENERATOR_BATCH_ROWS,
            rows_per_second: None,
        }
    }
}

fn default_batch_rows() -> usize {
    DEFAULT_GENERATOR_BATCH_ROWS
}

impl GeneratorConfig {
    /// The source these settings describe, for a run in `mode`; errors name the field under
    /// `spec.source`.
    pub fn source(&self, mode: Mode) -> Result<GeneratorSource> {
        if self.batch_rows == 0 {
            return Err(Error::config(
                "spec.source.batchRows",
                "must be at least 1 (default 1000)",
            ));
        }
        let source = match (self.total_rows, mode) {
            (Some(total), _) => GeneratorSource::new(total, self.batch_rows),
            (None, Mode::Stream) => GeneratorSource::unbounded(self.batch_rows),
            (None, Mode::Backfill) => {
                return Err(Error::config(
                    "spec.source.totalRows",
                    "is required in backfill mode, which must end; set the number of rows to generate",
                ));
            }
        };
        Ok(match self.rows_per_second {
            None => source,
            Some(0) => {
                return Err(Error::config(
                    "spec.source.rowsPerSecond",
                    "must be at least 1; omit it for no limit",
                ));
            }
            Some(rate) => source.with_pause(Duration::from_secs_f64(
                self.batch_rows as f64 / rate as f64,
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backfill_needs_a_total_and_rates_and_batches_are_positive() {
        let config = |v| serde_json::from_value::<GeneratorConfig>(v).unwrap();
        let e = config(serde_json::json!({}))
            .source(Mode::Backfill)
            .unwrap_err();
        assert!(e.to_string().contains("spec.source.totalRows"), "{e}");
        let e = config(serde_json::json!({"totalRows": 5, "batchRows": 0}))
            .source(Mode::Stream)
            .unwrap_err();
        assert!(e.to_string().contains("spec.source.batchRows"), "{e}");
        let e = config(serde_json::json!({"totalRows": 5, "rowsPerSecond": 0}))
            .source(Mode::Stream)
            .unwrap_err();
        assert!(e.to_string().contains("spec.source.rowsPerSecond"), "{e}");
        assert!(config(serde_json::json!({})).source(Mode::Stream).is_ok());
        assert!(
            serde_json::from_value::<GeneratorConfig>(serde_json::json!({"totalRow": 5})).is_err(),
            "unknown fields are refused"
        );
    }
}
