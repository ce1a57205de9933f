//! Process-level tests: the `arcane-runner-fixture` binary (generator → durable NDJSON
//! directory) run as a child process, stopped with SIGTERM/SIGINT at random moments; exit codes,
//! termination messages, JSON logs, `/metrics` and the committed files are checked.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arcane_runner::fixture::committed_ids;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// A running fixture process; killed on drop if still running.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    termination_log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Run {
    code: i32,
    lines: Vec<String>,
    termination: Value,
}

impl Run {
    fn logs(&self) -> Vec<Value> {
        self.lines
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))
            })
            .collect()
    }
}

fn spawn(work: &Path, spec: Value, args: &[&str], env: &[(&str, String)]) -> Proc {
    let termination_log = work.join(format!("termination-{}.log", nanos()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_arcane-runner-fixture"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STREAMCONTEXT__SPEC", spec.to_string())
        .env("STREAMCONTEXT__STREAM_ID", "orders")
        .env("STREAMCONTEXT__STREAM_KIND", "fixture")
        .env("APPLICATION_VERSION", "9.9.9")
        .env("ARCANE__LOGGING_PROPERTIES", r#"{"team":"ingest"}"#)
        .env("ARCANE_METRICS_ADDR", "127.0.0.1:0")
        .env("ARCANE_LOG_FORMAT", "json")
        .env("ARCANE_TERMINATION_LOG", &termination_log)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    Proc {
        child,
        lines,
        reader: Some(reader),
        termination_log,
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A pseudo-random duration below `max` (no fixed schedule between runs).
fn random_below(max: Duration) -> Duration {
    let n = nanos() as u64;
    let x = n ^ (n >> 17) ^ (n << 7);
    Duration::from_millis(x % (max.as_millis() as u64).max(1))
}

fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Proc {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).unwrap();
    }

    fn log_line(&self, pred: impl Fn(&Value) -> bool) -> Value {
        poll("a log line", || {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| pred(v))
        })
    }

    fn endpoint(&self) -> SocketAddr {
        let line = self.log_line(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("metrics endpoint listening"))
        });
        line["addr"].as_str().unwrap().parse().unwrap()
    }

    fn wait_ready(&self) -> SocketAddr {
        let addr = self.endpoint();
        poll("/readyz", || {
            (http_get(addr, "/readyz").0 == 200).then_some(())
        });
        addr
    }

    fn wait(mut self) -> Run {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < WAIT, "process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        let lines = self.lines.lock().unwrap().clone();
        let text = std::fs::read_to_string(&self.termination_log).unwrap_or_else(|e| {
            panic!("no termination message ({e}); logs:\n{}", lines.join("\n"))
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        Run {
            code: status.code().unwrap_or(-1),
            lines,
            termination: serde_json::from_str(text.trim_end()).unwrap(),
        }
    }
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let status = buf.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the first sample of `name` whose labels contain every `labels` pair.
fn metric(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn rows_committed(run: &Run) -> u64 {
    run.termination["summary"]["rowsCommitted"]
        .as_u64()
        .unwrap()
}

fn assert_exactly_once(dir: &Path, expected_rows: u64) {
    let ids = committed_ids(dir).unwrap();
    assert_eq!(
        ids.len() as u64,
        expected_rows,
        "rows on disk vs rows reported committed"
    );
    let expected: Vec<i64> = (0..expected_rows as i64).collect();
    assert_eq!(
        ids, expected,
        "rows on disk must be 0..{expected_rows} exactly once, in order"
    );
}

fn assert_logs_are_json_with_identity(run: &Run) {
    let logs = run.logs();
    assert!(!logs.is_empty());
    for l in &logs {
        assert_eq!(l["streamId"], "orders", "{l}");
        assert_eq!(l["streamKind"], "fixture", "{l}");
        assert_eq!(l["ApplicationVersion"], "9.9.9", "{l}");
        assert_eq!(l["team"], "ingest", "{l}");
        assert!(l["level"].is_string() && l["timestamp"].is_string(), "{l}");
    }
}

#[test]
fn sigterm_at_random_moments_commits_everything_reported_and_reruns_resume_without_loss_or_duplicates()
 {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let spec =
        json!({"dir": data, "batchRows": 7, "pauseMs": 2, "groupRows": 40, "groupIntervalMs": 50});
    let mut total = 0;
    for round in 0..3 {
        let p = spawn(work.path(), spec.clone(), &[], &[]);
        let addr = p.wait_ready();
        std::thread::sleep(random_below(Duration::from_millis(400)));
        if round == 0 {
            // Metrics of the running stream, with their labels.
            let body = poll("a commit in /metrics", || {
                let (_, body) = http_get(addr, "/metrics");
                metric(&body, "arcane_stream_rows_written", &[("kind", "fixture")])
                    .filter(|v| *v > 0.0)
                    .map(|_| body)
            });
            let labels = [
                ("kind", "fixture"),
                ("mode", "stream"),
                ("stream_id", "orders"),
            ];
            assert!(
                metric(&body, "arcane_stream_rows_written", &labels).unwrap() > 0.0,
                "{body}"
            );
            assert!(
                metric(&body, "arcane_stream_rows_incoming", &labels).unwrap() > 0.0,
                "{body}"
            );
            assert!(
                metric(&body, "arcane_stream_files_committed", &labels).unwrap() > 0.0,
                "{body}"
            );
            assert!(
                body.contains("# TYPE arcane_stream_rows_written counter"),
                "{body}"
            );
            assert_eq!(http_get(addr, "/healthz").0, 200);
        }
        p.signal(Signal::SIGTERM);
        let run = p.wait();
        assert_eq!(run.code, 0, "round {round}: {}", run.termination);
        assert_eq!(run.termination["reason"], "shutDown");
        assert_eq!(run.termination["status"], "SUCCESS");
        assert_eq!(run.termination["summary"]["rowsUncommitted"], 0);
        assert_eq!(run.termination["streamId"], "orders");
        if round > 0 {
            assert!(
                !run.termination["summary"]["resumedFrom"].is_null(),
                "round {round} resumes"
            );
        }
        total += rows_committed(&run);
        assert_exactly_once(&data, total);
        assert_logs_are_json_with_identity(&run);
        let last = run.logs().pop().unwrap();
        assert_eq!(last["exit_code"], 0);
        assert_eq!(last["rows_committed"], rows_committed(&run));
    }
    assert!(total > 0);
}

#[test]
fn sigterm_during_backfill_exits_restart_and_the_same_backfill_id_resumes_to_completion() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let total = 20_000;
    let spec =
        json!({"dir": data, "totalRows": total, "batchRows": 10, "pauseMs": 2, "groupRows": 100});
    let args = ["--backfill", "--backfill-id", "bf-1"];
    let p = spawn(work.path(), spec.clone(), &args, &[]);
    p.wait_ready();
    poll("a first commit", || {
        data.join("checkpoint.json").exists().then_some(())
    });
    std::thread::sleep(random_below(Duration::from_millis(300)));
    p.signal(Signal::SIGTERM);
    let run = p.wait();
    assert_eq!(run.code, 2, "{}", run.termination);
    assert_eq!(run.termination["reason"], "stoppedDuringBackfill");
    assert_eq!(run.termination["backfillId"], "bf-1");
    assert_eq!(run.termination["mode"], "backfill");
    let first = rows_committed(&run);
    assert!(first < total);
    assert_exactly_once(&data, first);
    assert!(run.logs().iter().all(|l| l["BackfillId"] == "bf-1"));

    let run = spawn(work.path(), spec, &args, &[]).wait();
    assert_eq!(run.code, 0, "{}", run.termination);
    assert_eq!(run.termination["reason"], "finished");
    assert_eq!(first + rows_committed(&run), total);
    assert_exactly_once(&data, total);
}

#[test]
fn drain_deadline_with_uncommitted_rows_exits_restart_and_nothing_is_lost() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    // The sink only commits on flush, and its flush outlasts the drain deadline.
    let slow = json!({"dir": data, "batchRows": 10, "pauseMs": 2, "groupRows": 20,
                      "commitEvery": 1000000, "flushDelayMs": 60000});
    let p = spawn(work.path(), slow, &["--drain-timeout", "300ms"], &[]);
    let addr = p.wait_ready();
    poll("rows read", || {
        metric(
            &http_get(addr, "/metrics").1,
            "arcane_stream_rows_incoming",
            &[("kind", "fixture")],
        )
        .filter(|v| *v > 0.0)
    });
    p.signal(Signal::SIGTERM);
    let run = p.wait();
    assert_eq!(run.code, 2, "{}", run.termination);
    assert_eq!(run.termination["reason"], "drainTimeout");
    assert_eq!(run.termination["errorKind"], "Aborted");
    assert!(
        run.termination["message"]
            .as_str()
            .unwrap()
            .contains("drain deadline of 300ms")
    );
    assert!(
        run.termination["summary"]["rowsUncommitted"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(rows_committed(&run), 0);
    assert_exactly_once(&data, 0);

    // The rows read but not committed were not acked: a normal run starts from row 0.
    let spec = json!({"dir": data, "totalRows": 300, "pauseMs": 0});
    let run = spawn(work.path(), spec, &[], &[]).wait();
    assert_eq!(run.code, 0, "{}", run.termination);
    assert_exactly_once(&data, 300);
}

#[test]
fn a_second_signal_aborts_the_drain_at_once() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let slow = json!({"dir": data, "batchRows": 10, "pauseMs": 2, "groupRows": 20,
                      "commitEvery": 1000000, "flushDelayMs": 600000});
    let p = spawn(work.path(), slow, &["--drain-timeout", "10m"], &[]);
    let addr = p.wait_ready();
    poll("rows read", || {
        metric(
            &http_get(addr, "/metrics").1,
            "arcane_stream_rows_incoming",
            &[("kind", "fixture")],
        )
        .filter(|v| *v > 0.0)
    });
    p.signal(Signal::SIGTERM);
    p.log_line(|v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("shutting down"))
    });
    assert_eq!(http_get(addr, "/readyz").0, 503, "not ready while stopping");
    p.signal(Signal::SIGINT);
    let run = p.wait();
    assert_eq!(run.code, 2, "{}", run.termination);
    assert_eq!(run.termination["reason"], "aborted");
    assert!(
        run.termination["message"]
            .as_str()
            .unwrap()
            .starts_with("second signal SIGINT")
    );
}

