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
//!   for, so the holder's belief ([`Lease::expires_at`]) never outlives the server's expiry.
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
use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture, context::PublishErrorKind, kv};
use async_trait::async_trait;
use tokio::time::{Instant, sleep_until};

use crate::Capabilities;
use crate::cleanup;
use crate::error::{InvalidInput, LockError};
use crate::lease::{FencingToken, Lease, OwnerToken};
use crate::locker::Locker;
use crate::queued::{Queued, QueuedCount};
use crate::request::{LeaseRequest, validate_ttl, validate_wait};

mod wakeups;

pub use wakeups::{OFFER_TIMEOUT, RECHECK_AFTER};
use wakeups::{Offered, Reconnects, Waiting, Wake};

/// The bucket a [`NatsLocker`] uses when none is named.
pub const DEFAULT_BUCKET: &str = "lockcheck";

/// How long the server keeps the purge marker it writes when a lease expires, and the
/// marker this locker writes on release. Long enough for a waiter to read it; short
/// enough that tombstones of one-off keys do not pile up in the bucket.
pub const DEFAULT_MARKER_TTL: Duration = Duration::from_secs(60);

/// How a [`NatsLocker`] sets up its bucket.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BucketConfig {
    /// The KV bucket's name (`[-_a-zA-Z0-9]+`).
    pub name: String,
    /// Replicas of the bucket's stream: 1 on a single server, 3 on a three-node cluster.
    pub replicas: usize,
    /// Keep entries in memory instead of on disk. Memory buckets lose every lock (and the
    /// fencing counter) when the server restarts.
    pub memory_storage: bool,
    /// See [`DEFAULT_MARKER_TTL`].
    pub marker_ttl: Duration,
    /// Whether a contended release offers its lease to a waiter before it purges (see "Hand-off
    /// by offer" in `nats/wakeups.rs`; on by default). Off, every release purges and the woken
    /// waiter creates: two JetStream writes per hand-off, but a waiter that vanishes with an
    /// offer can never cost a release [`OFFER_TIMEOUT`]. A locker setting, not the bucket's:
    /// lockers with and without it share a bucket.
    pub offers: bool,
}

impl BucketConfig {
    /// A file-backed single-replica bucket called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        BucketConfig {
            name: name.into(),
            replicas: 1,
            memory_storage: false,
            marker_ttl: DEFAULT_MARKER_TTL,
            offers: true,
        }
    }

    /// The same bucket with `replicas` replicas.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// The hosts and bucket a backend URL names: `nats://host:port[,host:port…][?bucket=B]
    /// [&replicas=N][&storage=memory|file][&offers=on|off]` (bucket [`DEFAULT_BUCKET`], one
    /// replica, file storage, offers on unless given).
    pub fn from_url(url: &str) -> Result<(String, BucketConfig), InvalidInput> {
        let rest = url.strip_prefix("nats://").unwrap_or(url);
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        if hosts.split(',').all(|host| host.trim().is_empty()) {
            return Err(InvalidInput::Backend(format!("no NATS hosts in {url}")));
        }
        let mut bucket = BucketConfig::default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let bad = || {
                InvalidInput::Backend(format!(
                    "bad NATS URL parameter {pair:?} in {url} (bucket=B, replicas=N, storage=memory|file, \
                     offers=on|off)"
                ))
            };
            match pair.split_once('=').ok_or_else(bad)? {
                ("bucket", name) if !name.is_empty() => bucket.name = name.to_owned(),
                ("replicas", n) => bucket.replicas = n.parse().map_err(|_| bad())?,
                ("storage", "memory") => bucket.memory_storage = true,
                ("storage", "file") => bucket.memory_storage = false,
                ("offers", "on") => bucket.offers = true,
                ("offers", "off") => bucket.offers = false,
                _ => return Err(bad()),
            }
        }
        Ok((hosts.to_owned(), bucket))
    }

    /// The same bucket, used by a locker that never offers its leases (see
    /// [`BucketConfig::offers`]).
    pub fn without_offers(mut self) -> Self {
        self.offers = false;
        self
    }

    /// The same bucket kept in memory.
    pub fn in_memory(mut self) -> Self {
        self.memory_storage = true;
        self
    }
}

