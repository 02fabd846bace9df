//! Unit tests of the [`Table`] with injected time: the internals the public API cannot see
//! (which waiter watches expiry, when the head is nudged, idle keys forgotten).

use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use crate::LeaseRequest;
use crate::LockError;
use crate::memory::table::{Enqueued, Table};
use crate::memory::waiter::{GrantSlot, SlotEvent};

const KEY: &str = "unit-key";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn queued(enqueued: Enqueued) -> (u64, GrantSlot, Instant) {
    match enqueued {
        Enqueued::Queued { id, slot, wake_at } => (id, slot, wake_at),
        Enqueued::Granted(lease) => panic!("expected to queue, was granted {lease:?}"),
    }
}

/// Queues a lock request of `ttl` on [`KEY`] with an hour's wait bound.
fn wait_for(table: &mut Table, ttl: Duration, now: Instant) -> (u64, GrantSlot, Instant) {
    queued(table.acquire_or_enqueue(&LeaseRequest::lock(KEY, ttl), now, now + secs(3600)).unwrap())
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
fn a_waiter_arms_its_timer_at_its_wait_bound_or_the_earliest_lease_end() {
    let t0 = Instant::now();
    let mut table = Table::default();
    let holder = table.try_acquire(&LeaseRequest::lock(KEY, secs(10)), t0).unwrap().unwrap();
    let (_, _, wake_at) = wait_for(&mut table, secs(1), t0);
    assert_eq!(wake_at, holder.expires_at(), "the lease ends before the wait bound");
    let request = LeaseRequest::lock(KEY, secs(1));
    let (_, slot, wake_at) = queued(table.acquire_or_enqueue(&request, t0, t0 + secs(3)).unwrap());
    assert_eq!(wake_at, t0 + secs(3), "the wait bound ends first");
    assert_eq!(table.arm(KEY, &slot, t0 + secs(30)), holder.expires_at());
}

#[test]
fn a_grant_ending_before_the_next_heads_timer_nudges_it() {
    // The regression behind it: the second waiter armed its timer for the first holder's 10 s
    // lease and slept past the 1 s lease the first waiter was granted on release.
    let t0 = Instant::now();
    let mut table = Table::default();
    let holder = table.try_acquire(&LeaseRequest::lock(KEY, secs(10)), t0).unwrap().unwrap();
    let (_, first, _) = wait_for(&mut table, secs(1), t0);
    let (_, second, armed) = wait_for(&mut table, secs(1), t0);
    assert_eq!(armed, t0 + secs(10));
    assert!(poll_slot(&second).is_none(), "nothing to react to yet");

    assert!(table.release(&holder, t0 + secs(2)));
    let Some(SlotEvent::Granted(granted)) = poll_slot(&first) else { panic!("the head is granted on release") };
    assert!(matches!(poll_slot(&second), Some(SlotEvent::Rearm)), "its timer (10 s) fires after the new lease (3 s)");
    assert_eq!(table.arm(KEY, &second, t0 + secs(3600)), granted.expires_at());
    assert!(poll_slot(&second).is_none(), "a nudge is consumed once");
}

#[test]
fn a_grant_ending_after_the_next_heads_timer_wakes_nobody_else() {
    // The common hand-off: equal TTLs, so the new lease ends after the one it replaces and
    // the next head's timer is already early enough. Only the granted waiter is woken.
    let t0 = Instant::now();
    let mut table = Table::default();
    let holder = table.try_acquire(&LeaseRequest::lock(KEY, secs(10)), t0).unwrap().unwrap();
    let (_, first, _) = wait_for(&mut table, secs(10), t0);
    let (_, second, _) = wait_for(&mut table, secs(10), t0);
    assert!(table.release(&holder, t0 + secs(2)));
    assert!(matches!(poll_slot(&first), Some(SlotEvent::Granted(_))));
    assert!(poll_slot(&second).is_none(), "not woken");
}

#[test]
fn a_shortening_refresh_nudges_the_head_and_a_lengthening_one_does_not() {
    let t0 = Instant::now();
    let mut table = Table::default();
    let holder = table.try_acquire(&LeaseRequest::lock(KEY, secs(10)), t0).unwrap().unwrap();
    let (_, head, _) = wait_for(&mut table, secs(1), t0);
    let longer = table.refresh(&holder, secs(20), t0).expect("held");
    assert!(poll_slot(&head).is_none(), "a later end is caught when the old timer fires");
    table.refresh(&longer, secs(1), t0).expect("held");
    assert!(matches!(poll_slot(&head), Some(SlotEvent::Rearm)));
}

#[test]
fn a_late_waiter_that_becomes_head_by_a_withdrawal_is_nudged() {
    let t0 = Instant::now();
    let mut table = Table::default();
    let holder = table.try_acquire(&LeaseRequest::lock(KEY, secs(10)), t0).unwrap().unwrap();
    let (head_id, head, _) = wait_for(&mut table, secs(1), t0);
    let (_, next, _) = wait_for(&mut table, secs(1), t0);
    // The shortening nudges only the head; the next waiter's timer is still at 10 s.
    table.refresh(&holder, secs(2), t0).expect("held");
    assert!(matches!(poll_slot(&head), Some(SlotEvent::Rearm)));
    assert!(poll_slot(&next).is_none());
    assert!(table.withdraw(KEY, head_id, &head, false, t0).is_none());
    assert!(matches!(poll_slot(&next), Some(SlotEvent::Rearm)), "now the head, and late");
}

#[test]
fn idle_keys_are_kept_then_swept_and_fences_keep_increasing() {
    let t0 = Instant::now();
    let mut table = Table::default();
    let request = LeaseRequest::lock(KEY, secs(1));
    let first = table.try_acquire(&request, t0).unwrap().unwrap();
    assert!(table.release(&first, t0));
    assert_eq!(table.live_keys(t0), 0);
    let second = table.try_acquire(&request, t0).unwrap().unwrap();
    assert!(second.fence() > first.fence());
    // Many short-lived keys: memory stays proportional to the keys in use.
    for n in 0..10_000 {
        let lease = table.try_acquire(&LeaseRequest::lock(format!("k{n}"), secs(1)), t0).unwrap().unwrap();
        assert!(table.release(&lease, t0));
    }
    assert!(table.remembered_keys() <= 2 * 64, "{} keys remembered", table.remembered_keys());
    assert_eq!(table.live_keys(t0), 1, "only the held key is live");
    assert_eq!(table.inspect(KEY).0, vec![second.owner()], "the sweeps kept the held key");
    // An expired lease makes its key idle.
    assert_eq!(table.live_keys(t0 + secs(1)), 0);
    let third = table.try_acquire(&request, t0 + secs(1)).unwrap().unwrap();
    assert!(third.fence() > second.fence());
    assert!(table.release(&third, t0 + secs(1)));
    let before = table.remembered_keys();
    for n in 0..200 {
        let lease = table.try_acquire(&LeaseRequest::lock(format!("j{n}"), secs(1)), t0).unwrap().unwrap();
        assert!(table.release(&lease, t0));
    }
    assert!(table.remembered_keys() < before + 200, "a sweep ran");
    let fourth = table.try_acquire(&request, t0 + secs(1)).unwrap().unwrap();
    assert!(fourth.fence() > third.fence(), "the counter outlives forgotten keys");
}

#[test]
fn a_timeout_that_raced_a_grant_keeps_it() {
    let t0 = Instant::now();
    let mut table = Table::default();
    let holder = table.try_acquire(&LeaseRequest::lock(KEY, secs(10)), t0).unwrap().unwrap();
    let (id, slot, _) = wait_for(&mut table, secs(1), t0);
    assert!(table.release(&holder, t0));
    let kept = table.withdraw(KEY, id, &slot, true, t0).expect("the grant came within the bound");
    assert_eq!(table.inspect(KEY).0, vec![kept.owner()]);
}
