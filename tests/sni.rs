//! `--engine sni` (docs/compat/planb.md#sni-engine): a TCP passthrough routed by the ClientHello's server name, end to end with a
//! real TLS client and TLS backends, plus a few hundred malformed ClientHellos that must close only their own
//! connection.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::*;

fn start_sni(redis: &RedisServer, extra: &[&str]) -> Proxy {
    let mut args = vec!["--engine", "sni"];
    args.extend_from_slice(extra);
    Proxy::start(redis, &args)
}

/// A GET through the passthrough: the TLS session is between the client and the backend.
fn get_through(proxy: &Proxy, ca: &TestCa, sni: &str) -> Result<String, String> {
    let conn = tls_connect(proxy.addr(), Some(sni), ca.client_config(&[b"http/1.1"]))?;
    Ok(conn.get(sni, "/", &[]).body_str())
}

#[test]
fn passthrough_to_tls_backends_with_round_robin_and_the_dead_set() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let leaf = ca.issue(&["sni.test"]);
    let (one, two) = (
        TlsBackend::start("one", &leaf),
        TlsBackend::start("two", &leaf),
    );
    // The URL scheme does not matter to a passthrough: only host:port is dialed.
    redis.set_frontend(
        "sni.test",
        &[
            &format!("https://{}", one.addr()),
            &format!("{}", two.addr()),
        ],
    );
    let proxy = start_sni(&redis, &[]);
    assert!(proxy.stderr_lines().iter().any(|l| l == "Using sni engine"));
    let bodies: Vec<String> = (0..4)
        .map(|_| get_through(&proxy, &ca, "sni.test").unwrap())
        .collect();
    assert_eq!(bodies, ["one", "two", "one", "two"]);
    // The backend saw the client's own request: nothing was terminated or rewritten.
    let req = &one.requests()[0];
    assert_eq!(req.header("host"), Some("sni.test"));
    assert!(!req.has_header("x-forwarded-for"));
    let _: i64 = redis.query(&["SADD", "dead:sni.test", "0"]);
    for _ in 0..2 {
        assert_eq!(get_through(&proxy, &ca, "sni.test").unwrap(), "two");
    }
    // No access-log line for passthrough connections.
    assert!(proxy.access_log_lines().is_empty());
}

#[test]
fn failures_close_the_connection_with_one_error_line() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    redis.set_frontend("refused.test", &[&refused_url()]);
    let backend = Backend::named("x");
    redis.set_frontend("dead.test", &[&backend.url()]);
    let _: i64 = redis.query(&["SADD", "dead:dead.test", "0"]);
    let proxy = start_sni(&redis, &["--no-failover"]);
    for (sni, reason) in [
        (
            Some("unknown.test"),
            "no backends registered for host \"unknown.test\"",
        ),
        (
            Some("dead.test"),
            "all backends are dead for host \"dead.test\"",
        ),
        (Some("refused.test"), "connect: connection refused"),
        (None, "no server name in the ClientHello"),
    ] {
        let started = Instant::now();
        let result = tls_connect(proxy.addr(), sni, ca.client_config(&[b"http/1.1"]));
        assert!(result.is_err(), "{sni:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{sni:?}");
        let line = proxy.wait_stderr(reason, |l| l.starts_with("ERROR - ") && l.contains(reason));
        let id = line.rsplit(" - ").next().unwrap();
        assert_eq!(id.len(), 36, "a connection id ends the line: {line}");
    }
    // No dead mark from the passthrough (PlanB).
    assert!(redis.dead_members("refused.test").is_empty());
}

#[test]
fn fasthttp_is_an_alias_of_native_with_a_notice() {
    let redis = RedisServer::start();
    let backend = Backend::named("B1");
    redis.set_frontend("a.com", &[&backend.url()]);
    let proxy = Proxy::start(&redis, &["--engine", "fasthttp"]);
    assert!(proxy
        .stderr_lines()
        .iter()
        .any(|l| l.contains("--engine fasthttp") && l.contains("native")));
    assert_eq!(get(proxy.addr(), "a.com", "/", &[]).body_str(), "B1");
}

