//! graylane's gRPC API, generated from `proto/graylane.proto`: the `Discovery` stream
//! every sidecar holds open, and the `Admin` API the CLI calls. No rule logic lives
//! here; the rule model is `graylane-routing`, the server is `graylane-control`.

#![allow(unreachable_pub, clippy::all, rust_2018_idioms)]

mod codec;
mod url;

pub use self::codec::Codec;
pub use self::url::{GrpcUrl, control_plane_urls};

/// Version 1 of the API (`package graylane.v1`).
pub mod v1 {
    tonic::include_proto!("graylane.v1");
}
