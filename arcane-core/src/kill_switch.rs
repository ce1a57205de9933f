//! [`KillSwitch`]: stop a running stream gracefully or at once.

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Signal {
    Run,
    Shutdown,
    Abort,
}

/// Stops a running stream; cheap to clone, every clone controls the same stream.
///
/// * [`KillSwitch::shutdown`] is graceful: stop pulling from the source, flush the partial
///   group, commit it, ack the source, return.
/// * [`KillSwitch::abort`] is immediate: in-flight work is dropped; nothing uncommitted is
///   acked, so it is re-read on the next run.
///
/// The runner calls `shutdown` on SIGTERM and escalates to `abort` after its drain deadline.
#[derive(Debug, Clone)]
pub struct KillSwitch {
    tx: Arc<watch::Sender<Signal>>,
}

impl Default for KillSwitch {
    fn default() -> Self {
        Self::new()
    }
}

impl KillSwitch {
    /// A new switch in the running state.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(Signal::Run).0),
        }
    }

    /// Request a graceful shutdown.
    pub fn shutdown(&self) {
        self.tx.send_if_modified(|s| {
            let changed = *s < Signal::Shutdown;
            if changed {
                *s = Signal::Shutdown;
            }
            changed
        });
    }

    /// Abort at once.
    pub fn abort(&self) {
        self.tx.send_replace(Signal::Abort);
    }

    /// True once shutdown or abort was requested.
    pub fn is_shutdown_requested(&self) -> bool {
        *self.tx.borrow() >= Signal::Shutdown
    }

    /// True once abort was requested.
    pub fn is_aborted(&self) -> bool {
        *self.tx.borrow() == Signal::Abort
    }

    /// Resolves when shutdown (or abort) is requested.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes the switch.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|s| *s >= Signal::Shutdown).await;
    }

    /// Resolves when abort is requested.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes the switch.
    pub async fn abort_requested(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|s| *s == Signal::Abort).await;
    }
}
