//! [`RunArgs`]: the runner's settings as CLI flags, each also read from its environment variable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use arcane_core::Error as StreamError;
use arcane_core::StreamContext;
use arcane_core::context::{
    ENV_APPLICATION_VERSION, ENV_BACKFILL, ENV_BACKFILL_ID, ENV_LOGGING_PROPERTIES, ENV_OVERRIDE,
    ENV_SPEC, ENV_STREAM_ID, ENV_STREAM_KIND,
};

pub use arcane_core::env::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_JOB_ANNOTATION_KEY, DEFAULT_LOCAL_METRICS_ADDR,
    DEFAULT_METRICS_ADDR, DEFAULT_TERMINATION_LOG, ENV_BACKFILL_SHARDS, ENV_DOGSTATSD_ADDR,
    ENV_DRAIN_TIMEOUT, ENV_JOB_ANNOTATION_KEY, ENV_JOB_NAME, ENV_KUBE_API_URL, ENV_KUBE_CA_FILE,
    ENV_KUBE_TOKEN_FILE, ENV_LOG_FILTER, ENV_LOG_FORMAT, ENV_METRICS_ADDR, ENV_POD_NAMESPACE,
    ENV_PROGRESS_INTERVAL, ENV_SHARD_INDEX, ENV_TERMINATION_LOG, SCHEMA_MISMATCH_ANNOTATION_VALUE,
};

/// The value of `--metrics-addr` / `--termination-log` that picks the default for where the
/// process runs.
pub const AUTO: &str = "auto";
/// Default log filter.
pub const DEFAULT_LOG_FILTER: &str = "info";
/// Default service-account token file.
pub const DEFAULT_KUBE_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Default service-account CA bundle.
pub const DEFAULT_KUBE_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// Flags of `run` (and of single-kind binaries); every flag is also read from the environment
/// variable shown in `--help`, so the operator's environment and local flags are the same
/// settings. Flags win over the environment.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Stream")]
pub struct RunArgs {
    /// Stream kind to run (one of the kinds this binary hosts; single-kind binaries accept any).
    #[arg(long, env = ENV_STREAM_KIND, value_name = "KIND")]
    pub kind: Option<String>,

    /// The stream's spec: JSON of the stream resource's `.spec`, or a path to a file holding it.
    #[arg(long, env = ENV_SPEC, value_name = "FILE|JSON", hide_env_values = true)]
    pub spec: Option<String>,

    /// The stream's id (default in local runs: the spec file's name, else the kind).
    #[arg(long, env = ENV_STREAM_ID, value_name = "ID")]
    pub stream_id: Option<String>,

    /// Backfill mode: read the full history (or configured range) and exit when done.
    #[arg(long, env = ENV_BACKFILL, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub backfill: Option<String>,

    /// The backfill's id; the same id resumes an interrupted backfill.
    #[arg(long, env = ENV_BACKFILL_ID, value_name = "ID")]
    pub backfill_id: Option<String>,

    /// This pod's shard of a sharded backfill (`spec.backfillShards` > 1): its index in the
    /// Kubernetes Indexed Job, which sets the variable on every pod.
    #[arg(long, env = ENV_SHARD_INDEX, value_name = "INDEX")]
    pub shard_index: Option<String>,

    /// The shard count a sharded backfill's Job template runs (its Indexed Job's
    /// completions): stands for `spec.backfillShards` when the spec leaves it out, and must
    /// equal it when the spec sets it.
    #[arg(long, env = ENV_BACKFILL_SHARDS, value_name = "N")]
    pub backfill_shards: Option<String>,

    /// JSON merged over the spec (RFC 7396 merge patch).
    #[arg(long = "override", env = ENV_OVERRIDE, value_name = "JSON")]
    pub override_spec: Option<String>,

    /// Version of the stream binary, added to every log line as `ApplicationVersion`.
    #[arg(long, env = ENV_APPLICATION_VERSION, value_name = "VERSION")]
    pub application_version: Option<String>,

