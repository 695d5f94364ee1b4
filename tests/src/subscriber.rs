//! A test sidecar: the generated Discovery client, driven by hand (Hello, then ACK or
//! NACK each snapshot as the test decides).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use graylane_proto::v1::discovery_client::DiscoveryClient;
use graylane_proto::v1::sidecar_message::Message;
use graylane_proto::v1::{Ack, Endpoint, Hello, Nack, SidecarMessage, Snapshot};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// One subscribed stream.
pub struct Subscriber {
    tx: mpsc::Sender<SidecarMessage>,
    inbound: Streaming<Snapshot>,
    /// The latest rules seen (snapshots omit unchanged parts).
    pub rules: String,
    /// The endpoints as a sidecar holds them: full sets replace, deltas apply.
    pub endpoints: BTreeMap<String, Endpoint>,
}

impl Subscriber {
    /// Connects and says Hello; `token` is sent as a bearer token when given.
    pub async fn connect(
        url: &str,
        service: &str,
        instance: &str,
        labels: &[(&str, &str)],
        token: Option<&str>,
    ) -> Result<Subscriber, tonic::Status> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let (tx, rx) = mpsc::channel(16);
        let hello = Hello {
            service: service.into(),
            instance_id: instance.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
            address: "127.0.0.1:15006".into(),
            ..Hello::default()
        };
        tx.send(SidecarMessage {
            message: Some(Message::Hello(hello)),
        })
        .await
        .expect("queue hello");
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("ascii token"),
            );
        }
        let inbound = DiscoveryClient::new(channel)
            .subscribe(request)
            .await?
            .into_inner();
        Ok(Subscriber {
            tx,
            inbound,
            rules: String::new(),
            endpoints: BTreeMap::new(),
        })
    }

    /// Sends a traffic report on the stream, as a sidecar does every few seconds.
    pub async fn report(&self, report: graylane_proto::v1::TrafficReport) {
        self.tx
            .send(SidecarMessage {
                message: Some(Message::Traffic(report)),
            })
            .await
            .expect("queue the report");
    }

    /// The next snapshot (each part within 10 s), its parts reassembled, with `rules`
    /// and `endpoints` updated as a sidecar would.
    pub async fn next(&mut self) -> Snapshot {
        let mut snapshot = self.part().await;
        while snapshot.more {
            let part = self.part().await;
            assert_eq!(
                part.version, snapshot.version,
                "parts of one snapshot are not interleaved"
            );
            if let Some(rules) = part.rules {
                snapshot.rules.get_or_insert_default().push_str(&rules);
            }
            if let Some(set) = part.endpoints {
                snapshot
                    .endpoints
                    .get_or_insert_default()
                    .endpoints
                    .extend(set.endpoints);
            }
            if let Some(delta) = part.endpoint_changes {
                let d = snapshot.endpoint_changes.get_or_insert_default();
                d.removed.extend(delta.removed);
                d.upserted.extend(delta.upserted);
            }
            snapshot.more = part.more;
        }
        if let Some(rules) = &snapshot.rules {
            self.rules = rules.clone();
        }
        if let Some(set) = &snapshot.endpoints {
            self.endpoints = set
                .endpoints
                .iter()
                .map(|e| (e.instance_id.clone(), e.clone()))
                .collect();
        }
        if let Some(delta) = &snapshot.endpoint_changes {
            for id in &delta.removed {
                self.endpoints.remove(id);
            }
            for e in &delta.upserted {
                self.endpoints.insert(e.instance_id.clone(), e.clone());
            }
        }
        snapshot
    }

    /// Waits (up to 10 s) for the server to end the stream; returns its status.
    pub async fn ended(&mut self) -> tonic::Status {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.inbound.message()).await {
                Err(_) => panic!("the stream did not end within 10s"),
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => return tonic::Status::ok("stream closed without a status"),
                Ok(Err(status)) => return status,
            }
        }
    }

    async fn part(&mut self) -> Snapshot {
        tokio::time::timeout(Duration::from_secs(10), self.inbound.message())
            .await
            .expect("a snapshot within 10s")
            .expect("stream ok")
            .expect("stream open")
    }

    /// Snapshots until `done` holds for this subscriber's state after one of them
    /// (each wait bounded by `next`); returns that snapshot.
    pub async fn until(&mut self, done: impl Fn(&Subscriber, &Snapshot) -> bool) -> Snapshot {
        loop {
            let s = self.next().await;
            if done(self, &s) {
                return s;
            }
        }
    }

    /// Snapshots until one carries rule `revision` (or newer).
    pub async fn until_revision(&mut self, revision: u64) -> Snapshot {
        self.until(|_, s| s.revision >= revision).await
    }

    pub async fn ack(&self, version: u64) {
        self.send(Message::Ack(Ack { version })).await;
    }

    pub async fn nack(&self, version: u64, reason: &str) {
        self.send(Message::Nack(Nack {
            version,
            reason: reason.into(),
        }))
        .await;
    }

    async fn send(&self, message: Message) {
        self.tx
            .send(SidecarMessage {
                message: Some(message),
            })
            .await
            .expect("stream open");
    }
}
