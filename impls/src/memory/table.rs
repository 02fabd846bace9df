//! The in-memory locker's state: per key the holders, the FIFO queue of waiters and the
//! permit limit; one fence counter for all keys.
//!
//! Everything here is synchronous and takes the current instant as an argument, so loom
//! (which has no clock) can drive it with injected time, and tokio's paused clock drives it in
//! tests. Every transition that frees a slot ends in [`KeyState::hand_off`], which grants the
//! freed slots to the queue's head directly — there is no polling anywhere.
//!
//! Expiry needs one timer per key, not one per waiter: the head of the queue sleeps until the
//! key's earliest deadline ([`Table::watch_expiry`]) and then calls [`Table::expire_due`],
//! which grants it (and whoever else fits). Whenever that deadline moves earlier (a grant, a
//! shortening refresh) or the head changes (a grant, a withdrawal), the new head is nudged
//! to re-read it — otherwise a waiter that started waiting before the current holder was
//! granted would sleep past that holder's expiry.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::waiter::GrantSlot;
use crate::error::LockError;
use crate::lease::{FencingToken, Lease, OwnerToken};
use crate::request::LeaseRequest;

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
    limit: u32,
    holders: Vec<Holder>,
    waiters: VecDeque<Waiter>,
}

/// The outcome of [`Table::acquire_or_enqueue`].
pub(crate) enum Enqueued {
    /// A slot was free: here is the lease.
    Granted(Lease),
    /// The caller is queued as waiter `id`; its grant will arrive in `slot`.
    Queued { id: u64, slot: GrantSlot },
}

/// All keys of one memory locker.
#[derive(Default)]
pub(crate) struct Table {
    keys: HashMap<String, KeyState>,
    // One counter for all keys keeps fences strictly increasing per key even though idle keys
    // are forgotten.
    last_fence: u64,
    last_waiter: u64,
}

impl Table {
    /// Grants `request` if a slot is free and nobody is queued ahead; `None` otherwise.
    pub(crate) fn try_acquire(&mut self, request: &LeaseRequest, now: Instant) -> Result<Option<Lease>, LockError> {
        let key = request.key();
        if !self.keys.contains_key(key) {
            self.keys.insert(key.to_owned(), KeyState::new(request.limit()));
        }
        let state = self.keys.get_mut(key).expect("inserted above");
        // Expire first: a key whose leases all ended is free, whatever limit it had, exactly
        // as if it had already been forgotten.
        state.expire_due(key, now, &mut self.last_fence);
        if state.limit != request.limit() {
            if state.holders.is_empty() && state.waiters.is_empty() {
                state.limit = request.limit();
            } else {
                let existing = state.limit;
                return Err(LockError::LimitMismatch { key: key.to_owned(), existing, requested: request.limit() });
            }
        }
        if state.holders.len() < state.limit as usize && state.waiters.is_empty() {
            Ok(Some(state.grant(key, request.ttl(), now, &mut self.last_fence)))
        } else {
            Ok(None)
        }
    }

    /// Grants `request` now, or queues the caller — under one lock, so a release between a
    /// failed try and the registration cannot be missed.
    pub(crate) fn acquire_or_enqueue(&mut self, request: &LeaseRequest, now: Instant) -> Result<Enqueued, LockError> {
        if let Some(lease) = self.try_acquire(request, now)? {
            return Ok(Enqueued::Granted(lease));
        }
        Ok(self.enqueue(request))
    }