    /// JSON object of extra fields added to every log line.
    #[arg(long, env = ENV_LOGGING_PROPERTIES, value_name = "JSON")]
    pub logging_properties: Option<String>,

    /// How long a graceful shutdown (SIGTERM/SIGINT) may take before the stream is aborted
    /// (humantime: `30s`, `2m`). Keep it below the pod's terminationGracePeriodSeconds.
    #[arg(long, env = ENV_DRAIN_TIMEOUT, value_name = "DURATION", default_value = "30s", help_heading = "Process")]
    pub drain_timeout: String,

    /// Address of the HTTP endpoint serving /metrics (Prometheus text), /healthz and /readyz;
    /// `0` or `off` disables it. `auto`: 0.0.0.0:9090 in a pod, 127.0.0.1:9090 elsewhere, and
    /// a port already taken is a warning (the run goes on without the endpoint); an explicit
    /// address that cannot be bound is an error.
    #[arg(long, env = ENV_METRICS_ADDR, value_name = "HOST:PORT", default_value = AUTO, help_heading = "Process")]
    pub metrics_addr: String,

    /// DogStatsD agent: `host:port` (UDP), `unix:///path` (stream socket) or `unixgram:///path`
    /// / `/path` (datagram socket). Tags are prefixed `arcane.sneaksanddata.com/`.
    #[arg(long, env = ENV_DOGSTATSD_ADDR, value_name = "ADDR", help_heading = "Process")]
    pub dogstatsd_addr: Option<String>,

    /// File receiving the one-line JSON outcome (shown by `kubectl describe pod`); `off`
    /// disables it. `auto`: /dev/termination-log in a pod, none elsewhere. A missing directory
    /// or unwritable file is a warning.
    #[arg(long, env = ENV_TERMINATION_LOG, value_name = "PATH", default_value = AUTO, help_heading = "Process")]
    pub termination_log: String,

    /// Log format (logs go to stderr): `json`, `text`, or `auto` (text when stderr is a
    /// terminal, JSON otherwise).
    #[arg(long, env = ENV_LOG_FORMAT, value_name = "FORMAT", default_value = "auto", help_heading = "Process")]
    pub log_format: String,

    /// How often progress (rows read and committed, files, bytes) is logged when stderr is not
    /// a terminal (humantime); on a terminal with text logs a live line is drawn instead.
    /// `off` disables the log lines.
    #[arg(long, env = ENV_PROGRESS_INTERVAL, value_name = "DURATION", default_value = "60s", help_heading = "Process")]
    pub progress_interval: String,

    /// Log filter directives (`info`, `arcane_core=debug,info`).
    #[arg(long = "log", env = ENV_LOG_FILTER, value_name = "FILTER", default_value = DEFAULT_LOG_FILTER, help_heading = "Process")]
    pub log_filter: String,

    /// Annotation put on the Job (value `schema-mismatch`) before exiting after a schema
    /// mismatch, so the operator backfills.
    #[arg(long, env = ENV_JOB_ANNOTATION_KEY, value_name = "KEY", default_value = DEFAULT_JOB_ANNOTATION_KEY, help_heading = "Kubernetes")]
    pub job_annotation_key: String,

    /// Namespace of the pod's Job (downward API `metadata.namespace`; default: the
    /// service account's `namespace` file).
    #[arg(long, env = ENV_POD_NAMESPACE, value_name = "NAMESPACE", help_heading = "Kubernetes")]
    pub namespace: Option<String>,

    /// Name of the pod's Job (downward API
    /// `metadata.labels['batch.kubernetes.io/job-name']`).
    #[arg(long, env = ENV_JOB_NAME, value_name = "NAME", help_heading = "Kubernetes")]
    pub job_name: Option<String>,

    /// Kubernetes API URL (default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT).
    #[arg(long, env = ENV_KUBE_API_URL, value_name = "URL", help_heading = "Kubernetes")]
    pub kube_api_url: Option<String>,

