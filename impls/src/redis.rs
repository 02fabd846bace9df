//! Redis lockers: one server ([`RedisLocker`]), every server of a set in order
//! ([`RedisAllLocker`]), or a majority of them ([`RedlockLocker`]).
//!
//! # The single-server algorithm
//!
//! - **Grant**: one Lua script runs `SET lock token NX PX ttl` and, only if that succeeded,
//!   `INCR` on the key's fence counter — the grant and its fencing token are atomic. The lock
//!   key is `lockcheck:{key}` and the counter `lockcheck:{key}:fence`: one hash tag, so both
//!   live in one Cluster slot. The counter is never deleted, so fencing tokens keep increasing
//!   across releases and expiries (not across a restart without persistence).
//! - **Release, refresh, remaining TTL**: Lua scripts that act only if the stored token is
//!   the caller's, so a holder whose lease expired can never touch its successor's lock. The
//!   scripts are loaded at connect (a server that refuses scripts fails there, clearly) and run
//!   by SHA; after a `NOSCRIPT` (a restarted or flushed server) they are loaded again.
//! - **Waiting**: an acquire tries once; only if refused does it wait, and from then on
//!   every try that is refused also enters the waiter in the key's **queue**
//!   (`lockcheck:{key}:waiters`, a sorted set by arrival whose entries name the waiter, its
//!   locker's wake channel and its deadline) in the same script — so no release can fall
//!   between the refusal and the entry. Each locker listens on its own wake channel
//!   (`<prefix>wake:<locker id>`, one pub/sub connection per locker and server, see
//!   `wakeups.rs`), confirmed by the server before the first queued try, so no wake-up is
//!   lost. The release script deletes the lock and **names one waiter**: it pops the
//!   longest-waiting entry whose deadline (by the server's clock, `TIME`) has not passed and
//!   publishes its id on its locker's wake channel. Only that waiter retries: a hand-off costs
//!   one `SET NX` and two messages whatever the number of waiters, where waking them all
//!   made every release a thundering herd (every waiter's `SET NX`, and before that every
//!   waiting locker's copy of the key's `del` event). A named waiter that loses the race to a
//!   newcomer re-enters the queue with its old arrival score; a grant takes the entry out; a
//!   waiter that times out, fails or is cancelled withdraws its entry in the background, and
//!   if it had already been named while the lock is free, the withdrawal names the next
//!   waiter instead (so does a locker that receives a naming for a waiter that is gone).
//!   Liveness never depends on a named waiter being alive: the release also tells the waiter
//!   next in line to keep watch, and that one tries [`RedisConfig::hand_off_fallback`]
//!   (25 ms) later unless it is named first; and every waiter retries when the holder's
//!   remaining time (returned by its last refused try) runs out, which is how waiters learn
//!   of an expiry (no script runs then). Dead entries are skipped and dropped by the
//!   releases that meet them, and the queue key expires a second after its last entry's
//!   deadline. The server's `notify-keyspace-events` is read at connect and completed with
//!   `Kgx` if [`RedisConfig::enable_keyspace_events`] allows; if it cannot be, a warning is
//!   logged and waiters neither queue nor listen but retry with a bounded exponential backoff
//!   ([`Wakeups::Polling`]). The multi-server lockers do not queue: their waiters subscribe
//!   to the key's own keyspace channel (`__keyspace@<db>__:<lock key>`, the locker's
//!   database), and its `del` and `expired` events wake every waiter of the key.
//! - **Cancel safety**: a grant request in flight when its future is dropped is followed by
//!   a token-checked release on the same connection, so a grant that raced the cancellation
//!   is released rather than leaked until its TTL.
//!
//! # Deployments
//!
//! Standalone servers, one (`redis://`) or several (the multi-server lockers). **Cluster**:
//! the lock key, its fence key and its queue key always carry the same hash tag and so share
//! a slot (unit tested, see `instance::lock_key`), but the lockers do not open Cluster
//! connections: keyspace notifications are published only by the node that owns a key, so a
//! waiter would have to subscribe on the right node and follow slot migrations — not
//! offered. Point a locker at one node only if you know it owns the keys. **Sentinel**: not
//! supported. The connection follows no failover, and a failover loses locks anyway
//! (replication is asynchronous: a promoted replica may not have the latest grant or fence),
//! which is the restart-without-persistence case below.
//!
//! # What it promises
//!
//! Server-side expiry, fencing and push wake-ups, yes. FIFO, no: releases name waiters in
//! arrival order, but a newcomer's first try (which does not queue) can take a free lock
//! before the named waiter does, and the fallback retries are a free-for-all. Leases and
//! fencing tokens survive a server restart only with append-only persistence, which the
//! locker cannot see, so it does not claim it. Semaphores are not offered. The multi-server
//! lockers document their own guarantees.
//!
//! ```no_run
//! use std::time::Duration;
//! use lockcheck_impls::{LeaseRequest, Locker};
//! use lockcheck_impls::redis::RedisLocker;
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let locker = RedisLocker::connect("redis://127.0.0.1:6379/1").await?;
//! let request = LeaseRequest::lock("invoice-42", Duration::from_secs(10));
//! let lease = locker.acquire(&request, Duration::from_secs(1)).await?;
//! assert!(locker.release(&lease).await?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod instance;
mod multi;
mod target;
mod wakeups;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::{Instant, sleep_until};

