//! Listeners, per-connection timeouts and graceful shutdown.
//!
//! Each connection runs hyper's HTTP/1 server next to a small watchdog that enforces PlanB's client timeouts
//! with Go's meanings: idle (between requests), read-header (from the first byte of a request head), and
//! write (from the end of the head until the response is written).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::body::Guarded;
use crate::config::Timeouts;
use crate::head_scan::HeadScan;
use crate::inflight::Ticket;
use crate::proxy::{Downstream, Proxy};

/// Serve `listener` until `shutdown` resolves, then stop accepting, let in-flight requests finish within the
/// shutdown timeout, and return.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, shutdown: impl Future<Output = ()>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let connections = Arc::new(Tracker::default());
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let proxy = proxy.clone();
                    let stop = stop_rx.clone();
                    let alive = connections.track();
                    // Counted open until it closes or becomes a WebSocket tunnel (PlanB's gauge).
                    let counted = proxy.telemetry.metrics.connection_opened("http");
                    tokio::spawn(async move {
                        serve_connection(stream, peer, proxy, stop).await;
                        drop((alive, counted));
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: say so and give the process a moment.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // In-flight requests, then WebSocket tunnels, get the shutdown timeout between them; what is still open
    // afterwards is closed when the process exits.
    let deadline = Instant::now() + proxy.config.timeouts.shutdown;
    let _ = tokio::time::timeout_at(deadline, connections.idle()).await;
    let _ = tokio::time::timeout_at(deadline, proxy.tunnels.idle()).await;
}

/// Counts running tasks of one kind (connections, tunnels) so that shutdown can wait for them.
#[derive(Default)]
pub struct Tracker {
    count: AtomicUsize,
    done: Notify,
}

/// Held by a tracked task; dropping it ends the task's count.
pub struct Tracked(Arc<Tracker>);

impl Tracker {
    /// Count one more task until the returned guard is dropped.
    pub fn track(self: &Arc<Self>) -> Tracked {
        self.count.fetch_add(1, Ordering::AcqRel);
        Tracked(self.clone())
    }

    /// Tasks currently counted.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Resolves when no task is counted.
    pub async fn idle(&self) {
        loop {
            let notified = self.done.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let state = Arc::new(ConnState::new());
    let io = TimedIo {
        inner: stream,
        state: state.clone(),
        scan: HeadScan::default(),
    };
    let timeouts = proxy.config.timeouts.clone();
    let limits = proxy.config.limits;
    let service_state = state.clone();
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let proxy = proxy.clone();
        let (guard, conflicting_length) = RequestGuard::begin(service_state.clone());
        let down = Downstream {
            peer,
            tls: false,
            conflicting_length,
        };
        async move {
            let mut resp = proxy.handle(req, down).await;
            // The request stays in the in-flight registry until its body is written out.
            let inflight = resp.extensions_mut().remove::<Ticket>();
            Ok::<_, std::convert::Infallible>(
                resp.map(|body| Guarded::new(body, (guard, inflight))),
            )
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = pin!(conn);
    let mut watchdog = pin!(watchdog(state, timeouts));
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = &mut watchdog => return,
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;

/// Where a connection is in its request cycle, and since when (milliseconds since process start).
struct ConnState {
    phase: AtomicU8,
    since: AtomicU64,
    in_flight: AtomicUsize,
    /// Request heads read so far, and the number of the last one with both Content-Length and
    /// Transfer-Encoding (0: none); matched against `requests` so pipelined heads are told apart.
    heads: AtomicU64,
    conflict_head: AtomicU64,
    requests: AtomicU64,
}

fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    Instant::now().duration_since(base).as_millis() as u64
}

fn instant_at(ms: u64) -> Instant {
    let now = now_ms();
    let now_instant = Instant::now();
    if ms >= now {
        now_instant + Duration::from_millis(ms - now)
    } else {
        now_instant - Duration::from_millis(now - ms)
    }
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            phase: AtomicU8::new(IDLE),
            since: AtomicU64::new(now_ms()),
            in_flight: AtomicUsize::new(0),
            heads: AtomicU64::new(0),
            conflict_head: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }

    fn enter(&self, phase: u8) {
        self.since.store(now_ms(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Release);
    }
}

/// Marks a request as in flight from the moment its head was read until its response body is done.
struct RequestGuard(Arc<ConnState>);

impl RequestGuard {
    /// Also says whether this request's head had both Content-Length and Transfer-Encoding.
    fn begin(state: Arc<ConnState>) -> (RequestGuard, bool) {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        state.enter(BUSY);
        let number = state.requests.fetch_add(1, Ordering::AcqRel) + 1;
        let conflicting = state.conflict_head.load(Ordering::Acquire) == number;
        (RequestGuard(state), conflicting)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.enter(IDLE);
        }
    }
}

/// Resolves when the connection has overstayed the limit of its current phase.
async fn watchdog(state: Arc<ConnState>, t: Timeouts) {
    let head_limit = match t.client_read {
        Some(read) => read.min(t.client_read_header),
        None => t.client_read_header,
    };
    let recheck = [Some(head_limit), t.client_idle, t.client_write]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(head_limit);
    loop {
        let phase = state.phase.load(Ordering::Acquire);
        let since = state.since.load(Ordering::Relaxed);
        let limit = match phase {
            IDLE => t.client_idle,
            HEAD => Some(head_limit),
            _ => t.client_write,
        };
        match limit {
            Some(limit) => {
                let deadline = since + limit.as_millis() as u64;
                if now_ms() >= deadline {
                    return;
                }
                tokio::time::sleep_until(instant_at(deadline).min(Instant::now() + recheck)).await;
            }
            None => tokio::time::sleep(recheck).await,
        }
    }
}

/// The client socket, noting when the first bytes of a new request head arrive and scanning the head.
struct TimedIo {
    inner: TcpStream,
    state: Arc<ConnState>,
    scan: HeadScan,
}

impl AsyncRead for TimedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            if this.state.phase.load(Ordering::Relaxed) == IDLE {
                this.state.enter(HEAD);
                this.scan.start();
            }
            if let Some(conflict) = this.scan.feed(new) {
                let head = this.state.heads.fetch_add(1, Ordering::AcqRel) + 1;
                if conflict {
                    this.state.conflict_head.store(head, Ordering::Release);
                }
            }
        }
        polled
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
