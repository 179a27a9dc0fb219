//! The SIGUSR1 dump (PlanB wrote a goroutine dump to stdout on SIGUSR1): runtime figures, open connections
//! and tunnels, the in-flight requests, and a tokio task dump, written to standard output while the proxy keeps
//! serving.
//!
//! The cheap parts are always there: runtime figures with one line per worker thread (busy time, parks, polls,
//! queue depth: a worker whose figures stop moving is blocked), connections, tunnels and the in-flight requests.
//!
//! The tokio task dump is opt-in (`--task-dump`). It needs a build with `--features task-dump` (tokio's
//! `taskdump`, which traces every poll of every task: about 3% of the instructions of a proxied request, so it
//! is not in the default build) and `--cfg tokio_unstable` on Linux (`.cargo/config.toml`). It is unstable in
//! tokio: on the multi-thread runtime a dump can leave the workers asleep and stall every request (tokio-rs/tokio#7478; seen here in about
//! one run in ten of the dump test under load, requests hung for more than 15 s). A SIGUSR1 must never do that
//! to a proxy in production, so by default the dump shows the runtime figures instead. With `--task-dump` the
//! task dump is bounded by [`TASK_DUMP_TIMEOUT`] (a stalled runtime cannot honour it, which is the risk), and
//! symbols are resolved on a blocking thread.
//!
//! One dump at a time is taken. Writing to stdout happens off the runtime, so a stuck stdout pipe never stalls a
//! request.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::telemetry::Telemetry;

/// The longest the task dump may take before the dump goes out without it.
pub const TASK_DUMP_TIMEOUT: Duration = Duration::from_millis(500);

/// In-flight requests listed at most; the rest are counted.
const MAX_LISTED: usize = 1000;

/// Tasks traced in full at most; tasks with the same trace are listed once with their count.
#[cfg(all(tokio_unstable, target_os = "linux", feature = "task-dump"))]
const MAX_TRACES: usize = 200;

static BUSY: AtomicBool = AtomicBool::new(false);

/// Write one dump to standard output, unless one is being written already. Returns how long it took.
pub async fn write(telemetry: Telemetry) -> Option<Duration> {
    if BUSY.swap(true, Ordering::AcqRel) {
        tracing::warn!("SIGUSR1: a dump is being written already");
        return None;
    }
    let started = Instant::now();
    let mut text = String::with_capacity(16 * 1024);
    let _ = writeln!(
        text,
        "=== hypache dump: pid {}, {} ===",
        std::process::id(),
        chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
    );
    text.push_str(&summary(&telemetry));
    if telemetry.task_dump {
        text.push_str(&task_dump(telemetry.runtimes.clone()).await);
    } else {
        text.push_str(
            "task dump: off (tokio's task dump can stall the runtime, tokio-rs/tokio#7478; --task-dump turns it on)\n",
        );
    }
    let took = started.elapsed();
    let _ = writeln!(
        text,
        "=== end of hypache dump ({:.1} ms) ===",
        took.as_secs_f64() * 1000.0
    );
    let written = tokio::task::spawn_blocking(move || {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes()).and_then(|()| out.flush())
    })
    .await;
    BUSY.store(false, Ordering::Release);
    match written {
        Ok(Ok(())) => tracing::info!("SIGUSR1: dump written to stdout in {took:?}"),
        Ok(Err(e)) => tracing::error!("SIGUSR1: could not write the dump to stdout: {e}"),
        Err(e) => tracing::error!("SIGUSR1: the dump writer failed: {e}"),
    }
    Some(took)
}

