//! Pins every registered lock system's verdicts and state count (2 clients, 1 key):
//! a correct system satisfies every property on a *completed* exhaustive search; a flawed
//! one shows exactly its expected violations, each with a counterexample trace.
//!
//! The counts are of the reduced search (symmetry among interchangeable clients, garbage in
//! flight dropped; see `systems::symmetry`); `reductions_keep_every_verdict` checks that the
//! reduced and the full search agree. The 3-client pins show the reduction at work where
//! it pays most, and record what 3 clients find that 2 do not.

use lockcheck_model::systems::properties::FENCING;
use lockcheck_model::systems::{self, CheckOptions, Options, Verdict};

/// Checks one system with 2 clients and asserts its verdicts and, where given, its pinned
/// unique state count.
fn pin(name: &str, unique_states: Option<usize>) {
    pin_with(name, 2, system_expected(name), unique_states);
}

fn system_expected(name: &str) -> &'static [&'static str] {
    systems::find(name).unwrap_or_else(|| panic!("{name} is not registered")).expected
}

/// Checks one system with `clients` clients exhaustively: exactly `expected` are violated,
/// each with a counterexample, the rest hold on a completed search; and the unique state
/// count is `unique_states`, where given.
fn pin_with(name: &str, clients: usize, expected: &[&str], unique_states: Option<usize>) {
    let system = systems::find(name).unwrap_or_else(|| panic!("{name} is not registered"));
    let outcome = system.check(&Options { clients, keys: 1 }, &CheckOptions::default(), &mut |_| {});
    assert!(outcome.complete, "{name}: the exhaustive search did not finish: {outcome:#?}");
    assert!(outcome.reduced, "{name}: the check runs reduced by default");
    for property in &outcome.properties {
        let expected_violation = expected.contains(&property.name);
        match &property.verdict {
            Verdict::Holds => assert!(!expected_violation, "{name}: expected \"{}\" to be violated", property.name),
            Verdict::Violated { trace } => {
                assert!(expected_violation, "{name}: \"{}\" violated:\n{}", property.name, trace.join("\n"));
                assert!(!trace.is_empty(), "{name}: empty counterexample for \"{}\"", property.name);
            }
            Verdict::Unknown => panic!("{name}: \"{}\" unknown after a complete search", property.name),
        }
    }
    for expected in expected {
        assert!(outcome.verdict(expected).is_some(), "{name}: expected property \"{expected}\" is not checked");
    }
    assert_eq!(system.correct, system.expected.is_empty(), "{name}: a correct system expects no violation");
    if let Some(unique_states) = unique_states {
        assert_eq!(outcome.unique_states, unique_states, "{name}: the state space changed");
    }
}

/// For a flawed system too large to exhaust: searches until every expected violation has a
/// counterexample, and asserts no other property was violated on the way (those that were
/// not reached stay unknown: nothing is claimed for them).
fn pin_violations(name: &str) {
    let system = systems::find(name).unwrap_or_else(|| panic!("{name} is not registered"));
    assert!(!system.correct, "{name}: only a flawed system can be pinned by its violations");
    let check = CheckOptions { until_violated: system.expected.to_vec(), ..CheckOptions::default() };
    let outcome = system.check(&Options { clients: 2, keys: 1 }, &check, &mut |_| {});
    for property in &outcome.properties {
        let expected_violation = system.expected.contains(&property.name);
        match &property.verdict {
            Verdict::Violated { trace } => {
                assert!(expected_violation, "{name}: \"{}\" violated:\n{}", property.name, trace.join("\n"));
                assert!(!trace.is_empty(), "{name}: empty counterexample for \"{}\"", property.name);
            }
            verdict => {
                assert!(!expected_violation, "{name}: expected \"{}\" to be violated, got {verdict:?}", property.name)
            }
        }
    }
}

#[test]
fn redis_single_token_checked_release_is_correct() {
    pin("redis-single", Some(321));
}

