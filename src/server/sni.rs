//! The SNI passthrough engine (`--engine sni`, docs/compat/planb.md#sni-engine): TLS is not terminated. The ClientHello is read, its
//! server name is routed like a Host (same frontend lookup, dead set and round robin), the backend is dialed
//! within `--dial-timeout`, the bytes read so far are replayed to it, and bytes are then copied both ways.
//!
//! Unlike PlanB, whose parser indexed past its buffer on truncated input (and could take the process down), every
//! read of the ClientHello is bounds-checked ([`parse_client_hello`]). Malformed, truncated, non-TLS or silent
//! input closes that one connection with one error-log line, `ERROR - <reason> - <connection id>`.
//! As in PlanB there is no HTTP response, no access-log line and no dead mark; beyond PlanB, the backend is
//! chosen by the same selection routine as HTTP (dead set, breaker, failover to the next live backend when one
//! refuses, unless `--no-failover`), and a connection that never completes its ClientHello counts in
//! `hypache_tls_handshake_failures_total`.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::{PassthroughError, Proxy};

/// Largest ClientHello accepted, records included. Real ones are well under 2 KiB (a few KiB with post-quantum
/// key shares); the bound keeps a hostile client from making the proxy buffer without end.
pub const MAX_HELLO_BYTES: usize = 64 * 1024;

/// Largest TLS record payload (2^14) plus the expansion TLS allows; anything longer is not TLS.
const MAX_RECORD: usize = 16384 + 2048;

/// Why the SNI passthrough engine closed a connection without a tunnel. Each becomes one error-log line,
/// `ERROR - <reason> - <connection id>`; there is no response to write, since nothing was terminated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SniError {
    /// The bytes are not a TLS ClientHello, or one whose lengths do not add up.
    Malformed(&'static str),
    /// The client closed or went quiet before its ClientHello was complete.
    Truncated,
    /// The client took longer than the read-header timeout to send its ClientHello.
    Timeout,
    /// A well-formed ClientHello without a host_name in server_name.
    NoServerName,
    /// No frontend for the name, or an unusable backend URL.
    NoRoute(String),
    /// Every backend of the frontend is in the dead set.
    AllDead(String),
    /// Redis failed during the lookup.
    Store(String),
    /// The backend could not be reached (or the ClientHello could not be replayed to it).
    Backend(String),
}

