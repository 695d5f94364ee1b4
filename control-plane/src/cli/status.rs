//! `graylane status`, and `rules apply --wait`'s progress.

use std::time::Duration;

use graylane_proto::v1 as pb;
use serde_json::json;
use tokio::time::Instant;

use super::client::{Client, Connect};
use super::output::{self, Table};
use super::{CliError, Format};
use crate::admin::scope;

fn labels(s: &pb::SidecarStatus) -> String {
    let mut pairs: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join(",")
}

fn lane(s: &pb::SidecarStatus) -> String {
    if s.lanes.is_empty() {
        "(base)".into()
    } else {
        s.lanes.join(",")
    }
}

/// How long until a certificate expires, for people: `23h59m` (hours up to two days,
/// so a fresh 24h certificate reads as such), `6d23h`, `42s`;
/// `expired` once past, `-` when none was issued (`not_after` 0).
fn expires_in(not_after: i64, now_secs: i64) -> String {
    if not_after == 0 {
        return "-".into();
    }
    let left = not_after - now_secs;
    let (d, h, m) = (left / 86_400, left % 86_400 / 3600, left % 3600 / 60);

    match left {
        ..=0 => "expired".into(),
        1..60 => format!("{left}s"),
        60..3600 => format!("{m}m"),
        3600..172_800 => format!("{}h{m}m", left / 3600),
        _ => format!("{d}d{h}h"),
    }
}

pub(crate) async fn run(connect: &Connect, format: Option<Format>) -> Result<(), CliError> {
    let mut client = connect.client().await?;
    let mut response = client
        .list_sidecars(pb::ListSidecarsRequest {})
        .await?
        .into_inner();
    // `-n` (or the context's namespace): that namespace's sidecars only.
    if let Some(namespace) = connect.namespace_filter() {
        response.sidecars.retain(|s| s.namespace == namespace);
    }
    let revision = response.revision;
    output::emit(
        format.unwrap_or(Format::Table),
        || {
            let mut t = Table::new(vec![
                "NAMESPACE",
                "SERVICE",
                "INSTANCE",
                "ADDRESS",
                "LABELS",
                "LANE",
                "ACKED",
                "NACK",
                "IDENTITY",
                "CERT EXPIRES",
                "SCOPE",
            ]);
            let now_secs = crate::now_ms() / 1000;
            for s in &response.sidecars {
                let acked = if s.acked_revision == revision {
                    format!("{} (current)", s.acked_revision)
                } else {
                    s.acked_revision.to_string()
                };
                let nack = if s.nack_reason.is_empty() {
                    "-".into()
                } else {
                    format!("rev {}: {}", s.nacked_revision, s.nack_reason)
                };
                t.row(vec![
                    s.namespace.clone(),
                    s.service.clone(),
                    s.instance_id.clone(),
                    s.address.clone(),
                    labels(s),
                    lane(s),
                    acked,
                    nack,
                    if s.identity.is_empty() {
                        "-".into()
                    } else {
                        s.identity.clone()
                    },
                    expires_in(s.cert_not_after, now_secs),
                    scope::column(s.endpoint_scope.as_ref()),
                ]);
            }
            t
        },
        || {
            json!({
                "revision": revision,
                "sidecars": response.sidecars.iter().map(|s| json!({
                    "namespace": s.namespace, "service": s.service,
                    "serviceAccount": s.service_account,
                    "instance": s.instance_id, "address": s.address,
                    "labels": s.labels, "lanes": s.lanes, "ackedRevision": s.acked_revision,
                    "nackedRevision": (!s.nack_reason.is_empty()).then_some(s.nacked_revision),
                    "nackReason": (!s.nack_reason.is_empty()).then_some(&s.nack_reason),
                    "connectedAtMs": s.connected_at_ms,
                    "identity": (!s.identity.is_empty()).then_some(&s.identity),
                    "certNotAfter": (s.cert_not_after != 0).then_some(s.cert_not_after),
                    "endpointScope": scope::json(s.endpoint_scope.as_ref()),
                })).collect::<Vec<_>>(),
            })
        },
    );
    Ok(())
}

/// Follows the rollout of `revision` on standard error until every connected sidecar
/// acked it (ok), one NACKed it (refused, with the reason), or `deadline` passed
/// (refused, naming `timeout` and where to look). The deadline is authoritative: an
/// answer that arrives after it is a timeout too, however the two raced.
#[allow(clippy::print_stderr)]
pub(crate) async fn wait_for_rollout(
    client: &mut Client,
    revision: u64,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), CliError> {
    let follow = async {
        let mut stream = client
            .watch_rollout(pb::WatchRolloutRequest { revision })
            .await?
            .into_inner();
        let mut last = None;
        while let Some(progress) = stream.message().await? {
            eprintln!(
                "revision {revision}: {}/{} sidecars acked",
                progress.acked, progress.total
            );
            if let Some(s) = progress.nacked.first() {
                return Err(CliError::refused(format!(
                    "revision {revision} rejected by {}/{}: {}",
                    s.service, s.instance_id, s.nack_reason
                )));
            }
            last = Some(progress);
        }
        match last {
            Some(p) if p.acked == p.total => Ok(()),
            _ => Err(CliError::unavailable(
                "the control plane ended the rollout watch early",
            )),
        }
    };
    let timed_out = || {
        CliError::refused(format!(
            "timed out after {timeout:?} waiting for every sidecar to ack revision {revision}; see graylane status"
        ))
    };
    let result = tokio::time::timeout_at(deadline, follow)
        .await
        .map_err(|_| timed_out())?;
    // `timeout_at` polls the watch before its timer, so a last ACK that arrives at or
    // after the deadline would still count as success: the clock decides instead.
    if result.is_ok() && Instant::now() >= deadline {
        return Err(timed_out());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::expires_in;

    #[test]
    fn expiry_reads_as_time_left() {
        let now = 1_000_000;
        assert_eq!(expires_in(0, now), "-");
        assert_eq!(expires_in(now - 1, now), "expired");
        assert_eq!(expires_in(now, now), "expired");
        assert_eq!(expires_in(now + 42, now), "42s");
        assert_eq!(expires_in(now + 90, now), "1m");
        assert_eq!(expires_in(now + 24 * 3600 - 60, now), "23h59m");
        assert_eq!(expires_in(now + 24 * 3600, now), "24h0m");
        assert_eq!(expires_in(now + 47 * 3600 + 120, now), "47h2m");
        assert_eq!(expires_in(now + 7 * 86_400 - 3600, now), "6d23h");
    }
}
