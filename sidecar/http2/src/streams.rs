//! Tables keyed by stream id, hashed cheaply.
//!
//! A connection looks its streams up several times a frame (its own table, and the
//! driver's beside it); with std's SipHash each look-up of a `u32` costs about 120
//! instructions, some 3k per proxied gRPC call. A multiplicative hash does it in a
//! few. SipHash is there against keys an attacker picks to collide; a peer does pick
//! stream ids (increasing ones), but a table holds at most the streams open at once
//! (`SETTINGS_MAX_CONCURRENT_STREAMS`), so the worst a collision costs is a scan of
//! that many entries.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A table of streams, by id.
pub type StreamMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// Hashes a stream id by multiplying it with an odd constant (Fibonacci hashing),
/// its well-mixed high bits turned to where the table's index is taken from.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

/// 2^64 / φ, odd.
const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `u32`s are hashed here; anything else still hashes, slowly.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(K);
    }

    fn finish(&self) -> u64 {
        self.0.rotate_left(32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_s_stream_ids_spread_over_the_table() {
        let mut table = StreamMap::default();
        for id in (1..200u32).step_by(2) {
            table.insert(id, id);
        }
        assert!((1..200u32).step_by(2).all(|id| table[&id] == id));
        assert_eq!(table.remove(&7), Some(7));
        assert!(!table.contains_key(&7));
        // The low bits, where an index is taken from, differ for ids 2 apart.
        let low = |id: u32| {
            let mut h = IdHasher::default();
            h.write_u32(id);
            h.finish() & 0xff
        };
        let distinct: std::collections::HashSet<u64> = (1..64u32).step_by(2).map(low).collect();
        assert!(distinct.len() > 24, "{} distinct of 32", distinct.len());
    }
}
