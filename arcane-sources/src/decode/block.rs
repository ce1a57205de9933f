//! Decoding blocks of NDJSON or CSV records straight into Arrow, isolating bad records.
//!
//! The good case costs one `arrow_json`/`arrow_csv` decode per block of records, directly on
//! the input bytes (no per-row values, no copies). When a block fails, it is split in halves
//! and each half decoded again, down to the single bad records, which the caller
//! dead-letters; the good rows of the block are kept in order. One bad record in a block of
//! `n` costs about `2·log2(n)` extra decodes of shrinking ranges.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};

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

/// A complete record in a buffer: bytes `start..end` (without the line break), starting on
/// line `line` (1-based).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rec {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) line: u64,
}

pub(crate) enum Piece {
    Good(RecordBatch),
    Bad(usize, String),
}

/// Decodes contiguous ranges of records.
pub(crate) struct BlockDecoder {
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
pub(crate) use arcane_core::schema::is_utc;

impl BlockDecoder {
    pub(crate) fn new(format: TextFormat, target: SchemaRef, batch_rows: usize) -> Self {
        Self {
            format,
            schema: decode_schema(&target),
            target,
            batch_rows,
            json: None,
        }
    }

    /// Decode `bytes`, which must hold exactly `expected` records.
    pub(crate) fn decode(&mut self, bytes: &[u8], expected: usize) -> Result<RecordBatch, String> {
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
    pub(crate) fn decode_range(
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