fn kube_env(addr: SocketAddr, dir: &Path) -> Vec<(&'static str, String)> {
    let token = dir.join("token");
    std::fs::write(&token, "process-test-token").unwrap();
    vec![
        ("ARCANE_KUBE_API_URL", format!("http://{addr}")),
        ("ARCANE_KUBE_TOKEN_FILE", token.display().to_string()),
        ("POD_NAMESPACE", "streams".into()),
        ("ARCANE_JOB_NAME", "orders-abc12".into()),
    ]
}

#[test]
fn schema_mismatch_annotates_the_job_and_exits_success() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let (addr, requests) = support::kube_stand_in(200);
    let spec = json!({"dir": data, "totalRows": 1000, "pauseMs": 0, "groupRows": 50,
                      "failAfterRows": 100, "failWith": "schemaMismatch"});
    let run = spawn(work.path(), spec, &[], &kube_env(addr, work.path())).wait();
    assert_eq!(run.code, 0, "{}", run.termination);
    assert_eq!(run.termination["reason"], "schemaMismatch");
    assert_eq!(run.termination["errorKind"], "SchemaMismatch");
    let req = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(req.method, "PATCH");
    assert_eq!(
        req.path,
        "/apis/batch/v1/namespaces/streams/jobs/orders-abc12"
    );
    assert_eq!(
        req.header("content-type"),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        req.header("authorization"),
        Some("Bearer process-test-token")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&req.body).unwrap(),
        json!({"metadata": {"annotations": {"arcane.streaming.sneaksanddata.com/state": "schema-mismatch"}}})
    );
    assert!(run.logs().iter().any(|l| l["message"] == "Job annotated"));
    assert_exactly_once(&data, rows_committed(&run));
}

