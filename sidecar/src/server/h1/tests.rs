use bytes::BytesMut;
use http::{HeaderValue, Method, Response, StatusCode, header};

use super::head::{Answer, Parsed, parse_request};
use crate::proxy::pool::http1::{Framing, OutFraming};
use crate::proxy::{self, Body};

fn parse(bytes: &[u8]) -> (Parsed, BytesMut) {
    let mut buf = BytesMut::from(bytes);
    let parsed = parse_request(&mut buf, &mut Vec::new(), 1024);
    (parsed, buf)
}

#[test]
fn a_plain_get_is_taken_out_of_the_buffer_with_its_fields_and_the_next_request_stays() {
    let (parsed, rest) =
        parse(b"\r\nGET /a?b=1 HTTP/1.1\r\nHost: orders\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next");
    let Parsed::Plain(head) = parsed else {
        panic!("served here")
    };
    let request = head.request;
    assert_eq!(request.method(), Method::GET);
    assert_eq!(request.uri(), "/a?b=1");
    assert_eq!(request.headers()["host"], "orders");
    let twos: Vec<_> = request.headers().get_all("x-two").iter().collect();
    assert_eq!(twos, ["1", "2"]);
    assert!(head.keep_alive && !head.answer.head_only && !head.answer.trailers);
    assert_eq!(&rest[..], b"GET /next");
}

#[test]
fn what_a_head_says_of_its_answer_and_connection_is_read() {
    let (Parsed::Plain(head), _) =
        parse(b"HEAD / HTTP/1.1\r\nConnection: Keep-Alive, CLOSE\r\nTE: gzip, trailers\r\n\r\n")
    else {
        panic!("served here")
    };
    assert!(!head.keep_alive && head.answer.head_only && head.answer.trailers);
    let (Parsed::Plain(head), _) =
        parse(b"POST /empty HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    else {
        panic!("a POST without a body is served here")
    };
    assert_eq!(head.request.method(), Method::POST);
    assert!(head.body.is_none());
}

#[test]
fn a_body_of_one_length_or_chunked_alone_is_framed_by_it_and_left_in_the_buffer() {
    let (Parsed::Plain(head), rest) =
        parse(b"POST /a HTTP/1.1\r\ncontent-length: 0005\r\n\r\nhelloGET")
    else {
        panic!("served here")
    };
    assert!(matches!(head.body, Some((Framing::Length(5), Some(5)))));
    assert_eq!(&rest[..], b"helloGET");
    let (Parsed::Plain(head), rest) =
        parse(b"PUT /a HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    else {
        panic!("served here")
    };
    assert!(matches!(head.body, Some((Framing::Chunked(..), None))));
    assert_eq!(&rest[..], b"5\r\nhello\r\n0\r\n\r\n");
}

#[test]
fn a_head_not_whole_is_partial_and_stays() {
    let (parsed, rest) = parse(b"GET / HTTP/1.1\r\nHost: a\r\n");
    assert!(matches!(parsed, Parsed::Partial));
    assert_eq!(&rest[..], b"GET / HTTP/1.1\r\nHost: a\r\n");
}

#[test]
fn heads_hyper_serves_are_left_whole_in_the_buffer() {
    let cases: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
        b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"G@T / HTTP/1.1\r\n\r\n",
        b"GET /\x7f HTTP/1.1\r\n\r\n",
    ];
    for &case in cases {
        let (parsed, rest) = parse(case);
        assert!(
            matches!(parsed, Parsed::HandOff),
            "{:?}",
            String::from_utf8_lossy(case)
        );
        assert_eq!(&rest[..], case, "left whole");
    }
}

