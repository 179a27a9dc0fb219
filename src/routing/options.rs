//! A frontend's route options, the `route:<frontend key>` hash (docs/redis-keys.md#route-options): read in the
//! route's pipeline, parsed once per lookup. Unknown fields and bad values cost only themselves: they are logged
//! naming the key and field, and the rest of the hash applies.

use std::sync::{Arc, LazyLock};

use crate::store::RawHash;

/// How a frontend spreads its requests over its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// `round_robin`: in list order, or in the `weights` split (smooth weighted round robin, as nginx).
    RoundRobin,
    /// `random`: a live backend drawn uniformly (or by weight).
    Random,
    /// `least_request`: the backend with fewer requests in flight (of two drawn at random when there are more
    /// than two), so a slow backend gets less traffic.
    LeastRequest,
}

/// The parsed `route:<key>` hash. Every field is optional; an absent hash is [`RouteOptions::none`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteOptions {
    /// `strip_prefix 1`: a path frontend's backends get the path without the prefix, for applications that do
    /// not know where they are mounted.
    pub strip_prefix: bool,
    /// `weights "3 1"`: one weight per backend in list order; 0 takes a backend out of rotation without
    /// removing it from the list (and so without renumbering the dead set).
    pub weights: Option<Arc<[u32]>>,
    /// `balance`: overrides the preset's selection for this frontend; `None` keeps it.
    pub balance: Option<Balance>,
}

static NONE: LazyLock<Arc<RouteOptions>> = LazyLock::new(|| Arc::new(RouteOptions::default()));

impl RouteOptions {
    /// The shared options of every frontend without a `route:` hash.
    pub fn none() -> Arc<RouteOptions> {
        NONE.clone()
    }

    /// Parse the `route:<key>` hash; each bad field is logged and ignored.
    pub fn parse(key: &str, raw: RawHash) -> Arc<RouteOptions> {
        let fields = match raw {
            RawHash::Absent => return RouteOptions::none(),
            RawHash::Error(e) => {
                tracing::warn!("malformed route:{key}: {e}");
                return RouteOptions::none();
            }
            RawHash::Fields(fields) => fields,
        };
        let mut options = RouteOptions::default();
        for (field, value) in &fields {
            if let Err(why) = options.set(field, value) {
                tracing::warn!("malformed route:{key}: field {field:?}: {why}");
            }
        }
        match options == RouteOptions::default() {
            true => RouteOptions::none(),
            false => Arc::new(options),
        }
    }

    /// Set one field from its text.
    pub fn set(&mut self, field: &str, value: &str) -> Result<(), String> {
        let value = value.trim();
        match field {
            "strip_prefix" => {
                self.strip_prefix = match value {
                    "1" | "true" | "yes" | "on" => true,
                    "0" | "false" | "no" | "off" | "" => false,
                    _ => return Err(format!("{value:?} is not 1 or 0")),
                }
            }
            "weights" => {
                let weights = value
                    .split([' ', ','])
                    .filter(|w| !w.is_empty())
                    .map(|w| {
                        w.parse::<u32>()
                            .map_err(|_| format!("{w:?} is not a non-negative integer"))
                    })
                    .collect::<Result<Vec<u32>, String>>()?;
                self.weights = (!weights.is_empty()).then(|| weights.into());
            }
            "balance" => {
                self.balance = Some(match value {
                    "round_robin" | "roundrobin" => Balance::RoundRobin,
                    "random" => Balance::Random,
                    "least_request" => Balance::LeastRequest,
                    _ => {
                        return Err(format!(
                            "{value:?} is not round_robin, random or least_request"
                        ))
                    }
                })
            }
            _ => return Err("unknown field".into()),
        }
        Ok(())
    }

    /// Backend `index`'s weight: its `weights` entry, 1 without weights, 0 past the end of a shorter list (a
    /// backend added after the weights were written waits for a weight).
    pub fn weight(&self, index: usize) -> u32 {
        match &self.weights {
            None => 1,
            Some(weights) => weights.get(index).copied().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> RawHash {
        RawHash::from_pairs(pairs)
    }

    #[test]
    fn parses_each_field() {
        let options = RouteOptions::parse(
            "a.com/api",
            fields(&[
                ("strip_prefix", "1"),
                ("weights", "3 1"),
                ("balance", "least_request"),
            ]),
        );
        assert!(options.strip_prefix);
        assert_eq!(options.weight(0), 3);
        assert_eq!(options.weight(1), 1);
        assert_eq!(options.weight(2), 0);
        assert_eq!(options.balance, Some(Balance::LeastRequest));
    }

    #[test]
    fn a_bad_field_costs_only_itself() {
        let options = RouteOptions::parse(
            "a.com",
            fields(&[("weights", "3 x"), ("strip_prefix", "1"), ("typo", "1")]),
        );
        assert!(options.strip_prefix);
        assert_eq!(options.weights, None);
        assert!(Arc::ptr_eq(
            &RouteOptions::parse("a.com", RawHash::Absent),
            &RouteOptions::none()
        ));
    }
}
