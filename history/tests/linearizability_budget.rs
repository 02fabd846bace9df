//! Regression: a history the linearizability search must decide within a fixed number of
//! steps, so that a loaded machine cannot turn it into an Unknown.
//!
//! The fixture is one key of a random workload against the Python dflockd server (seed
//! 8605948043379797615, `python_server_passes_what_it_claims`): 56 operations, 17 of them
//! cancelled acquires. The Python suite states a clean-up bound of 13 s for a cancelled
//! acquire (its server may still grant a gone waiter a whole lease), longer than the whole
//! case, so every cancelled acquire and its withdrawal are concurrent with everything after
//! them. The search used to grant every pending cancelled acquire before trying anything
//! else and took 30 s in a debug build (the budget was 10 s: UNKNOWN on a loaded machine);
//! it now tries them last and decides the key in about 1,600 steps.

use std::time::{Duration, Instant};

use lockcheck_history::checkers::linearizability::{Budget, Reference, Search};
use lockcheck_history::{Call, KeptHistory, LeaseId, Operation, Outcome};

const FIXTURE: &str = include_str!("fixtures/python-dflockd-cancel-window.json");

/// The key's operations, as recorded (times shifted to start at 0).
fn python_history() -> Vec<Operation> {
    KeptHistory::from_json(FIXTURE).expect("the fixture parses").history.operations
}

/// What `python_server_passes_what_it_claims` checked the key against, kept with it:
/// whole-second leases (1 s tolerance), tokens not claimed monotonic, 6 × 2 s + 1 s for a
/// cancelled acquire's clean-up. `lockcheck check --recheck` reads the same file.
fn python_reference() -> Reference {
    let kept = KeptHistory::from_json(FIXTURE).expect("the fixture parses");
    let (timing, capabilities) = (kept.timing.expect("kept"), kept.capabilities.expect("kept"));
    assert_eq!(timing.cancel_cleanup, Some(Duration::from_secs(13)));
    Reference::for_backend(&timing, &capabilities)
}

/// Far more than any of these histories needs, and far less than the 30 s ones took.
const STEPS: u64 = 100_000;

fn decide(ops: &[Operation]) -> (Search, u64) {
    let budget = Budget { deadline: Instant::now() + Duration::from_secs(600), steps: STEPS };
    python_reference().search_within(ops, budget)
}

/// A try-acquire refused `after` µs past the last return, when every lease a client held has
/// surely expired: only a cancelled acquire the server granted after all can explain it.
fn with_late_refusal(mut ops: Vec<Operation>, after: u64) -> Vec<Operation> {
    let last = ops.iter().filter_map(|op| op.returned).max().expect("operations returned");
    let key = ops[0].key.clone();
    ops.push(Operation {
        client: 99,
        key,
        call: Call::TryAcquire { lease: LeaseId(9_001), ttl: 2_000_000, limit: 1 },
        invoked: last + after,
        returned: Some(last + after + 1_500),
        outcome: Outcome::NotGranted,
    });
    ops
}

#[test]
fn the_python_cancel_window_history_is_decided_within_a_fixed_number_of_steps() {
    let (found, steps) = decide(&python_history());
    assert_eq!(found, Search::Linearizable, "after {steps} steps");
}

/// The search tries cancelled acquires last, but still tries them: a refusal that only a
/// late grant explains passes, and is a violation once the cancellations are left out.
#[test]
fn a_refusal_only_a_cancelled_acquire_explains_is_still_found_and_still_needed() {
    let late = with_late_refusal(python_history(), 6_000_000);
    let (found, steps) = decide(&late);
    assert_eq!(found, Search::Linearizable, "after {steps} steps");

    let without_cancellations: Vec<Operation> =
        late.into_iter().filter(|op| !matches!(op.outcome, Outcome::Cancelled)).collect();
    let (found, steps) = decide(&without_cancellations);
    assert_eq!(found, Search::NotLinearizable, "after {steps} steps");
}

/// The fixture stays what it was recorded as: a key where cancellations dominate.
#[test]
fn the_fixture_is_the_recorded_key() {
    let ops = python_history();
    let cancelled = ops.iter().filter(|op| matches!(op.outcome, Outcome::Cancelled)).count();
    assert_eq!((ops.len(), cancelled), (56, 17));
}

fn op(client: u32, call: Call, invoked: u64, returned: u64, outcome: Outcome) -> Operation {
    Operation { client, key: "k".into(), call, invoked, returned: Some(returned), outcome }
}

/// A cancelled acquire's grant is judged at the first instant of its window (invocation to
/// clean-up deadline) with room, and takes effect there: it cannot evict a holder with seconds
/// left and hide a double grant behind it. Here L1 is held from 0 to 4 s and L3 is granted at
/// 0.3 s: a violation, however long the cancelled acquire's clean-up window (13 s here). When
/// the spec judged the grant over its whole window, no 4 s lease counted as surely alive over
/// 13 s, and this history passed.
#[test]
fn a_cancelled_acquire_cannot_evict_a_live_holder() {
    let granted = |fence, at| Outcome::Granted { fence, acquired_at: at, ttl: None };
    let ops = vec![
        op(0, Call::Acquire { lease: LeaseId(1), ttl: 4_000_000, limit: 1, wait: 0 }, 0, 1_000, granted(1, 500)),
        op(
            1,
            Call::Acquire { lease: LeaseId(2), ttl: 4_000_000, limit: 1, wait: 8_000_000 },
            100_000,
            200_000,
            Outcome::Cancelled,
        ),
        op(2, Call::TryAcquire { lease: LeaseId(3), ttl: 4_000_000, limit: 1 }, 300_000, 301_000, granted(2, 300_500)),
    ];
    let (found, steps) = decide(&ops);
    assert_eq!(found, Search::NotLinearizable, "after {steps} steps");
}
