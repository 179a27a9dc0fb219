//! The downstream side: listeners, the accept loop, and the start of each connection.
//!
//! Three kinds of listener share one accept loop: plain HTTP/1, TLS (HTTP/2 or HTTP/1.1 by ALPN, see [`tls`])
//! and the SNI passthrough ([`sni`]). Each HTTP connection runs next to a small watchdog that enforces the
//! client timeouts (`timeouts`): plain HTTP/1.1 and 1.0 requests, bodies included, are served by the proxy's
//! own server (`h1`), the others and HTTP/2 by hyper's; `lifecycle` serves, parks and drains it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::{ClientBody, Guarded};
use crate::config::Limits;
use crate::observe::inflight::InflightGuard;
use crate::proxy::response::ProxyBody;
use crate::proxy::{Downstream, Proxy};
use crate::rt::tracker::Tracker;
use crate::rt::workers::Workers;
use crate::server::head_scan::HeadScan;
use crate::server::tls::{handshake_error, TlsTerminator};

mod gate;
mod h1;
#[doc(hidden)]
pub use h1::fuzzing;
pub mod head_scan;
mod lifecycle;
mod timeouts;

use lifecycle::{drive, serve_http1};
use timeouts::{watchdog, ConnState, RequestGuard, TimedIo};
pub mod sni;
pub mod tls;

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
            // idle or not, should not carry (and inlining the plain kind in the task made it larger: the
            // task then held both the arguments and the future they were moved into).
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
    mut stop: watch::Receiver<bool>,
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
    let handler = Handler {
        proxy: proxy.clone(),
        state: state.clone(),
        peer,
        tls: !matches!(protocol, Protocol::Http1 { tls: false }),
    };
    let hyper_handler = handler.clone();
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let answer = hyper_handler.call(req.map(ClientBody::Hyper));
        async move { Ok::<_, std::convert::Infallible>(answer.await) }
    });
    if h2 {
        // Boxed, with everything HTTP/2 needs, so an HTTP/1 connection does not carry HTTP/2's state.
        return Box::pin(async move {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new()).max_header_list_size(
                u32::try_from(proxy.config.limits.max_header_bytes).unwrap_or(u32::MAX),
            );
            let conn = builder.serve_connection(TokioIo::new(io), service);
            let watchdog = watchdog(&state, &proxy.config.timeouts, true);
            drive(conn, |c| c.graceful_shutdown(), watchdog, stop).await;
        })
        .await;
    }
    // Not boxed on its own: while parked, this future is most of what a connection holds. Borrowed, not
    // moved: what an async fn moves into a future it awaits takes room in both.
    let mut io = Some(io);
    let (metrics, config) = (&proxy.telemetry.metrics, &proxy.config);
    serve_http1(&mut io, &handler, &service, metrics, config, &mut stop).await;
}

/// A response on its way to a client: its body holds the request's guards (in flight, the access-log record)
/// until it has been written out.
type Answer = hyper::Response<
    Guarded<
        ProxyBody,
        (
            RequestGuard,
            Option<InflightGuard>,
            Option<timeouts::LogWhenSent>,
        ),
    >,
>;

/// What answers a connection's requests, whichever HTTP/1 engine read them (hyper's or `h1`), and HTTP/2's.
#[derive(Clone)]
struct Handler {
    proxy: Arc<Proxy>,
    state: Arc<ConnState>,
    peer: SocketAddr,
    /// The connection is TLS (for X-Forwarded-Proto).
    tls: bool,
}

impl Handler {
    /// Handle one request. Boxed: hyper keeps a slot the size of its service's future for every connection,
    /// busy or idle, and the request pipeline's future is about 3 KB; boxed, idle keep-alive connections do
    /// not pay for it.
    fn call(
        &self,
        req: hyper::Request<ClientBody>,
    ) -> Pin<Box<impl Future<Output = Answer> + Send + 'static>> {
        let proxy = self.proxy.clone();
        let (guard, conflicting_length) = RequestGuard::begin(self.state.clone());
        let down = Downstream {
            peer: self.peer,
            tls: self.tls,
            conflicting_length,
        };
        Box::pin(async move {
            // The request stays in the in-flight registry until its body is written out.
            let (resp, inflight, pending) = proxy.handle(req, down).await;
            let pending = pending.map(|entry| guard.log_when_sent(entry));
            resp.map(|body| Guarded::new(body, (guard, inflight, pending)))
        })
    }

    fn state(&self) -> &ConnState {
        &self.state
    }
}

/// hyper's HTTP/1 server settings, made for each served stretch of a connection (a few stores) rather than
/// kept in every parked connection.
fn http1_builder(limits: &Limits) -> hyper::server::conn::http1::Builder {
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
    builder
}

/// What an HTTP/1 connection buffers towards its client before it stops reading the backend (see
/// `upstream::BACKEND_READ_BUFFER`), in both HTTP/1 servers. Also hyper's read buffer's bound, so never below
/// the request-head limit.
const CLIENT_WRITE_BUFFER: usize = 64 * 1024;
