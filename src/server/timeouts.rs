//! Where a connection is in its request cycle ([`ConnState`], [`Phase`]) and the client timeouts that follow
//! from it: [`watchdog`] enforces PlanB's with Go's meanings (idle between requests, read-header from accept
//! or from the first byte of a later head, write from the end of the head until the response is written);
//! [`TimedIo`] notes the phases from the bytes that pass, scans request heads and counts the bytes written
//! (Hipache's access-log byte count).

use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::config::Timeouts;
use crate::observe::access_log::PendingEntry;
use crate::rt::clock::{instant_at, now_ms};
use crate::server::head_scan::HeadScan;

/// Where a connection is in its request cycle; each phase has its own client timeout (see [`watchdog`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Phase {
    /// Between requests (or before the first byte): the idle timeout, or the head timeout before any request.
    Idle = 0,
    /// Reading a request head: the read-header timeout.
    Head = 1,
    /// A request is in flight: the write timeout.
    Busy = 2,
}

impl Phase {
    fn from_u8(value: u8) -> Phase {
        match value {
            0 => Phase::Idle,
            1 => Phase::Head,
            _ => Phase::Busy,
        }
    }
}

/// Where a connection is in its request cycle, and since when (milliseconds since process start).
pub(super) struct ConnState {
    /// A [`Phase`], kept as its `u8` so that the socket wrapper and the watchdog share it without a lock.
    pub(super) phase: AtomicU8,
    pub(super) since: AtomicU64,
    pub(super) in_flight: AtomicUsize,
    /// Request heads read so far, and the number of the last one with both Content-Length and
    /// Transfer-Encoding (0: none); matched against `requests` so pipelined heads are told apart.
    pub(super) heads: AtomicU64,
    pub(super) conflict_head: AtomicU64,
    pub(super) requests: AtomicU64,
    /// Signalled when the last request in flight finishes, for the parking timer.
    pub(super) went_idle: Notify,
    /// hyper is being asked to let go of an idle connection: its shutdown of the socket must not reach it.
    pub(super) parking: AtomicBool,
    /// Bytes written on the client socket so far.
    pub(super) written: AtomicU64,
    /// Access-log records whose responses have been handed to hyper, with the `written` count at their
    /// request's start: written once hyper has flushed the socket (or the connection ends).
    pub(super) unsent_logs: std::sync::Mutex<Vec<(Box<PendingEntry>, u64)>>,
    /// `unsent_logs` may hold a record: set after a push, taken by `flush_logs`.
    pub(super) logs_waiting: AtomicBool,
}

impl ConnState {
    /// Write the records waiting for their responses to leave, each with the bytes written since its request
    /// began.
    pub(super) fn flush_logs(&self) {
        // Most connections never hold a record (only Hipache's log counts socket bytes): no lock for them.
        if !self.logs_waiting.swap(false, Ordering::AcqRel) {
            return;
        }
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
pub(super) struct LogWhenSent {
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
            self.state.logs_waiting.store(true, Ordering::Release);
        }
    }
}

impl ConnState {
    pub(super) fn new() -> ConnState {
        ConnState {
            phase: AtomicU8::new(Phase::Idle as u8),
            since: AtomicU64::new(now_ms()),
            in_flight: AtomicUsize::new(0),
            heads: AtomicU64::new(0),
            conflict_head: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            went_idle: Notify::new(),
            parking: AtomicBool::new(false),
            written: AtomicU64::new(0),
            unsent_logs: std::sync::Mutex::new(Vec::new()),
            logs_waiting: AtomicBool::new(false),
        }
    }

    fn enter(&self, phase: Phase) {
        self.since.store(now_ms(), Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// The phase the connection is in now.
    pub(super) fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }
}

/// Marks a request as in flight from the moment its head was read until its response body is done.
pub(super) struct RequestGuard(Arc<ConnState>, u64);

impl RequestGuard {
    /// Hold `entry` until this request's response has been written out (see [`LogWhenSent`]).
    pub(super) fn log_when_sent(&self, entry: Box<PendingEntry>) -> LogWhenSent {
        LogWhenSent {
            entry: Some(entry),
            from: self.1,
            state: self.0.clone(),
        }
    }

    /// Also says whether this request's head had both Content-Length and Transfer-Encoding.
    pub(super) fn begin(state: Arc<ConnState>) -> (RequestGuard, bool) {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        state.enter(Phase::Busy);
        let number = state.requests.fetch_add(1, Ordering::AcqRel) + 1;
        let conflicting = state.conflict_head.load(Ordering::Acquire) == number;
        let written = state.written.load(Ordering::Acquire);
        (RequestGuard(state, written), conflicting)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.enter(Phase::Idle);
            self.0.went_idle.notify_one();
        }
    }
}

