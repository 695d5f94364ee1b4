//! Staging small pieces (header blocks, field values, small DATA) in a shared
//! chunk and splitting each off it: one allocation for many pieces, instead of one
//! (or two: a `BytesMut` frozen) each. A piece pins its chunk until it is dropped,
//! so a holder lets its chunk go when nothing is in flight (an idle connection then
//! holds none).

use bytes::BytesMut;

/// Room made at a time: a gRPC call's header blocks and their values are a few
/// hundred bytes, so a chunk serves a dozen calls or more.
const CHUNK: usize = 4096;

/// Appends `bytes` to `buf`, a fresh chunk first where it has no room for them
/// (the old one lives on in what was split off it). Split the piece off with
/// `buf.split()`.
pub fn stage(buf: &mut BytesMut, bytes: &[u8]) {
    if buf.capacity() - buf.len() < bytes.len() {
        buf.reserve(CHUNK.max(bytes.len()));
    }
    buf.extend_from_slice(bytes);
}
