//! [`Shard`]: one part of a backfill split across the pods of a Kubernetes Indexed Job.
//!
//! A backfill of a large history can run as `N` shards: the spec's `backfillShards` says how
//! many ([`SPEC_SHARDS_FIELD`]), and each pod reads its index from `JOB_COMPLETION_INDEX`
//! ([`ENV_SHARD_INDEX`]), which Kubernetes sets on every pod of an
//! Indexed Job (`completionMode: Indexed`). There is no coordinator: each shard reads the part
//! of the input its index owns, commits it on its own, and the shard that finds every other
//! one done completes the backfill (see the Parquet sink's `MANIFEST.md`).
//!
//! Only backfills shard. A streaming run ignores `backfillShards` (the spec is shared by the
//! stream's streaming and backfill Jobs) and runs as one process.
//!
//! The shard count can also come from the Job template: a backfill template made for `N`
//! shards (an Indexed Job of `completions: N`) sets `ARCANE_BACKFILL_SHARDS=N`
//! ([`ENV_BACKFILL_SHARDS`]), which stands for `backfillShards` when the spec leaves it out and
//! must equal it when the spec sets it ([`apply_template_shards`]): a count that disagrees with
//! the Job's completions would leave shards without a pod (the backfill never completes) or
//! pods without a shard.
//!
//! ## Assigning keys to shards
//!
//! Sources that split their input by a key (an object's path, a table's primary key) assign it
//! with [`Shard::owns_key`]: the 64-bit **FNV-1a** hash of the key's bytes ([`fnv1a_64`],
//! offset basis `0xcbf29ce484222325`, prime `0x100000001b3`) modulo the shard count. The hash
//! is fixed by its definition, not by Rust's (randomly seeded, version-dependent) standard
//! hasher, so a shard restarted by a newer binary owns the same keys as before.

use crate::context::Mode;
use crate::env::{ENV_BACKFILL_SHARDS, ENV_SHARD_INDEX};
use crate::error::{Error, Result};

/// The top-level spec field holding the shard count of a backfill (`backfillShards`).
pub const SPEC_SHARDS_FIELD: &str = "backfillShards";

