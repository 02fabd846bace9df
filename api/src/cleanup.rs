//! Clean-up that outlives the future that needed it: work spawned when a guard is dropped. For
//! lockers: every reference locker's cancelled operations clean up this way.
//!
//! A cancelled acquire or release cannot await anything: its future is simply dropped. What
//! it left on the wire (a grant request, a queue entry, a subscription, an offer) is cleaned
//! up by a task spawned from `Drop` on the current tokio runtime. Dropped outside a runtime
//! (or while one shuts down), there is nothing to run the task on, and the work is skipped:
//! every use relies on a backstop the server enforces anyway — a grant ends with its TTL, a
//! queue entry with its deadline, a subscription with its connection.

use std::future::Future;

/// Spawns `work` on the current tokio runtime and forgets it; skipped (returns `false`)
/// without a runtime (see the module docs for why that is safe).
pub fn spawn<F>(work: F) -> bool
where
    F: Future<Output = ()> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            drop(runtime.spawn(work));
            true
        }
        Err(_) => false,
    }
}

/// Work that is [`spawn`]ed when this is dropped, unless [`OnDrop::disarm`]ed first: for a
/// clean-up whose every input is known when the guard is made.
#[must_use = "the clean-up runs when this is dropped: bind it to a variable"]
pub struct OnDrop<F: Future<Output = ()> + Send + 'static>(Option<F>);

impl<F: Future<Output = ()> + Send + 'static> OnDrop<F> {
    /// Arms `work`.
    pub fn new(work: F) -> Self {
        OnDrop(Some(work))
    }

    /// The normal path finished: drop the work without running it.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl<F: Future<Output = ()> + Send + 'static> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(work) = self.0.take() {
            spawn(work);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn flag() -> (Arc<AtomicBool>, impl Future<Output = ()> + Send + 'static) {
        let ran = Arc::new(AtomicBool::new(false));
        let set = ran.clone();
        (ran, async move { set.store(true, Ordering::SeqCst) })
    }

    #[tokio::test]
    async fn an_armed_guard_spawns_its_work_and_a_disarmed_one_does_not() {
        let (ran, work) = flag();
        drop(OnDrop::new(work));
        tokio::task::yield_now().await;
        assert!(ran.load(Ordering::SeqCst), "dropped armed: the work ran");

        let (ran, work) = flag();
        OnDrop::new(work).disarm();
        tokio::task::yield_now().await;
        assert!(!ran.load(Ordering::SeqCst), "disarmed: nothing ran");
    }

    #[test]
    fn without_a_runtime_the_work_is_skipped() {
        let (ran, work) = flag();
        assert!(!spawn(work));
        drop(OnDrop::new(flag().1));
        assert!(!ran.load(Ordering::SeqCst));
    }
}
