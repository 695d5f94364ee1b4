//! Frames written here and read back, and what a broken or hostile peer sends:
//! each refused with the error code and scope RFC 9113 gives it.

#![allow(clippy::unwrap_used)]

use graylane_http2::frame::{
    self, DEFAULT_MAX_FRAME_SIZE, Error, Frame, HEAD_LEN, Head, Reason, Settings, kind, setting,
};

/// Every frame in `bytes`, read as a connection reads them.
fn frames(bytes: &[u8]) -> Vec<Result<Frame<'_>, Error>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let head = Head::parse(rest[..HEAD_LEN].try_into().unwrap(), 1 << 20).unwrap();
        let payload = &rest[HEAD_LEN..HEAD_LEN + head.len];
        out.push(Frame::parse(head, payload));
        rest = &rest[HEAD_LEN + head.len..];
    }
    out
}

fn one(bytes: &[u8]) -> Result<Frame<'_>, Error> {
    let mut all = frames(bytes);
    assert_eq!(all.len(), 1);
    all.remove(0)
}

/// A frame from its header fields and payload.
fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut bytes = vec![len[1], len[2], len[3], kind, flags];
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

#[test]
fn every_frame_written_reads_back_as_it_went() {
    let mut out = Vec::new();
    frame::write_data(1, true, b"hello", &mut out);
    frame::write_headers(3, false, b"block", DEFAULT_MAX_FRAME_SIZE, &mut out);
    frame::write_settings(&[(setting::INITIAL_WINDOW_SIZE, 1 << 20)], &mut out);
    frame::write_settings_ack(&mut out);
    frame::write_ping(true, *b"12345678", &mut out);
    frame::write_goaway(7, Reason::ENHANCE_YOUR_CALM, b"too many resets", &mut out);
    frame::write_rst_stream(5, Reason::CANCEL, &mut out);
    frame::write_window_update(0, 65_535, &mut out);
    let read: Vec<Frame<'_>> = frames(&out).into_iter().map(Result::unwrap).collect();
    assert_eq!(
        read,
        vec![
            Frame::Data {
                stream: 1,
                end_stream: true,
                data: b"hello",
                flow: 5
            },
            Frame::Headers {
                stream: 3,
                end_stream: false,
                end_headers: true,
                fragment: b"block",
                self_dependent: false,
            },
            Frame::Settings {
                ack: false,
                payload: &[0, 4, 0, 0x10, 0, 0]
            },
            Frame::Settings {
                ack: true,
                payload: b""
            },
            Frame::Ping {
                ack: true,
                data: *b"12345678"
            },
            Frame::GoAway {
                last_stream: 7,
                reason: Reason::ENHANCE_YOUR_CALM,
                debug: b"too many resets"
            },
            Frame::RstStream {
                stream: 5,
                reason: Reason::CANCEL
            },
            Frame::WindowUpdate {
                stream: 0,
                increment: 65_535
            },
        ]
    );
}

