//! The Redis locker's own promises on real Redis, beyond the shared suite: bad input refused
//! before anything is sent, locked-down servers (scripts or CONFIG renamed away) answered with
//! clear errors or an announced fallback, scripts reloaded after a flush, an indeterminate
//! grant rolled back, the lock, fence and queue keys in one Cluster slot, and the waiter
//! queue: a release wakes one waiter, not the herd; a cancelled, gone or dead waiter strands
//! nobody; the queue does not outlive its waiters.
#![cfg(feature = "redis")]

use std::time::Duration;

use lockcheck_impls::redis::{RedisConfig, RedisLocker, Wakeups, cluster_slot as slot};
use lockcheck_impls::{InvalidInput, LeaseRequest, LockError, Locker};
use lockcheck_support::Service;
use lockcheck_support::redis::{RedisOptions, redis, url};

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
async fn lock_fence_and_queue_keys_share_a_cluster_slot() {
    assert_eq!(slot("123456789"), 0x31C3, "CRC16/XMODEM check value");
    let Some(server) = server("hash_slot", RedisOptions::default()).await else { return };
    let locker = RedisLocker::connect(&url(&server, 1)).await.unwrap();
    let waiter = std::sync::Arc::new(RedisLocker::connect(&url(&server, 1)).await.unwrap());
    for key in ["orders", "a:b:c", "x}y", "with{braces}", "ünï"] {
        let request = LeaseRequest::lock(key, LONG);
        let lease = locker.try_acquire(&request).await.unwrap().expect("free");
        let mut connection = inspect(&server, 1).await;
        let lock_key = locker.redis_key(key);
        // A waiter, so that the key's queue exists too.
        let waiting = {
            let waiter = waiter.clone();
            tokio::spawn(async move { waiter.acquire(&request, Duration::from_secs(10)).await })
        };
        until_queued(&mut connection, &format!("{lock_key}:waiters"), 1).await;
        let mut keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{lock_key}*")).query_async(&mut connection).await.unwrap();
        keys.sort();
        assert_eq!(keys, vec![lock_key.clone(), format!("{lock_key}:fence"), format!("{lock_key}:waiters")], "{key}");
        assert_eq!(slot(&keys[0]), slot(&keys[1]), "{key}: {keys:?}");
        assert_eq!(slot(&keys[0]), slot(&keys[2]), "{key}: {keys:?}");
        locker.release(&lease).await.unwrap();
        let next = waiting.await.unwrap().expect("the waiter is granted");
        waiter.release(&next).await.unwrap();
    }
}

/// The waiter queue of `key` on database `db` (the locker's `lockcheck:{key}:waiters`).
fn queue_key(locker: &RedisLocker, key: &str) -> String {
    format!("{}:waiters", locker.redis_key(key))
}

async fn queued(connection: &mut redis::aio::MultiplexedConnection, queue: &str) -> usize {
    redis::cmd("ZCARD").arg(queue).query_async(connection).await.expect("ZCARD")
}