#[test]
fn schema_mismatch_with_a_refused_annotation_exits_fatal_with_a_clear_log() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let (addr, requests) = support::kube_stand_in(403);
    let spec = json!({"dir": data, "totalRows": 1000, "pauseMs": 0,
                      "failAfterRows": 100, "failWith": "schemaMismatch"});
    let mut env = kube_env(addr, work.path());
    env.push(("ARCANE_JOB_ANNOTATION_KEY", "example.com/state".into()));
    let run = spawn(work.path(), spec, &[], &env).wait();
    assert_eq!(run.code, 1, "{}", run.termination);
    assert_eq!(run.termination["reason"], "annotationFailed");
    let req = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&req.body).unwrap(),
        json!({"metadata": {"annotations": {"example.com/state": "schema-mismatch"}}})
    );
    let logs = run.logs();
    let refused = logs
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("cannot annotate the Job"))
        })
        .expect("a log line saying the annotation failed");
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("403") && error.contains("streams/orders-abc12"),
        "{error}"
    );
    assert!(
        !run.lines.join("\n").contains("process-test-token"),
        "the token must never be logged"
    );
}

#[test]
fn invalid_settings_and_specs_exit_fatal_naming_the_setting() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let spec = json!({"dir": data, "totalRows": 10});
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, String)>, Value, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            vec![],
            vec![("ARCANE_DRAIN_TIMEOUT", "soon".into())],
            spec.clone(),
            "ARCANE_DRAIN_TIMEOUT (--drain-timeout): invalid duration",
        ),
        (
            vec![],
            vec![("STREAMCONTEXT__BACKFILL", "maybe".into())],
            spec.clone(),
            "STREAMCONTEXT__BACKFILL: expected true or false",
        ),
        (
            vec![],
            vec![],
            json!({"dir": data, "totalRows": 10, "bogus": 1}),
            "spec.bogus: unknown field `bogus`",
        ),
        (
            vec![],
            vec![],
            json!({"dir": data, "failWith": "buildConfig"}),
            "spec.failWith: the fixture refuses to build",
        ),
        (
            vec![],
            vec![],
            json!({"dir": data, "failWith": "buildPanic"}),
            "the stream graph builder panicked: fixture builder panics as asked",
        ),
        (
            vec!["--metrics-addr", "nonsense"],
            vec![],
            spec.clone(),
            "ARCANE_METRICS_ADDR (--metrics-addr): invalid address",
        ),
    ];
    for (args, env, spec, message) in cases {
        let run = spawn(work.path(), spec, &args, &env).wait();
        assert_eq!(run.code, 1, "{message}: {}", run.termination);
        let got = run.termination["message"].as_str().unwrap();
        assert!(
            got.starts_with(message),
            "expected {message:?}, got {got:?}"
        );
        assert!(
            run.logs().iter().any(|l| l["level"] == "ERROR"),
            "the failure is logged"
        );
    }
    // A flag the binary does not know is FATAL too (not clap's 2, which would mean RESTART).
    let status = Command::new(env!("CARGO_BIN_EXE_arcane-runner-fixture"))
        .arg("--no-such-flag")
        .env("ARCANE_TERMINATION_LOG", work.path().join("t"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
}

#[test]
fn errors_map_to_exit_codes_and_the_binary_classifies_its_own() {
    let work = tempfile::tempdir().unwrap();
    let cases = [
        ("schemaInconsistent", 2, "failed", "SchemaInconsistent"),
        ("fatal", 1, "failed", "Fatal"),
        ("custom", 2, "classified", "Source"),
    ];
    for (i, (fail_with, code, reason, kind)) in cases.into_iter().enumerate() {
        let data = work.path().join(format!("data-{i}"));
        let spec = json!({"dir": data, "totalRows": 500, "pauseMs": 0, "failAfterRows": 100, "failWith": fail_with});
        let run = spawn(work.path(), spec, &[], &[]).wait();
        assert_eq!(run.code, code, "{fail_with}: {}", run.termination);
        assert_eq!(run.termination["reason"], reason);
        assert_eq!(run.termination["errorKind"], kind);
        assert_exactly_once(&data, rows_committed(&run));
    }
}

#[test]
fn help_documents_every_setting_with_its_environment_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_arcane-runner-fixture"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    let vars = [
        "STREAMCONTEXT__SPEC",
        "STREAMCONTEXT__STREAM_ID",
        "STREAMCONTEXT__STREAM_KIND",
        "STREAMCONTEXT__BACKFILL",
        "STREAMCONTEXT__BACKFILL_ID",
        "STREAMCONTEXT__OVERRIDE",
        "APPLICATION_VERSION",
        "ARCANE__LOGGING_PROPERTIES",
        "ARCANE_DRAIN_TIMEOUT",
        "ARCANE_METRICS_ADDR",
        "ARCANE_DOGSTATSD_ADDR",
        "ARCANE_TERMINATION_LOG",
        "ARCANE_LOG_FORMAT",
        "RUST_LOG",
        "ARCANE_JOB_ANNOTATION_KEY",
        "POD_NAMESPACE",
        "ARCANE_JOB_NAME",
        "ARCANE_KUBE_API_URL",
        "ARCANE_KUBE_TOKEN_FILE",
        "ARCANE_KUBE_CA_FILE",
    ];
    for var in vars {
        assert!(
            help.contains(&format!("[env: {var}")),
            "--help lacks {var}:\n{help}"
        );
    }
    assert!(help.contains("2 RESTART"), "{help}");
}

#[test]
fn parquet_sink_sigterm_at_random_moments_then_rerun_resumes_exactly_once() {
    let work = tempfile::tempdir().unwrap();
    let url = format!("file://{}/parquet", work.path().display());
    std::fs::create_dir_all(work.path().join("parquet")).unwrap();
    let spec = json!({"parquet": {"url": url, "rolling": {"maxRowsPerFile": 200}},
                      "batchRows": 7, "pauseMs": 2, "groupRows": 40, "groupIntervalMs": 50});
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut total = 0;
    for round in 0..2 {
        let p = spawn(work.path(), spec.clone(), &[], &[]);
        p.wait_ready();
        std::thread::sleep(random_below(Duration::from_millis(500)));
        p.signal(Signal::SIGTERM);
        let run = p.wait();
        assert_eq!(run.code, 0, "round {round}: {}", run.termination);
        assert_eq!(run.termination["summary"]["rowsUncommitted"], 0);
        total += rows_committed(&run);
        let ids = rt
            .block_on(arcane_runner::fixture::committed_parquet_ids(&url))
            .unwrap();
        let expected: Vec<i64> = (0..total as i64).collect();
        assert_eq!(
            ids, expected,
            "round {round}: committed rows exactly once, in order"
        );
    }
}
