use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::*;
use crate::identity::testing::TestCa;
use crate::identity::{Config, Issued, unix_now};

/// A body larger than the client reads ahead of its reader: its connection stays
/// busy until the body is read.
const BIG: usize = 4 << 20;

/// A loopback address that refuses connections while the socket lives: bound, not
/// listening, without SO_REUSEADDR. A port bound from 0 and let go can be taken by
/// another test, or picked as a connect's own source port (a self-connect).
pub(crate) fn refusing() -> (tokio::net::TcpSocket, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let address = socket.local_addr().unwrap().to_string();
    (socket, address)
}

/// A server on port 0 answering `ok` (`/big`: [`BIG`] bytes); counts the connections it accepted, then
/// those it closed. With `close_after_one`, it drops each connection soon after
/// its first answer without saying so (no `Connection: close`), like a server
/// whose idle timeout fired.
async fn server(close_after_one: bool) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (count, gone) = (Arc::clone(&accepted), Arc::clone(&closed));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let gone = Arc::clone(&gone);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: Request<_>| async move {
                    let body = match request.uri().path() {
                        "/big" => Bytes::from(vec![b'x'; BIG]),
                        _ => Bytes::from_static(b"ok"),
                    };
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(body)))
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if close_after_one {
                    let mut connection = std::pin::pin!(connection);
                    // Serve until the first answer is flushed, then drop the socket.
                    let _ =
                        tokio::time::timeout(Duration::from_millis(20), connection.as_mut()).await;
                } else {
                    let _ = connection.await;
                }
                gone.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (address, accepted, closed)
}

fn get() -> Box<Request<Body>> {
    Box::new(
        Request::builder()
            .uri("/")
            .header(http::header::HOST, "upstream")
            .body(super::super::empty())
            .unwrap(),
    )
}

/// Lets the servers' tasks run (this runtime has one thread).
async fn let_connections_settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

