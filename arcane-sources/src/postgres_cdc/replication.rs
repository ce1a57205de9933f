//! The streaming replication protocol: a `replication=database` connection running
//! `START_REPLICATION SLOT … LOGICAL … (proto_version '1', publication_names …)`, whose
//! `XLogData` messages carry the raw `pgoutput` payload [`pgoutput::decode`] reads, with
//! standby status updates that confirm (flush) only what the sink has committed.
//!
//! The snapshot's `COPY` connection ([`CopyConn`](super::copy::CopyConn)) is the same
//! transport without `replication=database`.
//!
//! The transport is written on `postgres-protocol` (the message encodings and SCRAM of the
//! `tokio-postgres` this source already uses) rather than on a replication client crate: it
//! is about 300 lines, adds no dependency, and keeps one connection code path (plain TCP or
//! a Unix socket, like the SQL connections; TLS is not offered there either).
//!
//! A task of its own sends the status updates (every 10 s or a third of `idleTimeout`, and at once when
//! the sink commits or the server asks), so the server's `wal_sender_timeout` never ends a
//! connection whose reader is waiting on a slow sink.
//!
//! [`pgoutput::decode`]: super::pgoutput::decode

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arcane_core::{Error, Retry};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Notify;
use tokio_postgres::config::Host;
use tokio_util::task::AbortOnDropHandle;

use super::client::{quote_ident, remedy_for_code, transient_code};
use super::config::Settings;
use super::pgoutput::Lsn;

/// The longest time between two standby status updates when nothing else prompts one. Each
/// asks the server for a reply (a keepalive), so a silent connection is noticed; they come
/// every third of `idleTimeout` when that is shorter.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// How long connecting may take when the connection string sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

pub(super) trait Socket: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Socket for T {}
pub(super) type BoxSocket = Pin<Box<dyn Socket>>;

/// What went wrong on the replication connection.
#[derive(Debug)]
pub(super) enum ReplError {
    /// An `ErrorResponse` from the server.
    Server {
        code: String,
        message: String,
        detail: Option<String>,
    },
    /// The socket failed or closed.
    Io(io::Error),
    /// The server sent something this client cannot read.
    Protocol(String),
}

impl From<io::Error> for ReplError {
    fn from(e: io::Error) -> Self {
        ReplError::Io(e)
    }
}

impl std::fmt::Display for ReplError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplError::Server {
                code,
                message,
                detail,
            } => {
                write!(f, "{message} (SQLSTATE {code})")?;
                if let Some(d) = detail {
                    write!(f, ": {d}")?;
                }
                Ok(())
            }
            ReplError::Io(e) => write!(f, "connection: {e}"),
            ReplError::Protocol(m) => write!(f, "protocol: {m}"),
        }
    }
}

impl std::error::Error for ReplError {}

impl ReplError {
    /// The slot is held by another backend (55006).
    pub(super) fn slot_busy(&self) -> bool {
        matches!(self, ReplError::Server { code, .. } if code == "55006")
    }

    /// A typed source error saying `what` failed: transient for lost connections, a server
    /// shutting down or out of resources (as the SQL connections classify them), permanent
    /// otherwise, with what to fix.
    /// `slot`: the replication slot the connection streams from, if it does.
    pub(super) fn into_error(self, name: &str, slot: Option<&str>, what: &str) -> Error {
        let (transient, remedy) = match (&self, slot) {
            (ReplError::Server { code, .. }, Some(slot)) if code == "42704" => (
                false,
                Some(format!(
                    "replication slot {slot} does not exist any more; the changes it held are lost; backfill the stream"
                )),
            ),
            (ReplError::Server { code, .. }, _) => (
                transient_code(code),
                remedy_for_code(code).map(String::from),
            ),
            (ReplError::Io(_), _) => (true, None),
            (ReplError::Protocol(_), _) => (false, None),
        };
        let mut message = format!("{what}: {self}");
        if let Some(remedy) = remedy {
            message = format!("{message}; {remedy}");
        }
        Error::Source {
            source_name: name.to_string(),
            message,
            retry: if transient {
                Retry::Transient
            } else {
                Retry::Permanent
            },
            source: Some(Box::new(self)),
        }
    }
}

