//! The HTTP server: limits, authentication, the allow-list, parsing, and holding each answer
//! until the request's events are committed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arcane_core::{DeadLetter, Error, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::task::AbortOnDropHandle;

use super::config::{AuthConfig, http_header_name};
use super::event::{Mode, Parsed, parse};
use super::source::{BYTES, REJECTS, Receipt, Shared, Submission, UNKNOWN_SOURCE};

/// How long a stopping server waits for the answers it released to be written.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Who may write, with the secrets read.
pub(crate) struct Auth {
    bearer: Vec<Vec<u8>>,
    hmac: Option<(aws_lc_rs::hmac::Key, String)>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("bearer_tokens", &self.bearer.len())
            .field("hmac", &self.hmac.as_ref().map(|(_, h)| h))
            .finish()
    }
}

fn secret(var: &str, field: &str) -> Result<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        Ok(_) => Err(Error::config(
            field,
            format!(
                "environment variable {var} is empty; set it (e.g. from the stream's sourceSecretRef)"
            ),
        )),
        Err(_) => Err(Error::config(
            field,
            format!(
                "environment variable {var} is not set (or not UTF-8); set it (e.g. from the stream's sourceSecretRef)"
            ),
        )),
    }
}

impl Auth {
    /// Read the secrets `config` names; `at` is its path for errors.
    pub(crate) fn from_config(config: Option<&AuthConfig>, at: &str) -> Result<Self> {
        let Some(config) = config else {
            return Ok(Self {
                bearer: Vec::new(),
                hmac: None,
            });
        };
        let bearer = match &config.bearer_tokens_env {
            None => Vec::new(),
            Some(var) => secret(var, &format!("{at}.bearerTokensEnv"))?
                .split(',')
                .map(|t| t.trim().as_bytes().to_vec())
                .filter(|t| !t.is_empty())
                .collect(),
        };
        let hmac = match &config.hmac_secret_env {
            None => None,
            Some(var) => {
                let value = secret(var, &format!("{at}.hmacSecretEnv"))?;
                let header = http_header_name(&config.signature_header).unwrap_or_default();
                Some((
                    aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, value.as_bytes()),
                    header,
                ))
            }
        };
        Ok(Self { bearer, hmac })
    }

    /// The bearer token, checked before the body is read.
    fn check_bearer(&self, req: &Request<Incoming>) -> std::result::Result<(), String> {
        if self.bearer.is_empty() {
            return Ok(());
        }
        let token = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or("Authorization: Bearer token is missing")?;
        let mut ok = false;
        for t in &self.bearer {
            ok |= constant_time_eq(t, token.as_bytes());
        }
        ok.then_some(())
            .ok_or_else(|| "the bearer token is not accepted".into())
    }

    /// The body signature.
    fn check_signature(
        &self,
        headers: &hyper::HeaderMap,
        body: &[u8],
    ) -> std::result::Result<(), String> {
        let Some((key, header)) = &self.hmac else {
            return Ok(());
        };
        let value = headers
            .get(header.as_str())
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("{header} signature header is missing"))?;
        let hex = value
            .trim()
            .strip_prefix("sha256=")
            .ok_or_else(|| format!("{header}: expected sha256=<hex>"))?;
        let tag = decode_hex(hex).ok_or_else(|| format!("{header}: malformed hex"))?;
        aws_lc_rs::hmac::verify(key, body, &tag)
            .map_err(|_| format!("{header}: the signature does not match the body"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The running server.
pub(crate) struct Server {
    pub(crate) local_addr: SocketAddr,
    close: watch::Sender<bool>,
    connections: Arc<Connections>,
    _task: AbortOnDropHandle<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Connections {
    open: AtomicUsize,
    closed: Notify,
}

impl Server {
    /// Close every connection once its current answer is written (idle ones at once), and wait
    /// for that (at most [`CLOSE_GRACE`]). Connections accepted meanwhile get one answer (the
    /// server is draining: 503) and are closed.
    pub(crate) async fn close_connections(&self) {
        let _ = self.close.send(true);
        let wait = async {
            while self.connections.open.load(Ordering::SeqCst) > 0 {
                let notified = self.connections.closed.notified();
                if self.connections.open.load(Ordering::SeqCst) == 0 {
                    break;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, wait).await;
    }
}

/// Bind the configured address and serve.
pub(crate) async fn start(shared: Arc<Shared>) -> Result<Server> {
    let address = shared.config.address.clone();
    let listener = TcpListener::bind(&address).await.map_err(|e| {
        Error::config(
            "spec.source.address",
            format!("cannot listen on {address} ({e}); choose a free HOST:PORT"),
        )
    })?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| Error::config("spec.source.address", e.to_string()))?;
    tracing::info!(source = %shared.name, addr = %local_addr, "http-ingest listening");
    let (close, close_rx) = watch::channel(false);
    let connections = Arc::new(Connections::default());
    let conns = connections.clone();
    let task = tokio::spawn(async move {
        let mut signals = Signals::new();
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::debug!(error = %e, "http-ingest: accept failed");
                        continue;
                    }
                },
                () = signals.next() => {
                    tracing::info!(source = %shared.name, "stop requested: new requests are refused with 503; requests in flight are answered after their commit");
                    shared.draining.store(true, Ordering::SeqCst);
                    continue;
                }
            };
            let shared = shared.clone();
            let conns = conns.clone();
            let mut close_rx = close_rx.clone();
            // A connection accepted while the server closes is served one request (answered
            // 503, or /readyz 503) and then closed, instead of being closed unanswered.
            let late = *close_rx.borrow_and_update();
            conns.open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc_shared = shared.clone();
                let service = hyper::service::service_fn(move |req| {
                    let shared = svc_shared.clone();
                    async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                // With a timer, headers must arrive within hyper's header read timeout (30 s):
                // idle half-open connections do not pile up.
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .keep_alive(!late)
                    .serve_connection(io, service);
                let mut conn = std::pin::pin!(conn);
                let mut closing = late;
                loop {
                    tokio::select! {
                        r = conn.as_mut() => {
                            if let Err(e) = r {
                                tracing::debug!(error = %e, "http-ingest: connection error");
                            }
                            break;
                        }
                        changed = close_rx.changed(), if !closing => {
                            closing = true;
                            if changed.is_ok() {
                                conn.as_mut().graceful_shutdown();
                            }
                        }
                    }
                }
                conns.open.fetch_sub(1, Ordering::SeqCst);
                conns.closed.notify_waiters();
            });
        }
    });
    Ok(Server {
        local_addr,
        close,
        connections,
        _task: AbortOnDropHandle::new(task),
    })
}

