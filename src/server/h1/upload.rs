//! A request's body, read from the connection while the request runs: the engine decodes it from its read
//! buffer with the backend reader's decoder (the same strictness rules: chunk-size overflow, extension and
//! trailer bounds, CRLF after every chunk) and hands it to the request's `Piped` body one frame at a time
//! (`crate::body::pipe`). It reads only when the body has taken the last frame, so a slow backend slows the
//! client down, and stops when the body is dropped. A client that sent `Expect: 100-continue` is told
//! `100 Continue` when the body is first asked for, unless the response has begun (hyper's rule).
//!
//! Once the response is ready the body is settled ([`Settled`]): read to its end, or dropped with the rest of
//! it already buffered (then it is skipped and the connection carries on), or not. A body left unread makes
//! the response say `connection: close`, and a malformed or cut one closes the connection after the response
//! without saying so: hyper's server does both, byte for byte.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use http_body::Frame;
use tokio::io::{AsyncRead, AsyncWrite};

use super::poll_read_more;
use crate::body::Feed;
use crate::server::timeouts::TimedIo;
use crate::upstream::{BodyDecoder, Decoded};

/// How much room a read of body bytes gets: a frame is at most this (hyper's server starts its reads at 8 KB
/// and grows them; uploads are where larger reads pay).
const BODY_READ: usize = 16 * 1024;

/// What a client that expects it is told before it sends its body.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A body being read for its request.
pub(super) struct Upload {
    feed: Feed,
    decoder: BodyDecoder,
    state: State,
    /// Bytes of [`CONTINUE`] still owed to a client that expects it, from this offset (`None`: none owed).
    owed_continue: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The request may want more.
    Reading,
    /// Read to its end and handed over.
    Done,
    /// Malformed, or the client closed mid-body: the connection cannot carry another request.
    Failed,
    /// The body was dropped before its end; what is left is skipped if it is already buffered.
    Abandoned,
    /// Dropped, and its end was not among the buffered bytes (or they were malformed).
    Unread,
}

/// Where a request's body stands once its response is ready (see [`Upload::settled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settled {
    /// Read to its end: the next bytes are the next request.
    Read,
    /// Its request still reads it (a backend that answers before the upload ends).
    Reading,
    /// Malformed, or the client closed mid-body: the connection ends after the response.
    Broken,
    /// Nobody reads the rest: the response says `connection: close`.
    Unread,
}

impl Upload {
    /// `expect_continue`: the client waits for `100 Continue` before it sends the body.
    pub(super) fn new(feed: Feed, decoder: BodyDecoder, expect_continue: bool) -> Upload {
        Upload {
            feed,
            decoder,
            state: State::Reading,
            owed_continue: expect_continue.then_some(0),
        }
    }

    /// The response has begun: a `100 Continue` not sent by now is not sent at all.
    pub(super) fn responding(&mut self) {
        self.owed_continue = None;
    }

    /// The body has been read to its end (the connection's next bytes are the next request).
    pub(super) fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Read and hand over frames while the body takes them; `Ready` once there is nothing more to do for it
    /// (read to its end, failed, or abandoned).
    pub(super) fn poll<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut TimedIo<IO>,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        if self.state == State::Reading
            && self.owed_continue.is_some()
            && self.poll_continue(io, cx).is_pending()
        {
            return Poll::Pending;
        }
        while self.state == State::Reading {
            match self.feed.poll_room(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(false) => self.state = State::Abandoned,
                Poll::Ready(true) => match self.decoder.decode(buf, BODY_READ) {
                    Ok(Decoded::Data(data)) => {
                        self.feed.send(Frame::data(data));
                        if self.decoder.is_done() {
                            self.finish();
                        }
                    }
                    Ok(Decoded::Trailers(trailers)) => self.feed.send(Frame::trailers(trailers)),
                    Ok(Decoded::End) => self.finish(),
                    Ok(Decoded::NeedMore) => {
                        buf.reserve(BODY_READ);
                        match poll_read_more(io, buf, cx) {
                            Poll::Ready(Ok(n)) if n > 0 => {}
                            // hyper's words for a body cut short.
                            Poll::Ready(_) => {
                                self.fail("end of file before message length reached")
                            }
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    Err(e) => self.fail(e),
                },
            }
        }
        Poll::Ready(())
    }

    /// Once the body is asked for, tell the client to send it; `Ready` when that is done (or no longer owed).
    fn poll_continue<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut TimedIo<IO>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        while let Some(at) = self.owed_continue {
            match self.feed.poll_wanted(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(false) => {
                    // Dropped unread: the client is never told to send it.
                    self.owed_continue = None;
                    self.state = State::Abandoned;
                }
                Poll::Ready(true) => match Pin::new(&mut *io).poll_write(cx, &CONTINUE[at..]) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(n)) if n > 0 && at + n < CONTINUE.len() => {
                        self.owed_continue = Some(at + n)
                    }
                    Poll::Ready(Ok(n)) if n > 0 => self.owed_continue = None,
                    Poll::Ready(_) => {
                        self.owed_continue = None;
                        self.fail("connection error writing 100 Continue");
                    }
                },
            }
        }
        Poll::Ready(())
    }

    fn finish(&mut self) {
        self.feed.finish();
        self.state = State::Done;
    }

    fn fail(&mut self, why: &'static str) {
        self.feed.fail(why);
        self.state = State::Failed;
    }

    /// Where the body stands; a body dropped before its end has what is buffered of it skipped first.
    pub(super) fn settled(&mut self, buf: &mut BytesMut) -> Settled {
        if self.state == State::Reading && self.feed.abandoned() {
            self.state = State::Abandoned;
        }
        if self.state == State::Abandoned {
            self.state = self.skip_buffered(buf);
        }
        match self.state {
            State::Reading => Settled::Reading,
            State::Done => Settled::Read,
            State::Failed => Settled::Broken,
            State::Abandoned | State::Unread => Settled::Unread,
        }
    }

    /// Skip what is buffered of a body nobody reads: `Done` when its end was among it.
    fn skip_buffered(&mut self, buf: &mut BytesMut) -> State {
        loop {
            match self.decoder.decode(buf, usize::MAX) {
                Ok(Decoded::Data(_) | Decoded::Trailers(_)) => {}
                Ok(Decoded::End) => return State::Done,
                Ok(Decoded::NeedMore) | Err(_) => return State::Unread,
            }
        }
    }
}
