//! The sidecar stream: Hello → register → snapshots out, ACK/NACK in → deregister.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use graylane_proto::v1 as pb;
use graylane_proto::v1::discovery_server::Discovery;
use graylane_proto::v1::sidecar_message::Message;
use graylane_proto::v1::{Hello, SidecarMessage, Snapshot};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{Principal, Role};
use super::identity::{self, Identities};
use crate::push::{Hub, Outgoing, Scope, SidecarId, State};

/// How long a new stream may take to say Hello before it is dropped.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Snapshot versions remembered per stream to map an ACK back to its rule revision.
/// An ACK for anything older is stale (a newer snapshot is already on its way).
const SENT_REMEMBERED: usize = 16;

/// What a stream's channel carries. Boxed because tokio's mpsc allocates its slots in
/// blocks of 32: unboxed (~200 bytes each) that is ~6 KiB per idle sidecar stream.
type Item = Box<Result<Snapshot, Status>>;

/// The response stream of `Subscribe`.
pub(crate) type Outbound =
    tokio_stream::adapters::Map<ReceiverStream<Item>, fn(Item) -> Result<Snapshot, Status>>;

/// `graylane.v1.Discovery`, serving every sidecar from the shared `Hub`.
pub struct DiscoveryService {
    hub: Arc<Hub>,
    /// Decides each sidecar's identity and signs its certificates.
    identities: Arc<Identities>,
    /// Flips to true on shutdown: every stream ends with UNAVAILABLE so sidecars
    /// reconnect (to another replica) instead of holding a dead stream.
    shutdown: watch::Receiver<bool>,
}

impl DiscoveryService {
    pub fn new(
        hub: Arc<Hub>,
        identities: Arc<Identities>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            hub,
            identities,
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    type SubscribeStream = Outbound;

    async fn issue_certificate(
        &self,
        request: Request<pb::CertificateRequest>,
    ) -> Result<Response<pb::CertificateResponse>, Status> {
        let principal = principal_of(&request)?;
        let request = request.into_inner();
        if request.instance_id.len() > 253 {
            return Err(Status::invalid_argument(
                "instance_id: must be at most 253 characters",
            ));
        }
        // Signing is CPU work (an RSA CSR's check, an ECDSA signature): off the
        // runtime's threads.
        let identities = Arc::clone(&self.identities);
        let issued = tokio::task::spawn_blocking(move || {
            identities.issue(&principal, &request).map(|r| (r, request))
        })
        .await
        .map_err(|_| Status::internal("signing the certificate failed"))?;
        let (response, request) = issued?;
        if !request.instance_id.is_empty() {
            self.hub.record_certificate(
                &request.instance_id,
                &response.identity,
                response.not_after,
            );
        }
        Ok(Response::new(response))
    }

    async fn subscribe(
        &self,
        request: Request<Streaming<SidecarMessage>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let principal = principal_of(&request)?;
        // control-plane.md: only the sidecar role may subscribe. An admin token's
        // stream got no certificate (never a workload identity) yet was listed and
        // routed to: a ready-looking instance every call to which failed its mTLS.
        if principal.presented && principal.role == Role::Admin {
            return Err(Status::permission_denied(
                "an admin token may not subscribe as a sidecar; sidecars use sidecar tokens",
            ));
        }
        // A replica that has not read the rules in force (its store unavailable since
        // it started: a partitioned node) could never send this sidecar a snapshot.
        // Refused, the sidecar moves on to its next --control-plane URL instead of
        // waiting here, and registers nowhere it could not be seen.
        if !self.hub.current().loaded {
            return Err(Status::unavailable(
                "this replica has not loaded the rules in force yet (its store is \
                 unavailable); try another replica",
            ));
        }
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within 10s"))??;
        let Some(SidecarMessage {
            message: Some(Message::Hello(hello)),
        }) = first
        else {
            return Err(Status::invalid_argument("the first message must be Hello"));
        };
        check_hello(&hello)?;
        let mut hello = crate::push::with_identity_defaults(hello);
        // Scoped endpoints (issue 15): checked like the rest of Hello, kept by the stream.
        let scope = Scope::of_hello(&mut hello)
            .map_err(|e| Status::invalid_argument(format!("Hello.scope: {e}")))?;
        let identity = self.identity_of(&principal, &hello)?;
        tracing::info!(service = %hello.service, namespace = %hello.namespace, instance = %hello.instance_id, address = %hello.address, %identity, "sidecar connected");
        let (id, kicked) = self
            .hub
            .register(hello, identity, crate::now_ms())
            .map_err(Status::permission_denied)?;
        self.hub.set_scope(&id, &scope);
        // Capacity 1: with at most one snapshot in the channel and one pending in the
        // task, a slow sidecar costs bounded memory and gets the latest state.
        let (tx, rx) = mpsc::channel(1);
        let stream = Stream {
            hub: Arc::clone(&self.hub),
            id,
            sent: VecDeque::new(),
            scope,
        };
        tokio::spawn(stream.run(tx, inbound, kicked, self.shutdown.clone()));
        Ok(Response::new(ReceiverStream::new(rx).map(
            (|item: Item| *item) as fn(Item) -> Result<Snapshot, Status>,
        )))
    }
}

impl DiscoveryService {
    /// The SPIFFE id of a stream: a bound credential must say Hello as its own
    /// identity (else PERMISSION_DENIED, and nothing is registered); an unbound one
    /// gets what it says, or none when that is not a valid service account (an older
    /// sidecar whose service name is not a DNS name: it still routes, without mTLS).
    fn identity_of(&self, principal: &Principal, hello: &Hello) -> Result<String, Status> {
        match identity::decide(principal, &hello.namespace, &hello.service_account) {
            Ok(account) => Ok(self.identities.spiffe_id(&account)),
            Err(status) if status.code() == tonic::Code::PermissionDenied => Err(status),
            Err(status) => {
                tracing::warn!(instance = %hello.instance_id, reason = %status.message(), "no identity for this sidecar");
                Ok(String::new())
            }
        }
    }
}

/// What the auth interceptor decided about this call.
fn principal_of<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        // Every Discovery call passes the interceptor; without it, nobody is trusted.
        .ok_or_else(|| Status::unauthenticated("no credential was checked for this call"))
}

