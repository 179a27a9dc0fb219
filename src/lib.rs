//! hypache: a reverse proxy routed by Redis, a drop-in replacement for the Hipache and PlanB executables.
//!
//! Operators manage routes with `redis-cli` (`rpush frontend:www.example.com mysite http://10.0.0.5:80`);
//! every request looks its Host up in Redis and is forwarded to one of the frontend's live backends.
//!
//! # Layout
//! One concern per folder; a module refers only to the layers below it (top to bottom here), which
//! `tests/layers.rs` checks and `docs/architecture.md` explains.
//! - `main.rs`: parses the flags (or reads a Hipache file), installs the crypto provider and logging, calls
//!   [`run`].
//! - [`app`]: the composition root: connects Redis, opens logs, loads certificates, binds listeners, starts the
//!   workers and background tasks ([`app::signals`]), serves, drains.
//! - [`admin`]: the admin listener (`--admin-address`): the JSON API that lists and changes frontends and dead
//!   marks, the last minute's figures, `/healthz` and `/ready`, and the embedded dashboard.
//! - [`nfork`]: the gonfork preset (`--nfork-config`, or the binary run as `nforkd`): inbound listeners that copy
//!   every request to their outbounds and answer from the active one, and gonfork's REST controller. It stands
//!   beside [`app`] as a composition root of its own and uses no Redis.
//! - [`server`]: the downstream side: listeners and the accept loop, each connection's lifecycle (parking
//!   idle HTTP/1 connections, draining) and client timeouts, the HTTP/1 server of the proxy's own for
//!   plain HTTP/1.1 and 1.0 requests, bodies included (hyper serves the rest, and HTTP/2), the TLS
//!   terminator ([`server::tls`]) and the SNI passthrough ([`server::sni`]).
//! - [`proxy`]: the request phases: handle (Host, `__ping__`, lookup), forward (policies), relay (rewrite,
//!   select and fail over, send), finish (response headers, access log); [`proxy::reject`] writes every
//!   answer of the proxy's own, [`proxy::headers`] rewrites headers, [`proxy::upgrade`] runs WebSockets.
//! - [`observe`]: access and error logs, the event log, Prometheus metrics, the in-flight registry, the dump.
//! - [`mirror`]: traffic mirroring: copies of requests sent to shadows, never seen by the client.
//! - [`policy`]: guards, rate limits and the circuit breaker, between lookup and selection; refusals are
//!   [`policy::Refusal`], which the proxy turns into answers.
//! - [`routing`]: frontend lookup (exact, port-stripped, wildcards, catch-all), selection (round robin,
//!   random, dead-set skipping), the backend caches ([`routing::events`]) and the active health check
//!   ([`routing::health`]).
//! - [`store`]: the read and write Redis clients, the lookup pipeline and dead marks.
//! - [`upstream`]: backend URLs ([`upstream::Target`]), dialing (TCP, TLS for `https://`), the keep-alive pool
//!   per backend, and the error classification that decides failover and blame ([`upstream::UpstreamError`]).
//! - [`body`]: the request body on its way to a backend (streamed, watched for activity, or read whole), and
//!   the pipe through which the proxy's own HTTP/1 server feeds a body it reads ([`body::pipe`]).
//! - [`rt`]: runtime helpers that know nothing of HTTP: worker threads, the drain tracker, the clock, the
//!   tunnel copy, dropping privileges.
//! - [`config`]: the resolved [`config::Config`] (every policy field says why it exists) and what fills it:
//!   PlanB's flags ([`config::flags`]) or a Hipache file ([`config::hipache`]). Presets differ only in the
//!   values of these fields. It depends on nothing else in the crate.
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

pub mod admin;
pub mod app;
pub mod body;
pub mod config;
pub mod mirror;
pub mod nfork;
pub mod observe;
pub mod policy;
pub mod proxy;
pub mod routing;
pub mod rt;
pub mod server;
pub mod store;
pub mod upstream;

pub use app::{run, Server, StartError};
