//! The Hipache preset: `hypache -c config.json` reads Hipache's JSON configuration (the master/0.4 layout and
//! the 0.3.1 layout with its legacy keys, docs/compat/hipache.md#configuration-file) and resolves it into the same [`Config`] the PlanB
//! flags fill. Hipache's behaviour is entirely in the policy fields set here; nothing else knows about presets.
//!
//! Every key is read with its path, so a wrong type exits 2 naming the key (`server.tcpTimeout: expected a
//! number`), and a syntax error names the line and column.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::{
    AccessLogFormat, AccessLogRules, AccessLogTarget, CertificateSource, Config, DeadSetKey,
    ErrorPages, FailurePolicy, ForwardingPolicy, ListenerSpec, RedisAddr, RedisConfig,
    ResponseStyle, RoutingPolicy, RunAs, Selection, SignalPolicy, TlsPreset, TlsSettings,
};

/// A configuration file that cannot be used; the binary exits 2 with this text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HipacheFileError(pub String);

impl std::fmt::Display for HipacheFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HipacheFileError {}

/// A resolved Hipache configuration, and what the operator should know about it (keys that map only
/// approximately, ignored legacy keys, unknown keys).
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// The file to read: `-c FILE` when given, else `config/config_<SETTINGS_FLAVOR>.json` (relative to the working
/// directory, as Hipache resolved it from its install directory) when that variable is set, else none (the
/// PlanB preset).
pub fn config_path(given: Option<PathBuf>, flavor: Option<&str>) -> Option<PathBuf> {
    match (given, flavor) {
        (Some(path), _) => Some(path),
        (None, Some(flavor)) if !flavor.is_empty() => {
            Some(PathBuf::from(format!("config/config_{flavor}.json")))
        }
        _ => None,
    }
}

/// Read and resolve a Hipache configuration file. Relative paths inside it (`staticDir`, certificates) are
/// taken as they are, relative to the working directory, as Node did.
pub fn load(path: &Path) -> Result<Loaded, HipacheFileError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| HipacheFileError(format!("{}: {e}", path.display())))?;
    from_json(&text).map_err(|e| HipacheFileError(format!("{}: {e}", path.display())))
}

/// The top-level keys a Hipache file may have (master and 0.3.1 layouts); others are warned about.
const ROOT_KEYS: &[&str] = &[
    "server",
    "http",
    "https",
    "driver",
    "user",
    "group",
    "redisHost",
    "redisPort",
    "redisPassword",
    "redisDatabase",
    "redisMasterHost",
    "redisMasterPort",
    "redisMasterPassword",
    "redisMasterDatabase",
];

/// The keys of `server`.
const SERVER_KEYS: &[&str] = &[
    "debug",
    "workers",
    "maxSockets",
    "tcpTimeout",
    "deadBackendTTL",
    "retryOnError",
    "accessLog",
    "httpKeepAlive",
    "deadBackendOn500",
    "staticDir",
    "lruCache",
    "port",
    "address",
    "https",
];

/// Resolve a configuration from its JSON text.
pub fn from_json(text: &str) -> Result<Loaded, HipacheFileError> {
    let root: Value = serde_json::from_str(text).map_err(|e| {
        HipacheFileError(format!(
            "line {} column {}: {}",
            e.line(),
            e.column(),
            strip_position(&e.to_string())
        ))
    })?;
    let root = Obj::root(&root)?;
    let mut warnings = Vec::new();
    root.warn_unknown(ROOT_KEYS, &mut warnings);
    let server = root.obj("server")?.unwrap_or_else(|| Obj::empty("server"));
    server.warn_unknown(SERVER_KEYS, &mut warnings);
    // `server.debug` had no visible effect in Hipache; it is read only to check its type.
    server.bool("debug")?;

    let drivers = drivers(&root, &mut warnings)?;
    let (listen, more_listeners) = listeners(&root, &server, &mut warnings)?;
    let keys = ServerKeys::read(&server, &mut warnings)?;
    let run_as = run_as(&root)?;
    let first = drivers.first().cloned().ok_or_else(|| {
        HipacheFileError("driver: at least one driver URL is needed (e.g. \"redis:\")".into())
    })?;
    let last = drivers.last().cloned().unwrap_or_else(|| first.clone());

    let mut config = Config::new(
        listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 80))),
        first.redis.clone(),
    );
    config.listen = listen;
    config.more_listeners = more_listeners;
    if let Some(first_tls) = config
        .more_listeners
        .iter()
        .position(|l| l.tls.is_some() && config.listen.is_none())
    {
        // Only HTTPS binds: the first one is the main listener, so it is announced as `Listening tls on`.
        let spec = config.more_listeners.remove(first_tls);
        config.tls_listen = Some(spec.addr);
        config.tls = spec.tls.unwrap_or_default();
    }
    config.write_redis = last.redis;
    config.key_prefix = first.prefix;
    config.run_as = Some(run_as);
    keys.apply(&mut config);
    hipache_policies(&mut config);
    Ok(Loaded { config, warnings })
}

