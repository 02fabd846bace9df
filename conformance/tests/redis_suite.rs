//! The whole conformance suite against real Redis: one server, all of three servers in order,
//! and a majority of three (Redlock). Each test starts its servers in parallel (containers, or
//! `redis-server` processes without Docker), runs every check, prints the report and fails on
//! any violated or unknown property the locker claims.
#![cfg(feature = "redis")]

use lockcheck_conformance::services::redis::{RedisBackend, RedisMode, RedisOptions, redis_many};
use lockcheck_conformance::{Backend, Status, SuiteConfig, run_suite};

async fn suite(mode: RedisMode, servers: usize, db: u32) {
    let Some(redis) = redis_many(&RedisOptions::default(), servers).await.expect("Redis servers") else { return };
    let backend = RedisBackend::on(mode, &redis, db);
    println!("REAL REDIS: conformance suite against {} ({})", backend.name(), redis[0].runtime());
    let config = SuiteConfig::default();
    let report = run_suite(&backend, &config).await;
    println!("{report}");
    assert_eq!(report.status(), Status::Passed, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_one_server() {
    // Database 1: the key-event channel must be the locker's database, not 0.
    suite(RedisMode::Single, 1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_all_of_three_servers() {
    suite(RedisMode::All, 3, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_a_majority_of_three_servers() {
    suite(RedisMode::Quorum, 3, 0).await;
}