#[test]
fn a_large_header_block_goes_as_headers_then_continuations_and_joins_back() {
    let block: Vec<u8> = (0..40_000u32).map(|i| i.to_le_bytes()[0]).collect();
    let mut out = Vec::new();
    frame::write_headers(9, true, &block, DEFAULT_MAX_FRAME_SIZE, &mut out);
    let read: Vec<Frame<'_>> = frames(&out).into_iter().map(Result::unwrap).collect();
    assert_eq!(read.len(), 3);
    let mut joined = Vec::new();
    for (i, f) in read.iter().enumerate() {
        match f {
            Frame::Headers {
                stream: 9,
                end_stream: true,
                end_headers,
                fragment,
                ..
            } => {
                assert_eq!((i, *end_headers, fragment.len()), (0, false, 16_384));
                joined.extend_from_slice(fragment);
            }
            Frame::Continuation {
                stream: 9,
                end_headers,
                fragment,
            } => {
                assert_eq!(*end_headers, i == 2);
                joined.extend_from_slice(fragment);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(joined, block);
}

#[test]
fn padding_and_priority_are_removed_and_padding_counts_against_the_window() {
    // PADDED: pad length 3, "data", 3 bytes of padding.
    let data = raw(kind::DATA, 0x8, 1, b"\x03data\0\0\0");
    assert_eq!(
        one(&data),
        Ok(Frame::Data {
            stream: 1,
            end_stream: false,
            data: b"data",
            flow: 8
        })
    );
    // PADDED | PRIORITY | END_HEADERS: pad length 1, dependency on stream 1, weight.
    let headers = raw(
        kind::HEADERS,
        0x8 | 0x20 | 0x4,
        3,
        b"\x01\0\0\0\x01\x10block\0",
    );
    assert_eq!(
        one(&headers),
        Ok(Frame::Headers {
            stream: 3,
            end_stream: false,
            end_headers: true,
            fragment: b"block",
            self_dependent: false,
        })
    );
    // The reserved bit of the stream id is ignored (§4.1).
    assert!(matches!(
        one(&raw(kind::RST_STREAM, 0, 0x8000_0005, &[0, 0, 0, 8])),
        Ok(Frame::RstStream { stream: 5, .. })
    ));
    // An unknown type is read and ignored (§5.5).
    assert_eq!(one(&raw(0xfa, 0xff, 1, b"anything")), Ok(Frame::Unknown));
}

fn refused(bytes: &[u8]) -> (Reason, Option<u32>) {
    let e = one(bytes).unwrap_err();
    assert!(!e.to_string().is_empty());
    (e.reason, e.stream)
}

#[test]
fn malformed_frames_get_the_error_code_and_scope_the_rfc_gives() {
    let connection = None;
    let cases: Vec<(Vec<u8>, (Reason, Option<u32>))> = vec![
        (
            raw(kind::DATA, 0, 0, b"x"),
            (Reason::PROTOCOL_ERROR, connection),
        ),
        (
            raw(kind::DATA, 0x8, 1, b"\x05abc"),
            (Reason::PROTOCOL_ERROR, connection),
        ),
        (
            raw(kind::DATA, 0x8, 1, b""),
            (Reason::FRAME_SIZE_ERROR, connection),
        ),
        (
            raw(kind::HEADERS, 0x4, 0, b"x"),
            (Reason::PROTOCOL_ERROR, connection),
        ),
        (
            raw(kind::HEADERS, 0x20, 3, b"\0\0"),
            (Reason::FRAME_SIZE_ERROR, connection),
        ),
        (
            raw(kind::PRIORITY, 0, 3, b"\0\0\0\x01"),
            (Reason::FRAME_SIZE_ERROR, Some(3)),
        ),
        (
            raw(kind::PRIORITY, 0, 3, b"\0\0\0\x03\x10"),
            (Reason::PROTOCOL_ERROR, Some(3)),
        ),
        (
            raw(kind::RST_STREAM, 0, 0, &[0, 0, 0, 8]),
            (Reason::PROTOCOL_ERROR, connection),
        ),
        (
            raw(kind::RST_STREAM, 0, 1, &[0, 0, 8]),
            (Reason::FRAME_SIZE_ERROR, connection),
        ),
        (
            raw(kind::SETTINGS, 0, 1, b""),
            (Reason::PROTOCOL_ERROR, connection),
        ),
        (
            raw(kind::SETTINGS, 0x1, 0, &[0, 4, 0, 0, 0, 0]),
            (Reason::FRAME_SIZE_ERROR, connection),
        ),
        (
            raw(kind::SETTINGS, 0, 0, &[0, 4, 0, 0, 0]),
            (Reason::FRAME_SIZE_ERROR, connection),
        ),
        (
            raw(kind::PUSH_PROMISE, 0x4, 0, b"\0\0\0\x02"),
            (Reason::PROTOCOL_ERROR, connection),
        ),
        (
            raw(kind::PING, 0, 0, b"1234567"),
            (Reason::FRAME_SIZE_ERROR, connection),
        ),
        (
            raw(kind::PING, 0, 1, b"12345678"),
            (Reason::PROTOCOL_ERROR, connection),
        ),
        (
            raw(kind::GOAWAY, 0, 0, b"1234567"),
            (Reason::FRAME_SIZE_ERROR, connection),
        ),
        (
            raw(kind::GOAWAY, 0, 1, b"12345678"),
            (Reason::PROTOCOL_ERROR, connection),
        ),
        (
            raw(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 0, 0]),
            (Reason::PROTOCOL_ERROR, connection),
        ),
        (
            raw(kind::WINDOW_UPDATE, 0, 7, &[0x80, 0, 0, 0]),
            (Reason::PROTOCOL_ERROR, Some(7)),
        ),
        (
            raw(kind::WINDOW_UPDATE, 0, 7, &[0, 0, 1]),
            (Reason::FRAME_SIZE_ERROR, connection),
        ),
        (
            raw(kind::CONTINUATION, 0x4, 0, b"x"),
            (Reason::PROTOCOL_ERROR, connection),
        ),
    ];
    for (i, (bytes, want)) in cases.iter().enumerate() {
        assert_eq!(refused(bytes), *want, "case {i}");
    }
}

#[test]
fn a_frame_above_the_max_frame_size_is_refused_from_its_header() {
    let mut head = [0u8; HEAD_LEN];
    head[..3].copy_from_slice(&[0, 0x40, 0x01]); // 16,385
    let e = Head::parse(head, DEFAULT_MAX_FRAME_SIZE).unwrap_err();
    assert_eq!((e.reason, e.stream), (Reason::FRAME_SIZE_ERROR, None));
    head[..3].copy_from_slice(&[0, 0x40, 0x00]);
    assert_eq!(
        Head::parse(head, DEFAULT_MAX_FRAME_SIZE).unwrap().len,
        16_384
    );
}

fn entries(list: &[(u16, u32)]) -> Vec<u8> {
    list.iter()
        .flat_map(|(id, v)| id.to_be_bytes().into_iter().chain(v.to_be_bytes()))
        .collect()
}

#[test]
fn settings_apply_in_order_unknown_ones_are_ignored_and_a_bad_one_applies_nothing() {
    let mut settings = Settings::default();
    settings
        .apply(&entries(&[
            (setting::INITIAL_WINDOW_SIZE, 1),
            (setting::INITIAL_WINDOW_SIZE, 1 << 20),
            (setting::ENABLE_PUSH, 0),
            (setting::MAX_CONCURRENT_STREAMS, 100),
            (setting::MAX_FRAME_SIZE, 1 << 20),
            (setting::MAX_HEADER_LIST_SIZE, 16_384),
            (setting::ENABLE_CONNECT_PROTOCOL, 1),
            (0xabcd, 7),
        ]))
        .unwrap();
    let want = Settings {
        header_table_size: 4096,
        enable_push: false,
        max_concurrent_streams: Some(100),
        initial_window_size: 1 << 20,
        max_frame_size: 1 << 20,
        max_header_list_size: Some(16_384),
        enable_connect_protocol: true,
    };
    assert_eq!(settings, want);
    for (bad, reason) in [
        ((setting::ENABLE_PUSH, 2), Reason::PROTOCOL_ERROR),
        (
            (setting::INITIAL_WINDOW_SIZE, 1 << 31),
            Reason::FLOW_CONTROL_ERROR,
        ),
        ((setting::MAX_FRAME_SIZE, 16_383), Reason::PROTOCOL_ERROR),
        ((setting::MAX_FRAME_SIZE, 1 << 24), Reason::PROTOCOL_ERROR),
        (
            (setting::ENABLE_CONNECT_PROTOCOL, 2),
            Reason::PROTOCOL_ERROR,
        ),
    ] {
        let e = settings
            .apply(&entries(&[(setting::HEADER_TABLE_SIZE, 0), bad]))
            .unwrap_err();
        assert_eq!((e.reason, e.stream), (reason, None), "{bad:?}");
        assert_eq!(settings, want, "nothing of {bad:?}'s frame applied");
    }
}

/// Random bytes never panic the reader: each frame parses or is refused.
#[test]
fn random_frames_parse_or_are_refused_without_panicking() {
    let mut rng = fastrand::Rng::with_seed(9113);
    for _ in 0..50_000 {
        let len = rng.usize(0..24);
        let payload: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        let bytes = raw(rng.u8(0..12), rng.u8(..), rng.u32(..), &payload);
        if let Ok(Frame::Settings { payload, .. }) = one(&bytes) {
            let _ = Settings::default().apply(payload);
        }
    }
}

/// A HEADERS frame whose priority names its own stream is read (its block must still
/// be decoded) and marked: the stream error is the connection's to raise.
#[test]
fn a_headers_frame_depending_on_itself_is_read_and_marked() {
    let bytes = raw(kind::HEADERS, 0x20 | 0x4, 3, b"\0\0\0\x03\x10block");
    assert!(matches!(
        one(&bytes),
        Ok(Frame::Headers {
            fragment: b"block",
            self_dependent: true,
            ..
        })
    ));
}