/// FNV-1a offset basis (64 bit).
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a prime (64 bit).
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The 64-bit FNV-1a hash of `bytes`: stable across platforms and versions.
///
/// ```
/// assert_eq!(arcane_core::shard::fnv1a_64(b""), 0xcbf29ce484222325);
/// assert_eq!(arcane_core::shard::fnv1a_64(b"a"), 0xaf63dc4c8601ec8c);
/// ```
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// One shard of a sharded backfill: `index` of `count` (`0 <= index < count`, `count >= 2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Shard {
    /// Shard `index` of `count`; errors when the index is out of range or `count` is below 2
    /// (one shard is no sharding).
    pub fn new(index: u32, count: u32) -> Result<Self> {
        if count < 2 {
            return Err(Error::config(
                format!("spec.{SPEC_SHARDS_FIELD}"),
                format!("a sharded backfill needs at least 2 shards, found {count}"),
            ));
        }
        if index >= count {
            return Err(out_of_range(index, count));
        }
        Ok(Self { index, count })
    }

    /// This shard's index (`JOB_COMPLETION_INDEX`).
    pub fn index(self) -> u32 {
        self.index
    }

    /// How many shards the backfill has (`backfillShards`).
    pub fn count(self) -> u32 {
        self.count
    }

    /// Whether the key `key` belongs to this shard: `fnv1a_64(key) % count == index`.
    pub fn owns_key(self, key: &[u8]) -> bool {
        fnv1a_64(key) % u64::from(self.count) == u64::from(self.index)
    }

    /// This shard's part of the range `0..total`: contiguous, in index order, sizes differing
    /// by at most one.
    pub fn range_of(self, total: u64) -> std::ops::Range<u64> {
        let part =
            |i: u32| -> u64 { (u128::from(total) * u128::from(i) / u128::from(self.count)) as u64 };
        part(self.index)..part(self.index + 1)
    }

    /// The shard of a run, from the spec's `backfillShards` (absent: 1) and the index parsed
    /// from `JOB_COMPLETION_INDEX` (`index`): `None` when the run is not sharded (streaming
    /// mode, or a backfill of one shard).
    ///
    /// Errors (configuration, exit code 1): `backfillShards` is not a positive integer; a
    /// sharded backfill without an index (it would read everything in every pod); an index
    /// out of range for the shard count.
    pub fn resolve(
        spec: &serde_json::Value,
        index: Option<u32>,
        mode: Mode,
    ) -> Result<Option<Self>> {
        let count = shard_count(spec)?;
        if mode == Mode::Stream {
            return Ok(None);
        }
        match (count, index) {
            (1, None | Some(0)) => Ok(None),
            (1, Some(i)) => Err(out_of_range(i, 1)),
            (n, None) => Err(Error::config(
                ENV_SHARD_INDEX,
                format!(
                    "not set, but spec.{SPEC_SHARDS_FIELD} is {n}: a sharded backfill runs as a Kubernetes Indexed Job (completionMode: Indexed, completions: {n}), which sets it on every pod; to run a shard by hand set it to 0..{}",
                    n - 1
                ),
            )),
            (n, Some(i)) => Self::new(i, n).map(Some),
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The spec's `backfillShards` (1 when absent).
pub fn shard_count(spec: &serde_json::Value) -> Result<u32> {
    match spec.get(SPEC_SHARDS_FIELD) {
        None | Some(serde_json::Value::Null) => Ok(1),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n >= 1)
            .ok_or_else(|| {
                Error::config(
                    format!("spec.{SPEC_SHARDS_FIELD}"),
                    format!("expected a positive integer (the number of pods of the backfill's Indexed Job), found {v}"),
                )
            }),
    }
}

fn out_of_range(index: u32, count: u32) -> Error {
    Error::config(
        ENV_SHARD_INDEX,
        format!(
            "index {index} is out of range for spec.{SPEC_SHARDS_FIELD} = {count} (valid: 0..{}); the Indexed Job's completions must equal backfillShards",
            count.saturating_sub(1)
        ),
    )
}

/// Apply the Job template's shard count (`ARCANE_BACKFILL_SHARDS`, `template`) to `spec`:
/// when the spec has no `backfillShards`, the template's count becomes it; when it has one, the
/// two must be equal. `None` leaves the spec as it is.
///
/// Errors (configuration, exit code 1): the variable is not a positive integer; the spec asks
/// for another count than the template's Indexed Job runs.
///
/// ```
/// use serde_json::json;
/// let mut spec = json!({"rowsPerGroup": 10});
/// arcane_core::shard::apply_template_shards(&mut spec, Some("4")).unwrap();
/// assert_eq!(spec["backfillShards"], 4);
/// let mut other = json!({"backfillShards": 8});
/// assert!(arcane_core::shard::apply_template_shards(&mut other, Some("4")).is_err());
/// ```
pub fn apply_template_shards(spec: &mut serde_json::Value, template: Option<&str>) -> Result<()> {
    let Some(text) = template.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(());
    };
    let count = text
        .parse::<u32>()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| {
            Error::config(
                ENV_BACKFILL_SHARDS,
                format!("expected a positive integer (the completions of the backfill's Indexed Job), found {text:?}"),
            )
        })?;
    let in_spec = spec.get(SPEC_SHARDS_FIELD).is_some_and(|v| !v.is_null());
    if in_spec {
        let asked = shard_count(spec)?;
        if asked != count {
            return Err(Error::config(
                format!("spec.{SPEC_SHARDS_FIELD}"),
                format!(
                    "{asked}, but the Job template runs {count} shards ({ENV_BACKFILL_SHARDS}={count}, an Indexed Job of {count} completions); use the backfill template made for {asked} shards (backfillJobTemplateRef), or set backfillShards to {count} or remove it"
                ),
            ));
        }
        return Ok(());
    }
    if count > 1
        && let Some(map) = spec.as_object_mut()
    {
        map.insert(SPEC_SHARDS_FIELD.into(), count.into());
    }
    Ok(())
}

