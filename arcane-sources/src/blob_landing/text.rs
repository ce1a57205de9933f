//! NDJSON and CSV: splitting decompressed bytes into records, decoding blocks of records
//! straight into Arrow, and isolating bad records.
//!
//! The good case costs one `arrow_json`/`arrow_csv` decode per block of `batchRows` records,
//! directly on the input bytes (no per-row values, no copies). When a block fails, it is split
//! in halves and each half decoded again, down to the single bad records, which are
//! dead-lettered with their exact line numbers; the good rows of the block are kept in order.
//! One bad line in a block of `n` costs about `2·log2(n)` extra decodes of shrinking ranges.

use std::io::{self, BufRead, Read};
use std::sync::Arc;

use arcane_core::{DeadLetter, DeadLetterQueue};
use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use tokio::sync::mpsc;

use super::event::{FileError, FileEvent, Progress};
use super::fetch::store_error;

/// Decompressed bytes read per call.
const READ_CHUNK: usize = 1 << 20;
/// A record (line) longer than this fails the rest of its file.
pub(crate) const MAX_RECORD_BYTES: usize = 64 << 20;

/// A line-oriented format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextFormat {
    /// One JSON object per line.
    Ndjson,
    /// CSV; records may span lines inside quoted fields.
    Csv {
        header: bool,
        delimiter: u8,
        quote: u8,
    },
}

/// What reading one text file needs.
#[derive(Debug, Clone)]
pub(crate) struct TextJob {
    /// The file's path, the origin of its dead letters.
    pub(crate) path: String,
    pub(crate) format: TextFormat,
    pub(crate) schema: SchemaRef,
    pub(crate) batch_rows: usize,
    pub(crate) dead_letters: DeadLetterQueue,
}

/// A complete record in the buffer: bytes `start..end` (without the line break), starting on
/// line `line` (1-based).
#[derive(Debug, Clone, Copy)]
struct Rec {
    start: usize,
    end: usize,
    line: u64,
}

enum Piece {
    Good(RecordBatch),
    Bad(usize, String),
}

/// Decodes contiguous ranges of records.
struct BlockDecoder {
    format: TextFormat,
    /// The stream's schema.
    target: SchemaRef,
    /// The schema handed to the Arrow decoders: `target` with `UTC` time zones written as
    /// `+00:00` (Arrow parses named zones only with its `chrono-tz` feature).
    schema: SchemaRef,
    batch_rows: usize,
    json: Option<arrow_json::reader::Decoder>,
}

/// `schema` with top-level `UTC` time zones written as the offset `+00:00`.
fn decode_schema(schema: &SchemaRef) -> SchemaRef {
    let mut changed = false;
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Timestamp(unit, Some(tz)) if is_utc(tz) => {
                changed = true;
                f.as_ref()
                    .clone()
                    .with_data_type(DataType::Timestamp(*unit, Some("+00:00".into())))
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    if changed {
        Arc::new(Schema::new(fields))
    } else {
        schema.clone()
    }
}

/// Whether a time zone name means UTC.
pub(crate) fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "utc" | "Z" | "Etc/UTC" | "+00:00")
}

impl BlockDecoder {
    fn new(format: TextFormat, target: SchemaRef, batch_rows: usize) -> Self {
        Self {
            format,
            schema: decode_schema(&target),
            target,
            batch_rows,
            json: None,
        }
    }

