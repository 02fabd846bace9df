//! The NATS JetStream KV locker against a real single NATS server (a `lockcheck/nats`
//! container, or a `nats-server` process without Docker): the scenarios the original Go
//! locker shipped, plus what it got wrong — push wake-ups without lost wake-ups, server-side
//! expiry of a crashed holder's lock, cancel safety, revision-checked release and refresh,
//! fencing, and keys NATS subjects cannot carry verbatim.
//!
//! Every test starts its own server and prints `REAL-SERVER nats: <test>` when it ran against
//! it; under `LOCKCHECK_SERVICES=skip` a missing server is printed as SKIPPED instead.
#![cfg(feature = "nats")]

use std::time::Duration;

use lockcheck_conformance::services::Service;
use lockcheck_conformance::services::nats::{locker, nats};
use lockcheck_impls::nats::{BucketConfig, NatsLocker};
use lockcheck_impls::{LeaseRequest, LockError, Locker};
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// A server and a locker on a bucket of its own; `None` when the run allows skipping.
async fn fixture(test: &str) -> Option<(Service, NatsLocker)> {
    let server = nats().await.expect("a NATS server (run scripts/setup/nats.sh)")?;
    let locker = locker(&server, BucketConfig::new(test)).await.expect("the NATS locker connects");
    println!("REAL-SERVER nats: {test} against {} ({})", locker.describe(), server.runtime());
    Some((server, locker))
}

fn seed() -> u64 {
    let seed = std::env::var("LOCKCHECK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed} (rerun with LOCKCHECK_SEED={seed})");
    seed
}

