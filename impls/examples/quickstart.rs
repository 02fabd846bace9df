//! A tour of the lock API on the in-memory reference locker:
//!
//! ```text
//! cargo run -p lockcheck-impls --example quickstart
//! ```
//!
//! Every other backend (Redis, NATS, dflockd) is used the same way through `dyn Locker`.

use std::sync::Arc;
use std::time::Duration;

use lockcheck_impls::{AutoRenew, FencingToken, LeaseRequest, LockGuard, Locker, LostReason, MemoryLocker};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let locker: Arc<dyn Locker> = Arc::new(MemoryLocker::new());
    println!("backend: {} {:?}", locker.describe(), locker.capabilities());

    // 1. A lock: acquire within a wait bound, prove ownership with the lease to release it.
    let report = LeaseRequest::lock("reports/daily", Duration::from_secs(5));
    let lease = locker.acquire(&report, Duration::from_secs(1)).await?;
    println!("1. holding {:?} with fencing token {}", lease.key(), lease.fence());
    assert!(locker.try_acquire(&report).await?.is_none(), "a second holder is refused");
    let waited = locker.acquire(&report, Duration::from_millis(50)).await.unwrap_err();
    println!("   a second acquire gives up after its wait bound: {waited}");
    assert!(locker.release(&lease).await?, "it was still held");
    assert!(!locker.release(&lease).await?, "a second release changes nothing");

    // 2. A guard that renews its lease in the background, and tells you if it is lost.
    let guard = LockGuard::acquire(
        locker.clone(),
        &LeaseRequest::lock("jobs/compaction", Duration::from_millis(200)),
        Duration::from_secs(1),
        Some(AutoRenew::default()),
    )
    .await?;
    tokio::select! {
        reason = guard.lost() => return Err(format!("lost the lock: {reason:?}").into()),
        () = tokio::time::sleep(Duration::from_millis(700)) => {
            println!("2. worked 700 ms under a 200 ms lease; the guard kept renewing it");
        }
    }
    assert!(guard.release().await?);

    // A guard without renewal reports the loss when its lease runs out.
    let short = LockGuard::acquire(
        locker.clone(),
        &LeaseRequest::lock("jobs/short", Duration::from_millis(100)),
        Duration::from_secs(1),
        None,
    )
    .await?;
    assert_eq!(short.lost().await, LostReason::Expired);
    println!("   an unrenewed guard reported its lease lost at expiry");

    // 3. A semaphore: at most 2 holders of "pool/db".
    let permit = LeaseRequest::semaphore("pool/db", 2, Duration::from_secs(5));
    let first = locker.try_acquire(&permit).await?.expect("a free permit");
    let second = locker.try_acquire(&permit).await?.expect("a free permit");
    assert!(locker.try_acquire(&permit).await?.is_none(), "the third waits for a permit");
    let third = {
        let locker = locker.clone();
        let permit = permit.clone();
        tokio::spawn(async move { locker.acquire(&permit, Duration::from_secs(1)).await })
    };
    locker.release(&first).await?;
    let third = third.await??;
    println!("3. semaphore: the third client got the permit the first released (fence {})", third.fence());
    locker.release(&second).await?;
    locker.release(&third).await?;

    // 4. Fencing: a resource that remembers the highest token refuses a stale writer.
    let mut storage = FencedStorage::default();
    let slow = locker.acquire(&report, Duration::from_secs(1)).await?;
    locker.release(&slow).await?; // ...or its lease expired while its holder was paused
    let fast = locker.acquire(&report, Duration::from_secs(1)).await?;
    storage.write(fast.fence(), "fresh")?;
    let refused = storage.write(slow.fence(), "stale").unwrap_err();
    println!("4. fencing: {refused}");
    locker.release(&fast).await?;
    Ok(())
}

/// A protected resource that checks fencing tokens (Kleppmann 2016).
#[derive(Default)]
struct FencedStorage {
    highest: Option<FencingToken>,
    value: String,
}

impl FencedStorage {
    fn write(&mut self, fence: FencingToken, value: &str) -> Result<(), String> {
        if self.highest.is_some_and(|highest| fence < highest) {
            return Err(format!("refused a write with token {fence}: {} was already seen", self.highest.unwrap()));
        }
        self.highest = Some(fence);
        self.value = value.to_owned();
        Ok(())
    }
}
