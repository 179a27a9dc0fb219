//! Listeners, per-connection timeouts and graceful shutdown.
//!
//! Three kinds of listener share one accept loop: plain HTTP/1, TLS (HTTP/2 or HTTP/1.1 by ALPN, see
//! [`crate::server::tls`]) and the SNI passthrough ([`crate::server::sni`]). Each HTTP connection runs hyper's server next to a
//! small watchdog that enforces PlanB's client timeouts with Go's meanings: idle (between requests), read-header
//! (from the first byte of a request head), and write (from the end of the head until the response is written).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::body::Guarded;
use crate::config::Timeouts;
use crate::observe::access_log::PendingEntry;
use crate::proxy::{Downstream, Proxy};
use crate::rt::clock::{instant_at, now_ms};
use crate::rt::tracker::Tracker;
use crate::rt::workers::Workers;
use crate::server::head_scan::HeadScan;
use crate::server::tls::{handshake_error, TlsTerminator};

mod gate;
pub mod head_scan;
pub mod sni;
pub mod tls;

use gate::Gated;

/// A bound listener and what it speaks.
pub enum Listener {
    /// Plain HTTP/1.x (`--listen` with the native engine).
    Http(TcpListener),
    /// TLS, then HTTP/2 or HTTP/1.1 as ALPN chose (`--tls-listen`).
    Tls(TcpListener, Arc<TlsTerminator>),
    /// The SNI passthrough (`--listen` with `--engine sni`).
    Sni(TcpListener),
}

impl Listener {
    fn socket(&self) -> &TcpListener {
        match self {
            Listener::Http(l) | Listener::Tls(l, _) | Listener::Sni(l) => l,
        }
    }

    fn speaks(&self) -> Speaks {
        match self {
            Listener::Http(_) => Speaks::Http,
            Listener::Tls(_, terminator) => Speaks::Tls(terminator.clone()),
            Listener::Sni(_) => Speaks::Sni,
        }
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.socket()
            .local_addr()
            .expect("a bound listener has an address")
    }
}

/// Serve every listener until `shutdown` resolves, then stop accepting, let in-flight requests finish within the
/// shutdown timeout, and return.
pub async fn serve(
    listeners: Vec<Listener>,
    proxy: Arc<Proxy>,
    workers: Arc<Workers>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let connections = Arc::new(Tracker::default());
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            tokio::spawn(accept_loop(
                listener,
                proxy.clone(),
                workers.clone(),
                stop_rx.clone(),
                connections.clone(),
            ))
        })
        .collect();
    shutdown.await;
    let _ = stop_tx.send(true);
    // The accept loops drop their listeners as they end.
    for task in accepting {
        let _ = task.await;
    }
    // In-flight requests, then WebSocket tunnels, get the shutdown timeout between them; what is still open
    // afterwards is closed when the process exits.
    let deadline = Instant::now() + proxy.config.timeouts.shutdown;
    let _ = tokio::time::timeout_at(deadline, connections.idle()).await;
    let _ = tokio::time::timeout_at(deadline, proxy.tunnels.idle()).await;
}

/// The first pause after a failed accept, and the longest.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accept on the control runtime and hand each connection to a worker (see [`crate::rt::workers`]).
async fn accept_loop(
    listener: Listener,
    proxy: Arc<Proxy>,
    workers: Arc<Workers>,
    mut stop: watch::Receiver<bool>,
    connections: Arc<Tracker>,
) {
    if *stop.borrow() {
        return;
    }
    // The current pause after failed accepts, `None` while accepting works.
    let mut backoff: Option<Duration> = None;
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.socket().accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = None;
                pair
            }
            Err(e) => {
                // Out of file descriptors and the like: the connections already open keep being served, and
                // accepting resumes by itself once descriptors are free. Go's server waits 5 ms, doubling up to
                // 1 s, so a process at its limit does not spin; the warning is written once per episode.
                let pause = match backoff {
                    None => {
                        tracing::warn!("accept failed: {e}; retrying with back-off");
                        ACCEPT_BACKOFF_FIRST
                    }
                    Some(pause) => (pause * 2).min(ACCEPT_BACKOFF_MAX),
                };
                backoff = Some(pause);
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Leave this runtime's reactor; the worker registers the socket with its own.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("accept: detaching the connection from {peer}: {e}");
                continue;
            }
        };
        let proxy = proxy.clone();
        let stop = stop.clone();
        let alive = connections.track();
        let speaks = listener.speaks();
        // Counted open until it closes or becomes a WebSocket tunnel (PlanB's gauge).
        let counted = proxy.telemetry.metrics.connection_opened(speaks.label());
        workers.spawn_connection(async move {
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!("accept: registering the connection from {peer}: {e}");
                    return;
                }
            };
            // Each kind boxed on its own: the TLS handshake's state is several KB that a plain connection,
            // idle or not, should not carry.
            match speaks {
                Speaks::Http => {
                    Box::pin(serve_connection(
                        stream,
                        peer,
                        proxy,
                        stop,
                        Protocol::Http1 { tls: false },
                    ))
                    .await
                }
                Speaks::Tls(terminator) => {
                    Box::pin(serve_tls(stream, peer, terminator, proxy, stop)).await
                }
                Speaks::Sni => Box::pin(crate::server::sni::serve(stream, proxy)).await,
            }
            drop((alive, counted));
        });
    }
}

