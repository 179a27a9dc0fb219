//! The gonfork preset's file (docs/nfork.md): a JSON array of inbound endpoints, as gonfork's `nforkd --config`
//! reads it, and the Go duration text its `timeout` and its stats are written in.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::go_duration;

/// gonfork's timeout when an inbound has none (`DefaultInboundTimeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// gonfork's status for an active outbound that failed or timed out.
pub const DEFAULT_TIMEOUT_CODE: u16 = 503;
/// Idle connections kept per outbound when `idleConn` is not set. gonfork fell back to Go's default of 2,
/// which makes every burst above two concurrent requests dial new connections; hypache's own pool size is kept.
pub const DEFAULT_IDLE_CONN: usize = 100;
/// The largest request body copied to the shadows when `maxBody` is not set.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// Copies in flight to one shadow outbound when `shadowLimit` is not set.
pub const DEFAULT_SHADOW_LIMIT: usize = 256;

/// The controller's address when `--nfork-listen` (or nforkd's `--listen`) is not given.
pub const DEFAULT_CONTROLLER_LISTEN: &str = "0.0.0.0:9090";
/// nforkd's `--config` default.
pub const DEFAULT_NFORKD_CONFIG: &str = "nfork.json";

/// One inbound endpoint: a listener whose requests go to every outbound, answered from the active one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The key the REST controller knows the inbound by; gonfork defaults it to `listen`.
    pub name: String,
    /// Where the inbound listens, as written (Go's `:9080` means every interface).
    pub listen: String,
    /// Outbound name → `[scheme://]host:port`. Every outbound gets a copy of each request.
    pub out: BTreeMap<String, String>,
    /// The outbound whose answer goes back to the client; the others are shadows whose answers are dropped.
    pub active: String,
    /// The whole exchange with any outbound, body included (Go's `http.Client.Timeout`), so a stalled
    /// outbound cannot hold a request, or a shadow's copy, forever.
    pub timeout: Duration,
    /// The status the client gets when the active outbound fails or times out, so the failure is visible as
    /// the operator chose (gonfork: 503).
    pub timeout_code: u16,
    /// Idle connections kept per outbound (gonfork's `idleConn`), so each request does not dial anew.
    pub idle_conn: usize,
    /// hypache's extension `maxBody`: the largest body copied to the shadows. The copy is held in memory until
    /// the shadows have it, so it is bounded; a larger request still reaches the active outbound.
    pub max_body: usize,
    /// hypache's extension `shadowLimit`: copies in flight to one shadow. A stalled shadow then costs a
    /// bounded amount of memory and sockets; copies beyond it are dropped and counted, never queued.
    pub shadow_limit: usize,
}

/// The JSON form, with gonfork's field names in gonfork's order; absent fields take their defaults.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct InboundJson {
    #[serde(default)]
    name: String,
    #[serde(default)]
    listen: String,
    #[serde(default)]
    active: String,
    #[serde(default)]
    out: BTreeMap<String, String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default, rename = "timeoutCode")]
    timeout_code: Option<u16>,
    #[serde(default, rename = "idleConn")]
    idle_conn: Option<usize>,
    #[serde(default, rename = "maxBody")]
    max_body: Option<usize>,
    #[serde(default, rename = "shadowLimit")]
    shadow_limit: Option<usize>,
}

