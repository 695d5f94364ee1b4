//! Who caused an error the sidecar answered, on its span (`graylane.error.source`):
//! the rules (an unknown service), the upstream (an app too slow), the client (an
//! `OPTIONS *`, which means nothing past this hop). An answer the app gave carries no
//! such attribute.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use graylane_tests::otlp::{ReceivedSpan, Receiver};
use graylane_tests::{ControlPlane, DemoApp, Sidecar, eventually, raw};

/// A request (`line`: method and target) with its own sampled trace; the status and
/// the body.
fn send(addr: SocketAddr, line: &str, host: &str, trace: &str, extra: &str) -> (u16, String) {
    raw(
        addr,
        &format!(
            "{line} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
             traceparent: 00-{trace}-00f067aa0ba902b7-01\r\n{extra}\r\n"
        ),
    )
}

/// The one span of `trace` this sidecar exported.
fn span(receiver: &Receiver, trace: &str) -> ReceivedSpan {
    eventually(Duration::from_secs(10), "the span of the request", || {
        receiver.trace(trace).into_iter().next()
    })
}

fn trace(n: u8) -> String {
    format!("5bf92f3577b34da6a3ce929d0e0e47{n:02x}")
}

#[test]
fn the_span_of_an_error_says_who_caused_it() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let otlp = receiver.url();
    let app = DemoApp::start(dir.path(), "orders", "v1", None);
    let orders = Sidecar::start(
        dir.path(),
        "orders-v1",
        &[
            "--service",
            "orders",
            "--instance-id",
            "orders-v1",
            "--app-addr",
            &app.addr.to_string(),
            "--control-plane",
            &url,
            "--upstream-timeout",
            "300ms",
            "--otlp-endpoint",
            &otlp,
        ],
    );
    orders.wait_ready();
    orders.wait_endpoints("orders", 1);

    let cases = [
        // No service of that name: the rules leave it nowhere to go.
        (orders.outbound, "GET /", "nosuch", "", 502, Some("policy")),
        // The app answers after the timeout: the upstream's doing.
        (
            orders.inbound,
            "GET /",
            "orders",
            "x-demo-delay-ms: 2000\r\n",
            504,
            Some("upstream"),
        ),
        // `OPTIONS *` asks about this hop only (RFC 9110 §9.3.7): the client's.
        (
            orders.outbound,
            "OPTIONS *",
            "orders",
            "",
            400,
            Some("downstream"),
        ),
        // The app answered: nothing to blame.
        (orders.inbound, "GET /", "orders", "", 200, None),
    ];
    for (n, (listener, line, host, extra, status, source)) in cases.into_iter().enumerate() {
        let id = trace(u8::try_from(n).unwrap());
        let (got, body) = send(listener, line, host, &id, extra);
        assert_eq!(got, status, "{host}: {body}");
        let span = span(&receiver, &id);
        assert_eq!(
            span.attributes
                .get("graylane.error.source")
                .map(String::as_str),
            source,
            "{host} ({status}): {span:#?}"
        );
        assert_eq!(
            span.attributes["http.response.status_code"],
            status.to_string()
        );
    }
}
