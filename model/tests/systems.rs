//! Pins every registered lock system's verdicts and state count (2 clients, 1 key):
//! a correct system satisfies every property on a *completed* exhaustive search; a flawed
//! one shows exactly its expected violations, each with a counterexample trace.
//!
//! The largest models (marked `#[ignore]`) take minutes in a debug build; run them with
//! `cargo test -p lockcheck-model --test systems -- --ignored` or `lockcheck model`.

use lockcheck_model::systems::{self, CheckOptions, Options, Verdict};

/// Checks one system and asserts its verdicts and, where given, its pinned unique state
/// count (the ignored large models are not pinned yet: their counts were not measured).
fn pin(name: &str, unique_states: Option<usize>) {
    let system = systems::find(name).unwrap_or_else(|| panic!("{name} is not registered"));
    let outcome = system.check(&Options { clients: 2, keys: 1 }, &CheckOptions::default(), &mut |_| {});
    assert!(outcome.complete, "{name}: the exhaustive search did not finish: {outcome:#?}");
    for property in &outcome.properties {
        let expected_violation = system.expected.contains(&property.name);
        match &property.verdict {
            Verdict::Holds => assert!(!expected_violation, "{name}: expected \"{}\" to be violated", property.name),
            Verdict::Violated { trace } => {
                assert!(expected_violation, "{name}: \"{}\" violated:\n{}", property.name, trace.join("\n"));
                assert!(!trace.is_empty(), "{name}: empty counterexample for \"{}\"", property.name);
            }
            Verdict::Unknown => panic!("{name}: \"{}\" unknown after a complete search", property.name),
        }
    }
    for expected in system.expected {
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
    pin("redis-single", Some(641));
}

#[test]
fn redis_unconditional_del_releases_someone_elses_lock() {
    pin("redis-del", Some(689));
}

#[test]
fn expiry_only_in_the_holder_keeps_a_crashed_holders_lock_forever() {
    pin("holder-timer", Some(201));
}

#[test]
fn kv_watch_before_the_try_is_correct() {
    pin("kv-watch-before", Some(758));
}

#[test]
fn kv_watch_after_the_try_loses_a_wake_up() {
    pin("kv-watch-after", Some(743));
}

#[test]
fn lockers_syncing_over_a_bus_grant_twice() {
    pin("bus", Some(566));
}

#[test]
fn dflockd_fifo_lease_server_is_correct() {
    pin("dflockd", Some(1479));
}

#[test]
fn redlock_without_faults_is_correct() {
    pin("redlock", Some(104232));
}

#[test]
#[ignore = "large: minutes in a debug build"]
fn all_instances_in_order_survives_one_restart() {
    pin("multi-all", None);
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

#[test]
#[ignore = "large: minutes in a debug build"]
fn redlock_pause_is_stopped_by_a_fenced_resource() {
    pin("redlock-pause-fenced", None);
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
