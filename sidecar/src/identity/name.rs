//! Workload identities (`spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`)
//! and the TLS server names that stand for them.
//!
//! Why a server name at all: a workload certificate carries no DNS name, only its
//! identity as a URI SAN, and rustls hands a verifier nothing but the SNI the
//! connection was made with. So the caller encodes the identity it expects as
//! `<sa>.<ns>.identity.graylane.internal` and the verifier decodes it back. The same
//! suffix tells the inbound listener mesh mTLS from an app's own TLS passing through.

use std::cell::RefCell;
use std::fmt;

use rustls::pki_types::ServerName;

/// The DNS suffix of every mesh server name; never a real domain (`.internal` is
/// reserved for private use).
pub(crate) const MESH_SNI_SUFFIX: &str = "identity.graylane.internal";

const SCHEME: &str = "spiffe://";

/// A workload identity, split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SpiffeId {
    pub(crate) trust_domain: String,
    pub(crate) namespace: String,
    pub(crate) service_account: String,
}

impl SpiffeId {
    /// Parses `spiffe://<td>/ns/<ns>/sa/<sa>`; `None` for anything else (another
    /// path, an empty part, a query or fragment, extra segments).
    pub(crate) fn parse(id: &str) -> Option<Self> {
        let (td, ns, sa) = split(id)?;
        Some(Self {
            trust_domain: td.to_string(),
            namespace: ns.to_string(),
            service_account: sa.to_string(),
        })
    }

