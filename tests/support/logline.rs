//! Access-log line checks (docs/compat/planb.md#access-log): the time and the two durations are checked by shape,
//! everything else is compared literally by the tests.

/// A line split into its variable parts.
#[derive(Debug)]
pub struct AccessLine {
    /// Everything before ` - - [`, e.g. `::ffff:127.0.0.1`.
    pub ip: String,
    pub time: String,
    /// Everything between `] ` and the two durations, e.g.
    /// `"GET / HTTP/1.1" 200 2 "" "" ":" "a.com" ""`.
    pub middle: String,
    pub total: f64,
    pub backend: f64,
}

fn is_duration(s: &str) -> bool {
    match s.split_once('.') {
        Some((i, f)) => {
            !i.is_empty()
                && i.bytes().all(|b| b.is_ascii_digit())
                && f.len() == 3
                && f.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Checks `DD/Mon/YYYY:HH:MM:SS ±hhmm`, in the local zone, within two minutes of now.
fn check_time(time: &str, line: &str) {
    let parsed = chrono::DateTime::parse_from_str(time, "%d/%b/%Y:%H:%M:%S %z")
        .unwrap_or_else(|e| panic!("bad time {time:?} ({e}) in access-log line {line:?}"));
    // Same textual shape as the format (zero padding, English month).
    assert_eq!(
        parsed.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
        time,
        "time not in canonical form in {line:?}"
    );
    let now = chrono::Local::now();
    assert_eq!(
        parsed.format("%z").to_string(),
        now.format("%z").to_string(),
        "time zone offset is not the local one in {line:?}"
    );
    let skew = (now.timestamp() - parsed.timestamp()).abs();
    assert!(
        skew <= 120,
        "time {time} is {skew}s away from now in {line:?}"
    );
}

#[track_caller]
pub fn parse_access_line(line: &str) -> AccessLine {
    let (ip, rest) = line
        .split_once(" - - [")
        .unwrap_or_else(|| panic!("no ` - - [` in access-log line {line:?}"));
    let (time, rest) = rest
        .split_once("] ")
        .unwrap_or_else(|| panic!("no `] ` in access-log line {line:?}"));
    check_time(time, line);
    let mut parts = rest.rsplitn(3, ' ');
    let backend = parts.next().unwrap_or("");
    let total = parts.next().unwrap_or("");
    let middle = parts.next().unwrap_or("");
    assert!(
        is_duration(total),
        "bad total duration {total:?} in {line:?}"
    );
    assert!(
        is_duration(backend),
        "bad backend duration {backend:?} in {line:?}"
    );
    AccessLine {
        ip: ip.to_string(),
        time: time.to_string(),
        middle: middle.to_string(),
        total: total.parse().unwrap(),
        backend: backend.parse().unwrap(),
    }
}

/// Asserts a whole line from a 127.0.0.1 client: `::ffff:127.0.0.1 - - [<now>] <middle> <d> <d>`.
#[track_caller]
pub fn assert_access_line(line: &str, middle: &str) -> AccessLine {
    let parsed = parse_access_line(line);
    assert_eq!(parsed.ip, "::ffff:127.0.0.1", "client ip field of {line:?}");
    assert_eq!(parsed.middle, middle, "access-log line {line:?}");
    parsed
}