    /// Decode `bytes`, which must hold exactly `expected` records.
    fn decode(&mut self, bytes: &[u8], expected: usize) -> Result<RecordBatch, String> {
        let batch = self.decode_raw(bytes, expected)?;
        if Arc::ptr_eq(&self.schema, &self.target) {
            return Ok(batch);
        }
        // Relabel `+00:00` columns as the stream's `UTC` (same values).
        let columns = batch
            .columns()
            .iter()
            .zip(self.target.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c.clone())
                } else {
                    arrow_cast::cast(c, f.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        RecordBatch::try_new(self.target.clone(), columns).map_err(|e| e.to_string())
    }

    fn decode_raw(&mut self, bytes: &[u8], expected: usize) -> Result<RecordBatch, String> {
        let result = match self.format {
            TextFormat::Ndjson => self.decode_json(bytes),
            TextFormat::Csv {
                delimiter, quote, ..
            } => self.decode_csv(bytes, expected, delimiter, quote),
        };
        match result {
            Ok(batch) if batch.num_rows() == expected => Ok(batch),
            Ok(batch) => {
                self.json = None;
                Err(match self.format {
                    TextFormat::Ndjson => format!(
                        "the line holds {} JSON values; expected exactly one object per line",
                        batch.num_rows()
                    ),
                    TextFormat::Csv { .. } => format!(
                        "the record holds {} CSV records; expected one",
                        batch.num_rows()
                    ),
                })
            }
            Err(e) => {
                self.json = None;
                Err(e)
            }
        }
    }

    fn decode_json(&mut self, bytes: &[u8]) -> Result<RecordBatch, String> {
        let decoder = match &mut self.json {
            Some(d) => d,
            None => {
                let d = arrow_json::ReaderBuilder::new(self.schema.clone())
                    // Never stop early on a valid block; a line with extra values overflows.
                    .with_batch_size(self.batch_rows + 1)
                    .build_decoder()
                    .map_err(|e| e.to_string())?;
                self.json.insert(d)
            }
        };
        let consumed = decoder.decode(bytes).map_err(|e| json_reason(&e))?;
        if consumed < bytes.len() {
            return Err(
                "the line holds more than one JSON value; expected exactly one object per line"
                    .into(),
            );
        }
        if decoder.has_partial_record() {
            return Err("incomplete JSON: the line ends inside a value".into());
        }
        let batch = decoder.flush().map_err(|e| json_reason(&e))?;
        Ok(batch.unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone())))
    }

    fn decode_csv(
        &mut self,
        bytes: &[u8],
        expected: usize,
        delimiter: u8,
        quote: u8,
    ) -> Result<RecordBatch, String> {
        let mut decoder = arrow_csv::ReaderBuilder::new(self.schema.clone())
            .with_header(false)
            .with_delimiter(delimiter)
            .with_quote(quote)
            .with_batch_size(expected + 1)
            .build_decoder();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = decoder.decode(rest).map_err(|e| csv_reason(&e))?;
            if n == 0 {
                break;
            }
            rest = &rest[n..];
        }
        if !rest.is_empty() {
            return Err("the record holds more than one CSV record".into());
        }
        // The last record's line break was cut off by the splitter.
        decoder.decode(b"\n").map_err(|e| csv_reason(&e))?;
        let batch = decoder.flush().map_err(|e| csv_reason(&e))?;
        Ok(batch.unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone())))
    }

    /// Decode records `lo..hi` of `recs`, splitting ranges that fail.
    fn decode_range(
        &mut self,
        buf: &[u8],
        recs: &[Rec],
        lo: usize,
        hi: usize,
        out: &mut Vec<Piece>,
    ) {
        let bytes = &buf[recs[lo].start..recs[hi - 1].end];
        match self.decode(bytes, hi - lo) {
            Ok(batch) => out.push(Piece::Good(batch)),
            Err(reason) if hi - lo == 1 => out.push(Piece::Bad(lo, reason)),
            Err(_) => {
                let mid = lo + (hi - lo) / 2;
                self.decode_range(buf, recs, lo, mid, out);
                self.decode_range(buf, recs, mid, hi, out);
            }
        }
    }
}

fn json_reason(e: &arrow_schema::ArrowError) -> String {
    let s = e.to_string();
    s.strip_prefix("Json error: ").unwrap_or(&s).to_string()
}

