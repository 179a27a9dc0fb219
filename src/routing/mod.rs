//! Frontend lookup and backend selection (docs/compat/planb.md#host-matching and docs/compat/planb.md#backend-selection, plus the lookup extensions of docs/routing.md#how-a-request-is-routed).
//!
//! Vocabulary: the *Host* is what the client asked for; the *frontend key* is the Redis key suffix that matched
//! (`frontend:<key>`, `dead:<key>`); the *backends* are the list elements after the identifier.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::config::{DeadSetKey, Extensions, RoutingPolicy, Selection};
use crate::policy::Policy;
use crate::rt::workers::PerWorker;
use crate::store::{FrontendData, Lookup, RedisClient, StoreError};
pub use crate::upstream::split_host_port;
use crate::upstream::{Target, TargetError};

pub mod balance;
pub mod cache;
pub mod etcd;
pub mod events;
pub mod health;
pub mod mirror;
pub mod options;
pub mod paths;
pub mod table;

pub use options::{Balance, RouteOptions};

/// Round-robin counters kept before the map is cleared, so random `Host: a.com:<port>` values cannot grow it
/// without bound.
const MAX_COUNTERS: usize = 100_000;

/// A frontend that matched, with its backends and dead set as read from Redis.
#[derive(Debug, Clone)]
pub struct Route {
    /// The key that matched: the Host, its port-stripped form, or an extension candidate (`*.a.com`, `*`).
    pub key: String,
    /// Element 0 of the list: ignored for routing, logged by the Hipache access-log format.
    pub identifier: String,
    /// The `dead:<...>` suffix this route's dead set was read from and is marked in: `key`, or the request
    /// hostname with [`DeadSetKey::RequestHost`].
    pub dead_key: String,
    /// Backend URLs, identifier excluded.
    pub backends: Vec<String>,
    /// `dead[i]` is true when index `i` is in `dead:<key>`.
    pub dead: Vec<bool>,
    /// Parsed backend URLs, filled on first use so a cached route parses each URL once.
    targets: Vec<OnceLock<Result<Arc<Target>, TargetError>>>,
    /// Guard, rate limit and breaker settings read with the route (shared and empty for most frontends).
    pub policy: Arc<Policy>,
    /// The `route:<key>` options (shared and empty for most frontends).
    pub options: Arc<RouteOptions>,
    /// The `mirror:<key>` shadows, if the frontend is mirrored.
    pub mirror: Option<Arc<mirror::MirrorSpec>>,
}

/// Why no route was found.
#[derive(Debug, Clone)]
pub enum LookupError {
    /// No candidate key has a backend. `key` is the last PlanB key tried (port-stripped when it had a port).
    NoRoute { key: String },
    /// Redis failed; PlanB answers 503 and does not try the fallback.
    Store(StoreError),
}

pub use crate::config::{BACKEND_CACHE_SIZE, BACKEND_CACHE_TTL};

/// Hosts remembered for serving stale routes while Redis is down.
const STALE_ROUTES_SIZE: u64 = 100_000;
/// A host's last-known route is refreshed at most this often, so the default mode does not write the stale
/// store on every request.
const STALE_REFRESH: Duration = Duration::from_secs(1);

/// How lookups are cached.
#[derive(Debug, Clone, Copy, Default)]
pub struct CachePolicy {
    /// `--backend-cache`: reuse a lookup for 2 s; concurrent misses for one host share one Redis read.
    pub backend_cache: bool,
    /// `--stale-routes-ttl`: while the read Redis fails, serve a host's last route if it is younger than this.
    pub stale_routes_ttl: Option<Duration>,
    /// The backend cache's lifetime and capacity (0: unbounded).
    pub backend_cache_limits: (Duration, u64),
    /// `--backend-cache-events`: cache routes until a keyspace notification says one of their keys changed
    /// (see [`events`]); takes the place of `backend_cache`.
    pub events: bool,
}

#[derive(Clone)]
struct StaleRoute {
    fetched: Instant,
    route: Arc<Route>,
}

