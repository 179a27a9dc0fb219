//! Certificates from a directory (docs/compat/planb.md#certificates-from-a-directory) and, beyond PlanB, their reloading without a restart.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;

fn write_pair(dir: &Path, name: &str, leaf: &Leaf) {
    // Written aside and renamed in, as a careful operator (or a secret mount) does.
    for (ext, text) in [("key", &leaf.key_pem), ("crt", &leaf.cert_pem)] {
        let tmp = dir.join(format!(".{name}.{ext}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(format!("{name}.{ext}"))).unwrap();
    }
}

fn start_with_dir(redis: &RedisServer, dir: &Path) -> Proxy {
    Proxy::start(
        redis,
        &[
            "--tls-listen",
            "127.0.0.1:0",
            "--load-certificates-from",
            dir.to_str().unwrap(),
        ],
    )
}

fn served(proxy: &Proxy, ca: &TestCa, sni: &str) -> Result<Vec<u8>, String> {
    tls_connect(
        proxy.tls_addr(),
        Some(sni),
        ca.client_config(&[b"http/1.1"]),
    )
    .map(|c| c.served())
}

#[test]
fn exact_name_before_wildcard() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let exact = ca.issue(&["exact.tls.test"]);
    let wild = ca.issue(&["*.tls.test"]);
    write_pair(dir.path(), "exact.tls.test", &exact);
    write_pair(dir.path(), "*.tls.test", &wild);
    let backend = Backend::named("from-dir");
    redis.set_frontend("exact.tls.test", &[&backend.url()]);
    let proxy = start_with_dir(&redis, dir.path());
    // The opposite of the Redis order (docs/compat/planb.md#certificates-from-a-directory).
    assert_eq!(served(&proxy, &ca, "exact.tls.test").unwrap(), exact.der);
    assert_eq!(served(&proxy, &ca, "other.tls.test").unwrap(), wild.der);
    assert!(served(&proxy, &ca, "a.other.tls.test").is_err());
    assert!(tls_connect(proxy.tls_addr(), None, ca.client_config(&[b"http/1.1"])).is_err());
    let conn = tls_connect(
        proxy.tls_addr(),
        Some("exact.tls.test"),
        ca.client_config(&[b"http/1.1"]),
    )
    .unwrap();
    assert_eq!(conn.get("exact.tls.test", "/", &[]).body_str(), "from-dir");
}

#[test]
fn a_replaced_certificate_is_served_without_a_restart() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let old = ca.issue(&["renew.test"]);
    write_pair(dir.path(), "renew.test", &old);
    let proxy = start_with_dir(&redis, dir.path());
    assert_eq!(served(&proxy, &ca, "renew.test").unwrap(), old.der);
    let new = ca.issue(&["renew.test"]);
    write_pair(dir.path(), "renew.test", &new);
    assert_eventually(SOON, "the renewed certificate served", || {
        served(&proxy, &ca, "renew.test").ok() == Some(new.der.clone())
    });
    // A new name appears the same way.
    let added = ca.issue(&["added.test"]);
    write_pair(dir.path(), "added.test", &added);
    assert_eventually(SOON, "the added certificate served", || {
        served(&proxy, &ca, "added.test").ok() == Some(added.der.clone())
    });
    proxy.wait_stderr("a reload notice", |l| {
        l.contains("reloaded 2 certificate(s) from")
    });
}

#[test]
fn a_bad_pair_at_runtime_is_reported_and_the_old_set_keeps_serving() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let good = ca.issue(&["good.test"]);
    write_pair(dir.path(), "good.test", &good);
    let proxy = start_with_dir(&redis, dir.path());
    std::fs::write(dir.path().join("bad.test.key"), "not a key").unwrap();
    std::fs::write(dir.path().join("bad.test.crt"), "not a certificate").unwrap();
    let line = proxy.wait_stderr("the bad pair named", |l| {
        l.contains("ERROR reloading certificates") && l.contains("bad.test.key")
    });
    assert!(line.contains("bad.test.crt"), "{line}");
    assert!(
        line.contains("still serving the previous 1 certificate(s)"),
        "{line}"
    );
    assert_eq!(served(&proxy, &ca, "good.test").unwrap(), good.der);
    // Fixing the pair loads it.
    let fixed = ca.issue(&["bad.test"]);
    write_pair(dir.path(), "bad.test", &fixed);
    assert_eventually(SOON, "the fixed pair served", || {
        served(&proxy, &ca, "bad.test").ok() == Some(fixed.der.clone())
    });
}

#[test]
fn sighup_reloads_the_directory() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), "hup.test", &ca.issue(&["hup.test"]));
    let mut proxy = start_with_dir(&redis, dir.path());
    proxy.signal("HUP");
    proxy.wait_stderr("a reload after SIGHUP", |l| {
        l.contains("reloaded 1 certificate(s) from")
    });
    assert!(
        proxy.try_exit().is_none(),
        "SIGHUP must not end the process"
    );
    assert!(served(&proxy, &ca, "hup.test").is_ok());
}

#[test]
fn a_bad_pair_at_startup_exits_1_naming_the_files() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let port = redis.port().to_string();
    let run = |dir: &Path| {
        spawn_raw(
            &[
                "--listen",
                "127.0.0.1:0",
                "--tls-listen",
                "127.0.0.1:0",
                "--read-redis-port",
                &port,
                "--write-redis-port",
                &port,
                "--access-log",
                "none",
                "--load-certificates-from",
                dir.to_str().unwrap(),
            ],
            &[],
            Duration::from_secs(15),
        )
    };
    // A key whose certificate does not parse.
    let broken = tempfile::tempdir().unwrap();
    write_pair(broken.path(), "ok.test", &ca.issue(&["ok.test"]));
    std::fs::write(
        broken.path().join("broken.test.key"),
        ca.issue(&["x"]).key_pem,
    )
    .unwrap();
    std::fs::write(broken.path().join("broken.test.crt"), "garbage").unwrap();
    let out = run(broken.path());
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("broken.test.key") && out.stderr.contains("broken.test.crt"),
        "{out:?}"
    );
    // A key without its certificate.
    let missing = tempfile::tempdir().unwrap();
    std::fs::write(
        missing.path().join("lonely.test.key"),
        ca.issue(&["x"]).key_pem,
    )
    .unwrap();
    let out = run(missing.path());
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("lonely.test.crt"), "{out:?}");
    // A directory that does not exist.
    let out = run(Path::new("/nonexistent/certs"));
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("/nonexistent/certs"), "{out:?}");
}
