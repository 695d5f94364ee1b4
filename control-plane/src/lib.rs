//! graylane's control plane: it stores versioned rule sets (`store`), validates and
//! changes them with `graylane-routing` (`control`), pushes snapshots of rules and
//! endpoints to every connected sidecar and tracks their ACK/NACK (`push`), and serves
//! the admin API the `graylane` CLI calls (`api`); with etcd, the instance registry
//! replicas share (`cluster`); and it is the mesh CA (`ca`), serving its own gRPC over
//! TLS with a certificate it renews (`tls`); it drives progressive lane rollouts from
//! the sidecars' traffic reports (`rollout`). It never routes traffic:
//! that is the sidecar's job. The CLI itself lives in `cli`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub(crate) mod admin;
pub mod api;
pub mod ca;
pub mod cli;
pub mod cluster;
pub mod control;
pub mod http;
pub mod inject;
pub mod push;
pub(crate) mod rollout;
pub mod server;
pub mod store;
pub mod tls;
pub mod traces;
pub mod traffic;
pub mod webhook;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
