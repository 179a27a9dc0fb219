//! One inbound's request flow (gonfork's `Inbound.ServeHTTP`): the request goes to every outbound with
//! `X-Nfork: true` and the outbound's Host; only the active outbound's answer reaches the client.
//!
//! Unlike gonfork, the active exchange streams both ways: the request body is copied as it is forwarded
//! (`body::Tee`) and the answer is relayed as it arrives. The shadows get the copy once the body has been sent
//! to the end, on tasks of their own, never awaited on the client's path.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::Semaphore;

use super::stats::{Outcome, Recorder};
use crate::body::{Copied, RequestBody};
use crate::config::nfork::Inbound;
use crate::mirror::{send_copy, Failure, Head};
use crate::upstream::{Target, Upstream, UpstreamBody, UpstreamError};

const X_NFORK: HeaderName = HeaderName::from_static("x-nfork");

/// What one outbound keeps across configuration changes: its stats, its bound on copies in flight, and the
/// copies it did not get.
pub struct OutboundShared {
    pub stats: Recorder,
    /// Copies in flight to this outbound as a shadow; a copy that finds it full is dropped.
    in_flight: Arc<Semaphore>,
    pub skipped: Skipped,
}

/// Copies a shadow did not get, since the start (not windowed: they are rare and worth seeing).
#[derive(Default)]
pub struct Skipped {
    /// The request body was longer than the inbound's `maxBody`.
    pub too_large: AtomicU64,
    /// The shadow already had `shadowLimit` copies in flight.
    pub full: AtomicU64,
    /// The request body never completed (the client went away, or the active outbound stopped reading it).
    pub incomplete: AtomicU64,
}

impl Skipped {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tooLarge": self.too_large.load(Ordering::Relaxed),
            "full": self.full.load(Ordering::Relaxed),
            "incomplete": self.incomplete.load(Ordering::Relaxed),
        })
    }
}

/// One outbound of a configuration snapshot.
pub struct Outbound {
    pub name: String,
    target: Target,
    /// The Host header it gets: its address without the scheme (gonfork's `newReq.Host = host`).
    host: HeaderValue,
    pub shared: Arc<OutboundShared>,
}

/// An inbound's configuration, ready to serve. Replaced whole on every change (copy-on-write): a request
/// keeps the snapshot it started with.
pub struct InboundState {
    pub config: Inbound,
    active: Arc<Outbound>,
    shadows: Vec<Arc<Outbound>>,
    upstream: Arc<Upstream>,
}

/// The outbounds' shared parts by name, kept by the inbound across snapshots.
pub type SharedByName = Mutex<HashMap<String, Arc<OutboundShared>>>;

impl InboundState {
    /// A snapshot of `config`, reusing the shared parts of outbounds that exist already (and dropping those
    /// of outbounds that are gone).
    pub fn build(
        config: Inbound,
        upstream: Arc<Upstream>,
        shared: &SharedByName,
    ) -> Result<InboundState, String> {
        config.validate()?;
        let mut by_name = shared.lock().unwrap_or_else(|p| p.into_inner());
        by_name.retain(|name, _| config.out.contains_key(name));
        let mut active = None;
        let mut shadows = Vec::new();
        for (name, addr) in &config.out {
            let target = Target::parse(addr)
                .map_err(|e| format!("outbound '{name}': invalid address {addr:?}: {e:?}"))?;
            let host = addr
                .split_once("://")
                .map_or(addr.as_str(), |(_, rest)| rest);
            let host = host.split('/').next().unwrap_or(host);
            let host = HeaderValue::from_str(host)
                .map_err(|_| format!("outbound '{name}': invalid host in {addr:?}"))?;
            let shared = by_name
                .entry(name.clone())
                .or_insert_with(|| {
                    Arc::new(OutboundShared {
                        stats: Recorder::default(),
                        in_flight: Arc::new(Semaphore::new(config.shadow_limit)),
                        skipped: Skipped::default(),
                    })
                })
                .clone();
            let outbound = Arc::new(Outbound {
                name: name.clone(),
                target,
                host,
                shared,
            });
            match *name == config.active {
                true => active = Some(outbound),
                false => shadows.push(outbound),
            }
        }
        let active = active.ok_or_else(|| format!("no active outbound in '{}'", config.name))?;
        Ok(InboundState {
            config,
            active,
            shadows,
            upstream,
        })
    }