/// What an accepted connection is served with, detached from its listener so it can move to a worker.
enum Speaks {
    Http,
    Tls(Arc<TlsTerminator>),
    Sni,
}

impl Speaks {
    /// The `listener` label of the connection metrics.
    fn label(&self) -> &'static str {
        match self {
            Speaks::Http => "http",
            Speaks::Tls(_) => "tls",
            Speaks::Sni => "sni",
        }
    }
}

/// Handshake (bounded by the read-header timeout, so a silent client cannot hold the socket), then HTTP.
async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    terminator: Arc<TlsTerminator>,
    proxy: Arc<Proxy>,
    stop: watch::Receiver<bool>,
) {
    let limit = proxy
        .config
        .timeouts
        .client_read
        .map_or(proxy.config.timeouts.client_read_header, |read| {
            read.min(proxy.config.timeouts.client_read_header)
        });
    let done = match tokio::time::timeout(limit, terminator.accept(stream)).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            proxy.telemetry.metrics.tls_handshake_failures.inc();
            proxy.error_log.line(handshake_error(peer, &e));
            return;
        }
        Err(_) => {
            proxy.telemetry.metrics.tls_handshake_failures.inc();
            proxy
                .error_log
                .line(handshake_error(peer, "handshake timed out"));
            return;
        }
    };
    let protocol = if done.h2 {
        Protocol::Http2
    } else {
        Protocol::Http1 { tls: true }
    };
    serve_connection(done.stream, peer, proxy, stop, protocol).await;
}

/// What runs on an accepted (and possibly decrypted) connection.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    /// HTTP/1.x with upgrades; `tls` for X-Forwarded-Proto.
    Http1 { tls: bool },
    /// HTTP/2, only ever over TLS (no h2c, as PlanB).
    Http2,
}

async fn serve_connection<IO>(
    stream: IO,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    stop: watch::Receiver<bool>,
    protocol: Protocol,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::new());
    let h2 = matches!(protocol, Protocol::Http2);
    let io = TimedIo {
        inner: stream,
        state: state.clone(),
        // HTTP/2 heads are binary frames, and hyper's h2 server refuses Transfer-Encoding itself.
        scan: (!h2).then(HeadScan::default),
        prefix: Bytes::new(),
        prefix_scanned: false,
    };
    let tls = !matches!(protocol, Protocol::Http1 { tls: false });
    let timeouts = proxy.config.timeouts.clone();
    let limits = proxy.config.limits;
    let service_state = state.clone();
    let proxy_metrics = proxy.telemetry.metrics.clone();
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let proxy = proxy.clone();
        let (guard, conflicting_length) = RequestGuard::begin(service_state.clone());
        let down = Downstream {
            peer,
            tls,
            conflicting_length,
        };
        // Boxed: hyper keeps a slot the size of this future for every connection, busy or idle, and the
        // request pipeline's future is about 3 KB; boxed, idle keep-alive connections do not pay for it.
        Box::pin(async move {
            // The request stays in the in-flight registry until its body is written out.
            let (resp, inflight, pending) = proxy.handle(req, down).await;
            let pending = pending.map(|entry| guard.log_when_sent(entry));
            Ok::<_, std::convert::Infallible>(
                resp.map(|body| Guarded::new(body, (guard, inflight, pending))),
            )
        })
    });
    let state_for_park = state.clone();
    let watchdog = watchdog(state, timeouts, h2);
    // One boxed future per protocol, so an HTTP/1 connection does not carry HTTP/2's state.
    if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        let conn = builder.serve_connection(TokioIo::new(io), service);
        Box::pin(drive(conn, |c| c.graceful_shutdown(), watchdog, stop)).await;
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            // Bounds what is queued for the client too: with hyper's default (about 400 KB), a client that
            // does not read held megabytes of a backend's response.
            .max_buf_size(CLIENT_WRITE_BUFFER.max(limits.max_header_bytes))
            .max_header_size(limits.max_header_bytes)
            .max_headers(limits.max_headers)
            .keep_alive(true);
        Box::pin(serve_http1(
            io,
            &builder,
            service,
            state_for_park,
            proxy_metrics,
            watchdog,
            stop,
        ))
        .await;
    }
}

