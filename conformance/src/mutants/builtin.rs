//! The built-in mutants: the correct memory locker with one flaw each.
//!
//! Each flaw is the shape the bug takes in real lockers (most of them in the original Go
//! lockers lockcheck started from): a release that deletes the key without comparing tokens;
//! a TTL timer that releases "the key" rather than its own grant; a waiter that subscribes
//! to release notifications only after its failed try; two nodes that each grant from their
//! own state; a fencing counter that restarts when a key goes idle; a waiter that ignores its
//! deadline; an acquire that keeps running after its caller gave up; a LIFO queue behind a
//! FIFO claim; and expiry kept only in the holder's process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lockcheck_impls::{
    Capabilities, FencingToken, InvalidInput, Lease, LeaseRequest, LockError, Locker, MAX_TTL, MAX_WAIT, MIN_TTL,
    MemoryLocker, Queued,
};
use lockcheck_model::spec::Property;
use tokio::sync::Notify;
use tokio::time::{Instant, sleep, sleep_until};

use super::Mutant;
use crate::backend::{Backend, SharedLocker};

/// The one thing a [`Flawed`] locker gets wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flaw {
    ReleaseWithoutOwnershipCheck,
    StaleExpiryTimer,
    SubscribeAfterTry,
    NonMonotonicFencing,
    IgnoresWaitBound,
    LeaksGrantOnCancel,
    LifoQueue,
    ExpiryNeverEnforced,
    EarlyExpiry,
    RewaitsWithFreshBound,
    SemaphoreAdmitsAllWaiters,
    BargingClaimingFifo,
    PollingClaimingPush,
    QueuesBeforeValidating,
    RefreshActsBeforeValidating,
}

impl Flaw {
    fn name(self) -> &'static str {
        match self {
            Flaw::ReleaseWithoutOwnershipCheck => "release-without-ownership-check",
            Flaw::StaleExpiryTimer => "stale-expiry-timer",
            Flaw::SubscribeAfterTry => "subscribe-after-try",
            Flaw::NonMonotonicFencing => "non-monotonic-fencing",
            Flaw::IgnoresWaitBound => "ignores-wait-bound",
            Flaw::LeaksGrantOnCancel => "leaks-grant-on-cancel",
            Flaw::LifoQueue => "lifo-queue-claiming-fifo",
            Flaw::ExpiryNeverEnforced => "expiry-never-enforced",
            Flaw::EarlyExpiry => "expires-5-percent-early",
            Flaw::RewaitsWithFreshBound => "rewaits-with-fresh-bound",
            Flaw::SemaphoreAdmitsAllWaiters => "semaphore-admits-all-waiters",
            Flaw::BargingClaimingFifo => "barging-claiming-fifo",
            Flaw::PollingClaimingPush => "polling-claiming-push",
            Flaw::QueuesBeforeValidating => "queues-before-validating",
            Flaw::RefreshActsBeforeValidating => "refresh-acts-before-validating",
        }
    }
}

/// Per-key bookkeeping the flaws need.
#[derive(Default)]
struct Book {
    /// Grants this locker handed out and has not seen released, per key.
    held: HashMap<String, Vec<Lease>>,
    /// The restarting fence counter of [`Flaw::NonMonotonicFencing`].
    fences: HashMap<String, u64>,
    /// The waiter stacks of [`Flaw::LifoQueue`] (and queues of [`Flaw::BargingClaimingFifo`]):
    /// (waiter id, its wake-up).
    stacks: HashMap<String, Vec<(usize, Arc<Notify>)>>,
    /// Grants [`Flaw::SemaphoreAdmitsAllWaiters`] forced past the limit: the caller's owner
    /// token → the inner lease (on a key of its own) that stands for it.
    forced: HashMap<u128, Lease>,
    /// Forced grants so far (each gets a key of its own).
    next_forced: u64,
}

/// The memory locker with one flaw.
struct Flawed {
    flaw: Flaw,
    inner: Arc<MemoryLocker>,
    book: Arc<Mutex<Book>>,
    released: Notify,
    next_waiter: AtomicUsize,
}

