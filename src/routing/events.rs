//! `--backend-cache-events`: cached routes that live until Redis says a key they were read from changed.
//!
//! Redis publishes a keyspace notification (`__keyspace@<db>__:<key>`, payload the command) for every write
//! when `notify-keyspace-events` includes `K` and the written type's class. A route for a Host is read from
//! the same few key names every time: `frontend:`, `dead:`, `guard:`, `ratelimit:`, `breaker:` and `route:` followed by
//! the Host and each fallback candidate (see [`super::fallback_candidates`]). So the cache remembers those
//! suffixes with each entry and drops the entries that name a suffix the moment its notification arrives. No
//! request reads Redis while its Host is cached, and a change waits only for the notification.
//!
//! Safety nets, because a notification can be lost:
//! - while the subscription is down (not yet confirmed, broken, reconnecting) nothing is cached: every
//!   request reads Redis, as in the default mode; on each new subscription the cache starts empty (the
//!   resync is lazy: the next request for each Host reads it again);
//! - an entry lives at most [`VERIFIED_TTL`], or [`BACKEND_CACHE_TTL`] while the server's
//!   `notify-keyspace-events` could not be confirmed to include what is needed ([`REQUIRED_CLASSES`]).
//!
//! A lookup that was in flight when a notification arrived is not cached: the generation counter moves with
//! every notification, and an entry is inserted under its shard's lock only when the counter has not moved
//! since the read began, so an insert either sees the move or is removed by the sweep that follows it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::StreamExt;

use super::paths::PathIndex;
use super::{Route, BACKEND_CACHE_TTL};
use crate::store::RedisClient;

/// How long an entry lives when the server is known to send every notification the cache needs: a backstop
/// for a subscription that died without the connection noticing.
pub const VERIFIED_TTL: Duration = Duration::from_secs(60);

/// The key names a route is read from, without their suffix, as the lookup pipeline (`store::lookup_many`)
/// names them: `frontend:` and `dead:` under the key prefix, the policy hashes without it.
fn families(prefix: &str) -> Vec<String> {
    let mut families = vec![format!("{prefix}frontend:"), format!("{prefix}dead:")];
    families.extend(crate::policy::HASH_PREFIXES.iter().map(|h| h.to_string()));
    families
}

/// `notify-keyspace-events` classes the cache needs besides `K`: generic (`DEL`, `RENAME`, `EXPIRE`), lists,
/// sets, hashes and expirations (dead sets expire). `A` stands for all of them.
pub const REQUIRED_CLASSES: &str = "glshx";

/// How often the server's `notify-keyspace-events` is read again, so that turning it on (or off) takes effect
/// without a restart.
const RECHECK_EVERY: Duration = Duration::from_secs(30);

struct Entry {
    route: Arc<Route>,
    /// The key suffixes the route was read from: the Host (as looked up) and its fallback candidates.
    keys: Box<[Box<str>]>,
    expires: Instant,
}

/// Routes by Host, kept until a notification names one of their keys.
pub struct EventCache {
    entries: DashMap<Box<str>, Entry>,
    /// Moves with every notification; see the module documentation.
    generation: AtomicU64,
    /// Subscribed and confirmed; while false nothing is served from or put in the cache.
    live: AtomicBool,
    /// Whether the server was last seen sending every notification needed (sets the entries' lifetime).
    verified: AtomicBool,
    /// Hosts kept; past it, the cache is emptied and refilled (a flood of random Hosts must not grow it).
    capacity: usize,
}

impl EventCache {
    pub fn new(capacity: usize) -> EventCache {
        EventCache {
            entries: DashMap::new(),
            generation: AtomicU64::new(0),
            live: AtomicBool::new(false),
            verified: AtomicBool::new(false),
            capacity: capacity.max(1),
        }
    }

