//! The linearizability checker on big histories: 8 clients × 10,000 operations, linearizable
//! and not, through `lockcheck_history::checkers::linearizability::check_history` (per-key
//! memoizing Wing–Gong–Lowe search, and shrinking when invalid); and 3 clients × 50
//! operations, not linearizable, through both lockcheck's search and stateright's
//! `LinearizabilityTester` for the ratio.
//!
//! Histories come from a discrete-event simulation of a correct lock (every operation takes
//! effect at an instant inside its window), so the linearizable ones are linearizable by
//! construction; the broken ones get one double grant late in the run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use lockcheck_bench::Mode;
use lockcheck_history::checkers::linearizability::{Entry, Search, check_history, search};
use lockcheck_history::{Call, History, Operation, Outcome};
use lockcheck_model::spec::{LeaseId, LockOp, LockRet, LockSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester};

const TTL: u64 = 1_000_000_000_000;

enum Event {
    Invoke(usize),
    TakeEffect(usize),
    Return(usize),
}

/// `clients` clients doing `ops` operations each on `keys` keys; if `double_grant`, the
/// lock grants once while held, about 90% into the run.
fn simulate(clients: usize, ops: usize, keys: usize, double_grant: bool, seed: u64) -> History {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut queue: BinaryHeap<Reverse<(u64, usize, usize)>> = BinaryHeap::new();
    let mut events: Vec<Event> = Vec::new();
    let schedule = |queue: &mut BinaryHeap<_>, events: &mut Vec<Event>, at: u64, event: Event| {
        events.push(event);
        queue.push(Reverse((at, events.len() - 1, 0)));
    };
    let mut operations: Vec<Operation> = Vec::new();
    let mut holding: Vec<Option<(String, LeaseId)>> = vec![None; clients];
    let mut done = vec![0; clients];
    let mut holder: Vec<Option<LeaseId>> = vec![None; keys];
    let mut fence = vec![0u64; keys];
    let mut next_lease = 0;
    let total = clients * ops;
    let mut effects = 0;
    let mut bug_pending = double_grant;
    for client in 0..clients {
        schedule(&mut queue, &mut events, rng.random_range(0..10), Event::Invoke(client));
    }
    let mut current: Vec<usize> = vec![0; clients];
    while let Some(Reverse((at, event, _))) = queue.pop() {
        match events[event] {
            Event::Invoke(client) => {
                let call = match &holding[client] {
                    Some((_, lease)) if rng.random_bool(0.8) => Call::Release { lease: *lease },
                    Some((_, lease)) => Call::Refresh { lease: *lease, ttl: TTL },
                    None => {
                        next_lease += 1;
                        Call::TryAcquire { lease: LeaseId(next_lease), ttl: TTL, limit: 1 }
                    }
                };
                let key = match &holding[client] {
                    Some((key, _)) => key.clone(),
                    None => format!("k{}", rng.random_range(0..keys)),
                };
                operations.push(Operation {
                    client: client as u32,
                    key,
                    call,
                    invoked: at,
                    returned: None,
                    outcome: Outcome::Pending,
                });
                current[client] = operations.len() - 1;
                let effect = at + rng.random_range(1..20);
                schedule(&mut queue, &mut events, effect, Event::TakeEffect(client));
            }
            Event::TakeEffect(client) => {
                effects += 1;
                let op = &mut operations[current[client]];
                let key: usize = op.key[1..].parse().expect("k<number>");
                op.outcome = match op.call {
                    Call::TryAcquire { lease, .. } => {
                        let bug = bug_pending && holder[key].is_some() && effects > total * 9 / 10;
                        if holder[key].is_none() || bug {
                            bug_pending &= !bug;
                            fence[key] += 1;
                            holder[key] = Some(lease);
                            holding[client] = Some((op.key.clone(), lease));
                            Outcome::Granted { fence: fence[key], acquired_at: at, ttl: None }
                        } else {
                            Outcome::NotGranted
                        }
                    }
                    Call::Release { lease } => {
                        let held = holder[key] == Some(lease);
                        if held {
                            holder[key] = None;
                        }
                        holding[client] = None;
                        Outcome::Released { held }
                    }
                    Call::Refresh { lease, .. } => Outcome::Refreshed { held: holder[key] == Some(lease), ttl: None },
                    _ => unreachable!("the simulation does not ask remaining TTLs"),
                };
                let returned = at + rng.random_range(1..20);
                schedule(&mut queue, &mut events, returned, Event::Return(client));
            }
            Event::Return(client) => {
                operations[current[client]].returned = Some(at);
                done[client] += 1;
                if done[client] < ops {
                    let next = at + rng.random_range(0..10);
                    schedule(&mut queue, &mut events, next, Event::Invoke(client));
                }
            }
        }
    }
    operations.sort_by_key(|op| op.invoked);
    History { operations }
}

fn entries(history: &History) -> Vec<Entry<LockOp, LockRet>> {
    history
        .operations
        .iter()
        .filter_map(|op| {
            let (spec_op, ret) = op.to_spec()?;
            Some(match (ret, op.returned) {
                (Some(ret), Some(returned)) => Entry::completed(spec_op, ret, op.invoked, returned),
                _ => Entry::unknown(spec_op, op.invoked),
            })
        })
        .collect()
}

