//! A test HTTP/1.1 backend on 127.0.0.1:0 with a raw parser, so what it records and what it
//! sends are exact. Every request is recorded before the handler runs.

use super::http::{header, header_all, parse_message, Headers};
use super::wait::Gate;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a backend waits on a gate before going on by itself (so nothing hangs forever).
pub const GATE_TIMEOUT: Duration = Duration::from_secs(20);

/// A request as the backend received it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub version: String,
    /// Headers in order, duplicates kept, names as received.
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
    /// Whether the body came chunked.
    pub chunked: bool,
    /// Index of the connection (0, 1, ...) this request came on.
    pub conn: usize,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_all(&self.headers, name)
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// One step of a streamed body, or of the wait before the headers.
#[derive(Clone)]
pub enum Step {
    /// Write this chunk (and flush).
    Data(Vec<u8>),
    Sleep(Duration),
    /// Wait until the test opens the gate (at most `GATE_TIMEOUT`).
    Wait(Gate),
    /// Open this gate (tells the test the backend reached this point).
    Signal(Gate),
}

#[derive(Clone)]
pub enum Body {
    /// A fixed body; `Content-Length` is added unless the reply already has one.
    Full(Vec<u8>),
    /// `Transfer-Encoding: chunked` (added unless present): the steps, then the trailers.
    Chunked { steps: Vec<Step>, trailers: Headers },
    /// Body written raw, then the connection is closed (no length, no chunking).
    UntilClose(Vec<u8>),
}

/// What the backend answers.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Body,
    /// Done before anything is written (slow headers).
    pub before_headers: Vec<Step>,
    /// Close the connection after this reply.
    pub close: bool,
    /// Close the connection without writing anything.
    pub abort: bool,
}

