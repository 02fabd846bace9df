//! The etcd lockers: the revision-queue recipe (`etcd://`), and etcd's own lock service
//! (`etcd+lockservice://`, the `v3lockpb` `Lock` RPC) for comparison. Both keep a lock as keys
//! under one directory per lock, each key bound to an etcd lease, so they interoperate.
//!
//! # The revision queue (`etcd://`)
//!
//! * **A waiter is a key.** An acquire grants itself an etcd lease and puts
//!   `<prefix>/<lock>/<lease id, hex>` bound to it. etcd stamps every key with the revision
//!   that created it; revisions are one counter for the whole store, so the keys of a lock are
//!   a queue in creation order.
//! * **The lowest create revision holds** (for a semaphore of limit `n`: the `n` lowest). A
//!   waiter is granted once fewer than `limit` keys of the lock were created before its own,
//!   *and* its own key still exists at that revision (a waiter whose lease ran out while it
//!   waited lost its place; it queues again with a fresh key). Keys ahead of a waiter only ever
//!   leave the queue, so a waiter granted stays granted until its own key goes.
//! * **No herd.** A lock's waiter watches only its predecessor (the key created just before
//!   its own), from the revision it read it at, so a deletion between the read and the watch is
//!   still delivered. Its predecessor leaving wakes it alone. A semaphore's waiter watches the
//!   lock's directory for deletions (any holder leaving may free its slot): a herd, bounded by
//!   the number of waiters of that semaphore.
//! * **Fencing token = the holder key's create revision.** Grants happen in create-revision
//!   order, and etcd's revision never decreases (it is in the write-ahead log: a restarted
//!   server continues from where it stopped). A server whose data directory is lost starts
//!   again at revision 1: then neither the locks nor the fencing survive.
//! * **FIFO** by create revision.
//! * **Expiry on the server:** the lease. A crashed holder's key is deleted by etcd when its
//!   lease's TTL runs out (etcd sweeps expired leases every 500 ms).
//! * **Release** deletes the own key, checked by create revision, and revokes the lease.
//!   **Refresh** is a keep-alive of the lease; see below for a changed TTL.
//!
//! # etcd's lock service (`etcd+lockservice://`)
//!
//! The server's `Lock` RPC runs the same recipe inside etcd (the Go client's
//! `concurrency.Mutex`) on the same key layout, with the lease this locker grants. The locker
//! adds what the RPC lacks: the fencing token (the create revision of the key the RPC
//! returns, read back), a check that the key still exists when the RPC answers (a lock
//! granted to a lease that expired meanwhile is no lock), keep-alives while it waits, and
//! `try_acquire`, which the RPC does not offer: it is the revision queue's try (put a key; if it
//! is not first, revoke it), exactly as the Go client's `Mutex::TryLock` does. Semaphores are
//! not offered.
//!
//! # Leases, TTLs and time
//!
//! * **Whole seconds.** An etcd lease's TTL is whole seconds: a TTL that is not is rounded
//!   **up**, and etcd may raise it further to its minimum (1.5 election timeouts). The lease
//!   reports the TTL **etcd granted** ([`Lease::ttl`]), counted from the instant the granting
//!   request (lease grant or keep-alive) was sent, so the holder's belief never outlives etcd's
//!   own expiry; a crashed holder's lock stays held up to that rounding (under a second) plus
//!   etcd's 500 ms expiry sweep past the TTL asked for.
//! * **Waiting keeps the lease alive.** A waiter's key is bound to its lease like a holder's,
//!   so it keeps the lease alive (every third of its TTL) while it waits, and renews it once
//!   more in the same round trip as the check that grants it: the grant's TTL counts from then.
//! * **Refresh with another TTL.** A keep-alive renews a lease with the TTL it was granted
//!   with. Asked for a longer TTL, refresh grants a new lease of that TTL, moves the key onto it
//!   (a put that keeps the key's create revision, so the fencing token is unchanged, checked by
//!   that revision) and revokes the old one; asked for the same or a shorter one, it keeps the
//!   lease and reports the TTL etcd renewed it with.
//! * **Remaining TTL** is etcd's (`LeaseTimeToLive`), which etcd rounds *down* to whole
//!   seconds; the locker answers the top of that second (never above the granted TTL), so the
//!   answer errs late by under a second, never early.
//!
//! # Ownership
//!
//! A lease id is drawn from the owner token's secret bits (63 of its 128), so the key's name
//! is known only to the holder; release and refresh name the key from the token and check
//! its create revision against the fencing token. A forged lease names a key that does not
//! exist and changes nothing.
//!
//! # Keys
//!
//! A lockcheck key may contain `/`, which would make one lock's directory a prefix of
//! another's: `%` and `/` are written as `%25` and `%2F` in etcd key names.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::time::Instant;

