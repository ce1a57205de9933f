//! Listing the landing prefix: filtering by glob/suffix and lexicographic order.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};

/// Which files under the prefix are read.
#[derive(Debug, Clone)]
pub(crate) struct FileFilter {
    pub(crate) prefix: Path,
    pub(crate) glob: Option<String>,
    pub(crate) suffix: Option<String>,
    /// The shard of a sharded backfill: only the files it owns are read.
    pub(crate) shard: Option<arcane_core::Shard>,
}

impl FileFilter {
    /// Whether `location` is a landed file to read.
    pub(crate) fn accepts(&self, location: &Path) -> bool {
        let full = location.as_ref();
        if full.ends_with('/') {
            return false;
        }
        let relative = match self.prefix.as_ref() {
            "" => full,
            prefix => full
                .strip_prefix(prefix)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(full),
        };
        if let Some(suffix) = &self.suffix
            && !full.ends_with(suffix.as_str())
        {
            return false;
        }
        if let Some(glob) = &self.glob
            && !glob_matches(glob.as_bytes(), relative.as_bytes())
        {
            return false;
        }
        // A file belongs to the shard that the FNV-1a hash of its path under the prefix
        // names: stable across versions and restarts.
        self.shard
            .is_none_or(|shard| shard.owns_key(relative.as_bytes()))
    }
}

/// One listing of the whole prefix.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// The files to read (accepted by the filter), sorted by path.
    pub(crate) files: Vec<ObjectMeta>,
    /// Objects under the prefix that the filter rejected.
    pub(crate) others: usize,
}

/// List every object under the prefix; the accepted ones sorted by path.
///
/// The whole prefix is listed (not only what sorts after the position) so that files landing
/// late, with a path before the position, are noticed.
pub(crate) async fn list_all(
    store: &Arc<dyn ObjectStore>,
    filter: &FileFilter,
) -> object_store::Result<Listing> {
    let prefix = (!filter.prefix.as_ref().is_empty()).then_some(&filter.prefix);
    let mut listing = Listing::default();
    let mut objects = store.list(prefix);
    while let Some(meta) = objects.try_next().await? {
        if filter.accepts(&meta.location) {
            listing.files.push(meta);
        } else {
            listing.others += 1;
        }
    }
    listing.files.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(listing)
}

/// Match `path` against `glob`: `*` within a segment, `**` across segments, `?` one
/// character, everything else literally.
pub(crate) fn glob_matches(glob: &[u8], path: &[u8]) -> bool {
    match glob.first() {
        None => path.is_empty(),
        Some(b'*') if glob.get(1) == Some(&b'*') => {
            // `**/` also matches no directory at all.
            let rest = &glob[2..];
            if let Some(after_slash) = rest.strip_prefix(b"/")
                && glob_matches(after_slash, path)
            {
                return true;
            }
            (0..=path.len()).any(|i| glob_matches(rest, &path[i..]))
        }
        Some(b'*') => {
            let rest = &glob[1..];
            for i in 0..=path.len() {
                if glob_matches(rest, &path[i..]) {
                    return true;
                }
                if path.get(i) == Some(&b'/') {
                    break;
                }
            }
            false
        }
        Some(b'?') => {
            path.first().is_some_and(|&c| c != b'/') && glob_matches(&glob[1..], &path[1..])
        }
        Some(&c) => path.first() == Some(&c) && glob_matches(&glob[1..], &path[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(glob: &str, path: &str) -> bool {
        glob_matches(glob.as_bytes(), path.as_bytes())
    }

    #[test]
    fn globs() {
        assert!(m("*.ndjson", "a.ndjson"));
        assert!(!m("*.ndjson", "x/a.ndjson"));
        assert!(m("**/*.ndjson", "x/y/a.ndjson"));
        assert!(m("**/*.ndjson", "a.ndjson"));
        assert!(m("2026-*/*.csv", "2026-11/a.csv"));
        assert!(!m("2026-*/*.csv", "2025-11/a.csv"));
        assert!(m("a?.csv", "ab.csv"));
        assert!(!m("a?.csv", "a/.csv"));
    }

    #[test]
    fn filter_is_relative_to_the_prefix() {
        let f = FileFilter {
            prefix: Path::from("landing/orders"),
            glob: Some("*.ndjson".into()),
            suffix: None,
            shard: None,
        };
        assert!(f.accepts(&Path::from("landing/orders/a.ndjson")));
        assert!(!f.accepts(&Path::from("landing/orders/sub/a.ndjson")));
        let f = FileFilter {
            prefix: Path::from("landing"),
            glob: None,
            suffix: Some(".csv.gz".into()),
            shard: None,
        };
        assert!(f.accepts(&Path::from("landing/x/a.csv.gz")));
        assert!(!f.accepts(&Path::from("landing/x/a.csv")));
    }

    #[test]
    fn shards_split_the_files_by_the_hash_of_their_relative_path() {
        let filter = |prefix: &str, index| FileFilter {
            prefix: Path::from(prefix),
            glob: Some("*.ndjson".into()),
            suffix: None,
            shard: Some(arcane_core::Shard::new(index, 3).unwrap()),
        };
        let mut per_shard = [0; 3];
        for n in 0..300 {
            let rel = format!("2026-{n:03}.ndjson");
            let owners: Vec<u32> = (0..3)
                .filter(|&i| filter("landing", i).accepts(&Path::from(format!("landing/{rel}"))))
                .collect();
            assert_eq!(owners.len(), 1, "{rel}: {owners:?}");
            // The owner depends on the path under the prefix only, by FNV-1a.
            assert_eq!(
                u64::from(owners[0]),
                arcane_core::shard::fnv1a_64(rel.as_bytes()) % 3
            );
            assert!(
                filter("elsewhere/x", owners[0]).accepts(&Path::from(format!("elsewhere/x/{rel}")))
            );
            per_shard[owners[0] as usize] += 1;
        }
        assert!(per_shard.iter().all(|&n| n > 50), "{per_shard:?}");
        // Files the glob rejects belong to no shard.
        assert!((0..3).all(|i| !filter("landing", i).accepts(&Path::from("landing/a.csv"))));
    }
}