#[test]
fn a_head_over_the_bound_or_with_too_many_fields_is_hyper_s_to_refuse() {
    let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
    assert!(matches!(parse(long.as_bytes()).0, Parsed::HandOff));
    // Not whole yet, and already over the bound.
    assert!(matches!(parse(&long.as_bytes()[..1500]).0, Parsed::HandOff));
    let mut many = String::from("GET / HTTP/1.1\r\n");
    for i in 0..=super::super::MAX_FIELDS {
        many.push_str(&format!("x{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    let mut buf = BytesMut::from(many.as_bytes());
    let parsed = parse_request(&mut buf, &mut Vec::new(), 64 * 1024);
    assert!(matches!(parsed, Parsed::HandOff));
}

const GET: Answer = Answer {
    head_only: false,
    trailers: false,
};

fn encode(
    response: Response<Body>,
    asked: Answer,
    close: bool,
) -> (String, Option<OutFraming>, bool) {
    let (parts, body) = response.into_parts();
    let mut out = BytesMut::new();
    let (framing, close) = super::head::encode_response(&parts, &body, asked, close, &mut out);
    (String::from_utf8(out.to_vec()).unwrap(), framing, close)
}

fn lines(head: &str) -> Vec<&str> {
    head.split("\r\n")
        .filter(|l| !l.starts_with("date: "))
        .collect()
}

#[test]
fn an_answer_of_known_length_says_it_and_gets_a_date() {
    let response = Response::new(proxy::full("hello".into()));
    let (head, framing, close) = encode(response, GET, false);
    assert_eq!(
        lines(&head),
        ["HTTP/1.1 200 OK", "content-length: 5", "", ""]
    );
    assert!(head.contains("\r\ndate: "), "{head}");
    assert!(matches!(framing, Some(OutFraming::Length(5))));
    assert!(!close);
}

#[test]
fn an_answer_of_unknown_length_is_chunked_with_trailers_only_if_asked_and_declared() {
    let stream = || {
        let body = http_body_util::StreamBody::new(futures_util::stream::empty::<
            Result<hyper::body::Frame<bytes::Bytes>, crate::proxy::BoxError>,
        >());
        let mut response = Response::new(Body::from(http_body_util::BodyExt::boxed_unsync(body)));
        response.headers_mut().insert(
            header::TRAILER,
            HeaderValue::from_static("grpc-status, host"),
        );
        response
    };
    let (head, framing, _) = encode(stream(), GET, false);
    assert!(
        head.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{head}"
    );
    assert!(matches!(framing, Some(OutFraming::Chunked { trailers }) if trailers.is_empty()));
    let asked = Answer {
        trailers: true,
        ..GET
    };
    let (_, framing, _) = encode(stream(), asked, false);
    let Some(OutFraming::Chunked { trailers }) = framing else {
        panic!("chunked")
    };
    assert_eq!(
        trailers,
        ["grpc-status"],
        "declared, and one a trailer may be"
    );
}

#[test]
fn no_body_follows_a_head_or_a_204_or_a_304_and_a_head_keeps_its_length() {
    let mut response = Response::new(proxy::empty());
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("1234"));
    let head_only = Answer {
        head_only: true,
        ..GET
    };
    let (head, framing, _) = encode(response, head_only, false);
    assert_eq!(
        lines(&head),
        ["HTTP/1.1 200 OK", "content-length: 1234", "", ""]
    );
    assert!(framing.is_none());
    for status in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED] {
        let mut response = Response::new(proxy::full("stray".into()));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        let (head, framing, _) = encode(response, GET, false);
        assert_eq!(lines(&head)[1..], ["", ""], "{status}: {head}");
        assert!(framing.is_none());
    }
}

#[test]
fn the_last_answer_says_close_once_and_an_answer_saying_close_is_the_last() {
    let (head, _, close) = encode(Response::new(proxy::empty()), GET, true);
    assert_eq!(
        lines(&head),
        [
            "HTTP/1.1 200 OK",
            "content-length: 0",
            "connection: close",
            "",
            ""
        ]
    );
    assert!(close);
    for said in ["close", "Close", "upgrade, CLOSE"] {
        let mut response = Response::new(proxy::empty());
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static(said));
        let (head, _, close) = encode(response, GET, true);
        assert_eq!(head.matches("connection: ").count(), 1, "{head}");
        assert!(close, "{said}");
    }
}