use crate::{
    Capabilities, FencingToken, InvalidInput, Lease, LeaseRequest, LockError, Locker, OwnerToken, Queued, QueuedCount,
};

mod acquire;

/// The key prefix lockers use unless the URL names another (`?prefix=`).
pub const DEFAULT_PREFIX: &str = "lockcheck";

/// How long one request may take before its outcome is unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Which etcd recipe a locker runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtcdMode {
    /// The revision queue, run by this client (`etcd://`).
    Queue,
    /// etcd's lock service, the `Lock` RPC (`etcd+lockservice://`).
    LockService,
}

impl EtcdMode {
    /// The URL scheme of the mode.
    pub fn scheme(self) -> &'static str {
        match self {
            EtcdMode::Queue => "etcd",
            EtcdMode::LockService => "etcd+lockservice",
        }
    }
}

/// Where an etcd locker connects and how it names its keys: what an `etcd://` URL says.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EtcdConfig {
    /// `host:port` of each cluster member.
    pub endpoints: Vec<String>,
    /// The recipe.
    pub mode: EtcdMode,
    /// The first segment of every key the locker writes.
    pub prefix: String,
}

impl EtcdConfig {
    /// A locker of `mode` on `endpoints`, with the default prefix.
    pub fn new(mode: EtcdMode, endpoints: Vec<String>) -> Self {
        EtcdConfig { endpoints, mode, prefix: DEFAULT_PREFIX.to_owned() }
    }

    /// Parses `etcd://host:port[,host:port…][?prefix=P]` or the same with
    /// `etcd+lockservice://` (a host without a port uses 2379).
    pub fn from_url(url: &str) -> Result<Self, InvalidInput> {
        let bad = |why: String| InvalidInput::Backend(format!("bad etcd URL {url:?}: {why}"));
        let (mode, rest) = if let Some(rest) = url.strip_prefix("etcd+lockservice://") {
            (EtcdMode::LockService, rest)
        } else if let Some(rest) = url.strip_prefix("etcd://") {
            (EtcdMode::Queue, rest)
        } else {
            return Err(bad("not an etcd:// or etcd+lockservice:// URL".to_owned()));
        };
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut config = EtcdConfig::new(mode, Vec::new());
        for host in hosts.split(',').map(str::trim) {
            if host.is_empty() || host.contains('/') {
                return Err(bad(format!("{host:?} is not host:port")));
            }
            let host = match host.rsplit_once(':') {
                Some((name, port)) => {
                    if name.is_empty() || port.parse::<u16>().is_err() {
                        return Err(bad(format!("{host:?} is not host:port")));
                    }
                    host.to_owned()
                }
                None => format!("{host}:2379"),
            };
            config.endpoints.push(host);
        }
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            match pair.split_once('=') {
                Some(("prefix", prefix))
                    if !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_graphic() && b != b'%') =>
                {
                    config.prefix = prefix.trim_end_matches('/').to_owned();
                }
                _ => return Err(bad(format!("unknown or malformed parameter {pair:?} (known: prefix)"))),
            }
        }
        Ok(config)
    }

    /// The URL of this configuration.
    pub fn url(&self) -> String {
        let base = format!("{}://{}", self.mode.scheme(), self.endpoints.join(","));
        if self.prefix == DEFAULT_PREFIX { base } else { format!("{base}?prefix={}", self.prefix) }
    }
}

/// A locker on an etcd cluster (see the module docs for both recipes). Cheap to clone; clones
/// share one gRPC connection.
///
/// ```no_run
/// use std::time::Duration;
/// use lockcheck_impls::{LeaseRequest, Locker, etcd::{EtcdConfig, EtcdLocker, EtcdMode}};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let locker = EtcdLocker::connect(EtcdConfig::new(EtcdMode::Queue, vec!["127.0.0.1:2379".into()])).await?;
/// let lease = locker.acquire(&LeaseRequest::lock("invoice-42", Duration::from_secs(10)), Duration::from_secs(1)).await?;
/// assert!(locker.release(&lease).await?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct EtcdLocker {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    config: EtcdConfig,
    waiting: QueuedCount,
}