/// Looks up frontends and picks backends.
pub struct Router {
    /// The read Redis, one client per worker slot (see `workers`): a lookup uses its own thread's connection.
    stores: PerWorker<RedisClient>,
    extensions: Extensions,
    routing: RoutingPolicy,
    /// One counter per original Host string, port included, created on the first successful lookup.
    counters: DashMap<Box<str>, Arc<AtomicU32>, foldhash::fast::RandomState>,
    /// Successful lookups by Host, for `--backend-cache`.
    cache: Option<Arc<cache::RouteCache>>,
    /// Last successful lookup by Host, for Redis outages.
    stale: Option<moka::sync::Cache<Box<str>, StaleRoute>>,
    /// Routes kept fresh by keyspace notifications, for `--backend-cache-events`.
    events: Option<Arc<events::EventCache>>,
    /// The routes of a source that pushes them (`--routes FILE`): looked up here, never in Redis.
    table: Option<Arc<table::RouteTable>>,
    /// The path frontends of the read Redis (see [`paths`]); a table keeps its own.
    paths: Arc<paths::PathIndex>,
    /// Per-frontend selection state for weights and least-request (see [`balance`]).
    balancer: balance::Balancer,
    /// Default mode only: frontend keys seen without `route:` and `mirror:` hashes, and when. Their lookups
    /// skip those two reads for [`OPTIONS_RECHECK`], so a frontend without options pays for them about once
    /// a second instead of on every request.
    absent_options: Option<DashMap<Box<str>, Instant, foldhash::fast::RandomState>>,
}

/// How long a frontend seen without `route:` and `mirror:` hashes is looked up without reading them (the
/// default mode): a new hash applies within this, inside the 2 s the options promise.
pub const OPTIONS_RECHECK: Duration = Duration::from_secs(1);

impl Router {
    pub fn new(
        stores: PerWorker<RedisClient>,
        extensions: Extensions,
        routing: RoutingPolicy,
        policy: CachePolicy,
    ) -> Router {
        let events = policy.events.then(|| {
            let size = usize::try_from(policy.backend_cache_limits.1).unwrap_or(usize::MAX);
            Arc::new(events::EventCache::new(match size {
                0 => usize::MAX,
                size => size,
            }))
        });
        let cache = (policy.backend_cache && !policy.events).then(|| {
            let (ttl, size) = policy.backend_cache_limits;
            Arc::new(cache::RouteCache::new(ttl, size))
        });
        let stale = policy.stale_routes_ttl.map(|ttl| {
            moka::sync::Cache::builder()
                .max_capacity(STALE_ROUTES_SIZE)
                .time_to_live(ttl)
                .build()
        });
        Router {
            stores,
            extensions,
            routing,
            counters: DashMap::default(),
            cache,
            stale,
            events,
            table: None,
            paths: Arc::default(),
            balancer: balance::Balancer::default(),
            absent_options: (!policy.backend_cache && !policy.events).then(DashMap::default),
        }
    }

    /// Whether a lookup of `key` reads its `route:` and `mirror:` hashes: always, unless the default mode saw
    /// neither within [`OPTIONS_RECHECK`].
    fn read_options(&self, key: &str) -> bool {
        match &self.absent_options {
            None => true,
            Some(seen) => seen
                .get(key)
                .is_none_or(|at| at.elapsed() >= OPTIONS_RECHECK),
        }
    }

