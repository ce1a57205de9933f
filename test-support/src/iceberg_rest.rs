//! [`RestCatalogServer`]: a small Iceberg REST catalog on 127.0.0.1 (a port picked at run
//! time) for tests, since no real REST catalog runs here. It keeps namespaces and tables in
//! memory and writes each table's metadata files under the table's `file://` location (so
//! pyiceberg's `RestCatalog` reads the data through its local file IO), and implements:
//!
//! | endpoint | what |
//! |---|---|
//! | `POST /v1/oauth/tokens` | OAuth2 client credentials (form body); tokens expire after the configured lifetime |
//! | `GET /v1/config?warehouse=W` | `{"defaults": {}, "overrides": {"prefix": …}}` |
//! | `POST /v1/{prefix}/namespaces` | create (409 when it exists; nested levels need their parent) |
//! | `POST /v1/{prefix}/namespaces/{ns}/tables` | create a table (404 without the namespace, 409 when it exists) |
//! | `GET /v1/{prefix}/namespaces/{ns}/tables/{t}` | load (404 when missing) |
//! | `POST /v1/{prefix}/namespaces/{ns}/tables/{t}` | commit: requirements `assert-table-uuid`, `assert-ref-snapshot-id`, `assert-create` (409 `CommitFailedException` when one fails); updates `add-schema`, `set-current-schema`, `add-snapshot`, `set-snapshot-ref`, `set-properties`, `remove-properties` |
//!
//! Every other path answers 404. With client credentials or a bearer token configured, every
//! endpoint but the token endpoint answers 401 without a valid, unexpired token. Every request
//! is recorded ([`RestCatalogServer::requests`]), and a commit can be told to fail after it was
//! applied ([`CommitFault`]). It is not a real catalog: no views, no multi-table transactions,
//! no credential vending, no storage other than `file://`, and field ids are kept as sent.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::server::Server;

/// How the server authenticates requests.
#[derive(Debug, Clone, Default)]
pub enum CatalogAuth {
    /// No authentication.
    #[default]
    None,
    /// OAuth2 client credentials: id, secret, and how long issued tokens live (announced as
    /// `expires_in`, rounded up to a second).
    OAuth2 {
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: String,
        /// Token lifetime.
        lifetime: Duration,
    },
    /// A fixed bearer token.
    Bearer(String),
}

/// A failure of the next commit, after it was applied.
#[derive(Debug, Clone)]
pub enum CommitFault {
    /// Answer 500 (the table holds the commit).
    ServerError,
    /// Hold the answer this long (the client times out; the table holds the commit).
    Hang(Duration),
}

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, percent-decoded.
    pub path: String,
    /// The query string.
    pub query: String,
    /// The status answered.
    pub status: u16,
    /// The JSON body (`null` for none and for the token endpoint's form).
    pub body: Value,
    /// Whether a bearer token was sent.
    pub authorized: bool,
}

#[derive(Debug, Default)]
struct State {
    auth: CatalogAuth,
    prefix: String,
    namespaces: BTreeSet<Vec<String>>,
    tables: BTreeMap<(Vec<String>, String), (Value, String)>,
    tokens: Vec<(String, Instant)>,
    issued: usize,
    faults: VecDeque<CommitFault>,
    requests: Vec<Recorded>,
}

/// The running catalog; dropping it stops it.
#[derive(Debug)]
pub struct RestCatalogServer {
    state: Arc<Mutex<State>>,
    server: Server,
}

type Resp = Response<Full<Bytes>>;

