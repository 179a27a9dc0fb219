//! A real `etcd` (Debian's etcd-server, 3.4), spawned per test on free ports with a temporary data directory,
//! v2 enabled, killed on drop. Keys are written through its v3 JSON API, as `etcdctl` would.

use super::http::{build_request, exchange, Resp};
use super::wait::wait_until;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct EtcdServer {
    child: Option<Child>,
    client: SocketAddr,
    peer: SocketAddr,
    dir: tempfile::TempDir,
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl EtcdServer {
    pub fn start() -> EtcdServer {
        let mut etcd = EtcdServer {
            child: None,
            client: free_addr(),
            peer: free_addr(),
            dir: tempfile::tempdir().unwrap(),
        };
        etcd.launch();
        etcd
    }

    /// An etcd address where nothing runs yet; [`EtcdServer::launch`] starts it there later.
    pub fn not_started() -> EtcdServer {
        EtcdServer {
            child: None,
            client: free_addr(),
            peer: free_addr(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Start (or start again, with the same data) and wait until it answers.
    pub fn launch(&mut self) {
        let client = format!("http://{}", self.client);
        let peer = format!("http://{}", self.peer);
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &format!("test={peer}"),
                "--enable-v2=true",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (Debian's etcd-server) runs; bash scripts/test.sh installs it");
        self.child = Some(child);
        let ready = wait_until(Duration::from_secs(15), || {
            std::net::TcpStream::connect(self.client).is_ok()
                && self.post("/v3/kv/range", r#"{"key":"AA=="}"#).status == 200
        });
        assert!(ready, "etcd did not answer on {}", self.client);
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    fn post(&self, path: &str, json: &str) -> Resp {
        let req = build_request(
            "POST",
            Some(&self.client.to_string()),
            path,
            &[("Content-Type", "application/json")],
            json.as_bytes(),
        );
        exchange(self.client, &req)
    }

    /// `etcdctl put KEY VALUE` (with a lease when given).
    pub fn put(&self, key: &str, value: &str, lease: Option<&str>) {
        let lease = lease
            .map(|l| format!(r#","lease":"{l}""#))
            .unwrap_or_default();
        let body = format!(
            r#"{{"key":"{}","value":"{}"{lease}}}"#,
            B64.encode(key),
            B64.encode(value)
        );
        let resp = self.post("/v3/kv/put", &body);
        assert_eq!(resp.status, 200, "{}", resp.body_str());
    }

    /// `etcdctl del KEY`.
    pub fn delete(&self, key: &str) {
        let resp = self.post(
            "/v3/kv/deleterange",
            &format!(r#"{{"key":"{}"}}"#, B64.encode(key)),
        );
        assert_eq!(resp.status, 200, "{}", resp.body_str());
    }

    /// The v2 keys API, as httprouter's companion script wrote it: `PUT /v2/keys/<key>` with `value` (and
    /// `ttl`).
    pub fn put_v2(&self, key: &str, value: &str, ttl: Option<u64>) {
        let ttl = ttl.map(|t| format!("&ttl={t}")).unwrap_or_default();
        let body = format!("value={value}{ttl}");
        let req = build_request(
            "PUT",
            Some(&self.client.to_string()),
            &format!("/v2/keys{key}"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        );
        let resp = exchange(self.client, &req);
        assert!(matches!(resp.status, 200 | 201), "{}", resp.body_str());
    }

    /// `DELETE /v2/keys/<key>`.
    pub fn delete_v2(&self, key: &str) {
        let req = build_request(
            "DELETE",
            Some(&self.client.to_string()),
            &format!("/v2/keys{key}"),
            &[],
            b"",
        );
        let resp = exchange(self.client, &req);
        assert_eq!(resp.status, 200, "{}", resp.body_str());
    }

    /// `etcdctl lease grant TTL`: the lease's id.
    pub fn grant(&self, ttl: u64) -> String {
        let resp = self.post("/v3/lease/grant", &format!(r#"{{"TTL":"{ttl}"}}"#));
        assert_eq!(resp.status, 200, "{}", resp.body_str());
        let v: serde_json::Value = serde_json::from_str(&resp.body_str()).unwrap();
        v["ID"].as_str().unwrap().to_string()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}
