//! [`PgPosition`]: where the stream is (LSN, progress inside a transaction and through the
//! snapshot), and the MVCC snapshots the table was read with.

use serde::{Deserialize, Serialize};

use super::pgoutput::Lsn;

/// The source position: an LSN, plus snapshot progress while the snapshot runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PgPosition {
    /// Every transaction whose commit ends at or before this LSN is included.
    pub lsn: Lsn,
    /// The first `rows` changes of the transaction committing at `commitLsn` are included
    /// too (a transaction larger than `batchRows` is split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<TxProgress>,
    /// While the snapshot runs: how far it got (the rows up to that key or block are included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotProgress>,
    /// The snapshots the table was read with; changes of transactions visible in them are
    /// already in the snapshot rows and are skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<Segment>,
}

/// Progress inside one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TxProgress {
    /// The transaction's commit LSN.
    pub commit_lsn: Lsn,
    /// Changes of it of the captured table already included: emitted rows and dead letters
    /// alike (the rows a checkpoint covers beyond the position are counted by the output,
    /// which counts emitted rows only).
    pub rows: u64,
}

/// Progress of the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotProgress {
    /// Tables with a key: the last key read, one value per key column in PostgreSQL's text
    /// form (cast back to the column's type to continue after it), `None` before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_key: Option<Vec<String>>,
    /// Tables without a key (read by `ctid` ranges): the first heap block not read yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_block: Option<u64>,
    /// The last single-column integer key read, as positions of earlier versions hold it;
    /// read as `afterKey`.
    #[serde(default, skip_serializing)]
    pub after_pk: Option<i64>,
    /// One shard of a sharded backfill: the last key of its range (inclusive, text forms);
    /// `None`: to the end of the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_key: Option<Vec<String>>,
    /// One shard of a sharded backfill of a table without a key: the first heap block after
    /// its range; `None`: to the table's size when its snapshot was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_block: Option<u64>,
}

impl SnapshotProgress {
    /// The last key read (`afterKey`, or an earlier version's `afterPk`).
    pub(super) fn key(&self) -> Option<Vec<String>> {
        self.after_key
            .clone()
            .or_else(|| self.after_pk.map(|k| vec![k.to_string()]))
    }
}

/// The rows with a key above `afterKey` (or, without a key, in the blocks from `fromBlock`),
/// up to the next segment's, were read with this MVCC snapshot (`pg_current_snapshot()`),
/// taken before WAL position `walEnd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    /// Lower bound (exclusive) of the keys read with this snapshot, in text form; `None`: from
    /// the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_key: Option<Vec<String>>,
    /// Tables without a key: the first heap block read with this snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_block: Option<u64>,
    /// An earlier version's integer `afterKey`.
    #[serde(default, skip_serializing)]
    pub after_pk: Option<i64>,
    /// `xmin:xmax:xip,...` of the snapshot.
    pub snapshot: String,
    /// WAL insert position right after the snapshot was taken.
    pub wal_end: Lsn,
}

impl Segment {
    /// Lower bound (exclusive) of its keys (`afterKey`, or an earlier version's `afterPk`).
    pub(super) fn key(&self) -> Option<Vec<String>> {
        self.after_key
            .clone()
            .or_else(|| self.after_pk.map(|k| vec![k.to_string()]))
    }
}

pub(super) struct ParsedSnapshot {
    xmin: u64,
    xmax: u64,
    xip: Vec<u64>,
}

impl ParsedSnapshot {
    pub(super) fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let xip = match parts.next() {
            Some("") | None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?,
        };
        Some(Self { xmin, xmax, xip })
    }

    /// Was the (32-bit) transaction id committed and visible in this snapshot?
    pub(super) fn visible(&self, xid: u32) -> bool {
        // Widen to the 64-bit id closest to xmax (same epoch or the one before).
        let epoch = self.xmax & !0xFFFF_FFFF;
        let mut full = epoch | u64::from(xid);
        if full > self.xmax + (1 << 31) && full >= (1 << 32) {
            full -= 1 << 32;
        } else if full > self.xmax + (1 << 31) {
            return false;
        }
        full < self.xmin || (full < self.xmax && !self.xip.contains(&full))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_versions_integer_key_reads_as_a_text_key() {
        let old: PgPosition = serde_json::from_str(
            r#"{"lsn": "0/10", "snapshot": {"afterPk": 42}, "segments": [{"afterPk": 7, "snapshot": "1:2:", "walEnd": "0/20"}]}"#,
        )
        .unwrap();
        assert_eq!(old.snapshot.unwrap().key(), Some(vec!["42".to_string()]));
        assert_eq!(old.segments[0].key(), Some(vec!["7".to_string()]));
        // A composite text key round-trips.
        let pos = PgPosition {
            lsn: Lsn(16),
            tx: None,
            snapshot: Some(SnapshotProgress {
                after_key: Some(vec![
                    "g3".into(),
                    "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into(),
                ]),
                ..SnapshotProgress::default()
            }),
            segments: Vec::new(),
        };
        let text = serde_json::to_string(&pos).unwrap();
        assert_eq!(serde_json::from_str::<PgPosition>(&text).unwrap(), pos);
        assert!(!text.contains("afterPk"), "{text}");
    }

    #[test]
    fn snapshot_visibility_follows_xmin_xmax_and_in_progress_list() {
        let s = ParsedSnapshot::parse("100:105:101,103").unwrap();
        assert!(s.visible(99));
        assert!(s.visible(102));
        assert!(!s.visible(101));
        assert!(!s.visible(105));
        assert!(!s.visible(200));
        let wrapped = ParsedSnapshot::parse("4294967390:4294967400:").unwrap();
        assert!(wrapped.visible(100)); // 2^32 + 100 < xmin
        assert!(!wrapped.visible(110)); // 2^32 + 110 >= xmax
    }
}