fn reply(status: StatusCode, v: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, kind: &str, message: &str) -> Resp {
    reply(
        status,
        &json!({"error": {"message": message, "type": kind, "code": status.as_u16()}}),
    )
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl RestCatalogServer {
    /// Start a catalog with `auth`, answering `GET /v1/config` with prefix `prefix`.
    pub fn start(auth: CatalogAuth, prefix: &str) -> Self {
        let state = Arc::new(Mutex::new(State {
            auth,
            prefix: prefix.to_string(),
            ..State::default()
        }));
        let s = state.clone();
        let server = Server::start("127.0.0.1:0", move |req| handle(s.clone(), req))
            .expect("start the REST catalog");
        Self { state, server }
    }

    /// The catalog's URI (`http://127.0.0.1:PORT`).
    pub fn uri(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Fail the next commit after applying it.
    pub fn fail_next_commit(&self, fault: CommitFault) {
        self.state.lock().expect("state").faults.push_back(fault);
    }

    /// The requests answered so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().expect("state").requests.clone()
    }

    /// Tokens issued so far.
    pub fn tokens_issued(&self) -> usize {
        self.state.lock().expect("state").issued
    }

    /// The current metadata of `namespace.table` (levels separated by dots), if any.
    pub fn metadata(&self, namespace: &str, table: &str) -> Option<Value> {
        let ns: Vec<String> = namespace.split('.').map(str::to_string).collect();
        self.state
            .lock()
            .expect("state")
            .tables
            .get(&(ns, table.to_string()))
            .map(|(m, _)| m.clone())
    }

    /// Read `namespace.table` with pyiceberg's `RestCatalog` pointed at this server, with
    /// `credential` (`client_id:client_secret`) when the server wants one.
    pub fn read(
        &self,
        namespace: &str,
        table: &str,
        credential: Option<&str>,
    ) -> Result<crate::iceberg::IcebergRead, String> {
        let mut props = BTreeMap::from([("uri".to_string(), self.uri())]);
        if let Some(c) = credential {
            props.insert("credential".into(), c.into());
        }
        crate::iceberg::pyiceberg_read("rest", "arcane_test", namespace, table, &props)
    }

    /// Run `code` in the test Python with `catalog` (pyiceberg's `RestCatalog` on this server,
    /// without credentials) defined: another engine writing the table.
    pub fn run_python(&self, code: &str) {
        crate::python::run_ok(
            &format!(
                "from pyiceberg.catalog.rest import RestCatalog\ncatalog = RestCatalog('other', uri='{}')\n{code}",
                self.uri()
            ),
            &[],
            &[],
        );
    }

    /// The spec's `tableFormat.iceberg` for `namespace.table` in this catalog, with `rest`
    /// settings merged over `{"uri": …}`.
    pub fn table_format(&self, namespace: &str, table: &str, rest: Value) -> Value {
        let mut r = json!({"uri": self.uri()});
        if let (Some(r), Some(extra)) = (r.as_object_mut(), rest.as_object()) {
            for (k, v) in extra {
                r.insert(k.clone(), v.clone());
            }
        }
        json!({"iceberg": {"catalog": {"rest": r}, "namespace": namespace, "table": table}})
    }
}

fn record(state: &Arc<Mutex<State>>, r: Recorded) {
    if let Ok(mut s) = state.lock() {
        s.requests.push(r);
    }
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let method = req.method().clone();
    let path = decode(req.uri().path());
    let query = req.uri().query().unwrap_or_default().to_string();
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let raw = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let is_token = path == "/v1/oauth/tokens";
    let body: Value = if is_token {
        Value::Null
    } else {
        serde_json::from_slice(&raw).unwrap_or(Value::Null)
    };
    let mut fault = None;
    let resp = if is_token && method == Method::POST {
        token(&state, &raw)
    } else if !authorized(&state, bearer.as_deref()) {
        error(
            StatusCode::UNAUTHORIZED,
            "NotAuthorizedException",
            "a valid bearer token is required",
        )
    } else {
        route(&state, &method, &path, &query, &body, &mut fault)
    };
    record(
        &state,
        Recorded {
            method: method.to_string(),
            path,
            query,
            status: resp.status().as_u16(),
            body,
            authorized: bearer.is_some(),
        },
    );
    match fault {
        Some(CommitFault::ServerError) => Ok(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServerError",
            "injected failure after the commit was applied",
        )),
        Some(CommitFault::Hang(d)) => {
            tokio::time::sleep(d).await;
            Ok(resp)
        }
        None => Ok(resp),
    }
}

fn authorized(state: &Arc<Mutex<State>>, bearer: Option<&str>) -> bool {
    let Ok(s) = state.lock() else {
        return false;
    };
    match &s.auth {
        CatalogAuth::None => true,
        CatalogAuth::Bearer(t) => bearer == Some(t.as_str()),
        CatalogAuth::OAuth2 { .. } => bearer.is_some_and(|b| {
            s.tokens
                .iter()
                .any(|(t, until)| t == b && Instant::now() < *until)
        }),
    }
}

