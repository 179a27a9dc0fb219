//! Command-line flags: PlanB's names, short forms and defaults, each also read from `HYPACHE_<FLAG>`.
//!
//! Unlike PlanB (which prints the help and exits 0), a bad value exits 2 with a message naming the flag.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

use crate::config::{
    AccessLogFormat, AccessLogTarget, CertificateSource, Config, Engine, EventLogConfig,
    EventLogFormat, Extensions, ForwardingPolicy, Limits, MetricsConfig, RedisAddr, RedisConfig,
    ResponseStyle, SentinelConfig, Timeouts, TlsPreset, TlsSettings,
};

/// hypache: a reverse proxy routed by Redis, a drop-in replacement for PlanB and Hipache.
#[derive(Debug, Parser)]
#[command(name = "hypache", version, disable_version_flag = true)]
pub struct Cli {
    /// Print the version and exit.
    #[arg(short = 'v', long = "version", action = ArgAction::Version)]
    version: Option<bool>,

    /// Hipache's config.json: run as a drop-in Hipache (the Hipache preset). The other flags are then not used.
    /// Without it, `SETTINGS_FLAVOR=<f>` reads `config/config_<f>.json`, as Hipache does.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the resolved configuration and exit (Hipache's `--dry`).
    #[arg(short = 'd', long = "dry")]
    pub dry: bool,

    /// gonfork's JSON array of inbounds: run as a drop-in `nforkd` (the gonfork preset, docs/nfork.md): every
    /// request to an inbound goes to all its outbounds and is answered by the active one. No Redis is used,
    /// and the other flags are then not used.
    #[arg(long, env = "HYPACHE_NFORK_CONFIG", value_name = "FILE")]
    pub nfork_config: Option<PathBuf>,

    /// With --nfork-config: the address of the REST controller (`/v1/nfork`), nforkd's `--listen`.
    #[arg(long, env = "HYPACHE_NFORK_LISTEN", default_value = crate::config::nfork::DEFAULT_CONTROLLER_LISTEN, value_name = "ADDR")]
    pub nfork_listen: String,

