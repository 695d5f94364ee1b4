//! `graylane rollout status [NAME]` and `graylane rollout pause|resume|promote|abort
//! NAME`: progressive lane releases (release.md), in the namespace of `-n`.
//!
//! The control plane sends each rollout as the JSON document the HTTP API answers, so
//! `-o json` prints exactly `GET /api/v1/rollouts[/NAME]`; the table and the detail
//! view are read from that document.

use clap::Subcommand;
use graylane_proto::v1 as pb;
use serde_json::Value;

use super::client::Connect;
use super::output::{self, Table};
use super::{CliError, Format};

/// The LAST VERDICT column is cut to this many characters: the table stays on one
/// line of a wide terminal; `status NAME` shows the whole reason.
const VERDICT_WIDTH: usize = 60;
/// Verdicts `status NAME` shows, newest last.
const SHOWN_VERDICTS: usize = 10;

#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Rollouts in force: state, step, percent, time in step, last verdict; with NAME,
    /// one rollout in detail (its verdicts' readings, lane vs base, and its timeline).
    Status {
        /// One LaneRollout (in the namespace of -n); without it, every rollout (of -n's
        /// namespace when given).
        name: Option<String>,
    },
    /// Stop advancing (a paused rollout still rolls back on failing verdicts).
    Pause {
        /// The LaneRollout.
        name: String,
    },
    /// Advance again after a pause, from the step it was paused at.
    Resume {
        /// The LaneRollout.
        name: String,
    },
    /// Jump to the last step as if every step passed, then apply onSuccess.
    Promote {
        /// The LaneRollout.
        name: String,
    },
    /// Roll back now: the lane's share of users goes to 0 in one revision.
    Abort {
        /// The LaneRollout.
        name: String,
    },
}

impl RolloutCommand {
    pub(crate) async fn run(
        self,
        connect: &Connect,
        format: Option<Format>,
    ) -> Result<(), CliError> {
        let mut client = connect.client().await?;
        let (name, action, verb) = match self {
            Self::Status { name } => {
                // One rollout is looked up in one namespace; a listing is limited to one
                // only when asked.
                let namespace = match &name {
                    Some(_) => connect.namespace(),
                    None => connect.namespace_filter().unwrap_or_default(),
                };
                let request = pb::LaneRolloutsRequest {
                    namespace: namespace.to_owned(),
                    name: name.clone().unwrap_or_default(),
                };
                let response = client.lane_rollouts(request).await?.into_inner();
                let views = parse(response)?;
                match (name, format.unwrap_or(Format::Table)) {
                    (None, Format::Table) => {
                        output::emit(Format::Table, || table(&views), || Value::Null)
                    }
                    (None, format) => output::raw(format, &Value::Array(views)),
                    (Some(_), Format::Table) => detail(&one(views)?),
                    (Some(_), format) => output::raw(format, &one(views)?),
                }
                return Ok(());
            }
            Self::Pause { name } => (name, "pause", "paused"),
            Self::Resume { name } => (name, "resume", "resumed"),
            Self::Promote { name } => (name, "promote", "promoted"),
            Self::Abort { name } => (name, "abort", "aborted"),
        };
        let request = pb::LaneRolloutActionRequest {
            namespace: connect.namespace().to_owned(),
            name: name.clone(),
            action: action.to_owned(),
        };
        let response = client.lane_rollout_action(request).await?.into_inner();
        let view = one(parse(response)?)?;
        match format.unwrap_or(Format::Table) {
            Format::Table => output::text(&format!(
                "rollout {name} {verb} (step {}, {})",
                view["step"],
                percent(&view["percent"])
            )),
            format => output::raw(format, &view),
        }
        Ok(())
    }
}

fn parse(response: pb::LaneRolloutsResponse) -> Result<Vec<Value>, CliError> {
    response
        .rollouts_json
        .iter()
        .map(|text| serde_json::from_str(text))
        .collect::<Result<_, _>>()
        .map_err(|e| {
            CliError::unavailable(format!(
                "the control plane sent a rollout this CLI cannot read: {e}"
            ))
        })
}

