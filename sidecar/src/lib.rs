//! graylane-sidecar: the data plane. One runs beside each service instance.
//!
//! Owns: the listeners — `outbound` (the app's calls out), `inbound` (calls to the
//! app), `admin` — on one accept loop (`server`) with shared forwarding (`proxy`);
//! the control-plane stream (`discovery`) and the routing state it swaps in
//! (`routes`); the tag of a request on the way in and out (`tag`); and choosing an
//! instance among the candidates the routing crate returns (`balance`). Rules are parsed, validated and matched only in
//! `graylane-routing`; this crate never interprets a rule itself. Connections
//! iptables redirected to the outbound listener are sorted out in `transparent`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub(crate) mod admin;
pub mod app;
pub mod balance;
pub mod discovery;
pub(crate) mod gaps;
mod grpc;
pub(crate) mod health;
pub(crate) mod identity;
pub(crate) mod inbound;
pub mod iptables;
pub mod metrics;
pub(crate) mod outbound;
pub(crate) mod pipeline;
pub(crate) mod proxy;
pub(crate) mod routes;
pub mod server;
pub mod spans;
pub mod tag;
pub mod traffic;
pub(crate) mod trail;
pub mod transparent;