    /// Service-account token file (re-read on every request; never logged).
    #[arg(long, env = ENV_KUBE_TOKEN_FILE, value_name = "PATH", default_value = DEFAULT_KUBE_TOKEN_FILE, help_heading = "Kubernetes")]
    pub kube_token_file: PathBuf,

    /// CA bundle (PEM) of the Kubernetes API, for https URLs.
    #[arg(long, env = ENV_KUBE_CA_FILE, value_name = "PATH", default_value = DEFAULT_KUBE_CA_FILE, help_heading = "Kubernetes")]
    pub kube_ca_file: PathBuf,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line on stderr.
    Json,
    /// Human-readable lines on stderr.
    Text,
}

/// The runner's process settings, validated from [`RunArgs`].
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Drain deadline.
    pub drain_timeout: Duration,
    /// Endpoint address; `None` when disabled.
    pub metrics_addr: Option<String>,
    /// Whether the address was given explicitly: then failing to bind it is an error; the
    /// default (`auto`) only warns.
    pub metrics_required: bool,
    /// DogStatsD address as understood by the exporter; `None` when not configured.
    pub dogstatsd_addr: Option<String>,
    /// Termination message file; `None` when disabled.
    pub termination_log: Option<PathBuf>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter directives.
    pub log_filter: String,
    /// How often progress is logged (not on a terminal); `Duration::MAX` when disabled.
    pub progress_interval: Duration,
    /// Kubernetes settings for the schema-mismatch annotation.
    pub kube: KubeSettings,
}

/// Where and how to annotate the Job after a schema mismatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    /// Annotation key.
    pub annotation_key: String,
    /// Namespace (`POD_NAMESPACE`).
    pub namespace: Option<String>,
    /// Job name (`ARCANE_JOB_NAME`).
    pub job_name: Option<String>,
    /// API URL override (`ARCANE_KUBE_API_URL`).
    pub api_url: Option<String>,
    /// Token file.
    pub token_file: PathBuf,
    /// CA bundle file.
    pub ca_file: PathBuf,
}

/// True inside a Kubernetes pod (the kubelet sets `KUBERNETES_SERVICE_HOST` in every
/// container): the operator's settings are then required as the platform sets them, and local
/// conveniences (derived stream ids) are off.
pub fn in_pod() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty())
}

/// A setting that was given but is empty (an unset template value, `VAR=`): an error naming it,
/// never a silent default.
fn set_but_empty(v: &Option<String>, name: &'static str) -> Result<(), StreamError> {
    match v {
        Some(text) if text.trim().is_empty() => Err(StreamError::MissingEnv {
            name,
            hint: "it was given empty; set it to the stream's value (the Arcane operator sets it on every Job) or leave it out for a local run",
        }),
        _ => Ok(()),
    }
}

fn is_auto(v: &str) -> bool {
    let v = v.trim();
    v.is_empty() || v.eq_ignore_ascii_case(AUTO)
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn disabled(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "" | "0" | "off" | "none" | "false"
    )
}

/// A stream context and what the runner chose for values that were not given.
#[derive(Debug, Clone)]
pub struct ResolvedContext {
    /// The context.
    pub context: StreamContext,
    /// Notes to log once logging is installed (defaults chosen).
    pub notes: Vec<String>,
}

impl RunArgs {
    /// Where the termination message goes (`auto`: `/dev/termination-log` in a pod, nowhere
    /// elsewhere; `off`: nowhere), without validating anything else.
    pub fn termination_log_path(&self) -> Option<PathBuf> {
        if is_auto(&self.termination_log) {
            in_pod().then(|| PathBuf::from(DEFAULT_TERMINATION_LOG))
        } else {
            (!disabled(&self.termination_log)).then(|| PathBuf::from(self.termination_log.trim()))
        }
    }

