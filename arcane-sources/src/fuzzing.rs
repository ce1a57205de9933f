//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, off by default; not a
//! public API).
//!
//! Each function takes the fuzzer's bytes, feeds them to a parser of outside input the way
//! the source does, and panics only when something a caller relies on is broken: every input
//! must become rows, dead letters or a typed error. The committed corpora
//! (`fuzz/corpus/<target>/`) are replayed through the same functions by
//! `tests/fuzz_corpus.rs` on the stable toolchain.

use std::io::{self, Read};
use std::sync::{Arc, OnceLock};

use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use serde_json::Value;

use crate::blob_landing::event::{FileEvent, Progress};
use crate::blob_landing::text::{TextFormat, TextJob, infer_text_schema, read_text_file};
use crate::decode::{Decoded, FieldConfig, JsonDecoder, schema_from_fields};
use crate::http_ingest::{DataFormat, ExtensionsFormat, Mode, RowBuilder, parse};
use crate::postgres_cdc::{
    ColumnBuilder, CopyReader, Lsn, Message, Value as PgValue, arrow_type, binary_cast, decode,
};
use crate::rest_api::RestApiSourceConfig;
use crate::rest_api::http::{Response, parse_link_next};
use crate::rest_api::source::{Page, flatten, next_url, page_of};
use crate::rest_api::watermark::{RestApiPosition, Tracker, Verdict};

/// Decompressed bytes a text file may have in the fuzz targets (bounds zstd/gzip bombs; the
/// source itself reads files of any size).
pub const MAX_DECOMPRESSED: u64 = 1 << 20;

/// Records decoded one by one as well (the oracle of [`ndjson_decoder`]).
const MAX_SINGLE_DECODES: usize = 64;

/// A schema of `(name, type, required)` columns, as a spec's `schema` declares them.
fn fuzz_schema(fields: &[(&str, &str, bool)]) -> SchemaRef {
    let fields: Vec<FieldConfig> = fields
        .iter()
        .map(|(name, data_type, required)| {
            let f = FieldConfig::new(*name, *data_type);
            if *required { f.required() } else { f }
        })
        .collect();
    schema_from_fields(&fields, "schema").unwrap_or_else(|e| {
        unreachable!("the fuzz schemas are valid: {e}");
    })
}

/// The schemas [`ndjson_decoder`] picks from: every scalar type of a spec's `schema`, required
/// and nullable columns, and nested structs and lists (as inferred from JSON files).
pub fn schemas() -> &'static [SchemaRef] {
    static SCHEMAS: OnceLock<Vec<SchemaRef>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let item = |t: DataType| Arc::new(Field::new_list_field(t, true));
        let point = Fields::from(vec![
            Field::new("x", DataType::Float64, true),
            Field::new("label", DataType::Utf8, true),
        ]);
        vec![
            fuzz_schema(&[
                ("id", "int64", true),
                ("name", "utf8", false),
                ("amount", "float64", false),
                ("ok", "bool", false),
            ]),
            fuzz_schema(&[
                ("at", "timestamp[ms, UTC]", false),
                ("local", "timestamp[us]", false),
                ("day", "date32", false),
                ("shifted", "timestamp[s, +01:00]", false),
            ]),
            fuzz_schema(&[
                ("small", "int8", false),
                ("count", "uint64", true),
                ("n", "int32", false),
                ("price", "decimal128(10, 2)", false),
                ("ratio", "float32", false),
            ]),
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("point", DataType::Struct(point.clone()), true),
                Field::new("tags", DataType::List(item(DataType::Utf8)), true),
                Field::new(
                    "points",
                    DataType::List(item(DataType::Struct(point))),
                    true,
                ),
            ])),
        ]
    })
}

/// Check what a caller of [`JsonDecoder::decode`] relies on: the batch has the schema, every
/// record is either a row or rejected with a reason (in order), and required columns hold no
/// nulls.
pub fn check_decoded(schema: &SchemaRef, records: usize, out: &Decoded) {
    assert_eq!(
        out.batch.schema(),
        *schema,
        "the batch has the decoder's schema"
    );
    assert_eq!(
        out.batch.num_rows() + out.rejected.len(),
        records,
        "every record is a row or rejected: {:?}",
        out.rejected
    );
    for pair in out.rejected.windows(2) {
        assert!(pair[0].0 < pair[1].0, "rejections in input order");
    }
    for (i, reason) in &out.rejected {
        assert!(*i < records, "rejected index {i} is a record");
        assert!(!reason.is_empty(), "record {i} is rejected with a reason");
    }
    check_required(&out.batch);
}

