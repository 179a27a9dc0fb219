//! An HTTP/1.1 client of the proxy's own for pooled backend connections.
//!
//! An exchange runs inside the task of the request it serves: the head is written as one buffer, the body is
//! sent as the client's side yields it, and the response head is read concurrently (a backend may answer before
//! the upload ends). The response body then owns the connection and reads it as the client side asks for data;
//! once the body has been read to its end, the bare socket goes back to the pool. So there is no connection
//! task, no dispatch channel, no header map built and read back on the way out, and an idle pooled connection
//! holds no buffer at all.
//!
//! Framing and strictness rules are in [`encode`] and [`decode`].

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response};
use http_body::{Body, Frame};
use tokio::io::AsyncWrite;

mod decode;
#[cfg(test)]
mod differential;
mod encode;
#[doc(hidden)]
pub mod fuzzing;

pub use decode::{Chunked, Decoded, Framing};
use encode::Encode;
pub use encode::{chunk_size_line, LAST_CHUNK};

use super::{BackendStream, Pool, UpstreamError, BACKEND_READ_BUFFER};
use crate::body::RequestBody;

/// Bytes asked of the socket per read. A response head must fit in [`BACKEND_READ_BUFFER`].
const READ_SIZE: usize = 8 * 1024;

/// Body bytes queued for the backend before the client's body is asked for more.
const MAX_QUEUED: usize = 64 * 1024;

/// Send `req` over `io` and read the response head. The body of the response keeps the connection and puts it
/// back in `pool` when it has been read to the end.
///
/// `reused`: `io` came from the pool. If such a connection turns out to have been closed under the request
/// before any answer came, a request without a body and with an idempotent method comes back as a [`Replay`],
/// to be sent again on a new connection (see [`replay`]).
pub fn exchange(
    io: BackendStream,
    req: Request<RequestBody>,
    pool: Pool,
    reused: bool,
) -> impl std::future::Future<
    Output = Result<Response<super::UpstreamBody>, (UpstreamError, Option<Replay>)>,
> {
    // Written before the exchange starts, so that its future holds only what the exchange needs (a larger
    // future costs its size in copies on every request).
    let mut head = BytesMut::with_capacity(512);
    let encode = encode::head(&req, &mut head);
    let head_request = req.method() == Method::HEAD;
    let replayable = reused && encode.is_none() && idempotent(&req);
    let (_, body) = req.into_parts();
    let head = head.freeze();
    let again = replayable.then(|| head.clone());
    run(
        io,
        head,
        encode.map(|e| (body, e)),
        head_request,
        pool,
        again,
    )
}

/// A request to send again: its head (it has no body), and where its connection goes back.
pub struct Replay {
    head: Bytes,
    head_request: bool,
    pool: Pool,
}

/// Send a [`Replay`] over a new connection.
pub async fn replay(
    io: BackendStream,
    replay: Replay,
) -> Result<Response<super::UpstreamBody>, UpstreamError> {
    run(
        io,
        replay.head,
        None,
        replay.head_request,
        replay.pool,
        None,
    )
    .await
    .map_err(|(error, _)| error)
}

/// Go's transport sends again what it may: `GET`, `HEAD`, `OPTIONS`, `TRACE`, or a request with an idempotency key.
fn idempotent(req: &Request<RequestBody>) -> bool {
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) || req.headers().contains_key("idempotency-key")
        || req.headers().contains_key("x-idempotency-key")
}

/// `again`: the head to send once more if the connection turns out to have been closed under it.
async fn run(
    io: BackendStream,
    head: Bytes,
    body: Option<(RequestBody, Encode)>,
    head_request: bool,
    pool: Pool,
    again: Option<Bytes>,
) -> Result<Response<super::UpstreamBody>, (UpstreamError, Option<Replay>)> {
    let mut wire = Box::new(Wire {
        io,
        rbuf: BytesMut::new(),
        read_size: READ_SIZE,
        received: false,
        upload: Upload {
            out: VecDeque::from([head]),
            unflushed: true,
            body,
            failed: None,
        },
    });
    let parsed = match poll_fn(|cx| wire.poll_head(cx, head_request)).await {
        Ok(parsed) => parsed,
        Err(error) => {
            // Sent again only when nothing at all came back on this connection.
            let replay = again.filter(|_| !wire.received).map(|head| Replay {
                head,
                head_request,
                pool,
            });
            return Err((error, replay));
        }
    };
    let body = match parsed.framing.is_done() {
        true => {
            // Nothing to read: the connection is free now, if the upload is over as well.
            wire.finish(parsed.keep_alive, &pool);
            super::UpstreamBody::empty()
        }
        false => super::UpstreamBody::wire(Reading {
            wire,
            framing: parsed.framing,
            keep_alive: parsed.keep_alive,
            pool,
        }),
    };
    let (parts, ()) = parsed.response.into_parts();
    Ok(Response::from_parts(parts, body))
}