impl Flawed {
    fn new(flaw: Flaw) -> Self {
        Flawed {
            flaw,
            inner: Arc::new(MemoryLocker::new()),
            book: Arc::default(),
            released: Notify::new(),
            next_waiter: AtomicUsize::new(0),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().expect("mutant bookkeeping")
    }

    /// What the caller gets for an inner grant.
    fn granted(&self, request: &LeaseRequest, lease: Lease) -> Lease {
        let lease = match self.flaw {
            Flaw::NonMonotonicFencing => {
                let mut book = self.book();
                let counter = book.fences.entry(lease.key().to_owned()).or_insert(0);
                *counter += 1;
                Lease::new(
                    lease.key(),
                    lease.owner(),
                    FencingToken(*counter),
                    lease.ttl(),
                    lease.acquired_at(),
                    lease.limit(),
                )
            }
            // The caller is told the TTL it asked for, whatever the locker enforces.
            Flaw::ExpiryNeverEnforced | Flaw::EarlyExpiry => {
                Lease::new(lease.key(), lease.owner(), lease.fence(), request.ttl(), lease.acquired_at(), lease.limit())
            }
            _ => lease,
        };
        self.book().held.entry(lease.key().to_owned()).or_default().push(lease.clone());
        if self.flaw == Flaw::StaleExpiryTimer {
            // The Go locker's `time.AfterFunc(ttl, func() { l.Release(key) })`: when it fires
            // it releases whoever holds the key by then, and nobody stops it on release or
            // refresh.
            let (inner, book, key, ttl) = (self.inner.clone(), self.book.clone(), lease.key().to_owned(), lease.ttl());
            tokio::spawn(async move {
                sleep(ttl).await;
                let victim =
                    book.lock().expect("mutant bookkeeping").held.get(&key).and_then(|held| held.last().cloned());
                if let Some(victim) = victim {
                    let _ = inner.release(&victim).await;
                }
            });
        }
        lease
    }

    fn inner_request(&self, request: &LeaseRequest) -> LeaseRequest {
        match self.flaw {
            // The server never expires anything; only the holder knows its TTL.
            Flaw::ExpiryNeverEnforced => LeaseRequest::semaphore(request.key(), request.limit(), MAX_TTL),
            // Off by 5 %: a lease timer started from a stale clock reading, a TTL in a coarser
            // unit rounded down.
            Flaw::EarlyExpiry => LeaseRequest::semaphore(request.key(), request.limit(), request.ttl().mul_f64(0.95)),
            _ => request.clone(),
        }
    }

    fn forget(&self, lease: &Lease) {
        let mut book = self.book();
        if let Some(held) = book.held.get_mut(lease.key()) {
            held.retain(|other| other.owner() != lease.owner());
            if held.is_empty() {
                book.held.remove(lease.key());
                // The restarting counter: an idle key starts over at 1.
                book.fences.remove(lease.key());
            }
        }
    }

    /// When the latest lease this locker knows of on `key` ends (for waiters' timers).
    fn next_expiry(&self, key: &str) -> Option<Instant> {
        self.book().held.get(key)?.iter().map(Lease::expires_at).min()
    }

    async fn try_inner(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        Ok(self.inner.try_acquire(&self.inner_request(request)).await?.map(|lease| self.granted(request, lease)))
    }

    /// Waiting by notification, with the subscription taken *after* the failed try.
    async fn acquire_subscribing_late(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(lease) = self.try_inner(request).await? {
                return Ok(lease);
            }
            // The window: the subscription's round trip to the server (1 ms here). A release
            // that lands in it notifies nobody.
            sleep(Duration::from_millis(1)).await;
            let notified = self.released.notified();
            let expiry = self.next_expiry(request.key()).unwrap_or(deadline);
            tokio::select! {
                () = notified => {}
                () = sleep_until(expiry.min(deadline)) => {
                    if Instant::now() >= deadline {
                        return Err(LockError::TimedOut { waited: wait });
                    }
                }
            }
        }
    }

