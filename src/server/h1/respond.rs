//! A response head written as hyper's HTTP/1 server writes it (hyper 1.x, `Server::encode` with lower-case
//! names, as the proxy configures it), so that clients see the same bytes whichever engine read their request:
//! the status line, the headers in the map's order, the framing decisions (`content-length` from the body's
//! exact size, `transfer-encoding: chunked` otherwise, none after `HEAD`, 204 and 304), `connection: close`
//! when the connection ends after this response, and hyper's cached `date`; to an HTTP/1.0 client, an
//! HTTP/1.0 answer with hyper's keep-alive fix-ups.

use http::header::{self, HeaderValue};
use http::response::Parts;
use http::{StatusCode, Version};

use super::parse::{digits, has_token};

/// How long a response body is, as hyper's dispatcher tells its encoder: `None` when the body is already at
/// its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyLength {
    Known(u64),
    Unknown,
}

/// How the body that follows a head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// Exactly this many bytes (0: no body is written at all).
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 response of unknown length).
    Close,
}

/// What writing a head decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Encoded {
    pub(super) framing: Framing,
    /// The connection ends after this response.
    pub(super) last: bool,
}

/// The response cannot be written (`content-length` after `transfer-encoding`, differing or invalid lengths):
/// hyper writes nothing and closes the connection.
#[derive(Debug)]
pub(super) struct Unwritable;

