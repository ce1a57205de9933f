//! A small Avro Object Container File encoder and decoder: what Iceberg manifests and
//! manifest lists need, nothing more (no `apache-avro` dependency, which pulls older arrow
//! releases through the `iceberg` crate's tree).
//!
//! Encoding follows the Avro 1.11 specification: `int`/`long` as zigzag varints, `string` and
//! `bytes` as a length and the bytes, arrays as blocks (a count, the items, a zero count),
//! unions as the branch index and the value. A file is the magic `Obj\x01`, a metadata map
//! (`avro.schema`, `avro.codec` and the caller's keys), a random 16-byte sync marker, then
//! blocks of records each followed by the marker. The decoder reads files of any writer whose
//! codec is `null` or `deflate` (what pyiceberg and Iceberg Java write), guided by the schema
//! in the file's header.

use std::collections::HashMap;
use std::io::Read;

use serde_json::Value;

/// The magic bytes that open an Avro Object Container File.
pub const MAGIC: &[u8; 4] = b"Obj\x01";

/// Append `n` as a zigzag varint (Avro `int` and `long`).
pub fn write_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

/// Append an Avro `bytes` value: its length, then the bytes.
pub fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// Append an Avro `string` value (UTF-8, length-prefixed).
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    write_bytes(out, s.as_bytes());
}

/// Append an Avro `boolean`.
pub fn write_bool(out: &mut Vec<u8>, b: bool) {
    out.push(u8::from(b));
}

/// Append the branch index of a `["null", T]` union: 0 for null, 1 for a value (which the
/// caller appends next).
pub fn write_union_branch(out: &mut Vec<u8>, present: bool) {
    write_long(out, i64::from(present));
}

/// Append an array of `items` encoded by `each` as one block (none when empty) and the
/// terminating zero count.
pub fn write_array<T>(out: &mut Vec<u8>, items: &[T], mut each: impl FnMut(&mut Vec<u8>, &T)) {
    if !items.is_empty() {
        write_long(out, items.len() as i64);
        for i in items {
            each(out, i);
        }
    }
    write_long(out, 0);
}

/// An Object Container File being written: the header is written first, records are
/// appended already encoded, [`finish`](Self::finish) writes them as one block.
#[derive(Debug)]
pub struct ContainerWriter {
    out: Vec<u8>,
    block: Vec<u8>,
    count: i64,
    sync: [u8; 16],
}

impl ContainerWriter {
    /// A file with writer schema `schema` (JSON), codec `null` and the extra `metadata`.
    pub fn new(schema: &str, metadata: &[(&str, String)]) -> Self {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(MAGIC);
        let mut entries: Vec<(&str, &[u8])> =
            vec![("avro.schema", schema.as_bytes()), ("avro.codec", b"null")];
        entries.extend(metadata.iter().map(|(k, v)| (*k, v.as_bytes())));
        write_long(&mut out, entries.len() as i64);
        for (k, v) in entries {
            write_string(&mut out, k);
            write_bytes(&mut out, v);
        }
        write_long(&mut out, 0);
        let sync = *uuid::Uuid::new_v4().as_bytes();
        out.extend_from_slice(&sync);
        Self {
            out,
            block: Vec::new(),
            count: 0,
            sync,
        }
    }

    /// Append one record, encoded by `encode` into the block buffer.
    pub fn append(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        encode(&mut self.block);
        self.count += 1;
    }

    /// The whole file.
    pub fn finish(mut self) -> Vec<u8> {
        if self.count > 0 {
            write_long(&mut self.out, self.count);
            write_long(&mut self.out, self.block.len() as i64);
            self.out.extend_from_slice(&self.block);
            self.out.extend_from_slice(&self.sync);
        }
        self.out
    }
}

/// A decoded Avro value.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    /// `null`.
    Null,
    /// `boolean`.
    Bool(bool),
    /// `int` or `long`.
    Long(i64),
    /// `float` or `double`.
    Double(f64),
    /// `bytes` or `fixed`.
    Bytes(Vec<u8>),
    /// `string` or an `enum` symbol.
    Str(String),
    /// A record: its fields with their Iceberg `field-id` (when the schema has one).
    Record(Vec<(String, Option<i64>, Datum)>),
    /// An array.
    Array(Vec<Datum>),
    /// A map.
    Map(Vec<(String, Datum)>),
}