    /// Remember which keys were just read without `route:` and `mirror:` hashes (and forget those with one).
    fn note_options(&self, lookups: &[Lookup<'_>], found: &[FrontendData]) {
        let Some(seen) = &self.absent_options else {
            return;
        };
        for (lookup, data) in lookups.iter().zip(found) {
            if !data.options_read {
                continue;
            }
            if data.options.is_absent() && data.mirror.is_absent() {
                if seen.len() >= MAX_COUNTERS {
                    seen.clear();
                }
                seen.insert(lookup.key.into(), Instant::now());
            } else {
                seen.remove(lookup.key);
            }
        }
    }

    /// The path index filled from the read Redis, for the keyspace notifications to add to.
    pub fn path_index(&self) -> Arc<paths::PathIndex> {
        self.paths.clone()
    }

    /// The path index the lookups use: the table's, or the one filled from the read Redis.
    pub fn paths(&self) -> &paths::PathIndex {
        match &self.table {
            Some(table) => table.paths(),
            None => &self.paths,
        }
    }

    /// Scan the read Redis for path frontends; when the set changed, drop the cached routes, whose candidate
    /// keys it decided. Errors are the caller's to log (the last index stays).
    pub async fn refresh_paths(&self) -> Result<(), StoreError> {
        let keys = self.store().path_frontends().await?;
        if self.paths.replace(keys.iter().map(String::as_str)) {
            self.paths_changed();
        }
        Ok(())
    }

    fn paths_changed(&self) {
        if let Some(events) = &self.events {
            events.clear();
        }
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }

    /// Route from `table` instead of Redis (the routes file).
    pub fn with_table(mut self, table: Arc<table::RouteTable>) -> Router {
        self.table = Some(table);
        self
    }

    /// The in-process table, when routes come from one (dead marks then go there, not to Redis).
    pub fn table(&self) -> Option<&Arc<table::RouteTable>> {
        self.table.as_ref()
    }

    /// Whether routes can be read: a `PING` of the read Redis, or always for a table (`__ping__`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.table {
            Some(_) => Ok(()),
            None => self.store().ping().await,
        }
    }

    /// Whether routes are being served from the last-known routes kept for a Redis outage
    /// (`--stale-routes-ttl`): any host seen within the window still has one (the admin API's `/ready`).
    pub fn has_stale_routes(&self) -> bool {
        self.stale
            .as_ref()
            .is_some_and(|s| s.iter().next().is_some())
    }

    /// The notification-fed cache, for [`events::follow`] (`None` unless `--backend-cache-events`).
    pub fn event_cache(&self) -> Option<Arc<events::EventCache>> {
        self.events.clone()
    }

    /// The read Redis client of the calling thread's worker.
    pub fn store(&self) -> &RedisClient {
        self.stores.current()
    }

    /// The route for a Host and request path: from the backend cache when it is on, otherwise (or on a miss)
    /// from Redis, and from the last-known routes when Redis fails.
    pub async fn lookup(&self, host: &str, path: &str) -> Result<Arc<Route>, LookupError> {
        if let Some(table) = &self.table {
            return self.read_table(table, host, path);
        }
        // What the caches key by: the Host, and the part of the path the candidates depend on (none for a host
        // without path frontends, so its entries are what they always were).
        let request = Request::new(host, self.path_depth(host, path));
        if let Some(events) = self.events.as_ref().filter(|e| e.live()) {
            if let Some(route) = events.get(request.cache_key()) {
                return Ok(route);
            }
            let generation = events.generation();
            let (route, fresh) = self.read_marked(&request).await?;
            if fresh {
                let keys = self.keys_read_for(&request);
                events.insert(request.cache_key(), route.clone(), keys, generation);
            }
            return Ok(route);
        }
        let Some(cache) = &self.cache else {
            return self.read(&request).await;
        };
        match cache.get(request.cache_key()) {
            cache::Cached::Fresh(route) => Ok(route),
            // This request reads Redis ahead of the entry's expiry; the others are served meanwhile. Boxed, as
            // below: the read's state should not ride along in every request.
            cache::Cached::Refresh(route, refreshing) => {
                match Box::pin(self.read(&request)).await {
                    Ok(fresh) => {
                        cache.insert(request.cache_key(), fresh.clone());
                        Ok(fresh)
                    }
                    Err(_) => {
                        refreshing.store(false, std::sync::atomic::Ordering::Release);
                        Ok(route)
                    }
                }
            }
            // Boxed: a miss is rare, and the loader's state would otherwise ride along in every request.
            cache::Cached::Miss => {
                Box::pin(cache.load(request.cache_key(), self.read(&request))).await
            }
        }
    }

    /// How much of `path` decides the candidates of `host`: the longest path frontend prefix that matches under
    /// any of its host candidates, 0 when none does (and at once when no path frontend exists).
    fn path_depth<'a>(&self, host: &str, path: &'a str) -> &'a str {
        let index = self.paths();
        if !index.any() || path.len() <= 1 {
            return "";
        }
        let host = self.lookup_host(host);
        let mut depth = index.longest(&host, path).unwrap_or(0);
        // Most Hosts arrive in lookup form and most fleets have no wildcard path frontend: then the fallback
        // hosts cannot add a path, and are not built.
        if index.fallbacks_matter(&host) {
            for fallback in fallback_candidates(&host, self.extensions) {
                depth = depth.max(index.longest(&fallback, path).unwrap_or(0));
            }
        }
        &path[..depth.min(path.len())]
    }

    /// The Host as looked up, then its fallback candidates.
    fn host_candidates(&self, host: &str) -> Vec<String> {
        let host = self.lookup_host(host);
        let mut hosts = vec![host.to_string()];
        hosts.extend(fallback_candidates(&host, self.extensions));
        hosts
    }

    /// Drop what is cached for a Host and its frontend key: this process just marked one of its backends dead
    /// (Hipache does this; PlanB kept serving the cached dead set for up to 2 s). The returned future owns
    /// what it needs, so it can run again once the dead mark has reached Redis.
    pub fn forget(
        &self,
        host: &str,
        path: &str,
        key: &str,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let request = Request::new(host, self.path_depth(host, path));
        if let Some(events) = &self.events {
            events.forget(request.cache_key());
        }
        let cache = self.cache.clone();
        let (host, key) = (request.cache_key().to_string(), key.to_string());
        async move {
            if let Some(cache) = cache {
                cache.invalidate(host.as_str());
                cache.invalidate(key.as_str());
            }
        }
    }

    /// [`Router::forget`] for a frontend key changed from outside a request (an operator's mark or edit): the
    /// key's own host and path stand for the request's.
    pub fn forget_key(&self, key: &str) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (host, path) = paths::split_key(key).unwrap_or((key, ""));
        self.forget(host, path, key)
    }

    async fn read(&self, request: &Request<'_>) -> Result<Arc<Route>, LookupError> {
        self.read_marked(request).await.map(|(route, _)| route)
    }

    /// [`Router::read`], saying whether the route is fresh from Redis (true) or the last known one (false).
    async fn read_marked(&self, request: &Request<'_>) -> Result<(Arc<Route>, bool), LookupError> {
        let host = request.cache_key();
        match self.read_redis(request).await {
            Ok(route) => {
                let route = Arc::new(route);
                if let Some(stale) = &self.stale {
                    let fresh = stale
                        .get(host)
                        .is_some_and(|s| s.fetched.elapsed() < STALE_REFRESH);
                    if !fresh {
                        let entry = StaleRoute {
                            fetched: Instant::now(),
                            route: route.clone(),
                        };
                        stale.insert(host.into(), entry);
                    }
                }
                Ok((route, true))
            }
            Err(LookupError::Store(e)) => match self.stale.as_ref().and_then(|s| s.get(host)) {
                Some(last) => {
                    tracing::warn!(host, error = %e, "read Redis failed; serving the last known route");
                    Ok((last.route, false))
                }
                None => Err(LookupError::Store(e)),
            },
            Err(e) => Err(e),
        }
    }

    /// The Host as the lookup uses it: as sent (PlanB), or lower-cased without its port (Hipache).
    fn lookup_host<'a>(&self, host: &'a str) -> std::borrow::Cow<'a, str> {
        match self.routing.strip_port_first {
            true => hipache_hostname(host),
            false => std::borrow::Cow::Borrowed(host),
        }
    }

    /// The key suffixes a lookup reads (each under `frontend:`, `dead:` and the hashes): every candidate.
    fn keys_read_for(&self, request: &Request<'_>) -> Vec<String> {
        let hosts = self.host_candidates(request.host);
        let mut keys = match request.path.is_empty() {
            true => hosts,
            false => self.paths().candidates(&hosts, request.path),
        };
        if self.routing.dead_set == DeadSetKey::RequestHost {
            let host = self.lookup_host(request.host);
            let dead: Vec<String> = keys.iter().map(|k| self.dead_key(&host, k)).collect();
            keys.extend(dead);
        }
        keys
    }

    /// The dead set a candidate key is read with: its own, or (Hipache) the request hostname's, with the
    /// candidate's path.
    fn dead_key(&self, host: &str, key: &str) -> String {
        match self.routing.dead_set {
            DeadSetKey::FrontendKey => key.to_string(),
            DeadSetKey::RequestHost => match paths::split_key(key) {
                Some((_, path)) => format!("{host}{path}"),
                None => host.to_string(),
            },
        }
    }

    /// The first candidate (`frontend:<host>`, or its longest matching path frontend) in the request's one
    /// pipeline; on a miss the other candidates in one more.
    async fn read_redis(&self, request: &Request<'_>) -> Result<Route, LookupError> {
        let host = self.lookup_host(request.host);
        let host = host.as_ref();
        let min_len = if self.routing.identifier_only_matches {
            1
        } else {
            2
        };
        let store = self.store();
        let read = |keys: Vec<String>| async move {
            let pairs: Vec<(String, String)> = keys
                .into_iter()
                .map(|key| {
                    let dead = self.dead_key(host, &key);
                    (key, dead)
                })
                .collect();
            let lookups: Vec<Lookup<'_>> = pairs
                .iter()
                .map(|(key, dead)| Lookup {
                    key,
                    dead,
                    options: self.read_options(key),
                })
                .collect();
            let found = store
                .lookup_many(&lookups)
                .await
                .map_err(LookupError::Store)?;
            self.note_options(&lookups, &found);
            Ok::<_, LookupError>(
                pairs
                    .into_iter()
                    .zip(found)
                    .find_map(|((key, dead), data)| into_route(&key, data, min_len, &dead)),
            )
        };
        let planb_key = split_host_port(host).unwrap_or(host).to_string();
        // The first candidate is the Host's longest matching path frontend, or the Host itself (without a
        // look at the index when no path frontend decides the request).
        let depth = match request.path.is_empty() {
            true => None,
            false => self.paths().longest(host, request.path),
        };
        let first = match depth {
            Some(depth) => format!("{host}{}", &request.path[..depth]),
            None => host.to_string(),
        };
        if let Some(route) = read(vec![first.clone()]).await? {
            return Ok(route);
        }
        let rest = match request.path.is_empty() {
            true => fallback_candidates(host, self.extensions),
            false => {
                let mut rest = self.keys_read_for(request);
                rest.retain(|key| *key != first);
                rest
            }
        };
        if rest.is_empty() {
            return Err(LookupError::NoRoute { key: planb_key });
        }
        read(rest)
            .await?
            .ok_or(LookupError::NoRoute { key: planb_key })
    }

    /// The lookup rules of [`Router::read_redis`] over the in-process table: the Host's candidates (its path
    /// frontends, then itself), then the fallback candidates'; the first frontend with a backend (or, for
    /// Hipache, any frontend) wins.
    fn read_table(
        &self,
        table: &table::RouteTable,
        host: &str,
        path: &str,
    ) -> Result<Arc<Route>, LookupError> {
        let host = self.lookup_host(host);
        let host = host.as_ref();
        let min_backends = usize::from(!self.routing.identifier_only_matches);
        let find = |key: &str| {
            let dead_key = self.dead_key(host, key);
            table
                .get(key, &dead_key)
                .filter(|route| route.backends.len() >= min_backends)
        };
        let with_paths = table.paths().any() && path.len() > 1;
        // The Host as sent first, without building the fallback candidates: most requests stop here.
        let first = match with_paths {
            true => table
                .paths()
                .candidates(&[host], path)
                .iter()
                .find_map(|key| find(key)),
            false => find(host),
        };
        if let Some(route) = first {
            return Ok(route);
        }
        let found = match (self.routing.exact_host_only, with_paths) {
            (true, _) => None,
            (false, false) => fallback_candidates(host, self.extensions)
                .iter()
                .find_map(|key| find(key)),
            (false, true) => table
                .paths()
                .candidates(&fallback_candidates(host, self.extensions), path)
                .iter()
                .find_map(|key| find(key)),
        };
        found.ok_or_else(|| LookupError::NoRoute {
            key: match self.routing.exact_host_only {
                true => host.to_string(),
                false => split_host_port(host).unwrap_or(host).to_string(),
            },
        })
    }

    /// Where the search for a live backend starts: the round-robin counter, or (random selection) a live
    /// backend drawn uniformly, so that the search takes it unless a policy refuses it. A frontend with weights
    /// or a `balance` option is served by [`balance::Balancer`].
    pub fn start_for(&self, host: &str, route: &Route) -> usize {
        let balance = route.options.balance;
        if route.options.weights.is_some() || balance.is_some() {
            let balance = balance.unwrap_or(match self.routing.selection {
                Selection::RoundRobin => Balance::RoundRobin,
                Selection::Random => Balance::Random,
            });
            return self.balancer.pick(route, balance);
        }
        match self.routing.selection {
            // A path frontend's rotation is its own, not shared with the Host's other frontends.
            Selection::RoundRobin => match route.path_prefix() {
                None => self.next_start(host, route.backends.len()),
                Some(prefix) => {
                    // The counter's key built in a reused buffer: this runs for every request of the path.
                    thread_local!(static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) });
                    KEY.with_borrow_mut(|key| {
                        key.clear();
                        key.push_str(host);
                        key.push_str(prefix);
                        self.next_start(key, route.backends.len())
                    })
                }
            },
            Selection::Random => {
                let live = route.dead.iter().filter(|d| !**d).count();
                if live == 0 {
                    return 0;
                }
                let nth = fastrand::usize(..live);
                route
                    .dead
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| !**d)
                    .nth(nth)
                    .map_or(0, |(i, _)| i)
            }
        }
    }

    /// The round-robin start index for this Host: `(counter++) mod N`, starting at 0.
    pub fn next_start(&self, host: &str, count: usize) -> usize {
        let counter = match self.counters.get(host) {
            Some(counter) => counter.clone(),
            None => {
                if self.counters.len() >= MAX_COUNTERS {
                    self.counters.clear();
                }
                self.counters.entry(host.into()).or_default().clone()
            }
        };
        let previous = counter.fetch_add(1, Ordering::Relaxed);
        previous as usize % count.max(1)
    }

    /// Count a request in flight to backend `index` of `route` until the guard drops, when the frontend
    /// balances by least requests (nothing is counted otherwise).
    pub fn in_flight(&self, route: &Route, index: usize) -> Option<balance::InFlight> {
        (route.options.balance == Some(Balance::LeastRequest))
            .then(|| self.balancer.in_flight(&route.backends[index]))
    }
}