use crate::Capabilities;
use crate::LockError;
use crate::Locker;
use crate::Queued;
use crate::cleanup::{self, OnDrop};
use crate::{FencingToken, Lease, OwnerToken};
use crate::{LeaseRequest, validate_ttl, validate_wait};
use instance::{Attempt, Enqueue, Instance, QueueEntry};
pub use instance::{check_url, cluster_slot};
pub use multi::{RedisAllLocker, RedlockLocker};
pub use target::{RedisMode, RedisUrl};
use wakeups::{Subscribers, Waiters};

/// Connection and waiting settings shared by the Redis lockers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedisConfig {
    /// How long a request may wait for its answer before it is reported as
    /// [`LockError::Indeterminate`] (mutations) or unavailable (reads). Default 2 s.
    pub response_timeout: Duration,
    /// How long opening a connection may take. Default 2 s.
    pub connect_timeout: Duration,
    /// Prefix of every Redis key the lockers write. Default `lockcheck:`.
    pub key_prefix: String,
    /// Whether the lockers may `CONFIG SET notify-keyspace-events` to add the flags they
    /// need. Default true; with false, a server without them gets polling waiters.
    pub enable_keyspace_events: bool,
    /// First and longest retry delay of the polling fallback (no key events). Default
    /// 2 ms and 100 ms: bounded, so a hand-off is never more than ~100 ms late.
    pub fallback_backoff: (Duration, Duration),
    /// How long the waiter next in line gives the waiter a release named to take the lock
    /// before it tries itself (in case the named one died without withdrawing). Default
    /// 25 ms: far above a hand-off's round trip or two, so it almost never fires while the
    /// named waiter lives, and it bounds how long a dead one can strand the others.
    pub hand_off_fallback: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            response_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            key_prefix: "lockcheck:".to_owned(),
            enable_keyspace_events: true,
            fallback_backoff: (Duration::from_millis(2), Duration::from_millis(100)),
            hand_off_fallback: Duration::from_millis(25),
        }
    }
}

/// How a locker's waiters learn that a lock was freed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wakeups {
    /// Key-event notifications push every release and expiry.
    KeyspaceEvents,
    /// Notifications are off and could not be enabled: waiters retry with a bounded backoff.
    Polling {
        /// Why (which server, what it refused).
        reason: String,
    },
}

/// Detects (and, if allowed, enables) keyspace events on every instance and opens the
/// subscription connections; waiters poll if either fails.
async fn start_wakeups(
    instances: &[Arc<Instance>],
    config: &RedisConfig,
    key_channels: bool,
) -> (Arc<Waiters>, Option<Subscribers>, Wakeups) {
    let mut problems = Vec::new();
    for instance in instances {
        if let Err(reason) = instance.ensure_keyspace_events(config.enable_keyspace_events).await {
            problems.push(reason);
        }
    }
    let started = if problems.is_empty() {
        match Waiters::start(instances, key_channels, config.connect_timeout, config.response_timeout).await {
            Ok(started) => Some(started),
            Err(reason) => {
                problems.push(reason);
                None
            }
        }
    } else {
        None
    };
    match started {
        Some((waiters, subscribers)) => (waiters, Some(subscribers), Wakeups::KeyspaceEvents),
        None => {
            let reason = problems.join("; ");
            tracing::warn!(
                "Redis keyspace notifications unavailable ({reason}); waiters fall back to polling with a bounded backoff"
            );
            (Waiters::polling(), None, Wakeups::Polling { reason })
        }
    }
}