pub(super) type ReplResult<T> = std::result::Result<T, ReplError>;

/// One message of the replication stream.
#[derive(Debug)]
pub(super) enum ReplEvent {
    /// A `pgoutput` message, at the WAL position of its change.
    Data { start: Lsn, data: Bytes },
    /// The server's position: every transaction committed before `end` has been sent.
    Keepalive { end: Lsn },
}

/// The positions reported to the server, shared by the reader, the status task and
/// [`Source::commit`](arcane_core::Source::commit).
#[derive(Debug, Default)]
pub(super) struct Feedback {
    /// Highest position received (reported as written).
    received: AtomicU64,
    /// Highest position the sink committed (reported as flushed and applied: the slot moves
    /// to it).
    committed: AtomicU64,
    /// Whether a replication connection holds the slot now (the slot can then only be moved
    /// through it).
    streaming: AtomicBool,
    /// Send a status update now.
    wake: Notify,
    /// Highest committed position written to the server in a status update.
    sent: AtomicU64,
    /// Woken after each status update written, and when the connection ends.
    sent_notify: Notify,
}

impl Feedback {
    /// The sink committed everything up to `lsn`: confirm it to the server.
    pub(super) fn committed(&self, lsn: Lsn) {
        self.committed.fetch_max(lsn.0, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// The highest position the sink committed (0 before the first commit).
    pub(super) fn committed_lsn(&self) -> Lsn {
        Lsn(self.committed.load(Ordering::SeqCst))
    }

    /// Whether a replication connection is open (then [`Feedback::committed`] is how the
    /// slot moves).
    pub(super) fn streaming(&self) -> bool {
        self.streaming.load(Ordering::SeqCst)
    }

    /// Wait (at most `within`) until a status update confirming `lsn` was written to the
    /// replication connection: `false` when none is open or it ended first.
    pub(super) async fn confirmed(&self, lsn: Lsn, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Registered before the checks, so that no wakeup between them is missed.
            let written = self.sent_notify.notified();
            if self.sent.load(Ordering::SeqCst) >= lsn.0 {
                return true;
            }
            if !self.streaming() {
                return false;
            }
            if tokio::time::timeout_at(deadline, written).await.is_err() {
                return false;
            }
        }
    }

    fn received(&self, lsn: Lsn) {
        self.received.fetch_max(lsn.0, Ordering::SeqCst);
    }
}

/// A running `START_REPLICATION`: read [`ReplEvent`]s with [`ReplStream::next`].
pub(super) struct ReplStream {
    reader: ReadHalf<BoxSocket>,
    buf: BytesMut,
    feedback: Arc<Feedback>,
    _status: AbortOnDropHandle<()>,
}

impl Drop for ReplStream {
    fn drop(&mut self) {
        self.feedback.streaming.store(false, Ordering::SeqCst);
        self.feedback.sent_notify.notify_waiters();
    }
}

/// Open a replication connection and start streaming `slot`'s changes of `publication`
/// from the slot's confirmed position.
pub(super) async fn start(
    settings: &Settings,
    application_name: &str,
    feedback: Arc<Feedback>,
) -> ReplResult<ReplStream> {
    let mut socket = connect_socket(&settings.pg).await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    startup(&mut socket, &mut buf, &settings.pg, application_name, true).await?;
    let cfg = &settings.config;
    let publication = quote_ident(&cfg.publication).replace('\'', "''");
    let command = format!(
        "START_REPLICATION SLOT {} LOGICAL 0/0 (proto_version '1', publication_names '{publication}')",
        quote_ident(&cfg.slot)
    );
    let mut out = BytesMut::new();
    frontend::query(&command, &mut out)?;
    socket.write_all(&out).await?;
    loop {
        let (tag, body) = read_frame(&mut socket, &mut buf).await?;
        match tag {
            // CopyBothResponse: streaming starts.
            b'W' => break,
            b'E' => return Err(server_error(body)),
            b'N' | b'S' => {}
            other => {
                return Err(ReplError::Protocol(format!(
                    "unexpected message {:?} after START_REPLICATION",
                    other as char
                )));
            }
        }
    }
    let (reader, writer) = tokio::io::split(socket);
    feedback.streaming.store(true, Ordering::SeqCst);
    let every = STATUS_INTERVAL.min(settings.config.idle_timeout / 3);
    let status = AbortOnDropHandle::new(tokio::spawn(send_status(writer, feedback.clone(), every)));
    Ok(ReplStream {
        reader,
        buf,
        feedback,
        _status: status,
    })
}

impl ReplStream {
    /// The next message. Cancel-safe: a partly read message stays buffered.
    pub(super) async fn next(&mut self) -> ReplResult<ReplEvent> {
        loop {
            let (tag, mut body) = read_frame(&mut self.reader, &mut self.buf).await?;
            match tag {
                b'd' => {}
                b'E' => return Err(server_error(body)),
                b'c' => {
                    return Err(ReplError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server ended the replication stream (CopyDone)",
                    )));
                }
                _ => continue,
            }
            if body.is_empty() {
                return Err(ReplError::Protocol("empty CopyData".into()));
            }
            match body.get_u8() {
                // XLogData: start, end, send time, then the pgoutput message.
                b'w' if body.len() >= 24 => {
                    let start = Lsn(body.get_u64());
                    let _end = body.get_u64();
                    let _time = body.get_i64();
                    self.feedback.received(start);
                    return Ok(ReplEvent::Data { start, data: body });
                }
                // Primary keepalive: end of WAL sent, send time, reply requested.
                b'k' if body.len() >= 17 => {
                    let end = Lsn(body.get_u64());
                    let _time = body.get_i64();
                    let reply = body.get_u8() == 1;
                    self.feedback.received(end);
                    if reply {
                        self.feedback.wake.notify_one();
                    }
                    return Ok(ReplEvent::Keepalive { end });
                }
                other => {
                    return Err(ReplError::Protocol(format!(
                        "unexpected replication message {:?} ({} bytes)",
                        other as char,
                        body.len()
                    )));
                }
            }
        }
    }
}

