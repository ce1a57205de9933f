//! [`TestApi`]: a small HTTP API on 127.0.0.1 serving a dataset of records with every
//! pagination style of the REST API source, authentication (static bearer, API key, basic,
//! OAuth2 client credentials with expiring tokens), data that changes while a client reads it,
//! and injected faults (429 with `Retry-After`, 500, 503, slow and malformed responses, or no
//! server at all: [`TestApi::refused_url`]).
//!
//! Records are `{"id", "updated_at", "name", "amount", "customer": {"id", "country"}}`. As
//! started ([`TestApi::start`]) they are ordered by `(updated_at, id)`; three consecutive records
//! share each `updated_at`, so watermark boundaries fall inside groups of equal timestamps.
//! [`TestApi::start_shuffled`] deals the same timestamps out of id order, [`TestApi::grow_to`]
//! appends records and [`TestApi::update`] gives existing records a new version with a newer
//! `updated_at` (in place: the id order stays). Every endpoint filters by `updated_since`
//! (inclusive) and takes a page size `limit` (default 100):
//!
//! | path | pagination | response |
//! |---|---|---|
//! | `/items/page?page=1` | page number from 1 | `{"data": [..]}` |
//! | `/items/offset?offset=0` | offset | `{"data": [..]}` |
//! | `/items/cursor?cursor=..` | cursor in the body | `{"data": [..], "next_cursor": "..."}` (null at the end) |
//! | `/items/link?after=..` | `Link: <..>; rel="next"` | `[..]` |
//! | `/items/next?start=..` | next URL in the body | `{"items": [..], "next": "/items/next?.."}` |
//! | `/items/filtered?cursor=..` | cursor in the body | `{"data": [..], "next_cursor": "..."}` |
//! | `/oauth/token` | | `{"access_token", "token_type", "expires_in"}` |
//!
//! The first five serve the records at or after `updated_since` in id order, `limit` at a time.
//! `/items/filtered` is shaped like many real APIs instead: it pages over the **id range**
//! (`limit` ids per page) and then drops the records before `updated_since`, so a page can be
//! empty and still carry a `next_cursor`; its cursor pins the data as it was at the pass's first
//! page (a consistent snapshot), so a pass never sees a change made while it runs.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::server::Server;

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
    /// 503 without `Retry-After`.
    Unavailable,
    /// Wait this long, then answer normally.
    Slow(Duration),
    /// 200 with an HTML body (an error page of a proxy), not JSON.
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
    /// Pages of `/items/filtered` that were empty but had a next page.
    pub empty_pages_with_next: u64,
}

/// One version of a record.
#[derive(Debug)]
struct Item {
    /// `updated_at` in seconds since the epoch.
    at: i64,
    value: Value,
}

/// Records in id order (one version of the dataset; cheap to keep several).
type Data = Arc<Vec<Arc<Item>>>;

#[derive(Debug, Default)]
struct State {
    /// The current records, in id order.
    data: Data,
    /// Versions of the data pinned by `/items/filtered` cursors; the last one is `data` when
    /// `pinned` is true.
    snapshots: Vec<Data>,
    /// The number of `snapshots[0]` (cursors of expired snapshots are refused).
    expired: usize,
    pinned: bool,
    /// Whether `updated_at` ascends with the id (then a binary search finds `updated_since`).
    ascending: bool,
    /// The newest `updated_at` given (seconds since the epoch).
    clock: i64,
    /// Every record version the API ever held.
    history: Vec<Arc<Item>>,
    auth: ApiAuth,
    faults: VecDeque<Fault>,
    /// Served on every `/items` request while set (after the queued faults).
    persistent: Option<Fault>,
    /// Serve a 500 on every n-th `/items` request.
    fail_every: Option<u64>,
    /// Records whose `amount` is a string (schema violations), by id.
    bad_ids: Vec<u64>,
    tokens: Vec<(String, Instant)>,
    stats: ApiStats,
}

impl State {
    fn with_records(records: impl IntoIterator<Item = Value>) -> Self {
        let data: Vec<Arc<Item>> = records.into_iter().map(item).collect();
        let ascending = data.windows(2).all(|w| w[0].at <= w[1].at);
        Self {
            clock: data.iter().map(|i| i.at).max().unwrap_or(BASE),
            history: data.clone(),
            data: Arc::new(data),
            ascending,
            ..Self::default()
        }
    }

    /// Replace the current data (a new version; pinned snapshots keep the old one).
    fn set_data(&mut self, data: Vec<Arc<Item>>) {
        self.data = Arc::new(data);
        self.pinned = false;
    }
}

/// A running test API; stopped when dropped.
#[derive(Debug)]
pub struct TestApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _server: Server,
}

/// `updated_at` of the first record: 2026-01-01T00:00:00Z.
const BASE: i64 = 1_767_225_600;