    /// Appends a waiter to the key's queue. Only sound right after a failed
    /// [`Table::try_acquire`] under the same lock.
    pub(crate) fn enqueue(&mut self, request: &LeaseRequest) -> Enqueued {
        self.last_waiter += 1;
        let id = self.last_waiter;
        let slot = GrantSlot::default();
        let state = self.keys.entry(request.key().to_owned()).or_insert_with(|| KeyState::new(request.limit()));
        state.waiters.push_back(Waiter { id, ttl: request.ttl(), slot: slot.clone() });
        Enqueued::Queued { id, slot }
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
                        if at == 0 {
                            state.nudge_head();
                        }
                    }
                }
                Some(lease) if !keep_grant => {
                    state.holders.retain(|holder| holder.owner != lease.owner());
                    state.hand_off(key, now, &mut self.last_fence);
                }
                Some(_) => {}
            }
        }
        self.forget_if_idle(key);
        if keep_grant { granted } else { None }
    }

    /// Releases `lease`; `true` if it was still held. An expired lease is not held.
    pub(crate) fn release(&mut self, lease: &Lease, now: Instant) -> bool {
        let key = lease.key();
        let Some(state) = self.keys.get_mut(key) else { return false };
        let held = match state.holders.iter().position(|holder| holder.owner == lease.owner()) {
            Some(at) => {
                let holder = state.holders.swap_remove(at);
                holder.expires_at > now
            }
            None => false,
        };
        state.expire_due(key, now, &mut self.last_fence);
        state.hand_off(key, now, &mut self.last_fence);
        self.forget_if_idle(key);
        held
    }

    /// Extends `lease` to `ttl` from `now` if it is still held.
    pub(crate) fn refresh(&mut self, lease: &Lease, ttl: Duration, now: Instant) -> Option<Lease> {
        let key = lease.key();
        let state = self.keys.get_mut(key)?;
        state.expire_due(key, now, &mut self.last_fence);
        let holder = state.holders.iter_mut().find(|holder| holder.owner == lease.owner())?;
        let shortened = now + ttl < holder.expires_at;
        holder.expires_at = now + ttl;
        if shortened {
            state.nudge_head();
        }
        Some(lease.refreshed(ttl, now))
    }

    /// The time `lease` has left, if it is still held.
    pub(crate) fn remaining_ttl(&mut self, lease: &Lease, now: Instant) -> Option<Duration> {
        let key = lease.key();
        let state = self.keys.get_mut(key)?;
        state.expire_due(key, now, &mut self.last_fence);
        let holder = state.holders.iter().find(|holder| holder.owner == lease.owner())?;
        Some(holder.expires_at - now)
    }

    /// Expires every lease of `key` that ended by `now` and hands the slots on.
    pub(crate) fn expire_due(&mut self, key: &str, now: Instant) {
        if let Some(state) = self.keys.get_mut(key) {
            state.expire_due(key, now, &mut self.last_fence);
        }
        self.forget_if_idle(key);
    }

    /// The instant waiter `id` must wake to expire `key`'s earliest lease: `Some` only for the
    /// head of the queue (the key's expiry watcher) while a lease is held. Other waiters wait
    /// for their grant or a nudge.
    pub(crate) fn watch_expiry(&self, key: &str, id: u64) -> Option<Instant> {
        let state = self.keys.get(key)?;
        if state.waiters.front()?.id != id {
            return None;
        }
        state.holders.iter().map(|holder| holder.expires_at).min()
    }

    /// Number of keys with holders or waiters (idle keys are forgotten).
    #[cfg(any(test, loom, shuttle))]
    pub(crate) fn live_keys(&self) -> usize {
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
            state.hand_off(key, now, &mut self.last_fence);
        }
        self.forget_if_idle(key);
    }

    fn forget_if_idle(&mut self, key: &str) {
        if self.keys.get(key).is_some_and(|state| state.holders.is_empty() && state.waiters.is_empty()) {
            self.keys.remove(key);
        }
    }
}

impl KeyState {
    fn new(limit: u32) -> Self {
        KeyState { limit, holders: Vec::with_capacity(1), waiters: VecDeque::new() }
    }

    fn grant(&mut self, key: &str, ttl: Duration, now: Instant, last_fence: &mut u64) -> Lease {
        *last_fence += 1;
        let fence = FencingToken(*last_fence);
        let owner = OwnerToken::random();
        self.holders.push(Holder { owner, expires_at: now + ttl });
        Lease::new(key, owner, fence, ttl, now, self.limit)
    }

    /// Drops holders whose lease ended by `now`, then hands their slots on.
    fn expire_due(&mut self, key: &str, now: Instant, last_fence: &mut u64) {
        let before = self.holders.len();
        self.holders.retain(|holder| holder.expires_at > now);
        if self.holders.len() != before {
            self.hand_off(key, now, last_fence);
        }
    }

    /// Grants free slots to the queue's head, in arrival order.
    fn hand_off(&mut self, key: &str, now: Instant, last_fence: &mut u64) {
        let mut granted = false;
        while self.holders.len() < self.limit as usize {
            let Some(waiter) = self.waiters.pop_front() else { break };
            let lease = self.grant(key, waiter.ttl, now, last_fence);
            waiter.slot.fill(lease);
            granted = true;
        }
        if granted {
            // A new head, and a new lease that may end before every other: the head must
            // re-read the earliest deadline.
            self.nudge_head();
        }
    }

    fn nudge_head(&self) {
        if let Some(head) = self.waiters.front() {
            head.slot.nudge();
        }
    }
}
