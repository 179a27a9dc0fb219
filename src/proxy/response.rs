//! [`ProxyBody`]: what the proxy sends back to a client, its own answer or a backend's streamed body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::Tee;
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
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
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
