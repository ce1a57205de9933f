//! The encoded pages of a row group in progress, kept in unnamed temporary files instead of
//! the heap (`sink.writer.spillPages`).
//!
//! Parquet stores each column chunk of a row group contiguously, while rows arrive with all
//! columns at once: every column's encoded (compressed) pages wait until the row group is
//! complete (`writer.rowGroupBytes`, 16 MiB by default). With spilling on, the pages of each
//! row group go to a file of its own in `writer.spillDirectory` (its columns, encoded on
//! several threads, write at offsets they reserve) and are read back one page at a time when
//! the row group is written out; the heap holds the page being encoded, not the row group.
//! The files are unnamed (`O_TMPFILE`): nothing is left behind, even when the process is
//! killed. A row group's file, once its pages are written out, is written over by a later row
//! group of the same Parquet file instead of being closed: its pages stay in the page cache,
//! so a row group's spill costs copies, not a new file's pages allocated, delayed-allocated and
//! invalidated each time (the spill's writes went from 3.1 % to 2.1 % of a csv landing's CPU
//! samples; benches/README.md).

use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use parquet::arrow::arrow_writer::{PageKey, PageStore, PageStoreArgs, PageStoreFactory};
use parquet::errors::{ParquetError, Result};

/// Where a sink's row groups spill: a directory checked once; each Parquet file being written
/// gets its own [`FileSpill`].
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

    /// The spill of one Parquet file.
    pub(crate) fn for_file(&self) -> Arc<FileSpill> {
        Arc::new(FileSpill {
            dir: self.dir.clone(),
            current: Mutex::new(None),
            idle: Arc::new(Mutex::new(Vec::new())),
        })
    }
}

/// At most this many files of a Parquet file's row groups wait to be written over (two are in
/// use at a time: the row group being written out and the next one).
const MAX_IDLE_FILES: usize = 2;

/// The spill of one Parquet file: the column chunks of a row group share one unnamed file,
/// taken by [`next_row_group`](Self::next_row_group). A row group's file, once the row group
/// is written out and its chunks are dropped, waits in `idle` for a later row group, which
/// writes over it from its start (a page is read back only within what its own row group
/// wrote). A Parquet file has at most two such files open (the row group being written out
/// and the next one), whatever its number of columns: a sink with many open files of many
/// columns does not run out of file descriptors. The files are closed with the spill.
#[derive(Debug)]
pub(crate) struct FileSpill {
    dir: Arc<PathBuf>,
    current: Mutex<Option<Arc<SpillFile>>>,
    idle: Arc<Mutex<Vec<File>>>,
}

impl FileSpill {
    /// Start the pages of the next row group in a file: one a row group before used, or a
    /// new one.
    pub(crate) fn next_row_group(&self) -> Result<()> {
        let reused = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let file = match reused {
            Some(file) => file,
            None => tempfile::tempfile_in(self.dir.as_path())
                .map_err(|e| spill_error(&self.dir, "create a file for", e))?,
        };
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(SpillFile {
            file: Some(file),
            len: AtomicU64::new(0),
            read: Mutex::new(()),
            idle: Arc::downgrade(&self.idle),
        }));
        Ok(())
    }

    /// Files waiting to be written over.
    #[cfg(test)]
    fn idle_files(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl PageStoreFactory for FileSpill {
    fn create(&self, _args: &PageStoreArgs<'_>) -> Result<Box<dyn PageStore>> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(file) = current else {
            return Err(ParquetError::General(
                "a column writer was made before its row group's spill file".into(),
            ));
        };
        Ok(Box::new(SpillStore {
            file,
            dir: self.dir.clone(),
            pages: Vec::new(),
        }))
    }
}

/// The unnamed file of a row group's pages; each column chunk appends at offsets it reserves.
/// Dropped (its row group written out), the file goes back to its Parquet file's spill to be
/// written over, unless that spill is gone or has enough waiting.
#[derive(Debug)]
struct SpillFile {
    /// Taken only when dropped.
    file: Option<File>,
    /// Bytes reserved so far.
    len: AtomicU64,
    /// Held while a page is read back (a seek and a read of the file's shared offset).
    read: Mutex<()>,
    idle: Weak<Mutex<Vec<File>>>,
}

impl SpillFile {
    fn file(&self) -> io::Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("the spill file was closed"))
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        if let (Some(file), Some(idle)) = (self.file.take(), self.idle.upgrade()) {
            let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE_FILES {
                idle.push(file);
            }
        }
    }
}

/// The pages of one column chunk, in its row group's [`SpillFile`].
struct SpillStore {
    file: Arc<SpillFile>,
    dir: Arc<PathBuf>,
    /// Offset and length of each page put, in the order they were put (a [`PageKey`] is the
    /// index).
    pages: Vec<(u64, usize)>,
}

impl PageStore for SpillStore {
    fn put(&mut self, value: Bytes) -> Result<PageKey> {
        // Columns are encoded on several threads: each page's place is reserved, then
        // written there (positioned writes do not share a file offset).
        let offset = self
            .file
            .len
            .fetch_add(value.len() as u64, Ordering::Relaxed);
        self.file
            .file()
            .and_then(|f| f.write_all_at(&value, offset))
            .map_err(|e| spill_error(&self.dir, "write", e))?;
        self.pages.push((offset, value.len()));
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
        self.read_back(offset, len)
            .map(Bytes::from)
            .map_err(|e| spill_error(&self.dir, "read back", e))
    }
}