    /// Validate the process settings; errors are [`StreamError::Config`] naming the variable and
    /// flag.
    pub fn settings(&self) -> Result<Settings, StreamError> {
        let drain = self.drain_timeout.trim();
        let drain_timeout = if drain.is_empty() {
            DEFAULT_DRAIN_TIMEOUT
        } else {
            parse_duration(drain, &format!("{ENV_DRAIN_TIMEOUT} (--drain-timeout)"))?
        };
        let pod = in_pod();
        let metrics_auto = is_auto(&self.metrics_addr);
        let metrics_addr = if metrics_auto {
            Some(
                if pod {
                    DEFAULT_METRICS_ADDR
                } else {
                    DEFAULT_LOCAL_METRICS_ADDR
                }
                .to_string(),
            )
        } else {
            (!disabled(&self.metrics_addr)).then(|| self.metrics_addr.trim().to_string())
        };
        if let Some(addr) = &metrics_addr {
            validate_host_port(addr).map_err(|msg| {
                StreamError::config(format!("{ENV_METRICS_ADDR} (--metrics-addr)"), msg)
            })?;
        }
        let dogstatsd_addr = match given(&self.dogstatsd_addr) {
            None => None,
            Some(a) if disabled(a) => None,
            Some(a) => Some(dogstatsd_address(a).map_err(|msg| {
                StreamError::config(format!("{ENV_DOGSTATSD_ADDR} (--dogstatsd-addr)"), msg)
            })?),
        };
        let termination_log = self.termination_log_path();
        let log_format = match self.log_format.trim().to_ascii_lowercase().as_str() {
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            "" | "auto" => {
                use std::io::IsTerminal;
                if std::io::stderr().is_terminal() {
                    LogFormat::Text
                } else {
                    LogFormat::Json
                }
            }
            other => {
                return Err(StreamError::config(
                    format!("{ENV_LOG_FORMAT} (--log-format)"),
                    format!("unknown log format {other:?}; expected json, text or auto"),
                ));
            }
        };
        let log_filter = if self.log_filter.trim().is_empty() {
            DEFAULT_LOG_FILTER.to_string()
        } else {
            self.log_filter.trim().to_string()
        };
        let progress_interval = if disabled(&self.progress_interval) {
            Duration::MAX
        } else {
            parse_duration(
                &self.progress_interval,
                &format!("{ENV_PROGRESS_INTERVAL} (--progress-interval)"),
            )?
        };
        if progress_interval.is_zero() {
            return Err(StreamError::config(
                format!("{ENV_PROGRESS_INTERVAL} (--progress-interval)"),
                "must be greater than zero; use off to disable progress lines",
            ));
        }
        let annotation_key = self.job_annotation_key.trim();
        if annotation_key.is_empty() || annotation_key.contains(char::is_whitespace) {
            return Err(StreamError::config(
                format!("{ENV_JOB_ANNOTATION_KEY} (--job-annotation-key)"),
                format!(
                    "invalid annotation key {annotation_key:?}; use a Kubernetes annotation key such as {DEFAULT_JOB_ANNOTATION_KEY}"
                ),
            ));
        }
        Ok(Settings {
            drain_timeout,
            metrics_addr,
            metrics_required: !metrics_auto,
            dogstatsd_addr,
            termination_log,
            log_format,
            log_filter,
            progress_interval,
            kube: KubeSettings {
                annotation_key: annotation_key.to_string(),
                namespace: given(&self.namespace).map(str::to_string),
                job_name: given(&self.job_name).map(str::to_string),
                api_url: given(&self.kube_api_url).map(str::to_string),
                token_file: self.kube_token_file.clone(),
                ca_file: self.kube_ca_file.clone(),
            },
        })
    }

    /// The stream context: the flags/environment through [`StreamContext::from_lookup`], with
    /// `--spec` read from a file when it is not JSON, the kind defaulting to `default_kind`
    /// and the stream id to the spec file's name (else the kind).
    ///
    /// The spec (file or text) may also be a whole stream resource, as applied to the cluster
    /// (`apiVersion`, `kind`, `metadata.name`, `spec`; JSON, or YAML in a `.yaml`/`.yml`
    /// file): then its `.spec` is the spec, and its `kind` and `metadata.name` are the stream
    /// kind and id unless those are set.
    pub fn context(&self, default_kind: Option<&str>) -> Result<ResolvedContext, StreamError> {
        self.context_in(default_kind, in_pod())
    }