    /// Plain HTTP listen address; `disabled` turns the plain listener off.
    #[arg(
        short = 'l',
        long,
        env = "HYPACHE_LISTEN",
        default_value = "0.0.0.0:8989"
    )]
    pub listen: String,

    /// TLS listen address (empty: no TLS listener).
    #[arg(long, env = "HYPACHE_TLS_LISTEN", default_value = "")]
    pub tls_listen: String,

    /// TLS preset: modern, intermediate or old.
    #[arg(long, env = "HYPACHE_TLS_PRESET", default_value = "modern", value_parser = ["modern", "intermediate", "old"])]
    pub tls_preset: String,

    /// Address of the Prometheus /metrics listener (empty: none).
    #[arg(long, env = "HYPACHE_METRICS_ADDRESS", default_value = "")]
    pub metrics_address: String,

    /// Address of the admin API and dashboard (empty: none). Other than a loopback address, it needs
    /// --admin-token.
    #[arg(long, env = "HYPACHE_ADMIN_ADDRESS", default_value = "")]
    pub admin_address: String,

    /// Bearer token every /api/ request of the admin listener must carry (empty: none, loopback only).
    #[arg(
        long,
        env = "HYPACHE_ADMIN_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub admin_token: String,

    /// Add metrics labelled by frontend key (one series per frontend: mind the cardinality).
    #[arg(long, env = "HYPACHE_METRICS_PER_FRONTEND")]
    pub metrics_per_frontend: bool,

    /// Add metrics labelled by backend URL: responses by status class and latency.
    #[arg(long, env = "HYPACHE_METRICS_PER_BACKEND")]
    pub metrics_per_backend: bool,

    /// With --metrics-per-backend: backends with their own series; the rest share `backend="other"`.
    #[arg(long, env = "HYPACHE_METRICS_BACKEND_LIMIT", default_value_t = 100)]
    pub metrics_backend_limit: usize,

    /// Where TLS certificates come from: `redis` or a directory of `<name>.crt` + `<name>.key` pairs.
    #[arg(long, env = "HYPACHE_LOAD_CERTIFICATES_FROM", default_value = "redis")]
    pub load_certificates_from: String,

    /// PEM file of extra CA certificates trusted for `https://` backends (next to the built-in web roots).
    #[arg(
        long,
        env = "HYPACHE_BACKEND_CA_FILE",
        default_value = "",
        value_name = "PATH"
    )]
    pub backend_ca_file: String,

    /// Read Redis network: tcp or unix.
    #[arg(long, env = "HYPACHE_READ_REDIS_NETWORK", default_value = "tcp", value_parser = ["tcp", "unix"])]
    pub read_redis_network: String,
    /// Read Redis host, or the socket path with the unix network.
    #[arg(long, env = "HYPACHE_READ_REDIS_HOST", default_value = "127.0.0.1")]
    pub read_redis_host: String,
    /// Read Redis port.
    #[arg(long, env = "HYPACHE_READ_REDIS_PORT", default_value_t = 6379)]
    pub read_redis_port: u16,
    /// Comma-separated Sentinel addresses for the read Redis.
    #[arg(long, env = "HYPACHE_READ_REDIS_SENTINEL_ADDRS", default_value = "")]
    pub read_redis_sentinel_addrs: String,
    /// Sentinel master name for the read Redis.
    #[arg(long, env = "HYPACHE_READ_REDIS_SENTINEL_NAME", default_value = "")]
    pub read_redis_sentinel_name: String,
    /// Read Redis password.
    #[arg(
        long,
        env = "HYPACHE_READ_REDIS_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub read_redis_password: String,
    /// Read Redis ACL user name (sent with the password; empty: the default user).
    #[arg(long, env = "HYPACHE_READ_REDIS_USERNAME", default_value = "")]
    pub read_redis_username: String,
    /// Speak TLS to the read Redis (managed Redis services), verified against the system roots.
    #[arg(long, env = "HYPACHE_READ_REDIS_TLS")]
    pub read_redis_tls: bool,
    /// With --read-redis-tls: trust the CA certificates of this PEM file instead of the system roots.
    #[arg(long, env = "HYPACHE_READ_REDIS_TLS_CA_FILE", value_name = "FILE")]
    pub read_redis_tls_ca_file: Option<PathBuf>,
    /// Read Redis database number.
    #[arg(long, env = "HYPACHE_READ_REDIS_DB", default_value_t = 0)]
    pub read_redis_db: u32,

    /// Write Redis network: tcp or unix.
    #[arg(long, env = "HYPACHE_WRITE_REDIS_NETWORK", default_value = "tcp", value_parser = ["tcp", "unix"])]
    pub write_redis_network: String,
    /// Write Redis host, or the socket path with the unix network.
    #[arg(long, env = "HYPACHE_WRITE_REDIS_HOST", default_value = "127.0.0.1")]
    pub write_redis_host: String,
    /// Write Redis port.
    #[arg(long, env = "HYPACHE_WRITE_REDIS_PORT", default_value_t = 6379)]
    pub write_redis_port: u16,
    /// Comma-separated Sentinel addresses for the write Redis.
    #[arg(long, env = "HYPACHE_WRITE_REDIS_SENTINEL_ADDRS", default_value = "")]
    pub write_redis_sentinel_addrs: String,
    /// Sentinel master name for the write Redis.
    #[arg(long, env = "HYPACHE_WRITE_REDIS_SENTINEL_NAME", default_value = "")]
    pub write_redis_sentinel_name: String,
    /// Write Redis password.
    #[arg(
        long,
        env = "HYPACHE_WRITE_REDIS_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub write_redis_password: String,
    /// Write Redis ACL user name (sent with the password; empty: the default user).
    #[arg(long, env = "HYPACHE_WRITE_REDIS_USERNAME", default_value = "")]
    pub write_redis_username: String,
    /// Speak TLS to the write Redis (managed Redis services), verified against the system roots.
    #[arg(long, env = "HYPACHE_WRITE_REDIS_TLS")]
    pub write_redis_tls: bool,
    /// With --write-redis-tls: trust the CA certificates of this PEM file instead of the system roots.
    #[arg(long, env = "HYPACHE_WRITE_REDIS_TLS_CA_FILE", value_name = "FILE")]
    pub write_redis_tls_ca_file: Option<PathBuf>,
    /// Write Redis database number.
    #[arg(long, env = "HYPACHE_WRITE_REDIS_DB", default_value_t = 0)]
    pub write_redis_db: u32,

    /// Access log: a file path, `stdout`, `syslog` or `none`.
    /// `--logfile` is httprouter's name for it.
    #[arg(
        long,
        env = "HYPACHE_ACCESS_LOG",
        default_value = "./access.log",
        alias = "logfile"
    )]
    pub access_log: String,

    /// Also POST every access-log entry, as a JSON line, to this http(s) URL in batches every 2 s.
    /// `--logurl` is httprouter's name for it.
    #[arg(
        long,
        env = "HYPACHE_ACCESS_LOG_URL",
        value_name = "URL",
        alias = "logurl"
    )]
    pub access_log_url: Option<String>,

    /// Access-log line format: planb, hipache or json.
    #[arg(long, env = "HYPACHE_ACCESS_LOG_FORMAT", default_value = "planb", value_parser = ["planb", "hipache", "json"])]
    pub access_log_format: String,

    /// Event-log filter for hypache's own events (`info`, `warn`, `hypache=debug`); default: RUST_LOG, else info.
    #[arg(long, env = "HYPACHE_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// Add a tokio task dump to the SIGUSR1 dump (unstable in tokio: it can stall the runtime).
    #[arg(long, env = "HYPACHE_TASK_DUMP")]
    pub task_dump: bool,

    /// Event-log format on stderr: text (PlanB's lines verbatim) or json (one object per line).
    #[arg(long, env = "HYPACHE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Seconds to wait for a backend's response headers (0: no limit).
    #[arg(
        long,
        env = "HYPACHE_REQUEST_TIMEOUT",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub request_timeout: u64,
    /// Seconds to wait for a TCP connection to a backend.
    #[arg(
        long,
        env = "HYPACHE_DIAL_TIMEOUT",
        default_value_t = 10,
        value_name = "SECONDS"
    )]
    pub dial_timeout: u64,
    /// Limit for reading a request head from its first byte (Go duration, 0s: none).
    #[arg(long, env = "HYPACHE_CLIENT_READ_TIMEOUT", default_value = "0s", value_parser = parse_go_duration)]
    pub client_read_timeout: Duration,
    /// Limit for reading a request head (Go duration; 0s means hypache's default of 60s).
    #[arg(long, env = "HYPACHE_CLIENT_READ_HEADER_TIMEOUT", default_value = "0s", value_parser = parse_go_duration)]
    pub client_read_header_timeout: Duration,
    /// Limit for writing a response after its request head was read (Go duration, 0s: none).
    #[arg(long, env = "HYPACHE_CLIENT_WRITE_TIMEOUT", default_value = "0s", value_parser = parse_go_duration)]
    pub client_write_timeout: Duration,
    /// Idle keep-alive connections are closed after this (Go duration, 0s: none).
    #[arg(long, env = "HYPACHE_CLIENT_IDLE_TIMEOUT", default_value = "0s", value_parser = parse_go_duration)]
    pub client_idle_timeout: Duration,
    /// Seconds a passively marked backend stays in the dead set (0 means 30).
    #[arg(
        long,
        env = "HYPACHE_DEAD_BACKEND_TIME",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub dead_backend_time: u64,
    /// Milliseconds between response flushes (hypache flushes every chunk at once).
    #[arg(
        long,
        env = "HYPACHE_FLUSH_INTERVAL",
        default_value_t = 10,
        value_name = "MS"
    )]
    pub flush_interval: u64,
    /// Header carrying a request id; generated (UUID v4) when a request has none.
    #[arg(long, env = "HYPACHE_REQUEST_ID_HEADER", default_value = "")]
    pub request_id_header: String,
    /// Probe dead backends and revive them (PlanB's monitor).
    #[arg(long, env = "HYPACHE_ACTIVE_HEALTHCHECK")]
    pub active_healthcheck: bool,
    /// Name written into health-check lock keys (default: this machine's hostname).
    #[arg(long, env = "HYPACHE_MONITOR_ID", default_value = "")]
    pub monitor_id: String,
    /// Engine: native, sni (TLS passthrough routed by SNI) or fasthttp (an alias of native).
    #[arg(long, env = "HYPACHE_ENGINE", default_value = "native", value_parser = ["native", "sni", "fasthttp"])]
    pub engine: String,
    /// Cache route lookups for 2 s.
    #[arg(long, env = "HYPACHE_BACKEND_CACHE")]
    pub backend_cache: bool,
    /// Cache route lookups until Redis keyspace notifications say a key they were read from changed (needs
    /// `notify-keyspace-events` with K and glshx on the read Redis; entries live 2 s without it).
    #[arg(long, env = "HYPACHE_BACKEND_CACHE_EVENTS")]
    pub backend_cache_events: bool,
    /// httprouter's preset: read routes from etcd at this URL (v3 API) instead of Redis.
    #[arg(long, env = "HYPACHE_ETCDURL", value_name = "URL")]
    pub etcdurl: Option<String>,
    /// With --etcdurl: the key prefix; keys are `<etcdkey>/<host>/<routeName>` = backend URL.
    #[arg(
        long,
        env = "HYPACHE_ETCDKEY",
        default_value = "/domains",
        value_name = "KEY"
    )]
    pub etcdkey: String,
    /// With --etcdurl: the etcd API the routes are kept in, v3 or v2 (httprouter's).
    #[arg(long, env = "HYPACHE_ETCD_API", default_value = "v3", value_parser = ["v3", "v2"])]
    pub etcd_api: String,
    /// Read routes from this TOML file instead of Redis (watched: a change applies within 2 s).
    #[arg(long, env = "HYPACHE_ROUTES", value_name = "FILE")]
    pub routes: Option<std::path::PathBuf>,

    /// Do not retry a missed lookup with the host lower-cased.
    #[arg(long, env = "HYPACHE_NO_LOWERCASE_LOOKUP")]
    pub no_lowercase_lookup: bool,
    /// Do not look up Hipache wildcard frontends (`frontend:*.<parent>`).
    #[arg(long, env = "HYPACHE_NO_WILDCARD_LOOKUP")]
    pub no_wildcard_lookup: bool,
    /// Do not fall back to the `frontend:*` catch-all.
    #[arg(long, env = "HYPACHE_NO_CATCH_ALL")]
    pub no_catch_all: bool,
    /// Do not try the next live backend when connecting to the chosen one fails (PlanB's single attempt).
    #[arg(long, env = "HYPACHE_NO_FAILOVER")]
    pub no_failover: bool,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish (Go duration).
    #[arg(long, env = "HYPACHE_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_go_duration)]
    pub shutdown_timeout: Duration,
    /// While the read Redis fails, serve hosts seen within this window from their last route (Go duration; 0s:
    /// off, as PlanB).
    #[arg(long, env = "HYPACHE_STALE_ROUTES_TTL", default_value = "5m", value_parser = parse_go_duration)]
    pub stale_routes_ttl: Duration,
    /// At start-up, keep retrying an unreachable Redis for this long, then exit 1 as PlanB did (Go duration);
    /// 0s: start anyway, answering 503 until Redis answers.
    #[arg(long, env = "HYPACHE_WAIT_FOR_REDIS", default_value = "0s", value_parser = parse_go_duration)]
    pub wait_for_redis: Duration,
    /// Close a WebSocket tunnel after this long without a byte in either direction (Go duration, 0s: never).
    #[arg(long, env = "HYPACHE_WEBSOCKET_IDLE_TIMEOUT", default_value = "0s", value_parser = parse_go_duration)]
    pub websocket_idle_timeout: Duration,
    /// Worker threads serving connections, each with its own event loop, backend pool and Redis connection
    /// (0: one per CPU).
    #[arg(long, env = "HYPACHE_WORKERS", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub workers: u16,
    /// Largest request head accepted, in bytes; larger gets 431.
    #[arg(long, env = "HYPACHE_MAX_HEADER_BYTES", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(8192..))]
    pub max_header_bytes: u32,

    /// Circuit breaker for every frontend: failures within --breaker-window that eject a backend (0: off; a
    /// `breaker:<host>` hash turns it on per frontend).
    #[arg(long, env = "HYPACHE_BREAKER_FAILURES", default_value_t = 0)]
    pub breaker_failures: u32,
    /// Window in which --breaker-failures are counted (Go duration).
    #[arg(long, env = "HYPACHE_BREAKER_WINDOW", default_value = "10s", value_parser = parse_go_duration)]
    pub breaker_window: Duration,
    /// How long an ejected backend is skipped before one probe request is sent to it (Go duration).
    #[arg(long, env = "HYPACHE_BREAKER_COOLDOWN", default_value = "30s", value_parser = parse_go_duration)]
    pub breaker_cooldown: Duration,
    /// What counts as a failure: a comma-separated list of connect, timeout, 5xx.
    #[arg(long, env = "HYPACHE_BREAKER_ON", default_value = "connect,timeout,5xx", value_parser = parse_breaker_on)]
    pub breaker_on: super::breaker::On,
    /// At most this percentage of a frontend's backends is ejected at once.
    #[arg(long, env = "HYPACHE_BREAKER_MAX_EJECTION_PERCENT", default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub breaker_max_ejection_percent: u8,
}

