//! A cheap monotonic clock in milliseconds, for deadlines kept in atomics (connection phases, tunnel and
//! request-body activity).

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// Milliseconds since the process started (monotonic); cheap to keep in an atomic.
pub fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    Instant::now().duration_since(base).as_millis() as u64
}

pub fn instant_at(ms: u64) -> Instant {
    let now = now_ms();
    let now_instant = Instant::now();
    if ms >= now {
        now_instant + Duration::from_millis(ms - now)
    } else {
        now_instant - Duration::from_millis(now - ms)
    }
}
