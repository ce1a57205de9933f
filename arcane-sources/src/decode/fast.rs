//! The schema-directed fast path for NDJSON blocks: one pass over each line, straight into
//! Arrow builders of the stream's schema, with or without `coerce_primitive`, for schemas
//! whose columns are of these types, at the top level and nested:
//!
//! * scalars: Int8..Int64, UInt8..UInt64, Float32/Float64, Boolean, Utf8/LargeUtf8, Timestamp
//!   (any unit, with or without a zone) and Date32;
//! * Struct of fields of any of these types (scalars, structs, lists);
//! * List and LargeList of items of any of these types;
//!
//! nested at most [`MAX_DEPTH`] deep. Any other type anywhere in the schema (decimals,
//! binary, maps, dictionaries, fixed-size lists, unions, …), a struct without fields, or two
//! fields of one name in the record or in a struct leaves the whole schema to the
//! `arrow_json` path.
//!
//! It accepts a subset of what the `arrow_json` path ([`BlockDecoder`]'s general path)
//! accepts and makes exactly the same batch of it: strict JSON (no trailing or doubled
//! commas, no missing ones, numbers only in JSON's grammar), each value read by the same
//! function `arrow_json` reads it with (`lexical_core` for numbers, `arrow_cast`'s parsers for
//! strings in numeric and temporal columns, `parse_decimal` for integers that are not plain).
//! Anything else — a record the general path rejects, or a construct the fast path leaves to
//! it (a key twice in a record or in an object, a date or a timestamp given as a number that
//! is not an integer, values nested deeper than [`MAX_DEPTH`]), or a block longer than the
//! general path's batch — gives up on the whole block with a reason, and the block takes the
//! general path, which keeps its dead letters, bisection and messages. Builders are made per
//! block, so giving up leaves nothing behind.
//!
//! Nested values are read as `arrow_json`'s struct and list decoders read them with the
//! options [`BlockDecoder`] gives it (keys not in the schema ignored, type conflicts not
//! ignored, structs as objects):
//!
//! * a struct is a JSON object. Its keys not among its fields are skipped (their values
//!   checked to be JSON); a field it leaves out is null, as one given `null` is; `{}` is a
//!   struct whose fields are all null.
//! * a struct given `null` (or left out of its parent) is null, and so is every value under
//!   it, nullable or not: `arrow_json` makes the decoders under a nullable struct nullable
//!   and accepts the nulls of a required field where its struct is null.
//! * a list is a JSON array; `null` (or left out) is a null list, `[]` an empty one. Its
//!   items are read as values of the item field, at any depth.
//! * scalars are read as at the top level, at any depth (`coerce_primitive` too); integers,
//!   which the general path reads as decimals at any depth, alike.
//!
//! It gives up, at any depth, on a null (given or left out) where the field or the list's
//! item is not nullable (`arrow_json` rejects it: "unmasked nulls" in a struct, a null item
//! in a list of required items, or a null for a required struct or list it cannot read); on
//! a value of another kind than its field's (an array for a struct, an object for a list,
//! either for a scalar, a scalar for either: `arrow_json` rejects them); and on a key twice
//! in one object (`arrow_json` takes the last one).
//!
//! [`BlockDecoder`]: super::block::BlockDecoder

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Float32Builder, Float64Builder, Int8Builder, Int16Builder,
    Int32Builder, Int64Builder, LargeStringBuilder, NullBufferBuilder, OffsetBufferBuilder,
    StringBuilder, UInt8Builder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow_array::timezone::Tz;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use arrow_array::{
    ArrayRef, GenericListArray, OffsetSizeTrait, PrimitiveArray, RecordBatch, StructArray,
};
use arrow_cast::parse::{Parser, parse_decimal, string_to_datetime};
use arrow_schema::{DataType, FieldRef, Fields, SchemaRef, TimeUnit};

use super::block::{INTEGER_PRECISION, INTEGER_SCALE, Rec};

/// Why the fast path gave up on a block (the block then takes the general path).
pub(crate) type GiveUp = &'static str;

/// Nesting (of the schema's structs and lists, and of the values of keys not in the schema)
/// beyond which the fast path gives up.
const MAX_DEPTH: usize = 64;

/// The time zone timestamp strings without an offset are read in: `arrow_json`'s choice for
/// the column's type (UTC for a type without a zone).
#[derive(Debug, Clone)]
pub(super) enum Zone {
    Utc,
    Tz(Tz),
}

/// How a scalar's values are read.
#[derive(Debug, Clone)]
pub(super) enum Kind {
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float32,
    Float64,
    Boolean,
    Utf8,
    LargeUtf8,
    Timestamp(TimeUnit, Zone),
    Date32,
}

/// A column of a schema of scalar columns (the CSV fast path's).
#[derive(Debug)]
pub(super) struct Column {
    pub(super) kind: Kind,
    data_type: DataType,
}

/// A scalar's values while a block is read.
pub(super) enum Builder {
    Int8(Int8Builder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    UInt8(UInt8Builder),
    UInt16(UInt16Builder),
    UInt32(UInt32Builder),
    UInt64(UInt64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
    Utf8(StringBuilder),
    LargeUtf8(LargeStringBuilder),
    /// Timestamps of any unit, as `i64` (given their type when finished).
    Timestamp(Int64Builder),
    Date32(Date32Builder),
}

impl Builder {
    pub(super) fn new(kind: &Kind, rows: usize) -> Self {
        Self::with_room(kind, rows, rows * 16)
    }

    /// A builder with room for `rows` values (and `bytes` of strings).
    fn with_room(kind: &Kind, rows: usize, bytes: usize) -> Self {
        match kind {
            Kind::Int8 => Self::Int8(Int8Builder::with_capacity(rows)),
            Kind::Int16 => Self::Int16(Int16Builder::with_capacity(rows)),
            Kind::Int32 => Self::Int32(Int32Builder::with_capacity(rows)),
            Kind::Int64 => Self::Int64(Int64Builder::with_capacity(rows)),
            Kind::UInt8 => Self::UInt8(UInt8Builder::with_capacity(rows)),
            Kind::UInt16 => Self::UInt16(UInt16Builder::with_capacity(rows)),
            Kind::UInt32 => Self::UInt32(UInt32Builder::with_capacity(rows)),
            Kind::UInt64 => Self::UInt64(UInt64Builder::with_capacity(rows)),
            Kind::Float32 => Self::Float32(Float32Builder::with_capacity(rows)),
            Kind::Float64 => Self::Float64(Float64Builder::with_capacity(rows)),
            Kind::Boolean => Self::Boolean(BooleanBuilder::with_capacity(rows)),
            Kind::Utf8 => Self::Utf8(StringBuilder::with_capacity(rows, bytes)),
            Kind::LargeUtf8 => Self::LargeUtf8(LargeStringBuilder::with_capacity(rows, bytes)),
            Kind::Timestamp(..) => Self::Timestamp(Int64Builder::with_capacity(rows)),
            Kind::Date32 => Self::Date32(Date32Builder::with_capacity(rows)),
        }
    }

    pub(super) fn append_null(&mut self) {
        match self {
            Self::Int8(b) => b.append_null(),
            Self::Int16(b) => b.append_null(),
            Self::Int32(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::UInt8(b) => b.append_null(),
            Self::UInt16(b) => b.append_null(),
            Self::UInt32(b) => b.append_null(),
            Self::UInt64(b) => b.append_null(),
            Self::Float32(b) => b.append_null(),
            Self::Float64(b) => b.append_null(),
            Self::Boolean(b) => b.append_null(),
            Self::Utf8(b) => b.append_null(),
            Self::LargeUtf8(b) => b.append_null(),
            Self::Timestamp(b) => b.append_null(),
            Self::Date32(b) => b.append_null(),
        }
    }

    /// The values appended, and the bytes of the strings among them.
    fn size(&self) -> (usize, usize) {
        use arrow_array::builder::ArrayBuilder;
        match self {
            Self::Int8(b) => (b.len(), 0),
            Self::Int16(b) => (b.len(), 0),
            Self::Int32(b) => (b.len(), 0),
            Self::Int64(b) => (b.len(), 0),
            Self::UInt8(b) => (b.len(), 0),
            Self::UInt16(b) => (b.len(), 0),
            Self::UInt32(b) => (b.len(), 0),
            Self::UInt64(b) => (b.len(), 0),
            Self::Float32(b) => (b.len(), 0),
            Self::Float64(b) => (b.len(), 0),
            Self::Boolean(b) => (b.len(), 0),
            Self::Utf8(b) => (b.len(), b.values_slice().len()),
            Self::LargeUtf8(b) => (b.len(), b.values_slice().len()),
            Self::Timestamp(b) => (b.len(), 0),
            Self::Date32(b) => (b.len(), 0),
        }
    }

    /// Append an integer read from JSON; false when it does not fit the column.
    fn append_int(&mut self, v: i128) -> bool {
        macro_rules! put {
            ($b:expr) => {
                match v.try_into() {
                    Ok(v) => {
                        $b.append_value(v);
                        true
                    }
                    Err(_) => false,
                }
            };
        }
        match self {
            Self::Int8(b) => put!(b),
            Self::Int16(b) => put!(b),
            Self::Int32(b) => put!(b),
            Self::Int64(b) => put!(b),
            Self::UInt8(b) => put!(b),
            Self::UInt16(b) => put!(b),
            Self::UInt32(b) => put!(b),
            Self::UInt64(b) => put!(b),
            _ => false,
        }
    }

    pub(super) fn finish(self, column: &Column) -> ArrayRef {
        self.finish_as(&column.kind, &column.data_type)
    }

    /// The array of the values, of type `data_type` (read as `kind`).
    fn finish_as(self, kind: &Kind, data_type: &DataType) -> ArrayRef {
        match self {
            Self::Int8(mut b) => Arc::new(b.finish()),
            Self::Int16(mut b) => Arc::new(b.finish()),
            Self::Int32(mut b) => Arc::new(b.finish()),
            Self::Int64(mut b) => Arc::new(b.finish()),
            Self::UInt8(mut b) => Arc::new(b.finish()),
            Self::UInt16(mut b) => Arc::new(b.finish()),
            Self::UInt32(mut b) => Arc::new(b.finish()),
            Self::UInt64(mut b) => Arc::new(b.finish()),
            Self::Float32(mut b) => Arc::new(b.finish()),
            Self::Float64(mut b) => Arc::new(b.finish()),
            Self::Boolean(mut b) => Arc::new(b.finish()),
            Self::Utf8(mut b) => Arc::new(b.finish()),
            Self::LargeUtf8(mut b) => Arc::new(b.finish()),
            Self::Date32(mut b) => Arc::new(b.finish()),
            Self::Timestamp(mut b) => {
                let ints = b.finish();
                let (_, values, nulls) = ints.into_parts();
                let zone = match data_type {
                    DataType::Timestamp(_, zone) => zone.clone(),
                    _ => None,
                };
                match kind {
                    Kind::Timestamp(TimeUnit::Second, _) => Arc::new(
                        PrimitiveArray::<TimestampSecondType>::new(values, nulls)
                            .with_timezone_opt(zone),
                    ),
                    Kind::Timestamp(TimeUnit::Millisecond, _) => Arc::new(
                        PrimitiveArray::<TimestampMillisecondType>::new(values, nulls)
                            .with_timezone_opt(zone),
                    ),
                    Kind::Timestamp(TimeUnit::Microsecond, _) => Arc::new(
                        PrimitiveArray::<TimestampMicrosecondType>::new(values, nulls)
                            .with_timezone_opt(zone),
                    ),
                    _ => Arc::new(
                        PrimitiveArray::<TimestampNanosecondType>::new(values, nulls)
                            .with_timezone_opt(zone),
                    ),
                }
            }
        }
    }
}

/// A builder per column for `rows` rows.
pub(super) fn builders(columns: &[Column], rows: usize) -> Vec<Builder> {
    columns
        .iter()
        .map(|c| Builder::new(&c.kind, rows))
        .collect()
}

/// The batch of `target` the `builders` of `columns` hold. A null in a required column fails
/// here, as it does on the general path.
pub(super) fn batch(
    target: &SchemaRef,
    builders: Vec<Builder>,
    columns: &[Column],
) -> Result<RecordBatch, GiveUp> {
    let arrays = builders
        .into_iter()
        .zip(columns)
        .map(|(b, c)| b.finish(c))
        .collect();
    RecordBatch::try_new(target.clone(), arrays).map_err(|_| "batch")
}

/// Fields beyond which names are looked up in a map rather than in order.
const LINEAR_LOOKUP: usize = 16;

/// How the general path reads a scalar of type `t`, which it decodes as `decoded` (which
/// names the zone timestamps are read in); none for the types the fast paths do not read.
fn kind(t: &DataType, decoded: &DataType) -> Option<Kind> {
    Some(match t {
        DataType::Int8 => Kind::Int8,
        DataType::Int16 => Kind::Int16,
        DataType::Int32 => Kind::Int32,
        DataType::Int64 => Kind::Int64,
        DataType::UInt8 => Kind::UInt8,
        DataType::UInt16 => Kind::UInt16,
        DataType::UInt32 => Kind::UInt32,
        DataType::UInt64 => Kind::UInt64,
        DataType::Float32 => Kind::Float32,
        DataType::Float64 => Kind::Float64,
        DataType::Boolean => Kind::Boolean,
        DataType::Utf8 => Kind::Utf8,
        DataType::LargeUtf8 => Kind::LargeUtf8,
        DataType::Date32 => Kind::Date32,
        DataType::Timestamp(unit, _) => {
            // The zone the general path reads the column in (UTC written `+00:00`).
            let zone = match decoded {
                DataType::Timestamp(_, None) => Zone::Utc,
                DataType::Timestamp(_, Some(tz)) => Zone::Tz(tz.parse().ok()?),
                _ => return None,
            };
            Kind::Timestamp(*unit, zone)
        }
        _ => return None,
    })
}

/// The columns of `target` (decoded by the general path as `decode_schema`, which names the
/// zones timestamps are read in), or none when a column's type is not a scalar one the fast
/// paths read. The CSV fast path's.
pub(super) fn columns(target: &SchemaRef, decode_schema: &SchemaRef) -> Option<Vec<Column>> {
    let fields = target.fields();
    if fields.is_empty() || fields.len() != decode_schema.fields().len() {
        return None;
    }
    let mut columns = Vec::with_capacity(fields.len());
    for (field, decoded) in fields.iter().zip(decode_schema.fields()) {
        columns.push(Column {
            kind: kind(field.data_type(), decoded.data_type())?,
            data_type: field.data_type().clone(),
        });
    }
    Some(columns)
}

/// A field of the record or of a struct, or a list's item, as the NDJSON fast path reads it.
#[derive(Debug)]
struct Member {
    name: Box<[u8]>,
    /// The name and the closing quote, as a key without escapes reads in JSON (none when
    /// the name holds a quote or a backslash, which JSON escapes).
    quoted: Option<Box<[u8]>>,
    nullable: bool,
    node: Node,
}

/// The type of a member's values, to any depth.
#[derive(Debug)]
enum Node {
    /// A scalar read as `Kind`, of the type.
    Scalar(Kind, DataType),
    /// Objects, into a struct of the members' fields.
    Struct(Members),
    /// Arrays, into a list (`LargeList` when `large`) of the item field `field`.
    List {
        field: FieldRef,
        item: Box<Member>,
        large: bool,
    },
}

/// The fields of the record or of a struct.
#[derive(Debug)]
struct Members {
    /// The struct's fields (the schema's, for the record).
    fields: Fields,
    members: Vec<Member>,
    /// Member by name, for structs too wide to search in order.
    by_name: Option<HashMap<Box<[u8]>, usize>>,
}

impl Members {
    /// The members of `fields` (decoded by the general path as `decoded`, which names the
    /// zones timestamps are read in), objects `depth` deep; none when a type is not one the
    /// fast path reads, there are no fields or two of one name (`arrow_json` reads the first
    /// of a name), or the types nest deeper than [`MAX_DEPTH`].
    fn new(fields: &Fields, decoded: &Fields, depth: usize) -> Option<Self> {
        if fields.is_empty() || fields.len() != decoded.len() || depth > MAX_DEPTH {
            return None;
        }
        let mut names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return None;
        }
        let members = fields
            .iter()
            .zip(decoded)
            .map(|(f, d)| Member::new(f, d, depth))
            .collect::<Option<Vec<_>>>()?;
        let by_name = (members.len() > LINEAR_LOOKUP).then(|| {
            members
                .iter()
                .enumerate()
                .map(|(i, m)| (m.name.clone(), i))
                .collect()
        });
        Some(Self {
            fields: fields.clone(),
            members,
            by_name,
        })
    }

    /// The member of the key starting at `i` (after its quote), trying `next` first, and the
    /// position after the key's closing quote.
    #[inline]
    fn key(
        &self,
        text: &str,
        i: usize,
        next: usize,
        scratch: &mut String,
    ) -> Result<(Option<usize>, usize), GiveUp> {
        if let Some(Member {
            quoted: Some(quoted),
            ..
        }) = self.members.get(next)
            && text
                .as_bytes()
                .get(i..i + quoted.len())
                .is_some_and(|t| same_bytes(t, quoted))
        {
            return Ok((Some(next), i + quoted.len()));
        }
        let (key, after) = string(text, i, scratch)?;
        let key = key.as_bytes();
        if let Some(m) = self.members.get(next)
            && same_bytes(&m.name, key)
        {
            return Ok((Some(next), after));
        }
        let member = match &self.by_name {
            Some(map) => map.get(key).copied(),
            None => self.members.iter().position(|m| *m.name == *key),
        };
        Ok((member, after))
    }

    /// The member expected after each key, before any object was read: the schema's order
    /// (see [`object`]).
    fn follow(&self) -> Vec<usize> {
        (0..=self.members.len()).collect()
    }

    /// A builder per member for `rows` values, with the room `room` gives.
    fn values(&self, rows: usize, room: &mut Room<'_>) -> Vec<Values> {
        self.members
            .iter()
            .map(|m| Values::new(&m.node, rows, room))
            .collect()
    }
}

/// `a == b` for byte strings as short as keys, compared in place: slice equality calls
/// `memcmp`, whose call costs more than comparing a key of up to 16 bytes (3.6 % of the CPU of
/// the strings landing went to `memcmp` from key matching).
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    if n <= 16 {
        // Two words that overlap when n < 16 cover every byte.
        let word = |s: &[u8], at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&s[at..at + 8]);
            u64::from_ne_bytes(w)
        };
        return word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8);
    }
    a == b
}

