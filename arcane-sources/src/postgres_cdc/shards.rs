//! Sharded backfills: one plan for all the shards, decided once through the
//! [`ShardBoard`], the slot created before any shard's snapshot, each shard a key (or block)
//! range read as segments, and the shards' final positions merged into the one the stream
//! resumes from. See "Sharded backfills" in the [module docs](super).

use std::sync::Arc;

use arcane_core::shard::fnv1a_64;
use arcane_core::{Checkpoint, Error, Position, Result, Shard, ShardBoard};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::client::{pg_err, quote_ident};
use super::pgoutput::Lsn;
use super::position::{PgPosition, SnapshotProgress};
use super::rows::TableInfo;

/// The board entry holding the plan.
pub(super) const PLAN: &str = "postgres-cdc-plan.json";

/// About this many heap blocks are sampled to split a keyed table (`TABLESAMPLE SYSTEM`):
/// some tens of thousands of keys, sorted once by the shard that plans.
const SAMPLE_BLOCKS: f64 = 256.0;

/// The version of [`ShardPlan`]'s format.
const PLAN_VERSION: u32 = 1;

/// One shard of a sharded backfill and the board its backfill's shards share.
#[derive(Debug, Clone)]
pub(super) struct Sharding {
    pub(super) shard: Shard,
    pub(super) board: Arc<dyn ShardBoard>,
}

/// How a sharded backfill splits the table, written once (put-if-absent) by the first shard
/// to get the plan lock, after it created the slot; every shard and every restart reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ShardPlan {
    pub(super) version: u32,
    /// `schema.table`.
    pub(super) table: String,
    pub(super) slot: String,
    pub(super) shards: u32,
    /// The slot's consistent point: every change committed after it is in the slot, and every
    /// shard's snapshot is taken after it.
    pub(super) consistent_point: Lsn,
    /// A keyed table's key columns, in key order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) key: Option<Vec<String>>,
    /// A keyed table: `shards - 1` keys (text forms) in key order; shard `i` reads the keys
    /// above `bounds[i - 1]` up to and including `bounds[i]`. Empty when the table was empty
    /// when planned: shard 0 then reads it all and the others nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) bounds: Vec<Vec<String>>,
    /// A table without a key: `shards - 1` heap blocks; shard `i` reads the blocks from
    /// `blocks[i - 1]` up to `blocks[i]`, the last shard to the table's size at its snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) blocks: Vec<u64>,
    /// RFC 3339 time the plan was made.
    pub(super) created_at: String,
}

impl ShardPlan {
    /// Split `info`'s table into `shards` ranges: key quantiles of a sample (keyed), or equal
    /// block ranges of the table's size now (keyless).
    pub(super) async fn make(
        client: &Client,
        name: &str,
        info: &TableInfo,
        table_sql: &str,
        (table, slot): (&str, &str),
        shards: u32,
        consistent_point: Lsn,
    ) -> Result<Self> {
        let row = client
            .query_one(
                "SELECT (pg_relation_size(c.oid) / current_setting('block_size')::int8)::int8 \
                 FROM pg_class c WHERE c.oid = $1",
                &[&info.oid],
            )
            .await
            .map_err(|e| pg_err(name, "reading the table's size to split it into shards", e))?;
        let table_blocks = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
        let mut plan = Self {
            version: PLAN_VERSION,
            table: table.to_string(),
            slot: slot.to_string(),
            shards,
            consistent_point,
            key: None,
            bounds: Vec::new(),
            blocks: Vec::new(),
            created_at: chrono::Utc::now().to_rfc3339(),
        };
        let Some(key) = &info.key else {
            plan.blocks = (1..shards)
                .map(|i| Shard::new(i, shards).map(|s| s.range_of(table_blocks).start))
                .collect::<Result<_>>()?;
            return Ok(plan);
        };
        let names: Vec<&str> = key
            .iter()
            .map(|k| info.columns[k.index].name.as_str())
            .collect();
        plan.key = Some(names.iter().map(|n| n.to_string()).collect());
        let cols: Vec<String> = names
            .iter()
            .map(|n| format!("_t.{}", quote_ident(n)))
            .collect();
        let texts: Vec<String> = cols.iter().map(|c| format!("{c}::text")).collect();
        let percent = if table_blocks as f64 <= SAMPLE_BLOCKS {
            100.0
        } else {
            100.0 * SAMPLE_BLOCKS / table_blocks as f64
        };
        let sample = |percent: f64| {
            format!(
                "SELECT {} FROM {table_sql} AS _t TABLESAMPLE SYSTEM ({percent}) ORDER BY {}",
                texts.join(", "),
                cols.join(", ")
            )
        };
        let mut rows = client
            .query(&sample(percent), &[])
            .await
            .map_err(|e| pg_err(name, "sampling the table's keys to split it into shards", e))?;
        if rows.len() < shards as usize && percent < 100.0 {
            // A sparse sample of a large table (mostly empty pages): all the keys.
            rows = client
                .query(&sample(100.0), &[])
                .await
                .map_err(|e| pg_err(name, "reading the table's keys to split it into shards", e))?;
        }
        if rows.is_empty() {
            return Ok(plan);
        }
        let count = rows.len() as u64;
        for i in 1..shards {
            let at = Shard::new(i, shards)?.range_of(count).start;
            let row = &rows[usize::try_from(at).unwrap_or(0).min(rows.len() - 1)];
            plan.bounds
                .push((0..names.len()).map(|c| row.get::<_, String>(c)).collect());
        }
        Ok(plan)
    }

