//! Shared harness for the black-box tests: a real redis-server, real test backends, the real
//! hypache binary, and a raw HTTP client. Nothing is mocked. Waiting is always polling for a
//! condition with a deadline.
#![allow(dead_code, unused_imports)]

pub mod admin;
pub mod backend;
pub mod etcd;
pub mod http;
pub mod logline;
pub mod metrics;
pub mod proxy;
pub mod redis_server;
pub mod tls;
pub mod wait;
pub mod webdriver;

pub use backend::{refused_addr, refused_url, Backend, Body, Reply, Request, Step};
pub use etcd::EtcdServer;
pub use http::{
    build_request, connection_refused, exchange, get, raw_request, request, ClientConn, Resp,
};
pub use proxy::{parse_listening_tls, spawn_raw, CliOutput, Proxy, SOON};
pub use redis_server::{RedisServer, Subscriber};
pub use tls::{client_hello_bytes, tls_connect, Leaf, TestCa, TlsBackend, TlsConn};
pub use wait::{assert_eventually, eventually, wait_until, Gate};

use std::time::Duration;

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Whether `s` is a lowercase 8-4-4-4-12 hex UUID with version nibble 4.
pub fn is_uuid_v4_lower(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    groups.len() == 5
        && groups.iter().zip(lens).all(|(g, n)| {
            g.len() == n
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        && groups[2].starts_with('4')
}
