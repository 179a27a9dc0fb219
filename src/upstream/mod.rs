//! The backend side (upstream): parsing backend URLs, dialing, and a keep-alive pool per backend.
//!
//! hypache dials backends itself instead of using a generic client so that a failed connection hands the
//! request back untouched: that is what makes failover to the next backend safe (nothing was sent).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

mod h1;
#[doc(hidden)]
pub use h1::fuzzing;

/// Body framing, shared with the server's own HTTP/1 engine: it writes responses with the same chunk lines
/// and reads request bodies with the same decoder (and so the same strictness rules) as backends' answers.
pub use h1::{chunk_size_line, Chunked, Decoded, Framing as BodyDecoder, LAST_CHUNK};
pub mod once;
mod target;
pub mod tls;

pub use h1::BodyError;
pub use target::{split_host_port, Target, TargetError};

use crate::rt::workers::PerWorker;

use crate::body::RequestBody;

/// The most a backend connection buffers of a response: its head must fit (nginx's `proxy_buffer_size` is
/// 4-8 KB), and each body chunk handed to the client side is at most this big. hyper's default (about 400 KB)
/// let a client that does not read pin megabytes; with this and the client side's bounded write buffer
/// (`server`), backpressure reaches the backend while the proxy holds a few hundred KB at most.
pub const BACKEND_READ_BUFFER: usize = 16 * 1024;

/// Idle connections kept per backend (PlanB's transport keeps up to 100).
const MAX_IDLE_PER_BACKEND: usize = 100;

/// Why a backend could not be used. `dead()` says whether PlanB would mark it dead.
#[derive(Debug)]
pub enum UpstreamError {
    /// Name resolution failed (Go: `dial tcp: lookup <host>: no such host`).
    Resolve(String),
    /// The TCP connect failed: refused, unreachable, reset.
    Connect(String),
    /// The TCP connect did not finish within the dial timeout.
    ConnectTimeout(String),
    /// The request could not be completed on an open connection (backend closed, bad response, ...).
    Request(String),
    /// The TLS handshake with an `https://` backend failed (certificate not trusted, wrong name, not TLS).
    /// Not a dead mark: the backend answered, it is the configuration that is wrong (docs/compat/planb.md#failures-that-mark-a-backend).
    Tls(String),
    /// The proxy itself ran out of something (file descriptors, buffers, memory, local ports) while dialing.
    /// The backend was never reached, so it is neither marked dead nor counted by the breaker: one proxy's
    /// exhaustion must not take healthy backends away from every proxy sharing the Redis.
    Local(String),
    /// The client's request body failed while it was being sent (malformed chunked framing, an upload aborted
    /// mid-body). The client's mistake: a 400, never a dead mark, a breaker failure or a retry.
    Client(String),
}

impl UpstreamError {
    /// Connection-level failures mark the backend dead; nothing of the request reached the backend.
    pub fn dead(&self) -> bool {
        matches!(
            self,
            UpstreamError::Resolve(_)
                | UpstreamError::Connect(_)
                | UpstreamError::ConnectTimeout(_)
        )
    }

    /// Whether the backend had a part in this failure at all: false for the proxy's own exhaustion and for the
    /// client's broken body, which are never blamed on a backend (no dead mark, no breaker count, no failover).
    pub fn blames_backend(&self) -> bool {
        !matches!(self, UpstreamError::Local(_) | UpstreamError::Client(_))
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Resolve(m)
            | UpstreamError::Connect(m)
            | UpstreamError::ConnectTimeout(m)
            | UpstreamError::Request(m)
            | UpstreamError::Tls(m)
            | UpstreamError::Local(m)
            | UpstreamError::Client(m) => f.write_str(m),
        }
    }
}

/// One backend's idle connections, at most `max` of them.
struct PoolInner {
    /// Bare sockets: an idle connection holds no buffer and no task.
    idle: Mutex<Vec<BackendStream>>,
    max: usize,
}

type Pool = Arc<PoolInner>;

/// Dials backends and keeps their connections alive for reuse.
pub struct Upstream {
    /// Idle connections keyed by `scheme://host:port`, so an `http` and an `https` backend on the same
    /// authority never share a connection; one map per worker slot, because a connection's task runs on the
    /// worker that dialed it and a request on another worker would have to wake that thread (see `workers`).
    pools: PerWorker<DashMap<String, Pool, foldhash::fast::RandomState>>,
    /// TCP connect limit, also the TLS handshake limit for `https://` backends (as PlanB's transport).
    dial_timeout: Duration,
    /// Verifies `https://` backends (web roots plus `--backend-ca-file`).
    tls: TlsConnector,
    /// Idle connections kept per backend; 0 closes each connection after its request.
    max_idle: usize,
}

