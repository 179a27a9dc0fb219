//! The last minute of traffic, per frontend and per backend, kept in process for the admin API and the
//! dashboard (`GET /api/v1/stats`): requests by status class, the rate, and the p50/p99 latency, with no
//! Prometheus needed.
//!
//! Each frontend key has one [`Entry`] behind one mutex: its own series and one per backend URL. A series is a
//! ring of 60 one-second slots (counts by status class) and 6 ten-second slots of a latency histogram, so the
//! percentiles cover the last 50 to 60 seconds. Recording a request is one map lookup, one uncontended lock
//! and a few additions; it happens only when the admin listener is on (`Telemetry::window`).
//!
//! Cardinality is bounded: at most [`MAX_FRONTENDS`] frontends (idle ones are dropped first) and
//! [`MAX_BACKENDS`] backends per frontend; what does not fit is counted as dropped, not recorded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Frontends tracked at once; beyond this, frontends idle for a minute are dropped, then new ones are not
/// recorded.
pub const MAX_FRONTENDS: usize = 2_000;
/// Backends tracked per frontend.
pub const MAX_BACKENDS: usize = 64;
/// The window, in seconds.
pub const WINDOW_SECS: u64 = 60;
/// The span the rate is computed over, in seconds (the last complete seconds).
pub const RATE_SECS: u64 = 10;

const SLICE_SECS: u64 = 10;
const SLICES: usize = (WINDOW_SECS / SLICE_SECS) as usize;
/// Latency buckets: upper bounds growing by 2^(1/4) from 100 µs (the last is about 5.5 s), plus one for
/// anything slower. A reported percentile is the bucket's geometric middle: within about 10%.
const BUCKETS: usize = 64;
const FIRST_BOUND_US: f64 = 100.0;

fn bounds() -> &'static [u64; BUCKETS] {
    static BOUNDS: OnceLock<[u64; BUCKETS]> = OnceLock::new();
    BOUNDS.get_or_init(|| {
        let mut out = [0u64; BUCKETS];
        for (i, b) in out.iter_mut().enumerate() {
            *b = (FIRST_BOUND_US * 2f64.powf(i as f64 / 4.0)).round() as u64;
        }
        out
    })
}

/// The bucket of a latency: the first whose upper bound is at least it, or the overflow bucket.
fn bucket(elapsed: Duration) -> usize {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    bounds().partition_point(|&b| b < us)
}

/// One second's counts by status class (1xx to 5xx; anything else counts as 5xx).
#[derive(Clone, Copy, Default)]
struct Second {
    /// The second (since the window's epoch) these counts are for; another value means stale.
    at: u64,
    classes: [u32; 5],
}

/// Ten seconds of the latency histogram.
#[derive(Clone, Copy)]
struct Slice {
    at: u64,
    buckets: [u32; BUCKETS + 1],
}

impl Default for Slice {
    fn default() -> Self {
        Slice {
            at: u64::MAX,
            buckets: [0; BUCKETS + 1],
        }
    }
}

/// The last minute of one frontend or one backend.
struct Series {
    seconds: [Second; WINDOW_SECS as usize],
    slices: [Slice; SLICES],
    /// The last second something was recorded (to drop idle frontends).
    last: u64,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            seconds: [Second {
                at: u64::MAX,
                classes: [0; 5],
            }; WINDOW_SECS as usize],
            slices: [Slice::default(); SLICES],
            last: 0,
        }
    }
}

impl Series {
    fn record(&mut self, now: u64, class: usize, bucket: usize) {
        let second = &mut self.seconds[(now % WINDOW_SECS) as usize];
        if second.at != now {
            *second = Second {
                at: now,
                classes: [0; 5],
            };
        }
        second.classes[class] = second.classes[class].saturating_add(1);
        let slice_at = now / SLICE_SECS;
        let slice = &mut self.slices[(slice_at % SLICES as u64) as usize];
        if slice.at != slice_at {
            *slice = Slice {
                at: slice_at,
                buckets: [0; BUCKETS + 1],
            };
        }
        slice.buckets[bucket] = slice.buckets[bucket].saturating_add(1);
        self.last = now;
    }

