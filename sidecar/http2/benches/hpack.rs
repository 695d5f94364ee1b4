//! HPACK on a gRPC call's header blocks, as the sidecar's inbound hop meets them:
//! the request from a client that indexes and Huffman-codes (grpc-go, tonic, any
//! `h2` client), first on a new connection and then in the steady state where it is
//! all table references; the app's answer head and trailers likewise; and what the
//! sidecar writes (the request to the app, the answer and trailers to the client).
//! Decoding is timed alone and into an `http::HeaderMap`, which is what a proxy needs.
//!
//! `HPACK_COUNT=N` runs the whole hop's HPACK work (three blocks decoded into header
//! maps, three encoded) N times instead, for callgrind to count instructions per
//! call against `h2`'s share of the sidecar's profile. Results and the commands are
//! in bench/README.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group};
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

/// What the sidecar's inbound hop does with HPACK for one gRPC call: three blocks
/// in, three out. The decoders hold the connections' tables in their steady state.
struct Hop {
    from_client: Decoder,
    from_app: Decoder,
    request: Vec<u8>,
    answer: Vec<u8>,
    trailers: Vec<u8>,
    map: HeaderMap,
    out: Vec<u8>,
}

impl Hop {
    fn new() -> Hop {
        let mut from_client = Decoder::default();
        let request = steady_request(&mut from_client);
        let mut from_app = Decoder::default();
        // The app's first answer indexes content-type and grpc-status; from then on
        // its head and trailers are references (`:status: 200` is static).
        let mut first = Vec::new();
        first.push(0x88);
        first.push(0x40 | 31);
        huffman_string(b"application/grpc", &mut first);
        first.push(0x40);
        huffman_string(b"grpc-status", &mut first);
        huffman_string(b"0", &mut first);
        from_app.decode(&first, |_| ()).unwrap_or(());
        Hop {
            from_client,
            from_app,
            request,
            answer: vec![0x88, 0x80 | 63],
            trailers: vec![0x80 | 62],
            map: HeaderMap::new(),
            out: Vec::with_capacity(512),
        }
    }

    fn call(&mut self) -> usize {
        let mut n = 0;
        into_map(&mut self.from_client, &self.request, &mut self.map);
        n += self.map.len();
        self.out.clear();
        for (name, value) in REQUEST {
            encode_field(name, value, false, &mut self.out);
        }
        into_map(&mut self.from_app, &self.answer, &mut self.map);
        n += self.map.len();
        into_map(&mut self.from_app, &self.trailers, &mut self.map);
        n += self.map.len();
        for (name, value) in RESPONSE.iter().chain(TRAILERS) {
            encode_field(name, value, false, &mut self.out);
        }
        n + self.out.len()
    }
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
    let mut hop = Hop::new();
    c.bench_function(
        "a gRPC hop's HPACK: three blocks decoded, three encoded",
        |b| b.iter(|| black_box(hop.call())),
    );
}

criterion_group!(benches, hpack);

fn main() {
    if let Some(n) = std::env::var("HPACK_COUNT")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        let mut hop = Hop::new();
        let mut sum = 0;
        for _ in 0..n {
            sum += black_box(&mut hop).call();
        }
        black_box(sum);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
