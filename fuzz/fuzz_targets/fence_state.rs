//! Fuzzes the fence state file's parser (`server::parse_ceiling`): whatever a hostile or
//! corrupted file holds, it is read as one u64 or refused, never a panic, and what it
//! accepts is exactly the decimal number the file holds (so no junk reads as zero, which
//! would let fencing tokens go backwards after a restart).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockcheck_server::parse_ceiling;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(value) = parse_ceiling(text) {
        assert_eq!(text.trim().trim_start_matches('0'), value.to_string().trim_start_matches('0'));
    }
});
