//! P5, no lost wake-up: a release racing a waiter's registration must grant the waiter.
//!
//! The waiter's try and its registration happen under one table lock
//! ([`Table::acquire_or_enqueue`]); the wrong variant takes the lock twice (try, unlock,
//! register), and a release that lands in between frees a slot nobody hands on: the waiter
//! would sleep forever. The check catches that state — a waiter queued behind a free slot —
//! with an assertion rather than through loom's deadlock report, because loom cannot unwind
//! cleanly from a deadlock and aborts the whole test binary.

use loom::thread;
use tokio::time::Instant;

use super::support::{KEY, NO_DEADLINE, await_grant, lock};
use crate::memory::table::{Enqueued, Table};
use crate::sync::{Arc, Mutex};

fn release_racing_registration(split_try_and_register: bool) {
    let t0 = Instant::now();
    loom::model(move || {
        let request = lock(10);
        let table = Arc::new(Mutex::new(Table::default()));
        let holder = table.lock().unwrap().try_acquire(&request, t0).unwrap().expect("the key starts free");

        let releaser = {
            let table = table.clone();
            thread::spawn(move || assert!(table.lock().unwrap().release(&holder, t0), "the holder still held it"))
        };

        // The waiter: no join or other synchronization with the releaser before it waits.
        let enqueued = if split_try_and_register {
            let granted = table.lock().unwrap().try_acquire(&request, t0).unwrap();
            match granted {
                Some(lease) => Enqueued::Granted(lease),
                None => table.lock().unwrap().enqueue(&request, t0 + NO_DEADLINE),
            }
        } else {
            table.lock().unwrap().acquire_or_enqueue(&request, t0, t0 + NO_DEADLINE).unwrap()
        };
        let lease = match enqueued {
            Enqueued::Granted(lease) => lease,
            Enqueued::Queued { id, slot, .. } => {
                let (holders, waiters) = table.lock().unwrap().inspect(KEY);
                assert!(
                    !(holders.is_empty() && waiters.contains(&id)),
                    "lost wake-up: queued behind a free slot that nobody will hand on"
                );
                await_grant(&slot)
            }
        };
        assert!(table.lock().unwrap().remaining_ttl(&lease, t0).is_some(), "the waiter holds the lock");
        releaser.join().unwrap();
    });
}

#[test]
fn loom_release_racing_registration_grants_the_waiter() {
    release_racing_registration(false);
}

#[test]
#[should_panic(expected = "lost wake-up")]
fn loom_wrong_split_try_and_register_loses_the_wakeup() {
    release_racing_registration(true);
}