fn base_at(id: u64) -> i64 {
    BASE + ((id.max(1) - 1) / 3) as i64
}

fn rfc3339(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The record with id `id` (ids from 1): `updated_at` is one second per three records from
/// 2026-01-01T00:00:00Z.
pub fn record(id: u64) -> Value {
    record_version(id, base_at(id), 0)
}

/// Version `version` of record `id` with `updated_at` at `at` (seconds since the epoch);
/// version 0 is [`record`]'s, later ones have the version in their `name`.
fn record_version(id: u64, at: i64, version: u64) -> Value {
    let name = if version == 0 {
        format!("item-{id}")
    } else {
        format!("item-{id}-v{version}")
    };
    json!({
        "id": id,
        "updated_at": rfc3339(at),
        "name": name,
        "amount": (id as f64) * 0.5,
        "customer": {"id": id % 10, "country": if id.is_multiple_of(2) { "NO" } else { "SE" }},
    })
}

fn item(value: Value) -> Arc<Item> {
    let at = value["updated_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| t.timestamp());
    Arc::new(Item { at, value })
}

impl TestApi {
    /// Serve `records` records (ids 1..=records) on 127.0.0.1 and a free port.
    pub fn start(records: u64) -> Self {
        Self::start_on("127.0.0.1:0", records).expect("start the test API")
    }

    /// Serve `records` records whose `updated_at` values are those of [`record`] dealt out of
    /// id order by a shuffle seeded with `seed`: every endpoint then returns them out of
    /// watermark order (still in id order).
    pub fn start_shuffled(records: u64, seed: u64) -> Self {
        let mut ats: Vec<i64> = (1..=records).map(base_at).collect();
        let mut rng = crate::rng::SplitMix64(seed);
        for i in (1..ats.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            ats.swap(i, j);
        }
        let state = State::with_records(
            (1..=records)
                .zip(ats)
                .map(|(id, at)| record_version(id, at, 0)),
        );
        Self::serve("127.0.0.1:0", state).expect("start the test API")
    }

    /// Serve `records` records on `addr` (e.g. `127.0.0.1:8080`).
    pub fn start_on(addr: &str, records: u64) -> std::io::Result<Self> {
        Self::serve(addr, State::with_records((1..=records).map(record)))
    }

    fn serve(addr: &str, state: State) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        let server = Server::start(addr, move |req| handle(shared.clone(), req))?;
        Ok(Self {
            addr: server.addr(),
            state,
            _server: server,
        })
    }

    /// `http://127.0.0.1:PORT{path}` on a port where nothing listens (connections are
    /// refused): a server that is down.
    pub fn refused_url(path: &str) -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        format!("http://127.0.0.1:{port}{path}")
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

    /// Serve `fault` on every `/items` request from now on (`None`: stop).
    pub fn set_persistent_fault(&self, fault: Option<Fault>) {
        self.with(|s| s.persistent = fault);
    }

    /// Serve a 500 on every `n`-th `/items` request (`None`: never).
    pub fn fail_every(&self, n: Option<u64>) {
        self.with(|s| s.fail_every = n);
    }

    /// Make the records with these ids violate the schema (`amount` is a string).
    pub fn set_bad_ids(&self, ids: Vec<u64>) {
        self.with(|s| s.bad_ids = ids);
    }

    /// Add records up to id `total`. A new record's `updated_at` is [`record`]'s, or the newest
    /// `updated_at` the API gave so far when that is later (so new records are never older
    /// than what a client has seen).
    pub fn grow_to(&self, total: u64) {
        self.with(|s| {
            let mut data = s.data.as_ref().clone();
            let have = data.len() as u64;
            if total <= have {
                return;
            }
            for id in have + 1..=total {
                let at = base_at(id).max(s.clock);
                s.clock = at;
                let new = item(record_version(id, at, 0));
                s.history.push(new.clone());
                data.push(new);
            }
            s.set_data(data);
        });
    }

    /// Give the records with these ids a new version, all with one `updated_at` one second
    /// after the newest the API gave so far, in place (their position in id order stays, so
    /// the records are no longer in `updated_at` order). Unknown ids are ignored.
    pub fn update(&self, ids: &[u64]) {
        self.with(|s| {
            s.clock += 1;
            let mut data = s.data.as_ref().clone();
            for &id in ids {
                let Some(slot) = id.checked_sub(1).and_then(|i| data.get_mut(i as usize)) else {
                    continue;
                };
                let version = s
                    .history
                    .iter()
                    .filter(|i| i.value["id"].as_u64() == Some(id))
                    .count() as u64;
                let new = item(record_version(id, s.clock, version));
                s.history.push(new.clone());
                *slot = new;
            }
            s.ascending = data.windows(2).all(|w| w[0].at <= w[1].at);
            s.set_data(data);
        });
    }

    /// Forget the snapshots pinned by `/items/filtered` cursors: their cursors are refused
    /// from now on (HTTP 400), as an API's expiring cursors would be.
    pub fn expire_cursors(&self) {
        self.with(|s| {
            s.expired += s.snapshots.len();
            s.snapshots.clear();
            s.pinned = false;
        });
    }

    /// The current records (their latest versions), in id order.
    pub fn records(&self) -> Vec<Value> {
        self.with(|s| s.data.iter().map(|i| i.value.clone()).collect())
    }

    /// Every version of every record the API held, in the order they were created.
    pub fn history(&self) -> Vec<Value> {
        self.with(|s| s.history.iter().map(|i| i.value.clone()).collect())
    }

    /// What the API saw so far.
    pub fn stats(&self) -> ApiStats {
        self.with(|s| s.stats.clone())
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
        let mut fault = s.faults.pop_front().or_else(|| s.persistent.clone());
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
        Some(Fault::Unavailable) => {
            log(&state, 503);
            return Ok(reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "service unavailable",
            ));
        }
        Some(Fault::Malformed) => {
            log(&state, 200);
            let mut r = reply(
                StatusCode::OK,
                "<html><head><title>502 Bad Gateway</title></head><body>upstream proxy error</body></html>",
            );
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/html"),
            );
            return Ok(r);
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
    let q = query(&req);
    let limit: usize = param(&q, "limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .max(1);
    let since = match param(&q, "updated_since") {
        None | Some("") => None,
        Some(s) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.timestamp()),
            Err(_) => {
                log(&state, 400);
                return Ok(reply(
                    StatusCode::BAD_REQUEST,
                    format!("updated_since {s:?} is not an RFC 3339 time"),
                ));
            }
        },
    };
    let Ok(mut s) = state.lock() else {
        return Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, "poisoned"));
    };
    s.stats.log.push((Instant::now(), 200));
    let show = |s: &State, i: &Item| -> Value {
        let mut r = i.value.clone();
        if r["id"].as_u64().is_some_and(|id| s.bad_ids.contains(&id)) {
            r["amount"] = json!("not a number");
        }
        r
    };
    if style == "filtered" {
        return Ok(filtered(&mut s, &q, limit, since, show));
    }
    // The records at or after `since`, in id order: found by binary search when `updated_at`
    // ascends with the id, so a page costs O(page); by a scan otherwise.
    let data = s.data.clone();
    let matching: Vec<&Arc<Item>> = if s.ascending {
        let first = since.map_or(0, |since| data.partition_point(|i| i.at < since));
        data[first..].iter().collect()
    } else {
        data.iter()
            .filter(|i| since.is_none_or(|since| i.at >= since))
            .collect()
    };
    let total = matching.len();
    let window = |start: usize| -> Vec<Value> {
        matching
            .iter()
            .skip(start)
            .take(limit)
            .map(|i| show(&s, i))
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

/// `/items/filtered`: `limit` ids of a pinned snapshot per page, then the `updated_since`
/// filter. The cursor is `s<snapshot>-<index>`; a pass's first page (no cursor) pins the
/// current data.
fn filtered(
    s: &mut State,
    q: &[(String, String)],
    limit: usize,
    since: Option<i64>,
    show: impl Fn(&State, &Item) -> Value,
) -> Resp {
    let (snapshot, start) = match param(q, "cursor") {
        None | Some("") => {
            if !s.pinned || s.snapshots.is_empty() {
                let data = s.data.clone();
                s.snapshots.push(data);
                s.pinned = true;
            }
            (s.expired + s.snapshots.len() - 1, 0)
        }
        Some(c) => {
            let parsed = c
                .strip_prefix('s')
                .and_then(|c| c.split_once('-'))
                .and_then(|(snap, start)| {
                    Some((snap.parse::<usize>().ok()?, start.parse::<usize>().ok()?))
                });
            match parsed {
                Some((snap, start))
                    if (s.expired..s.expired + s.snapshots.len()).contains(&snap) =>
                {
                    (snap, start)
                }
                _ => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        format!("unknown or expired cursor {c:?}"),
                    );
                }
            }
        }
    };
    let data = s.snapshots[snapshot - s.expired].clone();
    let end = (start + limit).min(data.len());
    let items: Vec<Value> = data
        .get(start..end)
        .unwrap_or_default()
        .iter()
        .filter(|i| since.is_none_or(|since| i.at >= since))
        .map(|i| show(s, i))
        .collect();
    let next = (end < data.len()).then(|| format!("s{snapshot}-{end}"));
    if items.is_empty() && next.is_some() {
        s.stats.empty_pages_with_next += 1;
    }
    json_reply(&json!({"data": items, "next_cursor": next}))
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
