//! The composition root: connect to Redis, open the logs, load certificates, bind the listeners, start the
//! workers and background tasks, serve until shutdown, drain. Nothing below this module starts a task of its
//! own accord; everything long-lived is started here.

pub mod signals;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::{CertificateSource, Config, Engine};
use crate::observe::access_log::Log;
use crate::observe::telemetry::Telemetry;
use crate::proxy::Proxy;
use crate::routing::{CachePolicy, Router};
use crate::rt::tracker::Tracker;
use crate::rt::workers::{PerWorker, Workers};
pub use crate::rt::StartError;
use crate::server::tls::{CertStore, DirectoryCerts, RedisCerts, TlsTerminator};
use crate::server::Listener;
use crate::store::RedisClient;
use crate::upstream::Upstream;

/// Keep the path index of the read Redis current for as long as the proxy lives (see `routing::paths`). A
/// failed scan keeps the last index and is logged once per outage.
async fn scan_paths(proxy: std::sync::Weak<Proxy>) {
    let mut every = tokio::time::interval(crate::routing::paths::RESCAN_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    let mut failing = false;
    loop {
        every.tick().await;
        let Some(proxy) = proxy.upgrade() else { return };
        match proxy.router.refresh_paths().await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(
                    "scanning frontend:*/* for path frontends: {e}; keeping the last index"
                );
            }
            Err(_) => {}
        }
    }
}

