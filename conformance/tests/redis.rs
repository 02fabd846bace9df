//! The Redis locker's own promises on real Redis, beyond the shared suite: bad input refused
//! before anything is sent, locked-down servers (scripts or CONFIG renamed away) answered with
//! clear errors or an announced fallback, scripts reloaded after a flush, an indeterminate
//! grant rolled back, and the lock and fence keys in one Cluster slot.
#![cfg(feature = "redis")]

use std::time::Duration;

use lockcheck_conformance::services::Service;
use lockcheck_conformance::services::redis::{RedisOptions, redis, url};
use lockcheck_impls::redis::{RedisConfig, RedisLocker, Wakeups, cluster_slot as slot};
use lockcheck_impls::{InvalidInput, LeaseRequest, LockError, Locker};

const LONG: Duration = Duration::from_secs(30);

async fn server(test: &str, options: RedisOptions) -> Option<Service> {
    let server = redis(&options).await.expect("a Redis server (run scripts/setup/redis.sh)")?;
    println!("REAL REDIS: {test} on {} at {}", server.runtime(), server.address());
    Some(server)
}

/// A plain connection for looking at what the locker left on the server.
async fn inspect(server: &Service, db: u32) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url(server, db)).expect("url");
    client.get_multiplexed_async_connection().await.expect("inspection connection")
}