/// Waits (bounded) until `queue` holds `count` entries: the waiters' refused tries are
/// observable on the server, so the test waits for them instead of sleeping for them.
async fn until_queued(connection: &mut redis::aio::MultiplexedConnection, queue: &str, count: usize) {
    let given_up = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = queued(connection, queue).await;
        if now == count {
            return;
        }
        assert!(tokio::time::Instant::now() < given_up, "{queue} holds {now} entries, never {count}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// How many `EVALSHA`s (every locker operation is one script) the server ran since the last
/// `CONFIG RESETSTAT`.
async fn script_calls(connection: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(connection).await.expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .map_or(0, |rest| rest.split(',').next().and_then(|calls| calls.parse().ok()).expect("calls=N"))
}

/// Lockers whose queued waiters never retry on their own within a test: only a release that
/// names them (or an expiry) wakes them.
fn named_only() -> RedisConfig {
    let mut config = RedisConfig::default();
    config.hand_off_fallback = Duration::from_secs(60);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_one_queued_waiter_not_the_herd() {
    const WAITERS: usize = 8;
    let Some(server) = server("wake_one", RedisOptions::default()).await else { return };
    let mut connection = inspect(&server, 1).await;
    let holder = RedisLocker::connect(&url(&server, 1)).await.unwrap();
    let request = LeaseRequest::lock("k", LONG);
    let held = holder.try_acquire(&request).await.unwrap().expect("free");
    // Every waiter its own locker (its own connections), as separate processes would be.
    let mut waiting = Vec::new();
    for _ in 0..WAITERS {
        let waiter = RedisLocker::connect_with(&url(&server, 1), named_only()).await.unwrap();
        let request = request.clone();
        waiting.push(tokio::spawn(async move {
            let lease = waiter.acquire(&request, Duration::from_secs(20)).await?;
            waiter.release(&lease).await.map(|_| lease.fence())
        }));
    }
    let queue = queue_key(&holder, "k");
    until_queued(&mut connection, &queue, WAITERS).await;
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut connection).await.unwrap();
    holder.release(&held).await.unwrap();
    let mut fences = Vec::new();
    for waiter in waiting {
        fences.push(waiter.await.unwrap().expect("every waiter is granted in turn"));
    }
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(fences.len(), WAITERS, "one grant each");
    // The holder's release, then per waiter: the one try its naming caused, and its release.
    // Waking every waiter on each release would have cost a try per waiter still queued.
    assert_eq!(script_calls(&mut connection).await, 1 + 2 * WAITERS as u64, "one try per hand-off");
    assert_eq!(queued(&mut connection, &queue).await, 0, "every entry left with its grant");
}

/// A waiter counts as queued (`Locker::queued`, what the hand-off benchmark
/// waits for) only once its entry is in the key's queue on the server, and stops counting
/// when it is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_counts_as_waiting_once_its_queue_entry_is_on_the_server() {
    let Some(server) = server("waiting_count", RedisOptions::default()).await else { return };
    let mut connection = inspect(&server, 1).await;
    let holder = RedisLocker::connect(&url(&server, 1)).await.unwrap();
    let waiter = RedisLocker::connect(&url(&server, 1)).await.unwrap();
    let request = LeaseRequest::lock("counted", LONG);
    let held = holder.try_acquire(&request).await.unwrap().expect("free");
    let mut counter = waiter.queued().expect("a Redis locker counts its queued acquires");
    assert_eq!(counter.count(), 0);
    let acquire = spawn_acquire(waiter, &request);
    let counted = tokio::time::timeout(LONG, counter.until_at_least(1)).await;
    assert_eq!(counted, Ok(true), "the waiter was never counted");
    assert_eq!(queued(&mut connection, &queue_key(&holder, "counted")).await, 1, "counted before it queued");
    assert!(holder.release(&held).await.unwrap());
    acquire.await.unwrap().expect("granted");
    assert_eq!(counter.count(), 0, "still counted after its grant");
}

/// `locker` waiting up to 20 s for `request`, in a task of its own.
fn spawn_acquire(
    locker: RedisLocker,
    request: &LeaseRequest,
) -> tokio::task::JoinHandle<Result<lockcheck_impls::Lease, lockcheck_impls::LockError>> {
    let request = request.clone();
    tokio::spawn(async move { locker.acquire(&request, Duration::from_secs(20)).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_waiter_withdraws_and_the_next_is_named() {
    let Some(server) = server("withdraw", RedisOptions::default()).await else { return };
    let mut connection = inspect(&server, 1).await;
    let holder = RedisLocker::connect(&url(&server, 1)).await.unwrap();
    let request = LeaseRequest::lock("k", LONG);
    let queue = queue_key(&holder, "k");
    let held = holder.try_acquire(&request).await.unwrap().expect("free");
    let first = RedisLocker::connect_with(&url(&server, 1), named_only()).await.unwrap();
    let cancelled = spawn_acquire(first, &request);
    until_queued(&mut connection, &queue, 1).await;
    let second = RedisLocker::connect_with(&url(&server, 1), named_only()).await.unwrap();
    let next = spawn_acquire(second, &request);
    until_queued(&mut connection, &queue, 2).await;
    // The longest waiter gives up: its entry leaves the queue (in the background).
    cancelled.abort();
    assert!(cancelled.await.unwrap_err().is_cancelled());
    until_queued(&mut connection, &queue, 1).await;
    holder.release(&held).await.unwrap();
    // Named, so granted long before its 60 s fallback or the holder's 30 s lease.
    let lease = tokio::time::timeout(Duration::from_secs(5), next).await.expect("the next waiter is named").unwrap();
    assert!(lease.expect("granted").fence() > held.fence());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_naming_of_a_waiter_that_is_gone_is_passed_on() {
    let Some(server) = server("pass_on", RedisOptions::default()).await else { return };
    let mut connection = inspect(&server, 1).await;
    // The locker whose (gone) waiter the release will name: the only wake channel so far.
    let gone = RedisLocker::connect_with(&url(&server, 1), named_only()).await.unwrap();
    let given_up = tokio::time::Instant::now() + Duration::from_secs(10);
    let channel = loop {
        let channels: Vec<String> =
            redis::cmd("PUBSUB").arg("CHANNELS").arg("lockcheck:wake:*").query_async(&mut connection).await.unwrap();
        match channels.as_slice() {
            [] => assert!(tokio::time::Instant::now() < given_up, "the locker never subscribed its wake channel"),
            [channel] => break channel.clone(),
            more => panic!("one wake channel, got {more:?}"),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let holder = RedisLocker::connect(&url(&server, 1)).await.unwrap();
    let request = LeaseRequest::lock("k", LONG);
    let queue = queue_key(&holder, "k");
    let held = holder.try_acquire(&request).await.unwrap().expect("free");
    let waiter = RedisLocker::connect_with(&url(&server, 1), named_only()).await.unwrap();
    let next = spawn_acquire(waiter, &request);
    until_queued(&mut connection, &queue, 1).await;
    // An entry ahead of it, of a waiter of `gone` that no longer waits (a crash between its
    // refused try and its withdrawal, say): deadline far ahead, arrival score 0.
    let far = 4_000_000_000_000u64;
    let entry = format!("{far}:{:032x}:{channel}", 7);
    let _: () = redis::cmd("ZADD").arg(&queue).arg(0).arg(&entry).query_async(&mut connection).await.unwrap();
    holder.release(&held).await.unwrap();
    // `gone` hears its dead waiter named and names the next one.
    let lease = tokio::time::timeout(Duration::from_secs(5), next).await.expect("the naming was passed on").unwrap();
    assert!(lease.expect("granted").fence() > held.fence());
    drop(gone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_named_waiter_strands_nobody_for_long() {
    let Some(server) = server("dead_waiter", RedisOptions::default()).await else { return };
    let mut connection = inspect(&server, 1).await;
    let holder = RedisLocker::connect(&url(&server, 1)).await.unwrap();
    let request = LeaseRequest::lock("k", LONG);
    let queue = queue_key(&holder, "k");
    let held = holder.try_acquire(&request).await.unwrap().expect("free");
    // The default fallback: 25 ms after the last release.
    let waiter = RedisLocker::connect(&url(&server, 1)).await.unwrap();
    let next = spawn_acquire(waiter, &request);
    until_queued(&mut connection, &queue, 1).await;
    // Ahead of it: entries whose deadlines have passed, which the release must skip and
    // drop, then a waiter whose process died (nobody listens on its channel).
    for stale in 0..5u32 {
        let entry = format!("1000:{stale:032x}:lockcheck:wake:{:032x}", 3);
        let _: () = redis::cmd("ZADD").arg(&queue).arg(0).arg(&entry).query_async(&mut connection).await.unwrap();
    }
    let far = 4_000_000_000_000u64;
    let dead = format!("{far}:{:032x}:lockcheck:wake:{:032x}", 1, 2);
    let _: () = redis::cmd("ZADD").arg(&queue).arg(1).arg(&dead).query_async(&mut connection).await.unwrap();
    holder.release(&held).await.unwrap();
    let released = tokio::time::Instant::now();
    let lease = tokio::time::timeout(Duration::from_secs(5), next).await.expect("not stranded").unwrap();
    let took = released.elapsed();
    assert!(lease.expect("granted").fence() > held.fence());
    assert!(took >= Duration::from_millis(20), "granted after {took:?}: the fallback, not a naming");
    assert!(took < Duration::from_secs(1), "granted {took:?} after the release: the fallback is 25 ms");
    // The stale entries were dropped, the dead one went with its naming, and the live
    // waiter's entry with its grant.
    assert_eq!(queued(&mut connection, &queue).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiter_queue_does_not_outlive_its_waiters() {
    const WAITERS: usize = 6;
    let Some(server) = server("queue_bounded", RedisOptions::default()).await else { return };
    let mut connection = inspect(&server, 1).await;
    let holder = RedisLocker::connect(&url(&server, 1)).await.unwrap();
    let request = LeaseRequest::lock("k", LONG);
    let queue = queue_key(&holder, "k");
    let held = holder.try_acquire(&request).await.unwrap().expect("free");
    let mut waiting = Vec::new();
    for _ in 0..WAITERS {
        let waiter = RedisLocker::connect(&url(&server, 1)).await.unwrap();
        let request = request.clone();
        waiting.push(tokio::spawn(async move { waiter.acquire(&request, Duration::from_millis(1500)).await }));
    }
    until_queued(&mut connection, &queue, WAITERS).await;
    // The queue key expires a second after its last entry's deadline, whatever happens.
    let pttl: i64 = redis::cmd("PTTL").arg(&queue).query_async(&mut connection).await.unwrap();
    assert!((1_000..=2_600).contains(&pttl), "queue PTTL {pttl} ms for 1.5 s waits");
    for waiter in waiting {
        let error = waiter.await.unwrap().expect_err("the lock stays held");
        assert!(error.is_timeout(), "{error}");
    }
    // Every waiter that gave up withdrew its entry.
    until_queued(&mut connection, &queue, 0).await;
    let exists: i64 = redis::cmd("EXISTS").arg(&queue).query_async(&mut connection).await.unwrap();
    assert_eq!(exists, 0, "an empty queue is no key");
    assert!(holder.release(&held).await.unwrap());
}
