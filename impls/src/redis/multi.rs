//! Locks held across several Redis servers.
//!
//! - [`RedisAllLocker`] holds the lock on **every** server, taken in a fixed order and rolled
//!   back when one refuses — the semantics of the Go multi-Redis package, meant for migrating
//!   a lock from one server to another. Any server down means no lock. Fencing tokens come from
//!   the first server, which every grant holds, so they are monotonic.
//! - [`RedlockLocker`] holds it on a **majority** (Redlock, antirez 2014): all servers are asked
//!   at once, and the grant stands only if a majority granted within the lease's validity,
//!   `TTL − elapsed − drift` (drift = 1 % of the TTL + 2 ms); otherwise it is released
//!   everywhere and retried after a random delay. It survives a minority of servers failing,
//!   but not a restarted server that forgets its locks while another majority forms
//!   (Kleppmann 2016).
//!
//!   Plain Redlock has no monotonic fencing token: two majorities share a server but not a
//!   counter. This one adds a second round: the grant's token is the largest counter `M` of
//!   its majority, and before the lease is handed out `M` is written back (as a floor) to the
//!   fence counter of every server the grant holds — a majority must take it, or the grant
//!   fails. The next grant's majority shares one of those servers, whose counter it can only
//!   increment after our lock there is gone, so after our write-back: its token exceeds `M`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use tokio::time::Instant;

use super::instance::{Attempt, Instance};
use super::wakeups::{Subscribers, Waiters};
use super::{
    Outcome, RedisConfig, Wakeups, check_lock_request, redis_capabilities, rollback, start_wakeups, wait_for_grant,
};
use crate::Capabilities;
use crate::LockError;
use crate::Locker;
use crate::Queued;
use crate::{FencingToken, Lease, OwnerToken};
use crate::{LeaseRequest, validate_ttl, validate_wait};

/// The servers of a multi-instance locker and their shared wake-ups.
struct Servers {
    instances: Vec<Arc<Instance>>,
    config: RedisConfig,
    waiters: Arc<Waiters>,
    wakeups: Wakeups,
    _subscribers: Option<Subscribers>,
}

impl Servers {
    async fn connect(urls: &[String], config: RedisConfig) -> Result<Servers, LockError> {
        if urls.is_empty() {
            return Err(LockError::unavailable("a multi-instance Redis locker needs at least one server"));
        }
        let connected = join_all(urls.iter().map(|url| Instance::connect(url, &config))).await;
        let instances = connected.into_iter().map(|instance| instance.map(Arc::new)).collect::<Result<Vec<_>, _>>()?;
        // No queues here: every release wakes every waiter, through the keyspace channels.
        let (waiters, subscribers, wakeups) = start_wakeups(&instances, &config, true).await;
        Ok(Servers { instances, config, waiters, wakeups, _subscribers: subscribers })
    }

    fn describe(&self, scheme: &str) -> String {
        let hosts: Vec<String> =
            self.instances.iter().map(|instance| instance.display.trim_start_matches("redis://").to_owned()).collect();
        format!("{scheme}://{}", hosts.join(","))
    }

    /// Releases `token` on `instances`, concurrently; each answer in order.
    async fn release_on(instances: &[Arc<Instance>], key: &str, token: OwnerToken) -> Vec<Result<bool, LockError>> {
        join_all(instances.iter().map(|instance| instance.release(key, token))).await
    }
}

/// A lock held on every server of a set, taken in order (see the module docs).
pub struct RedisAllLocker {
    servers: Servers,
}

impl RedisAllLocker {
    /// Connects to every `redis://` URL; the order of `urls` is the acquisition order and
    /// must be the same for every client.
    pub async fn connect(urls: &[String], config: RedisConfig) -> Result<Self, LockError> {
        Ok(RedisAllLocker { servers: Servers::connect(urls, config).await? })
    }

    /// How waiters are woken.
    pub fn wakeups(&self) -> &Wakeups {
        &self.servers.wakeups
    }

    async fn attempt(&self, request: &LeaseRequest) -> Result<Outcome, LockError> {
        let instances = &self.servers.instances;
        let token = OwnerToken::random();
        let sent_at = Instant::now();
        let rollback = rollback(instances, request.key(), token);
        let mut first_fence = None;
        for (at, instance) in instances.iter().enumerate() {
            let refused = match instance.try_grant(request.key(), token, request.ttl(), None).await {
                Ok(Attempt::Granted(fence)) => {
                    first_fence.get_or_insert(fence);
                    continue;
                }
                Ok(Attempt::Held { retry_in, .. }) => Ok(Outcome::Refused { retry_in, split: false, queued: None }),
                Err(error) => Err(error),
            };
            // Roll back the partial acquisition, the failed server included (its grant may
            // have happened); token-checked, so it frees nothing of anyone else's.
            Servers::release_on(&instances[..=at], request.key(), token).await;
            rollback.disarm();
            return refused;
        }
        rollback.disarm();
        let fence = FencingToken(first_fence.expect("at least one server"));
        Ok(Outcome::Granted(Lease::new(request.key(), token, fence, request.ttl(), sent_at, 1)))
    }
}