/// SIGTERM and SIGINT (what the runner drains on).
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// # Cancel safety
    ///
    /// Cancel safe (signal streams are).
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            let term = async {
                match &mut self.term {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match &mut self.int {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = term => {}
                () = int => {}
            }
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await
    }
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, body: serde_json::Value) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A refusal before the request's source is known: counted by reason (source `unknown`), with
/// a message naming what is wrong.
fn refuse(shared: &Shared, status: StatusCode, reason: &'static str, message: String) -> Answer {
    refuse_from(shared, UNKNOWN_SOURCE, status, reason, message)
}

/// A refusal of a request from `source` (its [`source_label`]).
fn refuse_from(
    shared: &Shared,
    source: &str,
    status: StatusCode,
    reason: &'static str,
    message: String,
) -> Answer {
    metrics::counter!(REJECTS, with_reason(shared, source, reason)).increment(1);
    tracing::debug!(source = %shared.name, status = status.as_u16(), reason, message, "request refused");
    let mut r = answer(status, json!({"error": message}));
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) && let Ok(v) = HeaderValue::from_str(&shared.config.retry_after_seconds.to_string())
    {
        r.headers_mut().insert(RETRY_AFTER, v);
    }
    r
}

fn with_reason(shared: &Shared, source: &str, reason: &'static str) -> Vec<metrics::Label> {
    let mut labels = shared.labels_for(source);
    labels.push(metrics::Label::new("reason", reason));
    labels
}

