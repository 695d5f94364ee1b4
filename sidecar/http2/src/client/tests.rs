//! What a broken or hostile server sends, frame by frame, and what this end does.

use http::Request;

use super::*;
use crate::frame::{DEFAULT_MAX_FRAME_SIZE, kind};

#[derive(Debug, PartialEq)]
enum Seen {
    Informational(u32, u16),
    Response(u32, u16, bool),
    Data(u32, usize, bool),
    Trailers(u32),
    Malformed(u32),
    Reset(u32, Reason),
    GoAway(u32),
    Other,
}

fn feed(conn: &mut Connection, bytes: &[u8]) -> (Result<usize, ConnectionError>, Vec<Seen>) {
    let mut seen = Vec::new();
    let result = conn.recv(bytes, &mut |e| {
        seen.push(match e {
            Event::Informational { stream, head } => {
                Seen::Informational(stream, head.status.as_u16())
            }
            Event::Response {
                stream,
                head,
                end_stream,
                ..
            } => Seen::Response(stream, head.status.as_u16(), end_stream),
            Event::Data {
                stream,
                data,
                end_stream,
            } => Seen::Data(stream, data.len(), end_stream),
            Event::Trailers { stream, .. } => Seen::Trailers(stream),
            Event::Malformed { stream, .. } => Seen::Malformed(stream),
            Event::Reset { stream, reason } => Seen::Reset(stream, reason),
            Event::GoAway { last_stream, .. } => Seen::GoAway(last_stream),
            _ => Seen::Other,
        });
    });
    (result, seen)
}

/// A client that has the server's (empty or given) SETTINGS.
fn open(settings: &[(u16, u32)]) -> Connection {
    let mut conn = Connection::new(Config::default());
    let mut bytes = Vec::new();
    frame::write_settings(settings, &mut bytes);
    assert!(feed(&mut conn, &bytes).0.is_ok());
    let n = conn.output().len();
    conn.advance(n);
    conn
}

fn get(conn: &mut Connection, method: &str) -> u32 {
    let (head, ()) = Request::builder()
        .method(method)
        .uri("http://app/x")
        .body(())
        .unwrap_or_default()
        .into_parts();
    conn.send_request(&head, true).unwrap_or(0)
}

fn headers(stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        encode_field(name.as_bytes(), value.as_bytes(), false, &mut block);
    }
    let mut out = Vec::new();
    frame::write_headers(stream, end_stream, &block, DEFAULT_MAX_FRAME_SIZE, &mut out);
    out
}

#[test]
fn before_the_servers_settings_one_stream_then_as_many_as_it_allows() {
    let mut conn = Connection::new(Config::default());
    assert!(conn.output().starts_with(PREFACE));
    assert_eq!(get(&mut conn, "GET"), 1);
    assert_eq!(conn.can_send(), Err(Unsendable::AtLimit));
    let mut settings = Vec::new();
    frame::write_settings(&[(setting::MAX_CONCURRENT_STREAMS, 3)], &mut settings);
    assert!(feed(&mut conn, &settings).0.is_ok());
    assert_eq!((get(&mut conn, "GET"), get(&mut conn, "GET")), (3, 5));
    assert_eq!(conn.can_send(), Err(Unsendable::AtLimit));
    // A stream that ends makes room.
    assert_eq!(
        feed(&mut conn, &headers(3, &[(":status", "204")], true)).1,
        vec![Seen::Response(3, 204, true)]
    );
    assert_eq!(conn.can_send(), Ok(()));
}

