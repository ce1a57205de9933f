//! An Iceberg REST catalog client (the protocol of Lakekeeper, Polaris, Nessie, Gravitino, …),
//! for one table: `GET /v1/config`, load and create the table (and its namespace), and the
//! commit `POST /v1/{prefix}/namespaces/{ns}/tables/{t}` with requirements.
//!
//! * A commit asserts the table's uuid and that `main` still points at the snapshot it was
//!   built on; `409` means another writer committed first (the table is read again).
//! * `5xx`, a timeout or a broken connection leave the outcome **unknown**: the table is
//!   loaded again and the commit counts as applied exactly when the table holds its snapshot
//!   id; when `main` has not moved the same commit (same snapshot id, same requirements) is
//!   sent again, so at most one of the attempts can apply.
//! * `401`/`403` are FATAL, naming the credential setting. OAuth2 client-credential tokens are
//!   refreshed before they expire (and once on a `401`). Secrets are never logged.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arcane_core::retry::RetryConfig;
use arcane_core::{Error, Result, Retry};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::catalogs::{Commit, Loaded};
use crate::parquet::config::{DEFAULT_ICEBERG_REST_SCOPE, RestCatalogConfig};

/// How the client authenticates.
enum Auth {
    None,
    /// A static bearer token (from `tokenEnv`).
    Bearer(String),
    /// OAuth2 client credentials (from `credentialEnv`) and the current token with the
    /// instant it is refreshed at.
    OAuth2 {
        client_id: String,
        client_secret: String,
        token_uri: String,
        scope: String,
        token: Option<(String, Option<Instant>)>,
    },
}

/// Checked settings of a REST catalog (see [`parse_config`]); its `Debug` shows no secret.
pub struct RestSettings {
    uri: String,
    warehouse: Option<String>,
    properties: BTreeMap<String, String>,
    auth: Auth,
    /// The field naming the credential, for 401/403 messages.
    auth_field: String,
    timeout: Duration,
}

/// Check `c` and read its secrets from the environment: `field` is the spec path of `c`
/// (`sink.tableFormat.iceberg.catalog.rest`).
pub fn parse_config(
    c: &RestCatalogConfig,
    properties: &BTreeMap<String, String>,
    field: &str,
) -> Result<RestSettings> {
    let uri = c.uri.trim().trim_end_matches('/').to_string();
    match url::Url::parse(&uri) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => {
            return Err(Error::config(
                format!("{field}.uri"),
                format!(
                    "{uri:?} is not an http(s) URL; use the catalog's base URI without /v1, e.g. https://lakekeeper:8181/catalog"
                ),
            ));
        }
    }
    if c.request_timeout.is_zero() {
        return Err(Error::config(
            format!("{field}.requestTimeout"),
            "must be more than zero, e.g. \"30s\"",
        ));
    }
    let env = |var: &str, name: &str| {
        std::env::var(var).map_err(|_| {
            Error::config(
                format!("{field}.{name}"),
                format!(
                    "environment variable {var} is not set; set it (e.g. from a Kubernetes secret)"
                ),
            )
        })
    };
    let (auth, auth_field) = match (&c.credential_env, &c.token_env) {
        (Some(_), Some(_)) => {
            return Err(Error::config(
                format!("{field}.credentialEnv"),
                "set either credentialEnv (OAuth2 client credentials) or tokenEnv (a bearer token), not both",
            ));
        }
        (Some(var), None) => {
            let credential = env(var, "credentialEnv")?;
            let Some((id, secret)) = credential.split_once(':') else {
                return Err(Error::config(
                    format!("{field}.credentialEnv"),
                    format!(
                        "environment variable {var} must hold client_id:client_secret (it has no colon)"
                    ),
                ));
            };
            let token_uri = match &c.oauth2_server_uri {
                Some(u) => {
                    let u = u.trim().to_string();
                    if !url::Url::parse(&u).is_ok_and(|p| matches!(p.scheme(), "http" | "https")) {
                        return Err(Error::config(
                            format!("{field}.oauth2ServerUri"),
                            format!("{u:?} is not an http(s) URL"),
                        ));
                    }
                    u
                }
                None => format!("{uri}/v1/oauth/tokens"),
            };
            (
                Auth::OAuth2 {
                    client_id: id.to_string(),
                    client_secret: secret.to_string(),
                    token_uri,
                    scope: c
                        .scope
                        .clone()
                        .unwrap_or_else(|| DEFAULT_ICEBERG_REST_SCOPE.into()),
                    token: None,
                },
                format!("{field}.credentialEnv"),
            )
        }
        (None, Some(var)) => (
            Auth::Bearer(env(var, "tokenEnv")?.trim().to_string()),
            format!("{field}.tokenEnv"),
        ),
        (None, None) => (Auth::None, format!("{field}.credentialEnv")),
    };
    Ok(RestSettings {
        uri,
        warehouse: c.warehouse.clone(),
        properties: properties.clone(),
        auth,
        auth_field,
        timeout: c.request_timeout,
    })
}