    /// Serve one request: forward it to the active outbound (streaming), copy it to the shadows.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<NforkBody> {
        let started = Instant::now();
        let deadline = started + self.config.timeout;
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        remove_connection_headers(&mut headers);
        headers.insert(X_NFORK, HeaderValue::from_static("true"));
        let uri = origin_form(&parts.uri);
        let mut body = RequestBody::Streaming(body.into());
        if !self.shadows.is_empty() {
            let (teed, copy) = body.teed(self.config.max_body);
            body = teed;
            let head = Head {
                method: parts.method.clone(),
                uri: uri.clone(),
                headers: headers.clone(),
            };
            tokio::spawn(self.clone().mirror(head, copy));
        }
        let active = &self.active;
        let mut req = Request::new(body);
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri.clone();
        headers.insert(header::HOST, active.host.clone());
        *req.headers_mut() = headers;
        let sent = tokio::time::timeout_at(
            deadline.into(),
            self.upstream.send(&active.target, Box::new(req)),
        )
        .await;
        let failure = match sent {
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                remove_connection_headers(&mut parts.headers);
                // The client's connection speaks its own version, whatever the outbound spoke.
                parts.version = http::Version::HTTP_11;
                let relay = Relay {
                    inner: body,
                    deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
                    pending: Some((active.shared.clone(), parts.status.as_u16(), started)),
                };
                return Response::from_parts(parts, NforkBody::Relay(Box::new(relay)));
            }
            Ok(Err((e, unsent))) => {
                if let Some(unsent) = unsent {
                    // Nothing reached the active outbound: read the body anyway (bounded by the timeout) so
                    // that the shadows still get their copy, as gonfork's did.
                    if !self.shadows.is_empty() {
                        let drain = unsent.into_body().collect();
                        tokio::spawn(tokio::time::timeout_at(deadline.into(), drain));
                    }
                }
                if let UpstreamError::Client(m) = &e {
                    // The client's own body broke: gonfork's 400 for a body it could not read.
                    return text(StatusCode::BAD_REQUEST, m);
                }
                (crate::mirror::send::classify(&e), e.to_string())
            }
            Err(_) => (
                Failure::Timeout,
                "context deadline exceeded (Client.Timeout exceeded while awaiting headers)".into(),
            ),
        };
        let (class, message) = failure;
        active
            .shared
            .stats
            .record(Outcome::Failed(class), started.elapsed());
        let message = go_url_error(&parts.method, &active.target, &uri, &message);
        let status = StatusCode::from_u16(self.config.timeout_code)
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        text(status, &message)
    }

    /// Wait for the body's copy, then send it to every shadow that has room. Runs on its own task.
    async fn mirror(self: Arc<Self>, head: Head, copy: crate::body::CopyReceiver) {
        let body = match copy.await {
            Ok(Copied::Body(body)) => body,
            Ok(Copied::TooLarge) => {
                for shadow in &self.shadows {
                    shadow
                        .shared
                        .skipped
                        .too_large
                        .fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Err(_) => {
                for shadow in &self.shadows {
                    shadow
                        .shared
                        .skipped
                        .incomplete
                        .fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        };
        for shadow in &self.shadows {
            let Ok(permit) = shadow.shared.in_flight.clone().try_acquire_owned() else {
                shadow.shared.skipped.full.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let mut head = head.clone();
            head.headers.insert(header::HOST, shadow.host.clone());
            let (shadow, body, upstream) = (shadow.clone(), body.clone(), self.upstream.clone());
            let timeout = self.config.timeout;
            tokio::spawn(async move {
                let started = Instant::now();
                let outcome =
                    match send_copy(&upstream, &shadow.target, &head, body, timeout, 0).await {
                        Ok(answer) => Outcome::Response(answer.status),
                        Err(failed) => Outcome::Failed(failed.failure),
                    };
                shadow.shared.stats.record(outcome, started.elapsed());
                drop(permit);
            });
        }
    }

    /// The outbounds in this snapshot, by name.
    pub fn outbounds(&self) -> impl Iterator<Item = &Arc<Outbound>> {
        std::iter::once(&self.active).chain(self.shadows.iter())
    }
}

/// Headers that belong to one connection: the outbound connections are pooled, so a client's
/// `Connection: close` must not reach them, and the body's framing is the sender's to choose.
fn remove_connection_headers(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
    ] {
        headers.remove(name);
    }
}

/// Path and query of the request (an absolute-form target keeps only those).
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) if uri.scheme().is_none() => match pq.as_str().starts_with('/') {
            true => uri.clone(),
            false => Uri::from_static("/"),
        },
        Some(pq) => pq
            .as_str()
            .parse()
            .unwrap_or_else(|_| Uri::from_static("/")),
        None => Uri::from_static("/"),
    }
}

