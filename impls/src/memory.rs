//! The in-memory reference locker: correct and fast, for one process.
//!
//! Per key it keeps the holders, a FIFO queue of waiters and the permit limit; fencing tokens
//! come from one counter. Expiry is enforced by the locker on tokio's clock (so tests can
//! pause time): an expired lease stops counting the moment its deadline passes, and queued
//! waiters wake at the key's earliest lease end (the head of the queue always in time) so an
//! expiry hands the slot on without anyone calling in. A release or expiry grants the freed
//! slot straight to the head of the queue — waiters are never polled.
//!
//! `acquire` is cancel-safe: dropping its future withdraws the waiter under the table lock;
//! if a grant raced the drop, it is released and handed to the next waiter on the spot.
//!
//! The cost model: `try_acquire` and `release` take one mutex and one hash lookup each and
//! allocate nothing (a key stays in the table while idle, and a lease shares the key's name
//! with it); a queued acquire costs one allocation for its grant slot and one timer, and a
//! hand-off wakes exactly the waiter it grants (the table's module doc explains when the next
//! head must be nudged too). Called as inherent methods the futures are not boxed; through
//! the [`Locker`] trait (`dyn` or generic) each call boxes its future once.

mod table;
mod waiter;

#[cfg(test)]
mod tests;

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::{Instant, sleep_until};

use crate::Capabilities;
use crate::Lease;
use crate::LockError;
use crate::Locker;
use crate::Queued;
use crate::sync::Mutex;
use crate::{LeaseRequest, validate_ttl, validate_wait};
use table::{Enqueued, Table};
use waiter::{GrantSlot, SlotEvent};

/// The in-memory reference locker. Cheap to create; share it with an `Arc`.
///
/// ```
/// use std::time::Duration;
/// use lockcheck_impls::{LeaseRequest, Locker, MemoryLocker};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
/// let locker = MemoryLocker::new();
/// let request = LeaseRequest::lock("invoice-42", Duration::from_secs(10));
/// let lease = locker.acquire(&request, Duration::from_secs(1)).await?;
/// assert!(locker.try_acquire(&request).await?.is_none(), "held: a second try fails");
/// assert!(locker.release(&lease).await?, "it was still held");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Default)]
pub struct MemoryLocker {
    table: Mutex<Table>,
}

impl MemoryLocker {
    /// An empty locker.
    pub fn new() -> Self {
        Self::default()
    }

    fn table(&self) -> impl std::ops::DerefMut<Target = Table> + '_ {
        // A panic while holding the lock cannot leave the table half-updated in a way that
        // breaks an invariant we rely on, but be loud rather than guess.
        self.table.lock().expect("memory locker table poisoned")
    }
}

/// A queued acquire. Dropping it (cancellation, timeout) withdraws the waiter; a grant that
/// raced the drop is handed to the next waiter.
struct Waiting<'a> {
    locker: &'a MemoryLocker,
    key: &'a str,
    id: u64,
    slot: GrantSlot,
    done: bool,
}

impl Waiting<'_> {
    /// The wait bound ran out. A grant that arrived in the meantime is still taken: it came
    /// within the bound. So is a slot freed by a lease that ended exactly at the bound: its
    /// expiry timer may simply not have run yet.
    fn time_out(mut self, waited: Duration) -> Result<Lease, LockError> {
        self.done = true;
        let now = Instant::now();
        let mut table = self.locker.table();
        table.expire_due(self.key, now);
        let raced = table.withdraw(self.key, self.id, &self.slot, true, now);
        raced.ok_or(LockError::TimedOut { waited })
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.locker.table().withdraw(self.key, self.id, &self.slot, false, Instant::now());
        }
    }
}

/// The lock API without boxing: the [`Locker`] implementation below forwards to these. Through
/// `dyn Locker` (or generically through the trait) each call costs one boxed future on top.
impl MemoryLocker {
    /// [`Locker::try_acquire`] without the trait's boxed future: what the trait calls, and
    /// what a caller that knows its locker is a `MemoryLocker` gets by calling it directly.
    pub async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        request.validate()?;
        self.table().try_acquire(request, Instant::now())
    }

    /// [`Locker::acquire`], unboxed (see [`MemoryLocker::try_acquire`]).
    pub async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        request.validate()?;
        validate_wait(wait)?;
        let started = Instant::now();
        let deadline = started + wait;
        let enqueued = self.table().acquire_or_enqueue(request, started, deadline)?;
        let (id, slot, wake_at) = match enqueued {
            Enqueued::Granted(lease) => return Ok(lease),
            Enqueued::Queued { id, slot, wake_at } => (id, slot, wake_at),
        };
        let mut waiting = Waiting { locker: self, key: request.key(), id, slot, done: false };
        // One timer, at the earlier of the wait bound and the key's earliest lease end; the
        // table nudges us (`Rearm`) if we become the head and it would fire too late.
        let timer = sleep_until(wake_at);
        tokio::pin!(timer);
        loop {
            tokio::select! {
                biased;
                event = waiting.slot.next_event() => match event {
                    SlotEvent::Granted(lease) => {
                        waiting.done = true;
                        return Ok(lease);
                    }
                    SlotEvent::Rearm => {
                        let wake_at = self.table().arm(request.key(), &waiting.slot, deadline);
                        timer.as_mut().reset(wake_at);
                    }
                },
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= deadline {
                        return waiting.time_out(wait);
                    }
                    // A lease ended: expire it, which grants the head of the queue (perhaps
                    // us, perhaps someone ahead of us), then re-arm for what is left.
                    let mut table = self.table();
                    table.expire_due(request.key(), now);
                    let wake_at = table.arm(request.key(), &waiting.slot, deadline);
                    drop(table);
                    timer.as_mut().reset(wake_at);
                }
            }
        }
    }

    /// [`Locker::release`], unboxed (see [`MemoryLocker::try_acquire`]).
    pub async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        Ok(self.table().release(lease, Instant::now()))
    }

    /// [`Locker::refresh`], unboxed (see [`MemoryLocker::try_acquire`]).
    pub async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        validate_ttl(ttl)?;
        Ok(self.table().refresh(lease, ttl, Instant::now()))
    }

    /// [`Locker::remaining_ttl`], unboxed (see [`MemoryLocker::try_acquire`]).
    pub async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        Ok(self.table().remaining_ttl(lease, Instant::now()))
    }
}

#[async_trait]
impl Locker for MemoryLocker {
    fn describe(&self) -> String {
        "memory".to_owned()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all_in_process()
    }

    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        MemoryLocker::try_acquire(self, request).await
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        MemoryLocker::acquire(self, request, wait).await
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        MemoryLocker::release(self, lease).await
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        MemoryLocker::refresh(self, lease, ttl).await
    }

    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        MemoryLocker::remaining_ttl(self, lease).await
    }

    /// Every waiter in this locker's queues, all keys, whichever client queued it: a waiter
    /// counts from its enqueueing to its grant or withdrawal, both under the table lock.
    fn queued(&self) -> Option<Queued> {
        Some(self.table().queued())
    }
}