/// What an HTTP/1 connection buffers towards its client before it stops reading the backend (see
/// `upstream::BACKEND_READ_BUFFER`). Also its read buffer's bound, so never below the request-head limit.
const CLIENT_WRITE_BUFFER: usize = 64 * 1024;

/// A keep-alive connection idle for this long is parked: hyper's connection and its buffers (about 20 KB)
/// are dropped, and the socket waits on its own until the client sends again, as nginx frees a keep-alive
/// connection's buffers. Busy connections never reach it, so it costs nothing under load.
const PARK_AFTER: Duration = Duration::from_millis(50);

/// With more HTTP/1 connections than this open in the process, idle ones are parked after [`PARK_SOON`]:
/// memory then matters more than the few microseconds a request pays to start a new hyper connection. With
/// 10,000 clients opening and using connections in bursts, the ones still inside the 50 ms window held about
/// 25 MB of buffers between them.
const CROWDED: usize = 2_000;
const PARK_SOON: Duration = Duration::from_millis(5);

/// HTTP/1 connections being served now, for [`park_after`].
static HTTP1_OPEN: AtomicUsize = AtomicUsize::new(0);

fn park_after() -> Duration {
    match HTTP1_OPEN.load(Ordering::Relaxed) > CROWDED {
        true => PARK_SOON,
        false => PARK_AFTER,
    }
}

/// Counts a connection in [`HTTP1_OPEN`] while it lives.
struct Http1Open;

impl Http1Open {
    fn new() -> Http1Open {
        HTTP1_OPEN.fetch_add(1, Ordering::Relaxed);
        Http1Open
    }
}

impl Drop for Http1Open {
    fn drop(&mut self) {
        HTTP1_OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// HTTP/1: serve with hyper while requests come, park while the connection is idle, repeat.
async fn serve_http1<IO, S>(
    mut io: TimedIo<IO>,
    builder: &hyper::server::conn::http1::Builder,
    service: S,
    state: Arc<ConnState>,
    metrics: Arc<crate::observe::metrics::Metrics>,
    watchdog: impl Future<Output = ()>,
    mut stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming> + Clone + Unpin + Send + 'static,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    <S::ResBody as http_body::Body>::Data: Send,
{
    let mut watchdog = pin!(watchdog);
    let _open = Http1Open::new();
    loop {
        if io.prefix.is_empty() {
            // Parked (or nothing sent yet): hold no more than the socket until bytes arrive.
            let mut first = [0u8; 256];
            let counted =
                (state.requests.load(Ordering::Acquire) > 0).then(|| metrics.connection_parked());
            let read = tokio::select! {
                read = io.inner.read(&mut first) => read,
                _ = &mut watchdog => return,
                _ = stopped(&mut stop) => return,
            };
            drop(counted);
            match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    // Seen now, so the head timer starts with these bytes and the parking timer stops.
                    io.saw(&first[..n]);
                    io.prefix = Bytes::copy_from_slice(&first[..n]);
                    io.prefix_scanned = true;
                }
            }
        }
        let conn = builder
            .serve_connection(TokioIo::new(io), service.clone())
            .with_upgrades();
        let mut conn = Box::pin(conn);
        let event = {
            // The timers and the shutdown signal are polled only when one of them fired (see `gate`), not on
            // every socket event of the connection.
            let aux = pin!(async {
                tokio::select! {
                    biased;
                    _ = &mut watchdog => Aux::Watchdog,
                    _ = stopped(&mut stop) => Aux::Stop,
                    () = idle_for(&state, park_after()) => Aux::Park,
                }
            });
            let mut aux = Gated::new(aux);
            tokio::select! {
                biased;
                _ = conn.as_mut() => return,
                event = &mut aux => event,
            }
        };
        let parked_at = match event {
            Aux::Watchdog => return,
            Aux::Stop => {
                // Finish the request in flight (the watchdog still applies), then close.
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = &mut watchdog => {}
                }
                return;
            }
            Aux::Park => {
                state.parking.store(true, Ordering::Release);
                let parked_at = state.requests.load(Ordering::Acquire);
                conn.as_mut().graceful_shutdown();
                parked_at
            }
        };
        // hyper lets go of an idle connection at once; a request that slipped in is answered first.
        let finished = tokio::select! {
            finished = conn.as_mut() => finished.is_ok(),
            _ = &mut watchdog => false,
        };
        state.parking.store(false, Ordering::Release);
        let slipped_in = state.requests.load(Ordering::Acquire) != parked_at;
        let Some(parts) = Pin::into_inner(conn).into_parts() else {
            return; // upgraded: the tunnel owns the socket now
        };
        if !finished || slipped_in {
            // That request was answered with `Connection: close`.
            return;
        }
        io = parts.io.into_inner();
        // What hyper read but did not use comes before what it never read (both were scanned already).
        if !parts.read_buf.is_empty() {
            io.prefix = match io.prefix.is_empty() {
                true => parts.read_buf,
                false => [parts.read_buf, std::mem::take(&mut io.prefix)]
                    .concat()
                    .into(),
            };
        }
        io.prefix_scanned = true;
    }
}

