//! TLS for the tests: a CA and certificates generated at test time (rcgen), real rustls clients, and a TLS
//! HTTP/1.1 test backend.

use super::http::{build_request, parse_message, Resp};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, StreamOwned};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a TLS client waits for the proxy before the test gives up.
pub const TLS_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate and its key, as PEM (what goes into Redis or files) and the certificate's DER (to compare with
/// what a server presented).
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Leaf {
    /// A self-signed certificate for `names` (DNS names or IP literals).
    pub fn self_signed(names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let chain = vec![CertificateDer::from(self.der.clone())];
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
    der: Vec<u8>,
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hypache test CA");
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names, `*.` wildcards or IP literals) signed by this CA.
    pub fn issue(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(self.der.clone())).unwrap();
        roots
    }

    /// A client trusting only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder()
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A client with a given provider and protocol versions (for preset tests).
    pub fn client_config_with(
        &self,
        provider: rustls::crypto::CryptoProvider,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// A finished client handshake over a std socket.
pub struct TlsConn {
    pub stream: StreamOwned<ClientConnection, TcpStream>,
}

impl TlsConn {
    /// The DER of the certificate the server presented.
    pub fn served(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().unwrap()[0].to_vec()
    }

    pub fn version(&self) -> rustls::ProtocolVersion {
        self.stream.conn.protocol_version().unwrap()
    }

    pub fn suite(&self) -> rustls::CipherSuite {
        self.stream.conn.negotiated_cipher_suite().unwrap().suite()
    }

    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.stream.conn.alpn_protocol().map(|p| p.to_vec())
    }

    /// Send one HTTP/1.1 GET (`Connection: close` unless `headers` has a `Connection`) and read its response.
    pub fn get(mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.request(host, path, headers)
    }

    /// Send one HTTP/1.1 GET and read its response, keeping the connection (with `Connection: keep-alive` in
    /// `headers`) for the next one.
    pub fn request(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        let bytes = build_request("GET", Some(host), path, headers, b"");
        self.stream.write_all(&bytes).unwrap();
        self.stream.flush().unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            if let Some((msg, used)) = parse_message(&buf, true, false, false) {
                return resp_from(msg, buf[..used].to_vec());
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // rustls reports a peer that closed without close_notify as UnexpectedEof.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
                Err(e) => panic!("reading the response over TLS: {e}; got {buf:?}"),
            }
        }
        let (msg, used) = parse_message(&buf, true, true, false)
            .unwrap_or_else(|| panic!("no complete response: {:?}", String::from_utf8_lossy(&buf)));
        resp_from(msg, buf[..used].to_vec())
    }
}

fn resp_from(msg: super::http::Message, raw: Vec<u8>) -> Resp {
    let [version, status, reason] = msg.start;
    Resp {
        version,
        status: status.parse().unwrap(),
        reason,
        headers: msg.headers,
        body: msg.body,
        trailers: msg.trailers,
        chunked: msg.chunked,
        raw,
    }
}

/// Connect to `addr` and finish a handshake for `sni` (`None`: send no SNI; the name checked is then
/// `no-sni.invalid`). The error is the client's view of the failure.
pub fn tls_connect(
    addr: SocketAddr,
    sni: Option<&str>,
    config: Arc<ClientConfig>,
) -> Result<TlsConn, String> {
    let config = match sni {
        Some(_) => config,
        None => {
            let mut c = (*config).clone();
            c.enable_sni = false;
            Arc::new(c)
        }
    };
    let name = ServerName::try_from(sni.unwrap_or("no-sni.invalid").to_string()).unwrap();
    let mut conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut sock = TcpStream::connect_timeout(&addr, TLS_TIMEOUT).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(TLS_TIMEOUT)).unwrap();
    sock.set_nodelay(true).ok();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    Ok(TlsConn {
        stream: StreamOwned::new(conn, sock),
    })
}

/// The bytes of the ClientHello a rustls client sends for `sni` (for the SNI engine's tests).
pub fn client_hello_bytes(sni: &str) -> Vec<u8> {
    let ca = TestCa::new();
    let mut conn = ClientConnection::new(
        ca.client_config(&[b"http/1.1"]),
        ServerName::try_from(sni.to_string()).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// A TLS HTTP/1.1 backend: answers every request with 200 and `name` as the body, records requests.
pub struct TlsBackend {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<super::backend::Request>>>,
    handshakes: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
}

impl TlsBackend {
    pub fn start(name: &str, leaf: &Leaf) -> TlsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let config = leaf.server_config(&[b"http/1.1"]);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handshakes = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, hs, stopping, name) = (
            requests.clone(),
            handshakes.clone(),
            stop.clone(),
            name.to_string(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (config, reqs, hs, name) =
                    (config.clone(), reqs.clone(), hs.clone(), name.clone());
                std::thread::spawn(move || serve_tls_conn(stream, config, reqs, hs, &name));
            }
        });
        TlsBackend {
            addr,
            requests,
            handshakes,
            stop,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn requests(&self) -> Vec<super::backend::Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Handshakes that completed.
    pub fn handshakes(&self) -> usize {
        *self.handshakes.lock().unwrap()
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve_tls_conn(
    sock: TcpStream,
    config: Arc<ServerConfig>,
    requests: Arc<Mutex<Vec<super::backend::Request>>>,
    handshakes: Arc<Mutex<usize>>,
    name: &str,
) {
    sock.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = StreamOwned::new(conn, sock);
    let mut counted = false;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        if let Some((msg, used)) = parse_message(&buf, false, false, false) {
            buf.drain(..used);
            let [method, target, version] = msg.start;
            let req = super::backend::Request {
                method,
                target,
                version,
                headers: msg.headers,
                body: msg.body,
                trailers: msg.trailers,
                chunked: msg.chunked,
                conn: 0,
            };
            let close = req
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
            requests.lock().unwrap().push(req);
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{name}",
                name.len()
            );
            if tls.write_all(reply.as_bytes()).is_err() || tls.flush().is_err() || close {
                tls.conn.send_close_notify();
                let _ = tls.flush();
                return;
            }
            continue;
        }
        match tls.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if !counted {
                    counted = true;
                    *handshakes.lock().unwrap() += 1;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}
