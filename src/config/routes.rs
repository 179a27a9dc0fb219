//! The routes file (`--routes FILE`): frontends in TOML, the source that needs no Redis.
//!
//! ```toml
//! [frontends."www.example.com"]
//! backends = ["http://127.0.0.1:8081", "http://127.0.0.1:8082"]
//!
//! [frontends."*.example.org"]
//! identifier = "org-sites"          # optional, element 0 of a Redis list
//! backends = ["http://127.0.0.1:8083"]
//!
//! [frontends."*.example.org".ratelimit]   # the fields of `ratelimit:<key>`, as in Redis
//! rate = 100
//! period = "1s"
//! ```
//!
//! A frontend's key follows the Redis key's rules (`frontend:<key>`): a Host, `*.<parent>` wildcards, the `*`
//! catch-all, each with an optional path (`"www.example.com/api"`, a path frontend). `strip_prefix`, `weights`
//! and `balance` are the route options of `route:<key>`. `guard`, `ratelimit` and `breaker` sub-tables hold the same fields as the Redis hashes of those
//! names; their values may be strings, numbers or booleans. Anything else is an error naming its line.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesToml {
    #[serde(default)]
    frontends: BTreeMap<String, FrontendToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontendToml {
    #[serde(default)]
    identifier: Option<String>,
    backends: Vec<String>,
    #[serde(default)]
    guard: Option<toml::Table>,
    #[serde(default)]
    ratelimit: Option<toml::Table>,
    #[serde(default)]
    breaker: Option<toml::Table>,
    #[serde(default)]
    healthcheck: Option<toml::Table>,
    /// The fields of `route:<key>` (docs/redis-keys.md#route-options).
    #[serde(default)]
    strip_prefix: Option<bool>,
    #[serde(default)]
    weights: Option<Vec<u32>>,
    #[serde(default)]
    balance: Option<String>,
}

/// One frontend of the file, ready for the routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFrontend {
    /// The frontend key (`www.example.com`, `*.example.org`, `*`).
    pub key: String,
    /// Element 0 of a Redis list: logged by the Hipache access-log format, never used for routing.
    pub identifier: String,
    pub backends: Vec<String>,
    /// The `guard`, `ratelimit` and `breaker` sub-tables as field/value pairs, in the order of
    /// [`FileFrontend::policy_names`]; empty when absent.
    pub policies: [Vec<(String, String)>; 3],
    /// The `healthcheck` sub-table (`path`, `status`, `body`, as the `healthcheck:<host>` hash) for
    /// `--active-healthcheck`; empty when absent.
    pub healthcheck: Vec<(String, String)>,
    /// The route options (`strip_prefix`, `weights`, `balance`) as the fields of a `route:<key>` hash; empty
    /// when none is set.
    pub options: Vec<(String, String)>,
}

impl FileFrontend {
    /// The names of the policy sub-tables, in the order of `policies` (the Redis hash prefixes without `:`).
    pub fn policy_names() -> [&'static str; 3] {
        ["guard", "ratelimit", "breaker"]
    }
}

/// A routes file that cannot be used: the message names the file and, for a syntax or type error, the line
/// and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutesFileError(pub String);

impl std::fmt::Display for RoutesFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RoutesFileError {}

/// Read and parse the routes file.
pub fn load(path: &Path) -> Result<Vec<FileFrontend>, RoutesFileError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| RoutesFileError(format!("{}: {e}", path.display())))?;
    parse(&text).map_err(|e| RoutesFileError(format!("{}: {e}", path.display())))
}

/// Parse the text of a routes file.
pub fn parse(text: &str) -> Result<Vec<FileFrontend>, String> {
    let file: RoutesToml = toml::from_str(text).map_err(|e| {
        let message = e.message().trim_end().to_string();
        match e.span() {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                format!("line {line} column {column}: {message}")
            }
            None => message,
        }
    })?;
    file.frontends
        .into_iter()
        .map(|(key, frontend)| {
            if key.is_empty() {
                return Err("a frontend key is empty".to_string());
            }
            let fields = |table: Option<toml::Table>, name: &str| {
                table
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(field, value)| match value {
                        toml::Value::String(s) => Ok((field, s)),
                        toml::Value::Integer(i) => Ok((field, i.to_string())),
                        toml::Value::Float(f) => Ok((field, f.to_string())),
                        toml::Value::Boolean(b) => Ok((field, (b as u8).to_string())),
                        other => Err(format!(
                            "frontends.\"{key}\".{name}.{field}: expected a string, number or boolean, found {}",
                            other.type_str()
                        )),
                    })
                    .collect::<Result<Vec<_>, String>>()
            };
            let policies = [
                fields(frontend.guard, "guard")?,
                fields(frontend.ratelimit, "ratelimit")?,
                fields(frontend.breaker, "breaker")?,
            ];
            let healthcheck = fields(frontend.healthcheck, "healthcheck")?;
            let mut options = Vec::new();
            if let Some(strip) = frontend.strip_prefix {
                options.push(("strip_prefix".to_string(), (strip as u8).to_string()));
            }
            if let Some(weights) = frontend.weights {
                if weights.len() != frontend.backends.len() {
                    return Err(format!(
                        "frontends.\"{key}\".weights: {} weights for {} backends",
                        weights.len(),
                        frontend.backends.len()
                    ));
                }
                let text: Vec<String> = weights.iter().map(u32::to_string).collect();
                options.push(("weights".to_string(), text.join(" ")));
            }
            if let Some(balance) = frontend.balance {
                if !["round_robin", "random", "least_request"].contains(&balance.as_str()) {
                    return Err(format!(
                        "frontends.\"{key}\".balance: {balance:?} is not round_robin, random or least_request"
                    ));
                }
                options.push(("balance".to_string(), balance));
            }
            Ok(FileFrontend {
                identifier: frontend.identifier.unwrap_or_else(|| key.clone()),
                key,
                backends: frontend.backends,
                policies,
                healthcheck,
                options,
            })
        })
        .collect()
}

/// The 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontends_with_policies() {
        let parsed = parse(
            "[frontends.\"a.com\"]\nbackends = [\"http://b:1\"]\n[frontends.\"a.com\".ratelimit]\nrate = 5\nper = \"1s\"\n",
        )
        .unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].key, "a.com");
        assert_eq!(parsed[0].identifier, "a.com");
        assert_eq!(parsed[0].backends, ["http://b:1"]);
        assert_eq!(
            parsed[0].policies[1],
            [
                ("per".to_string(), "1s".to_string()),
                ("rate".into(), "5".into())
            ]
        );
    }

    #[test]
    fn errors_name_the_line_and_column() {
        let e = parse("[frontends.\"a.com\"]\nbackends = [\"x\",\n").unwrap_err();
        assert!(e.starts_with("line 2 column "), "{e}");
        let e = parse("[frontends.\"a.com\"]\nbackend = [\"x\"]\n").unwrap_err();
        assert!(
            e.starts_with("line 2 column 1: unknown field `backend`"),
            "{e}"
        );
        let e = parse("[frontends.\"a.com\"]\nbackends = \"x\"\n").unwrap_err();
        assert!(e.starts_with("line 2 column 12: "), "{e}");
    }
}
