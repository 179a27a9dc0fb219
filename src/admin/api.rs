//! The `/api/v1/` endpoints and the probes. Routes are read from the active source: Redis (`SCAN`, never
//! `KEYS`), or the in-process table of the routes file or etcd, which the API lists and marks but does not
//! write (409). Writes to Redis are what an operator would type in `redis-cli`, made atomic.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::error::AdminError;
use super::{json, Admin};
use crate::observe::window::{Figures, FrontendFigures, RATE_SECS, WINDOW_SECS};
use crate::policy::{MalformedPolicy, Policy};
use crate::routing::mirror::{Compare, MirrorSpec};
use crate::routing::{Balance, Route, RouteOptions};
use crate::store::{ListedFrontend, RawHash, RawPolicy};

/// The largest request body read (a `PUT` of a frontend).
pub const MAX_BODY: usize = 1 << 20;
/// Frontends per page of `GET /api/v1/frontends` unless `count` says otherwise, and the most it may say.
const DEFAULT_COUNT: usize = 100;
const MAX_COUNT: usize = 1000;

type Answer = Result<Response<Full<Bytes>>, AdminError>;

/// A frontend as the API shows it, whichever source it came from.
struct View {
    key: String,
    identifier: String,
    backends: Vec<String>,
    dead: Vec<bool>,
    /// How much longer each dead backend stays dead, in milliseconds (`None`: alive, or no TTL).
    dead_ttl_ms: Vec<Option<u64>>,
}

impl View {
    fn from_redis(listed: &ListedFrontend) -> View {
        let mut list = listed.list.iter().cloned().map(Option::unwrap_or_default);
        let identifier = list.next().unwrap_or_default();
        let backends: Vec<String> = list.collect();
        let mut dead = vec![false; backends.len()];
        for member in &listed.dead {
            if let Some(slot) = crate::routing::dead_index(member).and_then(|i| dead.get_mut(i)) {
                *slot = true;
            }
        }
        let dead_ttl_ms = dead
            .iter()
            .map(|&d| if d { listed.dead_ttl_ms } else { None })
            .collect();
        View {
            key: listed.key.clone(),
            identifier,
            backends,
            dead,
            dead_ttl_ms,
        }
    }

    fn from_table(route: &Route, table: &crate::routing::table::RouteTable) -> View {
        let dead_ttl_ms = (0..route.backends.len())
            .map(|i| {
                table
                    .dead_for(&route.dead_key, i)
                    .map(|d| d.as_millis() as u64)
            })
            .collect();
        View {
            key: route.key.clone(),
            identifier: route.identifier.clone(),
            backends: route.backends.clone(),
            dead: route.dead.clone(),
            dead_ttl_ms,
        }
    }

    /// The route a dead mark is written for (dead set `dead:<key>`).
    fn route(&self) -> Route {
        Route::new(
            self.key.clone(),
            self.identifier.clone(),
            self.backends.clone(),
            self.dead.clone(),
        )
    }

    /// `{frontend, identifier, backends: [{url, index, dead, dead_ttl_ms, ejected}]}`.
    fn json(&self, admin: &Admin) -> Value {
        let policies = &admin.proxy.policies;
        let backends: Vec<Value> = self
            .backends
            .iter()
            .enumerate()
            .map(|(index, url)| {
                json!({
                    "url": url,
                    "index": index,
                    "dead": self.dead[index],
                    "dead_ttl_ms": self.dead_ttl_ms[index],
                    "ejected": policies.is_ejected(&self.key, url),
                })
            })
            .collect();
        json!({
            "frontend": self.key,
            "identifier": self.identifier,
            "backends": backends,
        })
    }
}

