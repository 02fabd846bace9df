//! The lock API every lockcheck locker implements, and nothing else: a backend author (or a
//! user who writes against `dyn Locker`) depends on this crate alone, without any backend.
//!
//! A [`Locker`] grants [`Lease`]s on keys: locks, or permits of a semaphore. Every lease
//! carries an unguessable [`OwnerToken`] (release and refresh prove ownership with it) and a
//! [`FencingToken`] that strictly increases per key, so a resource can refuse a writer whose
//! lease silently expired (Kleppmann 2016). Requests are checked at the edge
//! ([`LeaseRequest::validate`]); outcomes are typed ([`LockError`]: failed, or
//! indeterminate). A locker declares [`Capabilities`]; the lockcheck conformance suite checks
//! every claim. [`Locker::queued`] optionally tells when an acquire is queued.
//!
//! The reference lockers (memory, Redis, NATS, dflockd) and `connect(url)` for every scheme
//! are in `lockcheck-impls`, which re-exports this crate.
//!
//! ```
//! use std::time::Duration;
//! use lockcheck_api::{InvalidInput, LeaseRequest, LockError};
//!
//! let request = LeaseRequest::lock("reports daily", Duration::from_secs(5));
//! assert!(matches!(request.validate(), Err(LockError::InvalidInput(InvalidInput::ForbiddenCharInKey { .. }))));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod cleanup;
mod error;
mod guard;
mod lease;
mod locker;
mod queued;
mod request;

pub use error::{InvalidInput, LockError};
pub use guard::{AutoRenew, LockGuard, LostReason};
pub use lease::{BadOwnerToken, FencingToken, Lease, OwnerToken};
// The claims live with the spec they select properties of, so that the history checkers
// can read them without this crate's runtime.
pub use lockcheck_model::spec::Capabilities;
pub use locker::Locker;
pub use queued::{Counted, Queued, QueuedCount};
pub use request::{
    LeaseRequest, MAX_KEY_BYTES, MAX_PERMITS, MAX_TTL, MAX_WAIT, MIN_TTL, validate_key, validate_ttl, validate_wait,
};
