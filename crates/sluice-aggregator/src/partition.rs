//! Which partition a target's records land in: librdkafka's default `consistent_random`
//! partitioner (CRC-32 of the key, modulo the partition count), which the worker's producer uses
//! with the target id as key. Lets an aggregator know its targets the moment partitions are
//! assigned, before any record arrives.

/// The partition librdkafka's `consistent_random` partitioner picks for a non-empty `key`.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    if partitions <= 0 {
        return 0;
    }
    let hash = crc32fast::hash(key.as_bytes());
    // Non-negative and below `partitions`, so the conversion cannot fail.
    i32::try_from(hash % partitions.unsigned_abs()).unwrap_or(0)
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
    }
}