const LONG: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_acquire_is_refused_until_release() {
    let Some((_server, locker)) = fixture("double_acquire").await else { return };
    let request = LeaseRequest::lock("k", LONG);
    let first = locker.try_acquire(&request).await.unwrap().expect("a free key is granted");
    assert!(locker.try_acquire(&request).await.unwrap().is_none(), "a held key is refused");
    assert!(locker.release(&first).await.unwrap(), "the holder's release reports it was held");
    let again = locker.try_acquire(&request).await.unwrap().expect("a released key is granted again");
    assert!(again.fence() > first.fence(), "fencing tokens increase: {} then {}", first.fence(), again.fence());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lease_can_neither_release_nor_refresh_the_next_holder() {
    let Some((_server, locker)) = fixture("stale_lease").await else { return };
    let request = LeaseRequest::lock("k", Duration::from_secs(1));
    let stale = locker.try_acquire(&request).await.unwrap().unwrap();
    // The server expires the first lease; the waiter is woken by the expiry marker.
    let current = locker.acquire(&LeaseRequest::lock("k", LONG), Duration::from_secs(5)).await.unwrap();
    assert!(Instant::now() >= stale.expires_at(), "granted before the first holder's lease ended");
    assert!(!locker.release(&stale).await.unwrap(), "a stale release reports not held");
    assert!(locker.refresh(&stale, LONG).await.unwrap().is_none(), "a stale refresh reports lost");
    assert_eq!(locker.remaining_ttl(&stale).await.unwrap(), None);
    assert!(locker.try_acquire(&request).await.unwrap().is_none(), "the current holder still holds");
    let remaining = locker.remaining_ttl(&current).await.unwrap().expect("current lease held");
    assert!(remaining > Duration::from_secs(20), "the stale refresh did not shorten it: {remaining:?}");
    assert!(locker.release(&current).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_extends_the_server_side_expiry() {
    let Some((_server, locker)) = fixture("refresh").await else { return };
    let request = LeaseRequest::lock("k", Duration::from_secs(1));
    let lease = locker.try_acquire(&request).await.unwrap().unwrap();
    let refreshed = locker.refresh(&lease, Duration::from_secs(4)).await.unwrap().expect("still held");
    assert_eq!(refreshed.fence(), lease.fence(), "a refresh is the same grant");
    assert_eq!(refreshed.ttl(), Duration::from_secs(4));
    // Past the original TTL (plus the server's expiry slack) the lock must still be held.
    let waited = locker.acquire(&request, Duration::from_millis(2500)).await;
    assert!(matches!(waited, Err(LockError::TimedOut { .. })), "refreshed lease expired early: {waited:?}");
    let remaining = locker.remaining_ttl(&refreshed).await.unwrap().expect("held");
    assert!(remaining <= Duration::from_secs(4) && remaining > Duration::ZERO, "{remaining:?}");
    // A second refresh starts from the refreshed revision (not the grant's).
    let twice = locker.refresh(&refreshed, LONG).await.unwrap().expect("still held");
    assert!(locker.release(&twice).await.unwrap(), "release after two refreshes");
    assert!(locker.try_acquire(&request).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holders_lock_expires_on_the_server() {
    let Some((server, locker)) = fixture("crashed_holder").await else { return };
    let request = LeaseRequest::lock("job", Duration::from_secs(1));
    // The holder's process: its own connection, gone without releasing (no timer of its own
    // could free the lock — the original Go locker's flaw).
    let crashed = locker_on(&server, "crashed_holder").await;
    let held = crashed.try_acquire(&request).await.unwrap().unwrap();
    drop(crashed);
    let started = Instant::now();
    let next = locker.acquire(&LeaseRequest::lock("job", LONG), Duration::from_secs(5)).await.expect("expiry frees it");
    assert!(Instant::now() >= held.expires_at(), "granted before the crashed holder's lease ended");
    // TTL 1 s, plus one second of server expiry slack.
    assert!(started.elapsed() < Duration::from_secs(2), "freed only after {:?}", started.elapsed());
    assert!(next.fence() > held.fence());
}

async fn locker_on(server: &Service, bucket: &str) -> NatsLocker {
    locker(server, BucketConfig::new(bucket)).await.expect("second connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lost_wake_up_when_the_release_races_the_wait() {
    let Some((server, locker)) = fixture("lost_wake_up").await else { return };
    let waiter_locker = locker_on(&server, "lost_wake_up").await;
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // The lease outlives the bound by far: only a wake-up, never an expiry, can grant in time.
    let request = LeaseRequest::lock("hot", LONG);
    let bound = Duration::from_secs(2);
    for iteration in 0..150 {
        let held = locker.try_acquire(&request).await.unwrap().expect("free at the start of an iteration");
        let waiter = {
            let waiter_locker = waiter_locker.clone();
            let request = request.clone();
            tokio::spawn(async move { waiter_locker.acquire(&request, bound).await })
        };
        // Release at a random point of the waiter's try → subscribe → wait sequence.
        for _ in 0..rng.random_range(0..40) {
            tokio::task::yield_now().await;
        }
        assert!(locker.release(&held).await.unwrap());
        let granted = waiter.await.unwrap().unwrap_or_else(|e| panic!("iteration {iteration} (seed {seed}): {e}"));
        assert!(waiter_locker.release(&granted).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_honours_its_wait_bound() {
    let Some((_server, locker)) = fixture("wait_bound").await else { return };
    let request = LeaseRequest::lock("k", LONG);
    let _held = locker.try_acquire(&request).await.unwrap().unwrap();
    for wait in [Duration::ZERO, Duration::from_millis(50), Duration::from_millis(300)] {
        let started = Instant::now();
        let outcome = locker.acquire(&request, wait).await;
        let took = started.elapsed();
        assert!(matches!(outcome, Err(LockError::TimedOut { .. })), "{outcome:?}");
        assert!(took >= wait && took < wait + Duration::from_millis(250), "wait {wait:?} took {took:?}");
    }
}

/// Completes after `turns` trips through the scheduler.
async fn yield_turns(turns: u32) {
    for _ in 0..turns {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_acquire_leaves_no_grant_behind() {
    let Some((_server, locker)) = fixture("cancel").await else { return };
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let request = LeaseRequest::lock("k", LONG);
    let mut cancelled = 0;
    for iteration in 0..60 {
        // Cancel anywhere from before the create is sent to after its ack: every other
        // iteration after a few scheduler turns (the create is on the wire, its ack cannot be
        // back yet — so some acquires are always cancelled, however fast the server), the
        // others after up to 3 ms (a timer's granularity is 1 ms: often after the ack).
        let acquire = locker.acquire(&request, LONG);
        let outcome = if iteration % 2 == 0 {
            let turns = rng.random_range(0..8);
            tokio::select! {
                biased;
                lease = acquire => Some(lease),
                () = yield_turns(turns) => None,
            }
        } else {
            let cancel_after = Duration::from_micros(rng.random_range(0..3000));
            tokio::time::timeout(cancel_after, acquire).await.ok()
        };
        match outcome {
            Some(lease) => assert!(locker.release(&lease.unwrap()).await.unwrap()),
            None => cancelled += 1,
        }
        // A leaked grant would hold the key for 30 s; the cleanup of a raced grant takes a
        // round trip or two.
        let next = locker.acquire(&request, Duration::from_secs(2)).await;
        let next = next.unwrap_or_else(|e| panic!("iteration {iteration} (seed {seed}): leaked grant? {e}"));
        assert!(locker.release(&next).await.unwrap());
    }
    println!("{cancelled} of 60 acquires cancelled");
    assert!(cancelled > 0, "no acquire was cancelled: the test did not test anything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_outside_nats_subject_rules_work_and_stay_distinct() {
    let Some((_server, locker)) = fixture("odd_keys").await else { return };
    let keys = ["a.b", "a=2Eb", "a>b", "a*", "ключ/日本", "x/y/z", "=", "..", "tab-free~key"];
    let mut leases = Vec::new();
    for key in keys {
        let lease = locker.try_acquire(&LeaseRequest::lock(key, LONG)).await.unwrap();
        leases.push(lease.unwrap_or_else(|| panic!("{key:?} collided with another key")));
    }
    for (key, lease) in keys.iter().zip(&leases) {
        assert!(locker.try_acquire(&LeaseRequest::lock(*key, LONG)).await.unwrap().is_none(), "{key:?} not held");
        assert!(locker.release(lease).await.unwrap(), "{key:?}");
    }
    let fences: Vec<u64> = leases.iter().map(|lease| lease.fence().0).collect();
    assert!(fences.windows(2).all(|pair| pair[0] < pair[1]), "revisions increase across keys: {fences:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_sub_second_ttls_round_up() {
    let Some((_server, locker)) = fixture("input").await else { return };
    for request in [
        LeaseRequest::lock("", LONG),
        LeaseRequest::lock("a b", LONG),
        LeaseRequest::lock("line\nbreak", LONG),
        LeaseRequest::lock("x".repeat(201), LONG),
        LeaseRequest::lock("k", Duration::ZERO),
    ] {
        let outcome = locker.try_acquire(&request).await;
        assert!(matches!(outcome, Err(ref e) if e.is_invalid_input()), "{request:?}: {outcome:?}");
    }
    let semaphore = locker.try_acquire(&LeaseRequest::semaphore("s", 3, LONG)).await;
    assert!(matches!(semaphore, Err(LockError::Unsupported { .. })), "{semaphore:?}");
    assert!(!locker.capabilities().semaphores, "unsupported semaphores are not claimed");
    // 300 ms is held for a whole second on the server; the holder believes 300 ms.
    let lease = locker.try_acquire(&LeaseRequest::lock("short", Duration::from_millis(300))).await.unwrap().unwrap();
    assert_eq!(lease.ttl(), Duration::from_millis(300));
    let remaining = locker.remaining_ttl(&lease).await.unwrap().expect("held");
    assert!(remaining <= Duration::from_secs(1), "{remaining:?}");
    let next = locker.acquire(&LeaseRequest::lock("short", LONG), Duration::from_secs(3)).await.unwrap();
    assert!(Instant::now() >= lease.expires_at());
    assert!(next.fence() > lease.fence());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_past_its_ttl_is_gone_even_while_the_server_rounds_it_up() {
    let Some((_server, locker)) = fixture("past_ttl").await else { return };
    // 1.1 s: the server keeps the entry for 2 s (whole seconds, rounded up).
    let request = LeaseRequest::lock("k", Duration::from_millis(1100));
    let lease = locker.try_acquire(&request).await.unwrap().unwrap();
    tokio::time::sleep_until(lease.expires_at()).await;
    assert!(!locker.release(&lease).await.unwrap(), "released after its TTL: not held any more");
    // The leftover entry was freed on the way: the key is free at once, not after 2 s.
    let next = locker.try_acquire(&request).await.unwrap().expect("the leftover was freed");
    assert!(locker.refresh(&next, Duration::from_secs(5)).await.unwrap().is_some());
    let refreshed_late = {
        let short = locker.try_acquire(&LeaseRequest::lock("j", Duration::from_millis(1100))).await.unwrap().unwrap();
        tokio::time::sleep_until(short.expires_at()).await;
        locker.refresh(&short, Duration::from_secs(5)).await.unwrap()
    };
    assert!(refreshed_late.is_none(), "refreshed after its TTL: lost");
}