/// Send a standby status update `every` so often and whenever woken: written = received,
/// flushed = applied = committed (0 until the sink committed something, which the server
/// ignores).
async fn send_status(mut writer: WriteHalf<BoxSocket>, feedback: Arc<Feedback>, every: Duration) {
    loop {
        let _ = tokio::time::timeout(every, feedback.wake.notified()).await;
        let committed = feedback.committed.load(Ordering::SeqCst);
        let received = feedback.received.load(Ordering::SeqCst).max(committed);
        let message = status_update(received, committed, true);
        if writer.write_all(&message).await.is_err() || writer.flush().await.is_err() {
            // The reader sees the failed connection.
            return;
        }
        feedback.sent.fetch_max(committed, Ordering::SeqCst);
        feedback.sent_notify.notify_waiters();
    }
}

/// A `CopyData` holding a standby status update.
fn status_update(write: u64, flush: u64, reply: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(39);
    b.put_u8(b'd');
    b.put_i32(4 + 34);
    b.put_u8(b'r');
    b.put_u64(write);
    b.put_u64(flush);
    b.put_u64(flush);
    b.put_i64(pg_now_us());
    b.put_u8(u8::from(reply));
    b.freeze()
}

fn pg_now_us() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    unix - PG_EPOCH_OFFSET_US
}

/// Connect to the first reachable host of the connection string (TCP or Unix socket).
pub(super) async fn connect_socket(pg: &tokio_postgres::Config) -> ReplResult<BoxSocket> {
    let timeout = pg.get_connect_timeout().copied().unwrap_or(CONNECT_TIMEOUT);
    let ports = pg.get_ports();
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no host in the connection");
    for (i, host) in pg.get_hosts().iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let attempt = async {
            match host {
                Host::Tcp(name) => {
                    let s = tokio::net::TcpStream::connect((name.as_str(), port)).await?;
                    s.set_nodelay(true)?;
                    Ok::<BoxSocket, io::Error>(Box::pin(s))
                }
                #[cfg(unix)]
                Host::Unix(dir) => {
                    let path = dir.join(format!(".s.PGSQL.{port}"));
                    let s = tokio::net::UnixStream::connect(path).await?;
                    Ok(Box::pin(s) as BoxSocket)
                }
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(socket)) => return Ok(socket),
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting took longer than {timeout:?}"),
                );
            }
        }
    }
    Err(ReplError::Io(last))
}

