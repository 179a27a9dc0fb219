//! The proxy's own HTTP/1 server, for the requests most traffic is made of: HTTP/1.1 or 1.0, without a body
//! or with one framed by a single `Content-Length` or by `Transfer-Encoding: chunked`, an upgrade only
//! without a body, no expectation but `100-continue`. It reads the head into one buffer, builds the request from slices of it,
//! runs the same [`Handler`] hyper's server runs, reads the request's body as the request takes it
//! (`upload`), and writes the response head and body itself in as few writes as the body allows (head and a
//! body that is already there go out in one `writev`).
//!
//! Whatever it does not take goes to hyper with its bytes untouched: the connection's buffered bytes become the
//! socket's prefix and `lifecycle` serves it with hyper from there, so every refusal (400, 431, 414, the HTTP/2
//! preface, `Content-Length` with `Transfer-Encoding`), other expectations and WebSocket upgrades keep hyper's
//! behaviour byte for byte. The responses it writes follow hyper's server encoding (`respond`), checked
//! against hyper by `differential`.
//!
//! Between requests it keeps its read buffer for the parking delay (50 ms, 5 ms with many connections open),
//! then gives the connection back to `lifecycle`'s parked wait, which holds only the socket.

use std::future::Future;
use std::io::IoSlice;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::gate::Gated;
use super::timeouts::{idle_for, stopped, watchdog, ConnState, TimedIo};
#[cfg(doc)]
use super::Handler;
use super::CLIENT_WRITE_BUFFER;
use crate::body::{pipe, ClientBody};
use crate::config::{Limits, Timeouts};
use crate::proxy::upgrade::{PendingUpgrade, UpgradedIo};
use crate::upstream::{BodyDecoder, Chunked};
use parse::{BodyFraming, Parsed};
use respond::{BodyLength, Framing};
use upload::{Settled, Upload};

mod date;
#[cfg(test)]
mod differential;
#[doc(hidden)]
pub mod fuzzing;
mod parse;
mod respond;
mod upload;

/// How the engine left a connection.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Handed {
    /// Closed (the client asked, a timeout, shutdown, an error): drop the socket.
    Closed,
    /// Idle between requests, nothing buffered: park it.
    Idle,
    /// A request the engine does not take; its bytes are the socket's prefix for hyper.
    Hyper,
    /// Upgraded (a `101` was written): the socket, with what the client sent after its request as its prefix,
    /// goes to the request that asked.
    Upgraded(Handover),
}

/// Where an upgraded connection goes (the proxy's WebSocket tunnel, see `proxy::upgrade`).
pub(super) struct Handover(pub(super) tokio::sync::oneshot::Sender<UpgradedIo>);

impl std::fmt::Debug for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handover")
    }
}

impl PartialEq for Handover {
    fn eq(&self, _: &Handover) -> bool {
        true
    }
}

impl Eq for Handover {}