impl EtcdLocker {
    /// Connects to the cluster (one connection, balanced over the endpoints).
    pub async fn connect(config: EtcdConfig) -> Result<Self, LockError> {
        if config.endpoints.is_empty() {
            return Err(InvalidInput::Backend("an etcd locker needs at least one endpoint".to_owned()).into());
        }
        let endpoints: Vec<String> = config.endpoints.iter().map(|host| format!("http://{host}")).collect();
        let options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), REQUEST_TIMEOUT);
        let mut client = tokio::time::timeout(REQUEST_TIMEOUT * 2, Client::connect(endpoints, Some(options)))
            .await
            .map_err(|_| LockError::unavailable(format!("etcd at {} did not answer", config.endpoints.join(","))))?
            .map_err(|error| unavailable(&config, error))?;
        // A connection is lazy: ask once, so an unreachable cluster is an error here.
        tokio::time::timeout(REQUEST_TIMEOUT, client.status())
            .await
            .map_err(|_| LockError::unavailable(format!("etcd at {} did not answer", config.endpoints.join(","))))?
            .map_err(|error| unavailable(&config, error))?;
        Ok(EtcdLocker { inner: Arc::new(Inner { client, config, waiting: QueuedCount::new() }) })
    }

    /// The client (for tests and tools that inspect keys).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The etcd key of `lease` (where its holder's queue entry lives).
    pub fn lease_key(&self, lease: &Lease) -> String {
        self.inner.member_key(lease.key(), lease_id(lease.owner()))
    }
}

fn unavailable(config: &EtcdConfig, error: etcd_client::Error) -> LockError {
    LockError::Unavailable {
        message: format!("etcd at {}: {error}", config.endpoints.join(",")),
        source: Some(Box::new(error)),
    }
}

/// An error after the request was sent: it may have taken effect.
fn indeterminate(operation: &'static str, error: etcd_client::Error) -> LockError {
    LockError::Indeterminate { operation, message: error.to_string(), source: Some(Box::new(error)) }
}

/// `request` with the request time-out: an answer, or an indeterminate error.
async fn bounded<T>(
    operation: &'static str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, LockError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(indeterminate(operation, error)),
        Err(_) => Err(LockError::indeterminate(operation, format!("etcd did not answer within {REQUEST_TIMEOUT:?}"))),
    }
}

/// The etcd lease id of a grant: 63 of the owner token's secret bits (never zero: etcd
/// picks an id itself for zero). See "Ownership" in the module docs.
pub fn lease_id(owner: OwnerToken) -> i64 {
    ((owner.bits() >> 65) as i64).max(1)
}

/// A fresh owner token whose lease id is its own (not the floor of [`lease_id`]).
fn fresh_owner() -> OwnerToken {
    loop {
        let owner = OwnerToken::random();
        if owner.bits() >> 65 != 0 {
            return owner;
        }
    }
}

/// A lease TTL in etcd's whole seconds, rounded up.
pub fn whole_seconds(ttl: Duration) -> i64 {
    ttl.as_nanos().div_ceil(1_000_000_000) as i64
}

/// `%` and `/` escaped, so one lock's directory is never a prefix of another's.
pub fn encode_key(key: &str) -> String {
    let mut encoded = String::with_capacity(key.len());
    for c in key.chars() {
        match c {
            '%' => encoded.push_str("%25"),
            '/' => encoded.push_str("%2F"),
            c => encoded.push(c),
        }
    }
    encoded
}

/// What a queue key holds: the permit limit and the TTL its lease was granted with (a
/// keep-alive renews a lease with that TTL, and etcd's keep-alive answer is not handed on by
/// the client). A key without them (one the lock service created) is a lock; its TTL unknown
/// (0: a refresh then moves it onto a lease of its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Member {
    limit: u32,
    ttl: i64,
}

impl Member {
    fn parse(value: &[u8]) -> Member {
        let mut member = Member { limit: 1, ttl: 0 };
        for field in std::str::from_utf8(value).unwrap_or("").split(';') {
            match field.split_once('=') {
                Some(("limit", n)) => member.limit = n.parse().unwrap_or(1),
                Some(("ttl", n)) => member.ttl = n.parse().unwrap_or(0),
                _ => {}
            }
        }
        member
    }
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "limit={};ttl={}", self.limit, self.ttl)
    }
}

impl Inner {
    /// `<prefix>/<lock>`: the lock's directory (the lock service's lock name).
    fn lock_name(&self, key: &str) -> String {
        format!("{}/{}", self.config.prefix, encode_key(key))
    }

    /// `<prefix>/<lock>/<lease id hex>`: a member of the lock's queue (the lock service's naming,
    /// `%x` without padding).
    fn member_key(&self, key: &str, lease: i64) -> String {
        format!("{}/{lease:x}", self.lock_name(key))
    }

