//! The tag on the way in: a TagPolicy's `incoming` trust, then its rules.

use super::matching::Compiled;
use super::scoped::Scoped;
use super::{InboundSource, InboundTag, RequestView, RoutingTable};
use crate::Tag;
use crate::model::{Incoming, Resource};
use crate::set::RuleSet;

/// A TagPolicy ready to apply.
#[derive(Debug)]
pub(super) struct CompiledTagPolicy {
    incoming: Incoming,
    rules: Vec<(Tag, Compiled)>,
    /// Rule index → what the LaneRollout owning it does, for `explain`.
    rollouts: Vec<(usize, String)>,
}

/// Compiles every TagPolicy, keyed by each (namespace, service) it lists, read
/// relative to the policy's namespace (the first policy wins when an unchecked set
/// lists a service twice). The policies share nothing, so
/// one listing several services is compiled once per service; policies list a few
/// entry services, not the mesh.
pub(super) fn compile(rules: &RuleSet) -> Scoped<CompiledTagPolicy> {
    let mut out = Scoped::default();
    for r in rules.iter() {
        let Resource::TagPolicy(p) = r else { continue };
        for service in &p.spec.services {
            let (namespace, service) = service.resolve(p.metadata.namespace());
            out.get_or_insert_with(namespace, service, || CompiledTagPolicy {
                incoming: p.spec.incoming,
                rules: p
                    .spec
                    .rules
                    .iter()
                    .map(|rule| {
                        (
                            rule.tag.clone(),
                            Compiled::new(&rule.matches, rule.tag.as_str()),
                        )
                    })
                    .collect(),
                rollouts: rollout_notes(p),
            });
        }
    }
    out
}

/// "LaneRollout gray-2 lets 25% of users in, by header x-user-id" per owned rule.
fn rollout_notes(policy: &crate::model::TagPolicy) -> Vec<(usize, String)> {
    let rules = policy.spec.rules.iter().enumerate();
    rules
        .filter_map(|(i, rule)| {
            let name = rule.rollout.as_ref()?;
            let by = match &rule.matches.hash_by {
                Some(crate::model::HashKey::Header(h)) => format!("header {h}"),
                Some(crate::model::HashKey::Cookie(c)) => format!("cookie {c}"),
                None => "no key".into(),
            };
            let percent = rule.matches.percent.unwrap_or(0.0);
            Some((
                i,
                format!("LaneRollout {name} lets {percent}% of users in, by {by}"),
            ))
        })
        .collect()
}

impl RoutingTable {
    /// The tag a request entering `service` of `namespace` carries to the app.
    ///
    /// Without a TagPolicy listing `service`, `incoming` is kept as is. With one, its
    /// `incoming` setting applies first (`strip` removes it, `keep` keeps it,
    /// `keep-known` keeps it only when some Lane declares it); when no tag is left, its
    /// rules are tried in order and the first match gives the tag.
    pub fn inbound_tag(
        &self,
        namespace: &str,
        service: &str,
        incoming: Option<Tag>,
        req: &dyn RequestView,
    ) -> InboundTag {
        let kept = |tag| InboundTag {
            tag: Some(tag),
            source: InboundSource::Incoming,
            rule: None,
            stripped: false,
        };
        let Some(policy) = self.compiled.tag_policies.get(namespace, service) else {
            return match incoming {
                Some(tag) => kept(tag),
                None => InboundTag {
                    tag: None,
                    source: InboundSource::None,
                    rule: None,
                    stripped: false,
                },
            };
        };
        let stripped = match incoming {
            Some(tag) => match policy.incoming {
                Incoming::Keep => return kept(tag),
                Incoming::KeepKnown if self.is_lane_tag(&tag) => return kept(tag),
                Incoming::KeepKnown | Incoming::Strip => true,
            },
            None => false,
        };
        for (i, (tag, m)) in policy.rules.iter().enumerate() {
            if m.matches(req) {
                return InboundTag {
                    tag: Some(tag.clone()),
                    source: InboundSource::Rule,
                    rule: Some(i),
                    stripped,
                };
            }
        }
        InboundTag {
            tag: None,
            source: InboundSource::None,
            rule: None,
            stripped,
        }
    }

    /// Whether a TagPolicy lists `service` of `namespace`: with mTLS on, a tag from a
    /// peer without a mesh identity is kept only if one says so (security.md "The tag
    /// across the trust boundary").
    pub fn has_tag_policy(&self, namespace: &str, service: &str) -> bool {
        self.compiled.tag_policies.get(namespace, service).is_some()
    }

    /// The rollouts moving users at this entry: (rule index, what it does).
    pub(super) fn rollout_notes(&self, namespace: &str, service: &str) -> &[(usize, String)] {
        self.compiled
            .tag_policies
            .get(namespace, service)
            .map_or(&[], |p| p.rollouts.as_slice())
    }
}

#[cfg(test)]
mod tests;