impl Member {
    /// The member for `field` (decoded by the general path as `decoded`), a field of objects
    /// `depth` deep (see [`Members::new`]).
    fn new(field: &FieldRef, decoded: &FieldRef, depth: usize) -> Option<Self> {
        if depth > MAX_DEPTH {
            return None;
        }
        let node = match (field.data_type(), decoded.data_type()) {
            (DataType::Struct(fields), DataType::Struct(decoded)) => {
                Node::Struct(Members::new(fields, decoded, depth + 1)?)
            }
            (DataType::List(item), DataType::List(decoded)) => Node::List {
                field: item.clone(),
                item: Box::new(Member::new(item, decoded, depth + 1)?),
                large: false,
            },
            (DataType::LargeList(item), DataType::LargeList(decoded)) => Node::List {
                field: item.clone(),
                item: Box::new(Member::new(item, decoded, depth + 1)?),
                large: true,
            },
            (t, d) => Node::Scalar(kind(t, d)?, t.clone()),
        };
        let name = field.name().as_bytes();
        let quoted = (!name.iter().any(|&b| b == b'"' || b == b'\\'))
            .then(|| [name, b"\""].concat().into_boxed_slice());
        Some(Self {
            name: name.into(),
            quoted,
            nullable: field.is_nullable(),
            node,
        })
    }
}

/// A member's values while a block is read.
enum Values {
    Scalar(Builder),
    Struct(Box<StructValues>),
    List(Box<ListValues>),
}

struct StructValues {
    /// A builder per field.
    fields: Vec<Values>,
    nulls: NullBufferBuilder,
    /// Per field, the stamp of the object that last had it: a key twice in an object, and
    /// the fields an object leaves out.
    seen: Vec<u32>,
    /// The stamp of the object read last (one more per object).
    stamp: u32,
    /// The member expected after each key ([`object`]).
    follow: Vec<usize>,
}

struct ListValues {
    offsets: Offsets,
    nulls: NullBufferBuilder,
    items: Values,
}

enum Offsets {
    List(OffsetBufferBuilder<i32>),
    Large(OffsetBufferBuilder<i64>),
}

/// The sizes of a block's builders (values, and bytes of strings), node by node in the
/// order [`Values::new`] makes them, and the block's rows: the next block's builders start
/// with room for as many, scaled to its rows (instead of growing step by step, each step a
/// copy, to up to twice what they hold).
#[derive(Debug, Default)]
struct Sizes {
    rows: usize,
    nodes: Vec<(usize, usize)>,
}

/// The room [`Values::new`] gives each builder of a block of `rows` rows and `bytes` bytes:
/// what the node held in the last block, scaled, and never more than the block's bytes (a
/// value takes at least one); `rows` values (16 bytes each for strings) without a last block.
struct Room<'a> {
    last: &'a Sizes,
    rows: usize,
    bytes: usize,
    next: usize,
}

impl<'a> Room<'a> {
    fn new(last: &'a Sizes, rows: usize, bytes: usize) -> Self {
        Self {
            last,
            rows,
            bytes,
            next: 0,
        }
    }

    /// The room of the next node: `(values, string bytes)`; `values` (its parent's rows)
    /// without a last block.
    fn next(&mut self, values: usize) -> (usize, usize) {
        let at = self.next;
        self.next += 1;
        match self.last.nodes.get(at) {
            Some(&(n, bytes)) if self.last.rows > 0 => {
                // A sixteenth more, for blocks a little larger than the last.
                let scale = |v: usize| {
                    let v = v.saturating_mul(self.rows) / self.last.rows;
                    v.saturating_add(v / 16).min(self.bytes)
                };
                (scale(n), scale(bytes))
            }
            _ => (values, values * 16),
        }
    }
}

impl Values {
    /// The builders of `node` for `rows` values (the rows of the block, or of the parent
    /// list's items), with the room `room` gives.
    fn new(node: &Node, rows: usize, room: &mut Room<'_>) -> Self {
        let (rows, bytes) = room.next(rows);
        match node {
            Node::Scalar(kind, _) => Self::Scalar(Builder::with_room(kind, rows, bytes)),
            Node::Struct(members) => Self::Struct(Box::new(StructValues {
                fields: members.values(rows, room),
                nulls: NullBufferBuilder::new(rows),
                seen: vec![0; members.members.len()],
                stamp: 0,
                follow: members.follow(),
            })),
            Node::List { item, large, .. } => Self::List(Box::new(ListValues {
                offsets: if *large {
                    Offsets::Large(OffsetBufferBuilder::new(rows))
                } else {
                    Offsets::List(OffsetBufferBuilder::new(rows))
                },
                nulls: NullBufferBuilder::new(rows),
                // Without a last block, as many items as lists.
                items: Values::new(&item.node, rows, room),
            })),
        }
    }

    /// Push the sizes of these builders, in the order [`Values::new`] makes them.
    fn measure(&self, out: &mut Vec<(usize, usize)>) {
        match self {
            Self::Scalar(b) => out.push(b.size()),
            Self::Struct(s) => {
                out.push((s.nulls.len(), 0));
                for f in &s.fields {
                    f.measure(out);
                }
            }
            Self::List(l) => {
                out.push((l.nulls.len(), 0));
                l.items.measure(out);
            }
        }
    }

    /// Append a null: a null struct's fields are null too, at any depth (as `arrow_json`
    /// makes them), a null list has no items.
    fn append_null(&mut self) {
        match self {
            Self::Scalar(b) => b.append_null(),
            Self::Struct(s) => {
                s.nulls.append_null();
                for f in &mut s.fields {
                    f.append_null();
                }
            }
            Self::List(l) => {
                l.nulls.append_null();
                // Never fails: the total does not change.
                let _ = l.offsets.push(0);
            }
        }
    }

    /// The array of the values of `node`: exactly the field's type. Nulls where the type
    /// does not allow them (outside null structs) fail here, as on the general path.
    fn finish(self, node: &Node) -> Result<ArrayRef, GiveUp> {
        Ok(match (self, node) {
            (Self::Scalar(b), Node::Scalar(kind, data_type)) => b.finish_as(kind, data_type),
            (Self::Struct(s), Node::Struct(members)) => {
                let StructValues {
                    fields, mut nulls, ..
                } = *s;
                let len = nulls.len();
                let arrays = fields
                    .into_iter()
                    .zip(&members.members)
                    .map(|(v, m)| v.finish(&m.node))
                    .collect::<Result<Vec<_>, _>>()?;
                Arc::new(
                    StructArray::try_new_with_length(
                        members.fields.clone(),
                        arrays,
                        nulls.finish(),
                        len,
                    )
                    .map_err(|_| "a struct")?,
                )
            }
            (Self::List(l), Node::List { field, item, .. }) => {
                let ListValues {
                    offsets,
                    mut nulls,
                    items,
                } = *l;
                let values = items.finish(&item.node)?;
                match offsets {
                    Offsets::List(o) => list_array(field, o, values, &mut nulls)?,
                    Offsets::Large(o) => list_array(field, o, values, &mut nulls)?,
                }
            }
            _ => return Err("a builder of another type"),
        })
    }
}

/// The list array (`List` or `LargeList`, by the offsets' size) of the item `field`.
fn list_array<O: OffsetSizeTrait>(
    field: &FieldRef,
    offsets: OffsetBufferBuilder<O>,
    values: ArrayRef,
    nulls: &mut NullBufferBuilder,
) -> Result<ArrayRef, GiveUp> {
    let offsets = offsets.try_finish().map_err(|_| "list offsets overflow")?;
    let list = GenericListArray::<O>::try_new(field.clone(), offsets, values, nulls.finish())
        .map_err(|_| "a list")?;
    Ok(Arc::new(list))
}

impl Offsets {
    /// End a list of `n` items.
    #[inline]
    fn push(&mut self, n: usize) -> Result<(), GiveUp> {
        match self {
            Self::List(o) => o.try_push_length(n),
            Self::Large(o) => o.try_push_length(n),
        }
        .map_err(|_| "list offsets overflow")
    }
}

/// What values are read with, besides the text.
#[derive(Debug)]
struct Reading {
    /// Whether JSON numbers and booleans are read into string fields as their text.
    coerce_primitive: bool,
    /// Unescaped strings.
    scratch: String,
}

/// Decodes NDJSON blocks of a schema the fast path reads (see the module's doc).
#[derive(Debug)]
pub(crate) struct FastDecoder {
    target: SchemaRef,
    /// The record's columns.
    record: Members,
    /// Per column, the row (plus one) that last had it: a key twice in a record, and the
    /// columns a record leaves out.
    seen: Vec<u32>,
    /// The column expected after each key ([`object`]), learned from block to block.
    follow: Vec<usize>,
    reading: Reading,
    /// The last block's builders' sizes.
    sizes: Sizes,
}

impl FastDecoder {
    /// A fast path for `target` (decoded by the general path as `decode_schema`, which names
    /// the zones timestamps are read in), or none when a type in it is not one it reads.
    pub(crate) fn new(
        target: &SchemaRef,
        decode_schema: &SchemaRef,
        coerce_primitive: bool,
    ) -> Option<Self> {
        let record = Members::new(target.fields(), decode_schema.fields(), 0)?;
        Some(Self {
            target: target.clone(),
            seen: vec![0; record.members.len()],
            follow: record.follow(),
            record,
            reading: Reading {
                coerce_primitive,
                scratch: String::new(),
            },
            sizes: Sizes::default(),
        })
    }

    /// Decode the records `recs` of `buf` (each one JSON object), one row each, or give up.
    pub(crate) fn decode(&mut self, buf: &[u8], recs: &[Rec]) -> Result<RecordBatch, GiveUp> {
        let (Some(first), Some(last)) = (recs.first(), recs.last()) else {
            return Err("no records");
        };
        if recs.len() >= u32::MAX as usize {
            return Err("too many records");
        }
        let base = first.start;
        let span = buf.get(base..last.end).ok_or("records out of order")?;
        // Strings must be UTF-8 (as the general path requires); outside strings, any byte
        // that is not ASCII is invalid JSON anyway.
        let text = simdutf8::basic::from_utf8(span).map_err(|_| "invalid UTF-8")?;
        let mut values = self.record.values(
            recs.len(),
            &mut Room::new(&self.sizes, recs.len(), span.len()),
        );
        self.seen.fill(0);
        for (row, rec) in recs.iter().enumerate() {
            let line = rec
                .start
                .checked_sub(base)
                .zip(rec.end.checked_sub(base))
                .and_then(|(start, end)| text.get(start..end))
                .ok_or("records out of order")?;
            let b = line.as_bytes();
            let start = skip_ws(b, 0);
            let end = object(
                &self.record,
                &mut values,
                &mut self.seen,
                &mut self.follow,
                row as u32 + 1,
                line,
                start,
                0,
                &mut self.reading,
            )?;
            if skip_ws(b, end) != b.len() {
                return Err("more than one value on the line");
            }
        }
        self.sizes.rows = recs.len();
        self.sizes.nodes.clear();
        for v in &values {
            v.measure(&mut self.sizes.nodes);
        }
        let arrays = values
            .into_iter()
            .zip(&self.record.members)
            .map(|(v, m)| v.finish(&m.node))
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(self.target.clone(), arrays).map_err(|_| "batch")
    }
}