/// The startup message (`replication=database` for a replication connection, else the
/// connection string's `options`; the session settings the row builders parse values in)
/// and authentication: trust, password, MD5 or SCRAM-SHA-256.
pub(super) async fn startup(
    socket: &mut BoxSocket,
    buf: &mut BytesMut,
    pg: &tokio_postgres::Config,
    application_name: &str,
    replication: bool,
) -> ReplResult<()> {
    let user = pg
        .get_user()
        .ok_or_else(|| ReplError::Protocol("the connection string names no user".into()))?;
    let dbname = pg.get_dbname().unwrap_or(user);
    let mode = match (replication, pg.get_options()) {
        (true, _) => Some(("replication", "database")),
        (false, Some(options)) => Some(("options", options)),
        (false, None) => None,
    };
    let params = [
        ("user", user),
        ("database", dbname),
        ("application_name", application_name),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("TimeZone", "UTC"),
        ("extra_float_digits", "3"),
        ("bytea_output", "hex"),
        ("IntervalStyle", "postgres"),
    ];
    let mut out = BytesMut::new();
    frontend::startup_message(params.iter().copied().chain(mode), &mut out)?;
    socket.write_all(&out).await?;
    let password = pg.get_password();
    let need_password = || {
        password.ok_or_else(|| ReplError::Server {
            code: "28P01".into(),
            message: "the server asks for a password and none is set".into(),
            detail: None,
        })
    };
    let mut scram: Option<ScramSha256> = None;
    loop {
        let (tag, mut body) = read_frame(socket, buf).await?;
        match tag {
            b'R' => {
                let kind = body.get_i32();
                out.clear();
                match kind {
                    0 => {}
                    3 => frontend::password_message(need_password()?, &mut out)?,
                    5 => {
                        let mut salt = [0u8; 4];
                        body.copy_to_slice(&mut salt);
                        let hash = md5_hash(user.as_bytes(), need_password()?, salt);
                        frontend::password_message(hash.as_bytes(), &mut out)?;
                    }
                    10 => {
                        let offers_scram = body
                            .split(|b| *b == 0)
                            .any(|m| m == SCRAM_SHA_256.as_bytes());
                        if !offers_scram {
                            return Err(ReplError::Protocol(
                                "the server offers no SASL mechanism this client has (SCRAM-SHA-256)".into(),
                            ));
                        }
                        let s = ScramSha256::new(need_password()?, ChannelBinding::unsupported());
                        frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)?;
                        scram = Some(s);
                    }
                    11 => {
                        let s = scram.as_mut().ok_or_else(|| {
                            ReplError::Protocol("SASL continue without a start".into())
                        })?;
                        s.update(&body)?;
                        frontend::sasl_response(s.message(), &mut out)?;
                    }
                    12 => {
                        let s = scram.as_mut().ok_or_else(|| {
                            ReplError::Protocol("SASL final without a start".into())
                        })?;
                        s.finish(&body)?;
                    }
                    other => {
                        return Err(ReplError::Protocol(format!(
                            "authentication method {other} is not supported (use trust, password, md5 or scram-sha-256)"
                        )));
                    }
                }
                if !out.is_empty() {
                    socket.write_all(&out).await?;
                }
            }
            b'E' => return Err(server_error(body)),
            b'Z' => return Ok(()),
            // ParameterStatus, BackendKeyData, NoticeResponse
            _ => {}
        }
    }
}

/// Read one backend message: its tag and body. Cancel-safe: bytes read stay in `buf`.
pub(super) async fn read_frame<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> ReplResult<(u8, Bytes)> {
    loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len < 4 {
                return Err(ReplError::Protocol(format!(
                    "message length {len} is below 4"
                )));
            }
            if buf.len() > len {
                let tag = buf[0];
                let mut frame = buf.split_to(1 + len);
                frame.advance(5);
                return Ok((tag, frame.freeze()));
            }
            buf.reserve(1 + len - buf.len());
        }
        if reader.read_buf(buf).await? == 0 {
            return Err(ReplError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the replication connection",
            )));
        }
    }
}

