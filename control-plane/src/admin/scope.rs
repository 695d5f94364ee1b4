//! A sidecar's endpoint scope as every listing shows it — `ListSidecars`, `graylane
//! status` (table and `-o json`) and `GET /api/v1/sidecars` — written once here.

use graylane_proto::v1 as pb;
use serde_json::{Value, json};

use crate::push::ListedScope;

/// The scope as `ListSidecars` carries it; `None` when not known (the record of an
/// older replica).
pub(crate) fn message(scope: ListedScope) -> Option<pb::SidecarScope> {
    match scope {
        ListedScope::Unknown => None,
        ListedScope::All => Some(pb::SidecarScope::default()),
        ListedScope::Scoped { len, first } => Some(pb::SidecarScope {
            scoped: true,
            service_count: u32::try_from(len).unwrap_or(u32::MAX),
            services: first
                .iter()
                .map(|(namespace, service)| pb::ServiceName {
                    namespace: namespace.clone(),
                    service: service.clone(),
                })
                .collect(),
        }),
    }
}

/// The table column: `all`, `scoped (N)`, or `-` when not known (an older control
/// plane sends none).
pub(crate) fn column(scope: Option<&pb::SidecarScope>) -> String {
    match scope {
        None => "-".into(),
        Some(s) if !s.scoped => "all".into(),
        Some(s) => format!("scoped ({})", s.service_count),
    }
}

/// The JSON form: `{"mode": "all"}`, or `{"mode": "scoped", "serviceCount": N,
/// "services": ["orders", "payments.shop", …]}` (names as rules write them, at most
/// the first 100), or `null` when not known.
pub(crate) fn json(scope: Option<&pb::SidecarScope>) -> Value {
    match scope {
        None => Value::Null,
        Some(s) if !s.scoped => json!({ "mode": "all" }),
        Some(s) => json!({
            "mode": "scoped",
            "serviceCount": s.service_count,
            "services": s
                .services
                .iter()
                .map(|n| graylane_routing::qualified(&n.namespace, &n.service))
                .collect::<Vec<_>>(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn each_scope_reads_as_operators_see_it() {
        let scoped = ListedScope::Scoped {
            len: 3,
            first: Arc::from(vec![
                ("default".to_string(), "orders".to_string()),
                ("shop".to_string(), "payments".to_string()),
            ]),
        };
        let scoped = message(scoped);
        assert_eq!(column(scoped.as_ref()), "scoped (3)");
        assert_eq!(
            json(scoped.as_ref()),
            json!({"mode": "scoped", "serviceCount": 3, "services": ["orders", "payments.shop"]})
        );
        let all = message(ListedScope::All);
        assert_eq!(column(all.as_ref()), "all");
        assert_eq!(json(all.as_ref()), json!({"mode": "all"}));
        assert_eq!(message(ListedScope::Unknown), None);
        assert_eq!(column(None), "-");
        assert_eq!(json(None), Value::Null);
    }
}
