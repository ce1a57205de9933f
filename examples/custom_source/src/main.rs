//! `jsonl-table-stream`: one binary hosting the `jsonl-table` kind, with the same commands as
//! `arcane` (`run`, `kinds`, `show`, `spec-schema`, `crd`, `manifests`).
//!
//! ```sh
//! cargo run -p arcane-example-custom-source -- run --kind jsonl-table --backfill --spec '{
//!   "source": {"path": "examples/data/table.jsonl"},
//!   "sink": {"url": "arcane-out/table"}
//! }'
//! cargo run -p arcane-example-custom-source -- crd jsonl-table
//! ```

fn main() -> std::process::ExitCode {
    let runner = arcane_cli::kinds::register(
        arcane_runner::Runner::new(),
        arcane_example_custom_source::JsonLinesKind,
    );
    arcane_cli::main_with(runner)
}
