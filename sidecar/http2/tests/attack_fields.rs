//! What odd clients send the server end (found by a probe of the first version, each
//! a defect fixed or a choice made since): RFC 9113's rules on fields, byte-by-byte
//! feeding, fuzzing, and the Huffman decoder against a naive one.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

// ---------------------------------------------------------------------------
// Request validation.
// ---------------------------------------------------------------------------

fn one_request(config: Config, fields: &[(&str, &str)]) -> Vec<Seen> {
    let mut conn = open(config);
    let (r, seen) = feed(&mut conn, &headers(1, fields, true));
    assert!(r.is_ok());
    seen
}

#[test]
fn protocol_pseudo_header_without_enable_connect_protocol() {
    // SETTINGS_ENABLE_CONNECT_PROTOCOL is 0 (Config::default): :protocol is not a
    // pseudo-header this server defined, so the request is malformed (RFC 8441 §3,
    // RFC 9113 §8.3).
    let seen = one_request(
        Config::default(),
        &[
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":authority", "o"),
            (":path", "/chat"),
        ],
    );
    assert!(matches!(seen[..], [Seen::Malformed(1, _)]), "{seen:?}");
}

#[test]
fn field_value_with_leading_or_trailing_whitespace() {
    // RFC 9113 §8.2.1: a field value MUST NOT start or end with SP/HTAB: malformed.
    for v in [" x", "x ", "\tx", "x\t"] {
        let mut f = GET.to_vec();
        f.push(("x-v", v));
        let seen = one_request(Config::default(), &f);
        assert!(
            matches!(seen[..], [Seen::Malformed(1, _)]),
            "{v:?}: {seen:?}"
        );
    }
}

#[test]
fn path_not_starting_with_slash() {
    // RFC 9113 §8.3.1: :path for http/https is origin-form ("/...") or "*".
    for p in ["abc", "@evil/x", "?q"]
    /* only "?q" gets through, as "/?q" */
    {
        let seen = one_request(
            Config::default(),
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "o"),
                (":path", p),
            ],
        );
        assert!(
            matches!(seen[..], [Seen::Malformed(1, _)]),
            "{p:?}: {seen:?}"
        );
    }
}

#[test]
fn authority_with_userinfo() {
    let seen = one_request(
        Config::default(),
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "user@o"),
            (":path", "/"),
        ],
    );
    assert!(matches!(seen[..], [Seen::Malformed(1, _)]), "{seen:?}");
}

#[test]
fn many_distinct_fields_with_a_large_header_list_limit_do_not_panic() {
    // http::HeaderMap panics past 32768 distinct names; a larger
    // max_header_list_size lets a client send that many.
    let config = Config {
        max_header_list_size: 4 << 20,
        ..Config::default()
    };
    let mut conn = open(config);
    let mut blk = block(GET);
    for i in 0..33_000u32 {
        let name = format!("x{i}");
        encode_field(name.as_bytes(), b"", false, &mut blk);
    }
    let mut bytes = Vec::new();
    frame::write_headers(1, true, &blk, DEFAULT_MAX_FRAME_SIZE, &mut bytes);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| feed(&mut conn, &bytes)));
    assert!(r.is_ok(), "recv panicked");
}

// ---------------------------------------------------------------------------
// Byte-by-byte equivalence and fuzz.
// ---------------------------------------------------------------------------

fn scenario() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(headers(1, POST, false));
    b.extend(data(1, b"hello", false));
    // padded DATA
    b.extend(raw(kind::DATA, 0x8, 1, &[3, b'a', b'b', 0, 0, 0]));
    // headers split in continuation
    let blk = block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/x"),
        ("x-a", "1"),
    ]);
    b.extend(raw(kind::HEADERS, 0, 3, &blk[..3]));
    b.extend(raw(kind::CONTINUATION, 0, 3, &blk[3..7]));
    b.extend(raw(kind::CONTINUATION, 0, 3, &[]));
    b.extend(raw(kind::CONTINUATION, 0x4, 3, &blk[7..]));
    b.extend(raw(0x42, 0xff, 0, b"unknown"));
    b.extend(raw(kind::PING, 0, 0, &[1; 8]));
    b.extend(headers(1, &[("grpc-status", "0")], true));
    b.extend(raw(kind::PRIORITY, 0, 9, &[0, 0, 0, 1, 7]));
    b.extend(headers(5, GET, true));
    b
}

