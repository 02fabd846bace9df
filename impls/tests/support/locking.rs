//! Helpers shared by the integration tests, included with `#[path = "support/locking.rs"]`
//! (a subdirectory, so cargo does not build it as a test of its own).
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use lockcheck_impls::{Lease, LeaseRequest, LockError, Locker, MemoryLocker};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub const KEY: &str = "orders/42";

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn lock(ttl: Duration) -> LeaseRequest {
    LeaseRequest::lock(KEY, ttl)
}

pub fn locker() -> Arc<MemoryLocker> {
    Arc::new(MemoryLocker::new())
}

/// A grant and the instant its acquire returned.
pub type Timed = Result<(Lease, Instant), LockError>;

/// Starts `acquire` and polls it once — which queues it, since the key is held — then lets a
/// task finish it. Queuing in a known order, without sleeping, is what makes FIFO testable.
pub async fn queue_acquire<L: Locker + ?Sized + 'static>(
    locker: Arc<L>,
    request: LeaseRequest,
    wait: Duration,
) -> JoinHandle<Timed> {
    let mut acquire: Pin<Box<dyn Future<Output = Timed> + Send>> = Box::pin(async move {
        let lease = locker.acquire(&request, wait).await?;
        Ok((lease, Instant::now()))
    });
    let first = std::future::poll_fn(|cx| Poll::Ready(acquire.as_mut().poll(cx))).await;
    assert!(first.is_pending(), "the key is held: the acquire must queue, got {first:?}");
    tokio::spawn(acquire)
}

/// Polls a future once: `true` if it is still pending (it registered and waits).
pub async fn still_pending<F: Future + Unpin>(future: &mut F) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx).is_pending())).await
}

/// Whether `request`'s key has a free slot right now, probed with a try that is released
/// at once (so the probe itself changes nothing).
pub async fn is_free<L: Locker + ?Sized>(locker: &L, request: &LeaseRequest) -> bool {
    match locker.try_acquire(request).await.expect("probe try_acquire") {
        Some(lease) => {
            assert!(locker.release(&lease).await.unwrap());
            true
        }
        None => false,
    }
}
