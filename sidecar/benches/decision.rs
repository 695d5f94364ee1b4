//! The outbound routing decision — tag resolution, `RoutingTable::route`, then
//! `Balancer::pick` — over 1,000 services and 10 lanes. Target: ≤ 1 µs per request.
//! Results and the command are in bench/README.md.
//!
//! Only the decision is timed: the request head, the table, the trace table and the
//! balancer are built once, and each iteration takes the next of a fixed random list of
//! services, so the lookups do not all hit one warm entry.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use graylane_routing::{Instance, RoutingTable, RuleSet, Tag};
use graylane_sidecar::balance::{Balancer, InFlight};
use graylane_sidecar::tag::{self, TAG_HEADER, TraceEntry, TraceTable, View};
use http::request::Parts;

const SERVICES: usize = 1_000;
const LANES: usize = 10;
/// Services visited per case, in a fixed random order (a power of two: a mask wraps it).
const ROTATION: usize = 1_024;
/// The lane every tagged case asks for.
const LANE: usize = 3;
/// The traceparent of the trace-table case, and how many other traces the table holds.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const OTHER_TRACES: u64 = 10_000;

/// Everything a sidecar holds between requests, as `app.rs` sizes it.
struct Sidecar {
    table: RoutingTable,
    traces: TraceTable,
    balancer: Balancer,
}

/// Service `i` has two base instances (`version: v1`) and one instance in each of the
/// lanes `i % 10` and `(i / 10) % 10` (one when they coincide). Lane `k` selects
/// `version: v{k+2}`, so lane0 is the `v2` subset of the RoutePolicies.
fn lanes_of(i: usize) -> [usize; 2] {
    [i % LANES, (i / LANES) % LANES]
}

fn service(i: usize) -> String {
    format!("svc-{i:04}")
}

/// Every 10th service has a RoutePolicy: v1/v2 at 90/10, sticky by `x-user-id`.
fn has_policy(i: usize) -> bool {
    i.is_multiple_of(10)
}

fn rules() -> RuleSet {
    let mut docs = Vec::new();
    for k in 0..LANES {
        docs.push(format!(
            "apiVersion: graylane.io/v1\nkind: Lane\nmetadata: {{name: lane{k}}}\n\
             spec: {{tag: lane{k}, selector: {{version: v{}}}}}\n",
            k + 2
        ));
    }
    for i in (0..SERVICES).filter(|&i| has_policy(i)) {
        let s = service(i);
        docs.push(format!(
            "apiVersion: graylane.io/v1\nkind: RoutePolicy\nmetadata: {{name: {s}}}\nspec:\n  \
             service: {s}\n  subsets:\n    - {{name: v1, labels: {{version: v1}}}}\n    \
             - {{name: v2, labels: {{version: v2}}}}\n  default:\n    \
             - {{subset: v1, weight: 90}}\n    - {{subset: v2, weight: 10}}\n  \
             stickyBy: {{header: x-user-id}}\n"
        ));
    }
    docs.push(
        "apiVersion: graylane.io/v1\nkind: TagPolicy\nmetadata: {name: edge}\nspec:\n  \
         services: [svc-0000]\n  rules:\n    \
         - {tag: lane3, match: {headers: {x-user-group: {exact: testers}}}}\n"
            .to_owned(),
    );
    match RuleSet::from_yaml("bench.yaml", &docs.join("---\n")) {
        Ok(set) => set,
        Err(errors) => panic!("bench rules are invalid: {errors:?}"),
    }
}

fn instances() -> Vec<Instance> {
    let inst = |i: usize, id: String, version: String| Instance {
        service: service(i),
        address: format!("{id}:8080"),
        id,
        labels: BTreeMap::from([("version".to_owned(), version)]),
        namespace: "default".to_owned(),
        identity: String::new(),
    };
    let mut out = Vec::new();
    for i in 0..SERVICES {
        for b in 0..2 {
            out.push(inst(i, format!("{}-base-{b}", service(i)), "v1".to_owned()));
        }
        let [a, b] = lanes_of(i);
        for k in if a == b { vec![a] } else { vec![a, b] } {
            out.push(inst(
                i,
                format!("{}-lane{k}", service(i)),
                format!("v{}", k + 2),
            ));
        }
    }
    out
}

fn sidecar() -> Sidecar {
    let now = Instant::now();
    let traces = TraceTable::new(100_000, Duration::from_secs(60));
    let mut rng = fastrand::Rng::with_seed(1);
    for _ in 0..OTHER_TRACES {
        let mut id = [0; 16];
        rng.fill(&mut id);
        let entry = TraceEntry {
            tag: Tag::parse(&format!("lane{}", rng.usize(..LANES))),
            headers: Vec::new(),
        };
        traces.remember(id, entry, now);
    }
    let id = graylane_routing::trace_id_from_traceparent(TRACEPARENT).expect("valid traceparent");
    let entry = TraceEntry {
        tag: Tag::parse(&format!("lane{LANE}")),
        headers: Vec::new(),
    };
    traces.remember(id, entry, now);
    Sidecar {
        table: RoutingTable::build(&rules(), instances()),
        traces,
        balancer: Balancer::new(Duration::from_secs(5), now),
    }
}

