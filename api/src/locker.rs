//! The lock API every backend implements.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::Capabilities;
use crate::error::LockError;
use crate::lease::Lease;
use crate::queued::Queued;
use crate::request::LeaseRequest;

/// A lock backend: leased locks and semaphores with owner tokens and fencing tokens.
///
/// Usable generically (`L: Locker`) and through `dyn Locker` (the CLI picks backends at
/// run time); `Arc<L>` and `Box<L>` are lockers too.
///
/// # Cancel safety
///
/// Every method may be cancelled by dropping its future. For [`Locker::acquire`] and
/// [`Locker::try_acquire`] the contract is: **a dropped acquire never leaves a grant behind
/// that nobody holds a token for.** If a grant races the cancellation, the backend releases it
/// or hands it to the next waiter. Backends that cannot know whether a dropped request took
/// effect (a request lost on the wire) still guarantee that any such grant ends with its TTL,
/// and report the uncertainty as [`LockError::Indeterminate`] wherever they can return at all.
/// Dropping `release` or `refresh` leaves the lease either as it was or released/refreshed.
#[async_trait]
pub trait Locker: Send + Sync {
    /// A short human-readable name of the backend and its address, e.g. `memory` or
    /// `redis://127.0.0.1:6379/0`.
    fn describe(&self) -> String;

    /// What this backend promises.
    fn capabilities(&self) -> Capabilities;

    /// Takes the lease if a slot is free right now; `Ok(None)` if the key is at its limit.
    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError>;

    /// Waits up to `wait` for a slot. [`LockError::TimedOut`] when the bound runs out.
    /// A `wait` of zero is [`Locker::try_acquire`] with a timeout error instead of `None`.
    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError>;

    /// Gives the lease back. `Ok(true)` if it was still held and is now released;
    /// `Ok(false)` if it had already expired or been released (nothing changed).
    async fn release(&self, lease: &Lease) -> Result<bool, LockError>;

    /// Extends the lease to `ttl` from now. `Ok(Some(renewed))` if it was still held;
    /// `Ok(None)` if it was lost (nothing changed).
    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError>;

    /// The lease's remaining time by the backend's clock; `Ok(None)` if it is no longer held.
    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError>;

    /// This client's acquires that are queued: each has reached the point where a release will
    /// wake it (registered for a wake-up, or in the backend's queue). `None` when the locker
    /// cannot tell; callers then have only time to go by.
    ///
    /// The count covers all of the locker's keys. Clients that share one locker object (one
    /// `MemoryLocker` behind an `Arc`, say) see one count, theirs together.
    fn queued(&self) -> Option<Queued> {
        None
    }
}

macro_rules! forward_locker {
    ($($ptr:ty),*) => {$(
        #[async_trait]
        impl<L: Locker + ?Sized> Locker for $ptr {
            fn describe(&self) -> String {
                (**self).describe()
            }
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
            async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
                (**self).try_acquire(request).await
            }
            async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
                (**self).acquire(request, wait).await
            }
            async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
                (**self).release(lease).await
            }
            async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
                (**self).refresh(lease, ttl).await
            }
            async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
                (**self).remaining_ttl(lease).await
            }
            fn queued(&self) -> Option<Queued> {
                (**self).queued()
            }
        }
    )*};
}

forward_locker!(Arc<L>, Box<L>);