/// Names and labels are checked with the routing crate's own types, the ones rules are
/// read with: a sidecar registering a name no rule could ever refer to is refused.
fn check_hello(hello: &Hello) -> Result<(), Status> {
    let bad = |what: &str| Err(Status::invalid_argument(format!("Hello.{what}")));
    if let Err(e) = graylane_routing::Name::new(hello.service.as_str()) {
        return bad(&format!("service: {e}"));
    }
    if !hello.namespace.is_empty()
        && let Err(e) = graylane_routing::Name::new(hello.namespace.as_str())
    {
        return bad(&format!("namespace: {e}"));
    }
    let labels = hello.labels.iter().map(|(k, v)| (k.clone(), v.clone()));
    if let Err(e) = graylane_routing::Labels::new(labels.collect()) {
        return bad(&format!("labels: {e}"));
    }
    if hello.instance_id.is_empty() || hello.instance_id.len() > 253 {
        return bad("instance_id: must be 1-253 characters");
    }
    if hello.namespace.len() > 253 || hello.service_account.len() > 253 {
        return bad("namespace, service_account: must be at most 253 characters");
    }
    let (host, port) = hello.address.rsplit_once(':').unwrap_or(("", ""));
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return bad(&format!("address: {:?} is not host:port", hello.address));
    }
    Ok(())
}

struct Stream {
    hub: Arc<Hub>,
    id: SidecarId,
    /// The last snapshots sent, oldest first.
    sent: VecDeque<Sent>,
    /// Whose endpoints this stream sends (`push::Scope`); widened by interest.
    scope: Scope,
}

/// A snapshot sent on a stream, remembered to map its ACK back.
struct Sent {
    version: u64,
    /// The rule revision it carried.
    revision: u64,
    /// When its first part went out.
    at: Instant,
    /// The newest version it stands for: its own, or a later one that carried nothing
    /// for this sidecar and was not sent (`Outgoing::carries_nothing`). Its ACK is
    /// recorded as that version's, so `ListSidecars` shows an unaffected sidecar as
    /// holding the version every other one holds.
    stands_for: u64,
    acked: bool,
}

