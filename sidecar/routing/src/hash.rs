//! The consistent hash every sidecar must compute identically.

/// Incremental form of [`stable_hash`], so a salt and a key can be hashed without
/// concatenating them.
#[derive(Clone, Copy, Debug)]
pub struct StableHasher(u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl StableHasher {
    /// A hasher in its initial state.
    pub fn new() -> Self {
        Self(FNV_OFFSET)
    }

    /// Feeds bytes; `write(a); write(b)` equals `write(a ++ b)`.
    pub fn write(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
        self
    }

    /// The hash: FNV-1a state passed through the splitmix64 finaliser.
    pub fn finish(&self) -> u64 {
        mix(self.0)
    }
}

impl Default for StableHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// A fixed, platform-independent 64-bit hash: FNV-1a 64 (offset `0xcbf29ce484222325`,
/// prime `0x100000001b3`) over the bytes, then the splitmix64 finaliser so that the low
/// digits used for buckets (`% 100`, `% 10_000`) are well spread. It never changes
/// between versions: sidecars of different versions must agree on buckets.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    StableHasher::new().write(bytes).finish()
}

/// splitmix64's finaliser; also used to derive a second independent draw from one.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_is_pinned() {
        // These values are part of the contract between sidecars of different
        // versions: never change them without a migration plan.
        assert_eq!(stable_hash(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(stable_hash(b"user-42"), 0x7a15_96f0_e94b_5793);
        assert_eq!(stable_hash(b"a"), mix(0xaf63_dc4c_8601_ec8c));
    }

    #[test]
    fn incremental_equals_one_shot() {
        let mut h = StableHasher::new();
        h.write(b"gray").write(b"\xff").write(b"user-1");
        assert_eq!(h.finish(), stable_hash(b"gray\xffuser-1"));
    }

    #[test]
    fn buckets_are_spread() {
        let mut counts = [0u32; 10];
        for i in 0..10_000u32 {
            let b = stable_hash(format!("user-{i}").as_bytes()) % 10;
            counts[usize::try_from(b).unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
    }
}
