//! Active health checks (`--active-healthcheck`, docs/compat/planb.md#active-health-check): probe backends that were marked dead and
//! revive them in Redis as soon as they answer again; and, for a `healthcheck:<key>` hash with an `interval`,
//! probe every backend and mark the failing ones dead too ([`live`]).
//!
//! The monitor listens on channel `dead` of the write Redis. For each `<host>;<url>;<idx>;<n>` message it takes
//! the lock `dead:<host>:<url>` (this machine's name, 30 s TTL, under WATCH/MULTI), then once a second probes
//! the backend and, under `WATCH frontend:<host>`, either `SREM`s its index or keeps the dead set alive for
//! another 30 s. It stops when the backend is healthy or leaves the frontend, and deletes the lock.
//! Beyond PlanB, dead sets that already exist at start-up are picked up too (SCAN, not KEYS), and every probe
//! is bounded in time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::StatusCode;
use http_body_util::{BodyExt, Limited};
use redis::aio::MultiplexedConnection;
use tokio::sync::Semaphore;

use crate::store::{RedisClient, StoreError};

mod live;
pub use live::LiveSettings;

/// Probes in flight at once, process-wide (PlanB's limiter).
const MAX_PROBES: usize = 5;
/// TTL of the lock key and of a dead set kept alive by the monitor (hard-coded in PlanB).
const LOCK_TTL: u64 = 30;
/// Time between probes of one backend.
const INTERVAL: Duration = Duration::from_secs(1);
/// Probe limits: Go's client as PlanB configured it (10 s dial, 15 s overall, 10 redirects).
const PROBE_DIAL: Duration = Duration::from_secs(10);
const PROBE_TOTAL: Duration = Duration::from_secs(15);
const MAX_REDIRECTS: usize = 10;
/// Largest probe body read when matching the `body` field.
const MAX_PROBE_BODY: usize = 1 << 20;

/// The running monitor.
pub struct Monitor {
    redis: RedisClient,
    /// Written into lock keys; PlanB uses the OS hostname.
    id: String,
    /// (host, url) pairs this process is watching (local dedupe).
    watching: Mutex<HashSet<(String, String)>>,
    probes: Semaphore,
    error_log: ErrorLine,
    /// Frontend keys whose `healthcheck:` hash has an `interval` (as of the last scan): their backends are
    /// probed by [`live`], which also revives what passive marks killed, so the dead-mark watcher leaves them.
    live: Mutex<HashSet<String>>,
}

/// Start monitoring on the write Redis: subscribe to `dead`, then pick up dead sets that already exist.
/// Where the monitor's error lines go (the proxy's error log), one line per call.
pub type ErrorLine = Box<dyn Fn(String) + Send + Sync>;

pub fn start(redis: RedisClient, id: String, error_log: ErrorLine) -> Arc<Monitor> {
    let monitor = Arc::new(Monitor {
        redis,
        id,
        watching: Mutex::new(HashSet::new()),
        probes: Semaphore::new(MAX_PROBES),
        error_log,
        live: Mutex::new(HashSet::new()),
    });
    tokio::spawn(monitor.clone().subscribe());
    tokio::spawn(monitor.clone().follow_live());
    monitor
}

/// The two kinds of prober: PlanB's, of a backend marked dead until it answers, and the live check's.
#[derive(Debug, Clone, Copy)]
enum Probe {
    DeadMark,
    Live,
}

/// Where a watched URL stands in its frontend.
struct Watched {
    index: usize,
    count: usize,
    /// Its index is in the dead set.
    dead: bool,
}

enum Update {
    /// Revived: stop watching.
    Revived,
    /// Still failing: the dead set was renewed.
    StillDead,
    /// The URL is no longer in the frontend: stop watching.
    Gone,
}

