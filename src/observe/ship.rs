//! `--access-log-url URL`: access-log lines shipped as newline-delimited JSON, POSTed in batches every 2 s with
//! `Content-Type: text/plain` (httprouter's `-logurl`, made for bulk endpoints such as Loggly's).
//!
//! Shipping never holds a request: the log writer hands lines over with a non-blocking send into a bounded
//! queue. A full queue (the URL is slow) or a batch the URL refuses (it is down, or answers non-2xx) costs
//! those lines, counted in `hypache_log_lines_dropped_total{log="shipping"}`; nothing is retried, as in
//! httprouter. When the access log closes (shutdown), what is queued is sent in one last batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How often a batch is sent.
pub const BATCH_EVERY: Duration = Duration::from_secs(2);
/// Lines waiting to be sent at most; more are dropped (and counted).
const QUEUE: usize = 10_000;
/// How long one POST may take, connect included.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// The sending side, held by the access log's writer.
#[derive(Clone)]
pub struct Shipper {
    tx: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
}

impl Shipper {
    /// Start shipping to `url` (checked by `config::log_url`) on the current runtime. The task ends, after a
    /// last batch, once every [`Shipper`] clone is dropped; await the handle (bounded) at shutdown.
    pub fn start(url: &url::Url) -> (Shipper, JoinHandle<()>) {
        let endpoint = url.clone();
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(endpoint, rx, dropped.clone()));
        (Shipper { tx, dropped }, task)
    }

    /// Queue one line (without its newline); never waits.
    pub fn ship(&self, line: String) {
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped so far (queue full, or a batch the URL did not take).
    pub fn dropped(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

async fn run(endpoint: url::Url, mut rx: mpsc::Receiver<String>, dropped: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(BATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some(line) => batch.push(line),
                None => {
                    // Every sender is gone (the access log closed): one last batch.
                    send(&endpoint, std::mem::take(&mut batch), &dropped).await;
                    return;
                }
            },
            _ = tick.tick() => send(&endpoint, std::mem::take(&mut batch), &dropped).await,
        }
    }
}

/// POST `lines`, newline-delimited; on any failure they are counted as dropped.
async fn send(endpoint: &url::Url, lines: Vec<String>, dropped: &AtomicU64) {
    if lines.is_empty() {
        return;
    }
    let count = lines.len() as u64;
    let mut body = lines.join("\n");
    body.push('\n');
    match tokio::time::timeout(POST_TIMEOUT, post(endpoint, body)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            dropped.fetch_add(count, Ordering::Relaxed);
            tracing::warn!("--access-log-url: {count} lines dropped: {e}");
        }
        Err(_) => {
            dropped.fetch_add(count, Ordering::Relaxed);
            tracing::warn!(
                "--access-log-url: {count} lines dropped: no answer within {POST_TIMEOUT:?}"
            );
        }
    }
}

async fn post(endpoint: &url::Url, body: String) -> Result<(), String> {
    let response = crate::upstream::once::send(
        endpoint,
        http::Method::POST,
        &[(header::CONTENT_TYPE, "text/plain")],
        Bytes::from(body),
        POST_TIMEOUT,
    )
    .await?;
    match response.status().is_success() {
        true => Ok(()),
        false => Err(format!("the URL answered {}", response.status())),
    }
}
