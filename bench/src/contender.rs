//! What the harness contends on: a lock backend through the [`Locker`] trait, or a floor.
//!
//! [`Contender`] is deliberately smaller than [`Locker`]: lock, try-lock and unlock of key
//! number `key` by client number `client`. That is all a contention benchmark needs, and it
//! lets `tokio::sync::Mutex` — the floor of the memory locker — run through exactly the same
//! measuring code without paying for boxing it does not need.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lockcheck_impls::{Lease, LeaseRequest, Locker, MemoryLocker, Queued};

use crate::BenchError;

/// Something the harness can contend on: keys `0..keys()` and clients `0..`.
pub trait Contender: Send + Sync + 'static {
    /// Proof of holding one key, given back to [`Contender::unlock`].
    type Held: Send + 'static;

    /// The name plots and tables show, e.g. `memory` or `tokio::sync::Mutex`.
    fn name(&self) -> String;

    /// How many distinct keys this contender was built with.
    fn keys(&self) -> usize;

    /// Takes `key` if it is free right now.
    fn try_lock(
        &self,
        client: usize,
        key: usize,
    ) -> impl Future<Output = Result<Option<Self::Held>, BenchError>> + Send;

    /// Waits for `key`.
    fn lock(&self, client: usize, key: usize) -> impl Future<Output = Result<Self::Held, BenchError>> + Send;

    /// Gives the key back.
    fn unlock(&self, held: Self::Held) -> impl Future<Output = Result<(), BenchError>> + Send;

    /// Returns once `waiters` clients are queued for `key` as far as the backend can tell, so
    /// that a hand-off the harness times has its queue really formed. Having called
    /// [`Contender::lock`] is not enough for a network backend whose waiter must first reach
    /// the server: a release racing that arrival is not a hand-off to a queued waiter. The
    /// default returns at once (the backend cannot tell; the harness goes by the calls).
    fn until_queued(&self, key: usize, waiters: usize) -> impl Future<Output = ()> + Send {
        let _ = (key, waiters);
        std::future::ready(())
    }
}

/// How long a benchmark lease lives: far longer than any benchmark holds it, so an expiry
/// never interferes with a measurement (an expired lease is reported as an error).
pub const BENCH_TTL: Duration = Duration::from_secs(60);
/// How long a benchmark waiter waits before the run is declared stuck.
pub const BENCH_WAIT: Duration = Duration::from_secs(60);

/// A lock backend under test, through `dyn Locker` — the way the CLI and users reach it.
///
/// Keys are named `lockcheck-bench/<run>/<i>` with a per-process run id, so a benchmark
/// against a shared server never meets leases of an earlier run.
pub struct LockerContender {
    name: String,
    clients: Vec<Arc<dyn Locker>>,
    requests: Vec<LeaseRequest>,
    /// Each locker's count of its acquires that are queued (see
    /// [`LockerContender::queued_by`]); empty when the backend does not report one.
    queued: Vec<Queued>,
}

impl LockerContender {
    /// All clients share one locker (one connection for network backends).
    pub fn new(locker: Arc<dyn Locker>, keys: usize) -> Self {
        Self::per_client(vec![locker], keys)
    }

    /// Client `i` uses `lockers[i % lockers.len()]` — e.g. one connection per client, the
    /// way independent processes would contend.
    ///
    /// # Panics
    /// If `lockers` is empty or `keys` is zero.
    pub fn per_client(lockers: Vec<Arc<dyn Locker>>, keys: usize) -> Self {
        assert!(!lockers.is_empty(), "a contender needs at least one locker");
        assert!(keys > 0, "a contender needs at least one key");
        LockerContender {
            name: lockers[0].describe(),
            clients: lockers,
            requests: bench_requests(keys),
            queued: Vec::new(),
        }
    }

    /// [`LockerContender::per_client`], and [`LockerContender::queued_by`] the lockers' own
    /// counts of their queued acquires ([`Locker::queued`]). If any locker cannot tell, the
    /// harness goes by time alone, as for [`LockerContender::per_client`].
    pub fn per_client_counting<L: Locker + 'static>(lockers: Vec<L>, keys: usize) -> Self {
        let counts = lockers.iter().map(Locker::queued).collect::<Option<Vec<_>>>().unwrap_or_default();
        let lockers = lockers.into_iter().map(|locker| Arc::new(locker) as Arc<dyn Locker>).collect();
        Self::per_client(lockers, keys).queued_by(counts)
    }

    /// Has [`Contender::until_queued`] go by the backend's own count of queued acquires: one
    /// count per locker ([`Locker::queued`]), summed over the lockers. The counts cover all of
    /// a locker's keys; a hand-off run contends for one.
    pub fn queued_by(mut self, counts: Vec<Queued>) -> Self {
        self.queued = counts;
        self
    }

    /// Shows `name` instead of the locker's own description (e.g. `redis (rslock)`).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    fn client(&self, client: usize) -> &dyn Locker {
        // Through `&dyn Locker`, not `Arc<dyn Locker>`'s forwarding impl: that one would box
        // every future twice and charge the backend for the harness's indirection.
        &*self.clients[client % self.clients.len()]
    }
}

