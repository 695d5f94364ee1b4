//! What a broken or hostile client sends, frame by frame, and what this end answers:
//! the stream reset or the connection ended, with the code RFC 9113 gives.

use crate::frame::{self, DEFAULT_MAX_FRAME_SIZE, Frame, HEAD_LEN, Head, Reason, kind};
use crate::hpack::encode_field;

use super::*;
use crate::conn::GLITCHES_BEFORE_RATIO;
use crate::frame::setting;
use http::HeaderMap;

/// Events as the tests compare them.
#[derive(Debug, PartialEq)]
enum Seen {
    Request(u32, String, bool),
    TooLarge(u32),
    Data(u32, Vec<u8>, bool),
    Trailers(u32, usize),
    Malformed(u32),
    Reset(u32, Reason),
    Other,
}

/// A connection that got the preface and an empty SETTINGS, its output dropped.
pub(crate) fn open(config: Config) -> Connection {
    let mut conn = Connection::new(config);
    let mut hello = PREFACE.to_vec();
    frame::write_settings(&[], &mut hello);
    assert_eq!(conn.recv(&hello, &mut |_| ()), Ok(hello.len()));
    let n = conn.output().len();
    conn.advance(n);
    conn
}

fn feed(conn: &mut Connection, bytes: &[u8]) -> (Result<usize, ConnectionError>, Vec<Seen>) {
    let mut seen = Vec::new();
    let result = conn.recv(bytes, &mut |e| {
        seen.push(match e {
            Event::Request {
                stream,
                head,
                end_stream,
                ..
            } => Seen::Request(stream, head.uri.to_string(), end_stream),
            Event::TooLarge { stream } => Seen::TooLarge(stream),
            Event::Data {
                stream,
                data,
                end_stream,
            } => Seen::Data(stream, data.to_vec(), end_stream),
            Event::Trailers { stream, trailers } => Seen::Trailers(stream, trailers.len()),
            Event::Malformed { stream, .. } => Seen::Malformed(stream),
            Event::Reset { stream, reason } => Seen::Reset(stream, reason),
            _ => Seen::Other,
        });
    });
    (result, seen)
}

/// The frames this end wrote, as (type, stream, error code for RST_STREAM/GOAWAY).
fn written(conn: &mut Connection) -> Vec<(u8, u32, Option<Reason>)> {
    let out = conn.output().to_vec();
    conn.advance(out.len());
    let mut frames = Vec::new();
    let mut rest = &out[..];
    while !rest.is_empty() {
        let head = Head::parse(
            rest[..HEAD_LEN].try_into().unwrap_or([0; HEAD_LEN]),
            1 << 24,
        )
        .unwrap_or(Head {
            len: 0,
            kind: 0xff,
            flags: 0,
            stream: 0,
        });
        let payload = &rest[HEAD_LEN..HEAD_LEN + head.len];
        let reason = match Frame::parse(head, payload) {
            Ok(Frame::RstStream { reason, .. } | Frame::GoAway { reason, .. }) => Some(reason),
            _ => None,
        };
        frames.push((head.kind, head.stream, reason));
        rest = &rest[HEAD_LEN + head.len..];
    }
    frames
}

fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        encode_field(name.as_bytes(), value.as_bytes(), false, &mut block);
    }
    block
}

const GET: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":authority", "orders"),
    (":path", "/a"),
];

fn headers(stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
    let mut out = Vec::new();
    frame::write_headers(
        stream,
        end_stream,
        &block(fields),
        DEFAULT_MAX_FRAME_SIZE,
        &mut out,
    );
    out
}

fn data(stream: u32, bytes: &[u8], end_stream: bool) -> Vec<u8> {
    let mut out = Vec::new();
    frame::write_data(stream, end_stream, bytes, &mut out);
    out
}

fn goaway(conn: &mut Connection) -> Option<Reason> {
    written(conn)
        .into_iter()
        .find(|(k, _, _)| *k == kind::GOAWAY)
        .and_then(|(_, _, r)| r)
}