fn check_required(batch: &RecordBatch) {
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if !field.is_nullable() {
            assert_eq!(
                column.null_count(),
                0,
                "required column {:?} holds no nulls",
                field.name()
            );
        }
    }
}

/// NDJSON records through [`JsonDecoder`]: byte 0 picks one of [`schemas`], the rest are
/// records (one per line). The records decoded together give the same rows and rejections as
/// each decoded alone.
pub fn ndjson_decoder(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let schemas = schemas();
    let schema = &schemas[usize::from(selector) % schemas.len()];
    let records: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    let mut decoder = JsonDecoder::new(schema.clone());
    let out = decoder.decode(&records);
    check_decoded(schema, records.len(), &out);
    let mut rejected = out.rejected.iter().map(|(i, _)| *i).peekable();
    let mut row = 0;
    for (i, record) in records.iter().enumerate().take(MAX_SINGLE_DECODES) {
        let alone = decoder.decode(std::slice::from_ref(record));
        check_decoded(schema, 1, &alone);
        let was_rejected = rejected.next_if_eq(&i).is_some();
        assert_eq!(
            alone.rejected.len() == 1,
            was_rejected,
            "record {i} is rejected alone iff among the others: {:?} / {:?}",
            alone.rejected,
            out.rejected
        );
        if !was_rejected {
            assert_eq!(
                alone.batch,
                out.batch.slice(row, 1),
                "record {i} decodes to the same row alone"
            );
            row += 1;
        }
    }
}

/// The schemas [`ndjson_fast`] and [`csv_fast`] pick from: every scalar type the fast paths
/// read (signed and unsigned integers of every width, floats, booleans, strings, timestamps
/// of every unit with and without zones, dates), required and nullable columns, and more
/// columns than they search in order.
pub fn fast_schemas() -> &'static [SchemaRef] {
    static SCHEMAS: OnceLock<Vec<SchemaRef>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let wide: Vec<(String, &str)> = (0..20).map(|i| (format!("c{i}"), "int32")).collect();
        let wide: Vec<(&str, &str, bool)> =
            wide.iter().map(|(n, t)| (n.as_str(), *t, false)).collect();
        vec![
            fuzz_schema(&[
                ("id", "int64", true),
                ("name", "utf8", false),
                ("amount", "float64", false),
                ("ok", "bool", false),
            ]),
            fuzz_schema(&[
                ("at", "timestamp[ms, UTC]", false),
                ("local", "timestamp[us]", false),
                ("day", "date32", false),
                ("shifted", "timestamp[s, +01:00]", false),
                ("nanos", "timestamp[ns, UTC]", false),
            ]),
            fuzz_schema(&[
                ("small", "int8", false),
                ("count", "uint64", true),
                ("n", "int32", false),
                ("s", "int16", false),
                ("b", "uint8", false),
                ("w", "uint16", false),
                ("u", "uint32", false),
                ("ratio", "float32", false),
                ("text", "large_utf8", false),
            ]),
            fuzz_schema(&wide),
        ]
    })
}

/// The schemas of nested columns [`ndjson_fast`] also picks from: the landing benchmark's
/// `nested` shape, and required fields in nullable structs, required items, lists of lists.
pub fn nested_fast_schemas() -> &'static [SchemaRef] {
    static SCHEMAS: OnceLock<Vec<SchemaRef>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        vec![
            fuzz_schema(&[
                ("id", "int64", true),
                (
                    "user",
                    r#"Struct("name": Utf8, "age": Int64, "tags": List(Utf8))"#,
                    false,
                ),
                (
                    "items",
                    r#"List(Struct("sku": Utf8, "qty": Int64, "price": Float64))"#,
                    false,
                ),
                ("meta", r#"Struct("a": Boolean, "b": Utf8)"#, false),
            ]),
            fuzz_schema(&[
                (
                    "s",
                    r#"Struct("a": non-null Int32, "t": non-null Struct("x": Float64, "l": List(non-null Int64)), "d": Date32)"#,
                    false,
                ),
                ("r", r#"Struct("k": non-null Boolean, "u": UInt8)"#, true),
                ("ll", "LargeList(List(Int8))", false),
                (
                    "ls",
                    r#"List(non-null Struct("v": non-null Utf8, "w": LargeUtf8))"#,
                    false,
                ),
            ]),
        ]
    })
}