#[test]
fn byte_by_byte_is_the_same_as_all_at_once() {
    let mut a = open(Config::default());
    let mut b = open(Config::default());
    let bytes = scenario();
    let (ra, sa) = feed(&mut a, &bytes);
    let (rb, sb) = feed_slowly(&mut b, &bytes);
    assert_eq!(ra, Ok(bytes.len()));
    assert_eq!(rb, Ok(bytes.len()));
    assert_eq!(sa, sb);
    assert_eq!(written(&mut a), written(&mut b));
    // also the preface itself byte by byte
    let mut c = Connection::new(Config::default());
    let mut all = PREFACE.to_vec();
    frame::write_settings(&[], &mut all);
    all.extend(bytes.clone());
    let (rc, sc) = feed_slowly(&mut c, &all);
    assert_eq!(rc, Ok(all.len()));
    assert_eq!(sc, sa);
}

#[test]
fn fuzz_random_frames_no_panic() {
    let mut rng = fastrand::Rng::with_seed(7);
    for _round in 0..3000 {
        let mut conn = open(Config {
            max_concurrent_streams: 4,
            initial_window_size: 100,
            max_header_list_size: 300,
            ..Config::default()
        });
        let mut bytes = Vec::new();
        for _ in 0..rng.usize(1..40) {
            let stream = rng.u32(0..8);
            match rng.u8(0..12) {
                0 => bytes.extend(headers(stream, GET, rng.bool())),
                1 => bytes.extend(headers(stream, POST, rng.bool())),
                2 => {
                    let n = rng.usize(0..200);
                    bytes.extend(data(stream, &vec![1; n], rng.bool()))
                }
                3 => bytes.extend(window_update(stream, rng.u32(0..=frame::MAX_WINDOW))),
                4 => {
                    let mut r = Vec::new();
                    frame::write_rst_stream(stream, Reason(rng.u32(0..14)), &mut r);
                    bytes.extend(r)
                }
                5 => {
                    let mut p = vec![0u8; rng.usize(0..40)];
                    rng.fill(&mut p);
                    bytes.extend(raw(rng.u8(0..11), rng.u8(..), stream, &p))
                }
                6 => {
                    let mut s = Vec::new();
                    frame::write_settings(
                        &[(setting::INITIAL_WINDOW_SIZE, rng.u32(0..=frame::MAX_WINDOW))],
                        &mut s,
                    );
                    bytes.extend(s)
                }
                7 => bytes.extend(headers(stream, &[("x-t", "1")], rng.bool())),
                8 => {
                    let mut p = vec![0u8; rng.usize(0..30)];
                    rng.fill(&mut p);
                    bytes.extend(raw(kind::HEADERS, rng.u8(..), stream, &p))
                }
                _ => {
                    let mut p = vec![0u8; rng.usize(0..30)];
                    rng.fill(&mut p);
                    bytes.extend(raw(kind::CONTINUATION, rng.u8(..), stream, &p))
                }
            }
        }
        let mut c2 = open(Config {
            max_concurrent_streams: 4,
            initial_window_size: 100,
            max_header_list_size: 300,
            ..Config::default()
        });
        let (ra, sa) = feed(&mut conn, &bytes);
        let (rb, sb) = feed_slowly(&mut c2, &bytes);
        assert_eq!(ra.is_ok(), rb.is_ok());
        assert_eq!(sa, sb);
        // driver actions
        let (parts, ()) = http::Response::new(()).into_parts();
        for s in 1..8 {
            let _ = conn.send_response(s, &parts, false);
            let _ = conn.send_data(s, b"abc", true);
            conn.release(s, 1);
        }
        if ra.is_ok() {
            // after responding to all, every stream whose request ended is gone
        }
    }
}

#[test]
fn fuzz_hpack_decoder_no_panic() {
    let mut rng = fastrand::Rng::with_seed(3);
    let mut dec = graylane_http2::hpack::Decoder::default();
    for _ in 0..200_000 {
        let mut b = vec![0u8; rng.usize(0..64)];
        rng.fill(&mut b);
        if rng.bool() {
            dec = graylane_http2::hpack::Decoder::default();
        }
        let _ = dec.decode(&b, |_| {});
    }
}

