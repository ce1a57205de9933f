//! [`TestApi`]: a small HTTP API on 127.0.0.1 serving a dataset of records with every
//! pagination style of the REST API source, authentication (static bearer, API key, basic,
//! OAuth2 client credentials with expiring tokens), and injected faults (429 with
//! `Retry-After`, 500, slow and malformed responses).
//!
//! Records are `{"id", "updated_at", "name", "amount", "customer": {"id", "country"}}`,
//! ordered by `(updated_at, id)`; three consecutive records share each `updated_at`, so
//! watermark boundaries fall inside groups of equal timestamps. Every endpoint filters by
//! `updated_since` (inclusive) and takes a page size `limit` (default 100):
//!
//! | path | pagination | response |
//! |---|---|---|
//! | `/items/page?page=1` | page number from 1 | `{"data": [..]}` |
//! | `/items/offset?offset=0` | offset | `{"data": [..]}` |
//! | `/items/cursor?cursor=..` | cursor in the body | `{"data": [..], "next_cursor": "..."}` (null at the end) |
//! | `/items/link?after=..` | `Link: <..>; rel="next"` | `[..]` |
//! | `/items/next?start=..` | next URL in the body | `{"items": [..], "next": "/items/next?.."}` |
//! | `/oauth/token` | | `{"access_token", "token_type", "expires_in"}` |

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// How the API authenticates requests to `/items`.
#[derive(Debug, Clone, Default)]
pub enum ApiAuth {
    /// No authentication.
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `<header>: <key>`.
    ApiKey(String, String),
    /// HTTP basic with user and password.
    Basic(String, String),
    /// OAuth2 client credentials: client id, secret, the `expires_in` announced, and how long
    /// tokens really live (shorter than announced to force a 401).
    OAuth2 {
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: String,
        /// `expires_in` in the token response (seconds).
        expires_in: u64,
        /// How long a token is accepted.
        lifetime: Duration,
    },
}

/// A fault served instead of (or around) the next `/items` response.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 429 with `Retry-After: <seconds>`.
    TooManyRequests(u64),
    /// 500.
    ServerError,
    /// Wait this long, then answer normally.
    Slow(Duration),
    /// 200 with a body that is not JSON.
    Malformed,
}

/// What the API saw.
#[derive(Debug, Clone, Default)]
pub struct ApiStats {
    /// Requests to `/items` (faults included).
    pub requests: u64,
    /// Faults served.
    pub faults: u64,
    /// Requests rejected with 401.
    pub unauthorized: u64,
    /// Tokens issued by `/oauth/token`.
    pub tokens: u64,
    /// When each `/items` request arrived, and its status.
    pub log: Vec<(Instant, u16)>,
}

#[derive(Debug, Default)]
struct State {
    records: Vec<Value>,
    auth: ApiAuth,
    faults: VecDeque<Fault>,
    /// Serve a 500 on every n-th `/items` request.
    fail_every: Option<u64>,
    /// Records whose `amount` is a string (schema violations), by id.
    bad_ids: Vec<u64>,
    tokens: Vec<(String, Instant)>,
    stats: ApiStats,
}

