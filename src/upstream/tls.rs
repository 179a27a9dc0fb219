//! TLS towards `https://` backends: [`backend_client_config`] verifies them against the web roots plus an
//! optional CA bundle (`--backend-ca-file`).
//!
//! The crypto provider is the process default that `main` installs (ring); library users that did not install
//! one get ring as well, so there is only ever one provider.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The crypto provider in use: the one installed for the process, or ring's.
pub fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// The client configuration for `https://` backends: Mozilla's roots (compiled in, so an image without a CA
/// bundle still works) plus the certificates of `ca_file`; ALPN `http/1.1`, which is what hypache speaks.
pub fn backend_client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let named =
            |e: &dyn std::fmt::Display| format!("--backend-ca-file {}: {e}", path.display());
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| named(&e))? {
            let cert = cert.map_err(|e| named(&e))?;
            roots.add(cert).map_err(|e| named(&e))?;
            added += 1;
        }
        if added == 0 {
            return Err(named(&"no CERTIFICATE block found"));
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
