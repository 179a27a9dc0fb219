//! Certificates from Redis (docs/compat/planb.md#certificates-from-redis): `HMGET tls:<name> certificate key`, the wildcard name first, parsed
//! certificates cached for 30 s in an LRU of 100 entries.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;

use super::CertError;
use super::{parse_pair, provider, wildcard};
use crate::store::RedisClient;

/// How long a parsed certificate is served without asking Redis again (PlanB's value): a handshake costs no
/// Redis round trip in the common case, and a changed certificate is picked up within this time.
pub const CACHE_TTL: Duration = Duration::from_secs(30);

/// Entries kept (PlanB's value); the least recently used name goes first. Misses are never cached, so a name
/// added to Redis is served at once.
pub const CACHE_ENTRIES: usize = 100;

/// Looks certificates up in Redis through its own client, so a slow certificate read never queues behind
/// route lookups on the shared connection (and vice versa).
pub struct RedisCerts {
    client: RedisClient,
    cache: Mutex<LruCache<String, (Instant, Arc<CertifiedKey>)>>,
    provider: Arc<CryptoProvider>,
}

impl RedisCerts {
    pub fn new(client: RedisClient) -> RedisCerts {
        RedisCerts {
            client,
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHE_ENTRIES).expect("a non-zero capacity"),
            )),
            provider: provider(),
        }
    }

    /// `tls:<wildcard>` first, then `tls:<name>` only when the wildcard was not found. Any other failure on the
    /// wildcard (Redis error, broken PEM) fails the handshake without trying the exact name, as PlanB does.
    pub async fn resolve(&self, name: &str) -> Result<Arc<CertifiedKey>, CertError> {
        let wild = wildcard(name);
        if let Some(key) = self.lookup(&wild).await? {
            return Ok(key);
        }
        if wild != name {
            if let Some(key) = self.lookup(name).await? {
                return Ok(key);
            }
        }
        Err(CertError::NotFound(name.to_string()))
    }

    /// One name: the cache, else Redis. `None` when the key is missing or a field is empty.
    async fn lookup(&self, name: &str) -> Result<Option<Arc<CertifiedKey>>, CertError> {
        if let Some(key) = self.cached(name) {
            return Ok(Some(key));
        }
        let redis_key = format!("tls:{name}");
        let (cert, key) = self
            .client
            .certificate(name)
            .await
            .map_err(|e| CertError::Store {
                key: redis_key.clone(),
                error: e.0,
            })?;
        if cert.is_empty() || key.is_empty() {
            return Ok(None);
        }
        let parsed =
            parse_pair(cert.as_bytes(), key.as_bytes(), &self.provider).map_err(|why| {
                CertError::Broken {
                    key: redis_key,
                    why,
                }
            })?;
        let parsed = Arc::new(parsed);
        self.lock()
            .put(name.to_string(), (Instant::now(), parsed.clone()));
        Ok(Some(parsed))
    }

    fn cached(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let mut cache = self.lock();
        match cache.get(name) {
            Some((at, key)) if at.elapsed() < CACHE_TTL => Some(key.clone()),
            Some(_) => {
                // Expired: a failed refetch must fail the handshake, not serve the old certificate.
                cache.pop(name);
                None
            }
            None => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, (Instant, Arc<CertifiedKey>)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}
