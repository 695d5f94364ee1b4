//! `graylane rules apply|delete|get|diff|validate|history|rollback`.

use std::time::Duration;

use clap::Subcommand;
use graylane_proto::v1 as pb;
use graylane_routing::{DEFAULT_NAMESPACE, Kind, RuleSet, files_with_namespace};
use serde_json::json;

use super::client::Connect;
use super::output::{self, Table};
use super::{CliError, Format, files, parse_duration};

mod read;

use self::read::{get, history};

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// Create or update the resources in the files (others stay) as one new revision.
    Apply {
        /// A rules file, a directory of *.yaml, or - for standard input (YAML
        /// documents, or the JSON List `rules get -o json` prints); repeatable.
        #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
        files: Vec<String>,
        /// Make the files the whole rule set: resources not in them are deleted. With
        /// a namespace (-n or the context's), only that namespace's resources are;
        /// Lanes and other namespaces stay.
        #[arg(long)]
        prune: bool,
        /// Validate and show what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Fail unless this is the revision in force (optimistic locking).
        #[arg(long, value_name = "N")]
        expect_revision: Option<u64>,
        /// Wait until every connected sidecar acked the new revision.
        #[arg(long)]
        wait: bool,
        /// How long the command may take with --wait, from its start (Go-style: 30s,
        /// 1m30s, 1.5s); past it, exit 1 even if the last ACK is on its way.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Remove resources (KIND/NAME ...) as one new revision.
    Delete {
        /// The resources to remove, as KIND/NAME (e.g. Lane/gray); namespaced kinds
        /// in the namespace of -n.
        #[arg(required = true, value_name = "KIND/NAME")]
        resources: Vec<String>,
        /// Fail unless this is the revision in force (optimistic locking).
        #[arg(long, value_name = "N")]
        expect_revision: Option<u64>,
        /// Show what would be removed; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The rules in force (YAML unless -o says otherwise).
    Get {
        /// KIND or KIND/NAME (Lane, RoutePolicy, TagPolicy, PeerPolicy); everything
        /// without it.
        #[arg(value_name = "KIND[/NAME]")]
        selector: Option<String>,
        /// A past revision's rules instead of those in force (see `rules history`).
        #[arg(long, value_name = "N")]
        revision: Option<u64>,
    },
    /// What applying the files would change (exit 0 either way, unless --exit-code).
    Diff {
        /// A rules file, a directory of *.yaml, or - for standard input; repeatable.
        #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
        files: Vec<String>,
        /// Compare as `apply --prune` would: the files are the whole rule set, or the
        /// whole of the namespace of -n.
        #[arg(long)]
        prune: bool,
        /// Exit 1 when there are differences (like `git diff --exit-code`).
        #[arg(long)]
        exit_code: bool,
    },
    /// Validate files locally; no server needed.
    Validate {
        /// A rules file, a directory of *.yaml, or - for standard input; repeatable.
        #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
        files: Vec<String>,
    },
    /// Revisions, newest first.
    History {
        /// Show at most this many (0: all kept).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Restore an earlier revision's rules as a new revision.
    Rollback {
        /// The revision whose rules to restore (see `rules history`).
        #[arg(long, value_name = "N")]
        to: u64,
        /// Fail unless this is the revision in force (optimistic locking).
        #[arg(long, value_name = "N")]
        expect_revision: Option<u64>,
    },
}

pub(super) fn parse_ref(s: &str) -> Result<(Kind, String), CliError> {
    let (kind, name) = s
        .split_once('/')
        .ok_or_else(|| CliError::usage(format!("{s:?}: expected KIND/NAME, e.g. Lane/gray")))?;
    let kind = kind
        .parse()
        .map_err(|_| CliError::usage(format!("{s:?}: unknown kind {kind:?} ({})", Kind::NAMES)))?;
    // A name no resource can have (`Lane/`, `Lane/Gray`) is a typo, not "not found".
    graylane_routing::Name::new(name).map_err(|e| CliError::usage(format!("{s:?}: {e}")))?;
    Ok((kind, name.to_string()))
}

/// `-n` given to the namespaced documents without a namespace, refusing those of
/// another one (kubectl's rule); or, without `-n`, the context's namespace given to
/// them as a default. Neither: the files as they are.
fn in_namespace(
    files: Vec<(String, String)>,
    connect: &Connect,
) -> Result<Vec<(String, String)>, CliError> {
    let (namespace, refuse_others) = match (&connect.namespace, &connect.context_namespace) {
        (Some(ns), _) => (ns, true),
        (None, Some(ns)) => (ns, false),
        (None, None) => return Ok(files),
    };
    files_with_namespace(files, namespace, refuse_others).map_err(refused_with)
}

/// `RoutePolicy/orders`, and ` (shop)` after it outside namespace `default` (the
/// `default` form is what scripts already read).
fn change_ref(c: &pb::ResourceChange) -> String {
    if c.namespace.is_empty() || c.namespace == DEFAULT_NAMESPACE {
        format!("{}/{}", c.kind, c.name)
    } else {
        format!("{}/{} ({})", c.kind, c.name, c.namespace)
    }
}

/// The request of `apply` and `diff`, once the files passed local validation. A prune
/// is scoped to the namespace the command means, when it means one (kubectl's rule).
///
/// Local validation checks every document alone and, when the files are the whole
/// set (`--prune` without a namespace), the set they make. Otherwise the rest of a
/// refused file's errors (a duplicate of, or a reference to, a resource in force) are
/// the server's to find: its dry run lists all of them in one go, and only when it
/// cannot be asked do the local errors stand alone.
async fn apply_request(
    files: Vec<(String, String)>,
    prune: bool,
    connect: &Connect,
    dry_run: bool,
    expect_revision: Option<u64>,
) -> Result<pb::ApplyRequest, CliError> {
    let prune_namespace = connect.namespace_filter().filter(|_| prune);
    let whole_set = prune && prune_namespace.is_none();
    let local = validate_locally(&files, whole_set);
    let request = pb::ApplyRequest {
        files: sources(files),
        prune,
        dry_run,
        expect_revision,
        prune_namespace: prune_namespace.map(str::to_owned),
    };
    match local {
        Ok(_) => Ok(request),
        Err(refused) if whole_set => Err(refused),
        Err(refused) => Err(errors_in_force(connect, request).await.unwrap_or(refused)),
    }
}

/// The server's refusal of `request` as a dry run; `None` when it cannot be asked or
/// refuses for another reason than the documents.
async fn errors_in_force(connect: &Connect, mut request: pb::ApplyRequest) -> Option<CliError> {
    request.dry_run = true;
    request.expect_revision = None;
    let mut client = connect.client().await.ok()?;
    match client.apply(request).await {
        Err(status) if status.code() == tonic::Code::InvalidArgument => Some(status.into()),
        _ => None,
    }
}

/// Local validation before anything is sent: per document, duplicates across the
/// files and, when they are the whole set, the set-level checks.
fn validate_locally(files: &[(String, String)], whole_set: bool) -> Result<(), CliError> {
    if whole_set {
        RuleSet::from_files(files)
    } else {
        RuleSet::parse_files(files)
    }
    .map(drop)
    .map_err(refused_with)
}

fn refused_with(errors: Vec<graylane_routing::ValidationError>) -> CliError {
    CliError::refused(
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

fn sources(files: Vec<(String, String)>) -> Vec<pb::SourceFile> {
    files
        .into_iter()
        .map(|(name, content)| pb::SourceFile { name, content })
        .collect()
}

fn action_name(action: i32) -> &'static str {
    match pb::ChangeAction::try_from(action) {
        Ok(pb::ChangeAction::Created) => "created",
        Ok(pb::ChangeAction::Configured) => "configured",
        Ok(pb::ChangeAction::Deleted) => "deleted",
        _ => "unchanged",
    }
}

/// A LaneRollout applied again unchanged after its run ended does not run again
/// (release.md: applying it starts it; an unchanged apply applies nothing): said on
/// stderr, with what does run it, so an operator re-running a release is not left
/// waiting. Nothing when the rollouts cannot be read: the apply itself stands.
async fn ended_rollouts_kept(client: &mut super::client::Client, response: &pb::ChangeResponse) {
    let unchanged = response
        .changes
        .iter()
        .filter(|c| c.kind == "LaneRollout" && c.action == pb::ChangeAction::Unchanged as i32);
    for change in unchanged {
        let request = pb::LaneRolloutsRequest {
            namespace: change.namespace.clone(),
            name: change.name.clone(),
        };
        let Ok(answer) = client.lane_rollouts(request).await else {
            return;
        };
        let state = answer
            .into_inner()
            .rollouts_json
            .first()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
            .and_then(|view| view["state"].as_str().map(str::to_owned));
        if let Some(state @ ("Succeeded" | "RolledBack")) = state.as_deref() {
            eprintln!(
                "note: LaneRollout/{} is unchanged and its run has ended ({state}); it does not run again: change its spec, or delete it and apply it",
                change.name
            );
        }
    }
}

/// Prints a change result: kubectl-style lines, or JSON/YAML.
fn print_change(format: Format, response: &pb::ChangeResponse, dry_run: bool) {
    let suffix = if dry_run { " (dry run)" } else { "" };
    output::emit(
        format,
        || {
            let mut t = Table::new(vec!["RESOURCE", "ACTION"]);
            for c in &response.changes {
                t.row(vec![
                    change_ref(c),
                    format!("{}{suffix}", action_name(c.action)),
                ]);
            }
            t
        },
        || {
            json!({
                "revision": response.revision,
                "committed": response.committed,
                "dryRun": dry_run,
                "changes": response.changes.iter().map(|c| {
                    let mut change = json!({
                        "kind": c.kind, "name": c.name, "action": action_name(c.action),
                    });
                    // Lanes are mesh-wide: no namespace.
                    if !c.namespace.is_empty() {
                        change["namespace"] = json!(c.namespace);
                    }
                    change
                }).collect::<Vec<_>>(),
            })
        },
    );
    if format == Format::Table {
        output::text(&match (response.committed, dry_run) {
            (true, _) => format!("revision {} written", response.revision),
            (false, true) => format!(
                "dry run: nothing written (revision {} in force)",
                response.revision
            ),
            (false, false) => format!("nothing changed (revision {} in force)", response.revision),
        });
    }
}

impl RulesCommand {
    pub(crate) async fn run(
        self,
        connect: &Connect,
        format: Option<Format>,
    ) -> Result<(), CliError> {
        let table = format.unwrap_or(Format::Table);
        match self {
            Self::Validate { files } => {
                let files = in_namespace(files::read_all(&files)?, connect)?;
                // Each document alone, then the set the valid ones make: every error
                // of the files in one run. Files that are part of the rules (a
                // rollout whose lane is applied already) are checked against the
                // rules in force by the server.
                let (set, mut errors) = RuleSet::read_files(&files);
                let of_the_set = set.validate().err().unwrap_or_default();
                let as_a_set = !of_the_set.is_empty();
                errors.extend(of_the_set);
                if !errors.is_empty() {
                    let mut refused = refused_with(errors);
                    if as_a_set {
                        refused.message.push_str(
                            "\n(checked as the whole rule set; files that are part of it are checked against the rules in force by `graylane rules apply --dry-run -f ...`)",
                        );
                    }
                    return Err(refused);
                }
                output::text(&format!(
                    "{} resources in {} files are valid",
                    set.len(),
                    files.len()
                ));
                Ok(())
            }
            Self::Apply {
                files,
                prune,
                dry_run,
                expect_revision,
                wait,
                timeout,
            } => {
                // `--timeout` bounds the whole command, connecting and applying
                // included: a slow server must not stretch the time the user allowed.
                let deadline = tokio::time::Instant::now() + timeout;
                let files = in_namespace(files::read_all(&files)?, connect)?;
                let request =
                    apply_request(files, prune, connect, dry_run, expect_revision).await?;
                let mut client = connect.client().await?;
                let response = client.apply(request).await?.into_inner();
                print_change(table, &response, dry_run);
                ended_rollouts_kept(&mut client, &response).await;
                if wait && !dry_run {
                    super::status::wait_for_rollout(
                        &mut client,
                        response.revision,
                        deadline,
                        timeout,
                    )
                    .await?;
                }
                Ok(())
            }
            Self::Delete {
                resources,
                expect_revision,
                dry_run,
            } => {
                let resources = resources
                    .iter()
                    .map(|s| {
                        parse_ref(s).map(|(k, name)| pb::ResourceRef {
                            kind: k.to_string(),
                            name,
                            namespace: if k.is_namespaced() {
                                connect.namespace().to_owned()
                            } else {
                                String::new()
                            },
                        })
                    })
                    .collect::<Result<_, _>>()?;
                let mut client = connect.client().await?;
                let response = client
                    .delete(pb::DeleteRequest {
                        resources,
                        expect_revision,
                        dry_run,
                    })
                    .await?
                    .into_inner();
                print_change(table, &response, dry_run);
                Ok(())
            }
            Self::Get { selector, revision } => {
                get(connect, format.unwrap_or(Format::Yaml), selector, revision).await
            }
            Self::Diff {
                files,
                prune,
                exit_code,
            } => {
                let files = in_namespace(files::read_all(&files)?, connect)?;
                let request = apply_request(files, prune, connect, true, None).await?;
                let mut client = connect.client().await?;
                let response = client.apply(request).await?.into_inner();
                if table == Format::Table {
                    let diffs: Vec<&str> = response
                        .changes
                        .iter()
                        .map(|c| c.diff.as_str())
                        .filter(|d| !d.is_empty())
                        .collect();
                    output::text(&diffs.concat());
                } else {
                    print_change(table, &response, true);
                }
                let differs = response
                    .changes
                    .iter()
                    .any(|c| c.action != pb::ChangeAction::Unchanged as i32);
                if exit_code && differs {
                    return Err(CliError::refused(
                        "the files differ from the rules in force (--exit-code)",
                    ));
                }
                Ok(())
            }
            Self::History { limit } => history(connect, table, limit).await,
            Self::Rollback {
                to,
                expect_revision,
            } => {
                let mut client = connect.client().await?;
                let response = client
                    .rollback(pb::RollbackRequest {
                        to,
                        expect_revision,
                    })
                    .await?
                    .into_inner();
                print_change(table, &response, false);
                Ok(())
            }
        }
    }
}
