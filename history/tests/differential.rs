//! Differential test of the memoizing linearizability checker against stateright's
//! `LinearizabilityTester` (the unmemoized reference) on thousands of small random lock
//! histories: both must give the same verdict on every one, and where a history is not
//! linearizable, stateright must agree on where it stops being so (the prefix the checker
//! reports is linearizable; the history as known when the blamed operation returned is not).

use std::time::{Duration, Instant};

use lockcheck_history::checkers::linearizability::{
    Budget, Entry, Linearizability, Reference, Search, Turn, check, search, search_within,
};
use lockcheck_model::spec::{LeaseId, LockOp, LockRet, LockSpec, Window};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

/// An entry being recorded: the operation, its invocation, and what it returned and when.
type Recorded = (LockOp, u64, Option<(LockRet, u64)>);

/// A random history: `(thread, op, ret)` events in time order, as both checkers see them.
fn random_history(rng: &mut StdRng) -> Vec<Entry<LockOp, LockRet>> {
    let threads = rng.random_range(2..=3);
    let mut remaining: Vec<u32> = (0..threads).map(|_| rng.random_range(1..=4)).collect();
    let mut in_flight: Vec<Option<usize>> = vec![None; threads];
    let mut recorded: Vec<Recorded> = Vec::new();
    let mut next_lease = 1;
    let limit = if rng.random_bool(0.8) { 1 } else { 2 };
    let mut time = 0;
    let mut model = LockSpec::with_tolerance(0);
    loop {
        let busy: Vec<usize> = (0..threads).filter(|&t| in_flight[t].is_some() || remaining[t] > 0).collect();
        if busy.is_empty() {
            break;
        }
        let thread = busy[rng.random_range(0..busy.len())];
        time += 1;
        match in_flight[thread] {
            Some(index) => {
                // Some operations never return: they stay indeterminate.
                if remaining.iter().all(|&r| r == 0) && rng.random_bool(0.15) {
                    in_flight[thread] = None;
                    continue;
                }
                let (op, invoked, outcome) = &mut recorded[index];
                set_window(op, Window::new(*invoked, time));
                // Mostly what a correct lock would answer at the return instant, sometimes noise.
                let plausible = model.invoke(op);
                let ret = if rng.random_bool(0.8) {
                    plausible
                } else {
                    match op {
                        LockOp::Acquire { .. } | LockOp::CancelledAcquire { .. } if rng.random_bool(0.6) => {
                            LockRet::Granted { fence: rng.random_range(1..6) }
                        }
                        LockOp::Acquire { .. } | LockOp::CancelledAcquire { .. } => LockRet::NotGranted,
                        LockOp::Release { .. } => LockRet::Released(rng.random_bool(0.6)),
                        LockOp::Refresh { .. } => LockRet::Refreshed(rng.random_bool(0.6)),
                        LockOp::Remaining { .. } => {
                            LockRet::Remaining(rng.random_bool(0.6).then(|| rng.random_range(0..10)))
                        }
                        LockOp::Withdraw { .. } => LockRet::Withdrawn,
                        LockOp::SessionEnded { .. } => LockRet::SessionEnded,
                    }
                };
                *outcome = Some((ret, time));
                in_flight[thread] = None;
            }
            None => {
                remaining[thread] -= 1;
                let at = Window::new(time, u64::MAX);
                let lease = LeaseId(rng.random_range(1..next_lease.max(2)));
                let op = match rng.random_range(0..13) {
                    0..=4 => {
                        next_lease += 1;
                        LockOp::Acquire { lease: LeaseId(next_lease - 1), ttl: rng.random_range(3..12), limit, at }
                    }
                    11 => {
                        next_lease += 1;
                        let (lease, ttl) = (LeaseId(next_lease - 1), rng.random_range(3..12));
                        LockOp::CancelledAcquire { lease, ttl, limit, at }
                    }
                    5..=6 => LockOp::Release { lease, at },
                    7..=8 => LockOp::Refresh { lease, ttl: rng.random_range(3..12), at },
                    // A cancelled acquire's clean-up (whether or not its acquire was granted).
                    9 => LockOp::Withdraw { lease, at },
                    // The holder's session ended: the lease may end at any moment from here.
                    12 => LockOp::SessionEnded { lease, at },
                    _ => LockOp::Remaining { lease, at },
                };
                recorded.push((op, time, None));
                in_flight[thread] = Some(recorded.len() - 1);
            }
        }
    }
    recorded
        .into_iter()
        .map(|(op, invoked, outcome)| match outcome {
            Some((ret, returned)) => Entry::completed(op, ret, invoked, returned),
            None => Entry::unknown(op, invoked),
        })
        .collect()
}

