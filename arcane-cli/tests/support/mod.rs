//! Running the `arcane` binary in tests: spawn it with a spec, stop it with a signal, read its
//! exit code, JSON logs and termination message, and read back what it committed.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// How long a test waits for anything.
pub const WAIT: Duration = Duration::from_secs(120);

/// The repository root (the quickstart's paths are relative to it).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A running `arcane` process; killed on drop if still running.
pub struct Arcane {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    termination_log: PathBuf,
    _dir: tempfile::TempDir,
}

/// How a process ended.
#[derive(Debug)]
pub struct Exit {
    /// The exit code (`-1` when killed by a signal).
    pub code: i32,
    /// Its stderr lines (JSON logs).
    pub lines: Vec<String>,
    /// The termination message (`Value::Null` when none was written).
    pub termination: Value,
}

impl Exit {
    /// The log lines as JSON objects.
    pub fn logs(&self) -> Vec<Value> {
        self.lines
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// `summary.<field>` of the termination message as a number.
    pub fn summary(&self, field: &str) -> u64 {
        self.termination["summary"][field]
            .as_u64()
            .unwrap_or_else(|| panic!("no summary.{field} in {}", self.termination))
    }
}

impl Arcane {
    /// `arcane ARGS` with JSON logs, no metrics endpoint and a termination message file, in
    /// `cwd`, with only `PATH` and `env` in its environment.
    pub fn spawn(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let termination_log = dir.path().join("termination-log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_arcane"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ARCANE_METRICS_ADDR", "off")
            .env("ARCANE_LOG_FORMAT", "json")
            .env("ARCANE_TERMINATION_LOG", &termination_log)
            .current_dir(cwd)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn arcane");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("lines").push(line);
            }
        });
        Self {
            child,
            lines,
            reader: Some(reader),
            termination_log,
            _dir: dir,
        }
    }

    /// `arcane run --spec SPEC ARGS`, with `spec` written to a file.
    pub fn run(cwd: &Path, spec: &Value, args: &[&str]) -> Self {
        Self::run_with_env(cwd, spec, args, &[])
    }

    /// [`Arcane::run`] with `env` added to the process's environment.
    pub fn run_with_env(cwd: &Path, spec: &Value, args: &[&str], env: &[(&str, &str)]) -> Self {
        let file = cwd.join(format!("spec-{}.json", uuid_like()));
        std::fs::write(&file, spec.to_string()).expect("write spec");
        let mut all = vec!["run", "--spec", file.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        Self::spawn(cwd, &all, env)
    }

    /// The address of the metrics endpoint, from its log line (start the process with
    /// `--metrics-addr 127.0.0.1:0`); waits for the line.
    pub fn metrics_addr(&self) -> String {
        let needle = "metrics endpoint listening";
        self.wait_for_log(needle);
        let line = self
            .lines()
            .into_iter()
            .find(|l| l.contains(needle))
            .expect("log line");
        let value: Value = serde_json::from_str(&line).expect("JSON log line");
        value["addr"]
            .as_str()
            .or_else(|| value["fields"]["addr"].as_str())
            .unwrap_or_else(|| panic!("no addr in {line}"))
            .to_string()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `signal`.
    pub fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), signal);
    }

    /// Lines logged so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// Wait until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        let start = Instant::now();
        while !self.lines().iter().any(|l| l.contains(needle)) {
            assert!(
                start.elapsed() < WAIT,
                "no log line with {needle:?} within {WAIT:?}: {:#?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How the process ended if it has, else the process back.
    pub fn try_exit(mut self) -> Result<Exit, Self> {
        match self.child.try_wait().expect("try_wait") {
            Some(_) => Ok(self.wait()),
            None => Err(self),
        }
    }

    /// Wait for the process to exit (killing it after [`WAIT`]).
    pub fn wait(mut self) -> Exit {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if start.elapsed() > WAIT {
                let _ = self.child.kill();
                panic!("arcane did not exit within {WAIT:?}: {:#?}", self.lines());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let termination = std::fs::read_to_string(&self.termination_log)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        Exit {
            code: status.code().unwrap_or(-1),
            lines: self.lines(),
            termination,
        }
    }
}

impl Drop for Arcane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}

/// The rows committed under `url` (through the sink's manifests).
pub fn read_committed(url: &str, options: &BTreeMap<String, String>) -> Vec<RecordBatch> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(arcane_sinks::read_committed(url, options))
        .expect("read committed")
}

