//! Command line, environment variables and start-up (docs/compat/planb.md#flags plus the hypache contract, docs/flags.md#flags).

mod support;

use support::*;

const RUN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

fn run(args: &[&str]) -> CliOutput {
    spawn_raw(args, &[], RUN_TIMEOUT)
}

#[test]
fn version_prints_name_and_cargo_version() {
    let out = run(&["--version"]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        format!("hypache {}", env!("CARGO_PKG_VERSION")),
        "{out:?}"
    );
}

#[test]
fn help_lists_every_planb_flag_and_the_extensions() {
    let out = run(&["--help"]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    let flags = [
        "--listen",
        "--tls-listen",
        "--tls-preset",
        "--metrics-address",
        "--load-certificates-from",
        "--access-log",
        "--request-timeout",
        "--dial-timeout",
        "--client-read-timeout",
        "--client-read-header-timeout",
        "--client-write-timeout",
        "--client-idle-timeout",
        "--dead-backend-time",
        "--flush-interval",
        "--request-id-header",
        "--active-healthcheck",
        "--engine",
        "--backend-cache",
        "--no-lowercase-lookup",
        "--no-wildcard-lookup",
        "--no-catch-all",
        "--no-failover",
        "--shutdown-timeout",
        "--max-header-bytes",
        "--backend-ca-file",
        "--websocket-idle-timeout",
        "--metrics-per-frontend",
        "--access-log-format",
        "--log-level",
        "--log-format",
        "--task-dump",
    ];
    let mut missing: Vec<String> = flags
        .iter()
        .filter(|f| !out.stdout.contains(*f))
        .map(|f| f.to_string())
        .collect();
    for side in ["read", "write"] {
        for what in [
            "network",
            "host",
            "port",
            "password",
            "db",
            "sentinel-addrs",
            "sentinel-name",
        ] {
            let flag = format!("--{side}-redis-{what}");
            if !out.stdout.contains(&flag) {
                missing.push(flag);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "flags missing from --help: {missing:?}\n{}",
        out.stdout
    );
}

#[test]
fn bad_values_exit_2_and_name_the_flag() {
    let cases: &[(&str, &str)] = &[
        ("--request-timeout", "abc"),
        ("--dial-timeout", "1.5"),
        ("--client-idle-timeout", "5x"),
        ("--client-read-timeout", "abc"),
        ("--client-read-header-timeout", "1q"),
        ("--client-write-timeout", "s5"),
        ("--read-redis-port", "99999"),
        ("--write-redis-port", "70000"),
        ("--read-redis-db", "x"),
        ("--dead-backend-time", "abc"),
        ("--flush-interval", "fast"),
        ("--shutdown-timeout", "5x"),
        ("--max-header-bytes", "big"),
        ("--tls-preset", "ancient"),
        ("--engine", "fast"),
        ("--websocket-idle-timeout", "soon"),
        ("--tls-listen", "nowhere"),
        ("--metrics-address", "nowhere"),
        ("--access-log-format", "xml"),
        ("--log-format", "yaml"),
        ("--log-level", "hypache=loud"),
    ];
    let mut failures = Vec::new();
    for (flag, value) in cases {
        let out = run(&[
            "--listen",
            "127.0.0.1:0",
            "--access-log",
            "none",
            flag,
            value,
        ]);
        if out.code() != Some(2) || !out.stderr.contains(flag) {
            failures.push(format!(
                "{flag} {value}: exit {:?}, stderr {:?}",
                out.status, out.stderr
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "bad values not rejected with exit 2 naming the flag:\n{}",
        failures.join("\n")
    );
}

#[test]
fn a_bad_value_from_the_environment_exits_2_and_names_the_flag() {
    let out = spawn_raw(
        &["--listen", "127.0.0.1:0", "--access-log", "none"],
        &[("HYPACHE_REQUEST_TIMEOUT", "abc")],
        RUN_TIMEOUT,
    );
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("--request-timeout"), "{out:?}");
}

#[test]
fn unknown_engine_exits_2_naming_the_flag() {
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--access-log",
        "none",
        "--engine",
        "bogus",
    ]);
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("--engine"), "{out:?}");
}

#[test]
fn engine_native_is_accepted() {
    let redis = RedisServer::start();
    let backend = Backend::named("B1");
    redis.set_frontend("a.com", &[&backend.url()]);
    let proxy = Proxy::start(&redis, &["--engine", "native"]);
    assert_eq!(get(proxy.addr(), "a.com", "/", &[]).body_str(), "B1");
}

#[test]
fn short_listen_flag_works() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, &["-l", "127.0.0.1:0"]);
    let resp = get(proxy.addr(), "__ping__", "/", &[]);
    assert_eq!(resp.status, 200);
    assert_eq!(proxy.addr().ip().to_string(), "127.0.0.1");
}

