//! A plugin's hand-over state as little-endian 64-bit words: what `snapshot` returns
//! and `restore` reads back when a changed stage is swapped in place. Most plugins keep
//! their RNG (four words, [`crate::Rng::state`]) and a few numbers.

/// `words` as bytes.
pub fn encode(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Exactly `N` words from `state`; `plugin` names the plugin in the error.
pub fn decode<const N: usize>(state: &[u8], plugin: &str) -> Result<[u64; N], String> {
    if state.len() != 8 * N {
        return Err(format!(
            "{plugin} state must be {} bytes, got {}",
            8 * N,
            state.len()
        ));
    }
    let mut w = [0u64; N];
    for (i, c) in state.chunks_exact(8).enumerate() {
        w[i] = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_lengths_are_checked() {
        let w = [1u64, u64::MAX, 3];
        assert_eq!(decode::<3>(&encode(&w), "x").unwrap(), w);
        assert!(decode::<2>(&encode(&w), "x")
            .unwrap_err()
            .contains("x state must be 16 bytes"));
    }
}
