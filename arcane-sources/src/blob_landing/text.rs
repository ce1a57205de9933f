//! NDJSON and CSV: splitting decompressed bytes into records and decoding blocks of them
//! with [`BlockDecoder`](crate::decode::block::BlockDecoder), which isolates bad records; they
//! are dead-lettered with their exact line numbers.

use std::borrow::Cow;
use std::io::{self, BufRead, Read};
use std::sync::Arc;

use arcane_core::DeadLetter;
use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

pub(crate) use crate::decode::block::TextFormat;
use crate::decode::block::{BlockDecoder, Piece, Rec, csv_unreadable};
use crate::decode::fast::{literal, number, skip_string, skip_ws};

use super::event::{FileError, FileEvent, Progress};
use super::fetch::store_error;

/// Decompressed bytes read per call.
const READ_CHUNK: usize = 512 << 10;
/// A record (line) longer than this fails the rest of its file.
pub(crate) const MAX_RECORD_BYTES: usize = 64 << 20;
/// What to do about a line longer than [`MAX_RECORD_BYTES`].
const ONE_RECORD_A_LINE: &str = "NDJSON holds one object per line and CSV one record per \
     line (a JSON array or a pretty-printed document is not NDJSON): land the data that way, \
     or filter such files out with `suffix`/`glob`";
/// A text file is read into segments of this size. Blocks are slices of the segment they were
/// read into, handed to the decode threads without a copy; when a segment has less than
/// [`READ_CHUNK`] left, only the records not yet handed over move to the next one.
const SEGMENT: usize = 2 << 20;
/// A block is handed over once it holds this many bytes (or `batchRows` records): the blocks in
/// flight stay a few MiB whatever the records' size, and a segment holds several of them, so
/// little is left to move at its end.
const BLOCK_BYTES: usize = 512 << 10;
/// Segments whose blocks may still be in flight, kept to be read into again once their blocks
/// are reported (no new allocation, no fresh pages per segment).
const MAX_RETIRED: usize = 2;
/// A segment larger than this (grown by a record of many MiB) is not kept for the next file
/// ([`TextReaders`]): one file of very long lines would otherwise hold that much for the whole
/// run.
const MAX_KEPT_BUFFER: usize = 16 << 20;

/// What reading one text file needs.
#[derive(Debug, Clone)]
pub(crate) struct TextJob {
    /// The file's path.
    pub(crate) path: String,
    /// How the file is named in dead letters (its URL, or its absolute local path).
    pub(crate) origin: String,
    pub(crate) format: TextFormat,
    pub(crate) schema: SchemaRef,
    pub(crate) batch_rows: usize,
    /// Threads decoding blocks in parallel (1: decode on the reading thread).
    pub(crate) decode_threads: usize,
    /// Read JSON numbers and booleans into string columns (the schema was inferred).
    pub(crate) coerce_primitive: bool,
    /// What the files read before leave to this one: decode threads and buffers.
    pub(crate) kept: Arc<TextReaders>,
}

impl TextJob {
    fn decoding(&self) -> Decoding {
        Decoding {
            format: self.format,
            schema: self.schema.clone(),
            batch_rows: self.batch_rows,
            coerce_primitive: self.coerce_primitive,
        }
    }
}

/// How blocks are decoded: what a [`BlockDecoder`] is made of.
#[derive(Debug, Clone)]
struct Decoding {
    format: TextFormat,
    schema: SchemaRef,
    batch_rows: usize,
    coerce_primitive: bool,
}

impl Decoding {
    fn decoder(&self) -> BlockDecoder {
        BlockDecoder::new(self.format, self.schema.clone(), self.batch_rows)
            .with_coerce_primitive(self.coerce_primitive)
    }

    /// Whether a decoder made for `other` decodes as one made for `self`.
    fn same(&self, other: &Decoding) -> bool {
        self.format == other.format
            && self.batch_rows == other.batch_rows
            && self.coerce_primitive == other.coerce_primitive
            && (Arc::ptr_eq(&self.schema, &other.schema) || self.schema == other.schema)
    }
}

/// What the text files of one stream share, from one file to the next: the decode threads
/// and the read segments. Made once, they do not leave the allocator's heaps fragmented anew
/// by every file (new threads, new buffers), so the resident size does not grow with the
/// number of files read.
#[derive(Debug, Default)]
pub(crate) struct TextReaders {
    buffers: std::sync::Mutex<TextBuffers>,
    pool: std::sync::OnceLock<Option<DecodePool>>,
}

/// The read segments of a text file; one file at a time takes them (a file read while
/// another holds them starts with new ones).
#[derive(Debug, Default)]
struct TextBuffers {
    /// Segments read into before, oldest first, with their sizes: one is read into again once
    /// no block of it is alive.
    retired: std::collections::VecDeque<(Bytes, usize)>,
}

impl TextBuffers {
    /// A segment of at least `size` bytes, empty: the oldest retired one when no block of it
    /// is alive any more, else a new one.
    fn segment(&mut self, size: usize) -> BytesMut {
        match self.retired.pop_front() {
            Some((oldest, capacity)) if capacity >= size => match oldest.try_into_mut() {
                Ok(mut segment) => {
                    segment.clear();
                    // Unique: the whole allocation is taken back, nothing is copied.
                    segment.reserve(size);
                    return segment;
                }
                Err(oldest) => self.retired.push_front((oldest, capacity)),
            },
            // Too small (grown for a long record, retired before) or none: let it go.
            _ => {}
        }
        BytesMut::with_capacity(size)
    }

    /// Keep `segment` (`size` bytes) to read into again, letting the oldest go beyond
    /// [`MAX_RETIRED`].
    fn retire(&mut self, segment: BytesMut, size: usize) {
        self.retired.push_back((segment.freeze(), size));
        while self.retired.len() > MAX_RETIRED {
            self.retired.pop_front();
        }
    }
}

impl TextReaders {
    /// The decode threads (`threads` of them, started by the first file that asks), or none
    /// when they cannot be started (blocks are then decoded on the reading thread).
    fn pool(&self, threads: usize) -> Option<&DecodePool> {
        self.pool
            .get_or_init(|| match DecodePool::start(threads) {
                Ok(pool) => Some(pool),
                Err(e) => {
                    tracing::warn!(
                        threads,
                        "cannot start {threads} decode threads ({e}); blocks are decoded on the reading thread"
                    );
                    None
                }
            })
            .as_ref()
    }

