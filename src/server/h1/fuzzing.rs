//! Entry points for the fuzz targets in `fuzz/` (`cargo +nightly fuzz run request_head`, see docs/http1.md).
//! Not an API: each takes the fuzzer's bytes and panics when an invariant breaks.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Response, StatusCode, Version};

use super::parse::{self, Parsed};
use super::respond::{self, BodyLength, Framing};

/// A request head as a client may send it: the engine takes it, leaves it to hyper, or waits for more; a head
/// it takes is built into a request that keeps the engine's promises.
pub fn request_head(data: &[u8]) {
    let Parsed::Request(head) = parse::head(data, 100, 64 * 1024) else {
        return;
    };
    assert!(head.len <= data.len() && head.len <= 64 * 1024);
    let raw = Bytes::copy_from_slice(&data[..head.len]);
    let Some(request) = head.request(&raw) else {
        return;
    };
    assert_eq!(request.version(), Version::HTTP_11);
    assert!(!request.headers().contains_key(TRANSFER_ENCODING));
    let lengths: Vec<_> = request.headers().get_all(CONTENT_LENGTH).iter().collect();
    assert!(lengths.len() <= 1 && lengths.iter().all(|v| v.as_bytes() == b"0"));
    assert!(!request.headers().contains_key(http::header::UPGRADE));
}

/// A response head written from fuzzed parts (status, version, reason phrase, headers, body length, `HEAD`,
/// keep-alive): whatever is written must be one whole response head that httparse reads back with the same
/// status, and the framing must agree with the rules for bodies.
pub fn response_head(data: &[u8]) {
    let [a, b, flags, len, rest @ ..] = data else {
        return;
    };
    let Ok(status) = StatusCode::from_u16(200 + u16::from_be_bytes([*a, *b]) % 400) else {
        return;
    };
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = match flags & 1 {
        0 => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let mut reason = None;
    for line in rest.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            if flags & 2 != 0 && reason.is_none() {
                reason = hyper::ext::ReasonPhrase::try_from(line.to_vec()).ok();
            }
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        response.headers_mut().append(name, value);
    }
    let body = match flags >> 2 & 3 {
        0 => None,
        1 => Some(BodyLength::Unknown),
        _ => Some(BodyLength::Known(u64::from(*len))),
    };
    let head_request = flags & 16 != 0;
    let keep_alive = flags & 32 == 0;
    let (mut parts, ()) = response.into_parts();
    let mut out = Vec::new();
    let reason_bytes = reason.as_ref().map(|r| r.as_bytes());
    let Ok(encoded) = respond::head(
        &mut parts,
        reason_bytes,
        body,
        head_request,
        keep_alive,
        &mut out,
    ) else {
        return;
    };
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut parsed = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(end)) = parsed.parse(&out) else {
        panic!("not one whole head: {:?}", String::from_utf8_lossy(&out));
    };
    assert_eq!(end, out.len(), "bytes after the head");
    assert_eq!(parsed.code, Some(status.as_u16()));
    if !keep_alive {
        assert!(encoded.last, "a connection that will close must say so");
    }
    let no_body = head_request || matches!(status.as_u16(), 204 | 304);
    if no_body {
        assert_eq!(encoded.framing, Framing::Length(0));
    }
}
