//! Typed errors of every lock operation.
//!
//! The one distinction that matters most to a lock user is between an operation that
//! *definitely did not happen* and one whose outcome is *unknown*: a request that timed out
//! on the wire may still have taken the lock on the server. [`LockError::Indeterminate`] says
//! so explicitly; treating it as "not acquired" is how double grants are born.

use std::time::Duration;

/// Why a key, TTL, wait bound or permit limit was refused before anything was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// The key is the empty string.
    #[error("the key is empty")]
    EmptyKey,
    /// The key is longer than [`crate::MAX_KEY_BYTES`].
    #[error("the key is {len} bytes long; the limit is {max} bytes")]
    KeyTooLong {
        /// Length of the refused key in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The key contains a control character or whitespace (a newline is protocol injection
    /// for line protocols such as dflockd's).
    #[error("the key contains {found:?} at byte {at}; keys may not contain whitespace or control characters")]
    ForbiddenCharInKey {
        /// The refused character.
        found: char,
        /// Its byte offset in the key.
        at: usize,
    },
    /// The TTL is below [`crate::MIN_TTL`] (zero included).
    #[error("the TTL {ttl:?} is below the minimum {min:?}")]
    TtlTooShort {
        /// The refused TTL.
        ttl: Duration,
        /// The minimum.
        min: Duration,
    },
    /// The TTL is above [`crate::MAX_TTL`].
    #[error("the TTL {ttl:?} is above the maximum {max:?}")]
    TtlTooLong {
        /// The refused TTL.
        ttl: Duration,
        /// The maximum.
        max: Duration,
    },
    /// The wait bound of an acquire is above [`crate::MAX_WAIT`].
    #[error("the wait bound {wait:?} is above the maximum {max:?}")]
    WaitTooLong {
        /// The refused wait bound.
        wait: Duration,
        /// The maximum.
        max: Duration,
    },
    /// The permit limit is zero or above [`crate::MAX_PERMITS`].
    #[error("the permit limit {limit} is outside 1..={max}")]
    BadPermitLimit {
        /// The refused limit.
        limit: u32,
        /// The maximum.
        max: u32,
    },
    /// A backend-specific restriction (for example a TTL the backend cannot represent), or a
    /// backend URL that is malformed for its scheme.
    #[error("{0}")]
    Backend(String),
    /// A backend URL whose scheme no locker serves.
    #[error("unknown backend scheme in {url:?}; known: {known}")]
    UnknownScheme {
        /// The URL.
        url: String,
        /// The schemes this build serves.
        known: String,
    },
    /// A backend URL whose locker is behind a cargo feature this build lacks.
    #[error("{url:?} needs lockcheck-impls built with the `{feature}` feature")]
    SchemeNotBuiltIn {
        /// The URL.
        url: String,
        /// The missing cargo feature.
        feature: &'static str,
    },
}

/// The error of a lock operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The request was refused before anything changed anywhere.
    #[error("invalid input: {0}")]
    InvalidInput(#[from] InvalidInput),
    /// `acquire` waited its whole wait bound without a grant. Nothing is held.
    #[error("timed out after waiting {waited:?} for the lock")]
    TimedOut {
        /// How long the caller waited.
        waited: Duration,
    },
    /// `acquire` ran out of its wait bound on the caller's side while its request was still
    /// with the backend (the client gave up on the wire, as a dflockd client does by closing
    /// its connection). The backend may still grant it before it learns the caller left; the
    /// cancel-safety clean-up gives any such grant back. To the caller it is a time-out.
    #[error("timed out after waiting {waited:?} for the lock (given up locally)")]
    TimedOutLocally {
        /// How long the caller waited.
        waited: Duration,
    },
    /// The operation was cancelled before it took effect. Nothing is held.
    #[error("the operation was cancelled")]
    Cancelled,
    /// The key already exists with a different permit limit (a semaphore of limit 3
    /// cannot be acquired as a lock, nor as a semaphore of limit 5).
    #[error("key {key:?} has permit limit {existing}, the request asked for {requested}")]
    LimitMismatch {
        /// The key.
        key: String,
        /// The limit the key has.
        existing: u32,
        /// The limit the request asked for.
        requested: u32,
    },
    /// The backend does not offer this operation (see [`crate::Capabilities`]).
    #[error("the backend does not support {operation}")]
    Unsupported {
        /// The operation, for example `"semaphores"`.
        operation: &'static str,
    },
    /// The backend refused or could not be reached, and the operation *definitely* did
    /// not take effect (for example the connection could not be opened).
    #[error("backend unavailable: {message}")]
    Unavailable {
        /// What went wrong.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The request may or may not have taken effect: a timeout or a dropped connection after
    /// the request was sent. A lock may now be held on the server by nobody who knows its
    /// token; it will expire with its TTL.
    #[error("outcome unknown for {operation}: {message}")]
    Indeterminate {
        /// The operation, for example `"acquire"`.
        operation: &'static str,
        /// What went wrong.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The backend answered something the client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl LockError {
    /// An [`LockError::Unavailable`] with a message and no source.
    pub fn unavailable(message: impl Into<String>) -> Self {
        LockError::Unavailable { message: message.into(), source: None }
    }

    /// An [`LockError::Indeterminate`] for `operation` with a message and no source.
    pub fn indeterminate(operation: &'static str, message: impl Into<String>) -> Self {
        LockError::Indeterminate { operation, message: message.into(), source: None }
    }

    /// The request was refused as invalid input.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, LockError::InvalidInput(_))
    }

    /// `acquire` ran out of its wait bound (on the backend or on the caller's side).
    pub fn is_timeout(&self) -> bool {
        matches!(self, LockError::TimedOut { .. } | LockError::TimedOutLocally { .. })
    }

    /// The operation was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, LockError::Cancelled)
    }

    /// The backend could not be reached and nothing happened.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, LockError::Unavailable { .. })
    }

    /// The outcome is unknown: the operation may have taken effect.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, LockError::Indeterminate { .. })
    }

    /// Whether the operation definitely did not take effect. Only indeterminate outcomes
    /// (and protocol errors, whose effect is unknown) answer `false`.
    pub fn definitely_not_applied(&self) -> bool {
        !matches!(self, LockError::Indeterminate { .. } | LockError::Protocol(_))
    }
}