/// What ended a served stretch of an HTTP/1 connection, other than the connection itself.
enum Aux {
    Watchdog,
    Stop,
    Park,
}

/// Resolves once shutdown has begun (at once when it already has).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Resolves when the connection has served a request and been idle for `after` since.
///
/// One timer for the connection's life, and no timer work per request: the timer is only moved later when it
/// fires, and while a request is in flight the wait is on `went_idle` instead.
async fn idle_for(state: &ConnState, after: Duration) {
    let after_ms = after.as_millis() as u64;
    let mut timer = pin!(tokio::time::sleep(after));
    loop {
        let phase = state.phase.load(Ordering::Acquire);
        if phase != IDLE || state.requests.load(Ordering::Acquire) == 0 {
            // Busy, or no request yet (the head timeout covers that): nothing to time until it goes idle.
            state.went_idle.notified().await;
            continue;
        }
        let deadline = state.since.load(Ordering::Relaxed) + after_ms;
        if now_ms() >= deadline {
            return;
        }
        // Only ever later than the timer's last deadline, which tokio handles without touching its wheel.
        timer.as_mut().reset(instant_at(deadline));
        timer.as_mut().await;
    }
}

/// How long an HTTP/2 connection gets to deliver its GOAWAY after the watchdog fired.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// Run an HTTP/2 connection until it ends or the watchdog fires; on shutdown ask it to finish gracefully.
/// (HTTP/1 connections are run by [`serve_http1`], which also parks them.)
///
/// A watchdog expiry first asks the connection to finish (GOAWAY, so a client about to reuse the connection
/// learns it must not, instead of seeing a reset) and drops it after a short grace.
async fn drive<C: Future>(
    conn: C,
    graceful: impl Fn(Pin<&mut C>),
    watchdog: impl Future<Output = ()>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn = pin!(conn);
    let mut watchdog = pin!(watchdog);
    let mut stopping = *stop.borrow();
    if stopping {
        graceful(conn.as_mut());
    }
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = &mut watchdog => {
                graceful(conn.as_mut());
                let _ = tokio::time::timeout(GOAWAY_GRACE, conn.as_mut()).await;
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    graceful(conn.as_mut());
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
    /// Signalled when the last request in flight finishes, for the parking timer.
    went_idle: Notify,
    /// hyper is being asked to let go of an idle connection: its shutdown of the socket must not reach it.
    parking: AtomicBool,
    /// Bytes written on the client socket so far.
    written: AtomicU64,
    /// Access-log records whose responses have been handed to hyper, with the `written` count at their
    /// request's start: written once hyper has flushed the socket (or the connection ends).
    unsent_logs: std::sync::Mutex<Vec<(Box<PendingEntry>, u64)>>,
}

impl ConnState {
    /// Write the records waiting for their responses to leave, each with the bytes written since its request
    /// began.
    fn flush_logs(&self) {
        let waiting =
            std::mem::take(&mut *self.unsent_logs.lock().unwrap_or_else(|p| p.into_inner()));
        let written = self.written.load(Ordering::Acquire);
        for (entry, from) in waiting {
            entry.write(written.saturating_sub(from));
        }
    }
}

impl Drop for ConnState {
    fn drop(&mut self) {
        // The connection is gone: what it managed to write is what its last response wrote.
        self.flush_logs();
    }
}

/// An access-log record riding along with its response body: when hyper drops the body (sent, or the client
/// went away), the record waits in the connection for the next flush of the socket.
struct LogWhenSent {
    entry: Option<Box<PendingEntry>>,
    from: u64,
    state: Arc<ConnState>,
}

impl Drop for LogWhenSent {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.state
                .unsent_logs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((entry, self.from));
        }
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
            went_idle: Notify::new(),
            parking: AtomicBool::new(false),
            written: AtomicU64::new(0),
            unsent_logs: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn enter(&self, phase: u8) {
        self.since.store(now_ms(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Release);
    }
}

/// Marks a request as in flight from the moment its head was read until its response body is done.
struct RequestGuard(Arc<ConnState>, u64);

impl RequestGuard {
    /// Hold `entry` until this request's response has been written out (see [`LogWhenSent`]).
    fn log_when_sent(&self, entry: Box<PendingEntry>) -> LogWhenSent {
        LogWhenSent {
            entry: Some(entry),
            from: self.1,
            state: self.0.clone(),
        }
    }

    /// Also says whether this request's head had both Content-Length and Transfer-Encoding.
    fn begin(state: Arc<ConnState>) -> (RequestGuard, bool) {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        state.enter(BUSY);
        let number = state.requests.fetch_add(1, Ordering::AcqRel) + 1;
        let conflicting = state.conflict_head.load(Ordering::Acquire) == number;
        let written = state.written.load(Ordering::Acquire);
        (RequestGuard(state, written), conflicting)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.enter(IDLE);
            self.0.went_idle.notify_one();
        }
    }
}