impl std::fmt::Display for SniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SniError::Malformed(why) => write!(f, "malformed ClientHello: {why}"),
            SniError::Truncated => {
                f.write_str("connection closed before the ClientHello was complete")
            }
            SniError::Timeout => f.write_str("timed out reading the ClientHello"),
            SniError::NoServerName => f.write_str("no server name in the ClientHello"),
            SniError::NoRoute(name) => write!(f, "no backends registered for host {name:?}"),
            SniError::AllDead(name) => write!(f, "all backends are dead for host {name:?}"),
            SniError::Store(e) => write!(f, "redis: {e}"),
            SniError::Backend(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for SniError {}

/// Serve one accepted connection to the end; failures are logged, never propagated.
pub async fn serve(client: TcpStream, proxy: Arc<Proxy>) {
    if let Err(reason) = passthrough(client, &proxy).await {
        if matches!(
            reason,
            SniError::Malformed(_)
                | SniError::Truncated
                | SniError::Timeout
                | SniError::NoServerName
        ) {
            // The TLS handshake never got going: it counts as a failed handshake of this listener.
            proxy.telemetry.metrics.tls_handshake_failures.inc();
        }
        let id = uuid::Uuid::new_v4();
        proxy.error_log.line(format!("ERROR - {reason} - {id}"));
    }
}

async fn passthrough(mut client: TcpStream, proxy: &Proxy) -> Result<(), SniError> {
    let t = &proxy.config.timeouts;
    let limit = t
        .client_read
        .map_or(t.client_read_header, |read| read.min(t.client_read_header));
    let (hello, name) = tokio::time::timeout(limit, read_client_hello(&mut client))
        .await
        .map_err(|_| SniError::Timeout)??;
    let mut backend = proxy.dial_passthrough(&name).await.map_err(|e| match e {
        PassthroughError::NoRoute => SniError::NoRoute(name.clone()),
        PassthroughError::AllDead => SniError::AllDead(name.clone()),
        PassthroughError::Store(e) => SniError::Store(e),
        PassthroughError::Backend(e) => SniError::Backend(e),
    })?;
    backend
        .write_all(&hello)
        .await
        .map_err(|e| SniError::Backend(format!("replaying the ClientHello: {e}")))?;
    crate::rt::tunnel::tunnel(client, backend, None).await;
    Ok(())
}

/// Read until the buffered bytes hold a whole ClientHello; returns the bytes (to replay) and the server name.
async fn read_client_hello(client: &mut TcpStream) -> Result<(Vec<u8>, String), SniError> {
    let mut buf = Vec::with_capacity(2048);
    loop {
        match parse_client_hello(&buf) {
            Hello::Name(name) => return Ok((buf, name)),
            Hello::NoName => return Err(SniError::NoServerName),
            Hello::Invalid(why) => return Err(SniError::Malformed(why)),
            Hello::Incomplete => {}
        }
        if buf.len() >= MAX_HELLO_BYTES {
            return Err(SniError::Malformed("ClientHello too large"));
        }
        let mut chunk = [0u8; 4096];
        let room = (MAX_HELLO_BYTES - buf.len()).min(chunk.len());
        match client.read(&mut chunk[..room]).await {
            Ok(0) | Err(_) => return Err(SniError::Truncated),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// What the bytes received so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// A complete ClientHello whose server_name extension starts with this host_name.
    Name(String),
    /// A complete ClientHello without a server name.
    NoName,
    /// Not (the start of) a TLS ClientHello.
    Invalid(&'static str),
    /// So far so good; more bytes are needed.
    Incomplete,
}

/// Parse the ClientHello at the start of `data`: TLS handshake records (a ClientHello may span several), then the
/// ClientHello body up to its server_name extension. Never reads past `data`; checks what it can as soon as the
/// bytes are there, so non-TLS input is refused at its first bytes.
pub fn parse_client_hello(data: &[u8]) -> Hello {
    let mut handshake: Vec<u8> = Vec::new();
    let mut pos = 0;
    loop {
        let header = &data[pos.min(data.len())..data.len().min(pos + 5)];
        if let Some(&kind) = header.first() {
            if kind != 0x16 {
                return Hello::Invalid("not a TLS handshake record");
            }
        }
        if let Some(&major) = header.get(1) {
            if major != 3 {
                return Hello::Invalid("unsupported record version");
            }
        }
        if let Some(&minor) = header.get(2) {
            // PlanB requires at least 3.1 (TLS 1.0) in the record header; SSL 3.0 is refused.
            if minor < 1 {
                return Hello::Invalid("unsupported record version");
            }
        }
        if header.len() < 5 {
            return Hello::Incomplete;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Hello::Invalid("bad record length");
        }
        let body_start = pos + 5;
        let available = &data[body_start..data.len().min(body_start + len)];
        handshake.extend_from_slice(available);
        if let Some(&kind) = handshake.first() {
            if kind != 1 {
                return Hello::Invalid("not a ClientHello");
            }
        }
        if handshake.len() >= 4 {
            let hello_len = usize::from(handshake[1]) << 16
                | usize::from(handshake[2]) << 8
                | usize::from(handshake[3]);
            if hello_len + 4 > MAX_HELLO_BYTES {
                return Hello::Invalid("ClientHello too large");
            }
            if handshake.len() >= 4 + hello_len {
                return parse_hello_body(&handshake[4..4 + hello_len]);
            }
        }
        if available.len() < len {
            return Hello::Incomplete;
        }
        // The record is complete but the ClientHello goes on in the next one.
        pos = body_start + len;
    }
}

/// A cursor over a complete message: every read is checked against the end.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A block with a one- or two-byte length prefix.
    fn block8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    fn block16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// The ClientHello body (RFC 8446 §4.1.2), whose length is already known to be right.
fn parse_hello_body(body: &[u8]) -> Hello {
    const WRONG: Hello = Hello::Invalid("a length inside the ClientHello is wrong");
    let mut r = Reader { data: body };
    let Some(version) = r.u16() else { return WRONG };
    if version >> 8 != 3 {
        return Hello::Invalid("unsupported ClientHello version");
    }
    if r.take(32).is_none() {
        return WRONG;
    }
    match r.block8() {
        Some(session_id) if session_id.len() <= 32 => {}
        _ => return WRONG,
    }
    match r.block16() {
        Some(suites) if !suites.is_empty() && suites.len() % 2 == 0 => {}
        _ => return WRONG,
    }
    match r.block8() {
        Some(methods) if !methods.is_empty() => {}
        _ => return WRONG,
    }
    if r.is_empty() {
        // A ClientHello without extensions (TLS 1.0 style) has no server name.
        return Hello::NoName;
    }
    let Some(extensions) = r.block16() else {
        return WRONG;
    };
    if !r.is_empty() {
        return WRONG;
    }
    let mut exts = Reader { data: extensions };
    while !exts.is_empty() {
        let (Some(kind), Some(data)) = (exts.u16(), exts.block16()) else {
            return WRONG;
        };
        if kind == 0 {
            return server_name(data);
        }
    }
    Hello::NoName
}

/// The server_name extension (RFC 6066 §3): the first entry, which must be a host_name, as PlanB takes it.
fn server_name(data: &[u8]) -> Hello {
    const WRONG: Hello = Hello::Invalid("a length inside the server_name extension is wrong");
    let mut r = Reader { data };
    let Some(list) = r.block16() else {
        return WRONG;
    };
    if !r.is_empty() || list.is_empty() {
        return WRONG;
    }
    let mut list = Reader { data: list };
    let Some(kind) = list.u8() else { return WRONG };
    let Some(name) = list.block16() else {
        return WRONG;
    };
    if kind != 0 {
        return Hello::Invalid("the first server name is not a host_name");
    }
    // Only what a DNS name can hold, so the name is safe in Redis keys and log lines.
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !valid {
        return Hello::Invalid("the server name is not a host name");
    }
    Hello::Name(String::from_utf8_lossy(name).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello record with the given extensions block (None: no extensions at all).
    fn hello(extensions: Option<&[u8]>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0); // session id
        body.extend([0, 2, 0x13, 0x01]); // one suite
        body.extend([1, 0]); // null compression
        if let Some(ext) = extensions {
            body.extend((ext.len() as u16).to_be_bytes());
            body.extend(ext);
        }
        let mut hs = vec![1];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        let mut record = vec![0x16, 3, 1];
        record.extend((hs.len() as u16).to_be_bytes());
        record.extend(hs);
        record
    }

    fn sni_ext(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![0];
        entry.extend((name.len() as u16).to_be_bytes());
        entry.extend(name);
        let mut list = (entry.len() as u16).to_be_bytes().to_vec();
        list.extend(entry);
        let mut ext = vec![0, 0];
        ext.extend((list.len() as u16).to_be_bytes());
        ext.extend(list);
        ext
    }

    #[test]
    fn finds_the_name_and_waits_for_more() {
        let mut ext = vec![0, 0x0b, 0, 2, 1, 0]; // ec_point_formats first
        ext.extend(sni_ext(b"a.example.com"));
        let whole = hello(Some(&ext));
        assert_eq!(
            parse_client_hello(&whole),
            Hello::Name("a.example.com".into())
        );
        for cut in 0..whole.len() {
            assert_eq!(
                parse_client_hello(&whole[..cut]),
                Hello::Incomplete,
                "{cut}"
            );
        }
        assert_eq!(parse_client_hello(&hello(None)), Hello::NoName);
        assert_eq!(parse_client_hello(&hello(Some(&[]))), Hello::NoName);
    }

    #[test]
    fn split_across_records() {
        let whole = hello(Some(&sni_ext(b"split.test")));
        let hs = &whole[5..];
        let (a, b) = hs.split_at(10);
        let mut two = vec![0x16, 3, 1];
        two.extend((a.len() as u16).to_be_bytes());
        two.extend(a);
        two.extend([0x16, 3, 1]);
        two.extend((b.len() as u16).to_be_bytes());
        two.extend(b);
        assert_eq!(parse_client_hello(&two), Hello::Name("split.test".into()));
    }

    #[test]
    fn refuses_garbage_early() {
        assert!(matches!(
            parse_client_hello(b"GET / HTTP/1.1\r\n"),
            Hello::Invalid(_)
        ));
        assert!(matches!(parse_client_hello(&[0x16, 2]), Hello::Invalid(_)));
        assert!(matches!(
            parse_client_hello(&[0x16, 3, 0]),
            Hello::Invalid(_)
        ));
        assert!(matches!(
            parse_client_hello(&[0x16, 3, 1, 0, 0]),
            Hello::Invalid(_)
        ));
        assert!(matches!(
            parse_client_hello(&[0x16, 3, 1, 0, 4, 2, 0, 0, 0]),
            Hello::Invalid(_)
        ));
        assert!(matches!(
            parse_client_hello(&hello(Some(&sni_ext(b"bad name")))),
            Hello::Invalid(_)
        ));
        // Extension length claiming more than there is.
        let mut ext = sni_ext(b"x.test");
        ext[3] += 1;
        assert!(matches!(
            parse_client_hello(&hello(Some(&ext))),
            Hello::Invalid(_)
        ));
    }

    #[test]
    fn survives_every_corruption_of_a_valid_hello() {
        let whole = hello(Some(&sni_ext(b"fuzz.test")));
        for i in 0..whole.len() {
            for value in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut bytes = whole.clone();
                bytes[i] = value;
                let _ = parse_client_hello(&bytes);
                let _ = parse_client_hello(&bytes[..i]);
            }
        }
    }
}
