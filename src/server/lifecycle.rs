//! The life of a connection once accepted: HTTP/1 is served with hyper while requests come, parked (hyper's
//! connection and buffers dropped) while idle, and asked to finish on shutdown; HTTP/2 is driven until it ends,
//! its watchdog fires or shutdown asks for a GOAWAY.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;

use super::gate::Gated;
use super::timeouts::{ConnState, Phase, TimedIo};
use crate::rt::clock::{instant_at, now_ms};

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
pub(super) async fn serve_http1<IO, S>(
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
        if state.phase() != Phase::Idle || state.requests.load(Ordering::Acquire) == 0 {
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
