//! Writing a request for a backend: the head as one buffer (header names in title case, as the proxy always
//! sent them), and the body's framing.
//!
//! The framing rules are the ones hyper's client applied, so that backends see what they saw before: a body
//! that is already over sends no framing header beyond a `Content-Length` the request carried; a request's own
//! `Transfer-Encoding` wins (and drops its `Content-Length`), then its own `Content-Length`; otherwise a body
//! of known length gets a `Content-Length`, and one of unknown length is chunked, except on `GET`, `HEAD` and
//! `CONNECT`, which are sent without a body.

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Request, Version};
use http_body::Body;

use super::decode::content_length_value;
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
    let body = req.body();
    // One pass for both framing headers (comparing standard names is cheap; two map lookups were not).
    let mut has_te = false;
    let mut existing: Option<Result<u64, ()>> = None;
    for (name, value) in headers {
        if name == TRANSFER_ENCODING {
            has_te = true;
        } else if name == CONTENT_LENGTH && existing != Some(Err(())) {
            existing = Some(content_length_value(
                value.as_bytes(),
                existing.and_then(Result::ok),
            ));
        }
    }
    let existing = existing.and_then(Result::ok);
    // What the body needs: (encoding, skip the request's TE, skip its CL, the header line to add).
    let (encode, skip_te, skip_cl, add): (Option<Encode>, bool, bool, Option<Added>) =
        if body.is_end_stream() {
            (None, true, false, None)
        } else if has_te {
            (Some(Encode::Chunked), false, existing.is_some(), None)
        } else if let Some(len) = existing {
            (Some(Encode::Length(len)), false, false, None)
        } else if let Some(len) = body.size_hint().exact() {
            (
                Some(Encode::Length(len)),
                false,
                false,
                Some(Added::Length(len)),
            )
        } else if matches!(*req.method(), Method::GET | Method::HEAD | Method::CONNECT) {
            // Almost never a body: hyper sent none rather than an empty chunked one.
            (None, false, false, None)
        } else {
            (Some(Encode::Chunked), false, false, Some(Added::Chunked))
        };

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
    write_headers(headers, skip_te, skip_cl, out);
    match add {
        Some(Added::Length(len)) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(itoa(len, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
        }
        Some(Added::Chunked) => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        None => {}
    }
    out.extend_from_slice(b"\r\n");
    encode
}

/// A framing header the request did not carry and its body needs.
enum Added {
    Length(u64),
    Chunked,
}

fn write_headers(headers: &HeaderMap, skip_te: bool, skip_cl: bool, out: &mut BytesMut) {
    for (name, value) in headers {
        if (skip_te && name == TRANSFER_ENCODING) || (skip_cl && name == CONTENT_LENGTH) {
            continue;
        }
        title_case(name.as_str().as_bytes(), out);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
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

/// `n` in decimal, in `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

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
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(itoa(u64::MAX, &mut [0; 20]), b"18446744073709551615");
        assert_eq!(&chunk_size_line(255)[..], b"FF\r\n");
    }
}
