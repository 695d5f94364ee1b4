//! The client end driven over an in-memory connection, with the real `h2` server on
//! the other end: more requests than the server lets open at once, bodies far
//! larger than every window in both directions, trailers both ways, and a stream
//! the server refuses.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use graylane_http2::client::{Config, Connection, Event, Unsendable};
use graylane_http2::frame::Reason;
use http::{HeaderMap, HeaderValue, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// The h2 server: answers `/bytes/N` with N bytes, `/refuse` with REFUSED_STREAM,
/// anything else by echoing the body and its trailers; `x-length` says the body's
/// length.
async fn h2_server(io: DuplexStream, max_streams: u32) {
    let mut connection = h2::server::Builder::new()
        .max_concurrent_streams(max_streams)
        .handshake::<_, Bytes>(io)
        .await
        .unwrap();
    while let Some(accepted) = connection.accept().await {
        let Ok((request, mut respond)) = accepted else {
            return;
        };
        tokio::spawn(async move {
            let path = request.uri().path().to_owned();
            if path == "/refuse" {
                respond.send_reset(h2::Reason::REFUSED_STREAM);
                return;
            }
            let mut body = request.into_body();
            let mut received = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                body.flow_control().release_capacity(chunk.len()).unwrap();
                received.extend_from_slice(&chunk);
            }
            let trailers = body.trailers().await.unwrap();
            let answer: Vec<u8> = match path.strip_prefix("/bytes/") {
                Some(n) => (0..n.parse::<usize>().unwrap())
                    .map(|i| i.to_le_bytes()[0])
                    .collect(),
                None => received,
            };
            let response = Response::builder()
                .header("x-length", answer.len())
                .body(())
                .unwrap();
            let mut send = respond
                .send_response(response, answer.is_empty() && trailers.is_none())
                .unwrap();
            let mut left = Bytes::from(answer);
            while !left.is_empty() {
                send.reserve_capacity(left.len());
                let Some(Ok(n)) = std::future::poll_fn(|cx| send.poll_capacity(cx)).await else {
                    return;
                };
                let last = n >= left.len() && trailers.is_none();
                send.send_data(left.split_to(n.min(left.len())), last)
                    .unwrap();
            }
            if let Some(trailers) = trailers {
                send.send_trailers(trailers).unwrap();
            }
        });
    }
}

/// One request and what came of it.
#[derive(Debug, Default)]
struct Call {
    path: String,
    upload: Vec<u8>,
    sent: usize,
    trailers: Option<HeaderMap>,
    trailers_sent: bool,
    stream: Option<u32>,
    status: Option<u16>,
    body: Vec<u8>,
    answer_trailers: Option<HeaderMap>,
    reset: Option<Reason>,
    done: bool,
}

