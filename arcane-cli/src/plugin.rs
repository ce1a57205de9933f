//! `arcane plugin check`: run a plugin through the protocol's contract.

use std::io::Write;
use std::path::PathBuf;

use arcane_sources::plugin::check::{DEFAULT_CHECK_MAX_ROWS, check_plugin};
use clap::Subcommand;

/// The `plugin` subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Run a plugin through the protocol's contract: handshake, schema, a read from the start,
    /// a resume from a position in the middle (exactly the rows after it), commit, shutdown and
    /// a restart. Prints one line per check (PASS/FAIL and what failed); exit code 0 only if
    /// every check passes, 1 otherwise.
    Check {
        /// The plugin executable.
        path: PathBuf,
        /// The plugin's config (JSON object), as in the spec's `source.config`; it must yield
        /// at least 2 batches and end.
        #[arg(long, default_value = "{}")]
        config: String,
        /// Stop reading (and fail) after this many rows.
        #[arg(long, default_value_t = DEFAULT_CHECK_MAX_ROWS)]
        max_rows: usize,
    },
}

/// Run a `plugin` subcommand; the process's exit code.
pub(crate) fn run(command: PluginCommand) -> std::process::ExitCode {
    let PluginCommand::Check {
        path,
        config,
        max_rows,
    } = command;
    let fatal = std::process::ExitCode::from(arcane_core::ExitCode::Fatal as u8);
    let mut stdout = std::io::stdout().lock();
    let config: serde_json::Value = match serde_json::from_str(&config) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => {
            let _ = writeln!(stdout, "FAIL config    --config must be a JSON object");
            return fatal;
        }
        Err(e) => {
            let _ = writeln!(stdout, "FAIL config    --config is not JSON: {e}");
            return fatal;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(stdout, "FAIL runtime   cannot start the async runtime: {e}");
            return fatal;
        }
    };
    let results = runtime.block_on(check_plugin(&path, config, max_rows));
    let mut passed = !results.is_empty();
    for result in &results {
        passed &= result.passed;
        let _ = writeln!(stdout, "{result}");
    }
    let _ = stdout.flush();
    if passed {
        std::process::ExitCode::SUCCESS
    } else {
        fatal
    }
}
