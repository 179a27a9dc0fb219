//! Body types: what goes to a backend ([`RequestBody`]: the client's body streamed, or held in memory when a
//! guard had to read it first), and a guard that notices when a response has been written to the end. What
//! goes back to a client is the proxy's `ProxyBody`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

pub mod pipe;
pub mod tee;

pub use pipe::{Feed, Piped};
pub use tee::{Copied, CopyReceiver, Tee};

/// A client's request body as the server read it: hyper's, one the proxy's own HTTP/1 server feeds as it
/// reads it (`crate::server`'s `h1`, see [`pipe`]), or none at all.
pub enum ClientBody {
    Hyper(Incoming),
    Piped(Piped),
    Empty,
}

impl From<Incoming> for ClientBody {
    fn from(body: Incoming) -> ClientBody {
        ClientBody::Hyper(body)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            ClientBody::Hyper(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(ClientBodyError::Hyper),
            ClientBody::Piped(body) => Pin::new(body).poll_frame(cx),
            ClientBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(body) => body.is_end_stream(),
            ClientBody::Piped(body) => body.is_end_stream(),
            ClientBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(body) => body.size_hint(),
            ClientBody::Piped(body) => body.size_hint(),
            ClientBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// What the proxy sends to a backend.
pub enum RequestBody {
    /// The client's body, streamed frame by frame as it arrives (every frontend without `sign_body`).
    Streaming(ClientBody),
    /// The same, noting when a frame last arrived (milliseconds of `crate::rt::clock::now_ms`), for a backend
    /// timeout that counts inactivity rather than the whole exchange (Hipache's `tcpTimeout`): a long upload
    /// that keeps moving is never cut.
    Watched(ClientBody, Arc<AtomicU64>),
    /// A body read whole before anything was sent (a guard with `sign_body` had to hash it). The frames are
    /// kept as they arrived, so the bytes are never copied: hashing reads them, sending hands them on.
    Buffered(Buffered),
    /// One of the above, copied as it goes for a mirror's shadows (see [`tee`]).
    Teed(Box<RequestBody>, Box<Tee>),
}

impl RequestBody {
    /// Copy this body for a mirror as it streams, up to `cap` bytes; the copy arrives on the receiver.
    pub fn teed(self, cap: usize) -> (RequestBody, CopyReceiver) {
        let (tee, copy) = Tee::new(&self.size_hint(), self.is_end_stream(), cap);
        match tee {
            Some(tee) => (RequestBody::Teed(Box::new(self), Box::new(tee)), copy),
            None => (self, copy),
        }
    }
}

/// The frames of a body read whole, and their total length.
#[derive(Debug, Default)]
pub struct Buffered {
    frames: VecDeque<Bytes>,
    len: u64,
}

impl Buffered {
    /// A body already in memory (a mirror's copy).
    pub fn from_bytes(body: Bytes) -> Buffered {
        let len = body.len() as u64;
        let mut frames = VecDeque::new();
        if !body.is_empty() {
            frames.push_back(body);
        }
        Buffered { frames, len }
    }

    /// Bytes in the body.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks not sent yet, in order.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        self.frames.iter().map(|b| b.as_ref())
    }
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub enum BufferError {
    /// It is longer than the limit (known from Content-Length, or found while reading).
    TooLarge,
    /// It did not arrive within the time allowed.
    Timeout,
    /// The client's connection or stream failed mid-body.
    Read(String),
}

/// Read `body` whole, at most `max` bytes, within `timeout`; `each` sees every chunk once as it arrives (to hash
/// it). Trailers are dropped: a buffered body is sent with a Content-Length, which leaves no place for them.
pub async fn buffer(
    body: ClientBody,
    max: u64,
    timeout: Duration,
    each: impl FnMut(&[u8]),
) -> Result<Buffered, BufferError> {
    if body.size_hint().lower() > max {
        return Err(BufferError::TooLarge);
    }
    tokio::time::timeout(timeout, read_frames(body, max, each))
        .await
        .map_err(|_| BufferError::Timeout)?
}

async fn read_frames(
    mut body: ClientBody,
    max: u64,
    mut each: impl FnMut(&[u8]),
) -> Result<Buffered, BufferError> {
    let mut buffered = Buffered::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BufferError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffered.len += data.len() as u64;
        if buffered.len > max {
            return Err(BufferError::TooLarge);
        }
        if !data.is_empty() {
            each(&data);
            buffered.frames.push_back(data);
        }
    }
    Ok(buffered)
}

/// The client's body failed while it was read: malformed framing, or the client went away mid-body. Its text
/// says so in the error log; the backend client counts any error of a [`RequestBody`] as the client's
/// (`UpstreamError::Client`), never the backend's.
#[derive(Debug)]
pub enum ClientBodyError {
    /// As hyper's server read it.
    Hyper(hyper::Error),
    /// As the proxy's own server read it: what was wrong, in hyper's words for the same fault.
    Framing(&'static str),
}

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientBodyError::Hyper(e) => write!(f, "client body: {e}"),
            ClientBodyError::Framing(why) => write!(f, "client body: {why}"),
        }
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientBodyError::Hyper(e) => Some(e),
            ClientBodyError::Framing(_) => None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            RequestBody::Streaming(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Watched(body, last) => {
                let polled = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(Some(Ok(_))) = &polled {
                    last.store(crate::rt::clock::now_ms(), Ordering::Relaxed);
                }
                polled
            }
            RequestBody::Buffered(b) => {
                let next = b.frames.pop_front().map(|data| {
                    b.len -= data.len() as u64;
                    Ok(Frame::data(data))
                });
                Poll::Ready(next)
            }
            RequestBody::Teed(inner, tee) => tee.poll(&mut **inner, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Streaming(body) | RequestBody::Watched(body, _) => body.is_end_stream(),
            RequestBody::Buffered(b) => b.frames.is_empty(),
            RequestBody::Teed(inner, _) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Streaming(body) | RequestBody::Watched(body, _) => body.size_hint(),
            RequestBody::Buffered(b) => SizeHint::with_exact(b.len),
            RequestBody::Teed(inner, _) => inner.size_hint(),
        }
    }
}

/// A body that holds a guard until it has been sent to the end or dropped.
pub struct Guarded<B, G> {
    body: B,
    guard: Option<G>,
}

impl<B, G> Guarded<B, G> {
    pub fn new(body: B, guard: G) -> Self {
        Guarded {
            body,
            guard: Some(guard),
        }
    }
}

impl<B: Body + Unpin, G: Unpin> Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
