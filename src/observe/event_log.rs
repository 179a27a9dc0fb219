//! The event log on standard error, through `tracing`.
//!
//! Two kinds of lines go there. PlanB's own lines (`Using native engine`, `Listening on ...`, the
//! `ERROR in ...` error log, the dropped-lines notice) are printed exactly as PlanB prints them in text mode,
//! whatever the level, so that scripts reading them keep working. hypache's own events (a reopened access log,
//! a task dump, an accept failure) are `tracing` events filtered by `--log-level` or `RUST_LOG`.
//! With `--log-format json` both kinds become one JSON object per line, PlanB's under the target
//! `hypache::planb`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::Level;
use tracing_subscriber::EnvFilter;

use crate::config::{EventLogConfig, EventLogFormat};

static JSON: AtomicBool = AtomicBool::new(false);

/// Whether the event log is JSON (decided once, at start-up).
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// The filter for `level` (`--log-level`), else `RUST_LOG`, else `info`.
pub fn filter(level: Option<&str>) -> Result<EnvFilter, String> {
    match level {
        Some(level) => EnvFilter::try_new(level).map_err(|e| e.to_string()),
        None => Ok(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))),
    }
}

/// Install the global subscriber writing to standard error. Call once, before anything logs.
pub fn init(config: &EventLogConfig) -> Result<(), String> {
    let filter = filter(config.level.as_deref())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = match config.format {
        EventLogFormat::Text => builder.try_init(),
        EventLogFormat::Json => {
            JSON.store(true, Ordering::Relaxed);
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .try_init()
        }
    };
    installed.map_err(|e| e.to_string())
}

/// One of PlanB's stderr lines: verbatim in text mode, an event of `level` in JSON mode.
pub fn planb_line(level: Level, text: &str) {
    if !is_json() {
        eprintln!("{text}");
        return;
    }
    match level {
        Level::ERROR => tracing::error!(target: "hypache::planb", "{text}"),
        Level::WARN => tracing::warn!(target: "hypache::planb", "{text}"),
        Level::INFO => tracing::info!(target: "hypache::planb", "{text}"),
        Level::DEBUG => tracing::debug!(target: "hypache::planb", "{text}"),
        Level::TRACE => tracing::trace!(target: "hypache::planb", "{text}"),
    }
}
