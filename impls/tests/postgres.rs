//! The Postgres locker against a real Postgres (a `postgres` process in the test's scratch
//! directory): exclusion and fencing from the sequence, FIFO hand-off through Postgres's lock
//! queue, TTLs enforced by contenders on the database's clock, session binding (a crashed
//! holder frees at once, a cut session frees under a live holder), the wait bound, cancel
//! safety, and fencing across a restart.
//!
//! Every test starts its own server; under `LOCKCHECK_SERVICES=skip` a missing server is
//! printed as SKIPPED instead.
#![cfg(feature = "postgres")]

use std::time::Duration;

use lockcheck_impls::postgres::PostgresLocker;
use lockcheck_impls::{Lease, LeaseRequest, LockError, Locker, OwnerToken};
use lockcheck_support::Service;
use lockcheck_support::postgres::{postgres, url};
use tokio::time::Instant;

const LONG: Duration = Duration::from_secs(30);

async fn server(test: &str) -> Option<Service> {
    let server = postgres().await.expect("a Postgres server (scripts/setup/postgres.sh)")?;
    println!("REAL-SERVER postgres: {test} at {} ({})", server.address(), server.runtime());
    Some(server)
}

async fn locker(server: &Service) -> PostgresLocker {
    PostgresLocker::connect(&url(server)).await.expect("the Postgres locker connects")
}

