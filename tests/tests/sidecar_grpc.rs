//! gRPC end to end through two sidecars (client → frontend outbound → orders inbound →
//! server): bidirectional streaming in both directions, the tag delivered as metadata,
//! and the final status carried in trailers.

#![allow(clippy::unwrap_used)]

use std::pin::Pin;

use graylane_proto::v1::discovery_client::DiscoveryClient;
use graylane_proto::v1::discovery_server::{Discovery, DiscoveryServer};
use graylane_proto::v1::sidecar_message::Message;
use graylane_proto::v1::{Ack, SidecarMessage, Snapshot};
use graylane_tests::{ControlPlane, Sidecar};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Echoes each message as a snapshot (version = the ACKed version, rules = the tag and
/// the `te` it received), then ends the stream with FAILED_PRECONDITION "done".
struct Echo;

#[tonic::async_trait]
impl Discovery for Echo {
    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<Snapshot, Status>> + Send>>;

    // This app serves streams only; a unary call gets the status an app would give,
    // 3 s late when asked (`x-slow`).
    async fn issue_certificate(
        &self,
        request: Request<graylane_proto::v1::CertificateRequest>,
    ) -> Result<Response<graylane_proto::v1::CertificateResponse>, Status> {
        if request.metadata().contains_key("x-slow") {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        }
        Err(Status::unimplemented("the echo app issues no certificates"))
    }

    async fn subscribe(
        &self,
        request: Request<Streaming<SidecarMessage>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let field = |name| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        // `te: trailers` is hop-by-hop, yet the one value every hop must pass on.
        let tag = format!("{} te={}", field("gray-publish"), field("te"));
        let mut inbound = request.into_inner();
        let stream = async_stream(move |tx| async move {
            while let Some(Ok(message)) = inbound.next().await {
                if let Some(Message::Ack(ack)) = message.message {
                    let snapshot = Snapshot {
                        version: ack.version,
                        rules: Some(tag.clone()),
                        ..Default::default()
                    };
                    if tx.send(Ok(snapshot)).await.is_err() {
                        return;
                    }
                }
            }
            let _ = tx.send(Err(Status::failed_precondition("done"))).await;
        });
        Ok(Response::new(stream))
    }
}

/// A stream fed by a task.
fn async_stream<F, Fut>(f: F) -> Pin<Box<dyn Stream<Item = Result<Snapshot, Status>> + Send>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Snapshot, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

fn ack(version: u64) -> SidecarMessage {
    SidecarMessage {
        message: Some(Message::Ack(Ack { version })),
    }
}

/// The `Echo` app on a free port; returns its address.
async fn echo_app() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DiscoveryServer::new(Echo))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    app
}

/// `service`'s sidecar in front of `app`, and `frontend`'s sidecar (with
/// `frontend_flags`) whose outbound listener the test calls, both ready and frontend
/// holding `service`'s endpoint.
async fn two_sidecars(
    dir: &std::path::Path,
    cp: &ControlPlane,
    service: &'static str,
    app: String,
    frontend_flags: &'static [&'static str],
) -> (Sidecar, Sidecar) {
    let (d, url) = (dir.to_path_buf(), cp.url());
    tokio::task::spawn_blocking(move || {
        let id = format!("{service}-1");
        let upstream = Sidecar::start(
            &d,
            service,
            &[
                "--service",
                service,
                "--instance-id",
                &id,
                "--app-addr",
                &app,
            ]
            .into_iter()
            .chain(["--control-plane", &url])
            .collect::<Vec<_>>(),
        );
        let frontend = Sidecar::start(
            &d,
            "frontend",
            &["--service", "frontend", "--instance-id", "frontend-1"]
                .into_iter()
                .chain(["--control-plane", &url])
                .chain(frontend_flags.iter().copied())
                .collect::<Vec<_>>(),
        );
        upstream.wait_ready();
        frontend.wait_ready();
        frontend.wait_endpoints(service, 1);
        (upstream, frontend)
    })
    .await
    .unwrap()
}

/// A gRPC channel to `origin` through `frontend`'s outbound listener.
async fn through(frontend: &Sidecar, origin: &'static str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", frontend.outbound))
        .unwrap()
        .origin(origin.parse().unwrap())
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bidi_streaming_and_trailers_pass_through_two_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let (orders, frontend) = two_sidecars(dir.path(), &cp, "orders", echo_app().await, &[]).await;
    let channel = through(&frontend, "http://orders").await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut request = Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("gray-publish", "gray".parse().unwrap());
    let mut responses = DiscoveryClient::new(channel)
        .subscribe(request)
        .await
        .unwrap()
        .into_inner();
    for version in 1..=3 {
        tx.send(ack(version)).await.unwrap();
        let echoed = responses.message().await.unwrap().unwrap();
        assert_eq!(
            echoed.version, version,
            "each message crosses both sidecars, both ways"
        );
        assert_eq!(
            echoed.rules.as_deref(),
            Some("gray te=trailers"),
            "the tag arrives as gRPC metadata, and TE: trailers as the client sent it"
        );
    }
    drop(tx);
    let end = responses.message().await.unwrap_err();
    assert_eq!(
        (end.code(), end.message()),
        (tonic::Code::FailedPrecondition, "done"),
        "the status in the trailers is intact"
    );
    drop((orders, frontend));
}

