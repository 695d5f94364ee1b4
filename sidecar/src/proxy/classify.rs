//! Who caused a failed exchange with an upstream, told from our HTTP/2 and HTTP/1.1
//! clients' errors, and the responses no proxy may pass on.

use http::{Request, Response};

use graylane_http2::client::Unsendable;
use graylane_http2::frame::Reason;

use super::pool::{Failure, PoolError};
use super::streams::Reset;
use super::{Body, SendFailure};

/// A pool's failure, with the request it handed back: a connect error means
/// nothing was sent.
pub(super) fn pool_failure(failed: Failure) -> (SendFailure, Option<Box<Request<Body>>>) {
    (failure_of(failed.error), failed.request)
}

fn failure_of(e: PoolError) -> SendFailure {
    match e {
        PoolError::Connect(text) => SendFailure::Connect(text),
        PoolError::Exchange(e) => classify(&*e),
        PoolError::RequestBody(e) => SendFailure::Downstream(source_text(&*e)),
        PoolError::Unsendable(e) => SendFailure::Internal(source_text(&*e)),
    }
}

/// A failed exchange (not a connect), by who caused it. The request's own body
/// failing is reported as `PoolError::RequestBody`, not here.
pub(super) fn classify(e: &(dyn std::error::Error + 'static)) -> SendFailure {
    if closed_before_response(e) {
        SendFailure::Closed(source_text(e))
    } else {
        SendFailure::Other(source_text(e))
    }
}

/// What an HTTP client accepts in a response but no proxy may pass on:
/// - a length two readers could frame differently (RFC 9112 §6.3: Transfer-Encoding
///   overrides Content-Length, and such a message "ought to be handled as an error");
/// - a status past 599, which httparse parses (any three digits) and RFC 9110 §15 has
///   none of;
/// - `101 Switching Protocols` to a request that asked for no upgrade (`upgrading`
///   false): a server must not switch to a protocol not asked for (RFC 9110 §15.2.2),
///   and relayed, it would cut the client's connection after the head.
pub(super) fn malformed<B>(response: &Response<B>, upgrading: bool) -> Option<&'static str> {
    let headers = response.headers();
    if headers.contains_key(http::header::TRANSFER_ENCODING)
        && headers.contains_key(http::header::CONTENT_LENGTH)
    {
        return Some("Content-Length with Transfer-Encoding");
    }
    let status = response.status();
    if status.as_u16() > 599 {
        return Some("a status code past 599");
    }
    (status == http::StatusCode::SWITCHING_PROTOCOLS && !upgrading)
        .then_some("101 Switching Protocols to a request that asked for no upgrade")
}

/// The connection closed or was reset before any byte of a response: the upstream
/// closed an idle connection as the request went out, or died. Nothing of an answer
/// was seen, so an idempotent request may go again.
fn closed_before_response(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        // RFC 9113 §8.7: a stream refused, or above the last one the peer's GOAWAY
        // says it processed (graylane-http2 ends those as refused), was not processed.
        if s.downcast_ref::<Reset>() == Some(&Reset(Reason::REFUSED_STREAM)) {
            return true;
        }
        // The connection began closing as the request waited for a stream on it: the
        // request never left.
        if s.downcast_ref::<Unsendable>() == Some(&Unsendable::Closing) {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && connection_lost(io)
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// The peer reset or closed the connection. Over mesh mTLS, a peer that died or closed
/// mid-exchange is an EOF without TLS close_notify (rustls reports it as `UnexpectedEof`).
fn connection_lost(io: &std::io::Error) -> bool {
    matches!(
        io.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof
    )
}

pub(super) fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let inner = match s.downcast_ref::<std::io::Error>() {
            // rustls' words for it name its own docs, and read as a TLS fault; over
            // mesh mTLS it is the peer closing mid-message, which is what happened.
            Some(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                "the peer closed the connection mid-message".to_owned()
            }
            _ => s.to_string(),
        };
        if !text.contains(&inner) {
            text = format!("{text}: {inner}");
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_whose_connection_closed_was_not_answered() {
        // What the pool's HTTP/2 client fails a waiting stream with when the upstream
        // closes (`pool::http2`'s tests check that it does).
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed");
        assert!(matches!(classify(&eof), SendFailure::Closed(_)));
    }

    #[test]
    fn a_refused_stream_was_not_processed_and_a_reset_one_may_have_been() {
        let refused = Reset(Reason::REFUSED_STREAM);
        assert!(matches!(classify(&refused), SendFailure::Closed(_)));
        let reset = Reset(Reason::INTERNAL_ERROR);
        assert!(matches!(classify(&reset), SendFailure::Other(_)));
        let unsent = Unsendable::Closing;
        assert!(matches!(classify(&unsent), SendFailure::Closed(_)));
    }
}