fn one(mut views: Vec<Value>) -> Result<Value, CliError> {
    match views.pop() {
        Some(view) if views.is_empty() => Ok(view),
        _ => Err(CliError::unavailable(
            "the control plane answered with no rollout, or several",
        )),
    }
}

fn table(views: &[Value]) -> Table {
    // A mesh without namespaces keeps its columns: the namespace shows where one
    // other than `default` does.
    let namespaced = views.iter().any(|v| v["namespace"] != "default");
    let mut headers = vec![
        "NAME",
        "LANE",
        "STATE",
        "STEP",
        "PERCENT",
        "IN STEP",
        "LAST VERDICT",
    ];
    if namespaced {
        headers.insert(0, "NAMESPACE");
    }
    let mut t = Table::new(headers);
    let now = crate::now_ms();
    for v in views {
        let last = v["verdicts"].as_array().and_then(|all| all.last());
        let verdict = last.map_or_else(
            || "-".to_owned(),
            |l| {
                cut(
                    &format!("{}: {}", text(&l["verdict"]), text(&l["reason"])),
                    VERDICT_WIDTH,
                )
            },
        );
        let mut row = vec![
            text(&v["name"]),
            text(&v["lane"]),
            text(&v["state"]),
            step(v),
            percent(&v["percent"]),
            in_step(v, now),
            verdict,
        ];
        if namespaced {
            row.insert(0, text(&v["namespace"]));
        }
        t.row(row);
    }
    t
}

/// `status NAME`: the fields, the last verdicts with their readings, the timeline.
fn detail(v: &Value) {
    let mut lines = vec![
        format!("Name:       {}", text(&v["name"])),
        format!("Namespace:  {}", text(&v["namespace"])),
        format!("Lane:       {}", text(&v["lane"])),
        format!("State:      {}", text(&v["state"])),
        format!("Step:       {} ({})", step(v), percent(&v["percent"])),
        format!("In step:    {}", in_step(v, crate::now_ms())),
    ];
    if let Some(at) = v["stepStartedAt"].as_str() {
        // An ended rollout's step "started" when it ended.
        let label = if is_over(v) { "Ended:" } else { "Since:" };
        lines.push(format!("{label:<11} {}", at.replacen('T', " ", 1)));
    }
    if let Some(reason) = v["reason"].as_str() {
        lines.push(format!("Reason:     {reason}"));
    }
    // A blank line before the verdicts.
    lines.push("\n".into());
    output::text(&lines.join("\n"));
    let verdicts = v["verdicts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if verdicts.is_empty() {
        output::text("Verdicts: none yet (one per analysis interval)\n\n");
    } else {
        output::text("Verdicts (newest last; lane vs base):");
        let mut t = Table::new(vec![
            "AT", "VERDICT", "LANE REQ", "BASE REQ", "LANE ERR", "BASE ERR", "LANE P99",
            "BASE P99", "REASON",
        ]);
        let from = verdicts.len().saturating_sub(SHOWN_VERDICTS);
        for verdict in &verdicts[from..] {
            let (lane, base) = (&verdict["lane"], &verdict["base"]);
            t.row(vec![
                clock(&verdict["at"]),
                text(&verdict["verdict"]),
                text(&lane["requests"]),
                text(&base["requests"]),
                error_rate(&lane["errorRate"]),
                error_rate(&base["errorRate"]),
                p99(&lane["p99Ms"]),
                p99(&base["p99Ms"]),
                text(&verdict["reason"]),
            ]);
        }
        output::emit(Format::Table, || t, || Value::Null);
        output::text("\n");
    }
    output::text("Timeline:");
    let mut t = Table::new(vec!["AT", "DECISION"]);
    for d in v["decisions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        t.row(vec![text(&d["at"]).replacen('T', " ", 1), text(&d["what"])]);
    }
    output::emit(Format::Table, || t, || Value::Null);
}

