//! PostgreSQL's binary `COPY` format, as the snapshot reads its pages: an 11-byte signature,
//! flags and a header extension, then tuples (a 16-bit field count, each field a 32-bit
//! length, -1 for NULL, and its bytes), then a trailer (field count -1).

use bytes::{Buf, Bytes, BytesMut};

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Reads tuples from the chunks of a `COPY … TO STDOUT (FORMAT binary)` as they arrive.
///
/// The server sends each tuple as one message, so a chunk is read where it is, without a
/// copy; only a tuple cut across chunks is gathered in a buffer.
#[derive(Debug, Default)]
pub(crate) struct CopyReader {
    /// Unread data of the last chunk (when `buf` is empty).
    chunk: Bytes,
    /// Unread data gathered from several chunks (then `chunk` is empty).
    buf: BytesMut,
    header: bool,
    ended: bool,
    /// The current tuple's fields: byte ranges in the unread data, `None` for NULL.
    fields: Vec<Option<(usize, usize)>>,
    /// Length of the current tuple (dropped by the next call).
    current: usize,
}

impl CopyReader {
    /// Add the next chunk of the copy data.
    pub(crate) fn push(&mut self, chunk: Bytes) {
        self.drop_current();
        if self.buf.is_empty() && self.chunk.is_empty() {
            self.chunk = chunk;
        } else {
            if !self.chunk.is_empty() {
                self.buf.extend_from_slice(&std::mem::take(&mut self.chunk));
            }
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// The unread data.
    fn data(&self) -> &[u8] {
        if self.buf.is_empty() {
            &self.chunk
        } else {
            &self.buf
        }
    }

    fn advance(&mut self, n: usize) {
        if self.buf.is_empty() {
            self.chunk.advance(n);
        } else {
            self.buf.advance(n);
        }
    }

    /// Drop the tuple read last.
    fn drop_current(&mut self) {
        let n = std::mem::take(&mut self.current);
        self.advance(n);
        self.fields.clear();
    }

    /// Move to the next complete tuple: `Ok(true)` when there is one (read it with
    /// [`CopyReader::field`]), `Ok(false)` when more data is needed or the trailer was read.
    pub(crate) fn next_tuple(&mut self) -> Result<bool, String> {
        self.drop_current();
        if !self.header {
            let data = self.data();
            if data.len() < 19 {
                return Ok(false);
            }
            if &data[..11] != SIGNATURE {
                return Err("the data does not start with the binary COPY signature".into());
            }
            let flags = u32::from_be_bytes([data[11], data[12], data[13], data[14]]);
            if flags & (1 << 16) != 0 {
                return Err("the data has OIDs, which were not asked for".into());
            }
            let ext = u32::from_be_bytes([data[15], data[16], data[17], data[18]]) as usize;
            if data.len() < 19 + ext {
                return Ok(false);
            }
            self.advance(19 + ext);
            self.header = true;
        }
        let data = if self.buf.is_empty() {
            &self.chunk[..]
        } else {
            &self.buf[..]
        };
        if self.ended {
            return if data.is_empty() {
                Ok(false)
            } else {
                Err(format!("{} bytes after the trailer", data.len()))
            };
        }
        if data.len() < 2 {
            return Ok(false);
        }
        let count = i16::from_be_bytes([data[0], data[1]]);
        if count == -1 {
            self.advance(2);
            self.ended = true;
            return self.next_tuple();
        }
        let count = usize::try_from(count).map_err(|_| format!("field count {count}"))?;
        let mut at = 2;
        for _ in 0..count {
            let Some(len) = data.get(at..at + 4) else {
                self.fields.clear();
                return Ok(false);
            };
            let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            at += 4;
            if len == -1 {
                self.fields.push(None);
                continue;
            }
            let len = usize::try_from(len).map_err(|_| format!("field length {len}"))?;
            if data.len() < at + len {
                self.fields.clear();
                return Ok(false);
            }
            self.fields.push(Some((at, at + len)));
            at += len;
        }
        self.current = at;
        Ok(true)
    }

    /// Field `i` of the current tuple (`None`: NULL or no such field).
    pub(crate) fn field(&self, i: usize) -> Option<&[u8]> {
        let (from, to) = self.fields.get(i).copied().flatten()?;
        self.data().get(from..to)
    }

    /// Fields of the current tuple.
    pub(crate) fn len(&self) -> usize {
        self.fields.len()
    }

    /// The data ended: it must have ended with the trailer.
    pub(crate) fn finish(&self) -> Result<(), String> {
        let left = self.data().len() - self.current;
        if self.ended && left == 0 {
            Ok(())
        } else {
            Err(format!(
                "the data ended without its trailer ({left} bytes left)"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_data(tuples: &[&[Option<&[u8]>]]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend(0u32.to_be_bytes());
        out.extend(4u32.to_be_bytes());
        out.extend(b"ext!");
        for t in tuples {
            out.extend((t.len() as i16).to_be_bytes());
            for f in *t {
                match f {
                    None => out.extend((-1i32).to_be_bytes()),
                    Some(v) => {
                        out.extend((v.len() as i32).to_be_bytes());
                        out.extend(*v);
                    }
                }
            }
        }
        out.extend((-1i16).to_be_bytes());
        out
    }

    fn read_all(data: &[u8], chunk: usize) -> Result<Vec<Vec<Option<Vec<u8>>>>, String> {
        let mut r = CopyReader::default();
        let mut out = Vec::new();
        for c in data.chunks(chunk) {
            r.push(Bytes::copy_from_slice(c));
            while r.next_tuple()? {
                out.push(
                    (0..r.len())
                        .map(|i| r.field(i).map(<[u8]>::to_vec))
                        .collect(),
                );
            }
        }
        r.finish()?;
        Ok(out)
    }

    #[test]
    fn tuples_are_read_whatever_the_chunking() {
        let data = copy_data(&[
            &[Some(b"1"), None, Some(b"")],
            &[Some(&42i64.to_be_bytes()), Some(b"abc"), None],
        ]);
        let want = vec![
            vec![Some(b"1".to_vec()), None, Some(Vec::new())],
            vec![
                Some(42i64.to_be_bytes().to_vec()),
                Some(b"abc".to_vec()),
                None,
            ],
        ];
        for chunk in [1, 2, 3, 7, 19, 20, data.len()] {
            assert_eq!(read_all(&data, chunk).unwrap(), want, "chunks of {chunk}");
        }
        assert_eq!(read_all(&copy_data(&[]), 5).unwrap(), Vec::<Vec<_>>::new());
    }

    #[test]
    fn malformed_data_is_an_error_never_a_panic() {
        let good = copy_data(&[&[Some(b"x")]]);
        let mut bad_sig = good.clone();
        bad_sig[0] = b'X';
        assert!(read_all(&bad_sig, 64).unwrap_err().contains("signature"));
        // Cut anywhere before the trailer's end: no trailer.
        for cut in 0..good.len() {
            let err = read_all(&good[..cut], 3).unwrap_err();
            assert!(err.contains("without its trailer"), "{cut}: {err}");
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(
            read_all(&extra, 64)
                .unwrap_err()
                .contains("after the trailer")
        );
        let mut negative = good[..19 + 4].to_vec();
        negative.extend((1i16).to_be_bytes());
        negative.extend((-7i32).to_be_bytes());
        assert!(
            read_all(&negative, 64)
                .unwrap_err()
                .contains("field length -7")
        );
    }
}