/// The `server` keys, read and checked.
struct ServerKeys {
    tcp_timeout: Duration,
    dead_ttl: Duration,
    retry_on_error: u64,
    access_log: AccessLogTarget,
    keep_alive: bool,
    max_sockets: u64,
    dead_on_5xx: bool,
    pages: ErrorPages,
    lru: Option<(Duration, u64)>,
    workers: u64,
}

impl ServerKeys {
    fn read(server: &Obj<'_>, warnings: &mut Vec<String>) -> Result<ServerKeys, HipacheFileError> {
        let access_log = match server.string_or_null("accessLog")? {
            Some(Some(path)) => match path.as_str() {
                "" | "none" => AccessLogTarget::None,
                "stdout" => AccessLogTarget::Stdout,
                "syslog" => AccessLogTarget::Syslog,
                path => AccessLogTarget::File(PathBuf::from(path)),
            },
            Some(None) => AccessLogTarget::None,
            None => AccessLogTarget::File(PathBuf::from("/var/log/hipache/access.log")),
        };
        let pages = match server.string_or_null("staticDir")?.flatten() {
            Some(dir) => load_pages(Path::new(&dir), warnings)?,
            None => built_in_pages(),
        };
        let lru = match server.obj("lruCache")? {
            Some(lru) => {
                let ttl = lru.secs("ttl")?.unwrap_or(Duration::from_secs(5));
                Some((ttl, lru.uint("size")?.unwrap_or(0)))
            }
            None => None,
        };
        Ok(ServerKeys {
            tcp_timeout: server
                .secs("tcpTimeout")?
                .unwrap_or(Duration::from_secs(30)),
            dead_ttl: server
                .secs("deadBackendTTL")?
                .unwrap_or(Duration::from_secs(30)),
            retry_on_error: server.uint("retryOnError")?.unwrap_or(3),
            access_log,
            keep_alive: server.bool("httpKeepAlive")?.unwrap_or(false),
            max_sockets: server.uint("maxSockets")?.unwrap_or(100),
            dead_on_5xx: server.bool("deadBackendOn500")?.unwrap_or(true),
            pages,
            lru,
            workers: server.uint("workers")?.unwrap_or(10),
        })
    }

    /// What the keys set in the resolved configuration.
    fn apply(self, config: &mut Config) {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        config.access_log = self.access_log;
        config.dead_backend_ttl = if self.dead_ttl.is_zero() {
            Duration::from_secs(30)
        } else {
            self.dead_ttl
        };
        // Hipache's socket inactivity timeout: the backend's silence, the client's idleness, and the connect
        // timeout (at most 10 s).
        config.timeouts.request = nonzero(self.tcp_timeout);
        config.timeouts.request_is_inactivity = true;
        config.timeouts.client_idle = nonzero(self.tcp_timeout);
        config.timeouts.dial = nonzero(self.tcp_timeout)
            .unwrap_or(Duration::from_secs(10))
            .min(Duration::from_secs(10));
        config.workers = self.workers as usize;
        config.max_idle_per_backend = if self.keep_alive {
            self.max_sockets as usize
        } else {
            0
        };
        if let Some((ttl, size)) = self.lru {
            config.backend_cache = true;
            config.backend_cache_limits = (ttl, size);
        }
        config.failure = FailurePolicy {
            min_backends_to_mark: 2,
            mark_on_resolve_failure: false,
            dead_statuses: if self.dead_on_5xx {
                vec![501..=502, 504..=599]
            } else {
                Vec::new()
            },
            retry_limit: Some(self.retry_on_error as u32),
            relookup_on_retry: true,
            respect_hchecker_ping: true,
            normalise_published_url: true,
        };
        config.responses = ResponseStyle::Hipache(Arc::new(self.pages));
    }
}

