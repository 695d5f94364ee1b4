//! The client end of a connection: this end's streams are requests. What a client
//! adds to the shared connection (`conn.rs`): the preface it sends, stream ids it
//! opens (odd, increasing) within the server's `SETTINGS_MAX_CONCURRENT_STREAMS`,
//! requests' pseudo-header fields, and responses read (`conn/head.rs`): interim
//! ones apart, `content-length` held against the body unless the request was a
//! HEAD or the status has no body. Push is refused (SETTINGS_ENABLE_PUSH 0).

use http::{Method, StatusCode, header, request};

use crate::conn::{self, Phase, Read, Role, Stream, Whole};
use crate::frame::{self, Reason, Settings, setting};
use crate::hpack::encode_field;
use crate::server::PREFACE;

pub use crate::conn::{Config, ConnectionError, Event, StreamGone};

/// The client end.
#[derive(Debug)]
pub struct Client;

/// The client end of one HTTP/2 connection.
pub type Connection = conn::Connection<Client>;

/// A request that cannot be sent on this connection now; it was not sent at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsendable {
    /// As many streams are open as the server allows: wait for one to end.
    AtLimit,
    /// Either end said GOAWAY, stream ids ran out, or the server takes no streams
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS` 0): a new connection.
    Closing,
    /// The request cannot be said in HTTP/2 (no authority to a CONNECT, a target
    /// without a path).
    Malformed(&'static str),
}

impl std::fmt::Display for Unsendable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsendable::AtLimit => f.write_str("as many streams open as the server allows"),
            Unsendable::Closing => f.write_str("the connection is closing"),
            Unsendable::Malformed(why) => write!(f, "the request cannot be sent: {why}"),
        }
    }
}

impl std::error::Error for Unsendable {}

impl Connection {
    /// A connection whose preface, SETTINGS (and connection window, if larger than
    /// 65,535) are already in the output; requests may be sent at once.
    pub fn new(config: Config) -> Connection {
        let mut out = PREFACE.to_vec();
        frame::write_settings(
            &[
                (setting::ENABLE_PUSH, 0),
                (setting::MAX_CONCURRENT_STREAMS, 0),
                (setting::INITIAL_WINDOW_SIZE, config.initial_window_size),
                (setting::MAX_FRAME_SIZE, config.max_frame_size),
                (setting::MAX_HEADER_LIST_SIZE, config.max_header_list_size),
            ],
            &mut out,
        );
        let default = Settings::default().initial_window_size;
        if config.connection_window_size > default {
            frame::write_window_update(0, config.connection_window_size - default, &mut out);
        }
        conn::Connection::with(config, Phase::Settings, out)
    }

    /// Whether a request may be sent now.
    pub fn can_send(&self) -> Result<(), Unsendable> {
        if self.is_closing() || self.next_stream > frame::MAX_WINDOW {
            return Err(Unsendable::Closing);
        }
        // Until the server's SETTINGS say how many, one stream: a server refuses
        // streams over its limit, and some (h2) take DATA already in flight on a
        // refused stream as a connection error. Servers send SETTINGS at once, so
        // the second request waits a round trip at most, on a new connection only.
        let limit = match self.phase {
            // A server taking no streams at all: another connection, not a wait
            // for one that may never come.
            Phase::Open if self.peer.max_concurrent_streams == Some(0) => {
                return Err(Unsendable::Closing);
            }
            Phase::Open => self.peer.max_concurrent_streams.unwrap_or(u32::MAX) as usize,
            _ => 1,
        };
        if self.streams.len() >= limit {
            return Err(Unsendable::AtLimit);
        }
        Ok(())
    }

    /// Sends a request's head (`:authority` from its URI, or else its `host`
    /// field), and says its stream; with `end_stream`, the whole request.
    pub fn send_request(
        &mut self,
        head: &request::Parts,
        end_stream: bool,
    ) -> Result<u32, Unsendable> {
        self.can_send()?;
        let host = head
            .headers
            .get(header::HOST)
            .map(http::HeaderValue::as_bytes);
        let authority = head.uri.authority().map(|a| a.as_str().as_bytes()).or(host);
        self.scratch.clear();
        encode_field(
            b":method",
            head.method.as_str().as_bytes(),
            false,
            &mut self.scratch,
        );
        if head.method == Method::CONNECT {
            let authority =
                authority.ok_or(Unsendable::Malformed("a CONNECT without an authority"))?;
            encode_field(b":authority", authority, false, &mut self.scratch);
        } else {
            let scheme = head.uri.scheme_str().unwrap_or("http");
            let path = head
                .uri
                .path_and_query()
                .map_or("/", http::uri::PathAndQuery::as_str);
            encode_field(b":scheme", scheme.as_bytes(), false, &mut self.scratch);
            if let Some(authority) = authority {
                encode_field(b":authority", authority, false, &mut self.scratch);
            }
            encode_field(b":path", path.as_bytes(), false, &mut self.scratch);
        }
        for (name, value) in &head.headers {
            // `:authority` says it (RFC 9113 §8.3.1).
            if name != header::HOST && conn::http2_field(name, value) {
                encode_field(
                    name.as_str().as_bytes(),
                    value.as_bytes(),
                    value.is_sensitive(),
                    &mut self.scratch,
                );
            }
        }
        let stream = self.next_stream;
        self.next_stream += 2;
        self.opened += 1;
        self.streams.insert(
            stream,
            Stream {
                recv_open: true,
                send_open: true,
                head_received: false,
                head_request: head.method == Method::HEAD,
                recv_window: self.initial_recv_window(),
                recv_unacked: 0,
                unreleased: 0,
                send_window: i64::from(self.peer.initial_window_size),
                remaining: None,
                discard: false,
                answered: true,
            },
        );
        self.send_block(stream, end_stream);
        Ok(stream)
    }
}

impl Role for Client {
    /// A response's head (or an interim one) on a stream this end opened.
    fn head(
        conn: &mut Connection,
        whole: Whole<'_>,
        on: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ConnectionError> {
        let Whole {
            stream,
            end_stream,
            self_dependent,
            block,
        } = whole;
        // Decoded even when the stream is dropped (`Connection::decode`).
        let read = conn.decode(block, conn::response_head)?;
        let Some(head_request) = conn.streams.get(&stream).map(|s| s.head_request) else {
            if stream >= conn.next_stream {
                return Err(conn.fail(Reason::PROTOCOL_ERROR, "HEADERS on a stream never opened"));
            }
            // A stream this end reset: what was in flight is dropped.
            return Ok(());
        };
        let mut head = match read {
            Read::Valid(head) if !self_dependent => head,
            Read::Valid(_) => {
                conn.refuse(stream, Reason::PROTOCOL_ERROR, on);
                return Ok(());
            }
            Read::Malformed(what) => {
                conn.refuse(stream, Reason::PROTOCOL_ERROR, on);
                on(Event::Malformed { stream, what });
                return Ok(());
            }
            // The server answered beyond what this end said it would take.
            Read::TooLarge => {
                conn.refuse(stream, Reason::PROTOCOL_ERROR, on);
                on(Event::Malformed {
                    stream,
                    what: "a response header list over the limit",
                });
                return Ok(());
            }
        };
        if head.status.is_informational() {
            if end_stream {
                conn.refuse(stream, Reason::PROTOCOL_ERROR, on);
                return Ok(());
            }
            on(Event::Informational { stream, head });
            return Ok(());
        }
        // No content, whatever `content-length` says: DATA with any is malformed
        // (RFC 9113 §8.1.1).
        let no_content = head_request
            || head.status == StatusCode::NO_CONTENT
            || head.status == StatusCode::NOT_MODIFIED;
        let remaining = match conn::content_length(&mut head.headers) {
            _ if no_content => None,
            Ok(remaining) => remaining,
            Err(()) => {
                conn.refuse(stream, Reason::PROTOCOL_ERROR, on);
                on(Event::Malformed {
                    stream,
                    what: "an invalid content-length",
                });
                return Ok(());
            }
        };
        if end_stream && remaining.is_some_and(|n| n != 0) {
            conn.refuse(stream, Reason::PROTOCOL_ERROR, on);
            on(Event::Malformed {
                stream,
                what: "a content-length with no body",
            });
            return Ok(());
        }
        if let Some(state) = conn.streams.get_mut(&stream) {
            state.head_received = true;
            state.remaining = if no_content { Some(0) } else { remaining };
        }
        on(Event::Response {
            stream,
            head,
            end_stream,
            length: remaining,
        });
        if end_stream {
            conn.recv_closed(stream);
        }
        Ok(())
    }

    /// Servers answer on the client's (odd) streams; push is off.
    fn peer_may_send_headers(stream: u32) -> bool {
        stream % 2 == 1
    }

    fn is_idle(conn: &Connection, stream: u32) -> bool {
        stream >= conn.next_stream
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