/// Records through the NDJSON fast path of the blob-landing and JSON decoders
/// (`decode/fast.rs`) and through their `arrow_json` path: byte 0 picks one of
/// [`fast_schemas`] and [`nested_fast_schemas`] and whether numbers and booleans are read into
/// string columns, the rest
/// are records (one per line). Whatever the fast path reads — each record alone, and all of
/// them as one block — the `arrow_json` path reads to the same batch; and decoding with the
/// fast path on gives what decoding with it off gives (rows, dead letters, reasons).
pub fn ndjson_fast(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (flat, nested) = (fast_schemas(), nested_fast_schemas());
    let pick = usize::from(selector & 0x7f) % (flat.len() + nested.len());
    let schema = flat.get(pick).unwrap_or_else(|| &nested[pick - flat.len()]);
    text_fast(
        crate::decode::block::TextFormat::Ndjson,
        schema,
        selector & 0x80 != 0,
        rest,
    );
}

/// Records through the CSV fast path of the blob-landing decoder (`decode/csv_fast.rs`) and
/// through its `arrow_csv` path: byte 0 picks one of [`fast_schemas`] and the delimiter
/// (`,`, `;`, tab or `|`), the rest are records (one per line). Whatever the fast path reads
/// — each record alone, and all of them as one block — the `arrow_csv` path reads to the same
/// batch; and decoding with the fast path on gives what decoding with it off gives (rows,
/// dead letters, reasons).
pub fn csv_fast(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let schemas = fast_schemas();
    let schema = &schemas[usize::from(selector) % schemas.len()];
    let delimiter = [b',', b';', b'\t', b'|'][usize::from(selector >> 6)];
    let format = crate::decode::block::TextFormat::Csv {
        header: false,
        delimiter,
        quote: b'"',
    };
    text_fast(format, schema, false, rest);
}

/// The fast path of `format` against its general path on the lines of `data` (see
/// [`ndjson_fast`] and [`csv_fast`]).
fn text_fast(
    format: crate::decode::block::TextFormat,
    schema: &SchemaRef,
    coerce: bool,
    rest: &[u8],
) {
    use crate::decode::block::{BlockDecoder, Piece, Rec};
    let mut recs = Vec::new();
    let mut start = 0;
    for (i, line) in rest.split(|&b| b == b'\n').enumerate() {
        recs.push(Rec {
            start,
            end: start + line.len(),
            line: i as u64 + 1,
        });
        start += line.len() + 1;
    }
    let new = |fast: bool| {
        BlockDecoder::new(format, schema.clone(), recs.len().max(1))
            .with_coerce_primitive(coerce)
            .with_fast(fast)
    };
    let mut fast = new(true);
    let mut slow = new(false);
    assert!(fast.has_fast(), "the fuzz schemas have a fast path");
    let mut ranges: Vec<&[Rec]> = recs.chunks(1).take(MAX_SINGLE_DECODES).collect();
    ranges.push(&recs);
    for range in ranges {
        let Ok(batch) = fast.decode_fast(rest, range) else {
            continue;
        };
        match slow.decode(rest, range) {
            Ok(expected) => {
                assert_eq!(batch.schema(), expected.schema(), "the same schema");
                assert_eq!(
                    batch, expected,
                    "the fast path reads as the general path reads"
                );
            }
            Err(reason) => panic!("the fast path read a block the general path rejects: {reason}"),
        }
        check_required(&batch);
    }
    let pieces = |d: &mut BlockDecoder| {
        let mut out = Vec::new();
        d.decode_range(rest, &recs, 0, recs.len(), &mut out);
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for piece in out {
            match piece {
                Piece::Good(batch) => good.push(batch),
                Piece::Bad(at, reason) => bad.push((at, reason)),
            }
        }
        let rows = arrow_select::concat::concat_batches(schema, &good)
            .unwrap_or_else(|e| panic!("batches of one schema concatenate: {e}"));
        (rows, bad)
    };
    assert_eq!(
        pieces(&mut fast),
        pieces(&mut slow),
        "the same rows and dead letters with the fast path on and off"
    );
}

