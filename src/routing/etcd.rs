//! Routes from etcd, httprouter's layout (`--etcdurl URL --etcdkey /domains`): every key
//! `<etcdkey>/<host>/<routeName>` holds one backend URL of `<host>`, the backends of a host in key order.
//!
//! Watch-driven, over etcd's v3 JSON API (`/v3/kv/range`, then `/v3/watch` from the next revision): no etcd
//! read per request. A put, a delete or a lease's expiry applies as soon as etcd reports it. A value that is
//! not an http(s) URL is logged with its key and ignored. While etcd is unreachable the routes already known
//! keep serving; on reconnection the whole prefix is read again and the watch resumes from that revision.
//! An etcd that is down at start-up leaves the table empty (503) until it answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;

use super::table::RouteTable;
use crate::config::routes::FileFrontend;
use crate::config::{EtcdApi, EtcdConfig};

/// How long connecting to etcd may take.
const DIAL: Duration = Duration::from_secs(2);
/// The longest pause between two attempts to reach etcd.
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Keep `table` equal to what etcd holds under the prefix, for as long as the task runs.
pub async fn follow(config: EtcdConfig, table: Arc<RouteTable>) {
    let prefix = format!("{}/", config.key);
    let mut pause = Duration::from_millis(100);
    let mut said = false;
    loop {
        let followed = match config.api {
            EtcdApi::V3 => sync_and_watch(&config.url, &prefix, &table).await,
            EtcdApi::V2 => sync_and_watch_v2(&config.url, &config.key, &prefix, &table).await,
        };
        match followed {
            Ok(()) => pause = Duration::from_millis(100),
            Err(e) => {
                if !said {
                    tracing::warn!(
                        "etcd at {}: {e}; serving the routes known so far, retrying",
                        config.url
                    );
                    said = true;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
                continue;
            }
        }
        said = false;
    }
}

/// Read every key under `prefix`, load them, then apply the watch's events until the stream ends.
async fn sync_and_watch(base: &url::Url, prefix: &str, table: &RouteTable) -> Result<(), String> {
    let range = serde_json::json!({
        "key": B64.encode(prefix),
        "range_end": B64.encode(prefix_end(prefix)),
    });
    let answer = call(base, "v3/kv/range", &range).await?;
    let revision = revision_of(&answer)?;
    let mut keys = BTreeMap::new();
    for kv in answer["kvs"].as_array().into_iter().flatten() {
        if let (Some(key), Some(value)) = (decode(&kv["key"]), decode(&kv["value"])) {
            keys.insert(key, value);
        }
    }
    apply(&keys, prefix, table);
    tracing::info!(
        "etcd: {} keys under {prefix} at revision {revision}",
        keys.len()
    );
    let watch = serde_json::json!({
        "create_request": {
            "key": B64.encode(prefix),
            "range_end": B64.encode(prefix_end(prefix)),
            "start_revision": (revision + 1).to_string(),
        }
    });
    let response = post_json(base, "v3/watch", &watch).await?;
    if !response.status().is_success() {
        return Err(format!("watch answered {}", response.status()));
    }
    let mut body = response.into_body();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("watch: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        // One JSON object per watch response; a frame may hold several, or part of one.
        let mut stream = serde_json::Deserializer::from_slice(&pending).into_iter::<Value>();
        let mut used = 0;
        let mut changed = false;
        while let Some(message) = stream.next() {
            let message = match message {
                Ok(message) => message,
                Err(e) if e.is_eof() => break,
                Err(e) => return Err(format!("watch: {e}")),
            };
            used = stream.byte_offset();
            let result = &message["result"];
            if result.get("canceled").and_then(Value::as_bool) == Some(true)
                || result.get("compact_revision").is_some()
            {
                return Err("the watch was cancelled (compaction); reading again".into());
            }
            for event in result["events"].as_array().into_iter().flatten() {
                let Some(key) = decode(&event["kv"]["key"]) else {
                    continue;
                };
                match event["type"].as_str() {
                    Some("DELETE") => {
                        keys.remove(&key);
                    }
                    _ => {
                        if let Some(value) = decode(&event["kv"]["value"]) {
                            keys.insert(key, value);
                        }
                    }
                }
                changed = true;
            }
        }
        pending.drain(..used);
        if changed {
            apply(&keys, prefix, table);
        }
    }
    Err("the watch stream ended".into())
}

/// The v2 keys API, as httprouter watched it: a recursive GET, then long-polling `?wait=true&recursive=true`
/// from the next index, one event per answer (`set`, `update`, `create`, `compareAndSwap` put a key; `delete`,
/// `expire`, `compareAndDelete` remove it).
async fn sync_and_watch_v2(
    base: &url::Url,
    dir: &str,
    prefix: &str,
    table: &RouteTable,
) -> Result<(), String> {
    let mut url = base
        .join(&format!("v2/keys{dir}"))
        .map_err(|e| e.to_string())?;
    url.set_query(Some("recursive=true"));
    let (status, index, answer) = get_v2(&url, true).await?;
    let mut keys = BTreeMap::new();
    match (status, answer["errorCode"].as_i64()) {
        // Not there yet: no routes.
        (404, Some(100)) => {}
        (200, _) => collect_v2(&answer["node"], &mut keys),
        _ => return Err(format!("GET {dir} answered {status}")),
    }
    apply(&keys, prefix, table);
    let mut index = index
        .or_else(|| answer["index"].as_i64())
        .ok_or("no X-Etcd-Index in etcd's answer")?;
    tracing::info!(
        "etcd v2: {} keys under {prefix} at index {index}",
        keys.len()
    );
    loop {
        let mut wait = url.clone();
        wait.set_query(Some(&format!(
            "wait=true&recursive=true&waitIndex={}",
            index + 1
        )));
        let (status, _, event) = get_v2(&wait, false).await?;
        if status != 200 {
            // 401 "event index cleared": too far behind; read everything again.
            return Err(format!("watch answered {status}"));
        }
        let node = &event["node"];
        index = node["modifiedIndex"].as_i64().unwrap_or(index + 1);
        let Some(key) = node["key"].as_str() else {
            continue;
        };
        match event["action"].as_str().unwrap_or_default() {
            "delete" | "expire" | "compareAndDelete" => {
                // A deleted directory takes its keys with it.
                let dir = format!("{key}/");
                keys.retain(|k, _| k != key && !k.starts_with(&dir));
            }
            _ => {
                if let Some(value) = node["value"].as_str() {
                    keys.insert(key.to_string(), value.to_string());
                }
            }
        }
        apply(&keys, prefix, table);
    }
}

/// Every key/value under a v2 node, directories flattened.
fn collect_v2(node: &Value, keys: &mut BTreeMap<String, String>) {
    if let (Some(key), Some(value)) = (node["key"].as_str(), node["value"].as_str()) {
        keys.insert(key.to_string(), value.to_string());
    }
    for child in node["nodes"].as_array().into_iter().flatten() {
        collect_v2(child, keys);
    }
}

/// A v2 GET: the status, the `X-Etcd-Index` header and the JSON answer. `bounded`: the answer must come
/// within the dial time (a long-poll waits as long as it takes).
async fn get_v2(url: &url::Url, bounded: bool) -> Result<(u16, Option<i64>, Value), String> {
    let response =
        crate::upstream::once::send(url, http::Method::GET, &[], Bytes::new(), DIAL).await?;
    let status = response.status().as_u16();
    let index = response
        .headers()
        .get("x-etcd-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let collect = response.into_body().collect();
    let body = match bounded {
        true => tokio::time::timeout(DIAL, collect)
            .await
            .map_err(|_| "no answer in time".to_string())?,
        false => collect.await,
    }
    .map_err(|e| e.to_string())?
    .to_bytes();
    let answer = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    Ok((status, index, answer))
}

/// Turn the keys into frontends, in key order, and load them.
fn apply(keys: &BTreeMap<String, String>, prefix: &str, table: &RouteTable) {
    let mut hosts: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (key, value) in keys {
        // `<host>/<name>`, or `<host>/<path...>/<name>` for a path frontend `<host>/<path...>`.
        let Some((host, _name)) = key
            .strip_prefix(prefix)
            .and_then(|rest| rest.rsplit_once('/'))
        else {
            continue;
        };
        if host.is_empty() || host.starts_with('/') {
            continue;
        }
        match crate::config::log_url(value.trim()) {
            Ok(_) => hosts
                .entry(host)
                .or_default()
                .push(value.trim().to_string()),
            Err(e) => tracing::warn!("etcd: {key}: {value:?} is not a backend URL ({e}); ignored"),
        }
    }
    let frontends = hosts
        .into_iter()
        .map(|(host, backends)| FileFrontend {
            key: host.to_string(),
            identifier: host.to_string(),
            backends,
            policies: Default::default(),
            healthcheck: Vec::new(),
            options: Vec::new(),
        })
        .collect();
    table.replace(frontends);
}

/// POST a JSON request to etcd's gateway; the answer's body is the caller's to read (the watch streams).
async fn post_json(
    base: &url::Url,
    path: &str,
    request: &Value,
) -> Result<http::Response<hyper::body::Incoming>, String> {
    let url = base.join(path).map_err(|e| e.to_string())?;
    crate::upstream::once::send(
        &url,
        http::Method::POST,
        &[(http::header::CONTENT_TYPE, "application/json")],
        Bytes::from(request.to_string()),
        DIAL,
    )
    .await
}

/// POST a JSON request to etcd's gateway and return its JSON answer.
async fn call(base: &url::Url, path: &str, request: &Value) -> Result<Value, String> {
    let response = post_json(base, path, request).await?;
    let status = response.status();
    let body = tokio::time::timeout(DIAL, response.into_body().collect())
        .await
        .map_err(|_| format!("{path}: no answer in time"))?
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("{path} answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{path}: {e}"))
}

fn revision_of(answer: &Value) -> Result<i64, String> {
    answer["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .or_else(|| answer["header"]["revision"].as_i64())
        .ok_or_else(|| "no revision in etcd's answer".to_string())
}

fn decode(field: &Value) -> Option<String> {
    let bytes = B64.decode(field.as_str()?).ok()?;
    String::from_utf8(bytes).ok()
}

/// The end of the range of keys starting with `prefix` (etcd's `WithPrefix`).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_hosts_in_key_order_and_bad_values_are_skipped() {
        let table = RouteTable::default();
        let keys: BTreeMap<String, String> = [
            ("/domains/a.com/web2", "http://10.0.0.2:80"),
            ("/domains/a.com/web1", "http://10.0.0.1:80"),
            ("/domains/a.com/bad", "not a url"),
            ("/domains/b.com:8080/x", "http://10.0.0.3:80"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        apply(&keys, "/domains/", &table);
        let a = table.get("a.com", "a.com").unwrap();
        assert_eq!(a.backends, ["http://10.0.0.1:80", "http://10.0.0.2:80"]);
        assert!(table.get("b.com:8080", "b.com:8080").is_some());
        assert_eq!(prefix_end("/domains/"), b"/domains0");
    }
}
