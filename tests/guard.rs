//! Signature guards (`guard:<host>`): entree's MD5 scheme and HMAC-SHA256, the timestamp window, anti-replay
//! nonces shared through Redis, and a malformed guard failing closed.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use support::*;

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A nonce no other request of this test binary uses.
fn fresh_nonce() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "n{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// entree's signature, computed the way its Go client does.
fn entree_sign(parts: [&str; 7], secret: &str) -> String {
    let text = format!("{}\n{secret}", parts.join("\n"));
    let hex = format!("{:x}", Md5::digest(text.as_bytes()));
    base64::engine::general_purpose::STANDARD.encode(hex)
}

fn hmac_sign(text: &str, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One signed request: what is sent, and what was signed.
struct Signed {
    path: String,
    headers: Vec<(String, String)>,
}

impl Signed {
    fn headers(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// An entree client: `target` is what goes on the request line, `path` and `query` what entree signs
/// (Go's decoded `URL.Path` and `url.Values.Encode()`).
fn entree_request(
    app: &str,
    secret: &str,
    target: &str,
    (path, query): (&str, &str),
    ts: i64,
    nonce: &str,
) -> Signed {
    let ts = ts.to_string();
    let sign = entree_sign([app, "GET", "", path, query, &ts, nonce], secret);
    Signed {
        path: target.to_string(),
        headers: vec![
            ("X-App-Key".into(), app.into()),
            ("X-Timestamp".into(), ts),
            ("X-Nonce".into(), nonce.into()),
            ("X-Sign".into(), sign),
        ],
    }
}

fn entree_get(proxy: &Proxy, host: &str, ts: i64, nonce: &str) -> Resp {
    let signed = entree_request("app1", "s3cret", "/r", ("/r", ""), ts, nonce);
    get(proxy.addr(), host, &signed.path, &signed.headers())
}

#[track_caller]
fn assert_guard_reject(resp: &Resp, code: u32, msg: &str) {
    assert_eq!(resp.status, 403, "{}", resp.head_text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(
        resp.body_str(),
        format!(r#"{{"code":{code},"msg":"{msg}"}}"#),
        "{}",
        resp.head_text()
    );
}

#[track_caller]
fn assert_bad_timestamp(resp: &Resp) {
    assert_eq!(resp.status, 403, "{}", resp.head_text());
    let body = resp.body_str();
    let prefix = r#"{"code":100405,"msg":"invalid timestamp","ts":"#;
    assert!(body.starts_with(prefix) && body.ends_with('}'), "{body}");
    let ts: i64 = body[prefix.len()..body.len() - 1].parse().unwrap();
    assert!((ts - unix_now()).abs() <= 5, "ts {ts} is not now");
}

fn setup(guard: &[&str]) -> (RedisServer, Proxy, Backend) {
    let redis = RedisServer::start();
    let backend = Backend::named("ok");
    redis.set_frontend("a.com", &[&backend.url()]);
    if !guard.is_empty() {
        let mut args = vec!["HSET", "guard:a.com"];
        args.extend_from_slice(guard);
        redis.query::<i64>(&args);
    }
    let proxy = Proxy::start(&redis, &[]);
    (redis, proxy, backend)
}

const ENTREE: &[&str] = &["mode", "entree", "secret", "s3cret", "time_window", "30"];

#[test]
fn entree_signature_with_a_sorted_query_and_a_decoded_path_passes() {
    let (_redis, proxy, backend) = setup(ENTREE);
    let signed = entree_request(
        "app1",
        "s3cret",
        "/api/caf%C3%A9?b=2&a=hello+world&a=%21&c",
        ("/api/café", "a=hello+world&a=%21&b=2&c="),
        unix_now(),
        &fresh_nonce(),
    );
    let resp = get(proxy.addr(), "a.com", &signed.path, &signed.headers());
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    assert_eq!(resp.body_str(), "ok");
    // The backend gets the request as sent, guard headers included.
    let seen = backend.single_request();
    assert_eq!(seen.target, "/api/caf%C3%A9?b=2&a=hello+world&a=%21&c");
    assert!(seen.has_header("x-sign"));
}

#[test]
fn entree_content_type_and_method_are_signed() {
    let (_redis, proxy, backend) = setup(ENTREE);
    let (ts, nonce) = (unix_now().to_string(), fresh_nonce());
    let sign = entree_sign(
        ["app1", "POST", "application/json", "/p", "", &ts, &nonce],
        "s3cret",
    );
    let headers = |ctype: &'static str| {
        vec![
            ("X-App-Key", "app1".to_string()),
            ("X-Timestamp", ts.clone()),
            ("X-Nonce", nonce.clone()),
            ("X-Sign", sign.clone()),
            ("Content-Type", ctype.to_string()),
        ]
    };
    let send = |method: &str, ctype: &'static str| {
        let h = headers(ctype);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        request(proxy.addr(), method, "a.com", "/p", &h, b"{}")
    };
    // Any change to a signed part is a bad signature (checked before the nonce is spent).
    assert_guard_reject(&send("PUT", "application/json"), 100403, "invalid sign");
    assert_guard_reject(&send("POST", "text/plain"), 100403, "invalid sign");
    assert_eq!(backend.hits(), 0);
    assert_eq!(send("POST", "application/json").status, 200);
    assert_eq!(backend.single_request().body_str(), "{}");
}

#[test]
fn entree_rejections_carry_entree_codes() {
    let (_redis, proxy, backend) = setup(ENTREE);
    let now = unix_now();
    let good = entree_request("app1", "s3cret", "/r", ("/r", ""), now, &fresh_nonce());
    let without = |name: &str| -> Vec<(&str, &str)> {
        good.headers()
            .into_iter()
            .filter(|(k, _)| *k != name)
            .collect()
    };
    let missing_key = get(proxy.addr(), "a.com", "/r", &without("X-App-Key"));
    assert_guard_reject(&missing_key, 100401, "invalid parameters");
    let missing_sign = get(proxy.addr(), "a.com", "/r", &without("X-Sign"));
    assert_guard_reject(&missing_sign, 100401, "invalid parameters");

    let wrong_secret = entree_request("app1", "other", "/r", ("/r", ""), now, &fresh_nonce());
    let resp = get(proxy.addr(), "a.com", "/r", &wrong_secret.headers());
    assert_guard_reject(&resp, 100403, "invalid sign");
    // A different path than the signed one.
    let resp = get(proxy.addr(), "a.com", "/other", &good.headers());
    assert_guard_reject(&resp, 100403, "invalid sign");
    // A timestamp that is not a number (signed as such) is a bad timestamp.
    let nonce = fresh_nonce();
    let sign = entree_sign(["app1", "GET", "", "/r", "", "soon", &nonce], "s3cret");
    let resp = get(
        proxy.addr(),
        "a.com",
        "/r",
        &[
            ("X-App-Key", "app1"),
            ("X-Timestamp", "soon"),
            ("X-Nonce", &nonce),
            ("X-Sign", &sign),
        ],
    );
    assert_bad_timestamp(&resp);
    assert_eq!(
        backend.hits(),
        0,
        "rejected requests never reach the backend"
    );
    // entree lets a request without a nonce through (nothing to replay-check).
    let sign = entree_sign(
        ["app1", "GET", "", "/r", "", &now.to_string(), ""],
        "s3cret",
    );
    let resp = get(
        proxy.addr(),
        "a.com",
        "/r",
        &[
            ("X-App-Key", "app1"),
            ("X-Timestamp", &now.to_string()),
            ("X-Sign", &sign),
        ],
    );
    assert_eq!(resp.status, 200, "{}", resp.body_str());
}

#[test]
fn per_app_secrets() {
    let (_redis, proxy, _backend) = setup(&[
        "mode",
        "entree",
        "secret:mobile",
        "m-secret",
        "secret:web",
        "w-secret",
    ]);
    let now = unix_now();
    for (app, secret, status) in [
        ("mobile", "m-secret", 200),
        ("web", "w-secret", 200),
        ("web", "m-secret", 403),
        ("unknown", "m-secret", 403),
    ] {
        let signed = entree_request(app, secret, "/r", ("/r", ""), now, &fresh_nonce());
        let resp = get(proxy.addr(), "a.com", "/r", &signed.headers());
        assert_eq!(resp.status, status, "{app} signed with {secret}");
    }
}

/// Send `ts` and expect `accepted`; when the wall clock crossed a second between computing `ts` and the
/// proxy's check, the answer can differ once, so one retry with a fresh timestamp is allowed.
#[track_caller]
fn assert_timestamp(proxy: &Proxy, offset: i64, accepted: bool) {
    assert_timestamp_with(offset, accepted, |ts| {
        entree_get(proxy, "a.com", ts, &fresh_nonce())
    });
}

/// [`assert_timestamp`] for any client: `send` makes one request with the given `X-Timestamp`.
#[track_caller]
fn assert_timestamp_with(offset: i64, accepted: bool, send: impl Fn(i64) -> Resp) {
    let mut last = None;
    for _attempt in 0..2 {
        let resp = send(unix_now() + offset);
        if (resp.status == 200) == accepted {
            if !accepted {
                assert_bad_timestamp(&resp);
            }
            return;
        }
        last = Some(resp);
    }
    let resp = last.unwrap();
    panic!(
        "offset {offset}: want accepted={accepted}, got {} {}",
        resp.status,
        resp.body_str()
    );
}

#[test]
fn the_timestamp_window_is_inclusive_at_both_ends() {
    let (_redis, proxy, _backend) = setup(ENTREE);
    assert_timestamp(&proxy, 0, true);
    assert_timestamp(&proxy, -30, true);
    assert_timestamp(&proxy, 30, true);
    assert_timestamp(&proxy, -31, false);
    assert_timestamp(&proxy, 31, false);
    assert_timestamp(&proxy, -3600, false);
    assert_timestamp(&proxy, 3600, false);
}

#[test]
fn a_nonce_is_accepted_once_across_instances() {
    let (redis, proxy, backend) = setup(ENTREE);
    let second = Proxy::start(&redis, &[]);
    let nonce = fresh_nonce();
    let now = unix_now();
    assert_eq!(entree_get(&proxy, "a.com", now, &nonce).status, 200);
    let replay = entree_get(&proxy, "a.com", now, &nonce);
    assert_guard_reject(&replay, 100410, "dupliacted nonce");
    // Another hypache process on the same Redis knows the nonce too.
    let replay = entree_get(&second, "a.com", now, &nonce);
    assert_guard_reject(&replay, 100410, "dupliacted nonce");
    assert_eq!(backend.hits(), 1);
    // Remembered for twice the window by default, on the write Redis.
    let ttl: i64 = redis.query(&["TTL", &format!("guard-nonce:a.com:{nonce}")]);
    assert!((55..=60).contains(&ttl), "nonce TTL {ttl}");
    // A fresh nonce passes on the second instance.
    assert_eq!(
        entree_get(&second, "a.com", unix_now(), &fresh_nonce()).status,
        200
    );
}

#[test]
fn nonce_ttl_sets_how_long_a_nonce_is_remembered() {
    let (redis, proxy, _backend) = setup(&["mode", "entree", "secret", "s3cret", "nonce_ttl", "7"]);
    let nonce = fresh_nonce();
    assert_eq!(entree_get(&proxy, "a.com", unix_now(), &nonce).status, 200);
    let ttl: i64 = redis.query(&["TTL", &format!("guard-nonce:a.com:{nonce}")]);
    assert!((5..=7).contains(&ttl), "nonce TTL {ttl}");
    // Once it expired (deleted here, rather than waiting), the same nonce passes again.
    redis.query::<i64>(&["DEL", &format!("guard-nonce:a.com:{nonce}")]);
    assert_eq!(entree_get(&proxy, "a.com", unix_now(), &nonce).status, 200);
}

fn hmac_request(host: &str, target: &str, query: &str, app: &str, secret: &str) -> Signed {
    let (ts, nonce) = (unix_now().to_string(), fresh_nonce());
    let path = target.split('?').next().unwrap();
    let text = format!("HMAC-SHA256\nGET\n{host}\n{path}\n{query}\n{ts}\n{nonce}\n{app}");
    let mut headers = vec![
        ("X-Timestamp".to_string(), ts),
        ("X-Nonce".to_string(), nonce),
        ("X-Sign".to_string(), hmac_sign(&text, secret)),
    ];
    if !app.is_empty() {
        headers.push(("X-App-Key".to_string(), app.to_string()));
    }
    Signed {
        path: target.to_string(),
        headers,
    }
}

#[test]
fn hmac_sha256_signs_host_path_and_query() {
    let (redis, proxy, backend) = setup(&["secret", "k3y", "secret:partner", "p-key"]);
    redis.set_frontend("b.com", &[&backend.url()]);
    redis.query::<i64>(&["HSET", "guard:b.com", "secret", "k3y"]);
    let signed = hmac_request("a.com", "/x%2Fy?z=1&a=%7E", "a=~&z=1", "", "k3y");
    let resp = get(proxy.addr(), "a.com", &signed.path, &signed.headers());
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    // The Host is compared lower-cased.
    let signed = hmac_request("a.com", "/", "", "", "k3y");
    assert_eq!(
        get(proxy.addr(), "A.COM", "/", &signed.headers()).status,
        200
    );
    // The same request for another frontend (same secret) does not verify: the host is signed.
    let signed = hmac_request("a.com", "/", "", "", "k3y");
    let resp = get(proxy.addr(), "b.com", "/", &signed.headers());
    assert_guard_reject(&resp, 100403, "invalid sign");
    // Per-app secret.
    let signed = hmac_request("a.com", "/", "", "partner", "p-key");
    assert_eq!(
        get(proxy.addr(), "a.com", "/", &signed.headers()).status,
        200
    );
    let signed = hmac_request("a.com", "/", "", "partner", "k3y");
    let resp = get(proxy.addr(), "a.com", "/", &signed.headers());
    assert_guard_reject(&resp, 100403, "invalid sign");
    // Nonce and timestamp are required in this mode.
    let signed = hmac_request("a.com", "/", "", "", "k3y");
    let headers: Vec<(&str, &str)> = signed
        .headers()
        .into_iter()
        .filter(|(k, _)| *k != "X-Nonce")
        .collect();
    let resp = get(proxy.addr(), "a.com", "/", &headers);
    assert_guard_reject(&resp, 100401, "invalid parameters");
    // Replays are refused.
    let signed = hmac_request("a.com", "/", "", "", "k3y");
    assert_eq!(
        get(proxy.addr(), "a.com", "/", &signed.headers()).status,
        200
    );
    let resp = get(proxy.addr(), "a.com", "/", &signed.headers());
    assert_guard_reject(&resp, 100410, "dupliacted nonce");
    // Unsigned requests to a frontend without a guard are untouched.
    redis.set_frontend("open.com", &[&backend.url()]);
    assert_eq!(get(proxy.addr(), "open.com", "/", &[]).status, 200);
}

/// An HMAC request (no query, no app key, no body line) with the given timestamp and nonce.
fn hmac_at(host: &str, ts: i64, nonce: &str, secret: &str) -> Vec<(String, String)> {
    let text = format!("HMAC-SHA256\nGET\n{host}\n/\n\n{ts}\n{nonce}\n");
    vec![
        ("X-Timestamp".into(), ts.to_string()),
        ("X-Nonce".into(), nonce.into()),
        ("X-Sign".into(), hmac_sign(&text, secret)),
    ]
}

fn send_owned(proxy: &Proxy, host: &str, headers: &[(String, String)]) -> Resp {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    get(proxy.addr(), host, "/", &h)
}

#[test]
fn hmac_mode_refuses_stale_future_and_replayed_requests() {
    let (redis, proxy, backend) = setup(&["secret", "k3y", "time_window", "30"]);
    let hmac_get = |ts: i64| {
        send_owned(
            &proxy,
            "a.com",
            &hmac_at("a.com", ts, &fresh_nonce(), "k3y"),
        )
    };
    // Both edges of the window pass; one second beyond either is refused, as is an hour off.
    for (offset, accepted) in [
        (0, true),
        (-30, true),
        (30, true),
        (-31, false),
        (31, false),
        (-3600, false),
        (3600, false),
    ] {
        assert_timestamp_with(offset, accepted, hmac_get);
    }
    // A stale timestamp signed with the wrong secret is a bad signature first.
    let resp = send_owned(
        &proxy,
        "a.com",
        &hmac_at("a.com", unix_now() - 3600, &fresh_nonce(), "other"),
    );
    assert_guard_reject(&resp, 100403, "invalid sign");

    // Replayed, on this process and on a second one sharing the Redis.
    let second = Proxy::start(&redis, &[]);
    let signed = hmac_at("a.com", unix_now(), &fresh_nonce(), "k3y");
    assert_eq!(send_owned(&second, "a.com", &signed).status, 200);
    let replay = send_owned(&proxy, "a.com", &signed);
    assert_guard_reject(&replay, 100410, "dupliacted nonce");
    let replay = send_owned(&second, "a.com", &signed);
    assert_guard_reject(&replay, 100410, "dupliacted nonce");
    let passed = backend.hits();

    // nonce_ttl 0 turns anti-replay off: the same request passes twice and no nonce is stored.
    redis.query::<i64>(&["HSET", "guard:a.com", "nonce_ttl", "0"]);
    let nonce = fresh_nonce();
    let signed = hmac_at("a.com", unix_now(), &nonce, "k3y");
    assert_eq!(send_owned(&proxy, "a.com", &signed).status, 200);
    assert_eq!(send_owned(&proxy, "a.com", &signed).status, 200);
    assert_eq!(backend.hits(), passed + 2);
    let stored: i64 = redis.query(&["EXISTS", &format!("guard-nonce:a.com:{nonce}")]);
    assert_eq!(stored, 0);
}

#[track_caller]
fn assert_fails_closed(redis: &RedisServer, proxy: &Proxy, backend: &Backend, log_part: &str) {
    let signed = entree_request(
        "app1",
        "s3cret",
        "/r",
        ("/r", ""),
        unix_now(),
        &fresh_nonce(),
    );
    let resp = get(proxy.addr(), "a.com", "/r", &signed.headers());
    assert_guard_reject(&resp, 100400, "guard misconfigured");
    assert_eq!(backend.hits(), 0);
    let line = proxy.wait_stderr(&format!("containing {log_part:?}"), |l| {
        l.contains(log_part)
    });
    assert!(line.starts_with("ERROR in a.com -> ? - /r - "), "{line}");
    assert!(!line.contains("s3cret"), "a secret was logged: {line}");
    let _ = redis;
}

#[test]
fn a_malformed_guard_fails_closed_and_names_key_and_field() {
    let (redis, proxy, backend) = setup(&["mode", "md5", "secret", "s3cret"]);
    assert_fails_closed(
        &redis,
        &proxy,
        &backend,
        r#"malformed guard:a.com: field "mode""#,
    );

    redis.query::<i64>(&["DEL", "guard:a.com"]);
    redis.query::<i64>(&[
        "HSET",
        "guard:a.com",
        "mode",
        "entree",
        "time_window",
        "ten",
        "secret",
        "s3cret",
    ]);
    assert_fails_closed(
        &redis,
        &proxy,
        &backend,
        r#"malformed guard:a.com: field "time_window""#,
    );

    redis.query::<i64>(&["DEL", "guard:a.com"]);
    redis.query::<i64>(&["HSET", "guard:a.com", "mode", "entree"]);
    assert_fails_closed(
        &redis,
        &proxy,
        &backend,
        r#"malformed guard:a.com: field "secret""#,
    );

    redis.query::<i64>(&["DEL", "guard:a.com"]);
    redis.query::<i64>(&["HSET", "guard:a.com", "mode", "entree", "secert", "s3cret"]);
    assert_fails_closed(
        &redis,
        &proxy,
        &backend,
        r#"malformed guard:a.com: field "secert": unknown field"#,
    );

    // Every other field that can be wrong, one at a time.
    for (field, value, why) in [
        ("secret", "", "empty secret"),
        ("secret:app1", "", "empty secret"),
        ("nonce_ttl", "-1", "is not a whole number"),
        ("time_window", "1.5", "is not a whole number"),
    ] {
        redis.query::<i64>(&["DEL", "guard:a.com"]);
        redis.query::<i64>(&["HSET", "guard:a.com", "mode", "entree", "secret", "s3cret"]);
        redis.query::<i64>(&["HSET", "guard:a.com", field, value]);
        assert_fails_closed(
            &redis,
            &proxy,
            &backend,
            &format!(r#"malformed guard:a.com: field "{field}": "#),
        );
        let line = proxy.wait_stderr(why, |l| l.contains(field) && l.contains(why));
        assert!(line.contains("guard:a.com"), "{line}");
    }

    // Not a hash at all.
    redis.query::<i64>(&["DEL", "guard:a.com"]);
    redis.query::<()>(&["SET", "guard:a.com", "s3cret"]);
    assert_fails_closed(&redis, &proxy, &backend, "malformed guard:a.com: WRONGTYPE");

    // Fixed: requests pass again at once (no cache without --backend-cache).
    redis.query::<i64>(&["DEL", "guard:a.com"]);
    redis.query::<i64>(&["HSET", "guard:a.com", "mode", "entree", "secret", "s3cret"]);
    assert_eq!(
        entree_get(&proxy, "a.com", unix_now(), &fresh_nonce()).status,
        200
    );
}

fn sha256_hex(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An HMAC client for a `sign_body` frontend: `body` adds the tenth line, the body's SHA-256 (`None`: a client
/// that does not sign the body).
fn hmac_signed(method: &str, host: &str, path: &str, body: Option<&[u8]>, secret: &str) -> Signed {
    let (ts, nonce) = (unix_now().to_string(), fresh_nonce());
    let mut text = format!("HMAC-SHA256\n{method}\n{host}\n{path}\n\n{ts}\n{nonce}\n");
    if let Some(body) = body {
        text.push('\n');
        text.push_str(&sha256_hex(body));
    }
    Signed {
        path: path.to_string(),
        headers: vec![
            ("X-Timestamp".into(), ts),
            ("X-Nonce".into(), nonce),
            ("X-Sign".into(), hmac_sign(&text, secret)),
        ],
    }
}

const SIGN_BODY: &[&str] = &["secret", "k3y", "sign_body", "1", "max_body", "16"];

#[test]
fn sign_body_covers_the_body_which_reaches_the_backend_intact() {
    let (_redis, proxy, backend) = setup(SIGN_BODY);
    let body = br#"{"amount":10}"#;
    let signed = hmac_signed("POST", "a.com", "/pay", Some(body), "k3y");
    let resp = request(
        proxy.addr(),
        "POST",
        "a.com",
        "/pay",
        &signed.headers(),
        body,
    );
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    let seen = backend.single_request();
    assert_eq!(seen.body, body);
    assert_eq!(seen.header("content-length"), Some("13"));

    // The same signature with another body of the same length, and a signature without the body line, are
    // refused before the backend sees anything.
    let signed = hmac_signed("POST", "a.com", "/pay", Some(body), "k3y");
    let other = br#"{"amount":99}"#;
    let resp = request(
        proxy.addr(),
        "POST",
        "a.com",
        "/pay",
        &signed.headers(),
        other,
    );
    assert_guard_reject(&resp, 100403, "invalid sign");
    let unsigned_body = hmac_signed("POST", "a.com", "/pay", None, "k3y");
    let resp = request(
        proxy.addr(),
        "POST",
        "a.com",
        "/pay",
        &unsigned_body.headers(),
        body,
    );
    assert_guard_reject(&resp, 100403, "invalid sign");
    assert_eq!(backend.hits(), 1);

    // A chunked body is verified whole and forwarded with its length instead of its chunks.
    let signed = hmac_signed("PUT", "a.com", "/c", Some(b"hello world"), "k3y");
    let mut headers = signed.headers();
    headers.push(("Transfer-Encoding", "chunked"));
    let chunks = b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n";
    let resp = request(proxy.addr(), "PUT", "a.com", "/c", &headers, chunks);
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    let seen = backend.requests().pop().unwrap();
    assert_eq!(seen.body_str(), "hello world");
    assert!(!seen.chunked, "{seen:?}");
    assert_eq!(seen.header("content-length"), Some("11"));
    assert!(!seen.has_header("transfer-encoding"));

    // No body at all: the SHA-256 of nothing is signed.
    let signed = hmac_signed("GET", "a.com", "/", Some(b""), "k3y");
    let resp = get(proxy.addr(), "a.com", "/", &signed.headers());
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    assert_eq!(backend.requests().pop().unwrap().body, b"");
}

#[track_caller]
fn assert_413(resp: &Resp) {
    assert_eq!(resp.status, 413, "{}", resp.head_text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(
        resp.body_str(),
        r#"{"code":100413,"msg":"request body too large"}"#
    );
}

#[test]
fn a_body_over_max_body_is_413_and_never_forwarded() {
    let (_redis, proxy, backend) = setup(SIGN_BODY);
    // Exactly max_body passes.
    let body = [b'x'; 16];
    let signed = hmac_signed("POST", "a.com", "/", Some(&body), "k3y");
    let resp = request(proxy.addr(), "POST", "a.com", "/", &signed.headers(), &body);
    assert_eq!(resp.status, 200, "{}", resp.body_str());

    // One byte more, announced by Content-Length.
    let body = [b'x'; 17];
    let signed = hmac_signed("POST", "a.com", "/", Some(&body), "k3y");
    assert_413(&request(
        proxy.addr(),
        "POST",
        "a.com",
        "/",
        &signed.headers(),
        &body,
    ));

    // Found while reading a chunked body.
    let signed = hmac_signed("POST", "a.com", "/", Some(&body), "k3y");
    let mut headers = signed.headers();
    headers.push(("Transfer-Encoding", "chunked"));
    let chunks = b"a\r\nxxxxxxxxxx\r\n7\r\nxxxxxxx\r\n0\r\n\r\n";
    assert_413(&request(
        proxy.addr(),
        "POST",
        "a.com",
        "/",
        &headers,
        chunks,
    ));

    // Refused from the Content-Length alone: a client waiting for 100 Continue never has to send the body.
    let signed = hmac_signed("POST", "a.com", "/", Some(&[b'x'; 1000]), "k3y");
    let mut headers = signed.headers();
    headers.push(("Content-Length", "1000"));
    headers.push(("Expect", "100-continue"));
    let resp = exchange(
        proxy.addr(),
        &build_request("POST", Some("a.com"), "/", &headers, b""),
    );
    assert_413(&resp);
    assert_eq!(backend.hits(), 1);
}

#[test]
fn a_signed_body_that_does_not_arrive_in_time_is_408() {
    let redis = RedisServer::start();
    let backend = Backend::named("ok");
    redis.set_frontend("a.com", &[&backend.url()]);
    redis.query::<i64>(&["HSET", "guard:a.com", "secret", "k3y", "sign_body", "1"]);
    let proxy = Proxy::start(&redis, &["--client-read-timeout", "1s"]);
    let signed = hmac_signed("POST", "a.com", "/", Some(b"0123456789"), "k3y");
    let mut headers = signed.headers();
    headers.push(("Content-Length", "10"));
    let mut conn = ClientConn::connect(proxy.addr());
    let mut bytes = build_request("POST", Some("a.com"), "/", &headers, b"");
    bytes.extend_from_slice(b"012");
    conn.send(&bytes).unwrap();
    let resp = conn.read_response();
    assert_eq!(resp.status, 408, "{}", resp.head_text());
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(backend.hits(), 0);
}

#[test]
fn without_sign_body_a_guarded_body_streams_to_the_backend() {
    // A raw backend, to see the body's first chunk arrive while the client has not sent the rest.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_url = format!("http://{}", listener.local_addr().unwrap());
    let (first_chunk_seen, seen) = std::sync::mpsc::channel::<Vec<u8>>();
    let backend = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut stream, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut told = false;
        while !got.ends_with(b"0\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "the proxy closed: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
            if !told && got.windows(6).any(|w| w == b"first-") {
                first_chunk_seen.send(got.clone()).unwrap();
                told = true;
            }
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .unwrap();
        got
    });
    let redis = RedisServer::start();
    redis.set_frontend("a.com", &[&backend_url]);
    redis.query::<i64>(&["HSET", "guard:a.com", "secret", "k3y"]);
    let proxy = Proxy::start(&redis, &[]);
    let signed = hmac_signed("POST", "a.com", "/up", None, "k3y");
    let mut headers = signed.headers();
    headers.push(("Transfer-Encoding", "chunked"));
    let mut conn = ClientConn::connect(proxy.addr());
    let mut head = build_request("POST", Some("a.com"), "/up", &headers, b"");
    head.extend_from_slice(b"6\r\nfirst-\r\n");
    conn.send(&head).unwrap();
    let received = seen
        .recv_timeout(secs(10))
        .expect("the first chunk reaches the backend before the body is complete");
    assert!(
        String::from_utf8_lossy(&received).contains("Transfer-Encoding: chunked"),
        "{}",
        String::from_utf8_lossy(&received)
    );
    conn.send(b"4\r\nlast\r\n0\r\n\r\n").unwrap();
    let resp = conn.read_response();
    assert_eq!(resp.status, 200, "{}", resp.head_text());
    assert_eq!(resp.body_str(), "ok");
    let got = String::from_utf8(backend.join().unwrap()).unwrap();
    assert!(
        got.contains("first-") && got.ends_with("last\r\n0\r\n\r\n"),
        "{got}"
    );
}

#[test]
fn malformed_body_settings_fail_closed() {
    let (redis, proxy, backend) = setup(&["mode", "entree", "secret", "s3cret", "sign_body", "1"]);
    assert_fails_closed(
        &redis,
        &proxy,
        &backend,
        r#"malformed guard:a.com: field "sign_body": only mode hmac-sha256 can sign the body"#,
    );
    for (field, value) in [("sign_body", "sometimes"), ("max_body", "1MiB")] {
        redis.query::<i64>(&["DEL", "guard:a.com"]);
        redis.query::<i64>(&[
            "HSET",
            "guard:a.com",
            "mode",
            "entree",
            "secret",
            "s3cret",
            field,
            value,
        ]);
        assert_fails_closed(
            &redis,
            &proxy,
            &backend,
            &format!(r#"malformed guard:a.com: field "{field}""#),
        );
    }
}
