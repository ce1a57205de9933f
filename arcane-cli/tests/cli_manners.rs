//! The `arcane` command's manners on a laptop: errors on stderr that say what is missing, no
//! broken-pipe noise, a metrics port already taken is not a failed run, and no termination
//! message file outside a pod.

mod support;

use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use serde_json::json;
use support::*;

fn arcane() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_arcane"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    cmd
}

#[test]
fn run_without_a_spec_says_how_to_give_one_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let out = arcane()
        .current_dir(dir.path())
        .args(["run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--spec"), "{err}");
    assert!(err.contains("STREAMCONTEXT__SPEC"), "{err}");

    let help = arcane().args(["run", "--help"]).output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("arcane run --spec examples/quickstart.json --backfill"),
        "{help}"
    );
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let (read, write) = std::io::pipe().unwrap();
    // A one-page pipe, so that the 30 KiB CRD cannot be buffered whole.
    nix::fcntl::fcntl(write.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
    let child = arcane()
        .args(["crd", "blob-landing"])
        .stdout(write)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(read).read_line(&mut first).unwrap();
    assert!(first.starts_with('#'), "{first}");
    // The reader is dropped here, as `head -1` would exit.
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "no broken-pipe noise: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_taken_metrics_port_warns_unless_the_address_was_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("out");
    let spec = json!({"source": {"totalRows": 100}, "sink": {"url": sink.to_str().unwrap()}});
    // The default local port, taken (by this test, or already by something else).
    let _held = std::net::TcpListener::bind("127.0.0.1:9090");
    let file = dir.path().join("spec.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let file = file.to_str().unwrap();
    let args = ["run", "--kind", "generator", "--spec", file, "--backfill"];
    let exit = Arcane::spawn(dir.path(), &args, &[("ARCANE_METRICS_ADDR", "auto")]).wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    assert!(
        exit.lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("metrics endpoint not started")),
        "{:#?}",
        exit.lines
    );
    // An explicit address that cannot be bound is an error naming the setting.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let exit = Arcane::spawn(dir.path(), &args, &[("ARCANE_METRICS_ADDR", &addr)]).wait();
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    assert!(
        exit.termination["message"]
            .as_str()
            .unwrap()
            .starts_with("ARCANE_METRICS_ADDR"),
        "{}",
        exit.termination
    );
}

#[test]
fn no_termination_message_file_outside_a_pod() {
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("out");
    let spec = json!({"source": {"totalRows": 10}, "sink": {"url": sink.to_str().unwrap()}});
    let file = dir.path().join("spec.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let before = std::fs::metadata("/dev/termination-log")
        .and_then(|m| m.modified())
        .ok();
    let out = arcane()
        .current_dir(dir.path())
        .env("ARCANE_METRICS_ADDR", "off")
        .args(["run", "--kind", "generator", "--backfill", "--spec"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = std::fs::metadata("/dev/termination-log")
        .and_then(|m| m.modified())
        .ok();
    assert_eq!(
        before, after,
        "/dev/termination-log was written outside a pod"
    );
}

#[test]
fn a_refused_manifests_flag_is_named_as_typed() {
    let out = arcane()
        .args(["manifests", "generator", "--backfill-shards", "4,1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--backfill-shards: 1: a sharded backfill has at least 2 shards"),
        "{stderr}"
    );
    assert!(!stderr.contains("backfill_shard_counts"), "{stderr}");
    assert!(out.stdout.is_empty(), "{out:?}");
}
