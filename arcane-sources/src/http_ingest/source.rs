//! [`HttpIngestSource`]: the [`Source`] that owns the HTTP server, sequences requests into
//! positioned batches and answers each request once the sink committed it.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arcane_core::metrics::MetricLabels;
use arcane_core::{
    Checkpoint, DeadLetter, Error, Mode, Position, PositionedStream, Result, Source, SourceStart,
};
use arrow_array::{BooleanArray, RecordBatch};
use arrow_schema::SchemaRef;
use tokio::sync::{mpsc, oneshot};

use super::config::HttpIngestSourceConfig;
use super::rows::{RowBuilder, Rows};
use super::server::{self, Auth, Server};
use super::window::{IngestPosition, Window, encode_keys, key, now_secs};
use crate::runtime::{Output, spawn_source};

/// Metric: events accepted (committed or waiting for their commit).
pub const EVENTS: &str = "arcane.source.http_ingest.events";
/// Metric: request-body bytes received.
pub const BYTES: &str = "arcane.source.http_ingest.bytes";
/// Metric: requests refused, tagged `reason` (`unauthorized`, `forbidden`, `too_large`,
/// `too_many_events`, `overloaded`, `invalid`, `unsupported_media_type`, `draining`,
/// `timeout`, `method`).
pub const REJECTS: &str = "arcane.source.http_ingest.rejects";
/// Metric: events dropped as duplicates of committed (or committing) ones.
pub const DUPLICATES: &str = "arcane.source.http_ingest.duplicates";
/// Metric: seconds from a request's acceptance to its commit (histogram).
pub const COMMIT_LATENCY: &str = "arcane.source.http_ingest.commit_latency";
/// The `source` tag of requests refused before their source is known or whose source no
/// `allowedSources` entry allows (every metric of this source has a `source` tag: the path's
/// `sourcePaths` entry, the matched `allowedSources` entry, `*`, `webhook`, `mixed` or this).
pub const UNKNOWN_SOURCE: &str = "unknown";

/// Requests waiting for the sequencer.
const SUBMISSIONS: usize = 64;
/// Batches waiting for the graph.
const OUTPUT_BATCHES: usize = 4;

/// What a request is answered once its events are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Receipt {
    /// Events written.
    pub(crate) accepted: usize,
    /// Events dropped as duplicates.
    pub(crate) duplicates: usize,
    /// Events dead-lettered.
    pub(crate) dead_lettered: usize,
}

/// A request's rows on their way to the sequencer.
pub(crate) struct Submission {
    pub(crate) rows: Rows,
    pub(crate) letters: Vec<DeadLetter>,
    pub(crate) done: oneshot::Sender<Receipt>,
    /// The `source` tag of its metrics.
    pub(crate) source: String,
}

struct Waiter {
    done: oneshot::Sender<Receipt>,
    receipt: Receipt,
    since: Instant,
    source: String,
}

/// What the server, the sequencer and `commit` share.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) config: HttpIngestSourceConfig,
    pub(crate) rows: RowBuilder,
    pub(crate) auth: Auth,
    /// Lower-case idempotency header.
    pub(crate) idempotency_header: String,
    pub(crate) labels: Mutex<MetricLabels>,
    pub(crate) submit: Mutex<Option<mpsc::Sender<Submission>>>,
    /// Stopping (SIGTERM, or the stream ended): new requests are refused with 503.
    pub(crate) draining: AtomicBool,
    pub(crate) in_flight_bytes: AtomicUsize,
    waiters: Mutex<Waiters>,
}

#[derive(Default)]
struct Waiters {
    committed: u64,
    by_seq: BTreeMap<u64, Vec<Waiter>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("draining", &self.draining)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn labels(&self) -> Vec<metrics::Label> {
        self.labels.lock().map(|l| l.to_vec()).unwrap_or_default()
    }

    /// The stream's labels and `source` (see [`UNKNOWN_SOURCE`]).
    pub(crate) fn labels_for(&self, source: &str) -> Vec<metrics::Label> {
        let mut labels = self.labels();
        labels.push(metrics::Label::new("source", source.to_string()));
        labels
    }

    /// Answer `done` once request `seq` is committed (at once when it already is).
    fn wait(&self, seq: u64, done: oneshot::Sender<Receipt>, receipt: Receipt, source: String) {
        let Ok(mut w) = self.waiters.lock() else {
            return;
        };
        if seq <= w.committed {
            let _ = done.send(receipt);
            return;
        }
        w.by_seq.entry(seq).or_default().push(Waiter {
            done,
            receipt,
            since: Instant::now(),
            source,
        });
    }