/// Request-body bytes held; released on drop.
struct Reservation<'a> {
    shared: &'a Shared,
    bytes: usize,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.shared
            .in_flight_bytes
            .fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

fn reserve(shared: &Shared, bytes: usize) -> Option<Reservation<'_>> {
    let max = shared.config.max_in_flight_bytes;
    shared
        .in_flight_bytes
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
            (held + bytes <= max).then_some(held + bytes)
        })
        .ok()
        .map(|_| Reservation { shared, bytes })
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Answer {
    let draining = shared.draining.load(Ordering::SeqCst);
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => {
            return answer(StatusCode::OK, json!({"status": "ok"}));
        }
        (&Method::GET | &Method::HEAD, "/readyz") => {
            return if draining {
                answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"status": "stopping"}),
                )
            } else {
                answer(StatusCode::OK, json!({"status": "ready"}))
            };
        }
        (&Method::POST, _) => {}
        _ => {
            return refuse(
                shared,
                StatusCode::METHOD_NOT_ALLOWED,
                "method",
                "send events with POST (GET /healthz and /readyz for probes)".into(),
            );
        }
    }
    if draining {
        return refuse(
            shared,
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the stream is stopping; retry later".into(),
        );
    }
    if let Err(message) = shared.auth.check_bearer(&req) {
        return refuse(shared, StatusCode::UNAUTHORIZED, "unauthorized", message);
    }
    let registered = match registered_sender(&shared.config.source_paths, req.uri().path()) {
        Ok(registered) => registered,
        Err(message) => return refuse(shared, StatusCode::NOT_FOUND, "unknown_path", message),
    };
    let mode = match Mode::of(req.headers()) {
        Ok(mode) => mode,
        Err(message) => {
            return refuse(
                shared,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                message,
            );
        }
    };
    let max_body = shared.config.max_body_bytes;
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max_body) {
        return too_large(shared, max_body);
    }
    let Some(_reservation) = reserve(shared, declared.unwrap_or(max_body)) else {
        return refuse(
            shared,
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            format!(
                "too many request bytes wait for their commit (maxInFlightBytes {}); retry later",
                shared.config.max_in_flight_bytes
            ),
        );
    };
    let (parts, body) = req.into_parts();
    let read = Limited::new(body, max_body).collect();
    let Ok(read) = tokio::time::timeout(shared.config.request_timeout, read).await else {
        return refuse(
            shared,
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the body did not arrive within {:?} (requestTimeout)",
                shared.config.request_timeout
            ),
        );
    };
    let body = match read {
        Ok(collected) => collected.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return too_large(shared, max_body);
        }
        Err(e) => {
            return refuse(
                shared,
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("cannot read the body: {e}"),
            );
        }
    };
    if let Err(message) = shared.auth.check_signature(&parts.headers, &body) {
        metrics::counter!(BYTES, shared.labels_for(UNKNOWN_SOURCE)).increment(body.len() as u64);
        return refuse(shared, StatusCode::UNAUTHORIZED, "unauthorized", message);
    }
    let Parsed { mut events } = parse(mode, &parts.headers, &body, &shared.idempotency_header);
    let source = match registered {
        // Bounded by the spec like the allow-list's entries.
        Some(sender) => sender.source.clone(),
        None => source_label(
            &shared.config.allowed_sources,
            mode.is_cloudevents(),
            &events,
        ),
    };
    metrics::counter!(BYTES, shared.labels_for(&source)).increment(body.len() as u64);
    let max_events = shared.config.max_events_per_request;
    if events.len() > max_events {
        return refuse_from(
            shared,
            &source,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_events",
            format!(
                "the request holds {} events; at most {max_events} per request (maxEventsPerRequest)",
                events.len()
            ),
        );
    }
    if let Some(sender) = registered {
        for event in events.iter_mut().flatten() {
            if !mode.is_cloudevents() {
                event.source = Some(sender.webhook_source().to_string());
                continue;
            }
            let source = event.source.as_deref().unwrap_or_default();
            if !matches(&sender.source, source) {
                return refuse_from(
                    shared,
                    &sender.source,
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "source {source:?} may not write at {:?}, which is registered for {:?} (sourcePaths)",
                        sender.path, sender.source
                    ),
                );
            }
        }
    }
    if mode.is_cloudevents() && !shared.config.allowed_sources.is_empty() {
        for event in events.iter().flatten() {
            let source = event.source.as_deref().unwrap_or_default();
            if !allowed(&shared.config.allowed_sources, source) {
                return refuse(
                    shared,
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("source {source:?} may not write to this stream (allowedSources)"),
                );
            }
        }
    }
    let rows = match shared.rows.build(events) {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(source = %shared.name, error = %e.report(), "cannot assemble rows");
            return refuse_from(
                shared,
                &source,
                StatusCode::INTERNAL_SERVER_ERROR,
                "invalid",
                "the events could not be turned into rows; see the stream's logs".into(),
            );
        }
    };
    let rejected: Vec<serde_json::Value> = rows
        .invalid
        .iter()
        .map(|i| json!({"index": i.index, "reason": i.reason}))
        .collect();
    if !rows.invalid.is_empty() && !shared.config.dead_letter_invalid {
        let first = &rows.invalid[0].reason;
        let message = if rows.invalid.len() == 1 {
            format!("invalid event: {first}")
        } else {
            format!("{} invalid events, the first: {first}", rows.invalid.len())
        };
        metrics::counter!(REJECTS, with_reason(shared, &source, "invalid")).increment(1);
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": message, "rejected": rejected}),
        );
    }
    let origin = format!("http-ingest {}", parts.uri.path());
    let letters: Vec<DeadLetter> = rows
        .invalid
        .iter()
        .map(|i| {
            DeadLetter::new(&origin, format!("event {}", i.index), &i.reason)
                .with_payload(i.payload.clone())
        })
        .collect();
    let (done, receipt) = oneshot::channel::<Receipt>();
    let submit = shared.submit.lock().ok().and_then(|s| s.clone());
    let Some(submit) = submit else {
        return refuse(
            shared,
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the stream is not running; retry later".into(),
        );
    };
    if submit
        .send(Submission {
            rows,
            letters,
            done,
            source: source.clone(),
        })
        .await
        .is_err()
    {
        return refuse_from(
            shared,
            &source,
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the stream is stopping; retry later".into(),
        );
    }
    match tokio::time::timeout(shared.config.request_timeout, receipt).await {
        Ok(Ok(receipt)) => answer(
            StatusCode::OK,
            json!({
                "accepted": receipt.accepted,
                "duplicates": receipt.duplicates,
                "deadLettered": receipt.dead_lettered,
                "rejected": rejected,
            }),
        ),
        Ok(Err(_)) => refuse_from(
            shared,
            &source,
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the events were not committed (the stream stopped or its commit failed); retry".into(),
        ),
        Err(_) => refuse_from(
            shared,
            &source,
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the events were not committed within {:?} (requestTimeout); retry (a retry is deduplicated)",
                shared.config.request_timeout
            ),
        ),
    }
}

