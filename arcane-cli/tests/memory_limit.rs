//! A run under a memory limit it cannot fit in: the kernel kills the `arcane` binary (as the
//! OOM killer does to a container past its limit), which is a SIGKILL for Arcane — nothing
//! partial becomes visible, and the rerun with room enough completes with every row exactly
//! once. The limit is a memory cgroup (v2 `memory.max`, or v1 `memory.limit_in_bytes`), so
//! the test needs root; as another user it says so and does nothing.

#![allow(clippy::print_stderr)]

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::json;
use support::*;

/// A memory cgroup, removed on drop.
struct MemoryCgroup {
    dir: PathBuf,
    limit_file: &'static str,
}

impl MemoryCgroup {
    fn create(bytes: u64) -> Option<Self> {
        if !is_root() {
            eprintln!(
                "memory_limit: not root, cannot create a memory cgroup; this test did not run"
            );
            return None;
        }
        let name = format!("arcane-test-{}", std::process::id());
        let (dir, limit_file) = if PathBuf::from("/sys/fs/cgroup/memory").is_dir() {
            (
                PathBuf::from("/sys/fs/cgroup/memory").join(name),
                "memory.limit_in_bytes",
            )
        } else {
            (PathBuf::from("/sys/fs/cgroup").join(name), "memory.max")
        };
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot create the cgroup {} as root: {e}", dir.display()));
        let cgroup = Self { dir, limit_file };
        cgroup.limit(bytes);
        Some(cgroup)
    }

    fn limit(&self, bytes: u64) {
        std::fs::write(self.dir.join(self.limit_file), bytes.to_string()).unwrap();
    }

    /// `arcane ARGS` in this cgroup; its exit code, or -1 when a signal ended it.
    fn run(&self, cwd: &std::path::Path, args: &[&str]) -> (i32, String) {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
                self.dir.display()
            ))
            .arg(env!("CARGO_BIN_EXE_arcane"))
            .args(args)
            .current_dir(cwd)
            .env("ARCANE_METRICS_ADDR", "off")
            .env("ARCANE_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .output()
            .expect("run arcane");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn a_run_killed_at_its_memory_limit_loses_nothing_and_the_rerun_completes() {
    let Some(cgroup) = MemoryCgroup::create(40 << 20) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let sink = work.path().join("out");
    let total = 1_500_000u64;
    let spec = work.path().join("spec.json");
    // One group and one row group hold every row (their byte bounds raised far above the
    // defaults): far more than 40 MiB in memory.
    std::fs::write(
        &spec,
        json!({
            "source": {"totalRows": total, "batchRows": 200_000},
            "sink": {
                "url": sink.display().to_string(),
                "rolling": {"targetFileSize": 268_435_456u64},
                "writer": {"rowGroupBytes": 1u64 << 30}
            },
            "rowsPerGroup": total,
            "groupMaxBytes": 1u64 << 30
        })
        .to_string(),
    )
    .unwrap();
    let args = [
        "run",
        "--kind",
        "generator",
        "--spec",
        spec.to_str().unwrap(),
        "--backfill",
    ];
    let started = std::time::Instant::now();
    let mut trial = OneTrial::default();
    let (code, stderr) = cgroup.run(work.path(), &args);
    trial.runs += 1;
    if code != -1 {
        trial.bad_exits.push(format!(
            "the kernel was meant to kill it at 40 MiB: exit {code}: {stderr}"
        ));
    }
    let url = format!("file://{}", sink.display());
    let visible = rows_as_json(&read_committed(&url, &BTreeMap::new())).len();
    if visible != 0 {
        trial
            .bad_exits
            .push(format!("{visible} rows of the killed run are visible"));
    }

    cgroup.limit(4 << 30);
    let (code, stderr) = cgroup.run(work.path(), &args);
    trial.runs += 1;
    if code != 0 {
        trial
            .bad_exits
            .push(format!("rerun with room enough: exit {code}: {stderr}"));
    }
    let rows = rows_as_json(&read_committed(&url, &BTreeMap::new()));
    trial.count_ids(
        rows.iter().map(|r| r["id"].as_i64().unwrap()).collect(),
        total,
    );
    trial.report("generator", "memory limit", started.elapsed().as_secs_f64());
    assert!(
        trial.bad_exits.is_empty() && trial.lost == 0 && trial.duplicated == 0 && trial.extra == 0,
        "nothing partial visible, every row exactly once after the rerun: {trial:#?}"
    );
}
