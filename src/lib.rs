//! hypache: a reverse proxy routed by Redis, a drop-in replacement for the Hipache and PlanB executables.
//!
//! Operators manage routes with `redis-cli` (`rpush frontend:www.example.com mysite http://10.0.0.5:80`);
//! every request looks its Host up in Redis and is forwarded to one of the frontend's live backends.
//!
//! # Layout
//! - `main.rs`: parses the CLI, installs the crypto provider (ring) and logging, calls [`run`].
//! - [`cli`]: PlanB's flags (names, defaults, `HYPACHE_*` environment variables) → [`config::Config`].
//! - [`hipache_config`]: the Hipache preset: `-c config.json` (master and 0.3.1 layouts, driver URLs) →
//!   [`config::Config`] with Hipache's policies; its default error pages are in `static/`.
//! - [`config`]: the resolved configuration; every policy field says why it exists. Presets differ only in the
//!   values of these fields (selection, lookup and dead-set rules, retries, response style, forwarding headers,
//!   signals, key prefix).
//! - [`privileges`]: dropping root after binding (Hipache's `user`/`group`).
//! - [`server`]: listeners (plain, TLS, SNI passthrough), per-connection client timeouts, parking of idle
//!   connections, graceful shutdown.
//! - [`workers`]: thread per core; connections run on worker threads with their own event loop, backend pool
//!   and read-Redis connection, so that a request never wakes another thread.
//! - [`tls`]: the TLS handshake with a certificate per server name ([`tls::from_redis`], [`tls::from_dir`]),
//!   PlanB's presets, and the client side for `https://` backends.
//! - [`sni`]: `--engine sni`, a TCP passthrough routed by the ClientHello's server name.
//! - [`proxy`]: the request pipeline; [`proxy::headers`] rewrites headers both ways; [`proxy::upgrade`] runs
//!   WebSocket tunnels.
//! - [`route`]: frontend key candidates, round-robin or random selection, dead-set skipping; [`route::events`]
//!   keeps `--backend-cache-events` fresh from Redis keyspace notifications.
//! - [`store`]: the read and write Redis clients and the lookup pipeline.
//! - [`upstream`]: backend URLs, dialing (TCP, TLS for `https://`), the keep-alive pool per backend.
//! - [`health`]: the active health check (`--active-healthcheck`).
//! - [`policy`]: the per-frontend policy layer between lookup and selection: [`policy::guard`] (signatures,
//!   timestamp window, anti-replay), [`policy::ratelimit`], [`policy::breaker`].
//! - [`error`]: every response hypache writes itself, and the log texts of TLS and passthrough failures.
//! - [`head_scan`]: spots request heads with both Content-Length and Transfer-Encoding.
//! - [`body`]: request and response body types (a request body streams, or is read whole for `sign_body`).
//! - [`access_log`]: access and error logs (PlanB, Hipache or JSON lines), written off the request path,
//!   reopened on SIGHUP.
//! - [`event_log`]: the event log on stderr through `tracing` (text or JSON); PlanB's lines kept verbatim.
//! - [`metrics`]: the Prometheus registry (PlanB's five metrics, `process_*`, `hypache_*`) and `/metrics`.
//! - [`inflight`]: the registry of in-flight requests shown by the SIGUSR1 dump.
//! - [`dump`]: the SIGUSR1 dump (runtime figures, connections, in-flight requests; tokio task dump if asked).
//! - [`ops`]: telemetry owned by the proxy, and the SIGUSR1/SIGUSR2/SIGHUP handlers.
//!
//! # Redis schema
//! - `frontend:<host>` (list): element 0 is an identifier (ignored), then backend URLs.
//! - `dead:<host>` (set): 0-based indexes of dead backends, with a TTL; written on passive failures.
//! - channel `dead`: `<host>;<url>;<index>;<count>` on every passive dead mark.
//! - `hchecker_ping` (string, read by the Hipache preset): while it holds a Unix time less than 30 s old, an
//!   external checker owns the dead sets and a mark only publishes.
//! - With a Hipache driver `#prefix`, `frontend:` and `dead:` keys carry it in front (`<prefix>frontend:<host>`).
//! - `dead:<host>:<url>` (string): the health-check lock, holding the monitoring machine's name (30 s TTL).
//! - `healthcheck:<host>` (hash): optional `path`, `status`, `body` for the active health check.
//! - `tls:<name>` (hash): `certificate` (PEM chain) and `key` (PEM, PKCS#8/PKCS#1/SEC1) for the TLS listener;
//!   `<name>` is a server name or its wildcard form `*.<parent>`, which is looked up first.
//! - `guard:<key>`, `ratelimit:<key>`, `breaker:<key>` (hashes): the frontend's policies, read in the lookup
//!   pipeline; `guard-nonce:<key>:<nonce>` and `ratelimit-state:<key>:<client>` (strings with a TTL, on the
//!   write Redis): spent nonces and shared rate-limit state.
//!
//! `<host>` is the frontend key that matched: the Host as received, then without its port, then (extensions)
//! lower-cased, Hipache's `*.<parent>` wildcards, and the `*` catch-all.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod body;
pub mod cli;
pub mod config;
pub mod dump;
pub mod error;
pub mod event_log;
pub mod head_scan;
pub mod health;
pub mod hipache_config;
pub mod inflight;
pub mod metrics;
pub mod ops;
pub mod policy;
pub mod privileges;
pub mod proxy;
pub mod route;
pub mod server;
pub mod sni;
pub mod store;
pub mod tls;
pub mod upstream;
pub mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::access_log::Log;
use crate::config::{CertificateSource, Config, Engine};
use crate::ops::Telemetry;
use crate::proxy::Proxy;
use crate::route::{CachePolicy, Router};
use crate::server::{Listener, Tracker};
use crate::store::RedisClient;
use crate::tls::{CertStore, DirectoryCerts, RedisCerts, TlsTerminator};
use crate::upstream::Upstream;
use crate::workers::{PerWorker, Workers};

