//! Every conformance check against real Redis, one `#[test]` per check, for each of the three
//! Redis lockers: one server, all of three servers in order, and a majority of three
//! (Redlock). Every test starts its own servers (containers, or `redis-server` processes
//! without Docker) and stops them when it ends, so a red run names the check and the locker.
#![cfg(feature = "redis")]

use lockcheck_conformance::backends::redis::{RedisBackend, RedisMode};
use lockcheck_conformance::conformance_suite;
use lockcheck_conformance::{Served, SuiteConfig};
use lockcheck_support::redis::{RedisOptions, redis_many};

/// `mode` on `count` fresh servers, database `db`; `None` only where the run allows skipping.
fn redis(mode: RedisMode, count: usize, db: u32) -> Option<Served<RedisBackend>> {
    let servers = tokio::runtime::Handle::current()
        .block_on(redis_many(&RedisOptions::default(), count))
        .expect("Redis servers (scripts/setup/redis.sh)")?;
    Some(Served::new(RedisBackend::on(mode, &servers, db), servers))
}

// Database 1: the key-event channel must be the locker's database, not 0.
conformance_suite!(one_server, redis(RedisMode::Single, 1, 1), SuiteConfig::default());
conformance_suite!(all_of_three_servers, redis(RedisMode::All, 3, 0), SuiteConfig::default());
conformance_suite!(majority_of_three_servers, redis(RedisMode::Quorum, 3, 0), SuiteConfig::default());
