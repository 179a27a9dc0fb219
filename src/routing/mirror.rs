//! A frontend's mirror, the `mirror:<frontend key>` hash (docs/mirroring.md#per-frontend-shadows): read in the
//! route's pipeline with the policies, parsed once per lookup. What the shadows are; sending to them is the
//! `mirror` module's.

use std::sync::Arc;
use std::time::Duration;

use crate::store::RawHash;

/// Copies time out after this unless `timeout` says otherwise (gonfork's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bodies up to this many bytes are copied unless `max_body` says otherwise.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// Copies in flight to one shadow at once unless `concurrency` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// What a shadow's answer is compared with the active one on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    Status,
    /// The status, then a hash of the body's first `max_body` bytes and its length.
    Body,
}

/// The parsed `mirror:<key>` hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSpec {
    /// `to:<name>` fields: the shadows by name, in name order.
    pub shadows: Vec<(String, String)>,
    /// `percent`: the share of requests copied (0-100), so a shadow stack smaller than production can take part
    /// of its traffic.
    pub percent: u8,
    /// `timeout`: how long a copy may take in all; a stalled shadow holds its slot no longer.
    pub timeout: Duration,
    /// `max_body`: the largest body copied (the copy is held in memory until the request has been sent); a
    /// larger one skips the shadows.
    pub max_body: usize,
    /// `concurrency`: copies in flight per shadow; past it copies are dropped, never queued behind clients.
    pub concurrency: usize,
    /// `compare`: what mismatches are counted on (none: no comparison).
    pub compare: Option<Compare>,
}

impl MirrorSpec {
    /// Parse `mirror:<key>`: `None` when absent, without a shadow, or unusable (logged with the key).
    pub fn parse(key: &str, raw: RawHash) -> Option<Arc<MirrorSpec>> {
        let fields = match raw {
            RawHash::Absent => return None,
            RawHash::Error(e) => {
                tracing::warn!("malformed mirror:{key}: {e}");
                return None;
            }
            RawHash::Fields(fields) => fields,
        };
        let mut spec = MirrorSpec {
            shadows: Vec::new(),
            percent: 100,
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
            concurrency: DEFAULT_CONCURRENCY,
            compare: None,
        };
        for (field, value) in &fields {
            if let Err(why) = spec.set(field, value.trim()) {
                // A bad field costs only itself; a bad shadow URL only that shadow.
                tracing::warn!("malformed mirror:{key}: field {field:?}: {why}");
            }
        }
        spec.shadows.sort();
        (!spec.shadows.is_empty()).then(|| Arc::new(spec))
    }

    fn set(&mut self, field: &str, value: &str) -> Result<(), String> {
        if let Some(name) = field.strip_prefix("to:") {
            if name.is_empty() {
                return Err("a shadow needs a name after to:".into());
            }
            crate::upstream::Target::parse(value).map_err(|e| format!("{e:?}"))?;
            self.shadows.push((name.to_string(), value.to_string()));
            return Ok(());
        }
        match field {
            "percent" => {
                self.percent = value
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| format!("{value:?} is not a whole number from 0 to 100"))?
            }
            "timeout" => {
                self.timeout = crate::config::flags::parse_go_duration(value)?;
            }
            "max_body" => {
                self.max_body = value
                    .parse()
                    .map_err(|_| format!("{value:?} is not a number of bytes"))?
            }
            "concurrency" => {
                self.concurrency = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{value:?} is not a positive number"))?
            }
            "compare" => {
                self.compare = match value {
                    "status" => Some(Compare::Status),
                    "body" => Some(Compare::Body),
                    "" | "none" => None,
                    _ => return Err(format!("{value:?} is not status or body")),
                }
            }
            _ => return Err("unknown field".into()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pairs: &[(&str, &str)]) -> RawHash {
        RawHash::from_pairs(pairs)
    }

    #[test]
    fn fields_and_defaults() {
        let spec = MirrorSpec::parse(
            "a.com",
            hash(&[
                ("to:staging", "http://10.0.0.9:80"),
                ("percent", "10"),
                ("compare", "body"),
                ("to:canary", "10.0.0.8:80"),
            ]),
        )
        .unwrap();
        assert_eq!(spec.shadows[0].0, "canary");
        assert_eq!(spec.percent, 10);
        assert_eq!(spec.timeout, DEFAULT_TIMEOUT);
        assert_eq!(spec.max_body, DEFAULT_MAX_BODY);
        assert_eq!(spec.compare, Some(Compare::Body));
    }

    #[test]
    fn bad_fields_cost_only_themselves() {
        let spec = MirrorSpec::parse(
            "a.com",
            hash(&[
                ("to:ok", "http://10.0.0.9:80"),
                ("to:bad", "ftp://x"),
                ("percent", "150"),
                ("timeout", "soon"),
            ]),
        )
        .unwrap();
        assert_eq!(spec.shadows.len(), 1);
        assert_eq!(spec.percent, 100);
        assert!(MirrorSpec::parse("a.com", hash(&[("percent", "10")])).is_none());
        assert!(MirrorSpec::parse("a.com", RawHash::Absent).is_none());
    }
}
