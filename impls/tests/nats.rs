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

use futures::{FutureExt, StreamExt};
use lockcheck_impls::nats::{BucketConfig, NatsLocker, OFFER_TIMEOUT, RECHECK_AFTER, encode_key};
use lockcheck_impls::{Lease, LeaseRequest, LockError, Locker};
use lockcheck_support::Service;
use lockcheck_support::nats::nats;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// A locker on `service`'s bucket `bucket`.
async fn locker(service: &Service, bucket: BucketConfig) -> Result<NatsLocker, LockError> {
    NatsLocker::connect(&service.address().to_string(), bucket).await
}

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
    // The waiter looks again by itself after a quiet second, well inside the bound: a lost
    // wake-up would still be granted in time, but counted.
    assert_eq!(waiter_locker.stats().grants_after_recheck, 0, "wake-ups were lost (seed {seed})");
}

/// Waits (bounded) until every locker has one acquire waiting for a wake-up: each has found
/// the key held after joining its waiters, so its subscription is at the server.
async fn until_all_wait(lockers: &[NatsLocker]) {
    for locker in lockers {
        let mut queued = locker.queued().expect("a NATS locker counts its queued acquires");
        let started = tokio::time::timeout(LONG, queued.until_at_least(1)).await;
        assert_eq!(started, Ok(true), "waiters never started waiting: {:?}", stats_of(lockers));
    }
}

fn stats_of(lockers: &[NatsLocker]) -> Vec<lockcheck_impls::nats::NatsStats> {
    lockers.iter().map(NatsLocker::stats).collect()
}

/// A release wakes one waiter, not all of them: with 8 waiters queued, 8 hand-offs in a row
/// cost no refused create (a herd would cost 7 + 6 + … + 1 = 28), and no waiter needed its
/// own recheck to notice a release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_one_waiter_not_a_herd() {
    let Some((server, holder)) = fixture("wake_one").await else { return };
    let request = LeaseRequest::lock("hot", LONG);
    let held = holder.try_acquire(&request).await.unwrap().expect("free at the start");
    let mut waiters = Vec::new();
    for _ in 0..8 {
        waiters.push(locker_on(&server, "wake_one").await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for waiter in &waiters {
        let (waiter, request) = (waiter.clone(), request.clone());
        // Each releases as soon as it has the lock: the next hand-off follows at once.
        tasks.spawn(async move {
            let lease = waiter.acquire(&request, LONG).await?;
            waiter.release(&lease).await
        });
    }
    until_all_wait(&waiters).await;
    let refused_before: u64 = waiters.iter().map(|waiter| waiter.stats().creates_refused).sum();
    assert!(holder.release(&held).await.unwrap());
    while let Some(released) = tasks.join_next().await {
        assert!(released.unwrap().unwrap(), "a waiter's lease was gone before its release");
    }
    let after = stats_of(&waiters);
    let refused: u64 = after.iter().map(|stats| stats.creates_refused).sum::<u64>() - refused_before;
    // An offer whose answer came too late (a stall past OFFER_TIMEOUT) is followed by its
    // holder's purge, and one of the take-over and the purge is refused: that is not a herd.
    let unanswered: u64 = after.iter().map(|stats| stats.offers_unanswered).sum();
    println!("8 hand-offs: {refused} refused creates, {unanswered} unanswered offers; per locker: {after:?}");
    assert!(refused <= unanswered, "a release woke more than one waiter: {after:?}");
    assert!(after.iter().all(|stats| stats.grants_after_recheck == 0 && stats.waiting == 0), "{after:?}");
}

/// Another member of `key`'s waiters in `bucket`: it takes the notices and offers NATS hands
/// it and does nothing with them (what they were can be read off the subscription).
async fn silent_member(server: &Service, bucket: &str, key: &str) -> (async_nats::Client, async_nats::Subscriber) {
    let silent = async_nats::connect(server.address().to_string()).await.unwrap();
    let subject = format!("lockcheck.kv.{bucket}.{}", encode_key(key));
    let swallowed = silent.queue_subscribe(subject, "lockcheck-waiters".to_owned()).await.unwrap();
    silent.flush().await.unwrap();
    (silent, swallowed)
}

/// A waiter that never answers its wake-up — a queue member that received a release's
/// notice and vanished with it — costs the others at most [`RECHECK_AFTER`], not their whole
/// wait, and the grant that took is counted as a wake-up that did not arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_swallows_a_wake_up_delays_the_others_by_one_recheck() {
    let Some((server, holder)) = fixture("swallowed").await else { return };
    let request = LeaseRequest::lock("hot", LONG);
    let (_silent, mut swallowed) = silent_member(&server, "swallowed", "hot").await;
    let waiter = locker_on(&server, "swallowed").await;
    // NATS hands each notice to a member at random: repeat until the silent one got a release.
    for round in 0..32 {
        while swallowed.next().now_or_never().flatten().is_some() {}
        let held = holder.try_acquire(&request).await.unwrap().expect("free at the start of a round");
        let fence = held.fence();
        let acquire = start_waiting(&waiter, &request).await;
        let rechecked_before = waiter.stats().grants_after_recheck;
        let released_at = Instant::now();
        assert!(holder.release(&held).await.unwrap());
        let lease = acquire.await.unwrap().expect("the waiter is granted");
        let took = released_at.elapsed();
        // The release's notice is the purge that followed the held entry (an earlier round's
        // notices may still arrive late: they follow other entries).
        let mut release_swallowed = false;
        while let Some(Some(notice)) = swallowed.next().now_or_never() {
            let header =
                |name: &str| notice.headers.as_ref().and_then(|headers| headers.get(name)).map(|v| v.to_string());
            release_swallowed |= header("KV-Operation").as_deref() == Some("PURGE")
                && header("Nats-Last-Sequence") == Some(fence.0.to_string());
        }
        let rechecked = waiter.stats().grants_after_recheck - rechecked_before;
        println!(
            "round {round}: granted after {took:?}, release swallowed: {release_swallowed}, rechecks: {rechecked}"
        );
        assert!(waiter.release(&lease).await.unwrap());
        if release_swallowed {
            assert_eq!(rechecked, 1, "a grant without a wake-up must be counted");
            assert!(took < RECHECK_AFTER * 3, "the lost wake-up cost {took:?}, more than a recheck");
            return;
        }
        assert_eq!(rechecked, 0, "the waiter heard the release, yet was granted by a recheck ({took:?})");
    }
    panic!("the silent member never got a release notice in 32 rounds");
}