/// Releases `token`'s grant on every instance if dropped while armed: the cancel-safety net
/// of a grant request whose answer never reached us. The release follows the grant request
/// on the same connection, so Redis runs it after the grant if the grant ran at all; it is
/// token-checked, so it frees only our grant. The instances are released at once, not in
/// turn: one that is down must not keep the grant alive on the others until its time-out.
fn rollback(
    instances: &[Arc<Instance>],
    key: &str,
    token: OwnerToken,
) -> OnDrop<impl std::future::Future<Output = ()> + Send + 'static> {
    let (instances, key) = (instances.to_vec(), key.to_owned());
    OnDrop::new(async move {
        futures::future::join_all(instances.iter().map(|instance| instance.release(&key, token))).await;
    })
}

/// The answer of one grant attempt of a locker (single or multi-instance).
enum Outcome {
    Granted(Lease),
    /// Refused. `retry_in`: when the blocking lease ends, if known. `split`: contenders
    /// split the instances between them (Redlock) — retry after a random delay instead of
    /// waiting for an event. `queued`: the waiter's entry in the key's queue, if the attempt
    /// entered it.
    Refused {
        retry_in: Option<Duration>,
        split: bool,
        queued: Option<QueueEntry>,
    },
}

/// A waiter's place in a key's queue on one server: withdrawn (in the background, like
/// [`rollback`]) when the acquire ends without the grant that takes it out of the queue —
/// timed out, failed or cancelled.
struct Place {
    instance: Arc<Instance>,
    key: String,
    entry: Option<QueueEntry>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let Some(entry) = self.entry.take() else { return };
        let (instance, key) = (self.instance.clone(), std::mem::take(&mut self.key));
        cleanup::spawn(async move {
            // Best effort: an entry left behind is skipped after its deadline, and a release
            // that names it is passed on by our subscription task.
            let _ = instance.withdraw(&key, &entry).await;
        });
    }
}

