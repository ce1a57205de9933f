//! A sink on a local volume that fills up: the `arcane` binary writing a backfill to a small
//! tmpfs exits 1 (someone must free space) with a message that says the disk is full and what
//! to do; what it committed stays readable and nothing partial is visible; after the volume
//! grows, the rerun completes with every row exactly once. The same when the volume that fills
//! is the one the row groups' pages spill to (`sink.writer.spillDirectory`), which the message
//! names instead.
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

/// The generator backfill of `total` rows into `sink`, with `writer` as its sink's writer
/// settings.
fn generator_spec(sink: &Path, total: u64, writer: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "streaming.sneaksanddata.com/v1",
        "kind": "GeneratorStream",
        "metadata": {"name": "full"},
        "spec": {
            "source": {"totalRows": total, "batchRows": 5000},
            "sink": {
                "url": sink.display().to_string(),
                "rolling": {"targetFileSize": 524288},
                "writer": writer
            },
            "rowsPerGroup": 20000
        }
    })
}

/// Run `spec` (a backfill of `total` rows into `sink`) until `volume` is full: exit 1 with
/// each of `says` in its message (and not "unreachable": a full volume is not a store that
/// went away), nothing of the unfinished backfill visible. Then give the volume room and
/// rerun: it resumes after what was committed, and every row is there exactly once. Returns
/// the rows committed before the volume filled.
fn full_then_room(
    volume: &Tmpfs,
    spec: &serde_json::Value,
    sink: &Path,
    total: u64,
    what: &str,
    says: &[&str],
) -> u64 {
    let work = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let mut trial = OneTrial::default();
    let exit = Arcane::run(work.path(), spec, &["--backfill"]).wait();
    trial.runs += 1;
    let message = exit.termination["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if exit.code != 1
        || says.iter().any(|part| !message.contains(part))
        || message.contains("unreachable")
    {
        trial.bad_exits.push(format!(
            "{what}: exit {}: {message:?}: {:#?}",
            exit.code, exit.lines
        ));
    }
    // Part of the backfill may be committed before the volume filled; readers still see the
    // data from before the backfill (none), never a part of it.
    let committed = exit.termination["summary"]["rowsCommitted"]
        .as_u64()
        .unwrap_or_default();
    let url = format!("file://{}", sink.display());
    let visible = rows_as_json(&read_committed(&url, &BTreeMap::new())).len();
    if visible != 0 {
        trial.bad_exits.push(format!(
            "{visible} rows of the unfinished backfill are visible"
        ));
    }

    volume.resize("64m");
    let exit = Arcane::run(work.path(), spec, &["--backfill"]).wait();
    trial.runs += 1;
    let resumed = exit.termination["summary"]["rowsCommitted"].as_u64();
    if exit.code != 0 || resumed != Some(total - committed) {
        trial.bad_exits.push(format!(
            "rerun after making room: exit {}, {resumed:?} rows committed (the rerun resumes \
             after the {committed} rows committed before): {:#?}",
            exit.code, exit.lines
        ));
    }
    let rows = rows_as_json(&read_committed(&url, &BTreeMap::new()));
    trial.count_ids(
        rows.iter().map(|r| r["id"].as_i64().unwrap()).collect(),
        total,
    );
    trial.report("generator", what, started.elapsed().as_secs_f64());
    assert!(
        trial.bad_exits.is_empty() && trial.lost == 0 && trial.duplicated == 0 && trial.extra == 0,
        "every row exactly once, each exit as documented: {trial:#?}"
    );
    committed
}

#[test]
fn a_full_disk_is_fatal_with_its_remedy_and_the_rerun_after_freeing_space_completes() {
    let Some(volume) = Tmpfs::mount("2m") else {
        return;
    };
    let sink = volume.path().join("out");
    // About 2.7 MB of Parquet: the 2 MiB volume fills after about three quarters of it.
    let total = 700_000u64;
    let spec = generator_spec(&sink, total, json!({}));
    let committed = full_then_room(
        &volume,
        &spec,
        &sink,
        total,
        "disk full",
        &[
            "No space left on device",
            "the disk is full: free space on that volume",
        ],
    );
    assert!(
        committed > 0 && committed < total,
        "the volume was meant to fill midway: {committed} rows committed"
    );
}

/// The row groups' pages spill to a volume too small for them: exit 1 naming the spill
/// directory and the ways out (not the sink's disk), nothing left on that volume.
#[test]
fn a_full_spill_volume_is_fatal_with_its_remedy_and_the_rerun_completes() {
    let Some(volume) = Tmpfs::mount("256k") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let sink = out.path().join("out");
    let total = 300_000u64;
    let writer = json!({"spillDirectory": volume.path().display().to_string()});
    let spec = generator_spec(&sink, total, writer);
    let dir = volume.path().display().to_string();
    full_then_room(
        &volume,
        &spec,
        &sink,
        total,
        "spill volume full",
        &[
            "No space left on device",
            &format!("the encoded pages of the row group in progress in {dir}"),
            "sink.writer.spillPages: false",
        ],
    );
    assert_eq!(
        std::fs::read_dir(volume.path()).unwrap().count(),
        0,
        "the spill files are unnamed: nothing is left on the volume"
    );
}

/// A spill directory that does not exist (a typo) is a configuration error before anything
/// is written, naming the field and the ways out; runs as any user.
#[test]
fn a_missing_spill_directory_is_a_configuration_error() {
    let work = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let sink = out.path().join("out");
    let missing = out.path().join("no-such-dir");
    let writer = json!({"spillDirectory": missing.display().to_string()});
    let spec = generator_spec(&sink, 50_000, writer);
    let exit = Arcane::run(work.path(), &spec, &["--backfill"]).wait();
    let message = exit.termination["message"].as_str().unwrap_or_default();
    assert_eq!(exit.code, 1, "{message}: {:#?}", exit.lines);
    for part in [
        "sink.writer.spillDirectory",
        &missing.display().to_string(),
        "spillPages: false",
    ] {
        assert!(message.contains(part), "{part:?} in {message:?}");
    }
    assert_eq!(
        rows_as_json(&read_committed(
            &format!("file://{}", sink.display()),
            &BTreeMap::new()
        ))
        .len(),
        0
    );
}