    /// Whether lookups may use the cache right now.
    pub fn live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// The cached route for `host`, if it is still valid.
    pub fn get(&self, host: &str) -> Option<Arc<Route>> {
        let entry = self.entries.get(host)?;
        (entry.expires > Instant::now()).then(|| entry.route.clone())
    }

    /// Taken before reading Redis, handed back to [`EventCache::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Cache `route` for `host`, unless a notification arrived since `generation` was taken.
    pub fn insert(&self, host: &str, route: Arc<Route>, keys: Vec<String>, generation: u64) {
        if !self.live() {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.clear();
        }
        let ttl = match self.verified.load(Ordering::Relaxed) {
            true => VERIFIED_TTL,
            false => BACKEND_CACHE_TTL,
        };
        let entry = Entry {
            route,
            keys: keys.into_iter().map(String::into_boxed_str).collect(),
            expires: Instant::now() + ttl,
        };
        // Checked under the shard's lock: a notification's sweep takes the same lock after moving the counter.
        let slot = self.entries.entry(host.into());
        if self.generation() == generation {
            slot.insert(entry);
        }
    }

    /// A key changed: drop every route read from it. `suffix` is the key without its family (`frontend:`...).
    pub fn changed(&self, suffix: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries
            .retain(|_, entry| !entry.keys.iter().any(|k| &**k == suffix));
    }

    /// Drop every route (the set of path frontends changed, and with it which keys a route is read from).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
    }

    /// Drop one Host's route (this process marked one of its backends dead).
    pub fn forget(&self, host: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.remove(host);
    }

    fn set_live(&self, live: bool) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.live.store(live, Ordering::Release);
        self.entries.clear();
    }
}

/// The key suffix a notification channel names, when it is in one of the route's `families`.
/// `__keyspace@0__:frontend:www.a.com` gives `www.a.com`.
fn suffix_of<'a>(channel: &'a str, families: &[String]) -> Option<&'a str> {
    let key = channel.strip_prefix("__keyspace@")?;
    let key = &key[key.find("__:")? + 3..];
    families
        .iter()
        .find_map(|family| key.strip_prefix(family.as_str()))
}

/// Whether a `notify-keyspace-events` value makes Redis send everything the cache needs.
pub fn sends_what_is_needed(flags: &str) -> bool {
    let has = |c: char| flags.contains(c);
    has('K') && (has('A') || REQUIRED_CLASSES.chars().all(has))
}