impl Default for BucketConfig {
    fn default() -> Self {
        BucketConfig::new(DEFAULT_BUCKET)
    }
}

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
    /// Connects to `url` (`nats://host:port`, comma-separated for a cluster) and opens or
    /// creates the bucket.
    pub async fn connect(url: &str, bucket: BucketConfig) -> Result<Self, LockError> {
        let servers = url
            .split(',')
            .map(|host| {
                let host = host.trim();
                let with_scheme = if host.contains("://") { host.to_owned() } else { format!("nats://{host}") };
                with_scheme.parse::<async_nats::ServerAddr>().map_err(|e| {
                    LockError::from(InvalidInput::Backend(format!("bad NATS server address {host:?}: {e}")))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let reconnects = Reconnects::new();
        let on_connect = reconnects.clone();
        let client = async_nats::ConnectOptions::new()
            .event_callback(move |event| {
                if let async_nats::Event::Connected = event {
                    on_connect.connected();
                }
                std::future::ready(())
            })
            // The first connection must succeed (each server tried once, within the
            // connection timeout): a server that cannot be reached is reported at once, with
            // its address, instead of as a JetStream time-out minutes later. Once connected,
            // the client reconnects for ever.
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .connect(servers.as_slice())
            .await
            .map_err(|e| unavailable(format!("cannot connect to NATS at {url}: {e}"), e))?;
        let hosts: Vec<&str> = url.split(',').map(|host| host.trim().trim_start_matches("nats://")).collect();
        let describe = format!("nats://{}?bucket={}", hosts.join(","), bucket.name);
        Self::open_bucket(client, &describe, bucket, reconnects).await
    }

    /// Opens the locker a backend URL names (see [`BucketConfig::from_url`]).
    pub async fn open(url: &str) -> Result<Self, LockError> {
        let (hosts, bucket) = BucketConfig::from_url(url)?;
        Self::connect(&hosts, bucket).await
    }

    /// Uses an existing connection; `describe` names the backend in reports. Waiters cannot
    /// see this connection's reconnections, so a notice lost to one costs them up to
    /// [`RECHECK_AFTER`] (a locker from [`NatsLocker::connect`] looks again at once).
    pub async fn with_client(
        client: async_nats::Client,
        describe: &str,
        bucket: BucketConfig,
    ) -> Result<Self, LockError> {
        Self::open_bucket(client, describe, bucket, Reconnects::new()).await
    }

    async fn open_bucket(
        client: async_nats::Client,
        describe: &str,
        bucket: BucketConfig,
        reconnects: Reconnects,
    ) -> Result<Self, LockError> {
        let js = jetstream::new(client);
        let config = kv::Config {
            bucket: bucket.name.clone(),
            description: "lockcheck leases: one entry per held lock".to_owned(),
            history: 1,
            num_replicas: bucket.replicas,
            storage: if bucket.memory_storage {
                jetstream::stream::StorageType::Memory
            } else {
                jetstream::stream::StorageType::File
            },
            limit_markers: Some(bucket.marker_ttl),
            republish: Some(wakeups::republish_for(&bucket.name)),
            ..Default::default()
        };
        let kv = match js.create_key_value(config).await {
            Ok(kv) => kv,
            // It exists with another configuration (say, other replicas): use it as it is,
            // but only if it can expire leases.
            Err(create_error) => js.get_key_value(bucket.name.clone()).await.map_err(|e| {
                unavailable(format!("cannot create ({create_error}) or open KV bucket {}", bucket.name), e)
            })?,
        };
        let mut stream = js
            .get_stream(kv.stream_name.clone())
            .await
            .map_err(|e| unavailable(format!("cannot read the configuration of bucket {}", bucket.name), e))?;
        let mut config =
            stream.info().await.map_err(|e| unavailable("cannot read the bucket's stream info", e))?.config.clone();
        if !config.allow_message_ttl || config.subject_delete_marker_ttl.is_none() {
            return Err(LockError::unavailable(format!(
                "KV bucket {} has no per-message TTLs or limit markers (needs NATS ≥ 2.11 and a bucket created with \
                 limit markers); without them a crashed holder's lock would never expire",
                bucket.name
            )));
        }
        let republish = wakeups::republish_for(&bucket.name);
        match &config.republish {
            Some(existing) if *existing == republish => {}
            // A bucket made before waiters were woken this way (or by another tool): add the
            // rule, which changes nothing else about the bucket.
            None => {
                config.republish = Some(republish);
                js.update_stream(config.clone()).await.map_err(|e| {
                    unavailable(format!("cannot add the waiters' republish rule to bucket {}", bucket.name), e)
                })?;
            }
            Some(other) => {
                return Err(LockError::unavailable(format!(
                    "KV bucket {} already republishes {} to {}; its waiters need {} to {}",
                    bucket.name, other.source, other.destination, republish.source, republish.destination
                )));
            }
        }
        let subject_prefix = kv.put_prefix.clone().unwrap_or_else(|| kv.prefix.clone());
        Ok(NatsLocker {
            inner: Arc::new(Inner {
                js,
                kv,
                subject_prefix,
                describe: describe.to_owned(),
                marker_ttl: bucket.marker_ttl,
                memory_storage: config.storage == jetstream::stream::StorageType::Memory,
                offers: bucket.offers,
                direct_reads: config.num_replicas == 1 && config.allow_direct,
                revisions: Mutex::new(HashMap::new()),
                released: Mutex::new(HashMap::new()),
                found_held: Mutex::new(HashMap::new()),
                bucket: bucket.name.clone(),
                reconnects,
                stats: Counters::default(),
            }),
        })
    }

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

/// The TTL the server enforces for a requested TTL: whole seconds, rounded up.
pub fn server_ttl(ttl: Duration) -> Duration {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

/// Maps a lockcheck key to a NATS KV key, reversibly (see the module docs).
pub fn encode_key(key: &str) -> String {
    let mut encoded = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'/') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("={byte:02X}"));
        }
    }
    encoded
}

/// The inverse of [`encode_key`]; `None` for strings it never produces.
pub fn decode_key(encoded: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'=' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// What a lease's entry holds: the owner token, the server TTL in seconds, and — for a lease
/// a waiter took over from an offering holder — the revision of the lease it replaced.
fn entry_value(owner: OwnerToken, ttl: Duration, taken_over: Option<u64>) -> String {
    match taken_over {
        Some(revision) => format!("{owner} {} {revision}", server_ttl(ttl).as_secs()),
        None => format!("{owner} {}", server_ttl(ttl).as_secs()),
    }
}

/// The owner token and server TTL (seconds) of a lease's entry.
fn parse_entry(value: &[u8]) -> Option<(OwnerToken, u64)> {
    let mut fields = std::str::from_utf8(value).ok()?.split(' ');
    let (owner, secs) = (fields.next()?, fields.next()?);
    Some((owner.parse().ok()?, secs.parse().ok()?))
}

/// The revision of the lease an entry took over, if a waiter wrote it on an offer.
fn taken_over_in(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.split(' ').nth(2)?.parse().ok()
}

fn unavailable(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> LockError {
    LockError::Unavailable { message: message.into(), source: Some(Box::new(source)) }
}

fn is_clustered_wrong_last_sequence(error: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|error| error.error_code() == jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT)
}

/// The key's actual last revision, where JetStream's refusal names it ("wrong last sequence:
/// 42" from a single server; a clustered leader's refusal does not).
fn last_sequence_in(error: &jetstream::context::PublishError) -> Option<u64> {
    let error = std::error::Error::source(error)?.downcast_ref::<jetstream::Error>()?.to_string();
    let (_, rest) = error.split_once("wrong last sequence: ")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit()).map_or(rest, |end| &rest[..end]);
    digits.parse().ok()
}

/// What JetStream's answer to a conditional publish means.
fn published(
    operation: &'static str,
    answer: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
) -> Result<Published, LockError> {
    match answer {
        Ok(ack) => Ok(Published::Stored(ack.sequence)),
        Err(e) => match e.kind() {
            PublishErrorKind::WrongLastSequence => Ok(Published::Conflict { last: last_sequence_in(&e) }),
            // A clustered stream's leader reports the same refusal under another code
            // (10164, "wrong last sequence" without the number).
            PublishErrorKind::Other if is_clustered_wrong_last_sequence(&e) => Ok(Published::Conflict { last: None }),
            PublishErrorKind::StreamNotFound => {
                Err(unavailable(format!("{operation}: no JetStream stream answers"), e))
            }
            PublishErrorKind::Other => Err(LockError::Unavailable {
                message: format!("{operation}: JetStream refused the publish"),
                source: Some(Box::new(e)),
            }),
            _ => Err(LockError::Indeterminate {
                operation,
                message: "no acknowledgement from JetStream".to_owned(),
                source: Some(Box::new(e)),
            }),
        },
    }
}

/// What a message of the bucket is, from its headers (a stored message's, or the copy the
/// stream republishes to waiters): a lease entry, or a removal — this locker's purge, a KV
/// delete, or a marker the server wrote when a lease's TTL ran out ("MaxAge").
fn operation_of(headers: &HeaderMap) -> kv::Operation {
    match (headers.get("KV-Operation"), headers.get(async_nats::header::NATS_MARKER_REASON)) {
        (Some(op), _) if op.as_str() == "DEL" => kv::Operation::Delete,
        (Some(op), _) if op.as_str() == "PURGE" => kv::Operation::Purge,
        (None, Some(reason)) if reason.as_str() == "Remove" => kv::Operation::Delete,
        (None, Some(_)) => kv::Operation::Purge,
        _ => kv::Operation::Put,
    }
}

/// The outcome of one conditional publish.
enum Published {
    Stored(u64),
    /// The key's last revision was not the expected one: nothing changed. `last` is the
    /// revision it was, if the server said.
    Conflict {
        last: Option<u64>,
    },
}

/// What a create expects the key's last revision to be.
#[derive(Clone)]
enum Expect {
    /// Nothing known: this locker's last release of the key, else no message at all.
    Guess,
    /// Read the key first: a try that already failed would fail again on a guess.
    Read,
    /// The revision of a removal a wake-up announced.
    Freed(u64),
    /// The revision of a lease its holder offered; the outcome is answered to `reply`.
    Offered { revision: u64, reply: async_nats::Subject },
}

impl From<Wake> for Expect {
    fn from(wake: Wake) -> Self {
        match wake {
            Wake::Freed(revision) => Expect::Freed(revision),
            Wake::Recheck => Expect::Read,
            Wake::Offered { revision, reply } => Expect::Offered { revision, reply },
        }
    }
}

/// The outcome of one look at a key.
enum Attempt {
    Granted(Lease),
    /// Someone holds it.
    Held,
    /// The look was refused, and a wake-up that explains why had already arrived: act on it
    /// rather than read the key.
    Woken(Wake),
}

impl Inner {
    fn revisions(&self) -> std::sync::MutexGuard<'_, HashMap<(String, OwnerToken), Known>> {
        // Only plain inserts and removes happen under this lock: poisoning cannot leave it
        // inconsistent.
        self.revisions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember(&self, key: &str, owner: OwnerToken, revision: u64, expires_at: Instant) {
        let mut revisions = self.revisions();
        if revisions.len() >= REMEMBERED_LEASES {
            let now = Instant::now();
            revisions.retain(|_, known| known.expires_at > now);
        }
        revisions.insert((key.to_owned(), owner), Known { revision, expires_at });
    }

    fn forget(&self, key: &str, owner: OwnerToken) {
        self.revisions().remove(&(key.to_owned(), owner));
    }

    fn known_revision(&self, key: &str, owner: OwnerToken) -> Option<u64> {
        self.revisions().get(&(key.to_owned(), owner)).map(|known| known.revision)
    }

    fn subject(&self, encoded_key: &str) -> String {
        format!("{}{encoded_key}", self.subject_prefix)
    }

    /// Publishes `value` on the key only if its last revision is `expected` (0: no message).
    async fn publish_expecting(
        &self,
        operation: &'static str,
        encoded_key: &str,
        expected: u64,
        headers: HeaderMap,
        value: String,
    ) -> Result<Published, LockError> {
        let ack = self.send_expecting(operation, encoded_key, expected, headers, value).await?;
        published(operation, ack.await)
    }

    /// Sends `value` for the key on condition that its last revision is `expected` (0: no
    /// message); the returned future brings JetStream's answer.
    async fn send_expecting(
        &self,
        operation: &'static str,
        encoded_key: &str,
        expected: u64,
        headers: HeaderMap,
        value: String,
    ) -> Result<PublishAckFuture, LockError> {
        let mut headers = headers;
        headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, expected.to_string().as_str());
        self.js
            .publish_with_headers(self.subject(encoded_key), headers, value.into())
            .await
            .map_err(|e| unavailable(format!("{operation}: could not send to NATS"), e))
    }

    /// The key's last entry, read from the stream's *leader*. Not `kv.entry`: KV buckets
    /// allow direct gets, which any replica of a clustered stream may answer — possibly one
    /// that has not applied the latest create or purge yet. A stale read here would make a
    /// holder's release report "not held", or a waiter believe a freed key is still taken.
    ///
    /// A single-replica stream has no other replica to be stale: there the read is a direct
    /// get (where the stream allows them, as KV buckets do), which the stream answers itself
    /// instead of the JetStream API's request handler — cheaper, and every waiter reads once
    /// when it arrives.
    async fn entry(&self, operation: &'static str, encoded_key: &str) -> Result<Option<kv::Entry>, LockError> {
        use jetstream::stream::{DirectGetErrorKind, LastRawMessageErrorKind};
        let subject = self.subject(encoded_key);
        let cannot_read = format!("{operation}: cannot read the key's entry");
        let message = if self.direct_reads {
            match self.kv.stream.direct_get_last_for_subject(subject).await {
                Ok(message) => message,
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(unavailable(cannot_read, e)),
            }
        } else {
            match self.kv.stream.get_last_raw_message_by_subject(&subject).await {
                Ok(message) => message,
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
                Err(e) => return Err(unavailable(cannot_read, e)),
            }
        };
        let operation = operation_of(&message.headers);
        Ok(Some(kv::Entry {
            bucket: self.kv.name.clone(),
            key: encoded_key.to_owned(),
            value: message.payload,
            revision: message.sequence,
            delta: 0,
            created: message.time,
            operation,
            seen_current: false,
        }))
    }

    fn released(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.released.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn found_held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.found_held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this locker found the key held within [`CONTENDED_FOR`].
    fn is_contended(&self, encoded_key: &str) -> bool {
        self.found_held().get(encoded_key).is_some_and(|at| at.elapsed() < CONTENDED_FOR)
    }

    fn note_found_held(&self, encoded_key: &str) {
        let mut found_held = self.found_held();
        if found_held.len() >= REMEMBERED_LEASES {
            found_held.retain(|_, at| at.elapsed() < CONTENDED_FOR);
        }
        found_held.insert(encoded_key.to_owned(), Instant::now());
    }

    fn note_release(&self, encoded_key: &str, revision: u64) {
        let mut released = self.released();
        if released.len() >= REMEMBERED_LEASES {
            released.clear();
        }
        released.insert(encoded_key.to_owned(), revision);
    }

    /// One attempt to take a free key. `waiting`: the caller's membership of the key's
    /// waiters, joined before this attempt, so every later change of the key is announced to
    /// them (see [`wakeups`]).
    ///
    /// Cancel-safe: dropped while its create is on the wire, it leaves a task to await the
    /// answer and remove the entry if it was stored ([`PendingCreate`]); a create whose answer
    /// never comes is removed if it was stored (an indeterminate outcome).
    async fn create(
        self: &Arc<Self>,
        request: &LeaseRequest,
        expect: Expect,
        mut waiting: Option<&mut Waiting>,
    ) -> Result<Attempt, LockError> {
        let joined = waiting.is_some();
        let owner = OwnerToken::random();
        let encoded = encode_key(request.key());
        let ttl = request.ttl();
        let mut offer = None;
        // What the key's last revision is expected to be, and whether that was learnt after
        // joining (then anything that replaced it has been announced to the waiters).
        let (mut expected, mut learnt_after_joining) = match expect {
            // Most keys are absent (expect 0), held, or last released by this locker; another
            // client's tombstone costs one extra read.
            Expect::Guess => (self.released().get(&encoded).copied().unwrap_or(0), false),
            Expect::Read => match self.entry("acquire", &encoded).await? {
                Some(entry) if entry.operation == kv::Operation::Put => return Ok(Attempt::Held),
                Some(tombstone) => (tombstone.revision, joined),
                None => (0, false),
            },
            Expect::Freed(revision) => (revision, joined),
            // Not "learnt after joining": the offer may be stale (its holder's lease replaced
            // before this waiter joined), so a refused take-over reads the key.
            Expect::Offered { revision, reply } => {
                offer = Some(reply);
                (revision, false)
            }
        };
        // Each conflict means the key changed under us; a key cannot churn forever between a
        // read and a write of the same client, but bound the loop rather than trust that.
        for _ in 0..16 {
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_TTL, server_ttl(ttl).as_secs().to_string().as_str());
            let answer_to = offer.take();
            let value = entry_value(owner, ttl, answer_to.as_ref().map(|_| expected));
            let sent_at = Instant::now();
            let ack = self.send_expecting("acquire", &encoded, expected, headers, value).await?;
            let ack = Some(ack.into_future());
            let pending =
                PendingCreate { inner: self, key: request.key(), encoded_key: &encoded, owner, ack, answer_to };
            let answer = pending.answer().await;
            match answer? {
                Published::Stored(revision) => {
                    self.remember(request.key(), owner, revision, sent_at + server_ttl(ttl));
                    let lease = Lease::new(request.key(), owner, FencingToken(revision), ttl, sent_at, 1);
                    return Ok(Attempt::Granted(lease));
                }
                // `expected` was the key's last revision after joining, and something later
                // replaced it: that was announced to the waiters (and whatever frees the key
                // after it will be). Wait instead of reading — after a hand-off every waiter
                // that lost a race lands here, and their reads would queue before the next one.
                Published::Conflict { last: Some(last) } if learnt_after_joining && last > expected => {
                    self.stats.creates_refused.fetch_add(1, Ordering::Relaxed);
                    return Ok(Attempt::Held);
                }
                Published::Conflict { last } => {
                    self.stats.creates_refused.fetch_add(1, Ordering::Relaxed);
                    // What changed the key may have been announced already (an arrival that
                    // raced a release finds the release's offer or notice waiting): acting on
                    // it is a look after joining too, and saves the read.
                    if let Some(wake) = waiting.as_deref_mut().and_then(Waiting::arrived) {
                        return Ok(Attempt::Woken(wake));
                    }
                    let entry = self.entry("acquire", &encoded).await?;
                    // The read shows what the create expected, yet the create was refused: a
                    // clustered stream's leader (whose refusal names no sequence) checks
                    // against the writes it has accepted, while reads show those it has
                    // applied. Another client's create is accepted and not applied yet: the
                    // key is being taken. (Under load this outlasted 16 read–write rounds in
                    // the cluster suite.)
                    let unapplied = last.is_none() && entry.as_ref().map_or(0, |entry| entry.revision) == expected;
                    match entry {
                        Some(entry) if entry.operation == kv::Operation::Put => return Ok(Attempt::Held),
                        _ if unapplied => return Ok(Attempt::Held),
                        Some(tombstone) => (expected, learnt_after_joining) = (tombstone.revision, joined),
                        None => (expected, learnt_after_joining) = (0, false),
                    }
                }
            }
        }
        Err(LockError::unavailable(format!("acquire: key {:?} kept changing between read and write", request.key())))
    }

    /// The revision of `lease`'s entry if it is still this holder's.
    async fn held_revision(&self, operation: &'static str, lease: &Lease) -> Result<Option<kv::Entry>, LockError> {
        let entry = self.entry(operation, &encode_key(lease.key())).await?;
        Ok(entry.filter(|entry| is_held_by(entry, lease)))
    }

    /// Writes the key's purge marker if its last revision is still `expected`. Without the
    /// `Nats-Rollup` header a KV purge carries: the bucket keeps one message per key, so the
    /// marker replaces the lease anyway, and a rollup makes the server run a subject purge
    /// besides: with it a release took 2.7× the NATS round trip to be acknowledged, without it
    /// 1.9–2.1× (`cargo run --release -p lockcheck-bench --example nats_hand_off_split`).
    async fn purge(&self, encoded_key: &str, expected: u64) -> Result<Published, LockError> {
        let mut headers = HeaderMap::new();
        headers.insert("KV-Operation", "PURGE");
        headers
            .insert(async_nats::header::NATS_MESSAGE_TTL, server_ttl(self.marker_ttl).as_secs().to_string().as_str());
        let published = self.publish_expecting("release", encoded_key, expected, headers, String::new()).await?;
        if let Published::Stored(revision) = published {
            self.note_release(encoded_key, revision);
        }
        Ok(published)
    }

    /// Rewrites `lease`'s entry with a fresh TTL if its last revision is still `revision`.
    async fn rewrite(&self, lease: &Lease, ttl: Duration, revision: u64) -> Result<Option<Lease>, LockError> {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_TTL, server_ttl(ttl).as_secs().to_string().as_str());
        let sent_at = Instant::now();
        let encoded = encode_key(lease.key());
        let value = entry_value(lease.owner(), ttl, None);
        Ok(match self.publish_expecting("refresh", &encoded, revision, headers, value).await? {
            Published::Stored(new_revision) => {
                self.remember(lease.key(), lease.owner(), new_revision, sent_at + server_ttl(ttl));
                Some(lease.refreshed(ttl, sent_at))
            }
            Published::Conflict { .. } => None,
        })
    }

    /// Frees the entry an ended lease may have left on the server (see [`lease_ended`]), so
    /// that it does not keep others waiting; revision-checked, so a newer holder is safe.
    async fn free_leftover(&self, lease: &Lease) {
        if let Some(revision) = self.known_revision(lease.key(), lease.owner()) {
            self.forget(lease.key(), lease.owner());
            let _ = self.purge(&encode_key(lease.key()), revision).await;
        }
    }

    /// [`Inner::release_owner`] in a task of its own, for a grant dropped where nothing can
    /// await (a cancelled acquire). If there is no runtime left, the server's TTL frees it.
    fn release_owner_later(self: &Arc<Self>, key: &str, owner: OwnerToken) {
        let (inner, key) = (self.clone(), key.to_owned());
        cleanup::spawn(async move {
            let _ = inner.release_owner(&key, owner).await;
        });
    }

    /// Releases whatever `owner` holds on `key` (cleanup of a grant nobody will use).
    async fn release_owner(&self, key: &str, owner: OwnerToken) -> Result<bool, LockError> {
        self.forget(key, owner);
        let encoded = encode_key(key);
        let Some(entry) = self.entry("release", &encoded).await? else { return Ok(false) };
        if entry.operation != kv::Operation::Put || parse_entry(&entry.value).is_none_or(|(held, _)| held != owner) {
            return Ok(false);
        }
        Ok(matches!(self.purge(&encoded, entry.revision).await?, Published::Stored(_)))
    }
}