/// The command line of gonfork's `nforkd`, for the binary invoked under that name (a symlink): a gonfork user
/// swaps the binary and keeps the command line.
#[derive(Debug, Parser)]
#[command(name = "nforkd", version, disable_version_flag = true)]
pub struct NforkdCli {
    /// The JSON array of inbounds.
    #[arg(long, default_value = crate::config::nfork::DEFAULT_NFORKD_CONFIG, value_name = "FILE")]
    pub config: PathBuf,
    /// The address of the REST controller (`/v1/nfork`).
    #[arg(long, default_value = crate::config::nfork::DEFAULT_CONTROLLER_LISTEN, value_name = "ADDR")]
    pub listen: String,
}

impl NforkdCli {
    /// Parse `args` (the program name first). Go's flag package takes `-config x` as well as `--config x`, so
    /// the single-dash forms of nforkd's two flags are accepted too.
    pub fn parse_go_style(args: impl IntoIterator<Item = std::ffi::OsString>) -> NforkdCli {
        let args = args.into_iter().map(|arg| {
            let Some(text) = arg.to_str() else { return arg };
            for flag in ["config", "listen"] {
                let single = format!("-{flag}");
                if text == single || text.starts_with(&format!("{single}=")) {
                    return format!("-{text}").into();
                }
            }
            arg
        });
        NforkdCli::parse_from(args)
    }
}

