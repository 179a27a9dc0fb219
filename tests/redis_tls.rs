//! Managed Redis: TLS to Redis (`--read-redis-tls`, `--write-redis-tls`, a CA file) against a real
//! `redis-server --tls-port` with generated certificates, and ACL users (`--*-redis-username`).

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

use support::*;

/// A redis-server with a plain port (for the test's own writes) and a TLS port (for the proxy).
struct TlsRedis {
    child: Child,
    plain: u16,
    tls: u16,
    _dir: tempfile::TempDir,
    ca_file: std::path::PathBuf,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tls_redis() -> TlsRedis {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (cert, key, ca_file) = (
        write("redis.crt", &leaf.cert_pem),
        write("redis.key", &leaf.key_pem),
        write("ca.crt", &ca.pem),
    );
    let (plain, tls) = (free_port(), free_port());
    let child = Command::new("redis-server")
        .args(["--port", &plain.to_string(), "--tls-port", &tls.to_string()])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&ca_file)
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs");
    let up = wait_until(secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", plain)).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", tls)).is_ok()
    });
    assert!(up, "redis-server with TLS did not start");
    TlsRedis {
        child,
        plain,
        tls,
        _dir: dir,
        ca_file,
    }
}

/// A proxy reading and writing `redis` over TLS, plus `extra` flags.
fn start_over_tls(redis: &TlsRedis, extra: &[&str]) -> Proxy {
    let port = redis.tls.to_string();
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--access-log",
        "none",
        "--read-redis-port",
        &port,
        "--write-redis-port",
        &port,
        "--read-redis-tls",
        "--write-redis-tls",
    ];
    args.extend_from_slice(extra);
    Proxy::start_custom(&args, &[]).unwrap_or_else(|e| panic!("{e}"))
}

fn rpush(port: u16, key: &str, items: &[&str]) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut con = client.get_connection().unwrap();
    let mut cmd = redis::cmd("RPUSH");
    cmd.arg(key);
    for item in items {
        cmd.arg(*item);
    }
    let _: i64 = cmd.query(&mut con).unwrap();
}

#[test]
fn routes_are_read_and_dead_marks_written_over_tls() {
    let redis = tls_redis();
    let good = Backend::named("good");
    rpush(
        redis.plain,
        "frontend:tls.test",
        &["id", &refused_url(), &good.url()],
    );
    let ca = redis.ca_file.to_str().unwrap().to_string();
    let proxy = start_over_tls(
        &redis,
        &[
            "--read-redis-tls-ca-file",
            &ca,
            "--write-redis-tls-ca-file",
            &ca,
        ],
    );
    assert_eq!(get(proxy.addr(), "__ping__", "/", &[]).status, 200);
    assert_eq!(get(proxy.addr(), "tls.test", "/", &[]).body_str(), "good");
    // The dead mark went to Redis over TLS too.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", redis.plain)).unwrap();
    let mut con = client.get_connection().unwrap();
    assert_eventually(SOON, "the dead mark written", || {
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg("dead:tls.test")
            .query(&mut con)
            .unwrap();
        members == ["0"]
    });
}

#[test]
fn a_tls_redis_with_an_untrusted_certificate_is_not_used() {
    let redis = tls_redis();
    // The system roots do not know the test CA: the handshake fails, so no request is served from it.
    let proxy = start_over_tls(&redis, &[]);
    assert_eq!(get(proxy.addr(), "__ping__", "/", &[]).status, 500);
}

#[test]
fn acl_users_authenticate_and_a_wrong_one_is_fatal() {
    let redis = RedisServer::start();
    redis.query::<String>(&[
        "ACL",
        "SETUSER",
        "proxy",
        "on",
        ">pw-for-proxy",
        "~*",
        "&*",
        "+@all",
    ]);
    let app = Backend::named("app");
    redis.set_frontend("acl.test", &[&app.url()]);
    let port = redis.port().to_string();
    let args = |user: &'static str| {
        vec![
            "--listen".to_string(),
            "127.0.0.1:0".into(),
            "--access-log".into(),
            "none".into(),
            "--read-redis-port".into(),
            port.clone(),
            "--write-redis-port".into(),
            port.clone(),
            "--read-redis-username".into(),
            user.into(),
            "--write-redis-username".into(),
            user.into(),
            "--read-redis-password".into(),
            "pw-for-proxy".into(),
            "--write-redis-password".into(),
            "pw-for-proxy".into(),
        ]
    };
    let good = args("proxy");
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let proxy = Proxy::start_custom(&good, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get(proxy.addr(), "acl.test", "/", &[]).body_str(), "app");
    let bad = args("nobody");
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    let out = spawn_raw(&bad, &[], secs(15));
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(!out.stderr.contains("pw-for-proxy"), "{out:?}");
}
