//! Internet checksum (RFC 1071) and its incremental update (RFC 1624).

/// One's-complement sum of `data` as big-endian 16-bit words, not yet inverted.
pub fn sum(data: &[u8], initial: u32) -> u32 {
    let mut acc = initial as u64;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        acc += (*last as u64) << 8;
    }
    fold(acc)
}

/// Fold a wide sum to 16 bits (returned in a u32 for chaining).
pub fn fold(mut acc: u64) -> u32 {
    while acc >> 16 != 0 {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    acc as u32
}

/// The checksum of `data`: 0 when `data` includes a correct checksum field.
pub fn internet(data: &[u8]) -> u16 {
    !(sum(data, 0) as u16)
}

/// New checksum after one 16-bit word of the covered data changed from `old` to `new`
/// (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
pub fn update16(checksum: u16, old: u16, new: u16) -> u16 {
    let acc = (!checksum as u64) + (!old as u64 & 0xFFFF) + new as u64;
    !(fold(acc) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the sum of these words is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data, 0), 0xddf2);
        assert_eq!(internet(&data), !0xddf2);
    }

    #[test]
    fn incremental_matches_full_recompute() {
        let mut data = [
            0x45u8, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let c = internet(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        let old = u16::from_be_bytes([data[8], data[9]]);
        data[8] = 17;
        let new = u16::from_be_bytes([data[8], data[9]]);
        let inc = update16(c, old, new);
        data[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(inc, internet(&data));
    }
}