fn too_large(shared: &Shared, max_body: usize) -> Answer {
    refuse(
        shared,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the body is larger than {max_body} bytes (maxBodyBytes)"),
    )
}

/// The `source` tag of a request's metrics, bounded by the spec (never a sender's raw value):
/// `webhook` for webhooks; for CloudEvents the `allowedSources` entry their `source` matches
/// (`*` without an allow-list), `mixed` when its events match different entries, `unknown`
/// when one matches none (the request is refused) or no event is valid.
pub(crate) fn source_label(
    list: &[String],
    cloudevents: bool,
    events: &[std::result::Result<super::event::Event, super::event::Invalid>],
) -> String {
    if !cloudevents {
        return "webhook".into();
    }
    let mut label: Option<&str> = None;
    for event in events.iter().flatten() {
        let source = event.source.as_deref().unwrap_or_default();
        let entry = if list.is_empty() {
            "*"
        } else {
            match list.iter().find(|e| matches(e, source)) {
                Some(e) => e.as_str(),
                None => return UNKNOWN_SOURCE.into(),
            }
        };
        match label {
            None => label = Some(entry),
            Some(l) if l != entry => return "mixed".into(),
            Some(_) => {}
        }
    }
    label.unwrap_or(UNKNOWN_SOURCE).into()
}

