//! [`Http`]: one request with authentication, a rate limit, retries under the spec's `retry`
//! policy ([`arcane_core::retry`], honouring `Retry-After`), a timeout and a response size
//! limit.
//!
//! Every failed attempt that is retried is logged at WARN with the attempt, its cause (the
//! whole chain, e.g. `error sending request: client error (Connect): tcp connect error:
//! Connection refused (os error 111)`, secrets redacted) and the delay before the next one;
//! when the attempts run out, the error says how many were made over how long and keeps the
//! cause as its source.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arcane_core::error::Report;
use arcane_core::retry::{Attempt, Exhausted, RetryConfig, retry_notify};
use arcane_core::{Error, Result, Retry};
use bytes::{Bytes, BytesMut};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use super::config::{AuthConfig, HttpMethod, RestApiSourceConfig};

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// One request to send.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) url: Url,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Option<String>,
}

/// A successful response with a JSON body.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    /// The `rel="next"` target of the `Link` header, if any.
    pub(crate) link_next: Option<String>,
    pub(crate) body: Value,
}

/// Why one attempt failed in a way worth retrying.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The request did not complete: connection refused or reset, timeout, DNS.
    #[error(transparent)]
    Transport(reqwest::Error),
    /// A status that may pass: 429, 5xx, 408.
    #[error("HTTP {status}{snippet}")]
    Status { status: StatusCode, snippet: String },
    /// The body could not be read to its end.
    #[error("reading the body of the HTTP {status} response failed")]
    Body {
        status: StatusCode,
        #[source]
        error: reqwest::Error,
    },
    /// A successful status whose body is not JSON (often an error page of a proxy).
    #[error("the response (HTTP {status}) is not JSON ({error}); it starts with: {snippet}")]
    Malformed {
        status: StatusCode,
        error: serde_json::Error,
        snippet: String,
    },
}

/// How one attempt ended without a response to use.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    /// Worth another attempt; `wait` is the server's `Retry-After`.
    #[error("{failure}")]
    Retry {
        #[source]
        failure: Failure,
        wait: Option<Duration>,
    },
    /// Not worth another attempt: the source's final error, and the HTTP status that caused
    /// it, if any.
    #[error("{error}")]
    Final {
        error: Error,
        status: Option<StatusCode>,
    },
}

impl AttemptError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Retry { .. })
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Retry { wait, .. } => *wait,
            Self::Final { .. } => None,
        }
    }

    fn retry(failure: Failure) -> Self {
        Self::Retry {
            failure,
            wait: None,
        }
    }

    fn permanent(error: Error) -> Self {
        Self::Final {
            error,
            status: None,
        }
    }
}

/// The authentication state (no `Debug`: it holds secrets).
enum Auth {
    None,
    /// A fixed header (bearer token or API key).
    Header(HeaderName, HeaderValue),
    Basic {
        username: String,
        password: String,
    },
    OAuth2(Box<OAuth2>),
}

struct OAuth2 {
    token_url: Url,
    client_id: String,
    client_secret: String,
    scope: Option<String>,
    in_body: bool,
    refresh_before: Duration,
    /// The current token and when it must be refreshed.
    token: Mutex<Option<(String, Option<Instant>)>>,
}