/// Serve requests from the bytes in `io.prefix` on, until the connection has been idle for the parking delay
/// (`Handed::Idle`), closes, or meets a request for hyper.
///
/// `handle` is the connection's [`Handler`] (`Handler::call`); tests give their own. `limits` are the client
/// timeouts, the head limits and how long an idle connection keeps its buffer before it is parked.
pub(super) async fn serve<IO, F, Fut, B>(
    io: &mut TimedIo<IO>,
    state: &ConnState,
    mut handle: F,
    (timeouts, limits, park_after): (&Timeouts, &Limits, Duration),
    stop: &mut watch::Receiver<bool>,
) -> Handed
where
    IO: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(Request<ClientBody>) -> Fut,
    Fut: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + Unpin,
{
    // One of each timer for the whole stretch, polled only when it fired (see `gate`): not a timer per request.
    let watchdog = pin!(watchdog(state, timeouts, false));
    let mut watchdog = Gated::new(watchdog);
    let idle = pin!(idle_for(state, park_after));
    let mut idle = Gated::new(idle);
    let mut stop_rx = stop.clone();
    let stopping = pin!(stopped(&mut stop_rx));
    let mut stopping = Gated::new(stopping);
    let mut buf = BytesMut::from(std::mem::take(&mut io.prefix));
    loop {
        let head = loop {
            // Nothing buffered (the usual case after a response) is a partial head without parsing it.
            let parsed = match buf.is_empty() {
                true => Parsed::Partial,
                false => parse::head(&buf, limits.max_headers, limits.max_header_bytes),
            };
            match parsed {
                Parsed::Request(head) => break head,
                Parsed::Partial if buf.is_empty() => {
                    // Between requests: the next bytes, or park once idle long enough.
                    buf.reserve(READ_SIZE);
                    tokio::select! {
                        biased;
                        read = read_more(io, &mut buf) => {
                            if !matches!(read, Ok(n) if n > 0) {
                                return Handed::Closed;
                            }
                        }
                        _ = &mut watchdog => return Handed::Closed,
                        _ = &mut stopping => return Handed::Closed,
                        _ = &mut idle => return Handed::Idle,
                    }
                }
                Parsed::Partial if buf.len() < limits.max_header_bytes => {
                    buf.reserve(READ_SIZE);
                    // A first head is finished even during shutdown (hyper's rule); a later one is not begun.
                    let later = state.requests.load(Ordering::Acquire) > 0;
                    tokio::select! {
                        biased;
                        read = read_more(io, &mut buf) => {
                            if !matches!(read, Ok(n) if n > 0) {
                                // hyper sees the same end after the same bytes.
                                return to_hyper(io, buf, Bytes::new());
                            }
                        }
                        _ = &mut watchdog => return Handed::Closed,
                        _ = &mut stopping, if later => return Handed::Closed,
                    }
                }
                Parsed::Partial | Parsed::Other => return to_hyper(io, buf, Bytes::new()),
            }
        };
        let raw = buf.split_to(head.len).freeze();
        // A body's length when known, and its decoder.
        let framed = match head.body {
            BodyFraming::None => None,
            BodyFraming::Length(len) => Some((Some(len), BodyDecoder::Length(len))),
            BodyFraming::Chunked => Some((None, BodyDecoder::Chunked(Chunked::default()))),
        };
        let (body, mut upload) = match framed {
            None => (ClientBody::Empty, None),
            Some((length, decoder)) => {
                let (body, feed) = pipe::pipe(length);
                let upload = Upload::new(feed, decoder, head.expect_continue);
                (ClientBody::Piped(body), Some(upload))
            }
        };
        let Some(mut request) = head.request(&raw, body) else {
            return to_hyper(io, buf, raw);
        };
        let head_request = request.method() == Method::HEAD;
        let mut handover = None;
        if head.upgrade {
            let (pending, tx) = PendingUpgrade::new();
            request.extensions_mut().insert(pending);
            handover = Some(Handover(tx));
        }
        let answer = handle(request);
        // hyper drops a request whose client closed its side while it waits (no half-close).
        let response = tokio::select! {
            biased;
            response = answering(answer, io, &mut buf, &mut upload) => match response {
                Some(response) => response,
                None => return Handed::Closed,
            },
            _ = &mut watchdog => return Handed::Closed,
        };
        // A body still being read may end yet; one left with more to come than is buffered is said to close the
        // connection (hyper's rule).
        let unread = upload.as_mut().is_some_and(|u| {
            u.responding();
            u.settled(&mut buf) == Settled::Unread
        });
        let keep_alive = !head.close && !*stop.borrow() && !unread;
        // hyper's rule: a `101` to a request that asked for an upgrade hands the connection over; any other
        // answer leaves it an HTTP connection.
        let handover = handover.filter(|_| response.status() == StatusCode::SWITCHING_PROTOCOLS);
        let written = tokio::select! {
            biased;
            written = respond(io, &mut buf, &mut upload, response, (head_request, head.http10), keep_alive) => written,
            _ = &mut watchdog => return Handed::Closed,
        };
        if let (Ok(_), Some(handover)) = (&written, handover) {
            io.rescan(buf.freeze());
            // What follows is the upgraded protocol's, not HTTP: no head scan.
            io.scan = None;
            return Handed::Upgraded(handover);
        }
        match written {
            Ok(true)
                if upload
                    .as_mut()
                    .is_none_or(|u| u.settled(&mut buf) == Settled::Read) => {}
            // A body not read to its end ends the connection, whatever the head said (hyper's rule too).
            Ok(_) => {
                let _ = io.shutdown().await;
                if upload
                    .as_mut()
                    .is_some_and(|u| u.settled(&mut buf) != Settled::Read)
                {
                    linger(io, buf).await;
                }
                return Handed::Closed;
            }
            Err(Aborted) => return Handed::Closed,
        }
    }
}