/// One lookup's Host and the part of its path the candidates depend on; `cache_key` is both together.
struct Request<'a> {
    host: &'a str,
    path: &'a str,
    key: std::borrow::Cow<'a, str>,
}

impl<'a> Request<'a> {
    fn new(host: &'a str, path: &'a str) -> Request<'a> {
        let key = match path.is_empty() {
            true => std::borrow::Cow::Borrowed(host),
            // A Host never holds a `/`, so `<host><path>` cannot collide with another Host.
            false => std::borrow::Cow::Owned(format!("{host}{path}")),
        };
        Request { host, path, key }
    }

    fn cache_key(&self) -> &str {
        &self.key
    }
}

impl Route {
    /// A route as read from Redis.
    pub fn new(key: String, identifier: String, backends: Vec<String>, dead: Vec<bool>) -> Route {
        let targets = backends.iter().map(|_| OnceLock::new()).collect();
        Route {
            dead_key: key.clone(),
            key,
            identifier,
            backends,
            dead,
            targets,
            policy: Policy::none(),
            options: RouteOptions::none(),
            mirror: None,
        }
    }

    /// A path frontend's prefix (`/api` of `www.example.com/api`); `None` for a host's own frontend.
    pub fn path_prefix(&self) -> Option<&str> {
        paths::split_key(&self.key).map(|(_, path)| path)
    }

