//! Unit tests of the [`Table`] with injected time: the internals the public API cannot see
//! (which waiter watches expiry, when the head is nudged, idle keys forgotten).

use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::LockError;
use crate::memory::table::{Enqueued, Table};
use crate::memory::waiter::{GrantSlot, SlotEvent};
use crate::request::LeaseRequest;

const KEY: &str = "unit-key";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn queued(enqueued: Enqueued) -> (u64, GrantSlot) {
    match enqueued {
        Enqueued::Queued { id, slot } => (id, slot),
        Enqueued::Granted(lease) => panic!("expected to queue, was granted {lease:?}"),
    }
}

/// Polls the slot once: what a waiting acquire would see if woken now.
fn poll_slot(slot: &GrantSlot) -> Option<SlotEvent> {
    let mut cx = Context::from_waker(Waker::noop());
    match std::pin::pin!(slot.next_event()).poll(&mut cx) {
        Poll::Ready(event) => Some(event),
        Poll::Pending => None,
    }
}

use std::future::Future;

#[test]
fn limit_mismatch_counts_only_live_leases() {
    // Regression: a key whose leases had all ended but had not been touched since used to
    // refuse a request with another limit, unlike a key that had been forgotten.
    let t0 = Instant::now();
    let mut table = Table::default();
    let semaphore = LeaseRequest::semaphore(KEY, 3, secs(1));
    table.try_acquire(&semaphore, t0).unwrap().expect("free");
    let lock = LeaseRequest::lock(KEY, secs(1));
    assert!(matches!(
        table.try_acquire(&lock, t0 + Duration::from_millis(999)),
        Err(LockError::LimitMismatch { existing: 3, requested: 1, .. })
    ));
    let lease = table.try_acquire(&lock, t0 + secs(1)).unwrap().expect("the semaphore lease ended: the key is free");
    assert_eq!(lease.limit(), 1);
}

#[test]
fn only_the_head_of_the_queue_watches_expiry() {
    let t0 = Instant::now();
    let mut table = Table::default();
    let holder = table.try_acquire(&LeaseRequest::lock(KEY, secs(10)), t0).unwrap().unwrap();
    let (head, _) = queued(table.acquire_or_enqueue(&LeaseRequest::lock(KEY, secs(1)), t0).unwrap());
    let (second, _) = queued(table.acquire_or_enqueue(&LeaseRequest::lock(KEY, secs(1)), t0).unwrap());
    assert_eq!(table.watch_expiry(KEY, head), Some(holder.expires_at()));
    assert_eq!(table.watch_expiry(KEY, second), None);
}

#[test]
fn a_grant_nudges_the_new_head_to_watch_the_new_lease() {
    // The regression behind it: the second waiter started waiting while the first lease
    // (10 s) was held, and used to sleep until that lease's end even after the first waiter
    // was granted a 1 s lease — its expiry went unnoticed for 9 s.
    let t0 = Instant::now();
    let mut table = Table::default();
    let holder = table.try_acquire(&LeaseRequest::lock(KEY, secs(10)), t0).unwrap().unwrap();
    let (_, first) = queued(table.acquire_or_enqueue(&LeaseRequest::lock(KEY, secs(1)), t0).unwrap());
    let (second_id, second) = queued(table.acquire_or_enqueue(&LeaseRequest::lock(KEY, secs(1)), t0).unwrap());
    assert!(poll_slot(&second).is_none(), "nothing to react to yet");

    assert!(table.release(&holder, t0 + secs(2)));
    let Some(SlotEvent::Granted(granted)) = poll_slot(&first) else { panic!("the head is granted on release") };
    assert!(matches!(poll_slot(&second), Some(SlotEvent::Rearm)), "the new head is nudged");
    assert_eq!(table.watch_expiry(KEY, second_id), Some(granted.expires_at()));
    assert!(poll_slot(&second).is_none(), "a nudge is consumed once");
}

#[test]
fn a_shortening_refresh_nudges_the_head_and_a_lengthening_one_does_not() {
    let t0 = Instant::now();
    let mut table = Table::default();
    let holder = table.try_acquire(&LeaseRequest::lock(KEY, secs(10)), t0).unwrap().unwrap();
    let (_, head) = queued(table.acquire_or_enqueue(&LeaseRequest::lock(KEY, secs(1)), t0).unwrap());
    let longer = table.refresh(&holder, secs(20), t0).expect("held");
    assert!(poll_slot(&head).is_none(), "a later deadline is caught when the old timer fires");
    table.refresh(&longer, secs(1), t0).expect("held");
    assert!(matches!(poll_slot(&head), Some(SlotEvent::Rearm)));
}

#[test]
fn withdrawing_the_head_nudges_the_next_waiter() {
    let t0 = Instant::now();
    let mut table = Table::default();
    table.try_acquire(&LeaseRequest::lock(KEY, secs(10)), t0).unwrap().unwrap();
    let (head_id, head) = queued(table.acquire_or_enqueue(&LeaseRequest::lock(KEY, secs(1)), t0).unwrap());
    let (next_id, next) = queued(table.acquire_or_enqueue(&LeaseRequest::lock(KEY, secs(1)), t0).unwrap());
    assert!(table.withdraw(KEY, head_id, &head, false, t0).is_none());
    assert!(matches!(poll_slot(&next), Some(SlotEvent::Rearm)));
    assert!(table.watch_expiry(KEY, next_id).is_some(), "the next waiter now watches expiry");
}

#[test]
fn idle_keys_are_forgotten_and_fences_keep_increasing() {
    let t0 = Instant::now();
    let mut table = Table::default();
    let request = LeaseRequest::lock(KEY, secs(1));
    let first = table.try_acquire(&request, t0).unwrap().unwrap();
    assert!(table.release(&first, t0));
    assert_eq!(table.live_keys(), 0);
    let second = table.try_acquire(&request, t0).unwrap().unwrap();
    assert!(second.fence() > first.fence());
    table.expire_due(KEY, t0 + secs(1));
    assert_eq!(table.live_keys(), 0, "an expired key is forgotten too");
}

#[test]
fn a_timeout_that_raced_a_grant_keeps_it() {
    let t0 = Instant::now();
    let mut table = Table::default();
    let holder = table.try_acquire(&LeaseRequest::lock(KEY, secs(10)), t0).unwrap().unwrap();
    let (id, slot) = queued(table.acquire_or_enqueue(&LeaseRequest::lock(KEY, secs(1)), t0).unwrap());
    assert!(table.release(&holder, t0));
    let kept = table.withdraw(KEY, id, &slot, true, t0).expect("the grant came within the bound");
    assert_eq!(table.inspect(KEY).0, vec![kept.owner()]);
}