/// Starts `locker` acquiring `request` (wait bound [`LONG`]) in a task of its own, and returns
/// once that acquire is waiting for a wake-up.
async fn start_waiting(
    locker: &NatsLocker,
    request: &LeaseRequest,
) -> tokio::task::JoinHandle<Result<Lease, LockError>> {
    let acquire = {
        let (locker, request) = (locker.clone(), request.clone());
        tokio::spawn(async move { locker.acquire(&request, LONG).await })
    };
    until_all_wait(std::slice::from_ref(locker)).await;
    acquire
}

/// Has `locker` take the key by waiting for it (`holder` holds it first, then releases), so
/// that `locker`'s release will offer the lease to a waiter.
async fn take_after_waiting(holder: &NatsLocker, locker: &NatsLocker, request: &LeaseRequest) -> Lease {
    let held = holder.try_acquire(request).await.unwrap().expect("free at the start");
    let acquire = start_waiting(locker, request).await;
    assert!(holder.release(&held).await.unwrap());
    acquire.await.unwrap().expect("granted after waiting")
}

/// A holder that waited for its lease hands it to a waiter in one JetStream write — the
/// waiter's take-over of the offered revision — instead of a purge and a create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_offers_the_lease_to_a_waiter() {
    let Some((server, first)) = fixture("offer").await else { return };
    let (holder, waiter) = (locker_on(&server, "offer").await, locker_on(&server, "offer").await);
    let request = LeaseRequest::lock("hot", LONG);
    let mut taken_rounds = 0;
    for round in 0..5 {
        let held = take_after_waiting(&first, &holder, &request).await;
        let acquire = start_waiting(&waiter, &request).await;
        let (before, refused_before) = (holder.stats(), waiter.stats().creates_refused);
        assert!(holder.release(&held).await.unwrap());
        let granted = acquire.await.unwrap().expect("the waiter is granted");
        let after = holder.stats();
        let (taken, unanswered) =
            (after.offers_taken - before.offers_taken, after.offers_unanswered - before.offers_unanswered);
        // Each release makes one offer; a stall past OFFER_TIMEOUT (a loaded machine) leaves it
        // unanswered and the release purges instead — allowed, but not every time.
        assert_eq!(taken + unanswered, 1, "round {round}: the release made no offer: {after:?}");
        assert!(granted.fence() > held.fence());
        if taken == 1 {
            taken_rounds += 1;
            assert_eq!(waiter.stats().creates_refused, refused_before, "round {round}: a take-over is not refused");
            // The waiter's entry replaced the holder's: it names the revision it took over.
            let entry = waiter.store().entry(encode_key("hot")).await.unwrap().expect("the waiter's entry");
            assert_eq!(entry.revision, granted.fence().0);
            let value = String::from_utf8(entry.value.to_vec()).unwrap();
            assert_eq!(value.split(' ').nth(2), Some(held.fence().0.to_string().as_str()), "round {round}: {value:?}");
        }
        assert!(waiter.release(&granted).await.unwrap());
        // The old lease is gone: it can neither release nor refresh the next holder.
        assert!(!holder.release(&held).await.unwrap());
    }
    assert!(taken_rounds > 0, "no offer of 5 was taken");
}