/// arrow-csv numbers lines within the decoded range; the dead letter's locator has the real
/// line, so drop them from the message.
fn csv_reason(e: &arrow_schema::ArrowError) -> String {
    let s = e.to_string();
    let mut s = s
        .strip_prefix("Csv error: ")
        .or_else(|| s.strip_prefix("Parser error: "))
        .unwrap_or(&s)
        .to_string();
    for marker in [" at line ", " for line "] {
        if let Some(i) = s.find(marker) {
            let tail = &s[i + marker.len()..];
            let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
            let rest = &tail[digits..];
            s = format!("{}{}", &s[..i], rest);
        }
    }
    s
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

/// Read a whole text file and report its batches, dead-lettering bad records and, when the
/// content breaks off (corrupt compression, oversized line), the rest of the file.
///
/// Runs on a blocking thread; returns when the file is done or `out` is closed.
pub(crate) fn read_text_file(
    job: &TextJob,
    reader: io::Result<Box<dyn Read + Send>>,
    start: Progress,
    skip: u64,
    out: &mpsc::Sender<FileEvent>,
) {
    let mut state = TextState {
        job,
        decoder: BlockDecoder::new(job.format, job.schema.clone(), job.batch_rows),
        progress: start,
        skip,
        out,
    };
    let mut reader = match reader {
        Ok(r) => r,
        Err(e) => {
            state.fail(e, start.lines);
            return;
        }
    };
    let csv = match job.format {
        TextFormat::Csv { quote, header, .. } => Some((quote, header)),
        TextFormat::Ndjson => None,
    };
    let mut header_pending = csv.is_some_and(|(_, header)| header) && start.offset == 0;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK * 2);
    let mut base = start.offset; // decompressed offset of buf[0]
    let mut scan = 0usize; // next byte to scan for a line break
    let mut rec_start = 0usize; // start of the current, incomplete record
    let mut in_quote = false;
    let mut line = start.lines; // line breaks seen
    let mut rec_line = line + 1; // first line of the current record
    let mut block: Vec<Rec> = Vec::with_capacity(job.batch_rows.min(1 << 16));

    loop {
        let filled = buf.len();
        buf.resize(filled + READ_CHUNK, 0);
        let read = loop {
            match reader.read(&mut buf[filled..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                buf.truncate(filled);
                if !block.is_empty() && !state.emit(&buf, &block, line, base + rec_start as u64) {
                    return;
                }
                state.fail(e, rec_line);
                return;
            }
        };
        buf.truncate(filled + n);
        let eof = n == 0;

        loop {
            // Find the next record boundary.
            let found = match csv {
                None => buf[scan..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map(|i| scan + i),
                Some((quote, _)) => {
                    let mut found = None;
                    for (i, &b) in buf[scan..].iter().enumerate() {
                        if b == quote {
                            in_quote = !in_quote;
                        } else if b == b'\n' {
                            if in_quote {
                                line += 1;
                            } else {
                                found = Some(scan + i);
                                break;
                            }
                        }
                    }
                    found
                }
            };
            let Some(nl) = found else {
                scan = buf.len();
                break;
            };
            scan = nl + 1;
            line += 1;
            let mut end = nl;
            if end > rec_start && buf[end - 1] == b'\r' {
                end -= 1;
            }
            if !is_blank(&buf[rec_start..end]) {
                if header_pending {
                    header_pending = false;
                } else {
                    block.push(Rec {
                        start: rec_start,
                        end,
                        line: rec_line,
                    });
                }
            }
            rec_start = nl + 1;
            rec_line = line + 1;
            if block.len() >= job.batch_rows {
                if !state.emit(&buf, &block, line, base + rec_start as u64) {
                    return;
                }
                block.clear();
            }
        }

        if eof {
            if rec_start < buf.len() {
                let mut end = buf.len();
                if buf[end - 1] == b'\r' {
                    end -= 1;
                }
                if !is_blank(&buf[rec_start..end]) {
                    line += 1;
                    if !header_pending {
                        block.push(Rec {
                            start: rec_start,
                            end,
                            line: rec_line,
                        });
                    }
                }
            }
            let end_offset = base + buf.len() as u64;
            if !block.is_empty() && !state.emit(&buf, &block, line, end_offset) {
                return;
            }
            state.progress.lines = line;
            state.progress.offset = end_offset;
            let _ = out.blocking_send(FileEvent::Done {
                progress: state.progress,
                skip: state.skip,
            });
            return;
        }

        if buf.len() - rec_start > MAX_RECORD_BYTES {
            if !block.is_empty() && !state.emit(&buf, &block, line, base + rec_start as u64) {
                return;
            }
            state.fail(
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "line {rec_line} is longer than {} MiB without a line break",
                        MAX_RECORD_BYTES >> 20
                    ),
                ),
                rec_line,
            );
            return;
        }

        // Drop bytes no pending record needs.
        let keep_from = block.first().map_or(rec_start, |r| r.start);
        if keep_from > 0 {
            buf.drain(..keep_from);
            for r in &mut block {
                r.start -= keep_from;
                r.end -= keep_from;
            }
            rec_start -= keep_from;
            scan -= keep_from;
            base += keep_from as u64;
        }
    }
}

struct TextState<'a> {
    job: &'a TextJob,
    decoder: BlockDecoder,
    progress: Progress,
    skip: u64,
    out: &'a mpsc::Sender<FileEvent>,
}

