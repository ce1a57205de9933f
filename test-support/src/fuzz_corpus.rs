//! The committed fuzz corpora (`fuzz/corpus/<target>/`: minimized seeds and every input that
//! once crashed a target) replayed through a target's check on the stable toolchain, so the
//! test suite checks them without nightly or libFuzzer.

use std::path::{Path, PathBuf};

/// The files of the committed corpus of `target`, sorted.
pub fn corpus(target: &str) -> Vec<PathBuf> {
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

/// Run every corpus file of `target` through `check`; fail naming the files that panic.
pub fn replay(target: &str, check: fn(&[u8])) {
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