#[test]
fn a_reason_phrase_the_upstream_gave_goes_on_and_a_date_given_is_kept() {
    let mut response = Response::new(proxy::empty());
    *response.status_mut() = StatusCode::from_u16(299).unwrap();
    response
        .extensions_mut()
        .insert(hyper::ext::ReasonPhrase::try_from(&b"Fine Thanks"[..]).unwrap());
    response.headers_mut().insert(
        header::DATE,
        HeaderValue::from_static("Tue, 01 Dec 2026 00:00:00 GMT"),
    );
    let (head, _, _) = encode(response, GET, false);
    assert!(head.starts_with("HTTP/1.1 299 Fine Thanks\r\n"), "{head}");
    assert_eq!(head.matches("date: ").count(), 1, "{head}");
}

mod feed {
    use std::future::poll_fn;
    use std::pin::Pin;

    use bytes::BytesMut;
    use http_body_util::BodyExt;
    use hyper::body::Body as _;
    use tokio::io::AsyncWriteExt;

    use super::super::incoming::channel;
    use crate::proxy::pool::http1::Framing;

    #[tokio::test]
    async fn a_chunked_body_reaches_the_handler_merged_with_its_trailers_and_the_next_bytes_stay() {
        let (mut near, mut far) = tokio::io::duplex(1024);
        let (body, mut feed) = channel(Framing::chunked(), None);
        far.write_all(b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-sum: 5\r\n\r\nGET /next")
            .await
            .unwrap();
        let mut read = BytesMut::new();
        poll_fn(|cx| feed.poll(cx, &mut near, &mut read)).await;
        assert!(feed.finished());
        assert_eq!(&read[..], b"GET /next", "the next request's bytes stay");
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-sum"], "5");
        assert_eq!(
            &collected.to_bytes()[..],
            b"abcde",
            "merged while not taken"
        );
    }

    #[tokio::test]
    async fn a_body_whose_client_leaves_fails_with_the_reason() {
        let (mut near, mut far) = tokio::io::duplex(1024);
        let (mut body, mut feed) = channel(Framing::Length(10), Some(10));
        assert_eq!(body.size_hint().exact(), Some(10));
        far.write_all(b"abc").await.unwrap();
        drop(far);
        let mut read = BytesMut::new();
        poll_fn(|cx| feed.poll(cx, &mut near, &mut read)).await;
        assert!(!feed.finished());
        let first = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert_eq!(&first.unwrap().unwrap().into_data().unwrap()[..], b"abc");
        let error = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let error = error.unwrap().unwrap_err().to_string();
        assert!(error.contains("closed the connection mid-body"), "{error}");
    }

    #[tokio::test]
    async fn a_dropped_body_is_read_and_thrown_away_up_to_the_drain_bound() {
        let (mut near, mut far) = tokio::io::duplex(256 * 1024);
        let (body, mut feed) = channel(Framing::Length(5), Some(5));
        drop(body);
        far.write_all(b"helloGET /next").await.unwrap();
        let mut read = BytesMut::new();
        poll_fn(|cx| feed.poll(cx, &mut near, &mut read)).await;
        assert!(feed.finished(), "small: drained");
        assert_eq!(&read[..], b"GET /next");
        // Past the bound: given up, the connection is not reused.
        let (body, mut feed) = channel(Framing::Length(1 << 20), Some(1 << 20));
        drop(body);
        far.write_all(&vec![b'x'; 200 * 1024]).await.unwrap();
        let mut read = BytesMut::new();
        poll_fn(|cx| feed.poll(cx, &mut near, &mut read)).await;
        assert!(!feed.finished());
    }

    #[tokio::test]
    async fn the_connection_waits_while_the_handler_has_not_taken_what_was_read() {
        let (mut near, mut far) = tokio::io::duplex(256 * 1024);
        let (mut body, mut feed) = channel(Framing::Length(64 * 1024), Some(64 * 1024));
        far.write_all(&vec![b'x'; 64 * 1024]).await.unwrap();
        let mut read = BytesMut::new();
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(
            feed.poll(&mut cx, &mut near, &mut read).is_pending(),
            "the slot is full"
        );
        let mut got = 0;
        while got < 64 * 1024 {
            let _ = feed.poll(&mut cx, &mut near, &mut read);
            let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            got += frame.unwrap().unwrap().into_data().unwrap().len();
        }
        assert!(feed.poll(&mut cx, &mut near, &mut read).is_ready());
        assert!(feed.finished() && body.is_end_stream());
    }
}

mod write {
    use bytes::{Bytes, BytesMut};
    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;

