//! The gonfork preset (docs/nfork.md), black-box: the real binary with `--nfork-config` (or run as `nforkd`),
//! real test backends as outbounds, and its REST controller over real sockets.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_hypache");

/// A running preset, killed on drop.
struct Nforkd {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    api: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nforkd {
    /// `hypache --nfork-config <file with inbounds> --nfork-listen 127.0.0.1:0`.
    fn start(inbounds: Value) -> Nforkd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbounds.json");
        std::fs::write(&path, inbounds.to_string()).unwrap();
        let path = path.display().to_string();
        let args = ["--nfork-config", &path, "--nfork-listen", "127.0.0.1:0"];
        Nforkd::spawn(Path::new(BIN), &args, dir)
    }

    /// Runs `program` with `args` in `dir` and waits for the controller's line.
    fn spawn(program: &Path, args: &[&str], dir: tempfile::TempDir) -> Nforkd {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("HYPACHE_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().expect("spawn the binary");
        let stderr: Arc<Mutex<Vec<String>>> = Arc::default();
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
        let api = eventually(SOON, "the `Serving nfork API on` line", || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "exited with {status}: {}",
                    stderr.lock().unwrap().join("\n")
                );
            }
            stderr
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| announced(l, "Serving nfork API on "))
        });
        Nforkd {
            child,
            stderr,
            api,
            _dir: dir,
        }
    }

    /// The address inbound `name` listens on, from its `Listening on` line.
    #[track_caller]
    fn inbound(&self, name: &str) -> SocketAddr {
        let tag = format!("(nfork inbound {name:?})");
        eventually(SOON, &format!("inbound {name} listening"), || {
            self.stderr
                .lock()
                .unwrap()
                .iter()
                .rev()
                .filter(|l| l.contains(&tag))
                .find_map(|l| announced(l, "Listening on "))
        })
    }

    /// A request to the controller.
    #[track_caller]
    fn api(&self, method: &str, path: &str, body: &str) -> Resp {
        request(self.api, method, "localhost", path, &[], body.as_bytes())
    }

    /// A JSON answer of the controller (200).
    #[track_caller]
    fn get_json(&self, path: &str) -> Value {
        let resp = self.api("GET", path, "");
        assert_eq!(resp.status, 200, "GET {path}: {}", resp.body_str());
        serde_json::from_slice(&resp.body).unwrap()
    }

    /// Polls an outbound's stats until `pred` holds for them.
    #[track_caller]
    fn stats_until(&self, inbound: &str, outbound: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let path = format!("/v1/nfork/{inbound}/{outbound}/stats");
        eventually(SOON, &format!("stats of {inbound}/{outbound}"), || {
            let stats = self.get_json(&path);
            pred(&stats).then_some(stats)
        })
    }
}

impl Drop for Nforkd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn announced(line: &str, prefix: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    rest.split("...").next()?.trim().parse().ok()
}

/// One inbound listening on a port of its own, the first outbound active.
fn inbound(name: &str, out: &[(&str, String)], extra: Value) -> Value {
    let mut inbound = json!({
        "name": name,
        "listen": "127.0.0.1:0",
        "out": out.iter().map(|(n, a)| (n.to_string(), json!(a))).collect::<serde_json::Map<_, _>>(),
        "active": out[0].0,
    });
    for (k, v) in extra.as_object().unwrap() {
        inbound[k] = v.clone();
    }
    inbound
}

