//! `--metrics-per-backend`: responses by status class and latency by backend URL, with the number of backends
//! that get their own series capped (`--metrics-backend-limit`): past the cap, backends share the series
//! labelled `backend="other"`, so a fleet that churns through backend addresses cannot grow the registry
//! without bound.

use std::sync::Mutex;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// The label shared by the backends past the cap.
pub const OTHER: &str = "other";

pub(super) struct PerBackend {
    responses: IntCounterVec,
    duration: HistogramVec,
    /// The backends with their own series, in the order they were first seen.
    named: Mutex<std::collections::HashSet<String>>,
    limit: usize,
}

impl PerBackend {
    pub(super) fn register(r: &Registry, limit: usize) -> PerBackend {
        let responses = IntCounterVec::new(
            Opts::new(
                "hypache_backend_responses_total",
                "Backend answers by backend URL and status class (--metrics-per-backend).",
            ),
            &["backend", "class"],
        )
        .unwrap();
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "hypache_backend_response_seconds",
                "Time from sending the request to the backend's response head, by backend URL \
                 (--metrics-per-backend).",
            ),
            &["backend"],
        )
        .unwrap();
        r.register(Box::new(responses.clone()))
            .expect("metric names are unique");
        r.register(Box::new(duration.clone()))
            .expect("metric names are unique");
        PerBackend {
            responses,
            duration,
            named: Mutex::default(),
            limit,
        }
    }

    /// One answer of backend `url` with `status`, after `took`.
    pub(super) fn record(&self, url: &str, status: u16, took: f64) {
        let label = self.label(url);
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.responses.with_label_values(&[label, class]).inc();
        self.duration.with_label_values(&[label]).observe(took);
    }

    /// `url` while it is among the first `limit` backends seen, else [`OTHER`].
    fn label<'a>(&self, url: &'a str) -> &'a str {
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        if named.contains(url) {
            return url;
        }
        if named.len() < self.limit {
            named.insert(url.to_string());
            return url;
        }
        OTHER
    }
}
