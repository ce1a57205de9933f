//! PostgreSQL's binary `COPY` format, as the snapshot reads its pages: an 11-byte signature,
//! flags and a header extension, then tuples (a 16-bit field count, each field a 32-bit
//! length, -1 for NULL, and its bytes), then a trailer (field count -1).

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config::Settings;
use super::replication::{
    BoxSocket, ReplError, ReplResult, connect_socket, read_frame, server_error, startup,
};

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Bytes asked of the socket per read while a `COPY` runs.
const READ_SIZE: usize = 256 * 1024;

/// The snapshot's second connection, which reads its `COPY` pages in the MVCC snapshot the
/// snapshot's transaction exported (`pg_export_snapshot()`, `SET TRANSACTION SNAPSHOT`).
///
/// It speaks the protocol itself (the transport of the replication connection, without
/// `replication=database`): the server sends each row as one `CopyData` message, and the
/// rows of as many messages as one read of the socket brought are handed on as one chunk,
/// where a client library would parse, count and queue every message on its own.
pub(crate) struct CopyConn {
    socket: BoxSocket,
    buf: BytesMut,
    idle: Duration,
    /// The current statement ended (`ReadyForQuery`).
    ready: bool,
}

impl CopyConn {
    /// Connect as `settings` say (the connection string's host, user, password and
    /// `options`) and join the exported snapshot `snapshot_id` in a `REPEATABLE READ READ
    /// ONLY` transaction. Each wait for the server is bounded by `idleTimeout`.
    pub(crate) async fn open(
        settings: &Settings,
        application_name: &str,
        snapshot_id: &str,
    ) -> ReplResult<Self> {
        let idle = settings.config.idle_timeout;
        let bounded = async {
            let mut socket = connect_socket(&settings.pg).await?;
            let mut buf = BytesMut::with_capacity(READ_SIZE);
            startup(&mut socket, &mut buf, &settings.pg, application_name, false).await?;
            Ok::<_, ReplError>((socket, buf))
        };
        let (socket, buf) = tokio::time::timeout(idle, bounded)
            .await
            .map_err(|_| timed_out(idle))??;
        let mut conn = Self {
            socket,
            buf,
            idle,
            ready: true,
        };
        conn.join(snapshot_id).await?;
        Ok(conn)
    }