#[test]
fn every_outbound_gets_the_request_and_the_client_sees_only_the_active_answer() {
    let prod = Backend::start(|_| Reply::text(201, "prod").header("X-Who", "prod"));
    let staging = Backend::start(|_| Reply::text(500, "staging").header("X-Who", "staging"));
    let nfork = Nforkd::start(json!([inbound(
        "foo",
        &[
            ("prod", prod.addr().to_string()),
            ("staging", staging.url())
        ],
        json!({})
    )]));
    let addr = nfork.inbound("foo");
    let resp = request(
        addr,
        "POST",
        "front.example",
        "/path/x?q=1&r=2",
        &[("X-Custom", "kept")],
        b"hello",
    );
    assert_eq!(resp.status, 201, "{}", resp.head_text());
    assert_eq!(resp.body_str(), "prod");
    assert_eq!(resp.header("X-Who"), Some("prod"));

    let seen = prod.single_request();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/path/x?q=1&r=2");
    assert_eq!(seen.header("X-Nfork"), Some("true"));
    assert_eq!(seen.header("Host"), Some(prod.addr().to_string().as_str()));
    assert_eq!(seen.header("X-Custom"), Some("kept"));
    assert_eq!(seen.body_str(), "hello");

    assert_eventually(SOON, "the shadow to get its copy", || staging.hits() == 1);
    let copy = staging.single_request();
    assert_eq!(copy.method, "POST");
    assert_eq!(copy.target, "/path/x?q=1&r=2");
    assert_eq!(copy.header("X-Nfork"), Some("true"));
    assert_eq!(
        copy.header("Host"),
        Some(staging.addr().to_string().as_str()),
        "the Host is the outbound's, without its scheme"
    );
    assert_eq!(copy.header("X-Custom"), Some("kept"));
    assert_eq!(copy.body_str(), "hello");
}

#[test]
fn stats_come_in_one_second_windows_in_gonforks_json_shape() {
    let prod = Backend::named("prod");
    let staging = Backend::start(|_| Reply::text(404, "nope"));
    let nfork = Nforkd::start(json!([inbound(
        "foo",
        &[
            ("prod", prod.addr().to_string()),
            ("staging", staging.addr().to_string())
        ],
        json!({})
    )]));
    let addr = nfork.inbound("foo");
    assert_eq!(get(addr, "x", "/", &[]).status, 200);

    // The request shows up once its window is complete.
    let stats = nfork.stats_until("foo", "prod", |s| s["requests"] == 1);
    let raw = nfork.api("GET", "/v1/nfork/foo/prod/stats", "");
    assert_eq!(raw.header("Content-Type"), Some("application/json"));
    let text = raw.body_str();
    if serde_json::from_str::<Value>(&text).unwrap() == stats {
        // Same window: the exact text, key order included.
        let p = |k: &str| stats["latency"][k].as_str().unwrap().to_string();
        assert_eq!(
            text,
            format!(
                r#"{{"requests":1,"errors":0,"timeouts":0,"latency":{{"p50":"{}","p90":"{}","p99":"{}","pmx":"{}"}},"responses":{{"200":1}}}}"#,
                p("p50"),
                p("p90"),
                p("p99"),
                p("pmx")
            )
        );
    }
    for key in ["p50", "p90", "p99", "pmx"] {
        let value = stats["latency"][key].as_str().unwrap();
        assert!(
            value.ends_with("µs") || value.ends_with("ms") || value.ends_with('s'),
            "{key}: {value} is not a Go duration"
        );
        assert_ne!(value, "0s", "{key}: one request took some time");
    }
    let staging_stats = nfork.stats_until("foo", "staging", |s| s["requests"] == 1);
    assert_eq!(staging_stats["responses"], json!({"404": 1}));

    // Every inbound, every outbound.
    let all = nfork.get_json("/v1/nfork/stats");
    let outbounds: Vec<&String> = all["foo"].as_object().unwrap().keys().collect();
    assert_eq!(outbounds, ["prod", "staging"]);
    let foo = nfork.get_json("/v1/nfork/foo/stats");
    assert_eq!(foo.as_object().unwrap().len(), 2);
    assert!(foo["prod"]["latency"]["pmx"].is_string());

    // The next window has no traffic: the counts go back to zero.
    let empty = nfork.stats_until("foo", "prod", |s| s["requests"] == 0);
    assert_eq!(
        empty,
        json!({"requests":0,"errors":0,"timeouts":0,
               "latency":{"p50":"0s","p90":"0s","p99":"0s","pmx":"0s"},"responses":{}})
    );
}

