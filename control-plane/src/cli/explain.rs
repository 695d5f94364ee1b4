//! `graylane explain`: how the rules in force route a hypothetical request, step by
//! step. The rules and the registered instances come from the control plane; the
//! decision is `graylane-routing`'s own (`RoutingTable::explain`), the code the
//! sidecars run.

use std::collections::BTreeMap;
use std::net::IpAddr;

use graylane_proto::v1 as pb;
use graylane_routing::{
    Explanation, Instance, RequestView, RoutingTable, RuleSet, ServiceName, Tag, qualified,
};
use serde_json::{Value, json};

use super::client::Connect;
use super::output;
use super::{CliError, Format};

/// The request to explain, from the flags.
#[derive(clap::Args, Debug, Default)]
pub struct ExplainArgs {
    /// The service the request goes to: NAME in the caller's namespace (-n), or
    /// NAME.NAMESPACE.
    #[arg(long)]
    pub service: String,
    /// The request enters the mesh at this service first (its TagPolicy applies):
    /// NAME in the caller's namespace (-n), or NAME.NAMESPACE.
    #[arg(long)]
    pub entry: Option<String>,
    /// A request header, NAME=VALUE (repeatable); `Gray-Publish=T` is the tag.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = pair)]
    pub headers: Vec<(String, String)>,
    /// A cookie, NAME=VALUE (repeatable).
    #[arg(long = "cookie", value_name = "NAME=VALUE", value_parser = pair)]
    pub cookies: Vec<(String, String)>,
    /// A query parameter, NAME=VALUE (repeatable), as decoded text: `group=beta testers`
    /// is what `?group=beta+testers` and `?group=beta%20testers` carry (a sidecar
    /// decodes the query string before matching).
    #[arg(long = "query", value_name = "NAME=VALUE", value_parser = pair)]
    pub query: Vec<(String, String)>,
    /// The request path (for TagPolicy `path` rules), as the request carries it: a
    /// sidecar matches it normalised (`//`, `.`, `..`, escaped letters), as here.
    #[arg(long, default_value = "/", value_parser = request_path)]
    pub path: String,
    /// The request method (for TagPolicy `methods` rules).
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// The caller's address (for TagPolicy `sourceCidr` rules).
    #[arg(long)]
    pub source_ip: Option<IpAddr>,
}

fn pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("{s:?}: expected NAME=VALUE"))
}

/// A path as a request's target carries it: from `/`, without the query (a sidecar
/// matches `path` on the part before `?`, so `/admin?x=1` here would say otherwise).
fn request_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?}: a request path starts with /"));
    }
    if s.contains(['?', '#']) {
        return Err(format!(
            "{s:?}: the path alone; give the query as --query NAME=VALUE"
        ));
    }
    Ok(s.to_string())
}

/// The hypothetical request as the routing crate reads requests.
struct Hypothetical<'a>(&'a ExplainArgs);

fn find<'a>(list: &'a [(String, String)], name: &str, case: bool) -> Option<&'a str> {
    list.iter()
        .find(|(k, _)| {
            if case {
                k.eq_ignore_ascii_case(name)
            } else {
                k == name
            }
        })
        .map(|(_, v)| v.as_str())
}

impl RequestView for Hypothetical<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        find(&self.0.headers, name, true)
    }
    fn cookie(&self, name: &str) -> Option<&str> {
        find(&self.0.cookies, name, false)
    }
    // No `query_string`: `--query` is already decoded, so it must not be decoded again.
    fn query(&self, name: &str) -> Option<&str> {
        find(&self.0.query, name, false)
    }
    fn path(&self) -> &str {
        &self.0.path
    }
    fn method(&self) -> &str {
        &self.0.method
    }
    fn source_ip(&self) -> Option<IpAddr> {
        self.0.source_ip
    }
}

/// (namespace, service) of a service argument (`--service`, `--entry`, `release`'s
/// SERVICE), read from `caller`'s namespace as a sidecar there reads a host: `orders`
/// there, `orders.shop` in `shop`.
pub(super) fn service_ref(
    flag: &str,
    value: &str,
    caller: &str,
) -> Result<(String, String), CliError> {
    let name = ServiceName::new(value)
        .and_then(|n| n.check_reference().map(|()| n))
        .map_err(|e| CliError::usage(format!("{flag}: {e}")))?;
    let (namespace, service) = name.resolve(caller);
    Ok((namespace.to_owned(), service.to_owned()))
}

/// What to explain, resolved from the arguments: the service and entry as
/// (namespace, name) and the tag of `Gray-Publish`.
pub(crate) struct Target {
    pub(crate) namespace: String,
    pub(crate) service: String,
    entry: Option<(String, String)>,
    tag: Option<Tag>,
}

