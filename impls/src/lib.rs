//! The lockcheck lock API and its reference lockers.
//!
//! A [`Locker`] grants [`Lease`]s on keys: locks, or permits of a semaphore. Every lease
//! carries an unguessable [`OwnerToken`] (release and refresh prove ownership with it) and a
//! [`FencingToken`] that strictly increases per key, so a resource can refuse a writer whose
//! lease silently expired (Kleppmann 2016). Backends declare [`Capabilities`]; the lockcheck
//! conformance suite checks every claim.
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use lockcheck_impls::{AutoRenew, LeaseRequest, LockGuard, Locker, MemoryLocker};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
//! let locker: Arc<dyn Locker> = Arc::new(MemoryLocker::new());
//! let request = LeaseRequest::lock("reports/daily", Duration::from_secs(5));
//! let guard = LockGuard::acquire(locker.clone(), &request, Duration::from_secs(1), Some(AutoRenew::default())).await?;
//! println!("holding {} with fence {}", guard.lease().key(), guard.lease().fence());
//! assert!(guard.release().await?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod cleanup;
mod connect;
mod error;
mod guard;
mod lease;
mod locker;
mod memory;
mod queued;
mod request;
mod sync;

pub use connect::{LockerUrl, connect, parse, schemes};
pub use error::{InvalidInput, LockError};
pub use guard::{AutoRenew, LockGuard, LostReason};
pub use lease::{BadOwnerToken, FencingToken, Lease, OwnerToken};
// The claims live with the spec they select properties of, so that the history checkers
// can read them without this crate's runtime.
pub use lockcheck_model::spec::Capabilities;
pub use locker::Locker;
pub use memory::MemoryLocker;
pub use queued::{Counted, Queued, QueuedCount};
pub use request::{
    LeaseRequest, MAX_KEY_BYTES, MAX_PERMITS, MAX_TTL, MAX_WAIT, MIN_TTL, validate_key, validate_ttl, validate_wait,
};

#[cfg(feature = "redis")]
pub mod redis;

#[cfg(feature = "nats")]
pub mod nats;

#[cfg(feature = "dflockd")]
pub mod dflockd;