    /// [`context`](Self::context), with `pod` saying whether this runs in a Kubernetes pod
    /// (there a missing `STREAMCONTEXT__STREAM_ID` is an error instead of being derived).
    pub fn context_in(
        &self,
        default_kind: Option<&str>,
        pod: bool,
    ) -> Result<ResolvedContext, StreamError> {
        set_but_empty(&self.stream_id, ENV_STREAM_ID)?;
        set_but_empty(&self.kind, ENV_STREAM_KIND)?;
        let mut notes = Vec::new();
        let spec_var = || format!("{ENV_SPEC} (--spec)");
        let (spec_value, spec_file) = match given(&self.spec) {
            None => (None, None),
            Some(text) if text.starts_with('{') => {
                let value = serde_json::from_str::<serde_json::Value>(text).map_err(|e| {
                    StreamError::config(
                        spec_var(),
                        format!("not valid JSON ({e}); it must hold a JSON object"),
                    )
                })?;
                (Some(value), None)
            }
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    StreamError::config(
                        spec_var(),
                        format!("cannot read spec file {path:?} ({e}); pass the spec's JSON or the path of a file holding it"),
                    )
                })?;
                let yaml = Path::new(path)
                    .extension()
                    .is_some_and(|e| e == "yaml" || e == "yml");
                let value = if yaml {
                    serde_norway::from_str::<serde_json::Value>(&text).map_err(|e| {
                        StreamError::config(
                            spec_var(),
                            format!("spec file {path:?} is not valid YAML ({e})"),
                        )
                    })?
                } else {
                    serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                        StreamError::config(
                            spec_var(),
                            format!("spec file {path:?} is not valid JSON ({e})"),
                        )
                    })?
                };
                (Some(value), Some(PathBuf::from(path)))
            }
        };
        let (spec_value, resource) = match spec_value {
            Some(v) => match StreamResource::detect(v) {
                Ok(r) => (Some(r.spec.clone()), Some(r)),
                Err(v) => (Some(v), None),
            },
            None => (None, None),
        };
        let spec_text = spec_value.map(|v| v.to_string());
        let resource_kind = resource.as_ref().and_then(|r| r.kind.clone());
        let resource_name = resource.as_ref().and_then(|r| r.name.clone());
        let kind = match (given(&self.kind), resource_kind, default_kind) {
            (Some(k), _, _) => Some(k.to_string()),
            (None, Some(k), _) => Some(k),
            (None, None, Some(k)) => {
                notes.push(format!(
                    "stream kind not set ({ENV_STREAM_KIND} / --kind); using {k:?}"
                ));
                Some(k.to_string())
            }
            (None, None, None) => None,
        };
        let stream_id = match (given(&self.stream_id), resource_name) {
            (Some(id), _) => Some(id.to_string()),
            (None, Some(name)) => Some(name),
            (None, None) if pod => {
                return Err(StreamError::MissingEnv {
                    name: ENV_STREAM_ID,
                    hint: "set it to the stream's id (the Arcane operator sets it on every Job); in a pod the id is not derived, so that two streams never share an output",
                });
            }
            (None, None) => {
                let derived = spec_file
                    .as_deref()
                    .and_then(Path::file_stem)
                    .and_then(|s| s.to_str())
                    .map(str::to_string)
                    .or_else(|| kind.clone());
                if let Some(id) = &derived {
                    notes.push(format!(
                        "stream id not set ({ENV_STREAM_ID} / --stream-id); using {id:?}"
                    ));
                }
                derived
            }
        };
        if spec_text.is_none() {
            return Err(StreamError::MissingEnv {
                name: ENV_SPEC,
                hint: "give the stream with --spec FILE|JSON (a stream resource as applied to the cluster, JSON or YAML, or its bare spec with --kind), e.g. `arcane run --spec examples/quickstart.json`",
            });
        }
        if kind.is_none() {
            return Err(StreamError::MissingEnv {
                name: ENV_STREAM_KIND,
                hint: "set it (or --kind) to the stream's kind, or pass a whole stream resource (with `kind`) as the spec",
            });
        }
        let lookup = |name: &str| -> Option<String> {
            match name {
                ENV_SPEC => spec_text.clone(),
                ENV_STREAM_ID => stream_id.clone(),
                ENV_STREAM_KIND => kind.clone(),
                ENV_BACKFILL => given(&self.backfill).map(str::to_string),
                ENV_BACKFILL_ID => given(&self.backfill_id).map(str::to_string),
                ENV_OVERRIDE => given(&self.override_spec).map(str::to_string),
                ENV_SHARD_INDEX => given(&self.shard_index).map(str::to_string),
                ENV_BACKFILL_SHARDS => given(&self.backfill_shards).map(str::to_string),
                ENV_APPLICATION_VERSION => given(&self.application_version).map(str::to_string),
                ENV_LOGGING_PROPERTIES => given(&self.logging_properties).map(str::to_string),
                _ => None,
            }
        };
        let context = StreamContext::from_lookup(lookup)?;
        if context.backfill && context.backfill_id.is_none() {
            notes.push(format!(
                "backfill without {ENV_BACKFILL_ID}; an interrupted backfill is resumed only by a rerun with the same backfill id"
            ));
        }
        Ok(ResolvedContext { context, notes })
    }
}

