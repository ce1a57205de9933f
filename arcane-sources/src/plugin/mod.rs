//! The `plugin` source: rows from an out-of-process plugin, an executable in any language that
//! speaks Arrow Flight over a Unix domain socket (the protocol is in `docs/plugins.md`).
//!
//! The runner starts the plugin with a cleared environment (`PATH`, `HOME` and its own
//! `PLUGIN_{NAME}_*` variables), reads its handshake line, asks `GetSchema` for the config,
//! then `DoGet` from the resume position (the sink's last committed position: the plugin keeps
//! no state of its own) and sends `commit` once the sink committed a position, `shutdown` when
//! the stream drains. A plugin that crashes or stops answering is restarted with backoff from
//! the position after the last batch the runner received; after the retry budget the run exits
//! 2 (RESTART). A permanent Flight status ([`PERMANENT_CODES`]) exits 1 (FATAL) with the
//! plugin's message. The process is killed when the source is dropped.
//!
//! ```no_run
//! use arcane_sources::plugin::PluginConfig;
//!
//! let config: PluginConfig = serde_json::from_value(serde_json::json!({
//!     "plugin": "counter",                 // $ARCANE_PLUGIN_DIR/counter (default /plugins)
//!     "config": { "totalRows": 10000 },    // passed to the plugin as it is
//! }))
//! .unwrap();
//! let source = config.source().unwrap();
//! ```

pub mod check;
mod client;
mod handshake;
mod process;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arcane_core::retry::RetryConfig;
use arcane_core::{
    Checkpoint, Error, Mode, Position, PositionedStream, Result, Source, SourceStart,
};
use arrow_array::RecordBatch;
use arrow_flight::decode::DecodedPayload;
use arrow_schema::SchemaRef;
use futures::StreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::runtime::{Output, spawn_source};
pub use client::PERMANENT_CODES;
use client::{CallError, PluginClient};
pub use handshake::{
    HANDSHAKE_MAGIC, Handshake, HandshakeError, MAX_HANDSHAKE_LINE, PROTOCOL_VERSION,
    parse_handshake,
};
pub use process::env_prefix;
use process::{Launch, PluginProcess, StartError, source_name};

/// The variable naming the plugins directory.
pub const ENV_PLUGIN_DIR: &str = "ARCANE_PLUGIN_DIR";
/// The plugins directory when [`ENV_PLUGIN_DIR`] is not set.
pub const DEFAULT_PLUGIN_DIR: &str = "/plugins";
/// Default `handshakeTimeout`: 30 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `requestTimeout`: 30 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `readTimeout`: 5 minutes.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Default `shutdownTimeout`: 10 s.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the `plugin` source (`spec.source` of the `plugin` kind). Exactly one of
/// `plugin` and `path`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginConfig {
    /// The plugin's name: the executable `$ARCANE_PLUGIN_DIR/NAME` (default directory
    /// `/plugins`). Letters, digits, `-`, `_` and `.`. Its `PLUGIN_{NAME}_*` variables (NAME
    /// upper-cased, `-` and `.` as `_`) are passed to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// The plugin executable's path, instead of `plugin`; its name is the file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The plugin's own settings, passed to it as they are (JSON) with every call.
    #[serde(default)]
    pub config: serde_json::Map<String, Value>,
    /// How a plugin that crashes or stops answering is restarted: attempts in a row without a
    /// batch received, and the backoff between them. After the last one the run exits 2.
    #[serde(default)]
    pub retry: RetryConfig,
    /// How long the plugin may take to print its handshake line (humantime). Default 30s.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub handshake_timeout: Duration,
    /// How long `GetSchema`, the start of `DoGet` and the actions may take (humantime).
    /// Default 30s.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub request_timeout: Duration,
    /// The longest silence in a `DoGet` stream before the plugin counts as hung (humantime);
    /// a plugin waiting for data sends a message with only `app_metadata` (its position) at
    /// least this often. Default 5m.
    #[serde(default = "default_read_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub read_timeout: Duration,
    /// How long the plugin may take to exit after `shutdown` before it is killed (humantime).
    /// Default 10s.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub shutdown_timeout: Duration,
}