impl TextState<'_> {
    /// Decode `block`, dead-letter its bad records and send its rows; `lines` and `offset`
    /// are the file's progress after the block. False when the receiver is gone.
    fn emit(&mut self, buf: &[u8], block: &[Rec], lines: u64, offset: u64) -> bool {
        let mut pieces = Vec::with_capacity(1);
        self.decoder
            .decode_range(buf, block, 0, block.len(), &mut pieces);
        let mut good = Vec::with_capacity(pieces.len());
        for piece in pieces {
            match piece {
                Piece::Good(batch) => {
                    let rows = batch.num_rows() as u64;
                    if self.skip >= rows {
                        self.skip -= rows;
                    } else {
                        let from = self.skip as usize;
                        self.skip = 0;
                        good.push(batch.slice(from, batch.num_rows() - from));
                    }
                }
                Piece::Bad(i, reason) => {
                    // Records before the resume point were dead-lettered by the earlier run.
                    if self.skip == 0 {
                        let rec = block[i];
                        self.job.dead_letters.push(
                            DeadLetter::new(
                                self.job.path.clone(),
                                format!("line {}", rec.line),
                                reason,
                            )
                            .with_payload(String::from_utf8_lossy(&buf[rec.start..rec.end])),
                        );
                    }
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
                progress: self.progress,
            })
            .is_ok()
    }

    /// The content cannot be read from line `from_line` on: dead-letter the rest of the file
    /// (or report a store failure).
    fn fail(&mut self, e: io::Error, from_line: u64) {
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
        self.job.dead_letters.push(DeadLetter::new(
            self.job.path.clone(),
            locator,
            format!("the file cannot be read: {e}; the rest of the file is skipped"),
        ));
        let _ = self.out.blocking_send(FileEvent::Done {
            progress: self.progress,
            skip: self.skip,
        });
    }
}

/// Infer a schema from the first `max_records` records of a text file.
pub(crate) fn infer_text_schema(
    reader: io::Result<Box<dyn Read + Send>>,
    format: TextFormat,
    max_records: usize,
) -> Result<SchemaRef, FileError> {
    let classify = |e: io::Error| match e
        .into_inner()
        .map(|b| b.downcast::<super::fetch::StoreReadError>())
    {
        Some(Ok(store)) => FileError::Store(store.0),
        Some(Err(other)) => FileError::Content(other.to_string()),
        None => FileError::Content("unreadable content".into()),
    };
    let reader = reader.map_err(classify)?;
    let tap = ErrorTap {
        inner: reader,
        error: None,
    };
    match format {
        TextFormat::Ndjson => {
            let mut lines = io::BufReader::new(tap);
            let mut values = Vec::new();
            let mut seen = 0;
            let mut line = Vec::new();
            while seen < max_records {
                line.clear();
                match lines.read_until(b'\n', &mut line) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        return Err(match lines.into_inner().error.take() {
                            Some(store) => FileError::Store(store),
                            None => FileError::Content(e.to_string()),
                        });
                    }
                }
                if is_blank(&line) {
                    continue;
                }
                seen += 1;
                // Bad lines are dead-lettered when the file is read; inference skips them.
                if let Ok(value @ serde_json::Value::Object(_)) =
                    serde_json::from_slice::<serde_json::Value>(&line)
                {
                    values.push(value);
                }
            }
            if values.is_empty() {
                return Err(FileError::Content(format!(
                    "no JSON object in its first {seen} non-blank lines to infer a schema from; set `schema`"
                )));
            }
            let schema = arrow_json::reader::infer_json_schema_from_iterator(
                values.iter().map(Ok::<_, arrow_schema::ArrowError>),
            )
            .map_err(|e| FileError::Content(e.to_string()))?;
            Ok(Arc::new(schema))
        }
        TextFormat::Csv {
            header,
            delimiter,
            quote,
        } => {
            let mut tap = tap;
            let result = arrow_csv::reader::Format::default()
                .with_header(header)
                .with_delimiter(delimiter)
                .with_quote(quote)
                .infer_schema(&mut tap, Some(max_records));
            match result {
                Ok((schema, _)) if !schema.fields().is_empty() => {
                    Ok(Arc::new(Schema::new(schema.fields().clone())))
                }
                Ok(_) => Err(FileError::Content(
                    "the file has no columns to infer a schema from; set `schema`".into(),
                )),
                Err(e) => Err(match tap.error.take() {
                    Some(store) => FileError::Store(store),
                    None => FileError::Content(e.to_string()),
                }),
            }
        }
    }
}

/// Remembers a store error passing through, for readers that wrap I/O errors.
struct ErrorTap<R> {
    inner: R,
    error: Option<object_store::Error>,
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
