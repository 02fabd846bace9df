//! P2/P4, a stale expiry never releases the next holder: the timer of a lease that was
//! released early fires after the key was granted again.
//!
//! [`Table::expire_due`] removes only leases whose own deadline has passed. The wrong variant
//! is the original Go memory locker's `time.AfterFunc(ttl, func() { Release(key) })`:
//! [`Table::evict_first_holder`] evicts whoever holds the key when the timer fires.

use std::time::Duration;

use loom::thread;
use tokio::time::Instant;

use super::support::{KEY, lock};
use crate::memory::table::Table;
use crate::sync::{Arc, Mutex};

fn stale_expiry_racing_release_and_reacquire(evict_by_key: bool) {
    let t0 = Instant::now();
    loom::model(move || {
        let table = Arc::new(Mutex::new(Table::default()));
        // The first holder's lease ends at t0+10s; the successor's at t0+1s+100s.
        let first = table.lock().unwrap().try_acquire(&lock(10), t0).unwrap().expect("the key starts free");
        let first_deadline = first.expires_at();

        let timer = {
            let table = table.clone();
            thread::spawn(move || {
                if evict_by_key {
                    table.lock().unwrap().evict_first_holder(KEY, first_deadline);
                } else {
                    table.lock().unwrap().expire_due(KEY, first_deadline);
                }
            })
        };

        let early = t0 + Duration::from_secs(1);
        table.lock().unwrap().release(&first, early);
        let successor = table.lock().unwrap().try_acquire(&lock(100), early).unwrap();
        let successor = successor.expect("the first holder released (or its lease ended): the key is free");

        timer.join().unwrap();
        let left = table.lock().unwrap().remaining_ttl(&successor, first_deadline);
        assert!(left.is_some(), "the first lease's timer must not release the successor");
    });
}

#[test]
fn loom_stale_expiry_never_releases_the_next_holder() {
    stale_expiry_racing_release_and_reacquire(false);
}

#[test]
#[should_panic(expected = "must not release the successor")]
fn loom_wrong_timer_evicting_by_key_releases_the_next_holder() {
    stale_expiry_racing_release_and_reacquire(true);
}