/// A few small values shared by the shards of one sharded backfill, kept beside their output
/// (the sink's store): each value is written once, put-if-absent, so that what one shard
/// decides (e.g. how a table is split) is what every shard and every restart reads, whoever
/// wrote it. The sink provides it; a source that must agree with the other shards on
/// something before it reads (not only on which keys it owns) takes it.
#[async_trait::async_trait]
pub trait ShardBoard: Send + Sync + std::fmt::Debug {
    /// The value `name`, `None` when no shard wrote it yet.
    async fn get(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// Write `value` as `name` unless a value is there already: `Ok(false)` when another
    /// writer was first (read theirs with [`get`](Self::get)).
    async fn put_if_absent(&self, name: &str, value: Vec<u8>) -> Result<bool>;

    /// Where `name` is kept, for messages (a URL).
    fn location(&self, name: &str) -> String;
}

/// Parse the text of `JOB_COMPLETION_INDEX`.
pub fn parse_index(text: &str) -> Result<u32> {
    text.trim().parse::<u32>().map_err(|e| {
        Error::config(
            ENV_SHARD_INDEX,
            format!(
                "expected a non-negative integer (the pod's completion index), found {:?} ({e})",
                text.trim()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn template_shard_count_fills_in_or_must_agree() {
        let mut spec = json!({"rowsPerGroup": 10});
        apply_template_shards(&mut spec, Some("4")).unwrap();
        assert_eq!(spec, json!({"rowsPerGroup": 10, "backfillShards": 4}));
        // The same count in both: fine; no template: the spec as it is.
        apply_template_shards(&mut spec, Some(" 4 ")).unwrap();
        apply_template_shards(&mut spec, None).unwrap();
        assert_eq!(spec["backfillShards"], 4);
        // One shard from the template adds nothing.
        let mut plain = json!({});
        apply_template_shards(&mut plain, Some("1")).unwrap();
        assert_eq!(plain, json!({}));

        let e = apply_template_shards(&mut json!({"backfillShards": 8}), Some("4"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.backfillShards"), "{e}");
        assert!(e.contains("8, but the Job template runs 4 shards"), "{e}");
        assert!(e.contains("ARCANE_BACKFILL_SHARDS=4"), "{e}");
        let e = apply_template_shards(&mut json!({"backfillShards": 1}), Some("4"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("1, but the Job template runs 4"), "{e}");
        for bad in ["0", "four", "-2"] {
            let e = apply_template_shards(&mut json!({}), Some(bad))
                .unwrap_err()
                .to_string();
            assert!(e.contains("ARCANE_BACKFILL_SHARDS"), "{e}");
            assert!(e.contains("positive integer"), "{e}");
        }
    }

    #[test]
    fn fnv1a_is_the_published_function() {
        // Test vectors of the FNV reference (Fowler, Noll, Vo).
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn every_key_has_exactly_one_shard_and_ranges_tile() {
        let shards: Vec<Shard> = (0..5).map(|i| Shard::new(i, 5).unwrap()).collect();
        for k in 0..1000 {
            let key = format!("landing/2026/{k:05}.ndjson");
            let owners = shards.iter().filter(|s| s.owns_key(key.as_bytes())).count();
            assert_eq!(owners, 1, "{key}");
        }
        for total in [0u64, 1, 3, 4, 101] {
            let mut next = 0;
            for s in &shards {
                let r = s.range_of(total);
                assert_eq!(r.start, next);
                next = r.end;
            }
            assert_eq!(next, total);
        }
    }

    #[test]
    fn resolution_and_its_errors() {
        let spec = json!({"backfillShards": 4});
        assert_eq!(Shard::resolve(&spec, Some(2), Mode::Stream).unwrap(), None);
        assert_eq!(
            Shard::resolve(&spec, Some(2), Mode::Backfill).unwrap(),
            Some(Shard::new(2, 4).unwrap())
        );
        let e = Shard::resolve(&spec, Some(4), Mode::Backfill).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("JOB_COMPLETION_INDEX: index 4 is out of range"),
            "{e}"
        );
        let e = Shard::resolve(&spec, None, Mode::Backfill).unwrap_err();
        assert!(
            e.to_string().starts_with("JOB_COMPLETION_INDEX: not set"),
            "{e}"
        );
        assert_eq!(
            Shard::resolve(&json!({}), None, Mode::Backfill).unwrap(),
            None
        );
        assert_eq!(
            Shard::resolve(&json!({}), Some(0), Mode::Backfill).unwrap(),
            None
        );
        assert!(Shard::resolve(&json!({}), Some(1), Mode::Backfill).is_err());
        let e = Shard::resolve(&json!({"backfillShards": 0}), None, Mode::Stream).unwrap_err();
        assert!(e.to_string().starts_with("spec.backfillShards"), "{e}");
        assert!(parse_index("x").is_err());
        assert_eq!(parse_index(" 3 ").unwrap(), 3);
    }

    #[test]
    fn metrics_of_a_shard_carry_its_index_and_count() {
        let label = |ctx: &crate::StreamContext, key: &str| {
            crate::metrics::MetricLabels::for_stream(ctx)
                .to_vec()
                .iter()
                .find(|l| l.key() == key)
                .map(|l| l.value().to_string())
        };
        let ctx = crate::StreamContext::new("orders", "blob-landing", json!({"backfillShards": 4}))
            .with_backfill("b1")
            .with_shard_index(2);
        assert_eq!(label(&ctx, "shard").as_deref(), Some("2"));
        assert_eq!(label(&ctx, "shards").as_deref(), Some("4"));
        // Streaming runs are not sharded.
        let streaming =
            crate::StreamContext::new("orders", "blob-landing", json!({"backfillShards": 4}))
                .with_shard_index(2);
        assert_eq!(label(&streaming, "shard"), None);
    }
}