impl SpillStore {
    /// The `len` bytes at `offset`, read into a buffer that is not zeroed first (`read_to_end`
    /// reads into its spare capacity; a positioned read needs an initialized buffer).
    fn read_back(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        // The file may hold an earlier row group's pages past this one's: never read there.
        let reserved = self.file.len.load(Ordering::Relaxed);
        if offset.saturating_add(len as u64) > reserved {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a page of {len} bytes at offset {offset} lies past the row group's {reserved} bytes"
                ),
            ));
        }
        let _reading = self.file.read.lock().unwrap_or_else(|p| p.into_inner());
        let mut file = self.file.file()?;
        file.seek(io::SeekFrom::Start(offset))?;
        let mut page = Vec::with_capacity(len);
        file.take(len as u64).read_to_end(&mut page)?;
        if page.len() != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} of the page's {len} bytes at offset {offset} were there",
                    page.len()
                ),
            ));
        }
        Ok(page)
    }
}

/// A failure to keep encoded pages in the spill directory; the sink classifies it (a full or
/// read-only volume is not retried) by finding it in the writer's error.
#[derive(Debug)]
pub(crate) struct SpillError {
    /// The spill directory.
    pub(crate) dir: PathBuf,
    /// What failed: "create a file for", "write", "read back".
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
    /// Whether retrying cannot help until someone acts: the volume is full (`ENOSPC` is
    /// `StorageFull`) or over quota, read-only, or the directory is not writable.
    pub(crate) fn needs_someone(&self) -> bool {
        matches!(
            self.source.kind(),
            io::ErrorKind::StorageFull
                | io::ErrorKind::QuotaExceeded
                | io::ErrorKind::PermissionDenied
                | io::ErrorKind::ReadOnlyFilesystem
                | io::ErrorKind::NotFound
                | io::ErrorKind::NotADirectory
        )
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

    fn column_store(spill: &FileSpill) -> SpillStore {
        let file = spill
            .current
            .lock()
            .unwrap()
            .clone()
            .expect("a row group started");
        SpillStore {
            file,
            dir: spill.dir.clone(),
            pages: Vec::new(),
        }
    }

    /// A Parquet file's spill in a directory of its own, its first row group started.
    fn started() -> (tempfile::TempDir, Arc<FileSpill>) {
        let dir = tempfile::tempdir().expect("dir");
        let pages = SpillPages::new(dir.path().to_path_buf()).expect("writable");
        let spill = pages.for_file();
        spill.next_row_group().expect("file");
        (dir, spill)
    }

    #[test]
    fn pages_come_back_as_put_in_any_order_and_nothing_is_left_in_the_directory() {
        let (dir, spill) = started();
        // Two columns of one row group share its file; their pages interleave in it.
        let mut stores = [column_store(&spill), column_store(&spill)];
        let blobs: Vec<Bytes> = (0..50u8)
            .map(|i| Bytes::from(vec![i; (i as usize * 977) % 5000]))
            .collect();
        let keys: Vec<PageKey> = blobs
            .iter()
            .enumerate()
            .map(|(i, b)| stores[i % 2].put(b.clone()).expect("put"))
            .collect();
        // Dictionary pages are taken before the data pages put before them.
        for i in (0..keys.len()).rev().step_by(7).chain(0..keys.len()) {
            assert_eq!(
                stores[i % 2].take(keys[i]).expect("take"),
                blobs[i],
                "page {i}"
            );
        }
        let [store, _] = &mut stores;
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
    fn a_row_groups_file_is_written_over_by_the_next_and_closed_with_the_spill() {
        let (dir, spill) = started();
        let mut first = column_store(&spill);
        let long = Bytes::from(vec![7u8; 70_000]);
        let key = first.put(long.clone()).expect("put");
        assert_eq!(first.take(key).expect("take"), long);
        // The next row group starts while this one is written out: a file of its own.
        spill.next_row_group().expect("second file");
        let mut second = column_store(&spill);
        assert_eq!(spill.idle_files(), 0);
        drop(first);
        assert_eq!(spill.idle_files(), 1, "the first row group's file waits");
        // The third row group writes over the first one's file, which is longer than its
        // pages: each page reads back as put, nothing of the first row group's.
        spill.next_row_group().expect("third");
        assert_eq!(spill.idle_files(), 0, "written over, not a new file");
        let mut third = column_store(&spill);
        let short: Vec<Bytes> = (1..=3u8).map(|i| Bytes::from(vec![i; 1000])).collect();
        let keys: Vec<PageKey> = short
            .iter()
            .map(|b| third.put(b.clone()).expect("put"))
            .collect();
        let other = second.put(Bytes::from_static(b"second")).expect("put");
        for (key, page) in keys.iter().zip(&short).rev() {
            assert_eq!(&third.take(*key).expect("take"), page);
        }
        assert_eq!(&second.take(other).expect("take")[..], b"second");
        // An offset past what a row group wrote is an error, not stale bytes.
        third.pages.push((5000, 10));
        let past = third
            .take(PageKey::new(3))
            .expect_err("past the row group's pages");
        assert!(past.to_string().contains("cannot read back"), "{past}");
        let cause = std::error::Error::source(&past)
            .and_then(std::error::Error::source)
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(
            cause.contains("lies past the row group's"),
            "{past}: {cause}"
        );
        // Both row groups written out: the second's file waits (the third's is still the
        // current row group's until the next starts, which takes the second's).
        drop((second, third));
        assert_eq!(spill.idle_files(), 1);
        spill.next_row_group().expect("fourth");
        assert_eq!(spill.idle_files(), 1, "the third's file waits in turn");
        // Dropped, the spill closes them.
        drop(spill);
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
