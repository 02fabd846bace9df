//! The flawed Redis ports are caught on real Redis, each by the property its flaw breaks
//! (what `lockcheck selftest` shows when Redis is available).
#![cfg(feature = "redis")]

use lockcheck_conformance::{SuiteConfig, mutants};
use lockcheck_support::redis;

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
    let redis_mutants = mutants::redis::mutants();
    assert_eq!(redis_mutants.len(), 3);
    let missed = mutants::not_caught_as_expected(&redis_mutants, &config).await;
    assert!(missed.is_empty(), "Redis mutants not caught as expected on real Redis: {missed:#?}");
}
