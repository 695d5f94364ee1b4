//! HPACK on a gRPC call's three header blocks, as the sidecar's inbound hop meets
//! them: the request from a client that indexes and Huffman-codes (grpc-go, tonic,
//! any `h2` client), first on a new connection and then in the steady state where
//! it is all table references; and the response head and trailers the sidecar
//! writes. Decoding is timed alone and into an `http::HeaderMap`, what a proxy
//! needs. Results and the command are in bench/README.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use graylane_http2::hpack::{self, Decoder, encode_field, huffman};
use http::{HeaderMap, HeaderName, HeaderValue};

/// A gRPC request's fields, as grpc-go sends them (pseudo-headers first).
const REQUEST: &[(&[u8], &[u8])] = &[
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/orders.v1.Orders/GetOrder"),
    (b":authority", b"orders.default.svc.cluster.local:8080"),
    (b"content-type", b"application/grpc"),
    (b"user-agent", b"grpc-go/1.66.0"),
    (b"te", b"trailers"),
    (b"grpc-timeout", b"4999857u"),
    (b"gray-publish", b"canary"),
    (
        b"traceparent",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ),
];

/// The response head and its trailers.
const RESPONSE: &[(&[u8], &[u8])] = &[
    (b":status", b"200"),
    (b"content-type", b"application/grpc"),
    (b"date", b"Mon, 07 Dec 2026 15:13:27 GMT"),
];
const TRAILERS: &[(&[u8], &[u8])] = &[(b"grpc-status", b"0"), (b"grpc-message", b"")];

/// The request as an indexing, Huffman-coding client writes it first on a connection:
/// every field a literal with incremental indexing (static name where there is one),
/// except the trace context, which changes per request and is not indexed.
fn first_request() -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in REQUEST {
        let static_name = hpack::STATIC_TABLE.iter().position(|(n, _)| n == name);
        let indexed = *name != b"traceparent";
        match (static_name, indexed) {
            (Some(i), true) => block.push(0x40 | u8::try_from(i + 1).unwrap_or(0)),
            (Some(i), false) => block.push(u8::try_from(i + 1).unwrap_or(0)),
            (None, true) => {
                block.push(0x40);
                huffman_string(name, &mut block);
            }
            (None, false) => {
                block.push(0x00);
                huffman_string(name, &mut block);
            }
        }
        huffman_string(value, &mut block);
    }
    block
}

/// The same request once its fields are in the table: one byte each, but for the
/// trace context.
fn steady_request(decoder: &mut Decoder) -> Vec<u8> {
    decoder.decode(&first_request(), |_| ()).unwrap_or(());
    // Nine indexed fields, newest first in the table: index 62 is `gray-publish`.
    let mut block: Vec<u8> = (62..=70).rev().map(|i: u8| 0x80 | i).collect();
    block.push(0x00);
    huffman_string(b"traceparent", &mut block);
    huffman_string(REQUEST[9].1, &mut block);
    block
}

fn huffman_string(bytes: &[u8], block: &mut Vec<u8>) {
    // Short enough for one byte of length.
    block.push(0x80 | u8::try_from(huffman::encoded_len(bytes)).unwrap_or(0));
    huffman::encode(bytes, block);
}

fn into_map(decoder: &mut Decoder, block: &[u8], map: &mut HeaderMap) {
    map.clear();
    decoder
        .decode(block, |f| {
            if f.name.first() == Some(&b':') {
                return;
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(f.name),
                HeaderValue::from_bytes(f.value),
            ) {
                map.append(name, value);
            }
        })
        .unwrap_or(());
}

fn hpack(c: &mut Criterion) {
    let first = first_request();
    c.bench_function("decode a first gRPC request", |b| {
        b.iter(|| {
            let mut decoder = Decoder::default();
            decoder.decode(black_box(&first), |f| {
                black_box(f);
            })
        })
    });
    let mut decoder = Decoder::default();
    let steady = steady_request(&mut decoder);
    c.bench_function("decode a steady-state gRPC request", |b| {
        b.iter(|| {
            decoder.decode(black_box(&steady), |f| {
                black_box(f);
            })
        })
    });
    let mut map = HeaderMap::new();
    c.bench_function("decode a steady-state gRPC request into a HeaderMap", |b| {
        b.iter(|| {
            into_map(&mut decoder, black_box(&steady), &mut map);
            black_box(map.len())
        })
    });
    let mut block = Vec::with_capacity(256);
    c.bench_function("encode a gRPC response head and trailers", |b| {
        b.iter(|| {
            block.clear();
            for (name, value) in RESPONSE.iter().chain(TRAILERS) {
                encode_field(black_box(name), black_box(value), false, &mut block);
            }
            black_box(block.len())
        })
    });
}

criterion_group!(benches, hpack);
criterion_main!(benches);
