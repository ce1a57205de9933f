//! The plugin conformance harness behind `arcane plugin check`: runs a plugin through the
//! protocol and reports one result per check, so that plugin authors test their plugins.
//!
//! The checks, in order (a failed check skips those that need it):
//!
//! | check | passes when |
//! |---|---|
//! | `handshake` | the plugin prints a valid handshake line and accepts a connection |
//! | `schema` | `GetSchema` answers for the config |
//! | `read` | `DoGet` from no position ends (within the row limit) with at least 2 batches, each of the declared schema and with a JSON position as `app_metadata` |
//! | `resume` | `DoGet` from the position after the first half of the batches yields exactly the rows after it |
//! | `commit` | `DoAction("commit", position)` succeeds |
//! | `shutdown` | `DoAction("shutdown")` succeeds and the process exits in time |
//! | `restart` | a new process resumes from the same position with the same rows |

use std::path::Path;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_flight::decode::DecodedPayload;
use arrow_schema::SchemaRef;
use futures::StreamExt;
use serde_json::Value;

use super::{Failure, PluginConfig, Running, launch};

/// The most rows the `read` check reads before it gives up waiting for the end.
pub const DEFAULT_CHECK_MAX_ROWS: usize = 1_000_000;

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The check (`handshake`, `schema`, ...).
    pub check: &'static str,
    /// Whether it passed.
    pub passed: bool,
    /// What was seen, or what failed.
    pub detail: String,
}

impl std::fmt::Display for CheckResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.passed { "PASS" } else { "FAIL" };
        write!(f, "{verdict} {:<9} {}", self.check, self.detail)
    }
}

struct Checks(Vec<CheckResult>);

impl Checks {
    fn pass(&mut self, check: &'static str, detail: impl Into<String>) {
        self.0.push(CheckResult {
            check,
            passed: true,
            detail: detail.into(),
        });
    }
    fn fail(&mut self, check: &'static str, detail: impl Into<String>) -> Vec<CheckResult> {
        self.0.push(CheckResult {
            check,
            passed: false,
            detail: detail.into(),
        });
        std::mem::take(&mut self.0)
    }
}

fn failure_text(f: Failure) -> String {
    match f {
        Failure::Fatal(e) => e.report(),
        Failure::Retry(m) => m,
    }
}

/// Run the checks on the plugin executable at `path` with `config` (the plugin's own
/// settings). Stops at the first failed check (the result is the last line).
pub async fn check_plugin(path: &Path, config: Value, max_rows: usize) -> Vec<CheckResult> {
    let mut checks = Checks(Vec::new());
    let mut settings = PluginConfig::at_path(path.to_string_lossy());
    settings.handshake_timeout = Duration::from_secs(10);
    settings.request_timeout = Duration::from_secs(10);
    settings.read_timeout = Duration::from_secs(10);
    let source = match settings.source() {
        Ok(s) => s,
        Err(e) => return checks.fail("handshake", e.report()),
    };
    let launch_spec = source.launch.clone();
    let timeout = settings.request_timeout;
    // handshake + schema
    let process = match super::process::PluginProcess::start(&launch_spec).await {
        Ok(p) => p,
        Err(super::process::StartError::Fatal(e)) => return checks.fail("handshake", e.report()),
        Err(super::process::StartError::Exited(m) | super::process::StartError::Failed(m)) => {
            return checks.fail("handshake", m);
        }
    };
    let client = match super::client::PluginClient::connect(
        &launch_spec.name,
        &process.handshake.socket,
        timeout,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => return checks.fail("handshake", failure_text(e.into())),
    };
    checks.pass(
        "handshake",
        format!(
            "protocol {}, socket {}",
            process.handshake.version,
            process.handshake.socket.display()
        ),
    );
    let running = Running { process, client };
    let schema = match running.client.schema(&config).await {
        Ok(s) => s,
        Err(e) => return checks.fail("schema", failure_text(e.into())),
    };
    checks.pass(
        "schema",
        format!("{} columns: {schema}", schema.fields().len()),
    );

    // read everything from the start
    let all = match read_all(
        &running,
        &config,
        None,
        &schema,
        max_rows,
        settings.read_timeout,
    )
    .await
    {
        Ok(b) => b,
        Err(m) => return checks.fail("read", m),
    };
    if all.len() < 2 {
        return checks.fail(
            "read",
            format!("the plugin sent {} batch(es); the resume check needs at least 2: give a --config that yields more", all.len()),
        );
    }
    let rows: usize = all.iter().map(|(b, _)| b.num_rows()).sum();
    checks.pass(
        "read",
        format!("{} batches, {rows} rows from the start", all.len()),
    );

    // resume from the middle
    let middle = all.len() / 2;
    let position = all[middle - 1].1.clone();
    let expected: Vec<RecordBatch> = all[middle..].iter().map(|(b, _)| b.clone()).collect();
    if let Err(m) = check_resume(
        &running,
        &config,
        &position,
        &schema,
        &expected,
        max_rows,
        settings.read_timeout,
    )
    .await
    {
        return checks.fail("resume", m);
    }
    checks.pass(
        "resume",
        format!(
            "from position {position}: exactly the {} rows after it",
            count(&expected)
        ),
    );

    // commit
    let body = serde_json::to_vec(&position).unwrap_or_default();
    if let Err(e) = running.client.action("commit", body).await {
        return checks.fail("commit", failure_text(e.into()));
    }
    checks.pass("commit", format!("position {position} acknowledged"));

    // shutdown
    if let Err(e) = running.client.action("shutdown", Vec::new()).await {
        return checks.fail("shutdown", failure_text(e.into()));
    }
    let Running { process, client } = running;
    drop(client);
    let mut process = process;
    match process.exit_status(settings.shutdown_timeout).await {
        Some(status) => checks.pass("shutdown", format!("the plugin exited ({status})")),
        None => {
            process.kill().await;
            return checks.fail(
                "shutdown",
                format!(
                    "the plugin did not exit within {:?} after the shutdown action",
                    settings.shutdown_timeout
                ),
            );
        }
    }

    // restart: a new process, the same rows from the same position
    let (running, _) = match launch(&launch_spec, &config, timeout, false).await {
        Ok(r) => r,
        Err(f) => return checks.fail("restart", failure_text(f)),
    };
    let restarted = check_resume(
        &running,
        &config,
        &position,
        &schema,
        &expected,
        max_rows,
        settings.read_timeout,
    )
    .await;
    let _ = running.client.action("shutdown", Vec::new()).await;
    running.process.stop(settings.shutdown_timeout).await;
    match restarted {
        Ok(()) => checks.pass(
            "restart",
            "a new process resumed from the same position with the same rows",
        ),
        Err(m) => return checks.fail("restart", m),
    }
    checks.0
}