    /// Begin the transaction in the exported snapshot `snapshot_id`.
    async fn join(&mut self, snapshot_id: &str) -> ReplResult<()> {
        let id = snapshot_id.replace('\'', "''");
        let joined = self
            .execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{id}'"
            ))
            .await;
        match joined {
            // The exporting transaction ended first (its connection was lost): the snapshot
            // is gone, and a new attempt exports another.
            Err(ReplError::Server { code, message, .. }) if code == "22023" => {
                Err(ReplError::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    format!(
                        "the snapshot's transaction ended before its COPY connection joined it: {message} (SQLSTATE {code})"
                    ),
                )))
            }
            joined => joined,
        }
    }

    /// Run statements that return no rows (a simple query) to their end.
    pub(crate) async fn execute(&mut self, sql: &str) -> ReplResult<()> {
        self.send_query(sql).await?;
        let mut failed = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'E' => failed = failed.or(Some(server_error(body))),
                b'Z' => break,
                // CommandComplete, EmptyQueryResponse, notices, parameter changes
                b'C' | b'I' | b'N' | b'S' => {}
                other => return Err(unexpected(other, "a statement")),
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Start `sql` (a `COPY … TO STDOUT`); its data is then read with [`CopyConn::data`].
    pub(crate) async fn copy_out(&mut self, sql: &str) -> ReplResult<()> {
        self.send_query(sql).await?;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                // CopyOutResponse
                b'H' => return Ok(()),
                b'N' | b'S' => {}
                b'E' => return Err(server_error(body)),
                other => return Err(unexpected(other, "COPY")),
            }
        }
    }

    /// The next chunk of copy data (whole `CopyData` messages), `None` once the statement
    /// ended. An error the server reports ends the copy with that error.
    pub(crate) async fn data(&mut self) -> ReplResult<Option<Bytes>> {
        let mut out = BytesMut::new();
        loop {
            // The payloads of the buffered messages, without growing step by step.
            out.reserve(self.buf.len());
            while !self.ready && self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if len < 4 {
                    return Err(ReplError::Protocol(format!(
                        "message length {len} is below 4"
                    )));
                }
                if self.buf.len() <= len {
                    break;
                }
                match self.buf[0] {
                    b'd' => out.extend_from_slice(&self.buf[5..1 + len]),
                    // CopyDone, CommandComplete, notices, parameter changes
                    b'c' | b'C' | b'N' | b'S' => {}
                    b'Z' => self.ready = true,
                    b'E' => {
                        let body = Bytes::copy_from_slice(&self.buf[5..1 + len]);
                        self.buf.advance(1 + len);
                        return Err(server_error(body));
                    }
                    other => return Err(unexpected(other, "COPY data")),
                }
                self.buf.advance(1 + len);
            }
            if !out.is_empty() {
                return Ok(Some(out.freeze()));
            }
            if self.ready {
                return Ok(None);
            }
            self.read_more().await?;
        }
    }

    async fn send_query(&mut self, sql: &str) -> ReplResult<()> {
        if !self.ready {
            return Err(ReplError::Protocol(
                "a statement was sent before the last one ended".into(),
            ));
        }
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out)?;
        self.socket.write_all(&out).await?;
        self.ready = false;
        Ok(())
    }

    /// One whole message, waiting at most `idleTimeout` for it.
    async fn read_message(&mut self) -> ReplResult<(u8, Bytes)> {
        let (tag, body) =
            tokio::time::timeout(self.idle, read_frame(&mut self.socket, &mut self.buf))
                .await
                .map_err(|_| timed_out(self.idle))??;
        if tag == b'Z' {
            self.ready = true;
        }
        Ok((tag, body))
    }

    async fn read_more(&mut self) -> ReplResult<()> {
        self.buf.reserve(READ_SIZE);
        let read = tokio::time::timeout(self.idle, self.socket.read_buf(&mut self.buf))
            .await
            .map_err(|_| timed_out(self.idle))??;
        if read == 0 {
            return Err(ReplError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the snapshot's COPY connection",
            )));
        }
        Ok(())
    }
}

fn timed_out(idle: Duration) -> ReplError {
    ReplError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "the server did not answer within {}s (spec.source.idleTimeout)",
            idle.as_secs_f64()
        ),
    ))
}

