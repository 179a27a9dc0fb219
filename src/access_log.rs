//! Access log and error log: PlanB's line formats, written by a background thread so that a slow disk never
//! blocks a request (PlanB spec §9).
//!
//! Records go through a bounded queue of 10,000; when it is full they are dropped and, at most once a minute,
//! PlanB's line `Dropping log messages to due to full channel buffer.` says so. The queue is drained on shutdown.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Local};

use crate::config::AccessLogTarget;

/// Records queued before new ones are dropped (PlanB's buffer size).
const QUEUE: usize = 10_000;

/// One access-log line, kept as data so that formatting happens off the request path.
#[derive(Debug, Clone)]
pub struct AccessEntry {
    pub time: SystemTime,
    pub client_ip: Option<IpAddr>,
    pub method: String,
    /// The decoded path, without the query string.
    pub path: String,
    pub proto: &'static str,
    pub status: u16,
    /// Declared response length; -1 when unknown (chunked).
    pub content_length: i64,
    pub referer: String,
    pub user_agent: String,
    /// `--request-id-header` name, or empty.
    pub request_id_header: String,
    pub request_id: String,
    /// The frontend key; empty when no route was found.
    pub backend_key: String,
    /// The first X-Forwarded-For value as the client sent it.
    pub forwarded_for: String,
    pub total: Duration,
    pub backend: Duration,
}

impl AccessEntry {
    /// The line exactly as PlanB writes it, without the newline.
    pub fn format(&self) -> String {
        let ip = self.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let prefix = if ip.starts_with("::") { "" } else { "::ffff:" };
        let time: DateTime<Local> = self.time.into();
        format!(
            "{prefix}{ip} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" \"{}:{}\" \"{}\" \"{}\" {:.3} {:.3}",
            time.format("%d/%b/%Y:%H:%M:%S %z"),
            self.method,
            self.path,
            self.proto,
            self.status,
            self.content_length,
            self.referer,
            self.user_agent,
            self.request_id_header,
            self.request_id,
            self.backend_key,
            self.forwarded_for,
            self.total.as_secs_f64(),
            self.backend.as_secs_f64(),
        )
    }
}

enum Record {
    Access(Box<AccessEntry>),
    Text(String),
    /// Written out everything before this, then stop: other clones of the [`Log`] may still exist.
    Close,
}

/// A log fed through a bounded queue to a writer thread. Cloning shares the queue.
#[derive(Clone)]
pub struct Log {
    tx: Option<SyncSender<Record>>,
    dropped_notice: Arc<AtomicU64>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Log {
    /// A log that discards everything (`--access-log none`).
    pub fn disabled() -> Log {
        Log {
            tx: None,
            dropped_notice: Arc::new(AtomicU64::new(0)),
            writer: Arc::new(Mutex::new(None)),
        }
    }

    /// Open the access-log target. Fails when the file cannot be opened or syslog cannot be reached.
    pub fn access(target: &AccessLogTarget) -> io::Result<Log> {
        let sink: Box<dyn Write + Send> = match target {
            AccessLogTarget::None => return Ok(Log::disabled()),
            AccessLogTarget::Stdout => Box::new(io::stdout()),
            AccessLogTarget::File(path) => Box::new(
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o660)
                    .open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
            ),
            AccessLogTarget::Syslog => Box::new(Syslog::connect()?),
        };
        Ok(Log::spawn("access-log", sink))
    }

    /// The error log: always standard error.
    pub fn errors() -> Log {
        Log::spawn("error-log", Box::new(io::stderr()))
    }

