//! The encoded pages of a row group in progress, kept in unnamed temporary files instead of
//! the heap (`sink.writer.spillPages`).
//!
//! Parquet stores each column chunk of a row group contiguously, while rows arrive with all
//! columns at once: every column's encoded (compressed) pages wait until the row group is
//! complete (`writer.rowGroupBytes`, 16 MiB by default). With spilling on, each column chunk's
//! pages are appended to a file of its own in `writer.spillDirectory` and read back one page
//! at a time when the row group is written out; the heap holds the page being encoded, not
//! the row group. The files are unnamed (`O_TMPFILE`): nothing is left behind, even when the
//! process is killed.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parquet::arrow::arrow_writer::{PageKey, PageStore, PageStoreArgs, PageStoreFactory};
use parquet::errors::{ParquetError, Result};

/// Makes a [`SpillStore`] in `dir` for each column chunk.
#[derive(Debug, Clone)]
pub(crate) struct SpillPages {
    dir: Arc<PathBuf>,
}

impl SpillPages {
    /// Spill to `dir`, checked by creating (and dropping) an unnamed file there: a directory
    /// that is missing, read-only or not a local file system fails here, before any row is
    /// encoded.
    pub(crate) fn new(dir: PathBuf) -> io::Result<Self> {
        tempfile::tempfile_in(&dir)?;
        Ok(Self { dir: Arc::new(dir) })
    }
}

impl PageStoreFactory for SpillPages {
    fn create(&self, _args: &PageStoreArgs<'_>) -> Result<Box<dyn PageStore>> {
        let file = tempfile::tempfile_in(self.dir.as_path())
            .map_err(|e| spill_error(&self.dir, "create a file", e))?;
        Ok(Box::new(SpillStore {
            file,
            dir: self.dir.clone(),
            len: 0,
            pages: Vec::new(),
        }))
    }
}

/// The pages of one column chunk, appended to an unnamed file.
struct SpillStore {
    file: File,
    dir: Arc<PathBuf>,
    /// Bytes written to `file`.
    len: u64,
    /// Offset and length of each page put, in the order they were put (a [`PageKey`] is the
    /// index).
    pages: Vec<(u64, usize)>,
}

impl PageStore for SpillStore {
    fn put(&mut self, value: Bytes) -> Result<PageKey> {
        self.file
            .write_all(&value)
            .map_err(|e| spill_error(&self.dir, "write", e))?;
        self.pages.push((self.len, value.len()));
        self.len += value.len() as u64;
        Ok(PageKey::new(self.pages.len() as u64 - 1))
    }

    fn take(&mut self, key: PageKey) -> Result<Bytes> {
        let Some(&(offset, len)) = usize::try_from(key.get())
            .ok()
            .and_then(|i| self.pages.get(i))
        else {
            return Err(ParquetError::General(format!(
                "page {} was never spilled to {} ({} pages)",
                key.get(),
                self.dir.display(),
                self.pages.len()
            )));
        };
        // Read into spare capacity (not zeroed first): pages are taken back in the order they
        // were put, but for the dictionary page, which is put last and taken first.
        let mut page = Vec::with_capacity(len);
        let read = self
            .file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| (&self.file).take(len as u64).read_to_end(&mut page));
        match read {
            Ok(n) if n == len => Ok(page.into()),
            Ok(n) => Err(spill_error(
                &self.dir,
                "read back",
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{n} of the {len} bytes of page {} were there", key.get()),
                ),
            )),
            Err(e) => Err(spill_error(&self.dir, "read back", e)),
        }
    }
}

/// A failure to keep encoded pages in the spill directory; the sink classifies it (a full or
/// read-only volume is not retried) by finding it in the writer's error.
#[derive(Debug)]
pub(crate) struct SpillError {
    /// The spill directory.
    pub(crate) dir: PathBuf,
    /// What failed: "create a file", "write", "read back".
    pub(crate) op: &'static str,
    pub(crate) source: io::Error,
}

impl std::fmt::Display for SpillError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot {} the encoded pages of the row group in progress in {} (sink.writer.spillDirectory)",
            self.op,
            self.dir.display()
        )
    }
}

impl std::error::Error for SpillError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl SpillError {
    /// Whether retrying cannot help until someone acts: the volume is full or over quota,
    /// read-only, or the directory is not writable.
    pub(crate) fn needs_someone(&self) -> bool {
        matches!(
            self.source.kind(),
            io::ErrorKind::StorageFull
                | io::ErrorKind::QuotaExceeded
                | io::ErrorKind::PermissionDenied
                | io::ErrorKind::ReadOnlyFilesystem
                | io::ErrorKind::NotFound
                | io::ErrorKind::NotADirectory
        ) || self.source.raw_os_error() == Some(28)
    }
}

fn spill_error(dir: &Path, op: &'static str, source: io::Error) -> ParquetError {
    ParquetError::External(Box::new(SpillError {
        dir: dir.to_path_buf(),
        op,
        source,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_free_store(pages: &SpillPages) -> SpillStore {
        let file = tempfile::tempfile_in(pages.dir.as_path()).expect("file");
        SpillStore {
            file,
            dir: pages.dir.clone(),
            len: 0,
            pages: Vec::new(),
        }
    }

    #[test]
    fn pages_come_back_as_put_in_any_order_and_nothing_is_left_in_the_directory() {
        let dir = tempfile::tempdir().expect("dir");
        let pages = SpillPages::new(dir.path().to_path_buf()).expect("writable");
        let mut store = args_free_store(&pages);
        let blobs: Vec<Bytes> = (0..50u8)
            .map(|i| Bytes::from(vec![i; (i as usize * 977) % 5000]))
            .collect();
        let keys: Vec<PageKey> = blobs
            .iter()
            .map(|b| store.put(b.clone()).expect("put"))
            .collect();
        // Dictionary pages are taken before the data pages put before them.
        for i in (0..keys.len()).rev().step_by(7).chain(0..keys.len()) {
            assert_eq!(store.take(keys[i]).expect("take"), blobs[i], "page {i}");
        }
        let missing = store.take(PageKey::new(50)).expect_err("never put");
        assert!(
            missing.to_string().contains("page 50 was never spilled"),
            "{missing}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("list").count(),
            0,
            "the spill files are unnamed"
        );
    }

    #[test]
    fn a_directory_that_cannot_take_files_is_refused_up_front() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("not-there");
        let e = SpillPages::new(missing).expect_err("missing directory");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").expect("write");
        assert!(SpillPages::new(file).is_err(), "a file is not a directory");
    }

    #[test]
    fn a_full_volume_needs_someone() {
        let full = SpillError {
            dir: "/spill".into(),
            op: "write",
            source: io::Error::from_raw_os_error(28),
        };
        assert!(full.needs_someone());
        assert!(
            full.to_string().contains("cannot write the encoded pages"),
            "{full}"
        );
        let interrupted = SpillError {
            dir: "/spill".into(),
            op: "read back",
            source: io::Error::new(io::ErrorKind::TimedOut, "slow disk"),
        };
        assert!(!interrupted.needs_someone());
    }
}