/// Whether `entry` is `lease`'s (at its grant or a later refresh).
fn is_held_by(entry: &kv::Entry, lease: &Lease) -> bool {
    entry.operation == kv::Operation::Put
        && entry.revision >= lease.fence().0
        && parse_entry(&entry.value).is_some_and(|(owner, _)| owner == lease.owner())
}

/// Whether `entry` is a waiter's take-over of the lease offered at `offered`.
fn was_taken_over(entry: &kv::Entry, offered: Option<u64>) -> bool {
    entry.operation == kv::Operation::Put && offered.is_some() && taken_over_in(&entry.value) == offered
}

/// Whether `lease` ran out by its own clock. The server may keep its entry up to a second
/// longer (TTLs round up to whole seconds, and the server's expiry timer runs late), but the
/// lease the caller was given ended at its TTL: release and refresh then report it gone —
/// reporting "held" there is an ownership violation by the lease's own terms (seen in the
/// cluster suite: a refresh to 1.1 s, rounded to 2 s on the server, released 1.01 s late).
fn lease_ended(lease: &Lease) -> bool {
    Instant::now() >= lease.expires_at()
}

/// A create on the wire. Dropped before its answer (the acquire was cancelled, or its wait
/// bound ran out), it leaves a task that awaits the answer and removes the entry if it was
/// stored: nobody will ever use that grant. An answer that never comes (indeterminate) is
/// handled alike. A create that takes over an offered lease tells the offering holder how
/// it went (`answer_to`), on either path.
struct PendingCreate<'a> {
    inner: &'a Arc<Inner>,
    key: &'a str,
    encoded_key: &'a str,
    owner: OwnerToken,
    ack: Option<<PublishAckFuture as IntoFuture>::IntoFuture>,
    answer_to: Option<async_nats::Subject>,
}