/// A running test API; stopped when dropped.
#[derive(Debug)]
pub struct TestApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The record with id `id` (ids from 1): `updated_at` is one second per three records from
/// 2026-01-01T00:00:00Z.
pub fn record(id: u64) -> Value {
    let at = chrono::DateTime::from_timestamp(1_767_225_600 + ((id - 1) / 3) as i64, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({
        "id": id,
        "updated_at": at,
        "name": format!("item-{id}"),
        "amount": (id as f64) * 0.5,
        "customer": {"id": id % 10, "country": if id % 2 == 0 { "NO" } else { "SE" }},
    })
}

impl TestApi {
    /// Serve `records` records (ids 1..=records) on 127.0.0.1 and a free port.
    pub fn start(records: u64) -> Self {
        Self::start_on("127.0.0.1:0", records).expect("start the test API")
    }

    /// Serve `records` records on `addr` (e.g. `127.0.0.1:8080`).
    pub fn start_on(addr: &str, records: u64) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State {
            records: (1..=records).map(record).collect(),
            ..State::default()
        }));
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let serve = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let state = shared.clone();
                        tokio::spawn(async move {
                            let service = service_fn(move |req| handle(state.clone(), req));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
        });
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("test API state"))
    }

    /// Require `auth` on `/items`.
    pub fn set_auth(&self, auth: ApiAuth) {
        self.with(|s| s.auth = auth);
    }

    /// Serve `faults` on the next `/items` requests, in order.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.with(|s| s.faults.extend(faults));
    }

    /// Serve a 500 on every `n`-th `/items` request (`None`: never).
    pub fn fail_every(&self, n: Option<u64>) {
        self.with(|s| s.fail_every = n);
    }

    /// Make the records with these ids violate the schema (`amount` is a string).
    pub fn set_bad_ids(&self, ids: Vec<u64>) {
        self.with(|s| s.bad_ids = ids);
    }

    /// Add records up to id `total` (newer timestamps).
    pub fn grow_to(&self, total: u64) {
        self.with(|s| {
            let have = s.records.len() as u64;
            s.records.extend((have + 1..=total).map(record));
        });
    }

    /// What the API saw so far.
    pub fn stats(&self) -> ApiStats {
        self.with(|s| s.stats.clone())
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Resp = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn json_reply(v: &Value) -> Resp {
    let mut r = reply(StatusCode::OK, v.to_string());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/oauth/token" {
        return Ok(token(state, req).await);
    }
    let Some(style) = path.strip_prefix("/items/").map(str::to_string) else {
        return Ok(reply(StatusCode::NOT_FOUND, "not found"));
    };
    // Faults first.
    let fault = {
        let Ok(mut s) = state.lock() else {
            return Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, "poisoned"));
        };
        s.stats.requests += 1;
        let n = s.stats.requests;
        let mut fault = s.faults.pop_front();
        if fault.is_none() && s.fail_every.is_some_and(|k| n % k == 0) {
            fault = Some(Fault::ServerError);
        }
        if fault.is_some() {
            s.stats.faults += 1;
        }
        fault
    };
    let log = |state: &Arc<Mutex<State>>, status: u16| {
        if let Ok(mut s) = state.lock() {
            s.stats.log.push((Instant::now(), status));
        }
    };
    match fault {
        Some(Fault::TooManyRequests(secs)) => {
            log(&state, 429);
            let mut r = reply(StatusCode::TOO_MANY_REQUESTS, "slow down");
            r.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from(secs),
            );
            return Ok(r);
        }
        Some(Fault::ServerError) => {
            log(&state, 500);
            return Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, "internal error"));
        }
        Some(Fault::Malformed) => {
            log(&state, 200);
            return Ok(reply(StatusCode::OK, "<html>upstream proxy error</html>"));
        }
        Some(Fault::Slow(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    if !authorized(&state, &req) {
        log(&state, 401);
        if let Ok(mut s) = state.lock() {
            s.stats.unauthorized += 1;
        }
        return Ok(reply(StatusCode::UNAUTHORIZED, "unauthorized"));
    }
    log(&state, 200);
    let q = query(&req);
    let limit: usize = param(&q, "limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let since =
        param(&q, "updated_since").and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    let Ok(s) = state.lock() else {
        return Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, "poisoned"));
    };
    // Records are in `updated_at` order (see [`record`]): find the first one at or after
    // `since` by binary search and copy only the requested window, so a page costs O(page).
    let at = |r: &Value| {
        r["updated_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    let first = since.map_or(0, |since| {
        s.records
            .partition_point(|r| at(r).is_none_or(|t| t < since))
    });
    let total = s.records.len() - first;
    let window = |start: usize| -> Vec<Value> {
        s.records[first..]
            .iter()
            .skip(start)
            .take(limit)
            .map(|r| {
                let id = r["id"].as_u64().unwrap_or_default();
                let mut r = r.clone();
                if s.bad_ids.contains(&id) {
                    r["amount"] = json!("not a number");
                }
                r
            })
            .collect()
    };
    // Keep every parameter but the paging one in the next links.
    let keep = |skip: &str| -> String {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in q.iter().filter(|(k, _)| k != skip) {
            ser.append_pair(k, v);
        }
        ser.finish()
    };
    let resp = match style.as_str() {
        "page" => {
            let page: usize = param(&q, "page").and_then(|v| v.parse().ok()).unwrap_or(1);
            json_reply(&json!({"data": window(page.saturating_sub(1) * limit)}))
        }
        "offset" => {
            let offset: usize = param(&q, "offset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            json_reply(&json!({"data": window(offset)}))
        }
        "cursor" => {
            let start: usize = param(&q, "cursor")
                .and_then(|c| c.strip_prefix("c-"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let items = window(start);
            let next = (start + items.len() < total).then(|| format!("c-{}", start + items.len()));
            json_reply(&json!({"data": items, "next_cursor": next}))
        }
        "link" => {
            let start: usize = param(&q, "after").and_then(|v| v.parse().ok()).unwrap_or(0);
            let items = window(start);
            let mut r = json_reply(&Value::Array(items.clone()));
            if start + items.len() < total {
                let rest = keep("after");
                let sep = if rest.is_empty() { "" } else { "&" };
                let link = format!(
                    "<http://{}/items/link?{rest}{sep}after={}>; rel=\"next\", <http://{}/items/link>; rel=\"first\"",
                    header(&req, "host").unwrap_or("127.0.0.1"),
                    start + items.len(),
                    header(&req, "host").unwrap_or("127.0.0.1"),
                );
                if let Ok(v) = hyper::header::HeaderValue::from_str(&link) {
                    r.headers_mut().insert(hyper::header::LINK, v);
                }
            }
            r
        }
        "next" => {
            let start: usize = param(&q, "start").and_then(|v| v.parse().ok()).unwrap_or(0);
            let items = window(start);
            let next = (start + items.len() < total).then(|| {
                let rest = keep("start");
                let sep = if rest.is_empty() { "" } else { "&" };
                format!("next?{rest}{sep}start={}", start + items.len())
            });
            json_reply(&json!({"items": items, "next": next}))
        }
        _ => reply(StatusCode::NOT_FOUND, "unknown pagination style"),
    };
    Ok(resp)
}

fn authorized(state: &Arc<Mutex<State>>, req: &Request<Incoming>) -> bool {
    let Ok(s) = state.lock() else { return false };
    let auth = header(req, "authorization").unwrap_or_default();
    match &s.auth {
        ApiAuth::None => true,
        ApiAuth::Bearer(token) => auth == format!("Bearer {token}"),
        ApiAuth::ApiKey(name, key) => header(req, name) == Some(key.as_str()),
        ApiAuth::Basic(user, pass) => {
            let expected =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            auth == format!("Basic {expected}")
        }
        ApiAuth::OAuth2 { .. } => auth.strip_prefix("Bearer ").is_some_and(|t| {
            s.tokens
                .iter()
                .any(|(tok, until)| tok == t && Instant::now() < *until)
        }),
    }
}

async fn token(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Resp {
    let basic = header(&req, "authorization").map(str::to_string);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, "no body"),
    };
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let Ok(mut s) = state.lock() else {
        return reply(StatusCode::INTERNAL_SERVER_ERROR, "poisoned");
    };
    let ApiAuth::OAuth2 {
        client_id,
        client_secret,
        expires_in,
        lifetime,
    } = s.auth.clone()
    else {
        return reply(StatusCode::NOT_FOUND, "no OAuth2 here");
    };
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{client_secret}"))
    );
    let by_basic = basic.as_deref() == Some(expected.as_str());
    let by_body = param(&form, "client_id") == Some(client_id.as_str())
        && param(&form, "client_secret") == Some(client_secret.as_str());
    if param(&form, "grant_type") != Some("client_credentials") || !(by_basic || by_body) {
        return reply(StatusCode::UNAUTHORIZED, r#"{"error": "invalid_client"}"#);
    }
    s.stats.tokens += 1;
    let token = format!("tok-{}-{}", s.stats.tokens, uuid::Uuid::new_v4().simple());
    s.tokens.push((token.clone(), Instant::now() + lifetime));
    json_reply(&json!({"access_token": token, "token_type": "Bearer", "expires_in": expires_in}))
}
