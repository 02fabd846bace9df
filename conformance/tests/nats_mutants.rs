//! The flawed NATS ports are caught on real NATS, each by the property its flaw breaks (what
//! `lockcheck selftest` shows when NATS is available). To keep the run short each mutant runs
//! the checks that cover the property it is expected to break; `lockcheck selftest` runs them
//! all.
#![cfg(feature = "nats")]

use lockcheck_conformance::suite::CHECKS;
use lockcheck_conformance::{SuiteConfig, mutants};
use lockcheck_support::nats;

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
    let mut missed = Vec::new();
    for mutant in nats_mutants {
        let checks: Vec<&str> = CHECKS
            .iter()
            .filter(|check| check.covers.contains(&mutant.expected_to_violate))
            .map(|check| check.name)
            .collect();
        let config = SuiteConfig::default().only(checks);
        println!("seed {} (LOCKCHECK_SEED to replay)", config.seed);
        missed.extend(mutants::not_caught_as_expected(std::slice::from_ref(&mutant), &config).await);
    }
    assert!(missed.is_empty(), "NATS mutants not caught as expected on real NATS: {missed:#?}");
}
