//! Runtime helpers with no knowledge of HTTP or routing: worker threads, the drain tracker, the clock, the
//! tunnel copy, dropping privileges, and the start-up error both composition roots (`app`, `nfork`) return.

pub mod clock;
pub mod privileges;
pub mod tracker;
pub mod tunnel;
pub mod workers;

/// A start-up failure (Redis unreachable, a port taken, a certificate unreadable): the process exits 1 with
/// this message, as PlanB does. Shared by the proxy (`app`) and the gonfork preset (`nfork`).
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}
