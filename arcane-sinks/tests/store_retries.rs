//! The sink's calls to an object store are retried under the spec's `retry` block: through a
//! TCP proxy in front of the S3 server (moto) that closes connections, a commit succeeds when
//! the failures fit in the budget, and the attempts stop where `maxAttempts` says, with a
//! transient error (exit code 2) naming the cause.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use arcane_core::retry::RetryConfig;
use arcane_core::testing::{GeneratorSource, pretty_lines};
use arcane_core::{Error, Group, Retry, Sink, SinkContext};
use arcane_sinks::{ParquetSink, ParquetSinkConfig};
use arcane_test_support::proxy::Proxy;
use common::{SinkStore, Store, checkpoint};

fn ctx() -> SinkContext {
    SinkContext {
        stream_id: "orders-eu".into(),
        ..SinkContext::default()
    }
}

/// A bucket on the S3 server, a proxy in front of the server, and a sink configuration that
/// reaches the bucket through the proxy.
async fn proxied_s3() -> (Store, Proxy, ParquetSinkConfig) {
    let store = Store::s3().await;
    let Store::S3 { endpoint, .. } = &store else {
        unreachable!()
    };
    let upstream: SocketAddr = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("ARCANE_TEST_S3_ENDPOINT is http://IP:PORT");
    let proxy = Proxy::start(upstream).await;
    let mut config = store.config();
    config.storage_options.insert(
        "aws_endpoint".into(),
        format!("http://127.0.0.1:{}", proxy.port()),
    );
    (store, proxy, config)
}

fn quick(max_attempts: u32) -> RetryConfig {
    RetryConfig {
        max_attempts,
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        jitter: true,
    }
}

#[tokio::test]
async fn refused_connections_within_the_budget_lose_nothing() {
    let (store, proxy, mut config) = proxied_s3().await;
    config.retry = quick(6);
    let mut sink = ParquetSink::new(config).expect("sink");
    // The first requests (listing the manifests) meet closed connections.
    proxy.refuse_next(3);
    assert_eq!(sink.open(&ctx()).await.expect("open"), None);
    assert!(proxy.accepted() >= 4, "accepted {}", proxy.accepted());
    let mut expected = Vec::new();
    for i in 0..3 {
        let batch = GeneratorSource::batch(i * 100, (i + 1) * 100);
        expected.push(batch.clone());
        sink.write(Group::new(batch, checkpoint((i + 1) * 100)))
            .await
            .expect("write");
    }
    // The upload and the manifest meet closed connections too.
    let before = proxy.accepted();
    proxy.refuse_next(2);
    let commit = sink.flush().await.expect("flush").expect("a commit");
    assert_eq!(commit.rows, 300);
    assert!(
        proxy.accepted() >= before + 3,
        "accepted {}",
        proxy.accepted()
    );
    let mut got = pretty_lines(&store.read().await);
    let mut want = pretty_lines(&expected);
    got.sort();
    want.sort();
    assert_eq!(got, want);
    store.cleanup().await;
}

#[tokio::test]
async fn max_attempts_bounds_the_attempts_and_the_error_is_transient() {
    for attempts in [1u32, 3] {
        let (store, proxy, mut config) = proxied_s3().await;
        config.retry = quick(attempts);
        let mut sink = ParquetSink::new(config).expect("sink");
        proxy.refuse(true);
        let err = sink
            .open(&ctx())
            .await
            .expect_err("the store is unreachable");
        assert_eq!(
            proxy.accepted(),
            attempts as usize,
            "maxAttempts {attempts}: one connection per attempt"
        );
        match &err {
            Error::Sink { retry, .. } => assert_eq!(*retry, Retry::Transient, "{err}"),
            other => panic!("expected a sink error, got {other}"),
        }
        let message = err.to_string();
        assert!(
            message.contains("cannot list manifests") && message.contains("resume"),
            "{message}"
        );
        proxy.refuse(false);
        store.cleanup().await;
    }
}

#[test]
fn the_retry_block_is_validated() {
    let mut config = ParquetSinkConfig::new("memory:///x");
    config.retry.max_attempts = 0;
    let err = ParquetSink::new(config).expect_err("zero attempts");
    assert!(err.to_string().contains("sink.retry.maxAttempts"), "{err}");
}
