//! The admin token: every `/api/` request carries `Authorization: Bearer <token>` when one is configured,
//! compared in constant time, so that neither the answer nor its timing tells how much of a guess was right.
//!
//! Without a token (allowed on a loopback address only), a request whose `Host` is not a loopback name or an
//! IP address is refused: a page on another origin whose name resolves to 127.0.0.1 (DNS rebinding) would
//! otherwise be same-origin with the API from the browser's point of view.

use http::header::{AUTHORIZATION, HOST};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The configured token, kept as its SHA-256: comparing digests hides the token's length too.
pub struct Token([u8; 32]);

impl Token {
    pub fn new(token: &str) -> Token {
        Token(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `given` is the token, in time that does not depend on where they differ.
    fn matches(&self, given: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(given).into();
        self.0.ct_eq(&digest).into()
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer` header, or the wrong token.
    Token,
    /// No token is configured and the `Host` is not a loopback name or an address (DNS rebinding).
    Host,
}

/// Whether a request with `headers` may use the API.
pub fn check(token: Option<&Token>, headers: &HeaderMap) -> Result<(), Denied> {
    let Some(token) = token else {
        return match headers.get(HOST).and_then(|h| h.to_str().ok()) {
            Some(host) if !local_host(host) => Err(Denied::Host),
            _ => Ok(()),
        };
    };
    let given = headers
        .get(AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| strip_bearer(v));
    match given {
        Some(given) if token.matches(given) => Ok(()),
        _ => Err(Denied::Token),
    }
}

/// The credentials of `Bearer <credentials>` (the scheme is case-insensitive).
fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let credentials = value[7..].trim_ascii();
    (!credentials.is_empty()).then_some(credentials)
}

/// `localhost`, or an IP address (v4, or v6 in brackets), with or without a port.
fn local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => {
            return rest
                .split(']')
                .next()
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn bearer_tokens() {
        let token = Token::new("s3cret");
        let ok = headers(&[("authorization", "Bearer s3cret")]);
        assert_eq!(check(Some(&token), &ok), Ok(()));
        let lower = headers(&[("authorization", "bearer s3cret")]);
        assert_eq!(check(Some(&token), &lower), Ok(()));
        for bad in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Basic s3cret",
            "s3cret",
            "Bearer ",
        ] {
            let h = headers(&[("authorization", bad)]);
            assert_eq!(check(Some(&token), &h), Err(Denied::Token), "{bad}");
        }
        assert_eq!(check(Some(&token), &HeaderMap::new()), Err(Denied::Token));
    }

    #[test]
    fn without_a_token_only_local_hosts() {
        for host in [
            "127.0.0.1:9000",
            "localhost:9000",
            "LOCALHOST",
            "[::1]:9000",
            "10.1.2.3",
        ] {
            assert_eq!(check(None, &headers(&[("host", host)])), Ok(()), "{host}");
        }
        for host in ["evil.example:9000", "evil.example", "[nope]:1"] {
            assert_eq!(
                check(None, &headers(&[("host", host)])),
                Err(Denied::Host),
                "{host}"
            );
        }
    }
}
