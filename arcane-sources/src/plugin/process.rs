//! Starting a plugin executable: a cleared environment (PATH, HOME and the plugin's own
//! `PLUGIN_{NAME}_*` variables), its handshake line, its stderr (and any later stdout) in the
//! runner's logs, killed when dropped.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arcane_core::{Error, Result};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use super::handshake::{Handshake, MAX_HANDSHAKE_LINE, parse_handshake};

/// Lines of the plugin's stderr kept for error messages.
const STDERR_TAIL: usize = 5;

/// What is needed to start a plugin.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    /// The plugin's name (logs, errors, the `PLUGIN_{NAME}_` prefix).
    pub(crate) name: String,
    /// The executable.
    pub(crate) path: PathBuf,
    /// The child's whole environment.
    pub(crate) env: Vec<(String, String)>,
    /// How long the handshake line may take.
    pub(crate) handshake_timeout: Duration,
}

/// The `PLUGIN_{NAME}_` prefix of a plugin's variables: the name upper-cased, `-` and `.` as `_`.
pub fn env_prefix(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    format!("PLUGIN_{name}_")
}

/// The child's environment, from the runner's `vars`: `PATH` and `HOME`, and the variables
/// starting with the plugin's prefix. Nothing else of the runner's environment (object-store
/// keys, other plugins' secrets) reaches the plugin.
pub(crate) fn child_env(
    name: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let prefix = env_prefix(name);
    vars.into_iter()
        .filter(|(k, _)| k == "PATH" || k == "HOME" || k.starts_with(&prefix))
        .collect()
}

/// A started plugin. Dropping it kills the process.
#[derive(Debug)]
pub(crate) struct PluginProcess {
    pub(crate) child: Child,
    pub(crate) handshake: Handshake,
    /// The write end of the plugin's stdin, held open while the plugin runs.
    _stdin: Option<tokio::process::ChildStdin>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

/// Why a start failed, for the caller's classification.
#[derive(Debug)]
pub(crate) enum StartError {
    /// The executable cannot be run, or the plugin said something that is not a handshake:
    /// fixing the plugin or the spec is needed.
    Fatal(Error),
    /// The plugin exited before its handshake line (the first time: it needs fixing).
    Exited(String),
    /// The plugin did not answer in time: a restart may help.
    Failed(String),
}

impl PluginProcess {
    /// Start the plugin and read its handshake line.
    pub(crate) async fn start(launch: &Launch) -> Result<Self, StartError> {
        let name = &launch.name;
        let mut command = Command::new(&launch.path);
        command
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            // The plugin's stdin is a pipe the runner never writes to and holds open: its end
            // (EOF) tells the plugin the runner is gone, even after a SIGKILL.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C in the runner's terminal reaches the runner,
            // which drains and then stops the plugin itself.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| {
            let what = match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "executable {} was not found; put the plugin there or fix spec.source.plugin/path (plugins are looked up in $ARCANE_PLUGIN_DIR, default /plugins)",
                    launch.path.display()
                ),
                std::io::ErrorKind::PermissionDenied => format!(
                    "{} cannot be executed (permission denied); make it executable (chmod +x) and readable by the runner's user",
                    launch.path.display()
                ),
                _ => format!("cannot start {}: {e}", launch.path.display()),
            };
            StartError::Fatal(Error::source_permanent(source_name(name), what))
        })?;
        let stdin = child.stdin.take();
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(log_lines(name.clone(), stderr, Some(stderr_tail.clone())));
        }
        let Some(stdout) = child.stdout.take() else {
            return Err(StartError::Failed("its stdout is not readable".into()));
        };
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        let read = tokio::time::timeout(
            launch.handshake_timeout,
            (&mut stdout)
                .take(MAX_HANDSHAKE_LINE as u64)
                .read_until(b'\n', &mut line),
        )
        .await;
        let mut process = Self {
            child,
            handshake: Handshake {
                version: 0,
                socket: PathBuf::new(),
            },
            _stdin: stdin,
            stderr_tail,
        };
        match read {
            Err(_) => {
                return Err(StartError::Failed(format!(
                    "printed no handshake line within {:?} (spec.source.handshakeTimeout){}",
                    launch.handshake_timeout,
                    process.stderr_hint()
                )));
            }
            Ok(Err(e)) => {
                return Err(StartError::Failed(format!(
                    "reading its stdout failed: {e}"
                )));
            }
            Ok(Ok(0)) => {
                let status = process.exit_status(Duration::from_secs(2)).await;
                return Err(StartError::Exited(format!(
                    "exited ({}) before printing its handshake line{}",
                    describe_status(status),
                    process.stderr_hint()
                )));
            }
            Ok(Ok(_)) => {}
        }
        let text = String::from_utf8_lossy(&line);
        process.handshake = parse_handshake(&text).map_err(|e| {
            StartError::Fatal(Error::source_permanent(
                source_name(name),
                format!("{e}{}", process.stderr_hint()),
            ))
        })?;
        tokio::spawn(log_lines(name.clone(), stdout, None));
        Ok(process)
    }

    /// The last stderr lines, as a suffix for an error message.
    pub(crate) fn stderr_hint(&self) -> String {
        let tail = self
            .stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join(" | "))
            .unwrap_or_default();
        if tail.is_empty() {
            String::new()
        } else {
            format!("; its last stderr lines: {tail}")
        }
    }

    /// The process id (while it runs).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The exit status, waiting at most `wait`.
    pub(crate) async fn exit_status(&mut self, wait: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(wait, self.child.wait())
            .await
            .ok()
            .and_then(|r| r.ok())
    }

    /// Wait up to `grace` for the process to exit, then kill it; its exit status if it
    /// exited by itself, `None` if it was killed.
    pub(crate) async fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exit_status(grace).await {
            return Some(status);
        }
        let _ = self.child.start_kill();
        let _ = self.exit_status(Duration::from_secs(5)).await;
        None
    }

    /// Kill the process now and reap it.
    pub(crate) async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.exit_status(Duration::from_secs(5)).await;
    }
}

