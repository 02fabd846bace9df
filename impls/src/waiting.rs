//! How many of a locker's acquires are waiting for a key: a count a caller can watch.
//!
//! A locker counts an acquire from the moment a release would reach it (its first look after
//! joining the key's waiters found the key held) until it returns. Tests and the hand-off
//! benchmark watch it to release only once a waiter is really queued.

use tokio::sync::watch;

/// A locker's count of its waiting acquires.
#[derive(Debug)]
pub struct WaitingCount(watch::Sender<u64>);

impl Default for WaitingCount {
    fn default() -> Self {
        WaitingCount(watch::Sender::new(0))
    }
}

impl WaitingCount {
    /// No acquire waiting.
    pub fn new() -> Self {
        Self::default()
    }

    /// The count, as it changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }

    /// The count now.
    pub fn now(&self) -> u64 {
        *self.0.borrow()
    }

    /// Counts one more waiting acquire until the returned guard is dropped.
    pub fn count(&self) -> Counted<'_> {
        self.0.send_modify(|waiting| *waiting += 1);
        Counted(&self.0)
    }
}

/// One waiting acquire, counted while it lives (see [`WaitingCount::count`]).
#[must_use = "the acquire counts as waiting only while this lives"]
pub struct Counted<'a>(&'a watch::Sender<u64>);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|waiting| *waiting -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_counts_while_it_lives() {
        let count = WaitingCount::new();
        let mut changes = count.changes();
        let first = count.count();
        let second = count.count();
        assert_eq!(count.now(), 2);
        assert!(changes.has_changed().unwrap());
        drop(first);
        assert_eq!(*changes.borrow_and_update(), 1);
        drop(second);
        assert_eq!(count.now(), 0);
    }
}
