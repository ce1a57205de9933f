//! Metrics exporters (Prometheus, DogStatsD) and the `/metrics`, `/healthz`, `/readyz` endpoint.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::config::{ENV_DOGSTATSD_ADDR, ENV_METRICS_ADDR};

/// Prefix of DogStatsD tag keys, as the platform's dashboards expect.
pub const DOGSTATSD_TAG_PREFIX: &str = "arcane.sneaksanddata.com/";

/// How often histograms of the Prometheus recorder are compacted.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The installed exporters.
#[derive(Debug, Clone, Default)]
pub struct Exporters {
    /// Renders Prometheus text, when Prometheus is enabled.
    pub prometheus: Option<PrometheusHandle>,
    /// Whether DogStatsD is forwarding.
    pub dogstatsd: bool,
}

/// Install the global metrics recorder: Prometheus when the endpoint is enabled, DogStatsD when
/// an address is given, both through a fanout. Describes the core metrics.
///
/// When another recorder is already installed (an embedding application's), a warning is logged
/// and that recorder keeps receiving the metrics.
pub fn install_metrics(
    prometheus: bool,
    dogstatsd_addr: Option<&str>,
) -> Result<Exporters, arcane_core::Error> {
    let mut exporters = Exporters::default();
    let mut fanout = metrics_util::layers::FanoutBuilder::default();
    let mut any = false;
    if prometheus {
        let recorder = PrometheusBuilder::new().build_recorder();
        exporters.prometheus = Some(recorder.handle());
        fanout = fanout.add_recorder(recorder);
        any = true;
    }
    if let Some(addr) = dogstatsd_addr {
        fanout = fanout.add_recorder(dogstatsd_recorder(addr)?);
        exporters.dogstatsd = true;
        any = true;
    }
    if any && let Err(e) = metrics::set_global_recorder(fanout.build()) {
        tracing::warn!(error = %e, "a metrics recorder is already installed; the runner's exporters are not used");
        exporters = Exporters::default();
    }
    arcane_core::metrics::describe();
    if let Some(handle) = exporters.prometheus.clone() {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        });
    }
    Ok(exporters)
}

/// A DogStatsD recorder forwarding to `addr` (see [`crate::config::ENV_DOGSTATSD_ADDR`]), its
/// tags prefixed [`DOGSTATSD_TAG_PREFIX`].
pub fn dogstatsd_recorder(
    addr: &str,
) -> Result<PrefixTags<metrics_exporter_dogstatsd::DogStatsDRecorder>, arcane_core::Error> {
    let recorder = metrics_exporter_dogstatsd::DogStatsDBuilder::default()
        .with_remote_address(addr)
        .and_then(|b| b.build())
        .map_err(|e| {
            arcane_core::Error::config(
                format!("{ENV_DOGSTATSD_ADDR} (--dogstatsd-addr)"),
                format!("cannot start the DogStatsD exporter for {addr:?}: {e}"),
            )
        })?;
    Ok(PrefixTags::new(recorder, DOGSTATSD_TAG_PREFIX))
}

/// A recorder that prefixes every label key (DogStatsD tags `arcane.sneaksanddata.com/kind:...`).
#[derive(Debug)]
pub struct PrefixTags<R> {
    inner: R,
    prefix: &'static str,
}

impl<R> PrefixTags<R> {
    /// Wrap `inner`.
    pub fn new(inner: R, prefix: &'static str) -> Self {
        Self { inner, prefix }
    }

    fn key(&self, key: &Key) -> Key {
        let labels: Vec<Label> = key
            .labels()
            .map(|l| Label::new(format!("{}{}", self.prefix, l.key()), l.value().to_string()))
            .collect();
        Key::from_parts(key.name().to_string(), labels)
    }
}

impl<R: Recorder> Recorder for PrefixTags<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description)
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description)
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description)
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.inner.register_counter(&self.key(key), metadata)
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(&self.key(key), metadata)
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.inner.register_histogram(&self.key(key), metadata)
    }
}