#[test]
fn huffman_decoder_matches_a_naive_one() {
    use graylane_http2::hpack::huffman;
    // Each symbol's code length: 8 copies take exactly `len` bytes.
    let mut table = Vec::new();
    for s in 0..256usize {
        let len = huffman::encoded_len(&[u8::try_from(s).unwrap(); 8]);
        let mut one = Vec::new();
        huffman::encode(&[u8::try_from(s).unwrap()], &mut one);
        let mut code: u64 = 0;
        for b in &one {
            code = code << 8 | u64::from(*b);
        }
        let code = code >> (one.len() * 8 - len);
        table.push((code, len, u16::try_from(s).unwrap()));
    }
    table.push(((1 << 30) - 1, 30, 256));
    let naive = |src: &[u8]| -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut code = 0u64;
        let mut len = 0usize;
        for byte in src {
            for i in (0..8).rev() {
                code = code << 1 | u64::from(byte >> i & 1);
                len += 1;
                if let Some(&(_, _, s)) = table.iter().find(|&&(c, l, _)| l == len && c == code) {
                    if s == 256 {
                        return None;
                    }
                    out.push(u8::try_from(s).unwrap());
                    code = 0;
                    len = 0;
                }
            }
        }
        if len >= 8 || code != (1 << len) - 1 {
            return None;
        }
        Some(out)
    };
    let check = |src: &[u8]| {
        let mut dst = Vec::new();
        let got = huffman::decode(src, &mut dst).ok().map(|()| dst);
        assert_eq!(got, naive(src), "{src:02x?}");
    };
    for a in 0..=255u8 {
        check(&[a]);
        for b in 0..=255u8 {
            check(&[a, b]);
        }
    }
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..200_000 {
        let mut b = vec![0u8; rng.usize(3..9)];
        rng.fill(&mut b);
        // bias towards ones, where the long codes are
        if rng.bool() {
            for x in &mut b {
                *x |= rng.u8(..);
            }
        }
        check(&b);
    }
}

#[test]
fn a_stream_error_frame_before_the_first_settings() {
    // RFC 9113 §3.4: the first frame must be SETTINGS, else PROTOCOL_ERROR.
    let mut conn = Connection::new(Config::default());
    let mut bytes = PREFACE.to_vec();
    bytes.extend(raw(kind::PRIORITY, 0, 1, &[0, 0, 0, 0]));
    let (r, _) = feed(&mut conn, &bytes);
    let out = written(&mut conn);
    assert_eq!(
        r.map_err(|e| e.reason),
        Err(Reason::PROTOCOL_ERROR),
        "{out:?}"
    );
}

#[test]
fn odd_requests_are_taken_or_refused_as_rfc_9113_says() {
    let request = |seen: &[Seen]| matches!(seen, [Seen::Request(1, _, true)]);
    let malformed = |seen: &[Seen]| matches!(seen, [Seen::Malformed(1, _)]);
    let cases: &[(&[(&str, &str)], fn(&[Seen]) -> bool)] = &[
        (
            &[(":method", "GET"), (":scheme", "https"), (":path", "abc")],
            malformed,
        ),
        // A host naming another authority than :authority: passed on (a SHOULD).
        (
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "a"),
                (":path", "/"),
                ("host", "b"),
            ],
            request,
        ),
        (
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "a"),
                (":path", "/"),
                ("host", "A"),
            ],
            request,
        ),
        (
            &[
                (":method", "OPTIONS"),
                (":scheme", "https"),
                (":authority", "a"),
                (":path", "*"),
            ],
            request,
        ),
        (
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "a"),
                (":path", "*"),
            ],
            malformed,
        ),
        (
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", ""),
                (":path", "/"),
            ],
            malformed,
        ),
        (&[(":method", "CONNECT"), (":authority", "a:443")], request),
        (&[(":method", "CONNECT"), (":authority", "a")], malformed),
        // Cookies in several fields (§8.2.3), and DEL in a value.
        (
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("cookie", "a=1"),
                ("cookie", "b=2"),
            ],
            request,
        ),
        (
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("x", "a\u{7f}b"),
            ],
            malformed,
        ),
    ];
    for (i, (fields, expected)) in cases.iter().enumerate() {
        let mut conn = open(Config::default());
        let (r, seen) = feed(&mut conn, &headers(1, fields, true));
        assert!(r.is_ok(), "case {i}: {r:?}");
        assert!(expected(&seen), "case {i}: {fields:?} -> {seen:?}");
    }
}

#[test]
fn reset_by_server_then_more_data_and_trailers() {
    let mut conn = open(Config::default());
    let (_, seen) = feed(&mut conn, &headers(1, POST, false));
    assert_eq!(seen.len(), 1);
    conn.reset(1, Reason::CANCEL);
    assert!(conn.is_idle());
    let mut b = Vec::new();
    for _ in 0..8 {
        b.extend(data(1, &[0; 16_000], false));
    }
    b.extend(headers(1, &[("x-t", "1")], true));
    let (r, seen) = feed(&mut conn, &b);
    assert!(r.is_ok(), "{r:?}");
    assert!(seen.is_empty(), "{seen:?}");
    let out = written(&mut conn);
    let returned: u32 = out
        .iter()
        .filter(|f| f.0 == kind::WINDOW_UPDATE && f.1 == 0)
        .map(|f| f.3)
        .sum();
    assert!(
        returned >= 128_000 - 32_768,
        "connection window given back: {returned}"
    );
    // send on it
    let (parts, ()) = http::Response::new(()).into_parts();
    assert!(conn.send_response(1, &parts, true).is_err());
    assert!(conn.send_data(1, b"x", true).is_err());
}