impl OAuth2 {
    fn token(&self) -> std::sync::MutexGuard<'_, Option<(String, Option<Instant>)>> {
        self.token.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The HTTP side of the source.
pub(crate) struct Http {
    client: reqwest::Client,
    method: reqwest::Method,
    auth: Auth,
    /// Secret values, replaced by `***` in anything logged or returned.
    secrets: Vec<String>,
    retry: RetryConfig,
    min_interval: Option<Duration>,
    next_request_at: Mutex<Option<Instant>>,
    max_bytes: u64,
    name: String,
    /// Requests sent (retries included), for logs.
    requests: AtomicU64,
    /// The status of the last response that failed a request.
    last_status: Option<StatusCode>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match &self.auth {
            Auth::None => "none",
            Auth::Header(..) => "header",
            Auth::Basic { .. } => "basic",
            Auth::OAuth2(_) => "oauth2",
        };
        // Never the secrets.
        f.debug_struct("Http")
            .field("name", &self.name)
            .field("method", &self.method)
            .field("auth", &auth)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

fn auth_field(at: &str, field: &str) -> String {
    format!("{at}.auth.{field}")
}

impl Http {
    /// The client for `config`, reading the secrets it names; `at` is the settings' path.
    pub(crate) fn new(config: &RestApiSourceConfig, at: &str, name: String) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(config.http_timeout)
            .connect_timeout(config.http_timeout)
            .build()
            .map_err(|e| {
                Error::source_transient(&name, "cannot create the HTTP client", e.without_url())
            })?;
        let mut secrets = Vec::new();
        let auth = match &config.auth {
            None => Auth::None,
            Some(AuthConfig::Bearer(b)) => {
                let token = b.token.read()?;
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                        Error::config(
                            auth_field(at, "token"),
                            "the token contains characters not allowed in a header",
                        )
                    })?;
                value.set_sensitive(true);
                secrets.push(token);
                Auth::Header(reqwest::header::AUTHORIZATION, value)
            }
            Some(AuthConfig::ApiKey(k)) => {
                let key = k.key.read()?;
                let header = HeaderName::from_bytes(k.header.as_bytes()).map_err(|_| {
                    Error::config(
                        auth_field(at, "header"),
                        format!("\"{}\" is not a valid header name", k.header),
                    )
                })?;
                let mut value = HeaderValue::from_str(&key).map_err(|_| {
                    Error::config(
                        auth_field(at, "key"),
                        "the key contains characters not allowed in a header",
                    )
                })?;
                value.set_sensitive(true);
                secrets.push(key);
                Auth::Header(header, value)
            }
            Some(AuthConfig::Basic(b)) => {
                let password = b.password.read()?;
                secrets.push(password.clone());
                Auth::Basic {
                    username: b.username.clone(),
                    password,
                }
            }
            Some(AuthConfig::OAuth2ClientCredentials(o)) => {
                let token_url = Url::parse(&o.token_url)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        Error::config(
                            auth_field(at, "tokenUrl"),
                            "is not an http(s) URL; expected e.g. https://login.example.com/oauth2/token",
                        )
                    })?;
                let client_secret = o.client_secret.read()?;
                secrets.push(client_secret.clone());
                Auth::OAuth2(Box::new(OAuth2 {
                    token_url,
                    client_id: o.client_id.clone(),
                    client_secret,
                    scope: o.scope.clone(),
                    in_body: o.credentials_in_body,
                    refresh_before: o.refresh_before_expiry,
                    token: Mutex::new(None),
                }))
            }
        };
        Ok(Self {
            client,
            method: match config.method {
                HttpMethod::Get => reqwest::Method::GET,
                HttpMethod::Post => reqwest::Method::POST,
            },
            auth,
            secrets,
            retry: config.retry,
            min_interval: config
                .max_requests_per_second
                .map(|r| Duration::from_secs_f64(1.0 / r)),
            next_request_at: Mutex::new(None),
            max_bytes: config.max_response_bytes,
            name,
            requests: AtomicU64::new(0),
            last_status: None,
        })
    }

    /// `text` with every secret replaced by `***`.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if !s.is_empty() {
                out = out.replace(s.as_str(), "***");
            }
        }
        if let Auth::OAuth2(o) = &self.auth
            && let Some((token, _)) = &*o.token()
        {
            out = out.replace(token.as_str(), "***");
        }
        out
    }

    /// Requests sent so far (retries included).
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Wait for the rate limit.
    async fn pace(&self) {
        if let Some(interval) = self.min_interval {
            let now = Instant::now();
            let at = {
                let mut next = self
                    .next_request_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let at = next.unwrap_or(now).max(now);
                *next = Some(at + interval);
                at
            };
            tokio::time::sleep_until(at).await;
        }
    }

    /// Whether the last [`Http::fetch`] failed because the API refused the request itself (a
    /// 4xx other than 401, 403, 408 and 429): e.g. an expired cursor.
    pub(crate) fn refused_by_client(&self) -> bool {
        self.last_status.is_some_and(|s| {
            s.is_client_error()
                && ![
                    StatusCode::UNAUTHORIZED,
                    StatusCode::FORBIDDEN,
                    StatusCode::REQUEST_TIMEOUT,
                    StatusCode::TOO_MANY_REQUESTS,
                ]
                .contains(&s)
        })
    }

    /// The redacted cause chain of `failure`.
    fn cause(&self, failure: &Failure) -> String {
        self.redact(&Report(failure).to_string())
    }

    /// Run `attempt` under the `retry` policy: each retried failure is logged at WARN with
    /// its redacted cause and the next delay; `what` names the request in logs and errors.
    async fn with_retries<T, F, Fut>(&self, what: &str, attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, AttemptError>>,
    {
        let retry_after = |e: &AttemptError| e.retry_after();
        let outcome = retry_notify(
            &self.retry,
            attempt,
            AttemptError::is_transient,
            Some(&retry_after),
            |a: &Attempt<'_, AttemptError>| self.log_retry(what, a),
        )
        .await;
        outcome.map_err(|exhausted| self.exhausted(what, exhausted))
    }

    /// The WARN line of a failed attempt that is retried.
    fn log_retry(&self, what: &str, a: &Attempt<'_, AttemptError>) {
        let cause = match a.error {
            AttemptError::Retry { failure, .. } => self.cause(failure),
            AttemptError::Final { error, .. } => self.redact(&error.report()),
        };
        let (made, attempts, delay) = (a.attempt, a.max_attempts, a.next_delay);
        tracing::warn!(
            source = %self.name,
            attempt = made,
            attempts,
            delay_ms = delay.as_millis() as u64,
            cause = %cause,
            "{what} failed (attempt {made} of {attempts}): {cause}; retrying in {delay:.1?}",
        );
    }

    /// The source's error once the attempts ran out (or one was not worth retrying).
    fn exhausted(&self, what: &str, exhausted: Exhausted<AttemptError>) -> Error {
        let Exhausted {
            error,
            attempts: made,
            elapsed: took,
            ..
        } = exhausted;
        let failure = match error {
            AttemptError::Final { error, .. } => return error,
            AttemptError::Retry { failure, .. } => failure,
        };
        let cause = self.cause(&failure);
        let (message, retry) = match failure {
            Failure::Malformed { .. } => (
                format!(
                    "{what} failed after {made} attempts over {took:.1?}: {cause}. The API (or a proxy in front of it) keeps answering something that is not JSON: check the URL and the API, then rerun"
                ),
                Retry::Permanent,
            ),
            _ => (
                format!(
                    "{what} failed after {made} attempts over {took:.1?}: {cause}. The API is down, unreachable or overloaded; the run can be retried (raise retry.maxAttempts or retry.maxDelay to wait longer)"
                ),
                Retry::Transient,
            ),
        };
        Error::Source {
            source_name: self.name.clone(),
            message,
            retry,
            source: Some(Box::new(failure)),
        }
    }

    /// Send `req` and parse the JSON body, retrying 429, 5xx, 408, timeouts, connection errors
    /// and bodies that are not JSON under the `retry` policy; a 401 with OAuth2 gets a new
    /// token once. Other 4xx fail at once with a permanent error naming the URL and status.
    pub(crate) async fn fetch(&mut self, req: &Request) -> Result<Response> {
        self.last_status = None;
        let shown = display_url(&req.url);
        let what = format!("{} {shown}", self.method);
        let reauthenticated = AtomicBool::new(false);
        let status = Mutex::new(None);
        let (this, shown, reauthenticated, last) = (&*self, &shown, &reauthenticated, &status);
        let outcome = this
            .with_retries(&what, move || async move {
                let outcome = this.attempt(req, shown, reauthenticated).await;
                if let Err(AttemptError::Final {
                    status: Some(s), ..
                }) = &outcome
                {
                    *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(*s);
                }
                outcome
            })
            .await;
        self.last_status = status.into_inner().unwrap_or_else(|p| p.into_inner());
        outcome
    }

    /// One attempt at `req` (two requests when a 401 asks for a new OAuth2 token).
    async fn attempt(
        &self,
        req: &Request,
        shown: &str,
        reauthenticated: &AtomicBool,
    ) -> Result<Response, AttemptError> {
        loop {
            self.pace().await;
            let mut builder = self
                .authorize(self.client.request(self.method.clone(), req.url.clone()))
                .await
                .map_err(AttemptError::permanent)?;
            for (k, v) in &req.headers {
                builder = builder.header(k, v);
            }
            if let Some(body) = &req.body {
                builder = builder
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let resp = builder
                .send()
                .await
                .map_err(|e| AttemptError::retry(Failure::Transport(e.without_url())))?;
            let status = resp.status();
            if status.is_success() {
                let link_next = link_next(resp.headers());
                let bytes = self.read_body(resp, shown, status).await?;
                return match serde_json::from_slice::<Value>(&bytes) {
                    Ok(body) => Ok(Response {
                        status,
                        link_next,
                        body,
                    }),
                    Err(error) => Err(AttemptError::retry(Failure::Malformed {
                        status,
                        error,
                        snippet: self.snippet(&bytes),
                    })),
                };
            }
            if status == StatusCode::UNAUTHORIZED
                && matches!(self.auth, Auth::OAuth2(_))
                && !reauthenticated.swap(true, Ordering::Relaxed)
            {
                // The token may have been revoked or expired early: get a new one.
                tracing::info!(source = %self.name, url = %shown, "HTTP 401; refreshing the OAuth2 token");
                if let Auth::OAuth2(o) = &self.auth {
                    *o.token() = None;
                }
                continue;
            }
            if is_retried_status(status) {
                let wait = retry_after(resp.headers());
                let snippet = self.error_snippet(resp).await;
                return Err(AttemptError::Retry {
                    failure: Failure::Status { status, snippet },
                    wait,
                });
            }
            let snippet = self.error_snippet(resp).await;
            return Err(AttemptError::Final {
                error: Error::source_permanent(
                    &self.name,
                    format!(
                        "{} {shown} answered HTTP {status}{snippet}; check the URL, query and credentials",
                        self.method
                    ),
                ),
                status: Some(status),
            });
        }
    }

    async fn read_body(
        &self,
        mut resp: reqwest::Response,
        shown: &str,
        status: StatusCode,
    ) -> Result<Bytes, AttemptError> {
        let too_large = || {
            AttemptError::permanent(Error::source_permanent(
                &self.name,
                format!(
                    "the response of {shown} (HTTP {status}) is larger than maxResponseBytes ({} bytes); ask for smaller pages or raise the limit",
                    self.max_bytes
                ),
            ))
        };
        if resp.content_length().is_some_and(|l| l > self.max_bytes) {
            return Err(too_large());
        }
        let mut body = BytesMut::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if (body.len() + chunk.len()) as u64 > self.max_bytes {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body.freeze()),
                Err(e) => {
                    return Err(AttemptError::retry(Failure::Body {
                        status,
                        error: e.without_url(),
                    }));
                }
            }
        }
    }

    /// `: <first 200 characters of the body>` of an error response, secrets redacted.
    async fn error_snippet(&self, resp: reqwest::Response) -> String {
        let body = resp.bytes().await.unwrap_or_default();
        let text = self.snippet(&body);
        if text.is_empty() {
            return String::new();
        }
        format!(": {text}")
    }

    /// The first 200 characters of `body`, trimmed, secrets redacted.
    fn snippet(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let cut: String = text.trim().chars().take(200).collect();
        self.redact(&cut)
    }

    /// Add the credentials to a request, fetching an OAuth2 token first when needed.
    async fn authorize(&self, builder: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder> {
        Ok(match &self.auth {
            Auth::None => builder,
            Auth::Header(name, value) => builder.header(name.clone(), value.clone()),
            Auth::Basic { username, password } => builder.basic_auth(username, Some(password)),
            Auth::OAuth2(_) => {
                let token = self.oauth2_token().await?;
                builder.bearer_auth(token)
            }
        })
    }

    /// The current OAuth2 token, fetched again (under the `retry` policy) when it is missing
    /// or about to expire.
    async fn oauth2_token(&self) -> Result<String> {
        let Auth::OAuth2(o) = &self.auth else {
            return Ok(String::new());
        };
        if let Some((token, refresh_at)) = &*o.token()
            && refresh_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(token.clone());
        }
        let shown = display_url(&o.token_url);
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(scope) = &o.scope {
                form.append_pair("scope", scope);
            }
            if o.in_body {
                form.append_pair("client_id", &o.client_id);
                form.append_pair("client_secret", &o.client_secret);
            }
            form.finish()
        };
        let what = format!("the OAuth2 token endpoint {shown}");
        let (token, expires_in) = self
            .with_retries(&what, || self.token_attempt(o, &shown, &form))
            .await?;
        let refresh_at = expires_in
            .map(|s| Instant::now() + Duration::from_secs(s).saturating_sub(o.refresh_before));
        tracing::debug!(source = %self.name, expires_in, "OAuth2 token obtained");
        *o.token() = Some((token.clone(), refresh_at));
        Ok(token)
    }

    /// One request to the OAuth2 token endpoint: the token and its `expires_in`.
    async fn token_attempt(
        &self,
        o: &OAuth2,
        shown: &str,
        form: &str,
    ) -> Result<(String, Option<u64>), AttemptError> {
        let mut req = self
            .client
            .post(o.token_url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(form.to_string());
        if !o.in_body {
            req = req.basic_auth(&o.client_id, Some(&o.client_secret));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| AttemptError::retry(Failure::Transport(e.without_url())))?;
        let status = resp.status();
        if is_retried_status(status) {
            let wait = retry_after(resp.headers());
            let snippet = self.error_snippet(resp).await;
            return Err(AttemptError::Retry {
                failure: Failure::Status { status, snippet },
                wait,
            });
        }
        if !status.is_success() {
            return Err(AttemptError::permanent(Error::source_permanent(
                &self.name,
                format!(
                    "the OAuth2 token endpoint {shown} answered HTTP {status}; check clientId and the client secret"
                ),
            )));
        }
        let body = resp.bytes().await.map_err(|error| {
            AttemptError::retry(Failure::Body {
                status,
                error: error.without_url(),
            })
        })?;
        let v = serde_json::from_slice::<Value>(&body).map_err(|error| {
            AttemptError::retry(Failure::Malformed {
                status,
                error,
                snippet: self.snippet(&body),
            })
        })?;
        match v.get("access_token").and_then(Value::as_str) {
            Some(t) => Ok((t.to_string(), v.get("expires_in").and_then(Value::as_u64))),
            None => Err(AttemptError::permanent(Error::source_permanent(
                &self.name,
                format!(
                    "the OAuth2 token endpoint {shown} answered without an access_token; check tokenUrl"
                ),
            ))),
        }
    }
}