fn default_handshake_timeout() -> Duration {
    DEFAULT_HANDSHAKE_TIMEOUT
}
fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}
fn default_read_timeout() -> Duration {
    DEFAULT_READ_TIMEOUT
}
fn default_shutdown_timeout() -> Duration {
    DEFAULT_SHUTDOWN_TIMEOUT
}

impl PluginConfig {
    /// Settings for the plugin executable at `path`.
    pub fn at_path(path: impl Into<String>) -> Self {
        Self {
            plugin: None,
            path: Some(path.into()),
            config: serde_json::Map::new(),
            retry: RetryConfig::default(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    /// The plugin's name and executable, checked; errors name the field.
    pub fn executable(&self) -> Result<(String, PathBuf)> {
        let (name, path, field) = match (&self.plugin, &self.path) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(Error::config(
                    "spec.source.plugin",
                    "set exactly one of plugin (a name in $ARCANE_PLUGIN_DIR) and path (an executable)",
                ));
            }
            (Some(name), None) => {
                let valid = !name.is_empty()
                    && name != "."
                    && name != ".."
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                if !valid {
                    return Err(Error::config(
                        "spec.source.plugin",
                        format!(
                            "{name:?} is not a plugin name (letters, digits, '-', '_', '.'); use path for an executable elsewhere"
                        ),
                    ));
                }
                let dir = std::env::var_os(ENV_PLUGIN_DIR)
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_PLUGIN_DIR));
                (name.clone(), dir.join(name), "spec.source.plugin")
            }
            (None, Some(path)) => {
                let path = PathBuf::from(path);
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        Error::config("spec.source.path", "names no file (it ends in / or ..)")
                    })?;
                (name, path, "spec.source.path")
            }
        };
        process::check_executable(&name, &path, field)?;
        Ok((name, path))
    }

    /// The source these settings describe; errors name the field under `spec.source`.
    pub fn source(&self) -> Result<PluginSource> {
        self.retry.validate("spec.source.retry")?;
        for (field, value) in [
            ("handshakeTimeout", self.handshake_timeout),
            ("requestTimeout", self.request_timeout),
            ("readTimeout", self.read_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::config(
                    format!("spec.source.{field}"),
                    "must be longer than 0s",
                ));
            }
        }
        let (name, path) = self.executable()?;
        let env = process::child_env(&name, std::env::vars());
        let passed: Vec<&str> = env
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| *k != "PATH" && *k != "HOME")
            .collect();
        // Names only: the values are the plugin's secrets.
        tracing::info!(plugin = %name, path = %path.display(), variables = ?passed, "plugin source configured");
        Ok(PluginSource {
            launch: Launch {
                name: name.clone(),
                path,
                env,
                handshake_timeout: self.handshake_timeout,
            },
            config: Value::Object(self.config.clone()),
            retry: self.retry,
            request_timeout: self.request_timeout,
            read_timeout: self.read_timeout,
            shutdown_timeout: self.shutdown_timeout,
            shared: Arc::new(Shared::default()),
            schema: None,
        })
    }
}

/// The live plugin, shared by the reading task and `commit`/`close`.
#[derive(Debug, Default)]
struct Shared {
    running: tokio::sync::Mutex<Option<Running>>,
    closing: std::sync::atomic::AtomicBool,
    /// Cancelled by `close`: the reading task stops (its `DoGet` call is cancelled) before the
    /// plugin is asked to shut down.
    cancel: tokio_util::sync::CancellationToken,
}

#[derive(Debug)]
struct Running {
    process: PluginProcess,
    client: PluginClient,
}

/// The `plugin` source; see the [module docs](self).
#[derive(Debug)]
pub struct PluginSource {
    launch: Launch,
    config: Value,
    retry: RetryConfig,
    request_timeout: Duration,
    read_timeout: Duration,
    shutdown_timeout: Duration,
    shared: Arc<Shared>,
    schema: Option<SchemaRef>,
}

