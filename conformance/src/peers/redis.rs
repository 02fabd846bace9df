//! The original Go Redis locker, ported: the peer the Redis benchmarks race, and, one switch
//! at a time, the Redis mutants (`crate::mutants::redis`) — the failure classes of the Go
//! Redis lockers, each on its own so the suite must catch exactly that flaw.
//!
//! [`PortedRedisLocker`] is the Go locker's algorithm — `SET key token NX PX ttl`, a waiter
//! subscribed to key events, a token-checked Lua release — with fencing added (so fencing
//! never masks the flaw under test) and three switches, one per flaw:
//!
//! - **unconditional `DEL` release**: anyone holding the key's name frees anyone's lock
//!   (FluxaORM-style); caught as an ownership violation;
//! - **key events on database 0** while the locker uses database 1 (the Go locker's hard-coded
//!   `__keyevent@0__`): the releases it waits for are published on `__keyevent@1__`, so its
//!   waiters sleep until the holder's lease would have ended; caught as a lost wake-up;
//! - **client-side expiry**: `SET NX` without a server TTL and a timer in the holder's process
//!   that deletes the key when the lease ends; when the holder crashes, so does the timer, and
//!   the key is locked forever; caught as a crash-safety violation.
//!
//! [`PortedRedisLocker::go_original`] is the Go locker itself, faithfully: events on database
//! 0 with polling at an exponential backoff of 5 ms → 500 ms — the peer the benchmarks compare
//! against (on a database other than 0, or on a server with notifications off — Redis's
//! default — it only polls).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lockcheck_impls::{
    Capabilities, FencingToken, Lease, LeaseRequest, LockError, Locker, OwnerToken, Queued, QueuedCount, validate_ttl,
    validate_wait,
};
use redis::aio::MultiplexedConnection;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

const ACQUIRE: &str = r"
local granted
if ARGV[2] == '0' then
  granted = redis.call('SET', KEYS[1], ARGV[1], 'NX')
else
  granted = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
end
if granted then return {1, redis.call('INCR', KEYS[2])} end
return {0, redis.call('PTTL', KEYS[1])}
";
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
const REFRESH: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";
const OWNED: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PTTL', KEYS[1]) end return -2";

/// What a [`PortedRedisLocker`] does (one flaw at a time, or the Go original).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    /// Release compares tokens (the Go locker's Lua script) or deletes the key outright.
    pub release_checks_owner: bool,
    /// The database whose key events the waiters subscribe to (the Go locker: 0, always).
    pub events_db: i64,
    /// Whether the lease is a server TTL (`PX`) or a timer in the holder's process.
    pub server_side_ttl: bool,
    /// Retry with this exponential backoff (first, longest) while waiting; `None`: wait for
    /// an event or the end of the holder's lease.
    pub poll_backoff: Option<(Duration, Duration)>,
}

impl Port {
    /// The Go locker: token-checked release, server TTL, events on database 0, polling at
    /// 5 ms → 500 ms.
    pub const GO_ORIGINAL: Port = Port {
        release_checks_owner: true,
        events_db: 0,
        server_side_ttl: true,
        poll_backoff: Some((Duration::from_millis(5), Duration::from_millis(500))),
    };
}

/// A port of the Go Redis locker with the switches of [`Port`] (see the module docs).
pub struct PortedRedisLocker {
    describe: String,
    connection: MultiplexedConnection,
    port: Port,
    wake: Arc<Notify>,
    subscriber: JoinHandle<()>,
    /// The client-side expiry timers of [`Port::server_side_ttl`] = false; they die with the
    /// locker, as they would with the holder's process.
    timers: Mutex<HashMap<OwnerToken, JoinHandle<()>>>,
    /// How many acquires wait (their first try refused): see [`Locker::queued`].
    waiting: QueuedCount,
}

impl Drop for PortedRedisLocker {
    fn drop(&mut self) {
        self.subscriber.abort();
        for (_, timer) in self.timers.lock().expect("timers poisoned").drain() {
            timer.abort();
        }
    }
}

fn unavailable(error: redis::RedisError) -> LockError {
    LockError::Unavailable { message: error.to_string(), source: Some(Box::new(error)) }
}

impl PortedRedisLocker {
    /// The Go locker, faithfully ([`Port::GO_ORIGINAL`]).
    pub async fn go_original(url: &str) -> Result<Self, LockError> {
        Self::connect(url, Port::GO_ORIGINAL).await
    }

