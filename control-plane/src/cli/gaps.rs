//! `graylane gaps`: which services' apps drop the lane, from the propagation gaps the
//! sidecars flagged on their spans (see the sidecar's `gaps` module).

use graylane_proto::v1 as pb;
use serde_json::{Value, json};

use super::client::Connect;
use super::output::{self, Table};
use super::{CliError, Format};

/// `gaps -o json`, also the HTTP API's `GET /api/v1/gaps` answer.
pub(crate) fn to_json(gaps: &[pb::Gap]) -> Value {
    json!(
        gaps.iter()
            .map(|g| json!({
                "service": g.service, "destination": g.destination, "count": g.count,
                "exampleTraceId": g.example_trace_id,
            }))
            .collect::<Vec<_>>()
    )
}

pub(crate) async fn run(connect: &Connect, format: Option<Format>) -> Result<(), CliError> {
    let mut client = connect.client().await?;
    let gaps = client.gaps(pb::GapsRequest {}).await?.into_inner().gaps;
    output::emit(
        format.unwrap_or(Format::Table),
        || {
            let mut t = Table::new(vec!["SERVICE", "DESTINATION", "GAPS", "EXAMPLE TRACE"]);
            for g in &gaps {
                t.row(vec![
                    g.service.clone(),
                    g.destination.clone(),
                    g.count.to_string(),
                    g.example_trace_id.clone(),
                ]);
            }
            t
        },
        || to_json(&gaps),
    );
    if gaps.is_empty() && format.unwrap_or(Format::Table) == Format::Table {
        eprintln!("no propagation gap seen: every tagged request's calls kept the lane");
    }
    Ok(())
}