/// State shared with the HTTP endpoint.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// `/readyz` answers 200 from now on.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// The bound HTTP endpoint.
#[derive(Debug)]
pub struct Endpoint {
    /// The address it listens on (the real port when `:0` was asked for).
    pub local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Bind `addr` and serve `/metrics` (Prometheus text), `/healthz` (200 while the process runs)
/// and `/readyz` (200 once the graph runs, 503 before and while stopping).
pub async fn serve(
    addr: &str,
    prometheus: Option<PrometheusHandle>,
    health: Arc<Health>,
) -> Result<Endpoint, arcane_core::Error> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        arcane_core::Error::config(
            format!("{ENV_METRICS_ADDR} (--metrics-addr)"),
            format!("cannot listen on {addr} ({e}); choose a free HOST:PORT, or off to disable the endpoint"),
        )
    })?;
    let local_addr = listener.local_addr().map_err(|e| {
        arcane_core::Error::config(
            format!("{ENV_METRICS_ADDR} (--metrics-addr)"),
            e.to_string(),
        )
    })?;
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics endpoint: accept failed");
                    continue;
                }
            };
            let prometheus = prometheus.clone();
            let health = health.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let response = respond(&req, prometheus.as_ref(), &health);
                    async move { Ok::<_, Infallible>(response) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!(error = %e, "metrics endpoint: connection error");
                }
            });
        }
    });
    Ok(Endpoint { local_addr, task })
}

fn respond(
    req: &Request<Incoming>,
    prometheus: Option<&PrometheusHandle>,
    health: &Health,
) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String, content_type: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(content_type),
        );
        r
    };
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into(), PLAIN);
    }
    match req.uri().path() {
        "/metrics" => match prometheus {
            Some(handle) => text(
                StatusCode::OK,
                handle.render(),
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            None => text(
                StatusCode::NOT_FOUND,
                "the Prometheus recorder is not installed\n".into(),
                PLAIN,
            ),
        },
        "/healthz" => text(StatusCode::OK, "ok\n".into(), PLAIN),
        "/readyz" => {
            if health.is_ready() {
                text(StatusCode::OK, "ready\n".into(), PLAIN)
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into(), PLAIN)
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /healthz or /readyz\n".into(),
            PLAIN,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        let status = buf[9..12].parse().unwrap();
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn endpoint_serves_health_readiness_and_prometheus_text() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let counter = recorder.register_counter(
            &Key::from_parts(
                arcane_core::metrics::ROWS_WRITTEN,
                vec![
                    Label::new("kind", "generator"),
                    Label::new("stream_id", "s1"),
                ],
            ),
            &Metadata::new("t", metrics::Level::INFO, None),
        );
        counter.increment(42);
        let health = Arc::new(Health::default());
        let endpoint = serve("127.0.0.1:0", Some(handle), health.clone())
            .await
            .unwrap();
        let addr = endpoint.local_addr;
        assert_eq!(get(addr, "/healthz").await.0, 200);
        assert_eq!(get(addr, "/readyz").await.0, 503);
        health.set_ready(true);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            body.contains(r#"arcane_stream_rows_written{kind="generator",stream_id="s1"} 42"#),
            "{body}"
        );
        assert_eq!(get(addr, "/nope").await.0, 404);

        // A taken port is a configuration error naming the variable.
        let err = serve(&addr.to_string(), None, health).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("ARCANE_METRICS_ADDR (--metrics-addr): cannot listen"),
            "{err}"
        );
    }

    #[test]
    fn dogstatsd_receives_metrics_with_prefixed_tags_over_udp() {
        let agent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        agent
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let recorder = dogstatsd_recorder(&agent.local_addr().unwrap().to_string()).unwrap();
        let key = Key::from_parts(
            arcane_core::metrics::ROWS_WRITTEN,
            vec![Label::new("kind", "nats"), Label::new("stream_id", "s1")],
        );
        recorder
            .register_counter(&key, &Metadata::new("t", metrics::Level::INFO, None))
            .increment(5);
        let mut buf = [0u8; 8192];
        let n = agent.recv(&mut buf).unwrap();
        let payload = String::from_utf8_lossy(&buf[..n]).into_owned();
        let line = payload
            .lines()
            .find(|l| l.starts_with("arcane.stream.rows.written:"))
            .unwrap_or_else(|| panic!("no rows.written in {payload:?}"));
        assert!(
            line.starts_with("arcane.stream.rows.written:5|c|#"),
            "{line}"
        );
        assert!(
            line.contains("arcane.sneaksanddata.com/kind:nats"),
            "{line}"
        );
        assert!(
            line.contains("arcane.sneaksanddata.com/stream_id:s1"),
            "{line}"
        );
    }

    #[test]
    fn dogstatsd_tags_are_prefixed() {
        let p = PrefixTags::new((), DOGSTATSD_TAG_PREFIX);
        let key = p.key(&Key::from_parts(
            "arcane.stream.rows.written",
            vec![Label::new("kind", "nats")],
        ));
        assert_eq!(key.name(), "arcane.stream.rows.written");
        let labels: Vec<_> = key
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        assert_eq!(
            labels,
            vec![(
                "arcane.sneaksanddata.com/kind".to_string(),
                "nats".to_string()
            )]
        );
    }
}
