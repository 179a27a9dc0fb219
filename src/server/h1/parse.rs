//! A request head read into an `http::Request`, for the requests the engine takes: HTTP/1.1 or 1.0, without a
//! body or with one framed plainly (a single `Content-Length`, or `Transfer-Encoding: chunked` alone), an
//! upgrade only without a body, no expectation but one `100-continue`, nothing hyper's server would treat
//! specially. Everything
//! else is left to hyper with its bytes untouched ([`Parsed::Other`]), so that every refusal (400, 431, 414,
//! the HTTP/2 preface, `Content-Length` with `Transfer-Encoding`) and every rare form keeps hyper's exact
//! answer.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};

use crate::body::ClientBody;

/// Headers parsed on the stack; a head with more goes to hyper, which has the configured limit.
const MAX_HEADERS: usize = 100;

/// How many headers the proxy may add to a request (see `Head::request`).
const ADDED_HEADERS: usize = 8;

/// hyper's limit on a request target: a longer one is answered 414 by hyper.
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;

/// What the bytes at the start of a connection's buffer are.
#[derive(Debug)]
pub(super) enum Parsed {
    /// A whole head the engine takes; `len` bytes of the buffer are its head.
    Request(Head),
    /// Not a whole head yet.
    Partial,
    /// A head (or bytes) the engine leaves to hyper.
    Other,
}

/// Where a parsed head's parts lie in the buffer, so the request can be built from the frozen head.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) len: usize,
    method: (u32, u32),
    target: (u32, u32),
    headers: Vec<((u32, u32), (u32, u32))>,
    /// The connection closes after this request: the client said `Connection: close`, or it speaks HTTP/1.0
    /// and did not say `Connection: keep-alive`.
    pub(super) close: bool,
    /// The request is HTTP/1.0: its answer is written as HTTP/1.0 (see `respond::head`).
    pub(super) http10: bool,
    /// The request asks for an upgrade (`Upgrade`): a `101` answer hands the connection over.
    pub(super) upgrade: bool,
    pub(super) body: BodyFraming,
    /// `Expect: 100-continue` with a body: the client waits for `100 Continue` before sending it.
    pub(super) expect_continue: bool,
}

/// How the request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyFraming {
    /// No body (none announced, or `Content-Length: 0`).
    None,
    Length(u64),
    Chunked,
}

