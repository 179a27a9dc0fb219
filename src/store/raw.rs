//! What the lookup pipeline reads besides the frontend list: the raw policy hashes of a frontend key, handed
//! to the policy layer to parse.

use redis::Value;

/// The prefixes of the hashes read with every frontend key: the policies, in the order of [`RawPolicy`]'s
/// fields, then the route options and the mirror.
pub const HASH_PREFIXES: [&str; 5] = ["guard:", "ratelimit:", "breaker:", "route:", "mirror:"];

/// How many of [`HASH_PREFIXES`] are policies (read for every key); the rest are the route options and the
/// mirror, which a lookup may skip (`Lookup::options`).
pub const POLICY_HASHES: usize = 3;

/// The raw policy hashes of one frontend key, as the lookup pipeline read them.
#[derive(Debug, Clone, Default)]
pub struct RawPolicy {
    pub guard: RawHash,
    pub ratelimit: RawHash,
    pub breaker: RawHash,
}

/// One `HGETALL` reply: the fields, or the server's error (a key of the wrong type).
#[derive(Debug, Clone, Default)]
pub enum RawHash {
    /// The key does not exist (an empty hash cannot exist in Redis).
    #[default]
    Absent,
    Fields(Vec<(String, String)>),
    Error(String),
}

impl RawHash {
    /// An `HGETALL` reply: a flat array (RESP2), a map (RESP3), or a server error.
    pub fn from_value(value: Value) -> RawHash {
        let text = |v: Value| match v {
            Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            Value::SimpleString(s) => s,
            Value::Int(i) => i.to_string(),
            _ => String::new(),
        };
        let fields: Vec<(String, String)> = match value {
            Value::ServerError(e) => {
                return RawHash::Error(format!("{} {}", e.code(), e.details().unwrap_or("")))
            }
            Value::Map(pairs) => pairs.into_iter().map(|(k, v)| (text(k), text(v))).collect(),
            Value::Array(items) => {
                let mut it = items.into_iter();
                let mut out = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    out.push((text(k), text(v)));
                }
                out
            }
            _ => Vec::new(),
        };
        if fields.is_empty() {
            RawHash::Absent
        } else {
            RawHash::Fields(fields)
        }
    }

    /// A hash from field/value pairs, as a routes file or a test writes it.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> RawHash {
        RawHash::Fields(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    pub fn is_absent(&self) -> bool {
        matches!(self, RawHash::Absent)
    }
}