#[test]
fn a_request_its_body_and_its_trailers_come_out_in_order() {
    let mut conn = open(Config::default());
    let mut bytes = headers(
        1,
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "o"),
            (":path", "/p?q=1"),
            ("content-length", "5"),
        ],
        false,
    );
    bytes.extend(data(1, b"hel", false));
    bytes.extend(data(1, b"lo", false));
    bytes.extend(headers(1, &[("grpc-status", "0")], true));
    // Half a frame more: not read until the rest comes.
    let partial = headers(3, GET, true);
    bytes.extend_from_slice(&partial[..5]);
    let (used, seen) = feed(&mut conn, &bytes);
    assert_eq!(used, Ok(bytes.len() - 5));
    assert_eq!(
        seen,
        vec![
            Seen::Request(1, "http://o/p?q=1".into(), false),
            Seen::Data(1, b"hel".to_vec(), false),
            Seen::Data(1, b"lo".to_vec(), false),
            Seen::Trailers(1, 1),
        ]
    );
    let (used, seen) = feed(&mut conn, &partial);
    assert_eq!(used, Ok(partial.len()));
    assert_eq!(seen, vec![Seen::Request(3, "http://orders/a".into(), true)]);
}

#[test]
fn malformed_requests_are_reset_and_the_connection_goes_on() {
    let cases: &[&[(&str, &str)]] = &[
        // Uppercase, connection-specific, te other than trailers.
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            ("X-Upper", "1"),
        ],
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            ("connection", "close"),
        ],
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            ("transfer-encoding", "chunked"),
        ],
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            ("te", "gzip"),
        ],
        // Pseudo-header fields missing, doubled, unknown, late, empty.
        &[(":method", "GET"), (":scheme", "http")],
        &[(":scheme", "http"), (":path", "/")],
        &[
            (":method", "GET"),
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
        ],
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":status", "200"),
        ],
        &[
            (":method", "GET"),
            ("accept", "*/*"),
            (":scheme", "http"),
            (":path", "/"),
        ],
        &[(":method", "GET"), (":scheme", "http"), (":path", "")],
        // CONNECT with a path, or without an authority; :protocol not enabled.
        &[
            (":method", "CONNECT"),
            (":authority", "a:443"),
            (":path", "/"),
        ],
        &[(":method", "CONNECT")],
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":protocol", "websocket"),
        ],
        // content-length: two values that differ, not a number, and one with no body.
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/"),
            ("content-length", "1"),
            ("content-length", "2"),
        ],
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/"),
            ("content-length", "-1"),
        ],
    ];
    let mut conn = open(Config::default());
    for (i, fields) in cases.iter().enumerate() {
        let stream = 2 * u32::try_from(i).unwrap_or(0) + 1;
        let (used, seen) = feed(&mut conn, &headers(stream, fields, true));
        assert!(used.is_ok(), "case {i}: {used:?}");
        assert_eq!(seen, vec![Seen::Malformed(stream)], "case {i}");
        assert_eq!(
            written(&mut conn),
            vec![(kind::RST_STREAM, stream, Some(Reason::PROTOCOL_ERROR))],
            "case {i}"
        );
    }
    // A CONNECT with its authority alone is a tunnel, not malformed.
    let (_, seen) = feed(
        &mut conn,
        &headers(
            101,
            &[(":method", "CONNECT"), (":authority", "a:443")],
            false,
        ),
    );
    assert_eq!(seen, vec![Seen::Request(101, "a:443".into(), false)]);
}

