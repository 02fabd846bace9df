//! The reference dflockd server under abuse, bounded and on loopback: hostile
//! clients replay each class of the hardening campaign — a key flood, a semaphore asking for
//! billions of permits, a queue flood, a client that pipelines without reading, a `stats`
//! loop, secret guessing, silent unauthenticated connections, leases no client could parse,
//! malformed and over-long frames — while well-behaved clients keep locking. The server must
//! stay up, stay fair (every well-behaved acquire is granted, none is refused for want of
//! room), keep mutual exclusion and keep its fencing tokens increasing, and hold no more
//! reply memory than its documented bound. Every loop is bounded by a count, not a clock.

#[path = "support/raw.rs"]
mod raw;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockcheck_server::{EventSink, REPLY_BUFFER_KEEP, Server, ServerConfig, ServerEvent};
use raw::{Raw, fence_of};
use tokio::io::AsyncWriteExt;

const SECRET: &str = "correct horse battery staple";
const GOOD_CLIENTS: usize = 4;
const ROUNDS: usize = 150;
const MAX_UNAUTHENTICATED: usize = 8;

async fn authed(server: &Server) -> Raw {
    let mut c = Raw::connect(server.local_addr()).await;
    assert_eq!(c.req("auth", "_", SECRET).await, "ok");
    c
}

/// What the well-behaved clients saw on the key they share.
#[derive(Default)]
struct Shared {
    inside: AtomicBool,
    last_fence: AtomicU64,
}

/// A well-behaved client: its own key, then the shared one, `ROUNDS` times; every acquire
/// waits (up to 10 s) and must be granted.
async fn well_behaved(mut c: Raw, id: usize, shared: Arc<Shared>) {
    let own = format!("good-{id}");
    let mut own_last = 0;
    for round in 0..ROUNDS {
        let token = c.grant("l", &own, "10 30").await;
        assert!(fence_of(&token) > own_last, "client {id} round {round}: fence went backwards");
        own_last = fence_of(&token);
        assert_eq!(c.req("r", &own, &token).await, "ok");
        let token = c.grant("l", "good-shared", "10 30").await;
        assert!(!shared.inside.swap(true, Ordering::SeqCst), "two holders of good-shared");
        let previous = shared.last_fence.swap(fence_of(&token), Ordering::SeqCst);
        assert!(fence_of(&token) > previous, "good-shared: fence {} after {previous}", fence_of(&token));
        shared.inside.store(false, Ordering::SeqCst);
        assert_eq!(c.req("r", "good-shared", &token).await, "ok");
    }
}

async fn key_flood(mut flooders: Vec<Raw>) -> Vec<Raw> {
    for (f, c) in flooders.iter_mut().enumerate() {
        let mut granted = 0;
        for i in 0..100 {
            let reply = c.req("l", &format!("flood-{f}-{i}"), "0").await;
            if reply.starts_with("ok ") {
                granted += 1;
            } else {
                assert_eq!(reply, "error_max_locks");
            }
        }
        assert_eq!(granted, 16, "flooder {f}: its share of keys, no more");
    }
    flooders
}

async fn semaphore_and_queue_flood(mut c: Raw, mut queuer: Raw) -> Raw {
    assert_eq!(c.req("sl", "sem", "0 4294967295").await, "error", "four billion permits");
    assert_eq!(c.req("sl", "sem", "0 17").await, "error", "over the permit cap");
    for _ in 0..16 {
        c.grant("sl", "sem", "0 16").await;
    }
    assert_eq!(c.req("sl", "sem", "0 16").await, "timeout", "the semaphore is full, not larger");
    let mut queued = 0;
    for i in 0..20 {
        match queuer.req("e", &format!("good-{}", i % GOOD_CLIENTS), "").await.as_str() {
            "queued" => queued += 1,
            "error_already_enqueued" | "error_max_waiters" => {}
            reply => assert!(reply.starts_with("acquired "), "{reply}"),
        }
    }
    assert!(queued <= 4, "{queued} queue places for one connection");
    // The queue places are released by closing the connection.
    drop(queuer);
    c
}

