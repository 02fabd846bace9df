//! History files, arbitrary or hostile, never panic the checkers: text is read or refused,
//! and a history that `History::validate` accepts goes through every checker — anything the
//! validator lets in must be something the checkers' arithmetic can take.

use std::time::Duration;

use lockcheck_history::{Call, Capabilities, History, LeaseId, Micros, Operation, Outcome, Timing, check_all};
use proptest::prelude::*;

/// Instants and durations in microseconds: mostly those of a run, sometimes extreme.
fn micros() -> impl Strategy<Value = Micros> {
    prop_oneof![
        40 => 0..400_000u64,
        1 => Just(86_400_000_000u64),
        1 => Just(u64::MAX),
        1 => Just(u64::MAX / 2),
        1 => any::<u64>(),
    ]
}

fn lease() -> impl Strategy<Value = LeaseId> {
    prop_oneof![4 => (0..6u32).prop_map(LeaseId), 1 => Just(LeaseId(u32::MAX))]
}

fn limit() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 1..4u32, 1 => Just(0), 1 => Just(u32::MAX)]
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        (lease(), micros(), limit()).prop_map(|(lease, ttl, limit)| Call::TryAcquire { lease, ttl, limit }),
        (lease(), micros(), limit(), micros()).prop_map(|(lease, ttl, limit, wait)| Call::Acquire {
            lease,
            ttl,
            limit,
            wait
        }),
        lease().prop_map(|lease| Call::Release { lease }),
        (lease(), micros()).prop_map(|(lease, ttl)| Call::Refresh { lease, ttl }),
        lease().prop_map(|lease| Call::RemainingTtl { lease }),
        (lease(), any::<bool>()).prop_map(|(lease, crashed)| Call::SessionEnded { lease, crashed }),
    ]
}

fn fence() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0..8u64, 1 => Just(u64::MAX), 1 => any::<u64>()]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Pending),
        (fence(), micros(), proptest::option::of(micros())).prop_map(|(fence, acquired_at, ttl)| Outcome::Granted {
            fence,
            acquired_at,
            ttl
        }),
        Just(Outcome::NotGranted),
        Just(Outcome::TimedOut),
        Just(Outcome::TimedOutLocally),
        any::<bool>().prop_map(|held| Outcome::Released { held }),
        (any::<bool>(), proptest::option::of(micros())).prop_map(|(held, ttl)| Outcome::Refreshed { held, ttl }),
        proptest::option::of(micros()).prop_map(|left| Outcome::Remaining { left }),
        Just(Outcome::Failed { error: "refused".into() }),
        Just(Outcome::Cancelled),
        Just(Outcome::Done),
        Just(Outcome::Indeterminate { error: "connection reset".into() }),
    ]
}

fn operation() -> impl Strategy<Value = Operation> {
    (0..4u32, prop_oneof![Just("a"), Just("b"), Just("")], call(), micros(), returned(), outcome()).prop_map(
        |(client, key, call, invoked, returned, outcome)| Operation {
            client,
            key: key.to_owned(),
            call,
            invoked,
            returned: match returned {
                Returned::After(delay) => Some(invoked.saturating_add(delay)),
                Returned::At(at) => Some(at),
                Returned::Never => None,
            },
            outcome,
        },
    )
}

#[derive(Clone, Debug)]
enum Returned {
    After(Micros),
    At(Micros),
    Never,
}

/// Mostly a return some time after the invocation; sometimes none, sometimes any instant.
fn returned() -> impl Strategy<Value = Returned> {
    prop_oneof![
        6 => (0..200_000u64).prop_map(Returned::After),
        1 => Just(Returned::Never),
        1 => micros().prop_map(Returned::At),
    ]
}

fn history() -> impl Strategy<Value = History> {
    // Mostly in invocation order, as recorded; sometimes not, as a hand-edited file may be.
    // Mostly with a grant of its own per acquire, as the recorder writes them; sometimes not.
    (proptest::collection::vec(operation(), 0..10), proptest::bool::weighted(0.8), proptest::bool::weighted(0.9))
        .prop_map(|(mut operations, sorted, own_grants)| {
            if sorted {
                operations.sort_by_key(|op| op.invoked);
            }
            if own_grants {
                let mut next = 0;
                for op in &mut operations {
                    if let Call::TryAcquire { lease, .. } | Call::Acquire { lease, .. } = &mut op.call {
                        *lease = LeaseId(next);
                        next += 1;
                    }
                }
            }
            History { operations }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_history_text_is_read_or_refused(text in prop_oneof![any::<String>(), "[\\[\\]{}\":,a-z0-9 -]{0,80}"]) {
        if let Ok(history) = History::from_json(&text) {
            let _ = history.validate();
        }
    }
}

/// Every generated history reads back from its JSON; those the validator accepts (at least a
/// quarter of them, so that the checkers really run) are judged without a panic, with every
/// claim and with none.
#[test]
fn a_history_the_validator_accepts_is_judged_without_a_panic() {
    use proptest::test_runner::{Config, TestRunner};
    const CASES: u32 = 400;
    let judged = std::cell::Cell::new(0u32);
    let mut runner = TestRunner::new(Config { cases: CASES, ..Config::default() });
    runner
        .run(&history(), |history| {
            let read_back = History::from_json(&history.to_json()).expect("a history reads back");
            prop_assert_eq!(&read_back, &history);
            if history.validate().is_ok() {
                judged.set(judged.get() + 1);
                for claims in [Capabilities::all_in_process(), Capabilities::none()] {
                    let verdicts = check_all(&history, &Timing::in_process(), &claims, Duration::from_millis(200));
                    prop_assert!(!verdicts.is_empty());
                }
            }
            Ok(())
        })
        .expect("no history panics a checker");
    assert!(judged.get() >= CASES / 4, "only {} of {CASES} generated histories were valid", judged.get());
}

/// The validator names the operation that could not have happened.
#[test]
fn impossible_operations_are_refused_by_number() {
    let op = |call: Call, invoked: Micros, returned: Option<Micros>, outcome: Outcome| Operation {
        client: 0,
        key: "k".into(),
        call,
        invoked,
        returned,
        outcome,
    };
    let fine = op(Call::Release { lease: LeaseId(1) }, 10, Some(20), Outcome::Released { held: false });
    let backwards = op(Call::Release { lease: LeaseId(1) }, 30, Some(20), Outcome::Released { held: false });
    let history = History { operations: vec![fine.clone(), backwards] };
    let error = history.validate().expect_err("a return before its invocation");
    assert!(error.to_string().contains('2'), "{error}");
    assert!(History { operations: vec![fine] }.validate().is_ok());
}

/// Found by the `history_file` fuzz target: two acquires naming one grant (which the recorder
/// never writes) made the linearizability search apply a step its own spec refused.
#[test]
fn two_acquires_naming_one_grant_are_refused() {
    let text = r#"{"operations":[
        {"client":0,"key":"k","call":"acquire","lease":0,"ttl":80000,"limit":1,"wait":100000,"invoked":10,"returned":50,"outcome":"granted","fence":1,"acquired_at":30},
        {"client":1,"key":"k","call":"try-acquire","lease":0,"ttl":80000,"limit":1,"invoked":60,"outcome":"not-granted"},
        {"client":0,"key":"k","call":"release","lease":1,"invoked":100,"returned":140,"outcome":"released","held":true}
    ]}"#;
    let history = History::from_json(text).expect("well-formed JSON");
    let error = history.validate().expect_err("grant 0 is named twice");
    assert_eq!(error.operation, 2, "{error}");
}
