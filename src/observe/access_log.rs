//! Access log and error log: PlanB's line formats, written by a background thread so that a slow disk never
//! blocks a request (docs/compat/planb.md#logs).
//!
//! Records go through a bounded queue of 10,000; when it is full they are dropped and, at most once a minute,
//! PlanB's line `Dropping log messages to due to full channel buffer.` says so (and the drop counter behind
//! `hypache_log_lines_dropped_total` goes up). The queue is drained on shutdown.
//!
//! The access log can be written as PlanB's line (default), Hipache's line or JSON, and a file target is
//! reopened on SIGHUP ([`Log::reopen`]) so that logrotate can rename it away without losing a line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Local, Utc};

use crate::config::{AccessLogFormat, AccessLogTarget};
use crate::observe::ship::Shipper;

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
    /// The request target as received (path and query, not decoded): Hipache logs this.
    pub url: String,
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
    /// The frontend's identifier (element 0 of its list): Hipache logs this.
    pub identifier: String,
    /// The backend that answered, when the per-backend metrics need it (empty otherwise, and when no backend
    /// answered).
    pub backend_url: String,
    /// The first X-Forwarded-For value as the client sent it.
    pub forwarded_for: String,
    pub total: Duration,
    pub backend: Duration,
}

impl Default for AccessEntry {
    fn default() -> Self {
        AccessEntry {
            time: UNIX_EPOCH,
            client_ip: None,
            method: String::new(),
            path: String::new(),
            url: String::new(),
            proto: "",
            status: 0,
            content_length: 0,
            referer: String::new(),
            user_agent: String::new(),
            request_id_header: String::new(),
            request_id: String::new(),
            backend_key: String::new(),
            identifier: String::new(),
            backend_url: String::new(),
            forwarded_for: String::new(),
            total: Duration::ZERO,
            backend: Duration::ZERO,
        }
    }
}

impl AccessEntry {
    /// The line in `format`, without the newline.
    pub fn format_as(&self, format: AccessLogFormat) -> String {
        match format {
            AccessLogFormat::Planb => self.format(),
            AccessLogFormat::Hipache => self.format_hipache(),
            AccessLogFormat::Json => self.format_json(),
        }
    }

