//! Small parts of the broker source: the ack ledger, deadlines and the clock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Batches decoded ahead of the graph. Together with the broker's own flow control (prefetch,
/// max ack pending, receive maximum) this bounds memory: a slow sink stops consumption.
pub(crate) const OUTPUT_BATCHES: usize = 2;

/// What must be acked upstream once a batch is committed: one token per yielded batch, keyed
/// by the batch's key (stream sequence, batch number), in order.
pub(crate) struct Ledger<T> {
    inner: Arc<Mutex<VecDeque<(u64, T)>>>,
}

impl<T> std::fmt::Debug for Ledger<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<u64> = self
            .inner
            .lock()
            .map(|q| q.iter().map(|(k, _)| *k).collect())
            .unwrap_or_default();
        f.debug_struct("Ledger").field("keys", &keys).finish()
    }
}

impl<T> Clone for Ledger<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Default for Ledger<T> {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
        }
    }
}

impl<T> Ledger<T> {
    /// Record the token of the batch with `key`.
    pub(crate) fn push(&self, key: u64, token: T) {
        if let Ok(mut q) = self.inner.lock() {
            q.push_back((key, token));
        }
    }

    /// Remove every entry up to and including `key` and return their tokens, in order.
    pub(crate) fn drain_through(&self, key: u64) -> Vec<T> {
        let mut out = Vec::new();
        if let Ok(mut q) = self.inner.lock() {
            while q.front().is_some_and(|(k, _)| *k <= key) {
                if let Some((_, t)) = q.pop_front() {
                    out.push(t);
                }
            }
        }
        out
    }

    /// Forget everything (the tokens became invalid, e.g. after a reconnect).
    pub(crate) fn clear(&self) {
        if let Ok(mut q) = self.inner.lock() {
            q.clear();
        }
    }

    /// Entries waiting for a commit.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().map(|q| q.len()).unwrap_or(0)
    }
}

/// Sleep until `deadline`, or forever without one.
///
/// # Cancel safety
///
/// Cancel safe: it only sleeps.
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Milliseconds since the Unix epoch, now.
#[cfg_attr(not(feature = "mqtt"), allow(dead_code))]
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_hands_out_every_token_through_a_key_once() {
        let l = Ledger::default();
        for k in [3, 5, 9] {
            l.push(k, k * 10);
        }
        assert_eq!(l.drain_through(4), vec![30]);
        assert!(l.drain_through(4).is_empty());
        assert_eq!(l.drain_through(100), vec![50, 90]);
        assert_eq!(l.len(), 0);
    }
}
