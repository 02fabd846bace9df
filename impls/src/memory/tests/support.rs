//! What the loom and shuttle checks share: requests, and awaiting a grant the way
//! `MemoryLocker::acquire` does (re-arm nudges are skipped: these checks have no timers).

use std::time::Duration;

use crate::Lease;
#[cfg(loom)]
use crate::LeaseRequest;
use crate::memory::waiter::{GrantSlot, SlotEvent};

pub(super) const KEY: &str = "checked-key";

/// A wait bound that never runs out during a check (waiters here never time out).
pub(super) const NO_DEADLINE: Duration = Duration::from_secs(3600);

/// A lock request on [`KEY`] with a TTL long enough not to expire unless a test says so.
#[cfg(loom)]
pub(super) fn lock(ttl_secs: u64) -> LeaseRequest {
    LeaseRequest::lock(KEY, Duration::from_secs(ttl_secs))
}

/// Blocks (in the checker's executor) until the slot is granted.
#[cfg(loom)]
pub(super) fn await_grant(slot: &GrantSlot) -> Lease {
    loop {
        if let SlotEvent::Granted(lease) = loom::future::block_on(slot.next_event()) {
            return lease;
        }
    }
}

/// Blocks (in the checker's executor) until the slot is granted.
#[cfg(all(shuttle, not(loom)))]
pub(super) fn await_grant(slot: &GrantSlot) -> Lease {
    loop {
        if let SlotEvent::Granted(lease) = shuttle::future::block_on(slot.next_event()) {
            return lease;
        }
    }
}