impl std::fmt::Debug for RestSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestSettings")
            .field("uri", &self.uri)
            .field("warehouse", &self.warehouse)
            .field("auth", &self.auth_field)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A path segment, percent-encoded (everything but RFC 3986's unreserved characters).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What one request got: a status and a body, or no answer.
enum Answer {
    Status(StatusCode, Vec<u8>),
    NoAnswer(String),
}

/// An Iceberg REST catalog, for one table.
pub struct RestCatalog {
    s: RestSettings,
    http: reqwest::Client,
    namespace: Vec<String>,
    table: String,
    sink: String,
    retry: RetryConfig,
    /// `{uri}/v1/{prefix}` once the configuration is read.
    base: Option<String>,
}

impl std::fmt::Debug for RestCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials or tokens.
        f.debug_struct("RestCatalog")
            .field("uri", &self.s.uri)
            .field("table", &self.identifier())
            .finish_non_exhaustive()
    }
}

impl RestCatalog {
    /// A client for `namespace.table` (no I/O yet).
    pub fn new(
        s: RestSettings,
        namespace: &str,
        table: String,
        sink: String,
        retry: RetryConfig,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(s.timeout)
            .connect_timeout(s.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| {
                Error::sink(
                    sink.clone(),
                    format!("cannot build the HTTP client of the Iceberg REST catalog: {e}"),
                    Retry::Permanent,
                    Some(Box::new(e)),
                )
            })?;
        Ok(Self {
            s,
            http,
            namespace: namespace.split('.').map(str::to_string).collect(),
            table,
            sink,
            retry,
            base: None,
        })
    }

    /// `namespace.table` at the catalog's URI, for messages.
    pub fn identifier(&self) -> String {
        format!(
            "{}.{} ({})",
            self.namespace.join("."),
            self.table,
            self.s.uri
        )
    }

    fn err(&self, message: String, retry: Retry) -> Error {
        Error::sink(
            self.sink.clone(),
            format!("Iceberg REST catalog {}: {message}", self.s.uri),
            retry,
            None,
        )
    }

    fn unauthorized(&self, status: StatusCode, what: &str, body: &[u8]) -> Error {
        let how = match &self.s.auth {
            Auth::None => {
                "the catalog wants credentials: set credentialEnv (OAuth2 client_id:client_secret) or tokenEnv (a bearer token)"
            }
            Auth::Bearer(_) => {
                "the bearer token was refused or lacks the permission: renew the token in the variable tokenEnv names or grant its principal access"
            }
            Auth::OAuth2 { .. } => {
                "the client credentials were refused or lack the permission: check the client_id:client_secret in the variable credentialEnv names (and oauth2ServerUri, scope) and the principal's grants"
            }
        };
        Error::config(
            self.s.auth_field.clone(),
            format!(
                "Iceberg REST catalog {}: {what}: HTTP {status}{}; {how}",
                self.s.uri,
                error_message(body).map_or(String::new(), |m| format!(" ({m})"))
            ),
        )
    }