async fn round_trip(pool: &Pool, address: &str) -> Bytes {
    let response = pool.send_http1(plain(address), get()).await.ok().unwrap();
    response.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn a_connection_serves_request_after_request() {
    let (address, accepted, _) = server(false).await;
    let pool = Pool::new(Duration::from_secs(1), None, Arc::default());
    for _ in 0..5 {
        assert_eq!(round_trip(&pool, &address).await, "ok");
        let_connections_settle().await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_whose_body_is_unread_is_not_lent_until_it_is_read() {
    let (address, accepted, _) = server(false).await;
    let counted = Arc::new(Upstream::default());
    let pool = Pool::new(Duration::from_secs(1), None, Arc::clone(&counted));
    let mut big = get();
    *big.uri_mut() = http::Uri::from_static("/big");
    let first = pool.send_http1(plain(&address), big).await.ok().unwrap();
    // Its body still on the wire: the connection is in it, not lent.
    assert_eq!(round_trip(&pool, &address).await, "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "the first one is busy");
    let body = first.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), BIG, "the first body, whole");
    // Read: both are lent again, no third connection.
    for _ in 0..4 {
        assert_eq!(round_trip(&pool, &address).await, "ok");
        let_connections_settle().await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // Counted as the server saw them: plaintext HTTP/1.1.
    assert_eq!(
        counted.opened_now(crate::metrics::Protocol::Http1, false),
        2
    );
    assert_eq!(counted.opened_now(crate::metrics::Protocol::Http1, true), 0);
    assert_eq!(counted.connect_errors_now(), 0);
}

#[tokio::test]
async fn a_response_without_a_body_gives_its_connection_back_with_its_head() {
    let (address, accepted, _) = server(false).await;
    let pool = Pool::new(Duration::from_secs(1), None, Arc::default());
    let mut head = get();
    *head.method_mut() = http::Method::HEAD;
    let first = pool.send_http1(plain(&address), head).await.ok().unwrap();
    // Nothing follows a HEAD's head: the connection is idle on the wire and lent
    // again while the first response is still held.
    assert_eq!(round_trip(&pool, &address).await, "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert!(
        first
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
}

#[tokio::test]
async fn a_connection_the_server_dropped_is_replaced_without_an_error() {
    let (address, accepted, closed) = server(true).await;
    let pool = Pool::new(Duration::from_secs(1), None, Arc::default());
    for round in 1..=3 {
        assert_eq!(round_trip(&pool, &address).await, "ok");
        // The pool still holds the connection the server has just dropped.
        while closed.load(Ordering::SeqCst) < round {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_refused_connect_says_nothing_was_sent() {
    let (_held, address) = refusing();
    let counted = Arc::new(Upstream::default());
    let pool = Pool::new(Duration::from_secs(1), None, Arc::clone(&counted));
    let sent = pool.send_http1(plain(&address), get()).await;
    assert_eq!(counted.connect_errors_now(), 1);
    assert_eq!(
        counted.opened_now(crate::metrics::Protocol::Http1, false),
        0
    );
    match sent {
        Err(Failure {
            error: PoolError::Connect(text),
            request: Some(back),
        }) => {
            assert!(text.contains(&address), "{text}");
            // Whole, to go to another instance.
            assert_eq!(back.uri(), "/");
        }
        _ => panic!("expected a connect error, the request handed back"),
    }
}

const A: &str = "spiffe://cluster.local/ns/default/sa/a";
const B: &str = "spiffe://cluster.local/ns/default/sa/b";
const C: &str = "spiffe://cluster.local/ns/default/sa/c";

fn plain(address: &str) -> Dest<'_> {
    Dest {
        address,
        peer: None,
    }
}

fn mesh<'a>(address: &'a str, peer: &'a str) -> Dest<'a> {
    Dest {
        address,
        peer: Some(peer),
    }
}

/// A peer sidecar's inbound listener as far as the pool sees it: mesh TLS proving
/// `identity` (a client certificate required), HTTP/1.1 or h2 by ALPN, answering
/// `ok`. Counts the connections it accepted and keeps the end-entity certificate
/// each client presented. Without `keep_alive`, one request per HTTP/1.1 connection.
struct TlsServer {
    address: String,
    accepted: Arc<AtomicUsize>,
    presented: Arc<Mutex<Vec<Vec<u8>>>>,
}

async fn tls_server(identity: Arc<Identity>, keep_alive: bool) -> TlsServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let presented = Arc::new(Mutex::new(Vec::new()));
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config().unwrap());
    let (count, seen) = (Arc::clone(&accepted), Arc::clone(&presented));
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let (acceptor, seen) = (acceptor.clone(), Arc::clone(&seen));
            tokio::spawn(async move {
                // A refused handshake ends here: the client sees the alert.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
                seen.lock().unwrap().push(leaf);
                let service = hyper::service::service_fn(|_| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"ok",
                    ))))
                });
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http1().keep_alive(keep_alive);
                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    TlsServer {
        address,
        accepted,
        presented,
    }
}

/// An identity holding a fresh certificate for `id` from `ca`, and that
/// certificate's DER.
fn certified(ca: &TestCa, id: &str) -> (Arc<Identity>, Vec<u8>) {
    let holder = Arc::new(Identity::new(Config::default(), Arc::default()));
    let leaf = renew(&holder, ca, id);
    (holder, leaf)
}

/// Installs a new certificate for `id` in `holder`, as a renewal does; its DER.
fn renew(holder: &Identity, ca: &TestCa, id: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let (chain, key) = ca.issue(id);
    let issued = Issued::new(&chain, &key, unix_now()).unwrap();
    holder.install(issued, &[ca.pem()]).unwrap();
    CertificateDer::from_pem_slice(chain.as_bytes())
        .unwrap()
        .to_vec()
}

async fn mesh_round_trip(pool: &Pool, dest: Dest<'_>) -> Result<Bytes, String> {
    let response = match pool.send_http1(dest, get()).await.map_err(|f| f.error) {
        Ok(sent) => sent,
        Err(PoolError::Connect(text)) => return Err(text),
        Err(PoolError::Exchange(e) | PoolError::RequestBody(e) | PoolError::Unsendable(e)) => {
            return Err(e.to_string());
        }
    };
    let body = response.into_body().collect().await.unwrap().to_bytes();
    // A server that keeps no connection alive closes it after the answer.
    let_connections_settle().await;
    Ok(body)
}

fn h2_get(address: &str) -> Box<Request<Body>> {
    Box::new(
        Request::builder()
            .uri(format!("https://{address}/"))
            .version(http::Version::HTTP_2)
            .body(super::super::empty())
            .unwrap(),
    )
}

#[tokio::test]
async fn an_mtls_connection_serves_request_after_request() {
    let ca = TestCa::new("mesh");
    let (client, _) = certified(&ca, A);
    let (server, _) = certified(&ca, B);
    let counted = Arc::new(Upstream::default());
    let pool = Pool::new(Duration::from_secs(1), Some(client), Arc::clone(&counted));
    // HTTP/1.1: the connection goes back to the idle list of (address, B).
    let h1 = tls_server(Arc::clone(&server), true).await;
    for _ in 0..5 {
        let body = mesh_round_trip(&pool, mesh(&h1.address, B)).await;
        assert_eq!(body.as_deref(), Ok(&b"ok"[..]));
    }
    assert_eq!(h1.accepted.load(Ordering::SeqCst), 1);
    // HTTP/2 (ALPN h2): one connection, every request a stream on it.
    let h2 = tls_server(server, true).await;
    for _ in 0..5 {
        let dest = mesh(&h2.address, B);
        let response = pool
            .send_http2(dest, h2_get(&h2.address), false)
            .await
            .ok()
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
    }
    assert_eq!(h2.accepted.load(Ordering::SeqCst), 1);
    let opened = |protocol, mtls| counted.opened_now(protocol, mtls);
    use crate::metrics::Protocol::{Http1, Http2};
    assert_eq!(
        [opened(Http1, true), opened(Http2, true)],
        [1, 1],
        "one mTLS connection each"
    );
    assert_eq!([opened(Http1, false), opened(Http2, false)], [0, 0]);
}

#[tokio::test]
async fn new_mtls_connections_present_the_renewed_certificate() {
    let ca = TestCa::new("mesh");
    let (client, first) = certified(&ca, A);
    let (server, _) = certified(&ca, B);
    let pool = Pool::new(
        Duration::from_secs(1),
        Some(Arc::clone(&client)),
        Arc::default(),
    );
    // One request per connection: every request connects anew.
    let one_shot = tls_server(Arc::clone(&server), false).await;
    mesh_round_trip(&pool, mesh(&one_shot.address, B))
        .await
        .unwrap();
    // An HTTP/2 connection opened before the renewal.
    let h2 = tls_server(server, true).await;
    let dest = mesh(&h2.address, B);
    pool.send_http2(dest, h2_get(&h2.address), false)
        .await
        .ok()
        .unwrap();

    let renewed = renew(&client, &ca, A);
    assert_ne!(first, renewed);
    mesh_round_trip(&pool, mesh(&one_shot.address, B))
        .await
        .unwrap();
    assert_eq!(
        *one_shot.presented.lock().unwrap(),
        [first.clone(), renewed]
    );
    // The connection made before keeps serving: a renewal drops none.
    pool.send_http2(dest, h2_get(&h2.address), false)
        .await
        .ok()
        .unwrap();
    assert_eq!(h2.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(*h2.presented.lock().unwrap(), [first]);
}

#[tokio::test]
async fn mtls_connections_are_kept_per_peer_identity() {
    let ca = TestCa::new("mesh");
    let (client, _) = certified(&ca, A);
    let (server, _) = certified(&ca, B);
    let server = tls_server(server, true).await;
    let pool = Pool::new(Duration::from_secs(1), Some(client), Arc::default());
    let address = server.address.as_str();
    mesh_round_trip(&pool, mesh(address, B)).await.unwrap();
    // Another identity expected at the same address (the address changed hands):
    // B's idle connection is not lent, a new handshake refuses the server.
    let err = mesh_round_trip(&pool, mesh(address, C)).await.unwrap_err();
    assert!(
        err.contains(&format!("mTLS handshake (expecting {C})"))
            && err.contains("not valid for name")
            && err.contains(&format!("only valid for {B}")),
        "{err}"
    );
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
    // Nor to plaintext: that would write cleartext into a TLS stream.
    assert!(mesh_round_trip(&pool, plain(address)).await.is_err());
    assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
    // B's connection still serves B.
    mesh_round_trip(&pool, mesh(address, B)).await.unwrap();
    assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn mtls_without_a_usable_identity_fails_before_connecting() {
    let ca = TestCa::new("mesh");
    let (server, _) = certified(&ca, B);
    let server = tls_server(server, true).await;
    let address = server.address.as_str();
    let none = Pool::new(Duration::from_secs(1), None, Arc::default());
    let err = mesh_round_trip(&none, mesh(address, B)).await.unwrap_err();
    assert!(err.contains("this sidecar has no identity"), "{err}");
    // No certificate yet, and an identity of another trust domain.
    let empty = Arc::new(Identity::new(Config::default(), Arc::default()));
    let uncertified = Pool::new(Duration::from_secs(1), Some(empty), Arc::default());
    let err = mesh_round_trip(&uncertified, mesh(address, B))
        .await
        .unwrap_err();
    assert!(err.contains("no valid certificate"), "{err}");
    let (client, _) = certified(&ca, A);
    let pool = Pool::new(Duration::from_secs(1), Some(client), Arc::default());
    let elsewhere = "spiffe://elsewhere.example/ns/default/sa/b";
    let err = mesh_round_trip(&pool, mesh(address, elsewhere))
        .await
        .unwrap_err();
    assert!(
        err.contains("not a mesh identity of this trust domain"),
        "{err}"
    );
    assert_eq!(server.accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_peer_that_never_finishes_the_handshake_is_a_connect_error_in_time() {
    let ca = TestCa::new("mesh");
    let (client, _) = certified(&ca, A);
    // Takes the connection, never answers the ClientHello.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
        drop(tcp);
    });
    let pool = Pool::new(Duration::from_millis(200), Some(client), Arc::default());
    let started = Instant::now();
    let err = mesh_round_trip(&pool, mesh(&address, B)).await.unwrap_err();
    assert!(
        err.contains(&format!("mTLS handshake (expecting {B}): timed out")),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    held.abort();
}

/// Sends `n` HTTP/2 requests to `address` at once (to `peer` over mTLS, else in the
/// clear); their outcomes, bodies read.
async fn burst(
    pool: &Pool,
    address: &str,
    peer: Option<&str>,
    n: usize,
) -> Vec<Result<Bytes, String>> {
    let mut sent = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (pool, address) = (pool.clone(), address.to_string());
        let peer = peer.map(str::to_string);
        sent.spawn(async move {
            let dest = Dest {
                address: &address,
                peer: peer.as_deref(),
            };
            match pool
                .send_http2(dest, h2_get(&address), false)
                .await
                .map_err(|f| f.error)
            {
                Ok(response) => Ok(response.into_body().collect().await.unwrap().to_bytes()),
                Err(PoolError::Connect(text)) => Err(text),
                Err(
                    PoolError::Exchange(e) | PoolError::RequestBody(e) | PoolError::Unsendable(e),
                ) => Err(e.to_string()),
            }
        });
    }
    sent.join_all().await
}

#[tokio::test]
async fn a_burst_of_h2_requests_to_a_new_destination_makes_one_connection() {
    let ca = TestCa::new("mesh");
    let (client, _) = certified(&ca, A);
    let (server, _) = certified(&ca, B);
    let server = tls_server(server, true).await;
    let pool = Pool::new(Duration::from_secs(1), Some(client), Arc::default());
    for answer in burst(&pool, &server.address, Some(B), 16).await {
        assert_eq!(answer.as_deref(), Ok(&b"ok"[..]));
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    // Those that waited on a connect that failed get its error, without trying again.
    let (_held, refused) = refusing();
    for answer in burst(&pool, &refused, None, 8).await {
        let text = answer.unwrap_err();
        assert!(
            text.contains("tcp connect error") && text.contains(&refused),
            "{text}"
        );
    }
}