/// The text-file schema of [`blob_text`] when it does not infer one.
fn text_schema(format: TextFormat) -> SchemaRef {
    static SCHEMAS: OnceLock<(SchemaRef, SchemaRef)> = OnceLock::new();
    let (ndjson, csv) = SCHEMAS.get_or_init(|| {
        let fields = [
            FieldConfig::new("id", "int64").required(),
            FieldConfig::new("name", "utf8"),
            FieldConfig::new("amount", "float64"),
            FieldConfig::new("ok", "bool"),
            FieldConfig::new("at", "timestamp[ms, UTC]"),
        ];
        let schema = schema_from_fields(&fields, "schema")
            .unwrap_or_else(|e| unreachable!("the fuzz schema is valid: {e}"));
        (schema.clone(), schema)
    });
    match format {
        TextFormat::Ndjson => ndjson.clone(),
        TextFormat::Csv { .. } => csv.clone(),
    }
}

/// `content` decompressed as a landing file named `*.gz` (`1`) or `*.zst` (`2`) is, else as
/// it is; at most [`MAX_DECOMPRESSED`] bytes.
fn decompressed(content: &[u8], compression: u8) -> io::Result<Box<dyn Read + Send>> {
    let raw = io::Cursor::new(content.to_vec());
    Ok(match compression {
        1 => Box::new(
            flate2::read::MultiGzDecoder::new(io::BufReader::new(raw)).take(MAX_DECOMPRESSED),
        ),
        2 => Box::new(zstd::stream::read::Decoder::new(raw)?.take(MAX_DECOMPRESSED)),
        _ => Box::new(raw.take(MAX_DECOMPRESSED)),
    })
}

/// Schema inference of a landing text file against its reference. Byte 0, bit 0: CSV (else
/// NDJSON). CSV: bit 1 a header, bits 2–3 the delimiter (`,`, `;`, tab, `|`), bit 4 at most
/// byte 1 records; inferred here and by `arrow_csv`: the same schema and count, or the same
/// error. NDJSON: bits 1–2 the threads (1–4), bits 3–7 the block size (1 + 37 × n bytes);
/// the fields `arrow_json` infers from every line parsed whole, and every non-blank line
/// counted.
pub fn text_infer(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        let delimiter = [b',', b';', b'\t', b'|'][usize::from((mode >> 2) & 3)];
        let (max, text) = if mode & 0x10 != 0 {
            match rest.split_first() {
                Some((&n, text)) => (Some(usize::from(n)), text),
                None => return,
            }
        } else {
            (None, rest)
        };
        crate::blob_landing::infer_csv::csv_inference_agrees(text, mode & 2 != 0, delimiter, max);
    } else {
        let threads = 1 + usize::from((mode >> 1) & 3);
        let block = 1 + 37 * usize::from(mode >> 3);
        crate::blob_landing::text::ndjson_inference_agrees(rest, threads, block);
    }
}

