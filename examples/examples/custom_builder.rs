//! A custom stream kind in a dozen lines: a `StreamGraphBuilder` with a typed spec, run by
//! `arcane_runner::run` (environment/flags, logs, metrics, SIGTERM drain, exit codes).
//! Synthetic rows are grouped and landed as Parquet.
//!
//! ```sh
//! cargo run --release -p arcane-examples --example custom_builder -- \
//!     --spec '{"rows": 200000, "rowsPerGroup": 50000, "sinkUrl": "arcane-out/synthetic"}' --backfill
//! cargo run --release --bin arcane -- show arcane-out/synthetic
//! ```

use arcane_core::testing::GeneratorSource;
use arcane_core::{GroupLimits, Result, StreamContext, StreamGraph, StreamGraphBuilder};
use arcane_sinks::{ParquetSink, ParquetSinkConfig};

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    rows: u64,
    rows_per_group: std::num::NonZeroUsize,
    sink_url: String,
}

struct Synthetic;

#[async_trait::async_trait]
impl StreamGraphBuilder for Synthetic {
    type Spec = Spec;
    async fn build(&self, _ctx: &StreamContext, spec: Spec) -> Result<StreamGraph> {
        let limits = GroupLimits::new(spec.rows_per_group, std::time::Duration::from_secs(15));
        Ok(
            StreamGraph::from_source(GeneratorSource::new(spec.rows, 1_000))
                .grouped_within(limits)
                .to_sink(ParquetSink::new(ParquetSinkConfig::new(spec.sink_url))?),
        )
    }
}

fn main() -> std::process::ExitCode {
    arcane_runner::run(Synthetic)
}