/// The wait loop every Redis locker shares: try once; if refused, register for wake-ups
/// (subscribed before the next try), then try, sleep until a wake-up, the blocking lease's
/// end, a fallback retry or the deadline; repeat.
///
/// The first try goes out before any subscription: an uncontended acquire is one round trip,
/// and only a waiter pays for its key's subscription.
///
/// With `queue` (the single-server locker, while its wake channel is live) every later try
/// also enters the key's waiter queue on that server, and the waiter retries at once only
/// when a release names it or its subscriptions were lost; a release that named the waiter
/// just ahead of it arms a retry after [`RedisConfig::hand_off_fallback`], and the holder's
/// end one more. Without it (the multi-server lockers, or polling), every release wakes
/// every waiter.
async fn wait_for_grant<F, Fut>(
    waiters: &Arc<Waiters>,
    redis_key: &str,
    queue: Option<(&Arc<Instance>, &str)>,
    config: &RedisConfig,
    wait: Duration,
    mut attempt: F,
) -> Result<Lease, LockError>
where
    F: FnMut(Option<Enqueue>) -> Fut,
    Fut: std::future::Future<Output = Result<Outcome, LockError>>,
{
    let started = Instant::now();
    let deadline = started + wait;
    if let Outcome::Granted(lease) = within_wait(started, deadline, attempt(None)).await? {
        return Ok(lease);
    }
    let now = Instant::now();
    if now >= deadline {
        return Err(LockError::TimedOut { waited: now - started });
    }
    let interest = waiters.register(redis_key, deadline - now).await;
    let mut place = queue.map(|(instance, key)| Place { instance: instance.clone(), key: key.to_owned(), entry: None });
    let (min_backoff, max_backoff) = config.fallback_backoff;
    let mut backoff = min_backoff;
    // Counted once a try made after registering (and, queueing, entering the queue) is refused.
    let mut counted = None;
    loop {
        // The tickets are taken before the try: a release between the try and the sleep
        // still wakes us. (A naming is kept as a permit by `notify_one`.)
        let freed = interest.freed().notified();
        let released = interest.released().notified();
        tokio::pin!(freed, released);
        freed.as_mut().enable();
        released.as_mut().enable();
        let events_live = interest.live();
        let enqueue = place.as_ref().filter(|_| events_live).map(|place| Enqueue {
            entry: place.entry.clone(),
            wait: deadline.saturating_duration_since(Instant::now()),
            waiter: interest.waiter().to_owned(),
            channel: interest.wake_channel(0).to_owned(),
        });
        let queued = enqueue.is_some();
        let (retry_in, split) = match within_wait(started, deadline, attempt(enqueue)).await? {
            Outcome::Granted(lease) => {
                if let Some(place) = place.as_mut().filter(|_| queued) {
                    // The grant took the entry out of the queue.
                    place.entry = None;
                }
                return Ok(lease);
            }
            Outcome::Refused { retry_in, split, queued: entry } => {
                if let (Some(place), Some(entry)) = (place.as_mut(), entry) {
                    place.entry = Some(entry);
                }
                (retry_in, split)
            }
        };
        counted.get_or_insert_with(|| waiters.waiting().count());
        let now = Instant::now();
        if now >= deadline {
            return Err(LockError::TimedOut { waited: now - started });
        }
        let mut retry_at = match retry_in {
            // One millisecond past the holder's end, when a retry expires it lazily.
            Some(left) => now + left + Duration::from_millis(1),
            None => now + max_backoff,
        };
        if split {
            retry_at = retry_at.min(now + Duration::from_micros(rand::random_range(500..=10_000)));
        }
        if !events_live {
            retry_at = retry_at.min(now + backoff);
            backoff = (backoff * 2).min(max_backoff);
        }
        let mut fallback_at = deadline;
        loop {
            tokio::select! {
                () = &mut freed, if !split => {
                    backoff = min_backoff;
                    break;
                }
                () = interest.named().notified(), if queued => break,
                // The waiter just ahead of us was named: leave the lock to it, but retry
                // after the fallback in case it never takes it (a later naming of us, or of
                // the next one ahead, comes first if it does).
                () = interest.watch().notified(), if queued => {
                    fallback_at = Instant::now() + config.hand_off_fallback;
                }
                () = &mut released, if !split => {
                    backoff = min_backoff;
                    break;
                }
                () = sleep_until(retry_at.min(fallback_at).min(deadline)) => break,
            }
        }
    }
}

/// The least time an attempt is given, however little of the wait is left: one round trip's
/// allowance, so that an acquire with a wait of zero still asks once.
const LEAST_ATTEMPT: Duration = Duration::from_millis(100);

/// Runs one grant attempt of an acquire bounded by what is left of its wait (but at least
/// [`LEAST_ATTEMPT`]): a server that is down or frozen must not hold the caller past its
/// bound, as the client's own connect and response time-outs would. An attempt cut off may
/// still be granted on the server: dropping it rolls its grant back, and a queue entry it may
/// have made ends at the wait's deadline, which has come. To the caller it is a time-out given
/// up locally.
async fn within_wait<T>(
    started: Instant,
    deadline: Instant,
    attempt: impl std::future::Future<Output = Result<T, LockError>>,
) -> Result<T, LockError> {
    let bound = deadline.max(Instant::now() + LEAST_ATTEMPT);
    match tokio::time::timeout_at(bound, attempt).await {
        Ok(result) => result,
        Err(_) => Err(LockError::TimedOutLocally { waited: started.elapsed() }),
    }
}

/// A lock on one Redis server (standalone; the algorithm is in the module docs).
pub struct RedisLocker {
    instance: Arc<Instance>,
    config: RedisConfig,
    waiters: Arc<Waiters>,
    wakeups: Wakeups,
    _subscribers: Option<Subscribers>,
}

impl RedisLocker {
    /// Connects to `url` (`redis://[user:pass@]host:port[/db]`) with the default settings.
    pub async fn connect(url: &str) -> Result<Self, LockError> {
        Self::connect_with(url, RedisConfig::default()).await
    }