/// Drives `calls` over one connection to completion: as many at once as the server
/// allows, bodies within the windows, each response read whole.
async fn drive(io: DuplexStream, mut calls: Vec<Call>) -> (Vec<Call>, usize) {
    let mut conn = Connection::new(Config::default());
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut buf = Vec::new();
    let mut waiting: VecDeque<usize> = (0..calls.len()).collect();
    let mut most_open = 0;
    let mut open = 0usize;
    loop {
        while let Some(&i) = waiting.front() {
            match conn.can_send() {
                Ok(()) => {}
                Err(Unsendable::AtLimit) => break,
                Err(e) => {
                    // Not sent at all: refused, as the server's GOAWAY says.
                    calls[i].reset = Some(Reason::REFUSED_STREAM);
                    calls[i].done = true;
                    waiting.pop_front();
                    let _ = e;
                    continue;
                }
            }
            waiting.pop_front();
            let call = &mut calls[i];
            let method = if call.upload.is_empty() {
                "GET"
            } else {
                "POST"
            };
            let (head, ()) = Request::builder()
                .method(method)
                .uri(format!("http://h2.example{}", call.path))
                .body(())
                .unwrap()
                .into_parts();
            let bodiless = call.upload.is_empty() && call.trailers.is_none();
            call.stream = Some(conn.send_request(&head, bodiless).unwrap());
            open += 1;
            most_open = most_open.max(open);
        }
        for call in calls.iter_mut().filter(|c| !c.done && c.stream.is_some()) {
            let stream = call.stream.unwrap();
            if call.sent < call.upload.len() {
                let n = conn
                    .send_data(stream, &call.upload[call.sent..], call.trailers.is_none())
                    .unwrap_or(0);
                call.sent += n;
            }
            if call.sent == call.upload.len()
                && !call.trailers_sent
                && let Some(t) = &call.trailers
            {
                conn.send_trailers(stream, t).unwrap();
                call.trailers_sent = true;
            }
        }
        while !conn.output().is_empty() {
            let n = conn.output().len();
            wr.write_all(conn.output()).await.unwrap();
            conn.advance(n);
        }
        if calls.iter().all(|c| c.done) {
            return (calls, most_open);
        }
        let n = rd.read_buf(&mut buf).await.unwrap();
        assert!(n > 0, "the server closed with calls open");
        let mut events = Vec::new();
        let used = conn
            .recv(&buf, &mut |e| {
                events.push(match e {
                    Event::Data {
                        stream,
                        data,
                        end_stream,
                    } => (stream, Some(data.to_vec()), None, None, None, end_stream),
                    Event::Response {
                        stream,
                        head,
                        end_stream,
                        ..
                    } => (
                        stream,
                        None,
                        Some(head.status.as_u16()),
                        None,
                        None,
                        end_stream,
                    ),
                    Event::Trailers { stream, trailers } => {
                        (stream, None, None, Some(trailers), None, true)
                    }
                    Event::Reset { stream, reason } => {
                        (stream, None, None, None, Some(reason), true)
                    }
                    _ => (0, None, None, None, None, false),
                });
            })
            .unwrap();
        buf.drain(..used);
        for (stream, data, status, trailers, reset, end) in events {
            let Some(call) = calls.iter_mut().find(|c| c.stream == Some(stream)) else {
                continue;
            };
            if let Some(data) = data {
                conn.release(stream, u32::try_from(data.len()).unwrap());
                call.body.extend_from_slice(&data);
            }
            if status.is_some() {
                call.status = status;
            }
            if trailers.is_some() {
                call.answer_trailers = trailers;
            }
            if reset.is_some() {
                call.reset = reset;
            }
            if end && !call.done {
                call.done = true;
                open -= 1;
            }
        }
    }
}

fn connect(max_streams: u32) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    tokio::spawn(h2_server(theirs, max_streams));
    ours
}

#[tokio::test]
async fn requests_beyond_the_servers_stream_limit_wait_and_bodies_come_back_whole() {
    let calls: Vec<Call> = (0..60usize)
        .map(|i| {
            let size = [0, 1, 16_385, 300_000, 1 << 20][i % 5];
            if i % 2 == 0 {
                Call {
                    path: format!("/bytes/{size}"),
                    ..Call::default()
                }
            } else {
                let mut trailers = HeaderMap::new();
                trailers.insert("x-sent", HeaderValue::from(size));
                Call {
                    path: "/echo".into(),
                    upload: (0..size).map(|j| (i + j).to_le_bytes()[0]).collect(),
                    trailers: Some(trailers),
                    ..Call::default()
                }
            }
        })
        .collect();
    let (calls, most_open) =
        tokio::time::timeout(Duration::from_secs(60), drive(connect(8), calls))
            .await
            .unwrap();
    assert!(most_open <= 8, "{most_open} streams open at once");
    for (i, call) in calls.iter().enumerate() {
        assert_eq!(call.status, Some(200), "call {i}: {call:?}");
        assert_eq!(call.reset, None, "call {i}");
        if let Some(size) = call.path.strip_prefix("/bytes/") {
            let size: usize = size.parse().unwrap();
            assert_eq!(call.body.len(), size, "call {i}");
            assert!(
                call.body
                    .iter()
                    .enumerate()
                    .all(|(j, &b)| b == j.to_le_bytes()[0])
            );
        } else {
            assert!(
                call.body == call.upload,
                "call {i}: {} bytes back",
                call.body.len()
            );
            assert_eq!(call.answer_trailers, call.trailers, "call {i}");
        }
    }
}

#[tokio::test]
async fn a_stream_the_server_refuses_ends_refused_and_the_others_are_answered() {
    let mut calls = vec![Call {
        path: "/refuse".into(),
        ..Call::default()
    }];
    calls.extend((0..6).map(|_| Call {
        path: "/bytes/10".into(),
        ..Call::default()
    }));
    let (calls, _) = tokio::time::timeout(Duration::from_secs(30), drive(connect(100), calls))
        .await
        .unwrap();
    assert_eq!(
        calls[0].reset,
        Some(Reason::REFUSED_STREAM),
        "{:?}",
        calls[0]
    );
    for call in &calls[1..] {
        assert_eq!((call.status, call.body.len()), (Some(200), 10), "{call:?}");
    }
}