#[test]
fn a_body_that_disagrees_with_its_content_length_resets_the_stream() {
    let mut conn = open(Config::default());
    let post = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/"),
        ("content-length", "3"),
    ];
    let mut bytes = headers(1, &post, false);
    bytes.extend(data(1, b"four", false));
    bytes.extend(headers(3, &post, false));
    bytes.extend(data(3, b"ab", true));
    let (_, seen) = feed(&mut conn, &bytes);
    assert_eq!(
        seen,
        vec![
            Seen::Request(1, "/".into(), false),
            Seen::Reset(1, Reason::PROTOCOL_ERROR),
            Seen::Request(3, "/".into(), false),
            Seen::Reset(3, Reason::PROTOCOL_ERROR),
        ]
    );
}

#[test]
fn streams_over_the_limit_are_refused_and_finished_ones_make_room() {
    let mut conn = open(Config {
        max_concurrent_streams: 2,
        ..Config::default()
    });
    let mut bytes = headers(1, GET, true);
    bytes.extend(headers(3, GET, true));
    bytes.extend(headers(5, GET, true));
    let (_, seen) = feed(&mut conn, &bytes);
    assert_eq!(seen.len(), 2);
    assert_eq!(
        written(&mut conn),
        vec![(kind::RST_STREAM, 5, Some(Reason::REFUSED_STREAM))]
    );
    let (parts, ()) = http::Response::new(()).into_parts();
    conn.send_response(1, &parts, true).unwrap_or(());
    let (_, seen) = feed(&mut conn, &headers(7, GET, true));
    assert_eq!(seen, vec![Seen::Request(7, "http://orders/a".into(), true)]);
}

#[test]
fn a_header_list_over_the_limit_is_handed_on_for_a_431_and_its_body_dropped() {
    let mut conn = open(Config {
        max_header_list_size: 1024,
        ..Config::default()
    });
    let big = "x".repeat(1000);
    let fields = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/"),
        ("x-big", big.as_str()),
    ];
    let mut bytes = headers(1, &fields, false);
    for last in [false, false, false, true] {
        bytes.extend(data(1, &[0; 16_000], last));
    }
    let (used, seen) = feed(&mut conn, &bytes);
    assert_eq!(used, Ok(bytes.len()));
    assert_eq!(seen, vec![Seen::TooLarge(1)]);
    // The dropped body's window was given back.
    let updates = written(&mut conn);
    assert!(
        updates.contains(&(kind::WINDOW_UPDATE, 0, None)),
        "{updates:?}"
    );
}

