//! The HTTP/2 server against h2's own client over an in-memory pipe: no sockets, and
//! time paused where the test is about timers.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;

use ::h2::Reason;
use ::h2::client::{self, SendRequest};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use super::*;
use crate::proxy::streams::{KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT, LET_GO_AFTER};
use crate::proxy::upgrade::Downstream;

type Served = JoinHandle<Result<(), BoxError>>;

/// A client connected to a server that hands every request to `serve`; the client's
/// connection is driven by a task of its own.
async fn connected<S, F, E>(serve: S) -> (SendRequest<Bytes>, Served)
where
    S: FnMut(Request<Body>) -> F + Unpin + Send + 'static,
    F: Future<Output = Result<Response<Body>, E>> + Send + 'static,
    E: Display + Send + 'static,
{
    let (near, far) = tokio::io::duplex(1 << 20);
    let served = tokio::spawn(Serving::new(&builder(), far, serve));
    let (send, connection) = client::handshake(near).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    (send, served)
}

fn full(text: &'static str) -> Body {
    Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
        .into()
}

/// Sends `request` with `body` (none if empty) and reads the whole answer.
async fn exchange(
    send: &mut SendRequest<Bytes>,
    request: Request<()>,
    body: &'static str,
) -> Result<(http::response::Parts, Bytes), ::h2::Error> {
    let mut send = send.clone().ready().await?;
    let (response, mut stream) = send.send_request(request, body.is_empty())?;
    if !body.is_empty() {
        stream.send_data(Bytes::from_static(body.as_bytes()), true)?;
    }
    let (head, mut recv) = response.await?.into_parts();
    let mut read = Vec::new();
    while let Some(data) = recv.data().await {
        let data = data?;
        let _ = recv.flow_control().release_capacity(data.len());
        read.extend_from_slice(&data);
    }
    Ok((head, Bytes::from(read)))
}

fn post(path: &str) -> Request<()> {
    Request::post(format!("http://app{path}")).body(()).unwrap()
}

#[tokio::test]
async fn a_request_body_reaches_the_handler_and_the_answer_comes_back_framed() {
    let (mut send, _served) = connected(|request: Request<Body>| async move {
        let length = request.body().size_hint().exact();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let answer = format!("{length:?} {}", String::from_utf8_lossy(&body));
        let response = Response::builder()
            // What the sidecar's own error answers carry for HTTP/1.1; h2 would refuse
            // to send it.
            .header("connection", "close")
            .body(Body::from(
                Full::new(Bytes::from(answer))
                    .map_err(|e: Infallible| match e {})
                    .boxed_unsync(),
            ))
            .unwrap();
        Ok::<_, Infallible>(response)
    })
    .await;
    let mut request = post("/echo");
    request
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(5));
    let (head, body) = exchange(&mut send, request, "hello").await.unwrap();
    assert_eq!(
        body, "Some(5) hello",
        "the request's Content-Length as its size"
    );
    assert_eq!(head.status, 200);
    assert_eq!(
        head.headers[header::CONTENT_LENGTH],
        "13",
        "set from the exact size"
    );
    assert!(head.headers.get(header::CONNECTION).is_none());
    let date = head.headers[header::DATE].to_str().unwrap();
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
}

#[tokio::test]
async fn the_answer_to_a_head_is_its_head_alone_whatever_body_it_was_made_with() {
    // The sidecar's own errors are made with a body whatever the method.
    let (mut send, _served) = connected(|_: Request<Body>| async move {
        let response = Response::builder()
            .status(502)
            .body(full("graylane: unknown service nosuch"))
            .unwrap();
        Ok::<_, Infallible>(response)
    })
    .await;
    let request = Request::head("http://app/").body(()).unwrap();
    // h2's client reads DATA on a HEAD's stream as a protocol error.
    let (head, body) = exchange(&mut send, request, "").await.unwrap();
    assert_eq!(head.status, 502);
    assert!(body.is_empty());
    assert_eq!(
        head.headers[header::CONTENT_LENGTH],
        "32",
        "what a GET would get"
    );
    // The connection is still good for the next request.
    let (head, body) = exchange(&mut send, post("/"), "x").await.unwrap();
    assert_eq!(
        (head.status.as_u16(), &body[..]),
        (502, &b"graylane: unknown service nosuch"[..])
    );
}