/// The client timeout of each phase, with Go's meanings (`None`: no limit).
pub(super) struct PhaseLimits {
    /// A request head: the read-header timeout, or Go's ReadTimeout when that is shorter.
    head: Duration,
    idle: Option<Duration>,
    write: Option<Duration>,
}

impl PhaseLimits {
    /// An HTTP/2 connection has no "reading a head" phase the proxy can see (frames of several streams
    /// interleave), so while no request is in flight it gets the idle limit, or the head limit when no idle
    /// limit is set: an h2 connection that never sends a complete request is closed like a slow HTTP/1 head.
    pub(super) fn new(t: &Timeouts, h2: bool) -> PhaseLimits {
        let head = match t.client_read {
            Some(read) => read.min(t.client_read_header),
            None => t.client_read_header,
        };
        let idle = match h2 {
            true => Some(t.client_idle.unwrap_or(head)),
            false => t.client_idle,
        };
        PhaseLimits {
            head,
            idle,
            write: t.client_write,
        }
    }

    /// The limit of the phase the connection is in now, counted from `state.since`.
    pub(super) fn now(&self, state: &ConnState) -> Option<Duration> {
        match state.phase() {
            // Nothing received yet: the head timeout runs from accept, so a client that never sends a byte is
            // closed like a slow one (it would otherwise hold the socket for as long as it likes).
            Phase::Idle if state.requests.load(Ordering::Acquire) == 0 => Some(self.head),
            Phase::Idle => self.idle,
            Phase::Head => Some(self.head),
            Phase::Busy => self.write,
        }
    }
}

/// Resolves when the connection has overstayed the limit of its current phase ([`PhaseLimits`]).
///
/// It borrows what it reads, so its future is a timer and little else: an HTTP/1 connection runs one only
/// while it is served (a parked connection waits on one deadline of the same limits instead).
pub(super) async fn watchdog(state: &ConnState, t: &Timeouts, h2: bool) {
    let limits = PhaseLimits::new(t, h2);
    let recheck = [Some(limits.head), limits.idle, limits.write]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(limits.head);
    loop {
        let since = state.since.load(Ordering::Relaxed);
        match limits.now(state) {
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
pub(super) struct TimedIo<IO> {
    pub(super) inner: IO,
    pub(super) state: Arc<ConnState>,
    pub(super) scan: Option<HeadScan>,
    /// Bytes read while the connection was parked (or left in hyper's buffer when it was parked), handed
    /// out before reading the socket again.
    pub(super) prefix: Bytes,
    /// `prefix` came back from hyper's buffer and went through the head scan already.
    pub(super) prefix_scanned: bool,
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
            if this.prefix.is_empty() {
                // An emptied `Bytes` still holds its allocation, for as long as the connection lives.
                this.prefix = Bytes::new();
            }
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
    pub(super) fn saw(&mut self, new: &[u8]) {
        if new.is_empty() || self.scan.is_none() {
            return;
        }
        if self.saw_bytes() {
            if let Some(scan) = self.scan.as_mut() {
                scan.start();
            }
        }
        if let Some(conflict) = self.scan.as_mut().and_then(|scan| scan.feed(new)) {
            let head = self.state.heads.fetch_add(1, Ordering::AcqRel) + 1;
            if conflict {
                self.state.conflict_head.store(head, Ordering::Release);
            }
        }
    }

    /// Bytes from the client, without scanning them (the proxy's own engine reads heads whole): the first of
    /// a request head starts the head timer. Returns whether a new head began.
    pub(super) fn saw_bytes(&mut self) -> bool {
        if self.state.phase() != Phase::Idle {
            return false;
        }
        if self.state.requests.load(Ordering::Acquire) == 0 {
            // The first head's clock started at accept: a trickle of bytes does not restart it.
            self.state.phase.store(Phase::Head as u8, Ordering::Release);
        } else {
            self.state.enter(Phase::Head);
        }
        true
    }

    /// Hand what is buffered to hyper: `prefix` is scanned again from a fresh start as hyper reads it, and the
    /// head count is brought level with the requests begun, so that the next head scanned is numbered as the
    /// request hyper will begin for it (the engine's own heads were never counted).
    pub(super) fn rescan(&mut self, prefix: Bytes) {
        self.prefix = prefix;
        self.prefix_scanned = false;
        if let Some(scan) = self.scan.as_mut() {
            scan.start();
        }
        let begun = self.state.requests.load(Ordering::Acquire);
        self.state.heads.store(begun, Ordering::Release);
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

/// Resolves when the connection has served a request and been idle for `after` since.
///
/// One timer for the connection's life, and no timer work per request: the timer is only moved later when it
/// fires, and while a request is in flight the wait is on `went_idle` instead.
pub(super) async fn idle_for(state: &ConnState, after: Duration) {
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

/// Resolves once shutdown has begun (at once when it already has).
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}