    /// The server name that stands for this identity: `<sa>.<ns>.<MESH_SNI_SUFFIX>`.
    /// `None` when the namespace is not one DNS label or the service account not a
    /// DNS name (no valid SNI could carry them).
    pub(crate) fn server_name(&self) -> Option<ServerName<'static>> {
        let mut buf = [0; MAX_NAME];
        mesh_name(&self.namespace, &self.service_account, &mut buf).map(|n| n.to_owned())
    }

    /// The identity a mesh server name stands for, in `trust_domain`; `None` when
    /// `sni` is not a mesh name.
    pub(crate) fn from_server_name(sni: &str, trust_domain: &str) -> Option<Self> {
        let (sa, ns) = mesh_prefix(sni)?.rsplit_once('.')?;
        (!sa.is_empty() && !ns.is_empty()).then(|| Self {
            trust_domain: trust_domain.to_string(),
            namespace: ns.to_string(),
            service_account: sa.to_string(),
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// Whether `id` is an identity of `trust_domain` that a mesh server name can stand
/// for: what `SpiffeId::parse(id)?.server_name()` says.
///
/// It is asked for every outbound call, about the few identities a caller's
/// destinations carry, and deciding it (splitting the id, validating the name as DNS)
/// costs about 3 % of the calling hop. So each thread remembers its answers; a
/// lookup costs a tenth. The answer depends on the id and the trust domain only, so
/// the memory is dropped when the trust domain changes, and when it grows past
/// `REMEMBERED` ids (an app calling that many instances pays the old price).
pub(crate) fn nameable(id: &str, trust_domain: &str) -> bool {
    thread_local! {
        static ANSWERS: RefCell<Answers> = RefCell::default();
    }
    ANSWERS.with_borrow_mut(|answers| {
        if answers.trust_domain != trust_domain {
            answers.trust_domain = trust_domain.to_owned();
            answers.by_id.clear();
        }
        if let Some(&known) = answers.by_id.get(id) {
            return known;
        }
        let answer = decide(id, trust_domain);
        if answers.by_id.len() >= REMEMBERED {
            answers.by_id.clear();
        }
        answers.by_id.insert(id.into(), answer);
        answer
    })
}

/// How many identities a thread remembers `nameable`'s answer for.
const REMEMBERED: usize = 1024;

/// foldhash, not SipHash: the ids are those the control plane registered.
#[derive(Default)]
struct Answers {
    trust_domain: String,
    by_id: foldhash::HashMap<Box<str>, bool>,
}

/// `nameable`'s answer, without allocating.
fn decide(id: &str, trust_domain: &str) -> bool {
    split(id).is_some_and(|(td, ns, sa)| {
        td == trust_domain && mesh_name(ns, sa, &mut [0; MAX_NAME]).is_some()
    })
}

/// `(<td>, <ns>, <sa>)` of `spiffe://<td>/ns/<ns>/sa/<sa>`, each non-empty and
/// without `?`, `#`, `%` or a space.
fn split(id: &str) -> Option<(&str, &str, &str)> {
    let rest = id.strip_prefix(SCHEME)?;
    let mut parts = rest.split('/');
    let (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    // Bytes, not a set of chars: the four are ASCII, and a char set decodes UTF-8.
    let plain =
        |s: &str| !s.is_empty() && !s.bytes().any(|b| matches!(b, b'?' | b'#' | b'%' | b' '));
    (plain(td) && plain(ns) && plain(sa)).then_some((td, ns, sa))
}

/// The longest DNS name (RFC 1035 §2.3.4); rustls refuses longer ones.
const MAX_NAME: usize = 253;

/// `<sa>.<ns>.<MESH_SNI_SUFFIX>` as a DNS server name, written into `buf`.
fn mesh_name<'b>(
    namespace: &str,
    service_account: &str,
    buf: &'b mut [u8; MAX_NAME],
) -> Option<ServerName<'b>> {
    if namespace.contains('.') {
        return None;
    }
    let parts = [service_account, ".", namespace, ".", MESH_SNI_SUFFIX];
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > MAX_NAME {
        return None;
    }
    let mut at = 0;
    for part in parts {
        buf[at..at + part.len()].copy_from_slice(part.as_bytes());
        at += part.len();
    }
    let name = std::str::from_utf8(&buf[..len]).ok()?;
    match ServerName::try_from(name).ok()? {
        dns @ ServerName::DnsName(_) => Some(dns),
        // An all-digits service account could read as an address: not a name.
        _ => None,
    }
}

/// Whether `sni` is a mesh server name (`<sa>.<ns>.<MESH_SNI_SUFFIX>`, any case).
pub(crate) fn is_mesh_sni(sni: &str) -> bool {
    mesh_prefix(sni).is_some_and(|p| {
        p.split_once('.')
            .is_some_and(|(sa, ns)| !sa.is_empty() && !ns.is_empty())
    })
}

/// `<sa>.<ns>` of a mesh server name. DNS names compare case-insensitively, and a
/// trailing dot (the absolute form) names the same host.
fn mesh_prefix(sni: &str) -> Option<&str> {
    let sni = sni.strip_suffix('.').unwrap_or(sni);
    let cut = sni.len().checked_sub(MESH_SNI_SUFFIX.len() + 1)?;
    let (prefix, suffix) = (sni.get(..cut)?, sni.get(cut..)?);
    let suffix = suffix.strip_prefix('.')?;
    suffix
        .eq_ignore_ascii_case(MESH_SNI_SUFFIX)
        .then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_their_server_name() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/orders.v2").unwrap();
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/shop/sa/orders.v2"
        );
        let sni = id.server_name().unwrap().to_str().into_owned();
        assert_eq!(sni, "orders.v2.shop.identity.graylane.internal");
        assert!(is_mesh_sni(&sni));
        assert_eq!(SpiffeId::from_server_name(&sni, "cluster.local"), Some(id));
    }

    #[test]
    fn malformed_identities_are_refused() {
        for bad in [
            "",
            "spiffe://",
            "https://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/sa/b/ns/a",
            "spiffe://cluster.local/ns/a/sa/b?x=1",
        ] {
            assert_eq!(SpiffeId::parse(bad), None, "{bad:?}");
        }
        // A namespace with a dot could not be decoded back from the name.
        let dotted = SpiffeId::parse("spiffe://td/ns/a.b/sa/c").unwrap();
        assert_eq!(dotted.server_name(), None);
        let spaced = SpiffeId::parse("spiffe://td/ns/a/sa/b:c").unwrap();
        assert_eq!(spaced.server_name(), None, "not a DNS name");
    }

    #[test]
    fn remembered_answers_follow_the_trust_domain() {
        let id = "spiffe://cluster.local/ns/shop/sa/payments";
        let bad = "spiffe://cluster.local/ns/sh.op/sa/payments";
        for _ in 0..2 {
            assert!(nameable(id, "cluster.local"));
            assert!(!nameable(bad, "cluster.local"));
            assert!(!nameable(id, "elsewhere"), "another trust domain");
        }
        // Past what a thread remembers, answers are still decided, not guessed.
        for n in 0..REMEMBERED + 10 {
            let good = format!("spiffe://cluster.local/ns/shop/sa/s{n}");
            let dotted = format!("spiffe://cluster.local/ns/a.{n}/sa/s");
            assert!(nameable(&good, "cluster.local"), "{good}");
            assert!(!nameable(&dotted, "cluster.local"), "{dotted}");
        }
        assert!(nameable(id, "cluster.local"));
    }

    #[test]
    fn only_mesh_names_are_mesh_sni() {
        assert!(is_mesh_sni("orders.shop.IDENTITY.graylane.internal."));
        for other in [
            "identity.graylane.internal",
            "shop.identity.graylane.internal",
            ".shop.identity.graylane.internal",
            "orders.shopidentity.graylane.internal",
            "api.stripe.com",
            "",
        ] {
            assert!(!is_mesh_sni(other), "{other:?}");
        }
    }
}