#[test]
fn connection_errors_end_it_with_a_goaway_naming_the_fault() {
    type Case = (&'static str, fn() -> Vec<u8>, Reason);
    let cases: &[Case] = &[
        (
            "even stream",
            || headers(2, GET, true),
            Reason::PROTOCOL_ERROR,
        ),
        (
            "DATA on an idle stream",
            || data(9, b"x", false),
            Reason::PROTOCOL_ERROR,
        ),
        (
            "push promise",
            || {
                let mut out = Vec::new();
                let payload = [0, 0, 0, 2];
                let len = payload.len().to_be_bytes();
                out.extend_from_slice(&[
                    len[7 - 2],
                    len[7 - 1],
                    len[7],
                    kind::PUSH_PROMISE,
                    0x4,
                    0,
                    0,
                    0,
                    1,
                ]);
                out.extend_from_slice(&payload);
                out
            },
            Reason::PROTOCOL_ERROR,
        ),
        (
            "a frame inside a header block",
            || {
                let mut out = Vec::new();
                frame::write_headers(1, true, &block(GET), DEFAULT_MAX_FRAME_SIZE, &mut out);
                // END_HEADERS cleared: a CONTINUATION must follow, a PING comes.
                out[4] &= !0x4;
                frame::write_ping(false, [0; 8], &mut out);
                out
            },
            Reason::PROTOCOL_ERROR,
        ),
        (
            "a block that does not decode",
            || {
                let mut out = Vec::new();
                frame::write_headers(1, true, &[0xbe], DEFAULT_MAX_FRAME_SIZE, &mut out);
                out
            },
            Reason::COMPRESSION_ERROR,
        ),
        (
            "DATA past the connection window",
            || {
                let mut out = headers(
                    1,
                    &[(":method", "POST"), (":scheme", "http"), (":path", "/")],
                    false,
                );
                for _ in 0..5 {
                    out.extend(data(1, &[0; 16_000], false));
                }
                out
            },
            Reason::FLOW_CONTROL_ERROR,
        ),
        (
            "a window past 2^31-1",
            || {
                let mut out = Vec::new();
                frame::write_window_update(0, frame::MAX_WINDOW, &mut out);
                out
            },
            Reason::FLOW_CONTROL_ERROR,
        ),
    ];
    for (what, bytes, reason) in cases {
        let mut conn = open(Config::default());
        let (result, _) = feed(&mut conn, &bytes());
        assert_eq!(result.map_err(|e| e.reason), Err(*reason), "{what}");
        assert_eq!(goaway(&mut conn), Some(*reason), "{what}");
        // Nothing more is read.
        let (after, seen) = feed(&mut conn, &headers(101, GET, true));
        assert!(after.is_ok() && seen.is_empty(), "{what}");
    }
}

#[test]
fn the_preface_and_a_first_settings_are_required() {
    let mut conn = Connection::new(Config::default());
    let (result, _) = feed(&mut conn, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(result.map_err(|e| e.reason), Err(Reason::PROTOCOL_ERROR));
    let mut conn = Connection::new(Config::default());
    // The preface in pieces is waited for.
    assert_eq!(feed(&mut conn, &PREFACE[..10]).0, Ok(0));
    let mut bytes = PREFACE.to_vec();
    frame::write_ping(false, [0; 8], &mut bytes);
    let (result, _) = feed(&mut conn, &bytes);
    assert_eq!(result.map_err(|e| e.reason), Err(Reason::PROTOCOL_ERROR));
}

/// CVE-2024-27316: CONTINUATIONs without END_HEADERS, forever.
#[test]
fn a_continuation_flood_ends_the_connection() {
    let mut conn = open(Config::default());
    let mut bytes = headers(1, GET, false);
    bytes[4] &= !0x4;
    let (result, _) = feed(&mut conn, &bytes);
    assert!(result.is_ok());
    let mut continuation = vec![0, 0x40, 0, kind::CONTINUATION, 0, 0, 0, 0, 1];
    continuation.extend_from_slice(&[0x40; 0x4000]);
    let mut ended = None;
    for _ in 0..64 {
        if let (Err(e), _) = feed(&mut conn, &continuation) {
            ended = Some(e.reason);
            break;
        }
    }
    assert_eq!(ended, Some(Reason::ENHANCE_YOUR_CALM));
}

/// CVE-2023-44487: open a stream, reset it, again and again.
#[test]
fn a_rapid_reset_flood_ends_the_connection_and_cancelled_calls_do_not() {
    let mut conn = open(Config::default());
    let mut ended = None;
    for i in 0..2_000u32 {
        let stream = 2 * i + 1;
        let mut bytes = headers(stream, GET, false);
        frame::write_rst_stream(stream, Reason::CANCEL, &mut bytes);
        if let (Err(e), _) = feed(&mut conn, &bytes) {
            ended = Some((i, e.reason));
            break;
        }
    }
    assert_eq!(
        ended,
        Some((
            u32::try_from(GLITCHES_BEFORE_RATIO - 1).unwrap(),
            Reason::ENHANCE_YOUR_CALM
        ))
    );
    // A client that lets half of its calls finish may cancel the others without end.
    let mut conn = open(Config::default());
    let (parts, ()) = http::Response::new(()).into_parts();
    for i in 0..3_000u32 {
        let stream = 2 * i + 1;
        let mut bytes = headers(stream, GET, i % 2 == 0);
        if i % 2 == 1 {
            frame::write_rst_stream(stream, Reason::CANCEL, &mut bytes);
        }
        assert!(feed(&mut conn, &bytes).0.is_ok(), "call {i}");
        if i % 2 == 0 {
            conn.send_response(stream, &parts, true).unwrap_or(());
        }
    }
}

#[test]
fn sends_wait_for_the_windows_and_a_settings_change_moves_them() {
    let mut conn = open(Config::default());
    feed(&mut conn, &headers(1, GET, true)).0.unwrap_or(0);
    let (parts, ()) = http::Response::new(()).into_parts();
    conn.send_response(1, &parts, false).unwrap_or(());
    let body = vec![7u8; 100_000];
    assert_eq!(conn.send_data(1, &body, true), Ok(65_535));
    assert_eq!(conn.send_data(1, &body[65_535..], true), Ok(0));
    // The client raises every stream's window by 10,000: that much more goes, but
    // the connection's window (still 0) holds it.
    let mut settings = Vec::new();
    frame::write_settings(&[(setting::INITIAL_WINDOW_SIZE, 75_535)], &mut settings);
    feed(&mut conn, &settings).0.unwrap_or(0);
    assert_eq!(conn.capacity(1), 0);
    let mut update = Vec::new();
    frame::write_window_update(0, 1 << 20, &mut update);
    feed(&mut conn, &update).0.unwrap_or(0);
    assert_eq!(conn.capacity(1), 10_000);
    // Frames no larger than the client's max frame size.
    written(&mut conn);
    assert_eq!(conn.send_data(1, &body[65_535..], true), Ok(10_000));
    let frames = written(&mut conn);
    assert_eq!(frames, vec![(kind::DATA, 1, None)]);
    // The stream's send direction ends only with the last byte.
    assert!(conn.send_trailers(1, &HeaderMap::new()).is_ok());
    assert_eq!(
        conn.send_data(1, b"late", true),
        Err(StreamGone { stream: 1 })
    );
}

#[test]
fn a_request_depending_on_itself_is_decoded_then_reset() {
    let mut conn = open(Config::default());
    // The block indexes a field: the next request refers to it, so it must have
    // been decoded although its stream was refused.
    let mut block = Vec::new();
    block.extend_from_slice(&[0x82, 0x86, 0x84, 0x41, 0x01, b'o']);
    let mut bytes = vec![
        0,
        0,
        11,
        kind::HEADERS,
        0x20 | 0x4 | 0x1,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        1,
        16,
    ];
    bytes.extend_from_slice(&block);
    let mut next = Vec::new();
    frame::write_headers(
        3,
        true,
        &[0x82, 0x86, 0x84, 0xbe],
        DEFAULT_MAX_FRAME_SIZE,
        &mut next,
    );
    bytes.extend(next);
    let (used, seen) = feed(&mut conn, &bytes);
    assert!(used.is_ok(), "{used:?}");
    assert_eq!(
        seen,
        vec![
            Seen::Malformed(1),
            Seen::Request(3, "http://o/".into(), true),
        ]
    );
}

/// A gRPC client done with a server stream cancels it once its answer began: not a
/// glitch, however many (explore22's R1: the connection and every call on it were
/// cut after 1,000 such cancels).
#[test]
fn streams_cancelled_after_their_answer_began_are_not_glitches() {
    let mut conn = open(Config::default());
    let (parts, ()) = http::Response::new(()).into_parts();
    for i in 0..5_000u32 {
        let stream = 2 * i + 1;
        assert!(feed(&mut conn, &headers(stream, GET, true)).0.is_ok());
        conn.send_response(stream, &parts, false).unwrap_or(());
        assert_eq!(conn.send_data(stream, b"first message", false), Ok(13));
        let mut reset = Vec::new();
        frame::write_rst_stream(stream, Reason::CANCEL, &mut reset);
        let (result, seen) = feed(&mut conn, &reset);
        assert!(result.is_ok(), "cancel {i}: {result:?}");
        assert_eq!(seen, vec![Seen::Reset(stream, Reason::CANCEL)]);
        let n = conn.output().len();
        conn.advance(n);
    }
}