/// Read the object at `i` (its `{`), `depth` deep, into `out` (a builder per member of
/// `members`); `seen` has the stamp of the object that last had each member, `stamp` is this
/// object's. `follow` is the member tried first for the first key (`follow[0]`) and for the
/// key after member `m` (`follow[m + 1]`): the order of the last object's keys, so that keys
/// in an order other than the schema's (an inferred schema's fields are sorted by name) are
/// found at the first try. The position after the object.
#[allow(clippy::too_many_arguments)]
fn object(
    members: &Members,
    out: &mut [Values],
    seen: &mut [u32],
    follow: &mut [usize],
    stamp: u32,
    text: &str,
    i: usize,
    depth: usize,
    reading: &mut Reading,
) -> Result<usize, GiveUp> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'{') {
        return Err("not an object");
    }
    let mut i = skip_ws(b, i + 1);
    let mut filled = 0;
    // The slot of `follow` of the key before (0: none).
    let mut prev = 0;
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return Err("expected a key");
            }
            let next = follow.get(prev).copied().unwrap_or(prev);
            let (member, after) = members.key(text, i + 1, next, &mut reading.scratch)?;
            i = skip_ws(b, after);
            if b.get(i) != Some(&b':') {
                return Err("expected a colon");
            }
            i = skip_ws(b, i + 1);
            match member {
                Some(m) => {
                    if seen[m] == stamp {
                        return Err("a key twice in an object");
                    }
                    seen[m] = stamp;
                    filled += 1;
                    let member = &members.members[m];
                    i = member_value(member, &mut out[m], text, i, depth, reading)?;
                    if let Some(slot) = follow.get_mut(prev) {
                        *slot = m;
                    }
                    prev = m + 1;
                }
                None => i = skip_value(b, i, depth)?,
            }
            match separator(b, i, b'}')? {
                (next, false) => i = next,
                (end, true) => {
                    i = end;
                    break;
                }
            }
        }
    }
    if filled < members.members.len() {
        for (m, values) in out.iter_mut().enumerate() {
            if seen[m] != stamp {
                if !members.members[m].nullable {
                    return Err("a required field is missing");
                }
                values.append_null();
            }
        }
    }
    Ok(i)
}

/// Read the value at `i` of `member` into `out`, `depth` deep; scalars here, without a call
/// (most values are). The position after it.
#[inline(always)]
fn member_value(
    member: &Member,
    out: &mut Values,
    text: &str,
    i: usize,
    depth: usize,
    reading: &mut Reading,
) -> Result<usize, GiveUp> {
    match (&member.node, out) {
        (Node::Scalar(kind, _), Values::Scalar(builder)) => {
            scalar_or_null(member.nullable, kind, builder, text, i, reading)
        }
        (_, values) => value(member, values, text, i, depth, reading),
    }
}

/// After a value at `i` in an object or an array closed by `close`: the position of the next
/// value (after the comma) and false, or the position after `close` and true.
#[inline(always)]
fn separator(b: &[u8], i: usize, close: u8) -> Result<(usize, bool), GiveUp> {
    let i = skip_ws(b, i);
    match b.get(i) {
        Some(b',') => Ok((skip_ws(b, i + 1), false)),
        Some(&c) if c == close => Ok((i + 1, true)),
        _ if close == b'}' => Err("expected a comma or the object's end"),
        _ => Err("expected a comma or the array's end"),
    }
}

/// Read the value at `i`, in an object or an array `depth` deep, into `out`, the values of
/// `member`; the position after it.
fn value(
    member: &Member,
    out: &mut Values,
    text: &str,
    i: usize,
    depth: usize,
    reading: &mut Reading,
) -> Result<usize, GiveUp> {
    let b = text.as_bytes();
    let first = *b.get(i).ok_or("expected a value")?;
    if first == b'n' {
        let end = literal(b, i, b"null")?;
        if !member.nullable {
            return Err("null in a required field");
        }
        out.append_null();
        return Ok(end);
    }
    match (&member.node, out) {
        (Node::Scalar(kind, _), Values::Scalar(builder)) => {
            scalar(kind, builder, text, i, first, reading)
        }
        (Node::Struct(members), Values::Struct(s)) => {
            s.stamp = s.stamp.checked_add(1).ok_or("too many objects")?;
            let end = object(
                members,
                &mut s.fields,
                &mut s.seen,
                &mut s.follow,
                s.stamp,
                text,
                i,
                depth + 1,
                reading,
            )?;
            s.nulls.append_non_null();
            Ok(end)
        }
        (Node::List { item, .. }, Values::List(l)) => {
            if first != b'[' {
                return Err("not an array");
            }
            let mut i = skip_ws(b, i + 1);
            let mut n = 0;
            if b.get(i) == Some(&b']') {
                i += 1;
            } else {
                loop {
                    i = member_value(item, &mut l.items, text, i, depth + 1, reading)?;
                    n += 1;
                    match separator(b, i, b']')? {
                        (next, false) => i = next,
                        (end, true) => {
                            i = end;
                            break;
                        }
                    }
                }
            }
            l.offsets.push(n)?;
            l.nulls.append_non_null();
            Ok(i)
        }
        _ => Err("a builder of another type"),
    }
}

/// Read the scalar or the `null` at `i` into `builder`, of `kind` (`nullable` or not);
/// the position after it.
#[inline(always)]
fn scalar_or_null(
    nullable: bool,
    kind: &Kind,
    builder: &mut Builder,
    text: &str,
    i: usize,
    reading: &mut Reading,
) -> Result<usize, GiveUp> {
    let b = text.as_bytes();
    let first = *b.get(i).ok_or("expected a value")?;
    if first == b'n' {
        let end = literal(b, i, b"null")?;
        if !nullable {
            return Err("null in a required field");
        }
        builder.append_null();
        return Ok(end);
    }
    scalar(kind, builder, text, i, first, reading)
}

/// Read the scalar at `i` (not `null`; its first byte `first`) into `builder`, of `kind`;
/// the position after it.
#[inline(always)]
fn scalar(
    kind: &Kind,
    builder: &mut Builder,
    text: &str,
    i: usize,
    first: u8,
    reading: &mut Reading,
) -> Result<usize, GiveUp> {
    let b = text.as_bytes();
    let scratch = &mut reading.scratch;
    // A float: a string as `arrow_cast` parses it, a number as `lexical_core` does.
    macro_rules! float {
        ($out:expr, $arrow:ty, $native:ty, $what:literal) => {
            match first {
                b'"' => {
                    let (s, end) = string(text, i + 1, scratch)?;
                    $out.append_value(<$arrow>::parse(s).ok_or(concat!("not a ", $what))?);
                    Ok(end)
                }
                _ => {
                    let end = number(b, i)?.0;
                    let v = lexical_core::parse::<$native>(&b[i..end]).map_err(|_| $what)?;
                    $out.append_value(v);
                    Ok(end)
                }
            }
        };
    }
    match (builder, kind) {
        (Builder::Float64(out), _) => float!(out, Float64Type, f64, "float64"),
        (Builder::Float32(out), _) => float!(out, Float32Type, f32, "float32"),
        (Builder::Boolean(out), _) => match first {
            b't' => {
                out.append_value(true);
                literal(b, i, b"true")
            }
            b'f' => {
                out.append_value(false);
                literal(b, i, b"false")
            }
            _ => Err("not a boolean"),
        },
        (Builder::Utf8(out), _) => {
            let (s, end) = text_value(text, i, reading.coerce_primitive, scratch)?;
            out.append_value(s);
            Ok(end)
        }
        (Builder::LargeUtf8(out), _) => {
            let (s, end) = text_value(text, i, reading.coerce_primitive, scratch)?;
            out.append_value(s);
            Ok(end)
        }
        (Builder::Timestamp(out), Kind::Timestamp(unit, zone)) => {
            let (v, end) = match first {
                b'"' => {
                    let (s, end) = string(text, i + 1, scratch)?;
                    (timestamp(s, *unit, zone)?, end)
                }
                _ => {
                    // An integer, as `arrow_json` reads it first. Other numbers are left
                    // to it: it reads them as floats, cast to `i64` saturating (arrow-json
                    // 60.1) or refused when out of range (60.2).
                    let end = number(b, i)?.0;
                    let v = lexical_core::parse::<i64>(&b[i..end])
                        .map_err(|_| "a timestamp number that is not a 64-bit integer")?;
                    (v, end)
                }
            };
            out.append_value(v);
            Ok(end)
        }
        (Builder::Date32(out), _) => match first {
            b'"' => {
                let (s, end) = string(text, i + 1, scratch)?;
                out.append_value(Date32Type::parse(s).ok_or("not a date")?);
                Ok(end)
            }
            _ => {
                let (end, integer) = number(b, i)?;
                if !integer {
                    return Err("a date as a number with a fraction or exponent");
                }
                let v = lexical_core::parse::<i32>(&b[i..end]).map_err(|_| "date32")?;
                out.append_value(v);
                Ok(end)
            }
        },
        (builder, _) => {
            // The integer columns: plain integers here, the rest (fractions, exponents,
            // strings that are not plain integers) as `arrow_json` reads them.
            let (v, end) = match first {
                b'"' => {
                    let (s, end) = string(text, i + 1, scratch)?;
                    let v = match integer(s.as_bytes(), 0) {
                        Ok((v, n)) if n == s.len() => v,
                        _ => decimal_integer(s)?,
                    };
                    (v, end)
                }
                _ => match integer(b, i) {
                    Ok(read) => read,
                    Err(_) => {
                        let end = number(b, i)?.0;
                        (
                            decimal_integer(text.get(i..end).ok_or("invalid UTF-8")?)?,
                            end,
                        )
                    }
                },
            };
            if !builder.append_int(v) {
                return Err("an integer that does not fit its column");
            }
            Ok(end)
        }
    }
}

/// A string column's value at `i`: a string, or with `coerce_primitive` the text of a number
/// or boolean.
fn text_value<'a>(
    text: &'a str,
    i: usize,
    coerce_primitive: bool,
    scratch: &'a mut String,
) -> Result<(&'a str, usize), GiveUp> {
    let b = text.as_bytes();
    match b.get(i) {
        Some(b'"') => string(text, i + 1, scratch),
        Some(b't') if coerce_primitive => Ok(("true", literal(b, i, b"true")?)),
        Some(b'f') if coerce_primitive => Ok(("false", literal(b, i, b"false")?)),
        Some(b'-' | b'0'..=b'9') if coerce_primitive => {
            let end = number(b, i)?.0;
            Ok((text.get(i..end).ok_or("invalid UTF-8")?, end))
        }
        _ => Err("not a string"),
    }
}

/// `s` as the general path reads it into an integer column: a decimal of
/// [`INTEGER_SCALE`] fractional digits that must be whole.
fn decimal_integer(s: &str) -> Result<i128, GiveUp> {
    let v = parse_decimal::<Decimal128Type>(s, INTEGER_PRECISION, INTEGER_SCALE)
        .map_err(|_| "not an integer")?;
    let unit = 10i128.pow(INTEGER_SCALE as u32);
    if v % unit != 0 {
        return Err("an integer with a fraction");
    }
    Ok(v / unit)
}

/// `s` as a timestamp of `unit`, as `arrow_json` reads it.
pub(super) fn timestamp(s: &str, unit: TimeUnit, zone: &Zone) -> Result<i64, GiveUp> {
    match utc_timestamp(s.as_bytes(), unit) {
        Some(v) => Ok(v),
        None => parsed_timestamp(s, unit, zone),
    }
}

/// `s` as a timestamp of `unit`, by `arrow_cast`'s parser.
fn parsed_timestamp(s: &str, unit: TimeUnit, zone: &Zone) -> Result<i64, GiveUp> {
    fn of<T: chrono::TimeZone>(t: chrono::DateTime<T>, unit: TimeUnit) -> Option<i64> {
        match unit {
            TimeUnit::Second => Some(t.timestamp()),
            TimeUnit::Millisecond => Some(t.timestamp_millis()),
            TimeUnit::Microsecond => Some(t.timestamp_micros()),
            TimeUnit::Nanosecond => t.timestamp_nanos_opt(),
        }
    }
    let v = match zone {
        Zone::Utc => string_to_datetime(&chrono::Utc, s)
            .ok()
            .and_then(|t| of(t, unit)),
        Zone::Tz(tz) => string_to_datetime(tz, s).ok().and_then(|t| of(t, unit)),
    };
    v.ok_or("not a timestamp")
}

/// `s` in `unit` since the epoch when it is `YYYY-MM-DD[Tt ]HH:MM:SS[.f]Z` (or `z`; one to
/// nine digits of fraction) and every field is in range: the value `arrow_cast`'s
/// `string_to_datetime` gives such a text in any time zone (the instant is UTC), computed
/// without it (a quarter fewer instructions per timestamp of the strings shape). `None` for
/// any other text (another form, an offset, a leap second, a value out of `unit`'s range):
/// the general parser answers those.
fn utc_timestamp(s: &[u8], unit: TimeUnit) -> Option<i64> {
    // The places of the date's and the time's digits among the first 19 bytes.
    const DIGITS: u32 = 0b110_1101_1011_0110_1111;
    let (&last, body) = s.split_last()?;
    let head: &[u8; 19] = body.first_chunk()?;
    if !matches!(last, b'Z' | b'z')
        || body.len() > 29
        || head[4] != b'-'
        || head[7] != b'-'
        || !matches!(head[10], b'T' | b't' | b' ')
        || head[13] != b':'
        || head[16] != b':'
    {
        return None;
    }
    // Every byte less '0', and where the result is not a digit: one pass without branches.
    let mut d = [0u8; 19];
    let mut not_digit = 0u32;
    for (k, (d, &c)) in d.iter_mut().zip(head).enumerate() {
        *d = c.wrapping_sub(b'0');
        not_digit |= u32::from(*d > 9) << k;
    }
    if not_digit & DIGITS != 0 {
        return None;
    }
    let two = |k: usize| i64::from(d[k]) * 10 + i64::from(d[k + 1]);
    let year = two(0) * 100 + two(2);
    let (month, day) = (two(5), two(8));
    let (hour, minute, second) = (two(11), two(14), two(17));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if day == 0 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut nanos = 0;
    if let Some((&point, fraction)) = body[19..].split_first() {
        if point != b'.' || fraction.is_empty() {
            return None;
        }
        for &c in fraction {
            let digit = c.wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            nanos = nanos * 10 + i64::from(digit);
        }
        nanos *= 10i64.pow(9 - fraction.len() as u32);
    }
    // Days from 1970-01-01 to the date, proleptic Gregorian (Hinnant's `days_from_civil`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    match unit {
        TimeUnit::Second => Some(seconds),
        TimeUnit::Millisecond => Some(seconds * 1_000 + nanos / 1_000_000),
        TimeUnit::Microsecond => Some(seconds * 1_000_000 + nanos / 1_000),
        TimeUnit::Nanosecond => seconds.checked_mul(1_000_000_000)?.checked_add(nanos),
    }
}