/// Write `parts`' head to `dst` for a request (`head_request` when its method was `HEAD`, `peer_http10` when
/// it was HTTP/1.0); `keep_alive` is whether the connection may serve another request after this one.
pub(super) fn head(
    parts: &mut Parts,
    reason: Option<&[u8]>,
    body: Option<BodyLength>,
    (head_request, peer_http10): (bool, bool),
    mut keep_alive: bool,
    dst: &mut Vec<u8>,
) -> Result<Encoded, Unwritable> {
    if peer_http10 {
        // hyper's `enforce_version` for an HTTP/1.0 peer: an answer that does not say `keep-alive` ends the
        // connection when it is HTTP/1.0 and says so when it is HTTP/1.1; then it is written as HTTP/1.0.
        if !connection_has(&parts.headers, b"keep-alive") {
            match parts.version {
                Version::HTTP_10 => keep_alive = false,
                Version::HTTP_11 if keep_alive => {
                    parts
                        .headers
                        .append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
                }
                _ => {}
            }
        }
        parts.version = Version::HTTP_10;
    } else if !keep_alive {
        // hyper's `enforce_version` for an HTTP/1.1 peer whose connection will not be kept.
        if !connection_has(&parts.headers, b"close") {
            parts
                .headers
                .append(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    let status = parts.status;
    let (mut wrote_len, mut last) = if status == StatusCode::SWITCHING_PROTOCOLS {
        (false, true)
    } else if status.is_informational() {
        // hyper answers 500 for a 1xx it was handed; the proxy never hands one.
        return Err(Unwritable);
    } else {
        (false, !keep_alive)
    };
    let can_chunk = !head_request && !status.is_informational() && !no_body(status);
    let can_have_length = !status.is_informational() && !no_body(status);

    dst.reserve(30 + parts.headers.len() * 30);
    if parts.version == Version::HTTP_11 && status == StatusCode::OK && reason.is_none() {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        match parts.version {
            Version::HTTP_10 => dst.extend_from_slice(b"HTTP/1.0 "),
            Version::HTTP_11 | Version::HTTP_2 => dst.extend_from_slice(b"HTTP/1.1 "),
            _ => return Err(Unwritable),
        }
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.push(b' ');
        match reason {
            Some(reason) => dst.extend_from_slice(reason),
            None => dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        dst.extend_from_slice(b"\r\n");
    }

    let http10 = parts.version == Version::HTTP_10;
    let mut framing = Framing::Length(0);
    let mut wrote_date = false;
    let mut name_written = false;
    let mut must_write_chunked = false;
    let mut prev_len = None;
    let mut cur_name: Option<header::HeaderName> = None;
    let end_line = |dst: &mut Vec<u8>, name_written: bool, must_write_chunked: bool| {
        if name_written {
            dst.extend_from_slice(match must_write_chunked {
                true => b", chunked\r\n",
                false => b"\r\n",
            });
        }
    };
    'headers: for (name, value) in std::mem::take(&mut parts.headers) {
        if let Some(name) = name {
            end_line(dst, name_written, must_write_chunked);
            name_written = false;
            cur_name = Some(name);
        }
        let Some(name) = cur_name.as_ref() else {
            return Err(Unwritable);
        };
        match *name {
            header::CONTENT_LENGTH => {
                if wrote_len && !name_written {
                    return Err(Unwritable);
                }
                match body {
                    Some(BodyLength::Known(known)) => {
                        if !name_written {
                            framing = Framing::Length(known);
                            dst.extend_from_slice(b"content-length: ");
                            dst.extend_from_slice(value.as_bytes());
                            wrote_len = true;
                            name_written = true;
                        }
                        continue 'headers;
                    }
                    Some(BodyLength::Unknown) => {
                        let Some(len) = digits(value.as_bytes()) else {
                            return Err(Unwritable);
                        };
                        match prev_len {
                            Some(prev) if prev != len => return Err(Unwritable),
                            Some(_) => continue 'headers,
                            None => {
                                framing = Framing::Length(len);
                                dst.extend_from_slice(b"content-length: ");
                                dst.extend_from_slice(value.as_bytes());
                                wrote_len = true;
                                name_written = true;
                                prev_len = Some(len);
                                continue 'headers;
                            }
                        }
                    }
                    None => {
                        if !head_request {
                            continue 'headers;
                        }
                    }
                }
                wrote_len = true;
            }
            header::TRANSFER_ENCODING => {
                if wrote_len && !name_written {
                    return Err(Unwritable);
                }
                if http10 || !can_chunk {
                    continue;
                }
                wrote_len = true;
                must_write_chunked = !ends_chunked(value.as_bytes());
                if !name_written {
                    framing = Framing::Chunked;
                }
                joined(
                    dst,
                    &mut name_written,
                    b"transfer-encoding: ",
                    value.as_bytes(),
                );
                continue 'headers;
            }
            header::CONNECTION => {
                if !last && has_token(value.as_bytes(), b"close") {
                    last = true;
                }
                joined(dst, &mut name_written, b"connection: ", value.as_bytes());
                continue 'headers;
            }
            header::DATE => wrote_date = true,
            header::TRAILER => {
                if http10 || !can_chunk {
                    continue;
                }
                joined(dst, &mut name_written, b"trailer: ", value.as_bytes());
                continue 'headers;
            }
            _ => {}
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    end_line(dst, name_written, must_write_chunked);

    if !wrote_len {
        framing = match body {
            Some(BodyLength::Unknown) => {
                if http10 || !can_chunk {
                    Framing::Close
                } else {
                    dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                    Framing::Chunked
                }
            }
            None | Some(BodyLength::Known(0)) => {
                if can_have_length && !head_request {
                    dst.extend_from_slice(b"content-length: 0\r\n");
                }
                Framing::Length(0)
            }
            Some(BodyLength::Known(len)) => {
                if can_have_length {
                    dst.extend_from_slice(b"content-length: ");
                    dst.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
                    dst.extend_from_slice(b"\r\n");
                    Framing::Length(len)
                } else {
                    Framing::Length(0)
                }
            }
        };
    }
    if !can_chunk {
        framing = Framing::Length(0);
    }
    if !wrote_date {
        dst.extend_from_slice(b"date: ");
        super::date::extend(dst);
        dst.extend_from_slice(b"\r\n\r\n");
    } else {
        dst.extend_from_slice(b"\r\n");
    }
    // A body until close ends the connection; hyper marks it so when the body ends.
    last |= framing == Framing::Close;
    Ok(Encoded { framing, last })
}

/// A `Connection` line of `headers` holds `token`.
fn connection_has(headers: &http::HeaderMap, token: &[u8]) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| has_token(v.as_bytes(), token))
}

/// One value of a header written as a single line, its values joined with `, ` (hyper's form for
/// `transfer-encoding`, `connection` and `trailer`); the line is ended by the next name or the end of the head.
fn joined(dst: &mut Vec<u8>, name_written: &mut bool, name_colon: &[u8], value: &[u8]) {
    match std::mem::replace(name_written, true) {
        false => dst.extend_from_slice(name_colon),
        true => dst.extend_from_slice(b", "),
    }
    dst.extend_from_slice(value);
}

/// 204 and 304 carry no body and no length.
fn no_body(status: StatusCode) -> bool {
    matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

/// The last coding of a `Transfer-Encoding` value is `chunked` (hyper's `is_chunked_`).
fn ends_chunked(value: &[u8]) -> bool {
    let visible = value.iter().all(|&b| b == b'\t' || (32..127).contains(&b));
    visible
        && value
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}