/// Look at the start of `buf`: a head the engine takes, not yet a whole head, or one for hyper.
pub(super) fn head(buf: &[u8], max_headers: usize, max_head_bytes: usize) -> Parsed {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let limit = max_headers.min(MAX_HEADERS);
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut storage[..limit]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Other;
    };
    let http10 = version == 0;
    if len > max_head_bytes || target.len() > MAX_URI_LEN || method == "CONNECT" {
        return Parsed::Other;
    }
    let span = |part: &[u8]| {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        (start as u32, (start + part.len()) as u32)
    };
    // hyper's rule: one `close` token in any `Connection` line is final; HTTP/1.0 is kept alive only when a
    // line asks for it.
    let (mut saw_close, mut asked_keep_alive, mut expect) = (false, false, false);
    let mut upgrade = false;
    let mut body = None;
    let mut headers = Vec::with_capacity(req.headers.len());
    for header in req.headers.iter() {
        let name = header.name.as_bytes();
        match name.len() {
            // One framing header, in its plain form; any other (repeated, both, a list, another coding) is
            // hyper's to answer. Trailers are hyper's too.
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                // HTTP/1.0 has no chunked coding: hyper refuses it.
                if http10 || body.is_some() || !header.value.eq_ignore_ascii_case(b"chunked") {
                    return Parsed::Other;
                }
                body = Some(BodyFraming::Chunked);
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let Some(length) = digits(header.value) else {
                    return Parsed::Other;
                };
                if body.is_some() {
                    return Parsed::Other;
                }
                body = Some(match length {
                    0 => BodyFraming::None,
                    n => BodyFraming::Length(n),
                });
            }
            // An upgrade (WebSocket) in HTTP/1.1 without a body; in HTTP/1.0 hyper ignores it, and a body with
            // it is hyper's.
            7 if name.eq_ignore_ascii_case(b"upgrade") => {
                if http10 {
                    return Parsed::Other;
                }
                upgrade = true;
            }
            6 if name.eq_ignore_ascii_case(b"expect") => {
                // One `100-continue`; any other expectation (or several) is hyper's.
                if expect || !header.value.eq_ignore_ascii_case(b"100-continue") {
                    return Parsed::Other;
                }
                expect = true;
            }
            2 if name.eq_ignore_ascii_case(b"te") => return Parsed::Other,
            10 if name.eq_ignore_ascii_case(b"connection") => {
                if saw_close || has_token(header.value, b"close") {
                    saw_close = true;
                } else if !asked_keep_alive {
                    asked_keep_alive = has_token(header.value, b"keep-alive");
                }
            }
            _ => {}
        }
        // Empty values point at static bytes, not into the buffer.
        let value = match header.value.is_empty() {
            true => (0, 0),
            false => span(header.value),
        };
        headers.push((span(header.name.as_bytes()), value));
    }
    if upgrade && body.is_some_and(|b| b != BodyFraming::None) {
        return Parsed::Other;
    }
    Parsed::Request(Head {
        len,
        method: span(method.as_bytes()),
        target: span(target.as_bytes()),
        headers,
        close: saw_close || (http10 && !asked_keep_alive),
        http10,
        upgrade,
        // Without a body there is nothing to wait for, and HTTP/1.0 has no `100 Continue` (hyper ignores the
        // expectation in both cases).
        expect_continue: !http10 && expect && body.is_some_and(|b| b != BodyFraming::None),
        body: body.unwrap_or(BodyFraming::None),
    })
}

/// A `Content-Length` value: digits only (no sign, no spaces, no list), within `u64`.
pub(super) fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