    /// An answer that is neither success nor an expected status, as an error.
    fn failed(&self, what: &str, answer: Answer) -> Error {
        match answer {
            Answer::NoAnswer(why) => self.err(
                format!("{what}: {why}; the stream restarts and retries"),
                Retry::Transient,
            ),
            Answer::Status(status, body)
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN =>
            {
                self.unauthorized(status, what, &body)
            }
            Answer::Status(status, body) => {
                let transient = status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT;
                let message = error_message(&body).unwrap_or_default();
                self.err(
                    format!(
                        "{what}: HTTP {status} {message}; {}",
                        if transient {
                            "the stream restarts and retries"
                        } else {
                            "check sink.tableFormat.iceberg (catalog uri, warehouse, namespace, table) against the catalog"
                        }
                    ),
                    if transient {
                        Retry::Transient
                    } else {
                        Retry::Permanent
                    },
                )
            }
        }
    }

    /// The current bearer token, requested (or refreshed) when there is none or it is due.
    async fn token(&mut self, force: bool) -> Result<Option<String>> {
        let (client_id, client_secret, token_uri, scope, token) = match &mut self.s.auth {
            Auth::None => return Ok(None),
            Auth::Bearer(t) => return Ok(Some(t.clone())),
            Auth::OAuth2 {
                client_id,
                client_secret,
                token_uri,
                scope,
                token,
            } => (client_id, client_secret, token_uri, scope, token),
        };
        if !force
            && let Some((t, refresh_at)) = token
            && refresh_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(Some(t.clone()));
        }
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", client_id)
            .append_pair("client_secret", client_secret)
            .append_pair("scope", scope)
            .finish();
        let token_uri = token_uri.clone();
        let mut delay = self.retry.initial_delay;
        let mut attempt = 1;
        loop {
            let sent = self
                .http
                .post(&token_uri)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.clone())
                .send()
                .await;
            let answer = match sent {
                Ok(r) => {
                    let status = r.status();
                    match r.bytes().await {
                        Ok(b) => Answer::Status(status, b.to_vec()),
                        Err(e) => Answer::NoAnswer(cause(&e)),
                    }
                }
                Err(e) => Answer::NoAnswer(cause(&e)),
            };
            let what = format!("cannot get an OAuth2 token from {token_uri}");
            match answer {
                Answer::Status(status, body) if status.is_success() => {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let Some(access) = v["access_token"].as_str() else {
                        return Err(self.err(
                            format!("{what}: the answer has no access_token"),
                            Retry::Permanent,
                        ));
                    };
                    // Refreshed when less than half of its lifetime (at most 5 minutes) is left.
                    let refresh_at = v["expires_in"].as_u64().map(|secs| {
                        let life = Duration::from_secs(secs);
                        Instant::now() + life - (life / 2).min(Duration::from_secs(300))
                    });
                    tracing::debug!(catalog = %self.s.uri, expires_in = ?v["expires_in"].as_u64(), "iceberg catalog token obtained");
                    if let Auth::OAuth2 { token, .. } = &mut self.s.auth {
                        *token = Some((access.to_string(), refresh_at));
                    }
                    return Ok(Some(access.to_string()));
                }
                Answer::Status(status, body)
                    if status == StatusCode::BAD_REQUEST
                        || status == StatusCode::UNAUTHORIZED
                        || status == StatusCode::FORBIDDEN =>
                {
                    return Err(self.unauthorized(status, &what, &body));
                }
                answer => {
                    let e = self.failed(&what, answer);
                    if e.exit_code() != arcane_core::ExitCode::Restart
                        || attempt >= self.retry.max_attempts.max(1)
                    {
                        return Err(e);
                    }
                    tracing::warn!(attempt, error = %e, retry_in = ?delay, "cannot get a token from the Iceberg catalog's OAuth2 server; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.retry.max_delay);
                    attempt += 1;
                }
            }
        }
    }

    /// One request with the current token; a `401` with OAuth2 credentials gets a new token
    /// and is sent once more (the catalog refused it before doing anything).
    async fn request(&mut self, method: Method, url: &str, body: Option<&Value>) -> Result<Answer> {
        let mut refreshed = false;
        loop {
            let token = self.token(false).await?;
            let mut req = self
                .http
                .request(method.clone(), url)
                .header("accept", "application/json");
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            let answer = match req.send().await {
                Ok(r) => {
                    let status = r.status();
                    match r.bytes().await {
                        Ok(b) => Answer::Status(status, b.to_vec()),
                        Err(e) => Answer::NoAnswer(cause(&e)),
                    }
                }
                Err(e) => Answer::NoAnswer(cause(&e)),
            };
            if let Answer::Status(StatusCode::UNAUTHORIZED, _) = answer
                && !refreshed
                && matches!(self.s.auth, Auth::OAuth2 { .. })
            {
                refreshed = true;
                self.token(true).await?;
                continue;
            }
            return Ok(answer);
        }
    }

    /// A request that can be repeated safely, retried with the sink's policy while the
    /// failure is transient (each attempt logged); answers in `ok` are returned.
    async fn idempotent(
        &mut self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        what: &str,
        ok: &[StatusCode],
    ) -> Result<(StatusCode, Value)> {
        let mut delay = self.retry.initial_delay;
        let mut attempt = 1;
        loop {
            let answer = self.request(method.clone(), url, body).await?;
            let answer = match answer {
                Answer::Status(status, body) if status.is_success() || ok.contains(&status) => {
                    let v = if body.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_slice(&body).map_err(|e| {
                            self.err(
                                format!("{what}: the answer is not JSON ({e})"),
                                Retry::Transient,
                            )
                        })?
                    };
                    return Ok((status, v));
                }
                other => other,
            };
            let e = self.failed(what, answer);
            if e.exit_code() != arcane_core::ExitCode::Restart
                || attempt >= self.retry.max_attempts.max(1)
            {
                return Err(e);
            }
            tracing::warn!(attempt, error = %e, retry_in = ?delay, "an Iceberg REST catalog request failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.retry.max_delay);
            attempt += 1;
        }
    }

    fn base(&self) -> Result<&str> {
        self.base.as_deref().ok_or_else(|| {
            Error::fatal("the Iceberg REST catalog is used before its configuration was read")
        })
    }

    fn namespace_path(&self) -> String {
        encode_segment(&self.namespace.join("\u{1f}"))
    }

    fn table_url(&self) -> Result<String> {
        Ok(format!(
            "{}/namespaces/{}/tables/{}",
            self.base()?,
            self.namespace_path(),
            encode_segment(&self.table)
        ))
    }

    /// Authenticate and read the catalog's configuration (`GET /v1/config`): the client's
    /// properties (`catalogProperties`) over the server's `defaults`, under its `overrides`;
    /// `prefix` from the result.
    pub async fn init(&mut self) -> Result<()> {
        let mut url = format!("{}/v1/config", self.s.uri);
        if let Some(w) = &self.s.warehouse {
            url = format!(
                "{url}?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("warehouse", w)
                    .finish()
            );
        }
        let (_, config) = self
            .idempotent(
                Method::GET,
                &url,
                None,
                "cannot read the catalog's configuration (GET /v1/config)",
                &[],
            )
            .await?;
        let mut merged: BTreeMap<String, String> = BTreeMap::new();
        let strings = |v: &Value| -> Vec<(String, String)> {
            v.as_object()
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default()
        };
        merged.extend(strings(&config["defaults"]));
        merged.extend(self.s.properties.clone());
        merged.extend(strings(&config["overrides"]));
        let prefix = merged
            .get("prefix")
            .map(|p| p.trim_matches('/').to_string())
            .filter(|p| !p.is_empty());
        self.base = Some(match &prefix {
            Some(p) => format!("{}/v1/{p}", self.s.uri),
            None => format!("{}/v1", self.s.uri),
        });
        tracing::debug!(catalog = %self.s.uri, prefix = ?prefix, "iceberg REST catalog configured");
        Ok(())
    }

    fn loaded(&self, v: Value, what: &str) -> Result<Loaded> {
        let location = v["metadata-location"].as_str().map(str::to_string);
        match (location, v.get("metadata")) {
            (Some(location), Some(m)) if m.is_object() => Ok(Loaded {
                location,
                metadata: Some(m.clone()),
            }),
            _ => Err(self.err(
                format!("{what}: the answer has no metadata-location and metadata"),
                Retry::Permanent,
            )),
        }
    }

    /// The table (`GET …/tables/{t}`); `None` when the catalog has no such table.
    pub async fn load(&mut self) -> Result<Option<Loaded>> {
        let url = self.table_url()?;
        let what = format!("cannot load the table {}", self.identifier());
        let (status, v) = self
            .idempotent(Method::GET, &url, None, &what, &[StatusCode::NOT_FOUND])
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.loaded(v, &what).map(Some)
    }

    /// Create the namespace (each level, as nested namespaces need their parents) and the
    /// table from `metadata` (its location, first schema and properties) unless it exists;
    /// the table as the catalog has it and whether this call created it.
    pub async fn create(&mut self, metadata: &Value) -> Result<(Loaded, bool)> {
        let base = self.base()?.to_string();
        for depth in 1..=self.namespace.len() {
            let levels = &self.namespace[..depth];
            let what = format!("cannot create the namespace {}", levels.join("."));
            self.idempotent(
                Method::POST,
                &format!("{base}/namespaces"),
                Some(&json!({"namespace": levels, "properties": {}})),
                &what,
                &[StatusCode::CONFLICT],
            )
            .await?;
        }
        let schema = metadata["schemas"][0].clone();
        let body = json!({
            "name": self.table,
            "location": metadata["location"],
            "schema": schema,
            "partition-spec": {"spec-id": 0, "fields": metadata["partition-specs"][0]["fields"]},
            "write-order": {"order-id": 0, "fields": []},
            "stage-create": false,
            "properties": metadata["properties"],
        });
        let what = format!("cannot create the table {}", self.identifier());
        let url = format!("{base}/namespaces/{}/tables", self.namespace_path());
        let (status, v) = self
            .idempotent(
                Method::POST,
                &url,
                Some(&body),
                &what,
                &[StatusCode::CONFLICT],
            )
            .await?;
        if status == StatusCode::CONFLICT {
            return match self.load().await? {
                Some(l) => Ok((l, false)),
                None => Err(self.err(
                    format!("{what}: it exists (409) but cannot be loaded; the stream restarts and retries"),
                    Retry::Transient,
                )),
            };
        }
        Ok((self.loaded(v, &what)?, true))
    }

    /// Commit `updates` on top of `base` (the metadata they were built from), adding snapshot
    /// `snapshot_id`: requirements `assert-table-uuid` and `assert-ref-snapshot-id` (`main` at
    /// `base`'s current snapshot).
    pub async fn commit(
        &mut self,
        base: &Value,
        updates: Vec<Value>,
        snapshot_id: i64,
    ) -> Result<Commit> {
        let parent = base["current-snapshot-id"].as_i64().filter(|p| *p >= 0);
        let body = json!({
            "identifier": {"namespace": self.namespace, "name": self.table},
            "requirements": [
                {"type": "assert-table-uuid", "uuid": base["table-uuid"]},
                {"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": parent},
            ],
            "updates": updates,
        });
        let url = self.table_url()?;
        let id = self.identifier();
        let holds = |m: &Value| {
            m["snapshots"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|s| s["snapshot-id"].as_i64() == Some(snapshot_id))
            })
        };
        let mut unknown = 0;
        loop {
            let answer = self.request(Method::POST, &url, Some(&body)).await?;
            let why = match answer {
                Answer::Status(status, raw) if status.is_success() => {
                    let v: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
                    match self.loaded(v, "commit") {
                        Ok(l) => return Ok(Commit::Committed(l)),
                        // Applied, but the answer is unusable: read the table instead.
                        Err(_) => match self.load().await? {
                            Some(l) if l.metadata.as_ref().is_some_and(holds) => {
                                return Ok(Commit::Committed(l));
                            }
                            other => return Ok(Commit::Lost(other)),
                        },
                    }
                }
                Answer::Status(StatusCode::CONFLICT, _) => {
                    // A failed requirement: another writer committed first, or an attempt of
                    // this commit whose answer was lost applied after all.
                    return match self.load().await? {
                        Some(l) if l.metadata.as_ref().is_some_and(holds) => {
                            Ok(Commit::Committed(l))
                        }
                        other => Ok(Commit::Lost(other)),
                    };
                }
                Answer::Status(status, raw)
                    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT =>
                {
                    format!("HTTP {status} {}", error_message(&raw).unwrap_or_default())
                }
                Answer::NoAnswer(why) => why,
                other => return Err(self.failed(&format!("cannot commit to {id}"), other)),
            };
            // Unknown outcome: read the table back; never commit twice.
            unknown += 1;
            tracing::warn!(catalog = %self.s.uri, table = %id, error = %why, attempt = unknown, "the outcome of an Iceberg commit is unknown; reading the table back");
            let current = self.load().await?;
            let Some(l) = current else {
                return Ok(Commit::Lost(None));
            };
            let m = l.metadata.as_ref().unwrap_or(&Value::Null);
            if holds(m) {
                tracing::info!(table = %id, snapshot = snapshot_id, "the commit applied although its answer was an error");
                return Ok(Commit::Committed(l));
            }
            let unchanged = m["table-uuid"] == base["table-uuid"]
                && m["current-snapshot-id"].as_i64().filter(|p| *p >= 0) == parent;
            if !unchanged {
                return Ok(Commit::Lost(Some(l)));
            }
            if unknown >= self.retry.max_attempts.max(2) {
                return Err(self.err(
                    format!("the commit to {id} failed {unknown} times ({why}); the table is unchanged; the stream restarts and retries"),
                    Retry::Transient,
                ));
            }
            tokio::time::sleep(self.retry.initial_delay).await;
        }
    }
}

