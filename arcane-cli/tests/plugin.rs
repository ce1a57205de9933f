//! The `plugin` kind end to end through the `arcane` binary, with real plugin processes: the
//! Python example plugin (`examples/plugins/counter.py`, on the SDK `sdk/python`) and small
//! broken plugins written here. Needs a Python with pyarrow: `ARCANE_TEST_PYTHON` (default
//! `/var/tmp/arcane-ci-tools/venv/bin/python`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use arcane_test_support::rng::{SplitMix64, seed_from_env};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use support::*;

fn python() -> String {
    let python = std::env::var("ARCANE_TEST_PYTHON")
        .unwrap_or_else(|_| "/var/tmp/arcane-ci-tools/venv/bin/python".into());
    let ok = Command::new(&python)
        .args(["-c", "import pyarrow.flight"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{python} cannot import pyarrow.flight; set ARCANE_TEST_PYTHON to a Python with pyarrow"
    );
    python
}

/// `dir/name`: an executable wrapper running `script` with the test's Python.
fn wrapper(dir: &Path, name: &str, script: &Path) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("#!/bin/sh\nexec {} {} \"$@\"\n", python(), script.display()),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The example plugin as `dir/counter`.
fn counter(dir: &Path) -> PathBuf {
    wrapper(
        dir,
        "counter",
        &repo_root().join("examples/plugins/counter.py"),
    )
}

/// A plugin from Python source `body` (the SDK importable) as `dir/name`.
fn python_plugin(dir: &Path, name: &str, body: &str) -> PathBuf {
    let script = dir.join(format!("{name}.py"));
    let sdk = repo_root().join("sdk/python");
    std::fs::write(
        &script,
        format!(
            "import sys\nsys.path.insert(0, {:?})\n{body}\n",
            sdk.display().to_string()
        ),
    )
    .unwrap();
    wrapper(dir, name, &script)
}

/// A spec reading plugin `name` of `dir` with `config` into `dir/out`, quick retries.
fn spec(dir: &Path, name: &str, config: Value) -> Value {
    json!({
        "source": {
            "plugin": name,
            "config": config,
            "retry": {"maxAttempts": 4, "initialDelay": "100ms", "maxDelay": "300ms"},
            "handshakeTimeout": "10s",
            "requestTimeout": "10s",
            "readTimeout": "10s",
            "shutdownTimeout": "5s",
        },
        "sink": {"url": sink_url(dir)},
        "rowsPerGroup": 100,
        "groupingIntervalSeconds": 1,
    })
}

fn sink_url(dir: &Path) -> String {
    format!("file://{}", dir.join("out").display())
}

fn run(dir: &Path, spec: &Value, backfill: bool, env: &[(&str, &str)]) -> Arcane {
    let plugins = dir.to_str().unwrap().to_string();
    let mut all: Vec<(&str, &str)> = vec![("ARCANE_PLUGIN_DIR", plugins.as_str())];
    all.extend_from_slice(env);
    let args: &[&str] = if backfill {
        &["--kind", "plugin", "--backfill"]
    } else {
        &["--kind", "plugin"]
    };
    Arcane::run_with_env(dir, spec, args, &all)
}

/// The committed ids, each as often as committed.
fn committed_ids(dir: &Path) -> Vec<i64> {
    let batches = read_committed(&sink_url(dir), &BTreeMap::new());
    let mut ids: Vec<i64> = rows_as_json(&batches)
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

fn assert_exactly_once(dir: &Path, total: i64) {
    let ids = committed_ids(dir);
    let unique: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "duplicated rows");
    assert_eq!(unique, (0..total).collect(), "lost or extra rows");
}

/// The `pid` of the last "plugin started"/"plugin restarted" log line.
fn plugin_pid(lines: &[String]) -> Option<i32> {
    lines
        .iter()
        .filter(|l| l.contains("plugin started") || l.contains("plugin restarted"))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            v["pid"]
                .as_i64()
                .or_else(|| v["fields"]["pid"].as_i64())
                .map(|p| p as i32)
        })
        .next_back()
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
}

fn logs_text(exit: &Exit) -> String {
    exit.lines.join("\n")
}