#[async_trait]
impl Locker for RedisAllLocker {
    fn describe(&self) -> String {
        self.servers.describe("redis+all")
    }

    fn capabilities(&self) -> Capabilities {
        redis_capabilities(true, self.servers.wakeups == Wakeups::KeyspaceEvents)
    }

    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        check_lock_request(request)?;
        match self.attempt(request).await? {
            Outcome::Granted(lease) => Ok(Some(lease)),
            Outcome::Refused { .. } => Ok(None),
        }
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        check_lock_request(request)?;
        validate_wait(wait)?;
        let redis_key = self.servers.instances[0].lock_key(request.key());
        wait_for_grant(&self.servers.waiters, &redis_key, None, &self.servers.config, wait, |_| self.attempt(request))
            .await
    }

    /// Releases on every server; `Ok(true)` only if every server still held it.
    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let answers = Servers::release_on(&self.servers.instances, lease.key(), lease.owner()).await;
        let mut all = true;
        for answer in answers {
            all &= answer?;
        }
        Ok(all)
    }

    /// Refreshes on every server; the lease is still held only if every server held it.
    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        validate_ttl(ttl)?;
        let sent_at = Instant::now();
        let answers =
            join_all(self.servers.instances.iter().map(|instance| instance.refresh(lease.key(), lease.owner(), ttl)))
                .await;
        let mut all = true;
        for answer in answers {
            all &= answer?;
        }
        Ok(all.then(|| lease.refreshed(ttl, sent_at)))
    }

    /// The shortest remaining time over the servers; `None` if any server lost it.
    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        let answers =
            join_all(self.servers.instances.iter().map(|instance| instance.remaining(lease.key(), lease.owner())))
                .await;
        let mut shortest: Option<Duration> = None;
        for answer in answers {
            let Some(left) = answer? else { return Ok(None) };
            shortest = Some(shortest.map_or(left, |s| s.min(left)));
        }
        Ok(shortest)
    }

    /// An acquire counts once a try made with its key's events subscribed on every server was
    /// refused: a release from then on wakes it.
    fn queued(&self) -> Option<Queued> {
        Some(self.servers.waiters.waiting().queued())
    }
}

/// How many rounds `try_acquire` gives a split vote.
const SPLIT_ROUNDS: usize = 4;

/// A lock held on a majority of servers (Redlock; see the module docs).
pub struct RedlockLocker {
    servers: Servers,
}

impl RedlockLocker {
    /// Connects to every `redis://` URL (an odd number, 3 or 5, is the usual choice).
    pub async fn connect(urls: &[String], config: RedisConfig) -> Result<Self, LockError> {
        Ok(RedlockLocker { servers: Servers::connect(urls, config).await? })
    }

    /// How waiters are woken.
    pub fn wakeups(&self) -> &Wakeups {
        &self.servers.wakeups
    }

    fn quorum(&self) -> usize {
        self.servers.instances.len() / 2 + 1
    }

    /// The clock drift allowance of a lease: 1 % of the TTL plus 2 ms (Redlock's figures).
    fn drift(ttl: Duration) -> Duration {
        ttl / 100 + Duration::from_millis(2)
    }

    async fn attempt(&self, request: &LeaseRequest) -> Result<Outcome, LockError> {
        let instances = &self.servers.instances;
        let token = OwnerToken::random();
        let sent_at = Instant::now();
        let rollback = rollback(instances, request.key(), token);
        let answers =
            join_all(instances.iter().map(|instance| instance.try_grant(request.key(), token, request.ttl(), None)))
                .await;
        let drift = Self::drift(request.ttl());
        let (mut fences, mut granted, mut retry_in, mut errors) =
            (Vec::new(), Vec::new(), None::<Duration>, Vec::new());
        for (instance, answer) in instances.iter().zip(answers) {
            match answer {
                Ok(Attempt::Granted(fence)) => {
                    fences.push(fence);
                    granted.push(instance.clone());
                }
                Ok(Attempt::Held { retry_in: left, .. }) => {
                    if let Some(left) = left {
                        retry_in = Some(retry_in.map_or(left, |r| r.min(left)));
                    }
                }
                Err(error) => errors.push(error),
            }
        }
        let highest = fences.iter().copied().max();
        let mut holding = fences.len();
        if holding >= self.quorum() {
            // The fencing write-back (module docs): a majority must take the floor while we
            // still hold the lock there.
            let fence = highest.expect("a quorum is not empty");
            let floors =
                join_all(granted.iter().map(|instance| instance.raise_fence(request.key(), token, fence))).await;
            let raised = floors.iter().filter(|floor| matches!(floor, Ok(true))).count();
            holding = raised;
        }
        let elapsed = sent_at.elapsed();
        let valid = request.ttl().checked_sub(elapsed + drift).is_some_and(|validity| !validity.is_zero());
        if holding >= self.quorum() && valid {
            rollback.disarm();
            let fence = FencingToken(highest.expect("a quorum is not empty"));
            // Counting the lease from `sent_at − drift` makes the holder's belief end at
            // `sent_at + TTL − drift`: Redlock's validity.
            let acquired_at = sent_at.checked_sub(drift).unwrap_or(sent_at);
            return Ok(Outcome::Granted(Lease::new(request.key(), token, fence, request.ttl(), acquired_at, 1)));
        }
        // No valid majority: give back whatever we got, everywhere.
        Servers::release_on(instances, request.key(), token).await;
        rollback.disarm();
        if errors.len() > instances.len() - self.quorum() {
            let reachable = instances.len() - errors.len();
            let first = errors.swap_remove(0);
            return Err(LockError::Unavailable {
                message: format!(
                    "only {reachable} of {} Redis servers answered; a majority of {} is needed",
                    instances.len(),
                    self.quorum()
                ),
                source: Some(Box::new(first)),
            });
        }
        Ok(Outcome::Refused { retry_in, split: !fences.is_empty(), queued: None })
    }
}

