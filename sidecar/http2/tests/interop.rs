//! Against the real thing: `h2`'s client writes requests that this crate's frame
//! reader and HPACK decoder read back field for field (its encoder indexes,
//! Huffman-codes, evicts, and marks sensitive values never-indexed), and `h2`'s
//! server accepts requests this crate writes and answers them through its own
//! encoder, which this crate's decoder reads. Over an in-memory connection.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use graylane_http2::frame::{self, DEFAULT_MAX_FRAME_SIZE, Frame, HEAD_LEN, Head};
use graylane_http2::hpack::{Decoder, encode_field};
use http::{HeaderName, HeaderValue, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const REQUESTS: usize = 300;

/// A field as both ends should see it: name, value, never-indexed.
type Field = (Vec<u8>, Vec<u8>, bool);

/// Random fields: names from a small pool (so the encoder's table fills, hits and
/// evicts), values of any visible or obs-text byte, now and then sensitive.
fn fields(rng: &mut fastrand::Rng) -> Vec<Field> {
    const NAMES: &[&str] = &[
        "accept",
        "cookie",
        "user-agent",
        "content-type",
        "gray-publish",
        "baggage",
        "x-request-id",
        "x-b3-traceid",
        "traceparent",
        "authorization",
        "x-a",
        "x-bb",
    ];
    (0..rng.usize(0..12))
        .map(|_| {
            let name = NAMES[rng.usize(..NAMES.len())].as_bytes().to_vec();
            // Now and then longer than the table (never indexed) or than a frame
            // (a header block in CONTINUATIONs).
            let len = match rng.u8(..) {
                0..2 => 20_000,
                2..10 => 3_000,
                _ => rng.usize(0..40),
            };
            let value: Vec<u8> = (0..len)
                .map(|_| match rng.u8(0..10) {
                    0 => rng.u8(0x80..=0xff),
                    _ => rng.u8(0x21..0x7f),
                })
                .collect();
            (name, value, rng.u8(..) < 20)
        })
        .collect()
}

/// Reads frames off one end of the connection.
struct Reader {
    io: DuplexStream,
    buf: Vec<u8>,
    /// How many CONTINUATION frames came: the test checks some did.
    continuations: usize,
}

impl Reader {
    async fn frame(&mut self) -> (Head, Vec<u8>) {
        loop {
            if self.buf.len() >= HEAD_LEN {
                let head = Head::parse(self.buf[..HEAD_LEN].try_into().unwrap(), 1 << 24).unwrap();
                if self.buf.len() >= HEAD_LEN + head.len {
                    let payload = self.buf[HEAD_LEN..HEAD_LEN + head.len].to_vec();
                    self.buf.drain(..HEAD_LEN + head.len);
                    return (head, payload);
                }
            }
            let n = self.io.read_buf(&mut self.buf).await.unwrap();
            assert!(n > 0, "the connection closed");
        }
    }

    /// The next header block (HEADERS and its CONTINUATIONs), answering SETTINGS
    /// and skipping everything else on the way.
    async fn block(&mut self) -> (u32, Vec<u8>) {
        let mut block = Vec::new();
        let mut on = None;
        loop {
            let (head, payload) = self.frame().await;
            match Frame::parse(head, &payload).unwrap() {
                Frame::Settings { ack: false, .. } => {
                    let mut ack = Vec::new();
                    frame::write_settings_ack(&mut ack);
                    self.io.write_all(&ack).await.unwrap();
                }
                Frame::Headers {
                    stream,
                    end_headers,
                    fragment,
                    ..
                } => {
                    assert!(on.is_none(), "HEADERS inside a header block");
                    block.extend_from_slice(fragment);
                    if end_headers {
                        return (stream, block);
                    }
                    on = Some(stream);
                }
                Frame::Continuation {
                    stream,
                    end_headers,
                    fragment,
                } => {
                    assert_eq!(on, Some(stream));
                    self.continuations += 1;
                    block.extend_from_slice(fragment);
                    if end_headers {
                        return (stream, block);
                    }
                }
                _ => assert!(on.is_none(), "a frame inside a header block"),
            }
        }
    }
}

fn decode(decoder: &mut Decoder, block: &[u8]) -> Vec<Field> {
    let mut out = Vec::new();
    decoder
        .decode(block, |f| {
            out.push((f.name.to_vec(), f.value.to_vec(), f.sensitive))
        })
        .unwrap();
    out
}

fn sorted(mut fields: Vec<Field>) -> Vec<Field> {
    fields.sort();
    fields
}

fn header_map(fields: &[Field]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value, sensitive) in fields {
        let mut value = HeaderValue::from_bytes(value).unwrap();
        value.set_sensitive(*sensitive);
        map.append(HeaderName::from_bytes(name).unwrap(), value);
    }
    map
}

fn fields_of(map: &http::HeaderMap) -> Vec<Field> {
    map.iter()
        .map(|(n, v)| {
            (
                n.as_str().as_bytes().to_vec(),
                v.as_bytes().to_vec(),
                v.is_sensitive(),
            )
        })
        .collect()
}