impl Stream {
    async fn run(
        mut self,
        tx: mpsc::Sender<Item>,
        mut inbound: Streaming<SidecarMessage>,
        mut kicked: oneshot::Receiver<()>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut states = self.hub.subscribe();
        let mut evictions = self.hub.evictions();
        // The newest state not yet being sent; replaced (coalesced) by newer ones.
        // Nothing goes out before the rules in force were read from the store (a
        // replica starting while etcd is down): an empty set would wipe the sidecar's.
        let mut pending = Some(states.borrow_and_update().clone()).filter(|s| s.loaded);
        // The snapshot whose parts are going out; always finished before the next.
        let mut sending: Option<Outgoing> = None;
        let mut last: Option<Arc<State>> = None;
        let end = loop {
            if sending.is_none()
                && let Some(state) = pending.take()
            {
                let out = Outgoing::new(state, last.as_deref(), &mut self.scope);
                if out.carries_nothing() {
                    self.skip(out.state());
                    last = Some(Arc::clone(out.state()));
                } else {
                    self.sending(out.state());
                    sending = Some(out);
                }
            }
            tokio::select! {
                _ = &mut kicked => break Some(Status::aborted("replaced by a newer stream of the same instance")),
                Ok(()) = evictions.changed() => break Some(Status::unavailable("this replica lost its lease in etcd: reconnect to another")),
                _ = shutdown.wait_for(|down| *down) => break Some(Status::unavailable("control plane shutting down")),
                message = inbound.message() => match message {
                    Ok(Some(message)) => {
                        if let Err(status) = self.answer(message) { break Some(status) }
                        // Interest widened the scope: its endpoints go out even if
                        // nothing changed (after the snapshot being sent, if any).
                        if self.scope.owes() && pending.is_none() {
                            pending = Some(states.borrow().clone()).filter(|s| s.loaded);
                        }
                    }
                    Ok(None) | Err(_) => break None,
                },
                changed = states.changed() => match changed {
                    Ok(()) => pending = Some(states.borrow_and_update().clone()).filter(|s| s.loaded),
                    Err(_) => break Some(Status::unavailable("control plane shutting down")),
                },
                permit = tx.reserve(), if sending.is_some() => {
                    let (Ok(permit), Some(out)) = (permit, sending.as_mut()) else { break None };
                    match out.next_part() {
                        Some(part) if part.more => permit.send(Box::new(Ok(part))),
                        Some(part) => {
                            permit.send(Box::new(Ok(part)));
                            last = Some(Arc::clone(out.state()));
                            sending = None;
                            self.hub.stats.pushed();
                        }
                        None => sending = None,
                    }
                },
            }
        };
        if let Some(status) = end {
            let _ = tx.try_send(Box::new(Err(status)));
        }
        tracing::info!(instance = %self.id.instance_id, "sidecar disconnected");
        self.hub.deregister(&self.id);
    }

    fn answer(&mut self, message: SidecarMessage) -> Result<(), Status> {
        match message.message {
            Some(Message::Ack(ack)) => {
                if let Some(sent) = self.sent.iter_mut().find(|s| s.version == ack.version) {
                    sent.acked = true;
                    self.hub.stats.acked(sent.at.elapsed());
                    self.hub.ack(&self.id, sent.stands_for, sent.revision);
                }
            }
            Some(Message::Nack(nack)) => {
                if let Some(revision) = self.revision_of(nack.version) {
                    self.hub.stats.nacked();
                    tracing::warn!(instance = %self.id.instance_id, revision, reason = %nack.reason, "sidecar rejected snapshot");
                    self.hub.nack(&self.id, revision, nack.reason);
                }
            }
            Some(Message::Traffic(report)) => {
                // Series a sidecar could have made only (`State::could_report`).
                let state = self.hub.current();
                self.hub.traffic.record(
                    &report,
                    u64::try_from(crate::now_ms()).unwrap_or(0),
                    |series| state.could_report(series),
                );
            }
            Some(Message::Interest(interest)) => {
                self.hub.stats.interest();
                let widened = self.scope.widen(&interest).map_err(|e| {
                    Status::invalid_argument(format!("SidecarMessage.interest: {e}"))
                })?;
                if widened {
                    self.hub.set_scope(&self.id, &self.scope);
                }
            }
            Some(Message::Hello(_)) => return Err(Status::invalid_argument("Hello sent twice")),
            None => return Err(Status::invalid_argument("empty message")),
        }
        Ok(())
    }