/// A backend connection in use.
struct Wire {
    io: BackendStream,
    /// What has been read and not consumed: empty between exchanges, and released then.
    rbuf: BytesMut,
    /// How much the next read asks for (see `poll_read`).
    read_size: usize,
    /// Some byte of an answer came back on this exchange.
    received: bool,
    upload: Upload,
}

/// The request's way out: bytes queued for the socket, and the body they come from.
struct Upload {
    out: VecDeque<Bytes>,
    /// Written bytes a TLS stream may still hold.
    unflushed: bool,
    /// The body still to send and its framing; `None` once the last byte is queued.
    body: Option<(RequestBody, Encode)>,
    /// The upload broke (the backend stopped reading, or the client's body failed): the connection is not
    /// reused, and the error is reported if no answer comes.
    failed: Option<UpstreamError>,
}

impl Upload {
    fn done(&self) -> bool {
        self.out.is_empty() && !self.unflushed && self.body.is_none()
    }

    /// Move the upload forward as far as the socket and the client's body allow. `Ready` once it is over (or
    /// broke, see `failed`).
    fn poll(&mut self, io: &mut BackendStream, cx: &mut Context<'_>) -> Poll<()> {
        if self.failed.is_some() {
            return Poll::Ready(());
        }
        loop {
            // Queue what the client's body has ready, so the head and a small body leave in one write.
            while let Some((body, encode)) = self.body.as_mut() {
                if self.out.iter().map(Bytes::len).sum::<usize>() >= MAX_QUEUED {
                    break;
                }
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Some(Ok(frame))) => {
                        // Trailers are not sent: the request's `Trailer` header never reaches a backend.
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        if data.is_empty() {
                            continue;
                        }
                        match encode {
                            Encode::Length(left) => {
                                if data.len() as u64 > *left {
                                    self.fail(UpstreamError::Client(
                                        "client body: longer than its Content-Length".into(),
                                    ));
                                    return Poll::Ready(());
                                }
                                *left -= data.len() as u64;
                                self.out.push_back(data);
                            }
                            Encode::Chunked => {
                                self.out.push_back(encode::chunk_size_line(data.len()));
                                self.out.push_back(data);
                                self.out.push_back(Bytes::from_static(b"\r\n"));
                            }
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        self.fail(UpstreamError::Client(format!(
                            "error from user's Body stream: {e}"
                        )));
                        return Poll::Ready(());
                    }
                    Poll::Ready(None) => {
                        match *encode {
                            Encode::Chunked => {
                                self.out.push_back(Bytes::from_static(encode::LAST_CHUNK))
                            }
                            Encode::Length(0) => {}
                            Encode::Length(_) => {
                                self.fail(UpstreamError::Client(
                                    "client body: shorter than its Content-Length".into(),
                                ));
                                return Poll::Ready(());
                            }
                        }
                        self.body = None;
                    }
                }
            }
            if self.out.is_empty() {
                if self.unflushed {
                    if let Err(e) = ready!(Pin::new(&mut *io).poll_flush(cx)) {
                        self.fail(connection_error(e));
                        return Poll::Ready(());
                    }
                    self.unflushed = false;
                }
                return match self.body.is_none() {
                    true => Poll::Ready(()),
                    false => Poll::Pending,
                };
            }
            let mut slices = [IoSlice::new(&[]); 16];
            let count = self.out.len().min(slices.len());
            for (slice, bytes) in slices.iter_mut().zip(self.out.iter()) {
                *slice = IoSlice::new(bytes);
            }
            let written = match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(0)) => Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => Ok(n),
                Poll::Ready(Err(e)) => Err(e),
                // Nothing more can be written now; the body was asked already (or had nothing).
                Poll::Pending => return Poll::Pending,
            };
            match written {
                Ok(mut n) => {
                    self.unflushed = true;
                    while n > 0 {
                        let front = &mut self.out[0];
                        let step = n.min(front.len());
                        front.advance(step);
                        n -= step;
                        if front.is_empty() {
                            self.out.pop_front();
                        }
                    }
                }
                Err(e) => {
                    self.fail(connection_error(e));
                    return Poll::Ready(());
                }
            }
        }
    }

    fn fail(&mut self, e: UpstreamError) {
        self.failed = Some(e);
        self.body = None;
        self.out.clear();
        self.unflushed = false;
    }
}