fn token(state: &Arc<Mutex<State>>, raw: &[u8]) -> Resp {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(raw)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let Ok(mut s) = state.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "ServerError", "poisoned");
    };
    let CatalogAuth::OAuth2 {
        client_id,
        client_secret,
        lifetime,
    } = s.auth.clone()
    else {
        return error(StatusCode::NOT_FOUND, "NotFound", "no OAuth2 here");
    };
    let get = |k: &str| form.get(k).map(String::as_str);
    if get("grant_type") != Some("client_credentials") {
        return reply(
            StatusCode::BAD_REQUEST,
            &json!({"error": "unsupported_grant_type"}),
        );
    }
    if get("client_id") != Some(client_id.as_str())
        || get("client_secret") != Some(client_secret.as_str())
    {
        return reply(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_client", "error_description": "unknown client or wrong secret"}),
        );
    }
    s.issued += 1;
    let token = format!("tok-{}-{}", s.issued, uuid::Uuid::new_v4().simple());
    s.tokens.push((token.clone(), Instant::now() + lifetime));
    reply(
        StatusCode::OK,
        &json!({"access_token": token, "token_type": "bearer",
                "expires_in": lifetime.as_secs_f64().ceil() as u64,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}),
    )
}

fn route(
    state: &Arc<Mutex<State>>,
    method: &Method,
    path: &str,
    query: &str,
    body: &Value,
    fault: &mut Option<CommitFault>,
) -> Resp {
    let Ok(mut s) = state.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "ServerError", "poisoned");
    };
    if path == "/v1/config" && method == Method::GET {
        let warehouse = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "warehouse")
            .map(|(_, v)| v.into_owned());
        let mut overrides = json!({"prefix": s.prefix});
        if let Some(w) = warehouse {
            overrides["warehouse-name"] = json!(w);
        }
        return reply(
            StatusCode::OK,
            &json!({"defaults": {"default-namespace-separator": "."}, "overrides": overrides}),
        );
    }
    let root = format!("/v1/{}/namespaces", s.prefix);
    let Some(rest) = path.strip_prefix(&root) else {
        return error(StatusCode::NOT_FOUND, "NotFound", "no such endpoint");
    };
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (&Method::POST, [""]) => {
            let ns: Vec<String> = body["namespace"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if ns.is_empty() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "BadRequestException",
                    "no namespace",
                );
            }
            if s.namespaces.contains(&ns) {
                return error(
                    StatusCode::CONFLICT,
                    "AlreadyExistsException",
                    "namespace exists",
                );
            }
            if ns.len() > 1 && !s.namespaces.contains(&ns[..ns.len() - 1]) {
                return error(
                    StatusCode::NOT_FOUND,
                    "NoSuchNamespaceException",
                    "parent namespace missing",
                );
            }
            s.namespaces.insert(ns.clone());
            reply(
                StatusCode::OK,
                &json!({"namespace": ns, "properties": body["properties"]}),
            )
        }
        (&Method::POST, [ns, "tables"]) => {
            let ns: Vec<String> = ns.split('\u{1f}').map(str::to_string).collect();
            if !s.namespaces.contains(&ns) {
                return error(
                    StatusCode::NOT_FOUND,
                    "NoSuchNamespaceException",
                    "namespace missing",
                );
            }
            let Some(name) = body["name"].as_str() else {
                return error(StatusCode::BAD_REQUEST, "BadRequestException", "no name");
            };
            let key = (ns, name.to_string());
            if s.tables.contains_key(&key) {
                return error(
                    StatusCode::CONFLICT,
                    "AlreadyExistsException",
                    "table exists",
                );
            }
            let Some(location) = body["location"].as_str() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "BadRequestException",
                    "this test catalog needs a location",
                );
            };
            let mut schema = body["schema"].clone();
            schema["schema-id"] = json!(0);
            let last = max_id(&schema);
            let metadata = json!({
                "format-version": 2,
                "table-uuid": uuid::Uuid::new_v4().to_string(),
                "location": location,
                "last-sequence-number": 0,
                "last-updated-ms": now_ms(),
                "last-column-id": last,
                "current-schema-id": 0,
                "schemas": [schema],
                "default-spec-id": 0,
                "partition-specs": [{"spec-id": 0, "fields": []}],
                "last-partition-id": 999,
                "default-sort-order-id": 0,
                "sort-orders": [{"order-id": 0, "fields": []}],
                "properties": if body["properties"].is_object() { body["properties"].clone() } else { json!({}) },
                "current-snapshot-id": -1,
                "refs": {},
                "snapshots": [],
                "snapshot-log": [],
                "metadata-log": [],
            });
            match write_metadata(&metadata, 0) {
                Ok(at) => {
                    s.tables.insert(key, (metadata.clone(), at.clone()));
                    reply(
                        StatusCode::OK,
                        &json!({"metadata-location": at, "metadata": metadata, "config": {}}),
                    )
                }
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "ServerError", &e),
            }
        }
        (m, [ns, "tables", table]) if m == Method::GET || m == Method::POST => {
            let ns: Vec<String> = ns.split('\u{1f}').map(str::to_string).collect();
            let key = (ns, table.to_string());
            let Some((current, at)) = s.tables.get(&key).cloned() else {
                return error(
                    StatusCode::NOT_FOUND,
                    "NoSuchTableException",
                    "no such table",
                );
            };
            if m == Method::GET {
                return reply(
                    StatusCode::OK,
                    &json!({"metadata-location": at, "metadata": current, "config": {}}),
                );
            }
            let next = match commit(&current, &at, body) {
                Ok(next) => next,
                Err((status, kind, message)) => return error(status, kind, &message),
            };
            let version = current["metadata-log"].as_array().map_or(0, Vec::len) + 1;
            match write_metadata(&next, version) {
                Ok(new_at) => {
                    s.tables.insert(key, (next.clone(), new_at.clone()));
                    *fault = s.faults.pop_front();
                    reply(
                        StatusCode::OK,
                        &json!({"metadata-location": new_at, "metadata": next}),
                    )
                }
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "ServerError", &e),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "NotFound", "no such endpoint"),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The largest field id in `v` (a schema or type).
fn max_id(v: &Value) -> i64 {
    let mut m = v["id"].as_i64().unwrap_or(0);
    m = m.max(v["element-id"].as_i64().unwrap_or(0));
    for key in ["fields"] {
        if let Some(a) = v[key].as_array() {
            for f in a {
                m = m.max(max_id(f));
            }
        }
    }
    if v["type"].is_object() {
        m = m.max(max_id(&v["type"]));
    }
    if v["element"].is_object() {
        m = m.max(max_id(&v["element"]));
    }
    m
}