    fn take_buffers(&self) -> TextBuffers {
        std::mem::take(&mut *self.buffers.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Keep `buffers` for the next file, but for segments larger than [`MAX_KEPT_BUFFER`] (a
    /// file of very long lines leaves them), which are freed with their file.
    fn keep_buffers(&self, mut buffers: TextBuffers) {
        buffers
            .retired
            .retain(|(_, capacity)| *capacity <= MAX_KEPT_BUFFER);
        *self.buffers.lock().unwrap_or_else(|p| p.into_inner()) = buffers;
    }
}

/// Threads decoding the blocks of every file of a stream. Each keeps its decoder while the
/// blocks' [`Decoding`] stays the same. They end when the pool is dropped.
#[derive(Debug)]
struct DecodePool {
    jobs: std::sync::mpsc::SyncSender<DecodeJob>,
    threads: usize,
}

impl DecodePool {
    fn start(threads: usize) -> io::Result<Self> {
        let (jobs, jobs_rx) = std::sync::mpsc::sync_channel::<DecodeJob>(threads);
        let jobs_rx = Arc::new(std::sync::Mutex::new(jobs_rx));
        for i in 0..threads {
            let jobs_rx = jobs_rx.clone();
            std::thread::Builder::new()
                .name(format!("arcane-decode-{i}"))
                .spawn(move || decode_blocks(&jobs_rx))?;
        }
        Ok(Self { jobs, threads })
    }
}

/// A decode thread: decode each block with a decoder of its [`Decoding`] (kept while blocks
/// come with the same one) and send it back; ends when the pool is dropped.
fn decode_blocks(jobs: &std::sync::Mutex<std::sync::mpsc::Receiver<DecodeJob>>) {
    let mut current: Option<(Decoding, BlockDecoder)> = None;
    loop {
        let next = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((decoding, block, reply)) = next else {
            return;
        };
        let decoder = match &mut current {
            Some((kept, decoder)) if kept.same(&decoding) => decoder,
            _ => {
                let decoder = decoding.decoder();
                &mut current.insert((decoding, decoder)).1
            }
        };
        let mut pieces = Vec::with_capacity(1);
        decoder.decode_range(&block.data, &block.recs, 0, block.recs.len(), &mut pieces);
        let _ = reply.send(Decoded { block, pieces });
    }
}

/// A block of records handed to a decode thread: its bytes (a slice of the segment it was
/// read into), the records in it, and the file's progress after it.
struct Block {
    data: Bytes,
    recs: Vec<Rec>,
    lines: u64,
    offset: u64,
}

/// A decoded block, handed back in order.
struct Decoded {
    block: Block,
    pieces: Vec<Piece>,
}

/// Work for the decode threads: how to decode, a block, and where to send it back.
type DecodeJob = (Decoding, Block, std::sync::mpsc::SyncSender<Decoded>);

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

/// Read a whole text file and report its batches, dead-lettering bad records and, when the
/// content breaks off (corrupt compression, oversized line), the rest of the file.
///
/// Runs on a blocking thread; returns when the file is done or `out` is closed. Blocks are
/// decoded by the stream's decode threads ([`TextReaders`]) while this one splits the input
/// into records; results are taken back in order, so positions and dead letters stay in
/// file order.
pub(crate) fn read_text_file(
    job: &TextJob,
    reader: io::Result<Box<dyn Read + Send>>,
    start: Progress,
    out: &mpsc::Sender<FileEvent>,
) {
    if matches!(job.format, TextFormat::Csv { .. })
        && let Some(reason) = csv_unreadable(&job.schema)
    {
        let _ = out.blocking_send(FileEvent::Failed(format!(
            "cannot read the CSV file {}: {reason}",
            job.origin
        )));
        return;
    }
    let pool = match job.decode_threads.max(1) {
        1 => None,
        threads => job
            .kept
            .pool(threads)
            .map(|p| (p.jobs.clone(), p.threads + 1)),
    };
    read_with(job, reader, start, out, pool);
}

/// Read a text file on this thread: frame its records ([`Framer`]), decode and report them
/// block by block ([`TextState`]).
fn read_with(
    job: &TextJob,
    reader: io::Result<Box<dyn Read + Send>>,
    start: Progress,
    out: &mpsc::Sender<FileEvent>,
    pool: Option<(std::sync::mpsc::SyncSender<DecodeJob>, usize)>,
) {
    let mut buffers = job.kept.take_buffers();
    let segment = buffers.segment(SEGMENT);
    let decoding = job.decoding();
    let mut state = TextState {
        job,
        decoder: None,
        decoding,
        progress: start,
        out,
        pool,
        in_flight: std::collections::VecDeque::new(),
    };
    let mut framer = Framer::new(job, start, segment, buffers);
    read_into(&mut framer, &mut state, reader, start);
    // Blocks still in flight (the receiver is gone) are dropped: their segments are freed then.
    drop(state);
    let mut buffers = framer.segments;
    buffers.retire(framer.buf, framer.segment);
    job.kept.keep_buffers(buffers);
}

/// [`read_with`]'s loop: fill, frame and report until the file ends or fails.
fn read_into(
    framer: &mut Framer,
    state: &mut TextState<'_>,
    reader: io::Result<Box<dyn Read + Send>>,
    start: Progress,
) {
    let mut reader = match reader {
        Ok(r) => r,
        Err(e) => {
            state.fail(e, start.lines);
            return;
        }
    };
    loop {
        let eof = match framer.fill(&mut reader) {
            Ok(n) => n == 0,
            Err(e) => {
                // What was framed before the failure is reported first.
                if framer.flush(state) {
                    state.fail(e, framer.rec_line);
                }
                return;
            }
        };
        if !framer.frame(state) {
            return;
        }
        if eof {
            framer.finish(state);
            return;
        }
        if framer.oversized() {
            if framer.flush(state) {
                let message = format!(
                    "line {} is longer than {} MiB without a line break",
                    framer.rec_line,
                    MAX_RECORD_BYTES >> 20
                );
                let rec_line = framer.rec_line;
                state.fail(
                    io::Error::new(io::ErrorKind::InvalidData, message),
                    rec_line,
                );
            }
            return;
        }
        framer.make_room();
    }
}

/// Splits the decompressed bytes of a text file into records (lines; CSV records may span
/// lines inside quotes), in blocks of up to `batchRows` records and about [`BLOCK_BYTES`].
struct Framer {
    /// CSV: the quote character and whether the file has a header.
    csv: Option<(u8, bool)>,
    batch_rows: usize,
    /// The header is still to be skipped (a CSV file read from its start).
    header_pending: bool,
    /// What is read and not yet handed over in blocks, at the end of the current segment.
    buf: BytesMut,
    /// The size of the current segment.
    segment: usize,
    /// Segments read into before.
    segments: TextBuffers,
    /// Decompressed offset of `buf[0]`.
    base: u64,
    /// Next byte to scan for a line break.
    scan: usize,
    /// Start of the current, incomplete record.
    rec_start: usize,
    in_quote: bool,
    /// Line breaks seen.
    line: u64,
    /// First line of the current record.
    rec_line: u64,
    /// Records framed and not reported yet.
    block: Vec<Rec>,
    /// A read failure that came after bytes of the same [`fill`](Self::fill).
    deferred: Option<io::Error>,
}

impl Framer {
    /// A framer of `job`'s file from `start`, reading into `buf` (an empty segment; `segments`
    /// are the ones read into before).
    fn new(job: &TextJob, start: Progress, buf: BytesMut, segments: TextBuffers) -> Self {
        let csv = match job.format {
            TextFormat::Csv { quote, header, .. } => Some((quote, header)),
            TextFormat::Ndjson => None,
        };
        Self {
            csv,
            batch_rows: job.batch_rows,
            header_pending: csv.is_some_and(|(_, header)| header) && start.offset == 0,
            segment: buf.capacity(),
            buf,
            segments,
            base: start.offset,
            scan: 0,
            rec_start: 0,
            in_quote: false,
            line: start.lines,
            rec_line: start.lines + 1,
            block: Vec::with_capacity(job.batch_rows.min(1 << 16)),
            deferred: None,
        }
    }

    /// Append [`READ_CHUNK`] bytes from `reader`, fewer only at its end; 0 at the end of the
    /// file. A failure after some bytes is returned by the next call, once they are framed.
    fn fill(&mut self, reader: &mut dyn Read) -> io::Result<usize> {
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        let filled = self.buf.len();
        self.buf.resize(filled + READ_CHUNK, 0);
        // Until the chunk is full: a reader that returns less per call (a decompressor returns
        // what one step makes, a tenth of the chunk) would otherwise have the chunk zeroed
        // again for every call.
        let mut read = 0;
        let result = loop {
            if read == READ_CHUNK {
                break Ok(read);
            }
            match reader.read(&mut self.buf[filled + read..]) {
                Ok(0) => break Ok(read),
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if read > 0 => {
                    self.deferred = Some(e);
                    break Ok(read);
                }
                Err(e) => break Err(e),
            }
        };
        self.buf.truncate(filled + read);
        result
    }

    /// The end (line break) of the next complete record, if the buffer holds one.
    fn next_break(&mut self) -> Option<usize> {
        let Some((quote, _)) = self.csv else {
            return memchr::memchr(b'\n', &self.buf[self.scan..]).map(|i| self.scan + i);
        };
        // Quotes and line breaks only: the bytes between them are skipped (SIMD).
        for i in memchr::memchr2_iter(quote, b'\n', &self.buf[self.scan..]) {
            if self.buf[self.scan + i] == quote {
                self.in_quote = !self.in_quote;
            } else if self.in_quote {
                self.line += 1;
            } else {
                return Some(self.scan + i);
            }
        }
        None
    }

    /// Add the record from `rec_start` to `end` (a trailing `\r` excluded) unless it is blank
    /// or the header.
    fn push(&mut self, mut end: usize) {
        if end > self.rec_start && self.buf[end - 1] == b'\r' {
            end -= 1;
        }
        if is_blank(&self.buf[self.rec_start..end]) {
            return;
        }
        if self.header_pending {
            self.header_pending = false;
            return;
        }
        self.block.push(Rec {
            start: self.rec_start,
            end,
            line: self.rec_line,
        });
    }

    /// Frame the complete records in the buffer, reporting each full block. False when the
    /// receiver is gone.
    fn frame(&mut self, state: &mut TextState<'_>) -> bool {
        while let Some(nl) = self.next_break() {
            self.scan = nl + 1;
            self.line += 1;
            self.push(nl);
            self.rec_start = nl + 1;
            self.rec_line = self.line + 1;
            if self.block_full() && !self.flush(state) {
                return false;
            }
        }
        self.scan = self.buf.len();
        true
    }

    /// The block holds `batchRows` records, or [`BLOCK_BYTES`].
    fn block_full(&self) -> bool {
        self.block.len() >= self.batch_rows
            || self
                .block
                .first()
                .is_some_and(|first| self.rec_start - first.start >= BLOCK_BYTES)
    }

    /// Report the records framed so far, ending at the current record's start: the bytes up
    /// to there leave the buffer as the block's (no copy). False when the receiver is gone.
    fn flush(&mut self, state: &mut TextState<'_>) -> bool {
        if self.block.is_empty() {
            return true;
        }
        let cut = self.rec_start;
        let offset = self.base + cut as u64;
        let data = self.buf.split_to(cut).freeze();
        self.base = offset;
        self.scan -= cut;
        self.rec_start = 0;
        let sent = state.emit(data, &self.block, self.line, offset);
        self.block.clear();
        sent
    }

    /// At the end of the file: frame the last record (without a line break), report every
    /// block and the file's end.
    fn finish(&mut self, state: &mut TextState<'_>) {
        if self.rec_start < self.buf.len() {
            let end = self.buf.len();
            let blank = is_blank(&self.buf[self.rec_start..end]);
            self.push(end);
            if !blank {
                self.line += 1;
            }
        }
        self.rec_start = self.buf.len();
        let end_offset = self.base + self.buf.len() as u64;
        if !self.flush(state) || !state.drain() {
            return;
        }
        state.progress.lines = self.line;
        state.progress.offset = end_offset;
        let _ = state.out.blocking_send(FileEvent::Done {
            progress: state.progress,
            dead_letters: Vec::new(),
        });
    }

    /// The current record is longer than [`MAX_RECORD_BYTES`].
    fn oversized(&self) -> bool {
        self.buf.len() - self.rec_start > MAX_RECORD_BYTES
    }

    /// Room for the next read: when less than [`READ_CHUNK`] is left in the segment, the
    /// records not handed over yet and the current one move to the next segment (of twice
    /// their size when they do not fit a [`SEGMENT`]: a record of many MiB is not copied again
    /// for every chunk).
    fn make_room(&mut self) {
        if self.buf.capacity() - self.buf.len() >= READ_CHUNK {
            return;
        }
        let keep_from = self.block.first().map_or(self.rec_start, |r| r.start);
        let kept = self.buf.len() - keep_from;
        let size = if kept + READ_CHUNK <= SEGMENT {
            SEGMENT
        } else {
            2 * kept + READ_CHUNK
        };
        let mut next = self.segments.segment(size);
        next.extend_from_slice(&self.buf[keep_from..]);
        let segment = std::mem::replace(&mut self.segment, next.capacity());
        let old = std::mem::replace(&mut self.buf, next);
        self.segments.retire(old, segment);
        for r in &mut self.block {
            r.start -= keep_from;
            r.end -= keep_from;
        }
        self.rec_start -= keep_from;
        self.scan -= keep_from;
        self.base += keep_from as u64;
    }
}

struct TextState<'a> {
    job: &'a TextJob,
    /// Decodes blocks on this thread (without decode threads; made for the first block).
    decoder: Option<BlockDecoder>,
    /// What the decode threads decode this file's blocks with.
    decoding: Decoding,
    progress: Progress,
    out: &'a mpsc::Sender<FileEvent>,
    /// Decode threads and how many blocks may be in flight.
    pool: Option<(std::sync::mpsc::SyncSender<DecodeJob>, usize)>,
    /// Blocks handed to the decode threads, oldest first.
    in_flight: std::collections::VecDeque<std::sync::mpsc::Receiver<Decoded>>,
}

impl TextState<'_> {
    /// Decode `block` (here or on a decode thread), dead-letter its bad records and send its
    /// rows; `lines` and `offset` are the file's progress after the block. False when the
    /// receiver is gone.
    fn emit(&mut self, data: Bytes, block: &[Rec], lines: u64, offset: u64) -> bool {
        let Some((jobs, max_in_flight)) = &self.pool else {
            let mut pieces = Vec::with_capacity(1);
            let decoding = &self.decoding;
            self.decoder
                .get_or_insert_with(|| decoding.decoder())
                .decode_range(&data, block, 0, block.len(), &mut pieces);
            return self.report(&data, block, pieces, lines, offset);
        };
        let (reply, result) = std::sync::mpsc::sync_channel(1);
        let block = Block {
            data,
            recs: block.to_vec(),
            lines,
            offset,
        };
        if jobs.send((self.decoding.clone(), block, reply)).is_err() {
            return false;
        }
        self.in_flight.push_back(result);
        let max_in_flight = *max_in_flight;
        while self.in_flight.len() > max_in_flight {
            if !self.take_oldest() {
                return false;
            }
        }
        true
    }

    /// Report the oldest block in flight. False when the receiver is gone.
    fn take_oldest(&mut self) -> bool {
        let Some(result) = self.in_flight.pop_front() else {
            return true;
        };
        match result.recv() {
            Ok(Decoded { block, pieces }) => {
                self.report(&block.data, &block.recs, pieces, block.lines, block.offset)
            }
            Err(_) => {
                let _ = self.out.blocking_send(FileEvent::Failed(format!(
                    "a decode thread of {} stopped unexpectedly",
                    self.job.path
                )));
                false
            }
        }
    }

    /// Report every block in flight, in order. False when the receiver is gone.
    fn drain(&mut self) -> bool {
        while !self.in_flight.is_empty() {
            if !self.take_oldest() {
                return false;
            }
        }
        true
    }

    /// Dead-letter the bad records of a decoded block and send its rows.
    fn report(
        &mut self,
        buf: &[u8],
        block: &[Rec],
        pieces: Vec<Piece>,
        lines: u64,
        offset: u64,
    ) -> bool {
        let mut good = Vec::with_capacity(pieces.len());
        let mut dead_letters = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Good(batch) => good.push(batch),
                Piece::Bad(i, reason) => {
                    // Every bad record of the block travels with the block's position, also on
                    // a resume inside the block: its end was not committed, nor its letters.
                    let rec = block[i];
                    dead_letters.push(
                        DeadLetter::new(
                            self.job.origin.clone(),
                            format!("line {}", rec.line),
                            reason,
                        )
                        .with_payload(String::from_utf8_lossy(&buf[rec.start..rec.end])),
                    );
                }
            }
        }
        let batch = match good.len() {
            0 => RecordBatch::new_empty(self.job.schema.clone()),
            1 => good.pop().unwrap_or_else(|| unreachable!()),
            _ => match arrow_select::concat::concat_batches(&self.job.schema, &good) {
                Ok(b) => b,
                Err(e) => {
                    let _ = self.out.blocking_send(FileEvent::Failed(format!(
                        "cannot concatenate decoded rows of {}: {e}",
                        self.job.path
                    )));
                    return false;
                }
            },
        };
        self.progress.records += block.len() as u64;
        self.progress.lines = lines;
        self.progress.offset = offset;
        self.out
            .blocking_send(FileEvent::Batch {
                batch,
                dead_letters,
                progress: self.progress,
            })
            .is_ok()
    }

    /// The content cannot be read from line `from_line` on: dead-letter the rest of the file
    /// (or report a store failure).
    fn fail(&mut self, e: io::Error, from_line: u64) {
        // What was read before the failure is reported first, in order.
        if !self.drain() {
            return;
        }
        if store_error(&e).is_some() {
            let inner = e
                .into_inner()
                .and_then(|b| b.downcast::<super::fetch::StoreReadError>().ok());
            if let Some(store) = inner {
                let _ = self.out.blocking_send(FileEvent::Store(store.0));
            }
            return;
        }
        let locator = if from_line <= 1 {
            "file".to_string()
        } else {
            format!("from line {from_line}")
        };
        let letter = DeadLetter::new(
            self.job.origin.clone(),
            locator,
            format!("the file cannot be read: {e}; the rest of the file is skipped"),
        );
        let _ = self.out.blocking_send(FileEvent::Done {
            progress: self.progress,
            dead_letters: vec![letter],
        });
    }
}