/// What makes the preset Hipache whatever the file says: its access log, lookup, selection, forwarding
/// headers and signals.
fn hipache_policies(config: &mut Config) {
    config.access_log_format = AccessLogFormat::Hipache;
    config.access_log_rules = AccessLogRules {
        only_selected: true,
        socket_bytes: true,
    };
    config.routing = RoutingPolicy {
        selection: Selection::Random,
        strip_port_first: true,
        identifier_only_matches: true,
        dead_set: DeadSetKey::RequestHost,
        exact_host_only: false,
    };
    config.forwarding = ForwardingPolicy::Hipache;
    config.signals = SignalPolicy {
        usr1_reopens_log: true,
    };
}

/// `user` and `group`: dropped to after binding, `www-data` by default.
fn run_as(root: &Obj<'_>) -> Result<RunAs, HipacheFileError> {
    Ok(RunAs {
        user: match root.get("user") {
            None | Some(Value::Null) => "www-data".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(type_error("user", "a user name or a uid")),
        },
        group: match root.get("group") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => return Err(type_error("group", "a group name or a gid")),
        },
    })
}

/// One parsed driver URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Driver {
    pub redis: RedisConfig,
    /// `#prefix`, put before `frontend:` and `dead:` keys.
    pub prefix: String,
}

/// Parse `redis://[:password@][host][:port][/db][#prefix]`; `redis:` alone is 127.0.0.1:6379. Other drivers
/// Hipache had (etcd, memcached, zookeeper) are refused with the list of what is supported.
pub fn parse_driver(text: &str) -> Result<Driver, String> {
    let scheme: String = text
        .split(':')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_lowercase();
    if scheme != "redis" {
        let name = match scheme.strip_suffix('s') {
            Some(stem) if !stem.is_empty() => stem.to_string(),
            _ => scheme.clone(),
        };
        return Err(format!(
            "{text:?}: the {name} driver is not supported; hypache supports redis only \
             (redis://[:password@][host][:port][/db][#prefix])"
        ));
    }
    let rest = &text[text.find(':').map_or(text.len(), |i| i + 1)..];
    // Every part is optional (`redis:`, `redis:#p`, `redis://:6380`): fill in the host before parsing.
    let after = rest.strip_prefix("//").unwrap_or(rest);
    let end = after.find(['/', '#', '?']).unwrap_or(after.len());
    let (authority, tail) = after.split_at(end);
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let hostport = if hostport.is_empty() || hostport.starts_with(':') {
        format!("127.0.0.1{hostport}")
    } else {
        hostport.to_string()
    };
    let normalised = format!("redis://{userinfo}{hostport}{tail}");
    let url = url::Url::parse(&normalised).map_err(|e| format!("{text:?}: {e}"))?;
    let host = match url.host() {
        None => "127.0.0.1".to_string(),
        Some(url::Host::Domain("")) => "127.0.0.1".to_string(),
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
    };
    let port = url.port().unwrap_or(6379);
    let password = url
        .password()
        .map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        })
        .filter(|p| !p.is_empty());
    let db = match url.path().trim_matches('/') {
        "" => 0,
        db => db
            .parse::<i64>()
            .map_err(|_| format!("{text:?}: the database {db:?} is not a number"))?,
    };
    let prefix = url.fragment().unwrap_or("").to_string();
    Ok(Driver {
        redis: RedisConfig {
            addr: RedisAddr::Tcp { host, port },
            password,
            username: None,
            tls: None,
            db,
            sentinel: None,
        },
        prefix,
    })
}