    /// The request target (`path?query`) a backend of this route gets when it differs from the client's: a
    /// path frontend with `strip_prefix` mounts its application at `/`.
    pub fn stripped_target(&self, path_and_query: &str) -> Option<String> {
        let prefix = self.path_prefix().filter(|_| self.options.strip_prefix)?;
        Some(paths::strip(prefix, path_and_query))
    }

    /// Apply the route options: a backend weighted 0 is out of rotation, as a dead one is.
    pub fn with_options(mut self, options: Arc<RouteOptions>) -> Route {
        if options.weights.is_some() {
            for (i, dead) in self.dead.iter_mut().enumerate() {
                *dead |= options.weight(i) == 0;
            }
        }
        self.options = options;
        self
    }

    /// Backend `index` parsed (once per route, and once per process for each URL: see `parsed`).
    pub fn target(&self, index: usize) -> Result<Arc<Target>, TargetError> {
        self.targets[index]
            .get_or_init(|| parsed(&self.backends[index]))
            .clone()
    }

    /// The first live index at or after `start`, wrapping around; `None` when every backend is dead.
    pub fn first_live(&self, start: usize) -> Option<usize> {
        self.first_live_by(start, |_| true)
    }

    /// [`Route::first_live`] also skipping backends `usable` refuses; `usable` is asked only about live
    /// backends, in order, until one is accepted.
    pub fn first_live_by(
        &self,
        start: usize,
        mut usable: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        let n = self.backends.len();
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| !self.dead[i] && usable(i))
    }
}

