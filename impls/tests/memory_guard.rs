//! `LockGuard` on the memory locker: auto-renew keeps a lease across many TTLs, `lost()`
//! fires when the lease is taken away (by expiry, or when the backend says it is not held),
//! and dropping a guard releases its lease in the background.

#[path = "support/locking.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use lockcheck_impls::{
    AutoRenew, Capabilities, Lease, LeaseRequest, LockError, LockGuard, Locker, LostReason, MemoryLocker,
};
use support::{is_free, lock, locker, secs};
use tokio::time::{Instant, advance, sleep};

#[tokio::test(start_paused = true)]
async fn auto_renew_keeps_the_lease_across_many_ttls() {
    let locker = locker();
    let guard = LockGuard::acquire(locker.clone(), &lock(secs(1)), secs(1), Some(AutoRenew::default())).await.unwrap();
    let fence = guard.lease().fence();
    sleep(secs(20)).await; // 20 TTLs of virtual time
    assert!(!guard.is_lost());
    assert_eq!(guard.lease().fence(), fence, "renewed, not re-acquired");
    assert!(locker.remaining_ttl(&guard.lease()).await.unwrap().is_some(), "the backend still holds it");
    assert!(locker.try_acquire(&lock(secs(1))).await.unwrap().is_none());
    assert!(guard.release().await.unwrap(), "still held at release");
    assert!(is_free(&*locker, &lock(secs(1))).await);
}

#[tokio::test(start_paused = true)]
async fn a_nonsense_renew_policy_still_renews() {
    // Regression: NaN fractions made the renewer panic (f64::clamp), silently, in its task.
    let locker = locker();
    let policy = AutoRenew { at_fraction: f64::NAN, early_jitter: f64::NAN };
    let guard = LockGuard::acquire(locker.clone(), &lock(secs(1)), secs(1), Some(policy)).await.unwrap();
    sleep(secs(10)).await;
    assert!(!guard.is_lost());
    let policy = AutoRenew { at_fraction: 7.0, early_jitter: -3.0 };
    let other = LockGuard::acquire(locker.clone(), &LeaseRequest::lock("other", secs(1)), secs(1), Some(policy)).await;
    let other = other.unwrap();
    sleep(secs(10)).await;
    assert!(!other.is_lost());
}

#[tokio::test(start_paused = true)]
async fn lost_fires_at_expiry_without_renewal() {
    let locker = locker();
    let start = Instant::now();
    let guard = LockGuard::acquire(locker.clone(), &lock(secs(2)), secs(1), None).await.unwrap();
    assert!(!guard.is_lost());
    assert_eq!(guard.lost().await, LostReason::Expired);
    assert_eq!(Instant::now(), start + secs(2), "exactly at the lease's end");
    assert!(guard.is_lost());
    let taker = locker.try_acquire(&lock(secs(2))).await.unwrap().expect("the lease really ended");
    assert!(!guard.release().await.unwrap(), "a lost lease is not held");
    assert_eq!(locker.remaining_ttl(&taker).await.unwrap(), Some(secs(2)), "releasing the lost guard spared the taker");
}

#[tokio::test(start_paused = true)]
async fn lost_fires_when_the_backend_says_the_lease_is_gone() {
    let locker = locker();
    let start = Instant::now();
    let guard = LockGuard::acquire(locker.clone(), &lock(secs(10)), secs(1), Some(AutoRenew::default())).await.unwrap();
    // Somebody releases the lease behind the guard's back (a copy of the lease, an operator).
    assert!(locker.release(&guard.lease()).await.unwrap());
    let taker = locker.try_acquire(&lock(secs(60))).await.unwrap().unwrap();
    assert_eq!(guard.lost().await, LostReason::NotHeld);
    assert!(Instant::now() < start + secs(10), "noticed at the first renewal, before the lease's own end");
    assert!(guard.is_lost());
    assert_eq!(locker.remaining_ttl(&taker).await.unwrap(), Some(secs(60) - (Instant::now() - start)));
}

/// A locker whose refreshes fail (an unreachable backend) while `down` is set.
struct Flaky {
    inner: MemoryLocker,
    down: AtomicBool,
}

#[async_trait]
impl Locker for Flaky {
    fn describe(&self) -> String {
        "flaky memory".into()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        self.inner.try_acquire(request).await
    }
    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        self.inner.acquire(request, wait).await
    }
    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        self.inner.release(lease).await
    }
    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(LockError::unavailable("backend down"));
        }
        self.inner.refresh(lease, ttl).await
    }
    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        self.inner.remaining_ttl(lease).await
    }
}

#[tokio::test(start_paused = true)]
async fn renewal_errors_are_retried_and_reported_when_the_lease_runs_out() {
    let locker = Arc::new(Flaky { inner: MemoryLocker::new(), down: AtomicBool::new(true) });
    let start = Instant::now();
    let guard = LockGuard::acquire(locker.clone(), &lock(secs(4)), secs(1), Some(AutoRenew::default())).await.unwrap();
    let reason = guard.lost().await;
    assert!(matches!(reason, LostReason::RenewFailed(_) | LostReason::Expired), "{reason:?}");
    assert!(Instant::now() >= start + secs(4), "not given up before the lease ended");
    assert!(Instant::now() <= start + secs(4) + Duration::from_millis(10));

    // A backend that comes back in time keeps the lease.
    let request = LeaseRequest::lock("recovers", secs(4));
    let guard = LockGuard::acquire(locker.clone(), &request, secs(1), Some(AutoRenew::default())).await.unwrap();
    advance(Duration::from_millis(2_500)).await; // one refresh failed
    locker.down.store(false, Ordering::SeqCst);
    sleep(secs(20)).await;
    assert!(!guard.is_lost(), "a retry within the lease succeeded");
}

#[tokio::test(start_paused = true)]
async fn dropping_a_guard_releases_the_lease_in_the_background() {
    let locker = locker();
    let guard = LockGuard::acquire(locker.clone(), &lock(secs(30)), secs(1), Some(AutoRenew::default())).await.unwrap();
    drop(guard);
    let start = Instant::now();
    let lease = locker.acquire(&lock(secs(30)), secs(60)).await.expect("released by the dropped guard");
    assert_eq!(Instant::now(), start, "released at once, not by expiry");
    assert!(locker.release(&lease).await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn guards_work_on_a_concrete_locker_and_through_dyn() {
    let concrete: Arc<MemoryLocker> = locker();
    let guard: LockGuard<MemoryLocker> =
        LockGuard::acquire(concrete.clone(), &lock(secs(5)), secs(1), None).await.unwrap();
    assert!(guard.release().await.unwrap());
    let shared: Arc<dyn Locker> = concrete;
    let lease = shared.try_acquire(&lock(secs(5))).await.unwrap().unwrap();
    let guard: LockGuard = LockGuard::hold(shared.clone(), lease, None);
    assert!(guard.release().await.unwrap());
}
