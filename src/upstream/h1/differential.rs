//! Differential tests of this client against hyper's (what the proxy used before, configured as it was), on
//! generated input with a fixed seed, standing in for fuzzing, which needs a nightly toolchain; a failure names
//! the input, which can be replayed.
//!
//! - Responses: the same byte streams, many of them malformed, read by both. Both must refuse the same streams
//!   and agree on the status, the headers and the body of the others.
//! - Requests: the same requests written by both. A backend must receive the same bytes.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::decode::{parse_head, Decoded};
use super::encode::{self, Encode};
use crate::body::{Buffered, RequestBody};
use crate::upstream::BACKEND_READ_BUFFER;

#[derive(Debug, PartialEq)]
enum Outcome {
    Refused,
    Answer {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    },
}

fn headers(map: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    map.iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect()
}

/// The stream read by [`parse_head`] and the body framing, the backend closing after it.
fn ours(stream: &[u8], head_request: bool) -> Outcome {
    let mut buf = BytesMut::from(stream);
    let Ok(Some(head)) = parse_head(&mut buf, head_request, BACKEND_READ_BUFFER) else {
        return Outcome::Refused;
    };
    let mut framing = head.framing;
    let mut body = Vec::new();
    loop {
        match framing.decode(&mut buf, BACKEND_READ_BUFFER) {
            Ok(Decoded::Data(data)) => body.extend_from_slice(&data),
            Ok(Decoded::Trailers(_)) => {}
            Ok(Decoded::End) => break,
            Ok(Decoded::NeedMore) if framing.at_eof().is_ok() => break,
            Ok(Decoded::NeedMore) | Err(_) => return Outcome::Refused,
        }
    }
    Outcome::Answer {
        status: head.response.status().as_u16(),
        headers: headers(head.response.headers()),
        body,
    }
}

/// The stream read by hyper's client over an in-memory connection, the backend closing after it.
async fn theirs(stream: &[u8], head_request: bool) -> Outcome {
    let (client, mut backend) = tokio::io::duplex(64 * 1024);
    let stream = stream.to_vec();
    let backend = tokio::spawn(async move {
        // Answer once the request is in: hyper refuses an answer that comes before its request.
        let mut request = Vec::new();
        let mut chunk = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match backend.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = backend.write_all(&stream).await;
        let _ = backend.shutdown().await;
        let _ = backend.read_to_end(&mut request).await;
    });
    let Ok((mut sender, conn)) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(BACKEND_READ_BUFFER)
        .handshake(TokioIo::new(client))
        .await
    else {
        return Outcome::Refused;
    };
    tokio::spawn(conn);
    let method = if head_request { "HEAD" } else { "GET" };
    let request = http::Request::builder()
        .method(method)
        .uri("/")
        .header("host", "b")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let outcome = match sender.send_request(request).await {
        Err(_) => Outcome::Refused,
        Ok(response) => {
            let status = response.status().as_u16();
            let headers = headers(response.headers());
            match response.into_body().collect().await {
                Ok(body) => Outcome::Answer {
                    status,
                    headers,
                    body: body.to_bytes().to_vec(),
                },
                Err(_) => Outcome::Refused,
            }
        }
    };
    backend.abort();
    outcome
}

const STATUS_LINES: &[&str] = &[
    "HTTP/1.1 200 OK",
    "HTTP/1.0 200 OK",
    "HTTP/1.1 204 No Content",
    "HTTP/1.1 304 Not Modified",
    "HTTP/1.1 404 Not Found",
    "HTTP/1.1 200 Fine",
    "HTTP/1.1 200 ",
    "HTTP/1.1 099 Low",
    "HTTP/1.1 2000 Long",
    "HTTP/1.2 200 OK",
    "HTTP/2 200 OK",
    "HTTP/1.1 200 OK\r",
];