fn parse_breaker_on(text: &str) -> Result<super::breaker::On, String> {
    super::breaker::On::parse(text)
}

/// A flag that parsed but cannot be used; exits 2 like a clap error.
#[derive(Debug)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

impl Cli {
    /// Resolve the flags into a [`Config`].
    pub fn into_config(self) -> Result<Config, CliError> {
        let listen = match self.listen.as_str() {
            "disabled" => None,
            addr => Some(
                parse_listen(addr)
                    .map_err(|e| CliError(format!("invalid value '{addr}' for '--listen': {e}")))?,
            ),
        };
        let tls_listen = match self.tls_listen.as_str() {
            "" => None,
            addr => Some(parse_listen(addr).map_err(|e| {
                CliError(format!("invalid value '{addr}' for '--tls-listen': {e}"))
            })?),
        };
        if listen.is_none() && tls_listen.is_none() {
            return Err(CliError(
                "--listen is disabled and no --tls-listen is set: nothing to serve".into(),
            ));
        }
        let preset = match self.tls_preset.as_str() {
            "intermediate" => TlsPreset::Intermediate,
            "old" => TlsPreset::Old,
            _ => TlsPreset::Modern,
        };
        let certificates = match self.load_certificates_from.as_str() {
            "redis" => CertificateSource::Redis,
            "" => return Err(CliError(
                "invalid value '' for '--load-certificates-from': expected `redis` or a directory"
                    .into(),
            )),
            dir => CertificateSource::Directory(PathBuf::from(dir)),
        };
        let engine = match self.engine.as_str() {
            "sni" => Engine::Sni,
            _ => Engine::Native,
        };
        let read_redis = redis_config(
            &self.read_redis_network,
            self.read_redis_host,
            self.read_redis_port,
            self.read_redis_password,
            self.read_redis_username,
            redis_tls(self.read_redis_tls, self.read_redis_tls_ca_file),
            self.read_redis_db,
            sentinel(
                &self.read_redis_sentinel_addrs,
                self.read_redis_sentinel_name,
            ),
        );
        let write_redis = redis_config(
            &self.write_redis_network,
            self.write_redis_host,
            self.write_redis_port,
            self.write_redis_password,
            self.write_redis_username,
            redis_tls(self.write_redis_tls, self.write_redis_tls_ca_file),
            self.write_redis_db,
            sentinel(
                &self.write_redis_sentinel_addrs,
                self.write_redis_sentinel_name,
            ),
        );
        let metrics_address = match self.metrics_address.as_str() {
            "" => None,
            addr => Some(parse_listen(addr).map_err(|e| {
                CliError(format!(
                    "invalid value '{addr}' for '--metrics-address': {e}"
                ))
            })?),
        };
        let admin_address = match self.admin_address.as_str() {
            "" => None,
            addr => Some(parse_listen(addr).map_err(|e| {
                CliError(format!("invalid value '{addr}' for '--admin-address': {e}"))
            })?),
        };
        let admin = super::admin::AdminConfig::new(admin_address, Some(self.admin_token.clone()))
            .map_err(CliError)?;
        if let Some(level) = &self.log_level {
            tracing_subscriber::EnvFilter::try_new(level)
                .map_err(|e| e.to_string())
                .map_err(|e| CliError(format!("invalid value '{level}' for '--log-level': {e}")))?;
        }
        let access_log = match self.access_log.as_str() {
            "" | "none" => AccessLogTarget::None,
            "stdout" => AccessLogTarget::Stdout,
            "syslog" => AccessLogTarget::Syslog,
            path => AccessLogTarget::File(PathBuf::from(path)),
        };
        let etcd = match &self.etcdurl {
            None => None,
            Some(text) => Some(super::EtcdConfig {
                url: super::log_url(text).map_err(|e| {
                    CliError(format!("invalid value '{text}' for '--etcdurl': {e}"))
                })?,
                key: self.etcdkey.trim_end_matches('/').to_string(),
                api: match self.etcd_api.as_str() {
                    "v2" => super::EtcdApi::V2,
                    _ => super::EtcdApi::V3,
                },
            }),
        };
        let access_log_url = match &self.access_log_url {
            None => None,
            Some(text) => Some(super::log_url(text).map_err(|e| {
                CliError(format!(
                    "invalid value '{text}' for '--access-log-url': {e}"
                ))
            })?),
        };
        let request_id_header = match self.request_id_header.as_str() {
            "" => None,
            name => Some(http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                CliError(format!(
                    "invalid value '{name}' for '--request-id-header': not a header name"
                ))
            })?),
        };
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        let client_read = nonzero(self.client_read_timeout);
        let mut config = Config {
            listen,
            tls_listen,
            tls: TlsSettings {
                preset,
                certificates,
            },
            engine,
            backend_ca_file: (!self.backend_ca_file.is_empty())
                .then(|| PathBuf::from(&self.backend_ca_file)),
            read_redis,
            write_redis,
            access_log,
            timeouts: Timeouts {
                request: nonzero(Duration::from_secs(self.request_timeout)),
                request_is_inactivity: false,
                dial: Duration::from_secs(self.dial_timeout),
                client_read,
                client_read_header: nonzero(self.client_read_header_timeout)
                    .unwrap_or(Duration::from_secs(60)),
                client_write: nonzero(self.client_write_timeout),
                client_idle: nonzero(self.client_idle_timeout).or(client_read),
                shutdown: self.shutdown_timeout,
                websocket_idle: nonzero(self.websocket_idle_timeout),
            },
            dead_backend_ttl: Duration::from_secs(match self.dead_backend_time {
                0 => 30,
                n => n,
            }),
            flush_interval: Duration::from_millis(self.flush_interval),
            request_id_header,
            extensions: Extensions {
                lowercase_lookup: !self.no_lowercase_lookup,
                wildcard_lookup: !self.no_wildcard_lookup,
                catch_all: !self.no_catch_all,
                failover: !self.no_failover,
            },
            limits: Limits {
                max_header_bytes: self.max_header_bytes as usize,
                ..Limits::default()
            },
            backend_cache: self.backend_cache || self.backend_cache_events,
            backend_cache_events: self.backend_cache_events,
            routes_file: self.routes.clone(),
            etcd,
            backend_cache_limits: (super::BACKEND_CACHE_TTL, super::BACKEND_CACHE_SIZE),
            active_healthcheck: self.active_healthcheck,
            monitor_id: match self.monitor_id.as_str() {
                "" => super::hostname(),
                id => id.to_string(),
            },
            stale_routes_ttl: nonzero(self.stale_routes_ttl),
            wait_for_redis: nonzero(self.wait_for_redis),
            access_log_format: match self.access_log_format.as_str() {
                "hipache" => AccessLogFormat::Hipache,
                "json" => AccessLogFormat::Json,
                _ => AccessLogFormat::Planb,
            },
            access_log_rules: Default::default(),
            access_log_url,
            metrics: MetricsConfig {
                address: metrics_address,
                per_frontend: self.metrics_per_frontend,
                per_backend: self
                    .metrics_per_backend
                    .then_some(self.metrics_backend_limit),
            },
            event_log: EventLogConfig {
                level: self.log_level,
                format: match self.log_format.as_str() {
                    "json" => EventLogFormat::Json,
                    _ => EventLogFormat::Text,
                },
            },
            task_dump: self.task_dump,
            workers: usize::from(self.workers),
            routing: Default::default(),
            failure: Default::default(),
            responses: Default::default(),
            forwarding: Default::default(),
            key_prefix: String::new(),
            signals: Default::default(),
            max_idle_per_backend: 100,
            more_listeners: Vec::new(),
            run_as: None,
            admin,
            breaker: super::breaker::BreakerDefaults {
                failures: self.breaker_failures,
                window: self.breaker_window,
                cooldown: self.breaker_cooldown,
                on: self.breaker_on,
                max_ejection_percent: self.breaker_max_ejection_percent,
            },
        };
        if config.etcd.is_some() {
            // httprouter's preset: its answers, its headers, the Host exactly as sent.
            config.responses = ResponseStyle::Httprouter;
            config.forwarding = ForwardingPolicy::Httprouter;
            config.routing.exact_host_only = true;
        }
        Ok(config)
    }
}

