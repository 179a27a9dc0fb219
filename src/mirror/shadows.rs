//! The per-frontend shadows of the Redis presets (`mirror:<key>`, docs/mirroring.md#per-frontend-shadows):
//! which requests are copied, the bounded concurrency of each shadow, its counters, and the comparison of its
//! answers with the active one.
//!
//! The request path only samples, copies the head, tees the body and spawns one task; everything else (waiting
//! for the body, sending, comparing) happens on that task, so a slow, refusing or stalled shadow never adds
//! latency to the client, and a full shadow drops copies instead of queueing them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use tokio::sync::{oneshot, Semaphore};

use super::send::{hash_body, send_copy, Answer, Failure, Head};
use crate::body::{Copied, CopyReceiver};
use crate::routing::mirror::{Compare, MirrorSpec};
use crate::upstream::{Target, Upstream};

/// Mismatching request lines kept per shadow for the admin API.
const RECENT_MISMATCHES: usize = 10;
/// Mirrored frontends whose state is kept; past it the map starts over (a flood of mirrored frontends cannot
/// grow it).
const MAX_FRONTENDS: usize = 10_000;
/// How long the comparison waits for the active answer's body to be sent to the client.
const ACTIVE_WAIT: Duration = Duration::from_secs(60);

/// What the client got, for the comparison: its status, and a hash of its body with `compare body`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveAnswer {
    pub status: u16,
    pub body_hash: Option<u64>,
}

/// The active side of one mirrored request: send what the client got when it is known.
pub struct ActiveSide {
    tx: oneshot::Sender<ActiveOutcome>,
}

/// The active answer as the proxy knows it: the status, and for `compare body` the copy of the body.
pub enum ActiveOutcome {
    Status(u16),
    WithBody(u16, CopyReceiver),
}

impl ActiveSide {
    pub fn answered(self, outcome: ActiveOutcome) {
        let _ = self.tx.send(outcome);
    }
}

/// One shadow of one frontend: its limit, its counters and its last mismatches.
struct Shadow {
    name: String,
    url: String,
    target: Option<Arc<Target>>,
    slots: Arc<Semaphore>,
    concurrency: usize,
    mismatches: Mutex<VecDeque<String>>,
    /// This shadow's series, looked up once instead of hashing their labels for every copy.
    counted: Counted,
}

struct Counted {
    requests: prometheus::IntCounter,
    errors: prometheus::IntCounter,
    timeouts: prometheus::IntCounter,
    latency: prometheus::Histogram,
    /// `dropped` by reason.
    sampling: prometheus::IntCounter,
    full: prometheus::IntCounter,
    too_large: prometheus::IntCounter,
    /// `mismatches` by kind.
    status_differs: prometheus::IntCounter,
    body_differs: prometheus::IntCounter,
}

/// The shadows of one frontend, as made for the spec they came from (reused while it stays the same).
struct Frontend {
    shadows: Vec<Arc<Shadow>>,
    concurrency: usize,
}

impl Frontend {
    fn made_for(&self, spec: &MirrorSpec) -> bool {
        self.concurrency == spec.concurrency
            && self.shadows.len() == spec.shadows.len()
            && self
                .shadows
                .iter()
                .zip(&spec.shadows)
                .all(|(shadow, (name, url))| shadow.name == *name && shadow.url == *url)
    }
}

/// The metrics of every shadow, labelled by frontend key and shadow name (registered by `observe`).
#[derive(Clone)]
pub struct MirrorMetrics {
    pub requests: IntCounterVec,
    pub dropped: IntCounterVec,
    pub errors: IntCounterVec,
    pub timeouts: IntCounterVec,
    pub mismatches: IntCounterVec,
    pub latency: HistogramVec,
}

impl MirrorMetrics {
    fn new() -> MirrorMetrics {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        MirrorMetrics {
            requests: counter(
                "hypache_mirror_requests_total",
                "Copies sent to a shadow, by frontend key and shadow name.",
                &["frontend", "shadow"],
            ),
            dropped: counter(
                "hypache_mirror_dropped_total",
                "Copies not sent: the shadow was full, the body was over max_body, or the request was not sampled.",
                &["frontend", "shadow", "reason"],
            ),
            errors: counter(
                "hypache_mirror_errors_total",
                "Copies that failed (gonfork's errors: anything but a timeout or a refused connection).",
                &["frontend", "shadow"],
            ),
            timeouts: counter(
                "hypache_mirror_timeouts_total",
                "Copies that timed out or whose connection was refused (gonfork counts a refusal as a timeout).",
                &["frontend", "shadow"],
            ),
            mismatches: counter(
                "hypache_mirror_mismatches_total",
                "Shadow answers that differed from the active answer, by kind (status or body).",
                &["frontend", "shadow", "kind"],
            ),
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "hypache_mirror_response_seconds",
                    "Time from sending a copy to the shadow's response head.",
                ),
                &["frontend", "shadow"],
            )
            .expect("valid metric"),
        }
    }
}