/// `driver` (a string or an array), or the 0.3.1 `redisHost`-style keys when there is no `driver`, or `redis:`.
fn drivers(root: &Obj<'_>, warnings: &mut Vec<String>) -> Result<Vec<Driver>, HipacheFileError> {
    let legacy_keys = ["redisHost", "redisPort", "redisPassword", "redisDatabase"];
    let has_legacy =
        legacy_keys.iter().any(|k| root.get(k).is_some()) || root.get("redisMasterHost").is_some();
    let urls: Vec<String> = match root.get("driver") {
        Some(Value::String(url)) => vec![url.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(url) => Ok(url.clone()),
                _ => Err(type_error(&format!("driver[{i}]"), "a URL string")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(type_error("driver", "a URL string or an array of URLs")),
        None if has_legacy => {
            let slave = legacy_url(root, "redis")?;
            let mut urls = vec![slave];
            if root.get("redisMasterHost").is_some() {
                urls.push(legacy_url(root, "redisMaster")?);
            }
            urls
        }
        None => vec!["redis:".to_string()],
    };
    if has_legacy && root.get("driver").is_some() {
        warnings.push("redisHost-style keys are ignored because `driver` is set".into());
    }
    urls.iter()
        .enumerate()
        .map(|(i, url)| {
            parse_driver(url).map_err(|e| {
                let key = if urls.len() > 1 {
                    format!("driver[{i}]")
                } else {
                    "driver".into()
                };
                HipacheFileError(format!("{key}: {e}"))
            })
        })
        .collect()
}

/// A driver URL from `<stem>Host`, `<stem>Port`, `<stem>Password`, `<stem>Database` (0.3.1's
/// `legacyConfigSupport`).
fn legacy_url(root: &Obj<'_>, stem: &str) -> Result<String, HipacheFileError> {
    let host = root
        .string(&format!("{stem}Host"))?
        .unwrap_or_else(|| "127.0.0.1".into());
    let port = root.uint(&format!("{stem}Port"))?.unwrap_or(6379);
    let password = root.string(&format!("{stem}Password"))?;
    let db = root.uint(&format!("{stem}Database"))?.unwrap_or(0);
    let auth = match password {
        Some(p) if !p.is_empty() => format!(
            ":{}@",
            percent_encoding::utf8_percent_encode(&p, percent_encoding::NON_ALPHANUMERIC)
        ),
        _ => String::new(),
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Ok(format!("redis://{auth}{host}:{port}/{db}"))
}

/// The listeners: the first plain one as the main listener, the others (and every HTTPS one) as extras.
fn listeners(
    root: &Obj<'_>,
    server: &Obj<'_>,
    warnings: &mut Vec<String>,
) -> Result<(Option<SocketAddr>, Vec<ListenerSpec>), HipacheFileError> {
    let legacy = root.get("http").is_none()
        && root.get("https").is_none()
        && ["port", "address", "https"]
            .iter()
            .any(|k| server.get(k).is_some());
    let mut plain: Vec<SocketAddr> = Vec::new();
    let mut tls: Vec<ListenerSpec> = Vec::new();
    if legacy {
        // 0.3.1: `server.port` on every `server.address` (all interfaces when missing), and `server.https`
        // `{port, key, cert}` on the same addresses.
        let port = server.port("port")?.unwrap_or(80);
        let addresses = match server.get("address") {
            None | Some(Value::Null) => vec!["::".to_string()],
            Some(_) => server.strings("address")?,
        };
        for address in &addresses {
            plain.push(resolve(address, port, "server.address")?);
        }
        if let Some(https) = server.obj("https")? {
            let port = https.port("port")?.unwrap_or(443);
            let settings = tls_settings(&https, None, warnings)?;
            for address in &addresses {
                tls.push(ListenerSpec {
                    addr: resolve(address, port, "server.address")?,
                    tls: Some(settings.clone()),
                });
            }
        }
    } else {
        if ["port", "address", "https"]
            .iter()
            .any(|k| server.get(k).is_some())
        {
            warnings.push(
                "server.port, server.address and server.https (0.3 keys) are ignored because `http` or \
                 `https` is set"
                    .into(),
            );
        }
        let http = root.obj("http")?.unwrap_or_else(|| Obj::empty("http"));
        let port = http.port("port")?.unwrap_or(80);
        let binds = match http.get("bind") {
            None | Some(Value::Null) => vec![Bind::Address("127.0.0.1".into(), None)],
            Some(_) => http.binds("bind")?,
        };
        for (i, bind) in binds.iter().enumerate() {
            let key = format!("http.bind[{i}]");
            plain.push(resolve(bind.address(), bind.port().unwrap_or(port), &key)?);
        }
        if let Some(https) = root.obj("https")? {
            let port = https.port("port")?.unwrap_or(443);
            let binds = match https.get("bind") {
                None | Some(Value::Null) => Vec::new(),
                Some(_) => https.binds("bind")?,
            };
            for (i, bind) in binds.iter().enumerate() {
                let key = format!("https.bind[{i}]");
                let overrides = match bind {
                    Bind::Object(o) => Some(o),
                    Bind::Address(..) => None,
                };
                tls.push(ListenerSpec {
                    addr: resolve(bind.address(), bind.port().unwrap_or(port), &key)?,
                    tls: Some(tls_settings(&https, overrides, warnings)?),
                });
            }
        }
    }
    let mut plain = plain.into_iter();
    let main = plain.next();
    let mut more: Vec<ListenerSpec> = plain.map(|addr| ListenerSpec { addr, tls: None }).collect();
    more.extend(tls);
    Ok((main, more))
}

/// An `http.bind`/`https.bind` entry.
enum Bind<'a> {
    Address(String, Option<u16>),
    Object(Obj<'a>),
}

impl Bind<'_> {
    fn address(&self) -> &str {
        match self {
            Bind::Address(a, _) => a,
            Bind::Object(o) => o
                .get("address")
                .and_then(Value::as_str)
                .unwrap_or("127.0.0.1"),
        }
    }

    fn port(&self) -> Option<u16> {
        match self {
            Bind::Address(_, p) => *p,
            Bind::Object(o) => o.port("port").ok().flatten(),
        }
    }
}

/// The TLS settings of one HTTPS bind: `https.*` with the bind's own overrides.
fn tls_settings(
    https: &Obj<'_>,
    bind: Option<&Obj<'_>>,
    warnings: &mut Vec<String>,
) -> Result<TlsSettings, HipacheFileError> {
    let pick = |key: &str| -> Option<&Obj<'_>> {
        match bind {
            Some(b) if b.get(key).is_some() => Some(b),
            _ if https.get(key).is_some() => Some(https),
            _ => None,
        }
    };
    let path = |key: &str| -> Result<Option<PathBuf>, HipacheFileError> {
        match pick(key) {
            Some(o) => Ok(o.string(key)?.map(PathBuf::from)),
            None => Ok(None),
        }
    };
    let where_ = bind.map_or(https.path.clone(), |b| b.path.clone());
    let key = path("key")?;
    let cert = path("cert")?;
    let (Some(key), Some(cert)) = (key, cert) else {
        return Err(HipacheFileError(format!(
            "{where_}: `key` and `cert` are required for an HTTPS bind (Hipache's MISSING_KEY)"
        )));
    };
    for file in [&key, &cert] {
        if let Err(e) = std::fs::metadata(file) {
            return Err(HipacheFileError(format!(
                "{where_}: cannot read {}: {e} (Hipache's CANT_READ_FILE)",
                file.display()
            )));
        }
    }
    let ca = match pick("ca") {
        Some(o) => match o.get("ca") {
            Some(Value::String(s)) => vec![PathBuf::from(s)],
            Some(Value::Null) | None => Vec::new(),
            Some(_) => o.strings("ca")?.into_iter().map(PathBuf::from).collect(),
        },
        None => Vec::new(),
    };
    if let Some(o) = pick("passphrase") {
        if o.string("passphrase")?.is_some_and(|p| !p.is_empty()) {
            warnings.push(format!(
                "{where_}: `passphrase` is not supported (rustls reads unencrypted keys only): decrypt the key \
                 with `openssl pkey -in key.pem -out key.pem`"
            ));
        }
    }
    if let Some(o) = pick("ciphers") {
        if o.string("ciphers")?.is_some() {
            warnings.push(format!(
                "{where_}: `ciphers` is not used: hypache offers the ECDHE AEAD suites of TLS 1.2 and 1.3 \
                 (its intermediate preset), the nearest rustls has to an OpenSSL cipher string"
            ));
        }
    }
    if let Some(o) = pick("secureProtocol") {
        if let Some(protocol) = o.string("secureProtocol")? {
            let old = [
                "SSLv2",
                "SSLv3",
                "TLSv1_method",
                "TLSv1_1",
                "TLSv1_server",
                "TLSv1_client",
            ];
            if old.iter().any(|p| protocol.starts_with(p)) {
                warnings.push(format!(
                    "{where_}: secureProtocol {protocol:?} asks for a protocol older than TLS 1.2, which rustls \
                     does not offer: TLS 1.2 and 1.3 are used"
                ));
            }
        }
    }
    if let Some(o) = pick("honorCipherOrder") {
        if o.bool("honorCipherOrder")? == Some(false) {
            warnings.push(format!(
                "{where_}: honorCipherOrder false is not supported: the server's order is always used"
            ));
        }
    }
    if let Some(o) = pick("secureOptions") {
        o.uint("secureOptions")?;
    }
    Ok(TlsSettings {
        preset: TlsPreset::Intermediate,
        certificates: CertificateSource::Files { cert, key, ca },
    })
}

/// `address:port`, resolving a name; the error names the key.
fn resolve(address: &str, port: u16, key: &str) -> Result<SocketAddr, HipacheFileError> {
    if let Ok(ip) = address.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (address, port)
        .to_socket_addrs()
        .map_err(|e| HipacheFileError(format!("{key}: {address:?}: {e}")))?
        .next()
        .ok_or_else(|| HipacheFileError(format!("{key}: {address:?} has no address")))
}

/// hypache's own error pages, used when `server.staticDir` is not set.
pub fn built_in_pages() -> ErrorPages {
    let page = |text: &'static str| bytes::Bytes::from_static(text.as_bytes());
    ErrorPages {
        dir: None,
        by_status: [
            (400, page(include_str!("../../static/error_400.html"))),
            (502, page(include_str!("../../static/error_502.html"))),
            (504, page(include_str!("../../static/error_504.html"))),
        ]
        .into_iter()
        .collect(),
        default: Some(page(include_str!("../../static/error_default.html"))),
    }
}

/// `error_<code>.html` and `error_default.html` from `dir`, read once. Missing pages fall back to plain text, as
/// in Hipache; a directory that cannot be read is only a warning for the same reason.
fn load_pages(dir: &Path, warnings: &mut Vec<String>) -> Result<ErrorPages, HipacheFileError> {
    let mut pages = ErrorPages {
        dir: Some(dir.to_path_buf()),
        ..ErrorPages::default()
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            warnings.push(format!(
                "server.staticDir: {}: {e}; errors are answered in plain text",
                dir.display()
            ));
            return Ok(pages);
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(code) = name
            .strip_prefix("error_")
            .and_then(|n| n.strip_suffix(".html"))
        else {
            continue;
        };
        let read = || {
            std::fs::read(entry.path())
                .map(bytes::Bytes::from)
                .map_err(|e| {
                    HipacheFileError(format!("server.staticDir: {}: {e}", entry.path().display()))
                })
        };
        if code == "default" {
            pages.default = Some(read()?);
        } else if let Ok(status) = code.parse::<u16>() {
            pages.by_status.insert(status, read()?);
        }
    }
    Ok(pages)
}

fn type_error(key: &str, expected: &str) -> HipacheFileError {
    HipacheFileError(format!("{key}: expected {expected}"))
}

/// serde_json's message without its own ` at line L column C` (the position is said first).
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

/// A JSON object and its path in the file, for error messages.
#[derive(Clone)]
struct Obj<'a> {
    map: Option<&'a Map<String, Value>>,
    path: String,
}