fn unexpected(tag: u8, during: &str) -> ReplError {
    ReplError::Protocol(format!(
        "unexpected message {:?} during {during}",
        tag as char
    ))
}

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
    use arcane_core::{Error, Retry};

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

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend((body.len() as u32 + 4).to_be_bytes());
        m.extend(body);
        m
    }

    fn error_message(code: &str, text: &str) -> Vec<u8> {
        let body = format!("SERROR\0C{code}\0M{text}\0\0");
        message(b'E', body.as_bytes())
    }

    /// A server that answers each query with `answers[i]` (whole message bytes), written in
    /// pieces of 7 bytes; after the last answer it keeps the connection open and silent.
    fn conn_to(answers: Vec<Vec<u8>>, idle: Duration) -> CopyConn {
        let (client, mut server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            for answer in answers {
                let (tag, _) = read_frame(&mut server, &mut buf).await.unwrap();
                assert_eq!(tag, b'Q');
                for piece in answer.chunks(7) {
                    if server.write_all(piece).await.is_err() {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        CopyConn {
            socket: Box::pin(client),
            buf: BytesMut::new(),
            idle,
            ready: true,
        }
    }

    #[tokio::test]
    async fn copy_data_arrives_whole_across_partial_reads_and_a_server_error_or_silence_ends_it() {
        let tuples: Vec<Vec<u8>> = (0..40u32)
            .map(|i| i.to_be_bytes().repeat(i as usize % 5))
            .collect();
        let rows: Vec<Vec<Option<&[u8]>>> = tuples
            .iter()
            .map(|t| vec![Some(t.as_slice()), None])
            .collect();
        let refs: Vec<&[Option<&[u8]>]> = rows.iter().map(Vec::as_slice).collect();
        let data = copy_data(&refs);
        // The data cut into CopyData messages of uneven sizes, with a notice in between.
        let mut good = message(b'H', &[1, 0, 0]);
        for (i, piece) in data.chunks(13).enumerate() {
            good.extend(message(b'd', piece));
            if i == 3 {
                good.extend(message(b'N', b"SNOTICE\0Mhello\0\0"));
            }
        }
        good.extend(message(b'c', b""));
        good.extend(message(b'C', b"COPY 40\0"));
        good.extend(message(b'Z', b"T"));
        let mut failing = message(b'H', &[1, 0, 0]);
        failing.extend(message(b'd', &data[..30]));
        failing.extend(error_message(
            "57014",
            "canceling statement due to statement timeout",
        ));
        failing.extend(message(b'Z', b"E"));
        let mut silent = message(b'H', &[1, 0, 0]);
        silent.extend(message(b'd', &data[..19]));
        let idle = Duration::from_millis(300);
        let mut conn = conn_to(vec![good, failing, silent], idle);

        conn.copy_out("COPY (SELECT 1) TO STDOUT (FORMAT binary)")
            .await
            .unwrap();
        let mut received = Vec::new();
        while let Some(chunk) = conn.data().await.unwrap() {
            received.extend_from_slice(&chunk);
        }
        assert_eq!(
            received, data,
            "every CopyData payload, in order, nothing else"
        );
        assert_eq!(read_all(&received, 1000).unwrap().len(), 40);
        assert!(conn.data().await.unwrap().is_none(), "the statement ended");

        conn.copy_out("COPY (SELECT 2) TO STDOUT (FORMAT binary)")
            .await
            .unwrap();
        let err = loop {
            match conn.data().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the copy ended without its error"),
                Err(e) => break e,
            }
        };
        let text = err.to_string();
        assert!(
            text.contains("statement timeout") && text.contains("57014"),
            "{text}"
        );
        // The server's ReadyForQuery after the error ends the statement.
        assert!(conn.data().await.unwrap().is_none());

        conn.copy_out("COPY (SELECT 3) TO STDOUT (FORMAT binary)")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let err = loop {
            match conn.data().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("a silent server ended the copy"),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(&err, ReplError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut),
            "{err}"
        );
        assert!(err.to_string().contains("idleTimeout"), "{err}");
        assert!(started.elapsed() >= idle);
    }

    #[tokio::test]
    async fn a_connection_closed_in_the_middle_of_a_copy_is_an_error_not_the_end_of_the_data() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut conn = CopyConn {
            socket: Box::pin(client),
            buf: BytesMut::new(),
            idle: Duration::from_secs(5),
            ready: true,
        };
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            read_frame(&mut server, &mut buf).await.unwrap();
            let mut answer = message(b'H', &[1, 0, 0]);
            answer.extend(message(b'd', b"PGCOPY"));
            // Half a message, then the connection closes.
            answer.extend(&message(b'd', b"0123456789")[..8]);
            server.write_all(&answer).await.unwrap();
        });
        conn.copy_out("COPY t TO STDOUT (FORMAT binary)")
            .await
            .unwrap();
        assert_eq!(conn.data().await.unwrap().as_deref(), Some(&b"PGCOPY"[..]));
        let err = conn.data().await.unwrap_err();
        assert!(
            matches!(&err, ReplError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("closed the snapshot's COPY connection"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_snapshot_gone_before_it_was_joined_is_a_lost_connection_and_retried() {
        let mut gone = error_message("22023", "invalid snapshot identifier: \"00000003-1\"");
        gone.extend(message(b'Z', b"E"));
        let mut denied = error_message("42501", "permission denied for table t");
        denied.extend(message(b'Z', b"E"));
        let mut conn = conn_to(vec![gone, denied], Duration::from_secs(5));
        let err = conn.join("00000003-1").await.unwrap_err();
        assert!(
            err.to_string()
                .contains("ended before its COPY connection joined it"),
            "{err}"
        );
        let typed = err.into_error("src", None, "reading the snapshot");
        assert!(
            matches!(
                typed,
                Error::Source {
                    retry: Retry::Transient,
                    ..
                }
            ),
            "{typed:?}"
        );
        // Any other refusal keeps its own class.
        let typed =
            conn.join("x")
                .await
                .unwrap_err()
                .into_error("src", None, "reading the snapshot");
        assert!(
            matches!(
                typed,
                Error::Source {
                    retry: Retry::Permanent,
                    ..
                }
            ),
            "{typed:?}"
        );
        assert!(typed.to_string().contains("permission denied"), "{typed}");
    }
}