/// A start-up failure: the process exits 1 with this message, as PlanB does.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// A proxy that has connected to Redis, opened its logs, loaded its certificates and bound its listeners, ready
/// to serve.
pub struct Server {
    listeners: Vec<Listener>,
    /// The Prometheus listener (`--metrics-address`), bound before the proxy's listeners as in PlanB.
    metrics_listener: Option<TcpListener>,
    proxy: Arc<Proxy>,
    /// The threads that serve connections; dropped (and stopped) when `serve` returns.
    workers: Arc<Workers>,
}

impl Server {
    /// PlanB's start-up order: PING the read and write Redis, open the access log, build the certificate loader
    /// (only with a TLS listener; a bad certificate directory is fatal), bind the listeners.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let read = connect(&config.read_redis, config.wait_for_redis).await?;
        let write = if config.write_redis == config.read_redis {
            read.clone()
        } else {
            connect(&config.write_redis, config.wait_for_redis).await?
        };
        let read = read.with_key_prefix(&config.key_prefix);
        let write = write.with_key_prefix(&config.key_prefix);
        let access_log = Log::access(&config.access_log, config.access_log_format)
            .map_err(|e| StartError(format!("could not open the access log: {e}")))?;
        let metrics_listener = match config.metrics.address {
            Some(addr) => Some(metrics::bind(addr).await.map_err(StartError)?),
            None => None,
        };
        let error_log = Log::errors();
        let terminator = match config.tls_listen {
            None => None,
            Some(_) => Some(tls_terminator(&config.tls, &config, &error_log).await?),
        };
        let backend_tls =
            tls::backend_client_config(config.backend_ca_file.as_deref()).map_err(StartError)?;
        let mut listeners = Vec::new();
        if let Some(addr) = config.listen {
            let socket = bind(addr).await?;
            listeners.push(match config.engine {
                Engine::Native => Listener::Http(socket),
                Engine::Sni => Listener::Sni(socket),
            });
        }
        if let (Some(addr), Some(terminator)) = (config.tls_listen, terminator) {
            listeners.push(Listener::Tls(bind(addr).await?, terminator));
        }
        for more in &config.more_listeners {
            let socket = bind(more.addr).await?;
            listeners.push(match &more.tls {
                None => Listener::Http(socket),
                Some(tls) => Listener::Tls(socket, tls_terminator(tls, &config, &error_log).await?),
            });
        }
        if listeners.is_empty() {
            return Err(StartError("no listener configured".into()));
        }
        if config.active_healthcheck {
            health::start(write.clone(), config.monitor_id.clone(), error_log.clone());
        }
        let workers = Workers::start(config.workers)
            .map_err(|e| StartError(format!("starting the worker threads: {e}")))?;
        // Each worker reads routes, and writes nonces and global rate limits, over its own connections, whose
        // I/O runs on that worker's thread.
        let notifications = read.clone();
        let reads = per_worker(&workers, read, &config.read_redis, &config.key_prefix).await?;
        let writes = match config.write_redis == config.read_redis {
            true => reads.clone(),
            false => {
                per_worker(
                    &workers,
                    write.clone(),
                    &config.write_redis,
                    &config.key_prefix,
                )
                .await?
            }
        };
        let mut runtimes = vec![tokio::runtime::Handle::current()];
        runtimes.extend(workers.handles());
        let tunnels = Arc::default();
        // A body read whole for a guard (`sign_body`) gets what Go's ReadTimeout gives a request, else the
        // header-read timeout, so a slow sender cannot hold its buffer forever.
        let body_timeout = config
            .timeouts
            .client_read
            .unwrap_or(config.timeouts.client_read_header);
        let policies = policy::Policies::new(writes, config.breaker, body_timeout);
        let telemetry = Telemetry::new(
            &config,
            &tunnels,
            &access_log,
            &error_log,
            &policies,
            runtimes,
        );
        let proxy = Proxy {
            router: Router::new(
                reads,
                config.extensions,
                config.routing,
                CachePolicy {
                    backend_cache: config.backend_cache,
                    stale_routes_ttl: config.stale_routes_ttl,
                    backend_cache_limits: config.backend_cache_limits,
                    events: config.backend_cache_events,
                },
            ),
            upstream: Upstream::new(config.timeouts.dial, backend_tls, workers.count() + 1)
                .with_max_idle(config.max_idle_per_backend),
            hchecker: Arc::default(),
            policies,
            write,
            access_log,
            error_log,
            tunnels,
            telemetry,
            request_id_label: config
                .request_id_header
                .as_ref()
                .map(|h| proxy::canonical(h.as_str()))
                .unwrap_or_default(),
            config,
        };
        if let Some(cache) = proxy.router.event_cache() {
            let (db, prefix) = (proxy.config.read_redis.db, proxy.config.key_prefix.clone());
            tokio::spawn(route::events::follow(cache, notifications, db, prefix));
        }
        Ok(Server {
            listeners,
            metrics_listener,
            proxy: Arc::new(proxy),
            workers: Arc::new(workers),
        })
    }

    /// The address the plain listener (HTTP or SNI passthrough) is bound to, if there is one.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| !matches!(l, Listener::Tls(..)))
            .map(Listener::local_addr)
    }

    /// The address the TLS listener is bound to, if there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| matches!(l, Listener::Tls(..)))
            .map(Listener::local_addr)
    }

    /// The open WebSocket tunnels, counted live (for metrics and tests); stays valid while serving.
    pub fn tunnels(&self) -> Arc<Tracker> {
        self.proxy.tunnels.clone()
    }

    /// Serve until `shutdown` resolves, drain in-flight requests, then flush the logs.
    pub async fn serve(mut self, shutdown: impl Future<Output = ()>) {
        ops::start(&self.proxy, self.metrics_listener.take());
        let config = &self.proxy.config;
        let info = |line: &str| event_log::planb_line(tracing::Level::INFO, line);
        match config.engine {
            Engine::Native => info("Using native engine"),
            Engine::Sni => info("Using sni engine"),
        }
        if config.tls_listen.is_some() {
            if let Some(warning) = tls::preset_warning(config.tls.preset) {
                info(&warning);
            }
        }
        // Plain listeners were bound first, so PlanB's two lines keep their order.
        for listener in &self.listeners {
            let addr = listener.local_addr();
            match listener {
                Listener::Tls(..) => info(&format!("Listening tls on {addr}...")),
                _ => info(&format!("Listening on {addr}...")),
            }
        }
        let proxy = self.proxy.clone();
        server::serve(self.listeners, self.proxy, self.workers, shutdown).await;
        let grace = proxy
            .config
            .timeouts
            .shutdown
            .max(std::time::Duration::from_secs(1));
        proxy.access_log.close(grace);
        proxy.error_log.close(grace);
    }
}

