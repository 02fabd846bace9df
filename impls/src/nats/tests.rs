//! Unit tests of the parts of the NATS locker that need no server; the locker itself is
//! tested against real NATS servers in `conformance/tests/nats*.rs`.

use std::time::Duration;

use super::entry::{decode_key, encode_key, entry_value, parse_entry, server_ttl, taken_over_in};
use crate::OwnerToken;

#[test]
fn keys_map_to_valid_nats_kv_keys_and_back() {
    for key in ["reports/daily", "a.b", "=", "ключ", "日本語/キー", "x*y>z", ".leading", "trailing.", "%41", "=41"]
    {
        let encoded = encode_key(key);
        assert!(
            encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-/_=".contains(&b)),
            "{key:?} encoded as {encoded:?} has a byte NATS KV keys forbid"
        );
        assert!(!encoded.contains('.'), "{encoded:?}: dots are NATS token separators");
        assert_eq!(decode_key(&encoded).as_deref(), Some(key), "round trip of {key:?}");
    }
}

#[test]
fn distinct_keys_never_share_an_encoding() {
    // `=` is the escape byte, so a key spelling an escape must not collide with the byte.
    assert_ne!(encode_key("=2E"), encode_key("."));
    assert_ne!(encode_key("a=41"), encode_key("aA"));
}

#[test]
fn plain_keys_stay_readable() {
    assert_eq!(encode_key("orders/2024-01_run"), "orders/2024-01_run");
    assert_eq!(encode_key("a.b"), "a=2Eb");
}

#[test]
fn ttls_round_up_to_whole_seconds() {
    assert_eq!(server_ttl(Duration::from_millis(1)), Duration::from_secs(1));
    assert_eq!(server_ttl(Duration::from_millis(1000)), Duration::from_secs(1));
    assert_eq!(server_ttl(Duration::from_millis(1001)), Duration::from_secs(2));
    assert_eq!(server_ttl(Duration::from_secs(30)), Duration::from_secs(30));
}

#[test]
fn entry_values_carry_owner_and_asked_ttl() {
    let owner = OwnerToken::random();
    let value = entry_value(owner, Duration::from_millis(2500), None);
    assert_eq!(parse_entry(value.as_bytes()), Some((owner, Duration::from_millis(2500))));
    assert_eq!(taken_over_in(value.as_bytes()), None);
    assert_eq!(parse_entry(b"not a lease"), None);
    // A waiter's take-over of an offered lease names the revision it replaced.
    let taken = entry_value(owner, Duration::from_secs(5), Some(42));
    assert_eq!(parse_entry(taken.as_bytes()), Some((owner, Duration::from_secs(5))));
    assert_eq!(taken_over_in(taken.as_bytes()), Some(42));
}
