//! Selection for frontends with route options (docs/redis-keys.md#route-options): smooth weighted round robin
//! (nginx's), weighted random, and least requests in flight (power of two choices).
//!
//! The state is per frontend key (weights) or per backend URL (requests in flight), kept in bounded maps; a
//! frontend without options never reaches this module.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use super::{Balance, Route};

/// Entries kept in each map before it is cleared, so that a flood of frontends cannot grow it without bound.
const MAX_ENTRIES: usize = 100_000;

type Map<V> = DashMap<Box<str>, V, foldhash::fast::RandomState>;

/// The selection state of every frontend with options.
#[derive(Default)]
pub struct Balancer {
    /// Smooth weighted round robin state by frontend key (and dead-set key: Hipache's differ per Host).
    smooth: Map<Arc<Mutex<Smooth>>>,
    /// Requests in flight by backend URL, for `least_request`.
    loads: Map<Arc<AtomicUsize>>,
}

/// nginx's smooth weighted round robin: each pick adds every live backend's weight to its current value,
/// takes the largest, and subtracts the total from it. A 3:1 split gives a, a, b, a, a, a, b, a...
#[derive(Debug, Default)]
struct Smooth {
    weights: Vec<u32>,
    current: Vec<i64>,
}

/// One request counted in flight to a backend until dropped.
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balancer {
    /// The backend index to try first for `route` under `balance`; live (not dead, weight above 0) unless none
    /// is, and then 0 (the caller finds no live backend).
    pub fn pick(&self, route: &Route, balance: Balance) -> usize {
        let live: Vec<usize> = (0..route.backends.len())
            .filter(|&i| !route.dead[i] && route.options.weight(i) > 0)
            .collect();
        if live.len() <= 1 {
            return live.first().copied().unwrap_or(0);
        }
        match balance {
            Balance::RoundRobin => self.smooth(route, &live),
            Balance::Random => {
                let total: u64 = live
                    .iter()
                    .map(|&i| u64::from(route.options.weight(i)))
                    .sum();
                let mut ticket = fastrand::u64(..total.max(1));
                for &i in &live {
                    let weight = u64::from(route.options.weight(i));
                    if ticket < weight {
                        return i;
                    }
                    ticket -= weight;
                }
                live[0]
            }
            Balance::LeastRequest => {
                let load = |i: usize| self.load(&route.backends[i]).load(Ordering::Relaxed);
                let (a, b) = match live.len() {
                    2 => (live[0], live[1]),
                    n => {
                        let first = fastrand::usize(..n);
                        let second = (first + 1 + fastrand::usize(..n - 1)) % n;
                        (live[first], live[second])
                    }
                };
                match load(a).cmp(&load(b)) {
                    std::cmp::Ordering::Less => a,
                    std::cmp::Ordering::Greater => b,
                    std::cmp::Ordering::Equal if fastrand::bool() => a,
                    std::cmp::Ordering::Equal => b,
                }
            }
        }
    }

    /// Count one request in flight to backend `url`.
    pub fn in_flight(&self, url: &str) -> InFlight {
        let load = self.load(url);
        load.fetch_add(1, Ordering::Relaxed);
        InFlight(load)
    }

    fn load(&self, url: &str) -> Arc<AtomicUsize> {
        if let Some(load) = self.loads.get(url) {
            return load.clone();
        }
        if self.loads.len() >= MAX_ENTRIES {
            // Counters in use live on in their guards; new requests start from 0 again.
            self.loads.clear();
        }
        self.loads.entry(url.into()).or_default().clone()
    }

    fn smooth(&self, route: &Route, live: &[usize]) -> usize {
        // The map's key is built in a buffer of the thread's, so a pick allocates only for a new frontend.
        thread_local!(static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) });
        let state = KEY.with_borrow_mut(|key| {
            key.clear();
            key.push_str(&route.key);
            key.push('\n');
            key.push_str(&route.dead_key);
            match self.smooth.get(key.as_str()) {
                Some(state) => state.clone(),
                None => {
                    if self.smooth.len() >= MAX_ENTRIES {
                        self.smooth.clear();
                    }
                    self.smooth.entry(key.as_str().into()).or_default().clone()
                }
            }
        });
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        let n = route.backends.len();
        let same =
            state.weights.len() == n && (0..n).all(|i| state.weights[i] == route.options.weight(i));
        if !same {
            // New weights or a new list: start over, as nginx does on a reload.
            state.weights = (0..n).map(|i| route.options.weight(i)).collect();
            state.current = vec![0; n];
        }
        let mut total = 0i64;
        let mut best = live[0];
        for &i in live {
            let weight = i64::from(state.weights[i]);
            state.current[i] += weight;
            total += weight;
            if state.current[i] > state.current[best] {
                best = i;
            }
        }
        state.current[best] -= total;
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::RouteOptions;

    fn route(weights: &str, dead: Vec<bool>) -> Route {
        let n = dead.len();
        let mut options = RouteOptions::default();
        options.set("weights", weights).unwrap();
        Route::new(
            "a.com".into(),
            "id".into(),
            (0..n).map(|i| format!("http://10.0.0.{i}")).collect(),
            dead,
        )
        .with_options(Arc::new(options))
    }

    #[test]
    fn smooth_weighted_round_robin_is_nginx_order() {
        let balancer = Balancer::default();
        let route = route("5 1 1", vec![false; 3]);
        let picks: Vec<usize> = (0..7)
            .map(|_| balancer.pick(&route, Balance::RoundRobin))
            .collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weight_zero_and_dead_are_skipped() {
        let balancer = Balancer::default();
        let route = route("0 1 1", vec![false, false, true]);
        for _ in 0..10 {
            assert_eq!(balancer.pick(&route, Balance::RoundRobin), 1);
            assert_eq!(balancer.pick(&route, Balance::Random), 1);
            assert_eq!(balancer.pick(&route, Balance::LeastRequest), 1);
        }
    }

    #[test]
    fn least_request_prefers_the_idle_backend() {
        let balancer = Balancer::default();
        let route = route("1 1", vec![false; 2]);
        let _busy = balancer.in_flight("http://10.0.0.0");
        for _ in 0..20 {
            assert_eq!(balancer.pick(&route, Balance::LeastRequest), 1);
        }
    }
}