    /// Connects to `url` and subscribes to the key events of `port.events_db` (a Go-style
    /// waiter subscribes once and shares the subscription).
    pub async fn connect(url: &str, port: Port) -> Result<Self, LockError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let describe = format!("{url} (ported Go locker)");
        let mut connection = client.get_multiplexed_async_connection().await.map_err(unavailable)?;
        // The Go tests ran on miniredis, which publishes nothing; on real Redis the port gets
        // events where the server has them on — turn them on, as an operator following the
        // Go docs would. Added to the flags already set, not replacing them: other lockers
        // on the same server (ours, in the benchmark) need theirs.
        let current: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut flags = current.get(1).cloned().unwrap_or_default();
        for flag in ['E', 'g', 'x'] {
            // `A` stands for every event type, `g` and `x` included.
            let covered = flags.contains(flag) || (flag != 'E' && flags.contains('A'));
            if !covered {
                flags.push(flag);
            }
        }
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg(flags)
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut pubsub = client.get_async_pubsub().await.map_err(unavailable)?;
        for event in ["del", "expired"] {
            pubsub.subscribe(format!("__keyevent@{}__:{event}", port.events_db)).await.map_err(unavailable)?;
        }
        let wake = Arc::new(Notify::new());
        let subscriber = tokio::spawn({
            let wake = wake.clone();
            async move {
                let mut messages = pubsub.into_on_message();
                while messages.next().await.is_some() {
                    wake.notify_waiters();
                }
            }
        });
        Ok(PortedRedisLocker {
            describe,
            connection,
            port,
            wake,
            subscriber,
            timers: Mutex::default(),
            waiting: QueuedCount::new(),
        })
    }

    fn fence_key(key: &str) -> String {
        format!("{key}:fence")
    }

    async fn attempt(&self, request: &LeaseRequest) -> Result<Result<Lease, Option<Duration>>, LockError> {
        let token = OwnerToken::random();
        let sent_at = Instant::now();
        let ttl_ms = if self.port.server_side_ttl { request.ttl().as_millis().max(1) as u64 } else { 0 };
        let (granted, value): (i64, i64) = redis::Script::new(ACQUIRE)
            .key(request.key())
            .key(Self::fence_key(request.key()))
            .arg(token.to_string())
            .arg(ttl_ms)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        if granted == 0 {
            return Ok(Err((value >= 0).then(|| Duration::from_millis(value as u64))));
        }
        if !self.port.server_side_ttl {
            self.arm_timer(request.key(), token, sent_at + request.ttl());
        }
        Ok(Ok(Lease::new(request.key(), token, FencingToken(value as u64), request.ttl(), sent_at, 1)))
    }

    /// The client-side expiry: at `at`, delete the key if this token still holds it.
    fn arm_timer(&self, key: &str, token: OwnerToken, at: Instant) {
        let (key, mut connection) = (key.to_owned(), self.connection.clone());
        let timer = tokio::spawn(async move {
            sleep_until(at).await;
            let _: Result<i64, _> =
                redis::Script::new(RELEASE).key(&key).arg(token.to_string()).invoke_async(&mut connection).await;
        });
        if let Some(old) = self.timers.lock().expect("timers poisoned").insert(token, timer) {
            old.abort();
        }
    }

    fn disarm_timer(&self, token: OwnerToken) {
        if let Some(timer) = self.timers.lock().expect("timers poisoned").remove(&token) {
            timer.abort();
        }
    }
}

#[async_trait]
impl Locker for PortedRedisLocker {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn capabilities(&self) -> Capabilities {
        // What a user of the Go locker would believe it promises.
        let mut claims = Capabilities::all_in_process();
        claims.fifo = false;
        claims.semaphores = false;
        claims
    }

    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        request.validate()?;
        Ok(self.attempt(request).await?.ok())
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        request.validate()?;
        validate_wait(wait)?;
        let started = Instant::now();
        let deadline = started + wait;
        let mut backoff = self.port.poll_backoff.map(|(first, _)| first);
        let mut counted = None;
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let holder_left = match self.attempt(request).await? {
                Ok(lease) => return Ok(lease),
                Err(left) => left,
            };
            counted.get_or_insert_with(|| self.waiting.count());
            let now = Instant::now();
            if now >= deadline {
                return Err(LockError::TimedOut { waited: now - started });
            }
            let mut retry_at = holder_left.map_or(deadline, |left| now + left + Duration::from_millis(1));
            if let (Some(delay), Some((_, longest))) = (backoff, self.port.poll_backoff) {
                retry_at = now + delay;
                backoff = Some((delay * 2).min(longest));
            }
            tokio::select! {
                () = &mut notified => backoff = self.port.poll_backoff.map(|(first, _)| first),
                () = sleep_until(retry_at.min(deadline)) => {}
            }
        }
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        self.disarm_timer(lease.owner());
        let deleted: i64 = if self.port.release_checks_owner {
            redis::Script::new(RELEASE)
                .key(lease.key())
                .arg(lease.owner().to_string())
                .invoke_async(&mut self.connection.clone())
                .await
        } else {
            redis::cmd("DEL").arg(lease.key()).query_async(&mut self.connection.clone()).await
        }
        .map_err(unavailable)?;
        Ok(deleted == 1)
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        validate_ttl(ttl)?;
        let sent_at = Instant::now();
        let mut connection = self.connection.clone();
        let held = if self.port.server_side_ttl {
            let extended: i64 = redis::Script::new(REFRESH)
                .key(lease.key())
                .arg(lease.owner().to_string())
                .arg(ttl.as_millis().max(1) as u64)
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            extended == 1
        } else {
            let owned: i64 = redis::Script::new(OWNED)
                .key(lease.key())
                .arg(lease.owner().to_string())
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            if owned != -2 {
                self.arm_timer(lease.key(), lease.owner(), sent_at + ttl);
            }
            owned != -2
        };
        Ok(held.then(|| lease.refreshed(ttl, sent_at)))
    }

    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        let pttl: i64 = redis::Script::new(OWNED)
            .key(lease.key())
            .arg(lease.owner().to_string())
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(match pttl {
            -2 => None,
            // No server TTL: the holder's own timer is the only expiry.
            -1 => Some(lease.locally_remaining()),
            left => Some(Duration::from_millis(left as u64)),
        })
    }

    /// An acquire counts once its first try was refused (it then sleeps out its backoff, or
    /// until a key event): queued the port's way.
    fn queued(&self) -> Option<Queued> {
        Some(self.waiting.queued())
    }
}
