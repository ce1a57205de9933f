//! An HTTP proxy in front of a real object store (the S3 server, the Azure Blob emulator) that
//! injects faults on a seeded schedule: error statuses (500, 503, 429 with `Retry-After`),
//! connections closed without an answer, stalls, and answers cut short — on every call or on
//! specific ones (listing, multipart part upload, completion, the manifest's put). The same
//! seed and the same sequence of requests give the same faults; [`FaultProxy::injected`] counts
//! what was injected, per call and fault, and [`FaultProxy::requests`] lists every request
//! (with no rules the proxy only counts: the benchmarks use it to count object-store calls).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::{Response, StatusCode};

use crate::rng::SplitMix64;
use crate::server::Server;

/// An object-store call, recognised from the request (S3's and Azure Blob's REST APIs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Call {
    /// Listing objects (S3 `GET ?list-type=2`, Azure `comp=list`).
    List,
    /// Reading an object or its metadata.
    Read,
    /// Starting a multipart upload (S3 `POST ?uploads`).
    CreateUpload,
    /// Uploading one part (S3 `PUT ?partNumber=`, Azure `comp=block`).
    UploadPart,
    /// Completing a multipart upload (S3 `POST ?uploadId=`, Azure `comp=blocklist`).
    CompleteUpload,
    /// Putting a commit manifest (`_arcane/manifests/…`).
    ManifestPut,
    /// Any other put (markers, small files, copies).
    Put,
    /// Deleting (objects, S3's bulk delete `POST ?delete`, aborted uploads).
    Delete,
}

impl Call {
    fn of(method: &hyper::Method, path: &str, query: &str) -> Self {
        let has = |k: &str| {
            query
                .split('&')
                .any(|p| p == k || p.starts_with(&format!("{k}=")))
        };
        match method.as_str() {
            "GET" | "HEAD" if has("list-type") || query.contains("comp=list") => Call::List,
            "GET" | "HEAD" => Call::Read,
            "POST" if has("delete") => Call::Delete,
            "POST" if has("uploads") => Call::CreateUpload,
            "POST" if has("uploadId") => Call::CompleteUpload,
            "PUT"
                if has("partNumber")
                    || query.contains("comp=block&")
                    || query.ends_with("comp=block") =>
            {
                Call::UploadPart
            }
            "PUT" if query.contains("comp=blocklist") => Call::CompleteUpload,
            "PUT" if path.contains("/_arcane/manifests/") => Call::ManifestPut,
            "DELETE" => Call::Delete,
            _ => Call::Put,
        }
    }
}

/// What the proxy does instead of (or to) a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Answer with this status (not forwarded); 429 and 503 carry `Retry-After: 1`.
    Status(u16),
    /// Forward the call, then close the connection without answering: the client cannot
    /// know whether it happened.
    ResetAfter,
    /// Close the connection without forwarding the call.
    ResetBefore,
    /// Hold the call this long before forwarding it.
    Stall(Duration),
    /// Forward the call and answer with half of the body (the length says the whole).
    Truncate,
}

/// Inject `fault` into a share `rate` (0..=1) of the calls of kind `call` (any call if `None`).
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The calls it applies to.
    pub call: Option<Call>,
    /// What to do.
    pub fault: Fault,
    /// The share of those calls.
    pub rate: f64,
}

impl Rule {
    /// `fault` on a share `rate` of the calls `call`.
    pub fn on(call: Call, fault: Fault, rate: f64) -> Self {
        Self {
            call: Some(call),
            fault,
            rate,
        }
    }

    /// `fault` on a share `rate` of every call.
    pub fn any(fault: Fault, rate: f64) -> Self {
        Self {
            call: None,
            fault,
            rate,
        }
    }
}

#[derive(Debug)]
struct State {
    rng: SplitMix64,
    rules: Vec<Rule>,
    injected: BTreeMap<(Call, Fault), u64>,
    forwarded: u64,
    requests: Vec<Request>,
}

/// One request the proxy received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The call it was recognised as.
    pub call: Call,
    /// The HTTP method.
    pub method: String,
    /// The path (`/bucket/key`), percent-encoded as sent.
    pub path: String,
    /// The query string, percent-encoded as sent (empty when none).
    pub query: String,
}

