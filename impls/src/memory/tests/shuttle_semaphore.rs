//! Randomized schedules of a semaphore under more threads and operations than loom can
//! explore exhaustively: three clients acquire (waiting, or giving up at once as a cancelled
//! acquire does), hold and release, while a timer thread advances a logical clock and expires
//! leases. After every step, under the table lock, the checks are:
//!
//! - P1: never more holders than the limit;
//! - P5: never a waiter queued while a slot is free (that waiter would never be woken);
//! - P3: no fencing token is handed out twice, and each client's fences increase;
//! - P7: at the end, nothing is held by anyone but the clients that were granted it.
//!
//! Each run prints its seed; rerun one with `LOCKCHECK_SHUTTLE_SEED=<seed>`.

use std::collections::HashSet;
use std::time::Duration;

use shuttle::sync::atomic::{AtomicU64, Ordering};
use shuttle::thread;
use tokio::time::Instant;

use super::support::{KEY, NO_DEADLINE, await_grant};
use crate::Lease;
use crate::LeaseRequest;
use crate::memory::table::{Enqueued, Table};
use crate::sync::{Arc, Mutex};

const LIMIT: u32 = 2;
const CLIENTS: usize = 3;
const ROUNDS: usize = 3;
// Two clock steps of 7 ticks: leases granted at 0 expire during the run, later ones outlive
// it, so a grant leaked late stays visible at the end.
const TTL_TICKS: u64 = 12;
const CLOCK_STEP: u64 = 7;
const ITERATIONS: usize = 10_000;

/// The deliberately wrong orderings a run can use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Correct,
    /// Try under one table lock, register the waiter under another.
    SplitTryAndRegister,
    /// A cancelled acquire checks its grant slot before taking the table lock.
    SlotCheckedOutsideLock,
}

struct World {
    table: Mutex<Table>,
    clock: AtomicU64,
    t0: Instant,
    /// Every fence handed out.
    fences: Mutex<HashSet<u64>>,
}

impl World {
    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.clock.load(Ordering::SeqCst))
    }

    /// Checks P1 and P5 on the table as it is now (the caller holds the table lock).
    fn check(table: &Table) {
        let (holders, waiters) = table.inspect(KEY);
        assert!(holders.len() <= LIMIT as usize, "P1: {} holders of a semaphore of {LIMIT}", holders.len());
        assert!(
            waiters.is_empty() || holders.len() == LIMIT as usize,
            "P5: {} waiters queued while only {} of {LIMIT} slots are held",
            waiters.len(),
            holders.len()
        );
    }

    fn received(&self, lease: &Lease, last_fence: &mut u64) {
        assert!(lease.fence().0 > *last_fence, "P3: fence {} after this client's {}", lease.fence(), last_fence);
        *last_fence = lease.fence().0;
        assert!(self.fences.lock().unwrap().insert(lease.fence().0), "P3: fence {} handed out twice", lease.fence());
    }
}

fn request() -> LeaseRequest {
    LeaseRequest::semaphore(KEY, LIMIT, Duration::from_millis(TTL_TICKS))
}

fn client(world: &World, who: usize, variant: Variant) {
    let mut last_fence = 0;
    for round in 0..ROUNDS {
        // Every other operation is an acquire that is cancelled as soon as it has to wait.
        let cancel = (who + round) % 2 == 1;
        let now = world.now();
        // P5 is checked under the lock that queued the waiter: a wake-up lost between the try
        // and the registration shows there, before the waiter blocks for good (which shuttle
        // would report as a deadlock instead).
        let enqueued = if variant == Variant::SplitTryAndRegister {
            let tried = world.table.lock().unwrap().try_acquire(&request(), now).unwrap();
            match tried {
                Some(lease) => Enqueued::Granted(lease),
                None => {
                    let mut table = world.table.lock().unwrap();
                    let queued = table.enqueue(&request(), now + NO_DEADLINE);
                    World::check(&table);
                    queued
                }
            }
        } else {
            let mut table = world.table.lock().unwrap();
            let enqueued = table.acquire_or_enqueue(&request(), now, now + NO_DEADLINE).unwrap();
            World::check(&table);
            enqueued
        };
        let lease = match enqueued {
            Enqueued::Granted(lease) => Some(lease),
            Enqueued::Queued { id, slot, .. } if cancel => {
                if variant == Variant::SlotCheckedOutsideLock {
                    let granted = slot.take();
                    let mut table = world.table.lock().unwrap();
                    table.withdraw_after_checking(KEY, id, granted, false, world.now());
                    World::check(&table);
                } else {
                    let mut table = world.table.lock().unwrap();
                    table.withdraw(KEY, id, &slot, false, world.now());
                    World::check(&table);
                }
                // Once withdrawn, a waiter is never granted again: a grant in its slot now is
                // leaked (nobody will take it or release it).
                assert!(slot.take().is_none(), "P7: a grant leaked to a cancelled acquire");
                None
            }
            Enqueued::Queued { slot, .. } => Some(await_grant(&slot)),
        };
        if let Some(lease) = lease {
            world.received(&lease, &mut last_fence);
            thread::yield_now();
            let mut table = world.table.lock().unwrap();
            table.release(&lease, world.now());
            World::check(&table);
        }
    }
}

fn timer(world: &World) {
    for _ in 0..2 {
        thread::yield_now();
        world.clock.fetch_add(CLOCK_STEP, Ordering::SeqCst);
        let mut table = world.table.lock().unwrap();
        table.expire_due(KEY, world.now());
        World::check(&table);
    }
}

fn run(variant: Variant) {
    let seed = match std::env::var("LOCKCHECK_SHUTTLE_SEED") {
        Ok(seed) => seed.parse().expect("LOCKCHECK_SHUTTLE_SEED is a u64"),
        Err(_) => rand::random(),
    };
    eprintln!("shuttle seed {seed} ({ITERATIONS} iterations; rerun with LOCKCHECK_SHUTTLE_SEED={seed})");
    let t0 = Instant::now();
    shuttle::check_random_with_seed(
        move || {
            let world = Arc::new(World {
                table: Mutex::new(Table::default()),
                clock: AtomicU64::new(0),
                t0,
                fences: Mutex::new(HashSet::new()),
            });
            let mut threads: Vec<_> = (0..CLIENTS)
                .map(|who| {
                    let world = world.clone();
                    thread::spawn(move || client(&world, who, variant))
                })
                .collect();
            threads.push({
                let world = world.clone();
                thread::spawn(move || timer(&world))
            });
            for thread in threads {
                thread.join().unwrap();
            }
            // Every client released what it received; whatever is still held (and not yet
            // expired) was granted to nobody who knows it: a leak.
            let (holders, waiters) = world.table.lock().unwrap().inspect(KEY);
            assert!(waiters.is_empty(), "P5: waiters left behind");
            assert!(holders.is_empty(), "P7: {} grant(s) leaked to cancelled acquires", holders.len());
        },
        seed,
        ITERATIONS,
    );
}

#[test]
fn shuttle_semaphore_clients_with_cancellation_and_expiry() {
    run(Variant::Correct);
}

#[test]
#[should_panic(expected = "P5")]
fn shuttle_wrong_split_try_and_register_is_caught() {
    run(Variant::SplitTryAndRegister);
}

#[test]
#[should_panic(expected = "P7")]
fn shuttle_wrong_slot_checked_outside_the_lock_is_caught() {
    run(Variant::SlotCheckedOutsideLock);
}
