//! lockcheck's reference lockers — memory, Redis, NATS JetStream KV, the dflockd client — and
//! [`connect`], which turns a URL of any of their schemes into a locker. The lock API they
//! implement is `lockcheck-api`'s, re-exported here.
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

mod connect;
mod memory;
mod sync;

// Every networked locker cleans up after a cancelled operation the same way.
#[cfg(any(feature = "redis", feature = "nats", feature = "dflockd", feature = "etcd", feature = "postgres"))]
pub(crate) use lockcheck_api::cleanup;

pub use connect::{LockerUrl, connect, parse, schemes};
pub use lockcheck_api::{
    AutoRenew, BadOwnerToken, Capabilities, Counted, FencingToken, InvalidInput, Lease, LeaseRequest, LockError,
    LockGuard, Locker, LostReason, MAX_KEY_BYTES, MAX_PERMITS, MAX_TTL, MAX_WAIT, MIN_TTL, OwnerToken, Queued,
    QueuedCount, validate_key, validate_ttl, validate_wait,
};
pub use memory::MemoryLocker;

#[cfg(feature = "redis")]
pub mod redis;

#[cfg(feature = "nats")]
pub mod nats;

#[cfg(feature = "dflockd")]
pub mod dflockd;

#[cfg(feature = "etcd")]
pub mod etcd;

#[cfg(feature = "postgres")]
pub mod postgres;
