//! One copy of a request sent to a shadow (or, for the gonfork preset, to any outbound), over the pooled
//! backend connections, bounded in time, with gonfork's classification of what went wrong.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::BodyExt;

use crate::body::{Buffered, RequestBody};
use crate::upstream::{Target, Upstream, UpstreamError};

/// gonfork's two failure classes (its `stats.go`): a refused connection, a dial or overall timeout and a
/// connection closed under the request are *timeouts*; anything else is an *error*.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Timeout,
    Error,
}

/// A shadow's answer: its status, when the head arrived, and (when asked for) a hash of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub latency: Duration,
    /// A hash of the body's first `hash_body` bytes and its length, when `hash_body` was above 0.
    pub body_hash: Option<u64>,
}

/// A failed copy: its class, the error text, and how long it took.
#[derive(Debug, Clone)]
pub struct Failed {
    pub failure: Failure,
    pub message: String,
    pub latency: Duration,
}

/// The request head a copy is sent with.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: Method,
    /// Origin form: path and query.
    pub uri: Uri,
    pub headers: HeaderMap,
}

/// Send `head` + `body` to `target` and read the answer within `timeout` (the whole exchange, body included,
/// as Go's `http.Client.Timeout`). With `hash_body` above 0 the body's first `hash_body` bytes are hashed; the
/// rest is read and dropped so that the connection can be reused.
pub async fn send_copy(
    upstream: &Upstream,
    target: &Target,
    head: &Head,
    body: Bytes,
    timeout: Duration,
    hash_body: usize,
) -> Result<Answer, Failed> {
    let started = Instant::now();
    let exchange = async {
        let mut req = Request::new(RequestBody::Buffered(Buffered::from_bytes(body)));
        *req.method_mut() = head.method.clone();
        *req.uri_mut() = head.uri.clone();
        *req.headers_mut() = head.headers.clone();
        let resp = upstream
            .send(target, Box::new(req))
            .await
            .map_err(|(e, _)| e)?;
        let status = resp.status().as_u16();
        let latency = started.elapsed();
        let mut body = resp.into_body();
        let mut hasher = (hash_body > 0).then(|| BodyHasher::new(hash_body));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| UpstreamError::Request(e.to_string()))?;
            if let (Some(data), Some(hasher)) = (frame.data_ref(), hasher.as_mut()) {
                hasher.update(data);
            }
        }
        let body_hash = hasher.map(BodyHasher::finish);
        Ok::<_, UpstreamError>(Answer {
            status,
            latency,
            body_hash,
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(Failed {
            failure: classify(&e),
            message: e.to_string(),
            latency: started.elapsed(),
        }),
        Err(_) => Err(Failed {
            failure: Failure::Timeout,
            message: format!("timeout after {timeout:?}"),
            latency: started.elapsed(),
        }),
    }
}

/// A body's hash for comparisons: SHA-256 of its first `cap` bytes, then its length (a body longer than the
/// cap is compared by its start and its length).
pub struct BodyHasher {
    sha: sha2::Sha256,
    seen: u64,
    cap: u64,
}

impl BodyHasher {
    pub fn new(cap: usize) -> BodyHasher {
        BodyHasher {
            sha: sha2::Digest::new(),
            seen: 0,
            cap: cap as u64,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        let room = self.cap.saturating_sub(self.seen) as usize;
        sha2::Digest::update(&mut self.sha, &data[..data.len().min(room)]);
        self.seen += data.len() as u64;
    }

    pub fn finish(mut self) -> u64 {
        sha2::Digest::update(&mut self.sha, self.seen.to_be_bytes());
        let digest = sha2::Digest::finalize(self.sha);
        u64::from_be_bytes(
            digest[..8]
                .try_into()
                .expect("a SHA-256 digest has 32 bytes"),
        )
    }
}

/// [`BodyHasher`] over a whole body.
pub fn hash_body(body: &[u8], cap: usize) -> u64 {
    let mut hasher = BodyHasher::new(cap);
    hasher.update(body);
    hasher.finish()
}

/// gonfork's classes: refused and timed out connections are timeouts, the rest errors.
pub fn classify(e: &UpstreamError) -> Failure {
    match e {
        UpstreamError::Connect(m) if m.contains("refused") => Failure::Timeout,
        UpstreamError::ConnectTimeout(_) => Failure::Timeout,
        UpstreamError::Request(m) if m.contains("closed") || m.contains("canceled") => {
            Failure::Timeout
        }
        _ => Failure::Error,
    }
}
