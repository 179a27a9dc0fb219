//! Entry points for the fuzz targets in `fuzz/` (`cargo +nightly fuzz run response_stream`, see
//! docs/backends.md). Not an API: each takes the fuzzer's bytes and panics when an invariant breaks.

use bytes::BytesMut;

use super::decode::{parse_head, Decoded, Framing};

/// Bytes a backend may send: the response head, then its body decoded as it arrives in pieces of a size the
/// first byte chooses. The decoder must end, refuse, or ask for more, never loop or return more body than a
/// `Content-Length` promised.
pub fn response_stream(data: &[u8]) {
    let [flags, stream @ ..] = data else {
        return;
    };
    let head_request = flags & 1 != 0;
    let step = usize::from(flags >> 1) + 1;
    let limit = 16 * 1024;
    let mut buf = BytesMut::new();
    let mut rest = stream;
    let head = loop {
        let take = step.min(rest.len());
        buf.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        match parse_head(&mut buf, head_request, limit) {
            Ok(Some(head)) => break head,
            Ok(None) if !rest.is_empty() => continue,
            _ => return,
        }
    };
    let mut framing = head.framing;
    let promised = match framing {
        Framing::Length(n) => Some(n),
        _ => None,
    };
    let mut body = 0u64;
    // Each round either consumes input or ends: the bound is the input's length plus one per piece.
    for _ in 0..=2 * (stream.len() + 2) {
        match framing.decode(&mut buf, limit) {
            Ok(Decoded::Data(data)) => {
                assert!(!data.is_empty(), "an empty data frame");
                body += data.len() as u64;
                if let Some(promised) = promised {
                    assert!(body <= promised, "more body than Content-Length");
                }
            }
            Ok(Decoded::Trailers(_)) | Ok(Decoded::End) => return,
            Ok(Decoded::NeedMore) if rest.is_empty() => {
                let _ = framing.at_eof();
                return;
            }
            Ok(Decoded::NeedMore) => {
                let take = step.min(rest.len());
                buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
            }
            Err(_) => return,
        }
    }
    panic!("the decoder neither ended nor used its input");
}
