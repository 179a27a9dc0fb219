//! Active health checks of live backends (docs/health-checks.md#live-backends): a `healthcheck:<key>` hash
//! with an `interval` has every backend of `frontend:<key>` probed on that interval, not only the ones already
//! marked dead.
//!
//! - a probe fails when it gets no answer, when the answer does not match `status` and `body`, or (without
//!   `status`) when it is a 5xx;
//! - `fall` consecutive failures (default 3) mark a live backend dead: `SADD dead:<key> <index>` with a TTL
//!   renewed while it keeps failing, and the `dead` message passive marks publish;
//! - `rise` consecutive successes (default 2) revive a dead one, whoever marked it (`SREM`);
//! - one prober per backend across the fleet: the prober holds PlanB's lock `dead:<key>:<url>`, and a process
//!   that cannot take it leaves the backend to the holder (and tries again if the holder goes away);
//! - each prober starts at a random point of its interval and each wait is jittered by ±10%, so a fleet does
//!   not probe in lockstep.
//!
//! Frontends whose hash has no `interval` keep PlanB's behaviour (the dead-mark monitor of the parent module).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::{healthy_within, Monitor};
use crate::store::StoreError;

/// How often the `healthcheck:*` hashes are scanned for intervals (new frontends and backends are picked up
/// within this).
const RESCAN_EVERY: Duration = Duration::from_secs(2);
/// The shortest interval accepted: probing faster would load the backends for no gain.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Consecutive failures before a live backend is marked dead, and successes before a dead one is revived.
const DEFAULT_FALL: u32 = 3;
const DEFAULT_RISE: u32 = 2;

/// A `healthcheck:<key>` hash with an interval.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSettings {
    pub interval: Duration,
    pub fall: u32,
    pub rise: u32,
}

impl LiveSettings {
    /// The live-check fields of a `healthcheck:` hash; `None` without an `interval` (PlanB's behaviour). A bad
    /// value is an error naming the field.
    pub fn parse(fields: &HashMap<String, String>) -> Result<Option<LiveSettings>, String> {
        let Some(interval) = fields.get("interval") else {
            return Ok(None);
        };
        let interval = crate::config::flags::parse_go_duration(interval)
            .map_err(|e| format!("field \"interval\": {e}"))?;
        if interval < MIN_INTERVAL {
            return Err(format!(
                "field \"interval\": {interval:?} is below {MIN_INTERVAL:?}"
            ));
        }
        let count = |name: &str, default: u32| match fields.get(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("field {name:?}: {v:?} is not a positive integer")),
            },
        };
        Ok(Some(LiveSettings {
            interval,
            fall: count("fall", DEFAULT_FALL)?,
            rise: count("rise", DEFAULT_RISE)?,
        }))
    }

    /// How long a mark of this checker lasts unless renewed: long enough for a few missed probes.
    fn dead_ttl(&self) -> u64 {
        (self.interval * 3).as_secs().max(super::LOCK_TTL)
    }
}

/// What one probe changed.
enum Verdict {
    /// Nothing to write.
    Same,
    /// Marked dead at this index, out of this many backends.
    MarkedDead(usize, usize),
    Revived,
    /// The URL left the frontend.
    Gone,
}

impl Monitor {
    /// Scan `healthcheck:*` for hashes with an interval, and keep one prober running per backend of each.
    pub(super) async fn follow_live(self: Arc<Self>) {
        let mut every = tokio::time::interval(RESCAN_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = self.clone().scan_live().await {
                self.log(&format!("health check: scanning healthcheck:* hashes: {e}"));
            }
        }
    }

