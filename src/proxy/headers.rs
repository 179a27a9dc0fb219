//! Header rewriting on the way to the backend and back (docs/compat/planb.md#request-headers-sent-to-the-backend and docs/compat/planb.md#response-headers).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::upstream::Target;

/// Headers that belong to one connection and never cross the proxy (RFC 9110 §7.6.1 and Go's list).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub const X_FORWARDED_PROTOCOL: HeaderName = HeaderName::from_static("x-forwarded-protocol");
pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_HOST: HeaderName = HeaderName::from_static("x-host");
pub const X_DEBUG_ROUTER: HeaderName = HeaderName::from_static("x-debug-router");
pub const X_DEBUG_BACKEND_URL: HeaderName = HeaderName::from_static("x-debug-backend-url");
pub const X_DEBUG_BACKEND_ID: HeaderName = HeaderName::from_static("x-debug-backend-id");
pub const X_DEBUG_FRONTEND_KEY: HeaderName = HeaderName::from_static("x-debug-frontend-key");
/// PlanB's internal scratch header; a client-sent one is dropped.
const PLANB_X_FORWARDED_FOR: HeaderName = HeaderName::from_static("planb-x-forwarded-for");

/// Remove hop-by-hop headers and those named in `Connection`.
///
/// On requests, `TE: trailers` is kept (Go ≥ 1.11 does) and `Trailer` goes; on responses `Trailer` stays so the
/// client learns which trailers follow, as Go's ReverseProxy re-announces them.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, request: bool) {
    // One pass over the names says which are there (most messages carry none, or only `Connection`), so that
    // only those are looked up and removed: a hashed lookup per listed name was about 2% of a request.
    let mut present = 0u32;
    let (mut te, mut trailer) = (false, false);
    for name in headers.keys() {
        // By the name's text, which a string match sorts by length first: comparing each name with each of
        // `HOP_BY_HOP` was a thousand instructions for a response of five headers.
        match name.as_str() {
            "te" => te = true,
            "trailer" => trailer = true,
            other => {
                if let Some(i) = hop_by_hop_index(other) {
                    present |= 1 << i;
                }
            }
        }
    }
    if present == 0 && !te && !trailer {
        return;
    }
    if present & 1 != 0 {
        // HOP_BY_HOP[0] is Connection: the headers it names go too, looked up by the token itself (no
        // HeaderName made for each). `keep-alive`, the most common token, is on the list already.
        let values: Vec<HeaderValue> = headers
            .get_all(header::CONNECTION)
            .iter()
            .cloned()
            .collect();
        let tokens = values
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim);
        for token in tokens {
            if token.eq_ignore_ascii_case("keep-alive")
                || (!request && token.eq_ignore_ascii_case("trailer"))
            {
                continue;
            }
            headers.remove(token);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if request {
        if trailer {
            headers.remove(header::TRAILER);
        }
        if te {
            let keep_te = headers
                .get(header::TE)
                .is_some_and(|v| v.as_bytes() == b"trailers")
                && headers.get_all(header::TE).iter().count() == 1;
            if !keep_te {
                headers.remove(header::TE);
            }
        }
    }
}

/// Where a (lower-case) name is in [`HOP_BY_HOP`].
fn hop_by_hop_index(name: &str) -> Option<usize> {
    Some(match name {
        "connection" => 0,
        "proxy-connection" => 1,
        "keep-alive" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "transfer-encoding" => 5,
        "upgrade" => 6,
        _ => return None,
    })
}

/// Join the client's X-Forwarded-For values with `, ` and append the peer; returns the first value as received
/// (for the access log).
pub fn append_forwarded_for(headers: &mut HeaderMap, peer: Option<IpAddr>) -> String {
    headers.remove(PLANB_X_FORWARDED_FOR);
    let received = headers.get_all(X_FORWARDED_FOR);
    let first = received
        .iter()
        .next()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let Some(peer) = peer else { return first };
    // Sized exactly, so that the value becomes a header without another allocation or copy.
    let len = received.iter().map(|v| v.len() + 2).sum::<usize>() + ip_len(peer);
    let mut joined = Vec::with_capacity(len);
    for value in received.iter() {
        joined.extend_from_slice(value.as_bytes());
        joined.extend_from_slice(b", ");
    }
    push_ip(&mut joined, peer);
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    first
}

/// The length of [`push_ip`]'s text.
fn ip_len(ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(v4) => {
            let digits = |octet: u8| 1 + usize::from(octet >= 10) + usize::from(octet >= 100);
            3 + v4.octets().into_iter().map(digits).sum::<usize>()
        }
        IpAddr::V6(v6) => v6.to_string().len(),
    }
}

/// Append an address as text. IPv4 by hand: `Ipv4Addr`'s `Display` cost more than a thousand instructions,
/// on every request.
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
}

