//! `arcane show --files`: the committed files of the current generation, ready for a reader.
//! Read back with pyarrow and DuckDB in a subprocess (`ARCANE_TEST_PYTHON`: a Python with
//! `pyarrow` and `duckdb`, installed by `scripts/test.sh`), and the README's DuckDB example run
//! as written.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::*;

fn python() -> String {
    std::env::var("ARCANE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "ARCANE_TEST_PYTHON is not set: point it at a Python with pyarrow and duckdb \
             (scripts/test.sh installs them), e.g. ARCANE_TEST_PYTHON=.tools/venv/bin/python"
        )
    })
}

/// Run the quickstart (a backfill writing a new overwrite generation) into
/// `out/arcane-out/orders` (where the README's example reads it), keeping retired generations
/// for an hour; the sink's directory.
fn quickstart(out: &Path) -> PathBuf {
    let sink = out.join("arcane-out/orders");
    let sink_url = format!("file://{}", sink.display());
    let dead_letters = format!("file://{}", out.join("dead-letters").display());
    let override_ = json!({"sink": {
        "url": sink_url,
        "deadLetter": {"url": dead_letters},
        "generationRetention": "1h",
    }})
    .to_string();
    let exit = Arcane::spawn(
        &repo_root(),
        &[
            "run",
            "--spec",
            "examples/quickstart.json",
            "--backfill",
            "--override",
            &override_,
        ],
        &[],
    )
    .wait();
    assert_eq!(exit.code, 0, "{:#?}", exit.lines);
    assert_eq!(exit.summary("rowsCommitted"), 24_000);
    sink
}

fn arcane(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_arcane"))
        .args(args)
        .output()
        .expect("run arcane")
}

/// Run `script` with the test Python; its stdout.
fn run_python(script: &str, cwd: &Path) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(arcane_test_support::python::script(script))
        .current_dir(cwd)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn show_files_prints_exactly_the_committed_files_and_readers_get_the_committed_rows() {
    let out = tempfile::tempdir().unwrap();
    // Twice: the second backfill's generation replaces the first, which is kept (retired)
    // for `generationRetention`, so the prefix holds 48 000 rows of which 24 000 are live.
    quickstart(out.path());
    let sink = quickstart(out.path());
    let url = format!("file://{}", sink.display());

    let shown = arcane(&["show", "--files", &url]);
    assert!(shown.status.success(), "{shown:?}");
    assert!(shown.stderr.is_empty(), "{shown:?}");
    let stdout = String::from_utf8(shown.stdout).unwrap();
    let files: Vec<&str> = stdout.lines().collect();
    let manifest = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(arcane_sinks::latest_manifest(&url, &BTreeMap::new()))
        .unwrap()
        .expect("a manifest");
    let committed = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(arcane_sinks::committed_files(&url, &BTreeMap::new()))
        .unwrap();
    let manifest_rows: u64 = committed.iter().map(|f| f.rows).sum();
    assert_eq!(manifest_rows, 24_000);
    assert_eq!(
        files,
        committed
            .iter()
            .map(|f| sink.join(&f.path).display().to_string())
            .collect::<Vec<_>>(),
        "one absolute path per committed file, nothing else"
    );
    let generation = sink.join(&manifest.state.current_generation);
    assert!(
        files
            .iter()
            .all(|f| Path::new(f).starts_with(&generation) && Path::new(f).is_file()),
        "{files:?} are the files of {}",
        generation.display()
    );

    // Readers given exactly those files read exactly the committed rows.
    let list = serde_json::to_string(&files).unwrap();
    let counted = run_python(
        &format!(
            "import duckdb, pyarrow.parquet as pq\n\
             files = {list}\n\
             print(duckdb.sql(f'select count(*) from read_parquet({{files}}, hive_partitioning=true)').fetchall()[0][0])\n\
             print(sum(pq.read_metadata(f).num_rows for f in files))\n\
             print(duckdb.sql(\"select count(*) from read_parquet('{}/**/*.parquet', hive_partitioning=true)\").fetchall()[0][0])",
            sink.display()
        ),
        out.path(),
    );
    let counts: Vec<u64> = counted.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(
        counts[..2],
        [manifest_rows, manifest_rows],
        "duckdb and pyarrow read the committed rows"
    );
    assert_eq!(
        counts[2],
        2 * manifest_rows,
        "a glob over the prefix also reads the retired generation (why --files exists)"
    );
}

#[test]
fn show_files_fails_clearly_without_a_dataset() {
    let out = tempfile::tempdir().unwrap();
    let missing = out.path().join("nope");
    let shown = arcane(&["show", "--files", missing.to_str().unwrap()]);
    assert_eq!(shown.status.code(), Some(1), "{shown:?}");
    assert!(shown.stdout.is_empty(), "{shown:?}");
    let stderr = String::from_utf8_lossy(&shown.stderr);
    assert!(
        stderr.contains(&format!(
            "the directory {} does not exist",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(!missing.exists(), "a reader never creates the directory");

    let shown = arcane(&["show", "--files", out.path().to_str().unwrap()]);
    assert_eq!(shown.status.code(), Some(1), "{shown:?}");
    assert!(shown.stdout.is_empty(), "{shown:?}");
    let stderr = String::from_utf8_lossy(&shown.stderr);
    assert!(
        stderr.contains("has no committed data (no manifest under _arcane/manifests)"),
        "{stderr}"
    );
}

/// The README's DuckDB example, as written, with the test's binary and output directory.
#[test]
fn readme_duckdb_example_reads_exactly_the_committed_rows() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme
        .find("python3 - <<'EOF'\n")
        .expect("the README has a Python example reading the quickstart's output")
        + "python3 - <<'EOF'\n".len();
    let end = start + readme[start..].find("\nEOF\n").expect("end of the example");
    let example = &readme[start..end];
    let cargo_run = r#""cargo", "run", "-q", "--release", "--bin", "arcane", "--""#;
    assert!(example.contains(cargo_run), "{example}");
    assert!(example.contains("\"arcane-out/orders\""), "{example}");
    let out = tempfile::tempdir().unwrap();
    quickstart(out.path());
    let script = example.replace(cargo_run, &format!("{:?}", env!("CARGO_BIN_EXE_arcane")));
    let printed = run_python(&script, out.path());
    let counts: Vec<u64> = printed
        .lines()
        .filter(|l| l.contains("2026-11-2"))
        .map(|l| {
            l.split('│')
                .nth(2)
                .unwrap_or_else(|| panic!("a table row: {l}"))
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(counts, vec![6000; 4], "{printed}");
}