pub fn reason_for(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

impl Reply {
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            reason: reason_for(status).to_string(),
            headers: Vec::new(),
            body: Body::Full(Vec::new()),
            before_headers: Vec::new(),
            close: false,
            abort: false,
        }
    }

    /// `status` with a `text/plain` body.
    pub fn text(status: u16, body: &str) -> Reply {
        Reply::new(status)
            .header("Content-Type", "text/plain")
            .body(body.as_bytes())
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: &[u8]) -> Reply {
        self.body = Body::Full(body.to_vec());
        self
    }

    pub fn chunked(mut self, steps: Vec<Step>, trailers: &[(&str, &str)]) -> Reply {
        self.body = Body::Chunked {
            steps,
            trailers: trailers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        };
        self
    }

    pub fn until_close(mut self, body: &[u8]) -> Reply {
        self.body = Body::UntilClose(body.to_vec());
        self
    }

    pub fn delay(mut self, d: Duration) -> Reply {
        self.before_headers.push(Step::Sleep(d));
        self
    }

    pub fn wait_before_headers(mut self, gate: &Gate) -> Reply {
        self.before_headers.push(Step::Wait(gate.clone()));
        self
    }

    pub fn close(mut self) -> Reply {
        self.close = true;
        self
    }

    /// Close the connection without answering.
    pub fn abort() -> Reply {
        let mut r = Reply::new(0);
        r.abort = true;
        r
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

pub struct Backend {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Backend {
    /// Starts a backend answering with `handler`.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Backend {
        Backend::start_on("127.0.0.1:0".parse().unwrap(), handler)
    }

    /// Starts a backend on a given address (to bring a "dead" backend back on its old port).
    pub fn start_on(
        addr: SocketAddr,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Backend {
        let listener = TcpListener::bind(addr).expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Handler = Arc::new(handler);
        {
            let requests = requests.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut conn_index = 0;
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let requests = requests.clone();
                    let handler = handler.clone();
                    let idx = conn_index;
                    conn_index += 1;
                    std::thread::spawn(move || serve_conn(stream, idx, requests, handler));
                }
            });
        }
        Backend {
            addr,
            requests,
            stop,
        }
    }

    /// 200 `text/plain` whose body is `name` (handy to see which backend answered).
    pub fn named(name: &str) -> Backend {
        let name = name.to_string();
        Backend::start(move |_| Reply::text(200, &name))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://localhost:PORT` (a hostname backend).
    pub fn localhost_url(&self) -> String {
        format!("http://localhost:{}", self.addr.port())
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub fn hits(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// The only request received; panics if there is not exactly one.
    #[track_caller]
    pub fn single_request(&self) -> Request {
        let reqs = self.requests();
        assert_eq!(
            reqs.len(),
            1,
            "expected exactly one request at the backend, got {reqs:#?}"
        );
        reqs.into_iter().next().unwrap()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn run_steps(stream: &mut TcpStream, steps: &[Step]) -> std::io::Result<()> {
    for step in steps {
        match step {
            Step::Data(bytes) => {
                stream.write_all(format!("{:x}\r\n", bytes.len()).as_bytes())?;
                stream.write_all(bytes)?;
                stream.write_all(b"\r\n")?;
                stream.flush()?;
            }
            Step::Sleep(d) => std::thread::sleep(*d),
            Step::Wait(g) => {
                g.wait(GATE_TIMEOUT);
            }
            Step::Signal(g) => g.open(),
        }
    }
    Ok(())
}

fn write_reply(stream: &mut TcpStream, reply: &Reply) -> std::io::Result<()> {
    for step in &reply.before_headers {
        match step {
            Step::Sleep(d) => std::thread::sleep(*d),
            Step::Wait(g) => {
                g.wait(GATE_TIMEOUT);
            }
            Step::Signal(g) => g.open(),
            Step::Data(_) => panic!("Data before headers is not supported"),
        }
    }
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reply.reason);
    let has = |name: &str| {
        reply
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    for (n, v) in &reply.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    match &reply.body {
        Body::Full(b) => {
            if !has("content-length") && !has("transfer-encoding") {
                head.push_str(&format!("Content-Length: {}\r\n", b.len()));
            }
        }
        Body::Chunked { .. } => {
            if !has("transfer-encoding") {
                head.push_str("Transfer-Encoding: chunked\r\n");
            }
        }
        Body::UntilClose(_) => {}
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    match &reply.body {
        Body::Full(b) => stream.write_all(b)?,
        Body::UntilClose(b) => stream.write_all(b)?,
        Body::Chunked { steps, trailers } => {
            stream.flush()?;
            run_steps(stream, steps)?;
            let mut end = String::from("0\r\n");
            for (n, v) in trailers {
                end.push_str(&format!("{n}: {v}\r\n"));
            }
            end.push_str("\r\n");
            stream.write_all(end.as_bytes())?;
        }
    }
    stream.flush()
}

fn serve_conn(
    mut stream: TcpStream,
    conn: usize,
    requests: Arc<Mutex<Vec<Request>>>,
    handler: Handler,
) {
    stream.set_nodelay(true).ok();
    // Never block forever on an idle pooled connection.
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let parsed = parse_message(&buf, false, false, false);
        let Some((msg, used)) = parsed else {
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        };
        buf.drain(..used);
        let [method, target, version] = msg.start;
        let req = Request {
            method,
            target,
            version,
            headers: msg.headers,
            body: msg.body,
            trailers: msg.trailers,
            chunked: msg.chunked,
            conn,
        };
        let client_close = req
            .header_all("connection")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("close"))
            || req.version == "HTTP/1.0";
        requests.lock().unwrap().push(req.clone());
        let reply = handler(&req);
        if reply.abort {
            return;
        }
        if write_reply(&mut stream, &reply).is_err() {
            return;
        }
        if reply.close || client_close || matches!(reply.body, Body::UntilClose(_)) {
            return;
        }
    }
}

/// An address where nothing listens: a socket bound to 127.0.0.1:0 and never listening, so a connection is
/// refused. The socket is kept for the life of the test process, so that no listener of a test running beside
/// gets the port (closing it left the port free for the kernel to hand out again); it is bound with
/// SO_REUSEADDR, so a test that brings a backend or Redis back on that port (`Backend::start_on`) still can.
pub fn refused_addr() -> SocketAddr {
    static HELD: std::sync::Mutex<Vec<tokio::net::TcpSocket>> = std::sync::Mutex::new(Vec::new());
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    HELD.lock().unwrap_or_else(|p| p.into_inner()).push(socket);
    addr
}

/// `http://` + `refused_addr()`.
pub fn refused_url() -> String {
    format!("http://{}", refused_addr())
}