/// Lock requests on `keys` keys named `lockcheck-bench/<run>/<i>`, `<run>` unique to this
/// process and moment.
fn bench_requests(keys: usize) -> Vec<LeaseRequest> {
    let run = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    );
    (0..keys).map(|i| LeaseRequest::lock(format!("lockcheck-bench/{run}/{i}"), BENCH_TTL)).collect()
}

/// A lease and the client that holds it.
pub struct HeldLease {
    client: usize,
    lease: Lease,
}

impl Contender for LockerContender {
    type Held = HeldLease;

    fn name(&self) -> String {
        self.name.clone()
    }

    fn keys(&self) -> usize {
        self.requests.len()
    }

    async fn try_lock(&self, client: usize, key: usize) -> Result<Option<HeldLease>, BenchError> {
        let lease = self.client(client).try_acquire(&self.requests[key]).await?;
        Ok(lease.map(|lease| HeldLease { client, lease }))
    }

    async fn lock(&self, client: usize, key: usize) -> Result<HeldLease, BenchError> {
        let lease = self.client(client).acquire(&self.requests[key], BENCH_WAIT).await?;
        Ok(HeldLease { client, lease })
    }

    async fn unlock(&self, held: HeldLease) -> Result<(), BenchError> {
        if self.client(held.client).release(&held.lease).await? {
            Ok(())
        } else {
            Err(BenchError::LeaseLost { key: held.lease.key().to_owned() })
        }
    }

    async fn until_queued(&self, _key: usize, waiters: usize) {
        let mut counts = self.queued.clone();
        if counts.is_empty() {
            return;
        }
        loop {
            let queued: u64 = counts.iter().map(Queued::count).sum();
            if queued >= waiters as u64 {
                return;
            }
            let changed = futures::future::select_all(counts.iter_mut().map(|count| Box::pin(count.changed())));
            if !changed.await.0 {
                // A locker is gone: nothing will change any more, and its waiters with it.
                return;
            }
        }
    }
}

/// The memory locker through its inherent methods: what a caller that holds a
/// `MemoryLocker` (not a `dyn Locker`) pays. Keys are named like [`LockerContender`]'s, so
/// validation and hashing cost the same.
pub struct DirectMemory {
    locker: MemoryLocker,
    requests: Vec<LeaseRequest>,
}

impl DirectMemory {
    /// A fresh memory locker with `keys` keys.
    pub fn new(keys: usize) -> Self {
        DirectMemory { locker: MemoryLocker::new(), requests: bench_requests(keys.max(1)) }
    }
}

impl Contender for DirectMemory {
    type Held = Lease;

    fn name(&self) -> String {
        "memory (direct)".to_owned()
    }

    fn keys(&self) -> usize {
        self.requests.len()
    }

    async fn try_lock(&self, _client: usize, key: usize) -> Result<Option<Lease>, BenchError> {
        Ok(self.locker.try_acquire(&self.requests[key]).await?)
    }

    async fn lock(&self, _client: usize, key: usize) -> Result<Lease, BenchError> {
        Ok(self.locker.acquire(&self.requests[key], BENCH_WAIT).await?)
    }

    async fn unlock(&self, lease: Lease) -> Result<(), BenchError> {
        if self.locker.release(&lease).await? {
            Ok(())
        } else {
            Err(BenchError::LeaseLost { key: lease.key().to_owned() })
        }
    }
}

/// `tokio::sync::Mutex` per key: the floor of the in-memory locker (FIFO, like it).
///
/// Held as an `OwnedMutexGuard` because a held key must outlive the call that took it; the
/// `Arc` clone this costs (~1 ns uncontended) is the floor's only overhead.
pub struct TokioMutexFloor {
    mutexes: Vec<Arc<tokio::sync::Mutex<()>>>,
}

impl TokioMutexFloor {
    /// `keys` independent mutexes.
    pub fn new(keys: usize) -> Self {
        TokioMutexFloor { mutexes: (0..keys.max(1)).map(|_| Arc::new(tokio::sync::Mutex::new(()))).collect() }
    }
}

impl Contender for TokioMutexFloor {
    type Held = tokio::sync::OwnedMutexGuard<()>;

    fn name(&self) -> String {
        "tokio::sync::Mutex".to_owned()
    }

    fn keys(&self) -> usize {
        self.mutexes.len()
    }

    async fn try_lock(&self, _client: usize, key: usize) -> Result<Option<Self::Held>, BenchError> {
        Ok(self.mutexes[key].clone().try_lock_owned().ok())
    }

    async fn lock(&self, _client: usize, key: usize) -> Result<Self::Held, BenchError> {
        Ok(self.mutexes[key].clone().lock_owned().await)
    }

    async fn unlock(&self, held: Self::Held) -> Result<(), BenchError> {
        drop(held);
        Ok(())
    }
}
