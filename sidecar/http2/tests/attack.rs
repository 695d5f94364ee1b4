//! What hostile clients send the server end (found by a probe of the first version,
//! each a defect fixed since): MadeYouReset, stream ids and GOAWAY, flow control
//! around resets and the first SETTINGS, output buffer growth, floods of empty
//! frames.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

// ---------------------------------------------------------------------------
// MadeYouReset (CVE-2025-8671): the rapid-reset guard only counts client RSTs.
// ---------------------------------------------------------------------------

fn made_you_reset(provoke: fn(u32) -> Vec<u8>, end_stream: bool) -> (usize, Option<Reason>) {
    let mut conn = open(Config::default());
    let mut requests = 0;
    for i in 0..5_000u32 {
        let stream = 2 * i + 1;
        let mut bytes = headers(stream, GET, end_stream);
        bytes.extend(provoke(stream));
        let (r, seen) = feed(&mut conn, &bytes);
        requests += seen
            .iter()
            .filter(|s| matches!(s, Seen::Request(..)))
            .count();
        if let Err(e) = r {
            return (requests, Some(e.reason));
        }
        written(&mut conn);
        assert!(conn.is_idle());
    }
    (requests, None)
}

#[test]
fn made_you_reset_window_overflow() {
    // Each request is handed on (the handler starts work), then the server itself
    // resets the stream: 5000 requests with zero concurrency cost, never stopped.
    let r = made_you_reset(|s| window_update(s, frame::MAX_WINDOW), true);
    assert_eq!(r.1, Some(Reason::ENHANCE_YOUR_CALM), "{r:?}");
}

#[test]
fn made_you_reset_data_on_half_closed() {
    let r = made_you_reset(|s| data(s, b"x", false), true);
    assert_eq!(r.1, Some(Reason::ENHANCE_YOUR_CALM), "{r:?}");
}

#[test]
fn made_you_reset_zero_window_update() {
    let r = made_you_reset(|s| raw(kind::WINDOW_UPDATE, 0, s, &[0, 0, 0, 0]), true);
    assert_eq!(r.1, Some(Reason::ENHANCE_YOUR_CALM), "{r:?}");
}

#[test]
fn made_you_reset_priority_bad_length() {
    let r = made_you_reset(|s| raw(kind::PRIORITY, 0, s, &[0, 0, 0, 0]), false);
    assert_eq!(r.1, Some(Reason::ENHANCE_YOUR_CALM), "{r:?}");
}

// ---------------------------------------------------------------------------
// Stream ids and GOAWAY.
// ---------------------------------------------------------------------------

#[test]
fn headers_on_a_skipped_lower_stream_id_is_a_connection_error() {
    // RFC 9113 §5.1.1 (h2spec 5.1.1/2).
    let mut conn = open(Config::default());
    let mut bytes = headers(5, GET, true);
    bytes.extend(headers(3, GET, true));
    let (r, seen) = feed(&mut conn, &bytes);
    let out = written(&mut conn);
    assert_eq!(
        r.map_err(|e| e.reason),
        Err(Reason::PROTOCOL_ERROR),
        "{seen:?} {out:?}"
    );
}

#[test]
fn a_later_goaway_never_raises_last_stream() {
    // RFC 9113 §6.8: "Endpoints MUST NOT increase the value they send in the last
    // stream identifier".
    let mut conn = open(Config::default());
    feed(&mut conn, &headers(1, GET, true)).0.unwrap();
    conn.go_away();
    // A request racing the GOAWAY: ignored, as it should be.
    let (_, seen) = feed(&mut conn, &headers(3, GET, true));
    assert!(seen.is_empty());
    // Then a connection error.
    let _ = feed(&mut conn, &raw(kind::PING, 0, 1, &[0; 8]));
    let goaways: Vec<_> = written(&mut conn)
        .into_iter()
        .filter(|f| f.0 == kind::GOAWAY)
        .map(|f| f.3)
        .collect();
    assert_eq!(goaways, vec![1, 1], "last_stream of each GOAWAY");
}

#[test]
fn rst_stream_is_never_sent_on_an_idle_stream() {
    // RFC 9113 §6.4: RST_STREAM MUST NOT be sent for an idle stream; §5.1: a frame
    // other than HEADERS/PRIORITY on an idle stream is a connection error.
    let mut conn = open(Config::default());
    let (r, _) = feed(&mut conn, &raw(kind::WINDOW_UPDATE, 0, 99, &[0, 0, 0, 0]));
    let out = written(&mut conn);
    assert!(
        !out.iter().any(|f| f.0 == kind::RST_STREAM && f.1 == 99),
        "{r:?} {out:?}"
    );
}

