//! [`JsonDecoder`]: JSON records (one object each: a message, an API response item) into
//! Arrow batches of a fixed schema, with the records that do not fit set aside with the reason.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::block::{BlockDecoder, Piece, Rec, TextFormat};

/// What [`JsonDecoder::decode`] made of a list of records.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The records that fit the schema, in input order.
    pub batch: RecordBatch,
    /// The records that did not: their index in the input and why (e.g. `invalid JSON`,
    /// `expected a number for column "amount"`, `column "id" is missing`).
    pub rejected: Vec<(usize, String)>,
}

/// Decodes JSON records into Arrow with one `arrow_json` decode per call in the good case;
/// a failing call is bisected down to the bad records, so one bad record costs about
/// `2·log2(n)` extra decodes and never drops its neighbours.
///
/// Columns missing from a record are null (an error for a non-nullable column); keys not in
/// the schema are ignored. Timestamps are parsed from RFC 3339 strings or numbers; `UTC`
/// columns accept any offset.
///
/// ```
/// use std::sync::Arc;
/// use arrow_schema::{DataType, Field, Schema};
/// use arcane_sources::decode::JsonDecoder;
///
/// let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
/// let mut decoder = JsonDecoder::new(schema);
/// let out = decoder.decode(&[r#"{"id": 1}"#, r#"{"id": "x"}"#, r#"{"id": 3}"#]);
/// assert_eq!(out.batch.num_rows(), 2);
/// assert_eq!(out.rejected[0].0, 1);
/// ```
pub struct JsonDecoder {
    schema: SchemaRef,
    inner: BlockDecoder,
    buf: Vec<u8>,
    recs: Vec<Rec>,
}

impl std::fmt::Debug for JsonDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonDecoder")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl JsonDecoder {
    /// A decoder producing batches of `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            inner: BlockDecoder::new(TextFormat::Ndjson, schema.clone(), 1024),
            schema,
            buf: Vec::new(),
            recs: Vec::new(),
        }
    }

    /// The schema of the batches.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decode `records`, each holding exactly one JSON object.
    pub fn decode<R: AsRef<[u8]>>(&mut self, records: &[R]) -> Decoded {
        self.buf.clear();
        self.recs.clear();
        let mut rejected = Vec::new();
        let mut index = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let bytes = r.as_ref();
            if bytes.iter().all(u8::is_ascii_whitespace) {
                rejected.push((i, "empty record; expected a JSON object".to_string()));
                continue;
            }
            let start = self.buf.len();
            self.buf.extend_from_slice(bytes);
            self.recs.push(Rec {
                start,
                end: self.buf.len(),
                line: i as u64,
            });
            self.buf.push(b'\n');
            index.push(i);
        }
        let mut batches = Vec::new();
        if !self.recs.is_empty() {
            let mut pieces = Vec::new();
            self.inner
                .decode_range(&self.buf, &self.recs, 0, self.recs.len(), &mut pieces);
            for piece in pieces {
                match piece {
                    Piece::Good(batch) => batches.push(batch),
                    Piece::Bad(at, reason) => rejected.push((index[at], reason)),
                }
            }
        }
        rejected.sort_by_key(|(i, _)| *i);
        let batch = match batches.len() {
            0 => RecordBatch::new_empty(self.schema.clone()),
            1 => batches.remove(0),
            _ => arrow_select::concat::concat_batches(&self.schema, &batches)
                .unwrap_or_else(|_| RecordBatch::new_empty(self.schema.clone())),
        };
        Decoded { batch, rejected }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Array, Int64Array, StringArray, TimestampMillisecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};

    use super::*;

    #[test]
    fn good_rows_keep_their_order_and_bad_ones_are_named() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
        ]));
        let mut d = JsonDecoder::new(schema.clone());
        let records = [
            r#"{"id": 1, "name": "a", "at": "2026-11-25T10:00:00Z"}"#,
            "not json",
            "{\n  \"id\": 3\n}",
            r#"{"name": "no id"}"#,
            "  ",
            r#"{"id": 5, "extra": true}"#,
            r#"{"id": 6}{"id": 7}"#,
        ];
        let out = d.decode(&records);
        assert_eq!(out.batch.schema(), schema);
        let ids = out
            .batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.values(), &[1, 3, 5]);
        let names = out
            .batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(names.value(0), "a");
        assert!(names.is_null(1));
        let at = out
            .batch
            .column(2)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(at.value(0), 1_795_600_800_000);
        let bad: Vec<usize> = out.rejected.iter().map(|(i, _)| *i).collect();
        assert_eq!(bad, vec![1, 3, 4, 6]);
        assert!(out.rejected[1].1.contains("id"), "{:?}", out.rejected);

        let out = d.decode::<&str>(&[]);
        assert_eq!(out.batch.num_rows(), 0);
        assert!(out.rejected.is_empty());
    }

    /// Found by the `ndjson_decoder` fuzz target: a record ending inside a string ran into
    /// the next record (`arrow_json` reads strings across line breaks), and a record holding
    /// two objects made the row count match, so the block was taken with rows shifted between
    /// records: `{"id":1,"name":"x` + `y"}` became one row, `{"id":2}{"id":3}` two.
    #[test]
    fn a_record_ending_inside_a_string_does_not_run_into_the_next() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let mut d = JsonDecoder::new(schema);
        let records = [
            r#"{"id":1,"name":"x"#,
            r#"y"}"#,
            r#"{"id":2}{"id":3}"#,
            r#"{"id":4}"#,
        ];
        let out = d.decode(&records);
        let ids = out
            .batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.values(), &[4]);
        let bad: Vec<usize> = out.rejected.iter().map(|(i, _)| *i).collect();
        assert_eq!(bad, vec![0, 1, 2], "{:?}", out.rejected);
        assert!(
            out.rejected[0].1.contains("incomplete JSON"),
            "{:?}",
            out.rejected
        );
        assert!(
            out.rejected[2].1.contains("2 JSON values"),
            "{:?}",
            out.rejected
        );

        // The fuzzer's input (NUL bytes inside the unterminated key), as it found it.
        let input: &[u8] = b"{\"id\":1,\"name\":\"a\",\"amount\":2.5,\"0\0\0\0true}\nd\":\"x\"}\n\n{\"id\":3}{\"id\":4}\n{\"!ame5.5}\n{\"name\n{\"name\":\"no id\"}";
        let records: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        let out = d.decode(&records);
        assert_eq!(out.batch.num_rows(), 0);
        assert_eq!(out.rejected.len(), records.len());
    }
}