/// A comma-separated header value holds `token` (hyper's `connection_has`, which reads only values that are
/// visible ASCII).
pub(super) fn has_token(value: &[u8], token: &[u8]) -> bool {
    let visible = value.iter().all(|&b| b == b'\t' || (32..127).contains(&b));
    visible
        && value
            .split(|&b| b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

impl Head {
    /// The request with `body`, its parts shared with `head` (the frozen bytes this head was parsed from);
    /// `None` for a method or target `http` refuses, which goes to hyper for its answer.
    pub(super) fn request(&self, head: &Bytes, body: ClientBody) -> Option<Request<ClientBody>> {
        let part = |(start, end): (u32, u32)| head.slice(start as usize..end as usize);
        let method = Method::from_bytes(&part(self.method)).ok()?;
        let uri = Uri::from_maybe_shared(part(self.target)).ok()?;
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = match self.http10 {
            true => Version::HTTP_10,
            false => Version::HTTP_11,
        };
        let map = request.headers_mut();
        // Room for the headers the proxy adds on the way to a backend (forwarding, Host copies, request id),
        // so that none of them grows the map: each growth rehashes it, about 450 instructions.
        map.reserve(self.headers.len() + ADDED_HEADERS);
        for &(name, value) in &self.headers {
            let name = HeaderName::from_bytes(&head[name.0 as usize..name.1 as usize]).ok()?;
            let value = match value.1 {
                0 => HeaderValue::from_static(""),
                _ => HeaderValue::from_maybe_shared(part(value)).ok()?,
            };
            map.append(name, value);
        }
        Some(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head of `raw`, which the engine must take.
    fn taken(raw: &[u8]) -> Head {
        match head(raw, 100, 8192) {
            Parsed::Request(h) => h,
            other => panic!("not taken: {other:?}"),
        }
    }

    fn take(raw: &[u8]) -> Option<Request<ClientBody>> {
        match head(raw, 100, 8192) {
            Parsed::Request(h) => {
                h.request(&Bytes::copy_from_slice(&raw[..h.len]), ClientBody::Empty)
            }
            _ => None,
        }
    }

    #[test]
    fn a_plain_get_is_taken_with_its_headers_in_order() {
        let req =
            take(b"GET /a?b=1 HTTP/1.1\r\nHost: x.test\r\nX-A: 1\r\nx-a: 2\r\nEmpty:\r\n\r\n")
                .unwrap();
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "/a?b=1");
        let all: Vec<_> = req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        assert_eq!(
            all,
            [
                ("host", &b"x.test"[..]),
                ("x-a", b"1"),
                ("x-a", b"2"),
                ("empty", b"")
            ]
        );
    }

    #[test]
    fn odd_framing_odd_upgrades_and_odd_expectations_go_to_hyper() {
        for raw in [
            &b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length:\r\n\r\n",
            b"POST / HTTP/1.1\r\nUpgrade: websocket\r\nContent-Length: 3\r\n\r\n",
            b"GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: 3\r\nExpect: 200-ok\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nTE: trailers\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: 1\r\n\r\n",
        ] {
            assert!(
                matches!(head(raw, 100, 8192), Parsed::Other),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert!(take(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").is_some());
    }

    #[test]
    fn plainly_framed_bodies_are_taken() {
        let framing = |raw: &[u8]| taken(raw).body;
        assert_eq!(framing(b"GET / HTTP/1.1\r\n\r\n"), BodyFraming::None);
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            BodyFraming::None
        );
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\ncontent-length: 007\r\n\r\n"),
            BodyFraming::Length(7)
        );
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\nContent-Length: 9999999999999999999\r\n\r\n"),
            BodyFraming::Length(9_999_999_999_999_999_999)
        );
        assert_eq!(
            framing(b"PUT / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            BodyFraming::Chunked
        );
    }

    #[test]
    fn expect_100_continue_is_taken_and_noted_only_with_a_body() {
        let expects = |raw: &[u8]| taken(raw).expect_continue;
        assert!(expects(
            b"PUT / HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\n"
        ));
        assert!(expects(
            b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!expects(b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"));
        assert!(!expects(
            b"PUT / HTTP/1.1\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n"
        ));
    }

    #[test]
    fn limits_and_partial_heads() {
        assert!(matches!(
            head(b"GET / HTTP/1.1\r\nHost: a\r\n", 100, 8192),
            Parsed::Partial
        ));
        assert!(matches!(
            head(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", 1, 8192),
            Parsed::Other
        ));
        assert!(matches!(
            head(b"GET / HTTP/1.1\r\nA: 1\r\n\r\n", 100, 10),
            Parsed::Other
        ));
    }

    #[test]
    fn http_1_0_is_kept_alive_only_when_asked_and_a_close_is_final() {
        let close = |raw: &[u8]| taken(raw).close;
        assert!(close(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(!close(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(close(
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"
        ));
        assert!(close(
            b"GET / HTTP/1.1\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n"
        ));
        assert!(!close(b"GET / HTTP/1.1\r\n\r\n"));
        let Parsed::Request(h) = head(b"GET / HTTP/1.0\r\n\r\n", 100, 8192) else {
            panic!("taken");
        };
        let req = h.request(
            &Bytes::from_static(b"GET / HTTP/1.0\r\n\r\n"),
            ClientBody::Empty,
        );
        assert_eq!(req.unwrap().version(), Version::HTTP_10);
    }

    #[test]
    fn a_websocket_upgrade_without_a_body_is_taken() {
        let Parsed::Request(h) = head(
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            100,
            8192,
        ) else {
            panic!("taken");
        };
        assert!(h.upgrade && !h.close);
    }

    #[test]
    fn connection_close_is_seen_among_other_tokens() {
        let Parsed::Request(h) = head(
            b"GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n",
            100,
            8192,
        ) else {
            panic!("taken");
        };
        assert!(h.close);
    }
}
