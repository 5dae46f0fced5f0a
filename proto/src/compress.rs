//! Compression for large, repetitive bodies (a broker's topic list in its registration): LZ4 blocks
//! with the uncompressed length in front.
//!
//! Decompression checks that length against the caller's limit before allocating, so a forged
//! length cannot make a server allocate gigabytes.

/// Compressed bytes of `data`, its length (u32, little endian) in front.
pub fn compress(data: &[u8]) -> Vec<u8> {
    lz4_flex::block::compress_prepend_size(data)
}

/// Why compressed bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    /// The bytes are too short to hold the length.
    #[error("compressed payload of {len} bytes is too short to hold its 4-byte length")]
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// The announced length is over the limit.
    #[error("compressed payload expands to {len} bytes, over the limit of {max} bytes; send less or raise the limit")]
    TooLarge {
        /// Length announced.
        len: usize,
        /// The caller's limit.
        max: usize,
    },
    /// The bytes are not a valid LZ4 block of the announced length.
    #[error("compressed payload is corrupt: {0}")]
    Corrupt(String),
}

/// The bytes `compressed` holds, if they expand to at most `max_len` bytes.
pub fn decompress(compressed: &[u8], max_len: usize) -> Result<Vec<u8>, DecompressError> {
    let Some(header) = compressed.first_chunk::<4>() else {
        return Err(DecompressError::Truncated { len: compressed.len() });
    };
    let len = u32::from_le_bytes(*header) as usize;
    if len > max_len {
        return Err(DecompressError::TooLarge { len, max: max_len });
    }
    lz4_flex::block::decompress(&compressed[4..], len).map_err(|error| DecompressError::Corrupt(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            prop_assert_eq!(decompress(&compress(&data), data.len()).unwrap(), data);
        }

        #[test]
        fn garbage_is_refused_without_panicking(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decompress(&data, 1 << 16);
        }
    }

    #[test]
    fn forged_lengths_are_refused_before_allocating() {
        let mut forged = compress(b"hello hello hello");
        forged[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decompress(&forged, 1 << 20),
            Err(DecompressError::TooLarge {
                len: u32::MAX as usize,
                max: 1 << 20
            })
        );
        assert!(matches!(
            decompress(b"ab", 10),
            Err(DecompressError::Truncated { len: 2 })
        ));
    }

    #[test]
    fn topic_lists_shrink() {
        let names: String = (0..1000).map(|index| format!("orders-region-{index:05}\n")).collect();
        let compressed = compress(names.as_bytes());
        assert!(
            compressed.len() * 3 < names.len(),
            "{} -> {}",
            names.len(),
            compressed.len()
        );
    }
}
