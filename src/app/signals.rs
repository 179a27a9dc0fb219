//! What runs beside the proxy from start to end: the signal handlers (SIGUSR1 writes a dump to stdout, SIGHUP
//! reopens the access log for logrotate; SIGTERM and SIGINT, the graceful drain, are the binary's) and the
//! `/metrics` server.

use std::io;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::proxy::Proxy;

/// Start what runs beside the proxy: the signal handlers and, with `--metrics-address`, the `/metrics` server.
pub fn start(proxy: &Arc<Proxy>, metrics_listener: Option<TcpListener>) {
    if let Err(e) = install_signal_handlers(proxy.clone()) {
        tracing::error!("could not install the SIGUSR1/SIGHUP handlers: {e}");
    }
    if let Some(listener) = metrics_listener {
        if let Ok(addr) = listener.local_addr() {
            crate::observe::event_log::planb_line(
                tracing::Level::INFO,
                &format!("Serving metrics on {addr}/metrics..."),
            );
        }
        tokio::spawn(crate::observe::metrics::serve(
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
            tokio::spawn(crate::observe::dump::write(dump_proxy.telemetry.clone()));
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
