//! A copy of a request body taken as it streams to the backend, for the shadows of a mirror
//! (docs/mirroring.md): the active exchange is never held back to read the body first.
//!
//! The copy is handed over once the body has been sent to the end. A body longer than the cap (known from its
//! Content-Length, or found while it streams) is not copied, and neither is one that failed or was dropped
//! before its end: the receiver gets [`Copied::TooLarge`] or nothing.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

/// What became of the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Copied {
    /// The whole body (empty for a request without one).
    Body(Bytes),
    /// Longer than the cap: the shadows get nothing.
    TooLarge,
}

/// The copying side, carried inside the body sent to the backend.
#[derive(Debug)]
pub struct Tee {
    buf: BytesMut,
    cap: usize,
    done: Option<oneshot::Sender<Copied>>,
}

/// Where the copy arrives; an error means the body never completed (the client went away, or the exchange
/// was dropped), and the shadows are skipped.
pub type CopyReceiver = oneshot::Receiver<Copied>;

impl Tee {
    /// Copy a body of which `hint` is known, up to `cap` bytes. When nothing is left to stream (no body, or a
    /// Content-Length above the cap), the copy is settled at once and `None` is returned: the body need not
    /// be wrapped.
    pub fn new(hint: &SizeHint, at_end: bool, cap: usize) -> (Option<Tee>, CopyReceiver) {
        let (tx, rx) = oneshot::channel();
        if hint.lower() > cap as u64 {
            let _ = tx.send(Copied::TooLarge);
            return (None, rx);
        }
        if at_end {
            let _ = tx.send(Copied::Body(Bytes::new()));
            return (None, rx);
        }
        let tee = Tee {
            buf: BytesMut::with_capacity(hint.exact().map_or(0, |n| n as usize)),
            cap,
            done: Some(tx),
        };
        (Some(tee), rx)
    }

    /// A data frame went by.
    pub fn data(&mut self, data: &[u8]) {
        if self.done.is_none() {
            return;
        }
        if self.buf.len() + data.len() > self.cap {
            self.buf = BytesMut::new();
            if let Some(tx) = self.done.take() {
                let _ = tx.send(Copied::TooLarge);
            }
            return;
        }
        self.buf.extend_from_slice(data);
    }

    /// The body ended: hand the copy over.
    pub fn finish(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(Copied::Body(std::mem::take(&mut self.buf).freeze()));
        }
    }

    /// Poll `inner`, copying what goes by.
    pub fn poll<B: Body<Data = Bytes> + Unpin>(
        &mut self,
        inner: &mut B,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.data(data);
                }
                // A body of known length is not polled again after its last byte.
                if inner.is_end_stream() {
                    self.finish();
                }
            }
            Poll::Ready(None) => self.finish(),
            // A failed body is not copied: dropping the sender tells the receiver.
            Poll::Ready(Some(Err(_))) => self.done = None,
            Poll::Pending => {}
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn copies_what_streams_by_up_to_the_cap() {
        let mut body = Full::new(Bytes::from_static(b"hello"));
        let (tee, rx) = Tee::new(&body.size_hint(), body.is_end_stream(), 10);
        let mut tee = tee.unwrap();
        let frame = std::future::poll_fn(|cx| tee.poll(&mut body, cx)).await;
        assert_eq!(frame.unwrap().unwrap().into_data().unwrap(), "hello");
        assert_eq!(
            rx.await.unwrap(),
            Copied::Body(Bytes::from_static(b"hello"))
        );

        let body = Full::new(Bytes::from_static(b"hello"));
        let (tee, rx) = Tee::new(&body.size_hint(), false, 3);
        assert!(tee.is_none());
        assert_eq!(rx.await.unwrap(), Copied::TooLarge);

        let body = Full::new(Bytes::new());
        let (tee, rx) = Tee::new(&body.size_hint(), body.is_end_stream(), 3);
        assert!(tee.is_none());
        assert_eq!(rx.await.unwrap(), Copied::Body(Bytes::new()));
        let _ = body.collect().await;
    }

    #[tokio::test]
    async fn a_body_found_too_long_while_streaming_is_not_copied() {
        let mut tee = Tee::new(&SizeHint::new(), false, 4).0.unwrap();
        let (tx, rx) = oneshot::channel();
        tee.done = Some(tx);
        tee.data(b"abc");
        tee.data(b"de");
        tee.finish();
        assert_eq!(rx.await.unwrap(), Copied::TooLarge);
    }
}
