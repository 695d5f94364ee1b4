//! The client against raw servers on loopback: what real servers, broken ones and
//! hostile ones write.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::proxy::BoxError;

mod lost;

/// A server on port 0 that reads each request head (and its body, up to the bytes
/// it ends with), then writes the next of `answers`, each on the same connection;
/// it then closes.
async fn server(
    answers: Vec<(&'static [u8], &'static [u8])>,
) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        for (body_end, answer) in answers {
            read_head(&mut stream, &mut seen).await;
            read_until(&mut stream, &mut seen, body_end).await;
            stream.write_all(answer).await.unwrap();
        }
        seen
    });
    (address, task)
}

async fn read_head(stream: &mut TcpStream, seen: &mut Vec<u8>) {
    read_until(stream, seen, b"\r\n\r\n").await;
}

async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, end: &[u8]) {
    let start = seen.len();
    let mut byte = [0u8; 1];
    while !seen[start..].ends_with(end) {
        stream.read_exact(&mut byte).await.unwrap();
        seen.push(byte[0]);
    }
}

/// `request` sent to a server that answers it with `answer` and closes; the idle
/// list the connection would go back to.
async fn answered(
    answer: &'static [u8],
    request: Box<Request<Body>>,
) -> (Result<Response<Body>, Failed>, Idle) {
    let (address, _server) = server(vec![(b"", answer)]).await;
    let idle = Idle::default();
    let sent = send(conn(&address).await, request, &idle).await;
    (sent, idle)
}

async fn conn(address: &str) -> Box<Conn> {
    Conn::new(Io::Plain(TcpStream::connect(address).await.unwrap()))
}

fn get(path: &str) -> Box<Request<Body>> {
    Box::new(
        Request::get(path)
            .header("host", "app")
            .body(Body::Empty)
            .unwrap(),
    )
}

async fn body_of(response: Response<Body>) -> (Bytes, Option<HeaderMap>) {
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (collected.to_bytes(), trailers)
}

fn error_text(result: Result<Response<Body>, Failed>) -> String {
    match result {
        Ok(response) => panic!("answered {}", response.status()),
        Err(failed) => match failed.error {
            PoolError::Exchange(e) | PoolError::RequestBody(e) | PoolError::Unsendable(e) => {
                e.to_string()
            }
            PoolError::Connect(e) => e,
        },
    }
}

#[tokio::test]
async fn chunked_bodies_with_trailers_and_lengths_share_one_kept_connection() {
    let (address, server) = server(vec![
        (
            b"",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n\
              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n",
        ),
        (b"", b"HTTP/1.1 404 Nope\r\ncontent-length: 4\r\n\r\ngone"),
    ])
    .await;
    let idle = Idle::default();
    let response = send(conn(&address).await, get("/a"), &idle)
        .await
        .ok()
        .unwrap();
    assert_eq!(response.status(), 200);
    let (body, trailers) = body_of(response).await;
    assert_eq!(body, "hello world");
    assert_eq!(trailers.unwrap()["x-sum"], "11");
    let again = idle.lock().unwrap().pop().expect("given back").0;
    let response = send(again, get("/b"), &idle).await.ok().unwrap();
    assert_eq!(response.status(), 404);
    let reason = response.extensions().get::<hyper::ext::ReasonPhrase>();
    assert_eq!(
        reason.unwrap().as_bytes(),
        b"Nope",
        "a custom reason goes on"
    );
    assert_eq!(body_of(response).await.0, "gone");
    assert_eq!(idle.lock().unwrap().len(), 1);
    let seen = String::from_utf8(server.await.unwrap()).unwrap();
    assert!(
        seen.starts_with("GET /a HTTP/1.1\r\nhost: app\r\n\r\nGET /b "),
        "{seen}"
    );
}

#[tokio::test]
async fn interim_answers_are_skipped_and_a_body_to_the_close_is_read_whole() {
    let (sent, idle) = answered(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
          HTTP/1.1 200 OK\r\n\r\nuntil the end",
        get("/"),
    )
    .await;
    let response = sent.ok().unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("link").is_none());
    assert_eq!(body_of(response).await.0, "until the end");
    assert!(
        idle.lock().unwrap().is_empty(),
        "a body to the close ends it"
    );
}