impl PendingCreate<'_> {
    async fn answer(mut self) -> Result<Published, LockError> {
        let ack = self.ack.as_mut().expect("awaited once");
        let answer = published("acquire", ack.await);
        self.ack = None;
        if let Err(LockError::Indeterminate { .. }) = answer {
            // It may have been stored; nobody learnt the revision. Free it if so (if this
            // fails too, the server's TTL frees it).
            self.inner.release_owner_later(self.key, self.owner);
        }
        if let Some(reply) = self.answer_to.take() {
            let taken = matches!(answer, Ok(Published::Stored(_)));
            wakeups::answer(&self.inner.js.client(), reply, taken).await;
        }
        answer
    }
}

impl Drop for PendingCreate<'_> {
    fn drop(&mut self) {
        let Some(ack) = self.ack.take() else { return };
        let (inner, key, encoded_key, owner, answer_to) =
            (self.inner.clone(), self.key.to_owned(), self.encoded_key.to_owned(), self.owner, self.answer_to.take());
        cleanup::spawn(async move {
            let answer = published("acquire", ack.await);
            // The offering holder's lease is gone if the take-over was stored, even though
            // nobody will use the grant.
            if let Some(reply) = answer_to {
                wakeups::answer(&inner.js.client(), reply, matches!(answer, Ok(Published::Stored(_)))).await;
            }
            match answer {
                // Revision-checked: if anything followed the entry, it is not ours to touch.
                Ok(Published::Stored(revision)) => {
                    let _ = inner.purge(&encoded_key, revision).await;
                }
                Ok(Published::Conflict { .. }) => {}
                Err(_) => {
                    let _ = inner.release_owner(&key, owner).await;
                }
            }
        });
    }
}

