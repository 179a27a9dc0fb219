//! The Redis side: read and write clients, the per-request lookup pipeline, and dead marks.
//!
//! Each client is one multiplexed connection shared by every request (redis' `ConnectionManager`, which
//! reconnects by itself); no request opens a connection, and every command is bounded by a timeout.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, Value};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::{RedisAddr, RedisConfig, SentinelConfig};

mod admin;
mod raw;

pub use admin::ListedFrontend;
pub use raw::{RawHash, RawPolicy, HASH_PREFIXES, POLICY_HASHES};

/// PlanB's dial/read/write timeouts for Redis: a request never waits longer than this on one command.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// The raw result of reading one frontend key.
#[derive(Debug, Default, Clone)]
pub struct FrontendData {
    /// `LRANGE frontend:<key> 0 -1`: the identifier then the backend URLs. An element that is not UTF-8 is
    /// `None`: it costs that entry only (an identifier is never used; a backend is skipped).
    pub list: Vec<Option<String>>,
    /// `SMEMBERS dead:<key>`: backend indexes, as stored.
    pub dead: Vec<String>,
    /// `HGETALL guard:<key>`, `ratelimit:<key>`, `breaker:<key>`: the frontend's policies (see `policy`).
    pub policy: RawPolicy,
    /// `HGETALL route:<key>`: the frontend's route options (`strip_prefix`, `weights`, `balance`).
    pub options: RawHash,
    /// `HGETALL mirror:<key>`: the frontend's shadows.
    pub mirror: RawHash,
    /// Whether `route:` and `mirror:` were read (see [`Lookup::options`]); when not, both are `Absent`.
    pub options_read: bool,
}

/// One frontend key to read in the lookup pipeline.
#[derive(Debug, Clone, Copy)]
pub struct Lookup<'a> {
    pub key: &'a str,
    /// The dead set's key suffix: the key itself, except for Hipache, which reads the request hostname's.
    pub dead: &'a str,
    /// Read `route:<key>` and `mirror:<key>` too. The default mode skips them for a key known to have neither
    /// a moment ago: two more `HGETALL`s were a tenth of such a request's cost.
    pub options: bool,
}

/// A Redis error, with the text PlanB shows (in the error log and the `__ping__` body).
#[derive(Debug, Clone)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StoreError {
    /// Redis refused the password or user: a configuration error, not an outage (PlanB exits on it).
    pub fn is_auth_failure(&self) -> bool {
        [
            "WRONGPASS",
            "NOAUTH",
            "AuthenticationFailed",
            "invalid password",
            "invalid username-password",
        ]
        .iter()
        .any(|word| self.0.contains(word))
    }
}

impl From<redis::ParsingError> for StoreError {
    fn from(e: redis::ParsingError) -> Self {
        StoreError(e.to_string())
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        // WRONGTYPE and friends: show the server's words, as Go's client does.
        match (e.code(), e.detail()) {
            (Some(code), Some(detail)) => StoreError(format!("{code} {detail}")),
            _ => StoreError(e.to_string()),
        }
    }
}

/// One Redis server, reached through a shared multiplexed connection. With Sentinel, the server is the
/// current master: a connection error or `READONLY` makes the client ask Sentinel again and reconnect.
///
/// A client may start without a connection ([`RedisClient::lazy`]): the proxy then serves while Redis is
/// down, every call failing at once until a background attempt, started by the first call, gets through.
#[derive(Clone)]
pub struct RedisClient {
    inner: Arc<Inner>,
    /// Prepended to `frontend:` and `dead:` keys (Hipache's `#prefix`); empty by default.
    prefix: Arc<str>,
}

struct Inner {
    config: RedisConfig,
    /// The connection, once there is one.
    current: RwLock<Option<Arc<Connected>>>,
    /// A (re)connection or Sentinel re-resolution is under way (only one at a time).
    resolving: AtomicBool,
}

/// A connection to one resolved address.
struct Connected {
    con: ConnectionManager,
    /// For connections that must not be shared: pub/sub and WATCH/MULTI transactions.
    client: redis::Client,
    /// For messages: `127.0.0.1:6379` or the socket path. Never includes the password.
    addr: String,
}

