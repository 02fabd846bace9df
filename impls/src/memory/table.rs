//! The in-memory locker's state: per key the holders, the FIFO queue of waiters and the
//! permit limit; one fence counter for all keys.
//!
//! Everything here is synchronous and takes the current instant as an argument, so loom
//! (which has no clock) can drive it with injected time, and tokio's paused clock drives it in
//! tests. Every transition that frees a slot ends in [`KeyState::hand_off`], which grants the
//! freed slots to the queue's head directly — there is no polling anywhere.
//!
//! # Expiry without a timer per lease
//!
//! Each waiter keeps one timer, armed at the earlier of its wait bound and the key's earliest
//! lease end ([`Table::arm`]); when it fires, the waiter calls [`Table::expire_due`], which
//! grants the head of the queue (and whoever else fits). Only the head's timer matters for
//! liveness, so the table keeps one invariant: **the head's timer is armed no later than the
//! key's earliest lease end.** When a grant, a shortening refresh or a withdrawal would break
//! it, the head is nudged to re-arm. A grant of the same TTL ends after the lease it
//! replaces, so the common hand-off nudges nobody and wakes exactly one task.
//!
//! # Idle keys
//!
//! A key nobody holds or waits for is kept (re-locking it allocates nothing) until the
//! table grows past twice the number of keys in use; then idle keys are swept, so memory
//! stays proportional to the keys in use at a constant amortized cost per new key.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use tokio::time::Instant;

use super::waiter::GrantSlot;
use crate::LeaseRequest;
use crate::LockError;
use crate::{FencingToken, Lease, OwnerToken};
use crate::{Queued, QueuedCount};

/// Below this many remembered keys, idle keys are never swept.
const SWEEP_FLOOR: usize = 64;

struct Holder {
    owner: OwnerToken,
    expires_at: Instant,
}

struct Waiter {
    id: u64,
    ttl: Duration,
    slot: GrantSlot,
}

struct KeyState {
    /// The key's name, shared with the map and with every lease granted on it: a grant
    /// copies no string.
    name: Arc<str>,
    limit: u32,
    holders: Vec<Holder>,
    waiters: VecDeque<Waiter>,
}

/// The outcome of [`Table::acquire_or_enqueue`].
pub(crate) enum Enqueued {
    /// A slot was free: here is the lease.
    Granted(Lease),
    /// The caller is queued as waiter `id`; its grant will arrive in `slot`. Its timer must
    /// be armed at `wake_at` (see [`Table::arm`]).
    Queued { id: u64, slot: GrantSlot, wake_at: Instant },
}

type Keys = HashMap<Arc<str>, KeyState, foldhash::fast::RandomState>;

/// All keys of one memory locker.
pub(crate) struct Table {
    // foldhash with a per-table random seed: several times cheaper than SipHash on short
    // keys (hashing was a quarter of an uncontended try+release), still seeded against
    // collision floods.
    keys: Keys,
    issuer: Issuer,
    last_waiter: u64,
    sweep_at: usize,
    /// How many waiters all keys' queues hold: kept in step with the queues, under the same
    /// lock, so it never counts a waiter that is granted or gone.
    queued: QueuedCount,
}

/// Issues the fencing and owner tokens of every grant.
///
/// One fence counter for all keys keeps fences strictly increasing per key even though idle
/// keys are forgotten.
///
/// An owner token is 64 bits of a per-locker `SmallRng` (seeded from the OS via `rand`'s
/// thread RNG when the locker is created) above the grant's fence. The fence half makes
/// every token of a locker distinct, so a stale lease can never match a later grant by
/// chance; the random half makes a token unguessable to a caller that holds only other
/// leases (it must guess 64 bits, or reconstruct the generator's state from many tokens on
/// purpose). That is the threat model of a single-process locker: tokens guard against
/// mistakes — a stale or foreign lease, a lease of another locker — not against code in the
/// same process, which can read the table anyway. Drawing 128 bits from the thread's
/// cryptographic RNG per grant cost ~80 instructions, 4% of an uncontended try+release.
struct Issuer {
    last_fence: u64,
    rng: SmallRng,
}

