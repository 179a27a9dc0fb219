//! TLS towards clients (the `https://` backends' side is `upstream::tls`).
//!
//! - Downstream: [`TlsTerminator`] reads a ClientHello, looks its server name up in a [`CertStore`] (Redis,
//!   docs/compat/planb.md#certificates-from-redis, in [`from_redis`]; or a directory, docs/compat/planb.md#certificates-from-a-directory, in [`from_dir`]) *without* blocking a runtime thread,
//!   then finishes the handshake with the chosen certificate. ALPN offers `h2` then `http/1.1`.
//! - Presets: PlanB's `--tls-preset` names mapped onto rustls ([`server_config`]); rustls has no TLS < 1.2, no
//!   CBC or 3DES and no RSA key exchange, so the lists are the AEAD/ECDHE part of PlanB's, in PlanB's order.
//!
//! The crypto provider is the process default that `main` installs (ring); library users that did not install
//! one get ring as well, so there is only ever one provider.

pub mod from_dir;
pub mod from_redis;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, NamedGroup, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::config::TlsPreset;

pub use from_dir::DirectoryCerts;
pub use from_redis::RedisCerts;

pub use crate::upstream::tls::provider;

/// TLS 1.2 suites per preset, in PlanB's server preference order, keeping only what rustls implements.
fn tls12_suites(preset: TlsPreset) -> &'static [CipherSuite] {
    use CipherSuite::*;
    match preset {
        TlsPreset::Modern => &[
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        TlsPreset::Intermediate => &[
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
        TlsPreset::Old => &[
            TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ],
    }
}

/// TLS 1.3 suites (PlanB's Go 1.11 build had no TLS 1.3; a newer Go build negotiates it with Go's own list).
fn tls13_suites(preset: TlsPreset) -> &'static [CipherSuite] {
    use CipherSuite::*;
    match preset {
        TlsPreset::Modern => &[
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS13_AES_128_GCM_SHA256,
        ],
        TlsPreset::Intermediate | TlsPreset::Old => &[
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ],
    }
}

/// PlanB's curves: P-256, P-384, P-521 (which ring lacks), and no X25519.
const GROUPS: [NamedGroup; 3] = [
    NamedGroup::secp256r1,
    NamedGroup::secp384r1,
    NamedGroup::secp521r1,
];

/// The provider restricted to the preset's suites and PlanB's curves, in preference order.
pub fn preset_provider(preset: TlsPreset) -> CryptoProvider {
    let base = provider();
    let wanted = tls13_suites(preset).iter().chain(tls12_suites(preset));
    let cipher_suites = wanted
        .filter_map(|id| {
            base.cipher_suites
                .iter()
                .find(|s| s.suite() == *id)
                .copied()
        })
        .collect();
    let kx_groups = GROUPS
        .iter()
        .filter_map(|id| base.kx_groups.iter().find(|g| g.name() == *id).copied())
        .collect();
    CryptoProvider {
        cipher_suites,
        kx_groups,
        ..(*base).clone()
    }
}

/// What a preset cannot do under rustls, for the start-up warning; `None` for modern, which loses nothing that
/// matters (only its two CBC-SHA256 suites).
pub fn preset_warning(preset: TlsPreset) -> Option<String> {
    let planb_min = match preset {
        TlsPreset::Modern => return None,
        TlsPreset::Intermediate => "TLS 1.0",
        TlsPreset::Old => "SSL 3.0",
    };
    Some(format!(
        "warning: --tls-preset {}: PlanB accepted {planb_min} and CBC/3DES cipher suites; rustls offers only \
         TLS 1.2 and 1.3 with ECDHE AEAD suites, so older clients will fail the handshake",
        preset.name()
    ))
}

/// The listener's base configuration: the preset, ALPN `h2` then `http/1.1`, server cipher order, and no
/// certificate (each handshake gets its own; without one rustls refuses the handshake with an alert).
pub fn server_config(preset: TlsPreset) -> Result<ServerConfig, String> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(preset_provider(preset)))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS preset {}: {e}", preset.name()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NoCertificate));
    // PlanB sets PreferServerCipherSuites.
    config.ignore_client_order = true;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Go issues session tickets by default; resumption then needs no server-side state.
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| format!("TLS session tickets: {e}"))?;
    Ok(config)
}