/// A schema inferred from a text file, and how many records it was inferred from.
#[derive(Debug)]
pub(crate) struct Inferred {
    pub(crate) schema: SchemaRef,
    /// Records read to infer it (`None`: the file declares its schema).
    pub(crate) records: Option<u64>,
}

/// Objects parsed per call of `arrow_json`'s inference (bounds the memory of inference).
const INFER_CHUNK: usize = 4096;

/// Bytes of whole NDJSON lines one inference thread reads at a time.
const INFER_BLOCK: usize = 4 << 20;

/// A block of whole lines for inference ([`next_block`]).
pub(super) enum LinesBlock {
    /// About `size` bytes and the rest of the line they end in.
    Lines(Vec<u8>),
    /// The end of the input.
    End,
    /// The line the `size` bytes end in goes on for more than `max_rest` bytes.
    LineTooLong,
}

/// The next `size` bytes of `reader` and the rest of the line they end in, if that is at most
/// `max_rest` bytes.
pub(super) fn next_block(
    reader: &mut impl BufRead,
    size: usize,
    max_rest: u64,
) -> io::Result<LinesBlock> {
    let mut block = Vec::with_capacity(size.min(INFER_BLOCK) + 4096);
    reader.take(size as u64).read_to_end(&mut block)?;
    if block.is_empty() {
        return Ok(LinesBlock::End);
    }
    if block.last() != Some(&b'\n') {
        reader.take(max_rest).read_until(b'\n', &mut block)?;
        if block.last() != Some(&b'\n') && !reader.fill_buf()?.is_empty() {
            return Ok(LinesBlock::LineTooLong);
        }
    }
    Ok(LinesBlock::Lines(block))
}

/// Infer from the lines of `block` into `inference`, counting non-blank lines in `seen`, up to
/// `limit` of them; true when the limit was reached.
///
/// Each record is read for its [`Shape`] only (its values are not built), and a record of a
/// shape that already took part in this block adds nothing: inference merges types by
/// widening them, so merging a shape a second time changes nothing.
fn infer_lines(block: &[u8], inference: &mut JsonInference, limit: u64, seen: &mut u64) -> bool {
    let mut chunk = Vec::with_capacity(INFER_CHUNK);
    // The shapes of `chunk` (until it is merged) and those that took part before it.
    let mut pending = Shapes::default();
    let mut known = Shapes::default();
    // The last record's shape: a record of the same shape is skipped before it is hashed.
    let mut previous: Option<Shape<'_>> = None;
    let mut reached = false;
    for line in block.split(|&b| b == b'\n') {
        if is_blank(line) {
            continue;
        }
        if *seen >= limit {
            reached = true;
            break;
        }
        *seen += 1;
        // Most records have the shape of the one before: told without parsing them.
        if previous
            .as_ref()
            .is_some_and(|previous| same_shape(line, previous))
        {
            inference.objects += 1;
            continue;
        }
        // Bad lines are dead-lettered when the file is read; inference skips them, and
        // lines that are not objects.
        let shape = match serde_json::from_slice::<Shape<'_>>(line) {
            Ok(shape @ Shape::Object(_)) => shape,
            _ => continue,
        };
        if previous.as_ref() == Some(&shape) {
            inference.objects += 1;
            continue;
        }
        let hash = shape.hashed();
        if known.contains(hash, &shape) || pending.contains(hash, &shape) {
            inference.objects += 1;
            previous = Some(shape);
            continue;
        }
        chunk.push(shape.representative());
        pending.insert(hash, shape.clone());
        previous = Some(shape);
        if chunk.len() >= INFER_CHUNK {
            merge_chunk(inference, &mut chunk, &mut pending, &mut known);
        }
    }
    merge_chunk(inference, &mut chunk, &mut pending, &mut known);
    reached || *seen >= limit
}