/// TLS to a Redis when `--*-redis-tls` is given; a CA file alone turns it on too.
fn redis_tls(on: bool, ca_file: Option<PathBuf>) -> Option<super::RedisTls> {
    (on || ca_file.is_some()).then_some(super::RedisTls { ca_file })
}

#[allow(clippy::too_many_arguments)]
fn redis_config(
    network: &str,
    host: String,
    port: u16,
    password: String,
    username: String,
    tls: Option<super::RedisTls>,
    db: u32,
    sentinel: Option<SentinelConfig>,
) -> RedisConfig {
    let addr = match network {
        "unix" => RedisAddr::Unix(PathBuf::from(host)),
        _ => RedisAddr::Tcp { host, port },
    };
    RedisConfig {
        addr,
        password: (!password.is_empty()).then_some(password),
        username: (!username.is_empty()).then_some(username),
        tls,
        db: i64::from(db),
        sentinel,
    }
}

/// PlanB splits the addresses on commas and trims them; host, port and network are then ignored. Empty
/// entries and an empty name are start-up errors (checked when connecting, exit 1 as in PlanB).
fn sentinel(addrs: &str, name: String) -> Option<SentinelConfig> {
    (!addrs.is_empty()).then(|| SentinelConfig {
        addrs: addrs.split(',').map(|a| a.trim().to_string()).collect(),
        name,
    })
}

/// A listen address as Go takes it: `:9080` is every interface.
pub fn listen_address(listen: &str) -> String {
    match listen.starts_with(':') {
        true => format!("0.0.0.0{listen}"),
        false => listen.to_string(),
    }
}

/// Parse a listen address the way Go does: `:80` means every interface, a host name is resolved.
fn parse_listen(addr: &str) -> Result<SocketAddr, String> {
    listen_address(addr)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "no address".to_string())
}

/// Parse a Go duration (`300ms`, `1.5s`, `1m30s`, `2h`, `0`), as PlanB's duration flags take: Go's own rules
/// ([`super::go_duration::parse`]), around blanks, with the text in the message.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    super::go_duration::parse(text.trim()).map_err(|e| format!("{e} in duration {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_go_duration("5x").is_err());
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("s").is_err());
    }

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen(":80").unwrap(), "0.0.0.0:80".parse().unwrap());
        assert_eq!(
            parse_listen("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert!(parse_listen("nope").is_err());
    }
}
