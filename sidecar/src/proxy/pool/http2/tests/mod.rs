//! The HTTP/2 client against h2's own server over an in-memory pipe: no sockets, and
//! time paused where the test is about timers.

use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use ::h2::Reason;
use ::h2::server::{self, SendResponse};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, Full};
use tokio::io::DuplexStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::*;
use crate::proxy::streams::{KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT};
use hyper::body::Frame;

mod ends;

/// A connected client and the server end of its pipe.
async fn connected() -> (Sender, DuplexStream) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let sender = handshake(client);
    (sender, server)
}

/// A request's body and trailers as the server read them, or how its stream ended.
type Read = Result<(Bytes, Option<HeaderMap>), ::h2::Error>;

/// What the server is handed for each request as it arrives: its head, its body
/// once that has ended, and the handle to answer it with.
type Served = (
    http::request::Parts,
    oneshot::Receiver<Read>,
    SendResponse<Bytes>,
);

/// Serves `io`, handing each request over as it arrives.
fn serve(io: DuplexStream) -> mpsc::UnboundedReceiver<Served> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut connection = server::handshake(io).await.unwrap();
        while let Some(Ok((request, respond))) = connection.accept().await {
            let (head, mut body) = request.into_parts();
            let (read_tx, read_rx) = oneshot::channel();
            tokio::spawn(async move {
                let read = async {
                    let mut data = Vec::new();
                    while let Some(chunk) = body.data().await {
                        let chunk = chunk?;
                        let _ = body.flow_control().release_capacity(chunk.len());
                        data.extend_from_slice(&chunk);
                    }
                    Ok((Bytes::from(data), body.trailers().await?))
                };
                let _ = read_tx.send(read.await);
            });
            let _ = tx.send((head, read_rx, respond));
        }
    });
    rx
}

/// A request body whose frames are sent through a channel as the test goes.
struct Frames(mpsc::UnboundedReceiver<Result<Frame<Bytes>, BoxError>>);

impl HttpBody for Frames {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx)
    }
}

/// `body` sent on `sender` from a task of its own: the answer to come.
fn send(mut sender: Sender, body: Body) -> JoinHandle<Result<Response<Body>, PoolError>> {
    tokio::spawn(async move {
        sender.ready().await?;
        sender
            .send(request(body), true)
            .await
            .map_err(|failed| failed.error)
    })
}

fn request(body: Body) -> Box<Request<Body>> {
    Box::new(
        Request::builder()
            .method("POST")
            .uri("http://app/echo")
            .body(body)
            .unwrap(),
    )
}

fn full(text: &'static str) -> Body {
    Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
        .into()
}

fn streamed(rx: mpsc::UnboundedReceiver<Result<Frame<Bytes>, BoxError>>) -> Body {
    Frames(rx).boxed_unsync().into()
}

fn answer(respond: &mut SendResponse<Bytes>, body: &'static str, trailers: Option<HeaderMap>) {
    let head = Response::builder()
        .status(200)
        .header("content-length", body.len())
        .body(())
        .unwrap();
    let mut stream = respond.send_response(head, false).unwrap();
    match trailers {
        Some(trailers) => {
            stream
                .send_data(Bytes::from_static(body.as_bytes()), false)
                .unwrap();
            stream.send_trailers(trailers).unwrap();
        }
        None => stream
            .send_data(Bytes::from_static(body.as_bytes()), true)
            .unwrap(),
    }
}

#[tokio::test]
async fn a_body_at_hand_goes_out_with_its_request_and_the_answer_comes_back_framed() {
    let (sender, io) = connected().await;
    let mut served = serve(io);
    let sending = send(sender, full("hello"));
    let (head, body, mut respond) = served.recv().await.unwrap();
    assert_eq!(head.uri.path(), "/echo");
    assert_eq!(body.await.unwrap().unwrap().0, "hello");
    answer(&mut respond, "done", None);
    let Ok(response) = sending.await.unwrap() else {
        panic!("no response")
    };
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.body().size_hint().exact(),
        Some(4),
        "Content-Length"
    );
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "done"
    );
}