fn matches(entry: &str, source: &str) -> bool {
    match entry.strip_suffix('*') {
        Some(prefix) => source.starts_with(prefix),
        None => source == entry,
    }
}

/// The sender registered at `path` (`None` when no `sourcePaths` are set); an error naming
/// the registered paths when `path` is not one of them.
pub(crate) fn registered_sender<'a>(
    senders: &'a [super::config::SourcePath],
    path: &str,
) -> std::result::Result<Option<&'a super::config::SourcePath>, String> {
    if senders.is_empty() {
        return Ok(None);
    }
    match senders.iter().find(|s| s.path == path) {
        Some(sender) => Ok(Some(sender)),
        None => Err(format!(
            "no sender is registered at {path:?}; POST to one of {:?} (sourcePaths)",
            senders.iter().map(|s| s.path.as_str()).collect::<Vec<_>>()
        )),
    }
}

/// Whether `source` matches an entry of the allow-list (exact, or a prefix ending in `*`).
pub(crate) fn allowed(list: &[String], source: &str) -> bool {
    list.iter().any(|entry| matches(entry, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_names_its_sender_and_other_paths_are_refused() {
        let senders = vec![
            super::super::config::SourcePath {
                path: "/hooks/github".into(),
                source: "https://github.com/acme/*".into(),
            },
            super::super::config::SourcePath {
                path: "/hooks/shop".into(),
                source: "shop".into(),
            },
        ];
        assert_eq!(registered_sender(&[], "/anything"), Ok(None));
        let github = registered_sender(&senders, "/hooks/github")
            .unwrap()
            .unwrap();
        assert_eq!(github.webhook_source(), "https://github.com/acme/");
        assert!(matches(&github.source, "https://github.com/acme/shop"));
        assert!(!matches(&github.source, "https://github.com/evil/shop"));
        assert_eq!(
            registered_sender(&senders, "/hooks/shop")
                .unwrap()
                .unwrap()
                .webhook_source(),
            "shop"
        );
        let err = registered_sender(&senders, "/hooks/other").unwrap_err();
        assert!(
            err.contains("\"/hooks/other\"")
                && err.contains("/hooks/shop")
                && err.contains("sourcePaths"),
            "{err}"
        );
    }

    #[test]
    fn allow_list_matches_exact_values_and_prefixes() {
        let list = vec![
            "https://github.com/acme/*".to_string(),
            "/orders".to_string(),
        ];
        assert!(allowed(&list, "https://github.com/acme/shop"));
        assert!(allowed(&list, "/orders"));
        assert!(!allowed(&list, "/orders/x"));
        assert!(!allowed(&list, "https://github.com/evil"));
    }

    #[test]
    fn metrics_are_tagged_with_the_allow_list_entry_never_the_raw_source() {
        let event = |source: &str| {
            Ok(super::super::event::Event {
                source: Some(source.to_string()),
                ..Default::default()
            })
        };
        let list = vec!["/shop/*".to_string(), "/audit".to_string()];
        let label = |list: &[String], ce: bool, sources: &[&str]| {
            let events: Vec<_> = sources.iter().map(|s| event(s)).collect();
            source_label(list, ce, &events)
        };
        assert_eq!(label(&list, true, &["/shop/a", "/shop/b"]), "/shop/*");
        assert_eq!(label(&list, true, &["/audit"]), "/audit");
        assert_eq!(label(&list, true, &["/shop/a", "/audit"]), "mixed");
        assert_eq!(label(&list, true, &["/elsewhere"]), "unknown");
        assert_eq!(label(&list, true, &[]), "unknown");
        assert_eq!(label(&[], true, &["https://anything.example"]), "*");
        assert_eq!(label(&list, false, &["/shop/a"]), "webhook");
    }

    #[test]
    fn hex_and_constant_time_comparison() {
        assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("0g"), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
