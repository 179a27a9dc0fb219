//! The admin listener's settings (`--admin-address`, `--admin-token`) and the rule that keeps an open admin
//! API off the network.

use std::net::SocketAddr;

/// The admin API and dashboard. Off unless `--admin-address` is given.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where the admin API and the dashboard listen (`--admin-address`); `None`, the default, opens no admin
    /// listener at all, so the proxy exposes nothing but its routes. Never one of the proxy's listeners: the
    /// admin API must not be reachable through the port the world sends traffic to.
    pub address: Option<SocketAddr>,
    /// `--admin-token` (or `HYPACHE_ADMIN_TOKEN`): every `/api/` request must carry `Authorization: Bearer
    /// <token>`, so that a page on another origin or another user of the machine cannot change routes.
    /// `None` leaves the API open, which [`AdminConfig::new`] allows on a loopback address only.
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    /// The token is never printed (`--dry`, logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "********"))
            .finish()
    }
}

impl AdminConfig {
    /// The admin settings, refusing an address other hosts can reach without a token: the API changes
    /// routes, and an open one on the network would let anyone redirect the fleet's traffic.
    pub fn new(address: Option<SocketAddr>, token: Option<String>) -> Result<AdminConfig, String> {
        let token = token.filter(|t| !t.is_empty());
        if let Some(addr) = address {
            if token.is_none() && !addr.ip().is_loopback() {
                return Err(format!(
                    "--admin-address {addr} is not a loopback address: set --admin-token (or \
                     HYPACHE_ADMIN_TOKEN) so that the admin API is not open to the network"
                ));
            }
        }
        Ok(AdminConfig { address, token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_api_only_on_loopback() {
        let local: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        let v6: SocketAddr = "[::1]:9000".parse().unwrap();
        assert!(AdminConfig::new(Some(local), None).is_ok());
        assert!(AdminConfig::new(Some(v6), None).is_ok());
        let refused = AdminConfig::new(Some(any), Some(String::new())).unwrap_err();
        assert!(refused.contains("--admin-token"), "{refused}");
        assert!(AdminConfig::new(Some(any), Some("t".into())).is_ok());
        assert_eq!(AdminConfig::new(None, None).unwrap().address, None);
    }

    #[test]
    fn the_token_is_not_printed() {
        let config = AdminConfig::new(None, Some("s3cret".into())).unwrap();
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
