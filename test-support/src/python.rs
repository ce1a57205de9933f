//! The Python the tests run as an independent reader (`ARCANE_TEST_PYTHON`: a Python with
//! pyarrow, deltalake, pyiceberg and duckdb; `scripts/test.sh` installs it).
//!
//! [`run`] ends every script with `os._exit` once its output is flushed: the readers' native
//! thread pools (pyarrow, delta-rs) can abort the interpreter's shutdown ("terminate called
//! without an active exception") after a script has printed its whole answer, which would
//! fail a test whose reading succeeded. An exception in the script still exits 1 with its
//! traceback.

use std::process::{Command, Output};

/// Path of the test Python (`ARCANE_TEST_PYTHON`).
pub fn python() -> String {
    std::env::var("ARCANE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "ARCANE_TEST_PYTHON is not set: point it at a Python with pyarrow, deltalake and \
             pyiceberg installed (scripts/test.sh installs them), e.g. \
             ARCANE_TEST_PYTHON=.tools/venv/bin/python"
        )
    })
}

/// `code` followed by the flush and `os._exit(0)` that end a script that ran to its end.
pub fn script(code: &str) -> String {
    format!(
        "{code}\nimport os as _os, sys as _sys\n_sys.stdout.flush()\n_sys.stderr.flush()\n_os._exit(0)\n"
    )
}

/// Run `code` with `args` in `sys.argv[1..]` and `envs` set; the finished process.
pub fn run(code: &str, args: &[&str], envs: &[(&str, &str)]) -> std::io::Result<Output> {
    Command::new(python())
        .arg("-c")
        .arg(script(code))
        .args(args)
        .envs(envs.iter().copied())
        .output()
}

/// [`run`], panicking with the script's stderr unless it succeeded; its stdout.
pub fn run_ok(code: &str, args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = run(code, args, envs).expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