/// A route from a key's data; `None` (a miss) when the list is shorter than `min_len`.
fn into_route(key: &str, data: FrontendData, min_len: usize, dead_key: &str) -> Option<Route> {
    if data.list.len() < min_len.max(1) {
        return None;
    }
    let mut list = data.list.into_iter();
    // Element 0 is never used for routing: one that is not text is as good as any other.
    let identifier = list.next().flatten().unwrap_or_default();
    let mut broken = Vec::new();
    let backends: Vec<String> = list
        .enumerate()
        .map(|(i, url)| {
            url.unwrap_or_else(|| {
                broken.push(i);
                String::new()
            })
        })
        .collect();
    let mut dead = vec![false; backends.len()];
    for member in &data.dead {
        if let Some(slot) = dead_index(member).and_then(|i| dead.get_mut(i)) {
            *slot = true;
        }
    }
    let mut route = Route::new(key.to_string(), identifier, backends, dead);
    for i in broken {
        let _ = route.targets[i].set(Err(TargetError::Invalid(
            "backend URL is not valid UTF-8".into(),
        )));
    }
    route.policy = Policy::parse(key, data.policy);
    route.mirror = mirror::MirrorSpec::parse(key, data.mirror);
    route.dead_key = dead_key.to_string();
    Some(route.with_options(RouteOptions::parse(key, data.options)))
}