#[test]
fn a_goaway_refuses_the_streams_above_its_last_and_no_new_one_opens() {
    let mut conn = open(&[]);
    let streams: Vec<u32> = (0..3).map(|_| get(&mut conn, "POST")).collect();
    assert_eq!(streams, vec![1, 3, 5]);
    let mut goaway = Vec::new();
    frame::write_goaway(1, Reason::NO_ERROR, b"", &mut goaway);
    let (result, seen) = feed(&mut conn, &goaway);
    assert!(result.is_ok());
    assert_eq!(
        seen,
        vec![
            Seen::Reset(3, Reason::REFUSED_STREAM),
            Seen::Reset(5, Reason::REFUSED_STREAM),
            Seen::GoAway(1),
        ]
    );
    assert_eq!(conn.can_send(), Err(Unsendable::Closing));
    // Stream 1 is still answered.
    let (_, seen) = feed(
        &mut conn,
        &headers(1, &[(":status", "200"), ("content-length", "0")], true),
    );
    assert_eq!(seen, vec![Seen::Response(1, 200, true)]);
    assert!(conn.is_idle());
}

#[test]
fn interim_responses_come_apart_from_the_final_one() {
    let mut conn = open(&[]);
    let stream = get(&mut conn, "GET");
    let mut bytes = headers(stream, &[(":status", "103"), ("link", "</a.css>")], false);
    bytes.extend(headers(stream, &[(":status", "200")], false));
    frame::write_data(stream, false, b"abc", &mut bytes);
    bytes.extend(headers(stream, &[("grpc-status", "0")], true));
    let (result, seen) = feed(&mut conn, &bytes);
    assert!(result.is_ok());
    assert_eq!(
        seen,
        vec![
            Seen::Informational(1, 103),
            Seen::Response(1, 200, false),
            Seen::Data(1, 3, false),
            Seen::Trailers(1),
        ]
    );
    assert!(conn.is_idle());
}

#[test]
fn malformed_responses_reset_their_stream_and_the_connection_goes_on() {
    let cases: &[(&[(&str, &str)], bool)] = &[
        (&[(":status", "101")], true),
        (&[("content-type", "text/plain")], true),
        (&[(":status", "200"), (":path", "/")], true),
        (&[(":status", "2000")], true),
        (&[(":status", "200"), ("Upper", "1")], true),
        (&[(":status", "200"), ("connection", "close")], true),
        (&[(":status", "200"), ("content-length", "5")], true),
        (&[(":status", "200"), ("content-length", "x")], false),
        // An interim response that ends the stream.
        (&[(":status", "100")], true),
    ];
    let mut conn = open(&[]);
    for (i, (fields, end)) in cases.iter().enumerate() {
        let stream = get(&mut conn, "GET");
        let (result, seen) = feed(&mut conn, &headers(stream, fields, *end));
        assert!(result.is_ok(), "case {i}: {result:?}");
        assert!(
            seen.contains(&Seen::Reset(stream, Reason::PROTOCOL_ERROR)),
            "case {i}: {seen:?}"
        );
    }
    // A HEAD's answer may say a length and carry no body; so may a 304.
    let stream = get(&mut conn, "HEAD");
    let (_, seen) = feed(
        &mut conn,
        &headers(stream, &[(":status", "200"), ("content-length", "5")], true),
    );
    assert_eq!(seen, vec![Seen::Response(stream, 200, true)]);
    let stream = get(&mut conn, "GET");
    let (_, seen) = feed(
        &mut conn,
        &headers(stream, &[(":status", "304"), ("content-length", "5")], true),
    );
    assert_eq!(seen, vec![Seen::Response(stream, 304, true)]);
    // DATA before the head, and more DATA than content-length said.
    let stream = get(&mut conn, "GET");
    let mut data = Vec::new();
    frame::write_data(stream, true, b"x", &mut data);
    assert_eq!(
        feed(&mut conn, &data).1,
        vec![Seen::Reset(stream, Reason::PROTOCOL_ERROR)]
    );
    let stream = get(&mut conn, "GET");
    let mut bytes = headers(
        stream,
        &[(":status", "200"), ("content-length", "1")],
        false,
    );
    frame::write_data(stream, true, b"xy", &mut bytes);
    let (_, seen) = feed(&mut conn, &bytes);
    assert_eq!(
        seen,
        vec![
            Seen::Response(stream, 200, false),
            Seen::Reset(stream, Reason::PROTOCOL_ERROR)
        ]
    );
}

