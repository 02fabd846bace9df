//! Real threads, real races: hundreds of iterations of a release racing an acquire (and an
//! abort racing a grant) on a multi-thread runtime. The loom checks prove the orderings
//! exhaustively on the table; these run the whole async path — futures, wakers, tokio timers —
//! under real preemption. Every wait is bounded by a generous timeout that fails the test.

#[path = "support/locking.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use lockcheck_impls::Locker;
use support::{lock, locker, secs};
use tokio::sync::Barrier;
use tokio::time::timeout;

const ITERATIONS: usize = 300;
/// Far above any scheduling delay; a lost wake-up shows up as this bound running out.
const GENEROUS: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_racing_an_acquire_always_grants_the_waiter() {
    let locker = locker();
    // The holder's lease outlives the test: only the release can free the key.
    let request = lock(secs(600));
    for iteration in 0..ITERATIONS {
        let holder = locker.try_acquire(&request).await.unwrap().expect("free at the start of each iteration");
        let start = Arc::new(Barrier::new(2));
        let waiter = tokio::spawn({
            let (locker, request, start) = (locker.clone(), request.clone(), start.clone());
            async move {
                start.wait().await;
                locker.acquire(&request, GENEROUS).await
            }
        });
        let releaser = tokio::spawn({
            let (locker, start) = (locker.clone(), start.clone());
            async move {
                start.wait().await;
                locker.release(&holder).await
            }
        });
        let granted =
            timeout(GENEROUS * 2, waiter).await.unwrap_or_else(|_| panic!("iteration {iteration}: acquire hung"));
        let lease = granted.unwrap().unwrap_or_else(|error| panic!("iteration {iteration}: lost wake-up: {error}"));
        assert!(releaser.await.unwrap().unwrap(), "iteration {iteration}: the holder held it");
        assert!(locker.release(&lease).await.unwrap(), "iteration {iteration}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_racing_a_grant_never_leaks_the_lock() {
    let locker = locker();
    let request = lock(secs(600));
    let mut raced_grants = 0;
    for iteration in 0..ITERATIONS {
        let holder = locker.try_acquire(&request).await.unwrap().expect("free at the start of each iteration");
        let start = Arc::new(Barrier::new(2));
        let waiter = tokio::spawn({
            let (locker, request, start) = (locker.clone(), request.clone(), start.clone());
            async move {
                start.wait().await;
                locker.acquire(&request, GENEROUS).await
            }
        });
        let aborter = waiter.abort_handle();
        let releaser = tokio::spawn({
            let (locker, start) = (locker.clone(), start.clone());
            async move {
                start.wait().await;
                let released = locker.release(&holder).await;
                aborter.abort();
                released
            }
        });
        assert!(releaser.await.unwrap().unwrap(), "iteration {iteration}");
        match timeout(GENEROUS, waiter).await.unwrap_or_else(|_| panic!("iteration {iteration}: hung")) {
            // The waiter won the race and returned before the abort: it holds the lease.
            Ok(granted) => {
                raced_grants += 1;
                assert!(locker.release(&granted.unwrap()).await.unwrap(), "iteration {iteration}");
            }
            Err(aborted) => assert!(aborted.is_cancelled(), "iteration {iteration}: {aborted}"),
        }
        // A grant leaked to the aborted acquire would hold the key for 600 s.
        let next = locker.acquire(&request, GENEROUS).await;
        let next = next.unwrap_or_else(|error| panic!("iteration {iteration}: leaked grant: {error}"));
        assert!(locker.release(&next).await.unwrap());
    }
    eprintln!("{raced_grants} of {ITERATIONS} waiters were granted before their abort");
}
