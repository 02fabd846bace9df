//! The etcd lockers against a real etcd (a `lockcheck/etcd` container, or an `etcd` process
//! without Docker), each test for both recipes — the revision queue (`etcd://`) and etcd's lock
//! service (`etcd+lockservice://`): exclusion and fencing by create revision, FIFO hand-off
//! through the predecessor watch, server-side expiry of a crashed holder's lease, refresh with
//! a longer TTL, the wait bound, cancel safety, semaphores, and fencing across a restart.
//!
//! Every test starts its own server; under `LOCKCHECK_SERVICES=skip` a missing server is
//! printed as SKIPPED instead.
#![cfg(feature = "etcd")]

use std::time::Duration;

use futures::FutureExt;
use lockcheck_impls::etcd::{EtcdConfig, EtcdLocker, EtcdMode};
use lockcheck_impls::{LeaseRequest, LockError, Locker};
use lockcheck_support::Service;
use lockcheck_support::etcd::{EtcdOptions, etcd};
use tokio::time::Instant;

const LONG: Duration = Duration::from_secs(30);

async fn locker(server: &Service, mode: EtcdMode) -> EtcdLocker {
    EtcdLocker::connect(EtcdConfig::new(mode, vec![server.address().to_string()]))
        .await
        .expect("the etcd locker connects")
}

/// A server; `None` when the run allows skipping.
async fn server(test: &str, options: &EtcdOptions) -> Option<Service> {
    let server = etcd(options).await.expect("an etcd server (run scripts/setup/etcd.sh)")?;
    println!("REAL-SERVER etcd: {test} at {} ({})", server.address(), server.runtime());
    Some(server)
}

/// Waits until `locker` has `n` acquires queued (its watches established at the server).
async fn until_queued(locker: &EtcdLocker, n: u64) {
    let mut queued = locker.queued().expect("etcd lockers count their waiters");
    tokio::time::timeout(Duration::from_secs(10), queued.until_at_least(n)).await.expect("waiters queue");
}

