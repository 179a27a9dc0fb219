//! Circuit breaker per backend (passive outlier ejection, as Envoy and nginx's `max_fails` do it).
//!
//! After `failures` failures (connect errors, timeouts, 5xx: the kinds listed in `on`) within `window`, the
//! backend is ejected by this process for `cooldown`: selection skips it as it skips dead backends. Then it is
//! half-open: one request (the probe) goes to it; success puts it back in rotation, failure ejects it again.
//! At most `max_ejection_percent` of a frontend's backends are ejected at once, so a frontend-wide problem
//! (a bad deploy, an overloaded database) does not turn into every backend being skipped.
//!
//! State is per process and per (frontend key, backend URL); it is never written to Redis (dead marks are).
//! Defaults come from the `--breaker-*` flags (off unless `--breaker-failures` is set); a `breaker:<key>` hash
//! turns the breaker on for one frontend and overrides any default.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{FieldResult, Fields, PolicyStats};
pub use crate::config::breaker::{BreakerDefaults, On};
use crate::routing::Route;
use crate::upstream::UpstreamError;

/// Frontends whose breaker state is kept; the least recently used are forgotten beyond this.
const MAX_FRONTENDS: u64 = 100_000;
/// `failures` when a `breaker:<key>` hash exists but neither it nor the flags set one.
const DEFAULT_FAILURES: u32 = 5;

/// Whether `outcome` counts as a failure under `on`.
fn counts(on: On, outcome: Outcome) -> bool {
    match outcome {
        Outcome::Status(status) => on.status_5xx && (500..600).contains(&status),
        Outcome::Connect => on.connect,
        Outcome::Timeout => on.timeout,
        Outcome::Other | Outcome::Connected => false,
    }
}

/// The result of one attempt at a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend answered with this status.
    Status(u16),
    /// Connecting failed, or the connection broke before an answer.
    Connect,
    /// A dial or request timeout.
    Timeout,
    /// Not the backend's fault (e.g. a URL hypache cannot use).
    Other,
    /// A connection was opened and handed on (the SNI passthrough, which sees no status): a success.
    Connected,
}

impl Outcome {
    pub fn from_error(e: &UpstreamError) -> Outcome {
        match e {
            UpstreamError::ConnectTimeout(_) => Outcome::Timeout,
            UpstreamError::Resolve(_) | UpstreamError::Connect(_) | UpstreamError::Request(_) => {
                Outcome::Connect
            }
            UpstreamError::Tls(_) | UpstreamError::Local(_) | UpstreamError::Client(_) => {
                Outcome::Other
            }
        }
    }
}

/// A parsed `breaker:<key>` hash: each field overrides the flag of the same name (see [`BreakerDefaults`] for
/// why each exists), so one frontend can be tuned, or opted out with `failures 0`, without a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BreakerOverrides {
    pub failures: Option<u32>,
    pub window: Option<Duration>,
    pub cooldown: Option<Duration>,
    pub on: Option<On>,
    pub max_ejection_percent: Option<u8>,
}

impl BreakerOverrides {
    pub fn parse(fields: &Fields) -> FieldResult<BreakerOverrides> {
        fields.only(
            &[
                "failures",
                "window",
                "cooldown",
                "on",
                "max_ejection_percent",
            ],
            &[],
        )?;
        let failures = match fields.u64("failures")? {
            Some(n) => Some(
                u32::try_from(n).map_err(|_| ("failures".to_string(), "too large".to_string()))?,
            ),
            None => None,
        };
        let nonzero = |name: &str, d: Option<Duration>| match d {
            Some(d) if d.is_zero() => Err((name.to_string(), "must be longer than 0".to_string())),
            d => Ok(d),
        };
        let window = nonzero("window", fields.duration("window")?)?;
        let cooldown = nonzero("cooldown", fields.duration("cooldown")?)?;
        let on = match fields.get("on") {
            Some(text) => Some(On::parse(text).map_err(|why| ("on".to_string(), why))?),
            None => None,
        };
        let max_ejection_percent = match fields.u64("max_ejection_percent")? {
            Some(p) if p <= 100 => Some(p as u8),
            Some(p) => {
                return Err((
                    "max_ejection_percent".into(),
                    format!("{p} is more than 100"),
                ))
            }
            None => None,
        };
        Ok(BreakerOverrides {
            failures,
            window,
            cooldown,
            on,
            max_ejection_percent,
        })
    }
}

/// The settings in force for one frontend.
#[derive(Debug, Clone, Copy)]
struct Settings {
    failures: u32,
    window: Duration,
    cooldown: Duration,
    on: On,
    max_ejection_percent: u8,
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_since: Instant },
}

#[derive(Debug)]
struct Backend {
    /// Failure times within the window, oldest first (at most `failures` kept).
    failures: VecDeque<Instant>,
    state: State,
}