#[test]
fn the_runner_sigkilled_at_random_moments_then_rerun_commits_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    counter(dir.path());
    let total = 3000;
    let spec = spec(
        dir.path(),
        "counter",
        json!({"totalRows": total, "batchRows": 37, "delaySeconds": 0.01}),
    );
    let seed = seed_from_env("ARCANE_PLUGIN_TEST_SEED");
    eprintln!("seed {seed} (ARCANE_PLUGIN_TEST_SEED replays it)");
    let mut rng = SplitMix64(seed);
    for _ in 0..4 {
        let arcane = run(dir.path(), &spec, true, &[]);
        arcane.wait_for_log("plugin started");
        std::thread::sleep(Duration::from_millis(200 + rng.next_u64() % 1200));
        let pid = plugin_pid(&arcane.lines()).expect("plugin pid logged");
        arcane.signal(Signal::SIGKILL);
        let exit = arcane.wait();
        assert!(exit.code == -1 || exit.code == 0, "{exit:?}");
        // The plugin sees its stdin close and exits: no orphan.
        eventually("the orphaned plugin to exit", || !alive(pid));
    }
    let exit = run(dir.path(), &spec, true, &[]).wait();
    assert_eq!(exit.code, 0, "{}", logs_text(&exit));
    assert_exactly_once(dir.path(), total);
}

#[test]
fn a_plugin_killed_under_the_runner_is_restarted_and_nothing_is_lost_or_repeated() {
    let dir = tempfile::tempdir().unwrap();
    counter(dir.path());
    let total = 2000;
    let spec = spec(
        dir.path(),
        "counter",
        json!({"totalRows": total, "batchRows": 20, "delaySeconds": 0.02}),
    );
    let arcane = run(dir.path(), &spec, true, &[]);
    arcane.wait_for_log("plugin started");
    for round in 0..2 {
        std::thread::sleep(Duration::from_millis(500));
        let pid = plugin_pid(&arcane.lines()).expect("plugin pid logged");
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let restarted = arcane
            .lines()
            .iter()
            .filter(|l| l.contains("plugin restarted"))
            .count();
        eventually("the plugin to be restarted", || {
            arcane
                .lines()
                .iter()
                .filter(|l| l.contains("plugin restarted"))
                .count()
                > restarted
        });
        eprintln!("restart {round} seen");
    }
    let exit = arcane.wait();
    assert_eq!(exit.code, 0, "{}", logs_text(&exit));
    assert!(
        logs_text(&exit).contains("restarting it from the position after the last batch"),
        "each failure is logged with its cause"
    );
    assert_exactly_once(dir.path(), total);
}

#[test]
fn plugins_that_cannot_start_exit_1_naming_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "quitter",
            "sys.stderr.write('no config file\\n'); sys.exit(3)",
            "exited (exit code 3) before printing its handshake line",
        ),
        (
            "chatty",
            "print('Listening on port 8080', flush=True)\nimport time; time.sleep(30)",
            "instead of its handshake line",
        ),
        (
            "future",
            "print('ARCANE-PLUGIN|2|unix|/tmp/none.sock', flush=True)\nimport time; time.sleep(30)",
            "speaks plugin protocol version 2",
        ),
    ];
    for (name, body, expected) in cases {
        python_plugin(dir.path(), name, body);
        let exit = run(dir.path(), &spec(dir.path(), name, json!({})), true, &[]).wait();
        let text = logs_text(&exit);
        assert_eq!(exit.code, 1, "{name}: {text}");
        assert!(text.contains(expected), "{name}: {text}");
        assert!(text.contains(&format!("plugin {name}")), "{name}: {text}");
    }
    // A stderr line of the quitter is in the error, and in the logs tagged with its name.
    let exit = run(
        dir.path(),
        &spec(dir.path(), "quitter", json!({})),
        true,
        &[],
    )
    .wait();
    assert!(logs_text(&exit).contains("no config file"));
    assert!(exit.logs().iter().any(|l| {
        (l["plugin"] == "quitter" || l["fields"]["plugin"] == "quitter")
            && l.to_string().contains("no config file")
    }));

    // Missing and non-executable files.
    let exit = run(
        dir.path(),
        &spec(dir.path(), "missing", json!({})),
        true,
        &[],
    )
    .wait();
    assert_eq!(exit.code, 1);
    assert!(
        logs_text(&exit).contains("plugin missing"),
        "{}",
        logs_text(&exit)
    );
    std::fs::write(dir.path().join("plain"), "#!/bin/sh\n").unwrap();
    let exit = run(dir.path(), &spec(dir.path(), "plain", json!({})), true, &[]).wait();
    assert_eq!(exit.code, 1);
    assert!(
        logs_text(&exit).contains("is not executable"),
        "{}",
        logs_text(&exit)
    );
}