/// Parse a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1) into a key rustls can sign with,
/// checking that the key belongs to the first certificate.
pub fn parse_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if chain.is_empty() {
        return Err("certificate: no CERTIFICATE block found".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key: {e}"))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => "the key does not belong to the certificate".into(),
        other => format!("key: {other}"),
    })
}

/// One certificate from PEM files: `cert` (a chain, leaf first), then each CA file appended to the chain, and
/// the private key. Errors name the file at fault.
pub fn load_static(
    cert: &Path,
    key: &Path,
    ca: &[std::path::PathBuf],
) -> Result<CertifiedKey, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut chain = read(cert)?;
    for ca in ca {
        chain.push(b'\n');
        chain.extend(read(ca)?);
    }
    let key_pem = read(key)?;
    parse_pair(&chain, &key_pem, &provider())
        .map_err(|e| format!("{} / {}: {e}", cert.display(), key.display()))
}

/// PlanB's wildcard form: everything up to the first dot becomes `*` (`a.b.c` → `*.b.c`); no dot, no change.
pub fn wildcard(name: &str) -> String {
    match name.find('.') {
        Some(dot) => format!("*{}", &name[dot..]),
        None => name.to_string(),
    }
}

/// Where certificates come from, chosen by `--load-certificates-from`.
pub enum CertStore {
    Redis(RedisCerts),
    Directory(Arc<DirectoryCerts>),
    /// The same certificate for every name (Hipache's `https.cert`/`https.key`).
    Static(Arc<CertifiedKey>),
}

impl CertStore {
    /// The certificate for a server name (empty when the client sent no SNI), in the source's order.
    pub async fn resolve(&self, name: &str) -> Result<Arc<CertifiedKey>, CertError> {
        match self {
            CertStore::Redis(redis) => redis.resolve(name).await,
            CertStore::Directory(dir) => dir.resolve(name),
            CertStore::Static(key) => Ok(key.clone()),
        }
    }
}

/// A successful TLS handshake: the stream and whether ALPN chose HTTP/2.
pub struct Terminated<IO> {
    pub stream: TlsStream<IO>,
    pub h2: bool,
}

/// Terminates TLS on the listener: ClientHello, asynchronous certificate lookup, handshake.
pub struct TlsTerminator {
    /// The preset's configuration without a certificate; cloned per handshake with the chosen one.
    base: Arc<ServerConfig>,
    certs: CertStore,
}

impl TlsTerminator {
    pub fn new(preset: TlsPreset, certs: CertStore) -> Result<TlsTerminator, String> {
        Ok(TlsTerminator {
            base: Arc::new(server_config(preset)?),
            certs,
        })
    }

    /// Run the handshake on `io`. The error is the text for Go's `http: TLS handshake error from <peer>: ...`.
    /// The caller bounds the time this may take.
    pub async fn accept<IO>(&self, io: IO) -> Result<Terminated<IO>, String>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let start = LazyConfigAcceptor::new(Acceptor::default(), io)
            .await
            .map_err(|e| e.to_string())?;
        let hello = start.client_hello();
        let name = hello.server_name().unwrap_or_default().to_string();
        // Go ignores an ALPN list it shares nothing with and speaks HTTP/1.1; rustls would refuse the handshake
        // (no_application_protocol), so such a client gets a configuration without ALPN.
        let speaks_ours = hello
            .alpn()
            .map(|mut offered| offered.any(|p| p == b"h2" || p == b"http/1.1"));
        let no_alpn = speaks_ours == Some(false);
        let key = match self.certs.resolve(&name).await {
            Ok(key) => key,
            Err(e) => {
                // The base configuration has no certificate: rustls answers with a fatal alert and gives up.
                let _ = start.into_stream(self.base.clone()).await;
                return Err(e.to_string());
            }
        };
        let mut config = (*self.base).clone();
        config.cert_resolver = Arc::new(Chosen(key));
        if no_alpn {
            config.alpn_protocols.clear();
        }
        let stream = start
            .into_stream(Arc::new(config))
            .await
            .map_err(|e| e.to_string())?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(Terminated { stream, h2 })
    }
}