impl Datum {
    /// The field with Iceberg field id `id` of a record.
    pub fn field(&self, id: i64) -> Option<&Datum> {
        match self {
            Datum::Record(fields) => fields
                .iter()
                .find(|(_, fid, _)| *fid == Some(id))
                .map(|(_, _, d)| d),
            _ => None,
        }
    }

    /// The value as an integer (`int`/`long`), `None` for null or another type.
    pub fn as_long(&self) -> Option<i64> {
        match self {
            Datum::Long(n) => Some(*n),
            _ => None,
        }
    }
}

/// A decoded Object Container File.
#[derive(Debug)]
pub struct Container {
    /// The header's metadata (`avro.schema`, `avro.codec` and the writer's keys).
    pub metadata: HashMap<String, Vec<u8>>,
    /// The records.
    pub records: Vec<Datum>,
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

type DecodeResult<T> = Result<T, String>;

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }
    fn take(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| format!("truncated at byte {} (wanted {n} more)", self.at))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn long(&mut self) -> DecodeResult<i64> {
        let mut z: u64 = 0;
        let mut shift = 0;
        loop {
            let b = *self
                .buf
                .get(self.at)
                .ok_or_else(|| format!("truncated varint at byte {}", self.at))?;
            self.at += 1;
            if shift >= 64 {
                return Err(format!("varint longer than 10 bytes at byte {}", self.at));
            }
            z |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        Ok((z >> 1) as i64 ^ -((z & 1) as i64))
    }
    fn len(&mut self) -> DecodeResult<usize> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| format!("negative length {n} at byte {}", self.at))
    }
    fn bytes(&mut self) -> DecodeResult<Vec<u8>> {
        let n = self.len()?;
        Ok(self.take(n)?.to_vec())
    }
    fn string(&mut self) -> DecodeResult<String> {
        String::from_utf8(self.bytes()?).map_err(|e| format!("a string is not UTF-8: {e}"))
    }
    fn done(&self) -> bool {
        self.at >= self.buf.len()
    }
}

/// Named types seen so far in a schema (records, enums and fixed can be referred to by name).
type Names = HashMap<String, Value>;

fn collect_names(schema: &Value, names: &mut Names) {
    match schema {
        Value::Array(branches) => branches.iter().for_each(|b| collect_names(b, names)),
        Value::Object(o) => {
            if let (Some(Value::String(t)), Some(Value::String(n))) = (o.get("type"), o.get("name"))
                && matches!(t.as_str(), "record" | "enum" | "fixed")
            {
                names.insert(n.clone(), schema.clone());
            }
            if let Some(Value::Array(fields)) = o.get("fields") {
                for f in fields {
                    collect_names(&f["type"], names);
                }
            }
            for k in ["items", "values"] {
                if let Some(t) = o.get(k) {
                    collect_names(t, names);
                }
            }
            if let Some(t @ (Value::Object(_) | Value::Array(_))) = o.get("type") {
                collect_names(t, names);
            }
        }
        _ => {}
    }
}