/// A JSON string without its quotes; anything else as JSON; null as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `2/4`; `-/4` before the driver has started the rollout (step 0).
fn step(v: &Value) -> String {
    match v["step"].as_u64() {
        Some(0) | None => format!("-/{}", text(&v["steps"])),
        Some(n) => format!("{n}/{}", text(&v["steps"])),
    }
}

/// `25%`, `2.5%`.
fn percent(v: &Value) -> String {
    let p = v.as_f64().unwrap_or(0.0);
    format!("{}%", (p * 1000.0).round() / 1000.0)
}

fn error_rate(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |r| format!("{:.2}%", r * 100.0))
}

fn p99(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |ms| format!("{ms:.1}ms"))
}

/// The time of day of an RFC 3339 UTC timestamp, for a table of recent verdicts.
fn clock(v: &Value) -> String {
    let at = text(v);
    at.split_once('T')
        .map_or(at.clone(), |(_, time)| time.to_owned())
}

/// How long the rollout has been at its step; `-` once it is over (or not started).
fn in_step(v: &Value, now_ms: i64) -> String {
    match v["stepStartedAt"].as_str().and_then(unix_ms) {
        Some(since) if !is_over(v) => span(now_ms.saturating_sub(since)),
        _ => "-".into(),
    }
}

fn is_over(v: &Value) -> bool {
    matches!(v["state"].as_str(), Some("Succeeded" | "RolledBack"))
}

/// `42s`, `3m5s`, `2h10m`, `3d4h`.
fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        ..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Unix milliseconds of `YYYY-MM-DDTHH:MM:SSZ`, the control plane's timestamps;
/// `None` for anything else.
fn unix_ms(at: &str) -> Option<i64> {
    let at = at.strip_suffix('Z')?;
    let (date, time) = at.split_once(['T', ' '])?;
    let num = |s: &str| s.parse::<i64>().ok();
    let mut d = date.splitn(3, '-').map(num);
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':').map(num);
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), the inverse of `output::timestamp`.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + min * 60 + sec) * 1000)
}

/// At most `width` characters, the cut marked with `…`.
fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn timestamps_read_back_as_the_control_plane_writes_them() {
        for ms in [0, 951_782_400_000, 1_795_446_245_000, 1_764_842_400_000] {
            let written = output::timestamp(ms).replacen(' ', "T", 1);
            assert_eq!(unix_ms(&written), Some(ms), "{written}");
        }
        for bad in [
            "",
            "2026-12-04",
            "2026-13-01T00:00:00Z",
            "2026-12-04T10:00:00+01:00",
            "x-y-zTa:b:cZ",
        ] {
            assert_eq!(unix_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn time_in_step_reads_for_people_and_stops_when_over() {
        assert_eq!(span(42_000), "42s");
        assert_eq!(span(185_000), "3m5s");
        assert_eq!(span(7_800_000), "2h10m");
        assert_eq!(span(-5), "0s");
        let started = json!({"state": "Progressing", "stepStartedAt": "1970-01-01T00:00:10Z"});
        assert_eq!(in_step(&started, 100_000), "1m30s");
        let over = json!({"state": "RolledBack", "stepStartedAt": "1970-01-01T00:00:10Z"});
        assert_eq!(in_step(&over, 100_000), "-");
        assert_eq!(
            in_step(&json!({"state": "Progressing", "stepStartedAt": null}), 1),
            "-"
        );
    }

    #[test]
    fn steps_percents_and_verdicts_fit_their_columns() {
        assert_eq!(step(&json!({"step": 2, "steps": 4})), "2/4");
        assert_eq!(step(&json!({"step": 0, "steps": 4})), "-/4");
        assert_eq!(percent(&json!(25.0)), "25%");
        assert_eq!(percent(&json!(2.5)), "2.5%");
        assert_eq!(cut("pass: fine", 60), "pass: fine");
        let long = "é".repeat(80);
        assert_eq!(cut(&long, 60).chars().count(), 60);
        assert!(cut(&long, 60).ends_with('…'));
    }
}