#[test]
fn headers_in_one_byte_continuations_byte_by_byte() {
    let mut conn = open(Config::default());
    let mut f = GET.to_vec();
    let long = "v".repeat(300);
    f.push(("x-long", &long));
    let blk = block(&f);
    let mut b = raw(kind::HEADERS, 0x1, 1, &blk[..1]);
    for (i, byte) in blk[1..].iter().enumerate() {
        let last = i == blk.len() - 2;
        b.extend(raw(
            kind::CONTINUATION,
            if last { 0x4 } else { 0 },
            1,
            &[*byte],
        ));
    }
    let (r, seen) = feed_slowly(&mut conn, &b);
    assert_eq!(r, Ok(b.len()));
    assert_eq!(seen, vec![Seen::Request(1, "http://orders/a".into(), true)]);
}

#[test]
fn window_update_after_negative_window() {
    // h2spec 6.9.2/2: SETTINGS makes the window negative; sends wait until positive.
    let mut conn = open(Config::default());
    feed(&mut conn, &headers(1, GET, true)).0.unwrap();
    let (parts, ()) = http::Response::new(()).into_parts();
    conn.send_response(1, &parts, false).unwrap();
    assert_eq!(conn.send_data(1, &[0; 1000], false), Ok(1000));
    let mut s = Vec::new();
    frame::write_settings(&[(setting::INITIAL_WINDOW_SIZE, 0)], &mut s);
    feed(&mut conn, &s).0.unwrap();
    assert_eq!(conn.capacity(1), 0);
    feed(&mut conn, &window_update(1, 1000)).0.unwrap();
    assert_eq!(conn.capacity(1), 0);
    feed(&mut conn, &window_update(1, 1)).0.unwrap();
    assert_eq!(conn.capacity(1), 1);
}

#[test]
fn stream_table_after_every_path() {
    // After each path ends (client done, server done or reset), nothing stays.
    let (parts, ()) = http::Response::new(()).into_parts();
    let mut conn = open(Config {
        max_header_list_size: 200,
        ..Config::default()
    });
    let big = "x".repeat(300);
    let mut b = Vec::new();
    b.extend(headers(1, GET, true)); // normal
    b.extend(headers(3, POST, false)); // client resets
    let mut r = Vec::new();
    frame::write_rst_stream(3, Reason::CANCEL, &mut r);
    b.extend(r);
    b.extend(headers(
        5,
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            ("x", &big),
        ],
        false,
    )); // too large
    b.extend(data(5, b"abc", true));
    b.extend(headers(
        7,
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/"),
            ("content-length", "1"),
        ],
        false,
    ));
    b.extend(data(7, b"ab", true)); // cl mismatch
    b.extend(headers(9, POST, false));
    b.extend(headers(9, &[("x", "1")], false)); // trailers without end_stream
    b.extend(headers(11, POST, false));
    b.extend(headers(11, &[(":status", "1")], true)); // pseudo in trailers
    b.extend(headers(13, POST, false));
    b.extend(headers(13, &[("x", &big)], true)); // too large trailers
    let (res, seen) = feed(&mut conn, &b);
    assert!(res.is_ok(), "{res:?} {seen:?}");
    for s in [1u32, 5] {
        conn.send_response(s, &parts, true).unwrap();
    }
    assert!(conn.is_idle(), "streams left");
}

#[test]
fn a_connection_window_below_the_default() {
    // The connection window starts at 65,535 for the client whatever SETTINGS say
    // (RFC 9113 §6.9.2); a smaller Config value cannot be told to the client.
    let mut conn = open(Config {
        connection_window_size: 16_384,
        ..Config::default()
    });
    let mut b = headers(1, POST, false);
    b.extend(data(1, &[0; 16_384], false));
    b.extend(data(1, &[0; 16_384], false));
    let (r, _) = feed(&mut conn, &b);
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn get_with_star_path() {
    let seen = one_request(
        Config::default(),
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "a"),
            (":path", "*"),
        ],
    );
    assert!(matches!(seen[..], [Seen::Malformed(1, _)]), "{seen:?}");
}
