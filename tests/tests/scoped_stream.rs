//! Scoped endpoints on the raw Discovery stream (issue 15): what a scoped Hello gets,
//! and what a hostile or mistaken scope gets (refused with INVALID_ARGUMENT for a bad
//! name; every endpoint, as unscoped, past 1,000 services).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use graylane_proto::v1::admin_client::AdminClient;
use graylane_proto::v1::discovery_client::DiscoveryClient;
use graylane_proto::v1::sidecar_message::Message;
use graylane_proto::v1::{
    Ack, EndpointScope, Hello, ListSidecarsRequest, ServiceName, SidecarMessage, Snapshot,
};
use graylane_tests::{ControlPlane, Subscriber, http_get};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

fn name(service: &str) -> ServiceName {
    ServiceName {
        namespace: String::new(),
        service: service.into(),
    }
}

/// Opens a stream as service `web` with `scope`; the sender keeps it open.
async fn open(
    url: &str,
    scope: Option<Vec<ServiceName>>,
) -> Result<(mpsc::Sender<SidecarMessage>, Streaming<Snapshot>), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    let hello = Hello {
        service: "web".into(),
        instance_id: "web-1".into(),
        address: "127.0.0.1:15006".into(),
        scope: scope.map(|services| EndpointScope { services }),
        ..Hello::default()
    };
    tx.send(SidecarMessage {
        message: Some(Message::Hello(hello)),
    })
    .await
    .unwrap();
    let stream = DiscoveryClient::new(channel)
        .subscribe(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, stream))
}

/// The next whole snapshot (parts concatenated), within 10 s.
async fn next(stream: &mut Streaming<Snapshot>) -> Result<Snapshot, tonic::Status> {
    let mut whole: Option<Snapshot> = None;
    loop {
        let part = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a snapshot within 10s")?
            .expect("the stream stays open");
        let more = part.more;
        match &mut whole {
            None => whole = Some(part),
            Some(w) => {
                if let Some(set) = part.endpoints {
                    let all = w.endpoints.get_or_insert_default();
                    all.endpoints.extend(set.endpoints);
                }
                if let Some(dir) = part.directory {
                    let all = w.directory.get_or_insert_default();
                    all.services.extend(dir.services);
                }
                if let Some(d) = part.endpoint_changes {
                    let all = w.endpoint_changes.get_or_insert_default();
                    all.removed.extend(d.removed);
                    all.upserted.extend(d.upserted);
                }
                if let Some(d) = part.directory_changes {
                    let all = w.directory_changes.get_or_insert_default();
                    all.added.extend(d.added);
                    all.removed.extend(d.removed);
                }
            }
        }
        if !more {
            return Ok(whole.expect("one part at least"));
        }
    }
}

/// What a sidecar holds after the snapshots so far: instance id → service, and the
/// directory (`None`: none received, or a full set came without one).
#[derive(Default)]
struct Held {
    endpoints: std::collections::BTreeMap<String, String>,
    directory: Option<BTreeSet<String>>,
    /// The version of the last snapshot read.
    version: u64,
}

impl Held {
    /// Reads snapshots until `done` holds.
    async fn until(&mut self, stream: &mut Streaming<Snapshot>, done: impl Fn(&Held) -> bool) {
        while !done(self) {
            let s = next(stream).await.unwrap();
            self.version = s.version;
            if let Some(set) = s.endpoints {
                self.endpoints = (set.endpoints.into_iter())
                    .map(|e| (e.instance_id, e.service))
                    .collect();
                self.directory = None;
            }
            if let Some(d) = s.endpoint_changes {
                for id in d.removed {
                    self.endpoints.remove(&id);
                }
                self.endpoints
                    .extend(d.upserted.into_iter().map(|e| (e.instance_id, e.service)));
            }
            if let Some(dir) = s.directory {
                self.directory = Some(dir.services.into_iter().map(|n| n.service).collect());
            }
            if let (Some(d), Some(dir)) = (s.directory_changes, &mut self.directory) {
                for n in d.removed {
                    dir.remove(&n.service);
                }
                dir.extend(d.added.into_iter().map(|n| n.service));
            }
        }
    }

    fn services(&self) -> BTreeSet<String> {
        self.endpoints.values().cloned().collect()
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_string()).collect()
}

/// An unscoped stream of service `probe`, once it lists `n` other instances.
async fn registered(url: &str, n: usize) -> Subscriber {
    let mut probe = Subscriber::connect(url, "probe", "probe-1", &[], None)
        .await
        .unwrap();
    probe.until(|sub, _| sub.endpoints.len() == n + 1).await;
    probe
}

