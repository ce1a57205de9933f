//! One retry policy for every call to a network service: sources (HTTP requests, broker and
//! database reconnects) and sinks (object-store calls).
//!
//! [`RetryConfig`] is the `retry` block of a spec; [`retry`] runs an operation under it with
//! exponential backoff and jitter (on [`backon`]), asks the caller's predicate whether an
//! error is transient, logs **every** failed attempt at WARN with its cause chain and the
//! next delay, and returns [`Exhausted`] — the last error, how many attempts, how long — when
//! it gives up, so the final error can say so and keep its cause.
//!
//! ```
//! use std::time::Duration;
//! use arcane_core::retry::{RetryConfig, retry};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let policy = RetryConfig { max_attempts: 3, ..RetryConfig::default() };
//! let mut calls = 0;
//! let result: Result<u32, _> = retry(&policy, "GET http://api/items", || {
//!     calls += 1;
//!     let n = calls;
//!     async move { if n < 3 { Err(std::io::Error::other("connection refused")) } else { Ok(n) } }
//! }, |_e| true, None).await;
//! assert_eq!(result.unwrap(), 3);
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Report;

/// Default [`RetryConfig::max_attempts`]: 8 attempts in all.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// Default [`RetryConfig::initial_delay`]: 250 ms.
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_millis(250);
/// Default [`RetryConfig::max_delay`]: 30 s.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);

/// How a failing call to a network service is retried (the `retry` block of a spec).
///
/// Delays grow exponentially from `initialDelay` (×2 per attempt) up to `maxDelay`, with
/// random jitter (so that many streams do not retry in step); after `maxAttempts` attempts in
/// all the error is returned, and the stream exits with code 2 (RESTART) if it is transient.
/// With the defaults (8 attempts, 250 ms to 30 s) a service that stays down is given about a
/// minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included, before giving up. Default 8; 1 disables retries.
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1))]
    pub max_attempts: u32,
    /// Delay before the first retry (humantime, e.g. `"250ms"`). Default 250ms.
    #[serde(default = "default_initial_delay", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub initial_delay: Duration,
    /// Longest delay between two attempts (humantime, e.g. `"30s"`). Default 30s.
    #[serde(default = "default_max_delay", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_delay: Duration,
    /// Add random jitter to the delays. Default true.
    #[serde(default = "default_jitter")]
    pub jitter: bool,
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}
fn default_initial_delay() -> Duration {
    DEFAULT_INITIAL_DELAY
}
fn default_max_delay() -> Duration {
    DEFAULT_MAX_DELAY
}
fn default_jitter() -> bool {
    true
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_delay: DEFAULT_INITIAL_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
            jitter: true,
        }
    }
}

impl RetryConfig {
    /// A policy that does not retry (one attempt).
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Check the settings; `field` is the block's path in the spec (e.g. `spec.source.retry`).
    pub fn validate(&self, field: &str) -> crate::Result<()> {
        if self.max_attempts == 0 {
            return Err(crate::Error::config(
                format!("{field}.maxAttempts"),
                "must be at least 1 (1 disables retries)",
            ));
        }
        if self.max_delay < self.initial_delay {
            return Err(crate::Error::config(
                format!("{field}.maxDelay"),
                format!(
                    "{:?} is shorter than initialDelay {:?}",
                    self.max_delay, self.initial_delay
                ),
            ));
        }
        Ok(())
    }

    /// The backoff schedule.
    pub fn backoff(&self) -> ExponentialBuilder {
        let b = ExponentialBuilder::default()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize);
        if self.jitter { b.with_jitter() } else { b }
    }

    /// The delays between attempts, for docs and tests (jitter excluded).
    pub fn delays(&self) -> impl Iterator<Item = Duration> {
        Self {
            jitter: false,
            ..*self
        }
        .backoff()
        .build()
    }
}

/// How long a failed attempt's error asks to wait before the next one (an HTTP
/// `Retry-After`), if it says.
pub type RetryAfter<'a, E> = &'a (dyn Fn(&E) -> Option<Duration> + Send + Sync);

/// An operation that failed for good: its last error, after how many attempts and how long.
#[derive(Debug)]
pub struct Exhausted<E> {
    /// The last error.
    pub error: E,
    /// Attempts made (the first included).
    pub attempts: u32,
    /// Time from the first attempt to giving up.
    pub elapsed: Duration,
    /// Whether the last error was transient (the retries ran out) or permanent (no retry).
    pub transient: bool,
}