/// A request head as an app sends it, plus `extra` headers.
fn head(extra: &[(&str, &str)]) -> Parts {
    let mut builder = http::Request::get("http://svc/api/orders?id=42")
        .header("host", "svc")
        .header("user-agent", "bench/1")
        .header("accept", "application/json")
        .header("x-user-id", "user-1234");
    for (k, v) in extra {
        builder = builder.header(*k, *v);
    }
    builder.body(()).expect("valid request").into_parts().0
}

/// `ROTATION` services drawn (with a fixed seed) from those for which `keep` holds.
fn rotation(keep: impl Fn(usize) -> bool) -> Vec<String> {
    let eligible: Vec<usize> = (0..SERVICES).filter(|&i| keep(i)).collect();
    let mut rng = fastrand::Rng::with_seed(7);
    (0..ROTATION)
        .map(|_| service(eligible[rng.usize(..eligible.len())]))
        .collect()
}

/// The tag as `Outbound::resolve_tag` finds it — header, then baggage, then the trace
/// table — without its edits to the head (removing the header, restoring propagated
/// headers) and the invalid-tag counter.
fn resolve(parts: &Parts, traces: &TraceTable, now: Instant) -> Option<Tag> {
    fn text(v: &http::HeaderValue) -> Option<&str> {
        v.to_str().ok()
    }
    let carried = graylane_routing::carried(
        parts.headers.get_all("gray-publish").iter().map(text),
        parts.headers.get_all("baggage").iter().map(text),
    );
    if carried.tag.is_some() {
        return carried.tag;
    }
    let trace = tag::trace_id(&parts.headers)?;
    traces.recall(&trace, now)?.tag
}

/// One decision: the instance chosen and its in-flight guard (dropped by the caller,
/// inside the timed loop, as a request's would be).
fn decide<'t>(
    sc: &'t Sidecar,
    service: &str,
    parts: &Parts,
    rng: &mut fastrand::Rng,
    now: Instant,
) -> (&'t Instance, InFlight) {
    let tag = resolve(parts, &sc.traces, now);
    let view = View {
        parts,
        source_ip: None,
    };
    let route = sc
        .table
        .route("default", service, tag.as_ref(), &view, rng.u64(..))
        .expect("every bench service has a candidate");
    sc.balancer
        .pick(route.candidates, None, rng, now)
        .expect("a route is never empty")
}

/// Checks that every service of a case takes the path the case is named after.
fn check(sc: &Sidecar, services: &[String], parts: &Parts, path: &str) {
    let now = Instant::now();
    for s in services {
        let tag = resolve(parts, &sc.traces, now);
        let view = View {
            parts,
            source_ip: None,
        };
        let route = sc
            .table
            .route("default", s, tag.as_ref(), &view, 0)
            .expect("routable");
        let ok = match path {
            "lane" => route.lane == Some("lane3") && route.fallback.is_none(),
            "weighted" => tag.is_none() && route.subset.is_some(),
            "fallback" => route.fallback.is_some_and(|f| f.from == "lane3"),
            _ => false,
        };
        assert!(ok, "{s} does not take the {path} path: {route:?}");
    }
}

fn decision(c: &mut Criterion) {
    let sc = sidecar();
    let lane_tag = format!("lane{LANE}");
    let has_lane = |i: usize| lanes_of(i).contains(&LANE);
    let cases = [
        (
            "tagged_header",
            head(&[(TAG_HEADER, &lane_tag), ("traceparent", TRACEPARENT)]),
            rotation(has_lane),
            "lane",
        ),
        (
            "untagged_weighted",
            head(&[]),
            rotation(has_policy),
            "weighted",
        ),
        (
            "trace_table",
            head(&[("traceparent", TRACEPARENT)]),
            rotation(has_lane),
            "lane",
        ),
        (
            "fallback",
            head(&[(TAG_HEADER, &lane_tag)]),
            rotation(|i| !has_lane(i)),
            "fallback",
        ),
    ];
    let mut group = c.benchmark_group("decision");
    for (name, parts, services, path) in &cases {
        check(&sc, services, parts, path);
        let mut rng = fastrand::Rng::with_seed(42);
        let now = Instant::now();
        let mut n = 0;
        group.bench_function(*name, |b| {
            b.iter(|| {
                let service = &services[n & (ROTATION - 1)];
                n = n.wrapping_add(1);
                decide(
                    black_box(&sc),
                    black_box(service),
                    black_box(parts),
                    &mut rng,
                    black_box(now),
                )
            });
        });
    }
    group.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