async fn dbsize(server: &Service, db: u32) -> i64 {
    redis::cmd("DBSIZE").query_async(&mut inspect(server, db).await).await.expect("DBSIZE")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_anything_is_sent() {
    let Some(server) = server("bad_input", RedisOptions::default()).await else { return };
    let locker = RedisLocker::connect(&url(&server, 1)).await.expect("connect");
    let megabyte = "k".repeat(1 << 20);
    for key in ["", "with space", "new\nline", "tab\tbed", "nul\0byte", "bell\u{7}", megabyte.as_str()] {
        for result in [
            locker.try_acquire(&LeaseRequest::lock(key, LONG)).await.map(|_| ()),
            locker.acquire(&LeaseRequest::lock(key, LONG), Duration::from_millis(10)).await.map(|_| ()),
        ] {
            let error = result.expect_err("a bad key must be refused");
            assert!(error.is_invalid_input(), "{key:?}: {error}");
        }
    }
    for ttl in [Duration::ZERO, Duration::from_micros(999)] {
        let error = locker.try_acquire(&LeaseRequest::lock("k", ttl)).await.expect_err("TTL below 1 ms");
        assert!(matches!(error, LockError::InvalidInput(InvalidInput::TtlTooShort { .. })), "{error}");
    }
    let error = locker.try_acquire(&LeaseRequest::semaphore("k", 3, LONG)).await.expect_err("no semaphores");
    assert!(matches!(error, LockError::Unsupported { operation: "semaphores" }), "{error}");
    // A good grant, then a refresh with a bad TTL: refused, and the lease is untouched.
    let lease = locker.try_acquire(&LeaseRequest::lock("k", LONG)).await.unwrap().expect("free key");
    let error = locker.refresh(&lease, Duration::ZERO).await.expect_err("refresh TTL 0");
    assert!(error.is_invalid_input(), "{error}");
    let left = locker.remaining_ttl(&lease).await.unwrap().expect("still held");
    assert!(left > Duration::from_secs(25), "{left:?}");
    assert!(locker.release(&lease).await.unwrap());
    // Nothing but the fence counter of the one good key was ever written.
    assert_eq!(dbsize(&server, 1).await, 1, "only lockcheck:{{k}}:fence remains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_events_are_enabled_for_the_lockers_own_database() {
    let Some(server) = server("key_events", RedisOptions::default()).await else { return };
    let mut connection = inspect(&server, 0).await;
    let before: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg("notify-keyspace-events").query_async(&mut connection).await.unwrap();
    assert_eq!(before[1], "", "a fresh server publishes no key events");
    let locker = RedisLocker::connect(&url(&server, 3)).await.expect("connect");
    assert_eq!(locker.wakeups(), &Wakeups::KeyspaceEvents);
    assert!(locker.capabilities().push_wakeups);
    let after: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg("notify-keyspace-events").query_async(&mut connection).await.unwrap();
    for flag in ['K', 'g', 'x'] {
        assert!(after[1].contains(flag), "flag {flag} missing from {:?}", after[1]);
    }
    // A waiter on database 3 is woken by a release on database 3, well before its
    // holder's 30 s lease would end.
    let holder = RedisLocker::connect(&url(&server, 3)).await.expect("connect");
    let request = LeaseRequest::lock("k", LONG);
    let held = holder.try_acquire(&request).await.unwrap().expect("free");
    let waiter = tokio::spawn(async move { locker.acquire(&request, Duration::from_secs(10)).await });
    holder.release(&held).await.unwrap();
    let granted = waiter.await.unwrap().expect("woken by the release");
    assert!(granted.fence() > held.fence());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_renamed_away_means_polling_announced_and_still_correct() {
    let options = RedisOptions { renamed_commands: vec![("CONFIG".into(), String::new())], ..RedisOptions::default() };
    let Some(server) = server("config_disabled", options).await else { return };
    let (holder, waiter) =
        (RedisLocker::connect(&url(&server, 1)).await.unwrap(), RedisLocker::connect(&url(&server, 1)).await.unwrap());
    let Wakeups::Polling { reason } = waiter.wakeups() else { panic!("expected polling, got {:?}", waiter.wakeups()) };
    assert!(reason.contains("notify-keyspace-events"), "the reason names the setting: {reason}");
    assert!(!waiter.capabilities().push_wakeups, "no push wake-ups may be claimed");
    let request = LeaseRequest::lock("k", LONG);
    let held = holder.try_acquire(&request).await.unwrap().expect("free");
    let waiting = tokio::spawn(async move { waiter.acquire(&request, Duration::from_secs(5)).await });
    holder.release(&held).await.unwrap();
    // The bounded backoff (≤ 100 ms) finds the free lock long before the 30 s lease.
    let granted = waiting.await.unwrap().expect("granted by polling");
    assert!(granted.fence() > held.fence());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_renamed_away_fail_at_connect_and_leave_nothing() {
    let renamed = ["EVAL", "EVALSHA", "SCRIPT"].map(|command| (command.to_owned(), String::new())).to_vec();
    let options = RedisOptions { renamed_commands: renamed, ..RedisOptions::default() };
    let Some(server) = server("scripts_disabled", options).await else { return };
    let error = RedisLocker::connect(&url(&server, 1)).await.err().expect("no locker without scripts");
    assert!(error.is_unavailable(), "{error}");
    assert!(error.to_string().contains("refuses Lua scripts"), "a clear message: {error}");
    assert_eq!(dbsize(&server, 1).await, 0, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_scripts_are_reloaded_after_noscript() {
    let Some(server) = server("noscript", RedisOptions::default()).await else { return };
    let locker = RedisLocker::connect(&url(&server, 1)).await.unwrap();
    let request = LeaseRequest::lock("k", LONG);
    let lease = locker.try_acquire(&request).await.unwrap().expect("free");
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut inspect(&server, 1).await).await.unwrap();
    assert!(locker.remaining_ttl(&lease).await.unwrap().is_some(), "PTTL script reloaded");
    assert!(locker.refresh(&lease, LONG).await.unwrap().is_some(), "refresh script reloaded");
    assert!(locker.release(&lease).await.unwrap(), "release script reloaded");
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut inspect(&server, 1).await).await.unwrap();
    let again = locker.try_acquire(&request).await.unwrap().expect("acquire script reloaded");
    assert!(again.fence() > lease.fence());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indeterminate_grant_is_rolled_back() {
    let Some(server) = server("indeterminate_rollback", RedisOptions::default()).await else { return };
    let mut config = RedisConfig::default();
    config.response_timeout = Duration::from_millis(200);
    let locker = RedisLocker::connect_with(&url(&server, 1), config).await.unwrap();
    let request = LeaseRequest::lock("k", LONG);
    server.pause().await.unwrap();
    let error = locker.try_acquire(&request).await.expect_err("a frozen server cannot answer");
    assert!(error.is_indeterminate(), "a sent grant that got no answer is indeterminate: {error}");
    server.unpause().await.unwrap();
    // The grant ran when the server resumed, and the rollback right after it: the key is
    // free for anyone, although nobody released a lease.
    let other = RedisLocker::connect(&url(&server, 1)).await.unwrap();
    let lease = other.acquire(&request, Duration::from_secs(5)).await.expect("rolled back, not held for 30 s");
    assert!(other.release(&lease).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_fence_keys_share_a_cluster_slot() {
    assert_eq!(slot("123456789"), 0x31C3 % 16384, "CRC16/XMODEM check value");
    let Some(server) = server("hash_slot", RedisOptions::default()).await else { return };
    let locker = RedisLocker::connect(&url(&server, 1)).await.unwrap();
    for key in ["orders", "a:b:c", "x}y", "with{braces}", "ünï"] {
        let lease = locker.try_acquire(&LeaseRequest::lock(key, LONG)).await.unwrap().expect("free");
        let mut connection = inspect(&server, 1).await;
        let lock_key = locker.redis_key(key);
        let mut keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{lock_key}*")).query_async(&mut connection).await.unwrap();
        keys.sort();
        assert_eq!(keys, vec![lock_key.clone(), format!("{lock_key}:fence")], "{key}");
        assert_eq!(slot(&keys[0]), slot(&keys[1]), "{key}: {keys:?}");
        locker.release(&lease).await.unwrap();
    }
}