    /// Waiting on a per-key stack: the newest waiter is served first.
    async fn acquire_lifo(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        let deadline = Instant::now() + wait;
        let key = request.key().to_owned();
        {
            // A barging queue lets every newcomer try first, queued waiters or not.
            let idle = self.flaw == Flaw::BargingClaimingFifo || self.book().stacks.get(&key).is_none_or(Vec::is_empty);
            if idle && let Some(lease) = self.try_inner(request).await? {
                return Ok(lease);
            }
        }
        let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        let wake = Arc::new(Notify::new());
        self.book().stacks.entry(key.clone()).or_default().push((id, wake.clone()));
        let _leave = LeaveStack { book: &self.book, key: &key, id, fifo: self.flaw == Flaw::BargingClaimingFifo };
        loop {
            let next = |stack: &Vec<(usize, Arc<Notify>)>| {
                if self.flaw == Flaw::BargingClaimingFifo {
                    stack.first().map(|(id, _)| *id)
                } else {
                    stack.last().map(|(id, _)| *id)
                }
            };
            let on_top = self.book().stacks.get(&key).and_then(next) == Some(id);
            if on_top && let Some(lease) = self.try_inner(request).await? {
                return Ok(lease);
            }
            let expiry = self.next_expiry(&key).unwrap_or(deadline);
            tokio::select! {
                () = wake.notified() => {}
                () = sleep_until(expiry.min(deadline)) => {
                    if Instant::now() >= deadline {
                        return Err(LockError::TimedOut { waited: wait });
                    }
                }
            }
        }
    }

    /// The request is queued before its wait bound is checked: the caller is refused, and the
    /// queue entry stays behind, to be granted a lock nobody will release.
    async fn queue_then_refuse(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        let (inner, queued) = (self.inner.clone(), request.clone());
        let mut enqueue = Box::pin(async move {
            let _never_released = inner.acquire(&queued, MAX_WAIT).await;
        });
        // Polled once here, so the entry is in the queue before the refusal returns.
        if std::future::poll_fn(|cx| std::task::Poll::Ready(enqueue.as_mut().poll(cx))).await.is_pending() {
            tokio::spawn(enqueue);
        }
        Err(InvalidInput::WaitTooLong { wait, max: MAX_WAIT }.into())
    }

    fn wake_top(&self, key: &str) {
        let book = self.book();
        let Some(stack) = book.stacks.get(key) else { return };
        let next = if self.flaw == Flaw::BargingClaimingFifo { stack.first() } else { stack.last() };
        if let Some((_, wake)) = next {
            wake.notify_one();
        }
    }

    /// Waiting by notification with the wait bound restarted at every wake-up: a waiter that
    /// is woken and loses the race waits its whole bound again.
    async fn acquire_rewaiting(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        let started = Instant::now();
        loop {
            let notified = self.released.notified();
            if let Some(lease) = self.try_inner(request).await? {
                return Ok(lease);
            }
            let deadline = Instant::now() + wait;
            let expiry = self.next_expiry(request.key()).unwrap_or(deadline);
            tokio::select! {
                () = notified => {}
                () = sleep_until(expiry.min(deadline)) => {
                    if Instant::now() >= deadline {
                        return Err(LockError::TimedOut { waited: started.elapsed() });
                    }
                }
            }
        }
    }

    /// A semaphore whose waiters are all woken by a release and all admitted, full or not.
    async fn acquire_admitting_all(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        if request.limit() == 1 {
            let lease = self.inner.acquire(request, wait).await?;
            return Ok(self.granted(request, lease));
        }
        let notified = self.released.notified();
        if let Some(lease) = self.try_inner(request).await? {
            return Ok(lease);
        }
        let deadline = Instant::now() + wait;
        tokio::select! {
            () = notified => {}
            () = sleep_until(deadline) => return Err(LockError::TimedOut { waited: wait }),
        }
        // Woken by a release: admitted without looking at how many hold the key.
        let forced = {
            let mut book = self.book();
            book.next_forced += 1;
            book.next_forced
        };
        let stand_in = LeaseRequest::lock(format!("{}.forced-{forced}", request.key()), request.ttl());
        let inner =
            self.inner.try_acquire(&stand_in).await?.ok_or_else(|| LockError::unavailable("stand-in key taken"))?;
        let lease =
            Lease::new(request.key(), inner.owner(), inner.fence(), inner.ttl(), inner.acquired_at(), request.limit());
        self.book().forced.insert(lease.owner().bits(), inner);
        Ok(lease)
    }