#[test]
fn a_slow_and_a_refusing_shadow_do_not_affect_the_client() {
    let prod = Backend::named("prod");
    let slow = Backend::start(|_| Reply::text(200, "slow").delay(secs(2)));
    let refused = refused_url();
    let nfork = Nforkd::start(json!([inbound(
        "foo",
        &[
            ("prod", prod.addr().to_string()),
            ("slow", slow.addr().to_string()),
            ("refused", refused)
        ],
        json!({})
    )]));
    let addr = nfork.inbound("foo");
    for i in 0..5 {
        let started = Instant::now();
        let resp = get(addr, "x", &format!("/{i}"), &[]);
        let took = started.elapsed();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body_str(), "prod");
        assert!(
            took < Duration::from_millis(900),
            "request {i} took {took:?}: the 2 s shadow held the client"
        );
    }
    // The active outbound's answers are counted too (read first: a window is readable for one second).
    let prod_stats = nfork.stats_until("foo", "prod", |s| s["requests"].as_u64() > Some(0));
    assert!(prod_stats["responses"]["200"].as_u64() > Some(0));
    // A refused connection is one of gonfork's timeouts.
    let stats = nfork.stats_until("foo", "refused", |s| s["timeouts"].as_u64() > Some(0));
    assert_eq!(stats["errors"], 0);
    assert_eq!(stats["responses"], json!({}));
    // The slow shadow runs into the inbound's 1 s default timeout.
    nfork.stats_until("foo", "slow", |s| s["timeouts"].as_u64() > Some(0));
    assert_eq!(slow.hits(), 5);
}

#[test]
fn an_active_failure_or_timeout_answers_timeout_code() {
    let slow = Backend::start(|_| Reply::text(200, "late").delay(secs(3)));
    let nfork = Nforkd::start(json!([
        inbound(
            "slow",
            &[("prod", slow.addr().to_string())],
            json!({"timeout": "300ms", "timeoutCode": 504})
        ),
        inbound("refused", &[("prod", refused_url())], json!({})),
    ]));
    let started = Instant::now();
    let resp = get(nfork.inbound("slow"), "x", "/late", &[]);
    assert!(started.elapsed() < secs(2), "the 300ms timeout applies");
    assert_eq!(resp.status, 504);
    assert!(
        resp.body_str().contains("Client.Timeout exceeded"),
        "{}",
        resp.body_str()
    );
    assert!(resp.body_str().starts_with("Get \"http://127.0.0.1:"));
    nfork.stats_until("slow", "prod", |s| s["timeouts"] == 1);

    // The default timeoutCode is 503, with Go's error text as the body.
    let resp = get(nfork.inbound("refused"), "x", "/", &[]);
    assert_eq!(resp.status, 503);
    assert!(
        resp.body_str().contains("connection refused"),
        "{}",
        resp.body_str()
    );
    let stats = nfork.stats_until("refused", "prod", |s| s["requests"] == 1);
    assert_eq!(stats["timeouts"], 1, "a refusal counts as a timeout");
}

#[test]
fn the_active_answer_streams_to_the_client() {
    let gate = Gate::new();
    let held = gate.clone();
    let prod = Backend::start(move |_| {
        Reply::new(200).chunked(
            vec![
                Step::Data(b"first".to_vec()),
                Step::Wait(held.clone()),
                Step::Data(b"second".to_vec()),
            ],
            &[],
        )
    });
    let shadow = Backend::named("shadow");
    let nfork = Nforkd::start(json!([inbound(
        "foo",
        &[
            ("prod", prod.addr().to_string()),
            ("shadow", shadow.addr().to_string())
        ],
        json!({"timeout": "10s"})
    )]));
    let mut conn = ClientConn::connect(nfork.inbound("foo"));
    conn.send(&build_request("GET", Some("x"), "/", &[], b""))
        .unwrap();
    assert!(
        conn.read_until_contains(b"first", secs(5)),
        "the first chunk reaches the client before the outbound finishes"
    );
    assert!(!gate.is_open());
    gate.open();
    let resp = conn.read_response();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_str(), "firstsecond");
}