/// Write `metadata` under its location's `metadata/` (a `file://` location); its URL.
fn write_metadata(metadata: &Value, version: usize) -> Result<String, String> {
    let location = metadata["location"].as_str().unwrap_or_default();
    let Some(dir) = location.strip_prefix("file://") else {
        return Err(format!(
            "this test catalog writes file:// locations only, not {location}"
        ));
    };
    let dir = format!("{}/metadata", dir.trim_end_matches('/'));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let name = format!("{version:05}-{}.metadata.json", uuid::Uuid::new_v4());
    std::fs::write(format!("{dir}/{name}"), metadata.to_string()).map_err(|e| e.to_string())?;
    Ok(format!(
        "{}/metadata/{name}",
        location.trim_end_matches('/')
    ))
}

type Refused = (StatusCode, &'static str, String);

fn conflict(message: String) -> Refused {
    (StatusCode::CONFLICT, "CommitFailedException", message)
}

fn bad(message: String) -> Refused {
    (StatusCode::BAD_REQUEST, "BadRequestException", message)
}

/// The metadata after the commit `body` on `current` (at `at`), or why it is refused.
fn commit(current: &Value, at: &str, body: &Value) -> Result<Value, Refused> {
    for r in body["requirements"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        match r["type"].as_str() {
            Some("assert-table-uuid") => {
                if r["uuid"] != current["table-uuid"] {
                    return Err(conflict(format!(
                        "Requirement failed: UUID does not match: expected {} != {}",
                        current["table-uuid"], r["uuid"]
                    )));
                }
            }
            Some("assert-ref-snapshot-id") => {
                let name = r["ref"].as_str().unwrap_or_default();
                let have = current["refs"][name]["snapshot-id"].as_i64();
                let want = r["snapshot-id"].as_i64();
                if have != want {
                    return Err(conflict(format!(
                        "Requirement failed: branch {name} has changed: expected id {want:?} != {have:?}"
                    )));
                }
            }
            Some("assert-create") => {
                return Err(conflict("Requirement failed: table already exists".into()));
            }
            other => return Err(bad(format!("unsupported requirement {other:?}"))),
        }
    }
    let mut m = current.clone();
    let mut last_added_schema = None;
    let now = now_ms();
    for u in body["updates"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        match u["action"].as_str() {
            Some("add-schema") => {
                let mut schema = u["schema"].clone();
                let id = m["schemas"]
                    .as_array()
                    .and_then(|s| s.iter().filter_map(|s| s["schema-id"].as_i64()).max())
                    .map_or(0, |x| x + 1);
                schema["schema-id"] = json!(id);
                let last = u["last-column-id"]
                    .as_i64()
                    .unwrap_or(0)
                    .max(m["last-column-id"].as_i64().unwrap_or(0))
                    .max(max_id(&schema));
                push(&mut m, "schemas", schema);
                m["last-column-id"] = json!(last);
                last_added_schema = Some(id);
            }
            Some("set-current-schema") => {
                let id = match u["schema-id"].as_i64() {
                    Some(-1) => last_added_schema
                        .ok_or_else(|| bad("set-current-schema -1 without add-schema".into()))?,
                    Some(id) => id,
                    None => return Err(bad("set-current-schema without schema-id".into())),
                };
                m["current-schema-id"] = json!(id);
            }
            Some("add-snapshot") => {
                let snap = u["snapshot"].clone();
                let Some(id) = snap["snapshot-id"].as_i64() else {
                    return Err(bad("add-snapshot without snapshot-id".into()));
                };
                if m["snapshots"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["snapshot-id"].as_i64() == Some(id)))
                {
                    return Err(bad(format!("snapshot {id} already exists")));
                }
                let seq = snap["sequence-number"].as_i64().unwrap_or(0);
                let last = m["last-sequence-number"].as_i64().unwrap_or(0);
                if seq <= last {
                    return Err(bad(format!(
                        "sequence number {seq} of snapshot {id} is not after the table's {last}"
                    )));
                }
                m["last-sequence-number"] = json!(seq);
                push(&mut m, "snapshots", snap);
            }
            Some("set-snapshot-ref") => {
                let (Some(name), Some(id)) = (u["ref-name"].as_str(), u["snapshot-id"].as_i64())
                else {
                    return Err(bad(
                        "set-snapshot-ref without ref-name or snapshot-id".into()
                    ));
                };
                if !m["snapshots"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["snapshot-id"].as_i64() == Some(id)))
                {
                    return Err(bad(format!("set-snapshot-ref to unknown snapshot {id}")));
                }
                if !m["refs"].is_object() {
                    m["refs"] = json!({});
                }
                m["refs"][name] = json!({"snapshot-id": id, "type": u["type"]});
                if name == "main" {
                    m["current-snapshot-id"] = json!(id);
                    push(
                        &mut m,
                        "snapshot-log",
                        json!({"snapshot-id": id, "timestamp-ms": now}),
                    );
                }
            }
            Some("set-properties") => {
                if !m["properties"].is_object() {
                    m["properties"] = json!({});
                }
                for (k, v) in u["updates"].as_object().into_iter().flatten() {
                    m["properties"][k] = v.clone();
                }
            }
            Some("remove-properties") => {
                for k in u["removals"].as_array().into_iter().flatten() {
                    if let (Some(p), Some(k)) = (m["properties"].as_object_mut(), k.as_str()) {
                        p.remove(k);
                    }
                }
            }
            other => return Err(bad(format!("unsupported update {other:?}"))),
        }
    }
    push(
        &mut m,
        "metadata-log",
        json!({"metadata-file": at, "timestamp-ms": current["last-updated-ms"]}),
    );
    m["last-updated-ms"] = json!(now.max(current["last-updated-ms"].as_i64().unwrap_or(0)));
    Ok(m)
}

fn push(m: &mut Value, key: &str, v: Value) {
    match m[key].as_array_mut() {
        Some(a) => a.push(v),
        None => m[key] = json!([v]),
    }
}