fn decode(r: &mut Reader<'_>, schema: &Value, names: &Names, depth: usize) -> DecodeResult<Datum> {
    if depth > 64 {
        return Err("schema nested deeper than 64 levels".into());
    }
    match schema {
        Value::String(t) => match t.as_str() {
            "null" => Ok(Datum::Null),
            "boolean" => Ok(Datum::Bool(r.take(1)?[0] != 0)),
            "int" | "long" => Ok(Datum::Long(r.long()?)),
            "float" => {
                let b = r.take(4)?;
                Ok(Datum::Double(f64::from(f32::from_le_bytes([
                    b[0], b[1], b[2], b[3],
                ]))))
            }
            "double" => {
                let b = r.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Ok(Datum::Double(f64::from_le_bytes(a)))
            }
            "bytes" => Ok(Datum::Bytes(r.bytes()?)),
            "string" => Ok(Datum::Str(r.string()?)),
            name => match names.get(name) {
                Some(s) => decode(r, s, names, depth + 1),
                None => Err(format!("unknown Avro type {name:?}")),
            },
        },
        Value::Array(branches) => {
            let i = r.long()?;
            let branch = usize::try_from(i)
                .ok()
                .and_then(|i| branches.get(i))
                .ok_or_else(|| format!("union branch {i} out of range"))?;
            decode(r, branch, names, depth + 1)
        }
        Value::Object(o) => match o.get("type") {
            Some(Value::String(t)) if t == "record" => {
                let fields = o
                    .get("fields")
                    .and_then(Value::as_array)
                    .ok_or("a record without fields")?;
                let mut out = Vec::with_capacity(fields.len());
                for f in fields {
                    let name = f["name"].as_str().unwrap_or_default().to_string();
                    let id = f.get("field-id").and_then(Value::as_i64);
                    out.push((name, id, decode(r, &f["type"], names, depth + 1)?));
                }
                Ok(Datum::Record(out))
            }
            Some(Value::String(t)) if t == "array" || t == "map" => {
                let item = o
                    .get(if t == "array" { "items" } else { "values" })
                    .ok_or("an array or map without its item type")?;
                let mut items = Vec::new();
                let mut entries = Vec::new();
                loop {
                    let mut n = r.long()?;
                    if n == 0 {
                        break;
                    }
                    if n < 0 {
                        n = -n;
                        r.long()?; // the block's size in bytes
                    }
                    for _ in 0..n {
                        if t == "array" {
                            items.push(decode(r, item, names, depth + 1)?);
                        } else {
                            let k = r.string()?;
                            entries.push((k, decode(r, item, names, depth + 1)?));
                        }
                        if r.done() && items.len() + entries.len() < n as usize {
                            return Err("truncated array".into());
                        }
                    }
                }
                Ok(if t == "array" {
                    Datum::Array(items)
                } else {
                    Datum::Map(entries)
                })
            }
            Some(Value::String(t)) if t == "fixed" => {
                let size = o
                    .get("size")
                    .and_then(Value::as_u64)
                    .ok_or("fixed without size")?;
                Ok(Datum::Bytes(r.take(size as usize)?.to_vec()))
            }
            Some(Value::String(t)) if t == "enum" => {
                let i = r.long()?;
                let symbol = o
                    .get("symbols")
                    .and_then(Value::as_array)
                    .and_then(|s| usize::try_from(i).ok().and_then(|i| s.get(i)))
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("enum symbol {i} out of range"))?;
                Ok(Datum::Str(symbol.to_string()))
            }
            Some(inner) => decode(r, inner, names, depth + 1),
            None => Err("a schema object without type".into()),
        },
        other => Err(format!("invalid Avro schema {other}")),
    }
}

