//! [`ProxyBody`]: what the proxy sends back to a client, its own answer or a backend's streamed body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{CopyReceiver, Tee};
use crate::upstream::UpstreamBody;

/// What the proxy sends back to a client.
pub enum ProxyBody {
    /// A body hypache wrote itself (errors, `__ping__`).
    Full(Option<Bytes>),
    /// A backend's body, streamed frame by frame as it arrives.
    Upstream(UpstreamBody),
    /// The same, copied as it goes for a mirror's body comparison (`compare body`).
    Teed(UpstreamBody, Box<Tee>),
}

impl ProxyBody {
    pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
        let bytes = bytes.into();
        ProxyBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    /// Copy a backend's body as it streams to the client, up to `cap` bytes (a mirror's `compare body`); the
    /// copy arrives on the receiver. An answer of the proxy's own is not copied (`None`).
    pub fn teed(self, cap: usize) -> (ProxyBody, Option<CopyReceiver>) {
        let ProxyBody::Upstream(body) = self else {
            return (self, None);
        };
        let (tee, copy) = Tee::new(&body.size_hint(), body.is_end_stream(), cap);
        let body = match tee {
            Some(tee) => ProxyBody::Teed(body, Box::new(tee)),
            None => ProxyBody::Upstream(body),
        };
        (body, Some(copy))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = crate::upstream::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::upstream::BodyError>>> {
        match self.get_mut() {
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Teed(body, tee) => tee.poll(body, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(data) => data.is_none(),
            ProxyBody::Upstream(body) | ProxyBody::Teed(body, _) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ProxyBody::Upstream(body) | ProxyBody::Teed(body, _) => body.size_hint(),
        }
    }
}
