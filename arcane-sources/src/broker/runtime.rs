//! The moving parts every broker source shares: the ack ledger, reconnect backoff, and the
//! bounded output that decodes, dead-letters and skips already-committed rows.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arcane_core::{DeadLetter, Error, Position, PositionedBatch, PositionedStream, Result};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::config::ReconnectConfig;
use super::payload::{BrokerMessage, PayloadDecoder};

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

    /// Remove every entry up to and including `key`; the last one's token is what to ack.
    pub(crate) fn take_through(&self, key: u64) -> Option<T> {
        let mut q = self.inner.lock().ok()?;
        let mut last = None;
        while q.front().is_some_and(|(k, _)| *k <= key) {
            last = q.pop_front().map(|(_, t)| t);
        }
        last
    }

    /// Remove every entry up to and including `key` and return their tokens, in order.
    #[cfg_attr(not(feature = "mqtt"), allow(dead_code))]
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

/// Exponential backoff between reconnect attempts, giving up after `maxAttempts`.
#[derive(Debug)]
pub(crate) struct Backoff {
    config: ReconnectConfig,
    failures: u32,
    delay: Duration,
}

impl Backoff {
    pub(crate) fn new(config: ReconnectConfig) -> Self {
        let delay = config.initial_delay;
        Self {
            config,
            failures: 0,
            delay,
        }
    }

    /// A connection worked: the next failure starts from the initial delay again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
        self.delay = self.config.initial_delay;
    }

    /// An attempt failed with `error`: sleep before the next one, or give up with a transient
    /// error once `maxAttempts` consecutive attempts failed.
    pub(crate) async fn failed(
        &mut self,
        source: &str,
        what: &str,
        error: impl std::fmt::Display,
    ) -> Result<()> {
        self.failures += 1;
        if self.failures >= self.config.max_attempts {
            return Err(Error::source_transient(
                source,
                format!("{what} failed {} times in a row; giving up", self.failures),
                error.to_string(),
            ));
        }
        tracing::warn!(source, attempt = self.failures, delay = ?self.delay, error = %error, "{what} failed; retrying");
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(self.config.max_delay);
        Ok(())
    }
}

/// Where decoded batches go: the batch (minus rows a resumed checkpoint already covers) with
/// the dead letters of its messages, into a bounded channel.
#[derive(Debug)]
pub(crate) struct Output {
    tx: mpsc::Sender<Result<PositionedBatch>>,
    decoder: PayloadDecoder,
    skip_rows: u64,
}

impl Output {
    /// `skip_rows`: rows after the resume position that the checkpoint already covers.
    pub(crate) fn new(
        tx: mpsc::Sender<Result<PositionedBatch>>,
        decoder: PayloadDecoder,
        skip_rows: u64,
    ) -> Self {
        Self {
            tx,
            decoder,
            skip_rows,
        }
    }

    /// Decode `messages` and send them as one batch ending at `position`, with the dead
    /// letters of the messages that cannot be decoded and `rejected` (messages refused before
    /// decoding). Returns `false` when the stream was dropped.
    ///
    /// Every dead letter of the batch is sent, also on a resume inside it: they travel with the
    /// batch's end, which the resumed checkpoint does not cover yet.
    pub(crate) async fn emit(
        &mut self,
        messages: &[BrokerMessage],
        mut rejected: Vec<DeadLetter>,
        position: Position,
    ) -> bool {
        let decoded = self.decoder.decode(messages);
        rejected.extend(decoded.dead_letters);
        let mut batch = decoded.batch;
        if self.skip_rows > 0 {
            let skip = (self.skip_rows as usize).min(batch.num_rows());
            batch = batch.slice(skip, batch.num_rows() - skip);
            self.skip_rows -= skip as u64;
        }
        metrics::counter!("arcane.source.broker.messages").increment(messages.len() as u64);
        self.tx
            .send(Ok(
                PositionedBatch::new(batch, position).with_dead_letters(rejected)
            ))
            .await
            .is_ok()
    }

    /// Send an error (the stream ends after it).
    pub(crate) async fn fail(&mut self, error: Error) {
        let _ = self.tx.send(Err(error)).await;
    }

    /// True when the stream was dropped.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Run `task` and expose what it sends as a [`PositionedStream`]; dropping the stream aborts
/// the task.
pub(crate) fn spawn_stream<F>(
    rx: mpsc::Receiver<Result<PositionedBatch>>,
    task: F,
) -> PositionedStream
where
    F: Future<Output = ()> + Send + 'static,
{
    let guard = AbortOnDrop(tokio::spawn(task));
    futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|item| (item, (rx, guard)))
    })
    .boxed()
}

/// Aborts the task when dropped (a dropped `JoinHandle` alone detaches it).
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
    fn ledger_acks_the_last_entry_through_a_key() {
        let l = Ledger::default();
        for k in [3, 5, 9] {
            l.push(k, k * 10);
        }
        assert_eq!(l.take_through(4), Some(30));
        assert_eq!(l.take_through(4), None);
        assert_eq!(l.take_through(100), Some(90));
        assert_eq!(l.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_gives_up_after_max_attempts() {
        let mut b = Backoff::new(ReconnectConfig {
            max_attempts: 3,
            ..ReconnectConfig::default()
        });
        assert!(b.failed("s", "connect", "refused").await.is_ok());
        assert!(b.failed("s", "connect", "refused").await.is_ok());
        let err = b.failed("s", "connect", "refused").await.unwrap_err();
        assert!(err.to_string().contains("3 times"), "{err}");
        b.reset();
        assert!(b.failed("s", "connect", "refused").await.is_ok());
    }
}