impl Upstream {
    /// `slots`: the worker slots there are (workers + 1 for slot 0).
    pub fn new(dial_timeout: Duration, tls: Arc<ClientConfig>, slots: usize) -> Upstream {
        Upstream {
            pools: PerWorker::new((0..slots.max(1)).map(|_| DashMap::default()).collect()),
            dial_timeout,
            tls: TlsConnector::from(tls),
            max_idle: MAX_IDLE_PER_BACKEND,
        }
    }

    /// Keep at most `max` idle connections per backend (0: no keep-alive to backends).
    pub fn with_max_idle(mut self, max: usize) -> Upstream {
        self.max_idle = max;
        self
    }

    /// Send `req` to `target`. On a connection failure the request comes back unsent, for failover.
    pub async fn send(
        &self,
        target: &Target,
        req: Box<Request<RequestBody>>,
    ) -> Result<Response<UpstreamBody>, (UpstreamError, Option<Request<RequestBody>>)> {
        let pool = self.pool(&target.pool_key);
        // Reuse an idle connection the backend has not closed meanwhile.
        let (io, reused) = match checkout(&pool) {
            Some(io) => (io, true),
            // Boxed: dialing (and a TLS handshake) is rare next to reusing a connection.
            None => match Box::pin(self.open(target, target.authority())).await {
                Ok(io) => (io, false),
                Err(e) => return Err((e, Some(*req))),
            },
        };
        match h1::exchange(io, *req, pool, reused).await {
            Ok(response) => Ok(response),
            // The backend closed the pooled connection under the request, before any answer: a request Go's
            // transport would send again goes once more, on a new connection (docs/backends.md).
            // Boxed: rare, and its state would otherwise be part of every request's future.
            Err((_, Some(replay))) => Box::pin(self.send_again(target, replay))
                .await
                .map_err(|e| (e, None)),
            Err((e, None)) => Err((e, None)),
        }
    }

    /// A [`h1::Replay`] over a new connection.
    async fn send_again(
        &self,
        target: &Target,
        replay: h1::Replay,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let io = self.open(target, target.authority()).await?;
        h1::replay(io, replay).await
    }

    fn pool(&self, key: &str) -> Pool {
        let pools = self.pools.current();
        if let Some(pool) = pools.get(key) {
            return pool.clone();
        }
        let max = self.max_idle;
        pools
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(PoolInner {
                    idle: Mutex::default(),
                    max,
                })
            })
            .clone()
    }

    /// A connection that speaks the backend's scheme: TCP, plus TLS for `https://` with SNI = the backend host,
    /// verified. The whole of it must finish within the dial timeout.
    pub async fn open(
        &self,
        target: &Target,
        authority: &str,
    ) -> Result<BackendStream, UpstreamError> {
        let started = Instant::now();
        let tcp = self.connect(target, authority).await?;
        if target.scheme != "https" {
            return Ok(BackendStream::Plain(tcp));
        }
        let name = ServerName::try_from(target.host.clone()).map_err(|e| {
            UpstreamError::Tls(format!("tls: invalid server name {:?}: {e}", target.host))
        })?;
        let remaining = self.dial_timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, self.tls.connect(name, tcp)).await {
            Ok(Ok(tls)) => Ok(BackendStream::Tls(Box::new(tls))),
            Ok(Err(e)) => Err(UpstreamError::Tls(format!(
                "tls handshake with {authority}: {e}"
            ))),
            Err(_) => Err(UpstreamError::ConnectTimeout(format!(
                "dial timeout after {:?}: net/http: TLS handshake timeout",
                started.elapsed()
            ))),
        }
    }

    /// Open a TCP connection to the backend within the dial timeout, classifying failures as PlanB does.
    pub async fn connect(
        &self,
        target: &Target,
        authority: &str,
    ) -> Result<TcpStream, UpstreamError> {
        let started = Instant::now();
        let addrs: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, target.port)],
            Err(_) => {
                let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
                match tokio::time::timeout(self.dial_timeout, lookup).await {
                    Ok(Ok(addrs)) => addrs.collect(),
                    Ok(Err(_)) => return Err(no_such_host(target)),
                    Err(_) => return Err(timeout_error(authority, started)),
                }
            }
        };
        let mut last = no_such_host(target);
        for addr in addrs {
            let remaining = self.dial_timeout.saturating_sub(started.elapsed());
            match tokio::time::timeout(remaining, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) if is_local_exhaustion(&e) => {
                    return Err(UpstreamError::Local(format!(
                        "dial tcp {addr}: socket: {}",
                        go_io_error(&e)
                    )))
                }
                Ok(Err(e)) => {
                    last = UpstreamError::Connect(format!(
                        "dial tcp {addr}: connect: {}",
                        go_io_error(&e)
                    ))
                }
                Err(_) => return Err(timeout_error(authority, started)),
            }
        }
        Err(last)
    }
}

