//! Certificates from a directory (docs/compat/planb.md#certificates-from-a-directory): every `<name>.key` with its `<name>.crt` (names may start with
//! `*.`), the exact name first, then the wildcard form.
//!
//! Beyond PlanB, which read the files once, the directory is watched: a change of any `.key`/`.crt` file (seen
//! by polling names, sizes, mtimes and inodes) or a SIGHUP re-reads the whole set. A set that fails to load is
//! reported with the files at fault, and the previous set keeps serving; handshakes read an immutable snapshot,
//! swapped atomically, without a lock.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use tokio::signal::unix::{signal, SignalKind};

use super::CertError;
use super::{parse_pair, provider, wildcard};
use crate::observe::access_log::Log;

/// How often the directory is looked at for changes: cheap (one `readdir` and a `stat` per file) and quick
/// enough for an operator who just copied a renewed certificate.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

type Certs = HashMap<String, Arc<CertifiedKey>>;

/// What the certificate files looked like when last read: (file name, size, mtime in ns, inode), sorted.
type Fingerprint = Vec<(String, u64, i128, u64)>;

/// The certificates of one directory, kept current.
pub struct DirectoryCerts {
    dir: PathBuf,
    certs: ArcSwap<Certs>,
    /// Touched only by the watcher task (and at start-up).
    seen: Mutex<Fingerprint>,
}

impl DirectoryCerts {
    /// Read the directory once. Any bad pair is an error naming its files (PlanB exits 1 at start-up).
    pub fn load(dir: &Path) -> Result<DirectoryCerts, String> {
        let seen = fingerprint(dir)?;
        let certs = load_pairs(dir, &provider())?;
        Ok(DirectoryCerts {
            dir: dir.to_path_buf(),
            certs: ArcSwap::from_pointee(certs),
            seen: Mutex::new(seen),
        })
    }

    /// Number of certificates currently served.
    pub fn len(&self) -> usize {
        self.certs.load().len()
    }

    /// Whether no certificate is served at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `<name>` first, then its wildcard form (the opposite of the Redis order, as in PlanB).
    pub fn resolve(&self, name: &str) -> Result<Arc<CertifiedKey>, CertError> {
        let certs = self.certs.load();
        if let Some(key) = certs.get(name) {
            return Ok(key.clone());
        }
        if let Some(key) = certs.get(&wildcard(name)) {
            return Ok(key.clone());
        }
        Err(CertError::NotFound(name.to_string()))
    }

    /// Re-read the set when the directory changes (polled every [`POLL_INTERVAL`]) or on SIGHUP, until `self` is
    /// dropped. The SIGHUP handler is installed before this returns. Outcomes go to `log`.
    pub fn watch(self: &Arc<Self>, log: Log) {
        let weak = Arc::downgrade(self);
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(e) => {
                log.line(format!("cannot watch SIGHUP for certificate reloads: {e}"));
                None
            }
        };
        tokio::spawn(async move {
            loop {
                let forced = tokio::select! {
                    _ = tokio::time::sleep(POLL_INTERVAL) => false,
                    Some(()) = async {
                        match hangup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => true,
                };
                let Some(this) = weak.upgrade() else { return };
                let worker = this.clone();
                let outcome = tokio::task::spawn_blocking(move || worker.refresh(forced)).await;
                match outcome {
                    Ok(Some(line)) => log.line(line),
                    Ok(None) => {}
                    Err(e) => log.line(format!("certificate reload task failed: {e}")),
                }
            }
        });
    }

