//! P7, cancel safety: a waiter withdrawn while a release grants it must not keep the grant;
//! the slot goes to the next waiter.
//!
//! [`Table::withdraw`] checks the waiter's grant slot under the table lock, the lock every
//! grant is made under. The wrong variant checks the slot first and takes the table lock
//! afterwards: a grant landing in between goes to a waiter that has already left, and the
//! lock is held by nobody until its TTL runs out.

use loom::thread;
use tokio::time::Instant;

use super::support::{KEY, NO_DEADLINE, await_grant, lock};
use crate::memory::table::{Enqueued, Table};
use crate::sync::{Arc, Mutex};

fn cancellation_racing_grant(check_slot_outside_lock: bool) {
    let t0 = Instant::now();
    loom::model(move || {
        let request = lock(10);
        let table = Arc::new(Mutex::new(Table::default()));
        let (holder, cancelled, next) = {
            let mut table = table.lock().unwrap();
            let holder = table.try_acquire(&request, t0).unwrap().expect("the key starts free");
            let Enqueued::Queued { id, slot, .. } = table.acquire_or_enqueue(&request, t0, t0 + NO_DEADLINE).unwrap()
            else {
                panic!("the key is held: the first waiter queues")
            };
            let Enqueued::Queued { slot: next, .. } = table.acquire_or_enqueue(&request, t0, t0 + NO_DEADLINE).unwrap()
            else {
                panic!("the key is held: the second waiter queues")
            };
            (holder, (id, slot), next)
        };

        let releaser = {
            let table = table.clone();
            thread::spawn(move || assert!(table.lock().unwrap().release(&holder, t0)))
        };

        let (id, slot) = cancelled;
        if check_slot_outside_lock {
            let granted = slot.take();
            table.lock().unwrap().withdraw_after_checking(KEY, id, granted, false, t0);
        } else {
            table.lock().unwrap().withdraw(KEY, id, &slot, false, t0);
        }

        // Once withdrawn, a waiter is never granted again: a grant in its slot now is leaked
        // (nobody will take it or release it).
        assert!(slot.take().is_none(), "leaked: a grant landed in the slot of a withdrawn waiter");

        // The next waiter is granted whichever way the race went (this also waits for the
        // release without a join that could order it).
        let next_lease = await_grant(&next);
        let (holders, waiters) = table.lock().unwrap().inspect(KEY);
        assert_eq!(holders, vec![next_lease.owner()], "only the next waiter holds the lock, no leaked grant");
        assert!(waiters.is_empty());
        releaser.join().unwrap();
    });
}

#[test]
fn loom_cancellation_racing_grant_leaks_nothing() {
    cancellation_racing_grant(false);
}

#[test]
#[should_panic(expected = "leaked")]
fn loom_wrong_slot_checked_outside_the_lock_leaks_a_grant() {
    cancellation_racing_grant(true);
}
