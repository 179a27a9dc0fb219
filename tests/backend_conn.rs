//! The proxy's own HTTP/1 client towards backends: what it does with a pooled connection the backend closed,
//! with a backend that answers while the upload is still coming, and with the framing a backend writes. The
//! backends here are raw sockets, so every byte they send is exact.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;

use support::*;

/// A backend that accepts one connection and runs `script` on it, in a thread.
fn one_connection(
    listener: &TcpListener,
    script: impl FnOnce(TcpStream) + Send + 'static,
) -> JoinHandle<()> {
    let listener = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(secs(20))).unwrap();
        script(stream)
    })
}

/// Read from `stream` until `buf` holds `needle`; false when the stream ends first.
fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) -> bool {
    let mut chunk = [0u8; 4096];
    while !buf.windows(needle.len()).any(|w| w == needle) {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// A backend that accepts one connection, reads one request head and writes `reply` as it is.
fn answering(listener: &TcpListener, reply: impl Into<Vec<u8>>) -> JoinHandle<()> {
    let reply = reply.into();
    one_connection(listener, move |mut s| {
        let mut buf = Vec::new();
        assert!(read_until(&mut s, &mut buf, b"\r\n\r\n"));
        s.write_all(&reply).unwrap();
    })
}

fn backend_for(redis: &RedisServer, host: &str) -> TcpListener {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    redis.set_frontend(host, &[&url]);
    listener
}

#[test]
fn a_pooled_connection_the_backend_closed_is_not_used_again() {
    let redis = RedisServer::start();
    let listener = backend_for(&redis, "closing.test");
    let proxy = Proxy::start(&redis, &["--workers", "1"]);
    for i in 0..3 {
        // Each connection answers once, keep-alive by the protocol, and is then closed by the backend.
        let body = format!("answer {i}");
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let backend = answering(&listener, reply);
        let resp = get(proxy.addr(), "closing.test", "/", &[]);
        assert_eq!(resp.status, 200, "request {i}: {}", resp.head_text());
        assert_eq!(resp.body_str(), format!("answer {i}"));
        backend.join().unwrap();
    }
}

#[test]
fn a_backend_answering_before_the_upload_ends_streams_both_ways() {
    let redis = RedisServer::start();
    let listener = backend_for(&redis, "duplex.test");
    let proxy = Proxy::start(&redis, &[]);
    // The backend answers at once and echoes each chunk of the upload as it arrives.
    let backend = one_connection(&listener, |mut s| {
        let mut buf = Vec::new();
        assert!(read_until(&mut s, &mut buf, b"\r\n\r\n"));
        let at = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&buf[..at]).to_string();
        assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
        buf.drain(..at);
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        loop {
            assert!(read_until(&mut s, &mut buf, b"\r\n"));
            let line = buf.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line]).unwrap(), 16).unwrap();
            while buf.len() < line + 2 + size + 2 {
                let mut chunk = [0u8; 1024];
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "upload cut short");
                buf.extend_from_slice(&chunk[..n]);
            }
            let data = buf[line + 2..line + 2 + size].to_vec();
            buf.drain(..line + 2 + size + 2);
            s.write_all(format!("{size:X}\r\n").as_bytes()).unwrap();
            s.write_all(&data).unwrap();
            s.write_all(b"\r\n").unwrap();
            if size == 0 {
                return;
            }
        }
    });
    let mut client = ClientConn::connect(proxy.addr());
    client
        .send(b"POST /echo HTTP/1.1\r\nHost: duplex.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .unwrap();
    // The echo of the first chunk arrives while the upload is still open.
    assert!(client.read_until_contains(b"hello", secs(10)));
    client.send(b"5\r\nworld\r\n0\r\n\r\n").unwrap();
    assert!(client.read_until_contains(b"world", secs(10)));
    backend.join().unwrap();
}