#[test]
fn a_body_above_the_cap_reaches_the_active_outbound_and_skips_the_shadows() {
    let prod = Backend::named("prod");
    let shadow = Backend::named("shadow");
    let nfork = Nforkd::start(json!([inbound(
        "foo",
        &[
            ("prod", prod.addr().to_string()),
            ("shadow", shadow.addr().to_string())
        ],
        json!({"timeout": "10s"})
    )]));
    let addr = nfork.inbound("foo");
    let big = vec![b'x'; 5 * 1024 * 1024];
    let resp = request(addr, "PUT", "x", "/upload", &[], &big);
    assert_eq!(resp.status, 200);
    assert_eq!(prod.single_request().body.len(), big.len());

    let skipped = eventually(SOON, "the skipped copy to be counted", || {
        let skipped = nfork.get_json("/v1/nfork/foo/skipped");
        (skipped["shadow"]["tooLarge"] == 1).then_some(skipped)
    });
    assert_eq!(skipped["shadow"]["full"], 0);
    // A body within the cap (1 MiB by default) is mirrored.
    let small = vec![b'y'; 1024 * 1024];
    assert_eq!(request(addr, "PUT", "x", "/small", &[], &small).status, 200);
    assert_eventually(SOON, "the shadow to get the small body", || {
        shadow.hits() == 1
    });
    let copy = shadow.single_request();
    assert_eq!(copy.target, "/small");
    assert_eq!(copy.body.len(), small.len());
}

