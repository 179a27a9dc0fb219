//! [`Telemetry`]: the Prometheus [`Metrics`], the [`Inflight`] registry and the runtime handles, one per
//! process, held by the proxy and read by the dump.

use std::sync::Arc;

use crate::config::Config;
use crate::observe::access_log::Log;
use crate::observe::inflight::Inflight;
use crate::observe::metrics::{Metrics, Sources};
use crate::policy::Policies;
use crate::rt::tracker::Tracker;

/// Metrics, the in-flight registry, the open tunnels and the runtimes. Cloning shares them.
#[derive(Clone)]
pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    pub inflight: Arc<Inflight>,
    /// Open WebSocket tunnels, for the dump.
    pub tunnels: Arc<Tracker>,
    /// `--task-dump`: the dump adds tokio's task dump.
    pub task_dump: bool,
    /// The control runtime, then one runtime per worker thread: for the dump and the runtime gauges.
    pub runtimes: Vec<tokio::runtime::Handle>,
    /// The last minute of traffic per frontend and backend, for the admin API; `None` (nothing recorded, no
    /// cost per request) unless `--admin-address` is set.
    pub window: Option<Arc<crate::observe::window::Window>>,
}

impl Telemetry {
    /// Build the registry; `tunnels`, the logs' drop counters and the policy counters are read when Prometheus
    /// scrapes.
    pub fn new(
        config: &Config,
        tunnels: &Arc<Tracker>,
        access_log: &Log,
        error_log: &Log,
        policies: &Policies,
        mirrors: &crate::mirror::Mirrors,
        runtimes: Vec<tokio::runtime::Handle>,
    ) -> Telemetry {
        let inflight = Arc::new(Inflight::default());
        let sources = Sources {
            tunnels: {
                let tunnels = tunnels.clone();
                Box::new(move || tunnels.count() as f64)
            },
            inflight: {
                let inflight = inflight.clone();
                Box::new(move || inflight.len() as f64)
            },
            dropped_access: access_log.dropped(),
            dropped_error: error_log.dropped(),
            dropped_shipping: access_log.shipping_dropped(),
            runtimes: runtimes.clone(),
            policy: policies.stats().clone(),
            breaker_ejected: {
                let count = policies.ejected_counter();
                Box::new(move || count() as f64)
            },
            mirror: Some(mirrors.metrics.clone()),
        };
        Telemetry {
            metrics: Arc::new(Metrics::new(
                config.metrics.per_frontend,
                config.metrics.per_backend,
                sources,
            )),
            inflight,
            tunnels: tunnels.clone(),
            task_dump: config.task_dump,
            runtimes,
            window: config.admin.address.map(|_| Arc::default()),
        }
    }
}
