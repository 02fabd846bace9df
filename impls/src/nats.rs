//! The NATS JetStream KV locker: one KV entry per held lock, expired by the server.
//!
//! # How it works
//!
//! * **Acquire** publishes the key's entry *only if the key is free*: a publish to the KV
//!   subject with `Nats-Expected-Last-Subject-Sequence` set to the key's last revision when
//!   that revision is a tombstone (or 0 when the key has no message at all). JetStream
//!   checks the expectation and stores the message atomically, so two racing creates cannot
//!   both succeed. The entry's value is the holder's [`OwnerToken`] and the TTL.
//! * **Fencing tokens are the entry's KV revision.** A KV bucket is one JetStream stream, and
//!   a stream assigns every stored message the next sequence number of the *whole stream*,
//!   never reusing or lowering one (purges and expiries move the first sequence, not the
//!   last). A later grant of a key is a later message of the stream, so its revision is
//!   strictly larger — across keys, across clients, and across server restarts as long as
//!   the stream's storage survives (file storage, the default). In a cluster the stream
//!   leader assigns sequences through the stream's Raft group, so a failover keeps them
//!   monotonic too. A stream whose storage is lost starts again at 1: fencing does not
//!   survive that, and neither do the locks.
//! * **Release and refresh are revision-checked**: the entry is purged or rewritten only
//!   with `Nats-Expected-Last-Subject-Sequence` equal to the revision at which this holder's
//!   owner token was read. If anyone else wrote the key in between (the lease expired and
//!   someone else took it), JetStream refuses and nothing changes: a holder never deletes
//!   or overwrites another holder's entry.
//! * **Server-side expiry** uses per-message TTLs (`Nats-TTL`, NATS ≥ 2.11) on a bucket with
//!   limit markers (`subject_delete_marker_ttl`): when a lease's TTL runs out, the server
//!   removes the entry and writes a purge marker on the key, which wakes a waiter. A crashed
//!   holder's lock therefore frees within its TTL (plus the server's expiry timer slack) —
//!   the original Go locker kept the TTL in a timer in the holder's process, so a crashed
//!   holder held the lock forever.
//! * **Waiting is push-based, and wakes one waiter**: the bucket's stream republishes the
//!   headers of every message it stores on core NATS, and a waiter subscribes to its key's
//!   subject in a queue group *before* the look that finds the key held, so NATS hands every
//!   release (or expiry marker) of the key to exactly one waiter, which creates over it with
//!   the marker's revision as the expectation — one round trip, no herd, no JetStream
//!   consumer per waiter or per locker. `nats/wakeups.rs` argues why no wake-up is lost.
//! * **A contended release hands the lease over in one write**: a holder that expects waiters
//!   offers its lease to the queue group (a core NATS request naming the lease's revision),
//!   and the waiter NATS picks rewrites the entry as its own lease, revision-checked against
//!   the offered revision — one JetStream write per hand-off instead of a purge and a create.
//!   Nobody waiting, a declined offer or no answer within [`OFFER_TIMEOUT`]: the release
//!   purges as above ("Hand-off by offer" in `nats/wakeups.rs`).
//!
//! # Pitfalls of the client library this locker avoids
//!
//! * `Nats-TTL` travels in **whole seconds**. A TTL that is not a whole number of seconds is
//!   rounded *up* on the server ([`server_ttl`]); the lease keeps the TTL the caller asked
//!   for, so neither the holder's belief ([`Lease::expires_at`]) nor the remaining TTL the
//!   locker reports outlives the server's expiry.
//!   The price: a crashed holder's lock may stay held up to a second longer than asked.
//! * `async-nats`'s `create_with_ttl` falls back to a plain `update` (without the TTL) when
//!   the key holds a delete or purge tombstone — a lease that would never expire. This
//!   locker publishes the create itself, always with the TTL header.
//! * A KV `update` cannot carry a TTL, so refresh publishes the rewrite itself with
//!   `Nats-TTL` and the expected revision: the new message replaces the old one (history 1)
//!   and its own TTL counts from now.
//!
//! # Keys
//!
//! NATS KV keys allow only `[-/_=.a-zA-Z0-9]` and use `.` as a token separator, while a
//! lockcheck key is any non-whitespace, non-control UTF-8 string of up to 200 bytes. Keys are
//! mapped reversibly ([`encode_key`]): ASCII letters, digits, `-`, `_` and `/` stay as they
//! are, every other byte (including `=` and `.`) becomes `=` and two uppercase hex digits.
//!
//! # Limits
//!
//! Semaphores (permit limits above 1) are not offered: [`Capabilities::semaphores`] is false
//! and such requests fail with [`LockError::Unsupported`]. Waiters are not granted in FIFO
//! order: NATS hands each release to a waiter it picks at random.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use tokio::time::Instant;

