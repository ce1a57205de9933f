//! The `arcane` binary reads the operator's settings strictly: a loose boolean, an empty or (in
//! a pod) missing stream id, and a bad sink setting are FATAL (exit 1) with the setting named,
//! before anything is read or written; a generator run's summary counts what it committed.

mod support;

use serde_json::{Value, json};
use support::*;

fn generator_spec(sink: &std::path::Path) -> Value {
    json!({
        "source": {"totalRows": 5000},
        "sink": {"url": sink.to_str().unwrap()},
        "rowsPerGroup": 1000
    })
}

/// `arcane run` with the spec in `STREAMCONTEXT__SPEC` and the given environment.
fn run_env(cwd: &std::path::Path, env: &[(&str, &str)]) -> Exit {
    Arcane::spawn(cwd, &["run"], env).wait()
}

fn manifests(sink: &std::path::Path) -> usize {
    std::fs::read_dir(sink.join("_arcane/manifests"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_loose_backfill_flag_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("out");
    let spec = generator_spec(&sink).to_string();
    for loose in ["yes", "1", "on"] {
        let exit = run_env(
            dir.path(),
            &[
                ("STREAMCONTEXT__SPEC", &spec),
                ("STREAMCONTEXT__STREAM_ID", "orders"),
                ("STREAMCONTEXT__STREAM_KIND", "generator"),
                ("STREAMCONTEXT__BACKFILL", loose),
            ],
        );
        assert_eq!(exit.code, 1, "{loose}: {:#?}", exit.lines);
        let message = exit.termination["message"].as_str().unwrap();
        assert!(
            message.starts_with("STREAMCONTEXT__BACKFILL: expected true or false"),
            "{message}"
        );
        assert_eq!(manifests(&sink), 0, "nothing may be written");
    }
}

#[test]
fn an_empty_stream_id_is_fatal_and_a_missing_one_too_inside_a_pod() {
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("out");
    let spec = generator_spec(&sink).to_string();
    let exit = run_env(
        dir.path(),
        &[
            ("STREAMCONTEXT__SPEC", &spec),
            ("STREAMCONTEXT__STREAM_ID", ""),
            ("STREAMCONTEXT__STREAM_KIND", "generator"),
        ],
    );
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    assert!(
        exit.termination["message"]
            .as_str()
            .unwrap()
            .contains("STREAMCONTEXT__STREAM_ID"),
        "{}",
        exit.termination
    );
    // Inside a pod the id is never derived from the kind.
    let exit = run_env(
        dir.path(),
        &[
            ("STREAMCONTEXT__SPEC", &spec),
            ("STREAMCONTEXT__STREAM_KIND", "generator"),
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
        ],
    );
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    assert!(
        exit.termination["message"]
            .as_str()
            .unwrap()
            .contains("STREAMCONTEXT__STREAM_ID"),
        "{}",
        exit.termination
    );
    assert_eq!(manifests(&sink), 0);
}

#[test]
fn sink_errors_name_the_path_in_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let spec = json!({
        "source": {"totalRows": 10},
        "sink": {"url": "s4://bucket/x"}
    });
    let exit = Arcane::run(dir.path(), &spec, &["--kind", "generator"]).wait();
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    let message = exit.termination["message"].as_str().unwrap();
    assert!(message.starts_with("spec.sink.url: "), "{message}");
    let spec = json!({
        "source": {"totalRows": 10},
        "sink": {"url": "s3://bucket/x", "storageOptions": {"aws_endpiont": "http://127.0.0.1:1"}}
    });
    let exit = Arcane::run(dir.path(), &spec, &["--kind", "generator"]).wait();
    assert_eq!(exit.code, 1, "{:#?}", exit.lines);
    let message = exit.termination["message"].as_str().unwrap();
    assert!(
        message.starts_with("spec.sink.storageOptions.aws_endpiont: "),
        "{message}"
    );
}

#[test]
fn the_summary_counts_rows_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("out");
    let exit = Arcane::run(
        dir.path(),
        &generator_spec(&sink),
        &["--kind", "generator", "--backfill", "--backfill-id", "b1"],
    )
    .wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    assert_eq!(exit.summary("rowsCommitted"), 5000);
    assert_eq!(exit.summary("rowsDeadLettered"), 0);
    assert_eq!(exit.termination["reason"], "finished");
}

#[test]
fn a_rerun_of_a_completed_backfill_id_reads_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("out");
    // Merge: running the same backfill twice would append the history twice.
    let spec = json!({
        "source": {"totalRows": 3000},
        "sink": {"url": sink.to_str().unwrap(), "backfillBehavior": "merge"},
        "rowsPerGroup": 1000
    });
    let args = [
        "--kind",
        "generator",
        "--backfill",
        "--backfill-id",
        "history-1",
    ];
    let first = Arcane::run(dir.path(), &spec, &args).wait();
    assert_eq!(first.code, 0, "{:#?}", first.lines);
    assert_eq!(first.summary("rowsCommitted"), 3000);
    let again = Arcane::run(dir.path(), &spec, &args).wait();
    assert_eq!(again.code, 0, "{:#?}", again.lines);
    assert_eq!(again.summary("rowsIncoming"), 0);
    assert!(
        again.termination["message"]
            .as_str()
            .unwrap()
            .contains("already completed"),
        "{}",
        again.termination
    );
    let rows: usize = read_committed(sink.to_str().unwrap(), &Default::default())
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 3000, "the history must not be appended twice");
    // A new backfill id is a new backfill.
    let other = Arcane::run(
        dir.path(),
        &spec,
        &[
            "--kind",
            "generator",
            "--backfill",
            "--backfill-id",
            "history-2",
        ],
    )
    .wait();
    assert_eq!(other.code, 0, "{:#?}", other.lines);
    assert_eq!(other.summary("rowsCommitted"), 3000);
}