/// What a start, a call or a read ended with.
enum Failure {
    /// Exit 1 with this error.
    Fatal(Error),
    /// Restart the plugin (within the budget); the cause.
    Retry(String),
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Permanent(e) => Failure::Fatal(e),
            CallError::Transient(m) => Failure::Retry(m),
        }
    }
}

/// Start the plugin, connect and ask for its schema.
async fn launch(
    launch: &Launch,
    config: &Value,
    request_timeout: Duration,
    first: bool,
) -> Result<(Running, SchemaRef), Failure> {
    let process = match PluginProcess::start(launch).await {
        Ok(p) => p,
        Err(StartError::Fatal(e)) => return Err(Failure::Fatal(e)),
        // A plugin that cannot even start the first time needs fixing, not retries.
        Err(StartError::Exited(m)) if first => {
            return Err(Failure::Fatal(Error::source_permanent(
                source_name(&launch.name),
                format!(
                    "{m}; run `arcane plugin check {}` to see why",
                    launch.path.display()
                ),
            )));
        }
        Err(StartError::Exited(m) | StartError::Failed(m)) => return Err(Failure::Retry(m)),
    };
    let client =
        match PluginClient::connect(&launch.name, &process.handshake.socket, request_timeout).await
        {
            Ok(c) => c,
            Err(e) => {
                process.kill().await;
                return Err(e.into());
            }
        };
    match client.schema(config).await {
        Ok(schema) => Ok((Running { process, client }, schema)),
        Err(e) => {
            let hint = process.stderr_hint();
            process.kill().await;
            Err(match e {
                CallError::Transient(m) => Failure::Retry(format!("{m}{hint}")),
                CallError::Permanent(e) => Failure::Fatal(e),
            })
        }
    }
}

/// The reading loop: `DoGet` from `position`, restarting the plugin on transient failures.
struct Reader {
    name: String,
    launch: Launch,
    config: Value,
    mode: Mode,
    retry: RetryConfig,
    request_timeout: Duration,
    read_timeout: Duration,
    shared: Arc<Shared>,
    schema: SchemaRef,
}