    async fn scan_live(self: Arc<Self>) -> Result<(), StoreError> {
        let mut con = self.redis.shared()?;
        let mut cursor: u64 = 0;
        let mut live = HashSet::new();
        loop {
            let (next, keys) = self
                .redis
                .scan_page("healthcheck:*", Some("hash"), cursor, 500)
                .await?;
            for hash in keys {
                let key = hash["healthcheck:".len()..].to_string();
                let fields: HashMap<String, String> = self
                    .redis
                    .call(redis::cmd("HGETALL").arg(&hash).query_async(&mut con))
                    .await?;
                match LiveSettings::parse(&fields) {
                    Ok(Some(_)) => {}
                    Ok(None) => continue,
                    Err(e) => {
                        self.log(&format!("health check: malformed {hash}: {e}"));
                        continue;
                    }
                }
                live.insert(key.clone());
                let urls: Vec<String> = self
                    .redis
                    .call(
                        redis::cmd("LRANGE")
                            .arg(format!("frontend:{key}"))
                            .arg(1)
                            .arg(-1)
                            .query_async(&mut con),
                    )
                    .await?;
                for url in urls {
                    self.clone().probe_live(key.clone(), url);
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = live;
        Ok(())
    }

    /// Start the prober of one backend unless this process runs one (or PlanB's monitor watches it).
    fn probe_live(self: Arc<Self>, key: String, url: String) {
        self.spawn_once(key, url, super::Probe::Live);
    }

    pub(super) async fn run_live(&self, key: &str, url: &str) -> Result<(), StoreError> {
        let mut con = self.redis.dedicated().await?;
        let lock = format!("dead:{key}:{url}");
        if !self.reserve(&mut con, &lock).await? {
            return Ok(());
        }
        let (mut failures, mut successes) = (0u32, 0u32);
        let mut first = true;
        loop {
            let fields: HashMap<String, String> = self
                .redis
                .call(
                    redis::cmd("HGETALL")
                        .arg(format!("healthcheck:{key}"))
                        .query_async(&mut con),
                )
                .await?;
            let Ok(Some(settings)) = LiveSettings::parse(&fields) else {
                break;
            };
            let wait = match first {
                true => settings.interval.mul_f64(fastrand::f64()),
                false => settings.interval.mul_f64(0.9 + fastrand::f64() * 0.2),
            };
            first = false;
            tokio::time::sleep(wait).await;
            if !self.reserve(&mut con, &lock).await? {
                return Ok(());
            }
            let healthy = {
                let _slot = self
                    .probes
                    .acquire()
                    .await
                    .expect("the semaphore is never closed");
                healthy_within(
                    url,
                    &fields,
                    settings.interval.max(Duration::from_secs(1)),
                    true,
                )
                .await
            };
            if healthy {
                successes += 1;
                failures = 0;
            } else {
                failures += 1;
                successes = 0;
            }
            match self
                .judge(&mut con, key, url, &settings, failures, successes)
                .await
            {
                Ok(Verdict::Same) => {}
                Ok(Verdict::MarkedDead(index, count)) => {
                    self.log_info(&format!(
                        "health check: {url} of {key} failed {failures} probes in a row; marked dead"
                    ));
                    let message = format!("{key};{url};{index};{count}");
                    self.redis
                        .call(
                            redis::cmd("PUBLISH")
                                .arg("dead")
                                .arg(message)
                                .query_async::<i64>(&mut con),
                        )
                        .await?;
                }
                Ok(Verdict::Revived) => self.log_info(&format!(
                    "health check: {url} of {key} passed {successes} probes in a row; revived"
                )),
                Ok(Verdict::Gone) => break,
                Err(e) => self.log(&format!("health check of {url} for {key}: {e}")),
            }
        }
        self.release(&mut con, &lock).await
    }

    /// Under `WATCH frontend:<key>`: where the URL is and whether it is dead, then mark, renew or revive.
    async fn judge(
        &self,
        con: &mut MultiplexedConnection,
        key: &str,
        url: &str,
        settings: &LiveSettings,
        failures: u32,
        successes: u32,
    ) -> Result<Verdict, StoreError> {
        let dead = format!("dead:{key}");
        let Some(watched) = self.watch_position(con, key, url).await? else {
            return Ok(Verdict::Gone);
        };
        let (index, is_dead) = (watched.index, watched.dead);
        let mut pipe = redis::pipe();
        pipe.atomic();
        let verdict = match (is_dead, failures > 0) {
            // Failed `fall` times: marked; still failing: kept dead, as PlanB's monitor renews the set.
            (false, true) if failures >= settings.fall => Verdict::MarkedDead(index, watched.count),
            (true, true) => Verdict::Same,
            (true, false) if successes >= settings.rise => {
                pipe.cmd("SREM").arg(&dead).arg(index);
                Verdict::Revived
            }
            _ => {
                self.redis
                    .call(redis::cmd("UNWATCH").query_async::<()>(con))
                    .await?;
                return Ok(Verdict::Same);
            }
        };
        if failures > 0 {
            pipe.cmd("SADD")
                .arg(&dead)
                .arg(index)
                .cmd("EXPIRE")
                .arg(&dead)
                .arg(settings.dead_ttl());
        }
        let done: Option<redis::Value> = self.redis.call(pipe.query_async(con)).await?;
        Ok(match done {
            Some(_) => verdict,
            // The list changed under us: judged again at the next probe.
            None => Verdict::Same,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings() {
        assert_eq!(LiveSettings::parse(&fields(&[("path", "/h")])), Ok(None));
        assert_eq!(
            LiveSettings::parse(&fields(&[("interval", "1s")])),
            Ok(Some(LiveSettings {
                interval: Duration::from_secs(1),
                fall: 3,
                rise: 2
            }))
        );
        assert_eq!(
            LiveSettings::parse(&fields(&[
                ("interval", "500ms"),
                ("fall", "1"),
                ("rise", "4")
            ]))
            .unwrap()
            .unwrap()
            .rise,
            4
        );
        assert!(LiveSettings::parse(&fields(&[("interval", "soon")])).is_err());
        assert!(LiveSettings::parse(&fields(&[("interval", "1ms")])).is_err());
        assert!(LiveSettings::parse(&fields(&[("interval", "1s"), ("fall", "0")])).is_err());
    }
}