/// The body of `GET http://ADDR/PATH` (HTTP/1.0, for the process's own endpoints).
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    match response.split_once("\r\n\r\n") {
        Some((_, body)) => body.to_string(),
        None => response,
    }
}

/// Poll `cond` every 50 ms until it holds (panics after [`WAIT`]).
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every row of `batches` as a JSON object (column → value), via arrow-json; timestamps are
/// written as their integer value (e.g. epoch milliseconds).
pub fn rows_as_json(batches: &[RecordBatch]) -> Vec<serde_json::Map<String, Value>> {
    let mut out = Vec::new();
    for b in batches {
        let columns: Vec<arrow_array::ArrayRef> = b
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                arrow_schema::DataType::Timestamp(..) => {
                    arrow_cast::cast(c, &arrow_schema::DataType::Int64).expect("cast timestamp")
                }
                _ => c.clone(),
            })
            .collect();
        let fields: Vec<arrow_schema::Field> = b
            .schema()
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
            .collect();
        let b = &RecordBatch::try_new(
            std::sync::Arc::new(arrow_schema::Schema::new(fields)),
            columns,
        )
        .expect("batch");
        let mut buf = Vec::new();
        {
            let mut w = arrow_json::ArrayWriter::new(&mut buf);
            w.write(b).expect("write json");
            w.finish().expect("finish json");
        }
        if buf.is_empty() {
            continue;
        }
        let rows: Vec<serde_json::Map<String, Value>> =
            serde_json::from_slice(&buf).expect("json rows");
        out.extend(rows);
    }
    out
}

/// Every row of the `.parquet` files directly in `dir` (e.g. a dead-letter location), as JSON.
pub fn read_parquet_dir(dir: &Path) -> Vec<serde_json::Map<String, Value>> {
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "parquet") {
            let file = std::fs::File::open(&path).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .build()
                    .unwrap();
            let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
            rows.extend(rows_as_json(&batches));
        }
    }
    rows
}

/// Whether the tests run as root (mounting a tmpfs, creating a memory cgroup); /proc/self
/// belongs to the process's effective user.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// What a one-trial reliability check (a full disk, a memory limit) found, for the table of
/// `RELIABILITY.md`: runs, records lost, duplicated and extra against the input, and runs whose
/// exit or message was not the documented one.
#[derive(Debug, Default)]
pub struct OneTrial {
    pub runs: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub extra: u64,
    pub bad_exits: Vec<String>,
}

impl OneTrial {
    /// Count `ids` (the committed ids) against `0..total`.
    pub fn count_ids(&mut self, mut ids: Vec<i64>, total: u64) {
        ids.sort_unstable();
        let all = ids.len();
        ids.dedup();
        self.duplicated += (all - ids.len()) as u64;
        let inside = ids
            .iter()
            .filter(|&&i| i >= 0 && (i as u64) < total)
            .count();
        self.extra += (ids.len() - inside) as u64;
        self.lost += total - inside as u64;
    }

    /// Append this trial's JSON line (the oracle's format) to `ARCANE_RELIABILITY_OUT` when it
    /// is set (`scripts/reliability.sh` sets it).
    pub fn report(&self, kind: &str, fault: &str, seconds: f64) {
        let line = serde_json::json!({
            "kind": kind, "fault": fault, "trials": 1, "runs": self.runs, "signals": 0,
            "lost": self.lost, "duplicated": self.duplicated, "extra": self.extra,
            "deadLetters": 0, "badExits": self.bad_exits.len(), "seconds": seconds.round(),
            "seed": "none (deterministic)",
        });
        if let Ok(out) = std::env::var("ARCANE_RELIABILITY_OUT") {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(out)
                .expect("open ARCANE_RELIABILITY_OUT");
            writeln!(f, "{line}").expect("append the result");
        }
    }
}

/// `arcane show URL --limit 0` (the stream's state, without rows), asserting it succeeds.
#[allow(dead_code)]
pub fn show(url: &str, options: &BTreeMap<String, String>) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_arcane"));
    cmd.args(["show", url, "--limit", "0"]);
    for (k, v) in options {
        cmd.args(["--storage-option", &format!("{k}={v}")]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}
