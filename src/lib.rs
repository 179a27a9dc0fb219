//! hypache: a reverse proxy routed by Redis, a drop-in replacement for the Hipache and PlanB executables.
//!
//! Operators manage routes with `redis-cli` (`rpush frontend:www.example.com mysite http://10.0.0.5:80`);
//! every request looks its Host up in Redis and is forwarded to one of the frontend's live backends.
//!
//! # Layout
//! - `main.rs`: parses the CLI, installs logging, calls [`run`].
//! - [`cli`]: PlanB's flags (names, defaults, `HYPACHE_*` environment variables) → [`config::Config`].
//! - [`config`]: the resolved configuration; every policy field says why it exists.
//! - [`server`]: listeners, per-connection client timeouts, graceful shutdown.
//! - [`proxy`]: the request pipeline; [`proxy::headers`] rewrites headers both ways.
//! - [`route`]: frontend key candidates, round-robin selection, dead-set skipping.
//! - [`store`]: the read and write Redis clients and the lookup pipeline.
//! - [`upstream`]: backend URLs, dialing, the keep-alive pool per backend.
//! - [`health`]: the active health check (`--active-healthcheck`).
//! - [`policy`]: the per-frontend policy layer between lookup and selection: [`policy::guard`] (signatures,
//!   timestamp window, anti-replay), [`policy::ratelimit`], [`policy::breaker`].
//! - [`error`]: every response hypache writes itself.
//! - [`head_scan`]: spots request heads with both Content-Length and Transfer-Encoding.
//! - [`body`]: response body types.
//! - [`access_log`]: access and error logs, written off the request path.
//!
//! # Redis schema
//! - `frontend:<host>` (list): element 0 is an identifier (ignored), then backend URLs.
//! - `dead:<host>` (set): 0-based indexes of dead backends, with a TTL; written on passive failures.
//! - channel `dead`: `<host>;<url>;<index>;<count>` on every passive dead mark.
//! - `dead:<host>:<url>` (string): the health-check lock, holding the monitoring machine's name (30 s TTL).
//! - `healthcheck:<host>` (hash): optional `path`, `status`, `body` for the active health check.
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
pub mod error;
pub mod head_scan;
pub mod health;
pub mod policy;
pub mod proxy;
pub mod route;
pub mod server;
pub mod store;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::access_log::Log;
use crate::config::Config;
use crate::proxy::Proxy;
use crate::route::{CachePolicy, Router};
use crate::store::RedisClient;
use crate::upstream::Upstream;

/// A start-up failure: the process exits 1 with this message, as PlanB does.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// A proxy that has connected to Redis, opened its logs and bound its listener, ready to serve.
pub struct Server {
    listener: TcpListener,
    proxy: Arc<Proxy>,
}

impl Server {
    /// PlanB's start-up order: PING the read and write Redis, open the access log, bind the listener.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let read = connect(&config.read_redis, config.wait_for_redis).await?;
        let write = if config.write_redis == config.read_redis {
            read.clone()
        } else {
            connect(&config.write_redis, config.wait_for_redis).await?
        };
        let access_log = Log::access(&config.access_log)
            .map_err(|e| StartError(format!("could not open the access log: {e}")))?;
        let addr = config
            .listen
            .ok_or_else(|| StartError("no listener configured".into()))?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| StartError(format!("listen tcp {addr}: {e}")))?;
        let error_log = Log::errors();
        if config.active_healthcheck {
            health::start(write.clone(), config.monitor_id.clone(), error_log.clone());
        }
        let proxy = Proxy {
            router: Router::new(
                read,
                config.extensions,
                CachePolicy {
                    backend_cache: config.backend_cache,
                    stale_routes_ttl: config.stale_routes_ttl,
                },
            ),
            upstream: Upstream::new(config.timeouts.dial),
            policies: policy::Policies::new(write.clone(), config.breaker),
            write,
            access_log,
            error_log,
            tunnels: Default::default(),
            config,
        };
        Ok(Server {
            listener,
            proxy: Arc::new(proxy),
        })
    }

    /// The address the plain listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serve until `shutdown` resolves, drain in-flight requests, then flush the logs.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        eprintln!("Using native engine");
        eprintln!("Listening on {}...", self.local_addr());
        let proxy = self.proxy.clone();
        server::serve(self.listener, self.proxy, shutdown).await;
        let grace = proxy
            .config
            .timeouts
            .shutdown
            .max(std::time::Duration::from_secs(1));
        proxy.access_log.close(grace);
        proxy.error_log.close(grace);
    }
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

/// Start the proxy with `config` and serve until `shutdown` resolves. This is what the binary runs.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    Server::bind(config).await?.serve(shutdown).await;
    Ok(())
}