const HEADER_LINES: &[&str] = &[
    "Content-Length: 3",
    "Content-Length: 0",
    "Content-Length: 11",
    "Content-Length: 3, 3",
    "Content-Length: 3, 4",
    "Content-Length: +3",
    "Content-Length: 3 ",
    "Content-Length:",
    "Content-Length: 99999999999999999999",
    "content-length: 3",
    "Transfer-Encoding: chunked",
    "Transfer-Encoding: gzip",
    "Transfer-Encoding: gzip, chunked",
    "Transfer-Encoding: chunked, gzip",
    "Transfer-Encoding: CHUNKED",
    "Connection: close",
    "Connection: keep-alive",
    "Content-Type: text/plain",
    "X-A: 1",
    "X-A: 2",
    "X-Fold: a\r\n b",
    "Bad Name: x",
    "X-Tab:\tv",
    "X-Ctl: a\x01b",
    "X-CR: a\rb",
    ": empty",
];

const BODIES: &[&str] = &[
    "",
    "abc",
    "hello world",
    "3\r\nabc\r\n0\r\n\r\n",
    "3;x=y\r\nabc\r\n0\r\n\r\n",
    "3 ; x\r\nabc\r\n0\r\n\r\n",
    "3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
    "A \r\n0123456789\r\n0\r\n\r\n",
    "0\r\n\r\n",
    "fffffffffffffffff\r\nabc\r\n",
    "3\nabc\r\n0\r\n\r\n",
    "3\r\nabcX\r\n0\r\n\r\n",
    "3\r\nab",
    "-1\r\nabc\r\n",
    "3;a\nb\r\nabc\r\n0\r\n\r\n",
    "3\r\nabc\r\n0\r\n",
];

