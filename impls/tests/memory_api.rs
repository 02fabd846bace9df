//! Every promise of the lock API, checked on the in-memory reference locker. Time-dependent
//! promises run on tokio's paused clock, so "exactly at the deadline" means exactly.

#[path = "support/locking.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use lockcheck_impls::{FencingToken, LeaseRequest, LockError, Locker, MemoryLocker};
use support::{KEY, is_free, lock, locker, queue_acquire, secs, still_pending};
use tokio::time::{Instant, advance};

#[tokio::test(start_paused = true)]
async fn a_held_lock_refuses_a_second_try() {
    let locker = locker();
    let first = locker.try_acquire(&lock(secs(10))).await.unwrap().expect("the key is free");
    assert!(locker.try_acquire(&lock(secs(10))).await.unwrap().is_none(), "held: the second try fails");
    assert_eq!(first.key(), KEY);
    assert_eq!(first.limit(), 1);
    assert_eq!(first.ttl(), secs(10));
}

#[tokio::test(start_paused = true)]
async fn release_reports_whether_the_lease_was_still_held() {
    let locker = locker();
    let lease = locker.try_acquire(&lock(secs(10))).await.unwrap().unwrap();
    assert!(locker.release(&lease).await.unwrap(), "held until now");
    assert!(!locker.release(&lease).await.unwrap(), "already released");
    assert!(is_free(&*locker, &lock(secs(10))).await);

    let expiring = locker.try_acquire(&lock(secs(1))).await.unwrap().unwrap();
    advance(secs(1)).await;
    assert!(!locker.release(&expiring).await.unwrap(), "an expired lease is not held");
}

#[tokio::test(start_paused = true)]
async fn a_stale_lease_cannot_release_or_refresh_the_next_holder() {
    let locker = locker();
    let earlier = locker.try_acquire(&lock(secs(1))).await.unwrap().unwrap();
    assert!(locker.release(&earlier).await.unwrap());
    let current = locker.try_acquire(&lock(secs(10))).await.unwrap().unwrap();
    assert!(!locker.release(&earlier).await.unwrap(), "released earlier: not held");
    assert!(locker.refresh(&earlier, secs(60)).await.unwrap().is_none());
    assert!(locker.remaining_ttl(&earlier).await.unwrap().is_none());
    assert_eq!(locker.remaining_ttl(&current).await.unwrap(), Some(secs(10)), "the next holder is untouched");

    // The same after an expiry instead of a release.
    let key = LeaseRequest::lock("expired-then-taken", secs(1));
    let expired = locker.try_acquire(&key).await.unwrap().unwrap();
    advance(secs(1)).await;
    let taker = locker.try_acquire(&key).await.unwrap().expect("the lease ended: the key is free");
    assert!(!locker.release(&expired).await.unwrap());
    assert_eq!(locker.remaining_ttl(&taker).await.unwrap(), Some(secs(1)));
}

#[tokio::test(start_paused = true)]
async fn refresh_extends_a_held_lease_and_reports_a_lost_one() {
    let locker = locker();
    let lease = locker.try_acquire(&lock(secs(2))).await.unwrap().unwrap();
    advance(secs(1)).await;
    let refreshed = locker.refresh(&lease, secs(5)).await.unwrap().expect("still held");
    assert_eq!(refreshed.ttl(), secs(5));
    assert_eq!(refreshed.fence(), lease.fence(), "a refresh is the same grant");
    assert_eq!(refreshed.expires_at(), Instant::now() + secs(5));
    advance(secs(4)).await;
    assert!(locker.try_acquire(&lock(secs(1))).await.unwrap().is_none(), "held past the original TTL");
    advance(secs(1)).await;
    assert!(locker.refresh(&refreshed, secs(5)).await.unwrap().is_none(), "expired: the refresh reports loss");
    assert!(is_free(&*locker, &lock(secs(1))).await, "and it did not resurrect the lease");
}

