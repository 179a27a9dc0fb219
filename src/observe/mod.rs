//! What the proxy tells operators: the access and error logs, the event log, Prometheus metrics, the registry of
//! in-flight requests, the SIGUSR1 dump, the last minute of traffic for the admin API (`window`), and the
//! telemetry handle that ties them together.

pub mod access_log;
pub mod dump;
pub mod event_log;
pub mod inflight;
pub mod metrics;
pub mod ship;
pub mod telemetry;
pub mod window;