fn stateright_consistent(history: &History) -> bool {
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for (i, op) in history.operations.iter().enumerate() {
        events.push((op.invoked, true, i));
        events.push((op.returned.expect("complete"), false, i));
    }
    events.sort();
    let mut tester = LinearizabilityTester::new(LockSpec::with_tolerance(0));
    for (_, invoke, i) in events {
        let op = &history.operations[i];
        let (spec_op, ret) = op.to_spec().expect("recorded");
        if invoke {
            tester.on_invoke(op.client, spec_op).expect("well formed");
        } else {
            tester.on_return(op.client, ret.expect("returned")).expect("well formed");
        }
    }
    tester.is_consistent()
}

/// stateright's tester on `simulate(3, ops, 1, true, 3)` in a child process (this bench binary
/// again, told by `STATERIGHT_ONLY`), killed after `cap`: the tester has no memo, cannot be
/// interrupted, and a thread left running would load the machine during later measurements.
/// `Some(time)` if it finished (and agreed the history is not linearizable).
fn stateright_in_child(ops: usize, cap: Duration) -> Option<Duration> {
    let mut child = std::process::Command::new(std::env::current_exe().expect("the bench binary"))
        .env(STATERIGHT_ONLY, ops.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the bench binary runs again");
    let started = Instant::now();
    while started.elapsed() < cap {
        if let Some(status) = child.try_wait().expect("child status") {
            let mut out = String::new();
            std::io::Read::read_to_string(&mut child.stdout.take().expect("piped"), &mut out).expect("child output");
            assert!(status.success(), "stateright's run failed: {out}");
            let nanos: u64 = out.trim().parse().expect("the child prints nanoseconds");
            return Some(Duration::from_nanos(nanos));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

const STATERIGHT_ONLY: &str = "LOCKCHECK_BENCH_STATERIGHT_ONLY";

/// The child's side of [`stateright_in_child`]: prints the tester's time in nanoseconds.
fn stateright_child(ops: usize) {
    let history = simulate(3, ops, 1, true, 3);
    let started = Instant::now();
    let consistent = stateright_consistent(&history);
    let took = started.elapsed();
    assert!(!consistent, "stateright agrees the history is not linearizable");
    println!("{}", took.as_nanos());
}

fn checker(c: &mut Criterion) {
    let budget = Duration::from_secs(120);
    let far = || Instant::now() + budget;
    let valid = simulate(8, 10_000, 8, false, 1);
    let broken = simulate(8, 10_000, 8, true, 2);
    let started = Instant::now();
    assert!(check_history(&valid, 0, budget).is_valid(), "the simulated correct lock is linearizable");
    eprintln!("8 × 10,000 linearizable: {:?} once", started.elapsed());
    let started = Instant::now();
    let verdict = check_history(&broken, 0, budget);
    let counterexample = verdict.counterexample().expect("the double grant is found");
    eprintln!(
        "8 × 10,000 with a double grant: {:?} once, counterexample of {} operations",
        started.elapsed(),
        counterexample.len()
    );
    // One key, 3 clients × 50 operations, not linearizable.
    let small = simulate(3, 50, 1, true, 3);
    assert_eq!(search(&LockSpec::with_tolerance(0), &entries(&small), far()), Search::NotLinearizable);

    let mut group = c.benchmark_group("checker");
    group.sample_size(10);
    group.bench_function("lockcheck 8x10000 linearizable", |b| b.iter(|| check_history(&valid, 0, budget)));
    group.bench_function("lockcheck 8x10000 double grant", |b| b.iter(|| check_history(&broken, 0, budget)));
    group.bench_function("lockcheck 3x50 double grant", |b| {
        b.iter(|| search(&LockSpec::with_tolerance(0), &entries(&small), far()))
    });
    group.finish();

    // The same kind of history through both checkers, 3 clients × n operations, as n grows
    // until stateright's tester needs more than `cap` (single runs: the tester can take
    // seconds; lockcheck's time is the best of 10).
    let cap = Duration::from_secs(if Mode::from_env() == Mode::Quick { 20 } else { 60 });
    eprintln!("3 clients × n operations with a double grant — n, lockcheck, stateright, ratio:");
    for ops in (4..=48).step_by(4).chain([50]) {
        let history = simulate(3, ops, 1, true, 3);
        let entries = entries(&history);
        if search(&LockSpec::with_tolerance(0), &entries, far()) != Search::NotLinearizable {
            continue; // the double grant fell after the last operation: nothing to compare
        }
        let ours = (0..10)
            .map(|_| {
                let started = Instant::now();
                search(&LockSpec::with_tolerance(0), &entries, far());
                started.elapsed()
            })
            .min()
            .expect("ten runs");
        match stateright_in_child(ops, cap) {
            Some(theirs) => eprintln!(
                "  3 × {ops:>2}: {ours:>12.3?} {theirs:>12.3?} {:>10.0}×",
                theirs.as_secs_f64() / ours.as_secs_f64()
            ),
            None => {
                eprintln!(
                    "  3 × {ops:>2}: {ours:>12.3?} > {cap:>10.0?} > {:>8.0}× (stateright's run stopped at the cap)",
                    cap.as_secs_f64() / ours.as_secs_f64()
                );
                break;
            }
        }
    }
}

criterion_group! {
    name = benches;
    // No plots: plotters' PDF/SVG text needs system fonts this machine lacks.
    config = Criterion::default().without_plots();
    targets = checker
}

fn main() {
    if let Some(ops) = std::env::var(STATERIGHT_ONLY).ok().and_then(|ops| ops.parse().ok()) {
        stateright_child(ops);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
