//! Sharding keys across several servers, the way every dflockd client does it: the server
//! index is CRC-32 (IEEE) of the key's UTF-8 bytes modulo the number of servers, so clients
//! in any language agree on which server owns a key.

/// Picks a server index in `0..servers` for `key`.
pub type ShardFn = fn(key: &str, servers: usize) -> usize;

/// CRC-32 (IEEE) of the key modulo `servers` (the Go, Python and TypeScript clients' rule).
///
/// # Panics
/// If `servers` is zero.
pub fn crc32_shard(key: &str, servers: usize) -> usize {
    assert!(servers > 0, "sharding needs at least one server");
    (crc32fast::hash(key.as_bytes()) as usize) % servers
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors the dflockd clients publish (CRC value, then the index for 2, 3 and 5
    /// servers).
    #[test]
    fn published_vectors() {
        let vectors: [(&str, u32, [usize; 3]); 5] = [
            ("my-key", 0xd6e3_3ac1, [1, 2, 2]),
            ("job-1", 0x4c42_3a3f, [1, 2, 3]),
            ("a", 0xe8b7_be43, [1, 0, 2]),
            ("row:42", 0x40a3_b7e1, [1, 2, 0]),
            ("ключ", 0x0caf_961a, [0, 0, 3]),
        ];
        for (key, crc, indices) in vectors {
            assert_eq!(crc32fast::hash(key.as_bytes()), crc, "{key}");
            for (n, want) in [2, 3, 5].into_iter().zip(indices) {
                assert_eq!(crc32_shard(key, n), want, "{key} over {n} servers");
            }
        }
    }
}