#[test]
fn every_setting_can_come_from_the_environment() {
    let redis = RedisServer::start();
    let backend = Backend::named("B1");
    redis.set_frontend("a.com", &[&backend.url()]);
    let port = redis.port().to_string();
    let proxy = Proxy::start_custom(
        &[],
        &[
            ("HYPACHE_LISTEN", "127.0.0.1:0"),
            ("HYPACHE_READ_REDIS_HOST", "127.0.0.1"),
            ("HYPACHE_READ_REDIS_PORT", &port),
            ("HYPACHE_WRITE_REDIS_HOST", "127.0.0.1"),
            ("HYPACHE_WRITE_REDIS_PORT", &port),
            ("HYPACHE_ACCESS_LOG", "none"),
            ("HYPACHE_REQUEST_ID_HEADER", "X-Env-Id"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let resp = get(proxy.addr(), "a.com", "/", &[]);
    assert_eq!(resp.body_str(), "B1");
    let id = backend
        .single_request()
        .header("x-env-id")
        .map(str::to_string);
    assert!(
        id.as_deref().is_some_and(is_uuid_v4_lower),
        "backend should see a generated X-Env-Id, got {id:?}"
    );
}

#[test]
fn a_command_line_flag_beats_the_environment() {
    let redis = RedisServer::start();
    let backend = Backend::named("B1");
    redis.set_frontend("a.com", &[&backend.url()]);
    let proxy = Proxy::start_with_env(
        &redis,
        &["--request-id-header", "X-Flag-Id"],
        &[("HYPACHE_REQUEST_ID_HEADER", "X-Env-Id")],
    );
    get(proxy.addr(), "a.com", "/", &[]);
    let req = backend.single_request();
    assert!(req.has_header("x-flag-id"), "{req:?}");
    assert!(!req.has_header("x-env-id"), "{req:?}");
}

#[test]
fn with_wait_for_redis_startup_fails_with_exit_1_when_the_read_redis_is_unreachable() {
    let redis = RedisServer::start();
    let refused = refused_addr();
    let (rp, wp) = (refused.port().to_string(), redis.port().to_string());
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--access-log",
        "none",
        // PlanB exited at once; hypache does after waiting, and only when asked to (see redis_outage.rs).
        "--wait-for-redis",
        "1s",
        "--read-redis-port",
        &rp,
        "--write-redis-port",
        &wp,
    ]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{rp}")),
        "stderr should name the read redis address: {out:?}"
    );
    assert!(!out.stderr.contains("Listening on"), "{out:?}");
}

#[test]
fn with_wait_for_redis_startup_fails_with_exit_1_when_the_write_redis_is_unreachable() {
    let redis = RedisServer::start();
    let refused = refused_addr();
    let (rp, wp) = (redis.port().to_string(), refused.port().to_string());
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--access-log",
        "none",
        // PlanB exited at once; hypache does after waiting, and only when asked to (see redis_outage.rs).
        "--wait-for-redis",
        "1s",
        "--read-redis-port",
        &rp,
        "--write-redis-port",
        &wp,
    ]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{wp}")),
        "stderr should name the write redis address: {out:?}"
    );
}

#[test]
fn with_wait_for_redis_startup_fails_with_exit_1_when_the_unix_socket_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nothing-here.sock");
    let socket = socket.to_str().unwrap();
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--access-log",
        "none",
        // PlanB exited at once; hypache does after waiting, and only when asked to (see redis_outage.rs).
        "--wait-for-redis",
        "1s",
        "--read-redis-network",
        "unix",
        "--read-redis-host",
        socket,
        "--write-redis-network",
        "unix",
        "--write-redis-host",
        socket,
    ]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains(socket),
        "stderr should name the socket path: {out:?}"
    );
}

#[test]
fn redis_over_a_unix_socket_routes_and_marks_dead() {
    let redis = RedisServer::start_unix();
    let backend = Backend::named("B1");
    let refused = refused_url();
    redis.set_frontend("a.com", &[&backend.url(), &refused]);
    let proxy = Proxy::start(&redis, &["--no-failover"]);
    assert_eq!(get(proxy.addr(), "a.com", "/", &[]).body_str(), "B1");
    assert_eq!(get(proxy.addr(), "a.com", "/", &[]).status, 503);
    assert_eventually(SOON, "dead:a.com = {1} through the unix socket", || {
        redis.dead_members("a.com") == ["1"]
    });
}

#[test]
fn redis_password_and_db_are_used_for_reads_and_writes() {
    let redis = RedisServer::start_with_password("s3cret");
    let backend = Backend::named("B1");
    let refused = refused_url();
    // Only DB 3 holds the route.
    redis.set_frontend_db(3, "a.com", &[&backend.url(), &refused]);
    let proxy = Proxy::start(
        &redis,
        &[
            "--read-redis-password",
            "s3cret",
            "--write-redis-password",
            "s3cret",
            "--read-redis-db",
            "3",
            "--write-redis-db",
            "3",
            "--no-failover",
        ],
    );
    assert_eq!(get(proxy.addr(), "a.com", "/", &[]).body_str(), "B1");
    assert_eq!(get(proxy.addr(), "a.com", "/", &[]).status, 503);
    let dead_in_db3 = || {
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg("dead:a.com")
            .query(&mut redis.con_db(3))
            .unwrap();
        members == ["1"]
    };
    assert_eventually(SOON, "dead:a.com = {1} in DB 3", dead_in_db3);
    let in_db0: bool = redis.query(&["EXISTS", "dead:a.com"]);
    assert!(!in_db0, "dead set must not be written to DB 0");
}

#[test]
fn a_wrong_redis_password_fails_startup() {
    let redis = RedisServer::start_with_password("s3cret");
    let p = redis.port().to_string();
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--access-log",
        "none",
        "--read-redis-port",
        &p,
        "--write-redis-port",
        &p,
        "--read-redis-password",
        "pw-Zq9x",
        "--write-redis-password",
        "pw-Zq9x",
    ]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains(&format!("127.0.0.1:{p}")), "{out:?}");
    assert!(
        !out.stderr.contains("pw-Zq9x"),
        "the password must not be logged: {out:?}"
    );
}
