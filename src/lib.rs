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
//! - [`error`]: every response hypache writes itself.
//! - [`head_scan`]: spots request heads with both Content-Length and Transfer-Encoding.
//! - [`body`]: response body types.
//! - [`access_log`]: access and error logs (PlanB, Hipache or JSON lines), written off the request path,
//!   reopened on SIGHUP.
//! - [`event_log`]: the event log on stderr through `tracing` (text or JSON); PlanB's lines kept verbatim.
//! - [`metrics`]: the Prometheus registry (PlanB's five metrics, `process_*`, `hypache_*`) and `/metrics`.
//! - [`inflight`]: the registry of in-flight requests shown by the SIGUSR1 dump.
//! - [`dump`]: the SIGUSR1 dump (runtime figures, connections, in-flight requests; tokio task dump if asked).
//! - [`ops`]: telemetry owned by the proxy, and the SIGUSR1/SIGHUP handlers.
//!
//! # Redis schema
//! - `frontend:<host>` (list): element 0 is an identifier (ignored), then backend URLs.
//! - `dead:<host>` (set): 0-based indexes of dead backends, with a TTL; written on passive failures.
//! - channel `dead`: `<host>;<url>;<index>;<count>` on every passive dead mark.
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
pub mod inflight;
pub mod metrics;
pub mod ops;
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
use crate::ops::Telemetry;
use crate::proxy::Proxy;
use crate::route::Router;
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
    /// The Prometheus listener (`--metrics-address`), bound before the proxy's listener as in PlanB.
    metrics_listener: Option<TcpListener>,
    proxy: Arc<Proxy>,
}

impl Server {
    /// PlanB's start-up order: PING the read and write Redis, open the access log, bind the listener.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let read = RedisClient::connect(&config.read_redis)
            .await
            .map_err(|e| StartError(e.to_string()))?;
        let write = if config.write_redis == config.read_redis {
            read.clone()
        } else {
            RedisClient::connect(&config.write_redis)
                .await
                .map_err(|e| StartError(e.to_string()))?
        };
        let access_log = Log::access(&config.access_log, config.access_log_format)
            .map_err(|e| StartError(format!("could not open the access log: {e}")))?;
        let metrics_listener = match config.metrics.address {
            Some(addr) => Some(metrics::bind(addr).await.map_err(StartError)?),
            None => None,
        };
        let addr = config
            .listen
            .ok_or_else(|| StartError("no listener configured".into()))?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| StartError(format!("listen tcp {addr}: {e}")))?;
        let error_log = Log::errors();
        let tunnels = Arc::default();
        let telemetry = Telemetry::new(&config, &tunnels, &access_log, &error_log);
        let proxy = Proxy {
            router: Router::new(read, config.extensions),
            upstream: Upstream::new(config.timeouts.dial),
            write,
            access_log,
            error_log,
            tunnels,
            telemetry,
            config,
        };
        Ok(Server {
            listener,
            metrics_listener,
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
    pub async fn serve(mut self, shutdown: impl Future<Output = ()>) {
        ops::start(&self.proxy, self.metrics_listener.take());
        event_log::planb_line(tracing::Level::INFO, "Using native engine");
        event_log::planb_line(
            tracing::Level::INFO,
            &format!("Listening on {}...", self.local_addr()),
        );
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

/// Start the proxy with `config` and serve until `shutdown` resolves. This is what the binary runs.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    Server::bind(config).await?.serve(shutdown).await;
    Ok(())
}
