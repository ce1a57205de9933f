//! [`Http`]: one request with authentication, a rate limit, retries with backoff and jitter
//! (honouring `Retry-After`), a timeout and a response size limit.
//!
//! Every failed attempt that is retried is logged at WARN with the attempt, its cause (the
//! whole chain, e.g. `error sending request: client error (Connect): tcp connect error:
//! Connection refused (os error 111)`) and the delay before the next one; when the retries run
//! out, the error says how many attempts were made over how long and keeps the cause as its
//! source.

use std::time::Duration;

use arcane_core::error::Report;
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

/// The attempts of one request.
struct Attempts {
    /// `GET <url>` or `the OAuth2 token endpoint <url>`.
    what: String,
    /// Failed attempts so far.
    failed: u32,
    started: Instant,
}

impl Attempts {
    fn new(what: String) -> Self {
        Self {
            what,
            failed: 0,
            started: Instant::now(),
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
    token: Option<(String, Option<Instant>)>,
}

/// The HTTP side of the source.
pub(crate) struct Http {
    client: reqwest::Client,
    method: reqwest::Method,
    auth: Auth,
    /// Secret values, replaced by `***` in anything logged or returned.
    secrets: Vec<String>,
    max_retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    min_interval: Option<Duration>,
    next_request_at: Option<Instant>,
    max_bytes: u64,
    name: String,
    /// Requests sent (retries included), for tests and logs.
    pub(crate) requests: u64,
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
            .field("max_retries", &self.max_retries)
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
                    token: None,
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
            max_retries: config.max_retries,
            initial_backoff: config.retry_initial_backoff,
            max_backoff: config.retry_max_backoff,
            min_interval: config
                .max_requests_per_second
                .map(|r| Duration::from_secs_f64(1.0 / r)),
            next_request_at: None,
            max_bytes: config.max_response_bytes,
            name,
            requests: 0,
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
        if let Auth::OAuth2(o) = &self.auth {
            if let Some((token, _)) = &o.token {
                out = out.replace(token.as_str(), "***");
            }
        }
        out
    }

    /// Wait for the rate limit.
    async fn pace(&mut self) {
        if let Some(interval) = self.min_interval {
            let now = Instant::now();
            let at = self.next_request_at.unwrap_or(now).max(now);
            tokio::time::sleep_until(at).await;
            self.next_request_at = Some(at + interval);
        }
    }

    /// The backoff before retry number `attempt` (0-based): exponential with "equal jitter"
    /// (half fixed, half random), capped at the maximum.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        exp / 2 + exp.mul_f64(fastrand::f64() / 2.0)
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

    /// After a failed attempt: the delay before the next one (logged at WARN), or the final
    /// error when the retries ran out. `wait` is the server's `Retry-After`.
    fn next_attempt(
        &self,
        attempts: &mut Attempts,
        failure: Failure,
        wait: Option<Duration>,
    ) -> Result<Duration> {
        let cause = self.cause(&failure);
        let made = attempts.failed + 1;
        if attempts.failed >= self.max_retries {
            let took = attempts.started.elapsed();
            let what = &attempts.what;
            let (message, retry) = match failure {
                Failure::Malformed { .. } => (
                    format!(
                        "{what} failed after {made} attempts over {took:.1?}: {cause}. The API (or a proxy in front of it) keeps answering something that is not JSON: check the URL and the API, then rerun"
                    ),
                    Retry::Permanent,
                ),
                _ => (
                    format!(
                        "{what} failed after {made} attempts over {took:.1?}: {cause}. The API is down, unreachable or overloaded; the run can be retried (raise maxRetries or retryMaxBackoff to wait longer)"
                    ),
                    Retry::Transient,
                ),
            };
            return Err(Error::Source {
                source_name: self.name.clone(),
                message,
                retry,
                source: Some(Box::new(failure)),
            });
        }
        let delay = wait.unwrap_or_else(|| self.backoff(attempts.failed));
        attempts.failed += 1;
        tracing::warn!(
            source = %self.name,
            attempt = made,
            attempts = self.max_retries + 1,
            delay_ms = delay.as_millis() as u64,
            cause = %cause,
            "{} failed (attempt {made} of {}): {cause}; retrying in {delay:.1?}",
            attempts.what,
            self.max_retries + 1,
        );
        Ok(delay)
    }

    /// Send `req` and parse the JSON body, retrying 429, 5xx, 408, timeouts, connection errors
    /// and bodies that are not JSON; a 401 with OAuth2 gets a new token once. Other 4xx fail
    /// at once with a permanent error.
    pub(crate) async fn fetch(&mut self, req: &Request) -> Result<Response> {
        let shown = display_url(&req.url);
        let mut attempts = Attempts::new(format!("{} {shown}", self.method));
        let mut reauthenticated = false;
        self.last_status = None;
        loop {
            self.pace().await;
            let mut builder = self
                .authorize(self.client.request(self.method.clone(), req.url.clone()))
                .await?;
            for (k, v) in &req.headers {
                builder = builder.header(k, v);
            }
            if let Some(body) = &req.body {
                builder = builder
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            self.requests += 1;
            let (failure, wait) = match builder.send().await {
                Err(e) => (Failure::Transport(e.without_url()), None),
                Ok(resp) => {
                    let status = resp.status();
                    if !status.is_success() {
                        self.last_status = Some(status);
                    }
                    if status.is_success() {
                        let link_next = link_next(resp.headers());
                        match self.read_body(resp, &shown, status).await {
                            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                                Ok(body) => {
                                    return Ok(Response {
                                        status,
                                        link_next,
                                        body,
                                    });
                                }
                                Err(error) => (
                                    Failure::Malformed {
                                        status,
                                        error,
                                        snippet: self.snippet(&bytes),
                                    },
                                    None,
                                ),
                            },
                            Err(BodyError::Fatal(e)) => return Err(e),
                            Err(BodyError::Transient(f)) => (f, None),
                        }
                    } else if status == StatusCode::UNAUTHORIZED
                        && matches!(self.auth, Auth::OAuth2(_))
                        && !reauthenticated
                    {
                        // The token may have been revoked or expired early: get a new one.
                        tracing::info!(source = %self.name, url = %shown, "HTTP 401; refreshing the OAuth2 token");
                        if let Auth::OAuth2(o) = &mut self.auth {
                            o.token = None;
                        }
                        reauthenticated = true;
                        continue;
                    } else if status == StatusCode::TOO_MANY_REQUESTS
                        || status.is_server_error()
                        || status == StatusCode::REQUEST_TIMEOUT
                    {
                        let wait = retry_after(resp.headers());
                        let snippet = self.error_snippet(resp).await;
                        (Failure::Status { status, snippet }, wait)
                    } else {
                        let snippet = self.error_snippet(resp).await;
                        return Err(Error::source_permanent(
                            &self.name,
                            format!(
                                "{} {shown} answered HTTP {status}{snippet}; check the URL, query and credentials",
                                self.method
                            ),
                        ));
                    }
                }
            };
            let delay = self.next_attempt(&mut attempts, failure, wait)?;
            tokio::time::sleep(delay).await;
        }
    }

    async fn read_body(
        &self,
        mut resp: reqwest::Response,
        shown: &str,
        status: StatusCode,
    ) -> Result<Bytes, BodyError> {
        let too_large = || {
            BodyError::Fatal(Error::source_permanent(
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
                    return Err(BodyError::Transient(Failure::Body {
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
    async fn authorize(
        &mut self,
        builder: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder> {
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

    /// The current OAuth2 token, fetched again when it is missing or about to expire.
    async fn oauth2_token(&mut self) -> Result<String> {
        let Auth::OAuth2(o) = &self.auth else {
            return Ok(String::new());
        };
        if let Some((token, refresh_at)) = &o.token {
            if refresh_at.is_none_or(|at| Instant::now() < at) {
                return Ok(token.clone());
            }
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
        let mut attempts = Attempts::new(format!("the OAuth2 token endpoint {shown}"));
        let (token, expires_in) = loop {
            let Auth::OAuth2(o) = &self.auth else {
                return Ok(String::new());
            };
            let mut req = self
                .client
                .post(o.token_url.clone())
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .header(reqwest::header::ACCEPT, "application/json")
                .body(form.clone());
            if !o.in_body {
                req = req.basic_auth(&o.client_id, Some(&o.client_secret));
            }
            let (failure, wait) = match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    let status = resp.status();
                    match resp.bytes().await {
                        Err(error) => (
                            Failure::Body {
                                status,
                                error: error.without_url(),
                            },
                            None,
                        ),
                        Ok(body) => match serde_json::from_slice::<Value>(&body) {
                            Err(error) => (
                                Failure::Malformed {
                                    status,
                                    error,
                                    snippet: self.snippet(&body),
                                },
                                None,
                            ),
                            Ok(v) => {
                                let token = v
                                    .get("access_token")
                                    .and_then(Value::as_str)
                                    .map(str::to_string);
                                match token {
                                    Some(t) => {
                                        break (t, v.get("expires_in").and_then(Value::as_u64));
                                    }
                                    None => {
                                        return Err(Error::source_permanent(
                                            &self.name,
                                            format!(
                                                "the OAuth2 token endpoint {shown} answered without an access_token; check tokenUrl"
                                            ),
                                        ));
                                    }
                                }
                            }
                        },
                    }
                }
                Ok(resp)
                    if resp.status().is_server_error()
                        || resp.status() == StatusCode::TOO_MANY_REQUESTS
                        || resp.status() == StatusCode::REQUEST_TIMEOUT =>
                {
                    let status = resp.status();
                    let wait = retry_after(resp.headers());
                    let snippet = self.error_snippet(resp).await;
                    (Failure::Status { status, snippet }, wait)
                }
                Ok(resp) => {
                    return Err(Error::source_permanent(
                        &self.name,
                        format!(
                            "the OAuth2 token endpoint {shown} answered HTTP {}; check clientId and the client secret",
                            resp.status()
                        ),
                    ));
                }
                Err(e) => (Failure::Transport(e.without_url()), None),
            };
            let delay = self.next_attempt(&mut attempts, failure, wait)?;
            tokio::time::sleep(delay).await;
        };
        let refresh_at = expires_in
            .map(|s| Instant::now() + Duration::from_secs(s).saturating_sub(o.refresh_before));
        tracing::debug!(source = %self.name, expires_in, "OAuth2 token obtained");
        if let Auth::OAuth2(o) = &mut self.auth {
            o.token = Some((token.clone(), refresh_at));
        }
        Ok(token)
    }
}

enum BodyError {
    Fatal(Error),
    Transient(Failure),
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