#[test]
fn a_hanging_plugin_exits_2_after_the_retry_budget() {
    let dir = tempfile::tempdir().unwrap();
    // Answers the handshake, never GetSchema.
    python_plugin(
        dir.path(),
        "stuck",
        "import time, pyarrow as pa\nfrom arcane_plugin import Plugin, serve\nclass P(Plugin):\n    def schema(self, config):\n        time.sleep(3600)\nserve(P())",
    );
    let mut spec = spec(dir.path(), "stuck", json!({}));
    spec["source"]["requestTimeout"] = json!("1s");
    spec["source"]["retry"]["maxAttempts"] = json!(2);
    let exit = run(dir.path(), &spec, true, &[]).wait();
    let text = logs_text(&exit);
    assert_eq!(exit.code, 2, "{text}");
    assert!(text.contains("gave up after 2 attempts"), "{text}");
    assert!(text.contains("GetSchema got no answer within 1s"), "{text}");

    // Never prints its handshake.
    python_plugin(dir.path(), "mute", "import time; time.sleep(3600)");
    let mut spec = super_spec(dir.path(), "mute");
    spec["source"]["handshakeTimeout"] = json!("1s");
    let exit = run(dir.path(), &spec, true, &[]).wait();
    let text = logs_text(&exit);
    assert_eq!(exit.code, 2, "{text}");
    assert!(
        text.contains("printed no handshake line within 1s"),
        "{text}"
    );
}

fn super_spec(dir: &Path, name: &str) -> Value {
    let mut s = spec(dir, name, json!({}));
    s["source"]["retry"]["maxAttempts"] = json!(2);
    s
}

#[test]
fn a_permanent_plugin_error_exits_1_with_its_message_and_a_wrong_schema_is_named() {
    let dir = tempfile::tempdir().unwrap();
    python_plugin(
        dir.path(),
        "denied",
        "import pyarrow as pa\nfrom arcane_plugin import PermanentError, Plugin, serve\nclass P(Plugin):\n    def schema(self, config):\n        return pa.schema([('id', pa.int64())])\n    def read(self, config, position):\n        raise PermanentError('the API token is invalid: set PLUGIN_DENIED_TOKEN')\n        yield\nserve(P())",
    );
    let exit = run(
        dir.path(),
        &spec(dir.path(), "denied", json!({})),
        true,
        &[],
    )
    .wait();
    let text = logs_text(&exit);
    assert_eq!(exit.code, 1, "{text}");
    assert!(
        text.contains("the API token is invalid: set PLUGIN_DENIED_TOKEN"),
        "{text}"
    );
    assert!(text.contains("plugin denied"), "{text}");

    // GetSchema says one schema, DoGet sends another.
    python_plugin(
        dir.path(),
        "shifty",
        "import pyarrow as pa\nfrom arcane_plugin import Plugin, serve\nclass P(Plugin):\n    calls = 0\n    def schema(self, config):\n        self.calls += 1\n        return pa.schema([('id', pa.int64())]) if self.calls == 1 else pa.schema([('id', pa.string())])\n    def read(self, config, position):\n        yield pa.record_batch([pa.array(['a'])], names=['id']), 1\nserve(P())",
    );
    let exit = run(
        dir.path(),
        &spec(dir.path(), "shifty", json!({})),
        true,
        &[],
    )
    .wait();
    let text = logs_text(&exit);
    assert_eq!(exit.code, 1, "{text}");
    assert!(text.contains("plugin shifty"), "{text}");
    assert!(text.contains("but GetSchema said"), "{text}");
}

#[test]
fn only_the_plugins_own_variables_reach_it_and_secrets_are_not_logged() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env.json");
    python_plugin(
        dir.path(),
        "env-probe",
        "import json, os, pyarrow as pa\nfrom arcane_plugin import Plugin, serve\nclass P(Plugin):\n    def schema(self, config):\n        return pa.schema([('id', pa.int64())])\n    def read(self, config, position):\n        json.dump(dict(os.environ), open(config['envFile'], 'w'))\n        yield pa.record_batch([pa.array([0], pa.int64())], names=['id']), 1\nserve(P())",
    );
    let spec = spec(
        dir.path(),
        "env-probe",
        json!({"envFile": env_file.to_str().unwrap()}),
    );
    let exit = run(
        dir.path(),
        &spec,
        true,
        &[
            ("PLUGIN_ENV_PROBE_TOKEN", "s3cret-value"),
            ("PLUGIN_OTHER_TOKEN", "not-for-this-plugin"),
            ("AWS_SECRET_ACCESS_KEY", "store-key"),
        ],
    )
    .wait();
    let text = logs_text(&exit);
    assert_eq!(exit.code, 0, "{text}");
    let env: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(&env_file).unwrap()).unwrap();
    assert_eq!(
        env.get("PLUGIN_ENV_PROBE_TOKEN").map(String::as_str),
        Some("s3cret-value")
    );
    assert!(!env.contains_key("PLUGIN_OTHER_TOKEN"), "{env:?}");
    assert!(!env.contains_key("AWS_SECRET_ACCESS_KEY"), "{env:?}");
    assert!(!env.contains_key("ARCANE_PLUGIN_DIR"), "{env:?}");
    assert!(env.contains_key("PATH"));
    assert!(!text.contains("s3cret-value"), "a secret was logged");
    assert!(
        text.contains("PLUGIN_ENV_PROBE_TOKEN"),
        "the names passed are logged"
    );
    assert_eq!(committed_ids(dir.path()), [0]);
}