/// A landing text file read as the blob-landing source reads it (framing, blocks, decode
/// threads, dead letters, progress). Byte 0 chooses: bits 0–1 the format (NDJSON, CSV with a
/// header, CSV without), bits 2–3 the compression (none, gzip, zstd), bit 4 two decode
/// threads, bits 5–6 `batchRows` (1–4), bit 7 an inferred schema; the rest is the file.
pub fn blob_text(data: &[u8]) {
    let Some((&mode, content)) = data.split_first() else {
        return;
    };
    let format = match mode & 3 {
        1 | 2 => TextFormat::Csv {
            header: mode & 3 == 1,
            delimiter: b',',
            quote: b'"',
        },
        _ => TextFormat::Ndjson,
    };
    let compression = (mode >> 2) & 3;
    let (schema, inferred) = if mode & 0x80 != 0 {
        match infer_text_schema(|| decompressed(content, compression), format, Some(100), 1) {
            Ok(inferred) => (inferred.schema, true),
            Err(_) => return,
        }
    } else {
        (text_schema(format), false)
    };
    let job = TextJob {
        path: "fuzz".into(),
        origin: "fuzz".into(),
        format,
        schema: schema.clone(),
        batch_rows: 1 + usize::from((mode >> 5) & 3),
        decode_threads: if mode & 0x10 != 0 { 2 } else { 1 },
        coerce_primitive: inferred,
        kept: Default::default(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let events = std::thread::scope(|scope| {
        let job = &job;
        scope.spawn(move || {
            read_text_file(
                job,
                decompressed(content, compression),
                Progress::default(),
                &tx,
            );
        });
        let mut events = Vec::new();
        while let Some(event) = rx.blocking_recv() {
            events.push(event);
        }
        events
    });
    // The whole decompressed content, to compare the final progress with.
    let mut whole = Vec::new();
    let read_whole = decompressed(content, compression).and_then(|mut r| r.read_to_end(&mut whole));
    let mut progress = Progress::default();
    let mut done = false;
    let mut rows = Vec::new();
    let mut bad_lines = Vec::new();
    let mut complete = false;
    for event in events {
        assert!(!done, "nothing follows the end of the file");
        match event {
            FileEvent::Batch {
                batch,
                dead_letters,
                progress: p,
            } => {
                assert_eq!(batch.schema(), schema, "batches have the stream's schema");
                check_required(&batch);
                assert_eq!(
                    p.records - progress.records,
                    (batch.num_rows() + dead_letters.len()) as u64,
                    "every record of a block is a row or a dead letter"
                );
                assert!(p.lines >= progress.lines && p.offset >= progress.offset);
                for letter in &dead_letters {
                    let line = letter
                        .locator
                        .strip_prefix("line ")
                        .and_then(|l| l.parse::<u64>().ok());
                    assert!(line.is_some(), "{letter:?}");
                    bad_lines.extend(line);
                }
                rows.push(batch);
                progress = p;
            }
            FileEvent::Done {
                progress: p,
                dead_letters,
            } => {
                assert!(p.records >= progress.records && p.offset >= progress.offset);
                if dead_letters.is_empty() && read_whole.is_ok() {
                    assert_eq!(p.offset, whole.len() as u64, "the whole file is consumed");
                    if format == TextFormat::Ndjson {
                        let records = whole
                            .split(|&b| b == b'\n')
                            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                            .count();
                        assert_eq!(p.records, records as u64, "every line is a record");
                    }
                    complete = true;
                }
                done = true;
            }
            FileEvent::Store(e) => panic!("no store is involved: {e}"),
            FileEvent::Failed(e) => panic!("an internal failure: {e}"),
        }
    }
    assert!(done, "the end of the file is reported");
    if complete && format == TextFormat::Ndjson && !inferred {
        same_rows_as_line_by_line(&schema, &whole, &rows, &bad_lines);
    }
}

/// The rows and dead letters of an NDJSON file read in blocks are those of its lines decoded
/// one by one: no row is taken from, or shifted to, another line.
fn same_rows_as_line_by_line(
    schema: &SchemaRef,
    whole: &[u8],
    rows: &[RecordBatch],
    bad_lines: &[u64],
) {
    let mut decoder = JsonDecoder::new(schema.clone());
    let mut expected_rows = Vec::new();
    let mut expected_bad = Vec::new();
    for (i, line) in whole.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let out = decoder.decode(&[line]);
        if out.rejected.is_empty() {
            expected_rows.push(out.batch);
        } else {
            expected_bad.push(i as u64 + 1);
        }
    }
    assert_eq!(bad_lines, expected_bad, "the same lines are dead-lettered");
    let concat = |batches: &[RecordBatch]| {
        arrow_select::concat::concat_batches(schema, batches).map_err(|e| e.to_string())
    };
    assert_eq!(concat(rows), concat(&expected_rows), "the same rows");
}

/// PostgreSQL types whose text values [`pgoutput`] parses: every type of
/// [`SUPPORTED_TYPES`](crate::postgres_cdc::SUPPORTED_TYPES), as (OID, typmod).
const PG_TYPES: [(u32, i32); 14] = [
    (16, -1),
    (21, -1),
    (23, -1),
    (20, -1),
    (700, -1),
    (701, -1),
    (1700, ((10 << 16) | 2) + 4),
    (1700, -1),
    (25, -1),
    (17, -1),
    (1082, -1),
    (1083, -1),
    (1114, -1),
    (1184, -1),
];

/// One text value parsed as a column of PostgreSQL type `oid`/`typmod` would be.
fn pg_value(oid: u32, typmod: i32, text: &str) {
    let Some(data_type) = arrow_type(oid, typmod) else {
        return;
    };
    let mut column = ColumnBuilder::new(&data_type);
    let parsed = column.append_text(text);
    if let Err(reason) = &parsed {
        assert!(reason.contains("is not a valid"), "{reason}");
    }
    column.append_null();
    let array = column.finish();
    assert_eq!(array.data_type(), &data_type);
    assert_eq!(array.len(), usize::from(parsed.is_ok()) + 1);
}

/// A `pgoutput` message from the replication stream, or a text value of a column. Byte 0
/// even: the rest is a message; its relation's column types are mapped and its tuple values
/// parsed (value `i` as the `i`-th type of `PG_TYPES`). Odd: byte 1 picks a type, the rest
/// is a text value (also parsed as an LSN).
pub fn pgoutput(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        let Some((&ty, value)) = rest.split_first() else {
            return;
        };
        let Ok(text) = std::str::from_utf8(value) else {
            return;
        };
        let (oid, typmod) = PG_TYPES[usize::from(ty) % PG_TYPES.len()];
        pg_value(oid, typmod, text);
        if let Some(lsn) = Lsn::parse(text) {
            assert_eq!(Lsn::parse(&lsn.to_string()), Some(lsn), "LSNs round-trip");
        }
        return;
    }
    let Ok(message) = decode(rest) else {
        return;
    };
    let tuples: Vec<&Vec<PgValue<'_>>> = match &message {
        Message::Relation { columns, .. } => {
            for c in columns {
                if let Some(data_type) = arrow_type(c.type_oid, c.typmod) {
                    let mut column = ColumnBuilder::new(&data_type);
                    column.append_null();
                    assert_eq!(column.finish().data_type(), &data_type);
                }
            }
            return;
        }
        Message::Insert { new, .. } => vec![new],
        Message::Update { old, new, .. } => old.iter().chain([new]).collect(),
        Message::Delete { old, .. } => vec![old],
        _ => return,
    };
    for tuple in tuples {
        for (i, value) in tuple.iter().enumerate() {
            if let PgValue::Text(text) = value {
                let (oid, typmod) = PG_TYPES[i % PG_TYPES.len()];
                pg_value(oid, typmod, text);
            }
        }
    }
}

