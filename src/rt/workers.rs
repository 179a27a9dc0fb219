//! Thread per core: the proxy's connections run on worker threads that each drive their own current-thread
//! tokio runtime.
//!
//! A connection is handed to the worker with the fewest open connections when it is accepted, and everything
//! its requests touch afterwards stays on that thread: the backend connection (each worker has its own
//! keep-alive pool, see [`crate::upstream`]), the read-Redis connection (one per worker, see
//! [`crate::routing::Router`]) and the timers. A request therefore never wakes another thread, which with
//! tokio's work-stealing runtime cost about a tenth of the proxy's CPU in kernel wake-ups and task hand-offs.
//! What is shared between workers (round-robin counters, caches, breakers, logs, metrics) is `Sync`.
//!
//! Everything that is not a connection (accepting, signals, the metrics listener, health checks, certificate
//! reloads) runs on the runtime that called [`crate::Server::bind`], which is "slot 0".

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// The calling thread's slot: `1..=n` on worker `n`, 0 on any other thread. Per-worker resources are indexed
/// by it, with slot 0 holding the ones the control runtime (and anything else) uses.
pub fn slot() -> usize {
    SLOT.with(Cell::get)
}

/// One value per worker slot (index 0 for the control runtime and any other thread), read by the calling
/// thread's slot: a worker's own Redis connection or backend pool.
#[derive(Clone)]
pub struct PerWorker<T>(Box<[T]>);

impl<T> PerWorker<T> {
    /// `values[0]` serves slot 0; `values[n]` worker `n`.
    pub fn new(values: Vec<T>) -> PerWorker<T> {
        assert!(!values.is_empty(), "slot 0 needs a value");
        PerWorker(values.into_boxed_slice())
    }

    /// The calling thread's value; slot 0's on a thread that is not one of these workers.
    pub fn current(&self) -> &T {
        self.0.get(slot()).unwrap_or(&self.0[0])
    }
}

/// The worker threads. Dropping this stops them; connections still open on them are closed.
pub struct Workers {
    workers: Vec<Worker>,
    /// Where the search for the least loaded worker starts, rotated so that ties are spread.
    next: AtomicUsize,
}

struct Worker {
    handle: Handle,
    /// Connections this worker is serving now, to pick the least loaded one.
    open: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
}

impl Workers {
    /// Start `count` workers; 0 means one per CPU.
    pub fn start(count: usize) -> io::Result<Workers> {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut workers = Vec::with_capacity(count);
        for slot in 1..=count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("hypache-worker-{slot}"))
                .spawn(move || {
                    SLOT.with(|s| s.set(slot));
                    // Ends when `Workers` is dropped (the sender goes away).
                    let _ = runtime.block_on(stopped);
                    // Tasks still running (connections past the shutdown timeout) are dropped here.
                    drop(runtime);
                })?;
            workers.push(Worker {
                handle,
                open: Arc::default(),
                stop: Some(stop),
            });
        }
        Ok(Workers {
            workers,
            next: AtomicUsize::new(0),
        })
    }

    /// How many worker threads there are.
    pub fn count(&self) -> usize {
        self.workers.len()
    }

    /// The workers' runtimes, for runtime metrics and task dumps.
    pub fn handles(&self) -> Vec<Handle> {
        self.workers.iter().map(|w| w.handle.clone()).collect()
    }

    /// One value per slot: `control` for slot 0, then `make` run on each worker in turn (so that whatever it
    /// spawns, such as a connection's driver task, lives on that worker's thread).
    pub async fn each<T, E, F, Fut>(&self, control: T, make: F) -> Result<PerWorker<T>, E>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let mut values = vec![control];
        for slot in 1..=self.count() {
            values.push(self.run_on(slot, make()).await?);
        }
        Ok(PerWorker::new(values))
    }

    /// Run `fut` on the worker in `slot` (`1..=count`) and wait for its output.
    pub async fn run_on<F>(&self, slot: usize, fut: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let worker = &self.workers[slot - 1];
        match worker.handle.spawn(fut).await {
            Ok(output) => output,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Serve one connection on the least loaded worker. `serve` is polled on that worker only, so it can
    /// register the socket with the worker's reactor (`TcpStream::from_std`).
    pub fn spawn_connection<F>(&self, serve: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.workers.len();
        let worker = (0..n)
            .map(|i| &self.workers[(start + i) % n])
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
            .expect("at least one worker");
        let open = worker.open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        worker.handle.spawn(async move {
            let _open = OpenGuard(open);
            serve.await;
        });
    }
}

/// Counts a connection as open on its worker until the task ends, even when it is cancelled.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            drop(worker.stop.take());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_go_to_the_least_loaded_worker_and_see_its_slot() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.count(), 2);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            assert_eq!(slot(), 0);
            assert_eq!(workers.run_on(1, async { slot() }).await, 1);
            assert_eq!(workers.run_on(2, async { slot() }).await, 2);
            // Two long connections: each worker gets one.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let (release, released) = tokio::sync::watch::channel(false);
            for _ in 0..2 {
                let (tx, mut released) = (tx.clone(), released.clone());
                workers.spawn_connection(async move {
                    tx.send(slot()).unwrap();
                    let _ = released.wait_for(|r| *r).await;
                });
            }
            let mut slots = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
            slots.sort();
            assert_eq!(slots, vec![1, 2]);
            release.send(true).unwrap();
        });
    }
}
