//! The flawed NATS ports are caught on real NATS, each by the property its flaw breaks (what
//! `lockcheck selftest` shows when NATS is available). To keep the run short each mutant runs
//! the checks that cover the property it is expected to break; `lockcheck selftest` runs them
//! all.
#![cfg(feature = "nats")]

use std::time::Duration;

use lockcheck_conformance::services::nats;
use lockcheck_conformance::suite::CHECKS;
use lockcheck_conformance::{Status, SuiteConfig, mutants, run_suite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nats_mutant_is_caught_on_real_nats() {
    // The mutants start their own servers; fail (or skip, if allowed) up front when none can.
    match nats::nats().await {
        Ok(Some(_probe)) => {}
        Ok(None) => return,
        Err(error) => panic!("NATS for the mutants: {error}"),
    }
    let nats_mutants = mutants::nats::mutants();
    assert_eq!(nats_mutants.len(), 2);
    let mut survivors = Vec::new();
    for mutant in nats_mutants {
        let checks: Vec<&str> = CHECKS
            .iter()
            .filter(|check| check.covers.contains(&mutant.expected_to_violate))
            .map(|check| check.name)
            .collect();
        let config = SuiteConfig::default().only(checks.clone());
        println!("seed {} (LOCKCHECK_SEED to replay)", config.seed);
        let report = run_suite(mutant.backend.as_ref(), &config).await;
        let caught: Vec<_> = report
            .by_property()
            .into_iter()
            .filter(|(_, status)| *status == Status::Violated)
            .map(|(p, _)| p)
            .collect();
        println!(
            "REAL NATS: mutant {:<28} caught by {caught:?} in {:.1}s (checks {checks:?})",
            mutant.name,
            report.elapsed.as_secs_f64()
        );
        if let Some((check, counterexample)) = report.counterexamples().next() {
            println!("  [{check}] {counterexample}");
        }
        assert!(report.elapsed < Duration::from_secs(60), "{} took {:?}", mutant.name, report.elapsed);
        if !caught.contains(&mutant.expected_to_violate) {
            survivors.push((mutant.name, mutant.expected_to_violate, caught, report.to_string()));
        }
    }
    assert!(survivors.is_empty(), "NATS mutants not caught as expected: {survivors:#?}");
}