fn count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

async fn check_resume(
    running: &Running,
    config: &Value,
    position: &Value,
    schema: &SchemaRef,
    expected: &[RecordBatch],
    max_rows: usize,
    read_timeout: Duration,
) -> Result<(), String> {
    let got = read_all(
        running,
        config,
        Some(position.clone()),
        schema,
        max_rows,
        read_timeout,
    )
    .await?;
    let got: Vec<RecordBatch> = got.into_iter().map(|(b, _)| b).collect();
    let (want, have) = (concat(schema, expected)?, concat(schema, &got)?);
    if want.num_rows() != have.num_rows() {
        return Err(format!(
            "DoGet from position {position} yielded {} rows, but the first read had {} rows after that position",
            have.num_rows(),
            want.num_rows()
        ));
    }
    if want != have {
        return Err(format!(
            "DoGet from position {position} yielded {} rows, as many as expected, but not the same rows as the first read after that position",
            have.num_rows()
        ));
    }
    Ok(())
}

fn concat(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch, String> {
    arrow_select::concat::concat_batches(schema, batches).map_err(|e| e.to_string())
}

async fn read_all(
    running: &Running,
    config: &Value,
    position: Option<Value>,
    schema: &SchemaRef,
    max_rows: usize,
    read_timeout: Duration,
) -> Result<Vec<(RecordBatch, Value)>, String> {
    let ticket = serde_json::json!({"config": config, "position": position, "mode": "backfill"});
    let mut stream = running
        .client
        .read(&ticket)
        .await
        .map_err(|e| failure_text(e.into()))?;
    let mut batches = Vec::new();
    let mut rows = 0;
    loop {
        let data = match tokio::time::timeout(read_timeout, stream.next()).await {
            Err(_) => {
                return Err(format!(
                    "DoGet sent nothing for {read_timeout:?} after {rows} rows (a backfill read must end)"
                ));
            }
            Ok(None) => return Ok(batches),
            Ok(Some(Err(e))) => return Err(format!("DoGet failed after {rows} rows: {e}")),
            Ok(Some(Ok(d))) => d,
        };
        let batch = match data.payload {
            DecodedPayload::Schema(s) => {
                if s.fields() != schema.fields() {
                    return Err(format!(
                        "DoGet sent schema {s}, but GetSchema said {schema}"
                    ));
                }
                continue;
            }
            DecodedPayload::RecordBatch(b) => b,
            DecodedPayload::None => RecordBatch::new_empty(schema.clone()),
        };
        if batch.schema().fields() != schema.fields() {
            return Err(format!(
                "DoGet sent a batch of schema {}, but GetSchema said {schema}",
                batch.schema()
            ));
        }
        if data.inner.app_metadata.is_empty() {
            if batch.num_rows() == 0 {
                continue;
            }
            return Err(format!(
                "batch {} has no app_metadata (the position after it)",
                batches.len() + 1
            ));
        }
        let position: Value = serde_json::from_slice(&data.inner.app_metadata).map_err(|e| {
            format!(
                "batch {}'s app_metadata is not JSON: {e}",
                batches.len() + 1
            )
        })?;
        rows += batch.num_rows();
        batches.push((batch, position));
        if rows > max_rows {
            return Err(format!(
                "DoGet did not end within {max_rows} rows; give a --config that yields fewer rows"
            ));
        }
    }
}
