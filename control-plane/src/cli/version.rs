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
            .map(|r| r.into_inner().version)
            .map_err(|s| CliError::from(s).message),
        Err(e) => Err(e.message),
    };
    output::emit(
        format.unwrap_or(Format::Table),
        || {
            let mut t = Table::new(vec!["COMPONENT", "VERSION"]);
            t.row(vec!["graylane (client)".into(), client_version.into()]);
            let server_cell = match &server {
                Ok(v) => v.clone(),
                Err(e) => format!("unknown ({e})"),
            };
            t.row(vec!["graylane-control".into(), server_cell]);
            t
        },
        || {
            json!({
                "client": client_version,
                "server": server.as_ref().ok(),
                "serverError": server.as_ref().err(),
            })
        },
    );
    Ok(())
}
