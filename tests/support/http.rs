//! A tiny HTTP/1.x message parser and a raw client, so tests can see and send exact bytes.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long a client read may block before the test gives up.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

pub type Headers = Vec<(String, String)>;

/// First value of a header (case-insensitive name).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Every value of a header, in order (case-insensitive name).
pub fn header_all<'a>(headers: &'a Headers, name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A parsed HTTP/1.x message: a request (as a backend saw it) or a response (as a client saw it).
#[derive(Clone, Debug, Default)]
pub struct Message {
    /// The three parts of the start line. Request: method, target, version.
    /// Response: version, status code, reason phrase (may contain spaces).
    pub start: [String; 3],
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
    pub chunked: bool,
}

/// Where a complete head ends (index just after the blank line).
pub fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn parse_header_lines(text: &str) -> Headers {
    text.split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|line| match line.split_once(':') {
            Some((n, v)) => (n.to_string(), v.trim_matches([' ', '\t']).to_string()),
            None => (line.to_string(), String::new()),
        })
        .collect()
}

/// Parses a chunked body starting at `buf[0]`. Returns (body, trailers, bytes consumed).
fn parse_chunked(buf: &[u8]) -> Option<(Vec<u8>, Headers, usize)> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let line_end = buf[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
        let line = String::from_utf8_lossy(&buf[pos..line_end]).to_string();
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        pos = line_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            let rest = &buf[pos..];
            if rest.starts_with(b"\r\n") {
                return Some((body, Vec::new(), pos + 2));
            }
            let end = find_head_end(rest)?;
            let trailers = parse_header_lines(&String::from_utf8_lossy(&rest[..end - 4]));
            return Some((body, trailers, pos + end));
        }
        if buf.len() < pos + size + 2 {
            return None;
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

/// Tries to parse one complete message at the start of `buf`.
/// `eof` says the peer closed, which completes a response delimited by the close.
/// `head_request` makes a response bodiless (answer to HEAD).
/// Returns the message and the number of bytes it took.
pub fn parse_message(
    buf: &[u8],
    is_response: bool,
    eof: bool,
    head_request: bool,
) -> Option<(Message, usize)> {
    let head_end = find_head_end(buf)?;
    let head = String::from_utf8_lossy(&buf[..head_end - 4]).to_string();
    let (start_line, rest) = head.split_once("\r\n").unwrap_or((head.as_str(), ""));
    let mut parts = start_line.splitn(3, ' ');
    let start = [
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    ];
    let headers = parse_header_lines(rest);
    let mut msg = Message {
        start,
        headers,
        ..Default::default()
    };
    let te_chunked = header_all(&msg.headers, "transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    let content_length = header(&msg.headers, "content-length").map(|v| {
        v.trim()
            .parse::<usize>()
            .unwrap_or_else(|_| panic!("bad content-length {v:?}"))
    });
    let bodyless = if is_response {
        let code: u16 = msg.start[1].parse().unwrap_or(0);
        head_request || (100..200).contains(&code) || code == 204 || code == 304
    } else {
        false
    };
    if bodyless {
        return Some((msg, head_end));
    }
    if te_chunked {
        let (body, trailers, used) = parse_chunked(&buf[head_end..])?;
        msg.body = body;
        msg.trailers = trailers;
        msg.chunked = true;
        return Some((msg, head_end + used));
    }
    if let Some(len) = content_length {
        if buf.len() < head_end + len {
            return None;
        }
        msg.body = buf[head_end..head_end + len].to_vec();
        return Some((msg, head_end + len));
    }
    if is_response {
        if !eof {
            return None;
        }
        msg.body = buf[head_end..].to_vec();
        return Some((msg, buf.len()));
    }
    Some((msg, head_end))
}

/// A response as the client saw it.
#[derive(Clone, Debug)]
pub struct Resp {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
    pub chunked: bool,
    /// The raw bytes of this response, exactly as received.
    pub raw: Vec<u8>,
}