/// The backend index a `dead:<key>` member names, as PlanB reads it: Go's `strconv.ParseInt(member, 10, 32)`
/// with the error ignored. A member that is not a plain base-10 integer (`" 1"`, `"1 "`, `"x"`) counts as index
/// 0; one out of the 32-bit range is clamped by Go, so it names no backend; a negative one names none either.
pub fn dead_index(member: &str) -> Option<usize> {
    use std::num::IntErrorKind;
    let index = match member.parse::<i32>() {
        Ok(index) => index,
        Err(e)
            if matches!(
                e.kind(),
                IntErrorKind::PosOverflow | IntErrorKind::NegOverflow
            ) =>
        {
            return None
        }
        Err(_) => 0,
    };
    usize::try_from(index).ok()
}

/// Hipache's hostname for a Host value: with a port, the name without it, lower-cased; without one, the value
/// as it is (docs/compat/hipache.md#host-matching). Unlike Hipache, `[::1]:80` gives `::1`, not `[`.
pub fn hipache_hostname(host: &str) -> std::borrow::Cow<'_, str> {
    match split_host_port(host) {
        Some(name) => std::borrow::Cow::Owned(name.to_ascii_lowercase()),
        None => std::borrow::Cow::Borrowed(host),
    }
}

/// URLs parsed before, at most this many (then the memo starts over).
const PARSED_URLS: usize = 10_000;

/// A backend URL parsed, remembered for the process: in the default mode every request reads a new route from
/// Redis, and parsing its URLs again (the `url` crate, IDNA included) was about 12% of such a request.
fn parsed(url: &str) -> Result<Arc<Target>, TargetError> {
    type Memo = DashMap<Box<str>, Result<Arc<Target>, TargetError>, foldhash::fast::RandomState>;
    static MEMO: OnceLock<Memo> = OnceLock::new();
    let memo = MEMO.get_or_init(Memo::default);
    if let Some(known) = memo.get(url) {
        return known.clone();
    }
    let result = Target::parse(url).map(Arc::new);
    if memo.len() >= PARSED_URLS {
        memo.clear();
    }
    memo.insert(url.into(), result.clone());
    result
}

