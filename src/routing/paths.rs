//! Path-prefix frontends (`frontend:<host>/<path>`, docs/routing.md#path-prefix-frontends): which exist, and
//! which of them a request's path can match.
//!
//! A request goes to the longest existing prefix of its path on segment boundaries, under the first host
//! candidate that has one; the host's own frontend comes after its path frontends. Knowing which path
//! frontends exist is what keeps a host without any exactly as it was (no extra key read per request, and its
//! cache entries keyed by the Host alone): the [`PathIndex`] lists them, filled by a `SCAN` of the read Redis
//! every [`RESCAN_EVERY`] (and at once from keyspace notifications with `--backend-cache-events`), or from the
//! routes table. A path frontend created with `redis-cli` is routed to within that interval; one deleted costs
//! a miss until the next scan, and the request falls back to the next candidate as if it had never existed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

/// How often the read Redis is scanned for `frontend:*/*` keys.
pub const RESCAN_EVERY: Duration = Duration::from_secs(2);

/// Path frontends by the host part of their key (`www.example.com`, `*.example.com`, `*`); each host's paths
/// longest first.
type ByHost = HashMap<Box<str>, Vec<Box<str>>, foldhash::fast::RandomState>;

/// The path frontends known to exist.
#[derive(Default)]
pub struct PathIndex {
    hosts: ArcSwap<ByHost>,
    /// Whether any path frontend exists: until one does, a lookup does not look further.
    any: AtomicBool,
    /// Whether a path frontend's host is a wildcard or the catch-all: only then can a request's fallback
    /// hosts have path frontends when its Host is already in lookup form.
    any_wildcard: AtomicBool,
}

impl PathIndex {
    /// Replace the index with `keys` (frontend keys; those without a `/` are ignored). Returns whether it
    /// changed.
    pub fn replace<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> bool {
        let mut hosts = ByHost::default();
        for key in keys {
            if let Some((host, path)) = split_key(key) {
                hosts.entry(host.into()).or_default().push(path.into());
            }
        }
        for paths in hosts.values_mut() {
            paths.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
            paths.dedup();
        }
        if **self.hosts.load() == hosts {
            return false;
        }
        self.any.store(!hosts.is_empty(), Ordering::Release);
        self.any_wildcard
            .store(hosts.keys().any(|h| h.starts_with('*')), Ordering::Release);
        self.hosts.store(Arc::new(hosts));
        true
    }

    /// Add one key a notification named (it may have been created). Returns whether the index changed.
    pub fn add(&self, key: &str) -> bool {
        let Some((host, path)) = split_key(key) else {
            return false;
        };
        let current = self.hosts.load();
        if current
            .get(host)
            .is_some_and(|paths| paths.iter().any(|p| &**p == path))
        {
            return false;
        }
        let keys: Vec<String> = current
            .iter()
            .flat_map(|(h, paths)| paths.iter().map(move |p| format!("{h}{p}")))
            .chain([key.to_string()])
            .collect();
        self.replace(keys.iter().map(String::as_str))
    }

    /// Whether any path frontend is known.
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Whether the fallback hosts of `host` (its port-stripped and lower-cased forms, wildcards, `*`) can have
    /// path frontends: when not, a lookup need not build them.
    pub fn fallbacks_matter(&self, host: &str) -> bool {
        self.any_wildcard.load(Ordering::Acquire)
            || host.contains(':')
            || host.bytes().any(|b| b.is_ascii_uppercase())
    }

    /// The length of the longest path frontend prefix of exactly `host` that matches `path`.
    pub fn longest(&self, host: &str, path: &str) -> Option<usize> {
        self.hosts
            .load()
            .get(host)?
            .iter()
            .find(|p| matches(p, path))
            .map(|p| p.len())
    }