/// The REST source configurations [`rest_response`] picks from: each pagination kind, each
/// watermark type, JSON pointers and top-level fields, flattening.
pub fn rest_configs() -> &'static [(RestApiSourceConfig, SchemaRef)] {
    static CONFIGS: OnceLock<Vec<(RestApiSourceConfig, SchemaRef)>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let schema = r#"[{"name": "id", "type": "int64", "nullable": false},
            {"name": "updated", "type": "timestamp[ms, UTC]"}, {"name": "name", "type": "utf8"},
            {"name": "meta_version", "type": "float64"}]"#;
        [
            r#""recordsPointer": "/data", "pagination": {"type": "cursor", "cursorPointer": "/meta/next"},
               "watermark": {"field": "updated", "idField": "id"}"#,
            r#""pagination": {"type": "linkHeader"}, "flattenNested": true,
               "watermark": {"field": "/meta/version", "type": "number", "start": 0}"#,
            r#""recordsPointer": "/results", "pagination": {"type": "nextUrl", "pointer": "/next"},
               "watermark": {"field": "name", "type": "string", "idField": "/id"}"#,
            r#""recordsPointer": "/items", "pagination": {"type": "pageNumber", "start": 1}"#,
            r##""recordsPointer": "/a/0/b", "pagination": {"type": "offset", "limit": 50},
               "flattenNested": true, "flattenSeparator": ".""##,
            r#""watermark": {"field": "updated", "start": "2026-01-01T00:00:00Z"}"#,
        ]
        .iter()
        .map(|extra| {
            let text = format!(
                r#"{{"url": "http://api.test/v1/items?q=1", "schema": {schema}, {extra}}}"#
            );
            let config: RestApiSourceConfig = serde_json::from_str(&text)
                .unwrap_or_else(|e| unreachable!("the fuzz configs are valid: {e}: {text}"));
            let schema = schema_from_fields(&config.schema, "schema")
                .unwrap_or_else(|e| unreachable!("the fuzz schema is valid: {e}"));
            (config, schema)
        })
        .collect()
    })
}

