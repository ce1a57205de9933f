//! An in-memory sink.

use std::sync::{Arc, Mutex, MutexGuard};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result, Retry};
use crate::position::{Checkpoint, Group};
use crate::sink::{Commit, Sink, SinkContext};

/// What a [`MemorySink`] committed; shared between sink instances to simulate restarts.
#[derive(Debug, Default)]
pub struct MemoryStore {
    committed: Vec<RecordBatch>,
    dead_letters: Vec<DeadLetter>,
    checkpoint: Option<Checkpoint>,
    commits: usize,
}

/// A shared handle on a [`MemoryStore`]; clones see the same store.
#[derive(Debug, Clone, Default)]
pub struct MemoryStoreHandle(Arc<Mutex<MemoryStore>>);

impl MemoryStoreHandle {
    fn locked(&self) -> MutexGuard<'_, MemoryStore> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Committed batches.
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.locked().committed.clone()
    }

    /// Committed rows.
    pub fn rows(&self) -> usize {
        self.locked()
            .committed
            .iter()
            .map(RecordBatch::num_rows)
            .sum()
    }

    /// Committed dead letters.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.locked().dead_letters.clone()
    }

    /// The last committed checkpoint.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        self.locked().checkpoint.clone()
    }

    /// Commits made.
    pub fn commits(&self) -> usize {
        self.locked().commits
    }
}

/// An in-memory [`Sink`]: commits every `commit_every` groups (default 1), checks the schema
/// of every group against the first one, and keeps committed batches and dead letters in a
/// [`MemoryStore`] (dead letters are committed with their rows, exactly once).
#[derive(Debug)]
pub struct MemorySink {
    store: MemoryStoreHandle,
    commit_every: usize,
    pending: Vec<(RecordBatch, Checkpoint, Vec<DeadLetter>)>,
    schema: Option<SchemaRef>,
    fail_after_writes: Option<usize>,
    writes: usize,
}

impl Default for MemorySink {
    fn default() -> Self {
        Self::new()
    }
}

impl MemorySink {
    /// A sink with a fresh store.
    pub fn new() -> Self {
        Self::with_store(MemoryStoreHandle::default())
    }

    /// A sink over an existing store (a "restarted" sink sees what was committed before).
    pub fn with_store(store: MemoryStoreHandle) -> Self {
        Self {
            store,
            commit_every: 1,
            pending: Vec::new(),
            schema: None,
            fail_after_writes: None,
            writes: 0,
        }
    }

    /// Commit only every `n` groups (and on flush).
    pub fn commit_every(mut self, n: usize) -> Self {
        self.commit_every = n.max(1);
        self
    }

    /// Fail every write after the first `n` with a transient sink error.
    pub fn fail_after_writes(mut self, n: usize) -> Self {
        self.fail_after_writes = Some(n);
        self
    }

    /// The store's handle.
    pub fn store(&self) -> MemoryStoreHandle {
        self.store.clone()
    }

    fn commit_pending(&mut self) -> Option<Commit> {
        let checkpoint = self.pending.last()?.1.clone();
        let mut letters = Vec::new();
        let batches: Vec<RecordBatch> = self
            .pending
            .drain(..)
            .map(|(b, _, l)| {
                letters.extend(l);
                b
            })
            .collect();
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        let bytes = batches
            .iter()
            .map(|b| b.get_array_memory_size() as u64)
            .sum();
        let mut store = self.store.locked();
        store.commits += 1;
        let file = format!("memory-{}", store.commits);
        store
            .committed
            .extend(batches.into_iter().filter(|b| b.num_rows() > 0));
        store.checkpoint = Some(checkpoint.clone());
        let dead_letters = letters.len() as u64;
        store.dead_letters.extend(letters);
        Some(Commit {
            checkpoint,
            rows,
            bytes,
            files: vec![file],
            dead_letters,
        })
    }
}

#[async_trait::async_trait]
impl Sink for MemorySink {
    fn name(&self) -> String {
        "memory".into()
    }

    async fn open(&mut self, _ctx: &SinkContext) -> Result<Option<Checkpoint>> {
        self.pending.clear();
        let store = self.store.locked();
        self.schema = store.committed.first().map(RecordBatch::schema);
        Ok(store.checkpoint.clone())
    }

    async fn write(&mut self, group: Group) -> Result<Option<Commit>> {
        self.writes += 1;
        if self.fail_after_writes.is_some_and(|n| self.writes > n) {
            return Err(Error::sink(
                "memory",
                format!("injected failure on write {}", self.writes),
                Retry::Transient,
                None,
            ));
        }
        if group.batch.num_rows() > 0 {
            match &self.schema {
                None => self.schema = Some(group.batch.schema()),
                Some(expected) if expected.fields() != group.batch.schema().fields() => {
                    let expected = expected.clone();
                    let found = group.batch.schema();
                    self.commit_pending();
                    return Err(Error::SchemaMismatch {
                        location: "memory sink".into(),
                        message: format!("expected {expected:?}, found {found:?}"),
                    });
                }
                Some(_) => {}
            }
        }
        self.pending
            .push((group.batch, group.checkpoint, group.dead_letters));
        if self.pending.len() >= self.commit_every {
            return Ok(self.commit_pending());
        }
        Ok(None)
    }

    async fn flush(&mut self) -> Result<Option<Commit>> {
        Ok(self.commit_pending())
    }

    fn stores_dead_letters(&self) -> bool {
        true
    }
}