    /// Connects with `config`: opens the connection, loads the scripts, checks (and enables,
    /// if allowed) key events, and subscribes to them before returning.
    pub async fn connect_with(url: &str, config: RedisConfig) -> Result<Self, LockError> {
        let instance = Arc::new(Instance::connect(url, &config).await?);
        // Its waiters queue: woken through the wake channel, they need no keyspace channels.
        let (waiters, subscribers, wakeups) = start_wakeups(std::slice::from_ref(&instance), &config, false).await;
        Ok(RedisLocker { instance, config, waiters, wakeups, _subscribers: subscribers })
    }

    /// How waiters are woken.
    pub fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    /// The Redis key a lock on `key` is stored under.
    pub fn redis_key(&self, key: &str) -> String {
        self.instance.lock_key(key)
    }

    /// One `PING` round trip (the floor the benchmarks compare against).
    pub async fn ping(&self) -> Result<(), LockError> {
        self.instance.ping().await
    }

    async fn attempt(&self, request: &LeaseRequest, enqueue: Option<Enqueue>) -> Result<Outcome, LockError> {
        let token = OwnerToken::random();
        // The lease counts from before the request is sent: the holder's belief ends no
        // later than the server's expiry.
        let sent_at = Instant::now();
        let rollback = rollback(std::slice::from_ref(&self.instance), request.key(), token);
        let attempt = self.instance.try_grant(request.key(), token, request.ttl(), enqueue).await;
        if let Err(error) = &attempt {
            if error.definitely_not_applied() {
                rollback.disarm();
            }
            // An indeterminate grant is rolled back (the rollback drops armed).
        } else {
            rollback.disarm();
        }
        Ok(match attempt? {
            Attempt::Granted(fence) => {
                Outcome::Granted(Lease::new(request.key(), token, FencingToken(fence), request.ttl(), sent_at, 1))
            }
            Attempt::Held { retry_in, queued } => Outcome::Refused { retry_in, split: false, queued },
        })
    }
}

fn check_lock_request(request: &LeaseRequest) -> Result<(), LockError> {
    request.validate()?;
    if request.limit() != 1 {
        return Err(LockError::Unsupported { operation: "semaphores" });
    }
    Ok(())
}

/// What every Redis locker promises (see the module docs).
const fn redis_capabilities(fencing: bool, push_wakeups: bool) -> Capabilities {
    Capabilities::none()
        .with_fencing(fencing)
        .with_fencing_survives_restart(false)
        .with_fifo(false)
        .with_server_side_expiry(true)
        .with_survives_server_restart(false)
        .with_semaphores(false)
        .with_push_wakeups(push_wakeups)
        .with_session_bound(false)
        // Redis expires a `PX` key by its wall clock (`mstime()`): a forward step of the
        // server's clock ends a held lease early.
        .with_expiry_by_monotonic_clock(false)
}

#[async_trait]
impl Locker for RedisLocker {
    fn describe(&self) -> String {
        self.instance.display.clone()
    }

    fn capabilities(&self) -> Capabilities {
        redis_capabilities(true, self.wakeups == Wakeups::KeyspaceEvents)
    }

    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        check_lock_request(request)?;
        match self.attempt(request, None).await? {
            Outcome::Granted(lease) => Ok(Some(lease)),
            Outcome::Refused { .. } => Ok(None),
        }
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        check_lock_request(request)?;
        validate_wait(wait)?;
        let redis_key = self.instance.lock_key(request.key());
        let queue = Some((&self.instance, request.key()));
        wait_for_grant(&self.waiters, &redis_key, queue, &self.config, wait, |enqueue| self.attempt(request, enqueue))
            .await
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        self.instance.release(lease.key(), lease.owner()).await
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        validate_ttl(ttl)?;
        let sent_at = Instant::now();
        let extended = self.instance.refresh(lease.key(), lease.owner(), ttl).await?;
        Ok(extended.then(|| lease.refreshed(ttl, sent_at)))
    }

    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        self.instance.remaining(lease.key(), lease.owner()).await
    }

    /// An acquire counts once a try made with its interest registered (and its entry in the
    /// key's queue) was refused: a release from then on reaches it.
    fn queued(&self) -> Option<Queued> {
        Some(self.waiters.waiting().queued())
    }
}