    use super::super::write_answer;
    use crate::proxy::pool::http1::{OutFraming, Outgoing, Upload};
    use crate::proxy::{Body, BoxError};

    /// Pieces between the copy bound (8 KiB) and the queue's (16 KiB), all ready at
    /// once, to a client reading slowly: each goes out whole and in order (explore17
    /// found a later piece written into the middle of an earlier one).
    #[tokio::test]
    async fn ready_pieces_of_a_body_go_out_in_order_to_a_slow_reader() {
        let pieces: Vec<Bytes> = (0..6u8)
            .map(|i| Bytes::from(vec![b'A' + i; 9_000 + usize::from(i) * 700]))
            .collect();
        let whole: Vec<u8> = pieces.iter().flat_map(|p| p.to_vec()).collect();
        let framings = || {
            [
                OutFraming::Length(whole.len() as u64),
                OutFraming::Chunked {
                    trailers: Vec::new(),
                },
            ]
        };
        for (tcp, framing) in framings()
            .into_iter()
            .map(|f| (false, f))
            .chain(framings().into_iter().map(|f| (true, f)))
        {
            let chunked = matches!(framing, OutFraming::Chunked { .. });
            let frames = pieces
                .iter()
                .map(|p| Ok::<_, BoxError>(hyper::body::Frame::data(p.clone())));
            let stream = http_body_util::StreamBody::new(futures_util::stream::iter(
                frames.collect::<Vec<_>>(),
            ));
            let body = Body::from(stream.boxed_unsync());
            // A slow reader over a pipe, and a socket (vectored writes: a piece with
            // the chunk-size line before it in one).
            let upload = Upload::new(body, framing);
            let got = if tcp {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let near = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
                    .await
                    .unwrap();
                let (far, _) = listener.accept().await.unwrap();
                written_through(near, far, upload).await
            } else {
                let (near, far) = tokio::io::duplex(1_000);
                written_through(near, far, upload).await
            };
            let got = if chunked { dechunk(&got) } else { got };
            assert!(
                got == whole,
                "chunked: {chunked}, tcp: {tcp}: the pieces went out out of order"
            );
        }
    }

    /// What `upload` looks like at the far end of `near`, read as it is written.
    async fn written_through<W, R>(mut near: W, mut far: R, upload: Upload) -> Vec<u8>
    where
        W: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            far.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut out = Outgoing::default();
        write_answer(
            &mut near,
            &mut out,
            Some(upload),
            None,
            &mut BytesMut::new(),
        )
        .await
        .unwrap();
        drop(near);
        reader.await.unwrap()
    }

    fn dechunk(mut wire: &[u8]) -> Vec<u8> {
        let mut data = Vec::new();
        loop {
            let line = wire.iter().position(|&b| b == b'\n').unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&wire[..line - 1]).unwrap(), 16).unwrap();
            wire = &wire[line + 1..];
            if size == 0 {
                return data;
            }
            data.extend_from_slice(&wire[..size]);
            assert_eq!(&wire[size..size + 2], b"\r\n");
            wire = &wire[size + 2..];
        }
    }
}