#[tokio::test]
async fn a_body_that_arrives_later_is_pumped_to_its_end_with_trailers_both_ways() {
    let (sender, io) = connected().await;
    let mut served = serve(io);
    let (frames, rx) = mpsc::unbounded_channel();
    let sending = send(sender, streamed(rx));
    for part in ["a", "b", "c"] {
        tokio::task::yield_now().await;
        frames.send(Ok(Frame::data(Bytes::from(part)))).unwrap();
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    frames.send(Ok(Frame::trailers(trailers.clone()))).unwrap();
    let (_, body, mut respond) = served.recv().await.unwrap();
    let (data, sent_trailers) = body.await.unwrap().unwrap();
    assert_eq!(data, "abc");
    assert_eq!(sent_trailers, Some(trailers.clone()));
    answer(&mut respond, "ok", Some(trailers.clone()));
    let response = sending.await.unwrap().ok().unwrap();
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers(), Some(&trailers));
    assert_eq!(collected.to_bytes(), "ok");
}

#[tokio::test]
async fn a_failing_request_body_is_the_clients_doing_and_resets_the_stream() {
    // Failing at once (the pump is still in the request's task), and after a first
    // frame (the pump has a task of its own by then).
    for first in [None, Some("part")] {
        let (mut sender, io) = connected().await;
        let mut served = serve(io);
        let (frames, rx) = mpsc::unbounded_channel();
        if let Some(first) = first {
            frames.send(Ok(Frame::data(Bytes::from(first)))).unwrap();
        }
        frames.send(Err("client went away".into())).unwrap();
        sender.ready().await.unwrap();
        match sender
            .send(request(streamed(rx)), true)
            .await
            .map_err(|f| f.error)
        {
            Err(PoolError::RequestBody(e)) => assert!(e.to_string().contains("went away"), "{e}"),
            Err(e) => panic!("after {first:?}, blamed elsewhere: {e:?}"),
            Ok(_) => panic!("answered"),
        }
        let (_, body, _) = served.recv().await.unwrap();
        let reset = body.await.unwrap().unwrap_err();
        assert_eq!(reset.reason(), Some(Reason::CANCEL), "{reset}");
    }
}

#[tokio::test]
async fn a_request_given_up_before_its_answer_is_reset() {
    let (sender, io) = connected().await;
    let mut served = serve(io);
    let (frames, rx) = mpsc::unbounded_channel();
    let sending = send(sender, streamed(rx));
    frames.send(Ok(Frame::data(Bytes::from("part")))).unwrap();
    // The stream is open at the server, its body still coming (the pump waits in a
    // task of its own), no answer yet: the request is given up.
    let (_, body, _respond) = served.recv().await.unwrap();
    sending.abort();
    assert_eq!(
        body.await.unwrap().unwrap_err().reason(),
        Some(Reason::CANCEL)
    );
    drop(frames);
}

/// `count` requests sent, arrived at the server unanswered, then given up: their
/// streams as the server holds them, in the order they were opened.
async fn given_up(
    sender: &Sender,
    served: &mut mpsc::UnboundedReceiver<Served>,
    count: usize,
) -> Vec<SendResponse<Bytes>> {
    let sending: Vec<_> = (0..count)
        .map(|_| send(sender.clone(), full("x")))
        .collect();
    let mut open = Vec::new();
    for _ in 0..count {
        open.push(served.recv().await.unwrap().2);
    }
    for request in sending {
        request.abort();
        let _ = request.await;
    }
    open
}

