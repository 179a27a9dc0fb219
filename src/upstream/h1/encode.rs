//! Writing a request for a backend: the head as one buffer (header names in title case, as the proxy always
//! sent them), and the body's framing.
//!
//! The framing rules are the ones hyper's client applied, so that backends see what they saw before: a body
//! that is already over sends no framing header beyond a `Content-Length` the request carried; a request's own
//! `Transfer-Encoding` wins (and drops its `Content-Length`), then its own `Content-Length`; otherwise a body
//! of known length gets a `Content-Length`, and one of unknown length is chunked, except on `GET`, `HEAD` and
//! `CONNECT`, which are sent without a body.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Request, Version};
use http_body::Body;

use super::decode::{content_length_value, ends_chunked};
use crate::body::RequestBody;

/// How the request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encode {
    /// Exactly this many bytes are left to send.
    Length(u64),
    Chunked,
}

/// Write `req`'s head into `out` and say how its body is framed; `None` when no body is sent.
pub fn head(req: &Request<RequestBody>, out: &mut BytesMut) -> Option<Encode> {
    let headers = req.headers();
    let plan = plan(req);
    let uri = req.uri();
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.extend_from_slice(b" ");
    match uri.path_and_query() {
        Some(target) if uri.scheme().is_none() => out.extend_from_slice(target.as_str().as_bytes()),
        _ => out.extend_from_slice(uri.to_string().as_bytes()),
    }
    out.extend_from_slice(match req.version() {
        Version::HTTP_10 => b" HTTP/1.0\r\n",
        _ => b" HTTP/1.1\r\n",
    });
    write_headers(headers, &plan, out);
    match plan.add {
        Some(Added::Length(len)) => write_length(len, out),
        Some(Added::Chunked) => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        None => {}
    }
    out.extend_from_slice(b"\r\n");
    plan.encode
}

/// What the head's framing headers become, decided once from one pass over the headers (comparing standard
/// names is cheap; map lookups were not).
struct Plan {
    encode: Option<Encode>,
    /// A framing header hyper's client removed from its map; the map's last name then took its place.
    removed: Option<HeaderName>,
    /// Append `, chunked` to this (1-based) `Transfer-Encoding` line, the last one.
    chunked_after_te_line: Option<usize>,
    /// The request's `Content-Length` lines are invalid and become this one, where the first one was.
    replace_length: Option<u64>,
    /// A framing line added after the others.
    add: Option<Added>,
}

fn plan(req: &Request<RequestBody>) -> Plan {
    let body = req.body();
    let (mut te_lines, mut te_chunked, mut cl_lines) = (0usize, false, 0usize);
    let mut existing: Option<Result<u64, ()>> = None;
    for (name, value) in req.headers() {
        if name == TRANSFER_ENCODING {
            te_lines += 1;
            te_chunked = ends_chunked(value.as_bytes());
        } else if name == CONTENT_LENGTH {
            cl_lines += 1;
            if existing != Some(Err(())) {
                existing = Some(content_length_value(
                    value.as_bytes(),
                    existing.and_then(Result::ok),
                ));
            }
        }
    }
    let existing = existing.and_then(Result::ok);
    let mut plan = Plan {
        encode: None,
        removed: None,
        chunked_after_te_line: None,
        replace_length: None,
        add: None,
    };
    if body.is_end_stream() {
        // No body: no coding either; a Content-Length the request carries stays.
        plan.removed = (te_lines > 0).then_some(TRANSFER_ENCODING);
    } else if te_lines > 0 {
        // The request's own coding wins over any Content-Length, and ends in chunked.
        plan.encode = Some(Encode::Chunked);
        plan.removed = (cl_lines > 0).then_some(CONTENT_LENGTH);
        plan.chunked_after_te_line = (!te_chunked).then_some(te_lines);
    } else if let Some(len) = existing {
        plan.encode = Some(Encode::Length(len));
    } else if let Some(len) = body.size_hint().exact() {
        plan.encode = Some(Encode::Length(len));
        match cl_lines {
            0 => plan.add = Some(Added::Length(len)),
            _ => plan.replace_length = Some(len),
        }
    } else if !matches!(*req.method(), Method::GET | Method::HEAD | Method::CONNECT) {
        // Of unknown length: chunked. (hyper also dropped invalid Content-Length lines here, after adding its
        // coding, which then took their place; the proxy never gets here with one, hyper's server refuses it.)
        plan.encode = Some(Encode::Chunked);
        plan.add = Some(Added::Chunked);
        plan.removed = (cl_lines > 0).then_some(CONTENT_LENGTH);
    }
    // Otherwise a GET, HEAD or CONNECT of unknown length: almost never a body, and hyper sent none.
    plan
}