/// Hipache's forwarding headers, each only when the client sent none: `X-Forwarded-For` and `X-Real-IP` (the
/// peer, `::ffff:a.b.c.d` for IPv4), `X-Forwarded-Proto`/`X-Forwarded-Protocol` (`https` on TLS, which Hipache
/// meant but got wrong on modern Node) and `X-Forwarded-Port` (`443`/`80`, as Hipache hard-coded). Returns the
/// first X-Forwarded-For value as received (for the access log).
pub fn set_forwarded_if_absent(headers: &mut HeaderMap, peer: IpAddr, tls: bool) -> String {
    let first = headers
        .get(X_FORWARDED_FOR)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let addr = match peer {
        IpAddr::V4(v4) => format!("::ffff:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("::ffff:{v4}"),
            None => v6.to_string(),
        },
    };
    let (proto, port) = if tls {
        ("https", "443")
    } else {
        ("http", "80")
    };
    let mut set = |name: HeaderName, value: &str| {
        if !headers.contains_key(&name) {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        }
    };
    set(X_FORWARDED_FOR, &addr);
    set(X_REAL_IP, &addr);
    set(X_FORWARDED_PROTO, proto);
    set(X_FORWARDED_PROTOCOL, proto);
    set(X_FORWARDED_PORT, port);
    first
}

/// A named backend gets `Host: <its name>` and the original Host in `X-Host`/`X-Forwarded-Host`; an IP-literal
/// backend keeps the original Host (`None` when it is not a valid header value).
pub fn set_host(headers: &mut HeaderMap, target: &Target, original: Option<&HeaderValue>) {
    let original = original.cloned();
    if target.host_is_ip {
        match original {
            Some(host) if !host.is_empty() => {
                headers.insert(header::HOST, host);
            }
            _ => {}
        }
        return;
    }
    if let Ok(name) = HeaderValue::from_str(&target.host) {
        headers.insert(header::HOST, name);
    }
    if let Some(original) = original {
        headers.insert(X_HOST, original.clone());
        headers.insert(X_FORWARDED_HOST, original);
    }
}

/// HTTP/2 clients may split `Cookie` into several fields; an HTTP/1.1 backend must get them joined with `; `
/// (RFC 9113 §8.2.3).
pub fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().count() < 2 {
        return;
    }
    let joined = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// Go's `httpguts.ValidHostHeader`: the bytes a Host value may hold.
pub fn valid_host(host: &[u8]) -> bool {
    host.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"!$%&'()*+,-.:;=[]_~".contains(&b) || b >= 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let cases = [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.0.5",
            "99.100.109.110",
            "255.255.255.255",
            "::1",
            "fe80::1",
        ];
        for text in cases {
            let ip: IpAddr = text.parse().unwrap();
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(out.len(), ip_len(ip), "{text}");
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn the_hop_by_hop_index_follows_the_list() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name.as_str()), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop_index("x-connection"), None);
    }

    #[test]
    fn hop_by_hop_request() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("trailer", "x-tr".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        remove_hop_by_hop(&mut h, true);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["te", "x-kept"]);
        let mut h = HeaderMap::new();
        h.insert("te", "gzip".parse().unwrap());
        remove_hop_by_hop(&mut h, true);
        assert!(h.is_empty());
    }

    #[test]
    fn forwarded_for_joins() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, "1.1.1.1".parse().unwrap());
        h.append(X_FORWARDED_FOR, "2.2.2.2".parse().unwrap());
        let first = append_forwarded_for(&mut h, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(first, "1.1.1.1");
        assert_eq!(h[X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 127.0.0.1");
    }

    #[test]
    fn hipache_forwarding_only_when_absent() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, "1.2.3.4".parse().unwrap());
        let first = set_forwarded_if_absent(&mut h, "10.0.0.1".parse().unwrap(), true);
        assert_eq!(first, "1.2.3.4");
        assert_eq!(h[X_FORWARDED_FOR], "1.2.3.4");
        assert_eq!(h[X_REAL_IP], "::ffff:10.0.0.1");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_PROTOCOL], "https");
        assert_eq!(h[X_FORWARDED_PORT], "443");
        let mut h = HeaderMap::new();
        set_forwarded_if_absent(&mut h, "::1".parse().unwrap(), false);
        assert_eq!(h[X_FORWARDED_FOR], "::1");
        assert_eq!(h[X_FORWARDED_PORT], "80");
    }

    #[test]
    fn host_validation() {
        assert!(valid_host(b"a.com:80"));
        assert!(valid_host(b"[::1]:80"));
        assert!(!valid_host(b"a com"));
        assert!(!valid_host(b"a/b"));
        assert!(!valid_host(b"a\x01"));
    }
}