impl Inbound {
    /// Parse one inbound from its JSON object and check it (gonfork's `Validate`, plus the outbound
    /// addresses, which gonfork only found bad at the first request).
    pub fn from_json(value: serde_json::Value) -> Result<Inbound, String> {
        let raw: InboundJson = serde_json::from_value(value).map_err(|e| e.to_string())?;
        let timeout = match raw.timeout.as_deref().map(str::trim) {
            // gonfork failed on a missing timeout (an empty string does not parse); hypache takes the default.
            None | Some("") => DEFAULT_TIMEOUT,
            Some(text) => match go_duration::parse(text)
                .map_err(|e| format!("invalid timeout {text:?}: {e}"))?
            {
                Duration::ZERO => DEFAULT_TIMEOUT,
                d => d,
            },
        };
        let timeout_code = match raw.timeout_code {
            None | Some(0) => DEFAULT_TIMEOUT_CODE,
            Some(code) if (100..=999).contains(&code) => code,
            Some(code) => return Err(format!("invalid timeoutCode {code}")),
        };
        let inbound = Inbound {
            name: match raw.name.is_empty() {
                true => raw.listen.clone(),
                false => raw.name,
            },
            listen: raw.listen,
            out: raw.out,
            active: raw.active,
            timeout,
            timeout_code,
            idle_conn: raw
                .idle_conn
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_IDLE_CONN),
            max_body: raw.max_body.unwrap_or(DEFAULT_MAX_BODY),
            shadow_limit: raw
                .shadow_limit
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_SHADOW_LIMIT),
        };
        inbound.validate()?;
        Ok(inbound)
    }

    /// gonfork's invariants, with its wording, and usable outbound addresses.
    pub fn validate(&self) -> Result<(), String> {
        if self.listen.is_empty() {
            return Err("missing listen host".into());
        }
        if self.out.is_empty() {
            return Err(format!("no outbound in '{}'", self.name));
        }
        if self.active.is_empty() {
            return Err(format!("no active outbound in '{}'", self.name));
        }
        if !self.out.contains_key(&self.active) {
            return Err(format!(
                "active outbound '{}' doesn't exist in '{}'",
                self.active, self.name
            ));
        }
        for (name, addr) in &self.out {
            check_address(addr).map_err(|e| {
                format!(
                    "outbound '{name}' of '{}': invalid address {addr:?}: {e}",
                    self.name
                )
            })?;
        }
        Ok(())
    }

    /// The JSON form gonfork's controller lists: the config's fields, `timeout` as a Go duration.
    pub fn to_json(&self) -> InboundJson {
        InboundJson {
            name: self.name.clone(),
            listen: self.listen.clone(),
            active: self.active.clone(),
            out: self.out.clone(),
            timeout: Some(go_duration::format(self.timeout)),
            timeout_code: Some(self.timeout_code),
            idle_conn: Some(self.idle_conn),
            max_body: Some(self.max_body),
            shadow_limit: Some(self.shadow_limit),
        }
    }
}

/// An outbound address as gonfork takes it: `[scheme://]host:port`, http or https, with a host.
pub fn check_address(addr: &str) -> Result<(), String> {
    let rest = match addr.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        Some((scheme, _)) => return Err(format!("unsupported scheme {scheme:?}")),
        None => addr,
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.starts_with(':') {
        return Err("no host".into());
    }
    if authority
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("invalid host".into());
    }
    Ok(())
}

/// The file: a JSON array of inbounds, names unique.
pub fn parse(text: &str) -> Result<Vec<Inbound>, String> {
    let values: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let mut inbounds: Vec<Inbound> = Vec::with_capacity(values.len());
    for (i, value) in values.into_iter().enumerate() {
        let inbound = Inbound::from_json(value).map_err(|e| format!("inbound {i}: {e}"))?;
        if inbounds.iter().any(|other| other.name == inbound.name) {
            return Err(format!(
                "inbound {i}: inbound '{}' already exists",
                inbound.name
            ));
        }
        inbounds.push(inbound);
    }
    Ok(inbounds)
}

/// Read and parse the file; the error names the file and the problem.
pub fn load(path: &Path) -> Result<Vec<Inbound>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("unable to read file '{}': {e}", path.display()))?;
    parse(&text).map_err(|e| format!("unable to parse config '{}': {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inbound_takes_gonforks_defaults() {
        let inbounds =
            parse(r#"[{"listen":":9080","out":{"prod":"localhost:8080"},"active":"prod"}]"#)
                .unwrap();
        let inbound = &inbounds[0];
        assert_eq!(inbound.name, ":9080");
        assert_eq!(inbound.timeout, DEFAULT_TIMEOUT);
        assert_eq!(inbound.timeout_code, 503);
        assert_eq!(inbound.max_body, DEFAULT_MAX_BODY);
        let json = serde_json::to_value(inbound.to_json()).unwrap();
        assert_eq!(json["timeout"], "1s");
        assert_eq!(json["timeoutCode"], 503);
        assert_eq!(Inbound::from_json(json).unwrap(), *inbound);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let cases = [
            (
                r#"[{"out":{"a":"h:1"},"active":"a"}]"#,
                "missing listen host",
            ),
            (
                r#"[{"listen":":1","out":{"a":"h:1"},"active":"b"}]"#,
                "active outbound 'b'",
            ),
            (r#"[{"listen":":1","out":{},"active":"a"}]"#, "no outbound"),
            (
                r#"[{"listen":":1","out":{"a":"h:1"}}]"#,
                "no active outbound",
            ),
            (
                r#"[{"listen":":1","out":{"a":"h:1"},"active":"a",}]"#,
                "invalid JSON",
            ),
            (
                r#"[{"listen":":1","out":{"a":"h:1"},"active":"a","timeout":"1x"}]"#,
                "timeout",
            ),
            (
                r#"[{"listen":":1","out":{"a":"ftp://h:1"},"active":"a"}]"#,
                "invalid address",
            ),
            (
                r#"[{"listen":":1","out":{"a":"h:1"},"active":"a"},{"listen":":1","out":{"a":"h:1"},"active":"a"}]"#,
                "already exists",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
