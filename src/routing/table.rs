//! The in-memory routing table of a source that pushes its routes (the routes file): a snapshot swapped whole
//! on every change and read without a lock, and dead marks kept in process, since there is no Redis to hold
//! them.
//!
//! A passive mark lasts `--dead-backend-time`, as a `dead:<key>` set's TTL would. A change to a frontend's
//! backend list drops its marks (the indexes may name other backends now).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;

use super::{Route, RouteOptions};
use crate::config::routes::FileFrontend;
use crate::policy::Policy;
use crate::store::{RawHash, RawPolicy};

type Routes = HashMap<Box<str>, Arc<Route>, foldhash::fast::RandomState>;

/// A frontend's `healthcheck` fields (`path`, `status`, `body`).
type ProbeSettings = HashMap<String, String>;

/// Frontends by key, and the dead marks of this process.
#[derive(Default)]
pub struct RouteTable {
    routes: ArcSwap<Routes>,
    /// Dead-set key → when each backend index stops being dead (`None`: alive).
    dead: DashMap<Box<str>, Vec<Option<Instant>>, foldhash::fast::RandomState>,
    /// Whether `dead` has ever held a mark: until then a lookup skips it (no hashing, no shard lock).
    any_dead: AtomicBool,
    /// `--active-healthcheck`: a marked backend is probed every second and revived as soon as it answers.
    probing: Option<Probing>,
    /// The table's path frontends.
    paths: super::paths::PathIndex,
}

/// The in-process active health check: what each frontend's probe asks for, and what is being probed now.
#[derive(Default)]
struct Probing {
    /// Frontend key → its `healthcheck` settings (`path`, `status`, `body`).
    settings: ArcSwap<HashMap<Box<str>, Arc<ProbeSettings>>>,
    /// (dead-set key, backend URL) pairs with a probe running, so a backend gets one probe at a time.
    running: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

/// Time between two probes of a marked backend (PlanB's monitor probes every second).
const PROBE_EVERY: Duration = Duration::from_secs(1);

impl RouteTable {
    /// A table whose dead marks are probed and revived (`--active-healthcheck`).
    pub fn with_health_checks() -> RouteTable {
        RouteTable {
            probing: Some(Probing::default()),
            ..RouteTable::default()
        }
    }

    /// Replace every frontend; returns how many there are now.
    pub fn replace(&self, frontends: Vec<FileFrontend>) -> usize {
        let old = self.routes.load();
        let mut routes = Routes::default();
        let mut checks = HashMap::new();
        for frontend in frontends {
            if !frontend.healthcheck.is_empty() {
                let settings = frontend.healthcheck.iter().cloned().collect();
                checks.insert(frontend.key.clone().into_boxed_str(), Arc::new(settings));
            }
            let alive = vec![false; frontend.backends.len()];
            let mut route = Route::new(
                frontend.key.clone(),
                frontend.identifier,
                frontend.backends,
                alive,
            );
            let [guard, ratelimit, breaker] =
                frontend.policies.map(|fields| match fields.is_empty() {
                    true => RawHash::Absent,
                    false => RawHash::Fields(fields),
                });
            let raw = RawPolicy {
                guard,
                ratelimit,
                breaker,
            };
            if !(raw.guard.is_absent() && raw.ratelimit.is_absent() && raw.breaker.is_absent()) {
                route.policy = Policy::parse(&frontend.key, raw);
            }
            if !frontend.options.is_empty() {
                let options = RouteOptions::parse(&frontend.key, RawHash::Fields(frontend.options));
                route = route.with_options(options);
            }
            routes.insert(frontend.key.into(), Arc::new(route));
        }
        // Marks of a frontend whose backends changed name other backends now, or none.
        self.dead
            .retain(|key, _| match (old.get(key), routes.get(key)) {
                (Some(before), Some(now)) => before.backends == now.backends,
                _ => false,
            });
        let count = routes.len();
        self.paths.replace(routes.keys().map(|k| &**k));
        self.routes.store(Arc::new(routes));
        if let Some(probing) = &self.probing {
            probing.settings.store(Arc::new(checks));
        }
        count
    }

    /// The table's path frontends.
    pub fn paths(&self) -> &super::paths::PathIndex {
        &self.paths
    }

    /// The frontend stored under `key`, with `dead_key`'s marks applied.
    pub fn get(&self, key: &str, dead_key: &str) -> Option<Arc<Route>> {
        let route = self.routes.load().get(key)?.clone();
        let marks = match self.any_dead.load(Ordering::Relaxed) {
            true => self.dead.get(dead_key),
            false => None,
        };
        let Some(marks) = marks else {
            return match key == dead_key {
                true => Some(route),
                false => Some(Arc::new(Route {
                    dead_key: dead_key.to_string(),
                    ..(*route).clone()
                })),
            };
        };
        let now = Instant::now();
        let mut marked = (*route).clone();
        marked.dead_key = dead_key.to_string();
        for (i, until) in marks.iter().enumerate() {
            if let (Some(until), Some(slot)) = (until, marked.dead.get_mut(i)) {
                *slot |= *until > now;
            }
        }
        Some(Arc::new(marked))
    }

