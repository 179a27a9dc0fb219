//! Backend URLs as PlanB reads them: only the scheme and `host:port` matter.

use std::net::IpAddr;

/// Where a backend URL points. Only scheme and host:port are used; a path in the URL is ignored (docs/compat/planb.md#backend-urls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Host name or IP literal, without brackets.
    pub host: String,
    /// Port, defaulted from the scheme.
    pub port: u16,
    /// IP-literal backends keep the client's Host; named backends get their own name (docs/compat/planb.md#request-headers-sent-to-the-backend).
    pub host_is_ip: bool,
    /// `host:port` (see [`Target::authority`]), and `scheme://host:port`, the pool's key: made once per URL
    /// instead of formatted for every request.
    authority: String,
    pub(super) pool_key: String,
}

/// A backend URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// An empty string in the list: PlanB answers 400 `no such route`.
    Empty,
    /// Anything else (an unknown scheme, no host): 503 and the text goes to the error log.
    Invalid(String),
}

impl Target {
    /// Parse a backend URL as PlanB does: `http://h:p/anything`, `https://h`, or a bare `h:p`.
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        if url.is_empty() {
            return Err(TargetError::Empty);
        }
        if url.contains("://") {
            let parsed = url::Url::parse(url)
                .map_err(|e| TargetError::Invalid(format!("parse {url:?}: {e}")))?;
            let scheme = match parsed.scheme() {
                "http" => "http",
                "https" => "https",
                other => {
                    return Err(TargetError::Invalid(format!(
                        "unsupported protocol scheme {other:?}"
                    )))
                }
            };
            let (host, host_is_ip) = match parsed.host() {
                Some(url::Host::Domain(d)) => (d.to_string(), false),
                Some(url::Host::Ipv4(ip)) => (ip.to_string(), true),
                Some(url::Host::Ipv6(ip)) => (ip.to_string(), true),
                None => return Err(TargetError::Invalid(format!("no host in {url:?}"))),
            };
            let port = parsed.port_or_known_default().unwrap_or(80);
            return Ok(Target::new(scheme, host, port, host_is_ip));
        }
        // No scheme: the whole string is host[:port], spoken to over http.
        let (host, port) = match split_host_port(url) {
            Some(host) => {
                let port = url[url.rfind(':').unwrap_or(0) + 1..].parse::<u16>();
                match port {
                    Ok(port) => (host.to_string(), port),
                    Err(_) if url.ends_with(':') => (host.to_string(), 80),
                    Err(_) => return Err(TargetError::Invalid(format!("invalid port in {url:?}"))),
                }
            }
            None => (url.to_string(), 80),
        };
        let host_is_ip = host.parse::<IpAddr>().is_ok();
        let name_like = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !host_is_ip && !name_like {
            // Binary garbage or a typo: never dialed, so it cannot be mistaken for a dead backend.
            return Err(TargetError::Invalid(format!("invalid host in {url:?}")));
        }
        Ok(Target::new("http", host, port, host_is_ip))
    }

    fn new(scheme: &'static str, host: String, port: u16, host_is_ip: bool) -> Target {
        let authority = match host.contains(':') {
            true => format!("[{host}]:{port}"),
            false => format!("{host}:{port}"),
        };
        Target {
            scheme,
            pool_key: format!("{scheme}://{authority}"),
            authority,
            host,
            port,
            host_is_ip,
        }
    }

    /// `host:port` as Go prints it in dial errors (`[::1]:80` for IPv6).
    pub fn authority(&self) -> &str {
        &self.authority
    }
}

/// Go's `net.SplitHostPort`, keeping only a non-empty host: `a.com:80` → `a.com`, `[::1]:80` → `::1`.
pub fn split_host_port(host: &str) -> Option<&str> {
    let colon = host.rfind(':')?;
    let (name, _port) = (&host[..colon], &host[colon + 1..]);
    let name = if let Some(inner) = name.strip_prefix('[') {
        inner.strip_suffix(']')?
    } else if name.contains(':') || name.contains('[') || name.contains(']') {
        return None;
    } else {
        name
    };
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_url_forms() {
        let t = Target::parse("http://10.0.0.5:80/prefix?x").unwrap();
        assert_eq!(
            (t.scheme, t.host.as_str(), t.port, t.host_is_ip),
            ("http", "10.0.0.5", 80, true)
        );
        let t = Target::parse("http://localhost:8080").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.host_is_ip),
            ("localhost", 8080, false)
        );
        let t = Target::parse("https://app.internal").unwrap();
        assert_eq!((t.scheme, t.port), ("https", 443));
        let t = Target::parse("127.0.0.1:27082").unwrap();
        assert_eq!(
            (t.scheme, t.host.as_str(), t.port),
            ("http", "127.0.0.1", 27082)
        );
        let t = Target::parse("srv1").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.host_is_ip), ("srv1", 80, false));
        let t = Target::parse("http://[::1]:81").unwrap();
        assert_eq!((t.authority(), t.host_is_ip), ("[::1]:81", true));
        assert_eq!(Target::parse(""), Err(TargetError::Empty));
        assert!(matches!(
            Target::parse("\u{1}\u{2}garbage"),
            Err(TargetError::Invalid(_))
        ));
        assert!(matches!(
            Target::parse("a b:80"),
            Err(TargetError::Invalid(_))
        ));
        assert!(matches!(
            Target::parse("ftp://x"),
            Err(TargetError::Invalid(_))
        ));
    }

    #[test]
    fn split_like_go() {
        assert_eq!(split_host_port("a.com:1234"), Some("a.com"));
        assert_eq!(split_host_port("a.com:"), Some("a.com"));
        assert_eq!(split_host_port("[::1]:80"), Some("::1"));
        assert_eq!(split_host_port("a.com"), None);
        assert_eq!(split_host_port("::1"), None);
        assert_eq!(split_host_port(":80"), None);
    }
}