/// What the sidecar answers itself (a timeout, no such service) reaches a gRPC client
/// as a gRPC status in trailers-only form, not as an HTTP 504 or 502 that the client
/// can only read as `UNAVAILABLE: Received http2 header with status: 504`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecars_own_errors_reach_a_grpc_client_as_grpc_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let app = echo_app().await;
    let (orders, frontend) = two_sidecars(
        dir.path(),
        &cp,
        "orders",
        app,
        &["--upstream-timeout", "1s"],
    )
    .await;
    let call_within = |origin: &'static str, slow: bool, deadline: Option<std::time::Duration>| {
        let frontend = &frontend;
        async move {
            let channel = through(frontend, origin).await;
            let mut request = Request::new(graylane_proto::v1::CertificateRequest::default());
            if slow {
                request
                    .metadata_mut()
                    .insert("x-slow", "1".parse().unwrap());
            }
            if let Some(deadline) = deadline {
                request.set_timeout(deadline);
            }
            DiscoveryClient::new(channel)
                .issue_certificate(request)
                .await
                .unwrap_err()
        }
    };
    let call = |origin: &'static str, slow: bool| call_within(origin, slow, None);
    let answered = call("http://orders", false).await;
    assert_eq!(
        answered.code(),
        tonic::Code::Unimplemented,
        "the app's own: {answered:?}"
    );
    let late = call("http://orders", true).await;
    assert_eq!(late.code(), tonic::Code::DeadlineExceeded, "{late:?}");
    assert!(late.message().contains("orders"), "{late:?}");
    // A client's own deadline (`grpc-timeout`) takes the place of the sidecar's
    // default: a 5 s call to a 3 s handler is answered, past `--upstream-timeout 1s`.
    let patient = call_within(
        "http://orders",
        true,
        Some(std::time::Duration::from_secs(5)),
    )
    .await;
    assert_eq!(
        patient.code(),
        tonic::Code::Unimplemented,
        "the app's answer: {patient:?}"
    );
    let nowhere = call("http://nosuch", false).await;
    assert_eq!(nowhere.code(), tonic::Code::Unavailable, "{nowhere:?}");
    assert!(
        nowhere.message().contains("unknown service nosuch"),
        "{nowhere:?}"
    );
    assert_eq!(
        nowhere
            .metadata()
            .get("graylane-error")
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "marked as the sidecar's own answer"
    );
    drop((orders, frontend));
}

/// A gRPC call to a lane whose app is down: the callee's sidecar answers the caller's
/// sidecar with the HTTP status (502), which counts it as the error it is and answers
/// its gRPC client in gRPC's form. Answered 200 with a `grpc-status` between the
/// sidecars, every failed call counted as a success, and rollout analysis passed a
/// broken lane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_grpc_upstream_is_counted_as_failing_by_the_calling_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let closed = graylane_tests::Refusing::bind();
    let (broken, frontend) =
        two_sidecars(dir.path(), &cp, "broken", closed.addr.to_string(), &[]).await;
    let channel = through(&frontend, "http://broken").await;
    let failed = DiscoveryClient::new(channel)
        .issue_certificate(Request::new(
            graylane_proto::v1::CertificateRequest::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(failed.code(), tonic::Code::Unavailable, "{failed:?}");
    let admin = frontend.admin;
    let metrics =
        tokio::task::spawn_blocking(move || graylane_tests::http_get(admin, "/metrics").1)
            .await
            .unwrap();
    let counted = metrics.lines().any(|l| {
        l.starts_with("graylane_sidecar_requests_total")
            && l.contains("direction=\"outbound\"")
            && l.contains("service=\"broken\"")
            && l.contains("status=\"502\"")
    });
    assert!(counted, "the calling sidecar counts a 502: {metrics}");
    drop((broken, frontend));
}

/// A gRPC client ending server streams it is done with (a watch replaced, a
/// subscription dropped) cancels each after its answer began. Over a long-lived
/// connection that adds up past any reset budget: 1,200 of them must not end the
/// connection, at either sidecar, nor the call held open on it all along. (Resets
/// of unanswered streams, the rapid reset attack, are `hardening_h2`'s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_cancelled_after_their_answer_began_do_not_end_a_long_lived_connection() {
    const CANCELLED: u64 = 1_200;
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let (orders, frontend) = two_sidecars(dir.path(), &cp, "orders", echo_app().await, &[]).await;
    let channel = through(&frontend, "http://orders").await;
    let mut client = DiscoveryClient::new(channel);
    let subscribe = |client: &mut DiscoveryClient<_>| {
        let mut client = client.clone();
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let request = Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            let responses = client.subscribe(request).await.unwrap().into_inner();
            (tx, responses)
        }
    };
    // Held open across the whole run: a connection cut under it fails it.
    let (held, mut held_responses) = subscribe(&mut client).await;
    held.send(ack(1)).await.unwrap();
    assert_eq!(held_responses.message().await.unwrap().unwrap().version, 1);

    for version in 1..=CANCELLED {
        let (tx, mut responses) = subscribe(&mut client).await;
        tx.send(ack(version)).await.unwrap();
        let answered = responses.message().await;
        let answered = answered.unwrap_or_else(|e| panic!("stream {version}: {e}"));
        assert_eq!(answered.unwrap().version, version);
        // Dropped with its answer begun: the client resets the stream (CANCEL).
        drop((tx, responses));
    }

    held.send(ack(2)).await.unwrap();
    let still = held_responses.message().await;
    assert_eq!(
        still
            .unwrap_or_else(|e| panic!("the held call, after the cancels: {e}"))
            .unwrap()
            .version,
        2
    );
    for sidecar in [&frontend, &orders] {
        let admin = sidecar.admin;
        let (_, metrics) =
            tokio::task::spawn_blocking(move || graylane_tests::http_get(admin, "/metrics"))
                .await
                .unwrap();
        assert!(
            metrics.contains("graylane_connections_reset_abuse_total{listener=\"inbound\"} 0"),
            "{metrics}"
        );
    }
    drop((held, orders, frontend));
}