/// `parts` joined in `scratch`, which is reused for the next name.
fn key_name<'a>(scratch: &'a mut Vec<u8>, parts: &[&[u8]]) -> &'a [u8] {
    scratch.clear();
    parts.iter().for_each(|p| scratch.extend_from_slice(p));
    scratch
}

impl RedisClient {
    /// Connect and PING. The error names the address so that a start-up failure says which Redis is down.
    pub async fn connect(config: &RedisConfig) -> Result<RedisClient, StoreError> {
        let connected = connect_resolved(config).await?;
        let client = RedisClient::with(config, Some(connected));
        client
            .ping()
            .await
            .map_err(|e| StoreError(format!("redis at {}: {e}", client.addr())))?;
        Ok(client)
    }

    /// A client that has not connected yet: its first call starts connecting in the background (retrying,
    /// backing off up to 2 s, until it works), and calls fail at once until then.
    pub fn lazy(config: &RedisConfig) -> RedisClient {
        RedisClient::with(config, None)
    }

    /// A client that keeps trying to connect in the background from now on (on this runtime), for a Redis
    /// that is down at start-up: it serves as soon as Redis answers, whether a request asked first or not.
    pub fn connecting(config: &RedisConfig) -> RedisClient {
        let client = RedisClient::lazy(config);
        client.reresolve();
        client
    }

    fn with(config: &RedisConfig, connected: Option<Connected>) -> RedisClient {
        RedisClient {
            inner: Arc::new(Inner {
                config: config.clone(),
                current: RwLock::new(connected.map(Arc::new)),
                resolving: AtomicBool::new(false),
            }),
            prefix: Arc::from(""),
        }
    }

    /// The same client (and connection) with `prefix` put before every `frontend:` and `dead:` key it reads or
    /// writes (not before the `dead` channel, as in Hipache).
    pub fn with_key_prefix(self, prefix: &str) -> RedisClient {
        RedisClient {
            inner: self.inner,
            prefix: Arc::from(prefix),
        }
    }

    /// `GET hchecker_ping`: the Unix time an external health checker last said it was alive, if any.
    pub async fn hchecker_ping(&self) -> Result<Option<i64>, StoreError> {
        let mut con = self.shared()?;
        let value: Option<String> = self
            .call(redis::cmd("GET").arg("hchecker_ping").query_async(&mut con))
            .await?;
        Ok(value.and_then(|v| v.trim().parse().ok()))
    }

    /// The connection; without one, a reconnection is started and the call fails at once.
    fn current(&self) -> Result<Arc<Connected>, StoreError> {
        let current = self
            .inner
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match current {
            Some(connected) => Ok(connected),
            None => {
                self.reresolve();
                Err(StoreError(format!(
                    "redis at {}: not connected",
                    self.inner.config.addr
                )))
            }
        }
    }

