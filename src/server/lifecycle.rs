//! The life of a connection once accepted: HTTP/1 is served by the proxy's own engine (`h1`), or by hyper for
//! the requests the engine leaves to it, while requests come; parked (every buffer dropped) while idle; and
//! asked to finish on shutdown. HTTP/2 is driven until it ends, its watchdog fires or shutdown asks for a
//! GOAWAY.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::gate::Gated;
use super::h1::{self, Handed};
use super::timeouts::{idle_for, stopped, watchdog, ConnState, PhaseLimits, TimedIo};
use super::Handler;
use crate::config::{Config, Timeouts};
use crate::rt::clock::instant_at;

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

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What hyper's HTTP/1 server (with upgrades) needs of the service a connection is served with.
pub(super) trait Http1Service:
    hyper::service::HttpService<
        Incoming,
        Future: Send + 'static,
        ResBody: Send + 'static + http_body::Body<Data: Send, Error: Into<BoxError>>,
        Error: Into<BoxError>,
    > + Clone
    + Unpin
    + Send
    + 'static
{
}

impl<S> Http1Service for S where
    S: hyper::service::HttpService<
            Incoming,
            Future: Send + 'static,
            ResBody: Send + 'static + http_body::Body<Data: Send, Error: Into<BoxError>>,
            Error: Into<BoxError>,
        > + Clone
        + Unpin
        + Send
        + 'static
{
}

/// HTTP/1: serve with hyper while requests come, park while the connection is idle, repeat.
///
/// This future is what a parked connection holds, so it keeps only the socket, the service and references:
/// hyper's connection, the served stretch's watchdog and its parking timer live in [`serve_stretch`]'s box,
/// which exists only while requests come, and the first bytes after a pause are read into a buffer on the
/// stack of the poll that finds them.
pub(super) async fn serve_http1<IO, S>(
    slot: &mut Option<TimedIo<IO>>,
    handler: &Handler,
    service: &S,
    metrics: &crate::observe::metrics::Metrics,
    config: &Config,
    stop: &mut watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Http1Service,
{
    let _open = Http1Open::new();
    let state = handler.state();
    while let Some(io) = slot.as_mut() {
        if io.prefix.is_empty() {
            // Parked (or nothing sent yet): hold no more than the socket until bytes arrive.
            let counted =
                (state.requests.load(Ordering::Acquire) > 0).then(|| metrics.connection_parked());
            let read = parked(&mut io.inner, state, &config.timeouts, stop).await;
            drop(counted);
            match read {
                Some(first) => {
                    // Seen now, so the head timer starts with these bytes and the parking timer stops.
                    io.saw(&first);
                    io.prefix = first;
                    io.prefix_scanned = true;
                }
                None => return,
            }
        }
        // The engine of our own first; what it does not take, hyper serves. Boxed: a parked connection's
        // future does not carry the engine's state.
        let handle = |req| handler.call(req);
        let limits = (&config.timeouts, &config.limits, park_after());
        match Box::pin(h1::serve(io, state, handle, limits, stop)).await {
            Handed::Closed => return,
            Handed::Idle => continue,
            Handed::Hyper => {}
            Handed::Upgraded(handover) => {
                // The connection is the tunnel's now (tracked by the proxy's tunnel count, as with hyper).
                if let Some(io) = slot.take() {
                    let _ = handover.0.send(Box::new(io));
                }
                return;
            }
        }
        let Some(io) = slot.take() else { return };
        *slot = Box::pin(serve_stretch(io, service.clone(), state, config, stop)).await;
    }
}

/// A parked connection's wait: its first bytes (see [`first_bytes`]), or `None` when it closed, its timeout
/// passed (the head timeout before a first request, the idle timeout after one) or shutdown began.
async fn parked<IO: AsyncRead + Unpin>(
    io: &mut IO,
    state: &ConnState,
    timeouts: &Timeouts,
    stop: &mut watch::Receiver<bool>,
) -> Option<Bytes> {
    // The watchdog's limits; nothing moves the connection's phase while it is parked, so one deadline holds
    // for the whole wait.
    let limit = PhaseLimits::new(timeouts, false).now(state);
    let deadline =
        limit.map(|limit| state.since.load(Ordering::Relaxed) + limit.as_millis() as u64);
    let timer = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(instant_at(deadline)).await,
            None => std::future::pending().await,
        }
    };
    if *stop.borrow_and_update() {
        return None;
    }
    tokio::select! {
        read = first_bytes(io) => read,
        () = timer => None,
        // The one change there is, shutdown (or the server gone); smaller than `wait_for`'s future.
        _ = stop.changed() => None,
    }
}

