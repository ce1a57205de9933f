//! A sink on a local volume that fills up: the `arcane` binary writing a backfill to a small
//! tmpfs exits 1 (someone must free space) with a message that says the disk is full and what
//! to do; what it committed stays readable and nothing partial is visible; after the volume
//! grows, the rerun completes with every row exactly once.
//!
//! Mounting a tmpfs needs root (scripts/test.sh runs as root on the test machines); as another
//! user the test says so and does nothing.

#![allow(clippy::print_stderr)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::*;

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        if !is_root() {
            eprintln!("disk_full: not root, cannot mount a tmpfs; this test did not run");
            return None;
        }
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("volume");
        std::fs::create_dir(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed as root: {status}");
        Some(Self {
            dir,
            _parent: parent,
        })
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount failed: {status}");
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

#[test]
fn a_full_disk_is_fatal_with_its_remedy_and_the_rerun_after_freeing_space_completes() {
    let Some(volume) = Tmpfs::mount("2m") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let sink = volume.path().join("out");
    let total = 400_000u64;
    let spec = json!({
        "apiVersion": "streaming.sneaksanddata.com/v1",
        "kind": "GeneratorStream",
        "metadata": {"name": "full"},
        "spec": {
            "source": {"totalRows": total, "batchRows": 5000},
            "sink": {"url": sink.display().to_string(), "rolling": {"targetFileSize": 524288}},
            "rowsPerGroup": 20000
        }
    });
    let exit = Arcane::run(work.path(), &spec, &["--backfill"]).wait();
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    let message = exit.termination["message"].as_str().unwrap();
    assert!(
        message.contains("No space left on device")
            && message.contains("the disk is full: free space on that volume"),
        "{message}"
    );
    assert!(
        !message.contains("unreachable"),
        "a full disk is not an unreachable store: {message}"
    );
    // Part of the backfill was committed before the disk filled; readers still see the data
    // from before the backfill (none), never a part of it.
    let committed = exit.summary("rowsCommitted");
    assert!(
        committed > 0 && committed < total,
        "the volume was meant to fill midway: {committed} rows committed"
    );
    let url = format!("file://{}", sink.display());
    assert_eq!(
        rows_as_json(&read_committed(&url, &BTreeMap::new())).len(),
        0
    );

    volume.resize("64m");
    let exit = Arcane::run(work.path(), &spec, &["--backfill"]).wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    assert_eq!(
        exit.summary("rowsCommitted"),
        total - committed,
        "the rerun resumes after the last commit"
    );
    let rows = rows_as_json(&read_committed(&url, &BTreeMap::new()));
    let mut ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..total as i64).collect::<Vec<_>>(),
        "every row exactly once"
    );
}
