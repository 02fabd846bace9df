//! The in-memory locker's state: per key the holders, the FIFO queue of waiters and the
//! permit limit; one fence counter for all keys.
//!
//! Everything here is synchronous and takes the current instant as an argument, so loom
//! (which has no clock) can drive it with injected time, and tokio's paused clock drives it in
//! tests. Every transition that frees a slot ends in [`KeyState::hand_off`], which grants the
//! freed slots to the queue's head directly — there is no polling anywhere.

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
        if state.limit != request.limit() {
            let existing = state.limit;
            self.forget_if_idle(key);
            return Err(LockError::LimitMismatch { key: key.to_owned(), existing, requested: request.limit() });
        }
        state.expire_due(key, now, &mut self.last_fence);
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
    pub(crate) fn withdraw(&mut self, key: &str, id: u64, slot: &GrantSlot, keep_grant: bool, now: Instant) -> Option<Lease> {
        let granted = slot.take();
        if let Some(state) = self.keys.get_mut(key) {
            match &granted {
                None => state.waiters.retain(|waiter| waiter.id != id),
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
        holder.expires_at = now + ttl;
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

    /// When the next lease of `key` ends, if any is held.
    pub(crate) fn next_expiry(&self, key: &str) -> Option<Instant> {
        self.keys.get(key)?.holders.iter().map(|holder| holder.expires_at).min()
    }

    /// Number of keys with holders or waiters (idle keys are forgotten).
    #[cfg(test)]
    pub(crate) fn live_keys(&self) -> usize {
        self.keys.len()
    }

    /// Test-only: what a flawed TTL timer does (the original Go locker's `Release(key)` from
    /// an `AfterFunc`): evict the key's current holder without checking whose timer fired.
    #[cfg(test)]
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
        while self.holders.len() < self.limit as usize {
            let Some(waiter) = self.waiters.pop_front() else { break };
            let lease = self.grant(key, waiter.ttl, now, last_fence);
            waiter.slot.fill(lease);
        }
    }
}