/// Pipelines `stats` requests and reads nothing until told to.
async fn pipeline_without_reading(server: &Server) -> tokio::net::TcpStream {
    let mut hog = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    hog.write_all(format!("auth\n_\n{SECRET}\n").as_bytes()).await.unwrap();
    // Only as much as the kernel takes at once: this client never waits for the server.
    let requests = b"ping\n_\n_\nstats\n_\n_\n".repeat(20_000);
    let mut sent = 0;
    while sent < requests.len() {
        match hog.try_write(&requests[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("pipelining: {e}"),
        }
    }
    hog
}

async fn stats_loop(mut c: Raw) {
    for _ in 0..200 {
        assert!(c.req("stats", "_", "_").await.starts_with("ok {"));
    }
}

async fn hostile_frames(mut c: Raw) {
    let reply =
        c.req("l", "huge-lease", &format!("0 {}", lockcheck_impls::dflockd::protocol::MAX_PROTOCOL_SECONDS)).await;
    assert!(reply.ends_with(" 60"), "a lease no client could parse is clamped: {reply}");
    for junk in ["l\nk\n-1\n", "x\n\n\n", "sl\nk\n0 0\n", "n\nk\n\n"] {
        c.send(junk.as_bytes()).await;
        assert_eq!(c.line().await.as_deref(), Some("error"), "{junk:?}");
    }
    c.send_lossy(&vec![b'x'; 4096]).await;
    assert_eq!(c.line().await.as_deref(), Some("error"), "over-long line");
    assert!(c.closed().await);
}

/// Wrong secrets, one after the other, then a flood of silent unauthenticated connections.
async fn unauthenticated_abuse(server: &Server) -> usize {
    for _ in 0..6 {
        let mut c = Raw::connect(server.local_addr()).await;
        assert_eq!(c.req("auth", "_", "wrong").await, "error_auth");
        assert!(c.closed().await);
    }
    let mut silent = Vec::new();
    for _ in 0..3 * MAX_UNAUTHENTICATED {
        silent.push(Raw::connect(server.local_addr()).await);
    }
    // Every one ends: those over the cap at once (no reply), the rest at the auth timeout.
    let mut closed_at_once = 0;
    for mut c in silent {
        match c.line().await.as_deref() {
            None => closed_at_once += 1,
            Some("error") => assert!(c.closed().await),
            Some(other) => panic!("a silent connection got {other:?}"),
        }
    }
    closed_at_once
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusive_clients_leave_the_server_up_fair_and_monotonic() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut config = ServerConfig::ephemeral();
    config.auth_token = Some(SECRET.into());
    config.max_locks = 128;
    config.max_keys_per_connection = 16;
    config.max_waiters_per_connection = 4;
    config.max_semaphore_limit = 16;
    config.max_unauthenticated_connections = MAX_UNAUTHENTICATED;
    config.auth_timeout = Duration::from_secs(2);
    config.auth_failure_delay = Duration::from_millis(5);
    config.max_lease_ttl_s = 60;
    config.write_timeout = Duration::from_secs(30);
    config.events = {
        let events = events.clone();
        EventSink::new(move |e| events.lock().unwrap().push(e.clone()))
    };
    let server = Server::start(config).await.expect("server starts");
    let shared = Arc::new(Shared::default());
    let mut good = Vec::new();
    for id in 0..GOOD_CLIENTS {
        good.push(tokio::spawn(well_behaved(authed(&server).await, id, shared.clone())));
    }

    // Every abuser that authenticates does so now: the silent flood below takes the
    // pre-auth passes, and a connection over the cap is closed at once.
    let hog = pipeline_without_reading(&server).await;
    let mut flooders = Vec::new();
    for _ in 0..6 {
        flooders.push(authed(&server).await);
    }
    let (sem, queuer, stats, frames) =
        (authed(&server).await, authed(&server).await, authed(&server).await, authed(&server).await);
    let (flooders, sem, (), (), closed_at_once) = tokio::join!(
        key_flood(flooders),
        semaphore_and_queue_flood(sem, queuer),
        stats_loop(stats),
        hostile_frames(frames),
        unauthenticated_abuse(&server),
    );
    for client in good {
        client.await.expect("a well-behaved client got every lock it asked for");
    }

    // The pipelining client stalled on its own replies; the server's reply memory is within
    // its bound even so (one `stats` document in flight beyond the per-connection buffers).
    tokio::time::timeout(raw::GUARD, server.wait_for_stalled_replies(|n| *n >= 1)).await.expect("the hog stalled");
    let held = server.reply_buffer_bytes();
    let bound = server.connections() * REPLY_BUFFER_KEEP + 64 * 1024;
    assert!(held <= bound, "{held} bytes of replies held (bound {bound})");
    drop((hog, flooders, sem));

    assert!(closed_at_once >= 2 * MAX_UNAUTHENTICATED - 2, "only {closed_at_once} over the pre-auth cap were refused");
    let events = events.lock().unwrap().clone();
    assert!(events.iter().any(|e| matches!(e, ServerEvent::AuthFailed { failures: 4, .. })), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, ServerEvent::UnauthenticatedLimit { .. })), "{events:?}");

    // Still up and fair: a new client authenticates, locks, and the fence kept rising.
    server.wait_for_connections(|n| *n == 0).await;
    let mut after = authed(&server).await;
    assert_eq!(after.req("ping", "_", "_").await, "ok");
    let token = after.grant("l", "good-shared", "0").await;
    assert!(fence_of(&token) > shared.last_fence.load(Ordering::SeqCst));
    assert!(server.reply_buffer_bytes() <= REPLY_BUFFER_KEEP, "one connection's buffer, no more");
}