/// Runtime figures, connections and in-flight requests: cheap, no lock held while formatting.
fn summary(telemetry: &Telemetry) -> String {
    let mut text = String::new();
    let runtimes = &telemetry.runtimes;
    let all: Vec<_> = runtimes.iter().map(|r| r.metrics()).collect();
    let _ = write!(
        text,
        "runtime: {} workers, {} alive tasks, {} tasks in the global queue",
        all.len().saturating_sub(1),
        all.iter().map(|m| m.num_alive_tasks()).sum::<usize>(),
        all.iter().map(|m| m.global_queue_depth()).sum::<usize>(),
    );
    #[cfg(tokio_unstable)]
    let _ = write!(
        text,
        ", {} blocking threads ({} idle), {} tasks spawned since start",
        all.iter().map(|m| m.num_blocking_threads()).sum::<usize>(),
        all.iter()
            .map(|m| m.num_idle_blocking_threads())
            .sum::<usize>(),
        all.iter().map(|m| m.spawned_tasks_count()).sum::<u64>(),
    );
    text.push('\n');
    // One line per thread: the control runtime (accepting, signals, health checks), then each worker.
    for (i, runtime) in all.iter().enumerate() {
        for thread in 0..runtime.num_workers() {
            let name = match i {
                0 => "control".to_string(),
                n => format!("worker {n}"),
            };
            let _ = write!(
                text,
                "  {name}: {} alive tasks, busy {:.3}s in total, parked {} times",
                runtime.num_alive_tasks(),
                runtime.worker_total_busy_duration(thread).as_secs_f64(),
                runtime.worker_park_count(thread),
            );
            #[cfg(tokio_unstable)]
            let _ = write!(
                text,
                ", {} polls, {} tasks in its local queue",
                runtime.worker_poll_count(thread),
                runtime.worker_local_queue_depth(thread),
            );
            text.push('\n');
        }
    }
    let metrics = &telemetry.metrics;
    let _ = writeln!(
        text,
        "connections: {} open, {} WebSocket tunnels",
        metrics.connections_open(),
        telemetry.tunnels.count()
    );
    let now = Instant::now();
    let (entries, total) = telemetry.inflight.snapshot(MAX_LISTED);
    let _ = writeln!(text, "in-flight requests: {total}");
    for entry in &entries {
        text.push_str(&entry.describe(now));
        text.push('\n');
    }
    if total > entries.len() {
        let _ = writeln!(text, "  ... and {} more", total - entries.len());
    }
    text
}

#[cfg(all(tokio_unstable, target_os = "linux", feature = "task-dump"))]
async fn task_dump(runtimes: Vec<tokio::runtime::Handle>) -> String {
    let started = Instant::now();
    // A current-thread runtime can only be dumped from inside itself: ask each for its own dump.
    let mut dumps = Vec::with_capacity(runtimes.len());
    for runtime in &runtimes {
        let own = runtime.spawn(async { tokio::runtime::Handle::current().dump().await });
        match tokio::time::timeout(TASK_DUMP_TIMEOUT, own).await {
            Ok(Ok(dump)) => dumps.push(dump),
            _ => {
                return format!(
                    "task dump: none, it took longer than {TASK_DUMP_TIMEOUT:?} (a worker thread may be blocked)\n"
                )
            }
        }
    }
    let traced = started.elapsed();
    // Resolving symbols reads debug info: off the runtime's workers.
    let formatted = tokio::task::spawn_blocking(move || {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        let mut index = std::collections::HashMap::new();
        let tasks = || dumps.iter().flat_map(|d| d.tasks().iter());
        let count = tasks().count();
        for task in tasks() {
            let trace = task.trace().to_string();
            let id = task.id().to_string();
            match index.get(&trace) {
                Some(&i) => {
                    let group: &mut (String, Vec<String>) = &mut groups[i];
                    group.1.push(id);
                }
                None => {
                    index.insert(trace.clone(), groups.len());
                    groups.push((trace, vec![id]));
                }
            }
        }
        groups.sort_by_key(|g| std::cmp::Reverse(g.1.len()));
        let mut text = format!(
            "task dump: {count} tasks, {} distinct traces (traced in {:.1} ms)\n",
            groups.len(),
            traced.as_secs_f64() * 1000.0
        );
        for (trace, ids) in groups.iter().take(MAX_TRACES) {
            let shown: Vec<&str> = ids.iter().take(20).map(String::as_str).collect();
            let more = if ids.len() > shown.len() { ", ..." } else { "" };
            let _ = writeln!(
                text,
                "{} task(s) [id {}{more}]:\n{}\n",
                ids.len(),
                shown.join(", "),
                trace.trim_end()
            );
        }
        if groups.len() > MAX_TRACES {
            let _ = writeln!(text, "... and {} more traces", groups.len() - MAX_TRACES);
        }
        text
    })
    .await;
    formatted.unwrap_or_else(|e| format!("task dump: formatting failed: {e}\n"))
}

#[cfg(not(all(tokio_unstable, target_os = "linux", feature = "task-dump")))]
async fn task_dump(_runtimes: Vec<tokio::runtime::Handle>) -> String {
    "task dump: not available in this build (needs Linux, --cfg tokio_unstable and --features task-dump)\n"
        .to_string()
}