#[tokio::test]
async fn no_body_follows_a_head_a_204_or_a_304_whatever_their_length_says() {
    let (address, _server) = server(vec![
        (b"", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
        (b"", b"HTTP/1.1 204 No Content\r\n\r\n"),
        (
            b"",
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
        ),
    ])
    .await;
    let idle = Idle::default();
    let mut head = get("/");
    *head.method_mut() = Method::HEAD;
    let mut next = Some(conn(&address).await);
    for request in [head, get("/"), get("/")] {
        let response = send(next.take().unwrap(), request, &idle)
            .await
            .ok()
            .unwrap();
        assert!(body_of(response).await.0.is_empty());
        next = idle.lock().unwrap().pop().map(|(c, _)| c);
        assert!(next.is_some(), "given back with its head");
    }
}

#[tokio::test]
async fn broken_framing_is_an_error_and_the_connection_is_not_kept() {
    // (what, the answer, where it fails: in the body, or the exchange with the text)
    let cases: [(&str, &'static [u8], Option<&str>); 8] = [
        // Broken in what came with the head: no head goes on (a 502, not a 200
        // and then a cut connection).
        (
            "bad size",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            Some("malformed chunked body: chunk size"),
        ),
        (
            "bare LF",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
            Some("malformed chunked body: a bare LF"),
        ),
        (
            "no CRLF",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            None,
        ),
        (
            "cut body",
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
            None,
        ),
        (
            "lengths differ",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
            Some("malformed response head"),
        ),
        (
            "bad length",
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            Some("malformed response head"),
        ),
        (
            "TE in 1.0",
            b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            Some("malformed response head"),
        ),
        (
            "obs-fold",
            b"HTTP/1.1 200 OK\r\nx-a: b\r\n c\r\ncontent-length: 0\r\n\r\n",
            Some("malformed response head"),
        ),
    ];
    for (what, answer, at_head) in cases {
        let (sent, idle) = answered(answer, get("/")).await;
        match at_head {
            None => {
                let response = sent.ok().unwrap_or_else(|| panic!("{what}: no head"));
                let e = response.into_body().collect().await.err();
                assert!(e.is_some(), "{what}: the body should fail");
            }
            Some(expected) => {
                let text = error_text(sent);
                assert!(text.contains(expected), "{what}: {text}");
            }
        }
        assert!(idle.lock().unwrap().is_empty(), "{what}: kept");
    }
}

fn streamed(parts: Vec<Frame<Bytes>>) -> Body {
    let frames = parts.into_iter().map(Ok::<_, BoxError>);
    Body::Boxed(BodyExt::boxed_unsync(StreamBody::new(tokio_stream::iter(
        frames,
    ))))
}

#[tokio::test]
async fn a_body_of_unknown_length_goes_chunked_with_its_declared_trailers() {
    let answer: &'static [u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let (address, server) = server(vec![(b"x-sum: 7\r\n\r\n", answer)]).await;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-sum", "7".parse().unwrap());
    trailers.insert("x-undeclared", "no".parse().unwrap());
    trailers.insert("content-length", "9".parse().unwrap());
    let body = streamed(vec![
        Frame::data(Bytes::from_static(b"abc")),
        Frame::data(Bytes::from_static(b"defg")),
        Frame::trailers(trailers),
    ]);
    let request = Request::post("/up")
        .header("trailer", "x-sum, content-length")
        .body(body)
        .unwrap();
    let idle = Idle::default();
    let response = send(conn(&address).await, Box::new(request), &idle)
        .await
        .ok()
        .unwrap();
    assert_eq!(body_of(response).await.0, "ok");
    drop(idle);
    let seen = String::from_utf8(server.await.unwrap()).unwrap();
    let (head, body) = seen.split_once("\r\n\r\n").unwrap();
    assert!(head.ends_with("\r\ntransfer-encoding: chunked"), "{head}");
    // Only the declared trailer a trailer may be.
    assert_eq!(body, "3\r\nabc\r\n4\r\ndefg\r\n0\r\nx-sum: 7\r\n\r\n");
}

#[tokio::test]
async fn a_streaming_server_gets_the_rest_of_the_body_while_its_answer_is_read() {
    // Answers at the head, then echoes: the body must keep going out while the
    // response is read, or both sides wait for each other.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        read_head(&mut stream, &mut seen).await;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        // The chunked request body, relayed to the end (`0\r\n\r\n`).
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"0\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client stopped sending");
            got.extend_from_slice(&buf[..n]);
            stream
                .write_all(format!("{n:x}\r\n").as_bytes())
                .await
                .unwrap();
            stream.write_all(&buf[..n]).await.unwrap();
            stream.write_all(b"\r\n").await.unwrap();
        }
        stream.write_all(b"0\r\n\r\n").await.unwrap();
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
    let body = Body::Boxed(BodyExt::boxed_unsync(StreamBody::new(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )));
    let idle = Idle::default();
    let request = Box::new(Request::post("/echo").body(body).unwrap());
    // The first piece goes with the head; the answer comes before the rest is sent.
    tx.send(Ok(Frame::data(Bytes::from_static(b"one"))))
        .await
        .unwrap();
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        send(conn(&address).await, request, &idle),
    )
    .await
    .unwrap()
    .ok()
    .unwrap();
    let feeder = tokio::spawn(async move {
        tx.send(Ok(Frame::data(Bytes::from_static(b"two"))))
            .await
            .unwrap();
    });
    let echoed = tokio::time::timeout(Duration::from_secs(10), body_of(response))
        .await
        .expect("no deadlock")
        .0;
    feeder.await.unwrap();
    server.await.unwrap();
    let text = String::from_utf8_lossy(&echoed);
    assert!(text.contains("one") && text.contains("two"), "{text}");
}