/// Merge `chunk` into `inference`; its shapes become `known` when all of them took part.
fn merge_chunk<'a>(
    inference: &mut JsonInference,
    chunk: &mut Vec<serde_json::Value>,
    pending: &mut Shapes<'a>,
    known: &mut Shapes<'a>,
) {
    let left_out = inference.left_out;
    inference.add(chunk);
    chunk.clear();
    let shapes = std::mem::take(pending);
    if inference.left_out == left_out {
        known.extend(shapes);
    }
}

/// Infer a schema from the first `max_records` records of a text file (all of them when
/// `None`), in one streaming pass: at most [`INFER_CHUNK`] parsed records are held at a time.
/// A whole NDJSON file is read by `threads` threads, each inferring blocks of
/// [`INFER_BLOCK`] bytes of whole lines, merged in file order into the schema one thread
/// would infer. So is a whole CSV file without the quote character
/// ([`super::infer_csv::infer_csv_in_blocks`]); where that cannot tell (a quote, a record of
/// another field count, invalid UTF-8), the file is opened again (`open`) and read in one
/// pass, which gives the error with its line.
///
/// Where values of a field disagree the type is widened (integer and float → `Float64`;
/// other scalars mixed → `Utf8`); a record whose field is an object where others had a
/// scalar (or the reverse) does not take part (it is dead-lettered when the file is read).
pub(crate) fn infer_text_schema(
    open: impl Fn() -> io::Result<Box<dyn Read + Send>>,
    format: TextFormat,
    max_records: Option<usize>,
    threads: usize,
) -> Result<Inferred, FileError> {
    infer_text_in_blocks(open, format, max_records, threads, INFER_BLOCK)
}

/// [`infer_text_schema`] in blocks of `block_size` bytes.
pub(super) fn infer_text_in_blocks(
    open: impl Fn() -> io::Result<Box<dyn Read + Send>>,
    format: TextFormat,
    max_records: Option<usize>,
    threads: usize,
    block_size: usize,
) -> Result<Inferred, FileError> {
    let classify = |e: io::Error| match e
        .into_inner()
        .map(|b| b.downcast::<super::fetch::StoreReadError>())
    {
        Some(Ok(store)) => FileError::Store(store.0),
        Some(Err(other)) => FileError::Content(other.to_string()),
        None => FileError::Content("unreadable content".into()),
    };
    // Every read of the file goes through a guard against endless lines and a tap that
    // keeps a store error (transient) apart from the content's.
    let tapped = || -> Result<ErrorTap<LineGuard<Box<dyn Read + Send>>>, FileError> {
        Ok(ErrorTap {
            inner: LineGuard::new(open().map_err(classify)?),
            error: None,
        })
    };
    let mut tap = tapped()?;
    let TextFormat::Csv {
        header,
        delimiter,
        quote,
    } = format
    else {
        return infer_ndjson(tap, max_records, threads, block_size);
    };
    // A whole file is read by `threads` threads where that gives what one pass gives; where
    // it cannot tell, the file is read again in one pass.
    let mut found = None;
    if max_records.is_none() && threads > 1 {
        found = super::infer_csv::infer_csv_in_blocks(
            &mut tap, header, delimiter, quote, threads, block_size,
        )
        .map_err(|e| tap.failure(e))?;
        if found.is_none() {
            tap = tapped()?;
        }
    }
    let result = match found {
        Some(found) => Ok(found),
        None => super::infer_csv::infer_csv_schema(&mut tap, header, delimiter, quote, max_records),
    };
    match result {
        Ok((schema, records)) if !schema.fields().is_empty() => Ok(Inferred {
            schema: Arc::new(Schema::new(schema.fields().clone())),
            records: Some(records as u64),
        }),
        Ok(_) => Err(FileError::Content(
            "the file has no columns to infer a schema from; set `schema`".into(),
        )),
        Err(e) => Err(tap.failure(e)),
    }
}

/// NDJSON inference (see [`infer_text_schema`]) in blocks of `block_size` bytes.
fn infer_ndjson<R: Read>(
    tap: ErrorTap<R>,
    max_records: Option<usize>,
    threads: usize,
    block_size: usize,
) -> Result<Inferred, FileError> {
    let mut lines = io::BufReader::with_capacity(READ_CHUNK, tap);
    let mut inference = JsonInference::default();
    let limit = max_records.map_or(u64::MAX, |n| n as u64);
    let mut seen: u64 = 0;
    let threads = if max_records.is_some() {
        1
    } else {
        threads.max(1)
    };
    loop {
        // A round: up to `threads` blocks of whole lines, inferred in parallel and
        // merged in file order (see `merge_block`).
        let mut blocks = Vec::with_capacity(threads);
        let mut ended = false;
        while blocks.len() < threads {
            // A line is a record: read whole, up to a record's limit (as `LineGuard`).
            match next_block(&mut lines, block_size, MAX_RECORD_BYTES as u64) {
                Ok(LinesBlock::Lines(block)) => blocks.push(block),
                Ok(LinesBlock::End) => {
                    ended = true;
                    break;
                }
                Ok(LinesBlock::LineTooLong) => {
                    return Err(FileError::Content(format!(
                        "a line is longer than {} MiB without a line break; {ONE_RECORD_A_LINE}",
                        MAX_RECORD_BYTES >> 20
                    )));
                }
                Err(e) => {
                    return Err(lines.into_inner().failure(e));
                }
            }
        }
        if threads == 1 {
            if let Some(block) = blocks.first() {
                ended |= infer_lines(block, &mut inference, limit, &mut seen);
            }
        } else {
            let parts: Vec<Option<(JsonInference, u64)>> = std::thread::scope(|scope| {
                let handles: Vec<_> = blocks
                    .iter()
                    .map(|block| {
                        scope.spawn(move || {
                            let mut part = JsonInference::default();
                            let mut lines = 0;
                            infer_lines(block, &mut part, u64::MAX, &mut lines);
                            (part, lines)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().ok()).collect()
            });
            for (block, part) in blocks.iter().zip(parts) {
                match part {
                    Some((part, lines)) => {
                        inference.merge_block(part, block);
                        seen += lines;
                    }
                    // A thread that failed: the block is read here.
                    None => {
                        infer_lines(block, &mut inference, u64::MAX, &mut seen);
                    }
                }
            }
        }
        if ended {
            break;
        }
    }
    match inference.fields {
        Some(fields) if inference.objects > 0 => Ok(Inferred {
            schema: Arc::new(Schema::new(fields)),
            records: Some(seen),
        }),
        _ => Err(FileError::Content(format!(
            "no JSON object in its first {seen} non-blank lines to infer a schema from; set `schema`"
        ))),
    }
}

/// NDJSON `text` inferred by `threads` threads in blocks of `block` bytes gives the fields
/// that `arrow_json`'s inference gives over every line parsed whole (objects merged one by
/// one, those that conflict left out), and counts every non-blank line; or both find no
/// object. Panics otherwise (the `text_infer` fuzz target).
#[cfg(feature = "fuzzing")]
pub(crate) fn ndjson_inference_agrees(text: &[u8], threads: usize, block: usize) {
    let (want, lines) = inferred_whole(text);
    let tap = ErrorTap {
        inner: io::Cursor::new(text.to_vec()),
        error: None,
    };
    match (infer_ndjson(tap, None, threads, block), want.fields) {
        (Ok(got), Some(fields)) => {
            assert_eq!(
                got.schema.fields(),
                &fields,
                "{threads} threads, blocks of {block}"
            );
            assert_eq!(got.records, Some(lines));
        }
        (Err(_), None) => {}
        (got, want) => panic!("inferred {got:?}, parsed whole {want:?}"),
    }
}

/// What `arrow_json`'s inference makes of every non-blank line of `text` parsed whole into a
/// `serde_json::Value` (objects merged one by one, those that conflict left out; other lines
/// skipped), and how many non-blank lines there are: the reference of the differential tests
/// and the `text_infer` fuzz target.
#[cfg(any(test, feature = "fuzzing"))]
fn inferred_whole(text: &[u8]) -> (JsonInference, u64) {
    let mut want = JsonInference::default();
    let mut lines = 0u64;
    for line in text.split(|&b| b == b'\n') {
        if is_blank(line) {
            continue;
        }
        lines += 1;
        if let Ok(value @ serde_json::Value::Object(_)) = serde_json::from_slice(line) {
            want.add(std::slice::from_ref(&value));
        }
    }
    (want, lines)
}

/// The shape of a JSON value, as far as inference tells values apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Shape<'a> {
    Null,
    Bool,
    /// A number `serde_json` reads as an `i64`.
    Int,
    /// Any other number.
    Float,
    Str,
    /// An array: the shapes of its items, each once (up to [`LIST_SHAPES`] of them), in the
    /// order they first appear.
    List(Vec<Shape<'a>>),
    /// An object: its keys and the shapes of their values, in the record's order.
    Object(Vec<(Cow<'a, str>, Shape<'a>)>),
}

/// Distinct item shapes an array's [`Shape`] looks through before it keeps any item's shape.
const LIST_SHAPES: usize = 8;

impl Shape<'_> {
    /// A value of this shape: arrays with the same items (each shape once: inference takes
    /// the union of the items' types), objects with the same keys inserted in the record's
    /// order into a `serde_json::Map` (which keeps the last of a repeated key as it does when
    /// it reads the record). What inference makes of it is what it makes of the record.
    fn representative(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Shape::Null => Value::Null,
            Shape::Bool => Value::Bool(false),
            Shape::Int => Value::from(0i64),
            Shape::Float => Value::from(0.5f64),
            Shape::Str => Value::String(String::new()),
            Shape::List(items) => Value::Array(items.iter().map(Shape::representative).collect()),
            Shape::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, shape)| (k.to_string(), shape.representative()))
                    .collect(),
            ),
        }
    }

    fn hashed(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        self.hash(&mut hasher);
        hasher.finish()
    }
}

