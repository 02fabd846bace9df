//! Every built-in mutant is caught: the suite reports a violation with a counterexample, and
//! the property it is expected to break is among those reported.

use lockcheck_conformance::{Status, SuiteConfig, mutants, run_suite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_builtin_mutant_is_caught_with_its_expected_property() {
    let config = SuiteConfig::default();
    eprintln!("seed {} (LOCKCHECK_SEED to replay)", config.seed);
    let missed = mutants::not_caught_as_expected(&mutants::builtin(), &config).await;
    assert!(missed.is_empty(), "mutants not caught as expected: {missed:#?}");
}

/// The concurrent workload and its history checkers find bugs without a scenario written for
/// them: a double grant across nodes, and a stale timer releasing the next holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_random_workload_alone_catches_double_grants_and_stale_timers() {
    let config = SuiteConfig::default().only(["random_workload"]).cases(8);
    eprintln!("seed {} (LOCKCHECK_SEED to replay)", config.seed);
    for name in ["double-grant", "stale-expiry-timer"] {
        let mutant = mutants::builtin().into_iter().find(|m| m.name == name).expect("registered");
        let report = run_suite(mutant.backend.as_ref(), &config).await;
        let (_, counterexample) =
            report.counterexamples().next().unwrap_or_else(|| panic!("{name} survived the workload:\n{report}"));
        eprintln!("{name}: {counterexample}");
        assert!(counterexample.len() <= 12, "{name}: the counterexample was not shrunk:\n{counterexample}");
    }
}

/// The other half of a checker's proof: correct backends that behave unlike the reference
/// lockers (leases freed when the client's session ends, and said so) pass every check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusual_but_correct_backends_pass() {
    let config = SuiteConfig::default();
    eprintln!("seed {} (LOCKCHECK_SEED to replay)", config.seed);
    for (name, backend) in mutants::unusual_but_correct() {
        let report = run_suite(backend.as_ref(), &config).await;
        assert_eq!(report.status(), Status::Passed, "{name}:\n{report}");
    }
}

/// A lease that ends 5 % early is caught at the embedded dflockd server's time scales too
/// (whole-second leases, 1 s late tolerance), not only at the memory locker's: the early side
/// has its own, small tolerance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_ending_five_percent_early_is_caught_at_whole_second_time_scales() {
    let mutant = mutants::builtin().into_iter().find(|m| m.name == "expires-5-percent-early").expect("registered");
    let config = SuiteConfig::default()
        .timing(lockcheck_conformance::Timing::whole_seconds())
        .only(["ttl_expiry_frees_lock", "lease_lasts_its_ttl"]);
    let report = run_suite(mutant.backend.as_ref(), &config).await;
    let (_, counterexample) =
        report.counterexamples().next().unwrap_or_else(|| panic!("the early expiry survived:\n{report}"));
    assert_eq!(counterexample.property, mutant.expected_to_violate, "{counterexample}");
}
