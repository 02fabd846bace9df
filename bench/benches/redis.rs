//! Redis: our lockers against the floor (`PING` on the same server) and two peers on the same
//! server in the same run — the Go original's strategy ported faithfully (key events on
//! database 0 only, so on any other database it polls with an exponential backoff of
//! 5 ms → 500 ms), and the `rslock` crate (Redlock with a random retry delay below 200 ms).
//! A hand-off goes to queued waiters: every contender here counts a waiter once its first
//! look found the key held (see `Contender::until_queued`).
//!
//! The targets: uncontended acquire + release ≤ 2.5× PING; hand-off p50 ≤ 4× PING and
//! flat in the number of waiters; ≥ 10× faster hand-off than both peers at 8 waiters.
//!
//! The server comes from lockcheck-support (a `lockcheck/redis` container, or a
//! `redis-server` process without Docker). Every contending client has its own connection,
//! as separate processes would. `cargo bench -p lockcheck-bench --bench redis`, or with
//! `LOCKCHECK_BENCH=quick`.

use std::sync::Arc;

use lockcheck_bench::{BENCH_TTL, BenchError, BenchRun, Contender, Kind, LockerContender, Role, RoundTrip, Suite};
use lockcheck_conformance::peers::redis::PortedRedisLocker;
use lockcheck_impls::QueuedCount;
use lockcheck_impls::redis::RedisLocker;
use lockcheck_support::Service;
use lockcheck_support::redis::{RedisOptions, spec, url};

// The targets, as the report judges them too.
const TARGETS: lockcheck_report::targets::SuiteTargets = lockcheck_report::targets::REDIS;
const UNCONTENDED_TARGET: f64 = TARGETS.uncontended.unwrap();
const HAND_OFF_TARGET: f64 = TARGETS.hand_off.unwrap();
const FLATNESS_TARGET: f64 = TARGETS.flatness;
const PEER_SPEEDUP_TARGET: f64 = TARGETS.peer_speedup.unwrap();
/// Queue lengths: our locker at all three; the polling peers at 1 and 8 (at 64 a polling
/// peer drains its queue at up to 500 ms per waiter per sample: minutes, and the 8-waiter
/// figure already decides the target).
const WAITERS: [usize; 3] = [1, 8, 64];
const PEER_WAITERS: [usize; 2] = [1, 8];

/// Redis `PING` on its own connection: the floor.
struct Ping(RedisLocker);

impl RoundTrip for Ping {
    fn name(&self) -> String {
        "redis PING".to_owned()
    }

    async fn round_trip(&self) -> Result<(), BenchError> {
        Ok(self.0.ping().await?)
    }
}

/// `rslock` as a contender: one `LockManager` (connection) per client. `try_lock` is one
/// attempt; `lock` is `acquire_no_guard`'s loop, driven from here one attempt at a time so
/// that the bench can count a waiter once its first attempt was refused (see
/// [`Contender::until_queued`]).
struct Rslock {
    managers: Vec<rslock::LockManager>,
    key: String,
    waiting: QueuedCount,
}

/// rslock 0.10's `lock`: this many attempts, each refused one but the last followed by a
/// random sleep below [`RSLOCK_RETRY_DELAY`]; `acquire_no_guard` calls `lock` until it succeeds
/// (its defaults, `DEFAULT_RETRY_COUNT` and `DEFAULT_RETRY_DELAY` in its `lock.rs`).
const RSLOCK_RETRY_COUNT: u32 = 3;
const RSLOCK_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

impl Rslock {
    fn new(url: &str, clients: usize) -> Self {
        let managers = (0..clients)
            .map(|_| {
                let mut manager = rslock::LockManager::new(vec![url.to_owned()]);
                // One attempt per `lock` call, no sleep: the retries are `Contender::lock`'s.
                manager.set_retry(1, std::time::Duration::from_millis(1));
                manager
            })
            .collect();
        Rslock { managers, key: format!("lockcheck-bench/rslock/{}", std::process::id()), waiting: QueuedCount::new() }
    }

    fn manager(&self, client: usize) -> &rslock::LockManager {
        &self.managers[client % self.managers.len()]
    }
}

fn rslock_error(error: rslock::LockError) -> BenchError {
    BenchError::TaskFailed(format!("rslock: {error}"))
}

impl Contender for Rslock {
    type Held = (usize, rslock::Lock);

    fn name(&self) -> String {
        "rslock 0.10".to_owned()
    }

    fn keys(&self) -> usize {
        1
    }

    async fn try_lock(&self, client: usize, _key: usize) -> Result<Option<Self::Held>, BenchError> {
        match self.manager(client).lock(self.key.as_str(), BENCH_TTL).await {
            Ok(lock) => Ok(Some((client, lock))),
            Err(rslock::LockError::Unavailable) => Ok(None),
            Err(error) => Err(rslock_error(error)),
        }
    }

    async fn lock(&self, client: usize, _key: usize) -> Result<Self::Held, BenchError> {
        let mut counted = None;
        loop {
            for attempt in 1..=RSLOCK_RETRY_COUNT {
                match self.manager(client).lock(self.key.as_str(), BENCH_TTL).await {
                    Ok(lock) => return Ok((client, lock)),
                    // `acquire_no_guard` gives up on this error only.
                    Err(error @ rslock::LockError::TtlTooLarge) => return Err(rslock_error(error)),
                    Err(_) => {}
                }
                counted.get_or_insert_with(|| self.waiting.count());
                if attempt < RSLOCK_RETRY_COUNT {
                    let delay = rand::random_range(0..RSLOCK_RETRY_DELAY.as_millis() as u64);
                    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                }
            }
        }
    }