/// A small deterministic PRNG (xorshift64*), so the random inputs are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Offsets of the length fields in a ClientHello record made by rustls (record, handshake, session id, cipher
/// suites, compression, extensions), found by walking it.
fn length_fields(hello: &[u8]) -> Vec<(usize, usize)> {
    let session = 5 + 4 + 2 + 32;
    let suites = session + 1 + usize::from(hello[session]);
    let compression =
        suites + 2 + usize::from(u16::from_be_bytes([hello[suites], hello[suites + 1]]));
    let extensions = compression + 1 + usize::from(hello[compression]);
    vec![
        (3, 2),
        (6, 3),
        (session, 1),
        (suites, 2),
        (compression, 1),
        (extensions, 2),
        (extensions + 2 + 2, 2), // the first extension's length
    ]
}

/// Sends `bytes`, half-closes, and waits for the proxy to close. Returns whether it did in time.
fn closed_after(addr: SocketAddr, bytes: &[u8]) -> bool {
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The proxy may close before reading everything; a failed write is fine.
    let _ = sock.write_all(bytes);
    let _ = sock.shutdown(Shutdown::Write);
    let mut buf = [0u8; 1024];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn malformed_client_hellos_close_only_their_connection() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let leaf = ca.issue(&["fuzz.test"]);
    let backend = TlsBackend::start("alive", &leaf);
    redis.set_frontend("fuzz.test", &[&format!("{}", backend.addr())]);
    let proxy = start_sni(&redis, &[]);
    let addr = proxy.addr();

    let hello = client_hello_bytes("fuzz.test");
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    // Truncated at every length.
    for cut in 0..hello.len() {
        inputs.push(hello[..cut].to_vec());
    }
    // Wrong lengths in every length field.
    for (offset, width) in length_fields(&hello) {
        for value in [0usize, 1, 2, 0x7f, 0xff, 0xffff, 0xff_ffff] {
            let mut bytes = hello.clone();
            let be = (value as u32).to_be_bytes();
            bytes[offset..offset + width].copy_from_slice(&be[4 - width..]);
            inputs.push(bytes);
        }
    }
    // Random bytes, some behind a plausible record header so the parser gets further.
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for i in 0..150 {
        let n = 1 + rng.below(600);
        let mut bytes = rng.bytes(n);
        if i % 2 == 0 {
            let mut prefixed = vec![0x16, 3, 1, (n >> 8) as u8, n as u8, 1];
            prefixed.append(&mut bytes);
            bytes = prefixed;
        }
        inputs.push(bytes);
    }
    // Not TLS at all.
    inputs.push(b"GET / HTTP/1.1\r\nHost: fuzz.test\r\n\r\n".to_vec());
    inputs.push(vec![0u8; 5000]);
    assert!(inputs.len() >= 300, "{}", inputs.len());

    for (i, bytes) in inputs.iter().enumerate() {
        assert!(
            closed_after(addr, bytes),
            "input {i} ({} bytes) was not closed promptly: {bytes:02x?}",
            bytes.len()
        );
    }
    assert!(proxy_is_running(&proxy));
    assert!(proxy
        .stderr_lines()
        .iter()
        .any(|l| l.starts_with("ERROR - malformed ClientHello")));
    assert!(proxy
        .stderr_lines()
        .iter()
        .any(|l| l.starts_with("ERROR - connection closed before the ClientHello was complete")));
    // And the engine still passes a real session through.
    assert_eq!(get_through(&proxy, &ca, "fuzz.test").unwrap(), "alive");
}

fn proxy_is_running(proxy: &Proxy) -> bool {
    // `try_exit` needs `&mut`; a fresh connection being accepted is the black-box answer.
    TcpStream::connect_timeout(&proxy.addr(), Duration::from_secs(2)).is_ok()
}