/// A stream custom resource passed where a spec was expected.
struct StreamResource {
    kind: Option<String>,
    name: Option<String>,
    spec: serde_json::Value,
}

impl StreamResource {
    /// `Ok` when `value` looks like a whole resource (`spec` plus `apiVersion` or `kind`),
    /// else the value back.
    fn detect(value: serde_json::Value) -> Result<Self, serde_json::Value> {
        let is_resource = value.get("spec").is_some_and(serde_json::Value::is_object)
            && (value
                .get("apiVersion")
                .is_some_and(serde_json::Value::is_string)
                || value.get("kind").is_some_and(serde_json::Value::is_string));
        if !is_resource {
            return Err(value);
        }
        let text = |v: Option<&serde_json::Value>| {
            v.and_then(serde_json::Value::as_str)
                .map(str::to_string)
                .filter(|s| !s.is_empty())
        };
        Ok(Self {
            kind: text(value.get("kind")),
            name: text(value.pointer("/metadata/name")),
            spec: value.get("spec").cloned().unwrap_or_default(),
        })
    }
}

/// Parse a humantime duration (`30s`, `2m`); errors are [`StreamError::Config`] naming `field`.
pub fn parse_duration(text: &str, field: &str) -> Result<Duration, StreamError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        StreamError::config(
            field,
            format!(
                "invalid duration {:?} ({e}); use a humantime duration such as 30s or 2m",
                text.trim()
            ),
        )
    })
}

fn validate_host_port(addr: &str) -> Result<(), String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!(
            "invalid address {addr:?}; expected HOST:PORT such as {DEFAULT_METRICS_ADDR}, or off"
        )),
    }
}

