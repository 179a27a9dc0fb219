//! A real `redis-server`, spawned per test and killed on drop.

use super::wait::POLL;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const REDIS_BIN: &str = "redis-server";
const START_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RedisServer {
    child: Option<Child>,
    /// The arguments it was started with, for `restart`.
    args: Vec<String>,
    port: Option<u16>,
    socket: Option<PathBuf>,
    password: Option<String>,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl RedisServer {
    /// TCP on a free 127.0.0.1 port (another port is tried if that one fails).
    pub fn start() -> RedisServer {
        Self::start_tcp(None)
    }

    /// TCP with `requirepass`.
    pub fn start_with_password(password: &str) -> RedisServer {
        Self::start_tcp(Some(password.to_string()))
    }

    fn start_tcp(password: Option<String>) -> RedisServer {
        let mut last_err = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let mut args: Vec<String> = vec![
                "--port".into(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
            ];
            if let Some(pw) = &password {
                args.push("--requirepass".into());
                args.push(pw.clone());
            }
            let mut server = RedisServer {
                child: None,
                args: Vec::new(),
                port: Some(port),
                socket: None,
                password: password.clone(),
                dir,
            };
            match server.spawn(&args) {
                Ok(()) => return server,
                Err(e) => last_err = e,
            }
        }
        panic!("could not start redis-server: {last_err}");
    }

    /// Listening only on a unix socket in a temporary directory.
    pub fn start_unix() -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("redis.sock");
        let args: Vec<String> = vec![
            "--port".into(),
            "0".into(),
            "--unixsocket".into(),
            socket.display().to_string(),
            "--unixsocketperm".into(),
            "700".into(),
        ];
        let mut server = RedisServer {
            child: None,
            args: Vec::new(),
            port: None,
            socket: Some(socket),
            password: None,
            dir,
        };
        server
            .spawn(&args)
            .unwrap_or_else(|e| panic!("could not start redis-server on a unix socket: {e}"));
        server
    }

    /// TCP on the given port (for a proxy that was started before its Redis).
    pub fn start_on_port(port: u16) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            args: Vec::new(),
            port: Some(port),
            socket: None,
            password: None,
            dir: tempfile::tempdir().unwrap(),
        };
        let args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
        ];
        server
            .spawn(&args)
            .unwrap_or_else(|e| panic!("could not start redis-server on port {port}: {e}"));
        server
    }

    /// Starts the server again with the same arguments (same port or socket), after `stop`.
    pub fn restart(&mut self) {
        self.stop();
        let args = self.args.clone();
        self.spawn(&args)
            .unwrap_or_else(|e| panic!("could not restart redis-server: {e}"));
    }

    fn spawn(&mut self, args: &[String]) -> Result<(), String> {
        self.args = args.to_vec();
        let child = Command::new(REDIS_BIN)
            .args(args)
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {REDIS_BIN}: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("redis-server exited with {status}"));
            }
            if self.ping() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err("redis-server did not answer PING in time".into());
            }
            std::thread::sleep(POLL);
        }
    }

    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
            return false;
        };
        redis::cmd("PING")
            .query::<String>(&mut con)
            .map(|s| s == "PONG")
            .unwrap_or(false)
    }

    pub fn port(&self) -> u16 {
        self.port.expect("not a TCP redis")
    }

    pub fn socket_path(&self) -> &Path {
        self.socket.as_deref().expect("not a unix-socket redis")
    }

    /// The address hypache should print when it cannot reach this server.
    pub fn address(&self) -> String {
        match (&self.port, &self.socket) {
            (Some(p), _) => format!("127.0.0.1:{p}"),
            (_, Some(s)) => s.display().to_string(),
            _ => unreachable!(),
        }
    }

    pub fn url(&self) -> String {
        self.url_db(0)
    }

    pub fn url_db(&self, db: u32) -> String {
        match (&self.port, &self.socket) {
            (Some(p), _) => match &self.password {
                Some(pw) => format!("redis://:{pw}@127.0.0.1:{p}/{db}"),
                None => format!("redis://127.0.0.1:{p}/{db}"),
            },
            (_, Some(s)) => format!("redis+unix://{}?db={db}", s.display()),
            _ => unreachable!(),
        }
    }

    pub fn con(&self) -> redis::Connection {
        self.con_db(0)
    }

    pub fn con_db(&self, db: u32) -> redis::Connection {
        self.try_con_db(db).expect("connect to test redis")
    }

    /// A connection that may fail, for a server that is closing its clients on purpose (a Sentinel
    /// failover demoting it): the caller asks again instead of panicking.
    pub fn try_con(&self) -> redis::RedisResult<redis::Connection> {
        self.try_con_db(0)
    }

    fn try_con_db(&self, db: u32) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url_db(db))?.get_connection_with_timeout(Duration::from_secs(5))
    }

    /// Runs one command on DB 0, e.g. `redis.query(&["SADD", "dead:a.com", "0"])`.
    #[track_caller]
    pub fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.con())
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// How many times this server ran `command` since it started (from `INFO commandstats`).
    pub fn calls(&self, command: &str) -> u64 {
        let info: String = self.query(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Replaces `frontend:<host>` with `[id, backends...]`.
    pub fn set_frontend(&self, host: &str, backends: &[&str]) {
        self.set_frontend_db(0, host, backends);
    }

    pub fn set_frontend_db(&self, db: u32, host: &str, backends: &[&str]) {
        let key = format!("frontend:{host}");
        let mut con = self.con_db(db);
        redis::cmd("DEL").arg(&key).query::<()>(&mut con).unwrap();
        redis::cmd("RPUSH")
            .arg(&key)
            .arg(format!("id-{host}"))
            .arg(backends)
            .query::<()>(&mut con)
            .unwrap();
    }

    /// Sorted members of `dead:<key>`.
    pub fn dead_members(&self, key: &str) -> Vec<String> {
        let mut v: Vec<String> = self.query(&["SMEMBERS", &format!("dead:{key}")]);
        v.sort();
        v
    }

    /// Subscribes to channel `dead`; returns once the subscription is confirmed.
    pub fn subscribe_dead(&self) -> Subscriber {
        self.subscribe("dead")
    }

    pub fn subscribe(&self, channel: &str) -> Subscriber {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut con = self.con();
        let channel = channel.to_string();
        std::thread::spawn(move || {
            let mut ps = con.as_pubsub();
            ps.subscribe(&channel).expect("SUBSCRIBE");
            ready_tx.send(()).unwrap();
            // Ends when redis goes away (the test is over) or the receiver is dropped.
            while let Ok(msg) = ps.get_message() {
                let payload: String = msg.get_payload().unwrap_or_default();
                if tx.send(payload).is_err() {
                    break;
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("subscription confirmed");
        Subscriber { rx }
    }

    /// Kills the server and waits for it (idempotent).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Messages of a subscribed channel.
pub struct Subscriber {
    rx: mpsc::Receiver<String>,
}

impl Subscriber {
    /// The next message, waiting at most `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<String> {
        self.rx.recv_timeout(timeout).ok()
    }
}
