//! Where a header block's values live: split off one staging chunk rather than
//! allocated one by one (the chunk let go once nothing is in flight), or shared with
//! the dynamic table's entry, made once per entry.

use http::HeaderMap;

use crate::frame::{self, DEFAULT_MAX_FRAME_SIZE, Reason};
use crate::server::Connection;
use crate::server::tests::open;

use super::{Config, Event};

/// A GET's HEADERS on `stream`, its pseudo-header fields literal, then `rest`
/// (HPACK bytes as they are).
fn get(stream: u32, rest: &[u8]) -> Vec<u8> {
    get_after(stream, &[], rest)
}

/// As [`get`], with `first` (table size updates) at the head of the block.
fn get_after(stream: u32, first: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut block = first.to_vec();
    for (name, value) in [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "a"),
    ] {
        crate::hpack::encode_field(name.as_bytes(), value.as_bytes(), false, &mut block);
    }
    block.extend_from_slice(rest);
    let mut out = Vec::new();
    frame::write_headers(stream, true, &block, DEFAULT_MAX_FRAME_SIZE, &mut out);
    out
}

/// A literal field with incremental indexing, new name (RFC 7541 §6.2.1).
fn indexed_literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x40, u8::try_from(name.len()).unwrap()];
    out.extend_from_slice(name.as_bytes());
    out.push(u8::try_from(value.len()).unwrap());
    out.extend_from_slice(value.as_bytes());
    out
}

fn heads(conn: &mut Connection, bytes: &[u8]) -> Vec<HeaderMap> {
    let mut heads = Vec::new();
    let read = conn.recv(bytes, &mut |event| {
        if let Event::Request { head, .. } = event {
            heads.push(head.headers);
        }
    });
    assert_eq!(read, Ok(bytes.len()));
    heads
}

#[test]
fn values_from_the_dynamic_table_are_shared_not_copied_and_an_idle_connection_holds_no_chunk() {
    let mut conn = open(Config::default());
    let mut first = indexed_literal("x-first", "value-one");
    first.extend(indexed_literal("x-second", "value-two"));
    let one = heads(&mut conn, &get(1, &first));
    assert_eq!(one[0]["x-first"], "value-one");
    // Both from the dynamic table now (62: the newest, x-second), and the static
    // table's `accept-encoding: gzip, deflate` (16): none of them in the block.
    let by_index = [0x80 | 63, 0x80 | 62, 0x80 | 16];
    let two = heads(&mut conn, &get(3, &by_index));
    let (a, b, c) = (
        two[0]["x-first"].as_bytes(),
        two[0]["x-second"].as_bytes(),
        two[0]["accept-encoding"].as_bytes(),
    );
    assert_eq!(
        (a, b, c),
        (&b"value-one"[..], &b"value-two"[..], &b"gzip, deflate"[..])
    );
    // The static table's value is staged in the connection's chunk.
    assert!(
        conn.fragments.capacity() > 0,
        "the chunk is kept while streams are open"
    );
    // Sent by index again: the very bytes the table holds, as made the first time
    // (the entry's memo), not a copy per request.
    let three = heads(&mut conn, &get(5, &by_index));
    assert_eq!(three[0]["x-first"].as_bytes().as_ptr(), a.as_ptr());
    assert_eq!(three[0]["x-second"].as_bytes().as_ptr(), b.as_ptr());
    assert_eq!(three[0]["accept-encoding"], "gzip, deflate");

    // All answered and done: the chunk is let go; the heads read from it are intact.
    for stream in [1, 3, 5] {
        conn.reset(stream, Reason::NO_ERROR);
    }
    assert!(conn.streams.is_empty());
    assert_eq!(
        conn.fragments.capacity(),
        0,
        "an idle connection holds no chunk"
    );
    assert_eq!(two[0]["x-second"], "value-two");
    assert_eq!(two[0]["accept-encoding"], "gzip, deflate");
}

#[test]
fn a_field_refused_once_is_refused_each_time_it_is_sent_by_index() {
    let mut conn = open(Config::default());
    // Remembered by the table, then refused as a field (a value with whitespace
    // around it): no memo is made of it, and sending its index again is refused
    // again, where a memo of the first use would have let it through.
    let one = heads(&mut conn, &get(1, &indexed_literal("x-padded", " v ")));
    assert!(one.is_empty(), "{one:?}");
    let two = heads(&mut conn, &get(3, &[0x80 | 62]));
    assert!(two.is_empty(), "{two:?}");
    // A valid field sent by index keeps coming out whole next to it.
    let three = heads(&mut conn, &get(5, &indexed_literal("x-fine", "ok")));
    let four = heads(&mut conn, &get(7, &[0x80 | 62, 0x80 | 62]));
    assert_eq!(three[0]["x-fine"], "ok");
    let fine: Vec<_> = four[0].get_all("x-fine").iter().collect();
    assert_eq!(fine, ["ok", "ok"]);
}

