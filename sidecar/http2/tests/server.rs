//! The server side driven over an in-memory connection by a small echo server, with
//! the real `h2` client on the other end: many concurrent streams, bodies far
//! larger than every window in both directions, trailers both ways, a client's
//! reset, and a graceful GOAWAY.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use graylane_http2::frame::Reason;
use graylane_http2::server::{Config, Connection, Event};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

/// An event with its data owned, to act on once `recv` gave the connection back.
#[derive(Debug)]
enum Owned {
    Request(u32, http::request::Parts, bool),
    Data(u32, Vec<u8>, bool),
    Trailers(u32, HeaderMap),
    Reset(u32, Reason),
    Other,
}

/// A response waiting for window.
struct Sending {
    body: Vec<u8>,
    sent: usize,
    trailers: Option<HeaderMap>,
}

/// What the server saw, for the test to check.
#[derive(Debug, PartialEq)]
enum Seen {
    Reset(u32, Reason),
}

/// Echoes each request: `x-path` and `x-length` of the request, then its body, or
/// for `GET /bytes/N` N bytes; trailers when the request had them (echoed) or asked
/// (`x-want-trailers`). Goes away after `GOAWAY_AFTER` requests if set.
async fn echo(
    io: DuplexStream,
    config: Config,
    go_away_after: Option<usize>,
    seen: mpsc::UnboundedSender<Seen>,
) {
    let mut conn = Connection::new(config);
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut buf = Vec::with_capacity(1 << 16);
    let mut requests: HashMap<u32, (http::request::Parts, Vec<u8>)> = HashMap::new();
    let mut sending: HashMap<u32, Sending> = HashMap::new();
    let mut answered = 0;
    loop {
        while !conn.output().is_empty() {
            let out = conn.output().to_vec();
            if wr.write_all(&out).await.is_err() {
                return;
            }
            conn.advance(out.len());
        }
        if conn.is_closing() && conn.is_idle() {
            return;
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut events = Vec::new();
        let read = conn.recv(&buf, &mut |e| {
            events.push(match e {
                Event::Request {
                    stream,
                    head,
                    end_stream,
                    ..
                } => Owned::Request(stream, head, end_stream),
                Event::Data {
                    stream,
                    data,
                    end_stream,
                } => Owned::Data(stream, data.to_vec(), end_stream),
                Event::Trailers { stream, trailers } => Owned::Trailers(stream, trailers),
                Event::Reset { stream, reason } => Owned::Reset(stream, reason),
                _ => Owned::Other,
            })
        });
        let Ok(used) = read else {
            let out = conn.output().to_vec();
            let _ = wr.write_all(&out).await;
            return;
        };
        buf.drain(..used);
        for event in events {
            let done = match event {
                Owned::Request(stream, head, end) => {
                    requests.insert(stream, (head, Vec::new()));
                    end.then_some((stream, None))
                }
                Owned::Data(stream, data, end) => {
                    conn.release(stream, u32::try_from(data.len()).unwrap());
                    requests
                        .get_mut(&stream)
                        .unwrap()
                        .1
                        .extend_from_slice(&data);
                    end.then_some((stream, None))
                }
                Owned::Trailers(stream, trailers) => Some((stream, Some(trailers))),
                Owned::Reset(stream, reason) => {
                    requests.remove(&stream);
                    sending.remove(&stream);
                    seen.send(Seen::Reset(stream, reason)).unwrap();
                    None
                }
                Owned::Other => None,
            };
            let Some((stream, trailers)) = done else {
                continue;
            };
            let (head, body) = requests.remove(&stream).unwrap();
            let path = head.uri.path().to_owned();
            let body = match path.strip_prefix("/bytes/") {
                Some(n) => (0..n.parse::<usize>().unwrap())
                    .map(|i| i.to_le_bytes()[0])
                    .collect(),
                None => body,
            };
            let trailers = trailers.or_else(|| {
                head.headers.contains_key("x-want-trailers").then(|| {
                    let mut t = HeaderMap::new();
                    t.insert("x-trailer", HeaderValue::from_static("done"));
                    t
                })
            });
            let mut response = Response::new(());
            response
                .headers_mut()
                .insert("x-path", HeaderValue::from_str(&path).unwrap());
            response
                .headers_mut()
                .insert("x-length", HeaderValue::from(body.len()));
            let (parts, ()) = response.into_parts();
            conn.send_response(stream, &parts, false).unwrap();
            sending.insert(
                stream,
                Sending {
                    body,
                    sent: 0,
                    trailers,
                },
            );
            answered += 1;
            if go_away_after == Some(answered) {
                conn.go_away();
            }
        }
        // Whatever the windows let go now.
        sending.retain(|&stream, s| {
            let n = conn
                .send_data(stream, &s.body[s.sent..], s.trailers.is_none())
                .unwrap_or(0);
            s.sent += n;
            if s.sent < s.body.len() {
                return true;
            }
            if let Some(t) = &s.trailers {
                conn.send_trailers(stream, t).unwrap();
            }
            false
        });
    }
}

async fn client(
    config: Config,
    go_away_after: Option<usize>,
) -> (
    h2::client::SendRequest<Bytes>,
    mpsc::UnboundedReceiver<Seen>,
) {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let (seen_tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(echo(ours, config, go_away_after, seen_tx));
    let (client, connection) = h2::client::handshake(theirs).await.unwrap();
    tokio::spawn(connection);
    (client, seen)
}

async fn body_of(mut body: h2::RecvStream) -> (Vec<u8>, Option<HeaderMap>) {
    let mut all = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        all.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap();
    (all, trailers)
}

#[tokio::test]
async fn many_streams_with_bodies_larger_than_every_window_come_back_whole() {
    // The default windows (64 KiB), so both directions wait on WINDOW_UPDATEs.
    let (client, _) = client(Config::default(), None).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..64usize {
        let mut client = client.clone();
        calls.spawn(async move {
            client = client.ready().await.unwrap();
            let size = [0, 1, 16_385, 300_000, 1 << 20][i % 5];
            if i % 2 == 0 {
                let request = Request::get(format!("http://echo/bytes/{size}"))
                    .body(())
                    .unwrap();
                let (answer, _) = client.send_request(request, true).unwrap();
                let answer = answer.await.unwrap();
                assert_eq!(answer.status(), StatusCode::OK);
                assert_eq!(answer.headers()["x-length"], size.to_string().as_str());
                let (body, trailers) = body_of(answer.into_body()).await;
                assert_eq!(body.len(), size);
                assert!(
                    body.iter()
                        .enumerate()
                        .all(|(i, &b)| b == i.to_le_bytes()[0])
                );
                assert!(trailers.is_none());
            } else {
                let upload: Vec<u8> = (0..size).map(|j| (i + j).to_le_bytes()[0]).collect();
                let request = Request::post("http://echo/upload")
                    .header("x-want-trailers", "1")
                    .body(())
                    .unwrap();
                let (answer, mut send) = client.send_request(request, false).unwrap();
                let mut left = Bytes::from(upload.clone());
                while !left.is_empty() {
                    send.reserve_capacity(left.len());
                    let n = std::future::poll_fn(|cx| send.poll_capacity(cx))
                        .await
                        .unwrap()
                        .unwrap();
                    send.send_data(left.split_to(n.min(left.len())), false)
                        .unwrap();
                }
                let mut trailers = HeaderMap::new();
                trailers.insert("x-sent", HeaderValue::from(size));
                send.send_trailers(trailers.clone()).unwrap();
                let answer = answer.await.unwrap();
                assert_eq!(answer.headers()["x-path"], "/upload");
                let (body, echoed) = body_of(answer.into_body()).await;
                assert!(
                    body == upload,
                    "upload {i} of {size} bytes came back as {} bytes",
                    body.len()
                );
                // The request's trailers are echoed as the response's.
                assert_eq!(echoed, Some(trailers));
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(call) = calls.join_next().await {
            call.unwrap();
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_client_reset_reaches_the_server_and_the_connection_goes_on() {
    let (client, mut seen) = client(Config::default(), None).await;
    let mut client = client.ready().await.unwrap();
    // An upload the client gives up on before its end.
    let request = Request::post("http://echo/upload").body(()).unwrap();
    let (_answer, mut send) = client.send_request(request, false).unwrap();
    send.send_data(Bytes::from_static(b"part"), false).unwrap();
    send.send_reset(h2::Reason::CANCEL);
    let reset = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .unwrap();
    assert_eq!(reset, Some(Seen::Reset(1, Reason::CANCEL)));
    // The next request on the same connection is answered.
    let mut client = client.ready().await.unwrap();
    let request = Request::get("http://echo/bytes/5").body(()).unwrap();
    let (answer, _) = client.send_request(request, true).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body_of(answer.into_body()).await.0.len(), 5);
}

#[tokio::test]
async fn after_a_graceful_goaway_the_streams_open_finish_and_the_connection_ends() {
    let (client, _) = client(Config::default(), Some(1)).await;
    let mut client = client.ready().await.unwrap();
    let request = Request::get("http://echo/bytes/200000").body(()).unwrap();
    let (answer, _) = client.send_request(request, true).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .unwrap()
        .unwrap();
    // The GOAWAY came with the head; the body still comes whole.
    let (body, _) = tokio::time::timeout(Duration::from_secs(10), body_of(answer.into_body()))
        .await
        .unwrap();
    assert_eq!(body.len(), 200_000);
    // No new stream is taken.
    let next = tokio::time::timeout(Duration::from_secs(10), async {
        let mut client = client.ready().await?;
        let request = Request::get("http://echo/bytes/1").body(()).unwrap();
        let (answer, _) = client.send_request(request, true)?;
        answer.await
    })
    .await
    .unwrap();
    assert!(next.is_err(), "{next:?}");
}