/// How long a closing connection may keep discarding a body nobody reads, and how much of it.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// After the answer to a request whose body was not read to its end, and the write side shut: discard what the
/// client still sends (up to [`LINGER_TIME`] and [`LINGER_BYTES`]) before closing. Closing a socket with unread
/// bytes makes the kernel answer with a reset, which can reach the client before it has read the answer and
/// make it lose it (a `413` or `400` for an upload it is still sending). Go's server and nginx linger the same
/// way.
async fn linger<IO: AsyncRead + Unpin>(io: &mut TimedIo<IO>, mut buf: BytesMut) {
    let discard = async {
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            buf.clear();
            buf.reserve(READ_SIZE * 4);
            match read_more(io, &mut buf).await {
                Ok(n) if n > 0 => discarded += n,
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, discard).await;
}

/// Wait for the request's answer while its body is read; `None` when the client went away first.
async fn answering<IO, Fut, B>(
    answer: Fut,
    io: &mut TimedIo<IO>,
    buf: &mut BytesMut,
    upload: &mut Option<Upload>,
) -> Option<Response<B>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    Fut: Future<Output = Response<B>>,
{
    let mut answer = pin!(answer);
    std::future::poll_fn(|cx| {
        // The body first, so that a frame it reads is there when the request looks.
        let reading = still_reading(upload, io, buf, cx);
        if let Poll::Ready(response) = answer.as_mut().poll(cx) {
            return Poll::Ready(Some(response));
        }
        match !reading && poll_gone(io, buf, cx).is_ready() {
            true => Poll::Ready(None),
            false => Poll::Pending,
        }
    })
    .await
}

/// How much room a read gets in the connection's buffer.
const READ_SIZE: usize = 4096;

/// Give the connection to hyper: what was read and not used (`head` first, when a head was taken apart)
/// becomes the socket's prefix, scanned again as hyper reads it.
fn to_hyper<IO>(io: &mut TimedIo<IO>, rest: BytesMut, head: Bytes) -> Handed {
    io.rescan(match head.is_empty() {
        true => rest.freeze(),
        false => [&head[..], &rest[..]].concat().into(),
    });
    Handed::Hyper
}

/// Read more of the client's bytes into `buf`, past the head scan (the engine parses heads whole); `Ok(0)` at
/// the end of the stream.
async fn read_more<IO: AsyncRead + Unpin>(
    io: &mut TimedIo<IO>,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| poll_read_more(io, buf, cx)).await
}

fn poll_read_more<IO: AsyncRead + Unpin>(
    io: &mut TimedIo<IO>,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    let polled = tokio_util::io::poll_read_buf(Pin::new(&mut io.inner), cx, buf);
    if let Poll::Ready(Ok(n)) = polled {
        if n > 0 {
            io.saw_bytes();
        }
    }
    polled
}