/// The TLS terminator for one listener's settings: certificates from Redis (a third client, built from the
/// read options, PlanB §8.2), a watched directory (a bad one is fatal), or fixed files.
async fn tls_terminator(
    tls: &config::TlsSettings,
    config: &Config,
    error_log: &Log,
) -> Result<Arc<TlsTerminator>, StartError> {
    let certs = match &tls.certificates {
        CertificateSource::Redis => CertStore::Redis(RedisCerts::new(
            RedisClient::connect(&config.read_redis)
                .await
                .map_err(|e| StartError(e.to_string()))?,
        )),
        CertificateSource::Directory(dir) => {
            let certs = DirectoryCerts::load(dir).map_err(|e| {
                StartError(format!("loading certificates from {}: {e}", dir.display()))
            })?;
            let certs = Arc::new(certs);
            certs.watch(error_log.clone());
            CertStore::Directory(certs)
        }
        CertificateSource::Files { cert, key, ca } => CertStore::Static(Arc::new(
            tls::load_static(cert, key, ca).map_err(StartError)?,
        )),
    };
    let terminator = TlsTerminator::new(tls.preset, certs).map_err(StartError)?;
    Ok(Arc::new(terminator))
}

/// Connect to one Redis; with `--wait-for-redis`, retry (backing off up to 1 s) until the window has passed.
async fn connect(
    redis: &config::RedisConfig,
    wait: Option<std::time::Duration>,
) -> Result<RedisClient, StartError> {
    let deadline = wait.map(|w| tokio::time::Instant::now() + w);
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        match RedisClient::connect(redis).await {
            Ok(client) => return Ok(client),
            Err(e) => match deadline {
                Some(deadline) if tokio::time::Instant::now() + pause < deadline => {
                    tracing::warn!("{e}; retrying (--wait-for-redis)");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(1));
                }
                _ => return Err(StartError(e.to_string())),
            },
        }
    }
}

/// `control` for slot 0, and one more client to `redis` opened on each worker (see [`workers`]).
async fn per_worker(
    workers: &Workers,
    control: RedisClient,
    redis: &config::RedisConfig,
    key_prefix: &str,
) -> Result<PerWorker<RedisClient>, StartError> {
    workers
        .each(control, || {
            let (redis, key_prefix) = (redis.clone(), key_prefix.to_string());
            async move {
                let own = RedisClient::connect(&redis).await?;
                Ok::<_, store::StoreError>(own.with_key_prefix(&key_prefix))
            }
        })
        .await
        .map_err(|e| StartError(e.to_string()))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| StartError(format!("listen tcp {addr}: {e}")))
}

/// Start the proxy with `config` and serve until `shutdown` resolves. This is what the binary runs. With
/// `run_as`, root privileges are dropped once everything is bound and opened, before serving.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let run_as = config.run_as.clone();
    let server = Server::bind(config).await?;
    if let Some(run_as) = &run_as {
        privileges::drop_to(run_as).map_err(StartError)?;
    }
    server.serve(shutdown).await;
    Ok(())
}