/// `{"requests": {"1xx": n, ...}, "total", "rate", "p50_ms", "p99_ms"}`.
fn figures_json(f: &Figures) -> Value {
    let [c1, c2, c3, c4, c5] = f.requests;
    json!({
        "requests": { "1xx": c1, "2xx": c2, "3xx": c3, "4xx": c4, "5xx": c5 },
        "total": f.total(),
        "rate": f.rate,
        "p50_ms": f.p50_ms,
        "p99_ms": f.p99_ms,
    })
}

/// A frontend's figures with its backends' under `backends`.
fn frontend_figures_json(f: &FrontendFigures) -> Value {
    let mut out = figures_json(&f.figures);
    out["frontend"] = json!(f.frontend);
    out["backends"] = f
        .backends
        .iter()
        .map(|(url, figures)| {
            let mut b = figures_json(figures);
            b["url"] = json!(url);
            b
        })
        .collect();
    out
}

/// A policy hash as shown: its fields with secrets masked, and whether it parses.
fn policy_json(raw: Option<&RawHash>, parsed: Option<Result<(), &MalformedPolicy>>) -> Value {
    let Some(parsed) = parsed else {
        return Value::Null;
    };
    let mut out = json!({
        "valid": parsed.is_ok(),
        "error": parsed.err().map(|e| e.to_string()),
    });
    if let Some(RawHash::Fields(fields)) = raw {
        let shown: serde_json::Map<String, Value> = fields
            .iter()
            .map(|(name, value)| {
                let value = match secret_field(name) {
                    true => "********".to_string(),
                    false => value.clone(),
                };
                (name.clone(), Value::String(value))
            })
            .collect();
        out["fields"] = Value::Object(shown);
    }
    out
}

/// Whether a policy field holds a secret (a guard's `secret`, `secret:<app-key>`, or anything named like one).
fn secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["secret", "password", "token", "key"]
        .iter()
        .any(|word| name.contains(word))
}

/// The `route:<key>` options as they apply.
fn options_json(options: &RouteOptions) -> Value {
    json!({
        "strip_prefix": options.strip_prefix,
        "weights": options.weights.as_deref(),
        "balance": options.balance.map(|b| match b {
            Balance::RoundRobin => "round_robin",
            Balance::Random => "random",
            Balance::LeastRequest => "least_request",
        }),
    })
}

/// The `mirror:<key>` hash as it applies.
fn mirror_json(spec: &MirrorSpec) -> Value {
    let shadows: serde_json::Map<String, Value> = spec
        .shadows
        .iter()
        .map(|(name, url)| (name.clone(), Value::String(url.clone())))
        .collect();
    json!({
        "shadows": shadows,
        "percent": spec.percent,
        "timeout_ms": spec.timeout.as_millis() as u64,
        "max_body": spec.max_body,
        "concurrency": spec.concurrency,
        "compare": spec.compare.map(|c| match c {
            Compare::Status => "status",
            Compare::Body => "body",
        }),
    })
}

/// One shadow's totals and its last mismatching requests.
fn shadow_json(report: &crate::mirror::ShadowReport) -> Value {
    json!({
        "frontend": report.frontend,
        "shadow": report.shadow,
        "url": report.url,
        "sent": report.sent,
        "errors": report.errors,
        "timeouts": report.timeouts,
        "mismatches": report.mismatches,
        "in_flight": report.in_flight,
        "recent_mismatches": report.recent_mismatches,
    })
}

/// `{guard, ratelimit, breaker}`, each `null` when the frontend does not configure it.
fn policies_json(raw: Option<&RawPolicy>, parsed: &Policy) -> Value {
    fn status<T>(p: &Option<Result<T, MalformedPolicy>>) -> Option<Result<(), &MalformedPolicy>> {
        p.as_ref().map(|r| r.as_ref().map(|_| ()))
    }
    json!({
        "guard": policy_json(raw.map(|r| &r.guard), status(&parsed.guard)),
        "ratelimit": policy_json(raw.map(|r| &r.ratelimit), status(&parsed.ratelimit)),
        "breaker": policy_json(raw.map(|r| &r.breaker), status(&parsed.breaker)),
    })
}

