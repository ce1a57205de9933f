//! The deduplication window and the position stored with every commit.
//!
//! Every emitted request gets a sequence number. Its position holds the sequence and the window
//! of event keys (a 64-bit FNV-1a hash of `(source, id)` and the second it was accepted),
//! bounded by count and age. A request whose rows may be split across two commits (groups are
//! cut at exact row counts) is preceded by a position-only batch whose position also lists the
//! request's keys in row order (`next`): a commit that ends inside the request stores that
//! position and the number of its rows committed, so a restart knows exactly which of its
//! events are in the output.

use std::collections::{HashMap, VecDeque};

use base64::Engine;
use serde::{Deserialize, Serialize};

/// The key of an event: a hash of `(source, id)`, never 0 (0 marks a row without a key).
pub(crate) fn key(source: &str, id: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in source.bytes().chain([0xff]).chain(id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h.max(1)
}

/// The position of the `http-ingest` source in the sink's commit manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IngestPosition {
    /// Requests emitted up to here.
    pub(crate) seq: u64,
    /// The window: base64 of 12-byte entries (key, little-endian u64; second, u32).
    pub(crate) window: String,
    /// On the position before a request: its rows' keys (base64 of little-endian u64s, 0 for
    /// a row without a key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) next: Option<String>,
}

/// The keys seen recently, and the sequence of the request that emitted each.
#[derive(Debug, Default)]
pub(crate) struct Window {
    entries: VecDeque<(u64, u32)>,
    seqs: HashMap<u64, u64>,
    max_ids: usize,
    max_age_secs: u64,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Window {
    /// An empty window holding at most `max_ids` keys for `max_age_secs` seconds.
    pub(crate) fn new(max_ids: usize, max_age_secs: u64) -> Self {
        Self {
            entries: VecDeque::new(),
            seqs: HashMap::new(),
            max_ids,
            max_age_secs,
        }
    }

    /// The window stored in `position` (all of it committed through `position.seq`), plus the
    /// first `rows` keys of `position.next` (a commit that ended inside the next request).
    pub(crate) fn restore(
        &mut self,
        position: &IngestPosition,
        rows: u64,
        now: u32,
    ) -> Result<(), String> {
        let bytes = b64()
            .decode(&position.window)
            .map_err(|e| format!("window: {e}"))?;
        for entry in bytes.chunks_exact(12) {
            let mut k = [0u8; 8];
            k.copy_from_slice(&entry[..8]);
            let mut t = [0u8; 4];
            t.copy_from_slice(&entry[8..]);
            self.insert(u64::from_le_bytes(k), u32::from_le_bytes(t), position.seq);
        }
        if rows > 0 {
            let next = position
                .next
                .as_deref()
                .ok_or("the checkpoint ends inside a request whose keys were not stored")?;
            let keys = decode_keys(next)?;
            for k in keys.into_iter().take(rows as usize) {
                if k != 0 {
                    self.insert(k, now, position.seq);
                }
            }
        }
        self.prune(now);
        Ok(())
    }

    /// The sequence of the request that emitted `key`, when it is in the window.
    pub(crate) fn seq_of(&self, key: u64) -> Option<u64> {
        self.seqs.get(&key).copied()
    }

    /// Remember `key`, emitted by request `seq` at second `now`.
    pub(crate) fn insert(&mut self, key: u64, now: u32, seq: u64) {
        if self.max_ids == 0 {
            return;
        }
        if self.seqs.insert(key, seq).is_none() {
            self.entries.push_back((key, now));
        }
    }

    /// Forget what is too old or beyond the count.
    pub(crate) fn prune(&mut self, now: u32) {
        while let Some(&(k, t)) = self.entries.front() {
            let old = u64::from(now.saturating_sub(t)) >= self.max_age_secs;
            if self.entries.len() > self.max_ids || old {
                self.entries.pop_front();
                self.seqs.remove(&k);
            } else {
                break;
            }
        }
    }

    /// Keys remembered.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The window in its stored form.
    pub(crate) fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(self.entries.len() * 12);
        for (k, t) in &self.entries {
            bytes.extend_from_slice(&k.to_le_bytes());
            bytes.extend_from_slice(&t.to_le_bytes());
        }
        b64().encode(bytes)
    }
}

/// Keys of a request's rows in their stored form.
pub(crate) fn encode_keys(keys: &[u64]) -> String {
    let mut bytes = Vec::with_capacity(keys.len() * 8);
    for k in keys {
        bytes.extend_from_slice(&k.to_le_bytes());
    }
    b64().encode(bytes)
}

fn decode_keys(text: &str) -> Result<Vec<u64>, String> {
    let bytes = b64().decode(text).map_err(|e| format!("next: {e}"))?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| {
            let mut k = [0u8; 8];
            k.copy_from_slice(c);
            u64::from_le_bytes(k)
        })
        .collect())
}

/// Seconds since the epoch, as the window counts them.
pub(crate) fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_survives_its_stored_form_and_a_commit_inside_a_request() {
        let mut w = Window::new(3, 100);
        for (i, k) in [11u64, 12, 13, 14].into_iter().enumerate() {
            w.insert(k, 1000 + i as u32, 1);
        }
        w.prune(1004);
        assert_eq!(w.len(), 3, "bounded by count");
        assert_eq!(w.seq_of(11), None);
        let position = IngestPosition {
            seq: 7,
            window: w.encode(),
            next: Some(encode_keys(&[21, 0, 23])),
        };
        let mut restored = Window::new(10, 100);
        restored.restore(&position, 2, 1005).unwrap();
        assert_eq!(restored.seq_of(12), Some(7));
        assert_eq!(restored.seq_of(14), Some(7));
        assert_eq!(
            restored.seq_of(21),
            Some(7),
            "committed part of the next request"
        );
        assert_eq!(restored.seq_of(23), None, "not committed");
        restored.prune(1200);
        assert_eq!(restored.len(), 0, "bounded by age");
        assert_ne!(key("a", "bc"), key("ab", "c"));
    }
}