/// A REST response page as the rest-api source reads it: records at `recordsPointer`, the
/// next page (cursor, next URL, `Link` header, page number, offset), the watermark tracker
/// over the records (and resumed from its position), flattening and decoding. Byte 0 picks
/// one of [`rest_configs`] (low bits) and the page number (high bits); the rest is a `Link`
/// header line and the JSON body.
pub fn rest_response(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let configs = rest_configs();
    let (config, schema) = &configs[usize::from(mode & 7) % configs.len()];
    let (link, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let resp = Response {
        status: reqwest::StatusCode::OK,
        link_next: std::str::from_utf8(link).ok().and_then(parse_link_next),
        body,
    };
    let Ok(url) = url::Url::parse(&config.url) else {
        unreachable!("the fuzz URLs are valid");
    };
    let page = 1 + u64::from(mode >> 3);
    let mut offset = 0;
    let Ok(Page {
        records,
        next,
        next_url: next_page,
    }) = page_of(config, "fuzz", &url, &resp, page, &mut offset)
    else {
        return;
    };
    if let (Some(next), Some(next_page)) = (&next, &next_page) {
        // A restart inside the pass rebuilds the next page from the position.
        let kept: Value = serde_json::from_str(&next.to_string()).unwrap_or(Value::Null);
        let rebuilt = next_url(config, "fuzz", &url, &kept).ok();
        assert_eq!(
            rebuilt.as_ref(),
            Some(next_page),
            "the next page survives a restart"
        );
        assert_ne!(next_page, &url, "the next page is another page");
    }
    let tracker = |position: Option<&RestApiPosition>| {
        config.watermark.as_ref().map(|w| {
            Tracker::new(
                w.kind,
                w.field.clone(),
                w.id_field.clone(),
                false,
                position,
                w.start.as_ref(),
            )
        })
    };
    let mut watermark = tracker(None);
    let mut taken = Vec::new();
    for record in records {
        if let Some(t) = &mut watermark
            && t.consume(record) != Verdict::Take
        {
            continue;
        }
        let record = if config.flatten_nested && record.is_object() {
            flatten(record, &config.flatten_separator)
        } else {
            record.clone()
        };
        if let Ok(bytes) = serde_json::to_vec(&record) {
            taken.push(bytes);
        }
    }
    if let Some(t) = &mut watermark {
        t.complete_pass();
        // The position is stored in the manifest and read back on a restart.
        let position = t.position();
        let stored = arcane_core::Position::encode(&position)
            .and_then(|p| p.decode::<RestApiPosition>("fuzz"));
        assert_eq!(
            stored.as_ref().ok(),
            Some(&position),
            "the position round-trips"
        );
        if let Some(mut again) = tracker(Some(&position)) {
            for record in records {
                let _ = again.consume(record);
            }
        }
    }
    let out = JsonDecoder::new(schema.clone()).decode(&taken);
    check_decoded(schema, taken.len(), &out);
}

/// The types a snapshot page's columns come in ([`binary_cast`] maps each to the cast it
/// reads): every builder of [`ColumnBuilder`].
fn copy_types() -> Vec<DataType> {
    vec![
        DataType::Boolean,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Float32,
        DataType::Float64,
        DataType::Decimal128(12, 2),
        DataType::Utf8,
        DataType::Binary,
        DataType::Date32,
        DataType::Time64(arrow_schema::TimeUnit::Microsecond),
        DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, None),
        DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some("UTC".into())),
        DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true))),
    ]
}