#[test]
fn the_rest_controller_has_gonforks_paths_and_codes() {
    let prod = Backend::named("prod");
    let staging = Backend::named("staging");
    let extra = Backend::named("extra");
    let nfork = Nforkd::start(json!([inbound(
        "foo",
        &[
            ("prod", prod.addr().to_string()),
            ("staging", staging.addr().to_string())
        ],
        json!({"timeout": "250ms", "idleConn": 8})
    )]));
    let foo = nfork.inbound("foo");

    // GET /v1/nfork: the inbounds as configured, the timeout as a Go duration.
    let list = nfork.get_json("/v1/nfork");
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "foo");
    assert_eq!(list[0]["listen"], "127.0.0.1:0");
    assert_eq!(list[0]["active"], "prod");
    assert_eq!(list[0]["timeout"], "250ms");
    assert_eq!(list[0]["timeoutCode"], 503);
    assert_eq!(list[0]["idleConn"], 8);
    assert_eq!(nfork.get_json("/v1/nfork/foo"), list[0]);

    // A handler error is a 400 with a plain-text message.
    let resp = nfork.api("GET", "/v1/nfork/nope", "");
    assert_eq!(resp.status, 400);
    assert_eq!(resp.body_str().trim(), "unknown inbound 'nope'");
    assert!(resp
        .header("Content-Type")
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(nfork.api("GET", "/v1/nfork/nope/stats", "").status, 400);
    assert_eq!(nfork.api("GET", "/v1/nfork/foo/nope/stats", "").status, 400);

    // PUT an outbound: the body is a JSON string; a nil result is a 204.
    let body = json!(extra.addr().to_string()).to_string();
    let resp = nfork.api("PUT", "/v1/nfork/foo/extra", &body);
    assert_eq!(resp.status, 204, "{}", resp.body_str());
    assert_eq!(
        nfork.get_json("/v1/nfork/foo")["out"]["extra"],
        extra.addr().to_string()
    );
    assert_eq!(get(foo, "x", "/after-put", &[]).body_str(), "prod");
    assert_eventually(SOON, "the new outbound to get copies", || extra.hits() == 1);
    assert_eq!(
        nfork.api("PUT", "/v1/nfork/foo/bad", "not json").status,
        400
    );
    assert_eq!(nfork.api("PUT", "/v1/nfork/foo/bad", "42").status, 400);
    assert_eq!(nfork.api("PUT", "/v1/nfork/nope/x", &body).status, 400);
    assert!(nfork.get_json("/v1/nfork/foo/extra/stats")["requests"].is_u64());

    // DELETE an outbound; the active one is refused.
    let resp = nfork.api("DELETE", "/v1/nfork/foo/prod", "");
    assert_eq!(resp.status, 400);
    assert!(
        resp.body_str()
            .contains("can't remove active outbound 'prod'"),
        "{}",
        resp.body_str()
    );
    assert_eq!(nfork.api("DELETE", "/v1/nfork/foo/extra", "").status, 204);
    assert_eq!(nfork.api("DELETE", "/v1/nfork/foo/extra", "").status, 400);
    assert!(nfork.get_json("/v1/nfork/foo")["out"]
        .get("extra")
        .is_none());

    // Beyond gonfork: activate another outbound.
    assert_eq!(
        nfork
            .api("POST", "/v1/nfork/foo/staging/activate", "")
            .status,
        204
    );
    assert_eq!(nfork.get_json("/v1/nfork/foo")["active"], "staging");
    assert_eq!(get(foo, "x", "/", &[]).body_str(), "staging");
    assert_eq!(
        nfork.api("POST", "/v1/nfork/foo/nope/activate", "").status,
        400
    );

    // POST a new inbound: it starts listening; a second one with the same name is refused.
    let bar = inbound("bar", &[("only", prod.addr().to_string())], json!({}));
    let resp = nfork.api("POST", "/v1/nfork", &bar.to_string());
    assert_eq!(resp.status, 204, "{}", resp.body_str());
    let bar_addr = nfork.inbound("bar");
    assert_eq!(get(bar_addr, "x", "/", &[]).body_str(), "prod");
    let resp = nfork.api("POST", "/v1/nfork", &bar.to_string());
    assert_eq!(resp.status, 400);
    assert!(resp.body_str().contains("already exists"));
    let no_listen = json!({"name": "baz", "out": {"a": "127.0.0.1:1"}, "active": "a"});
    let resp = nfork.api("POST", "/v1/nfork", &no_listen.to_string());
    assert_eq!(resp.status, 400);
    assert!(resp.body_str().contains("missing listen host"));
    assert_eq!(nfork.get_json("/v1/nfork").as_array().unwrap().len(), 2);
    let stats = nfork.get_json("/v1/nfork/stats");
    assert!(stats["bar"]["only"].is_object() && stats["foo"]["staging"].is_object());

    // DELETE an inbound closes its listener.
    assert_eq!(nfork.api("DELETE", "/v1/nfork/bar", "").status, 204);
    assert_eventually(SOON, "bar's listener to close", || {
        connection_refused(bar_addr)
    });
    assert_eq!(nfork.api("DELETE", "/v1/nfork/bar", "").status, 400);

    // Paths and methods outside the API.
    assert_eq!(nfork.api("PATCH", "/v1/nfork", "").status, 405);
    assert_eq!(nfork.api("GET", "/v2/nfork", "").status, 404);
    assert_eq!(nfork.api("GET", "/v1/nfork/a/b/c/d", "").status, 404);
}

#[test]
fn a_change_does_not_disturb_a_request_in_flight() {
    let gate = Gate::new();
    let held = gate.clone();
    let prod = Backend::start(move |_| Reply::text(200, "prod").wait_before_headers(&held));
    let staging = Backend::named("staging");
    let nfork = Nforkd::start(json!([inbound(
        "foo",
        &[
            ("prod", prod.addr().to_string()),
            ("staging", staging.addr().to_string())
        ],
        json!({"timeout": "10s"})
    )]));
    let addr = nfork.inbound("foo");
    let in_flight = std::thread::spawn(move || get(addr, "x", "/", &[]));
    assert_eventually(SOON, "the request to reach prod", || prod.hits() == 1);
    assert_eq!(
        nfork
            .api("POST", "/v1/nfork/foo/staging/activate", "")
            .status,
        204
    );
    assert_eq!(nfork.api("DELETE", "/v1/nfork/foo/prod", "").status, 204);
    gate.open();
    let resp = in_flight.join().unwrap();
    assert_eq!(resp.body_str(), "prod", "the request keeps its snapshot");
    assert_eq!(get(addr, "x", "/", &[]).body_str(), "staging");
}