fn set_window(op: &mut LockOp, window: Window) {
    match op {
        LockOp::Acquire { at, .. }
        | LockOp::CancelledAcquire { at, .. }
        | LockOp::Release { at, .. }
        | LockOp::Refresh { at, .. }
        | LockOp::Remaining { at, .. }
        | LockOp::Withdraw { at, .. }
        | LockOp::SessionEnded { at, .. } => *at = window,
    }
}

/// stateright's verdict: events replayed in time order, one thread per concurrent client.
fn stateright_verdict(spec: &LockSpec, entries: &[Entry<LockOp, LockRet>], threads_of: &[usize]) -> bool {
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        events.push((entry.invoked(), true, i));
        if let Some(returned) = entry.returned() {
            events.push((returned, false, i));
        }
    }
    events.sort();
    let mut tester = LinearizabilityTester::new(spec.clone());
    for (_, invoke, i) in events {
        let result = if invoke {
            tester.on_invoke(threads_of[i], entries[i].op().clone()).map(|_| ())
        } else {
            tester.on_return(threads_of[i], entries[i].ret().cloned().expect("returned")).map(|_| ())
        };
        result.expect("a well-formed history");
    }
    tester.is_consistent()
}

/// Which thread performed each entry: entries of one thread never overlap, so a greedy
/// assignment by invocation order recovers a valid thread map.
fn threads(entries: &[Entry<LockOp, LockRet>]) -> Vec<usize> {
    let mut busy_until: Vec<u64> = Vec::new();
    entries
        .iter()
        .map(|entry| {
            let free = busy_until.iter().position(|&until| until < entry.invoked());
            let thread = free.unwrap_or_else(|| {
                busy_until.push(0);
                busy_until.len() - 1
            });
            busy_until[thread] = entry.returned().unwrap_or(u64::MAX);
            thread
        })
        .collect()
}

#[test]
fn the_memoizing_checker_agrees_with_stateright_on_small_random_histories() {
    let seed = std::env::var("LOCKCHECK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("seed {seed} (LOCKCHECK_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut linearizable, mut not_linearizable) = (0, 0);
    for case in 0..3_000 {
        let entries = random_history(&mut rng);
        // Entries with unknown outcomes are invisible returns to stateright: keep their ret None.
        let spec = LockSpec::with_tolerance(rng.random_range(0..2));
        let ours = search(&spec, &entries, Instant::now() + Duration::from_secs(10));
        let theirs = stateright_verdict(&spec, &entries, &threads(&entries));
        assert_ne!(ours, Search::OutOfBudget);
        assert_eq!(ours == Search::Linearizable, theirs, "case {case} (seed {seed}) disagrees on {entries:#?}");
        // The order in which the search tries operations changes its speed, never its answer:
        // the lock front end's order, and a random one.
        let budget = Budget { deadline: Instant::now() + Duration::from_secs(10), steps: u64::MAX };
        let (lock_order, _) = search_within(&spec, &entries, budget, Reference::turn);
        assert_eq!(lock_order, ours, "case {case} (seed {seed}): the lock order disagrees on {entries:#?}");
        let late: Vec<u64> = entries.iter().filter(|_| rng.random_bool(0.5)).map(Entry::invoked).collect();
        let random_turn = |entry: &Entry<LockOp, LockRet>, _: &LockSpec| {
            if late.contains(&entry.invoked()) { Turn::Late } else { Turn::Early }
        };
        let (random_order, _) = search_within(&spec, &entries, budget, random_turn);
        assert_eq!(random_order, ours, "case {case} (seed {seed}): a random order disagrees on {entries:#?}");
        if theirs {
            linearizable += 1;
        } else {
            not_linearizable += 1;
            // Where it stops being linearizable, by stateright's verdict too: the prefix is
            // linearizable, and the history as known when the blamed operation returned is not.
            let Linearizability::NotLinearizable(Some(violation)) = check(&spec, &entries, budget) else {
                panic!("case {case} (seed {seed}): no violation located in {entries:#?}");
            };
            assert!(
                stateright_verdict(&spec, &violation.prefix, &threads(&violation.prefix)),
                "case {case} (seed {seed}): the prefix is not linearizable: {violation:#?}"
            );
            let known: Vec<Entry<LockOp, LockRet>> = entries
                .iter()
                .filter(|entry| entry.invoked() <= violation.returned)
                .map(|entry| match entry.returned() {
                    Some(returned) if returned <= violation.returned => entry.clone(),
                    _ => entry.clone().forgetting_outcome(),
                })
                .collect();
            assert!(
                !stateright_verdict(&spec, &known, &threads(&known)),
                "case {case} (seed {seed}): linearizable as known when the blamed operation returned: {violation:#?}"
            );
            assert_eq!(entries[violation.blamed].returned(), Some(violation.returned));
        }
    }
    eprintln!("{linearizable} linearizable, {not_linearizable} not");
    assert!(
        linearizable > 300 && not_linearizable > 300,
        "{linearizable} / {not_linearizable}: the generator lost its balance"
    );
}
