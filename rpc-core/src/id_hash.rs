//! A cheap hasher for request ids.

use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for request ids: one multiplication instead of SipHash. Request ids are chosen by
/// the client, not by an attacker of the map's owner, so flooding a bucket only slows the peer's
/// own connection.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing spreads consecutive ids over the high bits, which pick the shard.
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Builds [`IdHasher`]s.
pub(crate) type IdHash = BuildHasherDefault<IdHasher>;

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn consecutive_ids_spread_over_shards() {
        let build = IdHash::default();
        let mut shards = [0usize; 16];
        for id in 0..16_000u64 {
            shards[(build.hash_one(id) >> 60) as usize] += 1;
        }
        assert!(
            shards.iter().all(|&n| (800..1200).contains(&n)),
            "{shards:?}"
        );
    }
}
