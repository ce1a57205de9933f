//! The `arcane` binary: Arcane's built-in stream kinds in one process.
//!
//! ```sh
//! arcane kinds                                   # the kinds, one per line
//! arcane run --spec examples/quickstart.json --backfill
//! arcane spec-schema blob-landing                # JSON Schema of the kind's spec
//! arcane crd blob-landing                        # its CRD; `arcane manifests` the rest
//! ```

fn main() -> std::process::ExitCode {
    arcane_cli::main_with(arcane_cli::kinds::runner())
}