    /// Run one Redis call with PlanB's 1 s limit; a failure that means "this server is gone or no longer the
    /// master" starts a Sentinel re-resolution. Every call on this client's connections goes through here.
    pub async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(REDIS_TIMEOUT, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                let moved = e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.code() == Some("READONLY");
                if moved {
                    self.reresolve();
                }
                Err(e.into())
            }
            Err(_) => {
                self.reresolve();
                Err(StoreError("i/o timeout".into()))
            }
        }
    }

    /// Connect again (with Sentinel: ask for the master again) and swap the connection, retrying until it
    /// works. Without Sentinel only a client that never connected needs this: the connection manager
    /// reconnects an established connection by itself.
    fn reresolve(&self) {
        let connected = self
            .inner
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if connected && self.inner.config.sentinel.is_none() {
            return;
        }
        if self.inner.resolving.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(100);
            let mut warned = false;
            loop {
                match connect_resolved(&inner.config).await {
                    Ok(connected) => {
                        match &inner.config.sentinel {
                            Some(sentinel) => tracing::warn!(
                                "redis master for {} is now {}",
                                sentinel.name,
                                connected.addr
                            ),
                            None => tracing::warn!("redis at {} answers again", connected.addr),
                        }
                        *inner.current.write().unwrap_or_else(|p| p.into_inner()) =
                            Some(Arc::new(connected));
                        break;
                    }
                    Err(e) => {
                        if !warned {
                            tracing::warn!("{e}; retrying in the background");
                            warned = true;
                        }
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                }
            }
            inner.resolving.store(false, Ordering::Release);
        });
    }

    /// A connection of its own, for WATCH/MULTI transactions that must not interleave with other commands.
    pub async fn dedicated(&self) -> Result<redis::aio::MultiplexedConnection, StoreError> {
        let current = self.current()?;
        self.call(current.client.get_multiplexed_async_connection())
            .await
    }

    /// A pub/sub connection.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, StoreError> {
        let current = self.current()?;
        self.call(current.client.get_async_pubsub()).await
    }

    /// The shared multiplexed connection, for single commands.
    pub fn shared(&self) -> Result<ConnectionManager, StoreError> {
        Ok(self.current()?.con.clone())
    }

    /// The address this client talks to, for log lines.
    pub fn addr(&self) -> String {
        match self
            .inner
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(connected) => connected.addr.clone(),
            None => self.inner.config.addr.to_string(),
        }
    }

    /// `PING`, for start-up and `__ping__`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut con = self.shared()?;
        self.call(redis::cmd("PING").query_async::<String>(&mut con))
            .await?;
        Ok(())
    }

    /// One pipeline of `LRANGE frontend:<key> 0 -1` + `SMEMBERS dead:<dead key>` per (key, dead key) pair, plus
    /// the key's policy hashes (`HGETALL guard:<key>`, `ratelimit:<key>`, `breaker:<key>`), route options
    /// (`HGETALL route:<key>`) and mirror (`HGETALL mirror:<key>`), in one round trip. The dead key is the key itself, except for Hipache, which
    /// reads the request hostname's dead set.
    pub async fn lookup_many(&self, keys: &[Lookup<'_>]) -> Result<Vec<FrontendData>, StoreError> {
        let prefix = self.prefix.as_bytes();
        let mut pipe = redis::pipe();
        // Key names built in one scratch buffer (each command copies its arguments): format! cost more than the
        // rest of building the pipeline.
        let mut name = Vec::with_capacity(64);
        for lookup in keys {
            let key = lookup.key.as_bytes();
            pipe.cmd("LRANGE")
                .arg(key_name(&mut name, &[prefix, b"frontend:", key]))
                .arg(0)
                .arg(-1);
            pipe.cmd("SMEMBERS").arg(key_name(
                &mut name,
                &[prefix, b"dead:", lookup.dead.as_bytes()],
            ));
            let families = match lookup.options {
                true => &HASH_PREFIXES[..],
                false => &HASH_PREFIXES[..POLICY_HASHES],
            };
            for family in families {
                pipe.cmd("HGETALL")
                    .arg(key_name(&mut name, &[family.as_bytes(), key]));
            }
        }
        // Per-command errors come back as values: a policy hash of the wrong type must not fail the route.
        pipe.ignore_errors();
        let mut con = self.shared()?;
        let values: Vec<Value> = self.call(pipe.query_async(&mut con)).await?;
        let mut out = Vec::with_capacity(keys.len());
        let mut it = values.into_iter();
        for lookup in keys {
            let (Some(list), Some(dead), Some(guard), Some(ratelimit), Some(breaker)) =
                (it.next(), it.next(), it.next(), it.next(), it.next())
            else {
                break;
            };
            let (route, mirror) = match lookup.options {
                true => (it.next(), it.next()),
                false => (None, None),
            };
            if let Value::ServerError(e) = &list {
                // WRONGTYPE and friends, in the server's words as Go's client shows them.
                return Err(StoreError(format!(
                    "{} {}",
                    e.code(),
                    e.details().unwrap_or("")
                )));
            }
            out.push(FrontendData {
                list: list_elements(list)?,
                dead: strings(dead)?,
                policy: RawPolicy {
                    guard: RawHash::from_value(guard),
                    ratelimit: RawHash::from_value(ratelimit),
                    breaker: RawHash::from_value(breaker),
                },
                options: route.map_or(RawHash::Absent, RawHash::from_value),
                mirror: mirror.map_or(RawHash::Absent, RawHash::from_value),
                options_read: lookup.options,
            });
        }
        Ok(out)
    }

    /// One `SCAN cursor MATCH pattern [TYPE kind] COUNT count` (never `KEYS`): the next cursor and the key
    /// names that are text (a key that is not UTF-8 names nothing hypache reads).
    pub async fn scan_page(
        &self,
        pattern: &str,
        kind: Option<&str>,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let mut con = self.shared()?;
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor).arg("MATCH").arg(pattern);
        if let Some(kind) = kind {
            scan.arg("TYPE").arg(kind);
        }
        let (next, names): (u64, Vec<Vec<u8>>) = self
            .call(scan.arg("COUNT").arg(count).query_async(&mut con))
            .await?;
        let names = names
            .into_iter()
            .filter_map(|name| String::from_utf8(name).ok())
            .collect();
        Ok((next, names))
    }

    /// Every frontend key with a path (`frontend:<host>/<path>`), by `SCAN` (never `KEYS`): the path index.
    pub async fn path_frontends(&self) -> Result<Vec<String>, StoreError> {
        let pattern = format!("{}frontend:*/*", admin::glob_escape(&self.prefix));
        let strip = self.prefix.len() + "frontend:".len();
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, keys) = self.scan_page(&pattern, None, cursor, 1000).await?;
            out.extend(
                keys.into_iter()
                    .filter(|k| k.len() > strip)
                    .map(|k| k[strip..].to_string()),
            );
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// `HMGET tls:<name> certificate key`: the PEM texts, empty when a field (or the key) is missing.
    pub async fn certificate(&self, name: &str) -> Result<(String, String), StoreError> {
        let mut con = self.shared()?;
        let fields: Vec<Option<String>> = self
            .call(
                redis::cmd("HMGET")
                    .arg(format!("tls:{name}"))
                    .arg("certificate")
                    .arg("key")
                    .query_async(&mut con),
            )
            .await?;
        let mut fields = fields.into_iter().map(Option::unwrap_or_default);
        Ok((
            fields.next().unwrap_or_default(),
            fields.next().unwrap_or_default(),
        ))
    }

    /// Passive dead mark: pipeline `SADD` + `EXPIRE` (unless `publish_only`: an external checker owns the
    /// dead sets), then `PUBLISH dead <key>;<url>;<idx>;<n>`.
    pub async fn mark_dead(
        &self,
        key: &str,
        index: usize,
        url: &str,
        count: usize,
        ttl: Duration,
        publish_only: bool,
    ) -> Result<(), StoreError> {
        let dead_key = format!("{}dead:{key}", self.prefix);
        let mut con = self.shared()?;
        if !publish_only {
            let mut pipe = redis::pipe();
            pipe.cmd("SADD")
                .arg(&dead_key)
                .arg(index)
                .ignore()
                .cmd("EXPIRE")
                .arg(&dead_key)
                .arg(ttl.as_secs())
                .ignore();
            self.call(pipe.query_async::<()>(&mut con)).await?;
        }
        let message = format!("{key};{url};{index};{count}");
        self.call(
            redis::cmd("PUBLISH")
                .arg("dead")
                .arg(message)
                .query_async::<i64>(&mut con),
        )
        .await?;
        Ok(())
    }
}