/// One test body per recipe.
macro_rules! both_modes {
    ($($name:ident($mode:ident) $body:block)*) => {$(
        mod $name {
            use super::*;
            async fn run($mode: EtcdMode) $body
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn revision_queue() { run(EtcdMode::Queue).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lock_service() { run(EtcdMode::LockService).await }
        }
    )*};
}

both_modes! {
    double_acquire_is_refused_until_release(mode) {
        let Some(server) = server("double_acquire", &EtcdOptions::default()).await else { return };
        let (a, b) = (locker(&server, mode).await, locker(&server, mode).await);
        let request = LeaseRequest::lock("k", LONG);
        let first = a.try_acquire(&request).await.unwrap().expect("a free key is granted");
        assert!(b.try_acquire(&request).await.unwrap().is_none(), "a held key is refused");
        assert!(a.try_acquire(&request).await.unwrap().is_none(), "also to its own holder");
        let forged = lockcheck_impls::Lease::new("k", lockcheck_impls::OwnerToken::random(), first.fence(), LONG, Instant::now(), 1);
        assert!(!b.release(&forged).await.unwrap(), "a forged lease naming the right fence releases nothing");
        assert!(b.refresh(&forged, LONG).await.unwrap().is_none());
        assert!(b.release(&first).await.unwrap(), "any client holding the lease can release it");
        assert!(!a.release(&first).await.unwrap(), "twice: not held any more");
        let again = b.try_acquire(&request).await.unwrap().expect("a released key is granted again");
        assert!(again.fence() > first.fence(), "fencing tokens increase: {} then {}", first.fence(), again.fence());
        // Keys that would nest as etcd directories stay distinct locks.
        let nested = a.try_acquire(&LeaseRequest::lock("k/sub", LONG)).await.unwrap().expect("k/sub is another lock");
        assert!(a.try_acquire(&LeaseRequest::lock("k%2Fsub", LONG)).await.unwrap().is_some(), "and so is its escape");
        assert!(a.release(&nested).await.unwrap());
        assert!(b.release(&again).await.unwrap());
    }

    waiters_are_granted_in_arrival_order(mode) {
        let Some(server) = server("fifo", &EtcdOptions::default()).await else { return };
        let holder = locker(&server, mode).await;
        let request = LeaseRequest::lock("k", LONG);
        let held = holder.try_acquire(&request).await.unwrap().unwrap();
        let mut waiting = Vec::new();
        for _ in 0..4 {
            let waiter = locker(&server, mode).await;
            let task = tokio::spawn({
                let (waiter, request) = (waiter.clone(), request.clone());
                async move {
                    let lease = waiter.acquire(&request, LONG).await.expect("granted in turn");
                    (Instant::now(), lease, waiter)
                }
            });
            until_queued(&waiter, 1).await;
            waiting.push(task);
        }
        let mut fence = held.fence();
        assert!(holder.release(&held).await.unwrap());
        for task in waiting {
            let (_, lease, waiter) = task.await.unwrap();
            assert!(lease.fence() > fence, "fences grow in grant order");
            fence = lease.fence();
            assert!(waiter.release(&lease).await.unwrap(), "each waiter holds when its turn comes");
        }
    }

    a_crashed_holders_lock_expires_on_the_server(mode) {
        let Some(server) = server("crash", &EtcdOptions::default()).await else { return };
        let request = LeaseRequest::lock("k", Duration::from_secs(1));
        let crashed = locker(&server, mode).await;
        let lost = crashed.try_acquire(&request).await.unwrap().unwrap();
        assert_eq!(lost.ttl(), Duration::from_secs(1), "etcd granted the TTL asked for (whole seconds)");
        drop(crashed);
        let waiter = locker(&server, mode).await;
        let started = Instant::now();
        let next = waiter.acquire(&LeaseRequest::lock("k", LONG), Duration::from_secs(5)).await.expect("the lease expires");
        assert!(Instant::now() >= lost.expires_at(), "granted before the crashed holder's lease ended");
        assert!(started.elapsed() < Duration::from_secs(3), "freed within its TTL and etcd's sweep: {:?}", started.elapsed());
        assert!(next.fence() > lost.fence());
        // The stale lease neither releases, refreshes nor reads the new holder's.
        assert!(!waiter.release(&lost).await.unwrap());
        assert!(waiter.refresh(&lost, LONG).await.unwrap().is_none());
        assert_eq!(waiter.remaining_ttl(&lost).await.unwrap(), None);
        let left = waiter.remaining_ttl(&next).await.unwrap().expect("the new holder holds");
        assert!(left > Duration::from_secs(25), "{left:?}");
    }

    refresh_extends_the_lease_and_keeps_the_fence(mode) {
        let Some(server) = server("refresh", &EtcdOptions::default()).await else { return };
        let (a, b) = (locker(&server, mode).await, locker(&server, mode).await);
        let request = LeaseRequest::lock("k", Duration::from_secs(1));
        let lease = a.try_acquire(&request).await.unwrap().unwrap();
        let same = a.refresh(&lease, Duration::from_millis(800)).await.unwrap().expect("held");
        assert_eq!((same.fence(), same.ttl()), (lease.fence(), Duration::from_secs(1)), "a keep-alive of the same lease");
        let longer = a.refresh(&same, Duration::from_secs(4)).await.unwrap().expect("held");
        assert_eq!((longer.fence(), longer.ttl()), (lease.fence(), Duration::from_secs(4)), "moved onto a 4 s lease");
        let waited = b.acquire(&request, Duration::from_millis(2500)).await;
        assert!(matches!(waited, Err(LockError::TimedOut { .. })), "the refreshed lease expired early: {waited:?}");
        assert!(a.remaining_ttl(&longer).await.unwrap().is_some());
        assert!(a.release(&longer).await.unwrap(), "released with the refreshed lease");
        assert!(b.try_acquire(&request).await.unwrap().is_some(), "and free at once");
    }

    acquire_honours_its_wait_bound_and_leaves_nothing_queued(mode) {
        let Some(server) = server("wait_bound", &EtcdOptions::default()).await else { return };
        let (a, b, c) = (locker(&server, mode).await, locker(&server, mode).await, locker(&server, mode).await);
        let request = LeaseRequest::lock("k", LONG);
        let held = a.try_acquire(&request).await.unwrap().unwrap();
        let started = Instant::now();
        let waited = b.acquire(&request, Duration::from_millis(300)).await;
        let took = started.elapsed();
        assert!(matches!(waited, Err(LockError::TimedOut { .. })), "{waited:?}");
        assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(800), "returned after {took:?}");
        // A cancelled acquire, dropped while queued, leaves no key behind: the next waiter
        // behind it is granted when the holder releases.
        let mut cancelled = Box::pin(b.acquire(&request, LONG));
        assert!((&mut cancelled).now_or_never().is_none());
        tokio::select! {
            _ = &mut cancelled => panic!("granted while held"),
            () = until_queued(&b, 1) => {}
        }
        drop(cancelled);
        let next = tokio::spawn({
            let (c, request) = (c.clone(), request.clone());
            async move { c.acquire(&request, LONG).await }
        });
        until_queued(&c, 1).await;
        let released = Instant::now();
        assert!(a.release(&held).await.unwrap());
        let lease = next.await.unwrap().expect("the waiter behind the cancelled one is granted");
        assert!(released.elapsed() < Duration::from_secs(1), "hand-off took {:?}", released.elapsed());
        let mut client = c.client().clone();
        let keys = client.get("lockcheck/k/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
        assert_eq!(keys.kvs().len(), 1, "only the holder's key is left");
        assert!(c.release(&lease).await.unwrap());
    }

    fencing_and_locks_survive_a_restart(mode) {
        let Some(mut server) = server("restart", &EtcdOptions::default()).await else { return };
        let a = locker(&server, mode).await;
        let request = LeaseRequest::lock("k", LONG);
        let before = a.try_acquire(&request).await.unwrap().unwrap();
        server.restart().await.expect("etcd restarts");
        let b = locker(&server, mode).await;
        assert!(b.try_acquire(&request).await.unwrap().is_none(), "the lock survived the restart");
        assert!(a.release(&before).await.unwrap(), "the holder still holds it");
        let after = b.try_acquire(&request).await.unwrap().unwrap();
        assert!(after.fence() > before.fence(), "fences continue after a restart: {} then {}", before.fence(), after.fence());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphores_hold_the_lowest_revisions_and_the_lock_service_refuses_them() {
    let Some(server) = server("semaphores", &EtcdOptions::default()).await else { return };
    let (a, b) = (locker(&server, EtcdMode::Queue).await, locker(&server, EtcdMode::Queue).await);
    let request = LeaseRequest::semaphore("s", 2, LONG);
    let one = a.try_acquire(&request).await.unwrap().unwrap();
    let two = b.try_acquire(&request).await.unwrap().unwrap();
    assert!(a.try_acquire(&request).await.unwrap().is_none(), "two permits taken");
    let mismatch = a.try_acquire(&LeaseRequest::lock("s", LONG)).await;
    assert!(matches!(mismatch, Err(LockError::LimitMismatch { existing: 2, requested: 1, .. })), "{mismatch:?}");
    let third = tokio::spawn({
        let (a, request) = (a.clone(), request.clone());
        async move { a.acquire(&request, LONG).await }
    });
    until_queued(&a, 1).await;
    assert!(b.release(&two).await.unwrap());
    let three = third.await.unwrap().expect("a freed permit is handed on");
    assert!(three.fence() > two.fence());
    assert!(a.release(&one).await.unwrap() && a.release(&three).await.unwrap());
    let service = locker(&server, EtcdMode::LockService).await;
    assert!(!service.capabilities().semaphores);
    let refused = service.try_acquire(&request).await;
    assert!(matches!(refused, Err(LockError::Unsupported { .. })), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_persistence_restarts_empty() {
    let Some(mut server) = server("no_persistence", &EtcdOptions { persistent: false }).await else { return };
    let a = locker(&server, EtcdMode::Queue).await;
    let request = LeaseRequest::lock("k", LONG);
    let before = a.try_acquire(&request).await.unwrap().unwrap();
    server.restart().await.expect("etcd restarts");
    let b = locker(&server, EtcdMode::Queue).await;
    let after = b.try_acquire(&request).await.unwrap().expect("the lock is gone with the data");
    assert!(
        after.fence() <= before.fence(),
        "the revision counter started again: {} then {}",
        before.fence(),
        after.fence()
    );
    assert!(!a.release(&before).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_unavailable_and_bad_input_is_refused() {
    let config = EtcdConfig::new(EtcdMode::Queue, vec!["127.0.0.1:1".to_owned()]);
    let refused = EtcdLocker::connect(config).await;
    assert!(refused.as_ref().is_err_and(LockError::is_unavailable), "{:?}", refused.err());
    let Some(server) = server("bad_input", &EtcdOptions::default()).await else { return };
    let a = locker(&server, EtcdMode::Queue).await;
    for bad in [LeaseRequest::lock("", LONG), LeaseRequest::lock("a b", LONG), LeaseRequest::lock("k", Duration::ZERO)]
    {
        assert!(a.try_acquire(&bad).await.is_err_and(|error| error.is_invalid_input()), "{bad:?}");
    }
    let lease = a.try_acquire(&LeaseRequest::lock("k", Duration::from_millis(1500))).await.unwrap().unwrap();
    assert_eq!(lease.ttl(), Duration::from_secs(2), "rounded up to etcd's whole seconds, and reported");
}
