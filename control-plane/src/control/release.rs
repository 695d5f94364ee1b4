//! The sanity checks of `release set` that need the registry as well as the rules:
//! both catch a command that validates but cannot be what the user meant.

use std::collections::BTreeMap;

use graylane_routing::{Release, RoutingTable, RuleSet, qualified};

use super::{Control, ControlError};

impl Control {
    /// Refuses (`BadRequest`, saying why and that `--force` overrides) to set `state`
    /// on a service that is probably a typo — no registered instance and no
    /// RoutePolicy — or to set `gray` where no registered instance is in a lane, which
    /// would make every request to the service a 503. Reads the rules in force and
    /// the registry as they are now: a racing change can still slip past, which is
    /// acceptable for a guard against typing mistakes.
    pub(crate) async fn check_release(
        &self,
        namespace: &str,
        service: &str,
        state: Release,
    ) -> Result<(), ControlError> {
        let (_, rules) = self.rules().await?;
        let labels: Vec<BTreeMap<String, String>> = self
            .hub()
            .sidecars()
            .into_iter()
            .filter(|s| s.hello.service == service && s.hello.namespace == namespace)
            .map(|s| s.hello.labels.into_iter().collect())
            .collect();
        match mistake(&rules, (namespace, service), state, &labels) {
            Some(why) => Err(ControlError::BadRequest(format!(
                "release {} {state}: {why}; nothing was changed (--force sets it anyway)",
                qualified(namespace, service)
            ))),
            None => Ok(()),
        }
    }

    /// `NotFound` unless `service` of `namespace` has a registered instance or a
    /// RoutePolicy.
    pub(crate) async fn known_service(
        &self,
        namespace: &str,
        service: &str,
    ) -> Result<(), ControlError> {
        let (_, rules) = self.rules().await?;
        let key = (namespace.to_owned(), service.to_owned());
        if rules.route_policy_for(namespace, service).is_some()
            || self.hub().services().contains_key(&key)
        {
            return Ok(());
        }
        Err(ControlError::NotFound(format!(
            "service {service:?} in namespace {namespace:?}: no registered instance and no \
             RoutePolicy"
        )))
    }
}

/// Why setting `state` on `key` (namespace, service) is probably a mistake, given the
/// labels of its registered instances.
fn mistake(
    rules: &RuleSet,
    key: (&str, &str),
    state: Release,
    instances: &[BTreeMap<String, String>],
) -> Option<String> {
    let (namespace, service) = key;
    let has_policy = rules.route_policy_for(namespace, service).is_some();
    if instances.is_empty() && !has_policy {
        let service = qualified(namespace, service);
        return Some(format!(
            "no service {service:?} is known (no registered instance and no RoutePolicy)"
        ));
    }
    if state != Release::Gray {
        return None;
    }
    // The table decides lane membership (RoutePolicy lane overrides included), so
    // this check agrees with what the sidecars will do.
    let table = RoutingTable::build(rules, Vec::new());
    let in_lane = instances
        .iter()
        .filter(|labels| table.gate(namespace, service, labels).lane.is_some())
        .count();
    (in_lane == 0).then(|| {
        format!(
            "none of its {} registered instances is in a lane, so every request to it \
             would be a 503",
            instances.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> RuleSet {
        RuleSet::from_yaml("test.yaml", text).expect("valid test rules")
    }

    const LANE: &str = "apiVersion: graylane.io/v1\nkind: Lane\nmetadata: {name: gray}\n\
                        spec: {tag: gray, selector: {version: v2}}\n";

    fn labels(version: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("version".to_owned(), version.to_owned())])
    }

    #[test]
    fn unknown_service_is_a_mistake_in_any_state() {
        let set = rules(LANE);
        for state in [Release::All, Release::Gray, Release::Prod] {
            assert!(mistake(&set, ("default", "ordrs"), state, &[]).is_some());
        }
    }

    #[test]
    fn gray_without_a_lane_instance_is_a_mistake() {
        let set = rules(LANE);
        let orders = ("default", "orders");
        let why = mistake(&set, orders, Release::Gray, &[labels("v1")]);
        assert!(why.is_some_and(|w| w.contains("503")));
        assert_eq!(
            mistake(&set, orders, Release::Gray, &[labels("v1"), labels("v2")]),
            None
        );
        assert_eq!(mistake(&set, orders, Release::Prod, &[labels("v1")]), None);
    }

    #[test]
    fn a_policy_in_another_namespace_does_not_make_a_service_known() {
        let set = rules(
            "apiVersion: graylane.io/v1\nkind: RoutePolicy\n\
             metadata: {name: orders, namespace: staging}\nspec: {service: orders}\n",
        );
        assert_eq!(
            mistake(&set, ("staging", "orders"), Release::All, &[]),
            None
        );
        let why = mistake(&set, ("shop", "orders"), Release::All, &[]);
        assert!(why.is_some_and(|w| w.contains("orders.shop")));
    }
}