/// Read the request's body as far as it is wanted (see `upload`). `true` unless there is no body or it has
/// been read to its end: until then the socket's next bytes are not a new request's, so they cannot tell that
/// the client went away.
fn still_reading<IO: AsyncRead + AsyncWrite + Unpin>(
    upload: &mut Option<Upload>,
    io: &mut TimedIo<IO>,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> bool {
    upload
        .as_mut()
        .is_some_and(|u| u.poll(io, buf, cx).is_pending() || !u.done())
}

/// Ready when the client closed its side (or its socket failed) while nothing of its next request is
/// buffered; bytes it sends meanwhile are kept in `buf` for the next request.
fn poll_gone<IO: AsyncRead + Unpin>(
    io: &mut TimedIo<IO>,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<()> {
    if !buf.is_empty() {
        return Poll::Pending;
    }
    buf.reserve(1024);
    match poll_read_more(io, buf, cx) {
        Poll::Ready(Ok(n)) if n > 0 => Poll::Pending,
        Poll::Ready(_) => Poll::Ready(()),
        Poll::Pending => Poll::Pending,
    }
}

/// The response could not be written whole: the connection is dropped.
#[derive(Debug)]
struct Aborted;

/// Write a response to a request (`HEAD`, HTTP/1.0: see `respond::head`); `Ok(true)` when the connection may
/// serve another request.
async fn respond<IO, B>(
    io: &mut TimedIo<IO>,
    buf: &mut BytesMut,
    upload: &mut Option<Upload>,
    response: Response<B>,
    request: (bool, bool),
    keep_alive: bool,
) -> Result<bool, Aborted>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
{
    let (mut parts, body) = response.into_parts();
    let reason = parts.extensions.remove::<hyper::ext::ReasonPhrase>();
    let length = match body.is_end_stream() {
        true => None,
        false => Some(match body.size_hint().exact() {
            Some(len) => BodyLength::Known(len),
            None => BodyLength::Unknown,
        }),
    };
    let mut head = Vec::new();
    let encoded = respond::head(
        &mut parts,
        reason.as_ref().map(|r| r.as_bytes()),
        length,
        request,
        keep_alive,
        &mut head,
    )
    .map_err(|_| Aborted)?;
    let mut out = Outgoing {
        queue: std::collections::VecDeque::with_capacity(4),
        queued: 0,
        framing: encoded.framing,
        body: Some(body),
        finished: false,
    };
    out.push(Bytes::from(head));
    if length.is_none() || encoded.framing == Framing::Length(0) {
        // Nothing to write: the body is dropped unread, as hyper drops it.
        out.end(false)?;
    }
    let whole = std::future::poll_fn(|cx| out.poll(io, buf, upload, cx)).await?;
    // Flushing the socket also writes the access-log records of responses that left whole.
    io.flush().await.map_err(|_| Aborted)?;
    Ok(whole && !encoded.last)
}

/// A response on its way out: what is queued, and the body still to read.
struct Outgoing<B> {
    queue: std::collections::VecDeque<Bytes>,
    queued: usize,
    framing: Framing,
    /// `None` once the body is done (or has none to write: it is dropped unread, as hyper drops it).
    body: Option<B>,
    /// The body ended as its framing says (`false` for a body that ended short of its length).
    finished: bool,
}

impl<B> Outgoing<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// Write until the response is out; `Ok(false)` when it ended short and the connection must close.
    fn poll<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut TimedIo<IO>,
        buf: &mut BytesMut,
        upload: &mut Option<Upload>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<bool, Aborted>> {
        // The request's body keeps being read while the response goes out (a backend may answer before an
        // upload ends, and stream both ways).
        let reading = still_reading(upload, io, buf, cx);
        loop {
            // Gather what the body has ready, so the head and a body already there leave in one write.
            while let Some(body) = self.body.as_mut() {
                if self.queued >= CLIENT_WRITE_BUFFER {
                    break;
                }
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        let Ok(data) = frame.into_data() else {
                            // Trailers: not sent (the request did not offer `TE: trailers`); the body ends.
                            if let Err(aborted) = self.end(false) {
                                return Poll::Ready(Err(aborted));
                            }
                            continue;
                        };
                        let empty = data.is_empty();
                        self.data(data);
                        if self.body.as_ref().is_some_and(|b| b.is_end_stream()) {
                            if let Err(aborted) = self.end(!empty) {
                                return Poll::Ready(Err(aborted));
                            }
                        }
                    }
                    Poll::Ready(Some(Err(_))) => return Poll::Ready(Err(Aborted)),
                    Poll::Ready(None) => {
                        if let Err(aborted) = self.end(false) {
                            return Poll::Ready(Err(aborted));
                        }
                    }
                    Poll::Pending => {
                        if self.queue.is_empty() && !reading && poll_gone(io, buf, cx).is_ready() {
                            return Poll::Ready(Err(Aborted));
                        }
                        break;
                    }
                }
            }
            if self.queue.is_empty() {
                return match self.body {
                    Some(_) => Poll::Pending,
                    None => Poll::Ready(Ok(self.finished)),
                };
            }
            let mut slices = [IoSlice::new(&[]); 8];
            let count = self.queue.len().min(slices.len());
            for (slice, bytes) in slices.iter_mut().zip(self.queue.iter()) {
                *slice = IoSlice::new(bytes);
            }
            let written = match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Err(Aborted)),
                Poll::Ready(Ok(n)) => n,
                Poll::Pending => return Poll::Pending,
            };
            self.advance(written);
        }
    }

    fn push(&mut self, bytes: Bytes) {
        self.queued += bytes.len();
        self.queue.push_back(bytes);
    }

    fn advance(&mut self, mut written: usize) {
        self.queued -= written;
        while written > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if front.len() > written {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.queue.pop_front();
        }
    }

    /// Queue one frame of data in the response's framing.
    fn data(&mut self, mut data: Bytes) {
        if data.is_empty() {
            return;
        }
        match &mut self.framing {
            Framing::Length(remaining) => {
                if (data.len() as u64) >= *remaining {
                    // What is owed and no more; the rest of the body is not read (hyper's rule).
                    data.truncate(*remaining as usize);
                    *remaining = 0;
                    self.push(data);
                    self.body = None;
                    self.finished = true;
                    return;
                }
                *remaining -= data.len() as u64;
                self.push(data);
            }
            Framing::Chunked => {
                self.push(crate::upstream::chunk_size_line(data.len()));
                self.push(data);
                self.push(Bytes::from_static(b"\r\n"));
            }
            Framing::Close => self.push(data),
        }
    }

    /// The body ended: close the framing. A body short of its length is written and the connection closed
    /// when its last frame carried data (`with_data`), and aborted unwritten otherwise: hyper's two cases.
    fn end(&mut self, with_data: bool) -> Result<(), Aborted> {
        self.body = None;
        self.finished = match self.framing {
            Framing::Length(0) => true,
            Framing::Length(_) if with_data => false,
            Framing::Length(_) => return Err(Aborted),
            Framing::Chunked => {
                self.push(Bytes::from_static(crate::upstream::LAST_CHUNK));
                true
            }
            // A body until close is whole when it ends, and the connection then closes (`Encoded::last`).
            Framing::Close => true,
        };
        Ok(())
    }
}
