//! Scraping `/metrics` and reading values out of the Prometheus text format.

use super::http::{exchange, Resp};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// `GET path` on the metrics listener.
pub fn fetch(addr: SocketAddr, path: &str) -> Resp {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// A parsed scrape: `name{labels}` (exactly as printed) → value, plus the raw text.
pub struct Scrape {
    pub text: String,
    pub values: BTreeMap<String, f64>,
}

impl Scrape {
    /// The value of a series, e.g. `planb_router_backend_markdead_total` or
    /// `planb_reverseproxy_backends_responses_total{status_code="200"}`; 0 when absent.
    pub fn value(&self, series: &str) -> f64 {
        self.values.get(series).copied().unwrap_or(0.0)
    }

    pub fn has(&self, series: &str) -> bool {
        self.values.contains_key(series)
    }
}

/// Scrape `/metrics`, asserting a 200.
#[track_caller]
pub fn scrape(addr: SocketAddr) -> Scrape {
    let resp = fetch(addr, "/metrics");
    assert_eq!(resp.status, 200, "{}", resp.head_text());
    let text = resp.body_str();
    let values = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect();
    Scrape { text, values }
}
