//! Series whose values live elsewhere and are read when Prometheus scrapes: counters pulled from atomics, and
//! the policy layer's decisions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use crate::policy::{Feature, GuardReason, PolicyStats};

/// A counter whose values live in atomics owned by someone else (the log writers), one per label value.
pub(super) struct PullingCounter {
    desc: Desc,
    label: &'static str,
    values: Vec<(&'static str, Arc<AtomicU64>)>,
}

impl PullingCounter {
    pub(super) fn new(
        name: &str,
        help: &str,
        label: &'static str,
        values: Vec<(&'static str, Arc<AtomicU64>)>,
    ) -> PullingCounter {
        PullingCounter {
            desc: Desc::new(name.into(), help.into(), vec![label.into()], HashMap::new()).unwrap(),
            label,
            values,
        }
    }
}

impl Collector for PullingCounter {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let values = self
            .values
            .iter()
            .map(|(value, count)| (Some(*value), count.load(Ordering::Relaxed) as f64))
            .collect();
        vec![family(
            &self.desc.fq_name,
            &self.desc.help,
            MetricType::COUNTER,
            Some(self.label),
            values,
        )]
    }
}

/// The policy layer's decisions, read from [`PolicyStats`] when Prometheus scrapes (the request path only bumps
/// atomics). Every labelled series is present from the start, at 0, so a rate over it works before the first
/// rejection.
pub(super) struct PolicyCollector {
    stats: Arc<PolicyStats>,
    ejected: Box<dyn Fn() -> f64 + Send + Sync>,
    descs: Vec<Desc>,
}

/// Name, help, label (if any) of each family [`PolicyCollector`] writes, in the order of its `collect`.
const POLICY_FAMILIES: [(&str, &str, Option<&str>); 8] = [
    (
        "hypache_guard_rejects_total",
        "Requests refused by a guard, by reason (missing_parameters, bad_signature, bad_timestamp, \
         replayed_nonce, misconfigured, body_too_large).",
        Some("reason"),
    ),
    (
        "hypache_rate_limited_total",
        "Requests refused by a rate limit (429, or 403 with compat entree).",
        None,
    ),
    (
        "hypache_ratelimit_errors_total",
        "Global rate-limit checks Redis could not answer; the requests were let through.",
        None,
    ),
    (
        "hypache_breaker_ejections_total",
        "Backends ejected by a circuit breaker (after failures, or after a failed half-open probe).",
        None,
    ),
    (
        "hypache_breaker_probes_total",
        "Half-open probes: requests let through to an ejected backend whose cooldown is over.",
        None,
    ),
    (
        "hypache_breaker_recoveries_total",
        "Ejected backends back in rotation after a successful probe.",
        None,
    ),
    (
        "hypache_breaker_backends_ejected",
        "Backends held out of rotation by circuit breakers right now (open, or half-open awaiting a probe).",
        None,
    ),
    (
        "hypache_policy_config_errors_total",
        "Requests that met a malformed policy hash, by feature (guard, ratelimit, breaker).",
        Some("feature"),
    ),
];

impl PolicyCollector {
    pub(super) fn new(
        stats: Arc<PolicyStats>,
        ejected: Box<dyn Fn() -> f64 + Send + Sync>,
    ) -> Self {
        let descs = POLICY_FAMILIES
            .iter()
            .map(|(name, help, label)| {
                let labels = label.iter().map(|l| l.to_string()).collect();
                Desc::new(name.to_string(), help.to_string(), labels, HashMap::new()).unwrap()
            })
            .collect();
        PolicyCollector {
            stats,
            ejected,
            descs,
        }
    }
}

impl Collector for PolicyCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = &self.stats;
        let guard = GuardReason::ALL
            .iter()
            .map(|r| (Some(r.label()), s.guard_rejects(*r) as f64))
            .collect();
        let config = Feature::ALL
            .iter()
            .map(|f| (Some(f.label()), s.config_errors(*f) as f64))
            .collect();
        let one = |v: u64| vec![(None, v as f64)];
        let values: [Vec<(Option<&str>, f64)>; 8] = [
            guard,
            one(s.rate_limited()),
            one(s.ratelimit_errors()),
            one(s.breaker_ejections()),
            one(s.breaker_probes()),
            one(s.breaker_recoveries()),
            vec![(None, (self.ejected)())],
            config,
        ];
        POLICY_FAMILIES
            .iter()
            .zip(values)
            .map(|((name, help, label), values)| {
                let kind = if name.ends_with("_total") {
                    MetricType::COUNTER
                } else {
                    MetricType::GAUGE
                };
                family(name, help, kind, *label, values)
            })
            .collect()
    }
}

/// One metric family of counters or gauges, one series per value (labelled with `label` when given).
fn family(
    name: &str,
    help: &str,
    kind: MetricType,
    label: Option<&str>,
    values: Vec<(Option<&str>, f64)>,
) -> MetricFamily {
    let metrics = values
        .into_iter()
        .map(|(label_value, value)| {
            let pairs = match (label, label_value) {
                (Some(label), Some(label_value)) => {
                    let mut pair = proto::LabelPair::default();
                    pair.set_name(label.to_string());
                    pair.set_value(label_value.to_string());
                    vec![pair]
                }
                _ => Vec::new(),
            };
            let mut metric = proto::Metric::from_label(pairs);
            if kind == MetricType::COUNTER {
                let mut counter = proto::Counter::default();
                counter.set_value(value);
                metric.set_counter(counter);
            } else {
                let mut gauge = proto::Gauge::default();
                gauge.set_value(value);
                metric.set_gauge(gauge);
            }
            metric
        })
        .collect();
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}