/// An offer that reaches a queue member which never answers costs its release
/// [`OFFER_TIMEOUT`], then the release purges as without an offer and a waiter is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_nobody_answers_costs_its_release_one_offer_timeout() {
    let Some((server, first)) = fixture("unanswered").await else { return };
    let (holder, waiter) = (locker_on(&server, "unanswered").await, locker_on(&server, "unanswered").await);
    let request = LeaseRequest::lock("hot", LONG);
    let (_silent, mut swallowed) = silent_member(&server, "unanswered", "hot").await;
    // NATS hands each offer to a member at random: repeat until the silent one got one.
    for round in 0..32 {
        let held = take_after_waiting(&first, &holder, &request).await;
        let acquire = start_waiting(&waiter, &request).await;
        while swallowed.next().now_or_never().flatten().is_some() {}
        let before = holder.stats();
        let released_at = Instant::now();
        assert!(holder.release(&held).await.unwrap(), "round {round}: the release must succeed");
        let release_took = released_at.elapsed();
        let granted = acquire.await.unwrap().expect("the waiter is granted");
        let after = holder.stats();
        let mut offer_swallowed = false;
        while let Some(Some(message)) = swallowed.next().now_or_never() {
            let offered =
                message.headers.as_ref().and_then(|headers| headers.get("Lockcheck-Offer")).map(|v| v.to_string());
            offer_swallowed |= offered == Some(held.fence().0.to_string());
        }
        println!("round {round}: release took {release_took:?}, offer swallowed: {offer_swallowed}, {after:?}");
        assert!(granted.fence() > held.fence());
        assert!(waiter.release(&granted).await.unwrap());
        if offer_swallowed {
            assert_eq!(after.offers_unanswered - before.offers_unanswered, 1, "an unanswered offer is counted");
            assert_eq!(after.offers_taken, before.offers_taken);
            assert!(release_took >= OFFER_TIMEOUT, "the release gave up on its offer after {release_took:?}");
            return;
        }
        let offers = (after.offers_taken - before.offers_taken) + (after.offers_unanswered - before.offers_unanswered);
        assert_eq!(offers, 1, "round {round}: the release made no offer");
    }
    panic!("the silent member never got an offer in 32 rounds");
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
        // A zero wait may run out with the first create still on the wire: given up locally.
        assert!(outcome.as_ref().is_err_and(LockError::is_timeout), "{outcome:?}");
        if !wait.is_zero() {
            assert!(matches!(outcome, Err(LockError::TimedOut { .. })), "found held, then waited: {outcome:?}");
        }
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