/// A status worth another attempt: 429, 408 and 5xx.
fn is_retried_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// `url` without credentials, for logs and errors.
pub(crate) fn display_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// The `Retry-After` delay: seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
        (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

/// The `rel="next"` target of `Link` headers (RFC 8288).
fn link_next(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_link_next)
}

pub(crate) fn parse_link_next(header: &str) -> Option<String> {
    let mut rest = header;
    while let Some(open) = rest.find('<') {
        let close = open + rest[open..].find('>')?;
        let target = &rest[open + 1..close];
        let params_end = rest[close..].find('<').map_or(rest.len(), |i| close + i);
        let params = &rest[close + 1..params_end];
        let is_next = params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            let Some((k, v)) = p.split_once('=') else {
                return false;
            };
            k.trim().eq_ignore_ascii_case("rel")
                && v.trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.to_string());
        }
        rest = &rest[params_end..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_yield_the_next_target() {
        assert_eq!(
            parse_link_next(
                r#"<https://a/x?page=1>; rel="prev", <https://a/x?page=3>; rel="next""#
            ),
            Some("https://a/x?page=3".into())
        );
        assert_eq!(
            parse_link_next(r#"</items?c=2>; rel="next last"; title="n""#),
            Some("/items?c=2".into())
        );
        assert_eq!(parse_link_next(r#"<https://a/x>; rel="prev""#), None);
        assert_eq!(parse_link_next("garbage"), None);
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("soon"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
