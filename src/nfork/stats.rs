//! gonfork's stats per outbound: counts and a latency distribution kept in windows (1 s); a read returns the
//! previous complete window, so two reads within a window agree and a burst is never half counted.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::go_duration;
use crate::mirror::Failure;

/// gonfork's window (datacratic's `DefaultSampleRate`).
pub const WINDOW: Duration = Duration::from_secs(1);
/// Latency samples kept per window (gonfork's `DefaultDistributionSize`).
pub const RESERVOIR: usize = 1000;

/// What became of one exchange with an outbound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer with this status.
    Response(u16),
    /// A failure, in gonfork's classes.
    Failed(Failure),
}

/// The stats of one outbound.
pub struct Recorder {
    started: Instant,
    window: Duration,
    inner: Mutex<Windows>,
}

#[derive(Default)]
struct Windows {
    /// Index of `current` (windows since `started`).
    index: u64,
    current: Window,
    prev: Window,
}

/// One window's counts.
#[derive(Default, Clone)]
struct Window {
    requests: u64,
    errors: u64,
    timeouts: u64,
    responses: BTreeMap<u16, u64>,
    /// Reservoir of latencies in nanoseconds, at most [`RESERVOIR`].
    samples: Vec<u64>,
    /// Latencies seen, for the reservoir's odds.
    seen: u64,
    max: u64,
}

/// gonfork's `Stats` JSON: `{"requests","errors","timeouts","latency":{p50,p90,p99,pmx},"responses"}`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub latency: Latency,
    /// By status code; JSON object keys are strings, sorted as Go writes a map.
    pub responses: BTreeMap<String, u64>,
}

/// Latency percentiles as Go duration strings; `pmx` is the window's maximum.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Latency {
    pub p50: String,
    pub p90: String,
    pub p99: String,
    pub pmx: String,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new(WINDOW)
    }
}

impl Recorder {
    pub fn new(window: Duration) -> Recorder {
        Recorder {
            started: Instant::now(),
            window: window.max(Duration::from_millis(1)),
            inner: Mutex::default(),
        }
    }

    /// Count one exchange that took `latency`.
    pub fn record(&self, outcome: Outcome, latency: Duration) {
        let mut windows = self.lock();
        let window = &mut windows.current;
        window.requests += 1;
        match outcome {
            Outcome::Response(status) => *window.responses.entry(status).or_default() += 1,
            Outcome::Failed(Failure::Error) => window.errors += 1,
            Outcome::Failed(Failure::Timeout) => window.timeouts += 1,
        }
        window.sample(latency.as_nanos().min(u64::MAX as u128) as u64);
    }

    /// The previous complete window.
    pub fn read(&self) -> Stats {
        let prev = self.lock().prev.clone();
        prev.stats()
    }

    /// The windows, rotated up to now: a window with no traffic at all still ends.
    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        let mut windows = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = (self.started.elapsed().as_nanos() / self.window.as_nanos()) as u64;
        if now > windows.index {
            let current = std::mem::take(&mut windows.current);
            windows.prev = match now == windows.index + 1 {
                true => current,
                false => Window::default(),
            };
            windows.index = now;
        }
        windows
    }
}

impl Window {
    /// Reservoir sampling (Vitter's algorithm R): every latency of the window has the same chance of being kept.
    fn sample(&mut self, nanos: u64) {
        self.seen += 1;
        self.max = self.max.max(nanos);
        if self.samples.len() < RESERVOIR {
            self.samples.push(nanos);
            return;
        }
        let slot = fastrand::u64(0..self.seen) as usize;
        if slot < RESERVOIR {
            self.samples[slot] = nanos;
        }
    }

    fn stats(mut self) -> Stats {
        self.samples.sort_unstable();
        let at = |p: usize| {
            let n = self.samples.len();
            match n {
                0 => 0,
                // Nearest rank. gonfork indexed `(n/100)*p`, which read the minimum under 100 samples.
                n => self.samples[(n * p / 100).min(n - 1)],
            }
        };
        let text = |nanos: u64| go_duration::format(Duration::from_nanos(nanos));
        Stats {
            requests: self.requests,
            errors: self.errors,
            timeouts: self.timeouts,
            latency: Latency {
                p50: text(at(50)),
                p90: text(at(90)),
                p99: text(at(99)),
                pmx: text(self.max),
            },
            responses: self
                .responses
                .iter()
                .map(|(code, n)| (code.to_string(), *n))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_returns_the_previous_window() {
        let recorder = Recorder::new(Duration::from_millis(500));
        recorder.record(Outcome::Response(200), Duration::from_millis(3));
        recorder.record(
            Outcome::Failed(Failure::Timeout),
            Duration::from_micros(350),
        );
        recorder.record(Outcome::Failed(Failure::Error), Duration::from_millis(1));
        assert_eq!(recorder.read().requests, 0, "the window is not over yet");
        std::thread::sleep(Duration::from_millis(600));
        let stats = recorder.read();
        let json = serde_json::to_string(&stats).unwrap();
        assert_eq!(
            json,
            r#"{"requests":3,"errors":1,"timeouts":1,"latency":{"p50":"1ms","p90":"3ms","p99":"3ms","pmx":"3ms"},"responses":{"200":1}}"#
        );
    }

    #[test]
    fn the_reservoir_keeps_a_bounded_sample_and_the_true_max() {
        let mut window = Window::default();
        for i in 1..=10_000u64 {
            window.sample(i);
        }
        assert_eq!(window.samples.len(), RESERVOIR);
        let stats = window.stats();
        assert_eq!(stats.latency.pmx, "10µs");
        // The median of 1..=10000 ns, within the reservoir's error.
        let p50: f64 = stats.latency.p50.trim_end_matches("µs").parse().unwrap();
        assert!((4.0..6.0).contains(&p50), "{}", stats.latency.p50);
    }
}
