//! The `date` header's value, formatted once a second per worker thread (as hyper's server caches it).

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// "Sun, 06 Nov 1994 08:49:37 GMT".len()
const LEN: usize = 29;

struct Cached {
    second: u64,
    value: [u8; LEN],
}

thread_local!(static CACHED: RefCell<Cached> = const {
    RefCell::new(Cached { second: u64::MAX, value: [0; LEN] })
});

/// Append the current date, in the format of RFC 9110's IMF-fixdate.
pub(super) fn extend(dst: &mut Vec<u8>) {
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != cached.second {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == LEN {
                cached.value.copy_from_slice(formatted.as_bytes());
                cached.second = second;
            }
        }
        dst.extend_from_slice(&cached.value);
    });
}
