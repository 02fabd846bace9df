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

/// A waiter's outcome: its place in the queue, its locker and its lease.
type Waiter = tokio::task::JoinHandle<Result<(usize, NatsLocker, lockcheck_impls::Lease), LockError>>;

/// Starts `acquire` on `count` lockers of their own (each a separate connection, as separate
/// processes would be), one after the other: each starts only once the previous one's
/// queue entry is stored (seen on a watch of the key's queue), so the queue's order is the
/// waiters' order. With `release_at_once`, each waiter releases as soon as it is granted.
/// Each waiter's locker is returned with it: a waiter whose task is aborted is cancelled,
/// its locker (its process) lives on.
async fn queue_waiters(
    server: &Service,
    bucket: &str,
    holder: &NatsLocker,
    request: &LeaseRequest,
    count: usize,
    release_at_once: bool,
) -> Vec<(Waiter, NatsLocker)> {
    use futures::StreamExt;
    let mut queued = holder.store().watch(format!("{}.q.*", request.key())).await.expect("watch the queue");
    let mut waiters = Vec::new();
    for place in 0..count {
        let waiter_locker = locker_on(server, bucket).await;
        let process = waiter_locker.clone();
        let request = request.clone();
        let waiter = tokio::spawn(async move {
            let lease = waiter_locker.acquire(&request, LONG).await?;
            if release_at_once {
                assert!(waiter_locker.release(&lease).await?, "held until released");
            }
            Ok((place, waiter_locker, lease))
        });
        waiters.push((waiter, process));
        let entry = tokio::time::timeout(LONG, queued.next()).await.expect("the waiter queues").unwrap().unwrap();
        assert_eq!(entry.operation, async_nats::jetstream::kv::Operation::Put, "a queue entry: {entry:?}");
    }
    waiters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_hands_the_lease_to_the_longest_waiter_in_one_write() {
    let Some((server, holder)) = fixture("hand_off").await else { return };
    let request = LeaseRequest::lock("k", LONG);
    let held = holder.try_acquire(&request).await.unwrap().unwrap();
    // Every waiter releases as soon as it is granted: the lease travels down the queue.
    let waiters = queue_waiters(&server, "hand_off", &holder, &request, 8, true).await;
    assert!(holder.release(&held).await.unwrap());
    let mut grants = Vec::new();
    for (waiter, _) in waiters {
        let (place, _, lease) = waiter.await.unwrap().expect("granted");
        grants.push((lease.fence().0, place));
    }
    grants.sort();
    // In queue order, and each grant is the very next message of the stream after the
    // previous holder's: the release itself was the grant. (A purge that woke the waiters to
    // race creates takes two messages per grant, in no particular order.)
    let first = grants[0].0;
    let expected: Vec<(u64, usize)> = (0..8).map(|place| (first + place as u64, place)).collect();
    assert_eq!(grants, expected, "(fence, place in the queue) of each grant");
    assert!(first > held.fence().0 + 8, "the first grant follows the 8 queue entries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_waiter_never_strands_the_lease() {
    let Some((server, holder)) = fixture("cancelled_waiter").await else { return };
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // The lease outlives the test: only a hand-off (or a pass-on) can grant in time.
    let request = LeaseRequest::lock("k", LONG);
    for iteration in 0..20 {
        let held = holder.try_acquire(&request).await.unwrap().expect("free at the start of an iteration");
        let mut waiters = queue_waiters(&server, "cancelled_waiter", &holder, &request, 2, false).await;
        let (last, _) = waiters.pop().unwrap();
        let (first, _cancelled_process) = waiters.pop().unwrap();
        // The first in line gives up around the release: before it (the holder may or may not
        // have seen it leave) or after (the lease may already be on its way to it).
        first.abort();
        yield_turns(rng.random_range(0..40)).await;
        assert!(holder.release(&held).await.unwrap());
        let granted = tokio::time::timeout(Duration::from_secs(5), last).await;
        let (_, locker, lease) = granted
            .unwrap_or_else(|_| panic!("iteration {iteration} (seed {seed}): the lease was stranded"))
            .unwrap()
            .unwrap();
        assert!(locker.release(&lease).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_handed_to_a_crashed_waiter_expires_with_its_ttl() {
    let Some((server, holder)) = fixture("crashed_waiter").await else { return };
    let request = LeaseRequest::lock("k", LONG);
    let held = holder.try_acquire(&request).await.unwrap().unwrap();
    // The crashed waiter's process: its own runtime and connection, shut down while it waits
    // (nothing of it runs any more: its queue entry stays), asking for a 1 s lease.
    let crashed = {
        use futures::StreamExt;
        let mut queued = holder.store().watch("k.q.*").await.expect("watch the queue");
        let url = server.address().to_string();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.spawn(async move {
            let locker = NatsLocker::connect(&url, BucketConfig::new("crashed_waiter")).await.unwrap();
            let _ = locker.acquire(&LeaseRequest::lock("k", Duration::from_secs(1)), LONG).await;
        });
        tokio::time::timeout(LONG, queued.next()).await.expect("the doomed waiter queues").unwrap().unwrap();
        runtime
    };
    tokio::task::spawn_blocking(move || drop(crashed)).await.unwrap();
    let (waiter, _) = queue_waiters(&server, "crashed_waiter", &holder, &request, 1, false).await.pop().unwrap();
    let released_at = Instant::now();
    assert!(holder.release(&held).await.unwrap());
    let (_, locker, lease) =
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("granted").unwrap().unwrap();
    let waited = released_at.elapsed();
    // Handed to the crashed waiter first (its 1 s lease), then freed by the server's expiry.
    assert!(lease.fence().0 > held.fence().0 + 3, "grant, two queue entries, the crashed waiter's lease");
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(3), "waited {waited:?}");
    assert!(locker.release(&lease).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_that_rejoin_the_queue_keep_the_lease_moving() {
    let Some((server, first)) = fixture("rejoin").await else { return };
    // The benchmark's pattern: 1 + 8 clients, each its own connection; a holder releases once
    // everyone else is waiting, and rejoins the queue once the next holder has the lease.
    let mut lockers = vec![first];
    for _ in 0..8 {
        lockers.push(locker_on(&server, "rejoin").await);
    }
    let request = LeaseRequest::lock("k", LONG);
    let rounds = 300u64;
    let (progress, _) = tokio::sync::watch::channel((0usize, 0u64));
    let progress = std::sync::Arc::new(progress);
    let mut tasks = tokio::task::JoinSet::new();
    for (client, locker) in lockers.into_iter().enumerate() {
        let (progress, request) = (progress.clone(), request.clone());
        tasks.spawn(async move {
            let mut updates = progress.subscribe();
            loop {
                progress.send_modify(|(waiting, _)| *waiting += 1);
                let lease = locker
                    .acquire(&request, Duration::from_secs(10))
                    .await
                    .unwrap_or_else(|e| panic!("client {client} after {} grants: {e}", progress.borrow().1));
                let mut grant = 0;
                progress.send_modify(|(waiting, grants)| {
                    *waiting -= 1;
                    *grants += 1;
                    grant = *grants;
                });
                if grant >= rounds {
                    assert!(locker.release(&lease).await.unwrap());
                    return;
                }
                updates.wait_for(|(waiting, _)| *waiting >= 8).await.unwrap();
                assert!(locker.release(&lease).await.unwrap(), "client {client}: held until released");
                updates.wait_for(|(_, grants)| *grants > grant).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}