impl<'a> Obj<'a> {
    fn root(value: &'a Value) -> Result<Obj<'a>, HipacheFileError> {
        match value {
            Value::Object(map) => Ok(Obj {
                map: Some(map),
                path: String::new(),
            }),
            _ => Err(HipacheFileError(
                "expected a JSON object at the top level".into(),
            )),
        }
    }

    fn empty(path: &str) -> Obj<'a> {
        Obj {
            map: None,
            path: path.to_string(),
        }
    }

    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(key))
    }

    fn warn_unknown(&self, known: &[&str], warnings: &mut Vec<String>) {
        for key in self.map.into_iter().flat_map(|m| m.keys()) {
            if !known.contains(&key.as_str()) {
                warnings.push(format!("{}: unknown key, ignored", self.key(key)));
            }
        }
    }

    fn obj(&self, key: &str) -> Result<Option<Obj<'a>>, HipacheFileError> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Obj {
                map: Some(map),
                path: self.key(key),
            })),
            Some(_) => Err(type_error(&self.key(key), "an object")),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, HipacheFileError> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(type_error(&self.key(key), "true or false")),
        }
    }

    fn uint(&self, key: &str) -> Result<Option<u64>, HipacheFileError> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .map(Some)
                .ok_or_else(|| type_error(&self.key(key), "a number of 0 or more")),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| type_error(&self.key(key), "a number of 0 or more")),
            Some(_) => Err(type_error(&self.key(key), "a number of 0 or more")),
        }
    }

    fn port(&self, key: &str) -> Result<Option<u16>, HipacheFileError> {
        match self.uint(key)? {
            None => Ok(None),
            Some(p) => u16::try_from(p)
                .map(Some)
                .map_err(|_| type_error(&self.key(key), "a port number (0-65535)")),
        }
    }

    fn secs(&self, key: &str) -> Result<Option<Duration>, HipacheFileError> {
        match self.get(key) {
            Some(Value::Number(n)) => match n.as_f64() {
                Some(f) if f >= 0.0 && f.is_finite() => Ok(Some(Duration::from_secs_f64(f))),
                _ => Err(type_error(&self.key(key), "a number of seconds")),
            },
            _ => Ok(self.uint(key)?.map(Duration::from_secs)),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, HipacheFileError> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(type_error(&self.key(key), "a string")),
        }
    }

    /// `Some(None)` for an explicit `null`.
    fn string_or_null(&self, key: &str) -> Result<Option<Option<String>>, HipacheFileError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
            Some(_) => Err(type_error(&self.key(key), "a string or null")),
        }
    }

    /// A string or an array of strings.
    fn strings(&self, key: &str) -> Result<Vec<String>, HipacheFileError> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(type_error(&format!("{}[{i}]", self.key(key)), "a string")),
                })
                .collect(),
            Some(_) => Err(type_error(
                &self.key(key),
                "a string or an array of strings",
            )),
        }
    }

    /// `bind` in its three forms: a string, an array of strings, an array of `{address, port, ...}`.
    fn binds(&self, key: &str) -> Result<Vec<Bind<'a>>, HipacheFileError> {
        let expected = "an address, an array of addresses or an array of {address, port} objects";
        let items: Vec<&'a Value> = match self.get(key) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(v @ Value::String(_)) => vec![v],
            Some(Value::Array(items)) => items.iter().collect(),
            Some(_) => return Err(type_error(&self.key(key), expected)),
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let path = format!("{}[{i}]", self.key(key));
                match v {
                    Value::String(s) => Ok(Bind::Address(s.clone(), None)),
                    Value::Object(map) => {
                        let obj = Obj {
                            map: Some(map),
                            path: path.clone(),
                        };
                        obj.string("address")?;
                        obj.port("port")?;
                        Ok(Bind::Object(obj))
                    }
                    _ => Err(type_error(&path, expected)),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_urls() {
        let d = parse_driver("redis:").unwrap();
        assert_eq!(
            d.redis.addr,
            RedisAddr::Tcp {
                host: "127.0.0.1".into(),
                port: 6379
            }
        );
        assert_eq!(
            (d.redis.db, d.redis.password, d.prefix.as_str()),
            (0, None, "")
        );
        let d = parse_driver("redis://:se%40cret@10.1.2.3:7000/3#pfx:").unwrap();
        assert_eq!(
            d.redis.addr,
            RedisAddr::Tcp {
                host: "10.1.2.3".into(),
                port: 7000
            }
        );
        assert_eq!(d.redis.password.as_deref(), Some("se@cret"));
        assert_eq!(d.redis.db, 3);
        assert_eq!(d.prefix, "pfx:");
        let d = parse_driver("redis:#only").unwrap();
        assert_eq!(d.prefix, "only");
        let d = parse_driver("redis://:6380").unwrap();
        assert_eq!(
            d.redis.addr,
            RedisAddr::Tcp {
                host: "127.0.0.1".into(),
                port: 6380
            }
        );
        let err = parse_driver("etcds://127.0.0.1:4001").unwrap_err();
        assert!(err.contains("etcd driver is not supported"), "{err}");
        assert!(err.contains("redis only"), "{err}");
        assert!(parse_driver("redis://h/x")
            .unwrap_err()
            .contains("not a number"));
    }

    #[test]
    fn errors_name_the_key_or_line() {
        let e = from_json("{\n  \"server\": {\n    \"tcpTimeout\": \"soon\"\n  }\n}").unwrap_err();
        assert_eq!(e.0, "server.tcpTimeout: expected a number of 0 or more");
        let e = from_json("{\n  \"server\": {,\n}").unwrap_err();
        assert!(e.0.starts_with("line 2 column 14: "), "{e}");
        let e = from_json(r#"{"http": {"bind": [1]}}"#).unwrap_err();
        assert!(e.0.starts_with("http.bind[0]: expected"), "{e}");
        let e = from_json(r#"{"driver": ["redis:", "memcached://h:11211"]}"#).unwrap_err();
        assert!(e.0.starts_with("driver[1]: "), "{e}");
    }

    #[test]
    fn legacy_layout() {
        let loaded = from_json(
            r#"{"server": {"port": 8081, "address": ["127.0.0.1", "127.0.0.2"]},
                "redisHost": "10.0.0.1", "redisPort": 6380, "redisPassword": "pw", "redisDatabase": 2,
                "redisMasterHost": "10.0.0.2"}"#,
        )
        .unwrap();
        let c = loaded.config;
        assert_eq!(c.listen, Some("127.0.0.1:8081".parse().unwrap()));
        assert_eq!(c.more_listeners.len(), 1);
        assert_eq!(c.more_listeners[0].addr, "127.0.0.2:8081".parse().unwrap());
        assert_eq!(
            c.read_redis.addr,
            RedisAddr::Tcp {
                host: "10.0.0.1".into(),
                port: 6380
            }
        );
        assert_eq!(
            (c.read_redis.db, c.read_redis.password.as_deref()),
            (2, Some("pw"))
        );
        assert_eq!(
            c.write_redis.addr,
            RedisAddr::Tcp {
                host: "10.0.0.2".into(),
                port: 6379
            }
        );
        // 0.3.1 without `server.address` listens on every interface.
        let c = from_json(r#"{"server": {"port": 8082}}"#).unwrap().config;
        assert_eq!(c.listen, Some("[::]:8082".parse().unwrap()));
    }

    #[test]
    fn master_defaults() {
        let loaded = from_json("{}").unwrap();
        let c = loaded.config;
        assert_eq!(c.listen, Some("127.0.0.1:80".parse().unwrap()));
        assert_eq!(c.dead_backend_ttl, Duration::from_secs(30));
        assert_eq!(c.failure.retry_limit, Some(3));
        assert_eq!(c.max_idle_per_backend, 0);
        assert_eq!(c.workers, 10);
        assert_eq!(c.timeouts.request, Some(Duration::from_secs(30)));
        assert_eq!(c.run_as.unwrap().user, "www-data");
        assert_eq!(
            c.access_log,
            AccessLogTarget::File("/var/log/hipache/access.log".into())
        );
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let w = from_json(r#"{"server": {"typo": 1}}"#).unwrap().warnings;
        assert_eq!(w, ["server.typo: unknown key, ignored"]);
    }

    #[test]
    fn flavor_picks_the_file() {
        assert_eq!(
            config_path(None, Some("dev")),
            Some(PathBuf::from("config/config_dev.json"))
        );
        assert_eq!(
            config_path(Some("/etc/h.json".into()), Some("dev")),
            Some(PathBuf::from("/etc/h.json"))
        );
        assert_eq!(config_path(None, None), None);
    }
}