/// Resolves when the connection has overstayed the limit of its current phase.
///
/// An HTTP/2 connection has no "reading a head" phase the proxy can see (frames of several streams interleave),
/// so while no request is in flight it gets the idle limit, or the head limit when no idle limit is set: an
/// h2 connection that never sends a complete request is closed like a slow HTTP/1 head.
async fn watchdog(state: Arc<ConnState>, t: Timeouts, h2: bool) {
    let head_limit = match t.client_read {
        Some(read) => read.min(t.client_read_header),
        None => t.client_read_header,
    };
    let idle_limit = match h2 {
        true => Some(t.client_idle.unwrap_or(head_limit)),
        false => t.client_idle,
    };
    let recheck = [Some(head_limit), idle_limit, t.client_write]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(head_limit);
    loop {
        let phase = state.phase.load(Ordering::Acquire);
        let since = state.since.load(Ordering::Relaxed);
        let limit = match phase {
            // Nothing received yet: the head timeout runs from accept, so a client that never sends a byte is
            // closed like a slow one (it would otherwise hold the socket for as long as it likes).
            IDLE if state.requests.load(Ordering::Acquire) == 0 => Some(head_limit),
            IDLE => idle_limit,
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

/// The client socket, noting when the first bytes of a new request head arrive and scanning the head
/// (HTTP/1 only: `scan` is `None` for HTTP/2).
struct TimedIo<IO> {
    inner: IO,
    state: Arc<ConnState>,
    scan: Option<HeadScan>,
    /// Bytes read while the connection was parked (or left in hyper's buffer when it was parked), handed
    /// out before reading the socket again.
    prefix: Bytes,
    /// `prefix` came back from hyper's buffer and went through the head scan already.
    prefix_scanned: bool,
}

impl<IO: AsyncRead + Unpin> AsyncRead for TimedIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let (polled, scanned) = if this.prefix.is_empty() {
            (Pin::new(&mut this.inner).poll_read(cx, buf), false)
        } else {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            (Poll::Ready(Ok(())), this.prefix_scanned)
        };
        if !scanned {
            this.saw(&buf.filled()[before..]);
        }
        polled
    }
}

impl<IO> TimedIo<IO> {
    fn count_written(&self, polled: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = polled {
            self.state.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
    }

    /// Bytes from the client: the first of a request head starts the head timer, and heads are scanned.
    fn saw(&mut self, new: &[u8]) {
        if let (false, Some(scan)) = (new.is_empty(), self.scan.as_mut()) {
            if self.state.phase.load(Ordering::Relaxed) == IDLE {
                if self.state.requests.load(Ordering::Acquire) == 0 {
                    // The first head's clock started at accept: a trickle of bytes does not restart it.
                    self.state.phase.store(HEAD, Ordering::Release);
                } else {
                    self.state.enter(HEAD);
                }
                scan.start();
            }
            if let Some(conflict) = scan.feed(new) {
                let head = self.state.heads.fetch_add(1, Ordering::AcqRel) + 1;
                if conflict {
                    self.state.conflict_head.store(head, Ordering::Release);
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for TimedIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.count_written(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.count_written(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        if polled.is_ready() {
            // hyper flushes once everything it buffered is on the socket: a response whose body it dropped
            // before this flush has left whole.
            self.state.flush_logs();
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state.parking.load(Ordering::Acquire) {
            // hyper is letting go of an idle connection that is being parked, not closing it.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
