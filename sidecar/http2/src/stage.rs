//! Staging small pieces (header blocks, field values, small DATA) in a shared
//! chunk and splitting each off it: one allocation for many pieces, instead of one
//! (or two: a `BytesMut` frozen) each. A piece pins its chunk until it is dropped,
//! so a holder lets its chunk go when nothing is in flight (an idle connection then
//! holds none).

use bytes::BytesMut;

/// Room made at a time: a gRPC call's header block and the values it spills are a
/// few hundred bytes. Not more: each request in flight holds its chunk, and 4 KiB
/// chunks raised what a burst of 1,000 one-request h2c connections leaves resident
/// from 11.8 to 16.2 KiB a connection (`bench/conn-memory.py --h2`), for 0.6 fewer
/// `malloc` calls a gRPC call than 512 bytes.
const CHUNK: usize = 512;

/// Appends `bytes` to `buf`, a fresh chunk first where it has no room for them
/// (the old one lives on in what was split off it). Split the piece off with
/// `buf.split()`.
pub fn stage(buf: &mut BytesMut, bytes: &[u8]) {
    if buf.capacity() - buf.len() < bytes.len() {
        buf.reserve(CHUNK.max(bytes.len()));
    }
    buf.extend_from_slice(bytes);
}
