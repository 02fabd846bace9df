//! The flawed Redis ports are caught on real Redis, each by the property its flaw breaks
//! (what `lockcheck selftest` shows when Redis is available).
#![cfg(feature = "redis")]

use std::time::Duration;

use lockcheck_conformance::services::{Policy, redis};
use lockcheck_conformance::{Status, SuiteConfig, mutants, run_suite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_redis_mutant_is_caught_on_real_redis() {
    // The mutants start their own servers; fail (or skip, if allowed) up front when none can.
    match redis::redis(&redis::RedisOptions::default()).await {
        Ok(Some(_probe)) => {}
        Ok(None) => return,
        Err(error) => panic!("Redis for the mutants: {error}"),
    }
    let config = SuiteConfig::default();
    println!("seed {} (LOCKCHECK_SEED to replay)", config.seed);
    let mut survivors = Vec::new();
    let redis_mutants = mutants::redis::mutants();
    assert_eq!(redis_mutants.len(), 3);
    for mutant in redis_mutants {
        let report = run_suite(mutant.backend.as_ref(), &config).await;
        let caught: Vec<_> = report
            .by_property()
            .into_iter()
            .filter(|(_, status)| *status == Status::Violated)
            .map(|(p, _)| p)
            .collect();
        println!("REAL REDIS: mutant {:<26} caught by {caught:?} in {:.1}s", mutant.name, report.elapsed.as_secs_f64());
        if let Some((check, counterexample)) = report.counterexamples().next() {
            println!("  [{check}] {counterexample}");
        }
        assert!(report.elapsed < Duration::from_secs(60), "{} took {:?}", mutant.name, report.elapsed);
        if !caught.contains(&mutant.expected_to_violate) {
            survivors.push((mutant.name, mutant.expected_to_violate, caught, report.to_string()));
        }
    }
    let _ = Policy::from_env();
    assert!(survivors.is_empty(), "Redis mutants not caught as expected: {survivors:#?}");
}
