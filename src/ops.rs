//! Operations: what the proxy exposes to the people running it, wired in with small hooks so the request
//! pipeline stays about requests.
//!
//! - [`Telemetry`]: the Prometheus [`Metrics`] and the [`Inflight`] registry, one per process, in the
//!   [`Proxy`].
//! - [`install_signal_handlers`]: SIGUSR1 writes a dump to stdout ([`crate::dump`]); SIGHUP reopens the
//!   access-log file (logrotate). SIGTERM and SIGINT (graceful drain) are the binary's.

use std::io;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::access_log::Log;
use crate::config::Config;
use crate::inflight::Inflight;
use crate::metrics::{Metrics, Sources};
use crate::policy::Policies;
use crate::proxy::Proxy;
use crate::server::Tracker;

/// Metrics and the in-flight registry.
pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    pub inflight: Arc<Inflight>,
    /// The control runtime, then one runtime per worker thread: for the dump and the runtime gauges.
    pub runtimes: Vec<tokio::runtime::Handle>,
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
            runtimes: runtimes.clone(),
            policy: policies.stats().clone(),
            breaker_ejected: {
                let count = policies.ejected_counter();
                Box::new(move || count() as f64)
            },
        };
        Telemetry {
            metrics: Arc::new(Metrics::new(config.metrics.per_frontend, sources)),
            inflight,
            runtimes,
        }
    }
}

/// Start what runs beside the proxy: the signal handlers and, with `--metrics-address`, the `/metrics` server.
pub fn start(proxy: &Arc<Proxy>, metrics_listener: Option<TcpListener>) {
    if let Err(e) = install_signal_handlers(proxy.clone()) {
        tracing::error!("could not install the SIGUSR1/SIGHUP handlers: {e}");
    }
    if let Some(listener) = metrics_listener {
        if let Ok(addr) = listener.local_addr() {
            crate::event_log::planb_line(
                tracing::Level::INFO,
                &format!("Serving metrics on {addr}/metrics..."),
            );
        }
        tokio::spawn(crate::metrics::serve(
            listener,
            proxy.telemetry.metrics.clone(),
        ));
    }
}

/// SIGUSR1: a dump on stdout. SIGHUP: reopen the access log. Installed before the listener is announced, so a
/// signal sent right after `Listening on` is handled (not the default action, which would end the process).
/// With [`crate::config::SignalPolicy::usr1_reopens_log`] (Hipache), SIGUSR1 reopens the log as well and the
/// dump moves to SIGUSR2.
pub fn install_signal_handlers(proxy: Arc<Proxy>) -> io::Result<()> {
    let usr1_reopens = proxy.config.signals.usr1_reopens_log;
    let dump_signal = match usr1_reopens {
        true => SignalKind::user_defined2(),
        false => SignalKind::user_defined1(),
    };
    let mut dump = signal(dump_signal)?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = match usr1_reopens {
        true => Some(signal(SignalKind::user_defined1())?),
        false => None,
    };
    let dump_proxy = proxy.clone();
    tokio::spawn(async move {
        while dump.recv().await.is_some() {
            tokio::spawn(crate::dump::write(dump_proxy.clone()));
        }
    });
    tokio::spawn(async move {
        loop {
            let usr1_fired = async {
                match &mut usr1 {
                    Some(usr1) => usr1.recv().await,
                    None => std::future::pending().await,
                }
            };
            let which = tokio::select! {
                got = hup.recv() => got.map(|_| "SIGHUP"),
                got = usr1_fired => got.map(|_| "SIGUSR1"),
            };
            let Some(which) = which else { return };
            tracing::info!("{which}: reopening the access log");
            proxy.access_log.reopen();
        }
    });
    Ok(())
}
