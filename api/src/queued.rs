//! How many of a locker's acquires are queued: a count a caller can watch
//! ([`Locker::queued`](crate::Locker::queued)).
//!
//! A locker counts an acquire from the moment a release would reach it (registered for a
//! wake-up, or in the backend's queue) until it stops waiting. Tests and the hand-off
//! benchmark watch the count to release only once a waiter is really queued: having called
//! `acquire` is not enough, its registration may still be on the wire.

use tokio::sync::watch;

/// The count a locker keeps of its queued acquires; [`QueuedCount::queued`] hands out views
/// of it.
#[derive(Debug)]
pub struct QueuedCount(watch::Sender<u64>);

impl Default for QueuedCount {
    fn default() -> Self {
        QueuedCount(watch::Sender::new(0))
    }
}

impl QueuedCount {
    /// No acquire queued.
    pub fn new() -> Self {
        Self::default()
    }

    /// A view of the count for a caller (what [`Locker::queued`](crate::Locker::queued)
    /// returns).
    pub fn queued(&self) -> Queued {
        Queued(self.0.subscribe())
    }

    /// The count now.
    pub fn now(&self) -> u64 {
        *self.0.borrow()
    }

    /// Counts one more queued acquire until the returned guard is dropped.
    pub fn count(&self) -> Counted<'_> {
        self.add(1);
        Counted(&self.0)
    }

    /// Counts `n` more queued acquires (for a locker that tracks its queue itself).
    pub fn add(&self, n: u64) {
        if n > 0 {
            self.0.send_modify(|queued| *queued += n);
        }
    }

    /// Counts `n` fewer queued acquires.
    pub fn remove(&self, n: u64) {
        if n > 0 {
            self.0.send_modify(|queued| *queued -= n);
        }
    }
}

/// One queued acquire, counted while it lives (see [`QueuedCount::count`]).
#[must_use = "the acquire counts as queued only while this lives"]
pub struct Counted<'a>(&'a watch::Sender<u64>);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|queued| *queued -= 1);
    }
}

/// A locker's count of its queued acquires, as it changes (see
/// [`Locker::queued`](crate::Locker::queued)).
///
/// Cheap to clone; every clone follows the same count. Holding one does not keep the locker
/// alive: once the locker is dropped, the count stays at its last value and the waits below
/// return instead of hanging.
#[derive(Clone, Debug)]
pub struct Queued(watch::Receiver<u64>);

impl Queued {
    /// The count now.
    pub fn count(&self) -> u64 {
        *self.0.borrow()
    }

    /// Waits until the count is at least `n`. Returns `true` once it is, `false` if the
    /// locker was dropped before it got there (it never will then).
    pub async fn until_at_least(&mut self, n: u64) -> bool {
        self.0.wait_for(|&queued| queued >= n).await.is_ok()
    }

    /// Waits until the count may have changed since this view last waited (it was created,
    /// or one of its waits returned); may return early, so read [`Queued::count`] again.
    /// Returns `false` if the locker was dropped: the count will not change any more. For a
    /// caller that combines several lockers' counts (a sum, say).
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_counts_while_it_lives() {
        let count = QueuedCount::new();
        let queued = count.queued();
        let first = count.count();
        let second = count.count();
        assert_eq!((count.now(), queued.count()), (2, 2));
        drop(first);
        assert_eq!(queued.count(), 1);
        drop(second);
        assert_eq!(queued.count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_when_the_count_is_reached_or_the_locker_is_gone() {
        let count = QueuedCount::new();
        let mut queued = count.queued();
        let waiting = tokio::spawn({
            let mut queued = queued.clone();
            async move { queued.until_at_least(2).await }
        });
        let one = count.count();
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one of two is not enough");
        let two = count.count();
        assert!(waiting.await.unwrap(), "reached");
        assert!(queued.until_at_least(2).await, "already there: returns at once");
        drop((one, two));
        drop(count);
        assert!(!queued.until_at_least(1).await, "the locker is gone: returns, does not hang");
        assert!(!queued.changed().await);
    }
}
