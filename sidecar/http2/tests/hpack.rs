//! RFC 7541 Appendix C's examples, decoded in sequence on one decoder each (so the
//! dynamic table, its evictions and its sizes are checked as the RFC lists them),
//! and what a hostile or broken peer can send.

#![allow(clippy::unwrap_used)]

use graylane_http2::hpack::{Decoder, Error, Field, encode_field};

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn decode(decoder: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String, bool)>, Error> {
    let mut fields = Vec::new();
    decoder.decode(block, |f: Field<'_>| {
        fields.push((
            String::from_utf8(f.name.to_vec()).unwrap(),
            String::from_utf8(f.value.to_vec()).unwrap(),
            f.sensitive,
        ));
    })?;
    Ok(fields)
}

fn plain(fields: &[(&str, &str)]) -> Vec<(String, String, bool)> {
    fields
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned(), false))
        .collect()
}

/// Each block, the fields it carries, and the table size after it.
fn story(limit: usize, blocks: &[(&str, &[(&str, &str)], usize)]) {
    let mut decoder = Decoder::new(limit);
    for (i, (block, fields, size)) in blocks.iter().enumerate() {
        assert_eq!(
            decode(&mut decoder, &hex(block)).unwrap(),
            plain(fields),
            "block {i}"
        );
        assert_eq!(decoder.table_size(), *size, "table size after block {i}");
    }
}

#[test]
fn c2_the_four_kinds_of_field() {
    story(
        4096,
        &[(
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
            &[("custom-key", "custom-header")],
            55,
        )],
    );
    story(
        4096,
        &[(
            "040c 2f73 616d 706c 652f 7061 7468",
            &[(":path", "/sample/path")],
            0,
        )],
    );
    let mut decoder = Decoder::default();
    let fields = decode(
        &mut decoder,
        &hex("1008 7061 7373 776f 7264 0673 6563 7265 74"),
    )
    .unwrap();
    assert_eq!(fields, vec![("password".into(), "secret".into(), true)]);
    assert_eq!(decoder.table_size(), 0);
    story(4096, &[("82", &[(":method", "GET")], 0)]);
}

const REQUEST_1: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
];
const REQUEST_2: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
    ("cache-control", "no-cache"),
];
const REQUEST_3: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "https"),
    (":path", "/index.html"),
    (":authority", "www.example.com"),
    ("custom-key", "custom-value"),
];

#[test]
fn c3_requests_without_huffman() {
    story(
        4096,
        &[
            (
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                REQUEST_1,
                57,
            ),
            ("8286 84be 5808 6e6f 2d63 6163 6865", REQUEST_2, 110),
            (
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
                REQUEST_3,
                164,
            ),
        ],
    );
}

#[test]
fn c4_requests_with_huffman() {
    story(
        4096,
        &[
            ("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff", REQUEST_1, 57),
            ("8286 84be 5886 a8eb 1064 9cbf", REQUEST_2, 110),
            (
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
                REQUEST_3,
                164,
            ),
        ],
    );
}

