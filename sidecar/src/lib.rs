//! graylane-sidecar: the data plane. One runs beside each service instance.
//!
//! Owns: the control-plane stream (`discovery`) and the routing state it swaps in
//! (`routes`), the tag of a request on the way in and out (`tag`), choosing an
//! instance among the candidates the routing crate returns (`balance`), and the admin
//! listener (`admin`). Rules are parsed, validated and matched only in
//! `graylane-routing`; this crate never interprets a rule itself.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod balance;
pub mod discovery;
pub mod routes;
pub mod tag;
