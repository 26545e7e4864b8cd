//! Kafka's default partitioner (murmur2), so keys land where Java producers put them.

/// Kafka's `Utils.murmur2` over `data` (seed 0x9747b28c), as a signed 32-bit value.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's Java default partitioner picks for `key` among `partitions`
/// (`toPositive(murmur2(key)) % partitions`). `partitions` must be positive.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    let positive = murmur2(key.as_bytes()) & 0x7fff_ffff;
    positive % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Vectors printed by org.apache.kafka.common.utils.Utils.murmur2 from kafka-clients 4.1.1
    // (see scripts/murmur2-vectors.jsh), so a drift from Java fails here.
    #[test]
    fn matches_kafka_java() {
        let cases: &[(&str, i32)] = &[
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
            ("abc", 479470107),
            ("", 275646681),
            ("conv-123", JAVA_CONV_123),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key.as_bytes()), *want, "murmur2({key:?})");
        }
        assert_eq!(partition_for("conv-123", 24), JAVA_CONV_123_P24);
    }

    const JAVA_CONV_123: i32 = 1492601922;
    const JAVA_CONV_123_P24: i32 = 18;

    proptest! {
        #[test]
        fn partition_in_range(key in ".{0,64}", n in 1i32..2048) {
            let p = partition_for(&key, n);
            prop_assert!((0..n).contains(&p));
        }
    }
}