/// Whether `line` is a JSON value of `shape`, told in one pass over its bytes without building
/// anything: for a line `serde_json` reads, true only when the [`Shape`] it reads is `shape`,
/// and then always unless this pass is not sure (a key with escapes is read the long way);
/// for a line it rejects, either answer (inference skips such a line, and a line
/// of a shape already merged adds nothing). Nothing but the counts changes for a line of the
/// previous record's shape, so inference need not parse it.
fn same_shape(line: &[u8], shape: &Shape<'_>) -> bool {
    let i = skip_ws(line, 0);
    shape_at(line, i, shape).is_some_and(|end| skip_ws(line, end) == line.len())
}

/// The end of the value at `i` when it is of `shape` (see [`same_shape`]).
fn shape_at(b: &[u8], i: usize, shape: &Shape<'_>) -> Option<usize> {
    match shape {
        Shape::Null => literal(b, i, b"null").ok(),
        Shape::Bool => literal(b, i, b"true")
            .or_else(|_| literal(b, i, b"false"))
            .ok(),
        Shape::Int | Shape::Float => {
            let (end, int) = number_shape(b, i)?;
            (int == matches!(shape, Shape::Int)).then_some(end)
        }
        Shape::Str => match b.get(i) {
            Some(b'"') => skip_string(b, i + 1).ok(),
            _ => None,
        },
        Shape::List(items) => {
            if b.get(i) != Some(&b'[') {
                return None;
            }
            let mut i = skip_ws(b, i + 1);
            if b.get(i) == Some(&b']') {
                return items.is_empty().then_some(i + 1);
            }
            // As the shape was made: an item of a shape met before in this array adds
            // nothing (while fewer than LIST_SHAPES are kept), any other is the next one.
            let mut kept = 0;
            loop {
                let before = if kept < LIST_SHAPES {
                    items[..kept].iter().find_map(|item| shape_at(b, i, item))
                } else {
                    None
                };
                let end = match before {
                    Some(end) => end,
                    None => {
                        let end = shape_at(b, i, items.get(kept)?)?;
                        kept += 1;
                        end
                    }
                };
                i = skip_ws(b, end);
                match b.get(i) {
                    Some(b',') => i = skip_ws(b, i + 1),
                    Some(b']') => return (kept == items.len()).then_some(i + 1),
                    _ => return None,
                }
            }
        }
        Shape::Object(members) => {
            if b.get(i) != Some(&b'{') {
                return None;
            }
            let mut i = skip_ws(b, i + 1);
            for (n, (key, value)) in members.iter().enumerate() {
                if n > 0 {
                    if b.get(i) != Some(&b',') {
                        return None;
                    }
                    i = skip_ws(b, i + 1);
                }
                // The key as it is written, with no escapes (a key holding a quote or a
                // backslash is left to the long way).
                let key = key.as_bytes();
                let end = i + 1 + key.len();
                if b.get(i) != Some(&b'"')
                    || key.iter().any(|&c| c == b'"' || c == b'\\')
                    || b.get(i + 1..end) != Some(key)
                    || b.get(end) != Some(&b'"')
                {
                    return None;
                }
                i = skip_ws(b, end + 1);
                if b.get(i) != Some(&b':') {
                    return None;
                }
                i = skip_ws(b, shape_at(b, skip_ws(b, i + 1), value)?);
            }
            (b.get(i) == Some(&b'}')).then_some(i + 1)
        }
    }
}

/// The end of the JSON number at `i` and whether `serde_json` reads it as an `i64` (what
/// [`Shape::Int`] is): an integer that fits, but not `-0`, which it reads as a float.
fn number_shape(b: &[u8], i: usize) -> Option<(usize, bool)> {
    let (end, integer) = number(b, i).ok()?;
    if !integer {
        return Some((end, false));
    }
    let negative = b[i] == b'-';
    let digits = &b[i + usize::from(negative)..end];
    // More than 20 digits is beyond u64, which serde_json reads as a float.
    if digits.len() > 20 {
        return Some((end, false));
    }
    let n = digits
        .iter()
        .fold(0u128, |n, d| n * 10 + u128::from(d - b'0'));
    let int = if negative {
        n != 0 && n <= 1u128 << 63
    } else {
        n <= i64::MAX as u128
    };
    Some((end, int))
}

/// Most shapes [`Shapes`] holds (records whose keys differ from record to record are not
/// remembered beyond it).
const MAX_SHAPES: usize = 1024;

/// A set of [`Shape`]s, by their hash ([`Shape::hashed`], computed once by the caller).
#[derive(Default)]
struct Shapes<'a> {
    by_hash: std::collections::HashMap<u64, Vec<Shape<'a>>>,
    len: usize,
}

impl<'a> Shapes<'a> {
    fn contains(&self, hash: u64, shape: &Shape<'_>) -> bool {
        self.by_hash
            .get(&hash)
            .is_some_and(|same| same.iter().any(|s| s == shape))
    }

    fn insert(&mut self, hash: u64, shape: Shape<'a>) {
        if self.len < MAX_SHAPES {
            self.len += 1;
            self.by_hash.entry(hash).or_default().push(shape);
        }
    }

    fn extend(&mut self, other: Shapes<'a>) {
        for (hash, shapes) in other.by_hash {
            for shape in shapes {
                self.insert(hash, shape);
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for Shape<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ShapeVisitor;
        impl<'de> serde::de::Visitor<'de> for ShapeVisitor {
            type Value = Shape<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Shape<'de>, E> {
                Ok(Shape::Null)
            }
            fn visit_none<E>(self) -> Result<Shape<'de>, E> {
                Ok(Shape::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Shape<'de>, E> {
                Ok(Shape::Bool)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Shape<'de>, E> {
                Ok(Shape::Int)
            }
            fn visit_u64<E>(self, v: u64) -> Result<Shape<'de>, E> {
                // `serde_json::Number::is_i64` is what inference asks.
                Ok(if i64::try_from(v).is_ok() {
                    Shape::Int
                } else {
                    Shape::Float
                })
            }
            fn visit_f64<E>(self, _: f64) -> Result<Shape<'de>, E> {
                Ok(Shape::Float)
            }
            fn visit_str<E>(self, _: &str) -> Result<Shape<'de>, E> {
                Ok(Shape::Str)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Shape<'de>, A::Error> {
                let mut items: Vec<Shape<'de>> = Vec::new();
                while let Some(item) = seq.next_element::<Shape<'de>>()? {
                    // Beyond a few distinct shapes, every item is kept (the same union).
                    if items.len() >= LIST_SHAPES || !items.contains(&item) {
                        items.push(item);
                    }
                }
                Ok(Shape::List(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Shape<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    members.push((key, map.next_value::<Shape<'de>>()?));
                }
                Ok(Shape::Object(members))
            }
        }
        d.deserialize_any(ShapeVisitor)
    }
}

/// An object's key, borrowed from the line unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The fields inferred so far from JSON objects, merged chunk by chunk.
#[derive(Debug, Default)]
struct JsonInference {
    fields: Option<Fields>,
    /// Objects that took part.
    objects: u64,
    /// Objects left out because they conflicted with the others.
    left_out: u64,
}

impl JsonInference {
    /// Merge `part`, inferred alone from the next `block` of the file: its fields join these
    /// (the merge is associative), unless an object of the block was left out or the block
    /// conflicts with what came before; then the block is inferred again after what came
    /// before, as one pass over the file would (which objects are left out depends on what
    /// was read before them).
    fn merge_block(&mut self, part: JsonInference, block: &[u8]) {
        if part.left_out == 0 {
            match &part.fields {
                None => {
                    self.objects += part.objects;
                    return;
                }
                Some(fields) => {
                    if let Some(merged) = self.merged(fields) {
                        self.fields = Some(merged);
                        self.objects += part.objects;
                        return;
                    }
                }
            }
        }
        infer_lines(block, self, u64::MAX, &mut 0);
    }

    /// Merge the fields of `values`; when they conflict with each other or with what was
    /// inferred so far, merge them one by one and leave out those that cannot be merged.
    fn add(&mut self, values: &[serde_json::Value]) {
        if values.is_empty() {
            return;
        }
        if let Some(merged) = infer_values(values).and_then(|f| self.merged(&f)) {
            self.fields = Some(merged);
            self.objects += values.len() as u64;
            return;
        }
        for value in values {
            if let Some(merged) =
                infer_values(std::slice::from_ref(value)).and_then(|f| self.merged(&f))
            {
                self.fields = Some(merged);
                self.objects += 1;
            } else {
                self.left_out += 1;
            }
        }
    }

    fn merged(&self, fields: &Fields) -> Option<Fields> {
        match &self.fields {
            None => Some(fields.clone()),
            Some(current) => merge_fields(current, fields),
        }
    }
}

