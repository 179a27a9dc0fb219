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

pub mod app;
pub mod body;
pub mod config;
pub mod observe;
pub mod policy;
pub mod proxy;
pub mod routing;
pub mod rt;
pub mod server;
pub mod store;
pub mod upstream;

pub use app::{run, Server, StartError};