    /// Waiting by polling every 25 ms (while claiming push wake-ups).
    async fn acquire_polling(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(lease) = self.try_inner(request).await? {
                return Ok(lease);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(LockError::TimedOut { waited: wait });
            }
            sleep_until((now + Duration::from_millis(25)).min(deadline)).await;
        }
    }

    /// The inner lease a forced grant stands for, if `lease` is one.
    fn stand_in(&self, lease: &Lease) -> Option<Lease> {
        self.book().forced.get(&lease.owner().bits()).cloned()
    }
}

/// Takes a LIFO waiter off its stack when it stops waiting (granted, timed out, cancelled)
/// and wakes the new top.
struct LeaveStack<'a> {
    book: &'a Mutex<Book>,
    key: &'a str,
    id: usize,
    fifo: bool,
}

impl Drop for LeaveStack<'_> {
    fn drop(&mut self) {
        let mut book = self.book.lock().expect("mutant bookkeeping");
        if let Some(stack) = book.stacks.get_mut(self.key) {
            stack.retain(|(id, _)| *id != self.id);
            if let Some((_, wake)) = if self.fifo { stack.first() } else { stack.last() } {
                wake.notify_one();
            }
        }
    }
}

#[async_trait]
impl Locker for Flawed {
    fn describe(&self) -> String {
        format!("mutant:{}", self.flaw.name())
    }

