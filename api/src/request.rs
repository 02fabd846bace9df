//! What an acquire asks for, and the limits every backend enforces on it.
//!
//! The limits are the same on every backend so that a key that works on one works on all:
//! dflockd's line protocol caps lines at 256 bytes and cannot carry whitespace in keys, and a
//! newline in a key is protocol injection there.

use std::time::Duration;

use crate::error::{InvalidInput, LockError};

/// The longest key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 200;
/// The shortest lease. Below a millisecond no backend can keep its promise.
pub const MIN_TTL: Duration = Duration::from_millis(1);
/// The longest lease: a day. Longer leases are almost always a bug (a lock held "forever").
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest wait bound of an acquire: a day.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);
/// The largest permit limit of a semaphore.
pub const MAX_PERMITS: u32 = 1 << 16;

/// A request for a lease on a key: a lock (`limit` 1) or one permit of a semaphore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRequest {
    key: String,
    ttl: Duration,
    limit: u32,
    // Whether the request passed `validate` when it was built. A request cannot change, and
    // backends validate it on every operation: a reused request then costs a load, not a scan
    // of its key (the scan was a tenth of the instructions of an uncontended try+release of
    // the memory locker).
    valid: bool,
}

impl LeaseRequest {
    /// A lock on `key` for `ttl`.
    pub fn lock(key: impl Into<String>, ttl: Duration) -> Self {
        Self::new(key.into(), ttl, 1)
    }

    /// One of `limit` permits of the semaphore `key`, for `ttl`.
    pub fn semaphore(key: impl Into<String>, limit: u32, ttl: Duration) -> Self {
        Self::new(key.into(), ttl, limit)
    }

    fn new(key: String, ttl: Duration, limit: u32) -> Self {
        let mut request = LeaseRequest { key, ttl, limit, valid: false };
        request.valid = request.check().is_ok();
        request
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease duration.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The permit limit (1 for a lock).
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Checks the request against the limits above. Every backend calls this before it
    /// sends or changes anything.
    pub fn validate(&self) -> Result<(), LockError> {
        if self.valid { Ok(()) } else { self.check() }
    }

    fn check(&self) -> Result<(), LockError> {
        validate_key(&self.key)?;
        validate_ttl(self.ttl)?;
        if self.limit == 0 || self.limit > MAX_PERMITS {
            return Err(InvalidInput::BadPermitLimit { limit: self.limit, max: MAX_PERMITS }.into());
        }
        Ok(())
    }
}

/// Checks a key: non-empty, at most [`MAX_KEY_BYTES`], no whitespace or control characters.
pub fn validate_key(key: &str) -> Result<(), LockError> {
    if key.is_empty() {
        return Err(InvalidInput::EmptyKey.into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(InvalidInput::KeyTooLong { len: key.len(), max: MAX_KEY_BYTES }.into());
    }
    // Fast path: most keys are printable ASCII. No early exit, so the compiler checks many
    // bytes per instruction.
    if key.bytes().fold(true, |printable, b| printable & b.is_ascii_graphic()) {
        return Ok(());
    }
    if let Some((at, found)) = key.char_indices().find(|(_, c)| c.is_control() || c.is_whitespace()) {
        return Err(InvalidInput::ForbiddenCharInKey { found, at }.into());
    }
    Ok(())
}

/// Checks a TTL: within [`MIN_TTL`]..=[`MAX_TTL`].
pub fn validate_ttl(ttl: Duration) -> Result<(), LockError> {
    if ttl < MIN_TTL {
        return Err(InvalidInput::TtlTooShort { ttl, min: MIN_TTL }.into());
    }
    if ttl > MAX_TTL {
        return Err(InvalidInput::TtlTooLong { ttl, max: MAX_TTL }.into());
    }
    Ok(())
}

/// Checks a wait bound: at most [`MAX_WAIT`] (zero means "try once").
pub fn validate_wait(wait: Duration) -> Result<(), LockError> {
    if wait > MAX_WAIT {
        return Err(InvalidInput::WaitTooLong { wait, max: MAX_WAIT }.into());
    }
    Ok(())
}
