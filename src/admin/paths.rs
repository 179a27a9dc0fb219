//! The admin listener's paths. A frontend key may hold `/` (path frontends, `www.example.com/api`) and `*`
//! (wildcards, the catch-all): clients percent-encode it (`www.example.com%2Fapi`, what JavaScript's
//! `encodeURIComponent` gives), and the `/backends/<index>/dead` suffix is read from the right, so a key
//! sent with a bare `/` works too unless it itself ends in `/backends/<n>/dead`.

/// A file of the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    Index,
    Script,
    Style,
    Icon,
}

/// What a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Asset(Asset),
    Healthz,
    Ready,
    /// `/api/v1/frontends`
    Frontends,
    /// `/api/v1/frontends/<key>`
    Frontend(String),
    /// `/api/v1/frontends/<key>/backends/<index>/dead`
    Dead(String, usize),
    /// `/api/v1/stats`
    Stats,
    /// Anything else (under `/api/` it still needs the token first).
    NotFound,
}

impl Endpoint {
    /// Whether the endpoint is part of the API (behind the token).
    pub fn is_api(&self, path: &str) -> bool {
        match self {
            Endpoint::Frontends | Endpoint::Frontend(_) | Endpoint::Dead(..) | Endpoint::Stats => {
                true
            }
            Endpoint::NotFound => path.starts_with("/api/"),
            _ => false,
        }
    }

    /// The methods the endpoint takes, for `405` and `Allow`.
    pub fn allow(&self) -> &'static str {
        match self {
            Endpoint::Frontend(_) => "GET, PUT, DELETE",
            Endpoint::Dead(..) => "POST, DELETE",
            Endpoint::Frontends | Endpoint::Stats => "GET",
            _ => "GET, HEAD",
        }
    }
}

/// The endpoint of a request path (as sent: still percent-encoded).
pub fn parse(path: &str) -> Endpoint {
    match path {
        "/" | "/index.html" => Endpoint::Asset(Asset::Index),
        "/dashboard.js" => Endpoint::Asset(Asset::Script),
        "/dashboard.css" => Endpoint::Asset(Asset::Style),
        "/favicon.svg" | "/favicon.ico" => Endpoint::Asset(Asset::Icon),
        "/healthz" => Endpoint::Healthz,
        "/ready" => Endpoint::Ready,
        "/api/v1/frontends" | "/api/v1/frontends/" => Endpoint::Frontends,
        "/api/v1/stats" => Endpoint::Stats,
        _ => match path.strip_prefix("/api/v1/frontends/") {
            Some(rest) => frontend(rest),
            None => Endpoint::NotFound,
        },
    }
}

/// `<key>` or `<key>/backends/<index>/dead`, the suffix read from the right.
fn frontend(rest: &str) -> Endpoint {
    let parts: Vec<&str> = rest.rsplitn(4, '/').collect();
    if let [dead, index, backends, key] = parts[..] {
        let digits = !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit());
        if dead == "dead" && backends == "backends" && digits {
            return match (decode(key), index.parse()) {
                (Some(key), Ok(index)) => Endpoint::Dead(key, index),
                _ => Endpoint::NotFound,
            };
        }
    }
    match decode(rest) {
        Some(key) => Endpoint::Frontend(key),
        None => Endpoint::NotFound,
    }
}

/// A percent-decoded key; `None` when it is empty or not UTF-8.
fn decode(key: &str) -> Option<String> {
    let key = percent_encoding::percent_decode_str(key)
        .decode_utf8()
        .ok()?
        .into_owned();
    (!key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_decoded_and_the_suffix_read_from_the_right() {
        let f = |p: &str| parse(p);
        assert_eq!(f("/api/v1/frontends"), Endpoint::Frontends);
        assert_eq!(
            f("/api/v1/frontends/a.com"),
            Endpoint::Frontend("a.com".into())
        );
        assert_eq!(
            f("/api/v1/frontends/www.example.com%2Fapi"),
            Endpoint::Frontend("www.example.com/api".into())
        );
        assert_eq!(
            f("/api/v1/frontends/*.a.com"),
            Endpoint::Frontend("*.a.com".into())
        );
        assert_eq!(f("/api/v1/frontends/%2A"), Endpoint::Frontend("*".into()));
        assert_eq!(
            f("/api/v1/frontends/a.com/backends/1/dead"),
            Endpoint::Dead("a.com".into(), 1)
        );
        assert_eq!(
            f("/api/v1/frontends/www.example.com%2Fapi/backends/12/dead"),
            Endpoint::Dead("www.example.com/api".into(), 12)
        );
        // A bare slash in the key still works.
        assert_eq!(
            f("/api/v1/frontends/www.example.com/api/backends/0/dead"),
            Endpoint::Dead("www.example.com/api".into(), 0)
        );
        assert_eq!(
            f("/api/v1/frontends/a.com/backends/x/dead"),
            Endpoint::Frontend("a.com/backends/x/dead".into())
        );
        assert_eq!(f("/api/v1/frontends/%FF"), Endpoint::NotFound);
        assert_eq!(f("/api/v1/nope"), Endpoint::NotFound);
        assert!(f("/api/v1/nope").is_api("/api/v1/nope"));
        assert!(!f("/healthz").is_api("/healthz"));
    }
}
