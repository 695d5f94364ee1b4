//! The server end of a connection: the client's streams are requests. What a
//! server adds to the shared connection (`conn.rs`): the client's preface first,
//! stream ids the client opens (odd, increasing), `SETTINGS_MAX_CONCURRENT_STREAMS`
//! (a stream over it is refused, REFUSED_STREAM), requests' fields (`conn/head.rs`),
//! the header list limit (the request handed on as [`Event::TooLarge`], for a 431),
//! and responses.

use http::response;

use crate::conn::{self, Phase, Read, Role, Stream, Whole};
use crate::frame::{self, Reason, Settings, setting};
use crate::hpack::encode_field;

pub use crate::conn::{Config, ConnectionError, Event, Protocol, StreamGone};

/// The client's first bytes (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The server end.
#[derive(Debug)]
pub struct Server;

/// The server end of one HTTP/2 connection.
pub type Connection = conn::Connection<Server>;

impl Connection {
    /// A connection whose client's preface is still to come; this end's SETTINGS
    /// (and the connection window, if larger than 65,535) are already in the output.
    pub fn new(config: Config) -> Connection {
        let mut out = Vec::with_capacity(64);
        frame::write_settings(
            &[
                (
                    setting::MAX_CONCURRENT_STREAMS,
                    config.max_concurrent_streams,
                ),
                (setting::INITIAL_WINDOW_SIZE, config.initial_window_size),
                (setting::MAX_FRAME_SIZE, config.max_frame_size),
                (setting::MAX_HEADER_LIST_SIZE, config.max_header_list_size),
                (
                    setting::ENABLE_CONNECT_PROTOCOL,
                    u32::from(config.enable_connect_protocol),
                ),
            ],
            &mut out,
        );
        let default = Settings::default().initial_window_size;
        if config.connection_window_size > default {
            frame::write_window_update(0, config.connection_window_size - default, &mut out);
        }
        conn::Connection::with(config, Phase::Preface, out)
    }

    /// Sends a response's head; with `end_stream`, the whole response.
    pub fn send_response(
        &mut self,
        stream: u32,
        head: &response::Parts,
        end_stream: bool,
    ) -> Result<(), StreamGone> {
        self.sendable(stream)?;
        self.scratch.clear();
        encode_field(
            b":status",
            head.status.as_str().as_bytes(),
            false,
            &mut self.scratch,
        );
        conn::encode_headers(&head.headers, &mut self.scratch);
        if let Some(state) = self.streams.get_mut(&stream) {
            state.answered = true;
        }
        self.send_block(stream, end_stream);
        Ok(())
    }
}

impl Role for Server {
    /// A new request, or a block to decode and drop.
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
        let read = conn.decode(block, conn::request_head)?;
        if stream <= conn.last_stream {
            // A request on a stream already used (or skipped, which closed it):
            // ids only go up (§5.1.1). Anything else there is trailers that
            // crossed this end's reset, and is dropped.
            if matches!(read, Read::Valid(_)) {
                return Err(conn.fail(
                    Reason::PROTOCOL_ERROR,
                    "a request on a stream id already used",
                ));
            }
            return Ok(());
        }
        conn.last_stream = stream;
        conn.opened += 1;
        if conn.going_away.is_some() {
            return Ok(());
        }
        let open = conn.streams.len();
        let mut state = Stream {
            recv_open: !end_stream,
            send_open: true,
            head_received: true,
            head_request: false,
            recv_window: conn.initial_recv_window(),
            recv_unacked: 0,
            unreleased: 0,
            send_window: i64::from(conn.peer.initial_window_size),
            remaining: None,
            discard: false,
            answered: false,
        };
        let read = match read {
            _ if self_dependent => Read::Malformed("a stream that depends on itself"),
            // Extended CONNECT only where this end offered it (RFC 8441 §3).
            Read::Valid(head)
                if !conn.config.enable_connect_protocol
                    && head.extensions.get::<conn::Protocol>().is_some() =>
            {
                Read::Malformed(":protocol without SETTINGS_ENABLE_CONNECT_PROTOCOL")
            }
            read => read,
        };
        let malformed = |conn: &mut Connection, what, on: &mut dyn FnMut(Event<'_>)| {
            conn.refuse_new(stream, Reason::PROTOCOL_ERROR);
            on(Event::Malformed { stream, what });
        };
        match read {
            _ if open >= conn.config.max_concurrent_streams as usize => {
                conn.refuse_new(stream, Reason::REFUSED_STREAM);
            }
            Read::Malformed(what) => malformed(conn, what, on),
            Read::TooLarge => {
                state.discard = true;
                conn.streams.insert(stream, state);
                on(Event::TooLarge { stream });
            }
            Read::Valid(mut head) => match conn::content_length(&mut head.headers) {
                Err(()) => malformed(conn, "an invalid content-length", on),
                Ok(Some(n)) if end_stream && n != 0 => {
                    malformed(conn, "a content-length with no body", on);
                }
                Ok(remaining) => {
                    state.remaining = remaining;
                    conn.streams.insert(stream, state);
                    on(Event::Request {
                        stream,
                        head,
                        end_stream,
                        length: remaining,
                    });
                }
            },
        }
        Ok(())
    }

    /// Clients open odd streams.
    fn peer_may_send_headers(stream: u32) -> bool {
        stream % 2 == 1
    }

    fn is_idle(conn: &Connection, stream: u32) -> bool {
        stream > conn.last_stream
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests;