use crate::Capabilities;
use crate::LeaseRequest;
use crate::LockError;
use crate::Locker;
use crate::{Lease, OwnerToken};
use crate::{Queued, QueuedCount};

mod acquire;
mod bucket;
mod entry;
mod memo;
mod release;
mod stream;
mod wakeups;

pub use bucket::{BucketConfig, DEFAULT_BUCKET, DEFAULT_MARKER_TTL};
pub use entry::{decode_key, encode_key, server_ttl};
use wakeups::Reconnects;
pub use wakeups::{OFFER_TIMEOUT, RECHECK_AFTER};

/// A locker on a NATS JetStream KV bucket. Cheap to clone; clones share one connection.
///
/// ```no_run
/// use std::time::Duration;
/// use lockcheck_impls::{LeaseRequest, Locker, nats::{BucketConfig, NatsLocker}};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let locker = NatsLocker::connect("nats://127.0.0.1:4222", BucketConfig::new("locks")).await?;
/// let lease = locker.acquire(&LeaseRequest::lock("invoice-42", Duration::from_secs(10)), Duration::from_secs(1)).await?;
/// assert!(locker.release(&lease).await?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct NatsLocker {
    inner: Arc<Inner>,
}

struct Inner {
    js: jetstream::Context,
    kv: kv::Store,
    /// `$KV.<bucket>.`: prefix of every key's subject.
    subject_prefix: String,
    describe: String,
    marker_ttl: Duration,
    /// Whether the bucket's stream lives in memory (leases and fencing die with the server).
    memory_storage: bool,
    /// Whether contended releases offer their lease first ([`BucketConfig::offers`]).
    offers: bool,
    /// Whether reads may be direct gets: the stream has one replica (none to be stale) and
    /// allows them (see `Inner::entry`).
    direct_reads: bool,
    /// The entry revision of every live lease this locker granted or refreshed, by key and
    /// owner token. Lets release and refresh of those leases skip reading the entry (one
    /// round trip instead of two). Keyed by the *secret* owner token: the fencing token is
    /// public (resources see it), so a lease that merely names the right fence must still
    /// prove ownership by a read.
    revisions: Mutex<HashMap<(String, OwnerToken), Known>>,
    /// The revision of this locker's last release of each key (encoded): the revision a
    /// create of that key most likely has to expect. A stale guess costs a conflict and a
    /// read, as no guess would.
    released: Mutex<HashMap<String, u64>>,
    /// When this locker last found each key (encoded) held. An acquire of a key found held
    /// within [`CONTENDED_FOR`] joins the waiters and reads before it creates: on a contended
    /// key a create would only be refused, and a refusal does not say whether the key is
    /// held, so a read would follow it anyway.
    found_held: Mutex<HashMap<String, Instant>>,
    /// The bucket's name (its waiters' notices are republished under it).
    bucket: String,
    /// The connection's re-establishments; waiters look again after each.
    reconnects: Reconnects,
    /// What [`NatsLocker::stats`] reports.
    stats: Counters,
}