    /// Reload if the files changed (or `forced`); returns a line to log, if any. Blocking: file system calls.
    fn refresh(&self, forced: bool) -> Option<String> {
        let dir = self.dir.display();
        let now = match fingerprint(&self.dir) {
            Ok(now) => now,
            Err(e) => {
                return forced.then(|| {
                    format!("ERROR reloading certificates from {dir}: {e}; keeping the current set")
                })
            }
        };
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if !forced && *seen == now {
                return None;
            }
            // Recorded before loading, so a bad set is reported once, not on every poll until it is fixed.
            *seen = now;
        }
        match load_pairs(&self.dir, &provider()) {
            Ok(certs) => {
                let count = certs.len();
                self.certs.store(Arc::new(certs));
                Some(format!("reloaded {count} certificate(s) from {dir}"))
            }
            Err(e) => Some(format!(
                "ERROR reloading certificates from {dir}: {e}; still serving the previous {} certificate(s)",
                self.len()
            )),
        }
    }
}

/// The `.key`/`.crt` files of `dir` with what identifies their content.
fn fingerprint(dir: &Path) -> Result<Fingerprint, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.ends_with(".key") || name.ends_with(".crt")) {
            continue;
        }
        // Follows symlinks, so a swapped link target counts as a change (the Kubernetes secret layout).
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        out.push((name, meta.len(), mtime, meta.ino()));
    }
    out.sort();
    Ok(out)
}

/// Every `<name>.key` of `dir` (not recursive) with its `<name>.crt`; the first bad pair is the error.
fn load_pairs(dir: &Path, provider: &CryptoProvider) -> Result<Certs, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".key")?;
            (!stem.is_empty() && e.path().is_file()).then(|| stem.to_string())
        })
        .collect();
    names.sort();
    let mut certs = Certs::new();
    for name in names {
        let key_path = dir.join(format!("{name}.key"));
        let crt_path = dir.join(format!("{name}.crt"));
        let files = format!("{}, {}", key_path.display(), crt_path.display());
        let key = std::fs::read(&key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
        let crt = std::fs::read(&crt_path).map_err(|e| format!("{}: {e}", crt_path.display()))?;
        let pair = parse_pair(&crt, &key, provider).map_err(|why| format!("{files}: {why}"))?;
        certs.insert(name, Arc::new(pair));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn a_bad_set_is_reported_once_and_a_fixed_one_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = pair(&["a.test"]);
        std::fs::write(dir.path().join("a.test.crt"), &crt).unwrap();
        std::fs::write(dir.path().join("a.test.key"), &key).unwrap();
        let certs = DirectoryCerts::load(dir.path()).unwrap();
        assert_eq!(certs.len(), 1);
        assert_eq!(certs.refresh(false), None, "nothing changed");
        std::fs::write(dir.path().join("b.test.key"), "junk").unwrap();
        std::fs::write(dir.path().join("b.test.crt"), "junk").unwrap();
        let report = certs.refresh(false).unwrap();
        assert!(
            report.contains("b.test.key") && report.contains("b.test.crt"),
            "{report}"
        );
        assert_eq!(certs.refresh(false), None, "reported once per change");
        assert!(certs.resolve("a.test").is_ok(), "the old set keeps serving");
        let (crt, key) = pair(&["b.test"]);
        std::fs::write(dir.path().join("b.test.crt"), &crt).unwrap();
        std::fs::write(dir.path().join("b.test.key"), &key).unwrap();
        assert!(certs.refresh(false).unwrap().contains("reloaded 2"));
        assert!(certs.resolve("b.test").is_ok());
        assert!(
            certs.refresh(true).unwrap().contains("reloaded 2"),
            "forced"
        );
    }

    #[test]
    fn exact_then_wildcard() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["*.w.test", "x.w.test"] {
            let (crt, key) = pair(&[name]);
            std::fs::write(dir.path().join(format!("{name}.crt")), crt).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key).unwrap();
        }
        let certs = DirectoryCerts::load(dir.path()).unwrap();
        let exact = certs.resolve("x.w.test").unwrap();
        let wild = certs.resolve("y.w.test").unwrap();
        assert!(!Arc::ptr_eq(&exact, &wild));
        assert_eq!(
            certs.resolve("").unwrap_err(),
            CertError::NotFound(String::new())
        );
    }
}
