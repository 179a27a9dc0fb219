//! The circuit breaker's settings from the `--breaker-*` flags (the policy layer applies them; a `breaker:<key>`
//! hash overrides them per frontend).

use std::time::Duration;

/// Which results count as failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct On {
    /// The connection could not be made or broke (refused, reset, no such host, closed mid-request).
    pub connect: bool,
    /// The dial timeout or `--request-timeout` expired.
    pub timeout: bool,
    /// The backend answered 500-599.
    pub status_5xx: bool,
}

impl On {
    pub const ALL: On = On {
        connect: true,
        timeout: true,
        status_5xx: true,
    };

    /// A comma-separated list of `connect`, `timeout`, `5xx`.
    pub fn parse(text: &str) -> Result<On, String> {
        let mut on = On {
            connect: false,
            timeout: false,
            status_5xx: false,
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "connect" => on.connect = true,
                "timeout" => on.timeout = true,
                "5xx" => on.status_5xx = true,
                other => return Err(format!("{other:?} is not one of connect, timeout, 5xx")),
            }
        }
        Ok(on)
    }
}

/// The `--breaker-*` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerDefaults {
    /// Failures within `window` that eject a backend; 0: no breaker unless a frontend has a `breaker:` hash.
    pub failures: u32,
    /// How recent the counted failures must be, so that a few errors spread over a day never eject anything.
    pub window: Duration,
    /// How long an ejected backend is skipped before one probe: long enough for it to recover (or be
    /// restarted), short enough that capacity comes back without an operator.
    pub cooldown: Duration,
    /// Which results count as failures: a backend whose 5xx are meaningful answers can count only
    /// connection errors and timeouts.
    pub on: On,
    /// Most backends of one frontend ejected at once, in percent: a frontend-wide problem (a bad deploy, a
    /// database down) must not empty the rotation, as Envoy's outlier detection caps it.
    pub max_ejection_percent: u8,
}

impl Default for BreakerDefaults {
    fn default() -> Self {
        BreakerDefaults {
            failures: 0,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(30),
            on: On::ALL,
            max_ejection_percent: 50,
        }
    }
}