#[test]
fn a_memo_goes_with_its_entry_not_with_its_index() {
    let mut conn = open(Config::default());
    heads(&mut conn, &get(1, &indexed_literal("x-old", "one")));
    // Sent by index: its memo is made.
    let two = heads(&mut conn, &get(3, &[0x80 | 62]));
    assert_eq!(two[0]["x-old"], "one");
    // The table emptied (a size update to 0, then back), and another field
    // remembered: index 62 is that field now, whatever the old entry's memo held.
    let sizes = [0x20, 0x3f, 0xe1, 0x1f]; // 0, then 4,096
    let three = heads(
        &mut conn,
        &get_after(5, &sizes, &indexed_literal("x-new", "two")),
    );
    assert_eq!(three[0]["x-new"], "two");
    let four = heads(&mut conn, &get(7, &[0x80 | 62]));
    assert_eq!(four[0]["x-new"], "two");
    assert!(four[0].get("x-old").is_none(), "{:?}", four[0]);
}

#[test]
fn an_idle_connection_lets_go_of_its_buffers_not_of_its_dynamic_table() {
    let mut conn = open(Config::default());
    let one = heads(
        &mut conn,
        &get(1, &indexed_literal("x-kept", "in the table")),
    );
    assert_eq!(one[0]["x-kept"], "in the table");
    assert!(!conn.let_go(), "a stream is open");
    let mut ok = http::Response::new(()).into_parts().0;
    ok.headers
        .insert("x-answer", http::HeaderValue::from_static("yes"));
    conn.send_response(1, &ok, true).unwrap();
    assert!(conn.streams.is_empty());
    assert!(!conn.let_go(), "the answer is still to be written");
    conn.advance(conn.output().len() - 1);
    assert!(
        !conn.let_go(),
        "a byte of the answer is still to be written"
    );
    conn.advance(1);
    assert!(conn.out.capacity() > 0 && conn.scratch.capacity() > 0);

    // A header block begun, its CONTINUATION still to come: kept.
    let block = &get(3, &[0x80 | 62])[9..];
    let mut split = Vec::new();
    for (kind, flags, part) in [
        (frame::kind::HEADERS, 0x1, &block[..4]),      // END_STREAM
        (frame::kind::CONTINUATION, 0x4, &block[4..]), // END_HEADERS
    ] {
        let len = part.len();
        frame::Head {
            len,
            kind,
            flags,
            stream: 3,
        }
        .write(&mut split);
        split.extend_from_slice(part);
    }
    let first = 9 + 4;
    assert_eq!(conn.recv(&split[..first], &mut |_| ()), Ok(first));
    assert!(!conn.let_go(), "a header block is half received");
    let two = heads(&mut conn, &split[first..]);
    assert_eq!(two[0]["x-kept"], "in the table");
    conn.reset(3, Reason::NO_ERROR);
    conn.advance(conn.output().len());

    assert!(conn.let_go(), "nothing under way");
    assert_eq!(
        (
            conn.out.capacity(),
            conn.scratch.capacity(),
            conn.streams.capacity()
        ),
        (0, 0, 0)
    );
    // The peer's next block refers to the table as it was: it still is.
    let three = heads(&mut conn, &get(5, &[0x80 | 62]));
    assert_eq!(three[0]["x-kept"], "in the table");
    conn.send_response(5, &ok, true).unwrap();
    assert!(!conn.output().is_empty(), "answered after letting go");
}

#[test]
fn content_length_fields_that_agree_are_handed_on_as_one() {
    let mut conn = open(Config::default());
    let post = |stream, lengths: &[&str]| {
        let mut block = Vec::new();
        let pseudo = [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "o"),
            (":path", "/"),
        ];
        let length = lengths.iter().map(|l| ("content-length", *l));
        for (name, value) in pseudo.into_iter().chain(length) {
            crate::hpack::encode_field(name.as_bytes(), value.as_bytes(), false, &mut block);
        }
        let mut out = Vec::new();
        frame::write_headers(stream, false, &block, DEFAULT_MAX_FRAME_SIZE, &mut out);
        out
    };
    let mut bytes = post(1, &["3", "3"]);
    bytes.extend(post(3, &["3"]));
    bytes.extend(post(5, &["3", "4"]));
    let mut seen = Vec::new();
    let used = conn.recv(&bytes, &mut |event| match event {
        Event::Request {
            stream,
            head,
            length,
            ..
        } => {
            let fields = head.headers.get_all("content-length").iter().cloned();
            seen.push((stream, fields.collect::<Vec<_>>(), length));
        }
        Event::Malformed { stream, .. } => seen.push((stream, Vec::new(), None)),
        _ => {}
    });
    assert_eq!(used, Ok(bytes.len()));
    let three = vec![http::HeaderValue::from(3)];
    assert_eq!(
        seen,
        [
            (1, three.clone(), Some(3)),
            (3, three, Some(3)),
            (5, vec![], None)
        ]
    );
}