/// The position of the first byte at or after `i` that is not JSON whitespace.
#[inline]
pub(crate) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(i) {
        i += 1;
    }
    i
}

/// The position after the literal `lit` at `i`.
#[inline]
pub(crate) fn literal(b: &[u8], i: usize, lit: &[u8]) -> Result<usize, GiveUp> {
    match b.get(i..i + lit.len()) {
        Some(s) if s == lit => Ok(i + lit.len()),
        _ => Err("not a literal"),
    }
}

/// The end of the JSON number at `i` (strictly JSON's grammar) and whether it is an integer
/// (no fraction, no exponent).
#[inline]
pub(crate) fn number(b: &[u8], mut i: usize) -> Result<(usize, bool), GiveUp> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(b, i + 1),
        _ => return Err("not a number"),
    }
    let mut integer = true;
    if b.get(i) == Some(&b'.') {
        integer = false;
        let end = digits(b, i + 1);
        if end == i + 1 {
            return Err("no digits after the decimal point");
        }
        i = end;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        integer = false;
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let end = digits(b, i);
        if end == i {
            return Err("no digits in the exponent");
        }
        i = end;
    }
    Ok((i, integer))
}

#[inline]
fn digits(b: &[u8], mut i: usize) -> usize {
    while let Some(b'0'..=b'9') = b.get(i) {
        i += 1;
    }
    i
}

/// The JSON integer at `i` (no fraction, no exponent, at most `u64::MAX` in magnitude) and
/// the position after it.
#[inline]
fn integer(b: &[u8], mut i: usize) -> Result<(i128, usize), GiveUp> {
    let negative = b.get(i) == Some(&b'-');
    if negative {
        i += 1;
    }
    let mut v: u64 = match b.get(i) {
        Some(b'0') => {
            i += 1;
            0
        }
        Some(&d @ b'1'..=b'9') => {
            i += 1;
            u64::from(d - b'0')
        }
        _ => return Err("not an integer"),
    };
    if v != 0 {
        // Eight digits at a time while the value has at most 19 (below 10^19, within a u64).
        let first = i - 1;
        while i + 8 - first <= 19 {
            let Some(eight) = b.get(i..).and_then(eight_digits) else {
                break;
            };
            v = v * 100_000_000 + eight;
            i += 8;
        }
        while let Some(&d @ b'0'..=b'9') = b.get(i) {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .ok_or("an integer beyond 64 bits")?;
            i += 1;
        }
    }
    if let Some(b'.' | b'e' | b'E' | b'0'..=b'9') = b.get(i) {
        return Err("an integer with a fraction, an exponent or a leading zero");
    }
    let v = i128::from(v);
    Ok((if negative { -v } else { v }, i))
}

/// The value of the first eight bytes of `bytes` as ASCII digits, or `None` when one is not a
/// digit or there are fewer than eight.
#[inline]
pub(super) fn eight_digits(bytes: &[u8]) -> Option<u64> {
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes.get(..8)?);
    let word = u64::from_le_bytes(word);
    let low = word.wrapping_sub(0x3030_3030_3030_3030);
    // A byte below '0' borrows into its high bit; one above '9' carries into it once 0x46 is
    // added ('9' + 0x46 = 0x7f).
    if (low | word.wrapping_add(0x4646_4646_4646_4646)) & 0x8080_8080_8080_8080 != 0 {
        return None;
    }
    let v = (low * 10 + (low >> 8)) & 0x00ff_00ff_00ff_00ff;
    let v = (v * 100 + (v >> 16)) & 0x0000_ffff_0000_ffff;
    Some((v * 10_000 + (v >> 32)) & 0xffff_ffff)
}

/// The string whose content starts at `i` (after the opening quote), unescaped (into
/// `scratch` when it has escapes), and the position after its closing quote.
#[inline]
fn string<'a>(
    text: &'a str,
    i: usize,
    scratch: &'a mut String,
) -> Result<(&'a str, usize), GiveUp> {
    let b = text.as_bytes();
    let rest = b.get(i..).ok_or("unterminated string")?;
    match quote_or_backslash(rest) {
        Some(n) if rest[n] == b'"' => {
            let s = text.get(i..i + n).ok_or("invalid UTF-8")?;
            Ok((s, i + n + 1))
        }
        Some(n) => {
            scratch.clear();
            scratch.push_str(text.get(i..i + n).ok_or("invalid UTF-8")?);
            let end = unescape(text, i + n, scratch)?;
            Ok((scratch.as_str(), end))
        }
        None => Err("unterminated string"),
    }
}

/// The position of the first quote or backslash in `s`: eight bytes at a time for the short
/// strings of most records (a byte-by-byte loop was 11 % of the instructions of landing the
/// highcard shape), `memchr` beyond.
#[inline]
fn quote_or_backslash(s: &[u8]) -> Option<usize> {
    const SHORT: usize = 64;
    let head = &s[..s.len().min(SHORT)];
    let mut words = head.chunks_exact(8);
    for (n, eight) in (&mut words).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(eight);
        if let Some(k) = first_quote_or_backslash(word) {
            return Some(n * 8 + k);
        }
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        // Zero padding is neither a quote nor a backslash.
        let mut word = [0u8; 8];
        word[..tail.len()].copy_from_slice(tail);
        return first_quote_or_backslash(word).map(|k| head.len() - tail.len() + k);
    }
    let rest = s.get(SHORT..)?;
    memchr::memchr2(b'"', b'\\', rest).map(|n| n + SHORT)
}

/// The index of the first quote or backslash among eight bytes. A byte of `x` is zero where
/// the byte is the one sought; `(x - 0x01..) & !x & 0x80..` sets the high bit of the first
/// zero byte exactly (a borrow can only mark bytes after it), so the lowest bit of the two
/// words' union is the first of either.
#[inline(always)]
fn first_quote_or_backslash(word: [u8; 8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let w = u64::from_le_bytes(word);
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    let found = (zero(quote) | zero(backslash)) & HIGH;
    (found != 0).then(|| found.trailing_zeros() as usize / 8)
}

/// Unescape the rest of a string from the backslash at `i` into `out`; the position after
/// the closing quote.
fn unescape(text: &str, mut i: usize, out: &mut String) -> Result<usize, GiveUp> {
    let b = text.as_bytes();
    loop {
        // At a backslash or the closing quote.
        match b.get(i) {
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => {}
            _ => return Err("unterminated string"),
        }
        let c = match b.get(i + 1) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let high = hex4(b, i + 2)?;
                let c = match high {
                    0xD800..=0xDBFF => {
                        if b.get(i + 6) != Some(&b'\\') || b.get(i + 7) != Some(&b'u') {
                            return Err("a lone surrogate");
                        }
                        let low = hex4(b, i + 8)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err("an invalid surrogate pair");
                        }
                        // The code point; the general path reads the same, because it
                        // writes pairs as UTF-8 before `arrow_json`, which would combine
                        // them wrongly from U+20000 (`unescape_surrogate_pairs`).
                        let n = ((u32::from(high) - 0xD800) << 10) | (u32::from(low) - 0xDC00);
                        i += 6;
                        char::from_u32(n + 0x1_0000).ok_or("an invalid surrogate pair")?
                    }
                    _ => char::from_u32(u32::from(high)).ok_or("a lone surrogate")?,
                };
                i += 4;
                c
            }
            _ => return Err("an invalid escape"),
        };
        out.push(c);
        i += 2;
        let rest = b.get(i..).ok_or("unterminated string")?;
        let n = quote_or_backslash(rest).ok_or("unterminated string")?;
        out.push_str(text.get(i..i + n).ok_or("invalid UTF-8")?);
        i += n;
    }
}

/// Four hex digits at `i`.
#[inline]
pub(super) fn hex4(b: &[u8], i: usize) -> Result<u16, GiveUp> {
    let digits = b.get(i..i + 4).ok_or("a short unicode escape")?;
    let mut v = 0u16;
    for &d in digits {
        let d = char::from(d)
            .to_digit(16)
            .ok_or("an invalid unicode escape")?;
        v = (v << 4) | d as u16;
    }
    Ok(v)
}

/// Skip the value at `i` (of a key not in the schema), checking it is valid JSON as the
/// general path reads it; the position after it.
fn skip_value(b: &[u8], i: usize, depth: usize) -> Result<usize, GiveUp> {
    if depth > MAX_DEPTH {
        return Err("nested too deep");
    }
    match b.get(i) {
        Some(b'"') => skip_string(b, i + 1),
        Some(b'-' | b'0'..=b'9') => Ok(number(b, i)?.0),
        Some(b't') => literal(b, i, b"true"),
        Some(b'f') => literal(b, i, b"false"),
        Some(b'n') => literal(b, i, b"null"),
        Some(b'{') => {
            let mut i = skip_ws(b, i + 1);
            if b.get(i) == Some(&b'}') {
                return Ok(i + 1);
            }
            loop {
                if b.get(i) != Some(&b'"') {
                    return Err("expected a key");
                }
                i = skip_ws(b, skip_string(b, i + 1)?);
                if b.get(i) != Some(&b':') {
                    return Err("expected a colon");
                }
                i = skip_ws(b, skip_value(b, skip_ws(b, i + 1), depth + 1)?);
                match b.get(i) {
                    Some(b',') => i = skip_ws(b, i + 1),
                    Some(b'}') => return Ok(i + 1),
                    _ => return Err("expected a comma or the object's end"),
                }
            }
        }
        Some(b'[') => {
            let mut i = skip_ws(b, i + 1);
            if b.get(i) == Some(&b']') {
                return Ok(i + 1);
            }
            loop {
                i = skip_ws(b, skip_value(b, i, depth + 1)?);
                match b.get(i) {
                    Some(b',') => i = skip_ws(b, i + 1),
                    Some(b']') => return Ok(i + 1),
                    _ => return Err("expected a comma or the list's end"),
                }
            }
        }
        _ => Err("expected a value"),
    }
}