#[async_trait]
impl Locker for RedlockLocker {
    fn describe(&self) -> String {
        self.servers.describe("redis+quorum")
    }

    fn capabilities(&self) -> Capabilities {
        redis_capabilities(true, self.servers.wakeups == Wakeups::KeyspaceEvents)
    }

    /// Refused only when someone else holds it: when racing contenders split the servers so
    /// that nobody has a majority (the key is free, nobody won), everyone backs off for a
    /// random moment and tries again, a few rounds at most.
    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        check_lock_request(request)?;
        for _ in 0..SPLIT_ROUNDS {
            match self.attempt(request).await? {
                Outcome::Granted(lease) => return Ok(Some(lease)),
                Outcome::Refused { split: true, .. } => {
                    tokio::time::sleep(Duration::from_micros(rand::random_range(200..=5_000))).await;
                }
                Outcome::Refused { split: false, .. } => return Ok(None),
            }
        }
        Ok(None)
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        check_lock_request(request)?;
        validate_wait(wait)?;
        let redis_key = self.servers.instances[0].lock_key(request.key());
        wait_for_grant(&self.servers.waiters, &redis_key, None, &self.servers.config, wait, |_| self.attempt(request))
            .await
    }

    /// Releases everywhere; `Ok(true)` if a majority still held it.
    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let answers = Servers::release_on(&self.servers.instances, lease.key(), lease.owner()).await;
        self.majority(answers.into_iter().map(|answer| answer.map(|held| held.then_some(()))))
            .map(|held| held.is_some())
    }

    /// Refreshes everywhere; held if a majority refreshed within the new validity.
    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        validate_ttl(ttl)?;
        let sent_at = Instant::now();
        let answers =
            join_all(self.servers.instances.iter().map(|instance| instance.refresh(lease.key(), lease.owner(), ttl)))
                .await;
        let drift = Self::drift(ttl);
        let held = self.majority(answers.into_iter().map(|answer| answer.map(|held| held.then_some(()))))?;
        let valid = ttl.checked_sub(sent_at.elapsed() + drift).is_some_and(|validity| !validity.is_zero());
        Ok((held.is_some() && valid).then(|| lease.refreshed(ttl, sent_at.checked_sub(drift).unwrap_or(sent_at))))
    }

    /// The time a majority of servers still holds it for, by their clocks (the holder's own
    /// belief, [`Lease::expires_at`], already subtracts the drift allowance).
    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        let answers =
            join_all(self.servers.instances.iter().map(|instance| instance.remaining(lease.key(), lease.owner())))
                .await;
        self.majority(answers)
    }

    /// As [`RedisAllLocker`]'s: counted once subscribed and refused.
    fn queued(&self) -> Option<Queued> {
        Some(self.servers.waiters.waiting().queued())
    }
}

impl RedlockLocker {
    /// Combines per-server answers: `Some(v)` where `v` is the value a majority reaches (the
    /// quorum-th largest), `None` if fewer than a majority hold it, an error if the servers
    /// that failed could have made the difference.
    fn majority<T: Ord>(
        &self,
        answers: impl IntoIterator<Item = Result<Option<T>, LockError>>,
    ) -> Result<Option<T>, LockError> {
        let (mut held, mut errors) = (Vec::new(), Vec::new());
        let mut total = 0;
        for answer in answers {
            total += 1;
            match answer {
                Ok(Some(value)) => held.push(value),
                Ok(None) => {}
                Err(error) => errors.push(error),
            }
        }
        let quorum = self.quorum();
        if held.len() >= quorum {
            held.sort_unstable_by(|a, b| b.cmp(a));
            return Ok(held.into_iter().nth(quorum - 1));
        }
        if held.len() + errors.len() >= quorum && !errors.is_empty() {
            // The unreachable servers decide: the answer is unknown.
            return Err(errors.swap_remove(0));
        }
        debug_assert!(total >= quorum);
        Ok(None)
    }
}