/// Go's `url.Error` text, as gonfork's client saw it: `Get "http://host:port/path": <error>`.
fn go_url_error(method: &http::Method, target: &Target, uri: &Uri, message: &str) -> String {
    let method = method.as_str();
    let op = match method.char_indices().nth(1) {
        Some((i, _)) => format!("{}{}", &method[..i], method[i..].to_ascii_lowercase()),
        None => method.to_string(),
    };
    format!(
        "{op} \"{}://{}{}\": {message}",
        target.scheme,
        target.authority(),
        uri
    )
}

/// A plain-text answer of the preset's own, as Go's `http.Error` writes it.
fn text(status: StatusCode, message: &str) -> Response<NforkBody> {
    let mut resp = Response::new(NforkBody::Full(Some(Bytes::from(format!("{message}\n")))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    resp
}

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// What goes back to a client of an inbound or of the controller.
pub enum NforkBody {
    /// An answer of the preset's own.
    Full(Option<Bytes>),
    /// The active outbound's answer, relayed as it arrives.
    Relay(Box<Relay>),
}

impl NforkBody {
    pub fn full(bytes: impl Into<Bytes>) -> NforkBody {
        NforkBody::Full(Some(bytes.into()))
    }

    pub fn empty() -> NforkBody {
        NforkBody::Full(None)
    }
}

impl Body for NforkBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            NforkBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            NforkBody::Relay(relay) => Pin::new(&mut **relay).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            NforkBody::Full(bytes) => bytes.is_none(),
            NforkBody::Relay(relay) => relay.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            NforkBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            NforkBody::Full(None) => SizeHint::with_exact(0),
            NforkBody::Relay(relay) => relay.inner.size_hint(),
        }
    }
}

/// The active outbound's body on its way to the client, within the inbound's timeout (which, as Go's
/// `Client.Timeout`, covers reading the body); the exchange is counted in the outbound's stats when it ends.
pub struct Relay {
    inner: UpstreamBody,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// The outbound's stats, the status, and when the exchange started, until the outcome is recorded.
    pending: Option<(Arc<OutboundShared>, u16, Instant)>,
}

impl Relay {
    fn settle(&mut self, outcome: Option<Outcome>) {
        if let Some((shared, status, started)) = self.pending.take() {
            let outcome = outcome.unwrap_or(Outcome::Response(status));
            shared.stats.record(outcome, started.elapsed());
        }
    }
}

impl Body for Relay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.pending.is_some() && this.deadline.as_mut().poll(cx).is_ready() {
            this.settle(Some(Outcome::Failed(Failure::Timeout)));
            return Poll::Ready(Some(Err(
                "context deadline exceeded (Client.Timeout exceeded while reading body)".into(),
            )));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.settle(None),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.settle(None),
            Poll::Ready(Some(Err(e))) => {
                let class = crate::mirror::send::classify(&UpstreamError::Request(e.to_string()));
                this.settle(Some(Outcome::Failed(class)));
            }
            _ => {}
        }
        polled.map(|frame| frame.map(|r| r.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Relay {
    /// A client that went away mid-body: the outbound did answer.
    fn drop(&mut self) {
        self.settle(None);
    }
}

/// How long an outbound connection may take to open; the inbound's timeout bounds the whole exchange anyway.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(30);
