//! The Redis commands of the admin API: listing frontends with `SCAN` (never `KEYS`, which blocks Redis for
//! as long as it walks the keyspace), reading one frontend with its policy hashes, and writing or deleting a
//! frontend atomically. None of them runs on the request path.

use redis::Value;

use super::{list_elements, strings, RawHash, RawPolicy, RedisClient, StoreError, HASH_PREFIXES};

/// One frontend as the admin API reads it.
#[derive(Debug, Clone, Default)]
pub struct ListedFrontend {
    /// The key without `frontend:` (nor the key prefix).
    pub key: String,
    /// `LRANGE frontend:<key> 0 -1`: the identifier then the backends (`None`: not UTF-8).
    pub list: Vec<Option<String>>,
    /// `SMEMBERS dead:<key>`.
    pub dead: Vec<String>,
    /// `PTTL dead:<key>` in milliseconds; `None` when the set does not exist or has no TTL.
    pub dead_ttl_ms: Option<u64>,
    /// The policy hashes, read only for a single frontend.
    pub policy: Option<RawPolicy>,
}

/// `text` with Redis's glob characters escaped, for a `MATCH` pattern.
pub(super) fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RedisClient {
    /// One page of `SCAN <cursor> MATCH frontend:* COUNT <count>`: the next cursor (0 at the end) and the
    /// frontend keys found, read with their dead sets. `COUNT` is a hint: a page may hold fewer keys, even
    /// none, before the end.
    pub async fn scan_frontends(
        &self,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<ListedFrontend>), StoreError> {
        let pattern = format!("{}frontend:*", glob_escape(&self.prefix));
        let (next, names) = self.scan_page(&pattern, None, cursor, count).await?;
        let strip = format!("{}frontend:", self.prefix);
        let mut keys: Vec<String> = names
            .into_iter()
            .filter_map(|name| name.strip_prefix(&strip).map(str::to_string))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let frontends = self.read_frontends(&keys, false).await?;
        Ok((next, frontends.into_iter().flatten().collect()))
    }

    /// One frontend with its dead set and policy hashes; `None` when `frontend:<key>` does not exist (or is
    /// not a list).
    pub async fn read_frontend(&self, key: &str) -> Result<Option<ListedFrontend>, StoreError> {
        let mut found = self.read_frontends(&[key.to_string()], true).await?;
        Ok(found.pop().flatten())
    }

    /// `LRANGE`, `SMEMBERS` and `PTTL` (and the policy hashes with `policies`) of each key in one pipeline.
    /// A key that is missing or not a list reads as `None`.
    async fn read_frontends(
        &self,
        keys: &[String],
        policies: bool,
    ) -> Result<Vec<Option<ListedFrontend>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            let dead = format!("{}dead:{key}", self.prefix);
            pipe.cmd("LRANGE")
                .arg(format!("{}frontend:{key}", self.prefix))
                .arg(0)
                .arg(-1);
            pipe.cmd("SMEMBERS").arg(&dead);
            pipe.cmd("PTTL").arg(&dead);
            if policies {
                for family in HASH_PREFIXES {
                    pipe.cmd("HGETALL").arg(format!("{family}{key}"));
                }
            }
        }
        pipe.ignore_errors();
        let mut con = self.shared()?;
        let values: Vec<Value> = self.call(pipe.query_async(&mut con)).await?;
        let mut out = Vec::with_capacity(keys.len());
        let mut it = values.into_iter();
        for key in keys {
            let mut next = || it.next().unwrap_or(Value::Nil);
            let (list, dead, ttl) = (next(), next(), next());
            let policy = policies.then(|| RawPolicy {
                guard: RawHash::from_value(next()),
                ratelimit: RawHash::from_value(next()),
                breaker: RawHash::from_value(next()),
            });
            let list = match list {
                Value::ServerError(_) => None,
                list => Some(list_elements(list)?),
            };
            let Some(list) = list.filter(|l| !l.is_empty()) else {
                out.push(None);
                continue;
            };
            let dead = match dead {
                Value::ServerError(_) => Vec::new(),
                dead => strings(dead)?,
            };
            let dead_ttl_ms = match ttl {
                Value::Int(ms) if ms >= 0 => Some(ms as u64),
                _ => None,
            };
            out.push(Some(ListedFrontend {
                key: key.clone(),
                list,
                dead,
                dead_ttl_ms,
                policy,
            }));
        }
        Ok(out)
    }

    /// Replace `frontend:<key>` with `[identifier, backends...]` in one `MULTI`/`EXEC`, so that no reader
    /// ever sees the list empty or half written. `dead:<key>` goes in the same transaction: its indexes named
    /// the old list's backends (the routes file's table drops its marks the same way).
    pub async fn put_frontend(
        &self,
        key: &str,
        identifier: &str,
        backends: &[String],
    ) -> Result<(), StoreError> {
        let name = format!("{}frontend:{key}", self.prefix);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(&name)
            .arg(format!("{}dead:{key}", self.prefix))
            .ignore()
            .cmd("RPUSH")
            .arg(&name)
            .arg(identifier)
            .arg(backends)
            .ignore();
        let mut con = self.shared()?;
        self.call(pipe.query_async::<()>(&mut con)).await
    }

    /// Delete `frontend:<key>` and `dead:<key>` in one `MULTI`/`EXEC`; returns whether the frontend existed.
    pub async fn delete_frontend(&self, key: &str) -> Result<bool, StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(format!("{}frontend:{key}", self.prefix))
            .cmd("DEL")
            .arg(format!("{}dead:{key}", self.prefix))
            .ignore();
        let mut con = self.shared()?;
        let (deleted,): (i64,) = self.call(pipe.query_async(&mut con)).await?;
        Ok(deleted > 0)
    }

    /// `SREM dead:<key> <index>`: the backend is alive again; returns whether it was marked.
    pub async fn revive(&self, key: &str, index: usize) -> Result<bool, StoreError> {
        let mut con = self.shared()?;
        let removed: i64 = self
            .call(
                redis::cmd("SREM")
                    .arg(format!("{}dead:{key}", self.prefix))
                    .arg(index)
                    .query_async(&mut con),
            )
            .await?;
        Ok(removed > 0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(super::glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