/// Connect to the configured address, or to the master Sentinel names.
async fn connect_resolved(config: &RedisConfig) -> Result<Connected, StoreError> {
    match &config.sentinel {
        Some(sentinel) => {
            sentinel.validate().map_err(StoreError)?;
            let addr = resolve_master(sentinel).await?;
            connect_addr(config, &addr).await
        }
        None => connect_addr(config, &config.addr).await,
    }
}

/// Connect to one address (the configured one, or the master Sentinel named).
async fn connect_addr(config: &RedisConfig, addr: &RedisAddr) -> Result<Connected, StoreError> {
    let with_addr = |e: String| StoreError(format!("redis at {addr}: {e}"));
    let target = match (addr, &config.tls) {
        (RedisAddr::Tcp { host, port }, None) => ConnectionAddr::Tcp(host.clone(), *port),
        (RedisAddr::Tcp { host, port }, Some(_)) => ConnectionAddr::TcpTls {
            host: host.clone(),
            port: *port,
            insecure: false,
            tls_params: None,
        },
        (RedisAddr::Unix(path), _) => ConnectionAddr::Unix(path.clone()),
    };
    let mut settings = RedisConnectionInfo::default()
        .set_db(config.db)
        .set_skip_set_lib_name();
    if let Some(password) = &config.password {
        settings = settings.set_password(password);
    }
    if let Some(username) = &config.username {
        settings = settings.set_username(username);
    }
    let info = target
        .into_connection_info()
        .map_err(|e| with_addr(e.to_string()))?
        .set_redis_settings(settings);
    let ca_file = config.tls.as_ref().and_then(|tls| tls.ca_file.as_ref());
    let client = match ca_file {
        None => redis::Client::open(info),
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| with_addr(format!("TLS CA file {}: {e}", path.display())))?;
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            redis::Client::build_with_tls(info, certificates)
        }
    }
    .map_err(|e| with_addr(e.to_string()))?;
    let manager_config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1));
    let con = tokio::time::timeout(
        REDIS_TIMEOUT * 2,
        ConnectionManager::new_with_config(client.clone(), manager_config),
    )
    .await
    .map_err(|_| with_addr("connection timed out".into()))?
    .map_err(|e| with_addr(StoreError::from(e).0))?;
    Ok(Connected {
        con,
        client,
        addr: addr.to_string(),
    })
}