impl Issuer {
    fn new() -> Self {
        Issuer { last_fence: 0, rng: SmallRng::from_rng(&mut rand::rng()) }
    }

    fn next(&mut self) -> (FencingToken, OwnerToken) {
        self.last_fence += 1;
        let owner = (u128::from(self.rng.next_u64()) << 64) | u128::from(self.last_fence);
        (FencingToken(self.last_fence), OwnerToken::from_bits(owner))
    }
}

impl Default for Table {
    fn default() -> Self {
        Table {
            keys: HashMap::default(),
            issuer: Issuer::new(),
            last_waiter: 0,
            sweep_at: SWEEP_FLOOR,
            queued: QueuedCount::new(),
        }
    }
}

impl Table {
    /// Grants `request` if a slot is free and nobody is queued ahead; `None` otherwise.
    pub(crate) fn try_acquire(&mut self, request: &LeaseRequest, now: Instant) -> Result<Option<Lease>, LockError> {
        let key = request.key();
        // One hash lookup when the key is known (the common case); a miss takes a second.
        let state = match self.keys.get_mut(key) {
            Some(state) => state,
            None => remember(&mut self.keys, &mut self.sweep_at, key, request.limit(), now),
        };
        // Expire first: a key whose leases all ended is free, whatever limit it had, exactly
        // as if it had already been forgotten.
        state.expire_due(now, &mut self.issuer, &self.queued);
        if state.limit != request.limit() {
            if !state.is_idle() {
                let existing = state.limit;
                return Err(LockError::LimitMismatch { key: key.to_owned(), existing, requested: request.limit() });
            }
            state.limit = request.limit();
        }
        if state.holders.len() < state.limit as usize && state.waiters.is_empty() {
            Ok(Some(state.grant(request.ttl(), now, &mut self.issuer)))
        } else {
            Ok(None)
        }
    }

    /// Grants `request` now, or queues the caller — under one lock, so a release between a
    /// failed try and the registration cannot be missed. `deadline` is the end of the
    /// caller's wait bound.
    pub(crate) fn acquire_or_enqueue(
        &mut self,
        request: &LeaseRequest,
        now: Instant,
        deadline: Instant,
    ) -> Result<Enqueued, LockError> {
        if let Some(lease) = self.try_acquire(request, now)? {
            return Ok(Enqueued::Granted(lease));
        }
        Ok(self.enqueue(request, deadline))
    }

    /// Appends a waiter to the key's queue, its timer armed (see [`Table::arm`]). Only sound
    /// right after a failed [`Table::try_acquire`] under the same lock.
    pub(crate) fn enqueue(&mut self, request: &LeaseRequest, deadline: Instant) -> Enqueued {
        self.last_waiter += 1;
        let id = self.last_waiter;
        let slot = GrantSlot::default();
        // The failed try left the key in the table; `entry` would allocate its name anyway.
        let state = match self.keys.get_mut(request.key()) {
            Some(state) => state,
            None => {
                let name: Arc<str> = Arc::from(request.key());
                self.keys.entry(name.clone()).or_insert_with(|| KeyState::new(name, request.limit()))
            }
        };
        let wake_at = state.wake_at(deadline);
        slot.arm(wake_at);
        state.waiters.push_back(Waiter { id, ttl: request.ttl(), slot: slot.clone() });
        self.queued.add(1);
        Enqueued::Queued { id, slot, wake_at }
    }

    /// The number of waiters queued on all keys, as it changes.
    pub(crate) fn queued(&self) -> Queued {
        self.queued.queued()
    }

    /// The instant a waiter on `key` whose wait bound ends at `deadline` must wake: the
    /// earlier of `deadline` and the key's earliest lease end. Records it in the waiter's
    /// `slot`, so the table knows when the head's timer would be late.
    pub(crate) fn arm(&self, key: &str, slot: &GrantSlot, deadline: Instant) -> Instant {
        let wake_at = self.keys.get(key).map_or(deadline, |state| state.wake_at(deadline));
        slot.arm(wake_at);
        wake_at
    }