impl Backend {
    /// Out of rotation right now (an open breaker not yet due, or a half-open one waiting for its probe).
    fn ejected(&self, now: Instant) -> bool {
        match self.state {
            State::Closed => false,
            State::Open { until } => now < until,
            State::HalfOpen { .. } => true,
        }
    }
}

type Frontend = Arc<Mutex<HashMap<String, Backend>>>;

/// Breaker states of every frontend.
pub struct Breakers {
    defaults: BreakerDefaults,
    stats: Arc<PolicyStats>,
    frontends: moka::sync::Cache<Box<str>, Frontend>,
}

impl Breakers {
    pub fn new(defaults: BreakerDefaults, stats: Arc<PolicyStats>) -> Breakers {
        Breakers {
            defaults,
            stats,
            frontends: moka::sync::Cache::builder()
                .max_capacity(MAX_FRONTENDS)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
        }
    }

    /// Counts the backends held out of rotation right now, over every frontend: open and not yet due, or
    /// half-open waiting for their probe. Walks every breaker, so it is for a metrics scrape, not a request.
    pub fn ejected_counter(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let frontends = self.frontends.clone();
        move || {
            let now = Instant::now();
            frontends
                .iter()
                .map(|(_, frontend)| {
                    let backends = frontend.lock().unwrap_or_else(|p| p.into_inner());
                    backends.values().filter(|b| b.ejected(now)).count()
                })
                .sum()
        }
    }

    /// Whether backend `url` of frontend `key` is held out of rotation right now (the admin API shows it).
    /// Read-only: unlike [`Handle::admits`] it never claims a half-open backend's probe.
    pub fn is_ejected(&self, key: &str, url: &str) -> bool {
        let Some(frontend) = self.frontends.get(key) else {
            return false;
        };
        let backends = frontend.lock().unwrap_or_else(|p| p.into_inner());
        backends.get(url).is_some_and(|b| b.ejected(Instant::now()))
    }

    /// Whether every frontend has a breaker (`--breaker-failures` set).
    pub fn on_by_default(&self) -> bool {
        self.defaults.failures > 0
    }

    /// The breaker of frontend `key`, or `None` when it has none.
    pub fn handle(&self, key: &str, overrides: Option<&BreakerOverrides>) -> Option<Handle> {
        let d = &self.defaults;
        let failures = match overrides {
            None if d.failures == 0 => return None,
            None => d.failures,
            Some(o) => o.failures.unwrap_or(if d.failures > 0 {
                d.failures
            } else {
                DEFAULT_FAILURES
            }),
        };
        if failures == 0 {
            return None;
        }
        let o = overrides.cloned().unwrap_or_default();
        let settings = Settings {
            failures,
            window: o.window.unwrap_or(d.window),
            cooldown: o.cooldown.unwrap_or(d.cooldown),
            on: o.on.unwrap_or(d.on),
            max_ejection_percent: o.max_ejection_percent.unwrap_or(d.max_ejection_percent),
        };
        let frontend = self.frontends.get_with(key.into(), Default::default);
        Some(Handle {
            settings,
            frontend,
            stats: self.stats.clone(),
        })
    }
}

/// One request's view of its frontend's breakers.
pub struct Handle {
    settings: Settings,
    frontend: Frontend,
    stats: Arc<PolicyStats>,
}

impl Handle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Backend>> {
        self.frontend.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether backend `index` may take this request. A half-open backend takes one probe at a time; this
    /// call claims it.
    pub fn admits(&self, route: &Route, index: usize) -> bool {
        let now = Instant::now();
        let mut backends = self.lock();
        let Some(b) = backends.get_mut(&route.backends[index]) else {
            return true;
        };
        let claim = match b.state {
            State::Closed => return true,
            State::Open { until } => now >= until,
            // A probe whose result never came (the client went away) is given up after a cooldown.
            State::HalfOpen { probe_since } => now >= probe_since + self.settings.cooldown,
        };
        if claim {
            b.state = State::HalfOpen { probe_since: now };
            super::bump(&self.stats.breaker_probes);
        }
        claim
    }

