//! The reference dflockd server, driven byte by byte: the protocol as specified
//! (`lockcheck_impls::dflockd::protocol`), then hostile input. Each test starts its own
//! in-process server on a free loopback port.

#[path = "support/raw.rs"]
mod raw;

use std::time::Duration;

use lockcheck_impls::dflockd::protocol;
use lockcheck_server::{Server, ServerConfig};
use raw::{Raw, fence_of};
use tokio::time::Instant;

async fn server(configure: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut config = ServerConfig::ephemeral();
    configure(&mut config);
    Server::start(config).await.expect("server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_release_and_renew() {
    let server = server(|_| {}).await;
    let addr = server.local_addr();
    let mut a = Raw::connect(addr).await;
    let mut b = Raw::connect(addr).await;
    let token = a.grant("l", "k", "0 7").await;
    assert!(a.req("l", "k", "0").await == "timeout", "a lock is exclusive, even for its own connection");
    assert_eq!(b.req("l", "k", "0").await, "timeout");
    assert_eq!(b.req("r", "k", &"0".repeat(32)).await, "error", "a wrong token releases nothing");
    assert_eq!(b.req("n", "k", "nottoken").await, "error");
    assert_eq!(b.req("l", "k", "0").await, "timeout", "still held after the wrong-token attempts");
    assert_eq!(a.req("n", "k", &format!("{token} 9")).await, "ok 9", "renew answers the lease");
    assert_eq!(a.req("n", "k", &token).await, "ok 33", "renew without a lease uses the server default");
    assert_eq!(b.req("r", "k", &token).await, "ok", "release is by token, from any connection");
    assert_eq!(a.req("r", "k", &token).await, "error", "a second release finds nothing");
    b.grant("l", "k", "0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_granted_in_arrival_order() {
    let server = server(|_| {}).await;
    let addr = server.local_addr();
    let mut holder = Raw::connect(addr).await;
    let token = holder.grant("l", "fifo", "0").await;
    // `e` answers `queued` once the waiter is in the queue: arrival order without sleeps.
    let mut waiters = Vec::new();
    for _ in 0..5 {
        let mut w = Raw::connect(addr).await;
        assert_eq!(w.req("e", "fifo", "5").await, "queued");
        waiters.push(w);
    }
    assert_eq!(holder.req("r", "fifo", &token).await, "ok");
    let mut previous_fence = fence_of(&token);
    for (i, w) in waiters.iter_mut().enumerate() {
        let token = w.grant("w", "fifo", "5").await;
        assert!(fence_of(&token) > previous_fence, "fencing tokens increase in grant order");
        previous_fence = fence_of(&token);
        assert_eq!(w.req("r", "fifo", &token).await, "ok", "waiter {i} releases");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_acquire_is_handed_the_lock_on_release_and_on_disconnect() {
    let server = server(|_| {}).await;
    let addr = server.local_addr();
    let mut a = Raw::connect(addr).await;
    let token = a.grant("l", "k", "0").await;
    let mut b = Raw::connect(addr).await;
    b.send(b"l\nk\n10\n").await;
    // Release hands it on.
    assert_eq!(a.req("r", "k", &token).await, "ok");
    let line = b.line().await.unwrap();
    assert!(line.starts_with("ok "), "{line}");
    // Disconnect releases (auto-release on by default) and hands it on.
    let mut c = Raw::connect(addr).await;
    assert_eq!(c.req("e", "k", "").await, "queued");
    drop(b);
    let token = c.grant("w", "k", "10").await;
    assert_eq!(token.len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphores_enforce_their_limit_and_live_apart_from_locks() {
    let server = server(|_| {}).await;
    let addr = server.local_addr();
    let mut a = Raw::connect(addr).await;
    let first = a.grant("sl", "pool", "0 2").await;
    let second = a.grant("sl", "pool", "0 2 5").await;
    assert_ne!(first, second, "each permit has its own token");
    assert_eq!(a.req("sl", "pool", "0 2").await, "timeout");
    assert_eq!(a.req("sl", "pool", "0 3").await, "error_limit_mismatch");
    assert_eq!(a.req("se", "pool", "3").await, "error_limit_mismatch");
    a.grant("l", "pool", "0").await; // separate name spaces
    assert_eq!(a.req("sn", "pool", &format!("{first} 4")).await, "ok 4");
    assert_eq!(a.req("r", "pool", &first).await, "error", "a permit is not a lock");
    assert_eq!(a.req("sr", "pool", &first).await, "ok");
    a.grant("sl", "pool", "0 2").await;
    let stats = server.stats();
    assert_eq!(stats["semaphores"][0]["holders"], 2, "{stats}");
    assert_eq!(stats["semaphores"][0]["limit"], 2, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_acquisition_is_per_connection() {
    let server = server(|_| {}).await;
    let addr = server.local_addr();
    let mut a = Raw::connect(addr).await;
    let mut b = Raw::connect(addr).await;
    assert_eq!(a.req("w", "k", "0").await, "error_not_enqueued");
    let reply = a.req("e", "k", "4").await;
    assert!(reply.starts_with("acquired ") && reply.ends_with(" 4"), "{reply}");
    assert_eq!(a.req("e", "k", "").await, "error_already_enqueued");
    assert_eq!(b.req("e", "k", "").await, "queued");
    assert_eq!(b.req("w", "other", "0").await, "error_not_enqueued", "wait names the enqueued key");
    let token = a.grant("w", "k", "0").await;
    assert_eq!(a.req("w", "k", "0").await, "error_not_enqueued", "wait consumes the enqueued state");
    assert_eq!(b.req("w", "k", "0").await, "timeout", "still held by a");
    assert_eq!(b.req("w", "k", "0").await, "error_not_enqueued", "a timed-out wait leaves the queue");
    assert_eq!(b.req("e", "k", "").await, "queued");
    assert_eq!(a.req("r", "k", &token).await, "ok");
    b.grant("w", "k", "5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_handed_on_and_its_wait_reports_it() {
    let server = server(|_| {}).await;
    let addr = server.local_addr();
    let mut a = Raw::connect(addr).await;
    let reply = a.req("e", "k", "1").await;
    assert!(reply.starts_with("acquired "), "{reply}");
    let token = reply.split(' ').nth(1).unwrap().to_owned();
    let mut b = Raw::connect(addr).await;
    let started = Instant::now();
    // Blocks until a's one-second lease expires (the server's own timer, no sweep delay).
    b.grant("l", "k", "5").await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_millis(1800), "{waited:?}");
    assert_eq!(a.req("w", "k", "0").await, "error_lease_expired");
    assert_eq!(a.req("n", "k", &token).await, "error", "an expired lease cannot be renewed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_required_first_and_compared_exactly() {
    let server = server(|c| c.auth_token = Some("s3cret".into())).await;
    let addr = server.local_addr();
    for attempt in [
        &b"l\nk\n0\n"[..],
        b"stats\n_\n_\n",
        b"ping\n_\n_\n",
        b"auth\n_\ns3cre\n",
        b"auth\n_\ns3cret2\n",
        b"auth\n_\n\n",
        b"AUTH\n_\ns3cret\n",
    ] {
        let mut c = Raw::connect(addr).await;
        c.send(attempt).await;
        assert_eq!(c.line().await.as_deref(), Some("error_auth"), "{:?}", String::from_utf8_lossy(attempt));
        assert!(c.closed().await, "closed after error_auth");
    }
    let mut c = Raw::connect(addr).await;
    assert_eq!(c.req("auth", "_", "  s3cret  ").await, "ok", "the secret is trimmed");
    c.grant("l", "k", "0").await;
    assert_eq!(c.req("ping", "_", "_").await, "ok");
    assert_eq!(server.key_count(), 1, "nothing unauthenticated reached the table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_ping() {
    let server = server(|_| {}).await;
    let mut a = Raw::connect(server.local_addr()).await;
    assert_eq!(a.req("ping", "_", "_").await, "ok");
    a.grant("l", "held", "0").await;
    let mut b = Raw::connect(server.local_addr()).await;
    assert_eq!(b.req("e", "held", "").await, "queued");
    let reply = a.req("stats", "_", "_").await;
    let json: serde_json::Value = serde_json::from_str(reply.strip_prefix("ok ").unwrap()).unwrap();
    assert_eq!(json["connections"], 2);
    assert_eq!(json["locks"][0]["key"], "held");
    assert_eq!(json["locks"][0]["waiters"], 1);
    assert!(json["locks"][0]["lease_expires_in_s"].as_f64().unwrap() > 30.0);
    for field in ["semaphores", "idle_locks", "idle_semaphores"] {
        assert!(json[field].is_array(), "{field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_on_keys_waiters_and_connections() {
    let server = server(|c| {
        c.max_locks = 2;
        c.max_waiters = 1;
        c.max_connections = 3;
    })
    .await;
    let addr = server.local_addr();
    let mut a = Raw::connect(addr).await;
    let t1 = a.grant("l", "k1", "0").await;
    a.grant("sl", "k2", "0 1").await;
    assert_eq!(a.req("l", "k3", "0").await, "error_max_locks", "a new key over the cap");
    assert_eq!(a.req("r", "k1", &t1).await, "ok");
    a.grant("l", "k1", "0").await; // an existing key still works at the cap
    let mut b = Raw::connect(addr).await;
    assert_eq!(b.req("e", "k1", "").await, "queued");
    let mut c = Raw::connect(addr).await;
    assert_eq!(c.req("e", "k1", "").await, "error_max_waiters");
    server.wait_for_connections(|n| *n == 3).await;
    let mut d = Raw::connect(addr).await;
    assert!(d.closed().await, "over the connection cap: accepted, then closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_waiters_with_error_draining() {
    let server = server(|c| c.shutdown_timeout = Duration::from_secs(5)).await;
    let addr = server.local_addr();
    let mut a = Raw::connect(addr).await;
    a.grant("l", "k", "0").await;
    let mut b = Raw::connect(addr).await;
    assert_eq!(b.req("e", "k", "").await, "queued");
    b.send(b"w\nk\n30\n").await;
    let shutdown = tokio::spawn(server.shutdown());
    assert_eq!(b.line().await.as_deref(), Some("error_draining"));
    assert!(b.closed().await);
    // a is idle between requests: told, then closed.
    assert_eq!(a.line().await.as_deref(), Some("error_draining"));
    assert!(a.closed().await);
    tokio::time::timeout(Duration::from_secs(5), shutdown).await.expect("drained").unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keys_are_collected() {
    let server = server(|c| {
        c.gc_interval = Duration::from_millis(20);
        c.gc_max_idle = Duration::from_millis(50);
    })
    .await;
    let mut a = Raw::connect(server.local_addr()).await;
    let held = a.grant("l", "held", "0").await;
    let idle = a.grant("l", "idle", "0").await;
    assert_eq!(a.req("r", "idle", &idle).await, "ok");
    // Collection is periodic: wait (bounded) for the idle key to go; the held one stays.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.key_count() > 1 {
        assert!(Instant::now() < deadline, "the idle key was never collected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.stats()["locks"][0]["key"], "held");
    assert_eq!(a.req("r", "held", &held).await, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_survives_a_restart_with_a_state_file() {
    let dir = std::env::temp_dir().join(format!("lockcheck-dflockd-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("fence.state");
    let mut last = 0;
    for _ in 0..2 {
        let server = server(|c| c.fence_state_file = Some(state.clone())).await;
        let mut a = Raw::connect(server.local_addr()).await;
        let token = a.grant("l", "k", "0").await;
        assert!(fence_of(&token) > last, "fence {} after {last}", fence_of(&token));
        last = fence_of(&token);
        drop(server);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

// ---------------------------------------------------------------------------------------
// Hostile input: none of it crashes the server, holds memory without bound, or touches
// another client's lock. A bystander holds a lock through every test and checks it after.
// ---------------------------------------------------------------------------------------

struct Bystander {
    conn: Raw,
    token: String,
}

impl Bystander {
    async fn hold(server: &Server) -> Bystander {
        let mut conn = Raw::connect(server.local_addr()).await;
        let token = conn.grant("l", "bystander", "0 600").await;
        Bystander { conn, token }
    }

    async fn still_holds(mut self) {
        assert_eq!(self.conn.req("n", "bystander", &format!("{} 600", self.token)).await, "ok 600");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_lines_are_refused_before_they_are_buffered() {
    let server = server(|_| {}).await;
    let bystander = Bystander::hold(&server).await;
    for (what, request) in [
        ("long command", [vec![b'l'; 300], b"\nk\n0\n".to_vec()].concat()),
        ("long key", [b"l\n".to_vec(), vec![b'k'; 257], b"\n0\n".to_vec()].concat()),
        ("long arg", [b"l\nk\n".to_vec(), vec![b'1'; 1000], b"\n".to_vec()].concat()),
        ("a megabyte without newline", vec![b'x'; 1 << 20]),
    ] {
        let mut c = Raw::connect(server.local_addr()).await;
        c.send_lossy(&request).await;
        assert_eq!(c.line().await.as_deref(), Some("error"), "{what}");
        assert!(c.closed().await, "{what}: closed");
    }
    let mut c = Raw::connect(server.local_addr()).await;
    let max_key = "k".repeat(protocol::MAX_LINE_BYTES);
    c.grant("l", &max_key, "0").await; // exactly at the cap is fine
    bystander.still_holds().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_error_and_change_nothing() {
    let server = server(|_| {}).await;
    let bystander = Bystander::hold(&server).await;
    let mut c = Raw::connect(server.local_addr()).await;
    let cases: &[&[u8]] = &[
        b"x\nk\n0\n",
        b"lock\nk\n0\n",
        b"l\n\n0\n",
        b"l\nk k\n0\n",
        b"l\nk\tk\n0\n",
        b"l\nk\x07\n0\n",
        b"l\nk\x00\n0\n",
        b"l\n\xff\xfe\n0\n",
        b"\xc3\x28\nk\n0\n",
        b"l\nk\n-1\n",
        b"l\nk\n0 -5\n",
        b"l\nk\n0 0\n",
        b"l\nk\n18446744073709551616\n",
        b"l\nk\n9223372037\n",
        b"l\nk\n1e3\n",
        b"l\nk\n\n",
        b"l\nk\n1 2 3\n",
        b"sl\nk\n0\n",
        b"sl\nk\n0 0\n",
        b"sl\nk\n0 99999999999\n",
        b"r\nbystander\n\n",
        b"r\nbystander\n ",
        b"n\nbystander\nx 0\n",
        b"w\nk\n\n",
        b"e\nk\n-3\n",
    ];
    for &case in cases {
        let mut request = case.to_vec();
        if !request.ends_with(b"\n") {
            request.push(b'\n');
        }
        c.send(&request).await;
        assert_eq!(c.line().await.as_deref(), Some("error"), "{:?}", String::from_utf8_lossy(case));
    }
    // The connection is still usable after every malformed request.
    assert_eq!(c.req("ping", "_", "_").await, "ok");
    assert_eq!(server.key_count(), 1, "no malformed request created a key");
    bystander.still_holds().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_guessing_cannot_touch_another_clients_lock() {
    let server = server(|_| {}).await;
    let bystander = Bystander::hold(&server).await;
    let mut thief = Raw::connect(server.local_addr()).await;
    let fence_prefix = &bystander.token[..16];
    for guess in [
        format!("{fence_prefix}{}", "0".repeat(16)),
        bystander.token.to_uppercase(),
        bystander.token[..31].to_owned(),
        format!("{} ", bystander.token[1..].to_owned()),
        "*".into(),
    ] {
        assert_eq!(thief.req("r", "bystander", &guess).await, "error", "{guess}");
        assert_eq!(thief.req("n", "bystander", &format!("{guess} 1")).await, "error");
    }
    assert_eq!(thief.req("sr", "bystander", &bystander.token).await, "error", "other name space");
    bystander.still_holds().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_are_cut_off_by_the_read_timeout() {
    let server = server(|c| c.read_timeout = Duration::from_millis(400)).await;
    // One byte every 100 ms: the line is never complete within 400 ms.
    let mut slow = Raw::connect(server.local_addr()).await;
    let started = Instant::now();
    for &byte in b"l\nslowloris-key-that-takes-long\n0\n" {
        // The pacing is the attack itself, not synchronization.
        if !slow.send_lossy(&[byte]).await || started.elapsed() > Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(slow.line().await.as_deref(), Some("error"), "timed out with error");
    assert!(slow.closed().await);
    // Two of three lines, then silence.
    let mut partial = Raw::connect(server.local_addr()).await;
    partial.send(b"l\nk\n").await;
    assert_eq!(partial.line().await.as_deref(), Some("error"));
    assert!(partial.closed().await);
    // Silence between requests (the Go ≤ v1.10 behaviour): unsolicited error, close, and
    // the silent client's lock is released.
    let mut idle = Raw::connect(server.local_addr()).await;
    idle.grant("l", "idle", "0 600").await;
    assert_eq!(idle.line().await.as_deref(), Some("error"));
    let mut other = Raw::connect(server.local_addr()).await;
    other.send(b"l\nidle\n5\n").await;
    assert!(other.line().await.unwrap().starts_with("ok "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_connections_cost_nothing_lasting() {
    let server = server(|_| {}).await;
    let bystander = Bystander::hold(&server).await;
    let addr = server.local_addr();
    let mut crowd = Vec::new();
    for i in 0..2000 {
        let mut c = Raw::connect(addr).await;
        if i % 2 == 0 {
            // Half of them queue on the bystander's key, then vanish.
            c.send(b"e\nbystander\n\n").await;
        }
        crowd.push(c);
    }
    for c in crowd.iter_mut().step_by(2) {
        assert_eq!(c.line().await.as_deref(), Some("queued"));
    }
    server.wait_for_connections(|n| *n == 2001).await;
    let mut probe = Raw::connect(addr).await;
    assert_eq!(probe.req("ping", "_", "_").await, "ok", "still serving with 2000 idle connections");
    drop(probe);
    drop(crowd);
    server.wait_for_connections(|n| *n == 1).await;
    assert_eq!(server.stats()["locks"][0]["waiters"], 0, "vanished waiters left the queue");
    bystander.still_holds().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_keys_is_capped() {
    // The global cap alone (the per-connection ones would stop this one client first).
    let server = server(|c| {
        c.max_locks = 64;
        c.max_keys_per_connection = 0;
        c.max_waiters_per_connection = 0;
    })
    .await;
    let mut c = Raw::connect(server.local_addr()).await;
    let mut refused = 0;
    for i in 0..200 {
        let reply = c.req("e", &format!("k{i}"), "").await;
        if reply == "error_max_locks" {
            refused += 1;
        } else {
            assert!(reply.starts_with("acquired "), "{reply}");
        }
    }
    assert_eq!(refused, 200 - 64);
    assert_eq!(server.key_count(), 64);
    // Pipelined requests: the server answers in order and does not read ahead unboundedly.
    let mut pipe = Raw::connect(server.local_addr()).await;
    pipe.send(&b"ping\n_\n_\n".repeat(10_000)).await;
    for _ in 0..10_000 {
        assert_eq!(pipe.line().await.as_deref(), Some("ok"));
    }
}

/// The fuzz target's property (`fuzz/`), run briefly on every test run: the request
/// parser never panics and never accepts a key the protocol forbids. The coverage-guided run
/// is `scripts/fuzz` (see fuzz/README.md).
#[test]
fn parser_smoke_on_corpus_and_random_bytes() {
    let seed: u64 = std::env::var("LOCKCHECK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("parser smoke seed: {seed} (LOCKCHECK_SEED to replay)");
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let corpus_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/request_parser");
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&corpus_dir)
        .map(|dir| dir.filter_map(|e| std::fs::read(e.ok()?.path()).ok()).collect())
        .unwrap_or_default();
    assert!(!inputs.is_empty(), "the fuzz corpus at {} is missing", corpus_dir.display());
    let alphabet = b"lrnewsauthpigt_k0123456789- \t\r\n\xff\x00";
    for _ in 0..20_000 {
        let len = rng.random_range(0..400);
        inputs.push((0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect());
    }
    for input in &inputs {
        for request in protocol::parse_stream(input).into_iter().flatten() {
            use protocol::Request::*;
            match request {
                Acquire { key, .. }
                | Release { key, .. }
                | Renew { key, .. }
                | Enqueue { key, .. }
                | Wait { key, .. } => {
                    assert!(protocol::is_valid_key(&key), "accepted key {key:?} from {input:?}");
                }
                Auth { .. } | Stats | Ping => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Hardening: hostile settings, fencing at the end of its range, memory per
// connection, fair share, authentication abuse.
// ---------------------------------------------------------------------------------------

use lockcheck_server::{EventSink, REPLY_BUFFER_KEEP, ServerError, ServerEvent};
use std::sync::{Arc, Mutex};

/// Collects the server's events for assertions.
fn collect_events() -> (EventSink, Arc<Mutex<Vec<ServerEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let events = events.clone();
        EventSink::new(move |e| events.lock().unwrap().push(e.clone()))
    };
    (sink, events)
}

/// Polls `condition` (bounded by the guard) for state the server exposes only as a number.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + raw::GUARD;
    while !condition() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lockcheck-{name}-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_out_of_bounds_stop_the_start() {
    for (setting, change) in [
        (
            "--read-timeout",
            Box::new(|c: &mut ServerConfig| c.read_timeout = Duration::ZERO) as Box<dyn Fn(&mut ServerConfig)>,
        ),
        ("--lease-sweep-interval", Box::new(|c: &mut ServerConfig| c.lease_sweep_interval = Duration::MAX)),
        ("--default-lease-ttl", Box::new(|c: &mut ServerConfig| c.default_lease_ttl_s = u64::MAX)),
        ("--max-locks", Box::new(|c: &mut ServerConfig| c.max_locks = 0)),
        ("--auth-token", Box::new(|c: &mut ServerConfig| c.auth_token = Some(" s3cret".into()))),
    ] {
        let mut config = ServerConfig::ephemeral();
        change(&mut config);
        match Server::start(config).await {
            Err(ServerError::Config(error)) => assert_eq!(error.setting, setting, "{error}"),
            other => panic!("{setting}: expected a refusal, got {other:?}"),
        }
    }
}

/// Guards against granting a lease no client can parse (and the server's timer cannot hold):
/// leases are clamped to the configured maximum and the reply says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_clamped_to_the_maximum_and_the_reply_says_so() {
    let server = server(|c| c.max_lease_ttl_s = 120).await;
    let mut a = Raw::connect(server.local_addr()).await;
    let reply = a.req("l", "k", &format!("0 {}", protocol::MAX_PROTOCOL_SECONDS)).await;
    assert!(reply.ends_with(" 120"), "{reply}");
    let token = reply.split(' ').nth(1).unwrap().to_owned();
    assert_eq!(a.req("n", "k", &format!("{token} 99999999")).await, "ok 120");
    assert_eq!(a.req("n", "k", &format!("{token} 7")).await, "ok 7");
    let reply = a.req("e", "k2", "99999999").await;
    assert!(reply.starts_with("acquired ") && reply.ends_with(" 120"), "{reply}");
    let lease = server.stats()["locks"][0]["lease_expires_in_s"].as_f64().unwrap();
    assert!(lease <= 120.0, "the server's own deadline is the lease it told: {lease}");
}

/// Guards against the fence counter wrapping: with a state file near u64::MAX the server
/// hands out the last values, then refuses every grant with `error_fence_exhausted` (a
/// queued waiter too, at once), reports it once, and the file keeps u64::MAX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_stops_at_the_end_of_its_range_and_says_so() {
    let dir = temp_dir("fence-end");
    let state = dir.join("fence.state");
    std::fs::write(&state, format!("{}\n", u64::MAX - 2)).unwrap();
    let (sink, events) = collect_events();
    let server = server(|c| {
        c.fence_state_file = Some(state.clone());
        c.events = sink;
    })
    .await;
    let addr = server.local_addr();
    let mut a = Raw::connect(addr).await;
    let first = a.grant("l", "k", "0").await;
    assert_eq!(fence_of(&first), u64::MAX - 1);
    let mut b = Raw::connect(addr).await;
    assert_eq!(b.req("e", "k", "").await, "queued");
    let last = a.grant("l", "k2", "0").await;
    assert_eq!(fence_of(&last), u64::MAX);
    assert_eq!(a.req("l", "k3", "0").await, "error_fence_exhausted");
    assert_eq!(a.req("r", "k", &first).await, "ok");
    assert_eq!(b.req("w", "k", "10").await, "error_fence_exhausted", "the waiter is told at once");
    assert_eq!(a.req("l", "k", "5").await, "error_fence_exhausted");
    let exhausted: Vec<_> =
        events.lock().unwrap().iter().filter(|e| matches!(e, ServerEvent::FenceExhausted { .. })).cloned().collect();
    assert_eq!(exhausted, [ServerEvent::FenceExhausted { last: Some(u64::MAX) }], "reported once");
    assert_eq!(std::fs::read_to_string(&state).unwrap().trim(), u64::MAX.to_string());
    // Renew and release of what is held still work: only new grants are refused.
    assert_eq!(a.req("n", "k2", &format!("{last} 5")).await, "ok 5");
    assert_eq!(a.req("r", "k2", &last).await, "ok");
    drop(server);
    // A restart on the same file: still nothing granted, and the file is not rewritten lower.
    let restarted = self::server(|c| c.fence_state_file = Some(state.clone())).await;
    let mut c = Raw::connect(restarted.local_addr()).await;
    assert_eq!(c.req("l", "k", "0").await, "error_fence_exhausted");
    assert_eq!(std::fs::read_to_string(&state).unwrap().trim(), u64::MAX.to_string());
    std::fs::remove_dir_all(dir).unwrap();
}

/// Guards against reply buffers kept for the life of a connection after one large reply
/// (hundreds of MB with 1,000 connections that asked for `stats` once each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_reply_does_not_keep_its_buffer() {
    let server = server(|c| {
        c.max_locks = 4096;
        c.max_keys_per_connection = 0;
    })
    .await;
    let addr = server.local_addr();
    let mut filler = Raw::connect(addr).await;
    for i in 0..300 {
        filler.grant("l", &format!("{i:0>200}"), "0").await;
    }
    let mut clients = Vec::new();
    let mut largest = 0;
    for _ in 0..20 {
        let mut c = Raw::connect(addr).await;
        let reply = c.req("stats", "_", "_").await;
        largest = largest.max(reply.len());
        clients.push(c);
    }
    assert!(largest > 60_000, "the stats reply is large: {largest} bytes");
    let connections = server.connections();
    let held = server.reply_buffer_bytes();
    assert!(
        held <= connections * REPLY_BUFFER_KEEP,
        "{held} bytes held by {connections} connections after their replies"
    );
}

/// Guards against a client that pipelines requests without reading replies growing server
/// memory: its connection stalls on the first reply it does not read, and what the server
/// holds for it stays within one reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_stalls_itself_not_the_server() {
    let server = server(|c| {
        c.max_locks = 4096;
        c.max_keys_per_connection = 0;
        c.write_timeout = Duration::from_secs(30);
    })
    .await;
    let addr = server.local_addr();
    let bystander = Bystander::hold(&server).await;
    let mut filler = Raw::connect(addr).await;
    for i in 0..300 {
        filler.grant("l", &format!("{i:0>200}"), "0").await;
    }
    let stats_len = filler.req("stats", "_", "_").await.len() + 1;
    // Pipelines 500 `stats` (over 30 MB of replies, more than socket buffers hold) and reads
    // none of them for now.
    let mut hog = tokio::net::TcpStream::connect(addr).await.unwrap();
    let requests = b"stats\n_\n_\n".repeat(500);
    let (mut hog_read, mut hog_write) = hog.split();
    let send = async {
        use tokio::io::AsyncWriteExt;
        hog_write.write_all(&requests).await.unwrap();
    };
    let stalled_then_measured = async {
        tokio::time::timeout(raw::GUARD, server.wait_for_stalled_replies(|n| *n >= 1)).await.expect("stalled");
        let held = server.reply_buffer_bytes();
        let bound = server.connections() * REPLY_BUFFER_KEEP + stats_len;
        assert!(held <= bound, "{held} bytes held while stalled (bound {bound})");
        // Others are still served meanwhile.
        let mut other = Raw::connect(addr).await;
        other.grant("l", "other", "0").await;
        // Now read everything: every request is answered, in order.
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(&mut hog_read).lines();
        for i in 0..500 {
            let line = tokio::time::timeout(raw::GUARD, lines.next_line()).await.expect("answered").unwrap();
            assert!(line.is_some_and(|l| l.starts_with("ok {")), "reply {i}");
        }
    };
    tokio::join!(send, stalled_then_measured);
    bystander.still_holds().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cannot_take_every_key_permit_or_queue_place() {
    let server = server(|c| {
        c.max_locks = 100;
        c.max_keys_per_connection = 10;
        c.max_waiters_per_connection = 3;
        c.max_semaphore_limit = 8;
    })
    .await;
    let addr = server.local_addr();
    let mut greedy = Raw::connect(addr).await;
    let mut tokens = Vec::new();
    for i in 0..10 {
        tokens.push(greedy.grant("l", &format!("g{i}"), "0").await);
    }
    assert_eq!(greedy.req("l", "g10", "0").await, "error_max_locks", "the eleventh key");
    assert_eq!(greedy.req("sl", "s", "0 2").await, "error_max_locks", "semaphores count too");
    assert_eq!(greedy.req("l", "g0", "0").await, "timeout", "a key it holds is not a new key");
    assert_eq!(greedy.req("r", "g9", &tokens.pop().unwrap()).await, "ok");
    greedy.grant("sl", "s", "0 2").await; // room again after a release
    // Others are not affected by the greedy connection's cap.
    let mut fair = Raw::connect(addr).await;
    fair.grant("l", "f", "0").await;
    // Permits: a limit above the cap is refused as malformed.
    assert_eq!(fair.req("sl", "big", "0 9").await, "error");
    assert_eq!(fair.req("se", "big", "4294967295").await, "error");
    fair.grant("sl", "big", "0 8").await;
    // Waiters: three pending two-phase requests per connection.
    let mut queuer = Raw::connect(addr).await;
    for i in 0..3 {
        assert_eq!(queuer.req("e", &format!("g{i}"), "").await, "queued");
    }
    assert_eq!(queuer.req("e", "g3", "").await, "error_max_waiters");
    assert_eq!(queuer.req("w", "g0", "0").await, "timeout");
    assert_eq!(queuer.req("e", "g3", "").await, "queued", "a place again after a wait");
}

/// Guards against wrong secrets never being throttled or logged, and unauthenticated
/// connections taking every slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secrets_are_delayed_and_reported_and_pre_auth_connections_are_capped() {
    let (sink, events) = collect_events();
    let server = server(|c| {
        c.auth_token = Some("s3cret".into());
        c.auth_failure_delay = Duration::from_millis(40);
        c.max_unauthenticated_connections = 4;
        // Long enough that a loaded machine still sees all four silent connections at once.
        c.auth_timeout = Duration::from_secs(2);
        c.events = sink;
    })
    .await;
    let addr = server.local_addr();
    // Each wrong guess from this address waits longer than the one before (40, 80, 160 ms).
    let mut waited = Vec::new();
    for _ in 0..3 {
        let mut c = Raw::connect(addr).await;
        let started = Instant::now();
        assert_eq!(c.req("auth", "_", "guess").await, "error_auth");
        waited.push(started.elapsed());
        assert!(c.closed().await);
    }
    for (i, floor) in [40, 80, 160].into_iter().enumerate() {
        assert!(waited[i] >= Duration::from_millis(floor), "guess {i} answered after {:?}", waited[i]);
    }
    let failures: Vec<u32> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            ServerEvent::AuthFailed { failures, .. } => Some(*failures),
            _ => None,
        })
        .collect();
    assert_eq!(failures, [1, 2, 3], "each failure is reported with its count");
    // Four silent unauthenticated connections take every pre-auth pass; a fifth is closed.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(Raw::connect(addr).await);
    }
    eventually("the silent connections are accepted", || server.unauthenticated_connections() == 4).await;
    let mut fifth = Raw::connect(addr).await;
    assert!(fifth.closed().await, "over the pre-auth cap: closed at once");
    // An authenticated client is not counted, and is served meanwhile... once a pass frees:
    // the silent ones are cut off at the auth timeout, not the (longer) read timeout.
    for mut c in silent {
        assert_eq!(c.line().await.as_deref(), Some("error"), "cut off at the auth timeout");
        assert!(c.closed().await);
    }
    eventually("the passes are given back", || server.unauthenticated_connections() == 0).await;
    let mut good = Raw::connect(addr).await;
    assert_eq!(good.req("auth", "_", "s3cret").await, "ok");
    assert_eq!(server.unauthenticated_connections(), 0, "an authenticated connection gives its pass back");
    good.grant("l", "k", "0").await;
    assert!(events.lock().unwrap().iter().any(|e| matches!(e, ServerEvent::UnauthenticatedLimit { limit: 4, .. })));
}