mod cancel {
    use std::pin::pin;
    use std::time::Duration;

    use bytes::BytesMut;

    use super::super::handle;

    /// A client that closed its connection behind a request is gone before that
    /// request is handled: its handler is never polled (hyper's server does the
    /// same; explore17 saw a request pipelined before the close reach the app).
    #[tokio::test]
    async fn a_client_that_closed_behind_its_request_is_gone_before_it_is_handled() {
        let (mut near, far) = tokio::io::duplex(1024);
        drop(far);
        let mut read = BytesMut::new();
        let polled = std::cell::Cell::new(false);
        let call = pin!(std::future::poll_fn(|_| {
            polled.set(true);
            std::task::Poll::<()>::Pending
        }));
        let handled = tokio::time::timeout(
            Duration::from_secs(10),
            handle(&mut near, &mut read, call, None),
        );
        assert_eq!(handled.await, Ok(None), "the client's close is seen");
        assert!(!polled.get(), "the request never started");
    }

    /// Bytes of a next request end the watch (they stay for the next turn): the
    /// request under way is answered even if the client closes after them.
    #[tokio::test]
    async fn a_request_with_another_pipelined_behind_it_is_answered() {
        let (mut near, far) = tokio::io::duplex(1024);
        drop(far);
        let mut read = BytesMut::from(&b"DELETE /b HTTP/1.1\r\nHost: a\r\n\r\n"[..]);
        let call = pin!(async { 200 });
        let handled = handle(&mut near, &mut read, call, None).await;
        assert_eq!(handled, Some(200));
    }
}

mod stuck {
    use std::pin::pin;
    use std::time::Duration;

    use bytes::BytesMut;
    use tokio::io::AsyncWriteExt;

    use super::super::handle;
    use super::super::incoming::channel;
    use crate::proxy::pool::http1::Framing;

    /// The connection waits on a silent client for the rest of a body; the handler
    /// drops the body: the connection is woken to hear it (explore18 F1: it slept
    /// forever, holding the connection past every timeout).
    #[tokio::test]
    async fn a_body_dropped_while_its_client_is_silent_wakes_the_connection() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let (mut near, mut far) = tokio::io::duplex(1024);
        far.write_all(b"abc").await.unwrap();
        let (body, mut feed) = channel(Framing::Length(10), Some(10));
        let mut read = BytesMut::new();
        let count = std::sync::Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        let waker = std::task::Waker::from(std::sync::Arc::clone(&count));
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(
            feed.poll(&mut cx, &mut near, &mut read).is_pending(),
            "waits for the rest"
        );
        let before = count.0.load(std::sync::atomic::Ordering::SeqCst);
        drop(body);
        assert!(
            count.0.load(std::sync::atomic::Ordering::SeqCst) > before,
            "woken when the body was dropped"
        );
        assert!(feed.reader_gone());
        drop(far);
    }

    /// A client that closes mid-body is gone before its request starts (hyper's
    /// order; explore18 F2: the head and part of the body reached the app).
    #[tokio::test]
    async fn a_client_gone_mid_body_is_gone_before_its_request_starts() {
        let (mut near, mut far) = tokio::io::duplex(1024);
        far.write_all(b"abc").await.unwrap();
        drop(far);
        let (_body, mut feed) = channel(Framing::Length(10), Some(10));
        let mut read = BytesMut::new();
        let polled = std::cell::Cell::new(false);
        let call = pin!(std::future::poll_fn(|_| {
            polled.set(true);
            std::task::Poll::<()>::Pending
        }));
        let handled = tokio::time::timeout(
            Duration::from_secs(10),
            handle(&mut near, &mut read, call, Some(&mut feed)),
        );
        assert_eq!(handled.await, Ok(None));
        assert!(!polled.get(), "the request never started");
    }
}