impl Monitor {
    /// Follow channel `dead`, reconnecting with a backoff when the subscription breaks.
    async fn subscribe(self: Arc<Self>) {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.redis.pubsub().await {
                Ok(mut pubsub) => match pubsub.subscribe("dead").await {
                    Ok(()) => {
                        pause = Duration::from_millis(100);
                        // Scan only once subscribed, so that no mark falls between the two; after a
                        // broken subscription the rescan picks up marks published while it was down.
                        tokio::spawn(self.clone().scan_existing());
                        let mut messages = pubsub.on_message();
                        while let Some(msg) = messages.next().await {
                            let Ok(payload) = msg.get_payload::<String>() else {
                                continue;
                            };
                            let parts: Vec<&str> = payload.split(';').collect();
                            if let [host, url, _, _] = parts[..] {
                                self.clone().watch(host.to_string(), url.to_string());
                            }
                        }
                    }
                    Err(e) => self.log(&format!("health check: SUBSCRIBE dead: {e}")),
                },
                Err(e) => self.log(&format!("health check: {e}")),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Beyond PlanB: dead sets written before this process started are monitored too.
    async fn scan_existing(self: Arc<Self>) {
        if let Err(e) = self.clone().try_scan_existing().await {
            self.log(&format!("health check: scanning dead:* sets: {e}"));
        }
    }

    async fn try_scan_existing(self: Arc<Self>) -> Result<(), StoreError> {
        let mut con = self.redis.shared()?;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys) = self
                .redis
                .scan_page("dead:*", Some("set"), cursor, 500)
                .await?;
            for key in keys {
                let host = &key["dead:".len()..];
                let (members, urls): (Vec<String>, Vec<String>) = self
                    .redis
                    .call(
                        redis::pipe()
                            .cmd("SMEMBERS")
                            .arg(&key)
                            .cmd("LRANGE")
                            .arg(format!("frontend:{host}"))
                            .arg(1)
                            .arg(-1)
                            .query_async(&mut con),
                    )
                    .await?;
                for member in members {
                    // Read as the proxy reads the set, so the monitor watches the backend requests skip.
                    let index = crate::routing::dead_index(&member);
                    if let Some(url) = index.and_then(|i| urls.get(i)) {
                        self.clone().watch(host.to_string(), url.clone());
                    }
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Start watching a backend unless this process already is.
    fn watch(self: Arc<Self>, host: String, url: String) {
        if self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&host)
        {
            return;
        }
        self.spawn_once(host, url, Probe::DeadMark);
    }

    /// Run a probe of `url` for frontend `key` unless this process already probes it (either kind), and
    /// forget the pair when it ends.
    fn spawn_once(self: Arc<Self>, key: String, url: String, probe: Probe) {
        let pair = (key, url);
        if !self
            .watching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pair.clone())
        {
            return;
        }
        tokio::spawn(async move {
            let (key, url) = &pair;
            let ran = match probe {
                Probe::DeadMark => self.run(key, url).await,
                Probe::Live => self.run_live(key, url).await,
            };
            if let Err(e) = ran {
                self.log(&format!("health check of {url} for {key}: {e}"));
            }
            self.watching
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&pair);
        });
    }

    async fn run(&self, host: &str, url: &str) -> Result<(), StoreError> {
        let mut con = self.redis.dedicated().await?;
        let lock = format!("dead:{host}:{url}");
        if !self.reserve(&mut con, &lock).await? {
            return Ok(());
        }
        loop {
            tokio::time::sleep(INTERVAL).await;
            let _slot = self
                .probes
                .acquire()
                .await
                .expect("the semaphore is never closed");
            if !self.reserve(&mut con, &lock).await? {
                return Ok(());
            }
            let healthy = self.probe(&mut con, host, url).await;
            match self.update(&mut con, host, url, healthy).await {
                Ok(Update::StillDead) => {}
                Ok(Update::Revived | Update::Gone) => break,
                Err(e) => self.log(&format!("health check of {url} for {host}: {e}")),
            }
        }
        self.release(&mut con, &lock).await
    }

    /// Delete the lock of a prober that ends.
    async fn release(&self, con: &mut MultiplexedConnection, lock: &str) -> Result<(), StoreError> {
        self.redis
            .call(redis::cmd("DEL").arg(lock).query_async::<()>(con))
            .await
    }

    /// Under `WATCH frontend:<key>` (for the transaction that follows): the URL's first position in the
    /// frontend, its backend count and the dead set's members. `None`, unwatched, when the URL left it.
    async fn watch_position(
        &self,
        con: &mut MultiplexedConnection,
        key: &str,
        url: &str,
    ) -> Result<Option<Watched>, StoreError> {
        let frontend = format!("frontend:{key}");
        self.redis
            .call(redis::cmd("WATCH").arg(&frontend).query_async::<()>(con))
            .await?;
        let (urls, members): (Vec<String>, Vec<String>) = self
            .redis
            .call(
                redis::pipe()
                    .cmd("LRANGE")
                    .arg(&frontend)
                    .arg(1)
                    .arg(-1)
                    .cmd("SMEMBERS")
                    .arg(format!("dead:{key}"))
                    .query_async(con),
            )
            .await?;
        let Some(index) = urls.iter().position(|u| u == url) else {
            self.redis
                .call(redis::cmd("UNWATCH").query_async::<()>(con))
                .await?;
            return Ok(None);
        };
        let dead = members
            .iter()
            .any(|m| crate::routing::dead_index(m) == Some(index));
        Ok(Some(Watched {
            index,
            count: urls.len(),
            dead,
        }))
    }

    /// Take (or refresh) the lock: under WATCH, set it to our id if it is free or already ours.
    async fn reserve(
        &self,
        con: &mut MultiplexedConnection,
        lock: &str,
    ) -> Result<bool, StoreError> {
        self.redis
            .call(redis::cmd("WATCH").arg(lock).query_async::<()>(con))
            .await?;
        let holder: Option<String> = self
            .redis
            .call(redis::cmd("GET").arg(lock).query_async(con))
            .await?;
        if holder.as_deref().is_some_and(|h| h != self.id) {
            self.redis
                .call(redis::cmd("UNWATCH").query_async::<()>(con))
                .await?;
            return Ok(false);
        }
        let done: Option<(String,)> = self
            .redis
            .call(
                redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(lock)
                    .arg(&self.id)
                    .arg("EX")
                    .arg(LOCK_TTL)
                    .query_async(con),
            )
            .await?;
        Ok(done.is_some())
    }

    /// One probe as PlanB does it: GET `<url>/<path>`, following redirects; healthy when it answers (and matches
    /// `status` and `body` from `healthcheck:<host>` when those are set).
    async fn probe(&self, con: &mut MultiplexedConnection, host: &str, url: &str) -> bool {
        let settings: HashMap<String, String> = match self
            .redis
            .call(
                redis::cmd("HGETALL")
                    .arg(format!("healthcheck:{host}"))
                    .query_async(con),
            )
            .await
        {
            Ok(settings) => settings,
            Err(_) => return false,
        };
        healthy(url, &settings).await
    }

    /// Under `WATCH frontend:<host>`: find the URL's first position, then SREM it (healthy) or renew the dead
    /// set for 30 s (still failing).
    async fn update(
        &self,
        con: &mut MultiplexedConnection,
        host: &str,
        url: &str,
        healthy: bool,
    ) -> Result<Update, StoreError> {
        let dead = format!("dead:{host}");
        let Some(watched) = self.watch_position(con, host, url).await? else {
            return Ok(Update::Gone);
        };
        let position = watched.index;
        let mut pipe = redis::pipe();
        pipe.atomic();
        if healthy {
            pipe.cmd("SREM").arg(&dead).arg(position);
        } else {
            pipe.cmd("SADD")
                .arg(&dead)
                .arg(position)
                .cmd("EXPIRE")
                .arg(&dead)
                .arg(LOCK_TTL);
        }
        let done: Option<redis::Value> = self.redis.call(pipe.query_async(con)).await?;
        Ok(match (healthy, done.is_some()) {
            (true, true) => Update::Revived,
            _ => Update::StillDead,
        })
    }

    fn log(&self, message: &str) {
        (self.error_log)(format!("ERROR {message}"));
    }

    fn log_info(&self, message: &str) {
        tracing::info!("{message}");
    }
}

/// Probe backend `url` with a `healthcheck:<host>` hash's settings (`path`, `status`, `body`, each optional):
/// healthy when it answers, with that status and a body containing that text when they are set.
pub async fn healthy(url: &str, settings: &HashMap<String, String>) -> bool {
    healthy_within(url, settings, PROBE_TOTAL, false).await
}

/// [`healthy`], giving up (unhealthy) after `limit`; with `fail_5xx` and no `status` setting, a 5xx answer is
/// a failure too (the live checks: a backend that accepts connections but answers 500 is not healthy).
pub async fn healthy_within(
    url: &str,
    settings: &HashMap<String, String>,
    limit: Duration,
    fail_5xx: bool,
) -> bool {
    let path = settings.get("path").map(String::as_str).unwrap_or("");
    let mut target = format!("{url}/{}", path.trim_start_matches('/'));
    if !target.starts_with("http") {
        target = format!("http://{target}");
    }
    let want_status = settings
        .get("status")
        .and_then(|s| s.trim().parse::<u16>().ok())
        .filter(|&s| s != 0);
    let want_body = settings.get("body").filter(|b| !b.is_empty());
    let answer = tokio::time::timeout(limit, get_following_redirects(&target)).await;
    let Ok(Ok((status, body))) = answer else {
        return false;
    };
    if want_status.is_some_and(|want| want != status.as_u16()) {
        return false;
    }
    if want_status.is_none() && fail_5xx && status.is_server_error() {
        return false;
    }
    if let Some(want) = want_body {
        return String::from_utf8_lossy(&body).contains(want.as_str());
    }
    true
}

/// GET a URL as Go's default client does for PlanB's probes: User-Agent `Go-http-client/1.1`, no keep-alive,
/// redirects followed (at most 10). Returns the final status and up to 1 MiB of its body.
async fn get_following_redirects(start: &str) -> Result<(StatusCode, Bytes), String> {
    let mut url = url::Url::parse(start).map_err(|e| e.to_string())?;
    for _ in 0..=MAX_REDIRECTS {
        let (status, location, body) = get_once(&url).await?;
        match location {
            Some(next) if status.is_redirection() => {
                url = url.join(&next).map_err(|e| e.to_string())?;
            }
            _ => return Ok((status, body)),
        }
    }
    Err("stopped after 10 redirects".into())
}

async fn get_once(url: &url::Url) -> Result<(StatusCode, Option<String>, Bytes), String> {
    if url.scheme() != "http" {
        return Err(format!("unsupported protocol scheme {:?}", url.scheme()));
    }
    let resp = crate::upstream::once::send(
        url,
        http::Method::GET,
        &[
            (http::header::USER_AGENT, "Go-http-client/1.1"),
            (http::header::CONNECTION, "close"),
        ],
        Bytes::new(),
        PROBE_DIAL,
    )
    .await?;
    let status = resp.status();
    let location = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = Limited::new(resp.into_body(), MAX_PROBE_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok((status, location, body))
}
