//! Redis Sentinel: the master is discovered through Sentinel, and a forced failover during traffic is followed
//! without restarting the proxy (routing and dead marking keep working).

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

/// A `redis-server --sentinel` watching one master as `mymaster`, killed on drop.
struct Sentinel {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    fn start(master_port: u16) -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 5000\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server --sentinel");
        Sentinel {
            child,
            port,
            _dir: dir,
        }
    }

    fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?;
        let mut con = client.get_connection_with_timeout(millis(500))?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut con)
    }

    fn master_port(&self) -> Option<u16> {
        self.query::<Option<(String, u16)>>(&["SENTINEL", "get-master-addr-by-name", "mymaster"])
            .ok()
            .flatten()
            .map(|(_, port)| port)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sentinel_failover_during_traffic_is_followed() {
    let master = RedisServer::start();
    let replica = RedisServer::start();
    replica.query::<()>(&["REPLICAOF", "127.0.0.1", &master.port().to_string()]);
    assert_eventually(secs(10), "the replica to sync", || {
        let info: String = replica.query(&["INFO", "replication"]);
        info.contains("master_link_status:up")
    });
    let sentinel = Sentinel::start(master.port());
    assert_eventually(
        secs(10),
        "sentinel to see the master and its replica",
        || {
            sentinel.master_port() == Some(master.port())
                && sentinel
                    .query::<Vec<redis::Value>>(&["SENTINEL", "replicas", "mymaster"])
                    .map(|r| !r.is_empty())
                    .unwrap_or(false)
        },
    );

    let app = Backend::named("app");
    master.set_frontend("ha.test", &[&app.url()]);
    let sentinel_addr = format!("127.0.0.1:{}", sentinel.port);
    let proxy = Proxy::start(
        &master,
        &[
            "--read-redis-sentinel-addrs",
            &sentinel_addr,
            "--read-redis-sentinel-name",
            "mymaster",
            "--write-redis-sentinel-addrs",
            &sentinel_addr,
            "--write-redis-sentinel-name",
            "mymaster",
        ],
    );
    assert_eq!(get(proxy.addr(), "ha.test", "/", &[]).status, 200);

    // Traffic while the failover happens: record every answer with its time.
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::<(Instant, u16)>::new()));
    let traffic = {
        let (stop, log, addr) = (stop.clone(), log.clone(), proxy.addr());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let status = get(addr, "ha.test", "/", &[]).status;
                log.lock().unwrap().push((Instant::now(), status));
                std::thread::sleep(millis(10));
            }
        })
    };
    // Sentinel refuses (NOGOODSLAVE) until it has talked to the replica itself: ask until it accepts.
    assert_eventually(secs(30), "sentinel to accept SENTINEL FAILOVER", || {
        sentinel
            .query::<()>(&["SENTINEL", "FAILOVER", "mymaster"])
            .is_ok()
    });
    assert_eventually(secs(20), "sentinel to promote the replica", || {
        sentinel.master_port() == Some(replica.port())
    });
    let new_master = &replica;
    // Sentinel kills client connections on the demoted master, so a query may fail here: ask again.
    assert_eventually(secs(20), "the old master to become a replica", || {
        // Connecting may fail too (the handshake's reply cut off): that is one more try, not a failure.
        let info: Option<String> = master
            .try_con()
            .and_then(|mut con| redis::cmd("INFO").arg("replication").query(&mut con))
            .ok();
        info.is_some_and(|i| i.contains("role:slave") && i.contains("master_link_status:up"))
    });

    // Dead marking reaches the new master (the old one answers READONLY, which makes the proxy ask Sentinel).
    new_master.set_frontend("mark.test", &[&refused_url(), &app.url()]);
    assert_eventually(secs(20), "a dead mark on the new master", || {
        let resp = get(proxy.addr(), "mark.test", "/", &[]);
        resp.status == 200 && new_master.dead_members("mark.test") == vec!["0".to_string()]
    });
    // Routing reads keep working after the failover, including routes written to the new master.
    new_master.set_frontend("after.test", &[&app.url()]);
    assert_eventually(secs(10), "a route written after the failover", || {
        get(proxy.addr(), "after.test", "/", &[]).status == 200
    });

    stop.store(true, Ordering::SeqCst);
    traffic.join().unwrap();
    let log = log.lock().unwrap();
    let mut longest = Duration::ZERO;
    let mut failing_since: Option<Instant> = None;
    for (at, status) in log.iter() {
        match (status, failing_since) {
            (200, Some(since)) => {
                longest = longest.max(*at - since);
                failing_since = None;
            }
            (200, None) => {}
            (_, None) => failing_since = Some(*at),
            (_, Some(_)) => {}
        }
    }
    let ok = log.iter().filter(|(_, s)| *s == 200).count();
    println!(
        "sentinel failover: {} requests, {} answered 200, longest run of failures {:?}",
        log.len(),
        ok,
        longest
    );
    assert!(
        failing_since.is_none(),
        "routing had not recovered at the end"
    );
    assert!(longest < secs(5), "routing unavailable for {longest:?}");
}

#[test]
fn sentinel_flag_errors_exit_1_with_planb_messages() {
    for (args, message) in [
        (
            vec![
                "--read-redis-sentinel-addrs",
                "127.0.0.1:1,",
                "--read-redis-sentinel-name",
                "m",
            ],
            "redis sentinel addrs cannot be empty",
        ),
        (
            vec!["--read-redis-sentinel-addrs", "127.0.0.1:1"],
            "redis sentinel name cannot be empty",
        ),
    ] {
        let mut all = vec!["--listen", "127.0.0.1:0", "--access-log", "none"];
        all.extend(args);
        let out = spawn_raw(&all, &[], secs(15));
        assert_eq!(out.code(), Some(1), "{all:?}: {}", out.stderr);
        assert!(out.stderr.contains(message), "{all:?}: {}", out.stderr);
    }
}