/// The live counters behind [`NatsStats`].
#[derive(Default)]
struct Counters {
    /// Watchable, not an atomic: [`Locker::queued`] lets a caller await a waiter being
    /// queued.
    waiting: QueuedCount,
    creates_refused: AtomicU64,
    grants_after_recheck: AtomicU64,
    offers_taken: AtomicU64,
    offers_unanswered: AtomicU64,
}

/// What a [`NatsLocker`] has seen of contention, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsStats {
    /// Acquires waiting for a wake-up now: joined to their key's waiters, and have found it
    /// held since.
    pub waiting: u64,
    /// Creates the server refused because the key was no longer what they expected: a try on
    /// a held key, or a race lost. A release wakes one waiter, so a hand-off costs none.
    pub creates_refused: u64,
    /// Acquires that got the lock by looking at the key after hearing nothing for
    /// [`RECHECK_AFTER`], not by a wake-up. Each is a wake-up that did not arrive (a notice
    /// lost with a connection, or a clustered stream's leader changing hands); a healthy run
    /// has none.
    pub grants_after_recheck: u64,
    /// Releases that handed the lease straight to a waiter (see "Hand-off by offer" in
    /// `nats/wakeups.rs`).
    pub offers_taken: u64,
    /// Offers no waiter answered within [`OFFER_TIMEOUT`] (the release then purged): each
    /// cost its release that long. A waiter that leaves declines its offers, so a healthy
    /// run has none.
    pub offers_unanswered: u64,
}

/// What [`Inner::revisions`] remembers of a lease.
#[derive(Clone, Copy)]
struct Known {
    revision: u64,
    /// The server's expiry, by the local clock; past it the entry is useless.
    expires_at: Instant,
}

/// How long a key this locker found held counts as contended (see `Inner::found_held`).
const CONTENDED_FOR: Duration = Duration::from_secs(1);

/// Past this many remembered leases, forget the expired ones.
const REMEMBERED_LEASES: usize = 4096;

impl NatsLocker {
    /// The KV store (for tests and tools that inspect entries).
    pub fn store(&self) -> &kv::Store {
        &self.inner.kv
    }

    /// What this locker has seen of contention so far.
    pub fn stats(&self) -> NatsStats {
        let stats = &self.inner.stats;
        NatsStats {
            waiting: stats.waiting.now(),
            creates_refused: stats.creates_refused.load(Ordering::Relaxed),
            grants_after_recheck: stats.grants_after_recheck.load(Ordering::Relaxed),
            offers_taken: stats.offers_taken.load(Ordering::Relaxed),
            offers_unanswered: stats.offers_unanswered.load(Ordering::Relaxed),
        }
    }
}

#[async_trait]
impl Locker for NatsLocker {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    fn capabilities(&self) -> Capabilities {
        // A file-backed stream keeps its entries and its sequence counter across a restart; a
        // memory stream starts empty at sequence 1.
        let durable = !self.inner.memory_storage;
        Capabilities::none()
            .with_fencing(true)
            .with_fencing_survives_restart(durable)
            .with_fifo(false)
            .with_server_side_expiry(true)
            .with_survives_server_restart(durable)
            .with_semaphores(false)
            .with_push_wakeups(true)
            .with_session_bound(false)
            // JetStream ages a message by comparing its stored wall-clock timestamp with
            // `time.Now().UnixNano()`: a forward step of the server's clock expires it early.
            .with_expiry_by_monotonic_clock(false)
    }

    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        self.inner.try_acquire(request).await
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        self.inner.acquire(request, wait).await
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        self.inner.release(lease).await
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        self.inner.refresh(lease, ttl).await
    }

    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        self.inner.remaining_ttl(lease).await
    }

    /// The acquires waiting for a wake-up ([`NatsStats::waiting`]). An acquire counts once it
    /// has joined its key's waiters *and* found the key held, so its subscription is at the
    /// server: from then on every release of the key is announced to it.
    fn queued(&self) -> Option<Queued> {
        Some(self.inner.stats.waiting.queued())
    }
}

#[cfg(test)]
mod tests;