    /// Passive dead mark: backend `index` of `route` is skipped for `ttl`; with health checks it is probed
    /// every second meanwhile, revived as soon as it is healthy and kept dead while it is not.
    pub fn mark_dead(self: &Arc<Self>, route: &Route, index: usize, ttl: Duration) {
        self.set_mark(&route.dead_key, index, Some(Instant::now() + ttl));
        let Some(probing) = &self.probing else { return };
        let Some(url) = route.backends.get(index).cloned() else {
            return;
        };
        let job = (route.dead_key.clone(), url.clone());
        if !probing
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.clone())
        {
            return;
        }
        let (table, key) = (self.clone(), route.key.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                // Still a backend of this frontend, at the same place? Otherwise the mark means nothing now.
                let here = table
                    .routes
                    .load()
                    .get(key.as_str())
                    .is_some_and(|r| r.backends.get(index) == Some(&url));
                if !here {
                    break;
                }
                let settings = table
                    .probing
                    .as_ref()
                    .and_then(|p| p.settings.load().get(key.as_str()).cloned())
                    .unwrap_or_default();
                if super::health::healthy(&url, &settings).await {
                    table.set_mark(&job.0, index, None);
                    tracing::info!("health check: {url} of {key} answers again; revived");
                    break;
                }
                // Still failing: kept dead for another TTL, as the Redis monitor renews the dead set.
                table.set_mark(&job.0, index, Some(Instant::now() + ttl));
            }
            if let Some(probing) = &table.probing {
                probing
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&job);
            }
        });
    }

    /// Every frontend with its own dead marks applied, sorted by key (the admin API's listing).
    pub fn frontends(&self) -> Vec<Arc<Route>> {
        let routes = self.routes.load();
        let mut keys: Vec<&str> = routes.keys().map(|k| &**k).collect();
        keys.sort_unstable();
        keys.into_iter().filter_map(|k| self.get(k, k)).collect()
    }

    /// How much longer backend `index` of dead set `dead_key` stays dead; `None` when it is not.
    pub fn dead_for(&self, dead_key: &str, index: usize) -> Option<Duration> {
        let until = (*self.dead.get(dead_key)?.get(index)?)?;
        until.checked_duration_since(Instant::now())
    }

    /// Take backend `index` out of dead set `dead_key` (the admin API's revive); returns whether it was dead.
    pub fn revive(&self, dead_key: &str, index: usize) -> bool {
        let was = self.dead_for(dead_key, index).is_some();
        if self.dead.contains_key(dead_key) {
            self.set_mark(dead_key, index, None);
        }
        was
    }

    fn set_mark(&self, dead_key: &str, index: usize, until: Option<Instant>) {
        self.any_dead.store(true, Ordering::Relaxed);
        let mut marks = self.dead.entry(dead_key.into()).or_default();
        if marks.len() <= index {
            marks.resize(index + 1, None);
        }
        marks[index] = until;
    }
}

/// How often the routes file is looked at: a change applies within this (the promise is 2 s).
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// What identifies a version of the file: an atomic rename changes the inode, an in-place rewrite the
/// modification time or the length.
fn stamp(meta: &std::fs::Metadata) -> (u64, Option<SystemTime>, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.ino(), meta.modified().ok(), meta.len())
}

/// Watch `path` and load it into `table` whenever it changes, for as long as the task runs. A version that
/// does not parse is logged with its line and column, and the last good routes stay.
pub async fn watch(path: PathBuf, table: Arc<RouteTable>) {
    let mut seen = tokio::fs::metadata(&path).await.ok().map(|m| stamp(&m));
    let mut interval = tokio::time::interval(WATCH_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = match tokio::fs::metadata(&path).await {
            Ok(meta) => Some(stamp(&meta)),
            Err(_) => None,
        };
        if now.is_none() || now == seen {
            // Missing (between an editor's unlink and rename, say): keep the routes and look again.
            continue;
        }
        seen = now;
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(
                    "routes file {}: {e}; keeping the last good routes",
                    path.display()
                );
                continue;
            }
        };
        match crate::config::routes::parse(&text) {
            Ok(frontends) => {
                let count = table.replace(frontends);
                tracing::info!("routes file {} loaded: {count} frontends", path.display());
            }
            Err(e) => tracing::error!(
                "routes file {}: {e}; keeping the last good routes",
                path.display()
            ),
        }
    }
}