    fn capabilities(&self) -> Capabilities {
        let mut capabilities = Capabilities::all_in_process();
        if matches!(self.flaw, Flaw::SubscribeAfterTry | Flaw::RewaitsWithFreshBound | Flaw::PollingClaimingPush) {
            // It never claimed an order; only its wake-ups are broken.
            capabilities.fifo = false;
        }
        capabilities
    }

    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        request.validate()?;
        if self.flaw == Flaw::LifoQueue && self.book().stacks.get(request.key()).is_some_and(|stack| !stack.is_empty())
        {
            return Ok(None);
        }
        self.try_inner(request).await
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        request.validate()?;
        if self.flaw == Flaw::QueuesBeforeValidating && wait > MAX_WAIT {
            return self.queue_then_refuse(request, wait).await;
        }
        match self.flaw {
            Flaw::SubscribeAfterTry => self.acquire_subscribing_late(request, wait).await,
            Flaw::LifoQueue | Flaw::BargingClaimingFifo => self.acquire_lifo(request, wait).await,
            Flaw::RewaitsWithFreshBound => self.acquire_rewaiting(request, wait).await,
            Flaw::SemaphoreAdmitsAllWaiters => self.acquire_admitting_all(request, wait).await,
            Flaw::PollingClaimingPush => self.acquire_polling(request, wait).await,
            // Waits for the grant however long it takes.
            Flaw::IgnoresWaitBound => {
                let lease = self.inner.acquire(&self.inner_request(request), MAX_WAIT).await?;
                Ok(self.granted(request, lease))
            }
            // The acquire runs in a task of its own; dropping the caller's future does not
            // stop it, and its grant is never released.
            Flaw::LeaksGrantOnCancel => {
                let (inner, inner_request) = (self.inner.clone(), self.inner_request(request));
                let task = tokio::spawn(async move { inner.acquire(&inner_request, wait).await });
                let lease = task.await.map_err(|error| LockError::unavailable(error.to_string()))??;
                Ok(self.granted(request, lease))
            }
            _ => {
                let lease = self.inner.acquire(&self.inner_request(request), wait).await?;
                Ok(self.granted(request, lease))
            }
        }
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let target = match self.flaw {
            // Deletes "the key": whatever grant is current, whoever asks.
            Flaw::ReleaseWithoutOwnershipCheck => {
                self.book().held.get(lease.key()).and_then(|held| held.last().cloned()).unwrap_or_else(|| lease.clone())
            }
            _ => lease.clone(),
        };
        let released = match self.stand_in(&target) {
            Some(stand_in) => {
                self.book().forced.remove(&target.owner().bits());
                self.inner.release(&stand_in).await?
            }
            None => self.inner.release(&target).await?,
        };
        self.forget(&target);
        self.released.notify_waiters();
        if matches!(self.flaw, Flaw::LifoQueue | Flaw::BargingClaimingFifo) {
            self.wake_top(lease.key());
        }
        Ok(released)
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        if self.flaw == Flaw::RefreshActsBeforeValidating && ttl < MIN_TTL {
            // The store is told first (Redis `PEXPIRE key 0` deletes the key), the caller is
            // told the TTL was refused.
            self.inner.release(lease).await?;
            return Err(InvalidInput::TtlTooShort { ttl, min: MIN_TTL }.into());
        }
        let inner_ttl = match self.flaw {
            Flaw::ExpiryNeverEnforced => MAX_TTL,
            Flaw::EarlyExpiry => ttl.mul_f64(0.95),
            _ => ttl,
        };
        let target = self.stand_in(lease).unwrap_or_else(|| lease.clone());
        let renewed = self.inner.refresh(&target, inner_ttl).await?;
        Ok(renewed.map(|_| lease.refreshed(ttl, Instant::now())))
    }

    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        let target = self.stand_in(lease).unwrap_or_else(|| lease.clone());
        let left = self.inner.remaining_ttl(&target).await?;
        Ok(match self.flaw {
            Flaw::ExpiryNeverEnforced => left.map(|_| lease.locally_remaining()),
            _ => left,
        })
    }

    /// The memory locker's count where its `acquire` waits in the memory locker's queue; the
    /// flaws that wait their own way cannot tell.
    fn queued(&self) -> Option<Queued> {
        match self.flaw {
            Flaw::SubscribeAfterTry
            | Flaw::LifoQueue
            | Flaw::BargingClaimingFifo
            | Flaw::RewaitsWithFreshBound
            | Flaw::SemaphoreAdmitsAllWaiters
            | Flaw::PollingClaimingPush => None,
            _ => self.inner.queued(),
        }
    }
}

/// Two lock nodes that each grant from their own state and tell each other nothing — the
/// event-bus-coordinated lockers' double grant. Clients connect to the nodes in turn.
struct TwoNodes {
    nodes: [Arc<MemoryLocker>; 2],
    next: AtomicUsize,
}

#[async_trait]
impl Backend for TwoNodes {
    fn name(&self) -> String {
        "mutant:double-grant".to_owned()
    }

    async fn connect(&self) -> Result<Arc<dyn Locker>, LockError> {
        let node = self.next.fetch_add(1, Ordering::Relaxed) % 2;
        Ok(self.nodes[node].clone())
    }
}

fn flawed(flaw: Flaw, failure_class: &'static str, expected_to_violate: Property) -> Mutant {
    let locker = Arc::new(Flawed::new(flaw));
    // Every waiter admitted at once is also admitted in whatever order the wake-ups ran, with
    // fences of a stand-in key: when the releases that follow come quickly, the history proves
    // the disorder (P8) though not the excess.
    let also_violates: &'static [Property] =
        if flaw == Flaw::SemaphoreAdmitsAllWaiters { &[Property::Fifo] } else { &[] };
    Mutant {
        name: flaw.name(),
        failure_class,
        expected_to_violate,
        also_violates,
        backend: Box::new(SharedLocker::new(locker)),
    }
}