#[tokio::test]
async fn a_request_without_a_body_is_handed_over_as_ended_and_keeps_the_date_it_has() {
    let (mut send, _served) = connected(|request: Request<Body>| async move {
        assert!(request.body().is_end_stream());
        let response = Response::builder()
            .header(header::DATE, "Sun, 06 Nov 1994 08:49:37 GMT")
            .body(Body::Empty)
            .unwrap();
        Ok::<_, Infallible>(response)
    })
    .await;
    let request = Request::get("http://app/").body(()).unwrap();
    let (head, body) = exchange(&mut send, request, "").await.unwrap();
    assert_eq!(head.status, 200);
    assert!(body.is_empty());
    assert_eq!(head.headers[header::DATE], "Sun, 06 Nov 1994 08:49:37 GMT");
}

#[tokio::test]
async fn a_streamed_answer_goes_out_with_its_trailers() {
    let (send, _served) = connected(|_request: Request<Body>| async move {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frames = vec![
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"part one, "))),
            Ok(Frame::data(Bytes::from_static(b"part two"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = StreamBody::new(tokio_stream::iter(frames));
        Ok::<_, Infallible>(Response::new(Body::from(body.boxed_unsync())))
    })
    .await;
    let mut send = send.ready().await.unwrap();
    let (response, _) = send.send_request(post("/stream"), true).unwrap();
    let (head, mut recv) = response.await.unwrap().into_parts();
    assert!(
        head.headers.get(header::CONTENT_LENGTH).is_none(),
        "no exact size"
    );
    let mut read = Vec::new();
    while let Some(data) = recv.data().await {
        read.extend_from_slice(&data.unwrap());
    }
    assert_eq!(read, b"part one, part two");
    let trailers = recv.trailers().await.unwrap().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
}

/// Dropped: says so on `dropped`.
struct Guard(Option<oneshot::Sender<()>>);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.take().map(|tx| tx.send(()));
    }
}

#[tokio::test]
async fn a_reset_from_the_client_drops_the_handlers_future() {
    let (started_tx, started) = oneshot::channel();
    let (dropped_tx, dropped) = oneshot::channel();
    let mut once = Some((started_tx, dropped_tx));
    let (send, _served) = connected(move |_request: Request<Body>| {
        let (started, dropped) = once.take().expect("one request");
        async move {
            let _guard = Guard(Some(dropped));
            let _ = started.send(());
            std::future::pending::<Result<Response<Body>, Infallible>>().await
        }
    })
    .await;
    let mut send = send.ready().await.unwrap();
    let (response, mut stream) = send.send_request(post("/slow"), false).unwrap();
    started.await.unwrap();
    stream.send_reset(Reason::CANCEL);
    dropped.await.expect("the handler's future was dropped");
    drop(response);
}

#[tokio::test]
async fn a_failed_answer_body_resets_the_stream_with_the_upstreams_reason() {
    use graylane_http2::frame::Reason as Upstream;
    // NO_ERROR on a body that failed (cut short) is not relayed as a clean stop.
    for (upstream, relayed) in [
        (Upstream::REFUSED_STREAM, Reason::REFUSED_STREAM),
        (Upstream::NO_ERROR, Reason::INTERNAL_ERROR),
    ] {
        let (mut send, _served) = connected(move |_request: Request<Body>| async move {
            let frames = vec![
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"some"))),
                Err(Box::new(crate::proxy::streams::Reset(upstream)) as BoxError),
            ];
            let body = StreamBody::new(tokio_stream::iter(frames));
            Ok::<_, Infallible>(Response::new(Body::from(body.boxed_unsync())))
        })
        .await;
        let error = exchange(&mut send, post("/broken"), "").await.unwrap_err();
        assert_eq!(error.reason(), Some(relayed), "{error}");
    }
}

