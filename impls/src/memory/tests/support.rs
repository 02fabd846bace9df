//! What the loom and shuttle checks share: requests, and awaiting a grant the way
//! `MemoryLocker::acquire` does (re-arm nudges are skipped: these checks have no timers).

use std::time::Duration;

use crate::lease::Lease;
use crate::memory::waiter::{GrantSlot, SlotEvent};
use crate::request::LeaseRequest;

pub(super) const KEY: &str = "checked-key";

/// A lock request on [`KEY`] with a TTL long enough not to expire unless a test says so.
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