impl State {
    /// The fault for one call: the first rule (in order) whose draw hits.
    fn draw(&mut self, call: Call) -> Option<Fault> {
        for i in 0..self.rules.len() {
            let rule = self.rules[i];
            if rule.call.is_some_and(|c| c != call) {
                continue;
            }
            if self.rng.unit() < rule.rate {
                *self.injected.entry((call, rule.fault)).or_default() += 1;
                return Some(rule.fault);
            }
        }
        self.forwarded += 1;
        None
    }
}

/// The proxy; dropping it stops it.
#[derive(Debug)]
pub struct FaultProxy {
    state: Arc<Mutex<State>>,
    server: Server,
}

type Resp = Response<BoxBody<Bytes, std::io::Error>>;

fn full(bytes: Bytes) -> BoxBody<Bytes, std::io::Error> {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

impl FaultProxy {
    /// A proxy to `upstream` (`http://IP:PORT`) on a free local port, injecting `rules` with
    /// the schedule of `seed`.
    pub fn start(upstream: &str, seed: u64, rules: Vec<Rule>) -> Self {
        let state = Arc::new(Mutex::new(State {
            rng: SplitMix64(seed),
            rules,
            injected: BTreeMap::new(),
            forwarded: 0,
            requests: Vec::new(),
        }));
        let upstream = upstream.trim_end_matches('/').to_string();
        let client = reqwest::Client::new();
        let shared = state.clone();
        let server = Server::start("127.0.0.1:0", move |req| {
            let (state, upstream, client) = (shared.clone(), upstream.clone(), client.clone());
            async move { handle(&state, &upstream, &client, req).await }
        })
        .expect("start the fault proxy");
        Self { state, server }
    }

    /// `http://127.0.0.1:PORT`, the endpoint to give the client.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Replace the rules (e.g. none, to let a last run finish cleanly).
    pub fn set_rules(&self, rules: Vec<Rule>) {
        self.state.lock().expect("state").rules = rules;
    }

    /// Faults injected so far, per call and fault.
    pub fn injected(&self) -> BTreeMap<(Call, Fault), u64> {
        self.state.lock().expect("state").injected.clone()
    }

    /// Calls forwarded without a fault.
    pub fn forwarded(&self) -> u64 {
        self.state.lock().expect("state").forwarded
    }

    /// Every request received so far, in arrival order (faulted or not).
    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().expect("state").requests.clone()
    }

    /// Forget the requests received so far.
    pub fn clear_requests(&self) {
        self.state.lock().expect("state").requests.clear();
    }
}

async fn handle(
    state: &Mutex<State>,
    upstream: &str,
    client: &reqwest::Client,
    req: hyper::Request<Incoming>,
) -> Result<Resp, std::io::Error> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let call = Call::of(&parts.method, &path, &query);
    let fault = {
        let mut state = state.lock().expect("state");
        state.requests.push(Request {
            call,
            method: parts.method.to_string(),
            path: path.clone(),
            query: query.clone(),
        });
        state.draw(call)
    };
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    match fault {
        Some(Fault::Status(code)) => {
            let mut resp = Response::new(full(Bytes::from_static(
                b"<Error><Code>InjectedFault</Code></Error>",
            )));
            *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
            if code == 429 || code == 503 {
                resp.headers_mut()
                    .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
            }
            return Ok(resp);
        }
        Some(Fault::ResetBefore) => return Err(std::io::Error::other("injected reset")),
        Some(Fault::Stall(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
    let url = format!(
        "{upstream}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut forward = client.request(parts.method.clone(), &url).body(body);
    for (name, value) in &parts.headers {
        forward = forward.header(name, value);
    }
    let answer = forward.send().await.map_err(std::io::Error::other)?;
    if fault == Some(Fault::ResetAfter) {
        return Err(std::io::Error::other("injected reset after the call"));
    }
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.map_err(std::io::Error::other)?;
    let length = bytes.len();
    let body = if fault == Some(Fault::Truncate) && length > 1 {
        // Half the body, then the connection fails: the length header promised all of it.
        let half = bytes.slice(..length / 2);
        let frames: Vec<Result<hyper::body::Frame<Bytes>, std::io::Error>> = vec![
            Ok(hyper::body::Frame::data(half)),
            Err(std::io::Error::other("injected truncation")),
        ];
        StreamBody::new(futures::stream::iter(frames)).boxed()
    } else {
        full(bytes)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    for (name, value) in &headers {
        if name != "transfer-encoding" {
            resp.headers_mut().insert(name, value.clone());
        }
    }
    Ok(resp)
}
