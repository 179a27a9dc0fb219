//! `--backend-cache`: a route is reused for the cache's lifetime (2 s), and refreshed *ahead* of its expiry so
//! that a busy host's requests never wait for Redis.
//!
//! - A hit younger than three quarters of the lifetime is served as is.
//! - The first request that finds an entry in its last quarter reads Redis for everyone (as a default-mode
//!   request would), while every other request keeps being served the entry; if that read fails, the entry is
//!   served until it expires.
//! - Only an entry nobody asked for during its last quarter expires; the next request for it is a miss, and
//!   concurrent misses for one key share one read.
//!
//! The map is emptied when it reaches its capacity, as the event-fed cache does, so a flood of random Hosts
//! cannot grow it without bound.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::{LookupError, Route};

type Map<V> = DashMap<Box<str>, V, foldhash::fast::RandomState>;
type Loaded = Result<Arc<Route>, LookupError>;

struct Slot {
    route: Arc<Route>,
    fetched: Instant,
    /// Set by the request that took on the refresh.
    refreshing: Arc<AtomicBool>,
}

/// What a lookup found in the cache.
pub enum Cached {
    /// Serve it.
    Fresh(Arc<Route>),
    /// Serve it, after reading it again: this request took on the refresh (give the flag back on failure).
    Refresh(Arc<Route>, Arc<AtomicBool>),
    Miss,
}

/// Routes by cache key, refreshed ahead of expiry.
pub struct RouteCache {
    slots: Map<Slot>,
    /// Misses being read, so that concurrent misses for one key share one read.
    loading: Map<Arc<OnceCell<Loaded>>>,
    ttl: Duration,
    capacity: usize,
}

impl RouteCache {
    /// A cache whose entries live `ttl`, holding at most `capacity` keys (0: no limit).
    pub fn new(ttl: Duration, capacity: u64) -> RouteCache {
        RouteCache {
            slots: Map::default(),
            loading: Map::default(),
            ttl,
            capacity: match usize::try_from(capacity).unwrap_or(usize::MAX) {
                0 => usize::MAX,
                n => n,
            },
        }
    }

    pub fn get(&self, key: &str) -> Cached {
        let Some(slot) = self.slots.get(key) else {
            return Cached::Miss;
        };
        let age = slot.fetched.elapsed();
        if age >= self.ttl {
            return Cached::Miss;
        }
        if age >= self.ttl * 3 / 4 && !slot.refreshing.swap(true, Ordering::AcqRel) {
            return Cached::Refresh(slot.route.clone(), slot.refreshing.clone());
        }
        Cached::Fresh(slot.route.clone())
    }

    pub fn insert(&self, key: &str, route: Arc<Route>) {
        if self.slots.len() >= self.capacity && !self.slots.contains_key(key) {
            self.slots.clear();
        }
        let slot = Slot {
            route,
            fetched: Instant::now(),
            refreshing: Arc::default(),
        };
        self.slots.insert(key.into(), slot);
    }

    /// A miss: `read` once for every concurrent miss of `key`, and cache what it found.
    pub async fn load(&self, key: &str, read: impl Future<Output = Loaded>) -> Loaded {
        let cell = self.loading.entry(key.into()).or_default().clone();
        let loaded = cell.get_or_init(|| read).await.clone();
        if let Ok(route) = &loaded {
            self.insert(key, route.clone());
        }
        self.loading.remove_if(key, |_, c| Arc::ptr_eq(c, &cell));
        loaded
    }

    pub fn invalidate(&self, key: &str) {
        self.slots.remove(key);
    }

    pub fn clear(&self) {
        self.slots.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str) -> Arc<Route> {
        Arc::new(Route::new(name.into(), "id".into(), vec![], vec![]))
    }

    #[tokio::test(start_paused = true)]
    async fn one_request_refreshes_ahead_while_the_others_are_served() {
        let cache = RouteCache::new(Duration::from_secs(2), 0);
        assert!(matches!(cache.get("a"), Cached::Miss));
        let loaded = cache.load("a", async { Ok(route("one")) }).await.unwrap();
        assert_eq!(loaded.key, "one");
        assert!(matches!(cache.get("a"), Cached::Fresh(_)));
        tokio::time::advance(Duration::from_millis(1600)).await;
        let Cached::Refresh(old, flag) = cache.get("a") else {
            panic!("the first request past 3/4 of the lifetime refreshes");
        };
        assert_eq!(old.key, "one");
        // Others are served the entry meanwhile.
        assert!(matches!(cache.get("a"), Cached::Fresh(_)));
        cache.insert("a", route("two"));
        drop(flag);
        let Cached::Fresh(new) = cache.get("a") else {
            panic!("refreshed")
        };
        assert_eq!(new.key, "two");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(cache.get("a"), Cached::Miss));
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_read() {
        let cache = Arc::new(RouteCache::new(Duration::from_secs(2), 0));
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, reads, gate) = (cache.clone(), reads.clone(), gate.clone());
                tokio::spawn(async move {
                    cache
                        .load("a", async {
                            reads.fetch_add(1, Ordering::SeqCst);
                            gate.notified().await;
                            Ok(route("one"))
                        })
                        .await
                })
            })
            .collect();
        while reads.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        gate.notify_waiters();
        gate.notify_one();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap().key, "one");
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }
}