#[tokio::test]
async fn a_refused_request_is_reset_as_not_processed() {
    let (mut send, _served) = connected(|_request: Request<Body>| async move {
        Err::<Response<Body>, _>("plaintext after strict")
    })
    .await;
    let error = exchange(&mut send, post("/"), "").await.unwrap_err();
    assert_eq!(error.reason(), Some(Reason::REFUSED_STREAM), "{error}");
    // The connection serves on.
    let error = exchange(&mut send, post("/"), "").await.unwrap_err();
    assert_eq!(error.reason(), Some(Reason::REFUSED_STREAM), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_several_workers_the_streams_of_one_connection_answer_alike() {
    let (send, _served) = connected(|request: Request<Body>| async move {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let response = Response::new(Body::from(
            Full::new(body)
                .map_err(|e: Infallible| match e {})
                .boxed_unsync(),
        ));
        Ok::<_, Infallible>(response)
    })
    .await;
    let asked: Vec<_> = (0..20)
        .map(|_| {
            let mut send = send.clone();
            tokio::spawn(async move { exchange(&mut send, post("/echo"), "ping").await })
        })
        .collect();
    for asking in asked {
        let (head, body) = asking.await.unwrap().unwrap();
        assert_eq!((head.status.as_u16(), body), (200, Bytes::from("ping")));
    }
}

#[tokio::test]
async fn a_connect_gets_its_stream_as_the_tunnel_once_answered() {
    let (send, _served) = connected(|request: Request<Body>| async move {
        let (mut head, _) = request.into_parts();
        let downstream = Downstream::take(&mut head).expect("a CONNECT carries its tunnel");
        // The other end: an echo server on loopback-free pipes is not a TcpStream,
        // so the tunnel is read here, as `Downstream::join` would.
        tokio::spawn(async move {
            let Downstream::Http2(pipe) = downstream else {
                panic!("not HTTP/2")
            };
            let mut pipe = pipe.await.unwrap();
            let mut buf = [0u8; 64];
            loop {
                let n = pipe.read(&mut buf).await.unwrap();
                if n == 0 {
                    pipe.shutdown().await.unwrap();
                    return;
                }
                pipe.write_all(&buf[..n]).await.unwrap();
            }
        });
        let response = Response::builder()
            .header(header::CONTENT_LENGTH, "0")
            .body(Body::Empty)
            .unwrap();
        Ok::<_, Infallible>(response)
    })
    .await;
    let mut send = send.ready().await.unwrap();
    let request = Request::connect("db:5432").body(()).unwrap();
    let (response, mut stream) = send.send_request(request, false).unwrap();
    let (head, mut recv) = response.await.unwrap().into_parts();
    assert_eq!(head.status, 200);
    assert!(head.headers.get(header::CONTENT_LENGTH).is_none());
    stream
        .send_data(Bytes::from_static(b"hello"), false)
        .unwrap();
    let echoed = recv.data().await.unwrap().unwrap();
    assert_eq!(echoed, "hello");
    stream.send_data(Bytes::new(), true).unwrap();
    // The tunnel's end ends the stream (h2 hands over its empty last frame).
    let mut rest = Vec::new();
    while let Some(data) = recv.data().await {
        rest.extend_from_slice(&data.unwrap());
    }
    assert!(rest.is_empty(), "{rest:?}");
}

/// A CONNECT refused by its handler: no tunnel, the answer goes out, and the client,
/// which may have begun sending, is told to stop instead of filling the windows.
#[tokio::test]
async fn a_connect_answered_without_a_tunnel_is_answered_and_its_stream_ended() {
    let (send, _served) = connected(|_request: Request<Body>| async move {
        let response = Response::builder()
            .status(403)
            .body(full("no tunnel for you"))
            .unwrap();
        Ok::<_, Infallible>(response)
    })
    .await;
    let mut send = send.ready().await.unwrap();
    let request = Request::connect("db:5432").body(()).unwrap();
    let (response, mut stream) = send.send_request(request, false).unwrap();
    stream
        .send_data(Bytes::from_static(b"early bytes"), false)
        .unwrap();
    let (head, mut recv) = response.await.unwrap().into_parts();
    assert_eq!(head.status, 403);
    let mut read = Vec::new();
    while let Some(data) = recv.data().await {
        read.extend_from_slice(&data.unwrap());
    }
    assert_eq!(read, b"no tunnel for you");
    // The request side ended by the server: sending more fails.
    let stopped = tokio::time::timeout(
        Duration::from_secs(10),
        std::future::poll_fn(|cx| stream.poll_reset(cx)),
    )
    .await
    .expect("the server ended the stream")
    .unwrap();
    assert_eq!(stopped, Reason::NO_ERROR);
}

#[tokio::test]
async fn a_connect_with_a_body_is_refused() {
    let (send, _served) = connected(|_request: Request<Body>| async move {
        Ok::<_, Infallible>(Response::new(Body::Empty))
    })
    .await;
    let mut send = send.ready().await.unwrap();
    let request = Request::connect("db:5432")
        .header(header::CONTENT_LENGTH, "4")
        .body(())
        .unwrap();
    let (response, _stream) = send.send_request(request, false).unwrap();
    let error = response.await.unwrap_err();
    assert_eq!(error.reason(), Some(Reason::PROTOCOL_ERROR), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_answering_pings_is_closed() {
    let (near, far) = tokio::io::duplex(1 << 20);
    let serve =
        |_request: Request<Body>| async move { Ok::<_, Infallible>(Response::new(Body::Empty)) };
    let served = tokio::spawn(Serving::new(&builder(), far, serve));
    // The handshake, then nothing: the client's connection is never polled again, so
    // the PING is never answered.
    let (_send, connection) = client::handshake(near).await.unwrap();
    let mut connection = Box::pin(connection);
    let _ = tokio::time::timeout(Duration::from_millis(10), connection.as_mut()).await;
    tokio::time::sleep(KEEP_ALIVE_INTERVAL + KEEP_ALIVE_TIMEOUT / 2).await;
    assert!(!served.is_finished(), "closed before the PONG was due");
    tokio::time::sleep(KEEP_ALIVE_TIMEOUT).await;
    let end = served.await.unwrap();
    assert!(end.unwrap_err().to_string().contains("no PONG"));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_answers_pings_is_kept() {
    let (mut send, served) = connected(|_request: Request<Body>| async move {
        Ok::<_, Infallible>(Response::new(full("alive")))
    })
    .await;
    tokio::time::sleep(10 * (KEEP_ALIVE_INTERVAL + KEEP_ALIVE_TIMEOUT)).await;
    assert!(!served.is_finished());
    let (_, body) = exchange(&mut send, post("/"), "").await.unwrap();
    assert_eq!(body, "alive");
}

#[tokio::test]
async fn a_graceful_shutdown_lets_the_open_stream_finish_and_takes_no_new_one() {
    let (answer_tx, answer) = oneshot::channel::<()>();
    let mut answer = Some(answer);
    let (near, far) = tokio::io::duplex(1 << 20);
    let serve = move |_request: Request<Body>| {
        let answer = answer.take();
        async move {
            if let Some(answer) = answer {
                let _ = answer.await;
            }
            Ok::<_, Infallible>(Response::new(full("done")))
        }
    };
    let mut serving = Serving::new(&builder(), far, serve);
    let (shut_tx, mut shut) = oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        let mut shut_down = false;
        std::future::poll_fn(|cx| {
            if !shut_down && Pin::new(&mut shut).poll(cx).is_ready() {
                shut_down = true;
                serving.graceful_shutdown();
            }
            Pin::new(&mut serving).poll(cx)
        })
        .await
    });
    let (send, connection) = client::handshake(near).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut first = send.clone().ready().await.unwrap();
    let (response, _) = first.send_request(post("/first"), true).unwrap();
    // The request has reached the handler once a second one has been answered.
    let mut second = send.clone();
    let (_, body) = exchange(&mut second, post("/second"), "").await.unwrap();
    assert_eq!(body, "done");
    shut_tx.send(()).unwrap();
    answer_tx.send(()).unwrap();
    let (head, mut recv) = response.await.unwrap().into_parts();
    assert_eq!(head.status, 200);
    assert_eq!(recv.data().await.unwrap().unwrap(), "done");
    // Ended: cleanly, or with the write error of a client that closed first (it may,
    // once it has its answer and the GOAWAY).
    if let Err(e) = served.await.unwrap() {
        assert!(e.to_string().contains("broken pipe"), "{e}");
    }
    let late = exchange(&mut send.clone(), post("/late"), "").await;
    assert!(late.is_err(), "a stream after the GOAWAY was served");
}

#[tokio::test(start_paused = true)]
async fn a_connection_idle_a_while_holds_no_buffers_and_its_next_request_is_served() {
    let (near, far) = tokio::io::duplex(1 << 20);
    let echo = |request: Request<Body>| async move {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let body = Full::new(body).map_err(|e: Infallible| match e {});
        Ok::<_, Infallible>(Response::new(Body::from(body.boxed_unsync())))
    };
    // Polled here, not in a task of its own: its state is looked at between polls.
    let mut serving = Box::pin(Serving::new(&builder(), far, echo));
    let (send, connection) = client::handshake(near).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    for body in ["first", "second, after letting go"] {
        let mut send = send.clone();
        let (head, answer) = tokio::select! {
            answer = exchange(&mut send, post("/"), body) => answer.unwrap(),
            ended = serving.as_mut() => panic!("the connection ended: {ended:?}"),
        };
        assert_eq!((head.status.as_u16(), &answer[..]), (200, body.as_bytes()));
        // Just answered: what the next message would use is kept for a while.
        assert!(serving.streams.is_empty());
        assert!(serving.read.capacity() > 0, "let go at once");
        // Idle past the grace (the clock is paused: it moves when all tasks wait),
        // the connection holds its state alone.
        tokio::select! {
            () = tokio::time::sleep(2 * LET_GO_AFTER) => {}
            ended = serving.as_mut() => panic!("the connection ended: {ended:?}"),
        }
        assert_eq!(serving.read.capacity(), 0, "the read buffer is kept");
        assert_eq!(serving.staging.capacity(), 0, "the staging chunk is kept");
        assert!(serving.answers.is_none(), "the futures' set is kept");
        assert_eq!(serving.events.capacity(), 0);
    }
}