/// The source name of plugin `name` in errors.
pub(crate) fn source_name(name: &str) -> String {
    format!("plugin {name}")
}

fn describe_status(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => "status unknown".into(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            _ => s.to_string(),
        },
    }
}

/// Log every line of `reader` at INFO tagged with the plugin's name, keeping the last few.
async fn log_lines(
    name: String,
    reader: impl AsyncRead + Unpin,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
) {
    let mut lines = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut lines)
            .take(64 * 1024)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        tracing::info!(plugin = %name, "{text}");
        if let Some(tail) = &tail
            && let Ok(mut tail) = tail.lock()
        {
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(text.to_string());
        }
    }
}

/// Check that `path` is a file the runner can execute; the error says what to do.
pub(crate) fn check_executable(name: &str, path: &Path, field: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::config(
            field,
            format!(
                "plugin {name}: {} cannot be read ({e}); put the plugin executable there (plugins are looked up in $ARCANE_PLUGIN_DIR, default /plugins) or fix the spec",
                path.display()
            ),
        )
    })?;
    if !meta.is_file() {
        return Err(Error::config(
            field,
            format!("plugin {name}: {} is not a file", path.display()),
        ));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(Error::config(
            field,
            format!(
                "plugin {name}: {} is not executable; chmod +x it (a script needs a #! line)",
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_path_home_and_the_plugins_own_variables_are_passed() {
        let vars = [
            ("PATH", "/bin"),
            ("HOME", "/root"),
            ("PLUGIN_MY_API_TOKEN", "secret"),
            ("PLUGIN_OTHER_TOKEN", "not yours"),
            ("AWS_SECRET_ACCESS_KEY", "no"),
            ("PLUGIN_MY_APIX", "prefix must match exactly"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let env = child_env("my-api", vars);
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["PATH", "HOME", "PLUGIN_MY_API_TOKEN"]);
        assert_eq!(env_prefix("a.b-c"), "PLUGIN_A_B_C_");
    }
}