impl<E: fmt::Display> fmt::Display for Exhausted<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.attempts > 1 {
            write!(
                f,
                "{} (after {} attempts in {:.1}s)",
                self.error,
                self.attempts,
                self.elapsed.as_secs_f64()
            )
        } else {
            write!(f, "{}", self.error)
        }
    }
}

/// Run `op` under `policy`: errors for which `is_transient` is true are retried with backoff,
/// each failed attempt logged at WARN (`what`, the attempt, the error with its causes, the next
/// delay); others are returned at once. `retry_after` may replace a delay (e.g. an HTTP
/// `Retry-After`).
///
/// # Cancel safety
///
/// Cancel safe if `op`'s futures are: dropping the future stops retrying.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryConfig,
    what: &str,
    mut op: F,
    is_transient: impl Fn(&E) -> bool,
    retry_after: Option<RetryAfter<'_, E>>,
) -> Result<T, Exhausted<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    let started = tokio::time::Instant::now();
    // Atomic rather than a `Cell`, so that the future is `Send` (spawned source tasks retry).
    let attempts = std::sync::atomic::AtomicU32::new(0);
    let result = (|| {
        attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        op()
    })
    .retry(policy.backoff())
    .sleep(tokio::time::sleep)
    .when(|e| is_transient(e))
    .adjust(|e, delay| match (delay, retry_after.and_then(|f| f(e))) {
        (Some(_), Some(wait)) => Some(wait),
        (delay, _) => delay,
    })
    .notify(|e, delay| {
        tracing::warn!(
            attempt = attempts.load(std::sync::atomic::Ordering::Relaxed),
            max_attempts = policy.max_attempts,
            next_delay = ?delay,
            error = %Report(e),
            "{what} failed; retrying"
        );
    })
    .await;
    result.map_err(|error| {
        let transient = is_transient(&error);
        Exhausted {
            error,
            attempts: attempts.load(std::sync::atomic::Ordering::Relaxed),
            elapsed: started.elapsed(),
            transient,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Flaky(&'static str);
    impl fmt::Display for Flaky {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Flaky {}

    #[test]
    fn delays_grow_to_the_maximum_and_stop_after_the_attempts() {
        let p = RetryConfig {
            max_attempts: 6,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            jitter: false,
        };
        let delays: Vec<_> = p.delays().map(|d| d.as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500]);
        assert!(RetryConfig::never().delays().next().is_none());
        let err = RetryConfig {
            max_attempts: 0,
            ..RetryConfig::default()
        }
        .validate("spec.source.retry")
        .unwrap_err();
        assert!(
            err.to_string().starts_with("spec.source.retry.maxAttempts"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_the_budget_and_permanent_ones_are_not() {
        let p = RetryConfig {
            max_attempts: 4,
            jitter: false,
            ..RetryConfig::default()
        };
        let mut calls = 0;
        let err = retry(
            &p,
            "connect",
            || {
                calls += 1;
                async { Err::<(), _>(Flaky("connection refused")) }
            },
            |_| true,
            None,
        )
        .await
        .unwrap_err();
        assert_eq!((calls, err.attempts, err.transient), (4, 4, true));
        // 250 + 500 + 1000 ms of backoff.
        assert_eq!(err.elapsed, Duration::from_millis(1750));
        assert!(err.to_string().contains("after 4 attempts"), "{err}");

        let mut calls = 0;
        let err = retry(
            &p,
            "connect",
            || {
                calls += 1;
                async { Err::<(), _>(Flaky("403 forbidden")) }
            },
            |_| false,
            None,
        )
        .await
        .unwrap_err();
        assert_eq!((calls, err.attempts, err.transient), (1, 1, false));
        assert_eq!(err.to_string(), "403 forbidden");
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_may_say_how_long_to_wait() {
        let p = RetryConfig {
            max_attempts: 2,
            jitter: false,
            ..RetryConfig::default()
        };
        let wait = |_: &Flaky| Some(Duration::from_secs(7));
        let err = retry(
            &p,
            "GET",
            || async { Err::<(), _>(Flaky("429")) },
            |_| true,
            Some(&wait),
        )
        .await
        .unwrap_err();
        assert_eq!(err.elapsed, Duration::from_secs(7));
    }
}