pub(super) fn mutants() -> Vec<Mutant> {
    vec![
        flawed(
            Flaw::ReleaseWithoutOwnershipCheck,
            "release by a non-owner: the key is deleted without comparing owner tokens",
            Property::Ownership,
        ),
        flawed(Flaw::StaleExpiryTimer, "a stale TTL timer releases the next holder's lock", Property::MutualExclusion),
        flawed(
            Flaw::SubscribeAfterTry,
            "lost wake-up: the waiter subscribes to releases only after its failed try",
            Property::NoLostWakeup,
        ),
        Mutant {
            name: "double-grant",
            failure_class: "two nodes coordinating without consensus both grant the same key",
            expected_to_violate: Property::MutualExclusion,
            also_violates: &[],
            backend: Box::new(TwoNodes {
                nodes: [Arc::new(MemoryLocker::new()), Arc::new(MemoryLocker::new())],
                next: AtomicUsize::new(0),
            }),
        },
        flawed(
            Flaw::NonMonotonicFencing,
            "non-monotonic fencing tokens: the counter restarts when a key goes idle",
            Property::Fencing,
        ),
        flawed(Flaw::IgnoresWaitBound, "a waiter that never honours its deadline", Property::BoundedWait),
        flawed(
            Flaw::LeaksGrantOnCancel,
            "a grant leaked to a cancelled caller: the acquire keeps running after its caller gave up",
            Property::CancelSafety,
        ),
        flawed(Flaw::LifoQueue, "unfair LIFO hand-off where FIFO is promised", Property::Fifo),
        flawed(
            Flaw::ExpiryNeverEnforced,
            "a lock held forever after its holder crashed: expiry kept only in the holder's process",
            Property::Expiry,
        ),
        flawed(
            Flaw::EarlyExpiry,
            "a lease that ends 5 % before its TTL (a timer started from a stale clock reading)",
            Property::MutualExclusion,
        ),
        flawed(
            Flaw::RewaitsWithFreshBound,
            "a waiter woken and beaten to the key waits its whole bound again",
            Property::BoundedWait,
        ),
        flawed(
            Flaw::SemaphoreAdmitsAllWaiters,
            "a semaphore release wakes every waiter and admits them all past the limit",
            Property::MutualExclusion,
        ),
        flawed(
            Flaw::BargingClaimingFifo,
            "FIFO claimed, but a newcomer barges past the queued waiters when a lock frees",
            Property::Fifo,
        ),
        flawed(
            Flaw::PollingClaimingPush,
            "push wake-ups claimed, but waiters poll every 25 ms",
            Property::NoLostWakeup,
        ),
        flawed(
            Flaw::QueuesBeforeValidating,
            "a request queued before its input is checked: refused, yet granted later to nobody",
            Property::CancelSafety,
        ),
        flawed(
            Flaw::RefreshActsBeforeValidating,
            "a refresh with a zero TTL reaches the store before it is refused, and ends the lease",
            Property::MutualExclusion,
        ),
        session_mutant(),
    ]
}

/// The memory locker behind clients that are sessions: a client that goes away (a crash)
/// frees its leases at once, as a dflockd connection, a ZooKeeper session or a Postgres
/// backend does. Correct when it claims session-bound leases; a broken promise when it does
/// not.
struct Sessions {
    locker: Arc<MemoryLocker>,
    claims: Capabilities,
    name: &'static str,
}

#[async_trait]
impl Backend for Sessions {
    fn name(&self) -> String {
        self.name.to_owned()
    }

    async fn connect(&self) -> Result<Arc<dyn Locker>, LockError> {
        Ok(Arc::new(Session { locker: self.locker.clone(), claims: self.claims, held: Mutex::default() }))
    }
}

/// One client's session: what it holds is freed when it goes.
struct Session {
    locker: Arc<MemoryLocker>,
    claims: Capabilities,
    held: Mutex<Vec<Lease>>,
}

impl Session {
    fn holds(&self, lease: &Lease) {
        self.held.lock().expect("session leases").push(lease.clone());
    }

    fn forgets(&self, lease: &Lease) {
        self.held.lock().expect("session leases").retain(|held| held.owner() != lease.owner());
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()));
        let locker = self.locker.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for lease in held {
                    let _ = locker.release(&lease).await;
                }
            });
        }
    }
}

#[async_trait]
impl Locker for Session {
    fn describe(&self) -> String {
        "memory-sessions".to_owned()
    }