/// The keys tried after `frontend:<Host>` missed, in order, without repeats:
/// the port-stripped Host (PlanB), then the lower-cased name, Hipache's wildcards and `*` (extensions).
pub fn fallback_candidates(host: &str, ext: Extensions) -> Vec<String> {
    let stripped = split_host_port(host);
    let mut out: Vec<String> = Vec::new();
    let mut push = |key: String| {
        if key != host && !out.contains(&key) {
            out.push(key);
        }
    };
    if let Some(name) = stripped {
        push(name.to_string());
    }
    let name = stripped.unwrap_or(host).to_ascii_lowercase();
    if ext.lowercase_lookup {
        push(name.clone());
    }
    if ext.wildcard_lookup {
        for candidate in wildcard_candidates(&name) {
            push(candidate);
        }
    }
    if ext.catch_all {
        push("*".to_string());
    }
    out
}

/// Hipache's wildcard keys for a name: keep the last 6 labels, then `*.<rest>` dropping one label at a time
/// down to a single label, so at most 5 (docs/compat/hipache.md#wildcard-candidates).
pub fn wildcard_candidates(name: &str) -> Vec<String> {
    if name.is_empty() || name.parse::<IpAddr>().is_ok() {
        return Vec::new();
    }
    let labels: Vec<&str> = name.split('.').collect();
    let labels = &labels[labels.len().saturating_sub(6)..];
    (1..labels.len())
        .map(|i| format!("*.{}", labels[i..].join(".")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_follow_hipache() {
        assert_eq!(wildcard_candidates("a.b.c"), vec!["*.b.c", "*.c"]);
        assert!(wildcard_candidates("foo").is_empty());
        assert_eq!(
            wildcard_candidates("too.deep.quuux.foo.bar.baz.qux.quux"),
            vec![
                "*.foo.bar.baz.qux.quux",
                "*.bar.baz.qux.quux",
                "*.baz.qux.quux",
                "*.qux.quux",
                "*.quux"
            ]
        );
    }

    #[test]
    fn candidate_order() {
        let all = Extensions::default();
        assert_eq!(
            fallback_candidates("WWW.A.com:8080", all),
            vec!["WWW.A.com", "www.a.com", "*.a.com", "*.com", "*"]
        );
        assert_eq!(fallback_candidates("a.com", all), vec!["*.com", "*"]);
        let none = Extensions {
            lowercase_lookup: false,
            wildcard_lookup: false,
            catch_all: false,
            failover: false,
        };
        assert_eq!(fallback_candidates("A.com:80", none), vec!["A.com"]);
        assert!(fallback_candidates("a.com", none).is_empty());
    }

    #[test]
    fn dead_members() {
        let data = FrontendData {
            list: ["id", "b0", "b1", "b2"].map(|s| Some(s.into())).to_vec(),
            dead: vec!["garbage".into(), "2".into(), "7".into(), "-1".into()],
            ..Default::default()
        };
        let route = into_route("k", data, 2, "k").unwrap();
        assert_eq!(route.dead, vec![true, false, true]);
        assert_eq!(route.first_live(0), Some(1));
        assert_eq!(route.first_live(2), Some(1));
    }

    #[test]
    fn dead_index_follows_go_parse_int() {
        assert_eq!(dead_index("1"), Some(1));
        assert_eq!(dead_index("+1"), Some(1));
        assert_eq!(dead_index(" 1"), Some(0));
        assert_eq!(dead_index("1 "), Some(0));
        assert_eq!(dead_index("\t1"), Some(0));
        assert_eq!(dead_index(""), Some(0));
        assert_eq!(dead_index("-1"), None);
        assert_eq!(dead_index("99999999999"), None);
    }

    #[test]
    fn a_broken_entry_costs_only_itself() {
        let data = FrontendData {
            list: vec![None, Some("http://a".into()), None, Some("http://b".into())],
            ..Default::default()
        };
        let route = into_route("k", data, 2, "k").unwrap();
        assert_eq!(route.identifier, "");
        assert_eq!(route.backends.len(), 3);
        assert!(route.target(0).is_ok());
        assert!(matches!(route.target(1), Err(TargetError::Invalid(_))));
        assert!(route.target(2).is_ok());
    }
}
