//! The Rust dflockd client against the reference server (in-process): the three layers,
//! renewal and the lost-lock signal, two-phase, sharding, auth, TLS, and the lockcheck
//! `Locker` API.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lockcheck_impls::dflockd::{
    ClientTls, ConnectOptions, Connection, DflockdError, DflockdLocker, DflockdLockerConfig, Lock, LockOptions,
    Semaphore, ServerKind, ServerTls, commands, crc32_shard,
};
use lockcheck_impls::{LeaseRequest, LockError, Locker};
use lockcheck_server::{Server, ServerConfig};
use tokio::time::Instant;

async fn server(configure: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut config = ServerConfig::ephemeral();
    configure(&mut config);
    Server::start(config).await.expect("server starts")
}

fn options(server: &Server) -> LockOptions {
    LockOptions::with_servers([server.local_addr().to_string()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_maps_to_its_own_error() {
    use lockcheck_impls::dflockd::protocol::Status;
    let mut seen = std::collections::HashSet::new();
    for status in Status::ALL {
        let error = DflockdError::from_status(status, "l");
        assert_eq!(error.status(), Some(status));
        assert!(seen.insert(std::mem::discriminant(&error)), "{status} shares a variant");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_functions_cover_every_command() {
    let server = server(|_| {}).await;
    let addr = server.local_addr().to_string();
    let mut a = Connection::connect(&addr, &ConnectOptions::default()).await.unwrap();
    let mut b = Connection::connect(&addr, &ConnectOptions::default()).await.unwrap();
    commands::ping(&mut a).await.unwrap();
    let grant = commands::acquire(&mut a, "k", Duration::ZERO, Some(5)).await.unwrap();
    assert_eq!(grant.lease_s, 5);
    assert!(commands::acquire(&mut b, "k", Duration::ZERO, None).await.unwrap_err().is_timeout());
    assert_eq!(commands::renew(&mut a, "k", &grant.token, Some(8)).await.unwrap(), 8);
    assert_eq!(commands::enqueue(&mut b, "k", None).await.unwrap(), commands::Enqueued::Queued);
    assert!(matches!(commands::enqueue(&mut b, "k", None).await, Err(DflockdError::AlreadyEnqueued)));
    commands::release(&mut a, "k", &grant.token).await.unwrap();
    assert!(matches!(commands::release(&mut a, "k", &grant.token).await, Err(DflockdError::Server { .. })));
    let waited = commands::wait(&mut b, "k", Duration::from_secs(2)).await.unwrap();
    assert!(matches!(commands::wait(&mut b, "k", Duration::ZERO).await, Err(DflockdError::NotEnqueued)));
    commands::release(&mut b, "k", &waited.token).await.unwrap();

    let p1 = commands::sem_acquire(&mut a, "s", Duration::ZERO, 2, None).await.unwrap();
    let _p2 = commands::sem_acquire(&mut a, "s", Duration::ZERO, 2, None).await.unwrap();
    assert!(matches!(
        commands::sem_acquire(&mut b, "s", Duration::ZERO, 3, None).await,
        Err(DflockdError::LimitMismatch)
    ));
    assert_eq!(commands::sem_enqueue(&mut b, "s", 2, Some(3)).await.unwrap(), commands::Enqueued::Queued);
    assert_eq!(commands::sem_renew(&mut a, "s", &p1.token, None).await.unwrap(), 33);
    commands::sem_release(&mut a, "s", &p1.token).await.unwrap();
    let p3 = commands::sem_wait(&mut b, "s", Duration::from_secs(2)).await.unwrap();
    assert_eq!(p3.lease_s, 3);
    let stats = commands::stats(&mut a).await.unwrap();
    assert_eq!(stats["semaphores"][0]["holders"], 2);

    // Nothing forbidden ever reaches the wire.
    for key in ["", "a b", "a\nb", "a\u{1}"] {
        assert!(matches!(
            commands::acquire(&mut a, key, Duration::ZERO, None).await,
            Err(DflockdError::InvalidArgument(_))
        ));
    }
    assert!(matches!(
        commands::acquire(&mut a, "k", Duration::ZERO, Some(0)).await,
        Err(DflockdError::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_acquire_release_is_idempotent_and_fenced() {
    let server = server(|_| {}).await;
    let mut a = Lock::new("job", options(&server));
    let mut b = Lock::new("job", LockOptions { acquire_timeout: Duration::ZERO, ..options(&server) });
    assert!(a.acquire().await.unwrap());
    let first_fence = a.fence().expect("the reference server's tokens carry a fence");
    assert!(!b.acquire().await.unwrap(), "held by a");
    assert!(a.release().await.unwrap());
    assert!(!a.release().await.unwrap(), "a second release is a no-op");
    assert!(b.acquire().await.unwrap());
    assert!(b.fence().unwrap() > first_fence);
    drop(b); // closing the connection releases it on the server
    assert!(a.acquire().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_renewal_keeps_a_short_lease_alive_and_signals_loss() {
    let server = server(|_| {}).await;
    let failures = Arc::new(AtomicUsize::new(0));
    let counter = failures.clone();
    let mut lock = Lock::new(
        "renewed",
        LockOptions {
            lease_ttl_s: Some(1),
            on_renew_error: Some(Arc::new(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            })),
            ..options(&server)
        },
    );
    assert!(lock.acquire().await.unwrap());
    // Three one-second leases' worth of time: without renewal it would have expired.
    let lost_early = tokio::time::timeout(Duration::from_millis(2500), lock.lost()).await;
    assert!(lost_early.is_err(), "renewal kept the lease");
    let mut other = Connection::connect(&server.local_addr().to_string(), &ConnectOptions::default()).await.unwrap();
    assert!(commands::acquire(&mut other, "renewed", Duration::ZERO, None).await.unwrap_err().is_timeout());
    // The server goes away: the next renewal fails and the loss is signalled.
    drop(server);
    tokio::time::timeout(Duration::from_secs(5), lock.lost()).await.expect("loss signalled");
    assert!(lock.is_lost());
    assert_eq!(failures.load(Ordering::SeqCst), 1, "the callback ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_enqueue_then_wait() {
    let server = server(|_| {}).await;
    let mut a = Lock::new("tp", options(&server));
    let mut b = Lock::new("tp", options(&server));
    assert!(matches!(b.wait(Duration::ZERO).await, Err(DflockdError::NotEnqueued)));
    assert!(matches!(a.enqueue().await.unwrap(), commands::Enqueued::Acquired(_)));
    assert_eq!(b.enqueue().await.unwrap(), commands::Enqueued::Queued);
    assert!(!b.wait(Duration::ZERO).await.unwrap(), "a holds it");
    assert_eq!(b.enqueue().await.unwrap(), commands::Enqueued::Queued, "re-queue after a timed-out wait");
    assert!(a.release().await.unwrap());
    assert!(b.wait(Duration::from_secs(2)).await.unwrap());
    assert!(b.token().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_permits() {
    let server = server(|_| {}).await;
    let opts = LockOptions { acquire_timeout: Duration::ZERO, ..options(&server) };
    let mut permits: Vec<Semaphore> = (0..3).map(|_| Semaphore::new("pool", 2, opts.clone())).collect();
    assert!(permits[0].acquire().await.unwrap());
    assert!(permits[1].acquire().await.unwrap());
    assert!(!permits[2].acquire().await.unwrap());
    let mut mismatched = Semaphore::new("pool", 5, opts.clone());
    assert!(matches!(mismatched.acquire().await, Err(DflockdError::LimitMismatch)));
    assert!(permits[0].release().await.unwrap());
    assert!(permits[2].acquire().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_shard_by_crc32_across_servers() {
    let servers = [server(|_| {}).await, server(|_| {}).await];
    let addrs: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
    let mut held = Vec::new();
    for key in ["my-key", "job-1", "a", "row:42", "ключ"] {
        let mut lock = Lock::new(key, LockOptions::with_servers(addrs.clone()));
        assert!(lock.acquire().await.unwrap());
        let index = crc32_shard(key, 2);
        let on = |s: &Server| s.stats()["locks"].as_array().unwrap().iter().any(|l| l["key"] == key);
        assert!(on(&servers[index]) && !on(&servers[1 - index]), "{key} lives on server {index}");
        held.push(lock);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_acquire_leaves_nothing_behind() {
    let server = server(|_| {}).await;
    let mut holder = Lock::new("c", options(&server));
    assert!(holder.acquire().await.unwrap());
    let mut waiter = Lock::new("c", options(&server));
    // The waiter is queued on the server when its future is dropped.
    let dropped = tokio::time::timeout(Duration::from_millis(300), waiter.acquire()).await;
    assert!(dropped.is_err());
    server.wait_for_connections(|n| *n == 1).await;
    assert_eq!(server.stats()["locks"][0]["waiters"], 0, "the cancelled waiter left the queue");
    assert!(holder.release().await.unwrap());
    let mut next = Lock::new("c", LockOptions { acquire_timeout: Duration::ZERO, ..options(&server) });
    assert!(next.acquire().await.unwrap(), "free: the cancelled acquire holds nothing");
}

fn test_certificate() -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_auth() {
    let (cert, key) = test_certificate();
    let server = server(|c| {
        c.tls = Some(ServerTls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap());
        c.auth_token = Some("hunter2".into());
    })
    .await;
    let tls = ClientTls::with_root_certificates_pem(cert.as_bytes()).unwrap();
    let connect = ConnectOptions { tls: Some(tls), ..ConnectOptions::default() };
    let mut lock = Lock::new(
        "secure",
        LockOptions { connect: connect.clone(), auth_token: Some("hunter2".into()), ..options(&server) },
    );
    assert!(lock.acquire().await.unwrap());
    let mut wrong = Lock::new(
        "secure",
        LockOptions { connect: connect.clone(), auth_token: Some("nope".into()), ..options(&server) },
    );
    assert!(matches!(wrong.acquire().await, Err(DflockdError::Auth)));
    let mut unauthenticated = Lock::new("secure", LockOptions { connect: connect.clone(), ..options(&server) });
    assert!(matches!(unauthenticated.acquire().await, Err(DflockdError::Auth)));
    let mut plain = Lock::new("secure", LockOptions { auth_token: Some("hunter2".into()), ..options(&server) });
    assert!(plain.acquire().await.is_err(), "plain TCP to a TLS port fails");
    let untrusted = ClientTls::with_root_certificates_pem(test_certificate().0.as_bytes()).unwrap();
    let err = Connection::connect(
        &server.local_addr().to_string(),
        &ConnectOptions { tls: Some(untrusted), ..ConnectOptions::default() },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DflockdError::Tls { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locker_api_against_the_reference_server() {
    let server = server(|_| {}).await;
    let locker = DflockdLocker::connect(DflockdLockerConfig::new([server.local_addr().to_string()])).await.unwrap();
    assert_eq!(locker.server_kind(), ServerKind::Fencing);
    let caps = locker.capabilities();
    assert!(caps.fencing && caps.fifo && caps.semaphores && caps.server_side_expiry);

    // A sub-second TTL is rounded up to the whole second the server grants, and said so.
    let request = LeaseRequest::lock("locker", Duration::from_millis(200));
    let lease = locker.try_acquire(&request).await.unwrap().expect("free");
    assert_eq!(lease.ttl(), Duration::from_secs(1));
    assert!(locker.try_acquire(&request).await.unwrap().is_none());
    let remaining = locker.remaining_ttl(&lease).await.unwrap().expect("held");
    assert!(remaining <= Duration::from_secs(1));

    // A sub-second wait bound is kept locally.
    let started = Instant::now();
    let err = locker.acquire(&request, Duration::from_millis(150)).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_millis(600), "{:?}", started.elapsed());

    let refreshed = locker.refresh(&lease, Duration::from_secs(5)).await.unwrap().expect("still held");
    assert_eq!(refreshed.ttl(), Duration::from_secs(5));
    assert!(locker.release(&refreshed).await.unwrap());
    assert!(!locker.release(&refreshed).await.unwrap(), "released already");
    assert!(locker.refresh(&refreshed, Duration::from_secs(5)).await.unwrap().is_none());
    assert_eq!(locker.remaining_ttl(&refreshed).await.unwrap(), None);

    let next = locker.acquire(&request, Duration::from_secs(1)).await.unwrap();
    assert!(next.fence() > lease.fence(), "fencing tokens increase per key");

    let sem = LeaseRequest::semaphore("locker", 3, Duration::from_secs(2));
    assert!(locker.try_acquire(&sem).await.unwrap().is_some(), "semaphores have their own name space");
    let mismatch = locker.try_acquire(&LeaseRequest::semaphore("locker", 4, Duration::from_secs(2))).await.unwrap_err();
    assert!(matches!(mismatch, LockError::LimitMismatch { requested: 4, .. }), "{mismatch}");
    assert!(
        locker
            .try_acquire(&LeaseRequest::lock("bad key", Duration::from_secs(1)))
            .await
            .unwrap_err()
            .is_invalid_input()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locker_wait_is_woken_by_release_without_polling() {
    let server = server(|_| {}).await;
    let locker =
        Arc::new(DflockdLocker::connect(DflockdLockerConfig::new([server.local_addr().to_string()])).await.unwrap());
    let request = LeaseRequest::lock("handoff", Duration::from_secs(5));
    let held = locker.acquire(&request, Duration::ZERO.max(Duration::from_secs(1))).await.unwrap();
    let waiter = {
        let locker = locker.clone();
        let request = request.clone();
        tokio::spawn(async move { locker.acquire(&request, Duration::from_secs(5)).await })
    };
    // Release once the waiter is queued on the server (visible in stats, awaited via
    // the connection count: the waiter opened a second connection).
    server.wait_for_connections(|n| *n == 2).await;
    while server.stats()["locks"][0]["waiters"] != 1 {
        tokio::task::yield_now().await;
    }
    let released_at = Instant::now();
    assert!(locker.release(&held).await.unwrap());
    let next = waiter.await.unwrap().unwrap();
    assert!(released_at.elapsed() < Duration::from_millis(200), "hand-off took {:?}", released_at.elapsed());
    assert!(next.fence() > held.fence());
}

/// A grant that races the cancellation of an acquire is given back even when the server
/// keeps locks of closed connections (auto-release off): the dropped acquire half-closes its
/// connection, reads the grant that was already on its way, and releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_racing_a_cancelled_acquire_is_released_without_auto_release() {
    let server = server(|c| c.auto_release_on_disconnect = false).await;
    let config = DflockdLockerConfig::new([server.local_addr().to_string()]);
    let (a, b, c) = (
        DflockdLocker::connect(config.clone()).await.unwrap(),
        DflockdLocker::connect(config.clone()).await.unwrap(),
        DflockdLocker::connect(config).await.unwrap(),
    );
    let request = LeaseRequest::lock("race", Duration::from_secs(100));
    let held = a.try_acquire(&request).await.unwrap().unwrap();
    {
        let mut acquire = std::pin::pin!(b.acquire(&request, Duration::from_secs(100)));
        // Drive b's acquire until it is queued on the server.
        loop {
            tokio::select! {
                biased;
                _ = &mut acquire => panic!("granted while held"),
                () = tokio::task::yield_now() => {}
            }
            if server.stats()["locks"][0]["waiters"] == 1 {
                break;
            }
        }
        // The release hands the lock to b's queued request; b's future is then dropped
        // without reading the grant.
        assert!(a.release(&held).await.unwrap());
    }
    let lease = c.acquire(&request, Duration::from_secs(3)).await.expect("the raced grant was given back");
    assert!(c.release(&lease).await.unwrap());
}

/// A grant that waited in the queue counts its lease from the hand-off, not from the request:
/// right after the hand-off the holder sees (almost) the whole lease left, and no more than the
/// server does. Counted from the request, the lease looked short by the whole wait, and
/// `remaining_ttl` said "not held" while the server still held it (found by the random
/// workload of the Python dflockd suite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waited_grant_counts_its_lease_from_the_hand_off() {
    let server = server(|_| {}).await;
    let config = DflockdLockerConfig::new([server.local_addr().to_string()]);
    let (a, b) = (DflockdLocker::connect(config.clone()).await.unwrap(), DflockdLocker::connect(config).await.unwrap());
    let ttl = Duration::from_secs(3);
    let request = LeaseRequest::lock("waited", ttl);
    let held = a.try_acquire(&request).await.unwrap().expect("free");
    let waiter = tokio::spawn(async move {
        let lease = b.acquire(&request, Duration::from_secs(10)).await;
        (b, lease)
    });
    while server.stats()["locks"][0]["waiters"] != 1 {
        tokio::task::yield_now().await;
    }
    // The wait the new holder's lease must not be charged for.
    let wait = Duration::from_millis(1_500);
    tokio::time::sleep(wait).await;
    assert!(a.release(&held).await.unwrap());
    let (b, lease) = waiter.await.unwrap();
    let lease = lease.expect("handed over");
    let left = b.remaining_ttl(&lease).await.unwrap().expect("held: the server granted it just now");
    assert!(left > ttl - wait / 3, "{left:?} left of a {ttl:?} lease granted just now (the wait was {wait:?})");
    // The server's own expiry, read in-process: the holder's belief does not outlast it
    // (give or take scheduling).
    let asked = Instant::now();
    let server_left = server.stats()["locks"][0]["lease_expires_in_s"].as_f64().expect("held on the server");
    let server_expiry = asked + Duration::from_secs_f64(server_left);
    assert!(
        lease.expires_at() <= server_expiry + Duration::from_millis(250),
        "the holder believes the lease ends {:?} after the server's expiry",
        lease.expires_at() - server_expiry
    );
}