    fn capabilities(&self) -> Capabilities {
        self.claims
    }

    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        let granted = self.locker.try_acquire(request).await?;
        if let Some(lease) = &granted {
            self.holds(lease);
        }
        Ok(granted)
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        let lease = self.locker.acquire(request, wait).await?;
        self.holds(&lease);
        Ok(lease)
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        self.forgets(lease);
        self.locker.release(lease).await
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        self.locker.refresh(lease, ttl).await
    }

    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        self.locker.remaining_ttl(lease).await
    }

    /// The shared memory locker's count: every session's waiters together.
    fn queued(&self) -> Option<Queued> {
        self.locker.queued()
    }
}

/// A correct but unusual backend: leases bound to the client's session, and said so.
pub(super) fn session_bound_memory() -> Box<dyn Backend> {
    Box::new(Sessions {
        locker: Arc::new(MemoryLocker::new()),
        claims: Capabilities::all_in_process().with_session_bound(true),
        name: "memory-sessions",
    })
}

fn session_mutant() -> Mutant {
    Mutant {
        name: "frees-on-disconnect-unclaimed",
        failure_class: "a crashed client's leases are freed before their TTL by a backend that does not say its leases end with the session",
        expected_to_violate: Property::MutualExclusion,
        also_violates: &[],
        backend: Box::new(Sessions {
            locker: Arc::new(MemoryLocker::new()),
            claims: Capabilities::all_in_process(),
            name: "mutant:frees-on-disconnect-unclaimed",
        }),
    }
}

/// A correct but unusual locker: it accepts keys the lock API refuses (whitespace, control
/// characters) and locks them like any other, by escaping them before they reach the store —
/// as a backend whose store takes any bytes may. Bad TTLs, limits and waits it still refuses.
struct LenientKeys {
    store: MemoryLocker,
}

impl LenientKeys {
    /// `%` and every character the lock API refuses in a key, as `%XX` per UTF-8 byte.
    fn escaped(key: &str) -> String {
        let mut escaped = String::with_capacity(key.len());
        for c in key.chars() {
            if c == '%' || c.is_whitespace() || c.is_control() {
                let mut bytes = [0; 4];
                for byte in c.encode_utf8(&mut bytes).bytes() {
                    escaped.push_str(&format!("%{byte:02X}"));
                }
            } else {
                escaped.push(c);
            }
        }
        escaped
    }

    fn request(request: &LeaseRequest) -> LeaseRequest {
        LeaseRequest::semaphore(Self::escaped(request.key()), request.limit(), request.ttl())
    }

    /// `lease` under `key`: the caller's key, or its escaped form in the store.
    fn lease(lease: &Lease, key: &str) -> Lease {
        Lease::new(key, lease.owner(), lease.fence(), lease.ttl(), lease.acquired_at(), lease.limit())
    }

    fn stored(lease: &Lease) -> Lease {
        Self::lease(lease, &Self::escaped(lease.key()))
    }
}

#[async_trait]
impl Locker for LenientKeys {
    fn describe(&self) -> String {
        "memory-lenient-keys".to_owned()
    }

    fn capabilities(&self) -> Capabilities {
        self.store.capabilities()
    }

    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        let granted = self.store.try_acquire(&Self::request(request)).await?;
        Ok(granted.map(|lease| Self::lease(&lease, request.key())))
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        let lease = self.store.acquire(&Self::request(request), wait).await?;
        Ok(Self::lease(&lease, request.key()))
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        self.store.release(&Self::stored(lease)).await
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        let renewed = self.store.refresh(&Self::stored(lease), ttl).await?;
        Ok(renewed.map(|renewed| Self::lease(&renewed, lease.key())))
    }

    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        self.store.remaining_ttl(&Self::stored(lease)).await
    }
}

/// A correct but unusual backend: keys the lock API refuses are accepted and locked correctly.
pub(super) fn lenient_keys_memory() -> Box<dyn Backend> {
    Box::new(SharedLocker::new(Arc::new(LenientKeys { store: MemoryLocker::new() })))
}