    /// Count the result of an attempt at backend `index`.
    pub fn record(&self, route: &Route, index: usize, outcome: Outcome, log: &dyn Fn(&str)) {
        let s = &self.settings;
        let failed = counts(s.on, outcome);
        let url = &route.backends[index];
        let now = Instant::now();
        let mut backends = self.lock();
        if !failed && !backends.contains_key(url) {
            return;
        }
        let ejected_others = route
            .backends
            .iter()
            .filter(|u| *u != url)
            .filter(|u| backends.get(*u).is_some_and(|b| b.ejected(now)))
            .count();
        let b = backends.entry(url.clone()).or_insert(Backend {
            failures: VecDeque::new(),
            state: State::Closed,
        });
        match b.state {
            State::HalfOpen { .. } if failed => {
                b.state = State::Open {
                    until: now + s.cooldown,
                };
                super::bump(&self.stats.breaker_ejections);
                log(&format!(
                    "circuit breaker: probe failed ({}); backend ejected again for {:?}",
                    describe(outcome),
                    s.cooldown
                ));
            }
            State::HalfOpen { .. } => {
                b.state = State::Closed;
                b.failures.clear();
                super::bump(&self.stats.breaker_recoveries);
                log("circuit breaker: probe succeeded; backend back in rotation");
            }
            // An answer to a request sent before the backend was ejected.
            State::Open { .. } => {}
            State::Closed if failed => {
                b.failures.push_back(now);
                while b
                    .failures
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > s.window)
                    || b.failures.len() > s.failures as usize
                {
                    b.failures.pop_front();
                }
                let cap = route.backends.len() * usize::from(s.max_ejection_percent) / 100;
                if b.failures.len() >= s.failures as usize && ejected_others < cap {
                    b.state = State::Open {
                        until: now + s.cooldown,
                    };
                    b.failures.clear();
                    super::bump(&self.stats.breaker_ejections);
                    log(&format!(
                        "circuit breaker: {} failures within {:?}, last {}; backend ejected for {:?}",
                        s.failures,
                        s.window,
                        describe(outcome),
                        s.cooldown
                    ));
                }
            }
            State::Closed => {}
        }
    }
}

fn describe(outcome: Outcome) -> String {
    match outcome {
        Outcome::Status(status) => format!("status {status}"),
        Outcome::Connect => "connection error".into(),
        Outcome::Timeout => "timeout".into(),
        Outcome::Other => "other".into(),
        Outcome::Connected => "connected".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(n: usize) -> Route {
        let backends = (0..n).map(|i| format!("http://b{i}")).collect();
        Route::new("a.com".into(), "id".into(), backends, vec![false; n])
    }

    fn breakers(failures: u32, pct: u8) -> Breakers {
        Breakers::new(
            BreakerDefaults {
                failures,
                window: Duration::from_secs(60),
                cooldown: Duration::from_secs(60),
                on: On::ALL,
                max_ejection_percent: pct,
            },
            Arc::default(),
        )
    }

    #[test]
    fn trips_after_failures_and_respects_the_cap() {
        let b = breakers(2, 50);
        let r = route(2);
        let h = b.handle("a.com", None).unwrap();
        let quiet = |_: &str| {};
        h.record(&r, 0, Outcome::Status(500), &quiet);
        assert!(h.admits(&r, 0));
        h.record(&r, 0, Outcome::Status(503), &quiet);
        assert!(!h.admits(&r, 0));
        // The second backend fails as much, but one of two is the cap at 50%.
        for _ in 0..5 {
            h.record(&r, 1, Outcome::Connect, &quiet);
        }
        assert!(h.admits(&r, 1));
        assert_eq!(r.first_live_by(0, |i| h.admits(&r, i)), Some(1));
        assert_eq!(b.stats.breaker_ejections(), 1);
        assert_eq!(b.stats.breaker_probes(), 0);
    }

    #[test]
    fn half_open_takes_one_probe() {
        let b = Breakers::new(
            BreakerDefaults {
                failures: 1,
                cooldown: Duration::ZERO,
                max_ejection_percent: 100,
                ..Default::default()
            },
            Arc::default(),
        );
        let r = route(1);
        let h = b.handle("a.com", None).unwrap();
        h.record(&r, 0, Outcome::Connect, &|_| {});
        // The cooldown is over at once: the first ask claims the probe. With a zero cooldown a lost probe is
        // also given up at once, so only the recorded outcomes are checked here.
        assert!(h.admits(&r, 0));
        h.record(&r, 0, Outcome::Status(502), &|_| {});
        assert_eq!(b.stats.breaker_ejections(), 2);
        assert!(h.admits(&r, 0));
        h.record(&r, 0, Outcome::Status(200), &|_| {});
        assert_eq!(b.stats.breaker_recoveries(), 1);
        assert_eq!(b.stats.breaker_probes(), 2);
        assert!(h.admits(&r, 0));
    }

    #[test]
    fn successes_and_uncounted_kinds_do_not_trip() {
        let b = breakers(1, 100);
        let r = route(1);
        let h = b.handle("a.com", None).unwrap();
        h.record(&r, 0, Outcome::Status(404), &|_| {});
        h.record(&r, 0, Outcome::Other, &|_| {});
        assert!(h.admits(&r, 0));
        h.record(&r, 0, Outcome::Timeout, &|_| {});
        assert!(!h.admits(&r, 0));
    }

    #[test]
    fn off_unless_configured() {
        assert!(breakers(0, 50).handle("a.com", None).is_none());
        let on = BreakerOverrides::default();
        assert!(breakers(0, 50).handle("a.com", Some(&on)).is_some());
        let off = BreakerOverrides {
            failures: Some(0),
            ..Default::default()
        };
        assert!(breakers(3, 50).handle("a.com", Some(&off)).is_none());
    }

    #[test]
    fn on_lists() {
        assert!(!On::parse("connect, 5xx").unwrap().timeout);
        assert!(On::parse("4xx").is_err());
    }
}