    /// Withdraws waiter `id` of `key`. If its grant already landed in `slot`, that grant is
    /// released and handed on, so a cancelled acquire never leaves a grant behind. Returns the
    /// grant instead when `keep_grant` is set (a timeout that lost the race to a grant takes it).
    pub(crate) fn withdraw(
        &mut self,
        key: &str,
        id: u64,
        slot: &GrantSlot,
        keep_grant: bool,
        now: Instant,
    ) -> Option<Lease> {
        // Under the table lock, like every `fill`: either the grant is already in the slot, or
        // the waiter is still queued and no grant can arrive after we remove it.
        let granted = slot.take();
        self.withdraw_after_checking(key, id, granted, keep_grant, now)
    }

    /// The second half of [`Table::withdraw`], once the slot has been checked. Sound only
    /// when the check happened under the same table lock; tests call it after checking the
    /// slot *outside* the lock to show that ordering leaks grants.
    pub(crate) fn withdraw_after_checking(
        &mut self,
        key: &str,
        id: u64,
        granted: Option<Lease>,
        keep_grant: bool,
        now: Instant,
    ) -> Option<Lease> {
        if let Some(state) = self.keys.get_mut(key) {
            match &granted {
                None => {
                    if let Some(at) = state.waiters.iter().position(|waiter| waiter.id == id) {
                        state.waiters.remove(at);
                        self.queued.remove(1);
                        if at == 0 {
                            state.keep_head_on_time();
                        }
                    }
                }
                Some(lease) if !keep_grant => {
                    state.holders.retain(|holder| holder.owner != lease.owner());
                    state.hand_off(now, &mut self.issuer, &self.queued);
                }
                Some(_) => {}
            }
        }
        if keep_grant { granted } else { None }
    }

    /// Releases `lease`; `true` if it was still held. An expired lease is not held.
    pub(crate) fn release(&mut self, lease: &Lease, now: Instant) -> bool {
        let Some(state) = self.keys.get_mut(lease.key()) else { return false };
        let held = match state.holders.iter().position(|holder| holder.owner == lease.owner()) {
            Some(at) => {
                let holder = state.holders.swap_remove(at);
                holder.expires_at > now
            }
            None => false,
        };
        state.expire_due(now, &mut self.issuer, &self.queued);
        state.hand_off(now, &mut self.issuer, &self.queued);
        held
    }

    /// Extends `lease` to `ttl` from `now` if it is still held.
    pub(crate) fn refresh(&mut self, lease: &Lease, ttl: Duration, now: Instant) -> Option<Lease> {
        let state = self.keys.get_mut(lease.key())?;
        state.expire_due(now, &mut self.issuer, &self.queued);
        let holder = state.holders.iter_mut().find(|holder| holder.owner == lease.owner())?;
        let shortened = now + ttl < holder.expires_at;
        holder.expires_at = now + ttl;
        if shortened {
            state.keep_head_on_time();
        }
        Some(lease.refreshed(ttl, now))
    }

    /// The time `lease` has left, if it is still held.
    pub(crate) fn remaining_ttl(&mut self, lease: &Lease, now: Instant) -> Option<Duration> {
        let state = self.keys.get_mut(lease.key())?;
        state.expire_due(now, &mut self.issuer, &self.queued);
        let holder = state.holders.iter().find(|holder| holder.owner == lease.owner())?;
        Some(holder.expires_at - now)
    }

    /// Expires every lease of `key` that ended by `now` and hands the slots on.
    pub(crate) fn expire_due(&mut self, key: &str, now: Instant) {
        if let Some(state) = self.keys.get_mut(key) {
            state.expire_due(now, &mut self.issuer, &self.queued);
        }
    }

    /// Number of keys with unexpired holders or waiters.
    #[cfg(all(test, not(any(loom, shuttle))))]
    pub(crate) fn live_keys(&self, now: Instant) -> usize {
        self.keys.values().filter(|state| !state.is_idle_at(now)).count()
    }

    /// Number of keys remembered, idle ones included.
    #[cfg(all(test, not(any(loom, shuttle))))]
    pub(crate) fn remembered_keys(&self) -> usize {
        self.keys.len()
    }