    /// Everything through `seq` is committed: answer its requests. Returns how many wait still.
    fn release(&self, seq: u64) -> usize {
        let Ok(mut w) = self.waiters.lock() else {
            return 0;
        };
        w.committed = w.committed.max(seq);
        let rest = w.by_seq.split_off(&(seq + 1));
        let done = std::mem::replace(&mut w.by_seq, rest);
        for waiter in done.into_values().flatten() {
            metrics::histogram!(COMMIT_LATENCY, self.labels_for(&waiter.source))
                .record(waiter.since.elapsed().as_secs_f64());
            let _ = waiter.done.send(waiter.receipt);
        }
        w.by_seq.values().map(Vec::len).sum()
    }

    fn set_committed(&self, seq: u64) {
        if let Ok(mut w) = self.waiters.lock() {
            w.committed = seq;
        }
    }

    /// Drop every waiting request (they are answered 503: not committed).
    fn abandon(&self) {
        if let Ok(mut w) = self.waiters.lock() {
            w.by_seq.clear();
        }
    }
}

/// An HTTP endpoint receiving CloudEvents and webhooks; see the [module docs](super).
#[derive(Debug)]
pub struct HttpIngestSource {
    shared: Arc<Shared>,
    server: Option<Server>,
}

/// Set on the sequencer's task: once it ends (the stream was dropped), new requests are
/// refused.
struct DrainOnDrop(Arc<Shared>);

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        self.0.draining.store(true, Ordering::SeqCst);
    }
}

impl HttpIngestSource {
    /// Validate `config` and read its secrets; errors name fields under `spec.source`.
    pub fn new(config: HttpIngestSourceConfig) -> Result<Self> {
        Self::new_at(config, "spec.source")
    }

    /// Like [`new`](Self::new); errors name fields under `at`.
    pub fn new_at(config: HttpIngestSourceConfig, at: &str) -> Result<Self> {
        config.validate(at)?;
        let rows = RowBuilder::new(
            config.data_format,
            config.extensions_format,
            config.schema.as_deref(),
            at,
        )?;
        let auth = Auth::from_config(config.auth.as_ref(), &format!("{at}.auth"))?;
        Ok(Self {
            shared: Arc::new(Shared {
                name: format!("http-ingest {}", config.address),
                idempotency_header: config.idempotency_header.to_ascii_lowercase(),
                config,
                rows,
                auth,
                labels: Mutex::default(),
                submit: Mutex::default(),
                draining: AtomicBool::new(false),
                in_flight_bytes: AtomicUsize::new(0),
                waiters: Mutex::default(),
            }),
            server: None,
        })
    }

    /// The address the server listens on, once opened.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(|s| s.local_addr)
    }
}

impl Drop for HttpIngestSource {
    fn drop(&mut self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        self.shared.abandon();
    }
}

#[async_trait::async_trait]
impl Source for HttpIngestSource {
    fn name(&self) -> String {
        self.shared.name.clone()
    }

    fn schema(&self) -> Option<SchemaRef> {
        Some(self.shared.rows.schema().clone())
    }

    async fn open(&mut self, mut start: SourceStart) -> Result<PositionedStream> {
        let name = self.shared.name.clone();
        if start.mode == Mode::Backfill {
            return Err(Error::config(
                "STREAMCONTEXT__BACKFILL",
                "the http-ingest kind receives pushed events and has no history to backfill; run it in streaming mode",
            ));
        }
        let resume = start
            .resume_from
            .as_ref()
            .map(|c| (c.decode::<IngestPosition>(&name), c.rows));
        let now = now_secs();
        let dedup = &self.shared.config.dedup;
        let mut window = Window::new(dedup.max_ids, dedup.max_age.as_secs().max(1));
        let mut seq = 0;
        if let Some((position, rows)) = resume
            && let Some(position) = position?
        {
            window.restore(&position, rows, now).map_err(|e| {
                Error::source_permanent(
                    &name,
                    format!("the stored position cannot be read ({e}); use a new sink location"),
                )
            })?;
            seq = position.seq;
        }
        // The rows a checkpoint covers inside a request are recognised by their keys, not
        // skipped by count (requests arrive again in any order).
        if let Some(c) = start.resume_from.as_mut() {
            c.rows = 0;
        }
        self.shared.set_committed(seq);
        if let Ok(mut l) = self.shared.labels.lock() {
            *l = start.labels.clone();
        }
        tracing::info!(source = %name, sequence = seq, remembered_ids = window.len(), "http-ingest source opening");
        let (tx, rx) = mpsc::channel(SUBMISSIONS);
        if let Ok(mut s) = self.shared.submit.lock() {
            *s = Some(tx);
        }
        self.shared.draining.store(false, Ordering::SeqCst);
        if self.server.is_none() {
            self.server = Some(server::start(self.shared.clone()).await?);
        }
        let sequencer = Sequencer {
            shared: self.shared.clone(),
            window,
            seq,
            empty: RecordBatch::new_empty(self.shared.rows.schema().clone()),
        };
        let ended = DrainOnDrop(self.shared.clone());
        Ok(spawn_source(
            &name,
            &start,
            OUTPUT_BATCHES,
            move |out| async move {
                let _ended = ended;
                sequencer.run(rx, out).await
            },
        ))
    }