#[test]
fn sigterm_drains_commits_and_sends_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    counter(dir.path());
    let spec = spec(
        dir.path(),
        "counter",
        json!({"totalRows": 1_000_000, "batchRows": 10, "delaySeconds": 0.02}),
    );
    let arcane = run(dir.path(), &spec, false, &[]);
    arcane.wait_for_log("plugin started");
    std::thread::sleep(Duration::from_millis(1500));
    let pid = plugin_pid(&arcane.lines()).expect("plugin pid");
    arcane.signal(Signal::SIGTERM);
    let exit = arcane.wait();
    let text = logs_text(&exit);
    assert_eq!(exit.code, 0, "{text}");
    assert!(text.contains("arcane_plugin: shutdown requested"), "{text}");
    assert!(text.contains("plugin stopped"), "{text}");
    assert!(!alive(pid), "the plugin exited");
    let ids = committed_ids(dir.path());
    assert!(!ids.is_empty());
    assert_eq!(
        ids,
        (0..ids.len() as i64).collect::<Vec<_>>(),
        "a prefix, once each"
    );
    // The next run goes on where the drain stopped.
    let mut spec = spec;
    spec["source"]["config"]["totalRows"] = json!(ids.len() as i64 + 50);
    spec["source"]["config"]["delaySeconds"] = json!(0);
    let exit = run(dir.path(), &spec, true, &[]).wait();
    assert_eq!(exit.code, 0, "{}", logs_text(&exit));
    assert_exactly_once(dir.path(), ids.len() as i64 + 50);
}

fn check(path: &Path, config: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_arcane"))
        .args([
            "plugin",
            "check",
            path.to_str().unwrap(),
            "--config",
            config,
        ])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn plugin_check_passes_on_the_examples_and_names_the_failed_check() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = check(
        &counter(dir.path()),
        r#"{"totalRows": 250, "batchRows": 30}"#,
    );
    assert_eq!(code, 0, "{out}");
    for step in [
        "handshake",
        "schema",
        "read",
        "resume",
        "commit",
        "shutdown",
        "restart",
    ] {
        assert!(out.contains(&format!("PASS {step}")), "{step}: {out}");
    }

    // The Rust example, built with the workspace's examples.
    let rust = Path::new(env!("CARGO_BIN_EXE_arcane"))
        .parent()
        .unwrap()
        .join("examples/counter-plugin");
    assert!(
        rust.exists(),
        "{} is not built: cargo build -p arcane-plugin --examples",
        rust.display()
    );
    let (code, out) = check(&rust, r#"{"totalRows": 250, "batchRows": 30}"#);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("PASS")).count(),
        7,
        "{out}"
    );

    // A plugin that ignores the resume position.
    let forgetful = python_plugin(
        dir.path(),
        "forgetful",
        "import pyarrow as pa\nfrom arcane_plugin import Plugin, serve\nclass P(Plugin):\n    def schema(self, config):\n        return pa.schema([('id', pa.int64())])\n    def read(self, config, position):\n        for i in range(0, 100, 10):\n            yield pa.record_batch([pa.array(range(i, i + 10), pa.int64())], names=['id']), i + 10\nserve(P())",
    );
    let (code, out) = check(&forgetful, "{}");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL resume"), "{out}");
    assert!(out.contains("yielded 100 rows"), "{out}");
}

#[test]
fn the_rust_example_plugin_lands_every_row_once_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let rust = Path::new(env!("CARGO_BIN_EXE_arcane"))
        .parent()
        .unwrap()
        .join("examples/counter-plugin");
    assert!(
        rust.exists(),
        "{} is not built: cargo build -p arcane-plugin --examples",
        rust.display()
    );
    let mut spec = spec(
        dir.path(),
        "unused",
        json!({"totalRows": 1234, "batchRows": 100}),
    );
    spec["source"]["plugin"] = Value::Null;
    spec["source"]["path"] = json!(rust.to_str().unwrap());
    let exit = run(dir.path(), &spec, true, &[]).wait();
    let text = logs_text(&exit);
    assert_eq!(exit.code, 0, "{text}");
    assert!(text.contains("arcane-plugin: shutdown requested"), "{text}");
    assert_exactly_once(dir.path(), 1234);
}
