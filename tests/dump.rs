//! SIGUSR1 (docs/compat/planb.md#signals; hypache's dump: docs/observability.md#the-sigusr1-dump): a dump on stdout while the proxy keeps serving.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const END: &str = "=== end of hypache dump (";

/// The lines of the `n`-th dump (1-based) once it is complete.
#[track_caller]
fn wait_dump(proxy: &Proxy, n: usize) -> Vec<String> {
    eventually(SOON, &format!("dump number {n} on stdout"), || {
        let lines = proxy.stdout_lines();
        let ends: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with(END))
            .map(|(i, _)| i)
            .collect();
        let end = *ends.get(n - 1)?;
        let start = lines[..end]
            .iter()
            .rposition(|l| l.starts_with("=== hypache dump: pid "))?;
        Some(lines[start..=end].to_vec())
    })
}

/// The duration the dump reports for itself, in milliseconds.
fn reported_ms(dump: &[String]) -> f64 {
    let last = dump.last().unwrap();
    last[END.len()..]
        .split(" ms)")
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn sigusr1_under_load_names_the_held_request_and_requests_keep_succeeding() {
    let redis = RedisServer::start();
    let mut proxy = Proxy::start(&redis, &[]);
    let gate = Gate::new();
    let held_gate = gate.clone();
    let held = Backend::start(move |_| Reply::text(200, "held").wait_before_headers(&held_gate));
    let fast = Backend::named("fast");
    redis.set_frontend("held.test", &[&held.url()]);
    redis.set_frontend("fast.test", &[&fast.url()]);

    let addr = proxy.addr();
    let held_request = std::thread::spawn(move || get(addr, "held.test", "/slow/path", &[]));
    assert_eventually(SOON, "the held request at its backend", || held.hits() == 1);

    // Load: two clients sending requests back to back until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (stop, done, failures, slowest) = (
                stop.clone(),
                done.clone(),
                failures.clone(),
                slowest.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let resp = get(addr, "fast.test", "/", &[]);
                    let took = started.elapsed();
                    if resp.status != 200 || resp.body_str() != "fast" {
                        failures.lock().unwrap().push(resp.head_text());
                    }
                    let mut slowest = slowest.lock().unwrap();
                    *slowest = (*slowest).max(took);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    assert_eventually(SOON, "load running", || done.load(Ordering::Relaxed) >= 50);

    let mut took = Vec::new();
    for n in 1..=3 {
        let before = done.load(Ordering::Relaxed);
        let sent = Instant::now();
        proxy.signal("USR1");
        let dump = wait_dump(&proxy, n);
        let seen = sent.elapsed();
        took.push((reported_ms(&dump), seen));
        let text = dump.join("\n");
        // The held request, with its route and backend.
        assert!(
            dump.iter().any(|l| l.contains("GET held.test/slow/path")
                && l.contains("frontend held.test")
                && l.contains(&format!("backend {}", held.url()))
                && l.contains("waiting for the backend")),
            "{text}"
        );
        assert!(
            dump.iter()
                .any(|l| l.starts_with("runtime: ") && l.contains(" workers, ")),
            "{text}"
        );
        assert!(
            dump.iter().any(|l| l.starts_with("connections: ")),
            "{text}"
        );
        assert!(
            dump.iter()
                .any(|l| l.starts_with("  worker 1: ") && l.contains(" busy ")),
            "{text}"
        );
        // The tokio task dump is opt-in: it can stall the runtime (tokio-rs/tokio#7478).
        assert!(
            dump.iter().any(|l| l.starts_with("task dump: off")),
            "{text}"
        );
        // Requests were served while the dump was taken and written.
        assert_eventually(SOON, "requests served after the dump", || {
            done.load(Ordering::Relaxed) > before + 10
        });
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    gate.open();
    let resp = held_request.join().unwrap();
    assert_eq!(resp.body_str(), "held");
    assert!(failures.lock().unwrap().is_empty(), "{failures:?}");
    assert!(proxy.try_exit().is_none(), "the proxy exited");
    eprintln!(
        "dumps under load (reported ms, signal-to-end seen by the test): {took:?}; \
         slowest request during the run: {:?}; requests served: {}",
        slowest.lock().unwrap(),
        done.load(Ordering::Relaxed)
    );
    for (ms, seen) in &took {
        assert!(*ms < 1000.0, "a dump took {ms} ms: {took:?}");
        assert!(
            *seen < Duration::from_secs(1),
            "a dump took {seen:?}: {took:?}"
        );
    }
}

#[test]
fn after_the_dump_the_request_is_gone_from_the_list() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, &[]);
    let backend = Backend::named("B");
    redis.set_frontend("a.test", &[&backend.url()]);
    assert_eq!(get(proxy.addr(), "a.test", "/done", &[]).status, 200);
    proxy.signal("USR1");
    let dump = wait_dump(&proxy, 1);
    assert!(
        dump.iter().any(|l| l == "in-flight requests: 0"),
        "{dump:#?}"
    );
    assert_eq!(get(proxy.addr(), "a.test", "/", &[]).status, 200);
}

#[test]
fn with_task_dump_the_dump_traces_the_tasks() {
    let redis = RedisServer::start();
    let mut proxy = Proxy::start(&redis, &["--task-dump"]);
    let gate = Gate::new();
    let held_gate = gate.clone();
    let held = Backend::start(move |_| Reply::text(200, "held").wait_before_headers(&held_gate));
    redis.set_frontend("held.test", &[&held.url()]);
    let addr = proxy.addr();
    let held_request = std::thread::spawn(move || get(addr, "held.test", "/t", &[]));
    assert_eventually(SOON, "the held request at its backend", || held.hits() == 1);
    proxy.signal("USR1");
    let dump = wait_dump(&proxy, 1);
    let text = dump.join("\n");
    if cfg!(feature = "task-dump") {
        assert!(
            dump.iter()
                .any(|l| l.starts_with("task dump: ") && l.contains(" tasks, ")),
            "{text}"
        );
        // The connection task waiting on its backend shows up in the traces.
        assert!(text.contains("hypache::server::serve_connection"), "{text}");
    } else {
        // The default build leaves tokio's tracing out (.ci/run also tests a build with the feature).
        assert!(
            dump.iter().any(|l| l
                == "task dump: not available in this build (needs Linux, --cfg tokio_unstable and --features task-dump)"),
            "{text}"
        );
    }
    assert!(dump.iter().any(|l| l.contains("GET held.test/t")), "{text}");
    gate.open();
    assert_eq!(held_request.join().unwrap().body_str(), "held");
    assert!(proxy.try_exit().is_none());
}