    /// Remembers the snapshot of `state` as it starts going out.
    fn sending(&mut self, state: &State) {
        self.sent.push_back(Sent {
            version: state.version,
            revision: state.revision,
            at: Instant::now(),
            stands_for: state.version,
            acked: false,
        });
        if self.sent.len() > SENT_REMEMBERED {
            self.sent.pop_front();
        }
    }

    fn revision_of(&self, version: u64) -> Option<u64> {
        self.sent
            .iter()
            .find(|s| s.version == version)
            .map(|s| s.revision)
    }

    /// `state` carried nothing for this sidecar: the snapshot sent last stands for it,
    /// and once that one is ACKed the sidecar holds `state` as far as it is concerned.
    /// (Its revision is that snapshot's: a rule change is never skipped.)
    fn skip(&mut self, state: &State) {
        self.hub.stats.skipped();
        let Some(last) = self.sent.back_mut() else {
            return;
        };
        last.stands_for = state.version;
        if last.acked {
            self.hub.ack(&self.id, state.version, last.revision);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(service: &str, namespace: &str, labels: &[(&str, &str)]) -> Hello {
        Hello {
            service: service.into(),
            namespace: namespace.into(),
            instance_id: "i-1".into(),
            address: "10.0.0.1:8080".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Hello::default()
        }
    }

    /// What `ListSidecars` records for `stream`'s sidecar: acked version, NACK.
    fn recorded(stream: &Stream) -> (u64, Option<(u64, String)>) {
        let entry = stream.hub.sidecars().into_iter().next().unwrap();
        (entry.acked_version, entry.nack)
    }

    fn answer(version: u64, nack: bool) -> SidecarMessage {
        let message = match nack {
            false => Message::Ack(pb::Ack { version }),
            true => Message::Nack(pb::Nack {
                version,
                reason: "bad".into(),
            }),
        };
        SidecarMessage {
            message: Some(message),
        }
    }

    #[test]
    fn a_skipped_state_counts_as_held_only_once_the_snapshot_before_is_acked() {
        let hub = Arc::new(Hub::new());
        let (id, _kicked) = hub
            .register(hello("web", "", &[]), String::new(), 0)
            .unwrap();
        let mut stream = Stream {
            hub,
            id,
            sent: VecDeque::new(),
            scope: Scope::default(),
        };
        let state = |version| State {
            version,
            revision: 7,
            ..State::default()
        };
        // Acked, then a state with nothing for it: held at once.
        stream.sending(&state(1));
        stream.answer(answer(1, false)).unwrap();
        stream.skip(&state(2));
        assert_eq!(recorded(&stream), (2, None));
        // Skipped while the snapshot before is unanswered: held when that one is acked.
        stream.sending(&state(3));
        stream.skip(&state(4));
        assert_eq!(recorded(&stream).0, 2);
        // A sidecar cannot ACK a version it was never sent.
        stream.answer(answer(4, false)).unwrap();
        assert_eq!(recorded(&stream).0, 2);
        stream.answer(answer(3, false)).unwrap();
        assert_eq!(recorded(&stream).0, 4);
        // NACKed: what follows is not held either.
        stream.sending(&state(5));
        stream.answer(answer(5, true)).unwrap();
        stream.skip(&state(6));
        assert_eq!(recorded(&stream), (4, Some((7, "bad".into()))));
    }

    #[test]
    fn names_and_labels_are_read_as_rules_read_them() {
        check_hello(&hello("orders", "", &[("version", "v2")])).unwrap();
        check_hello(&hello("orders", "shop", &[("app.kubernetes.io/name", "x")])).unwrap();
        for (bad, field) in [
            (hello("Orders", "", &[]), "Hello.service"),
            (hello("orders.shop", "", &[]), "Hello.service"),
            (hello("", "", &[]), "Hello.service"),
            (hello("orders", "Shop", &[]), "Hello.namespace"),
            (hello("orders", "", &[("version", "v 2")]), "Hello.labels"),
            (hello("orders", "", &[("", "v2")]), "Hello.labels"),
        ] {
            let e = check_hello(&bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().starts_with(field), "{}", e.message());
        }
    }
}
