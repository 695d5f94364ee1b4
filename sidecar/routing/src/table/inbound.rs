//! The tag on the way in: a TagPolicy's `incoming` trust, then its rules.

use std::collections::HashMap;

use super::matching::Compiled;
use super::{InboundSource, InboundTag, RequestView, RoutingTable};
use crate::Tag;
use crate::model::{Incoming, Resource};
use crate::set::RuleSet;

/// A TagPolicy ready to apply.
#[derive(Debug)]
pub(super) struct CompiledTagPolicy {
    incoming: Incoming,
    rules: Vec<(Tag, Compiled)>,
}

/// Compiles every TagPolicy, keyed by each service it lists (the first policy by name
/// wins when an unchecked set lists a service twice). The policies share nothing, so
/// one listing several services is compiled once per service; policies list a few
/// entry services, not the mesh.
pub(super) fn compile(rules: &RuleSet) -> HashMap<String, CompiledTagPolicy> {
    let mut out = HashMap::new();
    for r in rules.iter() {
        let Resource::TagPolicy(p) = r else { continue };
        for service in &p.spec.services {
            out.entry(service.as_str().to_owned())
                .or_insert_with(|| CompiledTagPolicy {
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
                });
        }
    }
    out
}

impl RoutingTable {
    /// The tag a request entering `service` carries to the app.
    ///
    /// Without a TagPolicy listing `service`, `incoming` is kept as is. With one, its
    /// `incoming` setting applies first (`strip` removes it, `keep` keeps it,
    /// `keep-known` keeps it only when some Lane declares it); when no tag is left, its
    /// rules are tried in order and the first match gives the tag.
    pub fn inbound_tag(
        &self,
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
        let Some(policy) = self.tag_policies.get(service) else {
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
}

#[cfg(test)]
mod tests;