/// Skip the string whose content starts at `i`, checking its escapes; the position after
/// its closing quote.
pub(crate) fn skip_string(b: &[u8], mut i: usize) -> Result<usize, GiveUp> {
    loop {
        let rest = b.get(i..).ok_or("unterminated string")?;
        let n = quote_or_backslash(rest).ok_or("unterminated string")?;
        i += n;
        if b[i] == b'"' {
            return Ok(i + 1);
        }
        match b.get(i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
            Some(b'u') => {
                let high = hex4(b, i + 2)?;
                i += 6;
                match high {
                    0xD800..=0xDBFF => {
                        if b.get(i) != Some(&b'\\') || b.get(i + 1) != Some(&b'u') {
                            return Err("a lone surrogate");
                        }
                        if !(0xDC00..=0xDFFF).contains(&hex4(b, i + 2)?) {
                            return Err("an invalid surrogate pair");
                        }
                        i += 6;
                    }
                    0xDC00..=0xDFFF => return Err("a lone surrogate"),
                    _ => {}
                }
            }
            _ => return Err("an invalid escape"),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    //! The differential test: generated records, valid and hostile, decoded by the fast path
    //! and by the `arrow_json` path; whatever the fast path accepts, the `arrow_json` path
    //! accepts with the same batch.

    use arcane_test_support::rng::SplitMix64;
    use arrow_array::Array;
    use arrow_schema::{Field, Schema};

    use super::super::block::{BlockDecoder, Piece, TextFormat};
    use super::*;

    /// Keys compared in place are equal exactly when the slices are: every length up to 40,
    /// the same bytes, and one byte changed at every position (or the lengths differ).
    #[test]
    fn keys_compare_as_slices_do() {
        let text: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for n in 0..=40 {
            let a = &text[..n];
            let same = a.to_vec();
            assert!(super::same_bytes(a, &same), "{n}");
            for at in 0..n {
                let mut other = a.to_vec();
                other[at] ^= 0x20;
                assert!(!super::same_bytes(a, &other), "{n} at {at}");
            }
            if n > 0 {
                assert!(!super::same_bytes(a, &a[..n - 1]), "{n} and one less");
            }
        }
    }

    /// The first quote or backslash is found where a byte-by-byte search finds it, whatever
    /// the length (across the eight-byte words, the 64 bytes scanned in words and `memchr`
    /// beyond) and whatever bytes come before and after it (bytes one away from the two
    /// sought, zeros, non-ASCII bytes, both sought bytes in one word).
    #[test]
    fn quotes_and_backslashes_are_found_where_they_are() {
        const BYTES: &[u8] = b"\"\\!#[]\x00\x01\x21\x23\x5b\x5d\x80\xa2\xdc\xffa";
        let mut rng = SplitMix64(0x71_756f_7465);
        for round in 0..40_000 {
            let len = rng.between(0, 160) as usize;
            let mut s: Vec<u8> = (0..len)
                .map(|_| {
                    // Mostly plain bytes, so that the first sought byte lands anywhere.
                    if rng.between(0, 40) == 0 {
                        BYTES[rng.between(0, BYTES.len() as u64) as usize]
                    } else {
                        BYTES[rng.between(2, BYTES.len() as u64) as usize]
                    }
                })
                .collect();
            if round % 7 == 0 && len > 0 {
                // One sought byte at a chosen place, the rest anything else.
                for c in &mut s {
                    if *c == b'"' || *c == b'\\' {
                        *c = b'a';
                    }
                }
                let at = rng.between(0, len as u64) as usize;
                s[at] = if round % 2 == 0 { b'"' } else { b'\\' };
            }
            let expected = s.iter().position(|&c| c == b'"' || c == b'\\');
            assert_eq!(super::quote_or_backslash(&s), expected, "{s:?}");
        }
    }

    /// A timestamp read without `arrow_cast`'s parser has the value the parser gives it, in
    /// every unit and zone: dates of every year from 0 to 9999 (leap days, days past the
    /// month's end), times out of range, leap seconds, fractions of 0 to 10 digits, the other
    /// separators and suffixes; and the texts it does not read are left to the parser.
    #[test]
    fn utc_timestamps_are_what_arrow_cast_reads() {
        let zones = [
            Zone::Utc,
            Zone::Tz("+02:00".parse().unwrap()),
            Zone::Tz("-05:30".parse().unwrap()),
        ];
        let units = [
            TimeUnit::Second,
            TimeUnit::Millisecond,
            TimeUnit::Microsecond,
            TimeUnit::Nanosecond,
        ];
        let mut rng = SplitMix64(0x7469_6d65);
        let (mut read, mut left) = (0, 0);
        // Leap years and not (every fourth year, not centuries, but every fourth century),
        // the ends of months.
        const YEARS: [u64; 15] = [
            0, 4, 100, 400, 1600, 1700, 1800, 1900, 2000, 2023, 2024, 2100, 2400, 9996, 9999,
        ];
        const DAYS: [(u64, u64); 10] = [
            (2, 28),
            (2, 29),
            (2, 30),
            (3, 1),
            (1, 1),
            (12, 31),
            (4, 30),
            (4, 31),
            (1, 31),
            (11, 31),
        ];
        for round in 0..60_000u64 {
            let pick = |rng: &mut SplitMix64, n: usize| rng.between(0, n as u64) as usize;
            let (year, month, day) = if round % 5 == 0 {
                let (month, day) = DAYS[pick(&mut rng, DAYS.len())];
                (YEARS[pick(&mut rng, YEARS.len())], month, day)
            } else {
                let year = match round % 4 {
                    0 => rng.between(0, 10_000),
                    1 => rng.between(1677, 1679),
                    2 => rng.between(2261, 2263),
                    _ => rng.between(1965, 2035),
                };
                let month = if rng.between(0, 10) == 0 {
                    rng.between(0, 14)
                } else {
                    rng.between(1, 13)
                };
                let day = if rng.between(0, 10) == 0 {
                    rng.between(0, 33)
                } else {
                    rng.between(1, 29) + if rng.between(0, 4) == 0 { 2 } else { 0 }
                };
                (year, month, day)
            };
            let mut hms = [rng.between(0, 24), rng.between(0, 60), rng.between(0, 60)];
            if rng.between(0, 20) == 0 {
                let at = rng.between(0, 3) as usize;
                hms[at] = [24, 60, 60, 61][rng.between(0, 4) as usize];
            }
            let separator = ["T", "t", " ", "x"][if rng.between(0, 10) == 0 {
                rng.between(1, 4)
            } else {
                0
            } as usize];
            let fraction: String = match rng.between(0, 12) {
                0 => String::new(),
                1 => ".".into(),
                n => {
                    let digits = (n - 1).min(10);
                    let mut f = String::from(".");
                    for _ in 0..digits {
                        f.push(char::from(b'0' + rng.between(0, 10) as u8));
                    }
                    f
                }
            };
            let suffix = ["Z", "z", "", "+00:00", "ZZ", "-05:00"][if rng.between(0, 8) == 0 {
                rng.between(1, 6)
            } else {
                0
            } as usize];
            let mut text = format!(
                "{year:04}-{month:02}-{day:02}{separator}{:02}:{:02}:{:02}{fraction}{suffix}",
                hms[0], hms[1], hms[2]
            );
            if round % 3 == 0 {
                // One byte changed, anywhere: digits' places and separators' alike.
                const BYTES: &[u8] = b"0159/:.-Tt Zz+a";
                let mut bytes = text.into_bytes();
                let at = pick(&mut rng, bytes.len());
                bytes[at] = BYTES[pick(&mut rng, BYTES.len())];
                text = String::from_utf8(bytes).unwrap();
            }
            for unit in units {
                let fast = super::utc_timestamp(text.as_bytes(), unit);
                if fast.is_some() {
                    read += 1;
                } else {
                    left += 1;
                }
                for zone in &zones {
                    let parsed = super::parsed_timestamp(&text, unit, zone).ok();
                    if let Some(v) = fast {
                        assert_eq!(Some(v), parsed, "{text} in {unit:?}, {zone:?}");
                    }
                    assert_eq!(super::timestamp(&text, unit, zone).ok(), parsed, "{text}");
                }
            }
        }
        // Most texts are of the form read without the parser; many are not.
        assert!(
            read > 80_000 && left > 40_000,
            "{read} read, {left} left to the parser"
        );
    }

    /// A block's builders start with room for what the last block's held, scaled to its
    /// rows, never more than its own bytes: a last block of one huge value does not make the
    /// next block of many rows ask for that much per row.
    #[test]
    fn builders_start_with_the_last_blocks_sizes_within_the_blocks_bytes() {
        let none = Sizes::default();
        assert_eq!(Room::new(&none, 100, 10_000).next(100), (100, 1600));
        let last = Sizes {
            rows: 100,
            nodes: vec![(100, 1600), (300, 0)],
        };
        let mut room = Room::new(&last, 200, 1 << 20);
        assert_eq!(room.next(200), (212, 3400));
        assert_eq!(room.next(200), (637, 0));
        assert_eq!(room.next(200), (200, 3200), "a node the last block had not");
        let huge = Sizes {
            rows: 1,
            nodes: vec![(1, 60 << 20)],
        };
        assert_eq!(
            Room::new(&huge, 65_536, 4 << 20).next(65_536),
            (69_632, 4 << 20)
        );
    }

    pub(in crate::decode) fn tz(unit: TimeUnit, zone: Option<&str>) -> DataType {
        DataType::Timestamp(unit, zone.map(Into::into))
    }

    /// Every type the fast path reads, required and nullable.
    pub(in crate::decode) fn wide_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("i8", DataType::Int8, true),
            Field::new("i16", DataType::Int16, true),
            Field::new("i32", DataType::Int32, true),
            Field::new("u8", DataType::UInt8, true),
            Field::new("u16", DataType::UInt16, true),
            Field::new("u32", DataType::UInt32, true),
            Field::new("u64", DataType::UInt64, true),
            Field::new("f64", DataType::Float64, true),
            Field::new("f32", DataType::Float32, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("large", DataType::LargeUtf8, true),
            Field::new("at", tz(TimeUnit::Millisecond, Some("UTC")), true),
            Field::new("local", tz(TimeUnit::Microsecond, None), true),
            Field::new("shifted", tz(TimeUnit::Second, Some("+01:00")), true),
            Field::new("nanos", tz(TimeUnit::Nanosecond, Some("UTC")), true),
            Field::new("day", DataType::Date32, true),
            Field::new("req_f", DataType::Float64, false),
            Field::new("req_s", DataType::Utf8, false),
        ]))
    }

    /// The benchmark's numeric-heavy schema.
    pub(in crate::decode) fn numeric_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("qty", DataType::Int64, true),
            Field::new("a", DataType::Float64, true),
            Field::new("b", DataType::Float64, true),
            Field::new("c", DataType::Float64, true),
            Field::new("flag", DataType::Boolean, true),
            Field::new("kind", DataType::Utf8, true),
            Field::new("hex", DataType::Utf8, true),
        ]))
    }

    /// More than [`LINEAR_LOOKUP`] columns: names looked up in the map.
    fn many_schema() -> SchemaRef {
        Arc::new(Schema::new(
            (0..24)
                .map(|i| Field::new(format!("c{i}"), DataType::Int32, true))
                .collect::<Vec<_>>(),
        ))
    }

    pub(in crate::decode) fn pick<'a>(rng: &mut SplitMix64, items: &[&'a str]) -> &'a str {
        items[rng.between(0, items.len() as u64) as usize]
    }

    fn ws(rng: &mut SplitMix64) -> &'static str {
        match rng.between(0, 12) {
            0 => " ",
            1 => "\t",
            2 => "  \r ",
            3 => "\n",
            _ => "",
        }
    }

    pub(in crate::decode) fn float_text(rng: &mut SplitMix64) -> String {
        const EDGES: &[&str] = &[
            "0",
            "-0",
            "-0.0",
            "0.0",
            "1",
            "-1",
            "1234.5678901234567",
            "0.1",
            "5e-324",
            "4.9406564584124654e-324",
            "2.2250738585072014e-308",
            "2.225073858507201e-308",
            "1e308",
            "1.7976931348623157e308",
            "1.7976931348623159e308",
            "1e309",
            "-1e309",
            "1e-400",
            "1E5",
            "1e+5",
            "1e-5",
            "123456789012345678901234567890",
            "0.1000000000000000055511151231257827",
            "9007199254740993",
            "3.4028235e38",
            "3.4028236e38",
            "1.17549435e-38",
            "1.4e-45",
            "7e-46",
            "2.5",
            "-2.5e-3",
        ];
        match rng.between(0, 4) {
            0 => pick(rng, EDGES).to_string(),
            1 => {
                let v = f64::from_bits(rng.next_u64());
                if v.is_finite() {
                    format!("{v:?}")
                } else {
                    "1.5".into()
                }
            }
            2 => {
                let v = f64::from_bits(rng.next_u64());
                if v.is_finite() {
                    format!("{v:e}")
                } else {
                    "-3e7".into()
                }
            }
            _ => format!(
                "{:.1$}",
                (rng.unit() - 0.5) * 1e6,
                rng.between(0, 18) as usize
            ),
        }
    }

    pub(in crate::decode) fn int_text(rng: &mut SplitMix64) -> String {
        const EDGES: &[&str] = &[
            "0",
            "-0",
            "1",
            "-1",
            "127",
            "128",
            "-128",
            "-129",
            "255",
            "256",
            "32767",
            "32768",
            "-32768",
            "-32769",
            "65535",
            "65536",
            "2147483647",
            "2147483648",
            "-2147483648",
            "-2147483649",
            "4294967295",
            "4294967296",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "-18446744073709551615",
            "99999999999999999999",
            "123456789012345678901234567890",
        ];
        match rng.between(0, 3) {
            0 => pick(rng, EDGES).to_string(),
            1 => (rng.next_u64() as i64).to_string(),
            _ => (rng.between(0, 300) as i64 - 150).to_string(),
        }
    }

    pub(in crate::decode) fn string_text(rng: &mut SplitMix64) -> String {
        const PARTS: &[&str] = &[
            "a",
            "hello",
            " ",
            "é",
            "😀",
            "\\\"",
            "\\\\",
            "\\/",
            "\\b",
            "\\f",
            "\\n",
            "\\r",
            "\\t",
            "\\u00e9",
            "\\u0000",
            "\\u20AC",
            "\\ud83d\\ude00",
            "\\uD83D\\uDE00",
            "\u{1}",
            "\t",
            "12",
            "true",
            "null",
            "{",
            "}",
            "[",
            ",",
            ":",
        ];
        let n = rng.between(0, 5);
        let mut s = String::from("\"");
        for _ in 0..n {
            s.push_str(pick(rng, PARTS));
        }
        s.push('"');
        s
    }

    pub(in crate::decode) fn timestamp_text(rng: &mut SplitMix64) -> String {
        const EDGES: &[&str] = &[
            "\"2026-11-25T10:00:00Z\"",
            "\"2026-11-25T10:00:00.123456789+02:00\"",
            "\"2026-11-25 10:00:00\"",
            "\"2026-11-25T10:00:00.5\"",
            "\"2026-11-25\"",
            "\"1970-01-01T00:00:00-00:30\"",
            "\"2500-01-01T00:00:00Z\"",
            "\"1600-01-01T00:00:00Z\"",
            "\"2026-13-01T00:00:00Z\"",
            "\"not a date\"",
            "\" 2026-11-25T10:00:00Z \"",
            "\"2026-11-25T10:00:00\\u005A\"",
            "1700000000000",
            "-1",
            "0",
            "1.5e12",
            "1.7",
            "9223372036854775807",
            "9223372036854775808",
            "1e300",
        ];
        pick(rng, EDGES).to_string()
    }

    pub(in crate::decode) fn date_text(rng: &mut SplitMix64) -> String {
        const EDGES: &[&str] = &[
            "\"2026-11-25\"",
            "\"1970-01-01\"",
            "\" 2026-11-25 \"",
            "\"2026-02-30\"",
            "\"2026-11-25T10:00:00Z\"",
            "\"+10000-01-01\"",
            "\"x\"",
            "19000",
            "-5",
            "1.5",
            "2147483648",
            "1e3",
        ];
        pick(rng, EDGES).to_string()
    }

    /// Hostile values: of another type, or not quite JSON.
    pub(in crate::decode) fn hostile_value(rng: &mut SplitMix64) -> String {
        const BAD: &[&str] = &[
            "NaN",
            "Infinity",
            "-Infinity",
            "nan",
            "+1",
            ".5",
            "1.",
            "-",
            "01",
            "00",
            "-01",
            "1e",
            "1e+",
            "--1",
            "1.5.3",
            "1e5e3",
            "0x10",
            "1.5",
            "1e3",
            "12.0",
            "1E2",
            "tru",
            "True",
            "nul",
            "nulls",
            "falsey",
            "\"12\"",
            "\"-3\"",
            "\"012\"",
            "\" 12\"",
            "\"1e3\"",
            "\"1.5\"",
            "\"NaN\"",
            "\"inf\"",
            "\" 1.5 \"",
            "\"+1\"",
            "\"true\"",
            "[1]",
            "{}",
            "{\"a\":1}",
            "[]",
            "\"\\ud800\"",
            "\"\\ud84d\\ude00\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"\\ud800x\"",
            "\"\\x\"",
            "\"\\u12G4\"",
            "\"\\u12\"",
            "\"abc",
            "\"\\\"",
            "'a'",
            "1 2",
            "\"a\" \"b\"",
            "",
            "true",
            "false",
            "null",
            "0",
            "-0",
            "\"\"",
        ];
        pick(rng, BAD).to_string()
    }

    fn unknown_value(rng: &mut SplitMix64, hostile: bool) -> String {
        const NESTED: &[&str] = &[
            "{\"a\": [1, 2, {\"b\": null}], \"c\": \"x\"}",
            "[]",
            "{}",
            "[[[[]]], {\"k\": [true, false, null]}]",
            "-1.5e-7",
            "\"\\ud83d\\ude00 \\\" }\"",
            "{\"id\": 5}",
            "[1, 2,]",
            "{\"a\" 1}",
            "[\"\\q\"]",
            "{\"a\":1,}",
            "[1 2]",
            "{1: 2}",
        ];
        // The first seven are valid JSON.
        let n = if hostile { NESTED.len() } else { 7 };
        NESTED[rng.between(0, n as u64) as usize].to_string()
    }

    /// An integer that fits `t`: its bounds, small ones, any.
    pub(in crate::decode) fn int_in(rng: &mut SplitMix64, t: &DataType) -> String {
        let (lo, hi): (i128, i128) = match t {
            DataType::Int8 => (i8::MIN.into(), i8::MAX.into()),
            DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
            DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
            DataType::Int64 => (i64::MIN.into(), i64::MAX.into()),
            DataType::UInt8 => (0, u8::MAX.into()),
            DataType::UInt16 => (0, u16::MAX.into()),
            DataType::UInt32 => (0, u32::MAX.into()),
            _ => (0, u64::MAX.into()),
        };
        let v = match rng.between(0, 6) {
            0 => lo,
            1 => hi,
            2 => 0,
            3 => (i128::from(rng.next_u64()) % (hi - lo + 1)) + lo,
            _ => (rng.between(0, 200) as i128 - 100).clamp(lo, hi),
        };
        match rng.between(0, 12) {
            0 if v == 0 => "-0".into(),
            1 => format!("{v}.000"),
            2 => format!("{v}e0"),
            3 if v % 100 == 0 && v != 0 => format!("{}E2", v / 100),
            4 if v != 0 && v.unsigned_abs() < 1000 => format!("{v}0e-1"),
            _ => v.to_string(),
        }
    }

    /// A value for a field of type `t`: a valid one (which the fast path mostly reads), or
    /// with `hostile` one of another type, not quite JSON, or a struct or a list holding such
    /// a value.
    fn value_for(rng: &mut SplitMix64, t: &DataType, hostile: bool, coerce: bool) -> String {
        match t {
            DataType::Struct(fields) => {
                return nested_value(rng, hostile, |rng| {
                    object_text(rng, fields, hostile, coerce)
                });
            }
            DataType::List(item) | DataType::LargeList(item) => {
                return nested_value(rng, hostile, |rng| array_text(rng, item, hostile, coerce));
            }
            _ => {}
        }
        if hostile {
            if rng.between(0, 6) == 0 {
                return hostile_value(rng);
            }
            return match rng.between(0, 16) {
                0 => "null".into(),
                1 if t.is_integer() => format!("\"{}\"", int_text(rng)),
                1 if t.is_numeric() => format!("\"{}\"", float_text(rng)),
                _ => match t {
                    DataType::Float32 | DataType::Float64 => float_text(rng),
                    t if t.is_integer() => int_text(rng),
                    DataType::Boolean => pick(rng, &["true", "false"]).into(),
                    DataType::Utf8 | DataType::LargeUtf8 => match rng.between(0, 8) {
                        0 => int_text(rng),
                        1 => float_text(rng),
                        2 => pick(rng, &["true", "false"]).into(),
                        _ => string_text(rng),
                    },
                    DataType::Timestamp(..) => timestamp_text(rng),
                    _ => date_text(rng),
                },
            };
        }
        // Valid values, which the fast path reads.
        match rng.between(0, 16) {
            0 => return "null".into(),
            1 if t.is_integer() => return format!("\"{}\"", int_in(rng, t)),
            1 if t.is_numeric() => return format!("\"{}\"", float_text(rng)),
            _ => {}
        }
        match t {
            DataType::Float32 | DataType::Float64 => float_text(rng),
            t if t.is_integer() => int_in(rng, t),
            DataType::Boolean => pick(rng, &["true", "false"]).into(),
            DataType::Utf8 | DataType::LargeUtf8 => match rng.between(0, 8) {
                0 if coerce => float_text(rng),
                1 if coerce => pick(rng, &["true", "false"]).into(),
                _ => string_text(rng),
            },
            DataType::Timestamp(unit, _) => {
                let mut text = timestamp_text(rng);
                // Timestamp numbers that are not integers of 64 bits are left to
                // `arrow_json`.
                while text.contains("not")
                    || (!text.starts_with('"') && text.contains(['.', 'e']))
                    || text == "9223372036854775808"
                    || text.contains("\" ")
                    || text.contains("-13-")
                    || (*unit == TimeUnit::Nanosecond && text.contains("00-01-01T"))
                {
                    text = timestamp_text(rng);
                }
                text
            }
            _ => pick(
                rng,
                &["\"2026-11-25\"", "\"1970-01-01\"", "19000", "-5", "0"],
            )
            .into(),
        }
    }

    /// A struct's or a list's value, made by `make`: sometimes null, and with `hostile`
    /// sometimes one of another kind or not quite JSON.
    fn nested_value(
        rng: &mut SplitMix64,
        hostile: bool,
        make: impl FnOnce(&mut SplitMix64) -> String,
    ) -> String {
        if rng.between(0, 16) == 0 {
            return "null".into();
        }
        if hostile && rng.between(0, 4) == 0 {
            const WRONG: &[&str] = &[
                "[]",
                "{}",
                "{ }",
                "[{}]",
                "[null]",
                "[[]]",
                "[[1], {}]",
                "{\"a\": []}",
                "\"{}\"",
                "\"[]\"",
                "1",
                "-0.5",
                "true",
                "\"\"",
                "[1,]",
                "[,1]",
                "{\"a\":1,}",
                "{,}",
                "[,]",
                "[1 2]",
                "{\"a\" 1}",
                "{\"a\"}",
                "{",
                "[",
                "]",
                "}",
                "[}",
                "{]",
                "{\"\":}",
                "nul",
                "[nul]",
            ];
            return if rng.between(0, 3) == 0 {
                hostile_value(rng)
            } else {
                pick(rng, WRONG).into()
            };
        }
        make(rng)
    }

    /// A value for the field `f`: with `hostile` as [`value_for`] makes them; valid, never
    /// null when `f` is required.
    fn field_value(rng: &mut SplitMix64, f: &Field, hostile: bool, coerce: bool) -> String {
        loop {
            let value = value_for(rng, f.data_type(), hostile, coerce);
            if hostile || f.is_nullable() || value != "null" {
                return value;
            }
        }
    }

    /// A JSON array of `item`s: none, a few or more, whitespace; with `hostile`, one hostile
    /// item (or none) and sometimes broken commas.
    fn array_text(rng: &mut SplitMix64, item: &Field, hostile: bool, coerce: bool) -> String {
        let n = match rng.between(0, 8) {
            0 => 0,
            1 => rng.between(5, 12),
            _ => rng.between(1, 4),
        } as usize;
        let bad = if hostile {
            rng.between(0, 2 * n as u64 + 1) as usize
        } else {
            usize::MAX
        };
        let mut s = String::from("[");
        for k in 0..n {
            if k > 0 {
                s.push_str(ws(rng));
                s.push(',');
            }
            s.push_str(ws(rng));
            s.push_str(&field_value(rng, item, k == bad, coerce));
        }
        s.push_str(ws(rng));
        if hostile && rng.between(0, 12) == 0 {
            // A comma too many, or none between two items.
            match s.rfind(',') {
                Some(at) if rng.between(0, 2) == 0 => {
                    s.remove(at);
                }
                _ => s.push(','),
            }
        }
        s.push(']');
        s
    }

    /// A key: the field's name, sometimes with escapes.
    fn key(rng: &mut SplitMix64, name: &str) -> String {
        // A character as JSON escapes it (a surrogate pair beyond the BMP).
        let escaped = |c: char, upper: bool| -> String {
            c.encode_utf16(&mut [0; 2])
                .iter()
                .map(|u| match upper {
                    true => format!("\\u{u:04X}"),
                    false => format!("\\u{u:04x}"),
                })
                .collect()
        };
        match rng.between(0, 10) {
            0 => {
                // The first character as a unicode escape.
                let mut chars = name.chars();
                let first = chars.next().map(|c| escaped(c, false)).unwrap_or_default();
                format!("\"{first}{}\"", chars.as_str())
            }
            1 => {
                // The last character as a unicode escape.
                let mut chars = name.chars();
                let last = chars
                    .next_back()
                    .map(|c| escaped(c, true))
                    .unwrap_or_default();
                format!("\"{}{last}\"", chars.as_str())
            }
            _ => format!("\"{name}\""),
        }
    }

    /// A JSON object of `fields` (the record's or a struct's): fields in order or shuffled,
    /// some missing, unknown keys, whitespace; with `hostile`, one hostile value (or none), a
    /// required field missing, a key twice, unknown keys whose values are not JSON.
    fn object_text(rng: &mut SplitMix64, fields: &Fields, hostile: bool, coerce: bool) -> String {
        if !hostile && rng.between(0, 24) == 0 && fields.iter().all(|f| f.is_nullable()) {
            return pick(rng, &["{}", "{ }"]).into();
        }
        let mut order: Vec<usize> = (0..fields.len()).collect();
        if rng.between(0, 4) == 0 {
            for i in (1..order.len()).rev() {
                order.swap(i, rng.between(0, i as u64 + 1) as usize);
            }
        }
        let mut entries = Vec::new();
        // With `hostile`, about half the objects have one hostile value.
        let bad = if hostile {
            rng.between(0, 2 * order.len() as u64) as usize
        } else {
            usize::MAX
        };
        let count = order.len() as u64;
        for i in order {
            let f = &fields[i];
            let bad_value = i == bad;
            let missing = f.is_nullable() || bad_value;
            if missing && rng.between(0, 6) == 0 {
                continue;
            }
            let value = field_value(rng, f, bad_value, coerce);
            entries.push(format!(
                "{}{}:{}{}",
                key(rng, f.name()),
                ws(rng),
                ws(rng),
                value
            ));
            if hostile && rng.between(0, 8 * count) == 0 {
                // The same key twice.
                let again = field_value(rng, f, false, coerce);
                entries.push(format!("\"{}\":{again}", f.name()));
            }
            if rng.between(0, 8) == 0 {
                let name = pick(rng, &["extra", "nested", "x", "Id", "id2", ""]);
                if fields.iter().all(|f| f.name().as_str() != name) {
                    let invalid = hostile && rng.between(0, count) == 0;
                    entries.push(format!("\"{name}\": {}", unknown_value(rng, invalid)));
                }
            }
        }
        let mut text = String::from("{");
        for (n, e) in entries.iter().enumerate() {
            if n > 0 {
                text.push_str(ws(rng));
                text.push(',');
            }
            text.push_str(ws(rng));
            text.push_str(e);
        }
        text.push_str(ws(rng));
        text.push('}');
        text
    }

    /// A record of `schema` (see [`object_text`]); with `hostile`, sometimes a broken line.
    fn record(rng: &mut SplitMix64, schema: &Schema, hostile: bool, coerce: bool) -> Vec<u8> {
        let mut line = String::new();
        line.push_str(ws(rng));
        line.push_str(&object_text(rng, schema.fields(), hostile, coerce));
        line.push_str(ws(rng));
        let mut bytes = line.into_bytes();
        if hostile {
            match rng.between(0, 24) {
                0 => {
                    let at = rng.between(0, bytes.len() as u64) as usize;
                    bytes.truncate(at);
                }
                1 => bytes.extend_from_slice(b"{\"id\":1}"),
                2 => {
                    let at = bytes.len().saturating_sub(1);
                    bytes.insert(at, b',');
                }
                3 => {
                    let at = rng.between(0, bytes.len() as u64) as usize;
                    bytes.insert(at, 0xff);
                }
                4 => {
                    let at = rng.between(0, bytes.len() as u64) as usize;
                    bytes.insert(at, b',');
                }
                5 => bytes = pick(rng, &["[]", "null", "1", "\"x\"", "", "  ", "{", "}"]).into(),
                6 => {
                    let at = rng.between(0, bytes.len() as u64) as usize;
                    bytes.remove(at.min(bytes.len().saturating_sub(1)));
                }
                7 => bytes.extend_from_slice(b"\xc3"),
                8 => {
                    // A bracket or a brace too many or too few, anywhere.
                    let at = rng.between(0, bytes.len() as u64) as usize;
                    let c = pick(rng, &["[", "]", "{", "}", "\""]).as_bytes()[0];
                    bytes.insert(at, c);
                }
                _ => {}
            }
        }
        bytes
    }

    /// What the fast path did with the records: how many it read (blocks and records alone).
    #[derive(Debug, Default)]
    pub(in crate::decode) struct Tally {
        pub(in crate::decode) records: usize,
        pub(in crate::decode) records_fast: usize,
        pub(in crate::decode) blocks: usize,
        pub(in crate::decode) blocks_fast: usize,
        /// Why the fast path gave up on records alone, and on how many of those the
        /// `arrow_json` path gave a batch.
        pub(in crate::decode) gave_up: std::collections::BTreeMap<String, (usize, usize)>,
    }

    impl Tally {
        /// Add `other`'s counts to these.
        pub(in crate::decode) fn add(&mut self, other: Tally) {
            self.records += other.records;
            self.records_fast += other.records_fast;
            self.blocks += other.blocks;
            self.blocks_fast += other.blocks_fast;
            for (reason, (n, ok)) in other.gave_up {
                let entry = self.gave_up.entry(reason).or_default();
                entry.0 += n;
                entry.1 += ok;
            }
        }
    }

    fn same(a: &Result<RecordBatch, String>, b: &Result<RecordBatch, String>) -> bool {
        match (a, b) {
            (Ok(a), Ok(b)) => a == b && a.schema() == b.schema(),
            (Err(a), Err(b)) => a == b,
            _ => false,
        }
    }

    /// `lines` as one buffer (each ended by a line break) and their records.
    pub(in crate::decode) fn block_of(lines: &[impl AsRef<[u8]>]) -> (Vec<u8>, Vec<Rec>) {
        let mut buf = Vec::new();
        let mut recs = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let start = buf.len();
            buf.extend_from_slice(line.as_ref());
            recs.push(Rec {
                start,
                end: buf.len(),
                line: i as u64 + 1,
            });
            buf.push(b'\n');
        }
        (buf, recs)
    }

    /// Decode `lines` with the fast path and the `arrow_json` path, alone and in blocks, and
    /// check that every batch the fast path makes is the `arrow_json` path's.
    pub(in crate::decode) fn differential(
        format: TextFormat,
        schema: &SchemaRef,
        coerce: bool,
        lines: &[Vec<u8>],
        rng: &mut SplitMix64,
    ) -> Tally {
        let (buf, recs) = block_of(lines);
        let new = |fast: bool| {
            BlockDecoder::new(format, schema.clone(), 64)
                .with_coerce_primitive(coerce)
                .with_fast(fast)
        };
        let mut fast = new(true);
        let mut slow = new(false);
        assert!(fast.has_fast() && !slow.has_fast());
        let mut tally = Tally::default();
        let show = |r: &[Rec]| {
            r.iter()
                .map(|r| String::from_utf8_lossy(&buf[r.start..r.end]).into_owned())
                .collect::<Vec<_>>()
        };
        let mut check = |range: &[Rec], tally: &mut Tally, alone: bool| {
            let expected = slow.decode(&buf, range);
            let got = fast.decode_fast(&buf, range);
            if let Ok(batch) = &got {
                assert!(
                    matches!(&expected, Ok(e) if e == batch && e.schema() == batch.schema()),
                    "the fast path read {:?}\nas {batch:?}\nthe general path: {expected:?}",
                    show(range)
                );
            }
            // Through `decode` (fast path first, then the fallback): always the same result.
            let through = fast.decode(&buf, range);
            assert!(
                same(&through, &expected),
                "{:?}: {through:?} / {expected:?}",
                show(range)
            );
            if alone {
                tally.records += 1;
                tally.records_fast += usize::from(got.is_ok());
                if let Err(reason) = &got {
                    let entry = tally.gave_up.entry(reason.clone()).or_default();
                    entry.0 += 1;
                    entry.1 += usize::from(expected.is_ok());
                }
            } else {
                tally.blocks += 1;
                tally.blocks_fast += usize::from(got.is_ok());
            }
        };
        for i in 0..recs.len() {
            check(&recs[i..i + 1], &mut tally, true);
        }
        let mut lo = 0;
        while lo < recs.len() {
            let hi = (lo + rng.between(1, 40) as usize).min(recs.len());
            check(&recs[lo..hi], &mut tally, false);
            lo = hi;
        }
        // Bisection: the same pieces with the fast path on and off.
        let pieces = |d: &mut BlockDecoder| {
            let mut out = Vec::new();
            d.decode_range(&buf, &recs, 0, recs.len(), &mut out);
            out.into_iter()
                .map(|p| match p {
                    Piece::Good(b) => Ok(b),
                    Piece::Bad(i, reason) => Err(format!("{i}: {reason}")),
                })
                .collect::<Vec<_>>()
        };
        let a = pieces(&mut fast);
        let b = pieces(&mut slow);
        let rows = |p: &[Result<RecordBatch, String>]| {
            let good: Vec<&RecordBatch> = p.iter().filter_map(|r| r.as_ref().ok()).collect();
            let bad: Vec<&String> = p.iter().filter_map(|r| r.as_ref().err()).collect();
            let all = arrow_select::concat::concat_batches(schema, good).unwrap();
            (all, bad.into_iter().cloned().collect::<Vec<_>>())
        };
        assert_eq!(rows(&a), rows(&b));
        tally
    }

    /// [`differential`] over `blocks` blocks of 1–79 records made by `record`, seeded by
    /// `seed`: the tallies added up.
    pub(in crate::decode) fn run_blocks(
        format: TextFormat,
        schema: &SchemaRef,
        coerce: bool,
        seed: u64,
        blocks: usize,
        mut record: impl FnMut(&mut SplitMix64) -> Vec<u8>,
    ) -> Tally {
        let mut rng = SplitMix64(seed);
        let mut total = Tally::default();
        for _ in 0..blocks {
            let n = rng.between(1, 80) as usize;
            let lines: Vec<Vec<u8>> = (0..n).map(|_| record(&mut rng)).collect();
            total.add(differential(format, schema, coerce, &lines, &mut rng));
        }
        total
    }

    fn run(schema: SchemaRef, coerce: bool, hostile: bool, seed: u64, blocks: usize) -> Tally {
        let total = run_blocks(TextFormat::Ndjson, &schema, coerce, seed, blocks, |rng| {
            record(rng, &schema, hostile, coerce)
        });
        println!("{schema:?} coerce={coerce} hostile={hostile}: {total:?}");
        total
    }

    #[test]
    fn valid_records_take_the_fast_path_with_the_same_batches() {
        for (seed, schema) in [
            (1, wide_schema()),
            (2, numeric_schema()),
            (3, many_schema()),
        ] {
            let t = run(schema, false, false, seed, 60);
            // Valid records the fast path gives up on: integers as `12.0`/`1e3` or too big
            // ones, numbers in string columns, dates as numbers with fractions.
            assert!(t.records_fast * 3 >= t.records, "{t:?}");
            assert!(t.blocks_fast > 0, "{t:?}");
        }
        let t = run(wide_schema(), true, false, 4, 60);
        assert!(t.records_fast * 3 >= t.records, "{t:?}");
    }

    #[test]
    fn hostile_records_are_never_read_differently() {
        for (seed, schema) in [
            (11, wide_schema()),
            (12, numeric_schema()),
            (13, many_schema()),
        ] {
            run(schema.clone(), false, true, seed, 150);
            run(schema, true, true, seed + 100, 50);
        }
    }

    /// Every supported type, by hand: the fast path reads these lines (and gives the
    /// `arrow_json` path's batch, checked by `differential`).
    #[test]
    fn the_fast_path_reads_every_supported_type() {
        let schema = wide_schema();
        let lines = [
            r#"{"id": -9223372036854775808, "i8": -128, "i16": 32767, "i32": "-5", "u8": 255, "u16": 0, "u32": 4294967295, "u64": 18446744073709551615, "f64": 1234.5678901234567, "f32": 3.4028235e38, "ok": true, "name": "a\u00e9\"\\\/\ud83d\ude00", "large": "", "at": "2026-11-25T10:00:00.123Z", "local": "2026-11-25 10:00:00", "shifted": "2026-11-25T10:00:00+05:00", "nanos": 1700000000000000000, "day": "2026-11-25", "req_f": -0.0, "req_s": "x"}"#,
            "\t{ \"req_s\" : \"y\" ,\"id\":9223372036854775807,\"req_f\":5e-324, \"extra\": {\"a\": [1, {\"b\": [null, \"\\\"}\"]}]}, \"f64\": \"1.5\", \"day\": 19000, \"at\": 1700000000000 } \r",
            r#"{"id": 0, "req_f": 1e308, "req_s": "z", "f64": null, "ok": false, "\u0069\u0038": 1, "f32": "-2.5"}"#,
            r#"{"id": 1e3, "i16": 12.0, "i32": " 7", "u64": "1.8446744073709551615e19", "req_f": 0, "req_s": ""}"#,
        ];
        let lines: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
        let t = differential(
            TextFormat::Ndjson,
            &schema,
            false,
            &lines,
            &mut SplitMix64(5),
        );
        assert_eq!(t.records_fast, 4, "{t:?}");
        assert_eq!(t.blocks_fast, t.blocks, "{t:?}");

        let mut d = BlockDecoder::new(TextFormat::Ndjson, schema, 64);
        let (buf, recs) = block_of(&lines);
        let batch = d.decode_fast(&buf, &recs).unwrap();
        let f64s = batch
            .column(8)
            .as_any()
            .downcast_ref::<arrow_array::Float64Array>()
            .unwrap();
        assert_eq!(f64s.value(0), 1234.5678901234567);
        assert_eq!(f64s.value(1), 1.5);
        assert!(f64s.is_null(2));
        let names = batch
            .column(11)
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap();
        assert_eq!(names.value(0), "aé\"\\/😀");
        let small = batch
            .column(1)
            .as_any()
            .downcast_ref::<arrow_array::Int8Array>()
            .unwrap();
        assert_eq!(small.value(2), 1);
    }

    /// Found by the `ndjson_fast` fuzz target (on arrow-json 60.2, which refuses a float
    /// timestamp outside `i64` where 60.1 saturates it): a timestamp number beyond `i64` was
    /// read as the float cast to `i64`; the fast path now reads integers alone and leaves
    /// other numbers to `arrow_json`. Input in `fuzz/corpus/ndjson_fast/`.
    #[test]
    fn timestamp_numbers_beyond_i64_are_left_to_arrow_json() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "at",
            tz(TimeUnit::Millisecond, Some("UTC")),
            true,
        )]));
        let mut d = BlockDecoder::new(TextFormat::Ndjson, schema, 64);
        for line in [
            r#"{"at": 170000170000000000000000}"#,
            r#"{"at": 1e300}"#,
            r#"{"at": 1.5e12}"#,
            r#"{"at": 1.7}"#,
        ] {
            let recs = [Rec {
                start: 0,
                end: line.len(),
                line: 1,
            }];
            assert!(d.decode_fast(line.as_bytes(), &recs).is_err(), "{line}");
        }
    }

    /// Found by the `ndjson_fast` fuzz target: `arrow_json` decodes the surrogate pair
    /// `\ud84d\ude00` (U+23600) as U+13600 (it combines the halves with `|` where a carry is
    /// due). The general path now writes such pairs as UTF-8 before `arrow_json`, and both
    /// paths read the code point, in values and in keys. Input in `fuzz/corpus/ndjson_fast/`.
    #[test]
    fn surrogate_pairs_are_read_as_their_code_points_by_both_paths() {
        let schema = Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, true)]));
        let recs = |line: &str| {
            [Rec {
                start: 0,
                end: line.len(),
                line: 1,
            }]
        };
        let name = |batch: &RecordBatch| {
            batch
                .column(0)
                .as_any()
                .downcast_ref::<arrow_array::StringArray>()
                .map(|a| a.value(0).to_string())
        };
        for (line, text) in [
            (r#"{"name": "\ud84d\ude00"}"#, "\u{23600}"),
            (
                r#"{"name": "a\ud84d\ude00b\uD869\uDED6"}"#,
                "a\u{23600}b\u{2A6D6}",
            ),
            (r#"{"name": "\ud83d\ude00"}"#, "\u{1F600}"),
            (r#"{"name": "\ud800\udc00"}"#, "\u{10000}"),
            (r#"{"name": "\udbbf\udfff"}"#, "\u{FFFFF}"),
            (r#"{"name": "\\ud84d\\ude00"}"#, r"\ud84d\ude00"),
        ] {
            let mut fast = BlockDecoder::new(TextFormat::Ndjson, schema.clone(), 64);
            let batch = fast.decode_fast(line.as_bytes(), &recs(line)).unwrap();
            assert_eq!(name(&batch).as_deref(), Some(text), "fast: {line}");
            let mut general =
                BlockDecoder::new(TextFormat::Ndjson, schema.clone(), 64).with_fast(false);
            let batch = general.decode(line.as_bytes(), &recs(line)).unwrap();
            assert_eq!(name(&batch).as_deref(), Some(text), "general: {line}");
        }
        // A key written with a pair names the column.
        let keyed = Arc::new(Schema::new(vec![Field::new(
            "\u{23600}",
            DataType::Int64,
            true,
        )]));
        let line = r#"{"\ud84d\ude00": 1}"#;
        let mut general = BlockDecoder::new(TextFormat::Ndjson, keyed.clone(), 64).with_fast(false);
        let batch = general.decode(line.as_bytes(), &recs(line)).unwrap();
        assert_eq!(batch.column(0).null_count(), 0, "general reads the key");
        let mut fast = BlockDecoder::new(TextFormat::Ndjson, keyed, 64);
        let batch = fast.decode_fast(line.as_bytes(), &recs(line)).unwrap();
        assert_eq!(batch.column(0).null_count(), 0, "fast reads the key");
        let lines: Vec<Vec<u8>> = (0xD800u32..0xDC00)
            .step_by(7)
            .map(|high| format!(r#"{{"name": "\u{high:04x}\udc{:02x}"}}"#, high % 256).into_bytes())
            .collect();
        differential(
            TextFormat::Ndjson,
            &schema,
            false,
            &lines,
            &mut SplitMix64(9),
        );
    }

    /// Records the fast path must give up on (the `arrow_json` path rejects them, or reads
    /// them in a way the fast path leaves to it).
    #[test]
    fn the_fast_path_gives_up_on_what_it_does_not_read() {
        let schema = numeric_schema();
        let mut d = BlockDecoder::new(TextFormat::Ndjson, schema, 64);
        for line in [
            r#"{"id": 1.5}"#,
            r#"{"id": 9223372036854775808}"#,
            r#"{"id": 01}"#,
            r#"{"id": +1}"#,
            r#"{"id": 1, "a": .5}"#,
            r#"{"id": 1, "a": 1.}"#,
            r#"{"id": 1, "a": NaN}"#,
            r#"{"id": 1, "a": -}"#,
            r#"{"id": 1, "id": 2}"#,
            r#"{"id": 1,}"#,
            r#"{"id": 1 "a": 2}"#,
            r#"{"qty": 1}"#,
            r#"{"id": null}"#,
            r#"{"id": 1}{"id": 2}"#,
            r#"{"id": 1, "kind": "\ud800"}"#,
            r#"{"id": 1, "kind": "\x"}"#,
            r#"{"id": 1, "kind": 5}"#,
            r#"{"id": 1, "flag": "true"}"#,
            r#"{"id": 1, "extra": [1 2]}"#,
            r#"{"id": 1"#,
            "",
            "[]",
        ] {
            let recs = [Rec {
                start: 0,
                end: line.len(),
                line: 1,
            }];
            assert!(d.decode_fast(line.as_bytes(), &recs).is_err(), "{line}");
        }
    }

    /// The benchmark's nested schema (`landing_corpus --shape nested`), typed as its spec
    /// types it.
    pub(in crate::decode) fn nested_schema() -> SchemaRef {
        let parse = |t: &str| crate::decode::parse_type(t).unwrap();
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "user",
                parse(r#"Struct("name": Utf8, "age": Int64, "tags": List(Utf8))"#),
                true,
            ),
            Field::new(
                "items",
                parse(r#"List(Struct("sku": Utf8, "qty": Int64, "price": Float64))"#),
                true,
            ),
            Field::new("meta", parse(r#"Struct("a": Boolean, "b": Utf8)"#), true),
        ]))
    }

    fn list(item: DataType, nullable: bool) -> DataType {
        DataType::List(Arc::new(Field::new("item", item, nullable)))
    }

    fn large_list(item: DataType, nullable: bool) -> DataType {
        DataType::LargeList(Arc::new(Field::new("element", item, nullable)))
    }

    fn structure(fields: Vec<Field>) -> DataType {
        DataType::Struct(fields.into())
    }

    /// Structs of structs and lists, lists of structs and lists, required and nullable at
    /// each level, and a struct wider than [`LINEAR_LOOKUP`].
    fn deep_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "s",
                structure(vec![
                    Field::new("a", DataType::Int32, true),
                    Field::new("b", DataType::Utf8, false),
                    Field::new(
                        "t",
                        structure(vec![
                            Field::new("x", DataType::Float64, false),
                            Field::new("l", list(DataType::Int64, false), true),
                        ]),
                        false,
                    ),
                    Field::new("at", tz(TimeUnit::Millisecond, Some("UTC")), true),
                ]),
                true,
            ),
            Field::new(
                "r",
                structure(vec![
                    Field::new("k", DataType::Boolean, false),
                    Field::new("day", DataType::Date32, true),
                ]),
                false,
            ),
            Field::new(
                "l",
                list(
                    structure(vec![
                        Field::new("sku", DataType::Utf8, false),
                        Field::new("q", DataType::UInt16, true),
                        Field::new("tags", large_list(DataType::LargeUtf8, true), true),
                    ]),
                    true,
                ),
                true,
            ),
            Field::new("ll", large_list(list(DataType::Int8, true), false), true),
            Field::new("req_l", list(DataType::Float32, false), false),
            Field::new(
                "w",
                structure(
                    (0..20)
                        .map(|i| Field::new(format!("c{i}"), DataType::UInt32, true))
                        .collect(),
                ),
                true,
            ),
        ]))
    }

    /// A type the fast path reads: a scalar, or (at most `depth` levels more) a struct or a
    /// list, required or nullable at each level.
    fn random_type(rng: &mut SplitMix64, depth: usize) -> DataType {
        let choice = if depth == 0 { 0 } else { rng.between(0, 6) };
        match choice {
            3 => {
                let n = rng.between(1, 5) as usize;
                DataType::Struct(random_fields(rng, depth - 1, n))
            }
            4 | 5 => {
                let item = Arc::new(Field::new(
                    pick(rng, &["item", "element"]),
                    random_type(rng, depth - 1),
                    rng.between(0, 3) != 0,
                ));
                if rng.between(0, 4) == 0 {
                    DataType::LargeList(item)
                } else {
                    DataType::List(item)
                }
            }
            _ => match rng.between(0, 14) {
                0 => DataType::Int64,
                1 => DataType::Int32,
                2 => DataType::Int8,
                3 => DataType::UInt16,
                4 => DataType::UInt64,
                5 => DataType::Float64,
                6 => DataType::Float32,
                7 => DataType::Boolean,
                8 => DataType::Utf8,
                9 => DataType::LargeUtf8,
                10 => tz(TimeUnit::Millisecond, Some("UTC")),
                11 => tz(TimeUnit::Microsecond, None),
                12 => tz(TimeUnit::Second, Some("+01:00")),
                _ => DataType::Date32,
            },
        }
    }

    /// `n` fields of distinct names, of [`random_type`]s.
    fn random_fields(rng: &mut SplitMix64, depth: usize, n: usize) -> Fields {
        let mut names = vec![
            "a", "b", "c", "name", "age", "tags", "sku", "qty", "price", "meta", "x y", "é",
            "item", "values", "deep", "😀",
        ];
        for i in (1..names.len()).rev() {
            names.swap(i, rng.between(0, i as u64 + 1) as usize);
        }
        names
            .into_iter()
            .take(n)
            .map(|name| Field::new(name, random_type(rng, depth), rng.between(0, 3) != 0))
            .collect()
    }

    /// A schema of 1–5 columns of [`random_type`]s, nested up to three levels.
    fn random_schema(rng: &mut SplitMix64) -> SchemaRef {
        let n = rng.between(1, 6) as usize;
        Arc::new(Schema::new(random_fields(rng, 3, n)))
    }

    /// A record of [`nested_schema`] as `landing_corpus --shape nested` writes them.
    fn nested_benchmark_record(rng: &mut SplitMix64, id: usize) -> Vec<u8> {
        const TAGS: &[&str] = &["vip", "new", "returning", "trial", "churn-risk", "beta"];
        let word = |rng: &mut SplitMix64, len: u64| -> String {
            (0..rng.between(len, len * 2))
                .map(|_| char::from(b'a' + rng.between(0, 26) as u8))
                .collect()
        };
        let mut s = format!(
            r#"{{"id":{id},"user":{{"name":"{} {}","age":{},"tags":["#,
            word(rng, 3),
            word(rng, 4),
            rng.between(18, 90)
        );
        for t in 0..rng.between(0, 5) {
            if t > 0 {
                s.push(',');
            }
            s.push_str(&format!("\"{}\"", pick(rng, TAGS)));
        }
        s.push_str(r#"]},"items":["#);
        for t in 0..rng.between(1, 6) {
            if t > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                r#"{{"sku":"SKU-{:06}","qty":{},"price":{:?}}}"#,
                rng.between(0, 1_000_000),
                rng.between(1, 10),
                0.5 + rng.unit() * 999.0
            ));
        }
        let b = if rng.between(0, 100) < 40 {
            "null".to_string()
        } else {
            format!("\"{}\"", word(rng, 4))
        };
        s.push_str(&format!(
            r#"],"meta":{{"a":{},"b":{b}}}}}"#,
            rng.next_u64() & 1 == 1
        ));
        s.into_bytes()
    }

    #[test]
    fn the_nested_benchmark_schema_takes_the_fast_path() {
        let schema = nested_schema();
        let mut rng = SplitMix64(77);
        let lines: Vec<Vec<u8>> = (0..400)
            .map(|i| nested_benchmark_record(&mut rng, i))
            .collect();
        let t = differential(TextFormat::Ndjson, &schema, false, &lines, &mut rng);
        assert_eq!(t.records_fast, t.records, "{t:?}");
        assert_eq!(t.blocks_fast, t.blocks, "{t:?}");
        // One block of them all, through the fast path alone.
        let (buf, recs) = block_of(&lines);
        let mut d = BlockDecoder::new(TextFormat::Ndjson, schema.clone(), 8192);
        let batch = d.decode_fast(&buf, &recs).unwrap();
        assert_eq!(batch.num_rows(), 400);
        assert_eq!(batch.schema(), schema);
    }

    #[test]
    fn valid_nested_records_take_the_fast_path_with_the_same_batches() {
        for (seed, schema) in [(21, nested_schema()), (22, deep_schema())] {
            for coerce in [false, true] {
                let t = run(schema.clone(), coerce, false, seed, 40);
                assert!(t.records_fast * 10 >= t.records * 9, "{t:?}");
                assert!(t.blocks_fast * 10 >= t.blocks * 9, "{t:?}");
            }
        }
        let mut rng = SplitMix64(23);
        let mut total = Tally::default();
        for n in 0..60 {
            let schema = random_schema(&mut rng);
            total.add(run(schema, n % 3 == 0, false, 1000 + n, 8));
        }
        println!("random schemas: {total:?}");
        assert!(total.records_fast * 10 >= total.records * 9, "{total:?}");
        assert!(total.blocks_fast * 10 >= total.blocks * 9, "{total:?}");
    }

    #[test]
    fn hostile_nested_records_are_never_read_differently() {
        for (seed, schema) in [(31, nested_schema()), (32, deep_schema())] {
            run(schema.clone(), false, true, seed, 100);
            run(schema, true, true, seed + 100, 40);
        }
        let mut rng = SplitMix64(33);
        for n in 0..100 {
            let schema = random_schema(&mut rng);
            run(schema, n % 3 == 0, true, 2000 + n, 10);
        }
    }

    fn one(line: &str) -> [Rec; 1] {
        [Rec {
            start: 0,
            end: line.len(),
            line: 1,
        }]
    }

    /// Nulls, missing keys, empty objects and lists, unknown keys, by hand: the fast path
    /// reads them as `arrow_json` does (checked by `differential`), and gives up on what
    /// `arrow_json` rejects or reads otherwise.
    #[test]
    fn nested_nulls_and_empty_values_are_read_as_arrow_json_reads_them() {
        use arrow_array::cast::AsArray;
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "s",
                structure(vec![
                    Field::new("a", DataType::Int64, true),
                    Field::new("req", DataType::Utf8, false),
                    Field::new(
                        "inner",
                        structure(vec![Field::new("x", DataType::Int32, false)]),
                        false,
                    ),
                    Field::new("n", list(DataType::Int64, false), false),
                ]),
                true,
            ),
            Field::new("l", list(DataType::Int64, true), true),
            Field::new("lr", large_list(DataType::Utf8, false), true),
            Field::new(
                "ls",
                list(
                    structure(vec![Field::new("v", DataType::Utf8, false)]),
                    true,
                ),
                true,
            ),
        ]));
        let lines = [
            r#"{"s": null, "l": null, "lr": null, "ls": null}"#,
            r#"{}"#,
            r#"{"s": {"req": "a", "inner": {"x": 1}, "n": []}, "l": [], "lr": [], "ls": []}"#,
            r#"{"s": {"req": "b", "n": [1, 2], "inner": {"x": "2", "zz": [1, {"q": null}]}, "unknown": {"k": [1]}, "a": 5}, "l": [1, null, 3], "lr": ["x", "y"], "ls": [null, {"v": "w"}, {"v": "z", "q": 1}]}"#,
            r#"{"s": {"a": null, "req": "c", "inner": {"x": 3, "\u0078x": 4}, "n": [3]}, "l": [null], "ls": [null]}"#,
        ];
        let bytes: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
        let t = differential(
            TextFormat::Ndjson,
            &schema,
            false,
            &bytes,
            &mut SplitMix64(3),
        );
        assert_eq!(t.records_fast, lines.len(), "{t:?}");
        assert_eq!(t.blocks_fast, t.blocks, "{t:?}");

        let (buf, recs) = block_of(&lines);
        let mut d = BlockDecoder::new(TextFormat::Ndjson, schema.clone(), 64);
        let batch = d.decode_fast(&buf, &recs).unwrap();
        let s = batch.column(0).as_struct();
        assert!(s.is_null(0) && s.is_null(1) && s.is_valid(2));
        // Under a null struct, its required fields are null too (masked by the struct's).
        let inner = s.column(2).as_struct();
        assert!(inner.is_null(0) && inner.is_null(1) && inner.is_valid(2));
        assert!(inner.column(0).is_null(0));
        assert_eq!(
            inner
                .column(0)
                .as_primitive::<arrow_array::types::Int32Type>()
                .value(3),
            2
        );
        assert!(s.column(0).is_null(2));
        assert_eq!(
            s.column(0)
                .as_primitive::<arrow_array::types::Int64Type>()
                .value(3),
            5
        );
        let l = batch.column(1).as_list::<i32>();
        assert!(l.is_null(0) && l.is_null(1) && l.is_valid(2));
        assert_eq!(l.value_length(2), 0);
        assert_eq!(l.value_length(3), 3);
        assert!(l.value(3).is_null(1));
        let lr = batch.column(2).as_list::<i64>();
        assert!(lr.is_null(4) && lr.is_valid(3));
        let ls = batch.column(3).as_list::<i32>();
        assert_eq!(ls.value_length(3), 3);
        assert!(ls.value(3).is_null(0));

        // What `arrow_json` rejects, or reads otherwise (a key twice: the last one).
        let mut d = BlockDecoder::new(TextFormat::Ndjson, schema, 64);
        for line in [
            r#"{"s": {"inner": {"x": 1}, "n": []}}"#,
            r#"{"s": {"req": null, "inner": {"x": 1}, "n": []}}"#,
            r#"{"s": {"req": "a", "n": []}}"#,
            r#"{"s": {"req": "a", "inner": {"x": 1}}}"#,
            r#"{"s": {"req": "a", "inner": null, "n": []}}"#,
            r#"{"s": {"req": "a", "inner": {}, "n": []}}"#,
            r#"{"s": {"req": "a", "inner": {"x": null}, "n": []}}"#,
            r#"{"s": {"req": "a", "inner": {"x": 1}, "n": null}}"#,
            r#"{"s": {"req": "a", "inner": {"x": 1}, "n": [null]}}"#,
            r#"{"s": {"req": "a", "req": "b", "inner": {"x": 1}, "n": []}}"#,
            r#"{"s": {"req": "a", "inner": {"x": 1, "x": 2}, "n": []}}"#,
            r#"{"s": {"req": "a", "inner": {"x": 1.5}, "n": []}}"#,
            r#"{"s": {"req": "a", "inner": {"x": 1}, "n": [],}}"#,
            r#"{"s": {"req": "a", "inner": {"x": 1}, "n": [1,]}}"#,
            r#"{"s": {"req": "a", "inner": {"x": 1}, "n": [1 2]}}"#,
            r#"{"s": {"req": "a", "inner": {"x": 1}, "n": [], "u": [1,]}}"#,
            r#"{"s": []}"#,
            r#"{"s": [1]}"#,
            r#"{"s": 1}"#,
            r#"{"s": "x"}"#,
            r#"{"s": "{}"}"#,
            r#"{"l": {}}"#,
            r#"{"l": 1}"#,
            r#"{"l": "[]"}"#,
            r#"{"l": [[1]]}"#,
            r#"{"l": [{}]}"#,
            r#"{"l": [true]}"#,
            r#"{"lr": [null]}"#,
            r#"{"lr": ["a", null]}"#,
            r#"{"lr": [1]}"#,
            r#"{"ls": [{}]}"#,
            r#"{"ls": [{"v": null}]}"#,
            r#"{"ls": [[]]}"#,
            r#"{"ls": [{"v": "a", "v": "b"}]}"#,
            r#"{"ls": [{"v": "a"}"#,
        ] {
            assert!(
                d.decode_fast(line.as_bytes(), &one(line)).is_err(),
                "{line}"
            );
        }
    }

    /// `coerce_primitive` reads numbers and booleans into string fields at any depth, as
    /// `arrow_json` does.
    #[test]
    fn coerce_primitive_applies_at_any_depth() {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "s",
                structure(vec![Field::new("t", DataType::Utf8, true)]),
                true,
            ),
            Field::new("l", large_list(DataType::LargeUtf8, true), true),
        ]));
        let lines: Vec<Vec<u8>> = [
            r#"{"s": {"t": 12}, "l": [1.5, true, "x", -0, 1e3, null]}"#,
            r#"{"s": {"t": false}, "l": [12345678901234567890123]}"#,
        ]
        .iter()
        .map(|l| l.as_bytes().to_vec())
        .collect();
        let t = differential(
            TextFormat::Ndjson,
            &schema,
            true,
            &lines,
            &mut SplitMix64(4),
        );
        assert_eq!(t.records_fast, 2, "{t:?}");
        // Without it, both paths reject them.
        let t = differential(
            TextFormat::Ndjson,
            &schema,
            false,
            &lines,
            &mut SplitMix64(4),
        );
        assert_eq!(t.records_fast, 0, "{t:?}");
    }

    /// Lists nested as deep as [`MAX_DEPTH`] allows are read; deeper ones, and types the fast
    /// path does not read at any depth, leave the schema to `arrow_json`.
    #[test]
    fn nesting_depth_and_unsupported_nested_types() {
        let nested = |depth: usize| {
            let mut t = DataType::Int64;
            for _ in 0..depth {
                t = list(t, true);
            }
            Arc::new(Schema::new(vec![Field::new("v", t, true)]))
        };
        let deep = nested(MAX_DEPTH - 2);
        let line = format!(
            "{{\"v\": {}1{}}}",
            "[".repeat(MAX_DEPTH - 2),
            "]".repeat(MAX_DEPTH - 2)
        );
        let t = differential(
            TextFormat::Ndjson,
            &deep,
            false,
            &[line.into_bytes()],
            &mut SplitMix64(5),
        );
        assert_eq!(t.records_fast, 1, "{t:?}");
        let no_fast =
            |schema: SchemaRef| !BlockDecoder::new(TextFormat::Ndjson, schema, 64).has_fast();
        assert!(no_fast(nested(MAX_DEPTH + 2)));
        let one_field = |t: DataType| Arc::new(Schema::new(vec![Field::new("v", t, true)]));
        for t in [
            structure(vec![Field::new("d", DataType::Decimal128(10, 2), true)]),
            structure(vec![]),
            structure(vec![
                Field::new("a", DataType::Int64, true),
                Field::new("a", DataType::Utf8, true),
            ]),
            list(DataType::Binary, true),
            list(
                structure(vec![Field::new("d", DataType::Date64, true)]),
                true,
            ),
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Int64, true)), 2),
            DataType::Map(
                Arc::new(Field::new(
                    "entries",
                    structure(vec![
                        Field::new("key", DataType::Utf8, false),
                        Field::new("value", DataType::Int64, true),
                    ]),
                    false,
                )),
                false,
            ),
        ] {
            assert!(no_fast(one_field(t.clone())), "{t}");
        }
        assert!(!no_fast(deep));
        assert!(!no_fast(nested_schema()));
    }
}