impl Reader {
    async fn run(self, mut out: Output, mut position: Option<Value>) -> Result<()> {
        let source = source_name(&self.name);
        let mut failures = 0u32;
        let mut delays = self.retry.delays();
        loop {
            let outcome = self.read_once(&mut out, &mut position).await;
            if self
                .shared
                .closing
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return Ok(());
            }
            let (progressed, failure) = match outcome {
                ReadOutcome::Done => return Ok(()),
                ReadOutcome::Closed => return Ok(()),
                ReadOutcome::Failed {
                    progressed,
                    failure,
                } => (progressed, failure),
            };
            let cause = match failure {
                Failure::Fatal(e) => {
                    self.stop_running().await;
                    return Err(e);
                }
                Failure::Retry(cause) => cause,
            };
            self.stop_running().await;
            if progressed {
                failures = 0;
                delays = self.retry.delays();
            }
            failures += 1;
            let Some(delay) = delays.next().filter(|_| failures < self.retry.max_attempts) else {
                return Err(Error::source_transient(
                    source.clone(),
                    format!(
                        "gave up after {failures} attempts in a row (spec.source.retry.maxAttempts = {}); the last: {cause}",
                        self.retry.max_attempts
                    ),
                    std::io::Error::other(cause),
                ));
            };
            tracing::warn!(
                plugin = %self.name,
                attempt = failures,
                max_attempts = self.retry.max_attempts,
                delay = ?delay,
                position = ?position,
                cause = %cause,
                "plugin failed; restarting it from the position after the last batch received"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn stop_running(&self) {
        if let Some(running) = self.shared.running.lock().await.take() {
            running.process.kill().await;
        }
    }

    async fn client(&self) -> Result<PluginClient, Failure> {
        let mut running = self.shared.running.lock().await;
        if let Some(r) = running.as_ref() {
            return Ok(r.client.clone());
        }
        let (started, schema) =
            launch(&self.launch, &self.config, self.request_timeout, false).await?;
        if schema.fields() != self.schema.fields() {
            return Err(Failure::Fatal(Error::source_permanent(
                source_name(&self.name),
                format!(
                    "GetSchema changed after a restart: it was {} and is now {}; a plugin's schema for a config must not change while a stream runs",
                    self.schema, schema
                ),
            )));
        }
        let client = started.client.clone();
        tracing::info!(plugin = %self.name, pid = started.process.pid(), "plugin restarted");
        *running = Some(started);
        Ok(client)
    }

    async fn read_once(&self, out: &mut Output, position: &mut Option<Value>) -> ReadOutcome {
        let mut progressed = false;
        let failed = |progressed, failure| ReadOutcome::Failed {
            progressed,
            failure,
        };
        let client = match self.client().await {
            Ok(c) => c,
            Err(f) => return failed(false, f),
        };
        let ticket = serde_json::json!({
            "config": self.config,
            "position": position,
            "mode": self.mode.as_str(),
        });
        let mut stream = match client.read(&ticket).await {
            Ok(s) => s,
            Err(e) => return failed(false, e.into()),
        };
        loop {
            let data = match tokio::time::timeout(self.read_timeout, stream.next()).await {
                Err(_) => {
                    return failed(
                        progressed,
                        Failure::Retry(format!(
                            "DoGet sent nothing for {:?} (spec.source.readTimeout); a plugin waiting for data sends its position as app_metadata alone at least that often",
                            self.read_timeout
                        )),
                    );
                }
                Ok(None) => return ReadOutcome::Done,
                Ok(Some(Err(e))) => {
                    let failure = match e {
                        arrow_flight::error::FlightError::Tonic(status) => {
                            CallError::from_status(&self.name, "DoGet", &status).into()
                        }
                        other => Failure::Fatal(Error::source_permanent(
                            source_name(&self.name),
                            format!("DoGet sent data that does not decode: {other}"),
                        )),
                    };
                    return failed(progressed, failure);
                }
                Ok(Some(Ok(data))) => data,
            };
            let batch = match data.payload {
                DecodedPayload::Schema(schema) => {
                    if schema.fields() != self.schema.fields() {
                        return failed(progressed, Failure::Fatal(self.schema_error(&schema)));
                    }
                    continue;
                }
                DecodedPayload::RecordBatch(batch) => {
                    if batch.schema().fields() != self.schema.fields() {
                        return failed(
                            progressed,
                            Failure::Fatal(self.schema_error(&batch.schema())),
                        );
                    }
                    batch
                }
                DecodedPayload::None => RecordBatch::new_empty(self.schema.clone()),
            };
            let metadata = &data.inner.app_metadata;
            if metadata.is_empty() {
                if batch.num_rows() == 0 {
                    continue; // a keep-alive
                }
                return failed(
                    progressed,
                    Failure::Fatal(Error::source_permanent(
                        source_name(&self.name),
                        "DoGet sent a batch without app_metadata; every batch must carry the position after it (UTF-8 JSON)",
                    )),
                );
            }
            let value: Value = match serde_json::from_slice(metadata) {
                Ok(v) => v,
                Err(e) => {
                    return failed(
                        progressed,
                        Failure::Fatal(Error::source_permanent(
                            source_name(&self.name),
                            format!("DoGet sent app_metadata that is not a JSON position: {e}"),
                        )),
                    );
                }
            };
            if out
                .emit(batch, Position(value.clone()), Vec::new())
                .await
                .is_err()
            {
                return ReadOutcome::Closed;
            }
            *position = Some(value);
            progressed = true;
        }
    }

    fn schema_error(&self, got: &SchemaRef) -> Error {
        Error::source_permanent(
            source_name(&self.name),
            format!(
                "DoGet sent batches of schema {got} but GetSchema said {}; the plugin must send batches of the schema it declares",
                self.schema
            ),
        )
    }
}

enum ReadOutcome {
    /// The plugin ended the stream.
    Done,
    /// The graph dropped the stream.
    Closed,
    Failed {
        /// A batch was received before the failure (the retry budget starts again).
        progressed: bool,
        failure: Failure,
    },
}

#[async_trait::async_trait]
impl Source for PluginSource {
    fn name(&self) -> String {
        source_name(&self.launch.name)
    }

    fn schema(&self) -> Option<SchemaRef> {
        self.schema.clone()
    }

    async fn open(&mut self, start: SourceStart) -> Result<PositionedStream> {
        let (position, _) = start.resume::<Value>(&self.name())?;
        let (running, schema) = match launch(&self.launch, &self.config, self.request_timeout, true)
            .await
        {
            Ok(r) => r,
            Err(Failure::Fatal(e)) => return Err(e),
            // The first GetSchema timed out or failed transiently: give it the retry budget.
            Err(Failure::Retry(cause)) => {
                tracing::warn!(plugin = %self.launch.name, cause = %cause, "plugin failed at start; retrying");
                let mut last = cause;
                let mut started = None;
                for (attempt, delay) in self.retry.delays().enumerate() {
                    tokio::time::sleep(delay).await;
                    match launch(&self.launch, &self.config, self.request_timeout, false).await {
                        Ok(r) => {
                            started = Some(r);
                            break;
                        }
                        Err(Failure::Fatal(e)) => return Err(e),
                        Err(Failure::Retry(cause)) => {
                            tracing::warn!(plugin = %self.launch.name, attempt = attempt + 2, max_attempts = self.retry.max_attempts, cause = %cause, "plugin failed at start; retrying");
                            last = cause;
                        }
                    }
                }
                started.ok_or_else(|| {
                    Error::source_transient(
                        self.name(),
                        format!(
                            "gave up after {} attempts (spec.source.retry.maxAttempts); the last: {last}",
                            self.retry.max_attempts
                        ),
                        std::io::Error::other(last.clone()),
                    )
                })?
            }
        };
        tracing::info!(plugin = %self.launch.name, pid = running.process.pid(), schema = %schema, resume_from = ?position, "plugin started");
        self.schema = Some(schema.clone());
        *self.shared.running.lock().await = Some(running);
        let reader = Reader {
            name: self.launch.name.clone(),
            launch: self.launch.clone(),
            config: self.config.clone(),
            mode: start.mode,
            retry: self.retry,
            request_timeout: self.request_timeout,
            read_timeout: self.read_timeout,
            shared: self.shared.clone(),
            schema,
        };
        let cancel = self.shared.cancel.clone();
        Ok(spawn_source(
            &self.name(),
            &start,
            4,
            move |out| async move {
                tokio::select! {
                    result = reader.run(out, position) => result,
                    () = cancel.cancelled() => Ok(()),
                }
            },
        ))
    }

    async fn commit(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let Some(position) = &checkpoint.position else {
            return Ok(());
        };
        let client = match self.shared.running.lock().await.as_ref() {
            Some(r) => r.client.clone(),
            // Restarting: the next commit covers this position.
            None => return Ok(()),
        };
        let body = serde_json::to_vec(&position.0).unwrap_or_default();
        match client.action("commit", body).await {
            Ok(()) => Ok(()),
            Err(CallError::Permanent(e)) => Err(e),
            Err(CallError::Transient(cause)) => {
                tracing::warn!(plugin = %self.launch.name, cause = %cause, "commit not acknowledged by the plugin; the next commit covers it");
                Ok(())
            }
        }
    }

    async fn close(&mut self) -> Result<()> {
        self.shared
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.cancel.cancel();
        let Some(running) = self.shared.running.lock().await.take() else {
            return Ok(());
        };
        if let Err(e) = running.client.action("shutdown", Vec::new()).await {
            let cause = match e {
                CallError::Permanent(e) => e.report(),
                CallError::Transient(m) => m,
            };
            tracing::warn!(plugin = %self.launch.name, cause = %cause, "shutdown not acknowledged by the plugin");
        }
        drop(running.client);
        match running.process.stop(self.shutdown_timeout).await {
            Some(status) if status.success() => {
                tracing::info!(plugin = %self.launch.name, "plugin stopped");
            }
            Some(status) => {
                tracing::warn!(plugin = %self.launch.name, status = %status, "plugin exited with a failure after shutdown");
            }
            None => {
                tracing::warn!(plugin = %self.launch.name, "plugin did not exit within spec.source.shutdownTimeout after shutdown; it was killed");
            }
        }
        Ok(())
    }
}
