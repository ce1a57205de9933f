//! Named pause points for crash tests.
//!
//! When `ARCANE_SINK_PAUSE_AT=<point>[:<n>]` is set, the sink stops forever the `n`-th time
//! (default first) it reaches `<point>`, after creating the file named by
//! `ARCANE_SINK_PAUSE_MARKER` (if set), so that a test can kill the process exactly there.
//! [`ParquetSink::with_pause_at`](crate::ParquetSink::with_pause_at) does the same in-process.
//!
//! Points, in the order of the commit protocol (see the crate docs):
//!
//! | point | reached when |
//! |---|---|
//! | `mid-part` | a file has handed more than one part to its upload and is still being written |
//! | `after-upload-before-manifest` | every file of the commit is uploaded (parts or staging file), none is visible, the manifest is not written |
//! | `after-manifest` | the manifest is written (committed), its files are not visible yet |
//! | `after-completion` | the files are visible, their upload markers are not deleted yet |
//! | `before-table-commit` | (`sink.tableFormat` set) the commit is complete, the table format's commit publishing it (Delta: `_delta_log/{version}.json`; Iceberg: the snapshot and the catalog commit; also the shard that completed a sharded backfill, before it publishes the completion to an Iceberg table) is not written yet |
//! | `after-shard-done` | a shard of a sharded backfill wrote its done marker, before it looked for the others' |
//! | `before-shard-switch` | every shard is done; the stream's manifest completing the backfill is not written yet |
//!
//! Unset (production), it costs one comparison per commit.

use std::sync::atomic::{AtomicU32, Ordering};

/// Environment variable naming the pause point.
pub const ENV_PAUSE_AT: &str = "ARCANE_SINK_PAUSE_AT";
/// Environment variable naming the marker file created when pausing.
pub const ENV_PAUSE_MARKER: &str = "ARCANE_SINK_PAUSE_MARKER";

#[derive(Debug, Default)]
pub(crate) struct Failpoints {
    point: Option<(String, u32)>,
    marker: Option<String>,
    hits: AtomicU32,
}

impl Failpoints {
    /// Pause the `nth` time `point` is reached; create `marker` (if any) when pausing.
    pub(crate) fn at(point: &str, nth: u32, marker: Option<String>) -> Self {
        Self {
            point: Some((point.to_string(), nth.max(1))),
            marker,
            hits: AtomicU32::new(0),
        }
    }

    pub(crate) fn from_env() -> Self {
        let point = std::env::var(ENV_PAUSE_AT)
            .ok()
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once(':') {
                Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
                None => (p, 1),
            });
        Self {
            point,
            marker: std::env::var(ENV_PAUSE_MARKER).ok(),
            hits: AtomicU32::new(0),
        }
    }

    pub(crate) async fn reach(&self, name: &str) {
        let Some((point, nth)) = &self.point else {
            return;
        };
        if point != name {
            return;
        }
        let hit = self.hits.fetch_add(1, Ordering::SeqCst) + 1;
        if hit != *nth {
            return;
        }
        tracing::warn!(point = name, "pausing at failpoint ({ENV_PAUSE_AT})");
        if let Some(marker) = &self.marker {
            let _ = std::fs::write(marker, name);
        }
        std::future::pending::<()>().await;
    }
}