#[tokio::test]
async fn an_answer_before_the_body_is_read_arrives_even_when_the_server_closes() {
    // A 413 at the head, then the server goes away with the body unread.
    let big = Bytes::from(vec![b'x'; 8 << 20]);
    let request = Request::post("/up")
        .header("content-length", big.len().to_string())
        .body(streamed(vec![Frame::data(big)]))
        .unwrap();
    let (sent, idle) = answered(
        b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbig",
        Box::new(request),
    )
    .await;
    let response = sent.ok().unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(body_of(response).await.0, "big");
    assert!(idle.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_101_hands_over_the_connection_with_what_came_after_its_head() {
    let (sent, _) = answered(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\nhi",
        get("/ws"),
    )
    .await;
    let mut response = sent.ok().unwrap();
    assert_eq!(response.status(), 101);
    let mut upgraded = take_switched(&mut response).expect("the connection");
    assert!(take_switched(&mut response).is_none(), "only once");
    let mut first = [0u8; 2];
    upgraded.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"hi");
}

#[tokio::test]
async fn an_idle_connection_the_server_closed_is_not_open() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (close, closing) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream, &mut Vec::new()).await;
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        stream.write_all(answer).await.unwrap();
        closing.await.unwrap();
    });
    let idle = Idle::default();
    let response = send(conn(&address).await, get("/"), &idle)
        .await
        .ok()
        .unwrap();
    drop(response);
    let (mut kept, _) = idle.lock().unwrap().pop().unwrap();
    assert!(kept.is_open(), "open while the server holds it");
    close.send(()).unwrap();
    server.await.unwrap();
    // The server's socket closed: the FIN arrives.
    let closed = async {
        while kept.is_open() {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("seen closed");
}

#[tokio::test]
async fn small_chunks_already_read_go_on_as_one_frame_and_a_cut_comes_after_them() {
    let mut answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..100 {
        answer.extend_from_slice(b"5\r\nabcde\r\n");
    }
    // No last chunk: the server closes mid-body.
    let answer: &'static [u8] = answer.leak();
    let response = answered(answer, get("/")).await.0.ok().unwrap();
    let mut body = response.into_body();
    let (mut frames, mut bytes) = (0, 0);
    let failure = loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                frames += 1;
                bytes += frame.into_data().unwrap().len();
                assert!(
                    !hyper::body::Body::is_end_stream(&body),
                    "a cut body never says it ended"
                );
            }
            Some(Err(e)) => break e.to_string(),
            None => panic!("a cut body ended as if whole"),
        }
    };
    assert_eq!(bytes, 500, "all that came, before the failure");
    assert!(frames <= 3, "{frames} frames for 100 chunks read at once");
    assert!(failure.contains("mid-message"), "{failure}");
}