/// A release's offer of its lease to a waiter (see "Hand-off by offer" in `nats/wakeups.rs`).
/// Dropped before the answer (the release was cancelled), it purges the lease in a task of
/// its own, revision-checked: a waiter's take-over wins or the purge does, never both.
struct OfferOut<'a> {
    inner: &'a Arc<Inner>,
    encoded_key: &'a str,
    /// `None` once the offer has been answered.
    revision: Option<u64>,
}

impl OfferOut<'_> {
    /// Whether a waiter took the lease over. If not, the caller purges it.
    async fn hand_over(mut self) -> bool {
        let revision = self.revision.expect("offered once");
        let client = self.inner.js.client();
        let offered = wakeups::offer(&client, &self.inner.bucket, self.encoded_key, revision).await;
        self.revision = None;
        match offered {
            Offered::Taken => {
                self.inner.stats.offers_taken.fetch_add(1, Ordering::Relaxed);
                true
            }
            Offered::Declined => false,
            Offered::Unanswered => {
                self.inner.stats.offers_unanswered.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

impl Drop for OfferOut<'_> {
    fn drop(&mut self) {
        if let Some(revision) = self.revision {
            let (inner, encoded_key) = (self.inner.clone(), self.encoded_key.to_owned());
            cleanup::spawn(async move {
                let _ = inner.purge(&encoded_key, revision).await;
            });
        }
    }
}

/// A grant not yet handed to the caller: released if dropped before [`Unclaimed::claim`].
struct Unclaimed<'a> {
    inner: &'a Arc<Inner>,
    lease: Option<Lease>,
}

impl Unclaimed<'_> {
    fn claim(mut self) -> Lease {
        self.lease.take().expect("a lease is claimed once")
    }
}