const RESPONSE_1: &[(&str, &str)] = &[
    (":status", "302"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("location", "https://www.example.com"),
];
const RESPONSE_2: &[(&str, &str)] = &[
    (":status", "307"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("location", "https://www.example.com"),
];
const RESPONSE_3: &[(&str, &str)] = &[
    (":status", "200"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
    ("location", "https://www.example.com"),
    ("content-encoding", "gzip"),
    (
        "set-cookie",
        "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
    ),
];

/// A 256-byte table: the responses evict entries as they go.
#[test]
fn c5_responses_without_huffman_evicting() {
    story(
        256,
        &[
            (
                "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230
                 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65
                 7861 6d70 6c65 2e63 6f6d",
                RESPONSE_1,
                222,
            ),
            ("4803 3330 37c1 c0bf", RESPONSE_2, 222),
            (
                "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220
                 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157
                 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076
                 6572 7369 6f6e 3d31",
                RESPONSE_3,
                215,
            ),
        ],
    );
}

#[test]
fn c6_responses_with_huffman_evicting() {
    story(
        256,
        &[
            (
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0
                 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                RESPONSE_1,
                222,
            ),
            ("4883 640e ffc1 c0bf", RESPONSE_2, 222),
            (
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b
                 d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27
                 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                RESPONSE_3,
                215,
            ),
        ],
    );
}

#[test]
fn what_the_encoder_writes_the_decoder_reads_back() {
    let fields: &[(&[u8], &[u8], bool)] = &[
        (b":method", b"GET", false),
        (b":method", b"PATCH", false),
        (b":status", b"200", false),
        (b":status", b"503", false),
        (b":path", b"/orders.v1.Orders/Get", false),
        (b"accept-encoding", b"gzip, deflate", false),
        (b"content-type", b"application/grpc", false),
        (b"authorization", b"Bearer x", true),
        (b"gray-publish", b"canary", false),
        (b"x-secret", b"s", true),
        (b"", b"", false),
        (&[b'n'; 300], &[b'v'; 70_000], false),
    ];
    let mut block = Vec::new();
    for (name, value, sensitive) in fields {
        encode_field(name, value, *sensitive, &mut block);
    }
    let mut back = Vec::new();
    Decoder::default()
        .decode(&block, |f| {
            back.push((f.name.to_vec(), f.value.to_vec(), f.sensitive))
        })
        .unwrap();
    let want: Vec<_> = fields
        .iter()
        .map(|(n, v, s)| (n.to_vec(), v.to_vec(), *s))
        .collect();
    assert_eq!(back, want);
}

#[test]
fn the_encoder_uses_the_static_table_and_no_dynamic_one() {
    let mut block = Vec::new();
    encode_field(b":method", b"GET", false, &mut block);
    encode_field(b":status", b"200", false, &mut block);
    encode_field(b":path", b"/", false, &mut block);
    assert_eq!(block, [0x82, 0x88, 0x84]);
    // A static name with another value: literal without indexing, name index 8.
    block.clear();
    encode_field(b":status", b"503", false, &mut block);
    assert_eq!(block, hex("0803 3530 33"));
    // Sensitive, even with a value the static table has: never indexed.
    block.clear();
    encode_field(b":method", b"GET", true, &mut block);
    assert_eq!(block, hex("1203 4745 54"));
    let mut decoder = Decoder::default();
    decoder.decode(&block, |_| ()).unwrap();
    assert_eq!(decoder.table_size(), 0);
}

/// What a broken or hostile peer can send: each is refused with its own error, and
/// nothing panics or loops.
#[test]
fn malformed_blocks_are_refused_with_what_is_wrong() {
    let cases: &[(&str, Error)] = &[
        // Index 0, and an index past both tables.
        ("80", Error::ZeroIndex),
        (
            "be",
            Error::NoSuchIndex {
                index: 62,
                entries: 61,
            },
        ),
        ("ff80 8080 8080 8001", Error::IntegerTooLarge),
        // A literal whose value runs past the block, and an integer cut short.
        ("4003 6b65 7905 76", Error::Truncated),
        ("ff", Error::Truncated),
        ("7f", Error::Truncated),
        // A Huffman string that is all EOS, and one with a byte of padding.
        ("4003 6b65 7984 ffff ffff", Error::Huffman),
        ("4003 6b65 7982 1fff", Error::Huffman),
        // Size updates: above the limit, and after a field.
        (
            "3fe2 1f",
            Error::TableSizeTooLarge {
                size: 4097,
                limit: 4096,
            },
        ),
        ("8220", Error::TableSizeUpdateLate),
        // A literal with a dynamic name index the table does not have.
        (
            "7f00 0161",
            Error::NoSuchIndex {
                index: 63,
                entries: 61,
            },
        ),
    ];
    for (block, want) in cases {
        let mut decoder = Decoder::default();
        assert_eq!(
            decode(&mut decoder, &hex(block)).as_ref(),
            Err(want),
            "{block}"
        );
    }
}

#[test]
fn size_updates_at_the_start_shrink_the_table_and_evict() {
    let mut decoder = Decoder::default();
    decode(
        &mut decoder,
        &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
    )
    .unwrap();
    assert_eq!(decoder.table_size(), 55);
    // Two updates before the first field (to 0, then back to 4096): allowed, and the
    // entry is gone.
    decode(&mut decoder, &hex("203f e11f 82")).unwrap();
    assert_eq!(decoder.table_size(), 0);
    assert_eq!(
        decode(&mut decoder, &hex("be")),
        Err(Error::NoSuchIndex {
            index: 62,
            entries: 61
        })
    );
}

#[test]
fn a_field_larger_than_the_table_empties_it() {
    let mut decoder = Decoder::new(64);
    // custom-key: custom-header is 55 bytes: kept.
    decode(
        &mut decoder,
        &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
    )
    .unwrap();
    assert_eq!(decoder.table_size(), 55);
    // A 40-byte value: 10 + 40 + 32 > 64, handed out, not kept, and the table empty.
    let mut block = hex("400a 6375 7374 6f6d 2d6b 6579 28");
    block.extend_from_slice(&[b'x'; 40]);
    let fields = decode(&mut decoder, &block).unwrap();
    assert_eq!(fields[0].1.len(), 40);
    assert_eq!(decoder.table_size(), 0);
}

/// Random bytes never panic the decoder: every block decodes or is refused.
#[test]
fn random_bytes_decode_or_are_refused_without_panicking() {
    let mut rng = fastrand::Rng::with_seed(15);
    for _ in 0..20_000 {
        let len = rng.usize(0..48);
        let block: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        let mut decoder = Decoder::new(256);
        let _ = decoder.decode(&block, |_| ());
        assert!(decoder.table_size() <= 256);
    }
}
