//! Not a public API: the blob-landing source's NDJSON block decoder, for the decoding
//! benchmark (`benches/src/bin/decode_speed.rs`), with its fast path on or off.

use std::ops::Range;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::block::{BlockDecoder, Rec, TextFormat};

/// Decodes blocks of NDJSON records as the blob-landing source does.
pub struct NdjsonBlocks {
    inner: BlockDecoder,
    recs: Vec<Rec>,
}

impl std::fmt::Debug for NdjsonBlocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NdjsonBlocks")
            .field("fast", &self.inner.has_fast())
            .finish_non_exhaustive()
    }
}

impl NdjsonBlocks {
    /// A decoder of blocks of up to `batch_rows` records of `schema`; `fast`: NDJSON blocks
    /// are first read by the fast path (when the schema has one).
    pub fn new(schema: SchemaRef, batch_rows: usize, fast: bool) -> Self {
        Self {
            inner: BlockDecoder::new(TextFormat::Ndjson, schema, batch_rows).with_fast(fast),
            recs: Vec::new(),
        }
    }

    /// Whether blocks are first read by the fast path.
    pub fn has_fast(&self) -> bool {
        self.inner.has_fast()
    }

    /// Decode the records at `records` of `buf` (each one line without its line break), one
    /// row each.
    pub fn decode(&mut self, buf: &[u8], records: &[Range<usize>]) -> Result<RecordBatch, String> {
        self.recs.clear();
        self.recs
            .extend(records.iter().enumerate().map(|(i, r)| Rec {
                start: r.start,
                end: r.end,
                line: i as u64 + 1,
            }));
        self.inner.decode(buf, &self.recs)
    }
}