#[test]
fn informational_answers_are_skipped_and_the_final_one_relayed() {
    let redis = RedisServer::start();
    let listener = backend_for(&redis, "hints.test");
    let proxy = Proxy::start(&redis, &[]);
    let backend = answering(
        &listener,
        "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
         HTTP/1.1 200 Fine\r\nContent-Length: 5\r\n\r\nfinal",
    );
    let resp = get(proxy.addr(), "hints.test", "/", &[]);
    backend.join().unwrap();
    assert_eq!(resp.status, 200);
    assert!(
        resp.head_text().starts_with("HTTP/1.1 200 Fine\r\n"),
        "{}",
        resp.head_text()
    );
    assert_eq!(resp.body_str(), "final");
    assert!(!resp.has_header("link"));
}

#[test]
fn a_response_with_conflicting_lengths_is_refused_and_blamed_on_the_backend() {
    let redis = RedisServer::start();
    let listener = backend_for(&redis, "lengths.test");
    let proxy = Proxy::start(&redis, &[]);
    let backend = answering(
        &listener,
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    );
    let resp = get(proxy.addr(), "lengths.test", "/", &[]);
    backend.join().unwrap();
    // PlanB's answer to a backend that failed the request.
    assert_eq!(resp.status, 503);
    proxy.wait_stderr("the backend's error", |l| {
        l.contains("error in backend request: invalid content-length parsed")
    });
}

#[test]
fn a_chunked_response_with_extensions_and_trailers_arrives_whole() {
    let redis = RedisServer::start();
    let listener = backend_for(&redis, "chunks.test");
    let proxy = Proxy::start(&redis, &[]);
    let backend = answering(
        &listener,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
         3;ext=1\r\nabc\r\nA \r\n0123456789\r\n0\r\nX-Sum: 13\r\n\r\n",
    );
    let resp = get(proxy.addr(), "chunks.test", "/", &[]);
    backend.join().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_str(), "abc0123456789");
}

/// A backend whose first connection answers one request, keep-alive, then reads the next request's head and
/// closes without answering: the close a pooled connection may meet at the very moment a request is written
/// to it. With `then_answer`, its second connection answers `again`.
fn closing_under_the_second_request(listener: &TcpListener, then_answer: bool) -> JoinHandle<()> {
    let listener = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        let (mut first, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        assert!(read_until(&mut first, &mut buf, b"\r\n\r\n"));
        first
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
            .unwrap();
        let mut buf = Vec::new();
        assert!(read_until(&mut first, &mut buf, b"\r\n\r\n"));
        drop(first);
        if !then_answer {
            return;
        }
        let (mut second, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        assert!(read_until(&mut second, &mut buf, b"\r\n\r\n"));
        second
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain")
            .unwrap();
    })
}

#[test]
fn a_get_meeting_a_pooled_connection_closed_under_it_is_sent_again_on_a_new_one() {
    let redis = RedisServer::start();
    let listener = backend_for(&redis, "replay.test");
    // One worker, so that the second request takes the first one's pooled connection.
    let proxy = Proxy::start(&redis, &["--workers", "1"]);
    let backend = closing_under_the_second_request(&listener, true);
    assert_eq!(
        get(proxy.addr(), "replay.test", "/", &[]).body_str(),
        "first"
    );
    let again = get(proxy.addr(), "replay.test", "/", &[]);
    assert_eq!(again.status, 200, "{}", again.head_text());
    assert_eq!(again.body_str(), "again");
    backend.join().unwrap();
}

#[test]
fn a_post_meeting_a_pooled_connection_closed_under_it_is_not_sent_again() {
    let redis = RedisServer::start();
    let listener = backend_for(&redis, "noreplay.test");
    let proxy = Proxy::start(&redis, &["--workers", "1"]);
    let backend = closing_under_the_second_request(&listener, false);
    assert_eq!(
        get(proxy.addr(), "noreplay.test", "/", &[]).body_str(),
        "first"
    );
    let post = request(proxy.addr(), "POST", "noreplay.test", "/", &[], b"x");
    // It may have been acted on: the client hears of the failure instead.
    assert_eq!(post.status, 503, "{}", post.head_text());
    backend.join().unwrap();
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "the POST was sent again on a new connection"
    );
}