/// Splits `open` into those reset within a second (with CANCEL) and those held.
/// Time stands still until every task is idle: what is reset at once has arrived
/// before a second passes.
async fn reset_or_held(open: Vec<SendResponse<Bytes>>) -> (usize, Vec<SendResponse<Bytes>>) {
    let mut held = Vec::new();
    let mut reset = 0;
    for mut respond in open {
        let waited =
            tokio::time::timeout(Duration::from_secs(1), poll_fn(|cx| respond.poll_reset(cx)));
        match waited.await {
            Ok(Ok(reason)) => {
                assert_eq!(reason, Reason::CANCEL);
                reset += 1;
            }
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => held.push(respond),
        }
    }
    (reset, held)
}

/// A request sent and answered on `sender`: the connection is in good health.
async fn answered(sender: &Sender, served: &mut mpsc::UnboundedReceiver<Served>) {
    let sending = send(sender.clone(), full("x"));
    answer(&mut served.recv().await.unwrap().2, "next", None);
    let response = sending.await.unwrap().unwrap();
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "next"
    );
}

/// Past ten resets the app may not have accepted yet, a given-up request's stream is
/// held open: until the app answers it, or until `HOLD_LIMIT` (see `unaccepted`).
#[tokio::test(start_paused = true)]
async fn past_ten_unconfirmed_resets_a_given_up_request_is_held_until_answered() {
    let (sender, io) = connected().await;
    let mut served = serve(io);
    let start = tokio::time::Instant::now();
    let open = given_up(&sender, &mut served, 13).await;
    let (reset, mut held) = reset_or_held(open).await;
    assert_eq!((reset, held.len()), (unaccepted::MAX_UNCONFIRMED, 3));
    // The oldest held is answered: it was never reset, and its answer is dropped.
    answer(&mut held[0], "late", None);
    // The two younger ones go at the limit.
    for mut respond in held.drain(1..) {
        let reason = poll_fn(|cx| respond.poll_reset(cx)).await.unwrap();
        assert_eq!(reason, Reason::CANCEL);
        let after = start.elapsed();
        assert!(
            (HOLD_LIMIT..HOLD_LIMIT + Duration::from_secs(2)).contains(&after),
            "reset after {after:?}"
        );
    }
    // The connection was never in doubt.
    answered(&sender, &mut served).await;
}