    /// The plan read from the board; errors say what does not match this run.
    pub(super) fn parse(
        bytes: &[u8],
        at: &str,
        name: &str,
        (table, slot): (&str, &str),
        shard: Shard,
    ) -> Result<Self> {
        let plan: Self = serde_json::from_slice(bytes).map_err(|e| {
            Error::source_permanent(
                name,
                format!("the sharded backfill's plan {at} is not valid ({e}); it was edited by hand or written by another version: start a new backfill (another backfill id)"),
            )
        })?;
        let mismatch = |what: String| {
            Error::source_permanent(
                name,
                format!(
                    "the sharded backfill's plan {at} {what}; the spec changed during the backfill: start a new backfill (another backfill id)"
                ),
            )
        };
        if plan.version != PLAN_VERSION {
            return Err(mismatch(format!(
                "has version {}, this runner reads {PLAN_VERSION}",
                plan.version
            )));
        }
        if plan.table != table || plan.slot != slot {
            return Err(mismatch(format!(
                "is for table {} and slot {}, not {table} and {slot}",
                plan.table, plan.slot
            )));
        }
        if plan.shards != shard.count() {
            return Err(mismatch(format!(
                "splits the table into {} shards, not {}",
                plan.shards,
                shard.count()
            )));
        }
        Ok(plan)
    }

    /// Where shard `index` starts: at the consistent point, its snapshot reading its range
    /// (`None`: nothing to read, the table was empty when planned and another shard reads it).
    pub(super) fn start(&self, index: u32) -> PgPosition {
        let i = index as usize;
        let progress = if self.key.is_some() {
            if self.bounds.is_empty() && i > 0 {
                None
            } else {
                Some(SnapshotProgress {
                    after_key: i.checked_sub(1).and_then(|j| self.bounds.get(j)).cloned(),
                    until_key: self.bounds.get(i).cloned(),
                    ..SnapshotProgress::default()
                })
            }
        } else {
            Some(SnapshotProgress {
                next_block: Some(i.checked_sub(1).map_or(0, |j| self.blocks[j])),
                until_block: self.blocks.get(i).copied(),
                ..SnapshotProgress::default()
            })
        };
        PgPosition {
            lsn: self.consistent_point,
            tx: None,
            snapshot: progress,
            segments: Vec::new(),
        }
    }
}

/// The advisory lock (session level) under which a shard reads or makes the plan, so that one
/// shard creates the slot and the plan while the others wait: the slot's name hashed.
pub(super) fn plan_lock(slot: &str) -> i64 {
    fnv1a_64(format!("arcane postgres-cdc shard plan {slot}").as_bytes()) as i64
}

