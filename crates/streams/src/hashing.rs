//! The 128-bit hash-key space: MD5 routing of partition keys, parsing of hash keys, and the
//! uniform division of the space into shards.
//!
//! Shards of a stream tile `0..=2^128-1` without gaps; an open shard owns the keys from its
//! starting to its ending hash key, both inclusive.

use md5::{Digest, Md5};

/// The hash key of a partition key: its MD5 digest read as a big-endian 128-bit integer.
pub fn partition_key_hash(partition_key: &str) -> u128 {
    let digest = Md5::digest(partition_key.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest);
    u128::from_be_bytes(bytes)
}

/// Parses a decimal hash key (the model's pattern has already limited it to digits). `None`
/// when it does not fit in 128 bits.
pub fn parse_hash_key(text: &str) -> Option<u128> {
    text.parse::<u128>().ok()
}

/// `n` uniform ranges covering the whole key space, as AWS creates them: range `i` starts at
/// `i * floor(2^128 / n)` and the last one ends at `2^128 - 1`.
pub fn uniform_ranges(n: u32) -> Vec<(u128, u128)> {
    let n = u128::from(n.max(1));
    // floor(2^128 / n) computed without overflowing: 2^128 = u128::MAX + 1. For n = 1 it
    // is 2^128 itself, which wraps to 0; harmless, since one range only uses `u128::MAX`.
    let width = (u128::MAX / n).wrapping_add(u128::from(u128::MAX % n == n - 1));
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let start = width * i;
        let end = if i + 1 == n {
            u128::MAX
        } else {
            width * (i + 1) - 1
        };
        out.push((start, end));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_match_aws_for_three_shards() {
        let ranges = uniform_ranges(3);
        assert_eq!(
            ranges,
            vec![
                (0, 113427455640312821154458202477256070484),
                (
                    113427455640312821154458202477256070485,
                    226854911280625642308916404954512140969
                ),
                (226854911280625642308916404954512140970, u128::MAX),
            ]
        );
    }

    #[test]
    fn ranges_tile_the_space() {
        for n in [1u32, 2, 4, 7, 16, 100, 1000] {
            let ranges = uniform_ranges(n);
            assert_eq!(ranges.len(), n as usize);
            assert_eq!(ranges[0].0, 0);
            assert_eq!(ranges[ranges.len() - 1].1, u128::MAX);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].1 + 1, pair[1].0);
            }
        }
        assert_eq!(uniform_ranges(2)[1].0, 1u128 << 127);
    }

    #[test]
    fn md5_routing_is_big_endian() {
        // md5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(
            partition_key_hash("a"),
            0x0cc175b9c0f1b6a831c399e269772661u128
        );
    }
}
