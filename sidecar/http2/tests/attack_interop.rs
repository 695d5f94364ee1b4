//! The real h2 client against a response carrying HTTP/1.1 connection fields.
#![allow(clippy::unwrap_used)]

use graylane_http2::server::{Config, Connection, Event};
use http::{HeaderValue, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_response_with_connection_specific_fields() {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        let mut conn = Connection::new(Config::default());
        let (mut rd, mut wr) = tokio::io::split(ours);
        let mut buf = Vec::new();
        loop {
            let out = conn.output().to_vec();
            wr.write_all(&out).await.unwrap();
            conn.advance(out.len());
            if rd.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
            let mut reqs = Vec::new();
            let used = conn
                .recv(&buf, &mut |e| {
                    if let Event::Request { stream, .. } = e {
                        reqs.push(stream);
                    }
                })
                .unwrap();
            buf.drain(..used);
            for s in reqs {
                let mut r = Response::new(());
                // As an HTTP/1.1 upstream would answer.
                r.headers_mut()
                    .insert("connection", HeaderValue::from_static("keep-alive"));
                r.headers_mut()
                    .insert("keep-alive", HeaderValue::from_static("timeout=5"));
                let (parts, ()) = r.into_parts();
                conn.send_response(s, &parts, true).unwrap();
            }
        }
    });
    let (mut client, connection) = h2::client::handshake(theirs).await.unwrap();
    tokio::spawn(connection);
    let (resp, _) = client
        .send_request(Request::get("http://o/").body(()).unwrap(), true)
        .unwrap();
    let resp = resp.await;
    assert!(resp.is_ok(), "h2 client: {resp:?}");
}