/// `host:port` (UDP) and `unix://`/`unixgram://` URLs pass through; a bare absolute path is a
/// datagram Unix socket (what the Datadog agent's `dsd_socket` is).
fn dogstatsd_address(addr: &str) -> Result<String, String> {
    if addr.starts_with("unix://") || addr.starts_with("unixgram://") {
        return Ok(addr.to_string());
    }
    if addr.starts_with('/') {
        return Ok(format!("unixgram://{addr}"));
    }
    if let Some(rest) = addr.strip_prefix("udp://") {
        validate_host_port(rest)?;
        return Ok(rest.to_string());
    }
    validate_host_port(addr)
        .map(|()| addr.to_string())
        .map_err(|_| {
            format!("invalid DogStatsD address {addr:?}; expected host:port (UDP), unix:///path, unixgram:///path or an absolute socket path")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(flags: &[&str]) -> RunArgs {
        let mut argv = vec!["test"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).unwrap().run
    }

    #[test]
    fn settings_defaults_and_errors_name_the_setting() {
        let a = args(&["--log-format", "json"]);
        let s = a.settings().unwrap();
        assert_eq!(s.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
        // Where the process runs decides the defaults (these tests run outside a pod).
        let pod = in_pod();
        assert_eq!(
            s.metrics_addr.as_deref(),
            Some(if pod {
                DEFAULT_METRICS_ADDR
            } else {
                DEFAULT_LOCAL_METRICS_ADDR
            })
        );
        assert!(!s.metrics_required);
        assert_eq!(
            s.termination_log.as_deref(),
            pod.then(|| Path::new(DEFAULT_TERMINATION_LOG))
        );
        let s = args(&[
            "--metrics-addr",
            "0.0.0.0:9191",
            "--termination-log",
            "/tmp/t",
        ])
        .settings()
        .unwrap();
        assert_eq!(s.metrics_addr.as_deref(), Some("0.0.0.0:9191"));
        assert!(s.metrics_required);
        assert_eq!(s.termination_log.as_deref(), Some(Path::new("/tmp/t")));
        assert_eq!(s.kube.annotation_key, DEFAULT_JOB_ANNOTATION_KEY);
        assert_eq!(s.log_format, LogFormat::Json);

        let s = args(&[
            "--drain-timeout",
            "2m",
            "--metrics-addr",
            "off",
            "--termination-log",
            "off",
        ])
        .settings()
        .unwrap();
        assert_eq!(s.drain_timeout, Duration::from_secs(120));
        assert_eq!(s.metrics_addr, None);
        assert_eq!(s.termination_log, None);

        let err = args(&["--drain-timeout", "soon"]).settings().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("ARCANE_DRAIN_TIMEOUT (--drain-timeout): invalid duration \"soon\""),
            "{err}"
        );
        assert_eq!(err.exit_code(), arcane_core::ExitCode::Fatal);
        let err = args(&["--metrics-addr", "9090"]).settings().unwrap_err();
        assert!(err.to_string().starts_with("ARCANE_METRICS_ADDR"), "{err}");
        let err = args(&["--log-format", "yaml"]).settings().unwrap_err();
        assert!(err.to_string().starts_with("ARCANE_LOG_FORMAT"), "{err}");
    }

    #[test]
    fn dogstatsd_addresses() {
        let d = |a: &str| {
            args(&["--dogstatsd-addr", a])
                .settings()
                .map(|s| s.dogstatsd_addr)
        };
        assert_eq!(
            d("127.0.0.1:8125").unwrap().as_deref(),
            Some("127.0.0.1:8125")
        );
        assert_eq!(
            d("udp://localhost:8125").unwrap().as_deref(),
            Some("localhost:8125")
        );
        assert_eq!(
            d("/var/run/datadog/dsd.socket").unwrap().as_deref(),
            Some("unixgram:///var/run/datadog/dsd.socket")
        );
        assert_eq!(
            d("unix:///tmp/s").unwrap().as_deref(),
            Some("unix:///tmp/s")
        );
        let err = d("datadog").unwrap_err();
        assert!(
            err.to_string().starts_with("ARCANE_DOGSTATSD_ADDR"),
            "{err}"
        );
    }

    #[test]
    fn required_settings_are_never_empty_and_not_derived_in_a_pod() {
        let err = args(&["--kind", "generator", "--stream-id", " ", "--spec", "{}"])
            .context_in(None, false)
            .unwrap_err();
        assert!(
            err.to_string().contains("STREAMCONTEXT__STREAM_ID"),
            "{err}"
        );
        assert!(err.to_string().contains("given empty"), "{err}");
        assert_eq!(err.exit_code(), arcane_core::ExitCode::Fatal);
        let err = args(&["--kind", "", "--spec", "{}"])
            .context_in(None, false)
            .unwrap_err();
        assert!(
            err.to_string().contains("STREAMCONTEXT__STREAM_KIND"),
            "{err}"
        );

        // Locally the id is derived (with a note); in a pod it is required.
        let local = args(&["--kind", "generator", "--spec", "{}"])
            .context_in(None, false)
            .unwrap();
        assert_eq!(local.context.stream_id, "generator");
        let err = args(&["--kind", "generator", "--spec", "{}"])
            .context_in(None, true)
            .unwrap_err();
        assert!(
            err.to_string().contains("STREAMCONTEXT__STREAM_ID"),
            "{err}"
        );
        // A whole resource names its stream.
        let r = args(&[
            "--spec",
            r#"{"kind": "GeneratorStream", "metadata": {"name": "orders"}, "spec": {}}"#,
        ])
        .context_in(None, true)
        .unwrap();
        assert_eq!(r.context.stream_id, "orders");
    }

    #[test]
    fn context_from_flags_with_spec_file_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("orders.json");
        std::fs::write(&spec, r#"{"rows": 5, "sink": {"url": "file:///a"}}"#).unwrap();
        let a = args(&[
            "--kind",
            "generator",
            "--spec",
            spec.to_str().unwrap(),
            "--backfill",
            "--backfill-id",
            "b1",
            "--override",
            r#"{"rows": 7}"#,
        ]);
        let r = a.context(None).unwrap();
        assert_eq!(r.context.stream_id, "orders");
        assert_eq!(r.context.stream_kind, "generator");
        assert!(r.context.backfill);
        assert_eq!(r.context.backfill_id.as_deref(), Some("b1"));
        assert_eq!(r.context.spec["rows"], 7);
        assert!(
            r.notes.iter().any(|n| n.contains("stream id not set")),
            "{:?}",
            r.notes
        );

        let r = args(&["--spec", "{}"]).context(Some("single")).unwrap();
        assert_eq!(r.context.stream_kind, "single");
        assert_eq!(r.context.stream_id, "single");
        assert!(!r.context.backfill);

        let err = args(&["--spec", "{}"]).context(None).unwrap_err();
        assert!(
            err.to_string().contains("STREAMCONTEXT__STREAM_KIND"),
            "{err}"
        );
        let err = args(&["--kind", "k"]).context(None).unwrap_err();
        assert!(err.to_string().contains("STREAMCONTEXT__SPEC"), "{err}");
        let err = args(&["--kind", "k", "--spec", "/nonexistent/spec.json"])
            .context(None)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("STREAMCONTEXT__SPEC (--spec): cannot read spec file"),
            "{err}"
        );
        let resource = dir.path().join("orders-stream.yaml");
        std::fs::write(
            &resource,
            "apiVersion: streaming.sneaksanddata.com/v1\nkind: BlobLandingStream\nmetadata:\n  name: orders\nspec:\n  rows: 3\n",
        )
        .unwrap();
        let r = args(&["--spec", resource.to_str().unwrap()])
            .context(None)
            .unwrap();
        assert_eq!(r.context.stream_kind, "BlobLandingStream");
        assert_eq!(r.context.stream_id, "orders");
        assert_eq!(r.context.spec, serde_json::json!({"rows": 3}));
        let r = args(&[
            "--kind",
            "other",
            "--stream-id",
            "x",
            "--spec",
            r#"{"kind": "BlobLandingStream", "spec": {"rows": 4}}"#,
        ])
        .context(None)
        .unwrap();
        assert_eq!(
            (r.context.stream_kind.as_str(), r.context.stream_id.as_str()),
            ("other", "x")
        );
        assert_eq!(r.context.spec, serde_json::json!({"rows": 4}));
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "spec: [unclosed").unwrap();
        let err = args(&["--kind", "k", "--spec", bad.to_str().unwrap()])
            .context(None)
            .unwrap_err();
        assert!(err.to_string().contains("is not valid YAML"), "{err}");

        let err = args(&["--kind", "k", "--spec", "{}", "--backfill", "maybe"])
            .context(None)
            .unwrap_err();
        assert!(
            err.to_string().starts_with("STREAMCONTEXT__BACKFILL"),
            "{err}"
        );
    }
}
