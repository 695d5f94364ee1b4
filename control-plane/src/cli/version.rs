//! `graylane version`: this CLI's version, and the control plane's when it answers
//! (an unreachable server is reported in the output, not as a failure: the client
//! version alone is still the answer).

use graylane_proto::v1 as pb;
use serde_json::json;

use super::client::Connect;
use super::output::{self, Table};
use super::{CliError, Format};

pub(crate) async fn run(connect: &Connect, format: Option<Format>) -> Result<(), CliError> {
    let client_version = env!("CARGO_PKG_VERSION");
    let server = match connect.client().await {
        Ok(mut client) => client
            .version(pb::VersionRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| CliError::from(s).message),
        Err(e) => Err(e.message),
    };
    // A replica that answers but cannot serve (its store unavailable) says why.
    let not_ready = server
        .as_ref()
        .ok()
        .map(|v| v.not_ready.clone())
        .filter(|why| !why.is_empty());
    let server = server.map(|v| v.version);
    output::emit(
        format.unwrap_or(Format::Table),
        || {
            let mut t = Table::new(vec!["COMPONENT", "VERSION"]);
            t.row(vec!["graylane (client)".into(), client_version.into()]);
            let server_cell = match (&server, &not_ready) {
                (Ok(v), None) => v.clone(),
                (Ok(v), Some(why)) => format!("{v} (not ready: {why})"),
                (Err(e), _) => format!("unknown ({e})"),
            };
            t.row(vec!["graylane-control".into(), server_cell]);
            t
        },
        || {
            json!({
                "client": client_version,
                "server": server.as_ref().ok(),
                "serverError": server.as_ref().err(),
                "serverNotReady": not_ready,
            })
        },
    );
    Ok(())
}
