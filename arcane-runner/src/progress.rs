//! Progress of a running stream: a live line on a terminal, a log line at an interval
//! otherwise, and a one-line summary at the end on a terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arcane_core::{Progress, RunSummary};

use crate::outcome::Outcome;

/// How often the terminal line is redrawn.
const TTY_REFRESH: Duration = Duration::from_millis(250);

/// True while a progress line is drawn on the terminal (logs clear it before writing).
static LINE_ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether progress is drawn as a live line: text logs and a terminal on stderr.
pub(crate) fn live_line(text_logs: bool) -> bool {
    text_logs && std::io::stderr().is_terminal()
}

/// Clear the live progress line, if one is drawn (called before a log line is written).
pub(crate) fn clear_line() {
    if LINE_ACTIVE.swap(false, Ordering::AcqRel) {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(b"\r\x1b[2K");
        let _ = err.flush();
    }
}

/// Reports progress until dropped.
#[derive(Debug)]
pub(crate) struct Reporter {
    task: tokio::task::JoinHandle<()>,
    live: bool,
}

impl Reporter {
    /// Start reporting `progress`: a live line when `live`, else an `info` log every
    /// `interval`.
    pub(crate) fn start(progress: Progress, live: bool, interval: Duration) -> Self {
        let started = Instant::now();
        let task = tokio::spawn(async move {
            // A year stands for "never" without overflowing the timer.
            let every = if live {
                TTY_REFRESH
            } else {
                interval.min(Duration::from_secs(365 * 24 * 3600))
            };
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let s = progress.snapshot();
                let elapsed = started.elapsed();
                if live {
                    let line = progress_line(&s, elapsed);
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2K{line}");
                    let _ = err.flush();
                    LINE_ACTIVE.store(true, Ordering::Release);
                } else {
                    tracing::info!(
                        rows_incoming = s.rows_incoming,
                        rows_committed = s.rows_committed,
                        rows_uncommitted = s.rows_uncommitted,
                        files_committed = s.files_committed,
                        bytes_committed = s.bytes_committed,
                        elapsed_secs = elapsed.as_secs(),
                        "progress"
                    );
                }
            }
        });
        Self { task, live }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
        if self.live {
            clear_line();
        }
    }
}

/// `read 1.2M rows · committed 1.2M rows in 4 files (48.1 MiB) · 310k rows/s · 3.9s`
pub(crate) fn progress_line(s: &RunSummary, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    format!(
        "read {} rows · committed {} rows in {} files ({}) · {} rows/s · {:.1}s",
        count(s.rows_incoming),
        count(s.rows_committed),
        s.files_committed,
        bytes(s.bytes_committed),
        count((s.rows_incoming as f64 / secs) as u64),
        elapsed.as_secs_f64()
    )
}

/// The final summary line for a terminal:
/// `SUCCESS (0) in 0.9s: 24000 rows committed in 4 files (1.1 MiB); backfill finished`.
pub(crate) fn summary_line(outcome: &Outcome, elapsed: Duration) -> String {
    let s = &outcome.summary;
    let mut line = format!(
        "{} in {:.1}s: {} rows committed in {} files ({})",
        outcome.exit_code,
        elapsed.as_secs_f64(),
        s.rows_committed,
        s.files_committed,
        bytes(s.bytes_committed),
    );
    if s.rows_dead_lettered > 0 {
        line.push_str(&format!(", {} dead-lettered", s.rows_dead_lettered));
    }
    if s.rows_uncommitted > 0 {
        line.push_str(&format!(
            ", {} rows read but not committed (not acknowledged; re-read next run)",
            s.rows_uncommitted
        ));
    }
    line.push_str("; ");
    line.push_str(&outcome.message);
    line
}

/// Print the summary line to stderr when it is a terminal.
#[allow(clippy::print_stderr)]
pub(crate) fn print_summary(outcome: &Outcome, elapsed: Duration, live: bool) {
    if live {
        clear_line();
        eprintln!("{}", summary_line(outcome, elapsed));
    }
}

fn count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}M", n as f64 / 1e6),
        _ => format!("{:.2}G", n as f64 / 1e9),
    }
}

fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let f = n as f64;
    if f < KIB {
        format!("{n} B")
    } else if f < KIB * KIB {
        format!("{:.1} KiB", f / KIB)
    } else if f < KIB * KIB * KIB {
        format!("{:.1} MiB", f / KIB / KIB)
    } else {
        format!("{:.2} GiB", f / KIB / KIB / KIB)
    }
}

/// A `tracing` writer for text logs (on stderr) that clears the live progress line first.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClearingStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ClearingStderr {
    type Writer = std::io::Stderr;

    fn make_writer(&'a self) -> Self::Writer {
        clear_line();
        std::io::stderr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_rows_files_bytes_and_rate() {
        let s = RunSummary {
            rows_incoming: 1_250_000,
            rows_committed: 1_000_000,
            files_committed: 4,
            bytes_committed: 50_000_000,
            ..RunSummary::default()
        };
        assert_eq!(
            progress_line(&s, Duration::from_secs(5)),
            "read 1.25M rows · committed 1.00M rows in 4 files (47.7 MiB) · 250.0k rows/s · 5.0s"
        );
    }
}