/// Reads `args`' service, entry and tag from `caller`'s namespace; the error is the
/// CLI's message (the HTTP API sends the same words).
pub(crate) fn target(args: &ExplainArgs, caller: &str) -> Result<Target, CliError> {
    let (namespace, service) = service_ref("--service", &args.service, caller)?;
    let entry = match &args.entry {
        Some(e) => Some(service_ref("--entry", e, caller)?),
        None => None,
    };
    let lines = |name: &'static str| {
        args.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| Some(v.as_str()))
    };
    // Read as a sidecar reads a request (two values are no tag, then the baggage), so
    // explain cannot disagree with one; but one value the sidecar would drop is a
    // typo on the command line, said as such.
    let carried = graylane_routing::carried(lines("gray-publish"), lines("baggage"));
    let mut given = lines("gray-publish").flatten();
    if carried.invalid_header
        && let (Some(v), None) = (given.next(), given.next())
    {
        return Err(CliError::usage(format!(
            "--header Gray-Publish={v}: not a valid tag ([A-Za-z0-9][A-Za-z0-9._-]{{0,63}}); \
             a sidecar would drop it"
        )));
    }
    let tag = carried.tag;
    Ok(Target {
        namespace,
        service,
        entry,
        tag,
    })
}

/// The routing crate's own explanation of `args` against `set` and `instances`.
pub(crate) fn explain(
    target: &Target,
    args: &ExplainArgs,
    set: &RuleSet,
    instances: Vec<Instance>,
) -> Explanation {
    let table = RoutingTable::build(set, instances);
    table.explain(
        &target.namespace,
        &target.service,
        target
            .entry
            .as_ref()
            .map(|(ns, s)| (ns.as_str(), s.as_str())),
        target.tag.clone(),
        &Hypothetical(args),
        fastrand::u64(..),
    )
}

/// `explain -o json`, also the HTTP API's `POST /api/v1/explain` answer.
pub(crate) fn to_json(target: &Target, revision: u64, explanation: &Explanation) -> Value {
    let outcome = match &explanation.outcome {
        Ok(e) => json!({
            "lane": e.lane, "subset": e.subset, "fallback": e.fallback,
            "candidates": e.candidates.iter().map(|i| json!({
                "instance": i.id, "address": i.address, "labels": i.labels,
            })).collect::<Vec<_>>(),
        }),
        Err(e) => json!({ "error": e.to_string() }),
    };
    json!({
        "service": target.service,
        "namespace": target.namespace,
        "revision": revision,
        "tag": explanation.tag.as_ref().map(Tag::as_str),
        "steps": explanation.steps,
        "outcome": outcome,
    })
}

pub(crate) async fn run(
    connect: &Connect,
    format: Option<Format>,
    args: ExplainArgs,
) -> Result<(), CliError> {
    let target = target(&args, connect.namespace())?;
    let mut client = connect.client().await?;
    let rules = client.get(pb::GetRequest::default()).await?.into_inner();
    let sidecars = client
        .list_sidecars(pb::ListSidecarsRequest {})
        .await?
        .into_inner();
    let set = RuleSet::from_yaml("rules in force", &rules.rules).map_err(|errors| {
        CliError::refused(format!(
            "the rules in force do not parse here (a newer server?): {}",
            errors.first().map(ToString::to_string).unwrap_or_default()
        ))
    })?;
    let instances: Vec<Instance> = sidecars
        .sidecars
        .into_iter()
        .map(|s| Instance {
            service: s.service,
            id: s.instance_id,
            address: s.address,
            labels: s.labels.into_iter().collect::<BTreeMap<_, _>>(),
            namespace: s.namespace,
            identity: s.identity,
        })
        .collect();
    let explanation = explain(&target, &args, &set, instances);
    let (namespace, service) = (&target.namespace, &target.service);
    match format.unwrap_or(Format::Table) {
        Format::Table => {
            let shown = qualified(namespace, service);
            let mut text = match namespace.as_str() {
                graylane_routing::DEFAULT_NAMESPACE => {
                    format!("request to {shown} under revision {}\n", rules.revision)
                }
                ns => format!(
                    "request to {shown} (namespace {ns}) under revision {}\n",
                    rules.revision
                ),
            };
            for step in &explanation.steps {
                text.push_str(step);
                text.push('\n');
            }
            output::text(&text);
        }
        f => output::raw(f, &to_json(&target, rules.revision, &explanation)),
    }
    Ok(())
}
