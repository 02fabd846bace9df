//! The flawed etcd locker is caught on real etcd, by the property its flaw breaks, running the
//! checks that cover it (`lockcheck selftest` runs them all); the correct lockers pass the same
//! checks in `etcd_suite.rs`.
#![cfg(feature = "etcd")]

use lockcheck_conformance::suite::CHECKS;
use lockcheck_conformance::{SuiteConfig, mutants};
use lockcheck_support::etcd::{EtcdOptions, etcd};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_etcd_mutant_is_caught_on_real_etcd() {
    // The mutants start their own servers; fail (or skip, if allowed) up front when none can.
    match etcd(&EtcdOptions::default()).await {
        Ok(Some(_probe)) => {}
        Ok(None) => return,
        Err(error) => panic!("etcd for the mutants: {error}"),
    }
    let mut missed = Vec::new();
    for mutant in mutants::etcd::mutants() {
        let checks: Vec<&str> = CHECKS
            .iter()
            .filter(|check| check.covers.contains(&mutant.expected_to_violate))
            .map(|check| check.name)
            .collect();
        let config = SuiteConfig::default().only(checks);
        println!("seed {} (LOCKCHECK_SEED to replay)", config.seed);
        missed.extend(mutants::not_caught_as_expected(std::slice::from_ref(&mutant), &config).await);
    }
    assert!(missed.is_empty(), "etcd mutants not caught as expected on real etcd: {missed:#?}");
}
