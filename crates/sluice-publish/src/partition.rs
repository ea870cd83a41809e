//! Where a target lands among N of something: its Kafka partition, its home member of a proxy
//! pool (and, with the fleet, its owner). One function for every such choice, so the worker,
//! the aggregator and every later process agree, and one that is stable across Rust releases
//! and builds (`std`'s `DefaultHasher` is not).
//!
//! The hash is CRC-32 (IEEE) of the target id, modulo N: the function librdkafka's default
//! `consistent_random` partitioner applies to a record key. Records of a target carry their
//! partition explicitly (see [`crate::Publisher`]), so this, not the producer's `partitioner`
//! setting, decides it; keeping the same function means topics written by earlier Sluice
//! versions keep their mapping.
//!
//! What it must NOT do: look at anything but the key and N (no randomness, no process state).

/// The partition of a target's records in a topic of `partitions` partitions (0 when there are
/// none).
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    match u32::try_from(partitions) {
        // Below `partitions`, so the conversion cannot fail.
        Ok(n) if n > 0 => i32::try_from(crc32fast::hash(key.as_bytes()) % n).unwrap_or(0),
        _ => 0,
    }
}

/// The home member of a proxy pool of `members` proxies for a target: the first one both its
/// stream and its aggregator's base-state fetch try (0 for an empty pool).
pub fn pool_home(target: &str, members: usize) -> usize {
    match u32::try_from(members) {
        Ok(n) if n > 0 => usize::try_from(crc32fast::hash(target.as_bytes()) % n).unwrap_or(0),
        // More members than a u32 counts: not a pool anyone configures.
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_of_the_key_modulo_the_partition_count() {
        // CRC-32 (IEEE) of "123456789" is 0xCBF43926, the standard check value.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(partition_for("123456789", 7), (0xCBF4_3926_u32 % 7) as i32);
        assert_eq!(partition_for("anything", 1), 0);
        assert_eq!(partition_for("anything", 0), 0);
        assert_eq!(partition_for("anything", -3), 0);
    }

    /// A fixed table (computed with Python's `zlib.crc32`, an independent implementation): a
    /// change of hash or of its modulo moves targets between partitions and proxies, so it must
    /// show here first.
    #[test]
    fn the_choice_is_the_same_in_every_build() {
        let expected = [
            ("prices", 5, 4),
            ("scores", 2, 1),
            ("inventory", 2, 0),
            ("t-0001", 9, 2),
            ("t-9999", 3, 1),
        ];
        for (id, partition, member) in expected {
            assert_eq!(partition_for(id, 12), partition, "{id}");
            assert_eq!(pool_home(id, 5), member, "{id}");
        }
        assert_eq!(pool_home("anything", 0), 0);
    }
}