#[test]
fn a_server_using_streams_it_cannot_ends_the_connection() {
    let cases: &[(&str, fn() -> Vec<u8>)] = &[
        ("HEADERS on an even stream", || {
            headers(2, &[(":status", "200")], true)
        }),
        ("HEADERS on a stream never opened", || {
            headers(9, &[(":status", "200")], true)
        }),
        ("a PUSH_PROMISE", || {
            let mut out = vec![0, 0, 4, kind::PUSH_PROMISE, 0x4, 0, 0, 0, 1];
            out.extend_from_slice(&[0, 0, 0, 2]);
            out
        }),
        ("DATA on a stream never opened", || {
            let mut out = Vec::new();
            frame::write_data(7, true, b"x", &mut out);
            out
        }),
    ];
    for (what, bytes) in cases {
        let mut conn = open(&[]);
        get(&mut conn, "GET");
        let (result, _) = feed(&mut conn, &bytes());
        assert_eq!(
            result.map_err(|e| e.reason),
            Err(Reason::PROTOCOL_ERROR),
            "{what}"
        );
    }
}

#[test]
fn a_connect_goes_with_its_authority_alone_and_one_without_is_not_sent() {
    let mut conn = open(&[]);
    let (head, ()) = Request::connect("db.internal:5432")
        .body(())
        .unwrap_or_default()
        .into_parts();
    assert_eq!(conn.send_request(&head, false), Ok(1));
    let (mut head, ()) = Request::connect("/")
        .body(())
        .unwrap_or_default()
        .into_parts();
    head.uri = http::Uri::from_static("/");
    assert!(matches!(
        conn.send_request(&head, false),
        Err(Unsendable::Malformed(_))
    ));
    // The one not sent took no stream id.
    assert_eq!(get(&mut conn, "GET"), 3);
}

#[test]
fn data_on_an_answer_that_has_no_content_resets_its_stream() {
    for (method, status) in [("HEAD", "200"), ("GET", "204"), ("GET", "304")] {
        let mut conn = open(&[]);
        let stream = get(&mut conn, method);
        let mut bytes = headers(
            stream,
            &[(":status", status), ("content-length", "3")],
            false,
        );
        frame::write_data(stream, true, b"abc", &mut bytes);
        let (result, seen) = feed(&mut conn, &bytes);
        assert!(result.is_ok(), "{method} {status}");
        let code: u16 = status.parse().unwrap();
        assert_eq!(
            seen,
            vec![
                Seen::Response(stream, code, false),
                Seen::Reset(stream, Reason::PROTOCOL_ERROR)
            ],
            "{method} {status}"
        );
        // Ended by an empty DATA frame, it is whole.
        let stream = get(&mut conn, method);
        let mut bytes = headers(stream, &[(":status", status)], false);
        frame::write_data(stream, true, b"", &mut bytes);
        assert_eq!(
            feed(&mut conn, &bytes).1,
            vec![
                Seen::Response(stream, code, false),
                Seen::Data(stream, 0, true)
            ]
        );
    }
}

#[test]
fn a_server_that_takes_no_streams_is_a_connection_to_leave() {
    let conn = open(&[(setting::MAX_CONCURRENT_STREAMS, 0)]);
    assert_eq!(conn.can_send(), Err(Unsendable::Closing));
}

#[test]
fn a_response_whose_content_length_fields_agree_comes_with_one() {
    let mut conn = open(&[]);
    let stream = get(&mut conn, "GET");
    let fields = [
        (":status", "200"),
        ("content-length", "2"),
        ("content-length", "2"),
    ];
    let bytes = headers(stream, &fields, false);
    let mut seen = Vec::new();
    let used = conn.recv(&bytes, &mut |event| {
        if let Event::Response { head, length, .. } = event {
            let fields: Vec<_> = head
                .headers
                .get_all("content-length")
                .iter()
                .cloned()
                .collect();
            seen.push((fields, length));
        }
    });
    assert_eq!(used, Ok(bytes.len()));
    assert_eq!(seen, [(vec![http::HeaderValue::from(2)], Some(2))]);
}