    async fn unlock(&self, (client, lock): Self::Held) -> Result<(), BenchError> {
        self.manager(client).unlock(&lock).await;
        Ok(())
    }

    async fn until_queued(&self, _key: usize, waiters: usize) {
        // The count lives in `self`, so the wait ends only by reaching it.
        self.waiting.queued().until_at_least(waiters as u64).await;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut suite = Suite::new("redis")?;
    // Every operation timed on its own, like the PING floor: a group's mean would count the
    // noisy machine's scheduler hiccups that the floor's median leaves out.
    suite.set_uncontended_group(1);
    let mut c = suite.criterion();
    let server: Service = suite.block_on(Service::start(&spec(&RedisOptions::default())))?;
    println!("redis server: {} at {}", server.runtime(), server.address());
    suite.add_version("redis-server", "7 (Debian's redis-server 7.0.x unless LOCKCHECK_REDIS_IMAGE says otherwise)");
    let clients = WAITERS.iter().max().copied().unwrap_or(1) + 1;
    // Ours and the floor on database 1; the Go port on database 2, where its hard-coded
    // database-0 subscription hears nothing, as on a default server: it polls.
    let (ping, ours, go) = suite.block_on(async {
        let ping = Ping(RedisLocker::connect(&url(&server, 1)).await?);
        let mut ours = Vec::new();
        let mut go = Vec::new();
        for _ in 0..clients {
            ours.push(RedisLocker::connect(&url(&server, 1)).await?);
        }
        for _ in 0..=PEER_WAITERS.iter().max().copied().unwrap_or(1) {
            go.push(PortedRedisLocker::go_original(&url(&server, 2)).await?);
        }
        Ok::<_, lockcheck_impls::LockError>((ping, ours, go))
    })?;
    let ping = Arc::new(ping);
    // The harness releases once the lockers count the waiters queued: ours once a try made
    // with its interest registered and its queue entry written was refused, the Go port and
    // rslock once their first try was refused (they then sleep out their backoff or retry
    // delay).
    let ours = LockerContender::per_client_counting(ours, 1);
    let ours = Arc::new(ours.named("lockcheck RedisLocker"));
    let go = LockerContender::per_client_counting(go, 1);
    let go = Arc::new(go.named("Go original (5→500 ms backoff)"));
    let rslock = Arc::new(Rslock::new(&url(&server, 3), PEER_WAITERS.iter().max().copied().unwrap_or(1) + 1));

    suite.round_trip(&mut c, &ping);
    suite.uncontended(&mut c, Role::Subject, &ours);
    suite.uncontended(&mut c, Role::Peer, &go);
    suite.uncontended(&mut c, Role::Peer, &rslock);
    suite.hand_off(&mut c, Role::Subject, &ours, &WAITERS);
    suite.hand_off(&mut c, Role::Peer, &go, &PEER_WAITERS);
    suite.hand_off(&mut c, Role::Peer, &rslock, &PEER_WAITERS);

    let verdicts = targets(suite.run());
    suite.finish()?;
    println!("{verdicts}");
    c.final_summary();
    drop(server);
    Ok(())
}

/// The targets against this run's figures.
fn targets(run: &BenchRun) -> String {
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let p50 = |name: &str, kind: Kind| run.p50(name, kind);
    let Some(floor) = p50("redis PING", Kind::RoundTrip) else { return "no PING floor measured".to_owned() };
    let mut lines = vec![format!("targets (p50, this run; PING = {:.1} µs):", floor / 1e3)];
    if let Some(ours) = p50("lockcheck", Kind::Uncontended) {
        let ratio = ours / floor;
        lines.push(format!(
            "  uncontended acquire+release: {:.1} µs = {ratio:.2}x PING (target <= {UNCONTENDED_TARGET}x) {}",
            ours / 1e3,
            verdict(ratio <= UNCONTENDED_TARGET)
        ));
    }
    for waiters in WAITERS {
        let kind = Kind::HandOff { waiters };
        if let Some(ours) = p50("lockcheck", kind) {
            let ratio = ours / floor;
            lines.push(format!(
                "  hand-off, {waiters:>2} waiters: {:.1} µs = {ratio:.2}x PING (target <= {HAND_OFF_TARGET}x) {}",
                ours / 1e3,
                verdict(ratio <= HAND_OFF_TARGET)
            ));
        }
    }
    if let (Some(one), Some(many)) =
        (p50("lockcheck", Kind::HandOff { waiters: 1 }), p50("lockcheck", Kind::HandOff { waiters: 64 }))
    {
        let growth = many / one;
        lines.push(format!(
            "  flat in waiters: p50 at 64 / p50 at 1 = {growth:.2} (target <= {FLATNESS_TARGET}) {}",
            verdict(growth <= FLATNESS_TARGET)
        ));
    }
    if let Some(ours) = p50("lockcheck", Kind::HandOff { waiters: 8 }) {
        for peer in ["Go original", "rslock"] {
            if let Some(theirs) = p50(peer, Kind::HandOff { waiters: 8 }) {
                let speedup = theirs / ours;
                lines.push(format!(
                    "  hand-off at 8 waiters vs {peer}: {:.1} ms vs {:.3} ms = {speedup:.0}x faster (target >= {PEER_SPEEDUP_TARGET}x) {}",
                    theirs / 1e6,
                    ours / 1e6,
                    verdict(speedup >= PEER_SPEEDUP_TARGET)
                ));
            }
        }
    }
    lines.join("\n")
}