#[tokio::test(start_paused = true)]
async fn remaining_ttl_counts_down() {
    let locker = locker();
    let lease = locker.try_acquire(&lock(secs(10))).await.unwrap().unwrap();
    assert_eq!(locker.remaining_ttl(&lease).await.unwrap(), Some(secs(10)));
    advance(Duration::from_millis(3_250)).await;
    assert_eq!(locker.remaining_ttl(&lease).await.unwrap(), Some(Duration::from_millis(6_750)));
    assert_eq!(lease.locally_remaining(), Duration::from_millis(6_750));
    advance(Duration::from_millis(6_750)).await;
    assert_eq!(locker.remaining_ttl(&lease).await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn expiry_frees_the_slot_exactly_at_the_deadline() {
    // P4: held until the last instant before the deadline, free at the deadline.
    let locker = locker();
    let lease = locker.try_acquire(&lock(secs(5))).await.unwrap().unwrap();
    advance(secs(5) - Duration::from_nanos(1)).await;
    assert!(locker.try_acquire(&lock(secs(5))).await.unwrap().is_none(), "1 ns before the deadline: held");
    assert_eq!(locker.remaining_ttl(&lease).await.unwrap(), Some(Duration::from_nanos(1)));
    advance(Duration::from_nanos(1)).await;
    assert_eq!(Instant::now(), lease.expires_at());
    assert!(locker.try_acquire(&lock(secs(5))).await.unwrap().is_some(), "at the deadline: free");
}

#[tokio::test(start_paused = true)]
async fn a_waiter_is_granted_on_expiry_without_anyone_calling_in() {
    let locker = locker();
    let holder = locker.try_acquire(&lock(secs(5))).await.unwrap().unwrap();
    let waiter = queue_acquire(locker.clone(), lock(secs(5)), secs(60)).await;
    // Nobody touches the locker again: the waiter's own expiry timer must hand it the slot.
    let (lease, granted_at) = waiter.await.unwrap().expect("granted");
    assert_eq!(granted_at, holder.expires_at(), "granted exactly when the holder's lease ended");
    assert!(lease.fence() > holder.fence());
}

#[tokio::test(start_paused = true)]
async fn a_waiter_queued_behind_another_sees_the_expiry_of_a_lease_granted_later() {
    // Regression: the second waiter armed its timer for the first holder's 60 s lease and
    // slept past the 1 s lease the first waiter was granted on release.
    let locker = locker();
    let start = Instant::now();
    let holder = locker.try_acquire(&lock(secs(60))).await.unwrap().unwrap();
    let first = queue_acquire(locker.clone(), lock(secs(1)), secs(120)).await;
    let second = queue_acquire(locker.clone(), lock(secs(1)), secs(120)).await;
    advance(secs(2)).await;
    assert!(locker.release(&holder).await.unwrap());
    let (first_lease, first_at) = first.await.unwrap().unwrap();
    assert_eq!(first_at, start + secs(2));
    // The first waiter never releases: its 1 s lease must expire into the second waiter.
    let (_, second_at) = second.await.unwrap().unwrap();
    assert_eq!(second_at, first_lease.expires_at());
    assert_eq!(second_at, start + secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_shortened_lease_expires_into_the_waiter_on_time() {
    let locker = locker();
    let start = Instant::now();
    let holder = locker.try_acquire(&lock(secs(60))).await.unwrap().unwrap();
    let waiter = queue_acquire(locker.clone(), lock(secs(1)), secs(120)).await;
    locker.refresh(&holder, secs(2)).await.unwrap().expect("held");
    let (_, granted_at) = waiter.await.unwrap().unwrap();
    assert_eq!(granted_at, start + secs(2));
}

#[tokio::test(start_paused = true)]
async fn release_hands_the_lock_to_the_head_of_the_queue() {
    let locker = locker();
    let holder = locker.try_acquire(&lock(secs(10))).await.unwrap().unwrap();
    let head = queue_acquire(locker.clone(), lock(secs(10)), secs(60)).await;
    let request = lock(secs(10));
    let mut behind = Box::pin(locker.acquire(&request, secs(60)));
    assert!(still_pending(&mut behind).await);
    let released_at = Instant::now();
    assert!(locker.release(&holder).await.unwrap());
    let (lease, granted_at) = head.await.unwrap().unwrap();
    assert_eq!(granted_at, released_at, "handed off at once, no polling delay");
    assert!(still_pending(&mut behind).await, "the second waiter still waits");
    assert!(locker.try_acquire(&lock(secs(1))).await.unwrap().is_none(), "a newcomer cannot barge in");
    assert!(locker.release(&lease).await.unwrap());
    let next = behind.await.unwrap();
    assert!(next.fence() > lease.fence());
}

#[tokio::test(start_paused = true)]
async fn many_waiters_are_granted_in_arrival_order() {
    const WAITERS: usize = 32;
    let locker = locker();
    let holder = locker.try_acquire(&lock(secs(10))).await.unwrap().unwrap();
    let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
    for arrival in 0..WAITERS {
        let waiter = queue_acquire(locker.clone(), lock(secs(10)), secs(600)).await;
        let locker = locker.clone();
        let order_tx = order_tx.clone();
        tokio::spawn(async move {
            let (lease, _) = waiter.await.unwrap().unwrap();
            order_tx.send((arrival, lease.fence())).unwrap();
            assert!(locker.release(&lease).await.unwrap());
        });
    }
    drop(order_tx);
    assert!(locker.release(&holder).await.unwrap());
    let mut granted = Vec::new();
    while let Some(grant) = order_rx.recv().await {
        granted.push(grant);
    }
    let arrivals: Vec<usize> = granted.iter().map(|(arrival, _)| *arrival).collect();
    assert_eq!(arrivals, (0..WAITERS).collect::<Vec<_>>(), "FIFO");
    assert!(granted.windows(2).all(|pair| pair[0].1 < pair[1].1), "fences increase in grant order");
}

#[tokio::test(start_paused = true)]
async fn acquire_times_out_exactly_at_its_wait_bound() {
    let locker = locker();
    let start = Instant::now();
    let _holder = locker.try_acquire(&lock(secs(100))).await.unwrap().unwrap();
    let error = locker.acquire(&lock(secs(10)), secs(3)).await.expect_err("held for 100 s");
    assert!(error.is_timeout(), "{error:?}");
    assert!(matches!(error, LockError::TimedOut { waited } if waited == secs(3)));
    assert_eq!(Instant::now(), start + secs(3), "P6: returned exactly at the bound");
    let error = locker.acquire(&lock(secs(10)), Duration::ZERO).await.expect_err("a zero wait is a try");
    assert!(error.is_timeout());
    assert_eq!(Instant::now(), start + secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_lease_ending_exactly_at_the_wait_bound_is_granted() {
    let locker = locker();
    let start = Instant::now();
    locker.try_acquire(&lock(secs(3))).await.unwrap().unwrap();
    let (_, granted_at) = queue_acquire(locker.clone(), lock(secs(3)), secs(3)).await.await.unwrap().unwrap();
    assert_eq!(granted_at, start + secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_acquire_leaves_no_grant_and_the_next_waiter_gets_the_slot() {
    let locker = locker();
    let holder = locker.try_acquire(&lock(secs(10))).await.unwrap().unwrap();
    let request = lock(secs(10));
    let mut cancelled = Box::pin(locker.acquire(&request, secs(60)));
    assert!(still_pending(&mut cancelled).await);
    let next = queue_acquire(locker.clone(), lock(secs(10)), secs(60)).await;
    drop(cancelled);
    let released_at = Instant::now();
    assert!(locker.release(&holder).await.unwrap());
    let (lease, granted_at) = next.await.unwrap().unwrap();
    assert_eq!(granted_at, released_at);
    assert!(locker.release(&lease).await.unwrap());
    assert!(is_free(&*locker, &lock(secs(1))).await, "nothing left held");
}

#[tokio::test(start_paused = true)]
async fn a_grant_racing_a_dropped_acquire_goes_to_the_next_waiter() {
    let locker = locker();
    let holder = locker.try_acquire(&lock(secs(10))).await.unwrap().unwrap();
    let request = lock(secs(10));
    let mut cancelled = Box::pin(locker.acquire(&request, secs(60)));
    assert!(still_pending(&mut cancelled).await);
    let next = queue_acquire(locker.clone(), lock(secs(10)), secs(60)).await;
    // The release grants the first waiter, whose future is dropped before it ever sees it.
    let released_at = Instant::now();
    assert!(locker.release(&holder).await.unwrap());
    drop(cancelled);
    let (_, granted_at) = next.await.unwrap().unwrap();
    assert_eq!(granted_at, released_at, "the raced grant was handed on at once, not left to expire");

    // Without a next waiter, the raced grant is released.
    let key = LeaseRequest::lock("raced-alone", secs(10));
    let holder = locker.try_acquire(&key).await.unwrap().unwrap();
    let mut cancelled = Box::pin(locker.acquire(&key, secs(60)));
    assert!(still_pending(&mut cancelled).await);
    assert!(locker.release(&holder).await.unwrap());
    drop(cancelled);
    assert!(is_free(&*locker, &key).await);
}

#[tokio::test(start_paused = true)]
async fn acquire_cancelled_by_timeout_or_select_leaves_no_grant() {
    let locker = locker();
    let start = Instant::now();
    let holder = locker.try_acquire(&lock(secs(10))).await.unwrap().unwrap();
    let outer = tokio::time::timeout(secs(2), locker.acquire(&lock(secs(10)), secs(60))).await;
    assert!(outer.is_err(), "the outer timeout fired first");
    let request = lock(secs(10));
    tokio::select! {
        biased;
        _ = locker.acquire(&request, secs(60)) => panic!("held: cannot be granted"),
        () = tokio::time::sleep(secs(1)) => {}
    }
    assert_eq!(Instant::now(), start + secs(3));
    let next = queue_acquire(locker.clone(), lock(secs(10)), secs(60)).await;
    assert!(locker.release(&holder).await.unwrap());
    let (lease, granted_at) = next.await.unwrap().unwrap();
    assert_eq!(granted_at, start + secs(3), "the cancelled waiters are gone from the queue");
    assert!(locker.release(&lease).await.unwrap());
    assert!(is_free(&*locker, &lock(secs(1))).await);
}

#[tokio::test(start_paused = true)]
async fn fencing_tokens_strictly_increase_across_releases_expiries_and_forgotten_keys() {
    let locker = locker();
    let mut last = FencingToken(0);
    let mut check = |fence: FencingToken| {
        assert!(fence > last, "fence {fence} after {last}");
        last = fence;
    };
    for round in 0..5 {
        let lease = locker.try_acquire(&lock(secs(1))).await.unwrap().unwrap();
        check(lease.fence());
        if round % 2 == 0 {
            assert!(locker.release(&lease).await.unwrap());
        } else {
            advance(secs(1)).await; // expiry
        }
        // Other keys take fences in between, and enough of them come and go that the locker
        // sweeps its idle keys (this one included): a forgotten key must not restart its fences.
        for other in 0..200 {
            let lease = locker.try_acquire(&LeaseRequest::lock(format!("other-{round}-{other}"), secs(1))).await;
            assert!(locker.release(&lease.unwrap().unwrap()).await.unwrap());
        }
    }
    let holder = locker.try_acquire(&lock(secs(1))).await.unwrap().unwrap();
    check(holder.fence());
    let waiter = queue_acquire(locker.clone(), lock(secs(1)), secs(10)).await;
    let (handed_on, _) = waiter.await.unwrap().unwrap(); // on expiry
    check(handed_on.fence());
}

#[tokio::test(start_paused = true)]
async fn a_semaphore_admits_its_limit_and_queues_the_rest() {
    let locker = locker();
    let permit = LeaseRequest::semaphore("pool", 3, secs(10));
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(locker.try_acquire(&permit).await.unwrap().expect("a permit is free"));
    }
    assert!(held.iter().all(|lease| lease.limit() == 3));
    assert!(locker.try_acquire(&permit).await.unwrap().is_none(), "the fourth try fails");
    let fourth = queue_acquire(locker.clone(), permit.clone(), secs(60)).await;
    let fifth = queue_acquire(locker.clone(), permit.clone(), secs(60)).await;
    advance(secs(1)).await;
    let released_at = Instant::now();
    assert!(locker.release(&held[1]).await.unwrap());
    let (fourth, granted_at) = fourth.await.unwrap().unwrap();
    assert_eq!(granted_at, released_at, "semaphore hand-off on release");
    assert!(fourth.fence() > held[2].fence());
    // The other two permits end at 10 s: the fifth client gets one then.
    let (_, granted_at) = fifth.await.unwrap().unwrap();
    assert_eq!(granted_at, held[0].expires_at());
}

#[tokio::test(start_paused = true)]
async fn a_key_keeps_its_permit_limit_while_held() {
    let locker = locker();
    let permit = LeaseRequest::semaphore("pool", 3, secs(10));
    let lease = locker.try_acquire(&permit).await.unwrap().unwrap();
    for request in [LeaseRequest::lock("pool", secs(10)), LeaseRequest::semaphore("pool", 5, secs(10))] {
        let error = locker.try_acquire(&request).await.expect_err("another limit");
        assert!(matches!(error, LockError::LimitMismatch { existing: 3, .. }), "{error:?}");
        let error = locker.acquire(&request, secs(1)).await.expect_err("another limit");
        assert!(matches!(error, LockError::LimitMismatch { existing: 3, .. }), "{error:?}");
    }
    assert!(locker.release(&lease).await.unwrap());
    assert!(
        locker.try_acquire(&LeaseRequest::lock("pool", secs(1))).await.unwrap().is_some(),
        "idle keys forget their limit"
    );

    // Regression: a key whose leases have all *expired* is as idle as a released one.
    let expiring = LeaseRequest::semaphore("expiring-pool", 3, secs(1));
    locker.try_acquire(&expiring).await.unwrap().unwrap();
    advance(secs(1)).await;
    let lock = LeaseRequest::lock("expiring-pool", secs(1));
    assert!(locker.try_acquire(&lock).await.unwrap().is_some(), "the semaphore's leases ended: any limit goes");
}

/// Every test above, reduced to one generic body: usable with any `L: Locker`.
async fn exercise<L: Locker + ?Sized>(locker: &L) {
    let lease = locker.try_acquire(&lock(secs(5))).await.unwrap().unwrap();
    assert!(locker.try_acquire(&lock(secs(5))).await.unwrap().is_none());
    assert_eq!(locker.remaining_ttl(&lease).await.unwrap(), Some(secs(5)));
    let lease = locker.refresh(&lease, secs(8)).await.unwrap().unwrap();
    assert!(locker.release(&lease).await.unwrap());
    let lease = locker.acquire(&lock(secs(5)), secs(1)).await.unwrap();
    assert!(locker.release(&lease).await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn the_api_works_generically_and_through_dyn() {
    exercise(&MemoryLocker::new()).await;
    exercise(&Arc::new(MemoryLocker::new())).await;
    let shared: Arc<dyn Locker> = Arc::new(MemoryLocker::new());
    exercise(&*shared).await;
    exercise(&shared).await;
    let boxed: Box<dyn Locker> = Box::new(MemoryLocker::new());
    exercise(&boxed).await;
    assert_eq!(shared.describe(), "memory");
    let capabilities = shared.capabilities();
    assert!(capabilities.fencing && capabilities.fifo && capabilities.semaphores && capabilities.push_wakeups);
    assert!(capabilities.server_side_expiry && !capabilities.survives_server_restart);
}

#[tokio::test(start_paused = true)]
async fn the_queued_count_follows_a_waiter_from_its_enqueueing_to_its_grant_or_withdrawal() {
    let locker = locker();
    let mut queued = locker.queued().expect("the memory locker knows its queue");
    assert_eq!(queued.count(), 0);
    let holder = locker.try_acquire(&lock(secs(10))).await.unwrap().unwrap();
    let waiter = tokio::spawn({
        let locker = locker.clone();
        async move { locker.acquire(&lock(secs(10)), secs(60)).await }
    });
    // Bounded well inside the waiter's own wait: a count that never rises fails here instead
    // of hanging (the paused clock jumps to the bound as soon as nothing else can run).
    let rose = tokio::time::timeout(secs(30), queued.until_at_least(1)).await;
    assert_eq!(rose, Ok(true), "a waiter on a held key is counted before the holder releases");
    assert!(!waiter.is_finished());
    assert!(locker.release(&holder).await.unwrap());
    assert_eq!(queued.count(), 0, "the release granted the waiter: no longer queued");
    let lease = waiter.await.unwrap().unwrap();

    let cancelled = tokio::spawn({
        let locker = locker.clone();
        async move { locker.acquire(&lock(secs(10)), secs(60)).await }
    });
    let rose = tokio::time::timeout(secs(30), queued.until_at_least(1)).await;
    assert_eq!(rose, Ok(true));
    cancelled.abort();
    assert!(cancelled.await.unwrap_err().is_cancelled(), "dropped while queued");
    assert_eq!(queued.count(), 0, "a dropped acquire withdraws from the queue");
    assert!(locker.release(&lease).await.unwrap());

    drop(locker);
    assert!(!queued.until_at_least(1).await, "the locker is gone: the wait returns");
}