/// A framing header the request did not carry and its body needs.
enum Added {
    Length(u64),
    Chunked,
}

fn write_length(len: u64, out: &mut BytesMut) {
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn write_headers(headers: &HeaderMap, plan: &Plan, out: &mut BytesMut) {
    let mut lines = Lines::default();
    let Some(removed) = &plan.removed else {
        for (name, value) in headers {
            lines.write(name, value, plan, out);
        }
        return;
    };
    // hyper's client removed the header from its map, which moves the map's last name into its place: the
    // same order is kept, so that a backend sees the bytes it saw before (rare: a framing header to drop).
    let mut names: Vec<&HeaderName> = headers.keys().collect();
    if let Some(at) = names.iter().position(|n| *n == removed) {
        names.swap_remove(at);
    }
    for name in names {
        for value in headers.get_all(name) {
            lines.write(name, value, plan, out);
        }
    }
}

/// The framing lines written so far.
#[derive(Default)]
struct Lines {
    te: usize,
    cl: usize,
}

impl Lines {
    fn write(&mut self, name: &HeaderName, value: &HeaderValue, plan: &Plan, out: &mut BytesMut) {
        if name == CONTENT_LENGTH {
            if let Some(len) = plan.replace_length {
                self.cl += 1;
                if self.cl == 1 {
                    write_length(len, out);
                }
                return;
            }
        }
        title_case(name.as_str().as_bytes(), out);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        if name == TRANSFER_ENCODING {
            self.te += 1;
            if plan.chunked_after_te_line == Some(self.te) {
                out.extend_from_slice(b", chunked");
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// `x-forwarded-for` → `X-Forwarded-For`: the first letter and every letter after a dash in upper case. The name
/// is copied whole and the few letters fixed in place (a byte at a time was a fifth of writing the head).
fn title_case(name: &[u8], out: &mut BytesMut) {
    let start = out.len();
    out.extend_from_slice(name);
    let written = &mut out[start..];
    if let Some(first) = written.first_mut() {
        first.make_ascii_uppercase();
    }
    for at in memchr::memchr_iter(b'-', name) {
        if let Some(next) = written.get_mut(at + 1) {
            next.make_ascii_uppercase();
        }
    }
}

/// The framing before one chunk of `len` bytes: its size in hex and CRLF.
pub fn chunk_size_line(len: usize) -> Bytes {
    Bytes::from(format!("{len:X}\r\n"))
}

/// The end of a chunked body (no trailers: the request's `Trailer` header never reaches a backend).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Buffered;

    fn encoded(method: &str, headers: &[(&str, &str)], body: &str) -> (String, Option<Encode>) {
        let mut req = Request::builder().method(method).uri("/p?q=1");
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let body = RequestBody::Buffered(Buffered::from_bytes(Bytes::from(body.to_string())));
        let req = req.body(body).unwrap();
        let mut out = BytesMut::new();
        let encode = head(&req, &mut out);
        (String::from_utf8(out.to_vec()).unwrap(), encode)
    }

    #[test]
    fn the_head_is_written_in_title_case_in_order() {
        let (head, encode) = encoded("GET", &[("host", "a"), ("x-forwarded-for", "1.2.3.4")], "");
        assert_eq!(
            head,
            "GET /p?q=1 HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"
        );
        assert_eq!(encode, None);
    }

    #[test]
    fn a_body_of_known_length_gets_a_content_length() {
        let (head, encode) = encoded("POST", &[("host", "a")], "hello");
        assert_eq!(
            head,
            "POST /p?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"
        );
        assert_eq!(encode, Some(Encode::Length(5)));
        let (head, encode) = encoded("POST", &[("content-length", "5")], "hello");
        assert_eq!(head, "POST /p?q=1 HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(encode, Some(Encode::Length(5)));
    }

    #[test]
    fn a_request_transfer_encoding_wins_and_an_empty_body_drops_it() {
        let (head, encode) = encoded(
            "POST",
            &[("transfer-encoding", "chunked"), ("content-length", "5")],
            "hello",
        );
        assert_eq!(
            head,
            "POST /p?q=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        assert_eq!(encode, Some(Encode::Chunked));
        let (head, encode) = encoded(
            "POST",
            &[("transfer-encoding", "chunked"), ("content-length", "0")],
            "",
        );
        assert_eq!(head, "POST /p?q=1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(encode, None);
    }

    #[test]
    fn numbers_are_written_in_decimal_and_hex() {
        let mut out = BytesMut::new();
        write_length(u64::MAX, &mut out);
        assert_eq!(&out[..], b"Content-Length: 18446744073709551615\r\n");
        assert_eq!(&chunk_size_line(255)[..], b"FF\r\n");
    }
}