/// The position a stream resumes from after a sharded backfill, from its shards' final
/// checkpoints in index order: the slot's consistent point, with every shard's segments in
/// key order (shard ranges are ordered by index), so that a change is skipped exactly when the
/// snapshot that read its key saw it. A shard without a checkpoint read nothing (an empty
/// range: a table empty when planned); every other shard emits at least its last page.
pub fn merge_shard_positions(finals: &[Option<Checkpoint>]) -> Result<Option<Checkpoint>> {
    let name = "postgres-cdc";
    let mut merged: Option<PgPosition> = None;
    for (index, checkpoint) in finals.iter().enumerate() {
        let Some(checkpoint) = checkpoint else {
            continue;
        };
        let Some(pos) = checkpoint.decode::<PgPosition>(name)? else {
            continue;
        };
        if pos.snapshot.is_some() || pos.tx.is_some() || checkpoint.rows != 0 {
            return Err(Error::source_permanent(
                name,
                format!(
                    "shard {index} of the sharded backfill ended before its snapshot range was read (at {pos:?}); rerun that shard"
                ),
            ));
        }
        match &mut merged {
            None => merged = Some(pos),
            Some(m) if m.lsn != pos.lsn => {
                return Err(Error::source_permanent(
                    name,
                    format!(
                        "the shards of the sharded backfill started at different slot positions ({} and {} at shard {index}): the slot was recreated during the backfill; start a new backfill",
                        m.lsn, pos.lsn
                    ),
                ));
            }
            Some(m) => m.segments.extend(pos.segments),
        }
    }
    merged
        .map(|pos| Position::encode(&pos).map(Checkpoint::at))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres_cdc::position::Segment;

    fn plan(bounds: Vec<Vec<String>>, blocks: Vec<u64>, key: bool) -> ShardPlan {
        ShardPlan {
            version: PLAN_VERSION,
            table: "public.t".into(),
            slot: "s".into(),
            shards: 3,
            consistent_point: Lsn(100),
            key: key.then(|| vec!["id".into()]),
            bounds,
            blocks,
            created_at: String::new(),
        }
    }

    #[test]
    fn shards_start_in_their_ranges_at_the_consistent_point() {
        let p = plan(vec![vec!["10".into()], vec!["20".into()]], vec![], true);
        let ranges: Vec<_> = (0..3)
            .map(|i| {
                let s = p.start(i).snapshot.unwrap();
                (s.after_key, s.until_key)
            })
            .collect();
        let k = |v: &str| Some(vec![v.to_string()]);
        assert_eq!(
            ranges,
            vec![(None, k("10")), (k("10"), k("20")), (k("20"), None)]
        );
        assert!((0..3).all(|i| p.start(i).lsn == Lsn(100)));
        // An empty table: shard 0 reads it all, the others nothing.
        let empty = plan(vec![], vec![], true);
        assert_eq!(empty.start(0).snapshot, Some(SnapshotProgress::default()));
        assert_eq!(empty.start(2).snapshot, None);
        // Without a key: block ranges, the last one open.
        let blocks = plan(vec![], vec![4, 8], false);
        let ranges: Vec<_> = (0..3)
            .map(|i| {
                let s = blocks.start(i).snapshot.unwrap();
                (s.next_block, s.until_block)
            })
            .collect();
        assert_eq!(
            ranges,
            vec![(Some(0), Some(4)), (Some(4), Some(8)), (Some(8), None)]
        );
    }

    #[test]
    fn a_plan_for_another_table_slot_or_count_is_refused() {
        let p = plan(vec![vec!["10".into()], vec!["20".into()]], vec![], true);
        let bytes = serde_json::to_vec(&p).unwrap();
        let read = |table: &str, slot: &str, count: u32| {
            ShardPlan::parse(
                &bytes,
                "file:///out/plan",
                "src",
                (table, slot),
                Shard::new(0, count).unwrap(),
            )
        };
        assert_eq!(read("public.t", "s", 3).unwrap(), p);
        for (e, says) in [
            (read("public.u", "s", 3), "is for table public.t and slot s"),
            (read("public.t", "s2", 3), "not public.t and s2"),
            (read("public.t", "s", 4), "into 3 shards, not 4"),
        ] {
            let e = e.unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("file:///out/plan"), "{e}");
            assert!(e.contains("start a new backfill"), "{e}");
        }
        let e = ShardPlan::parse(
            b"{",
            "at",
            "src",
            ("public.t", "s"),
            Shard::new(0, 3).unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("is not valid"), "{e}");
    }

    fn final_at(lsn: u64, after: &[Option<&str>]) -> Option<Checkpoint> {
        let pos = PgPosition {
            lsn: Lsn(lsn),
            tx: None,
            snapshot: None,
            segments: after
                .iter()
                .map(|a| Segment {
                    after_key: a.map(|k| vec![k.to_string()]),
                    from_block: None,
                    after_pk: None,
                    snapshot: "1:2:".into(),
                    wal_end: Lsn(lsn + 1),
                })
                .collect(),
        };
        Some(Checkpoint::at(Position::encode(&pos).unwrap()))
    }

    #[test]
    fn merged_positions_keep_every_shards_segments_in_key_order() {
        let merged = merge_shard_positions(&[
            final_at(100, &[None, Some("5")]),
            None,
            final_at(100, &[Some("10")]),
        ])
        .unwrap()
        .unwrap()
        .decode::<PgPosition>("t")
        .unwrap()
        .unwrap();
        assert_eq!(merged.lsn, Lsn(100));
        let keys: Vec<_> = merged.segments.iter().map(|s| s.key()).collect();
        assert_eq!(
            keys,
            vec![None, Some(vec!["5".into()]), Some(vec!["10".into()])]
        );
        assert_eq!(merge_shard_positions(&[None, None]).unwrap(), None);

        let e = merge_shard_positions(&[final_at(100, &[None]), final_at(200, &[Some("1")])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("different slot positions"), "{e}");
        let unfinished = PgPosition {
            lsn: Lsn(100),
            tx: None,
            snapshot: Some(SnapshotProgress::default()),
            segments: Vec::new(),
        };
        let e = merge_shard_positions(&[
            final_at(100, &[None]),
            Some(Checkpoint::at(Position::encode(&unfinished).unwrap())),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("shard 1"), "{e}");
    }
}