    /// The key of `lease`, if it is still this grant's (same create revision): its current
    /// etcd lease id.
    async fn held(&self, operation: &'static str, lease: &Lease) -> Result<Option<(i64, i64)>, LockError> {
        let key = self.member_key(lease.key(), lease_id(lease.owner()));
        let mut client = self.client.clone();
        let found = bounded(operation, client.get(key, None)).await?;
        Ok(found
            .kvs()
            .first()
            .filter(|kv| kv.create_revision() as u64 == lease.fence().0)
            .map(|kv| (kv.lease(), Member::parse(kv.value()).ttl)))
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        lease_shape(lease)?;
        let key = self.member_key(lease.key(), lease_id(lease.owner()));
        let fence = lease.fence().0 as i64;
        let mut client = self.client.clone();
        let txn = Txn::new()
            // A missing key's create revision reads as 0: a forged lease with fence 0 must not
            // match it (the suite's sequential model caught that), so the key must exist too.
            .when([
                Compare::version(key.clone(), CompareOp::Greater, 0),
                Compare::create_revision(key.clone(), CompareOp::Equal, fence),
            ])
            .and_then([TxnOp::get(key.clone(), None), TxnOp::delete(key, None)]);
        let answer = bounded("release", client.txn(txn)).await?;
        if !answer.succeeded() {
            return Ok(false);
        }
        // The key is gone (a waiter behind it is woken by that); its lease is now useless.
        // Revoke it in the background: the release is complete either way, and a lease left
        // behind ends with its TTL.
        if let Some(TxnOpResponse::Get(got)) = answer.op_responses().first()
            && let Some(kv) = got.kvs().first()
        {
            let lease_id = kv.lease();
            let mut client = self.client.clone();
            crate::cleanup::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, client.lease_revoke(lease_id)).await;
            });
        }
        Ok(true)
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        lease_shape(lease)?;
        crate::validate_ttl(ttl)?;
        let Some((current, granted)) = self.held("refresh", lease).await? else { return Ok(None) };
        let wanted = whole_seconds(ttl);
        if granted >= wanted {
            // A keep-alive renews the lease with the TTL it was granted with.
            let sent = Instant::now();
            return Ok(self
                .keep_alive_once("refresh", current)
                .await?
                .then(|| lease.refreshed(Duration::from_secs(granted as u64), sent)));
        }
        // A longer TTL: a new lease of that TTL, the key moved onto it (a put keeps the create
        // revision, so the fence stays), the old lease revoked.
        let sent = Instant::now();
        let mut client = self.client.clone();
        let fresh = lease_id(OwnerToken::random());
        let granted =
            bounded("refresh", client.lease_grant(wanted, Some(etcd_client::LeaseGrantOptions::new().with_id(fresh))))
                .await?;
        let key = self.member_key(lease.key(), lease_id(lease.owner()));
        let value = Member { limit: lease.limit(), ttl: granted.ttl() }.to_string();
        let txn = Txn::new()
            .when([
                Compare::version(key.clone(), CompareOp::Greater, 0),
                Compare::create_revision(key.clone(), CompareOp::Equal, lease.fence().0 as i64),
                Compare::lease(key.clone(), CompareOp::Equal, current),
            ])
            .and_then([TxnOp::put(key, value, Some(PutOptions::new().with_lease(granted.id())))]);
        let moved = bounded("refresh", client.txn(txn)).await;
        let (keep, drop) = match &moved {
            Ok(answer) if answer.succeeded() => (true, current),
            _ => (false, granted.id()),
        };
        let mut revoker = self.client.clone();
        crate::cleanup::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, revoker.lease_revoke(drop)).await;
        });
        moved?;
        Ok(keep.then(|| lease.refreshed(Duration::from_secs(granted.ttl() as u64), sent)))
    }

    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        lease_shape(lease)?;
        let Some((current, _)) = self.held("remaining TTL", lease).await? else { return Ok(None) };
        let mut client = self.client.clone();
        let answer = bounded("remaining TTL", client.lease_time_to_live(current, None)).await?;
        if answer.ttl() < 0 {
            return Ok(None);
        }
        // etcd answers whole seconds, rounded down: the truth is within the second above. A
        // holder's own belief cannot refine it (the lease it passes may predate a refresh by
        // another client). Promising time the lease may not have is what lets a holder act
        // after its lease ended, so answer the bottom of that second: at most a second short,
        // which only makes the holder stop early.
        let floor = Duration::from_secs(answer.ttl() as u64);
        Ok(Some(floor.min(Duration::from_secs(answer.granted_ttl().max(0) as u64))))
    }

    /// One keep-alive of `lease`: whether it was still alive (then etcd renewed it with the
    /// TTL it was granted with).
    async fn keep_alive_once(&self, operation: &'static str, lease: i64) -> Result<bool, LockError> {
        let mut client = self.client.clone();
        // The client's keep-alive sends one request and reads its answer before it returns.
        match tokio::time::timeout(REQUEST_TIMEOUT, client.lease_keep_alive(lease)).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(message))) if message.contains("lease not found") => {
                Ok(false)
            }
            Ok(Err(error)) => Err(indeterminate(operation, error)),
            Err(_) => {
                Err(LockError::indeterminate(operation, format!("etcd did not answer within {REQUEST_TIMEOUT:?}")))
            }
        }
    }

    /// Revokes `lease` (deleting its key); whether etcd confirmed it (a lease already gone
    /// counts: its key is gone too).
    async fn revoke(&self, lease: i64) -> bool {
        let mut client = self.client.clone();
        match tokio::time::timeout(REQUEST_TIMEOUT, client.lease_revoke(lease)).await {
            Ok(Ok(_)) => true,
            Ok(Err(etcd_client::Error::GRpcStatus(status))) => status.message().contains("lease not found"),
            _ => false,
        }
    }
}

