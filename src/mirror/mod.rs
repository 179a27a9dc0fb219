//! Traffic mirroring (docs/mirroring.md): copies of live requests sent to shadows whose answers the client
//! never sees. [`send`] is the one exchange both users share: the Redis presets' per-frontend `mirror:<key>`
//! shadows ([`shadows`]) and the gonfork preset's outbounds (`nfork`).
//!
//! The active exchange is never held back: the request body is copied as it streams to the backend
//! (`body::Tee`), and the copies go out once it has been sent, on tasks of their own.

pub mod send;
pub mod shadows;

pub use send::{hash_body, send_copy, Answer, BodyHasher, Failed, Failure, Head};
pub use shadows::{ActiveOutcome, ActiveSide, MirrorMetrics, Mirrors, ShadowReport};