    /// The keys to try for `hosts` (the Host and its fallback candidates, in order) and request path `path`:
    /// each host's path frontends that match, longest first, then the host itself.
    pub fn candidates<S: AsRef<str>>(&self, hosts: &[S], path: &str) -> Vec<String> {
        let index = self.hosts.load();
        let mut out = Vec::with_capacity(hosts.len() + 1);
        for host in hosts {
            let host = host.as_ref();
            if let Some(paths) = index.get(host) {
                out.extend(
                    paths
                        .iter()
                        .filter(|p| matches(p, path))
                        .map(|p| format!("{host}{p}")),
                );
            }
            out.push(host.to_string());
        }
        out
    }
}

/// A frontend key's host and path parts: `www.example.com/api` → (`www.example.com`, `/api`). `None` for a
/// key without a path (a host never holds a `/`), or with an empty host.
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    let slash = key.find('/')?;
    let (host, path) = key.split_at(slash);
    (!host.is_empty() && path.len() > 1).then_some((host, path))
}

/// Whether a path frontend's `prefix` (`/api`, `/api/v1`, `/api/`) matches request path `path` on a segment
/// boundary: `/api` matches `/api`, `/api/` and `/api/x`, not `/apix`.
pub fn matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
        None => false,
    }
}

/// The path a backend of a path frontend with `strip_prefix` gets: the prefix removed, `/` when nothing is
/// left. `path_and_query` is the request target in origin form.
pub fn strip(prefix: &str, path_and_query: &str) -> String {
    let (path, query) = match path_and_query.find('?') {
        Some(q) => path_and_query.split_at(q),
        None => (path_and_query, ""),
    };
    let prefix = prefix.trim_end_matches('/');
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    let rest = match rest.starts_with('/') {
        true => rest,
        false => "/",
    };
    let mut out = String::with_capacity(rest.len() + query.len() + 1);
    out.push_str(rest);
    out.push_str(query);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_boundaries() {
        assert!(matches("/api", "/api"));
        assert!(matches("/api", "/api/"));
        assert!(matches("/api", "/api/x"));
        assert!(!matches("/api", "/apix"));
        assert!(!matches("/api", "/"));
        assert!(matches("/api/", "/api/x"));
        assert!(!matches("/api/", "/api"));
    }

    #[test]
    fn longest_first_under_each_host() {
        let index = PathIndex::default();
        assert!(!index.any());
        assert!(index.replace([
            "a.com/api",
            "a.com/api/v1",
            "a.com",
            "*.a.com/api",
            "a.com/api/v1/x/y"
        ]));
        assert!(index.any());
        let keys = index.candidates(&["a.com", "*.com"], "/api/v1/z");
        assert_eq!(keys, vec!["a.com/api/v1", "a.com/api", "a.com", "*.com"]);
        assert_eq!(index.longest("a.com", "/api/v1/z"), Some("/api/v1".len()));
        assert_eq!(index.longest("*.com", "/api/v1/z"), None);
        let keys = index.candidates(&["x.a.com", "*.a.com"], "/apix");
        assert_eq!(keys, vec!["x.a.com", "*.a.com"]);
        assert_eq!(index.longest("x.a.com", "/apix"), None);
        assert_eq!(index.longest("*.a.com", "/apix"), None);
        let keys = index.candidates(&["a.com"], "/api/v1/x/y/z");
        assert_eq!(
            keys,
            vec!["a.com/api/v1/x/y", "a.com/api/v1", "a.com/api", "a.com"]
        );
        assert!(!index.replace([
            "a.com/api/v1",
            "a.com/api",
            "*.a.com/api",
            "a.com/api/v1/x/y"
        ]));
        assert!(index.add("b.com/x"));
        assert!(!index.add("b.com/x"));
        assert!(!index.add("b.com"));
    }

    #[test]
    fn stripping() {
        assert_eq!(strip("/api", "/api/x?q=1"), "/x?q=1");
        assert_eq!(strip("/api", "/api"), "/");
        assert_eq!(strip("/api", "/api/"), "/");
        assert_eq!(strip("/api", "/api?q=1"), "/?q=1");
        assert_eq!(strip("/api/", "/api/x"), "/x");
    }
}
