//! Lanes as an operator reads them: per lane, per known service, the instances in the
//! lane and where a request tagged for the lane goes when none serves it. The "where"
//! is the routing crate's own `route` of such a request (the decision the sidecars
//! take), not a second reading of the fallback rules.

use std::collections::BTreeSet;
use std::net::IpAddr;

use graylane_routing::{FallbackTarget, Kind, RequestView, Resource, RoutingTable};

use super::{AdminCore, AdminError, instances, view};

/// One lane and, per known service, who serves it.
#[derive(Debug)]
pub(crate) struct LaneView {
    pub(crate) name: String,
    pub(crate) tag: String,
    /// The selector and fallback list as the rule writes them.
    pub(crate) selector: serde_json::Value,
    pub(crate) fallback: serde_json::Value,
    pub(crate) services: Vec<LaneService>,
}

/// A service as seen from one lane.
#[derive(Debug)]
pub(crate) struct LaneService {
    pub(crate) namespace: String,
    pub(crate) service: String,
    /// Instance ids of the service in the lane.
    pub(crate) instances: Vec<String>,
    /// `None`: the lane serves it; else `base`, another lane's name, or `fail` (the
    /// request would be refused).
    pub(crate) falls_back_to: Option<String>,
}

/// A request with nothing but its tag: what a lane's own traffic looks like.
struct Tagged;

impl RequestView for Tagged {
    fn header(&self, _: &str) -> Option<&str> {
        None
    }
    fn cookie(&self, _: &str) -> Option<&str> {
        None
    }
    fn path(&self) -> &str {
        "/"
    }
    fn method(&self) -> &str {
        "GET"
    }
    fn source_ip(&self) -> Option<IpAddr> {
        None
    }
}

impl AdminCore {
    /// Every lane of the rules in force with every service that has a connected
    /// instance, sorted by lane then (namespace, service).
    pub(crate) async fn lanes(&self) -> Result<Vec<LaneView>, AdminError> {
        let (_, rules) = self.control.rules().await?;
        let sidecars = self.control.hub().sidecars();
        let lanes = super::lane_table(&rules);
        let views: Vec<_> = sidecars.iter().cloned().map(|e| view(e, &lanes)).collect();
        let services: BTreeSet<(String, String)> = views
            .iter()
            .map(|v| {
                (
                    v.entry.hello.namespace.clone(),
                    v.entry.hello.service.clone(),
                )
            })
            .collect();
        let table = RoutingTable::build(&rules, instances(sidecars));
        let mut out = Vec::new();
        for resource in rules.of_kind(Kind::Lane) {
            let Resource::Lane(lane) = resource else {
                continue;
            };
            let name = lane.metadata.name.as_str();
            let services = services
                .iter()
                .map(|(namespace, service)| {
                    let instances = views
                        .iter()
                        .filter(|v| {
                            v.entry.hello.service == *service
                                && v.entry.hello.namespace == *namespace
                                && v.lanes.iter().any(|l| l == name)
                        })
                        .map(|v| v.entry.hello.instance_id.clone())
                        .collect();
                    // The draw only picks among weighted subsets, never the lane.
                    let route = table.route(namespace, service, Some(&lane.spec.tag), &Tagged, 0);
                    let falls_back_to = match route {
                        Ok(r) => r.fallback.map(|f| match f.to {
                            FallbackTarget::Lane(to) => to.to_owned(),
                            FallbackTarget::Base => "base".to_owned(),
                        }),
                        Err(_) => Some("fail".to_owned()),
                    };
                    LaneService {
                        namespace: namespace.clone(),
                        service: service.clone(),
                        instances,
                        falls_back_to,
                    }
                })
                .collect();
            out.push(LaneView {
                name: name.to_owned(),
                tag: lane.spec.tag.as_str().to_owned(),
                selector: serde_json::to_value(&lane.spec.selector).unwrap_or_default(),
                fallback: serde_json::to_value(&lane.spec.fallback).unwrap_or_default(),
                services,
            });
        }
        Ok(out)
    }
}