/// The socket failed (reading or writing), in hyper's words.
fn connection_error(e: io::Error) -> UpstreamError {
    UpstreamError::Request(format!("connection error: {e}"))
}

impl Wire {
    /// Upload and read until the response head is in.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_request: bool,
    ) -> Poll<Result<decode::Head, UpstreamError>> {
        let _ = self.upload.poll(&mut self.io, cx);
        if let Some(UpstreamError::Client(m)) = &self.upload.failed {
            // The client's body broke: its fault, whatever the backend may still say.
            return Poll::Ready(Err(UpstreamError::Client(m.clone())));
        }
        loop {
            match decode::parse_head(&mut self.rbuf, head_request, BACKEND_READ_BUFFER) {
                Ok(Some(head)) => return Poll::Ready(Ok(head)),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(UpstreamError::Request(e.to_string()))),
            }
            match ready!(self.poll_read(cx)) {
                Ok(0) => {
                    // A broken upload says more than the close that followed it.
                    let e = self.upload.failed.take().unwrap_or_else(|| {
                        UpstreamError::Request("connection closed before message completed".into())
                    });
                    return Poll::Ready(Err(e));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(connection_error(e))),
            }
        }
    }

    /// Read what the backend sent. Reads start at [`READ_SIZE`] and double, up to [`BACKEND_READ_BUFFER`], each
    /// time one fills the space it had: a large body moves in few, large reads (and frames), a small answer
    /// never gets a large buffer.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < self.read_size {
            self.rbuf.reserve(self.read_size);
        }
        let space = self.rbuf.capacity() - self.rbuf.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.rbuf
        ))?;
        self.received |= n > 0;
        if n == space && self.read_size < BACKEND_READ_BUFFER {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }

    /// The response is over: the socket goes back to the pool when both directions ended cleanly and the
    /// backend sent nothing more; otherwise it is closed.
    fn finish(self: Box<Self>, keep_alive: bool, pool: &Pool) {
        let Wire {
            io, rbuf, upload, ..
        } = *self;
        if keep_alive && upload.done() && upload.failed.is_none() && rbuf.is_empty() {
            super::checkin(pool, io);
        }
    }
}

/// A response body being read from its connection.
pub struct Reading {
    wire: Box<Wire>,
    framing: Framing,
    keep_alive: bool,
    pool: Pool,
}

/// Why a backend's response body could not be read to its end.
#[derive(Debug)]
pub struct BodyError(pub String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyError {}

fn body_error(why: impl std::fmt::Display) -> BodyError {
    BodyError(format!("error reading a body from connection: {why}"))
}

/// One step of a body being read.
pub enum Step {
    Frame(Frame<Bytes>),
    /// The body is over.
    End,
}

impl Reading {
    pub fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Result<Step, BodyError>> {
        let wire = &mut *self.wire;
        if !wire.upload.done() {
            // The backend answered before the upload ended (a streaming echo, an early error): keep sending.
            let _ = wire.upload.poll(&mut wire.io, cx);
        }
        loop {
            match self.framing.decode(&mut wire.rbuf, BACKEND_READ_BUFFER) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Ok(Step::Frame(Frame::data(data)))),
                Ok(Decoded::Trailers(t)) => {
                    return Poll::Ready(Ok(Step::Frame(Frame::trailers(t))))
                }
                Ok(Decoded::End) => return Poll::Ready(Ok(Step::End)),
                Ok(Decoded::NeedMore) => {}
                Err(e) => return Poll::Ready(Err(body_error(e))),
            }
            match ready!(wire.poll_read(cx)) {
                Ok(0) => {
                    return Poll::Ready(match self.framing.at_eof() {
                        Ok(()) => {
                            self.keep_alive = false;
                            Ok(Step::End)
                        }
                        Err(e) => Err(body_error(e)),
                    })
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(body_error(e))),
            }
        }
    }

    /// The body has been read to its end (nothing more will come).
    pub fn is_done(&self) -> bool {
        self.framing.is_done()
    }

    pub fn remaining(&self) -> Option<u64> {
        self.framing.remaining()
    }

    /// Let the connection go: back to the pool if it can carry another request.
    pub fn finish(self) {
        let keep = self.keep_alive && self.framing.is_done();
        self.wire.finish(keep, &self.pool);
    }
}

/// Whether a pooled connection can be used: still open, and the backend sent nothing unasked. Polled once with
/// a waker that does nothing, so it never waits.
pub fn alive(io: &mut BackendStream) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    matches!(
        tokio::io::AsyncRead::poll_read(Pin::new(io), &mut cx, &mut buf),
        Poll::Pending
    )
}