/// An answer to a stream opened after the held ones says the app accepted them:
/// they are reset then, not at the limit.
#[tokio::test(start_paused = true)]
async fn held_streams_are_reset_once_a_later_stream_is_answered() {
    let (sender, io) = connected().await;
    let mut served = serve(io);
    let open = given_up(&sender, &mut served, 13).await;
    let (_, held) = reset_or_held(open).await;
    assert_eq!(held.len(), 3);
    let start = tokio::time::Instant::now();
    answered(&sender, &mut served).await;
    for mut respond in held {
        let reason = poll_fn(|cx| respond.poll_reset(cx)).await.unwrap();
        assert_eq!(reason, Reason::CANCEL);
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert!(!sender.shared.unaccepted.watching(), "nothing left held");
}

/// Ten requests given up unanswered (the unconfirmed resets at their bound), then a
/// streamed request whose first part has reached the server: the sender of the rest
/// of its body, the request, how the server read the body, and its reply handle.
async fn streaming_behind_ten_unconfirmed(
    sender: &Sender,
    served: &mut mpsc::UnboundedReceiver<Served>,
) -> (
    mpsc::UnboundedSender<Result<Frame<Bytes>, BoxError>>,
    JoinHandle<Result<Response<Body>, PoolError>>,
    oneshot::Receiver<Read>,
    SendResponse<Bytes>,
) {
    let open = given_up(sender, served, unaccepted::MAX_UNCONFIRMED).await;
    let (frames, rx) = mpsc::unbounded_channel();
    frames.send(Ok(Frame::data(Bytes::from("part")))).unwrap();
    let sending = send(sender.clone(), streamed(rx));
    let (_, body, respond) = served.recv().await.unwrap();
    let (reset, held) = reset_or_held(open).await;
    assert_eq!((reset, held.len()), (unaccepted::MAX_UNCONFIRMED, 0));
    (frames, sending, body, respond)
}

/// A request body failing is a stream given up like any other: past ten
/// unconfirmed resets it is held, and the request fails at once all the same.
#[tokio::test(start_paused = true)]
async fn past_ten_unconfirmed_resets_a_failed_request_body_holds_its_stream() {
    let (sender, io) = connected().await;
    let mut served = serve(io);
    let (frames, sending, mut body, respond) =
        streaming_behind_ten_unconfirmed(&sender, &mut served).await;
    // The pump has a task of its own by now: the body fails there.
    frames.send(Err("client went away".into())).unwrap();
    match sending.await.unwrap() {
        Err(PoolError::RequestBody(e)) => assert!(e.to_string().contains("went away"), "{e}"),
        Err(e) => panic!("blamed elsewhere: {e:?}"),
        Ok(_) => panic!("answered"),
    }
    let waited = tokio::time::timeout(Duration::from_secs(1), &mut body).await;
    assert!(waited.is_err(), "reset at once: {waited:?}");
    answered(&sender, &mut served).await;
    let read = tokio::time::timeout(Duration::from_secs(1), body).await;
    let reset = read.expect("still held").unwrap().unwrap_err();
    assert_eq!(reset.reason(), Some(Reason::CANCEL), "{reset}");
    drop(respond);
}

/// Once answered, a stream was accepted: a request body failing after the answer
/// (a bidirectional stream) resets it at once, whatever is unconfirmed.
#[tokio::test(start_paused = true)]
async fn a_request_body_failing_after_the_answer_resets_the_stream_at_once() {
    let (sender, io) = connected().await;
    let mut served = serve(io);
    let (frames, sending, body, mut respond) =
        streaming_behind_ten_unconfirmed(&sender, &mut served).await;
    let head = Response::builder().status(200).body(()).unwrap();
    let _stream = respond.send_response(head, false).unwrap();
    let response = sending.await.unwrap().unwrap();
    frames.send(Err("client went away".into())).unwrap();
    let read = tokio::time::timeout(Duration::from_secs(1), body).await;
    let reset = read.expect("not reset at once").unwrap().unwrap_err();
    assert_eq!(reset.reason(), Some(Reason::CANCEL), "{reset}");
    drop(response);
}

#[tokio::test]
async fn an_early_reset_with_no_error_ends_the_answer_without_failing_it() {
    let (sender, io) = connected().await;
    let mut served = serve(io);
    let sending = send(sender, full("x"));
    let (_, _, mut respond) = served.recv().await.unwrap();
    let head = Response::builder().status(200).body(()).unwrap();
    let mut stream = respond.send_response(head, false).unwrap();
    stream.send_data(Bytes::from("partial"), false).unwrap();
    let mut body = sending.await.unwrap().unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "partial");
    // RFC 9113 §8.1: the server is done and needs no more of the request.
    stream.send_reset(Reason::NO_ERROR);
    assert!(
        body.frame().await.is_none(),
        "the answer ends there, not in an error"
    );
}

#[tokio::test]
async fn an_upstream_reset_fails_the_answer_with_its_reason() {
    let (sender, io) = connected().await;
    let mut served = serve(io);
    let sending = send(sender, full("x"));
    let (_, _, mut respond) = served.recv().await.unwrap();
    respond.send_reset(Reason::REFUSED_STREAM);
    let Err(PoolError::Exchange(e)) = sending.await.unwrap() else {
        panic!("not an exchange error")
    };
    let reset = e.downcast_ref::<Reset>().unwrap();
    assert_eq!(reset.0, graylane_http2::frame::Reason::REFUSED_STREAM);
}

