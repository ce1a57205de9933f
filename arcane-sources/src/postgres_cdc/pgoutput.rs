//! The `pgoutput` logical replication protocol (version 1) and PostgreSQL LSNs.

use std::fmt;

/// A WAL location (`pg_lsn`), printed the PostgreSQL way (`16/B374D848`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parse `X/Y` (two hex numbers).
    pub fn parse(text: &str) -> Option<Self> {
        let (hi, lo) = text.split_once('/')?;
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
            return None;
        }
        Some(Lsn((hi << 32) | lo))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Lsn::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("bad LSN {text:?}")))
    }
}

/// Microseconds between the Unix epoch and the PostgreSQL epoch (2000-01-01).
pub(crate) const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// A column of a `Relation` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelColumn {
    /// Part of the replica identity (key).
    pub key: bool,
    /// Column name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier (`-1` when none).
    pub typmod: i32,
}

/// One value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// SQL NULL.
    Null,
    /// An unchanged TOASTed value (not sent).
    Unchanged,
    /// The value in text format.
    Text(&'a str),
}

/// A decoded `pgoutput` message (the ones this source uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    /// A transaction starts.
    Begin {
        /// LSN of the commit record.
        final_lsn: Lsn,
        /// Commit time, microseconds since the Unix epoch.
        commit_ts_us: i64,
        /// Transaction id.
        xid: u32,
    },
    /// A transaction ends.
    Commit {
        /// LSN of the commit record.
        commit_lsn: Lsn,
        /// End of the commit record: the position after this transaction.
        end_lsn: Lsn,
    },
    /// The shape of a table (sent before its first change in a session and after changes).
    Relation {
        /// Table OID.
        relid: u32,
        /// Schema.
        namespace: String,
        /// Table name.
        name: String,
        /// Columns in table order.
        columns: Vec<RelColumn>,
    },
    /// A row was inserted.
    Insert {
        /// Table OID.
        relid: u32,
        /// New row.
        new: Vec<Value<'a>>,
    },
    /// A row was updated.
    Update {
        /// Table OID.
        relid: u32,
        /// Old key or old row (replica identity), when sent.
        old: Option<Vec<Value<'a>>>,
        /// New row.
        new: Vec<Value<'a>>,
    },
    /// A row was deleted.
    Delete {
        /// Table OID.
        relid: u32,
        /// Old key or old row (replica identity).
        old: Vec<Value<'a>>,
    },
    /// Tables were truncated.
    Truncate {
        /// Table OIDs.
        relids: Vec<u32>,
    },
    /// Anything else (origin, type, logical message): ignored.
    Other(u8),
}

/// Decoding failed: the message is not `pgoutput` v1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub String);

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end =
            end.ok_or_else(|| ProtocolError(format!("message truncated at byte {}", self.pos)))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> Result<i16, ProtocolError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, ProtocolError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i32(&mut self) -> Result<i32, ProtocolError> {
        Ok(self.u32()? as i32)
    }
    fn u64(&mut self) -> Result<u64, ProtocolError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn cstr(&mut self) -> Result<String, ProtocolError> {
        let rest = &self.buf[self.pos..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| ProtocolError("unterminated string".into()))?;
        let s = String::from_utf8_lossy(&rest[..nul]).into_owned();
        self.pos += nul + 1;
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Vec<Value<'a>>, ProtocolError> {
        let n = self.i16()?;
        let mut values = Vec::with_capacity(n.max(0) as usize);
        for _ in 0..n {
            values.push(match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                b't' => {
                    let len = self.i32()?;
                    let len = usize::try_from(len)
                        .map_err(|_| ProtocolError(format!("negative value length {len}")))?;
                    let bytes = self.take(len)?;
                    Value::Text(std::str::from_utf8(bytes).map_err(|e| {
                        ProtocolError(format!("value is not UTF-8 ({e}); use a UTF8 database"))
                    })?)
                }
                other => {
                    return Err(ProtocolError(format!(
                        "unknown tuple value kind {:?}",
                        other as char
                    )));
                }
            });
        }
        Ok(values)
    }
}

/// Decode one `pgoutput` (protocol version 1) message.
pub(crate) fn decode(buf: &[u8]) -> Result<Message<'_>, ProtocolError> {
    let mut r = Reader { buf, pos: 0 };
    let tag = r.u8()?;
    Ok(match tag {
        b'B' => {
            let final_lsn = Lsn(r.u64()?);
            let ts = r.u64()? as i64;
            let xid = r.u32()?;
            Message::Begin {
                final_lsn,
                commit_ts_us: ts.saturating_add(PG_EPOCH_OFFSET_MICROS),
                xid,
            }
        }
        b'C' => {
            let _flags = r.u8()?;
            let commit_lsn = Lsn(r.u64()?);
            let end_lsn = Lsn(r.u64()?);
            Message::Commit {
                commit_lsn,
                end_lsn,
            }
        }
        b'R' => {
            let relid = r.u32()?;
            let namespace = r.cstr()?;
            let name = r.cstr()?;
            let _identity = r.u8()?;
            let n = r.i16()?;
            let mut columns = Vec::with_capacity(n.max(0) as usize);
            for _ in 0..n {
                let flags = r.u8()?;
                let name = r.cstr()?;
                let type_oid = r.u32()?;
                let typmod = r.i32()?;
                columns.push(RelColumn {
                    key: flags & 1 == 1,
                    name,
                    type_oid,
                    typmod,
                });
            }
            Message::Relation {
                relid,
                namespace,
                name,
                columns,
            }
        }
        b'I' => {
            let relid = r.u32()?;
            expect(r.u8()?, b'N')?;
            Message::Insert {
                relid,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relid = r.u32()?;
            let mut kind = r.u8()?;
            let mut old = None;
            if kind == b'K' || kind == b'O' {
                old = Some(r.tuple()?);
                kind = r.u8()?;
            }
            expect(kind, b'N')?;
            Message::Update {
                relid,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relid = r.u32()?;
            let kind = r.u8()?;
            if kind != b'K' && kind != b'O' {
                return Err(ProtocolError(format!(
                    "delete without old key (kind {:?})",
                    kind as char
                )));
            }
            Message::Delete {
                relid,
                old: r.tuple()?,
            }
        }
        b'T' => {
            let n = r.u32()?;
            let _options = r.u8()?;
            let relids = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
            Message::Truncate { relids }
        }
        other => Message::Other(other),
    })
}

fn expect(found: u8, want: u8) -> Result<(), ProtocolError> {
    if found == want {
        Ok(())
    } else {
        Err(ProtocolError(format!(
            "expected tuple marker {:?}, found {:?}",
            want as char, found as char
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_in_postgres_notation() {
        let lsn = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/0"), Some(Lsn(0)));
        assert_eq!(Lsn::parse("nope"), None);
    }

    #[test]
    fn decodes_an_insert_and_rejects_a_truncated_one() {
        let mut m = vec![b'I'];
        m.extend_from_slice(&42u32.to_be_bytes());
        m.push(b'N');
        m.extend_from_slice(&2i16.to_be_bytes());
        m.push(b't');
        m.extend_from_slice(&2i32.to_be_bytes());
        m.extend_from_slice(b"17");
        m.push(b'n');
        assert_eq!(
            decode(&m).unwrap(),
            Message::Insert {
                relid: 42,
                new: vec![Value::Text("17"), Value::Null]
            }
        );
        assert!(decode(&m[..m.len() - 3]).is_err());
    }
}
