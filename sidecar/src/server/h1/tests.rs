use bytes::BytesMut;
use http::{HeaderValue, Method, Response, StatusCode, header};

use super::head::{Answer, Parsed, parse_request};
use crate::proxy::pool::http1::OutFraming;
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
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nContent-Length: 00\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
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