/// `?cursor=<n>&count=<n>`.
fn page(query: Option<&str>) -> Result<(u64, usize), AdminError> {
    let (mut cursor, mut count) = (0u64, DEFAULT_COUNT);
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*name {
            "cursor" if value.is_empty() => {}
            "cursor" => {
                cursor = value.parse().map_err(|_| {
                    AdminError::BadRequest(format!("cursor {value:?} is not a number"))
                })?
            }
            "count" => {
                count = value
                    .parse()
                    .ok()
                    .filter(|c| (1..=MAX_COUNT).contains(c))
                    .ok_or_else(|| {
                        AdminError::BadRequest(format!(
                            "count {value:?} is not a number from 1 to {MAX_COUNT}"
                        ))
                    })?
            }
            _ => {}
        }
    }
    Ok((cursor, count))
}

/// The body of `PUT /api/v1/frontends/<key>`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PutFrontend {
    identifier: String,
    backends: Vec<String>,
}

/// The backend URLs of a `PUT`, each an `http://` or `https://` URL with a host, written as given.
fn valid_backends(backends: &[String]) -> Result<(), AdminError> {
    for (i, backend) in backends.iter().enumerate() {
        let bad = |why: &str| AdminError::BadRequest(format!("backends[{i}] {backend:?}: {why}"));
        if backend.trim() != backend || backend.chars().any(char::is_control) {
            return Err(bad("spaces or control characters"));
        }
        let url = url::Url::parse(backend).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("not an http:// or https:// URL"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
    }
    Ok(())
}

impl Admin {
    /// The table routes come from, with its name, when it is not Redis.
    fn table(&self) -> Option<(&Arc<crate::routing::table::RouteTable>, &'static str)> {
        let table = self.proxy.router.table()?;
        let name = match self.proxy.config.routes_file {
            Some(_) => "the routes file",
            None => "etcd",
        };
        Some((table, name))
    }

    fn source(&self) -> &'static str {
        match self.table() {
            Some((_, name)) => name.trim_start_matches("the "),
            None => "redis",
        }
    }

    /// One frontend of the active source; `None` when unknown.
    async fn read(&self, key: &str) -> Result<Option<(View, Option<ListedFrontend>)>, AdminError> {
        if let Some((table, _)) = self.table() {
            return Ok(table
                .get(key, key)
                .map(|route| (View::from_table(&route, table), None)));
        }
        let listed = self.proxy.router.store().read_frontend(key).await?;
        Ok(listed.map(|l| (View::from_redis(&l), Some(l))))
    }

    /// `GET /ready`: 200 while routes can be served (the source answers, or stale routes stand in), else 503.
    pub(super) async fn ready(&self) -> Answer {
        let router = &self.proxy.router;
        match router.ping().await {
            Ok(()) => Ok(json(
                StatusCode::OK,
                &json!({ "ready": true, "source": self.source() }),
            )),
            Err(_) if router.has_stale_routes() => Ok(json(
                StatusCode::OK,
                &json!({ "ready": true, "source": self.source(), "stale_routes": true }),
            )),
            Err(e) => Err(AdminError::NotReady(format!(
                "the route source does not answer and no stale routes are kept: {e}"
            ))),
        }
    }

    /// `GET /api/v1/frontends?cursor=&count=`: one page; `cursor` is `"0"` after the last.
    pub(super) async fn list(&self, query: Option<&str>) -> Answer {
        let (cursor, count) = page(query)?;
        let (next, views) = match self.table() {
            Some((table, _)) => {
                let all = table.frontends();
                let start = usize::try_from(cursor).unwrap_or(usize::MAX).min(all.len());
                let end = start.saturating_add(count).min(all.len());
                let next = if end < all.len() { end as u64 } else { 0 };
                let views = all[start..end]
                    .iter()
                    .map(|route| View::from_table(route, table))
                    .collect();
                (next, views)
            }
            None => {
                let store = self.proxy.router.store();
                let (next, listed) = store.scan_frontends(cursor, count).await?;
                (
                    next,
                    listed.iter().map(View::from_redis).collect::<Vec<_>>(),
                )
            }
        };
        let frontends: Vec<Value> = views.iter().map(|v| v.json(self)).collect();
        Ok(json(
            StatusCode::OK,
            &json!({ "cursor": next.to_string(), "frontends": frontends }),
        ))
    }

    /// `GET /api/v1/frontends/<key>`: the frontend, its policies (secrets masked) and its last minute.
    pub(super) async fn show(&self, key: &str) -> Answer {
        let Some((view, listed)) = self.read(key).await? else {
            return Err(AdminError::NotFound(format!("no frontend {key:?}")));
        };
        let mut out = view.json(self);
        out["source"] = json!(self.source());
        out["policies"] = match &listed {
            Some(listed) => {
                let raw = listed.policy.clone().unwrap_or_default();
                let parsed = Policy::parse(key, raw.clone());
                policies_json(Some(&raw), &parsed)
            }
            None => match self.table().and_then(|(t, _)| t.get(key, key)) {
                Some(route) => policies_json(None, &route.policy),
                None => Value::Null,
            },
        };
        let (options, mirror) = match self.table() {
            Some((table, _)) => match table.get(key, key) {
                Some(route) => (route.options.clone(), route.mirror.clone()),
                None => (RouteOptions::none(), None),
            },
            None => match self
                .proxy
                .router
                .store()
                .lookup_many(&[crate::store::Lookup {
                    key,
                    dead: key,
                    options: true,
                }])
                .await
            {
                Ok(mut found) => match found.pop() {
                    Some(data) => (
                        RouteOptions::parse(key, data.options),
                        MirrorSpec::parse(key, data.mirror),
                    ),
                    None => (RouteOptions::none(), None),
                },
                Err(_) => (RouteOptions::none(), None),
            },
        };
        out["options"] = options_json(&options);
        out["mirror"] = mirror.as_deref().map_or(Value::Null, mirror_json);
        if let Some(window) = &self.proxy.telemetry.window {
            out["stats"] = frontend_figures_json(&window.frontend(key));
        }
        Ok(json(StatusCode::OK, &out))
    }

    /// `PUT /api/v1/frontends/<key>`: `frontend:<key>` becomes exactly `[identifier, backends...]` and the old
    /// dead set goes, atomically;
    /// an invalid body changes nothing.
    pub(super) async fn put(&self, key: &str, req: Request<Incoming>) -> Answer {
        if let Some((_, source)) = self.table() {
            return Err(AdminError::ReadOnly(source));
        }
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(AdminError::TooLarge)
            }
            Err(e) => return Err(AdminError::BadRequest(format!("reading the body: {e}"))),
        };
        let put: PutFrontend = serde_json::from_slice(&body).map_err(|e| {
            AdminError::BadRequest(format!(
                "the body is not {{\"identifier\": \"...\", \"backends\": [\"http://...\"]}}: {e}"
            ))
        })?;
        valid_backends(&put.backends)?;
        let store = &self.proxy.write;
        store
            .put_frontend(key, &put.identifier, &put.backends)
            .await?;
        self.proxy.router.forget_key(key).await;
        tracing::info!(
            "admin: frontend {key:?} set to {} backend(s): {}",
            put.backends.len(),
            put.backends.join(" ")
        );
        Ok(json(
            StatusCode::OK,
            &json!({ "frontend": key, "identifier": put.identifier, "backends": put.backends }),
        ))
    }

    /// `DELETE /api/v1/frontends/<key>`: the list and its dead set.
    pub(super) async fn delete(&self, key: &str) -> Answer {
        if let Some((_, source)) = self.table() {
            return Err(AdminError::ReadOnly(source));
        }
        let existed = self.proxy.write.delete_frontend(key).await?;
        self.proxy.router.forget_key(key).await;
        if !existed {
            return Err(AdminError::NotFound(format!("no frontend {key:?}")));
        }
        tracing::info!("admin: frontend {key:?} deleted");
        Ok(json(
            StatusCode::OK,
            &json!({ "frontend": key, "deleted": true }),
        ))
    }

    /// `POST` (mark dead) or `DELETE` (revive) `/api/v1/frontends/<key>/backends/<index>/dead`.
    pub(super) async fn mark(&self, key: &str, index: usize, dead: bool) -> Answer {
        let Some((view, _)) = self.read(key).await? else {
            return Err(AdminError::NotFound(format!("no frontend {key:?}")));
        };
        let Some(url) = view.backends.get(index).cloned() else {
            return Err(AdminError::NotFound(format!(
                "frontend {key:?} has no backend {index} (it has {})",
                view.backends.len()
            )));
        };
        let route = view.route();
        let mut out = json!({ "frontend": key, "index": index, "url": url, "dead": dead });
        if dead {
            let written = self.proxy.mark_dead_by_operator(&route, index).await?;
            let ttl = self.proxy.config.dead_backend_ttl;
            out["ttl_ms"] = json!(ttl.as_millis() as u64);
            // `false`: an external checker owns the dead sets (`hchecker_ping`); the mark was only published.
            out["written"] = json!(written);
            tracing::info!("admin: backend {index} ({url:?}) of {key:?} marked dead for {ttl:?}");
        } else {
            let was_dead = self.proxy.revive_by_operator(&route, index).await?;
            out["was_dead"] = json!(was_dead);
            tracing::info!("admin: backend {index} ({url:?}) of {key:?} revived");
        }
        Ok(json(StatusCode::OK, &out))
    }

    /// `GET /api/v1/stats`: the last minute per frontend and backend, from this process's figures, and each
    /// mirror shadow's totals since start.
    pub(super) fn stats(&self) -> Response<Full<Bytes>> {
        let (frontends, dropped) = match &self.proxy.telemetry.window {
            Some(window) => (window.frontends(), window.dropped()),
            None => (Vec::new(), 0),
        };
        let frontends: Vec<Value> = frontends.iter().map(frontend_figures_json).collect();
        json(
            StatusCode::OK,
            &json!({
                "window_s": WINDOW_SECS,
                "rate_window_s": RATE_SECS,
                "frontends": frontends,
                "dropped": dropped,
                "mirrors": self.proxy.mirrors.report().iter().map(shadow_json).collect::<Vec<_>>(),
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages() {
        assert_eq!(page(None).unwrap(), (0, DEFAULT_COUNT));
        assert_eq!(page(Some("cursor=17&count=5")).unwrap(), (17, 5));
        assert_eq!(page(Some("cursor=&count=1000")).unwrap(), (0, 1000));
        assert!(page(Some("count=0")).is_err());
        assert!(page(Some("count=1001")).is_err());
        assert!(page(Some("cursor=x")).is_err());
    }

    #[test]
    fn backends_must_be_http_urls() {
        let ok = |b: &[&str]| valid_backends(&b.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(ok(&["http://10.0.0.1:8080", "https://b.example"]).is_ok());
        assert!(ok(&[]).is_ok());
        for bad in [
            "ftp://a",
            "10.0.0.1:80",
            "http://",
            " http://a",
            "http://a\n",
            "nope",
        ] {
            assert!(ok(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_masked() {
        let raw = RawHash::Fields(vec![
            ("secret".into(), "s3cret".into()),
            ("secret:app".into(), "other".into()),
            ("time_window".into(), "30s".into()),
        ]);
        let shown = policy_json(Some(&raw), Some(Ok(())));
        let text = shown.to_string();
        assert!(
            !text.contains("s3cret") && !text.contains("other"),
            "{text}"
        );
        assert!(text.contains("30s"), "{text}");
    }
}