impl Resp {
    fn from_message(msg: Message, raw: Vec<u8>) -> Resp {
        let [version, status, reason] = msg.start;
        Resp {
            status: status.parse().unwrap_or_else(|_| {
                panic!("bad status line in {:?}", String::from_utf8_lossy(&raw))
            }),
            version,
            reason,
            headers: msg.headers,
            body: msg.body,
            trailers: msg.trailers,
            chunked: msg.chunked,
            raw,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_all(&self.headers, name)
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    pub fn trailer(&self, name: &str) -> Option<&str> {
        header(&self.trailers, name)
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    /// The head as text (status line and headers), for assertion messages.
    pub fn head_text(&self) -> String {
        let end = find_head_end(&self.raw).unwrap_or(self.raw.len());
        String::from_utf8_lossy(&self.raw[..end]).to_string()
    }
}

/// A client connection that keeps every byte it receives.
pub struct ClientConn {
    pub stream: TcpStream,
    /// Bytes received and not yet consumed by `read_response`.
    pub buf: Vec<u8>,
    pub eof: bool,
}

impl ClientConn {
    pub fn connect(addr: SocketAddr) -> ClientConn {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to proxy {addr}: {e}"));
        stream.set_nodelay(true).ok();
        ClientConn {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Writes bytes; errors (the proxy may already have closed) are returned, not panicked on.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads what is available, waiting at most until `deadline`. Returns false on timeout.
    /// A reset after data counts as EOF.
    fn fill(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let wait = (deadline - now).max(Duration::from_millis(1));
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                true
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => false,
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(_) => {
                // Connection reset or similar: treat as the end of the stream.
                self.eof = true;
                true
            }
        }
    }

    /// Reads one complete response (for a non-HEAD request), panicking after `CLIENT_TIMEOUT`.
    #[track_caller]
    pub fn read_response(&mut self) -> Resp {
        self.try_read_response(CLIENT_TIMEOUT, false)
            .unwrap_or_else(|| {
                panic!(
                    "no complete response within {CLIENT_TIMEOUT:?}; received so far: {:?}",
                    String::from_utf8_lossy(&self.buf)
                )
            })
    }

    /// Reads one complete response within `timeout`, or `None`.
    pub fn try_read_response(&mut self, timeout: Duration, head_request: bool) -> Option<Resp> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((msg, used)) = parse_message(&self.buf, true, self.eof, head_request) {
                let raw: Vec<u8> = self.buf.drain(..used).collect();
                return Some(Resp::from_message(msg, raw));
            }
            if self.eof || !self.fill(deadline) {
                return None;
            }
        }
    }

    /// Reads until the received (unconsumed) bytes contain `needle`. Returns whether they did in time.
    pub fn read_until_contains(&mut self, needle: &[u8], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.buf.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
            if self.eof || !self.fill(deadline) {
                return false;
            }
        }
    }

    /// Reads (and keeps) everything until the peer closes. Returns whether it closed in time.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.eof {
            if !self.fill(deadline) {
                return false;
            }
        }
        true
    }

    /// Closes our writing side (sends FIN), keeps reading possible.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// Writes `bytes` on a new connection and reads until EOF or a complete response; returns the raw bytes.
pub fn raw_request(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut conn = ClientConn::connect(addr);
    let _ = conn.send(bytes);
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    loop {
        if parse_message(&conn.buf, true, conn.eof, false).is_some() {
            break;
        }
        if conn.eof || !conn.fill(deadline) {
            break;
        }
    }
    conn.buf
}

/// Writes `bytes` on a new connection and parses the response.
#[track_caller]
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> Resp {
    let mut conn = ClientConn::connect(addr);
    // A write error is fine: the proxy may answer and close before reading everything.
    let _ = conn.send(bytes);
    conn.read_response()
}

/// Builds request bytes. Adds `Host` (unless `host` is None), the given headers in order,
/// `Content-Length` when there is a body and no framing header was given, and
/// `Connection: close` unless a Connection header was given.
pub fn build_request(
    method: &str,
    host: Option<&str>,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n");
    if let Some(h) = host {
        out.push_str(&format!("Host: {h}\r\n"));
    }
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !body.is_empty() && !has("content-length") && !has("transfer-encoding") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !has("connection") {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// `GET path` with `Host: host`, the extra headers, and `Connection: close`.
#[track_caller]
pub fn get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    exchange(addr, &build_request("GET", Some(host), path, headers, b""))
}

/// Any method with a body.
#[track_caller]
pub fn request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    exchange(
        addr,
        &build_request(method, Some(host), path, headers, body),
    )
}

/// Whether a new TCP connection to `addr` is refused right now.
pub fn connection_refused(addr: SocketAddr) -> bool {
    match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
        Ok(_) => false,
        Err(e) => e.kind() == ErrorKind::ConnectionRefused,
    }
}
