//! The committed fuzz corpora of the `spec` and `sink_manifest` targets
//! (`fuzz/corpus/<target>/`) replayed through the targets' own harnesses on the stable
//! toolchain, so the test suite checks them without nightly or libFuzzer.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/harness/spec.rs"]
mod spec;

#[path = "../../fuzz/harness/positions.rs"]
mod positions;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{target} has a committed corpus");
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    let failed: Vec<String> = corpus(target)
        .into_iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap();
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: these inputs panic: {failed:?}"
    );
}

#[test]
fn spec_corpus_replays() {
    replay("spec", spec::check_spec);
}

#[test]
fn sink_manifest_corpus_replays() {
    replay("sink_manifest", |data| {
        if let Some(manifest) = arcane_sinks::fuzzing::sink_manifest(data) {
            positions::decode_checkpoints(&manifest);
        }
    });
}