/// Decode a whole Object Container File.
pub fn read_container(file: &[u8]) -> DecodeResult<Container> {
    let mut r = Reader::new(file);
    if r.take(4).map_err(|_| "shorter than the Avro magic")? != MAGIC {
        return Err("not an Avro file (no Obj\\x01 magic)".into());
    }
    let mut metadata = HashMap::new();
    loop {
        let mut n = r.long()?;
        if n == 0 {
            break;
        }
        if n < 0 {
            n = -n;
            r.long()?;
        }
        for _ in 0..n {
            let k = r.string()?;
            let v = r.bytes()?;
            metadata.insert(k, v);
        }
    }
    let sync = r.take(16)?.to_vec();
    let schema: Value = metadata
        .get("avro.schema")
        .ok_or("no avro.schema in the header")
        .and_then(|s| serde_json::from_slice(s).map_err(|_| "avro.schema is not JSON"))?;
    let codec = metadata
        .get("avro.codec")
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_else(|| "null".into());
    let mut names = Names::new();
    collect_names(&schema, &mut names);
    let mut records = Vec::new();
    while !r.done() {
        let count = r.long()?;
        let size = r.len()?;
        let raw = r.take(size)?;
        let block = match codec.as_str() {
            "null" => raw.to_vec(),
            "deflate" => {
                let mut out = Vec::new();
                flate2::read::DeflateDecoder::new(raw)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("a deflate block does not inflate: {e}"))?;
                out
            }
            other => {
                return Err(format!(
                    "codec {other:?} is not supported (null and deflate are)"
                ));
            }
        };
        let mut b = Reader::new(&block);
        for _ in 0..count {
            records.push(decode(&mut b, &schema, &names, 0)?);
        }
        if r.take(16)? != sync.as_slice() {
            return Err("a block is not followed by the file's sync marker".into());
        }
    }
    Ok(Container { metadata, records })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long(n: i64) -> Vec<u8> {
        let mut v = Vec::new();
        write_long(&mut v, n);
        v
    }

    /// The examples of the Avro specification ("Binary Encoding") and the edges of i64.
    #[test]
    fn zigzag_varints_match_the_specification() {
        assert_eq!(long(0), [0x00]);
        assert_eq!(long(-1), [0x01]);
        assert_eq!(long(1), [0x02]);
        assert_eq!(long(-2), [0x03]);
        assert_eq!(long(2), [0x04]);
        assert_eq!(long(-64), [0x7f]);
        assert_eq!(long(64), [0x80, 0x01]);
        assert_eq!(long(300), [0xd8, 0x04]);
        assert_eq!(
            long(i64::MAX),
            [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        assert_eq!(
            long(i64::MIN),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        for n in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            8191,
            -8192,
            1 << 40,
            i64::MAX,
            i64::MIN,
        ] {
            let b = long(n);
            assert_eq!(Reader::new(&b).long().expect("decode"), n);
        }
    }

    #[test]
    fn strings_bytes_arrays_and_unions() {
        let mut v = Vec::new();
        write_string(&mut v, "foo");
        assert_eq!(v, [0x06, b'f', b'o', b'o']);
        let mut v = Vec::new();
        write_array(&mut v, &[3i64, 27], |o, n| write_long(o, *n));
        assert_eq!(v, [0x04, 0x06, 0x36, 0x00]);
        let mut v = Vec::new();
        write_array::<i64>(&mut v, &[], |o, n| write_long(o, *n));
        assert_eq!(v, [0x00]);
        let mut v = Vec::new();
        write_union_branch(&mut v, true);
        write_long(&mut v, 1);
        write_union_branch(&mut v, false);
        assert_eq!(v, [0x02, 0x02, 0x00]);
    }

    #[test]
    fn a_container_reads_back_by_field_id() {
        let schema = r#"{"type":"record","name":"r","fields":[
            {"name":"a","type":"long","field-id":7},
            {"name":"b","type":["null","string"],"default":null,"field-id":8},
            {"name":"m","type":{"type":"array","logicalType":"map","items":{"type":"record","name":"k1_v2","fields":[
                {"name":"key","type":"int","field-id":1},{"name":"value","type":"bytes","field-id":2}]}},"field-id":9}]}"#;
        let mut w = ContainerWriter::new(schema, &[("format-version", "2".into())]);
        for i in 0..3i64 {
            w.append(|o| {
                write_long(o, i * 1000);
                write_union_branch(o, i % 2 == 0);
                if i % 2 == 0 {
                    write_string(o, &format!("s{i}"));
                }
                write_array(o, &[(1i64, vec![1u8, 2])], |o, (k, v)| {
                    write_long(o, *k);
                    write_bytes(o, v);
                });
            });
        }
        let file = w.finish();
        let c = read_container(&file).expect("decode");
        assert_eq!(c.metadata["format-version"], b"2");
        assert_eq!(c.metadata["avro.codec"], b"null");
        assert_eq!(c.records.len(), 3);
        assert_eq!(c.records[2].field(7), Some(&Datum::Long(2000)));
        assert_eq!(c.records[2].field(8), Some(&Datum::Str("s2".into())));
        assert_eq!(c.records[1].field(8), Some(&Datum::Null));
        let Some(Datum::Array(m)) = c.records[0].field(9) else {
            panic!("map as array")
        };
        assert_eq!(m[0].field(2), Some(&Datum::Bytes(vec![1, 2])));
        // Damage is an error, never a panic.
        for cut in [3, 10, file.len() - 5] {
            assert!(read_container(&file[..cut]).is_err());
        }
    }
}