    /// Test-only: the owners of `key`'s current leases (expired ones included until they are
    /// expired), and the ids of its waiters in queue order.
    #[cfg(any(test, loom, shuttle))]
    pub(crate) fn inspect(&self, key: &str) -> (Vec<OwnerToken>, Vec<u64>) {
        match self.keys.get(key) {
            Some(state) => (
                state.holders.iter().map(|holder| holder.owner).collect(),
                state.waiters.iter().map(|waiter| waiter.id).collect(),
            ),
            None => (Vec::new(), Vec::new()),
        }
    }

    /// Test-only: what a flawed TTL timer does (the original Go locker's `Release(key)` from
    /// an `AfterFunc`): evict the key's current holder without checking whose timer fired.
    #[cfg(loom)]
    pub(crate) fn evict_first_holder(&mut self, key: &str, now: Instant) {
        if let Some(state) = self.keys.get_mut(key) {
            if !state.holders.is_empty() {
                state.holders.remove(0);
            }
            state.hand_off(now, &mut self.issuer, &self.queued);
        }
    }
}

/// Adds `key` to `keys`, sweeping idle keys first once the table has doubled since the last
/// sweep. (A function of the two fields, not of the table, so the caller keeps the issuer.)
fn remember<'a>(keys: &'a mut Keys, sweep_at: &mut usize, key: &str, limit: u32, now: Instant) -> &'a mut KeyState {
    if keys.len() >= *sweep_at {
        // A key whose every lease ended and that nobody waits for is idle: forgetting it is
        // the same as expiring its leases (nobody is queued to hand them to).
        keys.retain(|_, state| !state.is_idle_at(now));
        *sweep_at = (2 * keys.len()).max(SWEEP_FLOOR);
    }
    let name: Arc<str> = Arc::from(key);
    keys.entry(name.clone()).or_insert_with(|| KeyState::new(name, limit))
}

impl KeyState {
    fn new(name: Arc<str>, limit: u32) -> Self {
        KeyState { name, limit, holders: Vec::with_capacity(1), waiters: VecDeque::new() }
    }

    fn is_idle(&self) -> bool {
        self.holders.is_empty() && self.waiters.is_empty()
    }

    fn is_idle_at(&self, now: Instant) -> bool {
        self.waiters.is_empty() && self.holders.iter().all(|holder| holder.expires_at <= now)
    }

    fn earliest_end(&self) -> Option<Instant> {
        self.holders.iter().map(|holder| holder.expires_at).min()
    }

    fn wake_at(&self, deadline: Instant) -> Instant {
        self.earliest_end().map_or(deadline, |end| end.min(deadline))
    }

    fn grant(&mut self, ttl: Duration, now: Instant, issuer: &mut Issuer) -> Lease {
        let (fence, owner) = issuer.next();
        self.holders.push(Holder { owner, expires_at: now + ttl });
        Lease::new(self.name.clone(), owner, fence, ttl, now, self.limit)
    }

    /// Drops holders whose lease ended by `now`, then hands their slots on.
    fn expire_due(&mut self, now: Instant, issuer: &mut Issuer, queued: &QueuedCount) {
        let before = self.holders.len();
        self.holders.retain(|holder| holder.expires_at > now);
        if self.holders.len() != before {
            self.hand_off(now, issuer, queued);
        }
    }

    /// Grants free slots to the queue's head, in arrival order.
    fn hand_off(&mut self, now: Instant, issuer: &mut Issuer, queued: &QueuedCount) {
        let mut granted = 0;
        while self.holders.len() < self.limit as usize {
            let Some(waiter) = self.waiters.pop_front() else { break };
            let lease = self.grant(waiter.ttl, now, issuer);
            waiter.slot.fill(lease);
            granted += 1;
        }
        queued.remove(granted);
        if granted > 0 {
            // A new head, and a new lease that may end before the head's timer fires.
            self.keep_head_on_time();
        }
    }

    /// Nudges the head of the queue if its timer would fire after the key's earliest lease
    /// end (the invariant in the module doc).
    fn keep_head_on_time(&self) {
        if let (Some(head), Some(end)) = (self.waiters.front(), self.earliest_end()) {
            head.slot.nudge_if_armed_after(end);
        }
    }
}