/// The first bytes a parked connection receives, read into a buffer that lives only during the poll that
/// finds them (a parked connection's future holds no buffer); `None` at the end of the stream or on an error.
async fn first_bytes<IO: AsyncRead + Unpin>(io: &mut IO) -> Option<Bytes> {
    std::future::poll_fn(|cx| {
        let mut buf = [0u8; 512];
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(&mut *io).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                Poll::Ready(Some(Bytes::copy_from_slice(read.filled())))
            }
            Poll::Ready(_) => Poll::Ready(None),
        }
    })
    .await
}

/// Serve requests with hyper until the connection has been idle long enough to park (the socket comes back,
/// with whatever hyper read but did not use as its prefix) or ends (`None`: closed, timed out, upgraded,
/// stopped).
async fn serve_stretch<IO, S>(
    io: TimedIo<IO>,
    service: S,
    state: &ConnState,
    config: &Config,
    stop: &mut watch::Receiver<bool>,
) -> Option<TimedIo<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Http1Service,
{
    let mut watchdog = pin!(watchdog(state, &config.timeouts, false));
    // Unpin (so it can be taken apart when parked), and inside this stretch's box already.
    let mut conn = super::http1_builder(&config.limits)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let event = {
        // The timers and the shutdown signal are polled only when one of them fired (see `gate`), not on
        // every socket event of the connection.
        let aux = pin!(async {
            tokio::select! {
                biased;
                _ = &mut watchdog => Aux::Watchdog,
                _ = stopped(stop) => Aux::Stop,
                () = idle_for(state, park_after()) => Aux::Park,
            }
        });
        let mut aux = Gated::new(aux);
        tokio::select! {
            biased;
            _ = Pin::new(&mut conn) => return None,
            event = &mut aux => event,
        }
    };
    let parked_at = match event {
        Aux::Watchdog => return None,
        Aux::Stop => {
            // Finish the request in flight (the watchdog still applies), then close.
            Pin::new(&mut conn).graceful_shutdown();
            tokio::select! {
                _ = Pin::new(&mut conn) => {}
                _ = &mut watchdog => {}
            }
            return None;
        }
        Aux::Park => {
            state.parking.store(true, Ordering::Release);
            let parked_at = state.requests.load(Ordering::Acquire);
            Pin::new(&mut conn).graceful_shutdown();
            parked_at
        }
    };
    // hyper lets go of an idle connection at once; a request that slipped in is answered first.
    let finished = tokio::select! {
        finished = Pin::new(&mut conn) => finished.is_ok(),
        _ = &mut watchdog => false,
    };
    state.parking.store(false, Ordering::Release);
    let slipped_in = state.requests.load(Ordering::Acquire) != parked_at;
    if !finished || slipped_in {
        // That request was answered with `Connection: close` (or the connection was upgraded).
        return None;
    }
    // Upgraded: the tunnel owns the socket now.
    let parts = conn.into_parts()?;
    let mut io = parts.io.into_inner();
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
    Some(io)
}

/// What ended a served stretch of an HTTP/1 connection, other than the connection itself.
enum Aux {
    Watchdog,
    Stop,
    Park,
}

/// How long an HTTP/2 connection gets to deliver its GOAWAY after the watchdog fired.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// Run an HTTP/2 connection until it ends or the watchdog fires; on shutdown ask it to finish gracefully.
/// (HTTP/1 connections are run by [`serve_http1`], which also parks them.)
///
/// A watchdog expiry first asks the connection to finish (GOAWAY, so a client about to reuse the connection
/// learns it must not, instead of seeing a reset) and drops it after a short grace.
pub(super) async fn drive<C: Future>(
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