impl Drop for Unclaimed<'_> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.inner.release_owner_later(lease.key(), lease.owner());
        }
    }
}

fn check_request(request: &LeaseRequest) -> Result<(), LockError> {
    request.validate()?;
    if request.limit() != 1 {
        return Err(LockError::Unsupported { operation: "semaphores" });
    }
    if encode_key(request.key()).len() > 3 * crate::request::MAX_KEY_BYTES {
        // Unreachable with the shared key limit; kept so a change there is caught here.
        return Err(InvalidInput::Backend("key too long for a NATS subject".to_owned()).into());
    }
    Ok(())
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
    }

    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        check_request(request)?;
        Ok(match self.inner.create(request, Expect::Guess, None).await? {
            Attempt::Granted(lease) => Some(lease),
            Attempt::Held | Attempt::Woken(_) => None,
        })
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        check_request(request)?;
        validate_wait(wait)?;
        let started = Instant::now();
        let deadline = started + wait;
        let timed_out = || LockError::TimedOut { waited: started.elapsed() };
        let inner = &self.inner;
        let encoded = encode_key(request.key());
        // Most acquires find the key free: try before joining the waiters — unless the key
        // was found held a moment ago (see `Inner::found_held`).
        if !inner.is_contended(&encoded) {
            let first = tokio::select! {
                attempt = inner.create(request, Expect::Guess, None) => attempt?,
                () = sleep_until(deadline) => return Err(timed_out()),
            };
            if let Attempt::Granted(lease) = first {
                return Ok(lease);
            }
            inner.note_found_held(&encoded);
        }
        let client = inner.js.client();
        let mut waiting = tokio::select! {
            joined = Waiting::join(&client, &inner.bucket, &encoded, &inner.reconnects) => joined?,
            () = sleep_until(deadline) => return Err(timed_out()),
        };
        // Joined: look again (the key may have been freed before the subscription), then
        // create over each removal announced to this waiter. The first look is a create, not
        // a read: a create travels to the stream the way the subscription's interest does, so
        // in a cluster the stream's server knows of this waiter before it checks the create
        // (rule 1 of `nats/wakeups.rs`). A read goes through the JetStream API, which may
        // overtake the interest on its way between servers: the cluster suite lost a wake-up
        // that way (the waiter read the lease, the release's notice found no interest yet).
        let mut expect = Expect::Guess;
        let mut after_silence = false;
        let mut counted = None;
        loop {
            // Biased: a wake-up in hand is tried before the deadline is looked at. A create
            // dropped on the wire is cleaned up by its guard, and a waiter that gives up passes
            // the turn on (`give_up`).
            let attempt = tokio::select! {
                biased;
                attempt = inner.create(request, expect, Some(&mut waiting)) => Some(attempt?),
                () = sleep_until(deadline) => None,
            };
            let attempt = match attempt {
                Some(attempt) => attempt,
                None => {
                    waiting.give_up().await;
                    return Err(timed_out());
                }
            };
            match attempt {
                Attempt::Granted(lease) => {
                    if after_silence {
                        inner.stats.grants_after_recheck.fetch_add(1, Ordering::Relaxed);
                    }
                    // Others may be waiting too: this lease's release offers it to them.
                    inner.note_found_held(&encoded);
                    // Leaving takes a send to the connection: a caller gone by then must not
                    // strand the lease.
                    let unclaimed = Unclaimed { inner, lease: Some(lease) };
                    waiting.granted().await;
                    return Ok(unclaimed.claim());
                }
                Attempt::Woken(wake) => {
                    (expect, after_silence) = (wake.into(), false);
                    continue;
                }
                Attempt::Held => {}
            }
            counted.get_or_insert_with(|| inner.stats.waiting.count());
            inner.note_found_held(&encoded);
            (expect, after_silence) = tokio::select! {
                biased;
                wake = waiting.next() => (wake.into(), false),
                () = sleep_until(deadline) => {
                    waiting.give_up().await;
                    return Err(timed_out());
                }
                () = tokio::time::sleep(RECHECK_AFTER) => (Expect::Read, true),
            };
        }
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let encoded = encode_key(lease.key());
        if lease_ended(lease) {
            self.inner.free_leftover(lease).await;
            return Ok(false);
        }
        // A lease this locker granted: its owner token is proof enough, hand it to a waiter or
        // purge it at the remembered revision (one round trip). A conflict means the entry
        // changed (expired, taken over, or refreshed by another client of the same lease):
        // read it.
        let mut offered = None;
        if let Some(revision) = self.inner.known_revision(lease.key(), lease.owner()) {
            // Offer it first where waiters are likely: on a key this locker found held a
            // moment ago — typically the wait for this very lease.
            if self.inner.offers && self.inner.is_contended(&encoded) {
                offered = Some(revision);
                let offer = OfferOut { inner: &self.inner, encoded_key: &encoded, revision: Some(revision) };
                if offer.hand_over().await {
                    self.inner.forget(lease.key(), lease.owner());
                    return Ok(true);
                }
            }
            let purged = self.inner.purge(&encoded, revision).await?;
            self.inner.forget(lease.key(), lease.owner());
            if let Published::Stored(_) = purged {
                return Ok(true);
            }
        }
        let entry = self.inner.entry("release", &encoded).await?;
        if entry.as_ref().is_some_and(|entry| was_taken_over(entry, offered)) {
            // An offer taken whose answer did not arrive in time.
            return Ok(true);
        }
        let Some(entry) = entry.filter(|entry| is_held_by(entry, lease)) else { return Ok(false) };
        Ok(matches!(self.inner.purge(&encoded, entry.revision).await?, Published::Stored(_)))
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        validate_ttl(ttl)?;
        if lease_ended(lease) {
            self.inner.free_leftover(lease).await;
            return Ok(None);
        }
        // As in release: a remembered revision saves the read.
        if let Some(revision) = self.inner.known_revision(lease.key(), lease.owner()) {
            if let Some(refreshed) = self.inner.rewrite(lease, ttl, revision).await? {
                return Ok(Some(refreshed));
            }
            self.inner.forget(lease.key(), lease.owner());
        }
        let Some(entry) = self.inner.held_revision("refresh", lease).await? else { return Ok(None) };
        self.inner.rewrite(lease, ttl, entry.revision).await
    }

    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        let Some(entry) = self.inner.held_revision("remaining TTL", lease).await? else { return Ok(None) };
        let Some((_, ttl_secs)) = parse_entry(&entry.value) else { return Ok(None) };
        // The server expires the entry `ttl_secs` after it stored it, by its own clock; this
        // reads the client's wall clock, so it assumes the two are synchronized.
        let expires = SystemTime::from(entry.created) + Duration::from_secs(ttl_secs);
        let remaining = expires.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
        Ok(Some(remaining.min(Duration::from_secs(ttl_secs))))
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