#[test]
fn redis_unconditional_del_releases_someone_elses_lock() {
    pin("redis-del", Some(345));
}

#[test]
fn expiry_only_in_the_holder_keeps_a_crashed_holders_lock_forever() {
    pin("holder-timer", Some(101));
}

#[test]
fn kv_watch_before_the_try_is_correct() {
    pin("kv-watch-before", Some(380));
}

#[test]
fn kv_watch_after_the_try_loses_a_wake_up() {
    pin("kv-watch-after", Some(372));
}

#[test]
fn lockers_syncing_over_a_bus_grant_twice() {
    pin("bus", Some(566));
}

#[test]
fn dflockd_fifo_lease_server_is_correct() {
    pin("dflockd", Some(740));
}

#[test]
fn redlock_without_faults_is_correct() {
    pin("redlock", Some(15451));
}

#[test]
fn all_instances_in_order_survives_one_restart() {
    pin("multi-all", Some(1513));
}

#[test]
fn redlock_instance_restart_grants_twice() {
    pin_violations("redlock-restart");
}

#[test]
fn redlock_restart_repeats_fencing_tokens() {
    pin_violations("redlock-restart-fenced");
}

#[test]
fn redlock_pause_breaks_exclusion_without_fencing() {
    pin_violations("redlock-pause");
}

/// The exhaustive 2-client search takes about a minute in a release build (about 2 million
/// states; `lockcheck model redlock-pause-fenced`), too long for a debug test: searched
/// until its counterexamples are found, like the other flawed Redlock variants.
#[test]
fn redlock_pause_repeats_fencing_tokens_and_the_fenced_resource_accepts_both() {
    pin_violations("redlock-pause-fenced");
}

#[test]
fn three_clients_redis_single_is_correct() {
    pin_with("redis-single", 3, &[], Some(2828));
}

#[test]
fn three_clients_kv_watch_before_the_try_is_correct() {
    pin_with("kv-watch-before", 3, &[], Some(3780));
}

#[test]
fn three_clients_dflockd_is_correct() {
    pin_with("dflockd", 3, &[], Some(6086));
}

/// A finding of the 3-client search: with all instances in order, the maximum of the
/// instances' counters repeats once a third client comes after a restart (a rollback raised
/// one counter and not the other; the restarted one starts over). Exclusion still holds.
#[test]
fn three_clients_all_instances_in_order_repeat_a_fencing_token_after_a_restart() {
    pin_with("multi-all", 3, &[FENCING], Some(42021));
}

/// The reductions are sound: on every system small enough to search in full, the reduced
/// and the full search give the same verdicts, and the reduced one stores fewer states.
#[test]
fn reductions_keep_every_verdict() {
    for name in [
        "redis-single",
        "redis-del",
        "holder-timer",
        "kv-watch-before",
        "kv-watch-after",
        "bus",
        "dflockd",
        "multi-all",
    ] {
        let system = systems::find(name).expect("registered");
        let options = Options { clients: 2, keys: 1 };
        let reduced = system.check(&options, &CheckOptions::default(), &mut |_| {});
        let full = system.check(&options, &CheckOptions { reduce: false, ..CheckOptions::default() }, &mut |_| {});
        assert!(reduced.complete && full.complete, "{name}: a search did not finish");
        assert!(!full.reduced && !full.symmetry);
        assert_eq!(reduced.violated(), full.violated(), "{name}: the reduction changed a verdict");
        let (r, f) = (reduced.unique_states, full.unique_states);
        assert!(r <= f, "{name}: {r} reduced, {f} full");
        assert!(!reduced.symmetry || r < f, "{name}: symmetry merged nothing: {r} reduced, {f} full");
    }
}

#[test]
fn every_system_is_pinned_here() {
    let source = include_str!("systems.rs");
    for system in systems::SYSTEMS {
        let pinned = source.contains(&format!("pin(\"{}\"", system.name))
            || source.contains(&format!("pin_violations(\"{}\"", system.name));
        assert!(pinned, "{} has no pinned test", system.name);
    }
}