#[tokio::test]
async fn a_connection_that_read_a_large_body_keeps_no_large_buffer_idle() {
    let mut answer = b"HTTP/1.1 200 OK\r\ncontent-length: 4194304\r\n\r\n".to_vec();
    answer.extend(std::iter::repeat_n(b'x', 4 << 20));
    let answer: &'static [u8] = answer.leak();
    let (sent, idle) = answered(answer, get("/big")).await;
    let mut body = sent.ok().unwrap().into_body();
    let mut bytes = 0;
    while let Some(frame) = body.frame().await {
        bytes += frame.unwrap().into_data().unwrap().len();
    }
    assert_eq!(bytes, 4 << 20);
    let (kept, _) = idle.lock().unwrap().pop().expect("given back");
    assert!(
        kept.read.capacity() <= 2 * FIRST_READ,
        "{}",
        kept.read.capacity()
    );
}

#[tokio::test]
async fn what_came_before_a_bad_chunk_goes_on_before_the_failure() {
    let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n";
    let (sent, _) = answered(answer, get("/")).await;
    let mut body = sent.ok().unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "hello");
    let failure = body.frame().await.unwrap().unwrap_err().to_string();
    assert!(failure.contains("chunk size"), "{failure}");
}

#[tokio::test]
async fn a_head_over_400_kib_is_refused_however_it_was_read() {
    let mut answer = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    answer.extend(std::iter::repeat_n(b'a', 450 * 1024));
    answer.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
    let (sent, _) = answered(answer.leak(), get("/")).await;
    let text = error_text(sent);
    assert!(text.contains("response head over 400 KiB"), "{text}");
}

#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_refused_and_a_listed_length_made_one() {
    for te in ["gzip", "gzip, chunked", "chunked, gzip"] {
        let answer = format!("HTTP/1.1 200 OK\r\ntransfer-encoding: {te}\r\n\r\n0\r\n\r\n");
        let (sent, _) = answered(answer.into_bytes().leak(), get("/")).await;
        let text = error_text(sent);
        assert!(
            text.contains("a transfer coding other than chunked"),
            "{te}: {text}"
        );
    }
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\ncontent-length: 5\r\n\r\nhello";
    let (sent, _) = answered(answer, get("/")).await;
    let response = sent.ok().unwrap();
    let lengths: Vec<_> = response
        .headers()
        .get_all("content-length")
        .iter()
        .collect();
    assert_eq!(lengths, ["5"]);
    assert_eq!(body_of(response).await.0, "hello");
}

#[tokio::test]
async fn an_upload_answered_early_with_a_2xx_still_goes_out_whole() {
    // Answers at the head, then reads the whole body, as a server that accepts an
    // upload before storing it does.
    const SIZE: usize = 1 << 20;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream, &mut Vec::new()).await;
        let answer = b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nok";
        stream.write_all(answer).await.unwrap();
        let mut body = vec![0; SIZE];
        stream.read_exact(&mut body).await.map(|_| body.len())
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
    let body = Body::Boxed(BodyExt::boxed_unsync(StreamBody::new(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )));
    let request = Request::post("/up")
        .header("content-length", SIZE.to_string())
        .body(body)
        .unwrap();
    let feeder = tokio::spawn(async move {
        for _ in 0..16 {
            let piece = Bytes::from(vec![b'x'; SIZE / 16]);
            if tx.send(Ok(Frame::data(piece))).await.is_err() {
                return;
            }
        }
    });
    let idle = Idle::default();
    let response = send(conn(&address).await, Box::new(request), &idle)
        .await
        .ok()
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(body_of(response).await.0, "ok");
    let received = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the rest of the body came")
        .unwrap();
    assert_eq!(received.unwrap(), SIZE);
    feeder.await.unwrap();
}
