//! The lease record: how keys, owner tokens and TTLs are written into KV entries and
//! messages, and read back.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::kv;

use crate::{Lease, OwnerToken};

/// The TTL the server enforces for a requested TTL: whole seconds, rounded up.
pub fn server_ttl(ttl: Duration) -> Duration {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

/// Maps a lockcheck key to a NATS KV key, reversibly (see the module docs).
pub fn encode_key(key: &str) -> String {
    let mut encoded = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'/') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("={byte:02X}"));
        }
    }
    encoded
}

/// The inverse of [`encode_key`]; `None` for strings it never produces.
pub fn decode_key(encoded: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'=' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// What a lease's entry holds: the owner token, the TTL the holder asked for in whole
/// milliseconds (rounded down: what the lease promises, while the server keeps the entry for
/// [`server_ttl`]), and — for a lease a waiter took over from an offering holder — the
/// revision of the lease it replaced.
pub(super) fn entry_value(owner: OwnerToken, ttl: Duration, taken_over: Option<u64>) -> String {
    match taken_over {
        Some(revision) => format!("{owner} {} {revision}", ttl.as_millis()),
        None => format!("{owner} {}", ttl.as_millis()),
    }
}

/// The owner token and the asked-for TTL of a lease's entry.
pub(super) fn parse_entry(value: &[u8]) -> Option<(OwnerToken, Duration)> {
    let mut fields = std::str::from_utf8(value).ok()?.split(' ');
    let (owner, millis) = (fields.next()?, fields.next()?);
    Some((owner.parse().ok()?, Duration::from_millis(millis.parse().ok()?)))
}

/// The revision of the lease an entry took over, if a waiter wrote it on an offer.
pub(super) fn taken_over_in(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.split(' ').nth(2)?.parse().ok()
}

/// What a message of the bucket is, from its headers (a stored message's, or the copy the
/// stream republishes to waiters): a lease entry, or a removal — this locker's purge, a KV
/// delete, or a marker the server wrote when a lease's TTL ran out ("MaxAge").
pub(super) fn operation_of(headers: &HeaderMap) -> kv::Operation {
    match (headers.get("KV-Operation"), headers.get(async_nats::header::NATS_MARKER_REASON)) {
        (Some(op), _) if op.as_str() == "DEL" => kv::Operation::Delete,
        (Some(op), _) if op.as_str() == "PURGE" => kv::Operation::Purge,
        (None, Some(reason)) if reason.as_str() == "Remove" => kv::Operation::Delete,
        (None, Some(_)) => kv::Operation::Purge,
        _ => kv::Operation::Put,
    }
}

/// Whether `entry` is `lease`'s (at its grant or a later refresh).
pub(super) fn is_held_by(entry: &kv::Entry, lease: &Lease) -> bool {
    entry.operation == kv::Operation::Put
        && entry.revision >= lease.fence().0
        && parse_entry(&entry.value).is_some_and(|(owner, _)| owner == lease.owner())
}

/// Whether `entry` is a waiter's take-over of the lease offered at `offered`.
pub(super) fn was_taken_over(entry: &kv::Entry, offered: Option<u64>) -> bool {
    entry.operation == kv::Operation::Put && offered.is_some() && taken_over_in(&entry.value) == offered
}