/// Instances `orders-1` and `payments-1`, and the unscoped probe once it lists them.
async fn orders_and_payments(url: &str) -> ([Subscriber; 2], Subscriber) {
    let orders = Subscriber::connect(url, "orders", "orders-1", &[], None)
        .await
        .unwrap();
    let payments = Subscriber::connect(url, "payments", "payments-1", &[], None)
        .await
        .unwrap();
    ([orders, payments], registered(url, 2).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_hello_gets_its_services_and_the_directory_and_bad_scopes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let (_others, _probe) = orders_and_payments(&url).await;

    // Scoped to orders: orders and its own service, and every name in the directory.
    let (tx, mut stream) = open(&url, Some(vec![name("orders")])).await.unwrap();
    let mut held = Held::default();
    let all = set(&["orders", "payments", "probe", "web"]);
    held.until(&mut stream, |h| h.directory.as_ref() == Some(&all))
        .await;
    assert_eq!(held.services(), set(&["orders", "web"]));

    // Interest with a bad name ends the stream with the reason.
    let bad = EndpointScope {
        services: vec![name("payments"), name("Not_A_Name")],
    };
    tx.send(SidecarMessage {
        message: Some(Message::Interest(bad)),
    })
    .await
    .unwrap();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Err(status)) => break status,
            Ok(Ok(Some(_))) => {}
            other => panic!("expected the stream to end with an error: {other:?}"),
        }
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("interest: services[1]"),
        "{}",
        status.message()
    );

    // A bad name in Hello: refused before anything is registered.
    let refused = open(&url, Some(vec![name("orders"), name("")])).await;
    let status = refused.map(|_| ()).unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("Hello.scope: services[1]"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_past_the_cap_gets_every_endpoint_as_an_unscoped_stream_does() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let _orders = Subscriber::connect(&url, "orders", "orders-1", &[], None)
        .await
        .unwrap();
    let _probe = registered(&url, 1).await;
    let huge: Vec<ServiceName> = (0..1_001).map(|i| name(&format!("svc-{i}"))).collect();
    let (_tx, mut stream) = open(&url, Some(huge)).await.unwrap();
    let mut held = Held::default();
    held.until(&mut stream, |h| h.endpoints.len() == 3).await;
    assert_eq!(held.services(), set(&["orders", "probe", "web"]));
    assert!(held.directory.is_none(), "not scoped: no directory");
}

/// The version `ListSidecars` says `instance` acked, once it is `want` (≤ 10 s).
async fn acked(url: &str, instance: &str, want: u64) -> u64 {
    let mut admin = AdminClient::connect(url.to_string()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = admin
            .list_sidecars(ListSidecarsRequest {})
            .await
            .unwrap()
            .into_inner();
        let version = list
            .sidecars
            .iter()
            .find(|s| s.instance_id == instance)
            .map_or(0, |s| s.acked_version);
        if version == want || tokio::time::Instant::now() > deadline {
            return version;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_outside_a_scope_is_not_sent_yet_the_sidecar_counts_as_holding_it() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let (_others, mut probe) = orders_and_payments(&url).await;
    let (tx, mut stream) = open(&url, Some(vec![name("orders")])).await.unwrap();
    let mut held = Held::default();
    let all = set(&["orders", "payments", "probe", "web"]);
    held.until(&mut stream, |h| {
        h.directory.as_ref() == Some(&all) && h.services() == set(&["orders", "web"])
    })
    .await;
    let ack = |version| SidecarMessage {
        message: Some(Message::Ack(Ack { version })),
    };
    tx.send(ack(held.version)).await.unwrap();
    assert_eq!(acked(&url, "web-1", held.version).await, held.version);

    // Another payments instance: not in web's scope, and the directory is unchanged.
    let _payments2 = Subscriber::connect(&url, "payments", "payments-2", &[], None)
        .await
        .unwrap();
    let joined = probe.until(|sub, _| sub.endpoints.len() == 5).await.version;
    assert!(joined > held.version);
    // Nothing was sent (it would wait unread, unACKed), yet web-1 holds that version.
    assert_eq!(acked(&url, "web-1", joined).await, joined);

    // Another orders instance is in its scope: the next snapshot web reads.
    let _orders2 = Subscriber::connect(&url, "orders", "orders-2", &[], None)
        .await
        .unwrap();
    let snapshot = next(&mut stream).await.unwrap();
    assert!(snapshot.version > joined, "{snapshot:?}");
    let upserted: Vec<String> = (snapshot.endpoint_changes.into_iter())
        .flat_map(|d| d.upserted)
        .map(|e| e.instance_id)
        .collect();
    assert_eq!(upserted, ["orders-2"]);
    tx.send(ack(snapshot.version)).await.unwrap();
    assert_eq!(
        acked(&url, "web-1", snapshot.version).await,
        snapshot.version
    );

    let (status, metrics) = http_get(cp.http, "/metrics");
    assert_eq!(status, 200);
    let skipped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("graylane_control_pushes_skipped_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(skipped.is_some_and(|n| n >= 1), "{metrics}");
}