/// Waits until `n` sessions wait in Postgres's lock queue for an advisory lock (read from
/// `pg_locks`, the server's own account; a readiness check, not a sleep).
async fn until_waiting(observer: &PostgresLocker, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = observer
            .client()
            .query_one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted", &[])
            .await
            .unwrap();
        if row.get::<_, i64>(0) >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{n} waiters never queued");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_acquire_is_refused_and_any_client_can_release() {
    let Some(server) = server("double_acquire").await else { return };
    let (a, b) = (locker(&server).await, locker(&server).await);
    let request = LeaseRequest::lock("k", LONG);
    let first = a.try_acquire(&request).await.unwrap().expect("a free key is granted");
    assert!(b.try_acquire(&request).await.unwrap().is_none(), "a held key is refused");
    assert!(a.try_acquire(&request).await.unwrap().is_none(), "also to its own holder (a session per lease)");
    let forged = Lease::new("k", OwnerToken::random(), first.fence(), LONG, Instant::now(), 1);
    assert!(!b.release(&forged).await.unwrap(), "a forged lease releases nothing");
    assert!(b.refresh(&forged, LONG).await.unwrap().is_none());
    assert!(b.release(&first).await.unwrap(), "another client releases the lease it was handed");
    assert!(!a.release(&first).await.unwrap(), "twice: not held any more");
    let again = a.try_acquire(&request).await.unwrap().expect("a released key is granted again");
    assert!(again.fence() > first.fence(), "fencing tokens increase: {} then {}", first.fence(), again.fence());
    assert!(a.release(&again).await.unwrap(), "the holder releases through its own session");
    assert_eq!(a.held_sessions(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_granted_in_arrival_order() {
    let Some(server) = server("fifo").await else { return };
    let holder = locker(&server).await;
    let request = LeaseRequest::lock("k", LONG);
    let held = holder.try_acquire(&request).await.unwrap().unwrap();
    let mut waiting = Vec::new();
    for n in 1..=4 {
        let waiter = locker(&server).await;
        waiting.push(tokio::spawn({
            let request = request.clone();
            async move { (waiter.acquire(&request, LONG).await.expect("granted in turn"), waiter) }
        }));
        until_waiting(&holder, n).await;
    }
    assert!(holder.try_acquire(&request).await.unwrap().is_none(), "no barging while waiters queue");
    let mut fence = held.fence();
    assert!(holder.release(&held).await.unwrap());
    for task in waiting {
        let (lease, waiter) = task.await.unwrap();
        assert!(lease.fence() > fence, "fences grow in arrival order");
        fence = lease.fence();
        assert!(waiter.release(&lease).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_ends_at_its_ttl_when_someone_wants_the_key() {
    let Some(server) = server("ttl").await else { return };
    let (a, b, c) = (locker(&server).await, locker(&server).await, locker(&server).await);
    let request = LeaseRequest::lock("k", Duration::from_millis(300));
    let stale = a.try_acquire(&request).await.unwrap().unwrap();
    let left = a.remaining_ttl(&stale).await.unwrap().expect("held");
    assert!(left <= Duration::from_millis(300) && left > Duration::from_millis(200), "{left:?}");
    // A waiter queued behind the holder has the expired holder reaped at its recorded expiry.
    let next = b.acquire(&LeaseRequest::lock("k", LONG), Duration::from_secs(5)).await.expect("the lease ends");
    assert!(Instant::now() >= stale.expires_at(), "granted before the first holder's lease ended");
    assert!(next.fence() > stale.fence());
    assert!(!a.release(&stale).await.unwrap(), "a stale release reports not held");
    assert!(a.refresh(&stale, LONG).await.unwrap().is_none(), "a stale refresh reports lost");
    assert_eq!(a.remaining_ttl(&stale).await.unwrap(), None);
    assert!(c.try_acquire(&request).await.unwrap().is_none(), "the new holder holds");
    // A try after expiry takes the key from an expired holder itself.
    let short = c.try_acquire(&LeaseRequest::lock("j", Duration::from_millis(100))).await.unwrap().unwrap();
    tokio::time::sleep_until(short.expires_at() + Duration::from_millis(5)).await;
    let taken = b.try_acquire(&LeaseRequest::lock("j", LONG)).await.unwrap().expect("an expired lease is taken over");
    assert!(taken.fence() > short.fence());
    assert!(b.release(&next).await.unwrap() && b.release(&taken).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_moves_the_expiry() {
    let Some(server) = server("refresh").await else { return };
    let (a, b) = (locker(&server).await, locker(&server).await);
    let request = LeaseRequest::lock("k", Duration::from_millis(300));
    let lease = a.try_acquire(&request).await.unwrap().unwrap();
    let refreshed = b.refresh(&lease, Duration::from_secs(3)).await.unwrap().expect("held");
    assert_eq!((refreshed.fence(), refreshed.ttl()), (lease.fence(), Duration::from_secs(3)));
    let waited = b.acquire(&request, Duration::from_millis(800)).await;
    assert!(matches!(waited, Err(LockError::TimedOut { .. })), "the refreshed lease ended early: {waited:?}");
    assert!(a.remaining_ttl(&refreshed).await.unwrap().unwrap() > Duration::from_secs(1));
    assert!(a.release(&refreshed).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holder_frees_at_once_and_a_cut_session_frees_under_a_live_holder() {
    let Some(server) = server("sessions").await else { return };
    let (a, b) = (locker(&server).await, locker(&server).await);
    let request = LeaseRequest::lock("k", LONG);
    let crashed = locker(&server).await;
    let lost = crashed.try_acquire(&request).await.unwrap().unwrap();
    let waiter = tokio::spawn({
        let (b, request) = (b.clone(), request.clone());
        async move { b.acquire(&request, Duration::from_secs(5)).await }
    });
    until_waiting(&a, 1).await;
    let crashed_at = Instant::now();
    drop(crashed);
    let next = waiter.await.unwrap().expect("the crashed holder's session ends, and its lock");
    assert!(crashed_at.elapsed() < Duration::from_secs(1), "freed long before its TTL: {:?}", crashed_at.elapsed());
    assert!(next.fence() > lost.fence());
    // Cut the live holder's session: the key frees while the holder still believes it holds it.
    let cut = a
        .client()
        .execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND pid IN
               (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(cut, 1, "one session held an advisory lock");
    assert!(next.locally_remaining() > Duration::from_secs(20), "the holder still believes it holds the lock");
    let stolen = a.try_acquire(&request).await.unwrap().expect("a cut session's lock is free");
    assert!(stolen.fence() > next.fence(), "fencing tells the stale holder apart");
    assert!(!b.release(&next).await.unwrap(), "the cut holder learns it lost the lock");
    assert!(a.release(&stolen).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_honours_its_wait_bound_and_a_cancelled_wait_leaves_nothing() {
    let Some(server) = server("wait_bound").await else { return };
    let (a, b, c) = (locker(&server).await, locker(&server).await, locker(&server).await);
    let request = LeaseRequest::lock("k", LONG);
    let held = a.try_acquire(&request).await.unwrap().unwrap();
    let started = Instant::now();
    let waited = b.acquire(&request, Duration::from_millis(300)).await;
    let took = started.elapsed();
    assert!(matches!(waited, Err(LockError::TimedOut { .. })), "{waited:?}");
    assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(800), "returned after {took:?}");
    let cancelled = tokio::spawn({
        let (b, request) = (b.clone(), request.clone());
        async move { b.acquire(&request, LONG).await }
    });
    until_waiting(&a, 1).await;
    cancelled.abort();
    let next = tokio::spawn({
        let (c, request) = (c.clone(), request.clone());
        async move { c.acquire(&request, LONG).await }
    });
    // The cancelled wait leaves the queue: only the new waiter is left in it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let row = a
            .client()
            .query_one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted", &[])
            .await
            .unwrap();
        let waiting: i64 = row.get(0);
        let sessions = a
            .client()
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'", &[])
            .await
            .unwrap();
        if waiting == 1 && sessions.get::<_, i64>(0) == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the cancelled wait stayed queued");
        tokio::task::yield_now().await;
    }
    let released = Instant::now();
    assert!(a.release(&held).await.unwrap());
    let lease = next.await.unwrap().expect("the waiter behind the cancelled one is granted");
    assert!(released.elapsed() < Duration::from_secs(1), "hand-off took {:?}", released.elapsed());
    assert!(c.release(&lease).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_survives_a_restart_and_the_locks_do_not() {
    let Some(mut server) = server("restart").await else { return };
    let a = locker(&server).await;
    let request = LeaseRequest::lock("k", LONG);
    let before = a.try_acquire(&request).await.unwrap().unwrap();
    server.restart().await.expect("postgres restarts");
    let b = locker(&server).await;
    let after = b.try_acquire(&request).await.unwrap().expect("a restart ends every session, and its locks");
    assert!(after.fence() > before.fence(), "the sequence continues: {} then {}", before.fence(), after.fence());
    let released = a.release(&before).await;
    assert!(matches!(released, Ok(false) | Err(LockError::Indeterminate { .. })), "{released:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_and_bad_input_are_refused_and_an_unreachable_server_is_unavailable() {
    let refused = PostgresLocker::connect("postgres://lockcheck@127.0.0.1:1/postgres").await;
    assert!(refused.as_ref().is_err_and(LockError::is_unavailable), "{:?}", refused.err());
    assert!(PostgresLocker::connect("postgres://").await.is_err_and(|error| error.is_invalid_input()));
    let Some(server) = server("bad_input").await else { return };
    let a = locker(&server).await;
    assert!(!a.capabilities().semaphores && a.capabilities().session_bound && !a.capabilities().server_side_expiry);
    let semaphore = a.try_acquire(&LeaseRequest::semaphore("s", 2, LONG)).await;
    assert!(matches!(semaphore, Err(LockError::Unsupported { .. })), "{semaphore:?}");
    for bad in [LeaseRequest::lock("", LONG), LeaseRequest::lock("a\nb", LONG), LeaseRequest::lock("k", Duration::ZERO)]
    {
        assert!(a.try_acquire(&bad).await.is_err_and(|error| error.is_invalid_input()), "{bad:?}");
    }
}