    async fn commit(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let Some(position) = checkpoint.decode::<IngestPosition>(&self.shared.name)? else {
            return Ok(());
        };
        let waiting = self.shared.release(position.seq);
        if waiting == 0
            && self.shared.draining.load(Ordering::SeqCst)
            && let Some(server) = &self.server
        {
            // Stopping: let the answers just released reach their clients.
            server.close_connections().await;
        }
        Ok(())
    }
}

/// Turns submissions into positioned batches, one request at a time.
struct Sequencer {
    shared: Arc<Shared>,
    window: Window,
    /// The last request emitted.
    seq: u64,
    empty: RecordBatch,
}

impl Sequencer {
    async fn run(mut self, mut rx: mpsc::Receiver<Submission>, mut out: Output) -> Result<()> {
        let mut stored = self.window.encode();
        while let Some(sub) = rx.recv().await {
            let Submission {
                rows,
                letters,
                done,
                source,
            } = sub;
            let now = now_secs();
            self.window.prune(now);
            let mut wait_for = 0;
            let mut duplicates = 0;
            let mut keep = Vec::with_capacity(rows.ids.len());
            let mut keys = Vec::with_capacity(rows.ids.len());
            let mut seen = HashSet::new();
            for id in &rows.ids {
                let Some((source, id)) = id else {
                    keep.push(true);
                    keys.push(0);
                    continue;
                };
                let k = key(source, id);
                if let Some(seq) = self.window.seq_of(k) {
                    wait_for = wait_for.max(seq);
                    duplicates += 1;
                    keep.push(false);
                } else if !seen.insert(k) {
                    duplicates += 1;
                    keep.push(false);
                } else {
                    keep.push(true);
                    keys.push(k);
                }
            }
            let batch = if duplicates == 0 {
                rows.batch
            } else {
                arrow_select::filter::filter_record_batch(&rows.batch, &BooleanArray::from(keep))
                    .map_err(|e| {
                        Error::fatal(format!("{}: cannot drop duplicates: {e}", self.shared.name))
                    })?
            };
            let receipt = Receipt {
                accepted: batch.num_rows(),
                duplicates,
                dead_lettered: letters.len(),
            };
            let labels = self.shared.labels_for(&source);
            metrics::counter!(DUPLICATES, labels.clone()).increment(duplicates as u64);
            metrics::counter!(EVENTS, labels).increment(batch.num_rows() as u64);
            if batch.num_rows() == 0 && letters.is_empty() {
                // Nothing new: answered once what it duplicates is committed.
                self.shared.wait(wait_for, done, receipt, source);
                continue;
            }
            let seq = self.seq + 1;
            if batch.num_rows() > 0 {
                // The position before the request names its rows, in case a commit ends
                // inside it.
                let before = IngestPosition {
                    seq: self.seq,
                    window: stored.clone(),
                    next: Some(encode_keys(&keys)),
                };
                if out
                    .emit(self.empty.clone(), Position::encode(&before)?, Vec::new())
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            for k in keys.iter().filter(|k| **k != 0) {
                self.window.insert(*k, now, seq);
            }
            self.window.prune(now);
            stored = self.window.encode();
            let position = IngestPosition {
                seq,
                window: stored.clone(),
                next: None,
            };
            self.seq = seq;
            self.shared.wait(seq, done, receipt, source);
            if out
                .emit(batch, Position::encode(&position)?, letters)
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        Ok(())
    }
}
