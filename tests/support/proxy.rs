//! The real `hypache` binary, spawned per test and killed on drop.

use super::redis_server::RedisServer;
use super::wait::{eventually, wait_until, POLL};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_hypache");
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deadline for things the proxy should do "soon" (log lines, dead marks...).
pub const SOON: Duration = Duration::from_secs(10);

type Lines = Arc<Mutex<Vec<String>>>;

fn collect_lines(reader: impl Read + Send + 'static) -> Lines {
    let lines: Lines = Arc::new(Mutex::new(Vec::new()));
    let out = lines.clone();
    std::thread::spawn(move || {
        let mut r = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    out.lock().unwrap().push(line);
                }
            }
        }
    });
    lines
}

/// A command for the binary with a clean environment: no inherited `HYPACHE_*` or `RUST_LOG`.
fn command(args: &[String], env: &[(&str, &str)], cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("HYPACHE_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// The `--read-redis-*`/`--write-redis-*` flags that point at `redis`.
pub fn redis_args(redis: &RedisServer) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for side in ["read", "write"] {
        match redis.url().starts_with("redis+unix") {
            true => {
                out.push((format!("--{side}-redis-network"), "unix".to_string()));
                out.push((
                    format!("--{side}-redis-host"),
                    redis.socket_path().display().to_string(),
                ));
            }
            false => {
                out.push((format!("--{side}-redis-host"), "127.0.0.1".to_string()));
                out.push((format!("--{side}-redis-port"), redis.port().to_string()));
            }
        }
    }
    out
}

/// Base flags followed by `extra`; a base flag that `extra` also sets is left out
/// (clap refuses a flag given twice), so `extra` always wins.
fn merge_args(base: Vec<(String, String)>, extra: &[&str]) -> Vec<String> {
    let given = |flag: &str| {
        extra.iter().any(|a| {
            *a == flag
                || a.starts_with(&format!("{flag}="))
                || (flag == "--listen" && (*a == "-l" || a.starts_with("-l=")))
        })
    };
    let mut args = Vec::new();
    for (flag, value) in base {
        if !given(&flag) {
            args.push(flag);
            args.push(value);
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Finds `Listening on <addr>...` in a line.
fn parse_listening(line: &str) -> Option<SocketAddr> {
    parse_announce(line, "Listening on ")
}

/// Finds `Listening tls on <addr>...` in a line.
pub fn parse_listening_tls(line: &str) -> Option<SocketAddr> {
    parse_announce(line, "Listening tls on ")
}

fn parse_announce(line: &str, prefix: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let addr = rest.split("...").next()?.trim();
    addr.parse().ok()
}

/// Which listeners `args` ask for: (plain, tls).
fn expected_listeners(args: &[String]) -> (bool, bool) {
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
            .or_else(|| {
                args.iter()
                    .find_map(|a| a.strip_prefix(&format!("{flag}=")))
            })
    };
    let plain = value_of("--listen").or_else(|| value_of("-l")) != Some("disabled");
    let tls = value_of("--tls-listen").is_some_and(|v| !v.is_empty());
    (plain, tls)
}

pub struct Proxy {
    child: Child,
    /// The plain listener; `None` with `--listen disabled`.
    plain: Option<SocketAddr>,
    tls: Option<SocketAddr>,
    dir: tempfile::TempDir,
    stderr: Lines,
    stdout: Lines,
    access_log: PathBuf,
}

impl Proxy {
    /// Starts hypache on 127.0.0.1:0 against `redis`, access log in a temp dir, plus `extra` flags.
    #[track_caller]
    pub fn start(redis: &RedisServer, extra: &[&str]) -> Proxy {
        Self::start_with_env(redis, extra, &[])
    }

    #[track_caller]
    pub fn start_with_env(redis: &RedisServer, extra: &[&str], env: &[(&str, &str)]) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let access_log = dir.path().join("access.log");
        let mut base = vec![("--listen".to_string(), "127.0.0.1:0".to_string())];
        base.extend(redis_args(redis));
        base.push(("--access-log".to_string(), access_log.display().to_string()));
        let args = merge_args(base, extra);
        let want = expected_listeners(&args);
        Self::launch(args, env, dir, access_log, want).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts on `127.0.0.1:0` with `args`, pointed at a Redis port where nothing listens: for a source that
    /// needs no Redis (a routes file, etcd), where any Redis use would show.
    pub fn start_without_redis(args: &[&str]) -> Proxy {
        let nothing = super::refused_addr().port().to_string();
        let mut all = vec![
            "--listen",
            "127.0.0.1:0",
            "--read-redis-port",
            &nothing,
            "--write-redis-port",
            &nothing,
        ];
        all.extend_from_slice(args);
        Self::start_custom(&all, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts with exactly `args` (nothing added) and waits for the listening line.
    pub fn start_custom(args: &[&str], env: &[(&str, &str)]) -> Result<Proxy, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let want = expected_listeners(&args);
        Self::start_expecting(args, env, want)
    }

    /// Starts with exactly `args` and waits for the listening lines `want` says (plain, tls): for a
    /// configuration file, where the flags do not tell.
    pub fn start_expecting(
        args: Vec<String>,
        env: &[(&str, &str)],
        want: (bool, bool),
    ) -> Result<Proxy, String> {
        let dir = tempfile::tempdir().unwrap();
        let access_log = dir.path().join("access.log");
        Self::launch(args, env, dir, access_log, want)
    }

    fn launch(
        args: Vec<String>,
        env: &[(&str, &str)],
        dir: tempfile::TempDir,
        access_log: PathBuf,
        (want_plain, want_tls): (bool, bool),
    ) -> Result<Proxy, String> {
        let mut child = command(&args, env, dir.path())
            .spawn()
            .map_err(|e| format!("spawn {BIN}: {e}"))?;
        let stderr = collect_lines(child.stderr.take().unwrap());
        let stdout = collect_lines(child.stdout.take().unwrap());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let (plain, tls) = {
                let lines = stderr.lock().unwrap();
                (
                    lines.iter().find_map(|l| parse_listening(l)),
                    lines.iter().find_map(|l| parse_listening_tls(l)),
                )
            };
            if plain.is_some() == want_plain && tls.is_some() == want_tls {
                return Ok(Proxy {
                    child,
                    plain,
                    tls,
                    dir,
                    stderr,
                    stdout,
                    access_log,
                });
            }
            if let Some(status) = child.try_wait().unwrap() {
                // Let the stderr reader see EOF so the message is complete.
                wait_until(Duration::from_secs(2), || Arc::strong_count(&stderr) == 1);
                return Err(format!(
                    "hypache {args:?} exited with {status} before listening; stderr:\n{}",
                    stderr.lock().unwrap().join("\n")
                ));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "hypache {args:?} printed no `Listening on ...` within {START_TIMEOUT:?}; stderr:\n{}",
                    stderr.lock().unwrap().join("\n")
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs the binary with exactly `args` to completion (CLI tests); see [`spawn_raw`].
    pub fn spawn_raw(args: &[&str]) -> CliOutput {
        spawn_raw(args, &[], Duration::from_secs(15))
    }

    /// Every address announced in a `Listening on` line (plain listeners), in order.
    pub fn plain_addrs(&self) -> Vec<SocketAddr> {
        self.stderr_lines()
            .iter()
            .filter_map(|l| parse_listening(l))
            .collect()
    }

    /// The plain listener's address (HTTP, or the SNI passthrough).
    #[track_caller]
    pub fn addr(&self) -> SocketAddr {
        self.plain.expect("the plain listener is disabled")
    }

    /// The TLS listener's address (from `Listening tls on <addr>...`).
    #[track_caller]
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls.expect("no --tls-listen was given")
    }

    /// The `/metrics` listener's address, from the `Serving metrics on <addr>/metrics...` line
    /// (printed before `Listening on`, so it is there once the proxy has started).
    #[track_caller]
    pub fn metrics_addr(&self) -> SocketAddr {
        self.stderr_lines()
            .iter()
            .find_map(|l| {
                let rest = &l[l.find("Serving metrics on ")? + "Serving metrics on ".len()..];
                rest.split("/metrics").next()?.trim().parse().ok()
            })
            .unwrap_or_else(|| {
                panic!(
                    "no `Serving metrics on` line; stderr:\n{}",
                    self.stderr_lines().join("\n")
                )
            })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The working directory of the process (a temp dir).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn access_log_path(&self) -> &Path {
        &self.access_log
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits (up to `SOON`) for a stderr line matching `pred` and returns it.
    #[track_caller]
    pub fn wait_stderr(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let found = wait_until(SOON, || self.stderr_lines().iter().any(|l| pred(l)));
        if !found {
            panic!(
                "no stderr line {what} within {SOON:?}; stderr:\n{}",
                self.stderr_lines().join("\n")
            );
        }
        self.stderr_lines().into_iter().find(|l| pred(l)).unwrap()
    }

    /// Lines of the access-log file (empty if it does not exist yet).
    pub fn access_log_lines(&self) -> Vec<String> {
        match std::fs::read_to_string(&self.access_log) {
            Ok(s) => s.lines().map(str::to_string).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Waits for at least `n` access-log lines and returns all lines.
    #[track_caller]
    pub fn wait_access_log_lines(&self, n: usize) -> Vec<String> {
        eventually(
            SOON,
            &format!("{n} access-log line(s) in {}", self.access_log.display()),
            || {
                let lines = self.access_log_lines();
                (lines.len() >= n).then_some(lines)
            },
        )
    }

    /// Sends a signal by name (`TERM`, `INT`, ...) with the `kill` command.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for the process to exit; panics after `timeout`.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        eventually(timeout, "hypache to exit", || child.try_wait().unwrap())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The result of running the binary to completion (CLI tests).
#[derive(Debug)]
pub struct CliOutput {
    /// `None` when the process had to be killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

/// Runs the binary with exactly `args` and `env` in a temp dir; kills it after `timeout`.
pub fn spawn_raw(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> CliOutput {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut child = command(&args, env, dir.path())
        .spawn()
        .expect("spawn hypache");
    let stderr = collect_lines(child.stderr.take().unwrap());
    let stdout = collect_lines(child.stdout.take().unwrap());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(POLL);
    };
    // The pipes close with the process; wait for the readers to see EOF.
    let done = |l: &Lines| Arc::strong_count(l) == 1;
    wait_until(Duration::from_secs(2), || done(&stderr) && done(&stdout));
    let join = |l: &Lines| l.lock().unwrap().join("\n");
    CliOutput {
        status,
        stdout: join(&stdout),
        stderr: join(&stderr),
    }
}