/// A proxy that has connected to Redis, opened its logs, loaded its certificates and bound its listeners, ready
/// to serve.
pub struct Server {
    listeners: Vec<Listener>,
    /// The Prometheus listener (`--metrics-address`), bound before the proxy's listeners as in PlanB.
    metrics_listener: Option<TcpListener>,
    /// The admin API and dashboard (`--admin-address`), bound with the metrics listener.
    admin_listener: Option<TcpListener>,
    proxy: Arc<Proxy>,
    /// The threads that serve connections; dropped (and stopped) when `serve` returns.
    workers: Arc<Workers>,
    /// `--access-log-url`'s task, which sends a last batch once the access log has closed.
    shipping: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// PlanB's start-up order: PING the read and write Redis, open the access log, build the certificate loader
    /// (only with a TLS listener; a bad certificate directory is fatal), bind the listeners.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        // With a routes file nothing needs Redis to serve: the clients exist for what still asks for one (a
        // guard's anti-replay, a global rate limit, certificates from Redis) and connect only if asked.
        let table = match &config.routes_file {
            Some(path) => {
                let frontends =
                    crate::config::routes::load(path).map_err(|e| StartError(e.to_string()))?;
                let table = Arc::new(new_table(config.active_healthcheck));
                let count = table.replace(frontends);
                tracing::info!("routes file {} loaded: {count} frontends", path.display());
                Some(table)
            }
            None if config.etcd.is_some() => Some(Arc::new(new_table(config.active_healthcheck))),
            None => None,
        };
        let read = match table {
            Some(_) => RedisClient::lazy(&config.read_redis),
            None => connect(&config.read_redis, config.wait_for_redis).await?,
        };
        let write = if config.write_redis == config.read_redis {
            read.clone()
        } else if table.is_some() {
            RedisClient::lazy(&config.write_redis)
        } else {
            connect(&config.write_redis, config.wait_for_redis).await?
        };
        let read = read.with_key_prefix(&config.key_prefix);
        let write = write.with_key_prefix(&config.key_prefix);
        let (shipper, shipping) = match &config.access_log_url {
            Some(url) => {
                let (shipper, task) = crate::observe::ship::Shipper::start(url);
                (Some(shipper), Some(task))
            }
            None => (None, None),
        };
        let access_log = Log::access(&config.access_log, config.access_log_format, shipper)
            .map_err(|e| StartError(format!("could not open the access log: {e}")))?;
        let metrics_listener = match config.metrics.address {
            Some(addr) => Some(
                crate::observe::metrics::bind(addr)
                    .await
                    .map_err(StartError)?,
            ),
            None => None,
        };
        let admin_listener = match config.admin.address {
            Some(addr) => Some(crate::admin::bind(addr).await.map_err(StartError)?),
            None => None,
        };
        let error_log = Log::errors();
        let terminator = match config.tls_listen {
            None => None,
            Some(_) => Some(tls_terminator(&config.tls, &config, &error_log).await?),
        };
        let backend_tls =
            crate::upstream::tls::backend_client_config(config.backend_ca_file.as_deref())
                .map_err(StartError)?;
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
        if config.active_healthcheck && table.is_none() {
            let lines = error_log.clone();
            crate::routing::health::start(
                write.clone(),
                config.monitor_id.clone(),
                Box::new(move |line| lines.line(line)),
            );
        }
        let workers = Workers::start(config.workers)
            .map_err(|e| StartError(format!("starting the worker threads: {e}")))?;
        // Each worker reads routes, and writes nonces and global rate limits, over its own connections, whose
        // I/O runs on that worker's thread.
        let notifications = read.clone();
        let reads = match table {
            Some(_) => PerWorker::new(vec![read; workers.count() + 1]),
            None => per_worker(&workers, read, &config.read_redis, &config.key_prefix).await?,
        };
        let writes = match config.write_redis == config.read_redis || table.is_some() {
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
        let policies = crate::policy::Policies::new(writes, config.breaker, body_timeout);
        // Shadows get a connection pool of their own, so their connections never take the backends' places.
        let mirrors = Arc::new(crate::mirror::Mirrors::new(Upstream::new(
            config.timeouts.dial,
            backend_tls.clone(),
            workers.count() + 1,
        )));
        let telemetry = Telemetry::new(
            &config,
            &tunnels,
            &access_log,
            &error_log,
            &policies,
            &mirrors,
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
                    events: config.backend_cache_events && table.is_none(),
                },
            ),
            upstream: Upstream::new(config.timeouts.dial, backend_tls, workers.count() + 1)
                .with_max_idle(config.max_idle_per_backend),
            hchecker: Arc::default(),
            mirrors,
            policies,
            write,
            access_log,
            error_log,
            tunnels,
            telemetry,
            request_id_label: config
                .request_id_header
                .as_ref()
                .map(|h| crate::proxy::canonical(h.as_str()))
                .unwrap_or_default(),
            config,
        };
        let proxy = match &table {
            Some(table) => {
                match (&proxy.config.routes_file, &proxy.config.etcd) {
                    (Some(path), _) => {
                        tokio::spawn(crate::routing::table::watch(path.clone(), table.clone()));
                    }
                    (None, Some(etcd)) => {
                        tokio::spawn(crate::routing::etcd::follow(etcd.clone(), table.clone()));
                    }
                    (None, None) => {}
                }
                Proxy {
                    router: proxy.router.with_table(table.clone()),
                    ..proxy
                }
            }
            None => proxy,
        };
        if let Some(cache) = proxy.router.event_cache() {
            let (db, prefix) = (proxy.config.read_redis.db, proxy.config.key_prefix.clone());
            tokio::spawn(crate::routing::events::follow(
                cache,
                proxy.router.path_index(),
                notifications,
                db,
                prefix,
            ));
        }
        let proxy = Arc::new(proxy);
        if table.is_none() {
            // Path frontends that exist already are routed to from the first request.
            if let Err(e) = proxy.router.refresh_paths().await {
                tracing::warn!("scanning frontend:*/* for path frontends: {e}");
            }
            tokio::spawn(scan_paths(Arc::downgrade(&proxy)));
        }
        Ok(Server {
            shipping,
            listeners,
            metrics_listener,
            admin_listener,
            proxy,
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
        signals::start(&self.proxy, self.metrics_listener.take());
        if let Some(listener) = self.admin_listener.take() {
            crate::admin::start(listener, self.proxy.clone());
        }
        let config = &self.proxy.config;
        let info = |line: &str| crate::observe::event_log::planb_line(tracing::Level::INFO, line);
        match config.engine {
            Engine::Native => info("Using native engine"),
            Engine::Sni => info("Using sni engine"),
        }
        if config.tls_listen.is_some() {
            if let Some(warning) = crate::server::tls::preset_warning(config.tls.preset) {
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
        crate::server::serve(self.listeners, self.proxy, self.workers, shutdown).await;
        let grace = proxy
            .config
            .timeouts
            .shutdown
            .max(std::time::Duration::from_secs(1));
        proxy.access_log.close(grace);
        proxy.error_log.close(grace);
        // The access log's writer held the last sender: the shipper sends what is left and ends.
        drop(proxy);
        if let Some(task) = self.shipping.take() {
            let _ = tokio::time::timeout(grace, task).await;
        }
    }
}

/// The TLS terminator for one listener's settings: certificates from Redis (a third client, built from the
/// read options, docs/compat/planb.md#certificates-from-redis), a watched directory (a bad one is fatal), or fixed files.
async fn tls_terminator(
    tls: &crate::config::TlsSettings,
    config: &Config,
    error_log: &Log,
) -> Result<Arc<TlsTerminator>, StartError> {
    let certs = match &tls.certificates {
        CertificateSource::Redis => CertStore::Redis(RedisCerts::new(
            connect(&config.read_redis, config.wait_for_redis).await?,
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
            crate::server::tls::load_static(cert, key, ca).map_err(StartError)?,
        )),
    };
    let terminator = TlsTerminator::new(tls.preset, certs).map_err(StartError)?;
    Ok(Arc::new(terminator))
}

/// The routing table of a routes file or etcd, probing its dead marks with `--active-healthcheck`.
fn new_table(health_checks: bool) -> crate::routing::table::RouteTable {
    match health_checks {
        true => crate::routing::table::RouteTable::with_health_checks(),
        false => crate::routing::table::RouteTable::default(),
    }
}

/// Connect to one Redis. A refused `AUTH` is fatal (a configuration error, as PlanB). With `--wait-for-redis`,
/// retry (backing off up to 1 s) until the window has passed, then fail as PlanB did. Otherwise an unreachable
/// Redis does not stop the start: the client connects in the background and requests get 503 until then.
async fn connect(
    redis: &crate::config::RedisConfig,
    wait: Option<std::time::Duration>,
) -> Result<RedisClient, StartError> {
    // A bad Sentinel list is a configuration error, fatal as PlanB's.
    if let Some(sentinel) = &redis.sentinel {
        sentinel.validate().map_err(StartError)?;
    }
    let deadline = wait.map(|w| tokio::time::Instant::now() + w);
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        match RedisClient::connect(redis).await {
            Ok(client) => return Ok(client),
            Err(e) if e.is_auth_failure() => return Err(StartError(e.to_string())),
            Err(e) => match deadline {
                Some(deadline) if tokio::time::Instant::now() + pause < deadline => {
                    tracing::warn!("{e}; retrying (--wait-for-redis)");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(1));
                }
                Some(_) => return Err(StartError(e.to_string())),
                None => {
                    tracing::warn!(
                        "{e}; serving anyway: requests get 503 until Redis answers \
                         (--wait-for-redis waits, then exits, as PlanB did)"
                    );
                    return Ok(RedisClient::connecting(redis));
                }
            },
        }
    }
}

/// `control` for slot 0, and one more client to `redis` opened on each worker (see [`workers`]).
async fn per_worker(
    workers: &Workers,
    control: RedisClient,
    redis: &crate::config::RedisConfig,
    key_prefix: &str,
) -> Result<PerWorker<RedisClient>, StartError> {
    workers
        .each(control, || {
            let (redis, key_prefix) = (redis.clone(), key_prefix.to_string());
            async move {
                // A Redis that is down gets a client that connects when it comes back.
                let own = match RedisClient::connect(&redis).await {
                    Ok(own) => own,
                    Err(e) if e.is_auth_failure() => return Err(e),
                    Err(_) => RedisClient::connecting(&redis),
                };
                Ok::<_, crate::store::StoreError>(own.with_key_prefix(&key_prefix))
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
        crate::rt::privileges::drop_to(run_as).map_err(StartError)?;
    }
    server.serve(shutdown).await;
    Ok(())
}