/// A reqwest error with its causes (never a URL with credentials: ours carry none).
fn cause(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "no answer in time".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(c) = source {
        s.push_str(&format!(": {c}"));
        source = c.source();
    }
    s
}

/// The message of an Iceberg REST error body (`{"error": {"message", "type", "code"}}`) or of
/// an OAuth2 error (`{"error", "error_description"}`).
fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if let Some(m) = v["error"]["message"].as_str() {
        let kind = v["error"]["type"].as_str().unwrap_or_default();
        return Some(format!("{kind}: {m}"));
    }
    let e = v["error"].as_str()?;
    Some(match v["error_description"].as_str() {
        Some(d) => format!("{e}: {d}"),
        None => e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_encoded_with_the_unit_separator() {
        assert_eq!(encode_segment("a\u{1f}b c"), "a%1Fb%20c");
        assert_eq!(encode_segment("orders_2-x.y~"), "orders_2-x.y~");
        assert_eq!(
            error_message(
                br#"{"error": {"message": "m", "type": "CommitFailedException", "code": 409}}"#
            ),
            Some("CommitFailedException: m".into())
        );
        assert_eq!(
            error_message(br#"{"error": "invalid_client"}"#),
            Some("invalid_client".into())
        );
    }

    #[test]
    fn the_settings_are_checked_naming_the_field() {
        let c = RestCatalogConfig {
            uri: "http://127.0.0.1:1/catalog/".into(),
            warehouse: None,
            credential_env: Some("ARCANE_TEST_REST_CREDENTIAL_NOT_SET".into()),
            token_env: None,
            oauth2_server_uri: None,
            scope: None,
            request_timeout: Duration::from_secs(1),
        };
        let e = parse_config(&c, &BTreeMap::new(), "f")
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("f.credentialEnv"));
        let mut both = c.clone();
        both.token_env = Some("X".into());
        let e = parse_config(&both, &BTreeMap::new(), "f")
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("not both"));
        let mut bad = c.clone();
        bad.uri = "lakekeeper:8181".into();
        bad.credential_env = None;
        let e = parse_config(&bad, &BTreeMap::new(), "f")
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("f.uri"));
        let mut ok = c;
        ok.credential_env = None;
        let s = parse_config(&ok, &BTreeMap::new(), "f").expect("valid");
        assert_eq!(s.uri, "http://127.0.0.1:1/catalog");
    }
}