// ---------------------------------------------------------------------------
// Flow control.
// ---------------------------------------------------------------------------

#[test]
fn data_sent_before_our_settings_were_seen_uses_the_default_window() {
    // The client may send 65,535 bytes on a stream before it has seen this end's
    // SETTINGS (RFC 9113 §6.9.3: "the receiver MUST be prepared to receive data
    // that exceeds this window size").
    let mut conn = Connection::new(Config {
        initial_window_size: 1024,
        ..Config::default()
    });
    let mut bytes = PREFACE.to_vec();
    frame::write_settings(&[], &mut bytes);
    bytes.extend(headers(1, POST, false));
    bytes.extend(data(1, &[0; 4096], true));
    let (r, seen) = feed(&mut conn, &bytes);
    assert!(r.is_ok());
    assert!(
        !seen.iter().any(|s| matches!(s, Seen::Reset(..))),
        "{seen:?} {:?}",
        written(&mut conn)
    );
}

#[test]
fn window_returned_when_a_stream_is_reset_with_unreleased_data() {
    // The driver passes bytes on and releases them; when the client resets the
    // stream before the driver released, is the connection window lost?
    let mut conn = open(Config::default());
    let mut bytes = headers(1, POST, false);
    bytes.extend(data(1, &[0; 16_000], false));
    bytes.extend(data(1, &[0; 16_000], false));
    let mut rst = Vec::new();
    frame::write_rst_stream(1, Reason::CANCEL, &mut rst);
    bytes.extend(rst);
    let (r, seen) = feed(&mut conn, &bytes);
    assert!(r.is_ok(), "{seen:?}");
    // The driver (a handler that is now gone) never calls release for stream 1.
    // Four more such streams and the connection window is gone for all streams.
    for s in [3u32, 5] {
        let mut b = headers(s, POST, false);
        b.extend(data(s, &[0; 16_000], false));
        b.extend(data(s, &[0; 16_000], false));
        let mut rst = Vec::new();
        frame::write_rst_stream(s, Reason::CANCEL, &mut rst);
        b.extend(rst);
        let (r, _) = feed(&mut conn, &b);
        if r.is_err() {
            panic!("connection window exhausted by reset streams: {r:?}");
        }
    }
}

#[test]
fn output_buffer_compacts_under_partial_writes() {
    // A driver on a non-blocking socket writes what it can and never drains the
    // buffer completely while a long response streams.
    let mut conn = open(Config::default());
    feed(&mut conn, &headers(1, GET, true)).0.unwrap();
    let mut s = Vec::new();
    frame::write_settings(&[(setting::INITIAL_WINDOW_SIZE, frame::MAX_WINDOW)], &mut s);
    s.extend(window_update(0, frame::MAX_WINDOW - 65_535));
    feed(&mut conn, &s).0.unwrap();
    let (parts, ()) = http::Response::new(()).into_parts();
    conn.send_response(1, &parts, false).unwrap();
    let chunk = vec![0u8; 10_000];
    let mut peak = 0;
    for _ in 0..100_000 {
        conn.send_data(1, &chunk, false).unwrap();
        // Writes all but 100 bytes.
        let n = conn.output().len() - 100;
        conn.advance(n);
        peak = peak.max(conn.output().len());
    }
    // Only 100 bytes are ever pending: the buffer must not hold what was written
    // (1 GB by the end). Its capacity does not show: the process's does.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm = status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap()
        .to_owned();
    assert!(peak <= 10_100, "{peak} bytes pending");
    let kb: usize = vm.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(kb < 200_000, "resident {kb} kB for 100 pending bytes");
}

// ---------------------------------------------------------------------------
// Floods.
// ---------------------------------------------------------------------------

#[test]
fn empty_data_flood() {
    // CVE-2019-9518: empty DATA frames cost the server per frame, nothing to the client.
    let mut conn = open(Config::default());
    let mut bytes = headers(1, POST, false);
    for _ in 0..100_000 {
        bytes.extend(data(1, b"", false));
    }
    let (r, seen) = feed(&mut conn, &bytes);
    assert!(r.is_err(), "{} events, no end", seen.len());
}

#[test]
fn empty_continuation_flood() {
    // CVE-2024-27316 variant: empty CONTINUATIONs never grow the block.
    let mut conn = open(Config::default());
    let mut bytes = headers(1, GET, false);
    bytes[4] &= !0x4;
    for _ in 0..1_000_000 {
        bytes.extend(raw(kind::CONTINUATION, 0, 1, &[]));
    }
    let (r, _) = feed(&mut conn, &bytes);
    assert!(r.is_err(), "a million empty CONTINUATIONs accepted");
}