/// Refuses a lease no etcd locker could have granted (its key or limit invalid).
fn lease_shape(lease: &Lease) -> Result<(), LockError> {
    crate::validate_key(lease.key())?;
    if lease.limit() == 0 || lease.limit() > crate::MAX_PERMITS {
        return Err(InvalidInput::BadPermitLimit { limit: lease.limit(), max: crate::MAX_PERMITS }.into());
    }
    Ok(())
}

#[async_trait]
impl Locker for EtcdLocker {
    fn describe(&self) -> String {
        self.inner.config.url()
    }

    fn capabilities(&self) -> Capabilities {
        // Keys, leases and the revision counter are in etcd's write-ahead log: they survive a
        // restart of the server (a lost data directory loses both, which etcd does not
        // promise against).
        Capabilities::none()
            .with_fencing(true)
            .with_fencing_survives_restart(true)
            .with_fifo(true)
            .with_server_side_expiry(true)
            .with_survives_server_restart(true)
            .with_semaphores(self.inner.config.mode == EtcdMode::Queue)
            .with_push_wakeups(true)
            .with_session_bound(false)
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

    /// Acquires waiting on a watch: counted once the watch on their predecessor (or, for the
    /// lock service, the `Lock` RPC) is established at the server.
    fn queued(&self) -> Option<Queued> {
        Some(self.inner.waiting.queued())
    }
}

/// A grant: the lease handed to the caller.
fn grant(request: &LeaseRequest, owner: OwnerToken, revision: i64, ttl_secs: i64, sent: Instant) -> Lease {
    Lease::new(
        request.key(),
        owner,
        FencingToken(revision as u64),
        Duration::from_secs(ttl_secs as u64),
        sent,
        request.limit(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_mode_endpoints_and_prefix() {
        let config = EtcdConfig::from_url("etcd://a:1,b").unwrap();
        assert_eq!((config.mode, config.endpoints.clone()), (EtcdMode::Queue, vec!["a:1".into(), "b:2379".into()]));
        assert_eq!(config.url(), "etcd://a:1,b:2379");
        let config = EtcdConfig::from_url("etcd+lockservice://127.0.0.1:2379?prefix=locks/").unwrap();
        assert_eq!((config.mode, config.prefix.as_str()), (EtcdMode::LockService, "locks"));
        assert_eq!(config.url(), "etcd+lockservice://127.0.0.1:2379?prefix=locks");
        for bad in ["etcd://", "etcd://a:x", "etcd://a:1?colour=red", "etcd://a:1/db", "etcd://a,,b", "redis://a:1"] {
            assert!(EtcdConfig::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_never_nest_and_ttls_round_up() {
        assert_eq!(encode_key("a/b%c"), "a%2Fb%25c");
        assert_ne!(format!("{}/", encode_key("a")), encode_key("a/b")[..2].to_owned());
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(2001)), 3);
        let owner = fresh_owner();
        assert!(lease_id(owner) > 0);
        let member = Member { limit: 7, ttl: 3 };
        assert_eq!(Member::parse(member.to_string().as_bytes()), member);
        assert_eq!(Member::parse(b""), Member { limit: 1, ttl: 0 }, "the lock service's keys are locks");
    }
}