/// An `ErrorResponse`'s fields.
pub(super) fn server_error(body: Bytes) -> ReplError {
    let (mut code, mut message, mut detail) = (String::new(), String::new(), None);
    for field in body.split(|b| *b == 0) {
        let Some((&kind, value)) = field.split_first() else {
            continue;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        match kind {
            b'C' => code = value,
            b'M' => message = value,
            b'D' => detail = Some(value),
            _ => {}
        }
    }
    ReplError::Server {
        code,
        message,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_read_across_partial_reads_and_a_short_length_is_refused() {
        let mut wire = BytesMut::new();
        wire.put_u8(b'd');
        wire.put_i32(4 + 3);
        wire.put_slice(b"abc");
        wire.put_u8(b'Z');
        wire.put_i32(5);
        wire.put_u8(b'I');
        let (mut client, mut server) = tokio::io::duplex(2);
        let writer = tokio::spawn(async move {
            for chunk in wire.chunks(3) {
                server.write_all(chunk).await.unwrap();
            }
        });
        let mut buf = BytesMut::new();
        let (tag, body) = read_frame(&mut client, &mut buf).await.unwrap();
        assert_eq!((tag, &body[..]), (b'd', &b"abc"[..]));
        let (tag, body) = read_frame(&mut client, &mut buf).await.unwrap();
        assert_eq!((tag, &body[..]), (b'Z', &b"I"[..]));
        writer.await.unwrap();
        let err = read_frame(&mut client, &mut buf).await.unwrap_err();
        assert!(matches!(err, ReplError::Io(ref e) if e.kind() == io::ErrorKind::UnexpectedEof));

        let mut bad = BytesMut::from(&[b'd', 0, 0, 0, 2][..]);
        let err = read_frame(&mut &b""[..], &mut bad).await.unwrap_err();
        assert!(err.to_string().contains("below 4"), "{err}");
    }

    #[test]
    fn a_status_update_confirms_the_committed_position() {
        let m = status_update(0x10, 0x08, true);
        assert_eq!(m.len(), 39);
        assert_eq!(&m[..6], &[b'd', 0, 0, 0, 38, b'r']);
        assert_eq!(u64::from_be_bytes(m[6..14].try_into().unwrap()), 0x10);
        assert_eq!(u64::from_be_bytes(m[14..22].try_into().unwrap()), 0x08);
        assert_eq!(u64::from_be_bytes(m[22..30].try_into().unwrap()), 0x08);
        assert_eq!(m[38], 1);
    }

    #[test]
    fn server_errors_are_classified_with_their_remedy() {
        let body = |code: &str, msg: &str| {
            let mut b = BytesMut::new();
            for (k, v) in [(b'S', "ERROR"), (b'C', code), (b'M', msg)] {
                b.put_u8(k);
                b.put_slice(v.as_bytes());
                b.put_u8(0);
            }
            b.put_u8(0);
            server_error(b.freeze())
        };
        let busy = body("55006", "replication slot \"s\" is active for PID 7");
        assert!(busy.slot_busy());
        let gone = body("42704", "replication slot \"s\" does not exist").into_error(
            "src",
            Some("s"),
            "starting",
        );
        let text = gone.to_string();
        assert!(
            text.contains("does not exist any more") && text.contains("backfill"),
            "{text}"
        );
        assert!(!matches!(
            gone,
            Error::Source {
                retry: Retry::Transient,
                ..
            }
        ));
        let down = body(
            "57P01",
            "terminating connection due to administrator command",
        )
        .into_error("src", Some("s"), "streaming");
        assert!(
            matches!(
                down,
                Error::Source {
                    retry: Retry::Transient,
                    ..
                }
            ),
            "{down}"
        );
        let io = ReplError::Io(io::Error::new(io::ErrorKind::ConnectionReset, "reset")).into_error(
            "src",
            Some("s"),
            "streaming",
        );
        assert!(matches!(
            io,
            Error::Source {
                retry: Retry::Transient,
                ..
            }
        ));
    }
}