    fn figures(&self, now: u64) -> Figures {
        let mut requests = [0u64; 5];
        let mut recent = 0u64;
        for second in &self.seconds {
            if second.at > now || now - second.at >= WINDOW_SECS {
                continue;
            }
            let total: u64 = second.classes.iter().map(|&c| u64::from(c)).sum();
            for (sum, &c) in requests.iter_mut().zip(&second.classes) {
                *sum += u64::from(c);
            }
            // The rate counts the last complete seconds, not the one still filling.
            if second.at < now && now - second.at <= RATE_SECS {
                recent += total;
            }
        }
        let mut histogram = [0u64; BUCKETS + 1];
        let current = now / SLICE_SECS;
        for slice in &self.slices {
            if slice.at > current || current - slice.at >= SLICES as u64 {
                continue;
            }
            for (sum, &c) in histogram.iter_mut().zip(&slice.buckets) {
                *sum += u64::from(c);
            }
        }
        Figures {
            requests,
            rate: recent as f64 / RATE_SECS as f64,
            p50_ms: quantile(&histogram, 0.50),
            p99_ms: quantile(&histogram, 0.99),
        }
    }
}

/// The `q` quantile of a histogram in milliseconds: the geometric middle of the bucket it falls in.
fn quantile(histogram: &[u64; BUCKETS + 1], q: f64) -> Option<f64> {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0u64;
    let bounds = bounds();
    for (i, &count) in histogram.iter().enumerate() {
        seen += count;
        if seen >= rank {
            let upper = match bounds.get(i) {
                Some(&b) => b as f64,
                // Slower than the last bound: reported as that bound.
                None => return Some(bounds[BUCKETS - 1] as f64 / 1000.0),
            };
            let lower = match i {
                0 => 0.0,
                _ => bounds[i - 1] as f64,
            };
            let middle = match i {
                0 => upper / 2.0,
                _ => (lower * upper).sqrt(),
            };
            return Some(middle / 1000.0);
        }
    }
    None
}

/// What a series says about the last minute.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Figures {
    /// Requests answered within the window, by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub requests: [u64; 5],
    /// Requests per second over the last [`RATE_SECS`] complete seconds.
    pub rate: f64,
    /// Median latency in milliseconds (`None` without requests).
    pub p50_ms: Option<f64>,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: Option<f64>,
}

impl Figures {
    /// Every request in the window.
    pub fn total(&self) -> u64 {
        self.requests.iter().sum()
    }
}

/// One frontend: its own series and its backends'.
#[derive(Default)]
struct Entry {
    own: Series,
    backends: Vec<(Box<str>, Series)>,
}

/// A frontend's figures and its backends'.
#[derive(Debug, Clone)]
pub struct FrontendFigures {
    pub frontend: String,
    pub figures: Figures,
    /// By backend URL, in the order first seen.
    pub backends: Vec<(String, Figures)>,
}

/// The last minute of every frontend and backend that had traffic.
pub struct Window {
    epoch: Instant,
    frontends: DashMap<Box<str>, Arc<Mutex<Entry>>, foldhash::fast::RandomState>,
    /// Requests not recorded because the frontend or backend limit was reached.
    dropped: AtomicU64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            epoch: Instant::now(),
            frontends: DashMap::default(),
            dropped: AtomicU64::new(0),
        }
    }
}

impl Window {
    fn now(&self) -> u64 {
        self.second_of(Instant::now())
    }

    /// The window's second an instant falls in.
    fn second_of(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_secs()
    }

