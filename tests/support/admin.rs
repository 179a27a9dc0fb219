//! The admin listener from outside: its address from the `Serving admin API on <addr>...` line, and JSON
//! requests to it.

use super::http::{build_request, exchange, Resp};
use super::proxy::Proxy;
use std::net::SocketAddr;

/// The admin listener's address (announced before `Listening on`, so there once the proxy has started).
#[track_caller]
pub fn admin_addr(proxy: &Proxy) -> SocketAddr {
    proxy
        .stderr_lines()
        .iter()
        .find_map(|l| {
            let rest = &l[l.find("Serving admin API on ")? + "Serving admin API on ".len()..];
            rest.split("...").next()?.trim().parse().ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "no `Serving admin API on` line; stderr:\n{}",
                proxy.stderr_lines().join("\n")
            )
        })
}

/// A response with its body parsed as JSON (`Null` when it is not JSON).
pub struct Answer {
    pub resp: Resp,
    pub json: serde_json::Value,
}

impl Answer {
    pub fn status(&self) -> u16 {
        self.resp.status
    }

    /// The `error` field of a JSON error body, asserting there is one.
    #[track_caller]
    pub fn error(&self) -> String {
        match self.json.get("error").and_then(|e| e.as_str()) {
            Some(e) => e.to_string(),
            None => panic!("no JSON error field in {}", self.resp.body_str()),
        }
    }
}

/// `method path` on the admin listener, with `Authorization: Bearer <token>` when given, and `body`.
#[track_caller]
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    let host = addr.to_string();
    let resp = exchange(
        addr,
        &build_request(method, Some(&host), path, &headers, body),
    );
    let json = serde_json::from_slice(&resp.body).unwrap_or(serde_json::Value::Null);
    Answer { resp, json }
}

/// `GET path` without a token.
#[track_caller]
pub fn get_json(addr: SocketAddr, path: &str) -> Answer {
    call(addr, "GET", path, None, b"")
}