/// Ask each Sentinel in turn for the master's address (`SENTINEL get-master-addr-by-name`).
async fn resolve_master(sentinel: &SentinelConfig) -> Result<RedisAddr, StoreError> {
    let mut last = StoreError(format!("no sentinel knows master {:?}", sentinel.name));
    for addr in &sentinel.addrs {
        let asked = async {
            let client = redis::Client::open(format!("redis://{addr}/"))?;
            let mut con = client.get_multiplexed_async_connection().await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&sentinel.name)
                .query_async::<Option<(String, u16)>>(&mut con)
                .await
        };
        match tokio::time::timeout(REDIS_TIMEOUT, asked).await {
            Ok(Ok(Some((host, port)))) => return Ok(RedisAddr::Tcp { host, port }),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => last = StoreError(format!("sentinel {addr}: {e}")),
            Err(_) => last = StoreError(format!("sentinel {addr}: i/o timeout")),
        }
    }
    Err(last)
}

/// `LRANGE` replies element by element: text as it is, anything else (bytes that are not UTF-8) as `None`, so
/// that one broken entry does not take its whole frontend down.
fn list_elements(value: Value) -> Result<Vec<Option<String>>, StoreError> {
    let items = match value {
        Value::Array(items) => items,
        Value::Nil => Vec::new(),
        other => {
            return Ok(redis::from_redis_value::<Vec<String>>(other)?
                .into_iter()
                .map(Some)
                .collect())
        }
    };
    Ok(items
        .into_iter()
        .map(|v| match v {
            Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
            other => redis::from_redis_value::<String>(other).ok(),
        })
        .collect())
}

/// `SMEMBERS` replies as a set (RESP3) or an array (RESP2); members that are not text count as empty strings,
/// which parse as index 0 like any other garbage member.
fn strings(value: Value) -> Result<Vec<String>, StoreError> {
    let items = match value {
        Value::Array(items) | Value::Set(items) => items,
        Value::Nil => Vec::new(),
        other => return Ok(redis::from_redis_value(other)?),
    };
    Ok(items
        .into_iter()
        .map(|v| redis::from_redis_value::<String>(v).unwrap_or_default())
        .collect())
}