/// A shadow's figures for the admin API.
#[derive(Debug, Clone)]
pub struct ShadowReport {
    pub frontend: String,
    pub shadow: String,
    pub url: String,
    /// Copies sent, failed (gonfork's errors and timeouts) and answered differently, since start.
    pub sent: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub mismatches: u64,
    pub in_flight: usize,
    pub recent_mismatches: Vec<String>,
}

/// Every shadow of the process.
pub struct Mirrors {
    /// The shadows' own connection pool: their connections never mix with the backends'.
    upstream: Arc<Upstream>,
    /// By frontend key: a request looks its frontend's shadows up without building a key.
    frontends: DashMap<Box<str>, Arc<Frontend>, foldhash::fast::RandomState>,
    pub metrics: MirrorMetrics,
}

/// A mirrored request in the making, handed back to the proxy: the active side to report to.
pub struct Started {
    pub active: ActiveSide,
    /// Whether the proxy should copy the active body for `compare body` (and up to how many bytes).
    pub hash_active_body: Option<usize>,
}

impl Mirrors {
    pub fn new(upstream: Upstream) -> Mirrors {
        Mirrors {
            upstream: Arc::new(upstream),
            frontends: DashMap::default(),
            metrics: MirrorMetrics::new(),
        }
    }

    /// Whether this request is copied: `percent` of them, drawn at random. A request left out is counted as
    /// dropped for sampling on each shadow.
    pub fn sampled(&self, key: &str, spec: &MirrorSpec) -> bool {
        let keep = spec.percent >= 100 || fastrand::u8(..100) < spec.percent;
        if !keep {
            for shadow in &self.frontend(key, spec).shadows {
                shadow.counted.sampling.inc();
            }
        }
        keep
    }

    /// Start mirroring one request: `head` as the backend gets it (`X-Nfork: true` is added here), the body's
    /// copy arriving on `copy`. The copies go out on a task of their own once the body has been sent.
    pub fn start(
        self: &Arc<Self>,
        key: &str,
        spec: Arc<MirrorSpec>,
        mut head: Head,
        copy: CopyReceiver,
    ) -> Started {
        head.headers.insert(
            http::HeaderName::from_static("x-nfork"),
            http::HeaderValue::from_static("true"),
        );
        let (tx, active) = oneshot::channel();
        let hash_active_body = (spec.compare == Some(Compare::Body)).then_some(spec.max_body);
        let shadows = self.frontend(key, &spec);
        let mirrors = self.clone();
        let key = key.to_string();
        tokio::spawn(async move {
            mirrors.run(key, spec, head, copy, shadows, active).await;
        });
        Started {
            active: ActiveSide { tx },
            hash_active_body,
        }
    }

    /// What the admin API shows of each shadow.
    pub fn report(&self) -> Vec<ShadowReport> {
        let mut out: Vec<ShadowReport> = Vec::new();
        for entry in self.frontends.iter() {
            for state in &entry.value().shadows {
                let counted = &state.counted;
                out.push(ShadowReport {
                    frontend: entry.key().to_string(),
                    shadow: state.name.clone(),
                    url: state.url.clone(),
                    sent: counted.requests.get(),
                    errors: counted.errors.get(),
                    timeouts: counted.timeouts.get(),
                    mismatches: counted.status_differs.get() + counted.body_differs.get(),
                    in_flight: state.concurrency - state.slots.available_permits(),
                    recent_mismatches: state
                        .mismatches
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .cloned()
                        .collect(),
                });
            }
        }
        out.sort_by(|a, b| (&a.frontend, &a.shadow).cmp(&(&b.frontend, &b.shadow)));
        out
    }

    /// The shadows of frontend `key` as `spec` names them: those already made are kept (their counters, slots
    /// and copies in flight), and the set is made anew only when a shadow or the limit changed.
    fn frontend(&self, key: &str, spec: &MirrorSpec) -> Arc<Frontend> {
        let known = self.frontends.get(key).map(|f| f.clone());
        if let Some(frontend) = known.as_ref().filter(|f| f.made_for(spec)) {
            return frontend.clone();
        }
        let shadows = spec
            .shadows
            .iter()
            .map(|(name, url)| {
                let same = known.as_ref().and_then(|f| {
                    f.shadows.iter().find(|s| {
                        s.name == *name && s.url == *url && s.concurrency == spec.concurrency
                    })
                });
                match same {
                    Some(shadow) => shadow.clone(),
                    None => Arc::new(self.new_shadow(key, name, url, spec.concurrency)),
                }
            })
            .collect();
        let frontend = Arc::new(Frontend {
            shadows,
            concurrency: spec.concurrency,
        });
        if self.frontends.len() >= MAX_FRONTENDS && known.is_none() {
            self.frontends.clear();
        }
        self.frontends.insert(key.into(), frontend.clone());
        frontend
    }

