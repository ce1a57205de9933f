//! A TCP proxy in front of a real service (PostgreSQL, the S3 emulator, a broker) that a test
//! can pause (hold the server's answers), cut (close every connection), make refuse
//! connections (all of them, or the next few), or turn into a slow link (latency added to every
//! chunk forwarded, a bandwidth limit), and that counts the connections accepted and still open
//! from the client's side.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

#[derive(Debug, Default)]
struct State {
    paused: AtomicBool,
    refuse: AtomicBool,
    refuse_next: AtomicUsize,
    open: AtomicUsize,
    accepted: AtomicUsize,
    /// Added to every chunk forwarded, in microseconds.
    latency_us: AtomicU64,
    /// Bytes per second in each direction; 0: unlimited.
    bandwidth: AtomicU64,
}

impl State {
    /// How long forwarding `n` bytes takes on the link as set.
    fn delay(&self, n: usize) -> Duration {
        let latency = Duration::from_micros(self.latency_us.load(Ordering::SeqCst));
        match self.bandwidth.load(Ordering::SeqCst) {
            0 => latency,
            rate => latency + Duration::from_secs_f64(n as f64 / rate as f64),
        }
    }
}

/// The proxy; dropping it stops accepting (connections already open run on until cut).
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    cut: watch::Sender<u64>,
    _accept: AbortOnDropHandle<()>,
}

impl Proxy {
    /// A proxy to `upstream` on a free local port.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let (cut, _) = watch::channel(0u64);
        let accept = {
            let (state, cut) = (state.clone(), cut.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    state.accepted.fetch_add(1, Ordering::SeqCst);
                    let refuse_one = state
                        .refuse_next
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if refuse_one || state.refuse.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    state.open.fetch_add(1, Ordering::SeqCst);
                    let (state, cut) = (state.clone(), cut.subscribe());
                    tokio::spawn(async move {
                        forward(client, upstream, &state, cut).await;
                        state.open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        };
        Self {
            addr,
            state,
            cut,
            _accept: AbortOnDropHandle::new(accept),
        }
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Hold (true) or pass (false) the server's answers.
    pub fn pause(&self, on: bool) {
        self.state.paused.store(on, Ordering::SeqCst);
    }

    /// Close new connections at once (true) or forward them (false).
    pub fn refuse(&self, on: bool) {
        self.state.refuse.store(on, Ordering::SeqCst);
    }

    /// Close the next `n` connections at once (after accepting them), then forward again.
    pub fn refuse_next(&self, n: usize) {
        self.state.refuse_next.store(n, Ordering::SeqCst);
    }

    /// Add `latency` to every chunk forwarded, in both directions (zero: none).
    pub fn set_latency(&self, latency: Duration) {
        self.state
            .latency_us
            .store(latency.as_micros() as u64, Ordering::SeqCst);
    }

    /// Limit each direction to `bytes_per_second` (`None`: unlimited).
    pub fn set_bandwidth(&self, bytes_per_second: Option<u64>) {
        self.state
            .bandwidth
            .store(bytes_per_second.unwrap_or(0), Ordering::SeqCst);
    }

    /// Close every open connection.
    pub fn cut(&self) {
        self.cut.send_modify(|g| *g += 1);
    }

    /// Connections open on the client's side.
    pub fn open_connections(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    /// Connections accepted so far (refused ones included).
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    state: &State,
    mut cut: watch::Receiver<u64>,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let (mut up, mut down) = (vec![0u8; 16384], vec![0u8; 16384]);
    loop {
        let paused = state.paused.load(Ordering::SeqCst);
        tokio::select! {
            n = cr.read(&mut up) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    tokio::time::sleep(state.delay(n)).await;
                    if sw.write_all(&up[..n]).await.is_err() { return }
                }
            },
            n = sr.read(&mut down), if !paused => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    tokio::time::sleep(state.delay(n)).await;
                    if cw.write_all(&down[..n]).await.is_err() { return }
                }
            },
            _ = cut.changed() => return,
            _ = tokio::time::sleep(Duration::from_millis(20)), if paused => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// Send `n` bytes through the proxy and read them back; the (virtual) time it took.
    async fn round_trip(proxy: &Proxy, n: usize) -> Duration {
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();
        let start = tokio::time::Instant::now();
        let sent = vec![7u8; n];
        let (mut r, mut w) = c.split();
        let mut back = vec![0u8; n];
        let (wrote, read) = tokio::join!(w.write_all(&sent), r.read_exact(&mut back));
        wrote.unwrap();
        read.unwrap();
        assert_eq!(back, sent);
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_link_adds_latency_and_limits_bandwidth() {
        let proxy = Proxy::start(echo().await).await;
        let fast = round_trip(&proxy, 1000).await;
        assert!(fast < Duration::from_millis(10), "{fast:?}");
        proxy.set_latency(Duration::from_millis(50));
        let slow = round_trip(&proxy, 1000).await;
        // 50 ms on the way in, 50 ms on the way back.
        assert!(slow >= Duration::from_millis(100), "{slow:?}");
        proxy.set_latency(Duration::ZERO);
        proxy.set_bandwidth(Some(100_000));
        // 200 kB at 100 kB/s each way: at least 2 s each way (the directions overlap).
        let limited = round_trip(&proxy, 200_000).await;
        assert!(limited >= Duration::from_secs(2), "{limited:?}");
        proxy.set_bandwidth(None);
        assert!(round_trip(&proxy, 200_000).await < Duration::from_millis(100));
    }
}