#[test]
fn the_nforkd_name_takes_gonforks_command_line() {
    let prod = Backend::named("prod");
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("nforkd");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let config = json!([{"name": "web", "listen": "127.0.0.1:0",
                         "out": {"prod": prod.addr().to_string()}, "active": "prod"}]);
    std::fs::write(dir.path().join("other.json"), config.to_string()).unwrap();
    let nfork = Nforkd::spawn(
        &link,
        &["--config", "other.json", "--listen", "127.0.0.1:0"],
        dir,
    );
    assert_eq!(get(nfork.inbound("web"), "x", "/", &[]).body_str(), "prod");
    assert_eq!(nfork.get_json("/v1/nfork")[0]["name"], "web");

    // Go's single-dash flags, and the default file nfork.json in the working directory.
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("nforkd");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    std::fs::write(dir.path().join("nfork.json"), config.to_string()).unwrap();
    let nfork = Nforkd::spawn(&link, &["-listen", "127.0.0.1:0"], dir);
    assert_eq!(get(nfork.inbound("web"), "x", "/", &[]).body_str(), "prod");
}

#[test]
fn a_bad_file_exits_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#"[{"out":{"a":"127.0.0.1:1"},"active":"a"}]"#,
            "missing listen host",
        ),
        (
            r#"[{"listen":":1","out":{"a":"127.0.0.1:1"},"active":"b"}]"#,
            "active outbound 'b' doesn't exist",
        ),
        (
            r#"[{"listen":":1","out":{"a":"127.0.0.1:1"},"active":"a"},]"#,
            "invalid JSON",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.json"));
        std::fs::write(&path, text).unwrap();
        let out = Proxy::spawn_raw(&["--nfork-config", path.to_str().unwrap()]);
        assert_eq!(out.code(), Some(2), "{text}: {}", out.stderr);
        assert!(out.stderr.contains(want), "{text}: {}", out.stderr);
        assert!(
            out.stderr.contains(path.to_str().unwrap()),
            "{}",
            out.stderr
        );
    }
    let missing = dir.path().join("missing.json");
    let out = Proxy::spawn_raw(&["--nfork-config", missing.to_str().unwrap()]);
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("unable to read file"), "{}", out.stderr);
}

#[test]
fn a_full_shadow_drops_copies_instead_of_queueing_them() {
    let prod = Backend::named("prod");
    let gate = Gate::new();
    let held = gate.clone();
    let stalled = Backend::start(move |_| Reply::text(200, "late").wait_before_headers(&held));
    let nfork = Nforkd::start(json!([inbound(
        "foo",
        &[
            ("prod", prod.addr().to_string()),
            ("stalled", stalled.addr().to_string())
        ],
        json!({"timeout": "10s", "shadowLimit": 1})
    )]));
    let addr = nfork.inbound("foo");
    assert_eq!(get(addr, "x", "/1", &[]).body_str(), "prod");
    assert_eventually(SOON, "the first copy to reach the shadow", || {
        stalled.hits() == 1
    });
    for i in 2..=4 {
        let started = Instant::now();
        assert_eq!(get(addr, "x", &format!("/{i}"), &[]).body_str(), "prod");
        assert!(started.elapsed() < secs(1), "a full shadow held the client");
    }
    let skipped = eventually(SOON, "the dropped copies to be counted", || {
        let skipped = nfork.get_json("/v1/nfork/foo/skipped");
        (skipped["stalled"]["full"] == 3).then_some(skipped)
    });
    assert_eq!(skipped["prod"]["full"], 0);
    gate.open();
    assert_eq!(stalled.hits(), 1, "dropped copies are not sent later");
}