/// Go's wording for a failed handshake on the listener.
pub fn handshake_error(peer: SocketAddr, error: &str) -> String {
    format!("http: TLS handshake error from {peer}: {error}")
}

/// The certificate picked for one handshake.
#[derive(Debug)]
struct Chosen(Arc<CertifiedKey>);

impl ResolvesServerCert for Chosen {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// No certificate: rustls fails the handshake with an alert.
#[derive(Debug)]
struct NoCertificate;

impl ResolvesServerCert for NoCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

/// Why the TLS listener found no usable certificate for a handshake. The handshake fails with an alert, and the
/// text (PlanB's, including its grammar) goes to the error log; other handshakes are not affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertError {
    /// No source has a certificate for the server name (an empty name when the client sent no SNI).
    NotFound(String),
    /// Redis failed while reading `key`.
    Store { key: String, error: String },
    /// The certificate or key stored under `key` (a Redis key or a file pair) does not parse or does not match.
    Broken { key: String, why: String },
}

impl std::fmt::Display for CertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertError::NotFound(name) => write!(f, "Certificate for {name:?} not is found"),
            CertError::Store { key, error } => write!(f, "reading {key}: {error}"),
            CertError::Broken { key, why } => write!(f, "broken certificate in {key}: {why}"),
        }
    }
}

impl std::error::Error for CertError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_is_one_level() {
        assert_eq!(wildcard("foo.tsuru.io"), "*.tsuru.io");
        assert_eq!(wildcard("a.b.tsuru.io"), "*.b.tsuru.io");
        assert_eq!(wildcard("localhost"), "localhost");
        assert_eq!(wildcard(""), "");
    }

    #[test]
    fn presets_keep_planb_order_and_curves() {
        let modern = preset_provider(TlsPreset::Modern);
        let ids: Vec<CipherSuite> = modern.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(ids.len(), 9);
        assert_eq!(ids[3], CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384);
        let old = preset_provider(TlsPreset::Old);
        assert_eq!(
            old.cipher_suites[3].suite(),
            CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        );
        assert_eq!(old.cipher_suites.len(), 7);
        let groups: Vec<NamedGroup> = modern.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(groups, vec![NamedGroup::secp256r1, NamedGroup::secp384r1]);
        for preset in [TlsPreset::Modern, TlsPreset::Intermediate, TlsPreset::Old] {
            server_config(preset).unwrap();
        }
        assert!(preset_warning(TlsPreset::Modern).is_none());
        assert!(preset_warning(TlsPreset::Old).unwrap().contains("SSL 3.0"));
    }

    #[test]
    fn sec1_and_pkcs1_keys_parse() {
        // Made with openssl (`ecparam -genkey -noout`, `genrsa -traditional`), valid for 100 years.
        let p = provider();
        let sec1 = include_str!("testdata/sec1.key");
        let pkcs1 = include_str!("testdata/pkcs1.key");
        assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let sec1_crt = include_bytes!("testdata/sec1.crt");
        let pkcs1_crt = include_bytes!("testdata/pkcs1.crt");
        parse_pair(sec1_crt, sec1.as_bytes(), &p).unwrap();
        parse_pair(pkcs1_crt, pkcs1.as_bytes(), &p).unwrap();
        // Each key with the other's certificate: a mismatch, not a silently wrong pair.
        let err = parse_pair(sec1_crt, pkcs1.as_bytes(), &p).unwrap_err();
        assert_eq!(err, "the key does not belong to the certificate");
    }

    #[test]
    fn broken_pairs_are_errors() {
        let p = provider();
        assert!(parse_pair(b"", b"", &p).is_err());
        assert!(parse_pair(
            b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
            b"",
            &p
        )
        .is_err());
    }
}