#[tokio::test]
async fn a_failed_body_less_request_comes_back_and_one_with_a_body_does_not() {
    let (mut sender, io) = connected().await;
    let mut served = serve(io);
    let mut get = request(Body::Empty);
    *get.method_mut() = http::Method::GET;
    get.headers_mut()
        .insert("x-id", HeaderValue::from_static("7"));
    sender.ready().await.unwrap();
    let sending = tokio::spawn(async move { sender.send(get, true).await });
    let (_, _, mut respond) = served.recv().await.unwrap();
    respond.send_reset(Reason::REFUSED_STREAM);
    let Err(failed) = sending.await.unwrap() else {
        panic!("answered")
    };
    // Its head as it was, to go again if its method allows.
    let back = failed.request.expect("handed back");
    assert_eq!(
        (back.method(), back.uri()),
        (
            &http::Method::GET,
            &"http://app/echo".parse::<http::Uri>().unwrap()
        )
    );
    assert_eq!(back.headers()["x-id"], "7");

    let (sender, io) = connected().await;
    let mut served = serve(io);
    let sending = tokio::spawn(async move {
        let mut sender = sender;
        sender.ready().await.unwrap();
        sender.send(request(full("x")), true).await
    });
    let (_, _, mut respond) = served.recv().await.unwrap();
    respond.send_reset(Reason::REFUSED_STREAM);
    let Err(failed) = sending.await.unwrap() else {
        panic!("answered")
    };
    assert!(
        failed.request.is_none(),
        "its body is gone: nothing to send again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_answering_pings_is_given_up() {
    let (sender, server_end) = connected().await;
    // Nothing ever reads the server's end: the PING is never answered.
    tokio::time::sleep(KEEP_ALIVE_INTERVAL + KEEP_ALIVE_TIMEOUT / 2).await;
    assert!(!sender.is_closed(), "closed before the PONG was due");
    tokio::time::sleep(KEEP_ALIVE_TIMEOUT).await;
    assert!(sender.is_closed(), "still open with its PING unanswered");
    drop(server_end);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_answers_pings_is_kept() {
    let (sender, io) = connected().await;
    let mut served = serve(io);
    tokio::time::sleep(10 * (KEEP_ALIVE_INTERVAL + KEEP_ALIVE_TIMEOUT)).await;
    assert!(!sender.is_closed());
    let sending = send(sender, full("x"));
    let (_, _, mut respond) = served.recv().await.unwrap();
    answer(&mut respond, "alive", None);
    let response = sending.await.unwrap().ok().unwrap();
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "alive"
    );
}

#[tokio::test]
async fn the_connection_closes_once_every_handle_is_gone() {
    let (sender, io) = connected().await;
    let shared = Arc::clone(&sender.shared);
    let mut served = serve(io);
    let sending = send(sender, full("x"));
    let (_, _, mut respond) = served.recv().await.unwrap();
    answer(&mut respond, "ok", None);
    let response = sending.await.unwrap().unwrap();
    drop(response);
    // The last handle went with the request's task: the connection closes (the
    // server's accept loop ends), and its task marks it closed.
    let ended = tokio::time::timeout(Duration::from_secs(5), served.recv()).await;
    assert!(matches!(ended, Ok(None)), "the connection stayed open");
    tokio::time::timeout(Duration::from_secs(5), async {
        while !shared.closed.load(Ordering::Relaxed) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("not marked closed");
}

#[tokio::test]
async fn an_answer_may_carry_as_many_header_bytes_as_a_request() {
    let (sender, io) = connected().await;
    let mut served = serve(io);
    let sending = send(sender, full("x"));
    let (_, _, mut respond) = served.recv().await.unwrap();
    // 60 KiB of fields (a large policy and cookies): past hyper's client default of
    // 16 KiB, within what the sidecar takes in a request.
    let big = "v".repeat(6 * 1024);
    let mut head = Response::builder().status(200);
    for i in 0..10 {
        head = head.header(format!("x-big-{i}"), big.as_str());
    }
    respond.send_response(head.body(()).unwrap(), true).unwrap();
    let response = match sending.await.unwrap() {
        Ok(response) => response,
        Err(e) => panic!("{e:?}"),
    };
    assert_eq!(response.headers().get("x-big-9").unwrap(), big.as_str());
}