/// A response built from the pieces above, sometimes after an informational head, sometimes with one byte
/// changed, inserted or removed.
fn generate(rng: &mut fastrand::Rng) -> (Vec<u8>, bool) {
    let head_request = rng.u8(..10) == 0;
    let mut s = Vec::new();
    if rng.u8(..8) == 0 {
        s.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    s.extend_from_slice(STATUS_LINES[rng.usize(..STATUS_LINES.len())].as_bytes());
    s.extend_from_slice(b"\r\n");
    for _ in 0..rng.usize(..5) {
        s.extend_from_slice(HEADER_LINES[rng.usize(..HEADER_LINES.len())].as_bytes());
        s.extend_from_slice(b"\r\n");
    }
    s.extend_from_slice(b"\r\n");
    s.extend_from_slice(BODIES[rng.usize(..BODIES.len())].as_bytes());
    if rng.u8(..4) == 0 {
        let at = rng.usize(..s.len());
        match rng.u8(..3) {
            0 => s[at] = rng.u8(..),
            1 => s.insert(at, *b"\r\n:; -0aZ\t".get(rng.usize(..10)).unwrap_or(&b'x')),
            _ => {
                s.remove(at);
            }
        }
    }
    (s, head_request)
}

#[tokio::test(flavor = "current_thread")]
async fn the_decoder_reads_responses_as_hypers_client_did() {
    let mut rng = fastrand::Rng::with_seed(1909);
    let mut answered = 0;
    for i in 0..3000 {
        let (stream, head_request) = generate(&mut rng);
        let ours = ours(&stream, head_request);
        let theirs = theirs(&stream, head_request).await;
        assert_eq!(
            ours,
            theirs,
            "stream {i} (HEAD: {head_request}): {:?}",
            String::from_utf8_lossy(&stream)
        );
        answered += matches!(ours, Outcome::Answer { .. }) as usize;
    }
    // The generator must exercise both sides of the line, not only refusals.
    assert!(
        answered > 600,
        "only {answered} of 3000 streams were answers"
    );
}

/// The bytes this client sends for `req`: its head, then the body framed as `Upload` frames one whole frame.
fn our_request(req: &http::Request<RequestBody>, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    match encode::head(req, &mut out) {
        None => {}
        Some(Encode::Length(_)) => out.extend_from_slice(body),
        Some(Encode::Chunked) => {
            if !body.is_empty() {
                out.extend_from_slice(&encode::chunk_size_line(body.len()));
                out.extend_from_slice(body);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(encode::LAST_CHUNK);
        }
    }
    out.to_vec()
}

/// The bytes hyper's client sent for `req`, read until it waits for an answer. Time is paused in the test: the
/// read's timeout fires only once every task is idle, that is when the request has been written whole.
async fn their_request(req: http::Request<RequestBody>) -> Vec<u8> {
    let (client, mut backend) = tokio::io::duplex(64 * 1024);
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .max_buf_size(BACKEND_READ_BUFFER)
        .handshake(TokioIo::new(client))
        .await
        .unwrap();
    tokio::spawn(conn);
    let send = tokio::spawn(async move {
        let _ = sender.send_request(req).await;
    });
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let idle = std::time::Duration::from_secs(1);
    while let Ok(Ok(n)) = tokio::time::timeout(idle, backend.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    send.abort();
    got
}

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
const TARGETS: &[&str] = &["/", "/a/b?c=d&e", "/x%20y", "/?"];
const REQUEST_HEADERS: &[(&str, &str)] = &[
    ("host", "a.test"),
    ("x-forwarded-for", "1.2.3.4"),
    ("x-forwarded-proto", "http"),
    ("content-length", "5"),
    ("content-length", "0"),
    ("transfer-encoding", "chunked"),
    ("transfer-encoding", "gzip"),
    ("accept", "*/*"),
    ("te", "trailers"),
    ("expect", "100-continue"),
    ("x-a", "1"),
    ("x-a", "2"),
    ("x-multi-dash-name", "v"),
    ("cookie", "a=b; c=d"),
];
const REQUEST_BODIES: &[&str] = &["", "hello", "0123456789abcdef"];

fn request(rng: &mut fastrand::Rng) -> (http::Request<RequestBody>, &'static str) {
    let body = REQUEST_BODIES[rng.usize(..REQUEST_BODIES.len())];
    let mut builder = http::Request::builder()
        .method(METHODS[rng.usize(..METHODS.len())])
        .uri(TARGETS[rng.usize(..TARGETS.len())]);
    for _ in 0..rng.usize(..6) {
        let (name, value) = REQUEST_HEADERS[rng.usize(..REQUEST_HEADERS.len())];
        builder = builder.header(name, value);
    }
    let body_of =
        |text: &str| RequestBody::Buffered(Buffered::from_bytes(Bytes::from(text.to_string())));
    (builder.body(body_of(body)).unwrap(), body)
}

/// A request whose `Content-Length` says another length than its body is refused on the client side before it
/// gets here (hyper's server checks it), so it is not generated.
fn consistent(req: &http::Request<RequestBody>, body: &str) -> bool {
    let lengths: Vec<_> = req
        .headers()
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .collect();
    let chunked = req.headers().contains_key(http::header::TRANSFER_ENCODING);
    chunked
        || body.is_empty()
        || lengths
            .iter()
            .all(|v| v.as_bytes() == body.len().to_string().as_bytes())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn requests_leave_as_hypers_client_wrote_them() {
    let mut rng = fastrand::Rng::with_seed(2026);
    let mut compared = 0;
    while compared < 1000 {
        let (ours, body) = request(&mut rng);
        if !consistent(&ours, body) {
            continue;
        }
        let mut theirs = http::Request::new(RequestBody::Buffered(Buffered::from_bytes(
            Bytes::from(body.to_string()),
        )));
        *theirs.method_mut() = ours.method().clone();
        *theirs.uri_mut() = ours.uri().clone();
        *theirs.headers_mut() = ours.headers().clone();
        let expected = their_request(theirs).await;
        let got = our_request(&ours, body.as_bytes());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected),
            "request {compared}"
        );
        compared += 1;
    }
}