    fn spawn(name: &str, sink: Box<dyn Write + Send>) -> Log {
        let (tx, rx) = sync_channel(QUEUE);
        let writer = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || write_loop(rx, sink))
            .expect("spawn log writer thread");
        Log {
            tx: Some(tx),
            dropped_notice: Arc::new(AtomicU64::new(0)),
            writer: Arc::new(Mutex::new(Some(writer))),
        }
    }

    /// Queue an access-log record.
    pub fn access_entry(&self, entry: AccessEntry) {
        self.push(Record::Access(Box::new(entry)));
    }

    /// Queue a preformatted line (the error log).
    pub fn line(&self, text: String) {
        self.push(Record::Text(text));
    }

    fn push(&self, record: Record) {
        let Some(tx) = &self.tx else { return };
        if let Err(TrySendError::Full(_)) = tx.try_send(record) {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let last = self.dropped_notice.load(Ordering::Relaxed);
            if now >= last + 60
                && self
                    .dropped_notice
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                eprintln!("Dropping log messages to due to full channel buffer.");
            }
        }
    }

    /// Write out what is queued, stop the writer and wait for it (bounded by `timeout`). Records pushed
    /// afterwards are dropped.
    pub fn close(&self, timeout: Duration) {
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (Some(tx), Some(handle)) = (&self.tx, handle) else {
            return;
        };
        // Bounded even when the sink is stuck (a blocked stdout pipe): the queue may be full.
        let deadline = std::time::Instant::now() + timeout;
        let mut close = Record::Close;
        while let Err(TrySendError::Full(back)) = tx.try_send(close) {
            if std::time::Instant::now() >= deadline {
                return;
            }
            close = back;
            std::thread::sleep(Duration::from_millis(5));
        }
        while !handle.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn write_loop(rx: Receiver<Record>, sink: Box<dyn Write + Send>) {
    let mut out = io::BufWriter::with_capacity(64 * 1024, sink);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(record) = next {
            let line = match record {
                Record::Access(entry) => entry.format(),
                Record::Text(text) => text,
                Record::Close => {
                    let _ = out.flush();
                    return;
                }
            };
            let _ = out.write_all(line.as_bytes());
            let _ = out.write_all(b"\n");
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

/// Local syslog over the `/dev/log` datagram socket: facility LOCAL0, severity INFO, tag `hipache`, one message
/// per line, in the local format of Go's `log/syslog`.
struct Syslog {
    socket: UnixDatagram,
    pending: Vec<u8>,
}

impl Syslog {
    fn connect() -> io::Result<Syslog> {
        let socket = UnixDatagram::unbound()?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no syslog socket");
        for path in ["/dev/log", "/var/run/syslog", "/var/run/log"] {
            match socket.connect(path) {
                Ok(()) => {
                    return Ok(Syslog {
                        socket,
                        pending: Vec::new(),
                    })
                }
                Err(e) => last = e,
            }
        }
        Err(io::Error::new(last.kind(), format!("syslog: {last}")))
    }
}

impl Write for Syslog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let message = format!(
                "<{}>{} hipache[{}]: {}",
                16 * 8 + 6,
                Local::now().format("%b %e %H:%M:%S"),
                std::process::id(),
                String::from_utf8_lossy(&line)
            );
            let _ = self.socket.send(message.as_bytes());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planb_line() {
        let entry = AccessEntry {
            time: SystemTime::now(),
            client_ip: Some("127.0.0.1".parse().unwrap()),
            method: "GET".into(),
            path: "/h".into(),
            proto: "HTTP/1.1",
            status: 200,
            content_length: 212,
            referer: String::new(),
            user_agent: "curl/7.88.1".into(),
            request_id_header: "X-Request-Id".into(),
            request_id: "given-id".into(),
            backend_key: "myapp.com".into(),
            forwarded_for: "1.1.1.1".into(),
            total: Duration::from_micros(1200),
            backend: Duration::from_micros(800),
        };
        let line = entry.format();
        let (head, tail) = line.split_once(" [").unwrap();
        assert_eq!(head, "::ffff:127.0.0.1 - -");
        let (_time, rest) = tail.split_once("] ").unwrap();
        assert_eq!(
            rest,
            "\"GET /h HTTP/1.1\" 200 212 \"\" \"curl/7.88.1\" \"X-Request-Id:given-id\" \"myapp.com\" \"1.1.1.1\" 0.001 0.001"
        );
        let v6 = AccessEntry {
            client_ip: Some("::1".parse().unwrap()),
            ..entry
        };
        assert!(v6.format().starts_with("::1 - - ["));
    }
}