    /// Count one finished request of frontend `key`, answered by `backend` (`None`: no backend was chosen,
    /// e.g. a policy refused it or every backend is dead) with `status` after `elapsed`, finishing `at` (the
    /// caller's clock reading, so that recording reads no clock of its own).
    pub fn record(
        &self,
        key: &str,
        backend: Option<&str>,
        status: u16,
        elapsed: Duration,
        at: Instant,
    ) {
        let now = self.second_of(at);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let bucket = bucket(elapsed);
        // Recorded under the map's read guard: no reference count is touched on the common path.
        if let Some(entry) = self.frontends.get(key) {
            return self.record_in(&entry, backend, now, class, bucket);
        }
        match self.admit(key, now) {
            Some(entry) => self.record_in(&entry, backend, now, class, bucket),
            None => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn record_in(
        &self,
        entry: &Mutex<Entry>,
        backend: Option<&str>,
        now: u64,
        class: usize,
        bucket: usize,
    ) {
        let mut entry = entry.lock().unwrap_or_else(|p| p.into_inner());
        entry.own.record(now, class, bucket);
        let Some(url) = backend else { return };
        let known = entry.backends.iter().position(|(u, _)| &**u == url);
        match known {
            Some(i) => entry.backends[i].1.record(now, class, bucket),
            None if entry.backends.len() < MAX_BACKENDS => {
                let mut series = Series::default();
                series.record(now, class, bucket);
                entry.backends.push((url.into(), series));
            }
            None => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The entry of a frontend seen for the first time, unless the limit is reached even after dropping
    /// frontends idle for the whole window.
    fn admit(&self, key: &str, now: u64) -> Option<Arc<Mutex<Entry>>> {
        if self.frontends.len() >= MAX_FRONTENDS {
            self.frontends.retain(|_, entry| {
                let entry = entry.lock().unwrap_or_else(|p| p.into_inner());
                now.saturating_sub(entry.own.last) < WINDOW_SECS
            });
            if self.frontends.len() >= MAX_FRONTENDS {
                return None;
            }
        }
        Some(self.frontends.entry(key.into()).or_default().clone())
    }

    /// Every frontend with traffic in the window, sorted by key.
    pub fn frontends(&self) -> Vec<FrontendFigures> {
        let now = self.now();
        let entries: Vec<(String, Arc<Mutex<Entry>>)> = self
            .frontends
            .iter()
            .map(|e| (e.key().to_string(), e.value().clone()))
            .collect();
        let mut out: Vec<FrontendFigures> = entries
            .into_iter()
            .filter_map(|(key, entry)| {
                let entry = entry.lock().unwrap_or_else(|p| p.into_inner());
                let figures = entry.own.figures(now);
                (figures.total() > 0).then(|| FrontendFigures {
                    frontend: key,
                    figures,
                    backends: backends(&entry, now),
                })
            })
            .collect();
        out.sort_by(|a, b| a.frontend.cmp(&b.frontend));
        out
    }

    /// One frontend's figures (zero when it had no traffic in the window).
    pub fn frontend(&self, key: &str) -> FrontendFigures {
        let now = self.now();
        let entry = self.frontends.get(key).map(|e| e.clone());
        let (figures, backends) = match entry {
            Some(entry) => {
                let entry = entry.lock().unwrap_or_else(|p| p.into_inner());
                (entry.own.figures(now), backends(&entry, now))
            }
            None => (Figures::default(), Vec::new()),
        };
        FrontendFigures {
            frontend: key.to_string(),
            figures,
            backends,
        }
    }

    /// Requests not recorded because a limit was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn backends(entry: &Entry, now: u64) -> Vec<(String, Figures)> {
    entry
        .backends
        .iter()
        .map(|(url, series)| (url.to_string(), series.figures(now)))
        .filter(|(_, figures)| figures.total() > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_by_a_fourth_root_of_two() {
        let b = bounds();
        assert_eq!(b[0], 100);
        assert_eq!(b[4], 200);
        assert_eq!(b[40], 102_400);
        assert_eq!(bucket(Duration::from_micros(100)), 0);
        assert_eq!(bucket(Duration::from_micros(101)), 1);
        assert_eq!(bucket(Duration::from_secs(3600)), BUCKETS);
    }

    #[test]
    fn counts_classes_rate_and_percentiles() {
        let mut s = Series::default();
        // 100 requests in second 5: 98 fast (2 ms), 2 slow (800 ms, one 503).
        for i in 0..100 {
            let (class, latency) = match i {
                0 => (4, Duration::from_millis(800)),
                1 => (1, Duration::from_millis(800)),
                _ => (1, Duration::from_millis(2)),
            };
            s.record(5, class, bucket(latency));
        }
        let f = s.figures(6);
        assert_eq!(f.requests, [0, 99, 0, 0, 1]);
        assert_eq!(f.rate, 10.0);
        let p50 = f.p50_ms.unwrap();
        let p99 = f.p99_ms.unwrap();
        assert!((1.8..2.2).contains(&p50), "{p50}");
        assert!((720.0..880.0).contains(&p99), "{p99}");
        // The rate leaves out the second still filling.
        assert_eq!(s.figures(5).rate, 0.0);
        // A minute later it has all gone.
        let later = s.figures(5 + WINDOW_SECS);
        assert_eq!(later.total(), 0);
        assert_eq!(later.p99_ms, None);
    }

    #[test]
    fn a_slot_is_reused_after_a_minute() {
        let mut s = Series::default();
        s.record(1, 1, 0);
        s.record(1 + WINDOW_SECS, 3, 0);
        let f = s.figures(1 + WINDOW_SECS);
        assert_eq!(f.requests, [0, 0, 0, 1, 0]);
    }

    #[test]
    fn frontends_and_backends() {
        let w = Window::default();
        let (ms, now) = (Duration::from_millis(1), Instant::now());
        w.record("a.com", Some("http://b0"), 200, ms, now);
        w.record("a.com", Some("http://b1"), 502, ms, now);
        w.record("a.com", None, 503, ms, now);
        let all = w.frontends();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].figures.requests, [0, 1, 0, 0, 2]);
        assert_eq!(all[0].backends.len(), 2);
        assert_eq!(all[0].backends[1].0, "http://b1");
        assert_eq!(w.frontend("b.com").figures.total(), 0);
    }
}