/// `arrow_json`'s inference over `values`; `None` when they conflict.
fn infer_values(values: &[serde_json::Value]) -> Option<Fields> {
    arrow_json::reader::infer_json_schema_from_iterator(
        values.iter().map(Ok::<_, arrow_schema::ArrowError>),
    )
    .ok()
    .map(|schema| schema.fields().clone())
}

/// Fields of `a` and then the new ones of `b`, with the types of common fields widened;
/// `None` when a field is a struct on one side and not on the other.
fn merge_fields(a: &Fields, b: &Fields) -> Option<Fields> {
    let mut out: Vec<Field> = Vec::with_capacity(a.len().max(b.len()));
    for fa in a.iter() {
        let data_type = match b.find(fa.name()) {
            Some((_, fb)) => merge_types(fa.data_type(), fb.data_type())?,
            None => fa.data_type().clone(),
        };
        out.push(Field::new(fa.name(), data_type, true));
    }
    for fb in b.iter() {
        if a.find(fb.name()).is_none() {
            out.push(fb.as_ref().clone());
        }
    }
    Some(Fields::from(out))
}

/// The type that holds values of both `a` and `b`, with the rules of `arrow_json`'s own
/// inference: `Null` gives way, integer and float give float, a scalar joins a list, other
/// scalars mixed give `Utf8`; structs only merge with structs.
fn merge_types(a: &DataType, b: &DataType) -> Option<DataType> {
    use DataType as D;
    let list = |t: DataType| D::List(Arc::new(Field::new_list_field(t, true)));
    Some(match (a, b) {
        (D::Null, t) | (t, D::Null) => t.clone(),
        (a, b) if a == b => a.clone(),
        (D::Int64, D::Float64) | (D::Float64, D::Int64) => D::Float64,
        (D::Struct(fa), D::Struct(fb)) => D::Struct(merge_fields(fa, fb)?),
        (D::Struct(_), _) | (_, D::Struct(_)) => return None,
        (D::List(ea), D::List(eb)) => list(merge_types(ea.data_type(), eb.data_type())?),
        (D::List(e), scalar) | (scalar, D::List(e)) => list(merge_types(e.data_type(), scalar)?),
        _ => D::Utf8,
    })
}

/// Fails a read once more than [`MAX_RECORD_BYTES`] have gone by without a line break (as
/// reading the file fails there), naming the byte the line starts at: inference would otherwise
/// hold such a line whole (a minified JSON document of many GiB landed as `.json`, say) until
/// memory runs out.
struct LineGuard<R> {
    inner: R,
    /// Bytes read since the last line break.
    since_break: usize,
    /// Bytes read.
    read: u64,
}

impl<R> LineGuard<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            since_break: 0,
            read: 0,
        }
    }
}

impl<R: Read> Read for LineGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        // Only the last line break of what was read counts (lines are not counted: that
        // would cost a pass over every byte).
        match memchr::memrchr(b'\n', buf.get(..n).unwrap_or_default()) {
            Some(last) => self.since_break = n - last - 1,
            None => self.since_break += n,
        }
        if self.since_break > MAX_RECORD_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the line starting at byte {} is longer than {} MiB without a line break; \
                     {ONE_RECORD_A_LINE}",
                    self.read - self.since_break as u64,
                    MAX_RECORD_BYTES >> 20
                ),
            ));
        }
        Ok(n)
    }
}

/// Remembers a store error passing through, for readers that wrap I/O errors.
struct ErrorTap<R> {
    inner: R,
    error: Option<object_store::Error>,
}

impl<R> ErrorTap<R> {
    /// A read that failed with `e`: the store's error it passed on (transient), else the
    /// content's.
    fn failure(&mut self, e: impl std::fmt::Display) -> FileError {
        match self.error.take() {
            Some(store) => FileError::Store(store),
            None => FileError::Content(e.to_string()),
        }
    }
}

