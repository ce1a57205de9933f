//! Source positions, checkpoints and positioned batches.

use arrow_array::RecordBatch;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result};

/// Where a source is: an offset, LSN, cursor, sequence, or file + line, as JSON.
///
/// The source both produces and interprets it; the framework only stores it (in the sink's
/// commit manifest) and hands it back on restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Position(pub Value);

impl Position {
    /// Encode a source's own position type.
    pub fn encode<T: Serialize>(value: &T) -> Result<Self> {
        serde_json::to_value(value)
            .map(Position)
            .map_err(|e| Error::fatal(format!("cannot encode source position: {e}")))
    }

    /// Decode into a source's own position type; `source_name` is used in the error.
    pub fn decode<T: DeserializeOwned>(&self, source_name: &str) -> Result<T> {
        serde_json::from_value(self.0.clone()).map_err(|e| {
            Error::source_permanent(
                source_name,
                format!(
                    "stored position {} cannot be read ({e}); the sink's manifest was written by a different source; use a new sink location or backfill",
                    self.0
                ),
            )
        })
    }
}

/// A durable point in a source: everything up to and including the batch that ended at
/// `position`, plus the first `rows` rows of the batch after it.
///
/// Groups are cut at exact row counts, so a group may end inside a source batch; `rows`
/// says how far. A source resuming from a checkpoint restarts after `position` and skips
/// `rows` rows; a source acking upstream acks through `position` and the first `rows`
/// records after it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The end of the last source batch fully included; `None` before the first one.
    pub position: Option<Position>,
    /// Rows of the following source batch also included.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Checkpoint {
    /// A checkpoint exactly at `position`.
    pub fn at(position: Position) -> Self {
        Self {
            position: Some(position),
            rows: 0,
        }
    }

    /// Decode the position into the source's own type (`None` for the start of the source).
    pub fn decode<T: DeserializeOwned>(&self, source_name: &str) -> Result<Option<T>> {
        self.position
            .as_ref()
            .map(|p| p.decode(source_name))
            .transpose()
    }
}

/// A batch from a source, tagged with the source position it ends at.
///
/// `dead_letters` are the records consumed between the previous position and this one that
/// could not be decoded: they travel with the position that covers them, so they are committed
/// (and, after a restart, not repeated) exactly like the rows. A batch may have no rows and
/// only dead letters (every record of a page was bad) or neither (only the position moved).
#[derive(Debug, Clone)]
pub struct PositionedBatch {
    /// The rows.
    pub batch: RecordBatch,
    /// The source position after the last row of `batch`.
    pub position: Position,
    /// Records consumed up to `position` that could not be decoded.
    pub dead_letters: Vec<DeadLetter>,
    /// Rows a resumed checkpoint already covers, which the source runtime skipped: for a batch
    /// with rows, those cut from its front (a checkpoint inside it counts them); for a batch
    /// without rows, those still to skip after `position`. Zero except right after a resume
    /// inside a batch.
    pub covered: u64,
}

impl PositionedBatch {
    /// Tag `batch` with `position`.
    pub fn new(batch: RecordBatch, position: Position) -> Self {
        Self {
            batch,
            position,
            dead_letters: Vec::new(),
            covered: 0,
        }
    }

    /// Set [`covered`](Self::covered).
    pub fn with_covered(mut self, rows: u64) -> Self {
        self.covered = rows;
        self
    }

    /// Attach the dead letters of the records this batch's position covers.
    pub fn with_dead_letters(mut self, letters: Vec<DeadLetter>) -> Self {
        self.dead_letters = letters;
        self
    }
}

/// A group of rows ready for a sink, and the checkpoint its last row ends at.
#[derive(Debug, Clone)]
pub struct Group {
    /// The rows (one concatenated batch).
    pub batch: RecordBatch,
    /// The checkpoint after the last row of `batch`.
    pub checkpoint: Checkpoint,
    /// Dead letters of the source batches this group completes (a source batch split across
    /// groups gives its letters to the group holding its last row).
    pub dead_letters: Vec<DeadLetter>,
}

impl Group {
    /// A group without dead letters.
    pub fn new(batch: RecordBatch, checkpoint: Checkpoint) -> Self {
        Self {
            batch,
            checkpoint,
            dead_letters: Vec::new(),
        }
    }
}
