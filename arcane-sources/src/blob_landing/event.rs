//! What a file reader reports to the source, and how failures are classified.

use arcane_core::DeadLetter;
use arrow_array::RecordBatch;

/// Progress of one file, sent from its reader (a blocking thread or a task) to the source.
#[derive(Debug)]
pub(crate) enum FileEvent {
    /// Decoded rows, the records among them that could not be decoded, and the file's
    /// progress after them.
    Batch {
        batch: RecordBatch,
        dead_letters: Vec<DeadLetter>,
        progress: Progress,
    },
    /// The file is finished (read to the end, or dead-lettered from some point on, with that
    /// dead letter).
    Done {
        progress: Progress,
        dead_letters: Vec<DeadLetter>,
    },
    /// The store failed while reading: transient, the stream stops and is restarted.
    Store(object_store::Error),
    /// An unexpected internal failure.
    Failed(String),
}

/// How far a file has been read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Records consumed (rows decoded and records dead-lettered).
    pub(crate) records: u64,
    /// Physical lines consumed.
    pub(crate) lines: u64,
    /// Decompressed bytes consumed.
    pub(crate) offset: u64,
}

/// Why a file could not be opened or its schema inferred.
#[derive(Debug)]
pub(crate) enum FileError {
    /// The store failed: transient.
    Store(object_store::Error),
    /// The content is unusable: the file is dead-lettered.
    Content(String),
}