    /// The line exactly as PlanB writes it, without the newline.
    pub fn format(&self) -> String {
        let time: DateTime<Local> = self.time.into();
        format!(
            "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" \"{}:{}\" \"{}\" \"{}\" {:.3} {:.3}",
            self.prefixed_ip(),
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

    /// Hipache's line (docs/compat/hipache.md#access-log):
    /// `<addr> - - [<UTC time>] "<METHOD> <url> <proto>" <status> <bytes> "<referer>" "<ua>" "<identifier>" <total> <backend>`.
    ///
    /// On purpose, unlike Hipache: `<addr>` is the TCP peer (Hipache took the client-spoofable `X-Real-IP`),
    /// and the year is UTC like the rest of the date. `<bytes>` is `content_length`: in the Hipache preset the
    /// bytes the response put on the client socket (status line, headers, body; see `AccessLogRules`), not
    /// Hipache's count cumulated over a keep-alive connection; elsewhere the declared length (0 when unknown).
    pub fn format_hipache(&self) -> String {
        let time: DateTime<Utc> = self.time.into();
        format!(
            "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" \"{}\" {} {}",
            self.prefixed_ip(),
            time.format("%d/%b/%Y:%H:%M:%S +0000"),
            self.method,
            self.url,
            self.proto,
            self.status,
            self.content_length.max(0),
            self.referer,
            self.user_agent,
            self.identifier,
            js_seconds(self.total),
            js_seconds(self.backend),
        )
    }

    /// PlanB's fields as one JSON object. The time is RFC 3339 in the local zone with milliseconds, the IP is
    /// the peer's without PlanB's `::ffff:` prefix, and the durations are seconds with 3 decimals.
    pub fn format_json(&self) -> String {
        let time: DateTime<Local> = self.time.into();
        let ip = self.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let mut out = String::with_capacity(320);
        out.push('{');
        json_field(
            &mut out,
            "time",
            &time.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
        );
        json_field(&mut out, "client_ip", &ip);
        json_field(&mut out, "method", &self.method);
        json_field(&mut out, "path", &self.path);
        json_field(&mut out, "proto", self.proto);
        out.push_str(&format!(
            "\"status\":{},\"content_length\":{},",
            self.status, self.content_length
        ));
        json_field(&mut out, "referer", &self.referer);
        json_field(&mut out, "user_agent", &self.user_agent);
        json_field(&mut out, "request_id_header", &self.request_id_header);
        json_field(&mut out, "request_id", &self.request_id);
        json_field(&mut out, "frontend_key", &self.backend_key);
        json_field(&mut out, "forwarded_for", &self.forwarded_for);
        out.push_str(&format!(
            "\"total_seconds\":{:.3},\"backend_seconds\":{:.3}}}",
            self.total.as_secs_f64(),
            self.backend.as_secs_f64()
        ));
        out
    }

    /// The client IP with PlanB's `::ffff:` prefix unless it starts with `::`.
    fn prefixed_ip(&self) -> String {
        let ip = self.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let prefix = if ip.starts_with("::") { "" } else { "::ffff:" };
        format!("{prefix}{ip}")
    }
}

/// Milliseconds / 1000 printed as a JavaScript number, as Hipache does: `0.011`, `0.01`, `1`, `0`.
fn js_seconds(d: Duration) -> String {
    let ms = d.as_millis();
    let text = format!("{}.{:03}", ms / 1000, ms % 1000);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `"name":"value",` with the value escaped as JSON.
fn json_field(out: &mut String, name: &str, value: &str) {
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
    json_string(out, value);
    out.push(',');
}

/// A JSON string literal.
pub fn json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

enum Record {
    Access(Box<AccessEntry>),
    Text(String),
    /// Reopen the file target (SIGHUP): records before this go to the old file, records after to the new one.
    Reopen,
    /// Written out everything before this, then stop: other clones of the [`Log`] may still exist.
    Close,
}

/// An access-log record waiting for its response's byte count (see [`Log::pending`]).
pub struct PendingEntry {
    entry: AccessEntry,
    log: Log,
}

impl PendingEntry {
    /// Queue the record with `bytes` written on the client socket for its response.
    pub fn write(self: Box<Self>, bytes: u64) {
        let PendingEntry { mut entry, log } = *self;
        entry.content_length = i64::try_from(bytes).unwrap_or(i64::MAX);
        log.access_entry(entry);
    }
}

/// Where a writer thread puts its lines.
enum Sink {
    /// A stream (stdout, stderr, syslog).
    Stream(Box<dyn Write + Send>),
    /// A file, reopened by path on [`Record::Reopen`].
    File(PathBuf, File),
    /// Each line becomes an error event of the event log (the error log with `--log-format json`).
    Events,
    /// Nowhere (`--access-log none` with `--access-log-url`: the lines are only shipped).
    Nowhere,
}

/// A log fed through a bounded queue to a writer thread. Cloning shares the queue.
#[derive(Clone)]
pub struct Log {
    tx: Option<SyncSender<Record>>,
    dropped_notice: Arc<AtomicU64>,
    /// Records dropped because the queue was full.
    dropped: Arc<AtomicU64>,
    /// A reopen that could not be queued (the queue was full): the writer does it after its current batch.
    reopen_pending: Arc<AtomicBool>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// Lines `--access-log-url` could not ship, when it is set.
    shipping_dropped: Option<Arc<AtomicU64>>,
}

impl Log {
    /// A log that discards everything (`--access-log none`).
    pub fn disabled() -> Log {
        Log {
            tx: None,
            dropped_notice: Arc::new(AtomicU64::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
            reopen_pending: Arc::new(AtomicBool::new(false)),
            writer: Arc::new(Mutex::new(None)),
            shipping_dropped: None,
        }
    }

    /// Open the access-log target, and ship every entry as a JSON line too when `shipper` is given
    /// (`--access-log-url`). Fails when the file cannot be opened or syslog cannot be reached.
    pub fn access(
        target: &AccessLogTarget,
        format: AccessLogFormat,
        shipper: Option<Shipper>,
    ) -> io::Result<Log> {
        let sink = match (target, &shipper) {
            (AccessLogTarget::None, None) => return Ok(Log::disabled()),
            (AccessLogTarget::None, Some(_)) => Sink::Nowhere,
            (AccessLogTarget::Stdout, _) => Sink::Stream(Box::new(io::stdout())),
            (AccessLogTarget::File(path), _) => Sink::File(path.clone(), open_file(path)?),
            (AccessLogTarget::Syslog, _) => Sink::Stream(Box::new(Syslog::connect()?)),
        };
        Ok(Log::spawn("access-log", sink, format, shipper))
    }

    /// The error log: always standard error; events of the JSON event log with `--log-format json`.
    pub fn errors() -> Log {
        let sink = if crate::observe::event_log::is_json() {
            Sink::Events
        } else {
            Sink::Stream(Box::new(io::stderr()))
        };
        Log::spawn("error-log", sink, AccessLogFormat::Planb, None)
    }

    fn spawn(name: &str, sink: Sink, format: AccessLogFormat, shipper: Option<Shipper>) -> Log {
        let shipping_dropped = shipper.as_ref().map(Shipper::dropped);
        let (tx, rx) = sync_channel(QUEUE);
        let reopen_pending = Arc::new(AtomicBool::new(false));
        let pending = reopen_pending.clone();
        let writer = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || write_loop(rx, sink, format, pending, shipper))
            .expect("spawn log writer thread");
        Log {
            tx: Some(tx),
            dropped_notice: Arc::new(AtomicU64::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
            reopen_pending,
            writer: Arc::new(Mutex::new(Some(writer))),
            shipping_dropped,
        }
    }

    /// A record to be written once its response has left: Hipache's `<bytes>` is what the response put on the
    /// client socket (status line, headers and body), known only then. `None` without an access log.
    pub fn pending(&self, entry: AccessEntry) -> Option<Box<PendingEntry>> {
        self.enabled().then(|| {
            Box::new(PendingEntry {
                entry,
                log: self.clone(),
            })
        })
    }

    /// Queue an access-log record.
    pub fn access_entry(&self, entry: AccessEntry) {
        if self.enabled() {
            self.push(Record::Access(Box::new(entry)));
        }
    }

    /// Whether records go anywhere (`--access-log none` and a disabled error log: no).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queue a preformatted line (the error log).
    pub fn line(&self, text: String) {
        self.push(Record::Text(text));
    }

    /// Lines `--access-log-url` could not ship so far, when it is set.
    pub fn shipping_dropped(&self) -> Option<Arc<AtomicU64>> {
        self.shipping_dropped.clone()
    }

    /// The number of records dropped so far because the queue was full.
    pub fn dropped(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// Reopen a file target by its path (SIGHUP, after logrotate renamed the file). Every record queued before
    /// this call goes to the old file, every record queued after it to the new one. Other targets ignore it.
    pub fn reopen(&self) {
        let Some(tx) = &self.tx else { return };
        if let Err(TrySendError::Full(_)) = tx.try_send(Record::Reopen) {
            // The writer is busy with a full queue: it reopens when it has written its current batch.
            self.reopen_pending.store(true, Ordering::Release);
        }
    }

    fn push(&self, record: Record) {
        let Some(tx) = &self.tx else { return };
        if let Err(TrySendError::Full(_)) = tx.try_send(record) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
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
                crate::observe::event_log::planb_line(
                    tracing::Level::WARN,
                    "Dropping log messages to due to full channel buffer.",
                );
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

/// Open (or create, mode 0660) a log file for appending, as PlanB does.
fn open_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o660)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// The writer thread's output: a buffer in front of the sink, or the event log.
struct Output {
    buffer: Option<io::BufWriter<Box<dyn Write + Send>>>,
    path: Option<PathBuf>,
    /// Lines go nowhere (only to the shipper, if any).
    discard: bool,
}

impl Output {
    fn new(sink: Sink) -> Output {
        let discard = matches!(sink, Sink::Nowhere);
        let (writer, path): (Option<Box<dyn Write + Send>>, _) = match sink {
            Sink::Stream(w) => (Some(w), None),
            Sink::File(path, file) => (Some(Box::new(file)), Some(path)),
            Sink::Events | Sink::Nowhere => (None, None),
        };
        Output {
            buffer: writer.map(|w| io::BufWriter::with_capacity(64 * 1024, w)),
            path,
            discard,
        }
    }

    fn write_line(&mut self, line: &str) {
        if self.discard {
            return;
        }
        match &mut self.buffer {
            Some(out) => {
                let _ = out.write_all(line.as_bytes());
                let _ = out.write_all(b"\n");
            }
            None => crate::observe::event_log::planb_line(tracing::Level::ERROR, line),
        }
    }

    fn flush(&mut self) {
        if let Some(out) = &mut self.buffer {
            let _ = out.flush();
        }
    }

    /// Flush into the old file, then switch to a fresh one at the same path. On failure the old file is kept.
    fn reopen(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        self.flush();
        match open_file(&path) {
            Ok(file) => {
                self.buffer = Some(io::BufWriter::with_capacity(64 * 1024, Box::new(file)));
                tracing::info!("reopened the access log {}", path.display());
            }
            Err(e) => tracing::error!(
                "could not reopen the access log, still writing to the old file: {e}"
            ),
        }
    }
}

fn write_loop(
    rx: Receiver<Record>,
    sink: Sink,
    format: AccessLogFormat,
    reopen_pending: Arc<AtomicBool>,
    shipper: Option<Shipper>,
) {
    let mut out = Output::new(sink);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(record) = next {
            match record {
                Record::Access(entry) => {
                    out.write_line(&entry.format_as(format));
                    if let Some(shipper) = &shipper {
                        shipper.ship(entry.format_as(AccessLogFormat::Json));
                    }
                }
                Record::Text(text) => out.write_line(&text),
                Record::Reopen => out.reopen(),
                Record::Close => {
                    out.flush();
                    return;
                }
            }
            next = rx.try_recv().ok();
        }
        out.flush();
        if reopen_pending.swap(false, Ordering::AcqRel) {
            out.reopen();
        }
    }
    out.flush();
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

    fn entry() -> AccessEntry {
        AccessEntry {
            // 2014-02-16T00:43:10.000Z, the time of Hipache's verified line.
            time: UNIX_EPOCH + Duration::from_secs(1_392_511_390),
            client_ip: Some("127.0.0.1".parse().unwrap()),
            method: "GET".into(),
            path: "/h x".into(),
            url: "/h%20x?q=1".into(),
            proto: "HTTP/1.1",
            status: 200,
            content_length: 212,
            referer: String::new(),
            user_agent: "curl/7.88.1".into(),
            request_id_header: "X-Request-Id".into(),
            request_id: "given-id".into(),
            backend_key: "myapp.com".into(),
            backend_url: String::new(),
            identifier: "mysite".into(),
            forwarded_for: "1.1.1.1".into(),
            total: Duration::from_micros(11_200),
            backend: Duration::from_micros(9_800),
        }
    }

    fn local(entry: &AccessEntry, format: &str) -> String {
        let time: DateTime<Local> = entry.time.into();
        time.format(format).to_string()
    }

    #[test]
    fn planb_line() {
        let entry = entry();
        assert_eq!(
            entry.format(),
            format!(
                "::ffff:127.0.0.1 - - [{}] \"GET /h x HTTP/1.1\" 200 212 \"\" \"curl/7.88.1\" \"X-Request-Id:given-id\" \"myapp.com\" \"1.1.1.1\" 0.011 0.010",
                local(&entry, "%d/%b/%Y:%H:%M:%S %z")
            )
        );
        let v6 = AccessEntry {
            client_ip: Some("::1".parse().unwrap()),
            ..entry
        };
        assert!(v6.format().starts_with("::1 - - ["));
    }

    #[test]
    fn hipache_line() {
        let entry = AccessEntry {
            client_ip: Some("::1".parse().unwrap()),
            url: "/".into(),
            content_length: 3236,
            user_agent: "curl/7.30.0".into(),
            identifier: "mywebsite".into(),
            total: Duration::from_millis(11),
            backend: Duration::from_millis(9),
            ..entry()
        };
        // Hipache's verified line (docs/compat/hipache.md#access-log), byte for byte.
        assert_eq!(
            entry.format_hipache(),
            "::1 - - [16/Feb/2014:00:43:10 +0000] \"GET / HTTP/1.1\" 200 3236 \"\" \"curl/7.30.0\" \"mywebsite\" 0.011 0.009"
        );
        let chunked = AccessEntry {
            content_length: -1,
            total: Duration::from_millis(1000),
            backend: Duration::from_millis(10),
            ..entry
        };
        assert!(chunked
            .format_hipache()
            .ends_with(" 200 0 \"\" \"curl/7.30.0\" \"mywebsite\" 1 0.01"));
        assert_eq!(js_seconds(Duration::ZERO), "0");
        assert_eq!(js_seconds(Duration::from_millis(10_500)), "10.5");
    }

    #[test]
    fn json_line() {
        let entry = AccessEntry {
            user_agent: "say \"hi\"\\\n".into(),
            ..entry()
        };
        assert_eq!(
            entry.format_json(),
            format!(
                "{{\"time\":\"{}\",\"client_ip\":\"127.0.0.1\",\"method\":\"GET\",\"path\":\"/h x\",\"proto\":\"HTTP/1.1\",\"status\":200,\"content_length\":212,\"referer\":\"\",\"user_agent\":\"say \\\"hi\\\"\\\\\\n\",\"request_id_header\":\"X-Request-Id\",\"request_id\":\"given-id\",\"frontend_key\":\"myapp.com\",\"forwarded_for\":\"1.1.1.1\",\"total_seconds\":0.011,\"backend_seconds\":0.010}}",
                local(&entry, "%Y-%m-%dT%H:%M:%S%.3f%:z")
            )
        );
    }
}