#[tokio::test]
async fn what_h2s_client_writes_is_read_back_field_for_field() {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let mut reader = Reader {
        io: ours,
        buf: Vec::new(),
        continuations: 0,
    };
    let mut settings = Vec::new();
    frame::write_settings(&[], &mut settings);
    reader.io.write_all(&settings).await.unwrap();
    let (mut client, connection) = h2::client::handshake(theirs).await.unwrap();
    tokio::spawn(connection);
    let mut rng = fastrand::Rng::with_seed(7541);
    let sent: Vec<Vec<Field>> = (0..REQUESTS).map(|_| fields(&mut rng)).collect();
    let requests = sent.clone();
    tokio::spawn(async move {
        for (i, fields) in requests.iter().enumerate() {
            let mut request = Request::builder()
                .method(if i % 3 == 0 { "POST" } else { "GET" })
                .uri(format!("http://orders.example:8080/o/{i}?q=1"))
                .body(())
                .unwrap();
            *request.headers_mut() = header_map(fields);
            client = client.ready().await.unwrap();
            let (answer, _) = client.send_request(request, true).unwrap();
            drop(answer);
        }
        // Held open until the test ends.
        std::future::pending::<()>().await;
    });
    let mut decoder = Decoder::default();
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut preface = [0u8; 24];
        reader.io.read_exact(&mut preface).await.unwrap();
        assert_eq!(preface, PREFACE);
        for (i, fields) in sent.iter().enumerate() {
            let (stream, block) = reader.block().await;
            assert_eq!(stream as usize, 2 * i + 1);
            let mut want = vec![
                (
                    b":method".to_vec(),
                    if i % 3 == 0 { &b"POST"[..] } else { b"GET" }.to_vec(),
                    false,
                ),
                (b":scheme".to_vec(), b"http".to_vec(), false),
                (
                    b":authority".to_vec(),
                    b"orders.example:8080".to_vec(),
                    false,
                ),
                (b":path".to_vec(), format!("/o/{i}?q=1").into_bytes(), false),
            ];
            want.extend(fields.iter().cloned());
            assert_eq!(
                sorted(decode(&mut decoder, &block)),
                sorted(want),
                "request {i}"
            );
        }
    })
    .await
    .unwrap();
    assert!(decoder.table_size() > 0, "h2 indexed some fields");
    assert!(
        reader.continuations > 0,
        "some blocks came in CONTINUATIONs"
    );
}

#[tokio::test]
async fn h2s_server_takes_the_requests_this_crate_writes_and_its_answers_read_back() {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let mut reader = Reader {
        io: ours,
        buf: Vec::new(),
        continuations: 0,
    };
    let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    let mut rng = fastrand::Rng::with_seed(9113);
    let answers: Vec<Vec<Field>> = (0..REQUESTS).map(|_| fields(&mut rng)).collect();
    let answering = answers.clone();
    tokio::spawn(async move {
        let mut connection = h2::server::handshake(theirs).await.unwrap();
        let mut n: usize = 0;
        while let Some(accepted) = connection.accept().await {
            let (request, mut respond) = accepted.unwrap();
            let mut response = Response::builder()
                .status(200 + u16::try_from(n % 3).unwrap())
                .body(())
                .unwrap();
            *response.headers_mut() = header_map(&answering[n]);
            respond.send_response(response, true).unwrap();
            got_tx.send(request).unwrap();
            n += 1;
        }
    });
    let requests: Vec<Vec<Field>> = (0..REQUESTS).map(|_| fields(&mut rng)).collect();
    let mut out = PREFACE.to_vec();
    frame::write_settings(&[], &mut out);
    let mut block = Vec::new();
    for (i, fields) in requests.iter().enumerate() {
        block.clear();
        let path = format!("/o/{i}");
        for (name, value) in [
            (&b":method"[..], &b"GET"[..]),
            (b":scheme", b"http"),
            (b":authority", b"orders"),
            (b":path", path.as_bytes()),
        ] {
            encode_field(name, value, false, &mut block);
        }
        for (name, value, sensitive) in fields {
            encode_field(name, value, *sensitive, &mut block);
        }
        let stream = u32::try_from(2 * i + 1).unwrap();
        frame::write_headers(stream, true, &block, DEFAULT_MAX_FRAME_SIZE, &mut out);
    }
    let writer = tokio::spawn(async move {
        reader.io.write_all(&out).await.unwrap();
        reader
    });
    tokio::time::timeout(Duration::from_secs(30), async {
        for (i, fields) in requests.iter().enumerate() {
            let request = got.recv().await.unwrap();
            assert_eq!(request.uri().path(), format!("/o/{i}"));
            // h2's decoder drops the never-indexed mark (RFC 7541 §7.1.3 asks an
            // intermediary to keep it; this crate's decoder does): names and values.
            let plain =
                |f: Vec<Field>| sorted(f.into_iter().map(|(n, v, _)| (n, v, false)).collect());
            assert_eq!(
                plain(fields_of(request.headers())),
                plain(fields.clone()),
                "request {i}"
            );
        }
    })
    .await
    .unwrap();
    let mut reader = writer.await.unwrap();
    let mut decoder = Decoder::default();
    tokio::time::timeout(Duration::from_secs(30), async {
        for (i, fields) in answers.iter().enumerate() {
            let (stream, block) = reader.block().await;
            assert_eq!(stream as usize, 2 * i + 1);
            let decoded = decode(&mut decoder, &block);
            let status = format!("{}", 200 + i % 3).into_bytes();
            assert_eq!(
                decoded[0],
                (b":status".to_vec(), status, false),
                "answer {i}"
            );
            let mut rest: Vec<Field> = decoded[1..].to_vec();
            // h2 adds nothing but may reorder names.
            rest.retain(|(n, _, _)| n != b"date");
            assert_eq!(sorted(rest), sorted(fields.clone()), "answer {i}");
        }
    })
    .await
    .unwrap();
}