impl<R: Read> Read for ErrorTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Err(e) if store_error(&e).is_some() => {
                let message = e.to_string();
                if let Some(Ok(store)) = e
                    .into_inner()
                    .map(|b| b.downcast::<super::fetch::StoreReadError>())
                {
                    self.error = Some(store.0);
                }
                Err(io::Error::other(message))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `arrow_json` infers from every record parsed whole (the records agree enough
    /// that no record is left out).
    fn whole(lines: &[String]) -> Schema {
        let values: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).expect("JSON"))
            .collect();
        Schema::new(infer_values(&values).expect("no conflict"))
    }

    fn inferred(lines: &[String]) -> Schema {
        let text = lines.join("\n").into_bytes();
        let open =
            || -> io::Result<Box<dyn Read + Send>> { Ok(Box::new(io::Cursor::new(text.clone()))) };
        let out = infer_text_schema(open, TextFormat::Ndjson, None, 1).expect("inferred");
        assert_eq!(out.records, Some(lines.len() as u64));
        out.schema.as_ref().clone()
    }

    /// A line longer than a record may be ends inference with an error naming the byte it
    /// starts at, whatever the format and threads, instead of being held whole (memory stays
    /// bounded at about that length).
    #[test]
    fn inference_stops_at_a_line_longer_than_a_record_may_be() {
        let csv = TextFormat::Csv {
            header: true,
            delimiter: b',',
            quote: b'"',
        };
        for (format, first) in [(TextFormat::Ndjson, "{\"a\": 1}\n"), (csv, "a\n1\n")] {
            for threads in [1, 2] {
                let open = || -> io::Result<Box<dyn Read + Send>> {
                    let endless = io::repeat(b'7').take(MAX_RECORD_BYTES as u64 + 10);
                    Ok(Box::new(io::Cursor::new(first.as_bytes()).chain(endless)))
                };
                let start = first.len();
                match infer_text_schema(open, format, None, threads) {
                    Err(FileError::Content(m)) => assert!(
                        m.contains(&format!(
                            "the line starting at byte {start} is longer than 64 MiB without a line break"
                        )),
                        "{format:?}, {threads} threads: {m}"
                    ),
                    other => panic!("{format:?}, {threads} threads: {other:?}"),
                }
            }
        }
    }

    /// NDJSON inferred in small blocks by several threads: the schema and record count one
    /// thread infers, on records whose fields change type, conflict (object against scalar,
    /// in either order, across and within blocks), nest, or are blank, bad or not objects.
    #[test]
    fn blocks_inferred_in_parallel_give_what_one_pass_gives() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let infer = |text: &[u8], threads: usize, block: usize| {
            let tap = ErrorTap {
                inner: io::Cursor::new(text.to_vec()),
                error: None,
            };
            infer_ndjson(tap, None, threads, block).map_err(|e| format!("{e:?}"))
        };
        for trial in 0..60 {
            let mut text = String::new();
            for _ in 0..(50 + next(400)) {
                let line = match next(16) {
                    0 => "   ".to_string(),
                    1 => "{not json".to_string(),
                    2 => "[1, 2]".to_string(),
                    3 => format!(r#"{{"f": {{"a": {}}}}}"#, next(9)),
                    4 => format!(r#"{{"f": {}, "g": [1, {}.5]}}"#, next(9), next(9)),
                    5 => format!(r#"{{"f": "s{}", "h": null}}"#, next(9)),
                    6 => format!(r#"{{"g": {{"x": true}}, "k{}": 1}}"#, next(5)),
                    7 => r#"{"f": null, "g": null}"#.to_string(),
                    8 => format!(r#"{{"n": {}}}"#, next(1_000)),
                    9 => format!(r#"{{"n": {}.25, "l": [{{"z": 1}}]}}"#, next(1_000)),
                    10 => r#"{"l": "scalar"}"#.to_string(),
                    _ => format!(
                        r#"{{"id": {}, "s": "v{}", "b": {}}}"#,
                        next(99),
                        next(9),
                        next(2) == 0
                    ),
                };
                text.push_str(&line);
                text.push('\n');
            }
            let one = infer(text.as_bytes(), 1, INFER_BLOCK);
            for (threads, block) in [(2, 64), (3, 200), (4, 1 + next(600) as usize)] {
                let many = infer(text.as_bytes(), threads, block);
                match (&one, &many) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(
                            a.schema, b.schema,
                            "trial {trial}, {threads} threads, blocks of {block}:\n{text}"
                        );
                        assert_eq!(a.records, b.records, "trial {trial}");
                    }
                    (Err(a), Err(b)) => assert_eq!(a, b),
                    _ => panic!("trial {trial}: {one:?} vs {many:?}"),
                }
            }
        }
    }

    /// Records of scalars are inferred from their kinds and repeated shapes skipped: the
    /// schema is the one inferred from every record parsed whole.
    #[test]
    fn records_of_scalars_infer_what_whole_records_infer() {
        let mut lines = Vec::new();
        for i in 0..6_000u64 {
            let n = if i < 5_000 {
                format!("{i}")
            } else {
                format!("{i}.5")
            };
            let big = if i == 5_500 {
                u64::MAX.to_string()
            } else {
                i.to_string()
            };
            let maybe = if i < 3_000 { "null" } else { "\"x\"" };
            let flag = if i % 1_000 == 999 { "1" } else { "true" };
            let extra = if i == 4_000 { r#", "late": -1e3"# } else { "" };
            lines.push(format!(
                r#"{{"n": {n}, "big": {big}, "maybe": {maybe}, "flag": {flag}, "dup": 1, "dup": "s", "esc\u0061ped": 2{extra}}}"#
            ));
        }
        let want = whole(&lines);
        assert_eq!(inferred(&lines), want);
        use arrow_schema::DataType as D;
        let t = |name: &str| want.field_with_name(name).expect(name).data_type().clone();
        assert_eq!(
            (
                t("n"),
                t("big"),
                t("maybe"),
                t("flag"),
                t("dup"),
                t("escaped"),
                t("late")
            ),
            (
                D::Float64,
                D::Float64,
                D::Utf8,
                D::Utf8,
                D::Utf8,
                D::Int64,
                D::Float64
            )
        );
        // Records with objects and arrays are read whole, between records of scalars.
        lines.insert(
            10,
            r#"{"n": 1, "nested": {"a": [1, 2.5]}, "list": ["x"]}"#.into(),
        );
        assert_eq!(inferred(&lines), whole(&lines));
    }

    /// Records that nest objects and arrays (repeated shapes, arrays of many item shapes,
    /// empty arrays, escaped and repeated keys, numbers beyond `i64`, conflicts between an
    /// object and a scalar) infer, in one thread or several, the schema that `arrow_json`'s
    /// inference gives when every record is parsed whole and merged one by one.
    #[test]
    fn nested_records_infer_what_whole_records_infer() {
        let mut rng = arcane_test_support::rng::SplitMix64(0x9e37_79b9_7f4a_7c15);
        let mut next = move |n: u64| rng.between(0, n);
        fn value(next: &mut impl FnMut(u64) -> u64, depth: u32) -> String {
            let top = if depth >= 3 { 6 } else { 9 };
            match next(top) {
                0 => "null".into(),
                1 => "true".into(),
                2 => format!("{}", next(100)),
                3 => format!("{}.5", next(100)),
                4 => "18446744073709551615".into(),
                5 => format!(r#""s{}""#, next(9)),
                6 | 7 => {
                    let items: Vec<String> =
                        (0..next(12)).map(|_| value(next, depth + 1)).collect();
                    format!("[{}]", items.join(","))
                }
                _ => object(next, depth + 1),
            }
        }
        fn object(next: &mut impl FnMut(u64) -> u64, depth: u32) -> String {
            let keys = ["a", "b", "c", "\\u0061", "d"];
            let members: Vec<String> = (0..next(5))
                .map(|_| format!(r#""{}": {}"#, keys[next(5) as usize], value(next, depth)))
                .collect();
            format!("{{{}}}", members.join(", "))
        }
        for trial in 0..80 {
            // A few record templates repeated (shapes seen again), and some one-offs.
            let templates: Vec<String> = (0..1 + next(6)).map(|_| object(&mut next, 0)).collect();
            let mut lines = Vec::new();
            for _ in 0..(20 + next(300)) {
                lines.push(match next(4) {
                    0 => object(&mut next, 0),
                    _ => templates[next(templates.len() as u64) as usize].clone(),
                });
            }
            let text = lines.join("\n");
            let (want, _) = inferred_whole(text.as_bytes());
            // Every generated line is an object (merged, or left out as a conflict).
            assert_eq!(want.objects + want.left_out, lines.len() as u64);
            for (threads, block) in [(1, INFER_BLOCK), (2, 64), (3, 1 + next(900) as usize)] {
                let tap = ErrorTap {
                    inner: io::Cursor::new(text.clone().into_bytes()),
                    error: None,
                };
                let got = infer_ndjson(tap, None, threads, block);
                match (&want.fields, got) {
                    (Some(fields), Ok(got)) => assert_eq!(
                        got.schema.fields(),
                        fields,
                        "trial {trial}, {threads} threads, blocks of {block}:\n{text}"
                    ),
                    (None, Err(_)) => {}
                    (want, got) => panic!("trial {trial}: {want:?} vs {got:?}\n{text}"),
                }
            }
        }
    }

    /// `same_shape` says a line is of a record's shape only when parsing both gives the same
    /// shape, and always then unless the line has escapes, for every pair of lines from a
    /// small space of hostile values (numbers at the edges of `i64` and `u64`, `-0`,
    /// exponents, escaped and repeated keys, arrays of many item shapes, nesting, whitespace),
    /// so that pairs that differ by one token are common; lines `serde_json` rejects may get
    /// either answer.
    #[test]
    fn same_shape_is_what_parsing_tells() {
        const SCALARS: &[&str] = &[
            "null",
            "true",
            "false",
            "0",
            "-0",
            "7",
            "-7",
            "0.0",
            "-0.0",
            "1e3",
            "1E+3",
            "2.5e-3",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "-18446744073709551616",
            "123456789012345678901234567890",
            r#""s""#,
            r#""""#,
            r#""a\"b""#,
            r#""\u00e9t\u00e9""#,
            r#""é""#,
            "01",
            "1.",
            ".5",
            "-",
            "nul",
            "truex",
            r#""open"#,
            "+1",
        ];
        let mut rng = arcane_test_support::rng::SplitMix64(0x5a5e_5a5e_0001);
        let mut next = move |n: u64| rng.between(0, n);
        fn value(next: &mut impl FnMut(u64) -> u64, depth: u32) -> String {
            match next(if depth >= 2 { 10 } else { 13 }) {
                0..=9 => SCALARS[next(SCALARS.len() as u64) as usize].to_string(),
                10 | 11 => {
                    let items: Vec<String> =
                        (0..next(11)).map(|_| value(next, depth + 1)).collect();
                    format!("[{}]", items.join(if next(2) == 0 { "," } else { " , " }))
                }
                _ => object(next, depth + 1),
            }
        }
        fn object(next: &mut impl FnMut(u64) -> u64, depth: u32) -> String {
            let keys = [r#""a""#, r#""b""#, r#""\u0061""#, r#""a\"""#, r#""é""#];
            let members: Vec<String> = (0..next(4))
                .map(|_| format!("{}:{}", keys[next(5) as usize], value(next, depth)))
                .collect();
            let ws = ["", " ", "\t", "\r"][next(4) as usize];
            format!("{ws}{{{ws}{}{ws}}}{ws}", members.join(&format!("{ws},")))
        }
        let lines: Vec<String> = (0..1500).map(|_| object(&mut next, 0)).collect();
        let parsed: Vec<Option<Shape<'_>>> = lines
            .iter()
            .map(|l| serde_json::from_str::<Shape<'_>>(l).ok())
            .collect();
        let valid = parsed.iter().flatten().count();
        assert!(valid > 300, "too few valid lines ({valid}) to compare");
        let (mut same, mut compared) = (0, 0);
        for (a, shape_a) in lines.iter().zip(&parsed) {
            let Some(shape_a) = shape_a else { continue };
            // Only keys with escapes are left to the long way.
            if !a.contains('\\') {
                assert!(
                    same_shape(a.as_bytes(), shape_a),
                    "a line of its own shape: {a}"
                );
            }
            for (b, shape_b) in lines.iter().zip(&parsed).take(400) {
                let Some(shape_b) = shape_b else { continue };
                let equal = shape_a == shape_b;
                // Never "same" for another shape; "not sure" only for a line with escapes.
                let said = same_shape(b.as_bytes(), shape_a);
                assert!(
                    if said {
                        equal
                    } else {
                        !equal || b.contains('\\')
                    },
                    "{b} against the shape of {a}: said {said}"
                );
                compared += 1;
                same += usize::from(equal && a != b);
            }
        }
        // The space is small enough that different lines of one shape are common.
        assert!(same > 1000 && compared > 10_000, "{same} of {compared}");
    }

    /// The events of reading `text` as `job`'s file from its start.
    fn events_of(job: &TextJob, text: &str) -> Vec<FileEvent> {
        events_of_reader(job, Box::new(io::Cursor::new(text.as_bytes().to_vec())))
    }

    /// The events of reading `reader` as `job`'s file from its start.
    fn events_of_reader(job: &TextJob, reader: Box<dyn Read + Send>) -> Vec<FileEvent> {
        let (tx, mut rx) = mpsc::channel(4);
        std::thread::scope(|scope| {
            scope.spawn(move || read_text_file(job, Ok(reader), Progress::default(), &tx));
            let mut events = Vec::new();
            while let Some(e) = rx.blocking_recv() {
                events.push(e);
            }
            events
        })
    }

    /// Read `text` as one file of `job` (with `kept` as what earlier files left): its rows
    /// (column `c` of each batch, as text) and dead letters.
    fn read_file(job: &TextJob, text: &str) -> (Vec<SchemaRef>, Vec<String>, usize) {
        let (mut schemas, mut rows, mut dead) = (Vec::new(), Vec::new(), 0);
        for event in events_of(job, text) {
            match event {
                FileEvent::Batch {
                    batch,
                    dead_letters,
                    ..
                } => {
                    dead += dead_letters.len();
                    schemas.push(batch.schema());
                    let column = arrow_cast::display::ArrayFormatter::try_new(
                        batch.column(0),
                        &Default::default(),
                    )
                    .expect("formatter");
                    rows.extend((0..batch.num_rows()).map(|i| column.value(i).to_string()));
                }
                FileEvent::Done { dead_letters, .. } => dead += dead_letters.len(),
                other => panic!("unexpected {other:?}"),
            }
        }
        (schemas, rows, dead)
    }

    /// Segments grown by very long lines are freed with their file, not kept for the next;
    /// a retired segment is read into again once no block of it is alive, not before.
    #[test]
    fn segments_serve_again_once_their_blocks_are_gone_and_oversized_ones_are_not_kept() {
        let kept = TextReaders::default();
        let mut buffers = TextBuffers::default();
        buffers.retire(
            BytesMut::with_capacity(MAX_KEPT_BUFFER + 1),
            MAX_KEPT_BUFFER + 1,
        );
        buffers.retire(BytesMut::with_capacity(SEGMENT), SEGMENT);
        kept.keep_buffers(buffers);
        let mut buffers = kept.take_buffers();
        assert_eq!(buffers.retired.len(), 1, "the oversized segment is let go");

        let mut segment = buffers.segment(SEGMENT);
        segment.extend_from_slice(b"0123456789");
        let address = segment.as_ptr();
        let block = segment.split_to(4).freeze();
        buffers.retire(segment, SEGMENT);
        let fresh = buffers.segment(SEGMENT);
        assert_ne!(
            fresh.as_ptr(),
            address,
            "a segment whose block is alive is not reused"
        );
        buffers.retire(fresh, SEGMENT);
        assert_eq!(&block[..], b"0123");
        drop(block);
        let again = buffers.segment(SEGMENT);
        assert_eq!(again.as_ptr(), address, "the segment is read into again");
        assert!(again.is_empty() && again.capacity() >= SEGMENT);
    }

    /// Files of several segments, with records across segment ends, a record longer than a
    /// segment, blank lines and CSV records with line breaks inside quotes: every record once,
    /// in order, with its line number, and the file's end at its size.
    #[test]
    fn records_across_segment_ends_are_read_once_in_order() {
        use arrow_array::cast::AsArray;
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let long = "x".repeat(SEGMENT + SEGMENT / 2);
        let mut ndjson = String::new();
        let mut csv = String::from("a,s\n");
        let mut want = Vec::new();
        for i in 0..60_000i64 {
            let s = match i {
                31_000 => long.clone(),
                _ => "y".repeat((i as usize * 7919) % 400),
            };
            ndjson.push_str(&format!("{{\"a\": {i}, \"s\": \"{s}\"}}\n"));
            csv.push_str(&format!("{i},\"{s}\nline two\"\n"));
            if i % 1000 == 0 {
                ndjson.push_str("\n   \n");
            }
            want.push(i.to_string());
        }
        ndjson.push_str("{\"a\": 60000, \"s\": \"last, no line break\"}");
        let mut want_ndjson = want.clone();
        want_ndjson.push("60000".into());
        let csv_format = TextFormat::Csv {
            delimiter: b',',
            quote: b'"',
            header: true,
        };
        for threads in [1, 2] {
            for (format, text, want) in [
                (TextFormat::Ndjson, &ndjson, &want_ndjson),
                (csv_format, &csv, &want),
            ] {
                let job = TextJob {
                    path: "f".into(),
                    origin: "/f".into(),
                    format,
                    schema: schema.clone(),
                    batch_rows: 1000,
                    decode_threads: threads,
                    coerce_primitive: false,
                    kept: Arc::new(TextReaders::default()),
                };
                assert!(text.len() > 4 * SEGMENT);
                let mut rows = Vec::new();
                let mut end = None;
                for event in events_of(&job, text) {
                    match event {
                        FileEvent::Batch {
                            batch,
                            dead_letters,
                            progress,
                        } => {
                            assert!(dead_letters.is_empty(), "{dead_letters:?}");
                            let a = batch
                                .column(0)
                                .as_primitive::<arrow_array::types::Int64Type>();
                            let s = batch.column(1).as_string::<i32>();
                            for i in 0..batch.num_rows() {
                                rows.push(a.value(i).to_string());
                                if a.value(i) == 31_000 {
                                    assert!(s.value(i).starts_with(&long));
                                }
                            }
                            assert_eq!(progress.records, rows.len() as u64);
                        }
                        FileEvent::Done {
                            progress,
                            dead_letters,
                        } => {
                            assert!(dead_letters.is_empty(), "{dead_letters:?}");
                            end = Some(progress);
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
                assert_eq!(&rows, want, "{format:?}, {threads} threads");
                let end = end.expect("the file's end");
                assert_eq!(
                    end.offset,
                    text.len() as u64,
                    "{format:?}, {threads} threads"
                );
                let lines = text.lines().count() as u64;
                assert_eq!(end.lines, lines, "{format:?}, {threads} threads");
            }
        }
    }

    /// Gives its text in pieces of `piece` bytes (interrupted now and then, as a decompressor
    /// or a network body may be), fails once when `fail_at` bytes are given, and then ends
    /// (as a stream that broke off does: asked again, it has nothing more).
    struct Pieces {
        text: Vec<u8>,
        at: usize,
        piece: usize,
        fail_at: usize,
        calls: usize,
        failed: bool,
    }

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(7) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            if self.at >= self.fail_at {
                if self.failed {
                    return Ok(0);
                }
                self.failed = true;
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "cut off"));
            }
            let n = buf.len().min(self.piece).min(self.fail_at - self.at);
            buf[..n].copy_from_slice(&self.text[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    /// A file given in small pieces and then failing: every record read before the failure
    /// is reported once, in order, and the rest of the file is one dead letter from the line
    /// the failure cut (the pieces of one read are gathered; a failure after some of them is
    /// kept for the next read, not lost: the stream says nothing more after it).
    #[test]
    fn records_before_a_failure_in_the_middle_of_a_read_are_reported_then_the_failure() {
        use arrow_array::cast::AsArray;
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let text: String = (0..100_000).map(|i| format!("{{\"a\": {i}}}\n")).collect();
        assert_eq!(text.len(), 1_288_890);
        for (piece, fail_at) in [
            (1000, 1_200_005),
            (333, 700_000),
            (1 << 20, 1_048_577),
            (4096, 1 << 20),
        ] {
            let whole_lines = text[..fail_at].matches('\n').count();
            let job = TextJob {
                path: "f".into(),
                origin: "/f".into(),
                format: TextFormat::Ndjson,
                schema: schema.clone(),
                batch_rows: 1000,
                decode_threads: 2,
                coerce_primitive: false,
                kept: Arc::new(TextReaders::default()),
            };
            let reader = Pieces {
                text: text.clone().into_bytes(),
                at: 0,
                piece,
                fail_at,
                calls: 0,
                failed: false,
            };
            let (mut rows, mut letters) = (Vec::new(), Vec::new());
            for event in events_of_reader(&job, Box::new(reader)) {
                match event {
                    FileEvent::Batch { batch, .. } => {
                        let a = batch
                            .column(0)
                            .as_primitive::<arrow_array::types::Int64Type>();
                        rows.extend(a.values().iter().copied());
                    }
                    FileEvent::Done { dead_letters, .. } => letters.extend(dead_letters),
                    other => panic!("unexpected {other:?}"),
                }
            }
            let want: Vec<i64> = (0..whole_lines as i64).collect();
            assert_eq!(rows, want, "pieces of {piece}, failing at {fail_at}");
            assert_eq!(letters.len(), 1, "{letters:?}");
            let letter = format!("{:?}", letters[0]);
            assert!(
                letter.contains(&format!("from line {}", whole_lines + 1))
                    && letter.contains("cut off"),
                "{letter}"
            );
        }
    }

    /// The decode threads and buffers one file leaves serve the next, and a decode thread
    /// makes a new decoder when a file comes with another schema or format: each file reads
    /// with its own.
    #[test]
    fn files_read_one_after_another_share_the_decode_threads_and_each_has_its_schema() {
        let kept = Arc::new(TextReaders::default());
        let job = |schema: Schema, format: TextFormat| TextJob {
            path: "f".into(),
            origin: "/f".into(),
            format,
            schema: Arc::new(schema),
            batch_rows: 3,
            decode_threads: 2,
            coerce_primitive: false,
            kept: kept.clone(),
        };
        let ints = Schema::new(vec![Field::new("a", DataType::Int64, true)]);
        let texts = Schema::new(vec![Field::new("a", DataType::Utf8, true)]);
        let ndjson: String = (0..20).map(|i| format!("{{\"a\": {i}}}\n")).collect();
        let strings: String = (0..20).map(|i| format!("{{\"a\": \"s{i}\"}}\n")).collect();
        let csv: String = (0..20).map(|i| format!("{i}\n")).collect();
        let csv_format = TextFormat::Csv {
            delimiter: b',',
            quote: b'"',
            header: false,
        };
        let reads = [
            (job(ints.clone(), TextFormat::Ndjson), &ndjson, "0"),
            (job(texts.clone(), TextFormat::Ndjson), &strings, "s0"),
            // A string where the integer column is: dead letters, not a decoder of the last
            // file's schema reading it.
            (job(ints.clone(), TextFormat::Ndjson), &strings, ""),
            (job(ints.clone(), csv_format), &csv, "0"),
            (job(ints, TextFormat::Ndjson), &ndjson, "0"),
        ];
        for (n, (job, text, first)) in reads.iter().enumerate() {
            let (schemas, rows, dead) = read_file(job, text);
            assert!(
                schemas.iter().all(|s| *s == job.schema),
                "file {n}: a batch of another schema: {schemas:?}"
            );
            if first.is_empty() {
                assert_eq!((rows.len(), dead), (0, 20), "file {n}");
            } else {
                assert_eq!((rows.len(), dead), (20, 0), "file {n}");
                assert_eq!(rows[0], *first, "file {n}");
            }
            let pool = kept.pool.get().expect("started").as_ref().expect("threads");
            assert_eq!(pool.threads, 2, "file {n}");
            let buffers = kept.buffers.lock().expect("buffers");
            assert!(
                !buffers.retired.is_empty(),
                "file {n}: the segments were not kept for the next file"
            );
        }
    }
}
