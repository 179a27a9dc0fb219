//! A real, headless Chromium driven through WebDriver: `chromedriver` spawned on a free port and killed on
//! drop, spoken to over plain HTTP/1.1 with JSON (the few commands the dashboard test needs). Missing
//! `chromium` or `chromedriver` is a test failure that says how to install them, never a silent pass.

use super::http::{build_request, exchange};
use super::wait::{eventually, POLL};
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DRIVER_START: Duration = Duration::from_secs(20);

/// The first of `names` found on the PATH (or `/usr/bin`), as a path.
fn find(names: &[&str]) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    for name in names {
        for dir in path.split(':').chain(["/usr/bin", "/usr/lib/chromium"]) {
            let candidate = std::path::Path::new(dir).join(name);
            if candidate.is_file() {
                return Some(candidate.display().to_string());
            }
        }
    }
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One browser session; the driver and the browser go away on drop.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A headless Chromium with every console message kept (`goog:loggingPrefs`).
    #[track_caller]
    pub fn start(width: u32, height: u32) -> Browser {
        let missing = "install them (Debian: apt-get install chromium chromium-driver; \
                       scripts/test.sh does it when run as root)";
        let chromium = find(&["chromium", "chromium-browser", "google-chrome"])
            .unwrap_or_else(|| panic!("the dashboard test needs Chromium and chromedriver: no chromium found; {missing}"));
        let chromedriver = find(&["chromedriver"]).unwrap_or_else(|| {
            panic!("the dashboard test needs Chromium and chromedriver: no chromedriver found; {missing}")
        });
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {chromedriver}: {e}"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + DRIVER_START;
        loop {
            if let Ok(Some(status)) = browser.driver.try_wait() {
                panic!("chromedriver exited with {status} at start");
            }
            let ready = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .is_ok()
                && browser.request("GET", "/status", None)["value"]["ready"] == json!(true);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer /status within {DRIVER_START:?}"
            );
            std::thread::sleep(POLL);
        }
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--no-first-run",
                            "--disable-extensions",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            "--hide-scrollbars",
                            format!("--window-size={width},{height}"),
                            format!("--user-data-dir={}", browser._profile.path().display()),
                        ],
                    },
                    "goog:loggingPrefs": { "browser": "ALL" },
                }
            }
        });
        let created = browser.request("POST", "/session", Some(capabilities));
        browser.session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_string();
        browser
    }

    /// One WebDriver command; the parsed JSON answer.
    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut headers = Vec::new();
        if !body.is_empty() || method == "POST" {
            headers.push(("Content-Type", "application/json"));
        }
        let body = if method == "POST" && body.is_empty() {
            "{}".to_string()
        } else {
            body
        };
        let resp = exchange(
            self.addr,
            &build_request(method, Some("127.0.0.1"), path, &headers, body.as_bytes()),
        );
        serde_json::from_slice(&resp.body).unwrap_or_else(|e| {
            panic!(
                "WebDriver {method} {path}: {e}: {}",
                String::from_utf8_lossy(&resp.raw)
            )
        })
    }

    /// A command of this session; panics on a WebDriver error.
    #[track_caller]
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let answer = self.request(method, &format!("/session/{}{path}", self.session), body);
        if let Some(error) = answer["value"].get("error") {
            panic!(
                "WebDriver {method} {path}: {error}: {}",
                answer["value"]["message"]
            );
        }
        answer["value"].clone()
    }

    /// Load `url` (returns once the page has loaded).
    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
    }

    /// Run `script` (a function body; `arguments` holds `args`) in the page and return its result.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Polls `script` until it returns something other than `null`/`false`, or panics with `what`.
    #[track_caller]
    pub fn wait_for(&self, timeout: Duration, what: &str, script: &str, args: Value) -> Value {
        eventually(timeout, what, || {
            let v = self.execute(script, args.clone());
            (!v.is_null() && v != json!(false)).then_some(v)
        })
    }

    /// The browser's console and network log since the last call (`level`, `message`, `source`).
    pub fn console(&self) -> Vec<Value> {
        match self.command("POST", "/se/log", Some(json!({ "type": "browser" }))) {
            Value::Array(entries) => entries,
            other => panic!("unexpected log answer {other}"),
        }
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let data = self.command("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("screenshot base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.request("DELETE", &format!("/session/{}", self.session), None)
            }));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
