//! Entry points for the fuzz targets in `fuzz/` (`cargo +nightly fuzz run request_head`, see docs/http1.md).
//! Not an API: each takes the fuzzer's bytes and panics when an invariant breaks.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Response, StatusCode, Version};

use super::parse::{self, BodyFraming, Parsed};
use super::respond::{self, BodyLength, Framing};
use crate::upstream::{BodyDecoder, Chunked, Decoded};

/// A request as a client may send it: the engine takes its head, leaves it to hyper, or waits for more; a head
/// it takes is built into a request that keeps the engine's promises, and the bytes after it are decoded as
/// its body the way the engine reads it (never more data than a `Content-Length` says).
pub fn request_head(data: &[u8]) {
    let Parsed::Request(head) = parse::head(data, 100, 64 * 1024) else {
        return;
    };
    assert!(head.len <= data.len() && head.len <= 64 * 1024);
    let raw = Bytes::copy_from_slice(&data[..head.len]);
    let Some(request) = head.request(&raw, crate::body::ClientBody::Empty) else {
        return;
    };
    assert!(matches!(
        request.version(),
        Version::HTTP_11 | Version::HTTP_10
    ));
    let codings: Vec<_> = request
        .headers()
        .get_all(TRANSFER_ENCODING)
        .iter()
        .collect();
    let lengths: Vec<_> = request.headers().get_all(CONTENT_LENGTH).iter().collect();
    assert!(codings.len() + lengths.len() <= 1);
    let mut decoder = match head.body {
        BodyFraming::None => {
            assert!(codings.is_empty() && lengths.iter().all(|v| v.as_bytes() == b"0"));
            if request.headers().contains_key(http::header::UPGRADE) {
                assert!(head.upgrade && request.version() == Version::HTTP_11);
            }
            return;
        }
        BodyFraming::Length(len) => {
            assert_eq!(lengths.len(), 1);
            assert_eq!(
                lengths[0].to_str().ok().and_then(|v| v.parse().ok()),
                Some(len)
            );
            BodyDecoder::Length(len)
        }
        BodyFraming::Chunked => {
            assert!(codings.len() == 1 && codings[0].as_bytes().eq_ignore_ascii_case(b"chunked"));
            BodyDecoder::Chunked(Chunked::default())
        }
    };
    // An upgrade is taken only in HTTP/1.1 and without a body (checked above: `BodyFraming::None` returns).
    assert!(!request.headers().contains_key(http::header::UPGRADE));
    let mut rest = bytes::BytesMut::from(&data[head.len..]);
    let before = rest.len();
    let mut data_len = 0;
    while let Ok(decoded) = decoder.decode(&mut rest, 4096) {
        match decoded {
            Decoded::Data(d) => data_len += d.len() as u64,
            Decoded::Trailers(_) => {}
            Decoded::End | Decoded::NeedMore => break,
        }
    }
    assert!(data_len <= before as u64);
    if let Some(len) = decoder.remaining() {
        assert_eq!(data_len + len, head_length(&head.body));
    }
}

fn head_length(body: &BodyFraming) -> u64 {
    match body {
        BodyFraming::Length(len) => *len,
        _ => 0,
    }
}

/// A response head written from fuzzed parts (status, version, reason phrase, headers, body length, `HEAD`,
/// an HTTP/1.0 client, keep-alive): whatever is written must be one whole response head that httparse reads
/// back with the same status, and the framing must agree with the rules for bodies.
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
    let peer_http10 = flags & 64 != 0;
    let (mut parts, ()) = response.into_parts();
    let mut out = Vec::new();
    let reason_bytes = reason.as_ref().map(|r| r.as_bytes());
    let Ok(encoded) = respond::head(
        &mut parts,
        reason_bytes,
        body,
        (head_request, peer_http10),
        keep_alive,
        &mut out,
    ) else {
        return;
    };
    // Room for every line the head has: the fuzzer writes heads with hundreds of headers.
    let lines = memchr::memchr_iter(b'\n', &out).count();
    let mut headers = vec![httparse::EMPTY_HEADER; lines];
    let mut parsed = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(end)) = parsed.parse(&out) else {
        panic!("not one whole head: {:?}", String::from_utf8_lossy(&out));
    };
    assert_eq!(end, out.len(), "bytes after the head");
    assert_eq!(parsed.code, Some(status.as_u16()));
    if peer_http10 {
        // An HTTP/1.0 client is answered in HTTP/1.0, without chunked coding.
        assert_eq!(parsed.version, Some(0));
        assert_ne!(encoded.framing, Framing::Chunked);
    }
    if !keep_alive {
        assert!(encoded.last, "a connection that will close must say so");
    }
    let no_body = head_request || matches!(status.as_u16(), 204 | 304);
    if no_body {
        assert_eq!(encoded.framing, Framing::Length(0));
    }
}
