//! The lock API every backend implements, and the capabilities a backend declares.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::LockError;
use crate::lease::Lease;
use crate::request::LeaseRequest;

/// What a backend promises. The conformance suite checks every claimed property and
/// reports the unclaimed ones as "not claimed" — never silently.
///
/// The struct is `#[non_exhaustive]` so that new promises can be added; a backend outside
/// this crate states its own with [`Capabilities::none`] and the `with_*` setters:
///
/// ```
/// use lockcheck_impls::Capabilities;
///
/// let claims = Capabilities::none().with_fencing(true).with_server_side_expiry(true).with_session_bound(true);
/// assert!(claims.fencing && claims.session_bound && !claims.fifo);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Capabilities {
    /// Fencing tokens strictly increase per key, in grant order.
    pub fencing: bool,
    /// Fencing tokens stay monotonic across a server restart.
    pub fencing_survives_restart: bool,
    /// Waiters are granted in arrival order.
    pub fifo: bool,
    /// Leases expire on the backend itself: a crashed holder's slot frees within its TTL.
    pub server_side_expiry: bool,
    /// Held leases survive a restart of the backend's server.
    pub survives_server_restart: bool,
    /// Permit limits above 1.
    pub semaphores: bool,
    /// Waiters are woken by the backend (no polling delay on hand-off).
    pub push_wakeups: bool,
    /// Leases end with the client's session (its connection; a ZooKeeper or etcd session, a
    /// Postgres backend): when the session ends, the backend frees the client's leases at
    /// once, before their TTL. A crashed holder's early release is then correct; a *live*
    /// holder whose session is cut loses its lease while it still believes it holds it, which
    /// only fencing makes safe.
    pub session_bound: bool,
}

macro_rules! capability_setters {
    ($($(#[$doc:meta])* $setter:ident => $field:ident;)*) => {$(
        $(#[$doc])*
        #[must_use]
        pub const fn $setter(mut self, claimed: bool) -> Self {
            self.$field = claimed;
            self
        }
    )*};
}

impl Capabilities {
    /// No promise at all: the starting point for a backend's own claims.
    pub const fn none() -> Self {
        Capabilities {
            fencing: false,
            fencing_survives_restart: false,
            fifo: false,
            server_side_expiry: false,
            survives_server_restart: false,
            semaphores: false,
            push_wakeups: false,
            session_bound: false,
        }
    }

    /// Everything a correct single-process locker offers (the memory locker's claims).
    pub const fn all_in_process() -> Self {
        Capabilities {
            fencing: true,
            fencing_survives_restart: false,
            fifo: true,
            server_side_expiry: true,
            survives_server_restart: false,
            semaphores: true,
            push_wakeups: true,
            session_bound: false,
        }
    }

    capability_setters! {
        /// Claims (or not) [`Capabilities::fencing`].
        with_fencing => fencing;
        /// Claims (or not) [`Capabilities::fencing_survives_restart`].
        with_fencing_survives_restart => fencing_survives_restart;
        /// Claims (or not) [`Capabilities::fifo`].
        with_fifo => fifo;
        /// Claims (or not) [`Capabilities::server_side_expiry`].
        with_server_side_expiry => server_side_expiry;
        /// Claims (or not) [`Capabilities::survives_server_restart`].
        with_survives_server_restart => survives_server_restart;
        /// Claims (or not) [`Capabilities::semaphores`].
        with_semaphores => semaphores;
        /// Claims (or not) [`Capabilities::push_wakeups`].
        with_push_wakeups => push_wakeups;
        /// Claims (or not) [`Capabilities::session_bound`].
        with_session_bound => session_bound;
    }
}

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
        }
    )*};
}

forward_locker!(Arc<L>, Box<L>);