/// A snapshot page's binary `COPY` data (`postgres_cdc/copy.rs`), fed in chunks of 1 to 16
/// bytes (byte 0), each tuple's fields appended as the snapshot does, field `i` to a column
/// of type `copy_types()[(byte 1 + i) % n]` (`ColumnBuilder::append_binary`). A malformed
/// stream is an error; a value that does not fit is refused and nothing is appended; every
/// column ends with one value per tuple.
pub fn copy_binary(data: &[u8]) {
    let [chunk, first, rest @ ..] = data else {
        return;
    };
    let types = copy_types();
    let mut columns: Vec<ColumnBuilder> = Vec::new();
    let mut reader = CopyReader::default();
    let mut tuples = 0usize;
    for piece in rest.chunks(usize::from(chunk % 16) + 1) {
        reader.push(bytes::Bytes::copy_from_slice(piece));
        while let Ok(true) = reader.next_tuple() {
            while columns.len() < reader.len() {
                let t = &types[(usize::from(*first) + columns.len()) % types.len()];
                assert!(!binary_cast(t).is_empty());
                let mut column = ColumnBuilder::new(t);
                for _ in 0..tuples {
                    column.append_null();
                }
                columns.push(column);
            }
            for (i, column) in columns.iter_mut().enumerate() {
                match reader.field(i) {
                    Some(value) if column.append_binary(value).is_ok() => {}
                    _ => column.append_null(),
                }
            }
            tuples += 1;
        }
    }
    let _ = reader.finish();
    for (i, mut column) in columns.into_iter().enumerate() {
        let array = column.finish();
        let t = &types[(usize::from(*first) + i) % types.len()];
        assert_eq!(array.data_type(), t);
        assert_eq!(array.len(), tuples, "one value per tuple in column {i}");
    }
}

/// An HTTP request to the http-ingest endpoint (`http_ingest/event.rs`, `rows.rs`): byte 0
/// picks the Content-Type (structured, batch, binary with `ce-*` headers, JSON, NDJSON, or the
/// rest as one) and the rows' settings; the rest is `Header: value` lines, an empty line, then
/// the body. The events are read as the server reads them and turned into rows of three specs
/// (data as JSON, data decoded into a schema, extensions as a map): every event is a row or
/// rejected with its index and a reason, and rows carry their `(source, id)`.
pub fn cloudevents(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&rest[..at], &rest[at + 2..]),
        None => (&rest[..0], rest),
    };
    let mut headers = hyper::HeaderMap::new();
    let content_type = match pick % 6 {
        0 => Some("application/cloudevents+json"),
        1 => Some("application/cloudevents-batch+json; charset=utf-8"),
        2 => {
            headers.insert(
                "ce-specversion",
                hyper::header::HeaderValue::from_static("1.0"),
            );
            Some("application/json")
        }
        3 => Some("application/json"),
        4 => Some("application/x-ndjson"),
        _ => None,
    };
    if let Some(t) = content_type {
        headers.insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(t),
        );
    }
    for line in head.split(|b| *b == b'\n') {
        let text = String::from_utf8_lossy(line);
        let Some((name, value)) = text.split_once(':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.trim().as_bytes()),
            hyper::header::HeaderValue::from_str(value.trim()),
        ) {
            headers.append(name, value);
        }
    }
    let Ok(mode) = Mode::of(&headers) else {
        return;
    };
    let parsed = parse(mode, &headers, body, "idempotency-key");
    let total = parsed.events.len();
    for (i, e) in parsed.events.iter().enumerate() {
        if let Err(bad) = e {
            assert!(
                bad.index == i || total == 1,
                "event {i} rejected as {}",
                bad.index
            );
            assert!(!bad.reason.is_empty());
        }
    }
    let schema = [
        FieldConfig::new("n", "int64").required(),
        FieldConfig::new("via", "utf8"),
    ];
    let builders = [
        RowBuilder::new(
            DataFormat::Json,
            ExtensionsFormat::Json,
            None,
            "spec.source",
        ),
        RowBuilder::new(
            DataFormat::Columns,
            ExtensionsFormat::Json,
            Some(&schema),
            "spec.source",
        ),
        RowBuilder::new(DataFormat::Json, ExtensionsFormat::Map, None, "spec.source"),
    ];
    let config = usize::from(pick / 6) % builders.len();
    let Ok(builder) = &builders[config] else {
        unreachable!("the fuzz specs are valid");
    };
    let Ok(rows) = builder.build(parsed.events) else {
        return;
    };
    assert_eq!(rows.batch.num_rows() + rows.invalid.len(), total);
    assert_eq!(rows.ids.len(), rows.batch.num_rows());
    assert_eq!(rows.batch.schema(), *builder.schema());
}