/// Follow the notifications of `redis` (database `db`, keys under `prefix`) for as long as the process runs,
/// resubscribing with a backoff when the subscription breaks.
pub async fn follow(
    cache: Arc<EventCache>,
    paths: Arc<PathIndex>,
    redis: RedisClient,
    db: i64,
    prefix: String,
) {
    let families = families(&prefix);
    let patterns: Vec<String> = families
        .iter()
        .map(|family| format!("__keyspace@{db}__:{family}*"))
        .collect();
    let mut pause = Duration::from_millis(100);
    loop {
        match subscribe(&redis, &patterns).await {
            Ok(pubsub) => {
                pause = Duration::from_millis(100);
                check_config(&cache, &redis).await;
                cache.set_live(true);
                tracing::info!("backend cache: following keyspace notifications of database {db}");
                let mut messages = pubsub.into_on_message();
                let mut recheck = tokio::time::interval(RECHECK_EVERY);
                recheck.tick().await;
                loop {
                    tokio::select! {
                        msg = messages.next() => match msg {
                            Some(msg) => {
                                if let Some(suffix) = suffix_of(msg.get_channel_name(), &families) {
                                    // A path frontend that may be new changes which keys requests read.
                                    if suffix.contains('/') && paths.add(suffix) {
                                        cache.clear();
                                    }
                                    cache.changed(suffix);
                                }
                            }
                            None => break,
                        },
                        _ = recheck.tick() => check_config(&cache, &redis).await,
                    }
                }
                cache.set_live(false);
                tracing::warn!(
                    "backend cache: the keyspace notification subscription broke; reading Redis on every \
                     request until it is back"
                );
            }
            Err(e) => tracing::warn!("backend cache: subscribing to keyspace notifications: {e}"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

async fn subscribe(redis: &RedisClient, patterns: &[String]) -> Result<redis::aio::PubSub, String> {
    let mut pubsub = redis.pubsub().await.map_err(|e| e.0)?;
    for pattern in patterns {
        pubsub
            .psubscribe(pattern)
            .await
            .map_err(|e| format!("PSUBSCRIBE {pattern}: {e}"))?;
    }
    Ok(pubsub)
}

/// Read `notify-keyspace-events`, warn when it lacks what the cache needs, and set the entries' lifetime.
async fn check_config(cache: &EventCache, redis: &RedisClient) {
    let Ok(mut con) = redis.shared() else {
        // Not connected: the subscription's own failure says so; check again next time.
        return;
    };
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg("notify-keyspace-events");
    let asked = cmd.query_async::<Vec<String>>(&mut con);
    let verified = match tokio::time::timeout(Duration::from_secs(1), asked).await {
        Ok(Ok(pair)) => {
            let flags = pair.get(1).map_or("", String::as_str);
            let ok = sends_what_is_needed(flags);
            // Said at the first check and whenever it changes, not every RECHECK_EVERY.
            let was = cache.verified.load(Ordering::Relaxed);
            if ok && !was {
                tracing::info!("backend cache: Redis notify-keyspace-events is {flags:?}");
            }
            if !ok && (was || !cache.live()) {
                tracing::warn!(
                    "backend cache: Redis notify-keyspace-events is {flags:?}, which lacks K or one of \
                     {REQUIRED_CLASSES}; cached routes expire after {BACKEND_CACHE_TTL:?} until it has them \
                     (redis-cli config set notify-keyspace-events K{REQUIRED_CLASSES})"
                );
            }
            ok
        }
        Ok(Err(e)) => {
            tracing::warn!(
                "backend cache: cannot read notify-keyspace-events ({e}); cached routes expire after \
                 {BACKEND_CACHE_TTL:?}"
            );
            false
        }
        Err(_) => false,
    };
    cache.verified.store(verified, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_name_the_suffix() {
        let plain = families("");
        assert_eq!(
            suffix_of("__keyspace@0__:frontend:www.a.com", &plain),
            Some("www.a.com")
        );
        assert_eq!(
            suffix_of("__keyspace@12__:dead:*.a.com", &plain),
            Some("*.a.com")
        );
        assert_eq!(suffix_of("__keyspace@0__:breaker:a", &plain), Some("a"));
        assert_eq!(
            suffix_of("__keyspace@0__:ratelimit-state:a:b", &plain),
            None
        );
        assert_eq!(suffix_of("__keyevent@0__:rpush", &plain), None);
        // With a key prefix, as the lookup pipeline reads: frontend and dead sets under it, policy hashes not.
        let hip = families("hip:");
        assert_eq!(suffix_of("__keyspace@0__:hip:frontend:a", &hip), Some("a"));
        assert_eq!(suffix_of("__keyspace@0__:hip:dead:a", &hip), Some("a"));
        assert_eq!(suffix_of("__keyspace@0__:guard:a", &hip), Some("a"));
        assert_eq!(suffix_of("__keyspace@0__:frontend:a", &hip), None);
        assert_eq!(suffix_of("__keyspace@0__:hip:breaker:a", &hip), None);
    }

    #[test]
    fn notification_flags() {
        assert!(sends_what_is_needed("KA"));
        assert!(sends_what_is_needed("Kglshx"));
        assert!(sends_what_is_needed("AKE"));
        assert!(!sends_what_is_needed(""));
        assert!(!sends_what_is_needed("Ex"));
        assert!(!sends_what_is_needed("Kglsh"));
    }
}
