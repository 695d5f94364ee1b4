//! The read-only rules commands: `get` and `history`.

use graylane_proto::v1 as pb;
use graylane_routing::{Kind, Resource, RuleSet};
use serde_json::json;

use super::super::client::Connect;
use super::super::output::{self, Table};
use super::super::{CliError, Format};
use super::parse_ref;

pub(super) async fn get(
    connect: &Connect,
    format: Format,
    selector: Option<String>,
    revision: Option<u64>,
) -> Result<(), CliError> {
    let (kind, name) = match selector.as_deref() {
        None => (String::new(), String::new()),
        Some(s) => match s.split_once('/') {
            Some(_) => parse_ref(s).map(|(k, n)| (k.to_string(), n))?,
            None => (
                s.parse::<Kind>()
                    .map_err(|_| CliError::usage(format!("unknown kind {s:?} ({})", Kind::NAMES)))?
                    .to_string(),
                String::new(),
            ),
        },
    };
    let mut client = connect.client().await?;
    let response = client
        .get(pb::GetRequest {
            kind,
            name,
            revision,
            namespace: connect.namespace_filter().unwrap_or_default().to_owned(),
        })
        .await?
        .into_inner();
    // Parsed, not validated as a set: a selection (one kind, one resource) may name
    // resources outside it, e.g. a RoutePolicy's lane override naming a Lane; the
    // server validated the whole set before committing it.
    let files = [("(server response)".to_owned(), response.rules.clone())];
    let set = RuleSet::parse_files(&files).map_err(|e| {
        CliError::unavailable(format!(
            "the server sent rules this CLI cannot read: {}",
            e[0]
        ))
    })?;
    match format {
        Format::Yaml => output::text(&response.rules),
        Format::Json => output::raw(
            Format::Json,
            // kubectl's List shape, which `rules apply -f` reads back.
            &json!({
                "apiVersion": "graylane.io/v1",
                "kind": "List",
                "revision": response.revision,
                "items": set.iter().collect::<Vec<_>>(),
            }),
        ),
        // Every namespace: a NAMESPACE column, as `kubectl get -A` (`-` for Lanes,
        // which are mesh-wide). One namespace: the column would only repeat it.
        Format::Table => {
            let every = connect.namespace_filter().is_none();
            let mut t = Table::new(if every {
                vec!["KIND", "NAMESPACE", "NAME", "SUMMARY"]
            } else {
                vec!["KIND", "NAME", "SUMMARY"]
            });
            for r in set.iter() {
                let mut row = vec![r.kind().to_string()];
                if every {
                    row.push(if r.is_namespaced() {
                        r.namespace().to_string()
                    } else {
                        "-".to_string()
                    });
                }
                row.extend([r.name().to_string(), summary(r)]);
                t.row(row);
            }
            output::emit(Format::Table, || t, || json!(null));
        }
    }
    Ok(())
}

pub(super) async fn history(connect: &Connect, format: Format, limit: u32) -> Result<(), CliError> {
    let mut client = connect.client().await?;
    let entries = client
        .history(pb::HistoryRequest { limit })
        .await?
        .into_inner()
        .entries;
    output::emit(
        format,
        || {
            let mut t = Table::new(vec!["REVISION", "APPLIED", "BY", "RESOURCES", "SUMMARY"]);
            for e in &entries {
                t.row(vec![
                    e.revision.to_string(),
                    output::timestamp(e.applied_at_ms),
                    e.applied_by.clone(),
                    e.resources.to_string(),
                    e.summary.clone(),
                ]);
            }
            t
        },
        || {
            json!(
                entries
                    .iter()
                    .map(|e| output::history_entry(
                        e.revision,
                        e.applied_at_ms,
                        &e.applied_by,
                        e.resources,
                        &e.summary,
                    ))
                    .collect::<Vec<_>>()
            )
        },
    );
    Ok(())
}

/// One line about a resource for `rules get -o table`.
fn summary(resource: &Resource) -> String {
    match resource {
        Resource::Lane(l) => {
            let selector: Vec<String> = l
                .spec
                .selector
                .as_map()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let fallback: Vec<String> = l.spec.fallback.iter().map(ToString::to_string).collect();
            format!(
                "tag={} selector={} fallback=[{}]",
                l.spec.tag.as_str(),
                selector.join(","),
                fallback.join(",")
            )
        }
        Resource::RoutePolicy(p) => {
            let weights: Vec<String> = p
                .spec
                .default
                .iter()
                .map(|w| format!("{}:{}", w.subset, w.weight))
                .collect();
            format!(
                "service={} release={} subsets={} default=[{}]",
                p.spec.service.as_str(),
                p.spec.release,
                p.spec.subsets.len(),
                weights.join(",")
            )
        }
        Resource::TagPolicy(t) => {
            let services: Vec<&str> = t.spec.services.iter().map(|s| s.as_str()).collect();
            // A rollout's rule is named, so `rules get` shows which share it sets now.
            let owned: Vec<String> = t
                .spec
                .rules
                .iter()
                .filter_map(|r| {
                    let rollout = r.rollout.as_ref()?;
                    Some(format!("{}%:{rollout}", r.matches.percent.unwrap_or(0.0)))
                })
                .collect();
            let owned = if owned.is_empty() {
                String::new()
            } else {
                format!(" rollouts=[{}]", owned.join(","))
            };
            format!(
                "services={} incoming={} rules={}{owned}",
                services.join(","),
                t.spec.incoming,
                t.spec.rules.len()
            )
        }
        Resource::LaneRollout(r) => {
            let steps: Vec<String> = r
                .spec
                .steps
                .iter()
                .map(|s| format!("{}%/{}", s.percent, s.hold))
                .collect();
            format!(
                "lane={} entry={} steps=[{}] interval={}",
                r.spec.lane,
                r.spec.entry,
                steps.join(","),
                r.spec.analysis.interval
            )
        }
        Resource::PeerPolicy(p) => {
            let services = p.spec.services.as_ref().map_or_else(
                || "*".to_owned(),
                |s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","),
            );
            format!("mtls={} services={services}", p.spec.mtls)
        }
    }
}