fn no_such_host(target: &Target) -> UpstreamError {
    UpstreamError::Resolve(format!("dial tcp: lookup {}: no such host", target.host))
}

fn timeout_error(authority: &str, started: Instant) -> UpstreamError {
    UpstreamError::ConnectTimeout(format!(
        "dial timeout after {:?}: dial tcp {authority}: i/o timeout",
        started.elapsed()
    ))
}

/// Go's wording for the common socket errors, so error-log lines read as PlanB's did.
fn go_io_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset by peer".into(),
        io::ErrorKind::HostUnreachable => "no route to host".into(),
        io::ErrorKind::NetworkUnreachable => "network is unreachable".into(),
        _ => e.to_string(),
    }
}

/// Errors that say the proxy's own host ran out of a resource, not that the backend failed: EMFILE, ENFILE
/// (descriptors), ENOBUFS, ENOMEM (kernel memory) and EADDRNOTAVAIL (no local port left).
pub fn is_local_exhaustion(e: &io::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    const EADDRNOTAVAIL: i32 = 99;
    matches!(
        e.raw_os_error(),
        Some(EMFILE | ENFILE | ENOBUFS | ENOMEM | EADDRNOTAVAIL)
    )
}

fn checkout(pool: &Pool) -> Option<BackendStream> {
    let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
    while let Some(mut io) = idle.pop() {
        if h1::alive(&mut io) {
            return Some(io);
        }
    }
    None
}

fn checkin(pool: &Pool, io: BackendStream) {
    let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
    if idle.len() < pool.max {
        idle.push(io);
    }
}

/// A connection to a backend, in clear or TLS.
pub enum BackendStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendStream::Plain(s) => s.is_write_vectored(),
            BackendStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_flush(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A backend's response body; the connection goes back to the pool when the body has been read to the end.
pub struct UpstreamBody {
    inner: Inner,
}

enum Inner {
    /// Nothing (more) to read.
    Empty,
    /// Read from a pooled connection by the proxy's own client.
    Wire(h1::Reading),
    /// Read by hyper's client (a refused upgrade's answer).
    Detached(Incoming),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let reading = match &mut self.inner {
            Inner::Empty => return Poll::Ready(None),
            Inner::Detached(body) => {
                return Pin::new(body)
                    .poll_frame(cx)
                    .map_err(|e| BodyError(e.to_string()))
            }
            Inner::Wire(reading) => reading,
        };
        match ready!(reading.poll_step(cx)) {
            Ok(h1::Step::Frame(frame)) => {
                if reading.is_done() {
                    self.release();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Ok(h1::Step::End) => {
                self.release();
                Poll::Ready(None)
            }
            Err(e) => {
                // The connection is closed with the body.
                self.inner = Inner::Empty;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::Wire(reading) => reading.is_done(),
            Inner::Detached(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Wire(reading) => match reading.remaining() {
                Some(left) => SizeHint::with_exact(left),
                None => SizeHint::default(),
            },
            Inner::Detached(body) => body.size_hint(),
        }
    }
}

impl UpstreamBody {
    /// A body whose connection is not pooled (a refused upgrade's answer).
    pub fn detached(inner: Incoming) -> UpstreamBody {
        UpstreamBody {
            inner: Inner::Detached(inner),
        }
    }

    fn empty() -> UpstreamBody {
        UpstreamBody {
            inner: Inner::Empty,
        }
    }

    fn wire(reading: h1::Reading) -> UpstreamBody {
        UpstreamBody {
            inner: Inner::Wire(reading),
        }
    }

    fn release(&mut self) {
        if let Inner::Wire(reading) = std::mem::replace(&mut self.inner, Inner::Empty) {
            reading.finish();
        }
    }
}
