//! Test fixture: the runner over the `fixture` kind (generator rows → NDJSON directory), used by
//! the process-level tests in `tests/process.rs`. Errors of the source `fixture-custom` are
//! classified RESTART by the binary's own handler.
//!
//! `cargo run -p arcane-runner --bin arcane-runner-fixture -- --spec '{"dir":"/tmp/out","totalRows":100}' --backfill`

use arcane_core::{Error, ExitCode};
use arcane_runner::Runner;
use arcane_runner::fixture::FixtureBuilder;

fn main() -> std::process::ExitCode {
    Runner::new()
        .register("fixture", FixtureBuilder)
        .with_default(FixtureBuilder)
        .classify_errors(|e| match e {
            Error::Source { source_name, .. } if source_name == "fixture-custom" => {
                Some(ExitCode::Restart)
            }
            _ => None,
        })
        .run()
}
