//! Leases: what a grant hands to its holder.
//!
//! A lease names the key, carries an unguessable [`OwnerToken`] that proves ownership to
//! release and refresh, and a [`FencingToken`] that a protected resource uses to refuse a
//! writer whose lease has silently expired (Kleppmann, "How to do distributed locking", 2016;
//! Chubby's sequencers, Burrows 2006).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// The unguessable proof of ownership of one grant: 128 bits, written as 32 lowercase hex
/// digits on the wire (the format dflockd servers use). Network backends draw all 128 at
/// random ([`OwnerToken::random`]); the memory locker draws 64 from a per-locker generator and
/// puts a unique counter in the rest (its table module explains why that is enough in one
/// process).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerToken(u128);

impl OwnerToken {
    /// A fresh random token.
    pub fn random() -> Self {
        OwnerToken(rand::random())
    }

    /// The token with these 128 bits (a backend that receives tokens from its server).
    pub const fn from_bits(bits: u128) -> Self {
        OwnerToken(bits)
    }

    /// The token's 128 bits.
    pub const fn bits(self) -> u128 {
        self.0
    }
}

impl fmt::Display for OwnerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for OwnerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short form: enough to tell holders apart in a history, not enough to steal a lock
        // from a log line.
        write!(f, "OwnerToken({:08x}…)", (self.0 >> 96) as u32)
    }
}

/// A string that is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an owner token is 32 hex digits, got {0:?}")]
pub struct BadOwnerToken(pub String);

impl FromStr for OwnerToken {
    type Err = BadOwnerToken;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // One pass (every dflockd grant parses one): 32 hex digits, either case.
        let bad = || BadOwnerToken(s.to_owned());
        if s.len() != 32 {
            return Err(bad());
        }
        s.bytes()
            .try_fold(0u128, |bits, b| {
                let digit = (b as char).to_digit(16).ok_or_else(bad)?;
                Ok(bits << 4 | u128::from(digit))
            })
            .map(OwnerToken)
    }
}

/// A fencing token: strictly increasing per key, in grant order. A resource that remembers
/// the largest token it accepted and refuses smaller ones cannot be corrupted by a holder
/// whose lease expired while it was paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One grant of a lock or of one permit of a semaphore.
///
/// `acquired_at + ttl` is the holder's *belief* of when the lease ends. Backends set
/// `acquired_at` to a lower bound on the server's grant instant: the local instant the granting
/// request was *sent* (or earlier), so the belief never outlives the server's own expiry, short
/// of clock drift between the two. Where a request can wait in a server-side queue before its
/// grant (dflockd), that would charge the whole wait to the lease; such a backend estimates the
/// grant instant from the reply's arrival and the connection's round trips instead, and says
/// how the estimate can err.
///
/// The key is shared (`Arc<str>`): a backend that already holds the key's name (the memory
/// locker's table) hands out leases without copying it, and cloning a lease is cheap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    key: Arc<str>,
    owner: OwnerToken,
    fence: FencingToken,
    ttl: Duration,
    acquired_at: Instant,
    limit: u32,
}

impl Lease {
    /// A lease; backends build these when they grant. `key` may be a `&str`, a `String` or
    /// an `Arc<str>` (shared, not copied).
    pub fn new(
        key: impl Into<Arc<str>>,
        owner: OwnerToken,
        fence: FencingToken,
        ttl: Duration,
        acquired_at: Instant,
        limit: u32,
    ) -> Self {
        Lease { key: key.into(), owner, fence, ttl, acquired_at, limit }
    }

    /// The locked key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The proof of ownership.
    pub fn owner(&self) -> OwnerToken {
        self.owner
    }

    /// The fencing token of this grant.
    pub fn fence(&self) -> FencingToken {
        self.fence
    }

    /// The lease duration this grant (or its latest refresh) asked for.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The local instant from which the TTL counts (the grant, or the latest refresh).
    pub fn acquired_at(&self) -> Instant {
        self.acquired_at
    }

    /// The permit limit of the key (1 for a lock).
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The local instant after which the holder must assume the lease is gone.
    pub fn expires_at(&self) -> Instant {
        self.acquired_at + self.ttl
    }

    /// Time left by the holder's own clock (zero once past [`Lease::expires_at`]). The
    /// backend's view is [`crate::Locker::remaining_ttl`].
    pub fn locally_remaining(&self) -> Duration {
        self.expires_at().saturating_duration_since(Instant::now())
    }

    /// This lease after a successful refresh: same grant, new TTL counted from `at`.
    pub fn refreshed(&self, ttl: Duration, at: Instant) -> Lease {
        Lease { ttl, acquired_at: at, ..self.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_tokens_are_32_hex_digits_in_either_case() {
        let bits = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210_u128;
        assert_eq!("0123456789abcdeffedcba9876543210".parse::<OwnerToken>().unwrap().bits(), bits);
        assert_eq!("0123456789ABCDEFFEDCBA9876543210".parse::<OwnerToken>().unwrap().bits(), bits);
        assert_eq!(OwnerToken(bits).to_string().parse::<OwnerToken>().unwrap().bits(), bits);
        for bad in [
            "",
            "0123",
            "0123456789abcdeffedcba987654321g",
            "+123456789abcdeffedcba9876543210",
            "0123456789abcdeffedcba98765432é",
        ] {
            assert!(bad.parse::<OwnerToken>().is_err(), "{bad:?}");
        }
    }
}
