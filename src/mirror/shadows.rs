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
/// Shadows whose state is kept; past it the map starts over (a flood of mirrored frontends cannot grow it).
const MAX_SHADOWS: usize = 10_000;
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

/// One shadow of one frontend: its limit, its counters' labels and its last mismatches.
struct Shadow {
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
    shadows: DashMap<(Box<str>, Box<str>), Arc<Shadow>, foldhash::fast::RandomState>,
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
            shadows: DashMap::default(),
            metrics: MirrorMetrics::new(),
        }
    }

    /// Whether this request is copied: `percent` of them, drawn at random. A request left out is counted as
    /// dropped for sampling on each shadow.
    pub fn sampled(&self, key: &str, spec: &MirrorSpec) -> bool {
        let keep = spec.percent >= 100 || fastrand::u8(..100) < spec.percent;
        if !keep {
            for (name, _) in &spec.shadows {
                self.metrics
                    .dropped
                    .with_label_values(&[key, name, "sampling"])
                    .inc();
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
        let shadows: Vec<(String, Arc<Shadow>)> = spec
            .shadows
            .iter()
            .map(|(name, url)| (name.clone(), self.shadow(key, name, url, spec.concurrency)))
            .collect();
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
        let mut out: Vec<ShadowReport> = self
            .shadows
            .iter()
            .map(|entry| {
                let ((frontend, shadow), state) = entry.pair();
                let mismatches = ["status", "body"]
                    .iter()
                    .map(|kind| {
                        self.metrics
                            .mismatches
                            .with_label_values(&[&**frontend, &**shadow, *kind])
                            .get()
                    })
                    .sum();
                ShadowReport {
                    frontend: frontend.to_string(),
                    shadow: shadow.to_string(),
                    url: state.url.clone(),
                    sent: state.counted.requests.get(),
                    errors: state.counted.errors.get(),
                    timeouts: state.counted.timeouts.get(),
                    mismatches,
                    in_flight: state.concurrency - state.slots.available_permits(),
                    recent_mismatches: state
                        .mismatches
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .cloned()
                        .collect(),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.frontend, &a.shadow).cmp(&(&b.frontend, &b.shadow)));
        out
    }

    /// The state of shadow `name` of frontend `key`, made anew when its URL or limit changed.
    fn shadow(&self, key: &str, name: &str, url: &str, concurrency: usize) -> Arc<Shadow> {
        let id = (Box::<str>::from(key), Box::<str>::from(name));
        if let Some(shadow) = self.shadows.get(&id) {
            if shadow.url == url && shadow.concurrency == concurrency {
                return shadow.clone();
            }
        }
        if self.shadows.len() >= MAX_SHADOWS {
            self.shadows.clear();
        }
        let labels = [key, name];
        let shadow = Arc::new(Shadow {
            url: url.to_string(),
            target: Target::parse(url).ok().map(Arc::new),
            slots: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            mismatches: Mutex::default(),
            counted: Counted {
                requests: self.metrics.requests.with_label_values(&labels),
                errors: self.metrics.errors.with_label_values(&labels),
                timeouts: self.metrics.timeouts.with_label_values(&labels),
                latency: self.metrics.latency.with_label_values(&labels),
            },
        });
        self.shadows.insert(id, shadow.clone());
        shadow
    }

    async fn run(
        self: Arc<Self>,
        key: String,
        spec: Arc<MirrorSpec>,
        head: Head,
        copy: CopyReceiver,
        shadows: Vec<(String, Arc<Shadow>)>,
        active: oneshot::Receiver<ActiveOutcome>,
    ) {
        let body = match copy.await {
            Ok(Copied::Body(body)) => body,
            Ok(Copied::TooLarge) => {
                for (name, _) in &shadows {
                    self.metrics
                        .dropped
                        .with_label_values(&[&key, name, "body_too_large"])
                        .inc();
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
        let sends = shadows.into_iter().filter_map(|(name, shadow)| {
            let Ok(permit) = shadow.slots.clone().try_acquire_owned() else {
                self.metrics
                    .dropped
                    .with_label_values(&[&key, &name, "full"])
                    .inc();
                return None;
            };
            let (head, body, key) = (&head, body.clone(), &key);
            let mirrors = &self;
            Some(async move {
                let answer = mirrors
                    .send_one(key, &name, &shadow, head, body, timeout, hash_cap)
                    .await;
                drop(permit);
                (name, shadow, answer)
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
        for (name, shadow, answer) in answers {
            let Some(answer) = answer else { continue };
            let kind = if answer.status != active.status {
                Some("status")
            } else if compare == Compare::Body
                && active.body_hash.is_some()
                && answer.body_hash != active.body_hash
            {
                Some("body")
            } else {
                None
            };
            if let Some(kind) = kind {
                self.metrics
                    .mismatches
                    .with_label_values(&[&key, &name, kind])
                    .inc();
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
    #[allow(clippy::too_many_arguments)]
    async fn send_one(
        &self,
        key: &str,
        name: &str,
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
                    "mirror {name} of {key}: {} ({:?})",
                    failed.message,
                    failed.latency
                );
                None
            }
        }
    }
}