    fn new_shadow(&self, key: &str, name: &str, url: &str, concurrency: usize) -> Shadow {
        let m = &self.metrics;
        let labels = [key, name];
        let dropped = |reason: &str| m.dropped.with_label_values(&[key, name, reason]);
        let differs = |kind: &str| m.mismatches.with_label_values(&[key, name, kind]);
        Shadow {
            name: name.to_string(),
            url: url.to_string(),
            target: Target::parse(url).ok().map(Arc::new),
            slots: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            mismatches: Mutex::default(),
            counted: Counted {
                requests: m.requests.with_label_values(&labels),
                errors: m.errors.with_label_values(&labels),
                timeouts: m.timeouts.with_label_values(&labels),
                latency: m.latency.with_label_values(&labels),
                sampling: dropped("sampling"),
                full: dropped("full"),
                too_large: dropped("body_too_large"),
                status_differs: differs("status"),
                body_differs: differs("body"),
            },
        }
    }

    async fn run(
        self: Arc<Self>,
        key: String,
        spec: Arc<MirrorSpec>,
        head: Head,
        copy: CopyReceiver,
        frontend: Arc<Frontend>,
        active: oneshot::Receiver<ActiveOutcome>,
    ) {
        let body = match copy.await {
            Ok(Copied::Body(body)) => body,
            Ok(Copied::TooLarge) => {
                for shadow in &frontend.shadows {
                    shadow.counted.too_large.inc();
                }
                return;
            }
            // The request never reached its end (the client went away): nothing to mirror.
            Err(_) => return,
        };
        let hash_cap = match spec.compare {
            Some(Compare::Body) => spec.max_body,
            _ => 0,
        };
        let timeout = spec.timeout;
        let sends = frontend.shadows.iter().filter_map(|shadow| {
            let Ok(permit) = shadow.slots.clone().try_acquire_owned() else {
                shadow.counted.full.inc();
                return None;
            };
            let (head, body, key) = (&head, body.clone(), &key);
            let mirrors = &self;
            Some(async move {
                let answer = mirrors
                    .send_one(key, shadow, head, body, timeout, hash_cap)
                    .await;
                drop(permit);
                (shadow, answer)
            })
        });
        let answers = futures_util::future::join_all(sends).await;
        let Some(compare) = spec.compare else { return };
        let Ok(Ok(outcome)) = tokio::time::timeout(ACTIVE_WAIT, active).await else {
            return;
        };
        let active = match outcome {
            ActiveOutcome::Status(status) => ActiveAnswer {
                status,
                body_hash: None,
            },
            ActiveOutcome::WithBody(status, copy) => {
                let body_hash = match tokio::time::timeout(ACTIVE_WAIT, copy).await {
                    Ok(Ok(Copied::Body(body))) => Some(hash_body(&body, spec.max_body)),
                    _ => None,
                };
                ActiveAnswer { status, body_hash }
            }
        };
        for (shadow, answer) in answers {
            let Some(answer) = answer else { continue };
            let kind = if answer.status != active.status {
                Some(("status", &shadow.counted.status_differs))
            } else if compare == Compare::Body
                && active.body_hash.is_some()
                && answer.body_hash != active.body_hash
            {
                Some(("body", &shadow.counted.body_differs))
            } else {
                None
            };
            if let Some((kind, counter)) = kind {
                counter.inc();
                let line = format!(
                    "{} {} -> active {}, shadow {} ({kind} differs)",
                    head.method, head.uri, active.status, answer.status
                );
                let mut recent = shadow.mismatches.lock().unwrap_or_else(|p| p.into_inner());
                if recent.len() >= RECENT_MISMATCHES {
                    recent.pop_front();
                }
                recent.push_back(line);
            }
        }
    }

    /// One copy to one shadow, counted.
    async fn send_one(
        &self,
        key: &str,
        shadow: &Shadow,
        head: &Head,
        body: Bytes,
        timeout: Duration,
        hash_cap: usize,
    ) -> Option<Answer> {
        let counted = &shadow.counted;
        counted.requests.inc();
        let Some(target) = &shadow.target else {
            counted.errors.inc();
            return None;
        };
        match send_copy(&self.upstream, target, head, body, timeout, hash_cap).await {
            Ok(answer) => {
                counted.latency.observe(answer.latency.as_secs_f64());
                Some(answer)
            }
            Err(failed) => {
                match failed.failure {
                    Failure::Timeout => counted.timeouts.inc(),
                    Failure::Error => counted.errors.inc(),
                }
                tracing::debug!(
                    "mirror {} of {key}: {} ({:?})",
                    shadow.name,
                    failed.message,
                    failed.latency
                );
                None
            }
        }
    }
}
