//! The lockcheck [`Locker`] API over dflockd servers.
//!
//! dflockd releases what a connection holds when the connection closes, so every lease
//! keeps the connection that acquired it open until it is released or lost; connections
//! that hold nothing are pooled per server. A cancelled or locally timed-out acquire drops
//! its connection, which is how the server learns to drop the waiter (and to release a
//! grant that raced the cancellation).
//!
//! Limits of the protocol, stated rather than hidden:
//! - Leases are whole seconds: a TTL is rounded up, and the returned [`Lease`] carries the
//!   TTL the server granted.
//! - There is no query for a lease's remaining time (no reply of `l r n e w` carries one;
//!   `stats`, on the newest servers only, reports per key and connection, not per token), so
//!   [`Locker::remaining_ttl`] answers from the holder's own clock while the lease's
//!   connection is open. The lease counts from [`Connection::took_effect_after`], the grant's
//!   (or renewal's) instant on the server bounded from below as tightly as the connection's
//!   round trips allow: a grant that waited in the queue counts from just before its reply
//!   arrived, not from the request, which would make it look expired up to the whole wait
//!   too early. It is an estimate: a reply delayed beyond the connection's usual round trips
//!   (a stalled server or client) makes the holder's belief outlast the server's expiry by
//!   the excess.
//! - Servers close connections silent for their read timeout (23 s by default) and release
//!   their locks: a lease held longer without refresh is lost (use auto-renew).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;

use super::commands::{self, Grant, whole_seconds};
use super::connection::{ConnectOptions, Connection};
use super::error::DflockdError;
use super::lock::open;
use super::protocol::Namespace;
use super::shard::{ShardFn, crc32_shard};
use crate::Capabilities;
use crate::LockError;
use crate::Locker;
use crate::{FencingToken, Lease, OwnerToken};
use crate::{LeaseRequest, validate_wait};

/// Which generation of dflockd server answers; decides fencing and semaphores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerKind {
    /// The newest protocol (Go ≥ v1.11, lockcheck's reference server): `ping`, semaphores,
    /// tokens that carry a fencing counter.
    Fencing,
    /// Python 0.5 (and Go ≤ v1.10): random tokens, so no fencing; Python 0.5 has no
    /// semaphores either.
    Legacy,
}

/// How a [`DflockdLocker`] reaches its servers.
#[derive(Clone)]
pub struct DflockdLockerConfig {
    /// `host:port` of each server; keys shard across them.
    pub servers: Vec<String>,
    /// TLS and connect timeout.
    pub connect: ConnectOptions,
    /// Shared secret for `auth`.
    pub auth_token: Option<String>,
    /// Server choice per key (default [`crc32_shard`]).
    pub shard: ShardFn,
    /// The server generation; `None` = find out with `ping` when connecting.
    pub kind: Option<ServerKind>,
    /// Whether the servers free a connection's leases when it closes (every dflockd server's
    /// default, `--auto-release-on-disconnect`). The client cannot see the server's setting;
    /// this is what [`Capabilities::session_bound`] claims. Default `true`.
    pub session_bound: bool,
    /// Whether the servers persist their fencing counter's ceiling (`lockcheck serve
    /// --fence-state-file`), so tokens stay monotonic across a restart whatever the clock
    /// does. The client cannot see it; this is what [`Capabilities::fencing_survives_restart`]
    /// claims. Default `false`.
    pub fences_persisted: bool,
}

impl std::fmt::Debug for DflockdLockerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DflockdLockerConfig")
            .field("servers", &self.servers)
            .field("tls", &self.connect.tls.is_some())
            .field("auth", &self.auth_token.is_some())
            .field("kind", &self.kind)
            .finish()
    }
}

impl DflockdLockerConfig {
    /// Plain TCP to these servers, kind detected.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(servers: I) -> Self {
        DflockdLockerConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            connect: ConnectOptions::default(),
            auth_token: None,
            shard: crc32_shard,
            kind: None,
            session_bound: true,
            fences_persisted: false,
        }
    }

    /// From a backend URL: `dflockd://host:port[,host:port...][?auth=SECRET&session=bound|ttl]`.
    /// `session=ttl` says the servers run without auto-release on disconnect: leases end only
    /// by release or expiry.
    pub fn from_url(url: &str) -> Result<Self, LockError> {
        let rest = url
            .strip_prefix("dflockd://")
            .ok_or_else(|| crate::InvalidInput::Backend(format!("not a dflockd:// URL: {url}")))?;
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let servers: Vec<String> = hosts.split(',').filter(|h| !h.is_empty()).map(str::to_owned).collect();
        if servers.is_empty() {
            return Err(crate::InvalidInput::Backend(format!("no servers in {url}")).into());
        }
        let mut config = DflockdLockerConfig::new(servers);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("auth", secret)) => config.auth_token = Some(secret.to_owned()),
                Some(("session", "bound")) => config.session_bound = true,
                Some(("session", "ttl")) => config.session_bound = false,
                _ => return Err(crate::InvalidInput::Backend(format!("unknown URL parameter {pair:?}")).into()),
            }
        }
        Ok(config)
    }
}

/// An acquire on the wire. If its future is dropped after the request was written, the
/// server may grant it anyway (the grant races the cancellation); `Drop` then hands the
/// connection to a background task that half-closes it (the server drops the waiter) and
/// reads the reply for as long as the server might still grant, releasing any grant on a
/// fresh connection. This is what keeps a cancelled acquire from leaving a lock behind when
/// the server does not release on disconnect.
///
/// It borrows what the background task would need and copies it only if a reply is pending.
struct PendingAcquire<'a> {
    conn: Option<Connection>,
    ns: Namespace,
    key: &'a str,
    patience: Duration,
    config: &'a DflockdLockerConfig,
    server: usize,
}

impl Drop for PendingAcquire<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if !conn.reply_pending() {
            return;
        }
        let (ns, key, patience) = (self.ns, self.key.to_owned(), self.patience);
        let addr = self.config.servers[self.server].clone();
        let (connect, auth) = (self.config.connect.clone(), self.config.auth_token.clone());
        crate::cleanup::spawn(async move {
            let Some(reply) = conn.abandon(patience).await else { return };
            let mut fields = reply.split(' ');
            if let (Some("ok"), Some(token), Some(_), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
                && let Ok(mut conn) = open(&addr, &connect, auth.as_deref()).await
            {
                let _ = commands::release_ns(&mut conn, ns, &key, token).await;
            }
        });
    }
}

/// A held lease's connection, its key, and which locker opened it.
struct Held {
    conn: Arc<AsyncMutex<Connection>>,
    ns: Namespace,
    key: String,
    owner: u64,
}

/// (server address, token bits): a token names one grant of one server. The entry's key must
/// match the lease's too ([`Held::key`]).
type HeldKey = (Arc<str>, u128);

/// Every lease held through any [`DflockdLocker`] of this process, so that a lease acquired
/// by one locker can be refreshed, released or inspected through another (the server itself
/// only checks the token). A locker's entries go when it is dropped, closing their
/// connections, which is what a crashed process looks like to the server.
static HELD: std::sync::LazyLock<std::sync::Mutex<HashMap<HeldKey, Held>>> = std::sync::LazyLock::new(Default::default);

fn held_table() -> std::sync::MutexGuard<'static, HashMap<HeldKey, Held>> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// A [`Locker`] over one or more dflockd servers (keys sharded by CRC-32).
pub struct DflockdLocker {
    config: DflockdLockerConfig,
    kind: ServerKind,
    /// Connections holding nothing, per server, with the instant they were last used.
    idle: Vec<std::sync::Mutex<Vec<(Connection, Instant)>>>,
    /// This locker's id in the process-wide table of held leases.
    id: u64,
    /// The server addresses, shared with the table of held leases.
    addrs: Vec<Arc<str>>,
}

impl Drop for DflockdLocker {
    fn drop(&mut self) {
        held_table().retain(|_, held| held.owner != self.id);
    }
}

impl std::fmt::Debug for DflockdLocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DflockdLocker").field("servers", &self.config.servers).field("kind", &self.kind).finish()
    }
}

/// Pooled connections older than this are dropped instead of reused: servers close
/// connections idle for their read timeout (23 s by default), and a request on a connection
/// the server just closed would be indeterminate.
const MAX_IDLE: Duration = Duration::from_secs(15);

impl DflockdLocker {
    /// Connects to the first server (to fail early and, unless configured, learn its kind).
    pub async fn connect(config: DflockdLockerConfig) -> Result<Self, LockError> {
        if config.servers.is_empty() {
            return Err(crate::InvalidInput::Backend("no dflockd servers configured".into()).into());
        }
        let kind = match config.kind {
            Some(kind) => kind,
            None => {
                let mut conn = open(&config.servers[0], &config.connect, config.auth_token.as_deref())
                    .await
                    .map_err(|e| e.into_lock_error("connect"))?;
                match commands::ping(&mut conn).await {
                    Ok(()) => ServerKind::Fencing,
                    // Python 0.5 answers an unknown command with `error` and closes.
                    Err(DflockdError::Server { .. } | DflockdError::Closed { .. }) => ServerKind::Legacy,
                    Err(e) => return Err(e.into_lock_error("connect")),
                }
            }
        };
        let idle = config.servers.iter().map(|_| std::sync::Mutex::new(Vec::new())).collect();
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let addrs = config.servers.iter().map(|s| Arc::from(s.as_str())).collect();
        Ok(DflockdLocker { config, kind, idle, id, addrs })
    }

    /// The detected (or configured) server generation.
    pub fn server_kind(&self) -> ServerKind {
        self.kind
    }

    fn server_of(&self, key: &str) -> usize {
        (self.config.shard)(key, self.config.servers.len()).min(self.config.servers.len() - 1)
    }

    async fn take_conn(&self, server: usize) -> Result<Connection, LockError> {
        let pooled = {
            let mut idle = self.idle[server].lock().unwrap_or_else(|e| e.into_inner());
            let mut found = None;
            while let Some((conn, used)) = idle.pop() {
                if used.elapsed() < MAX_IDLE && !conn.is_poisoned() {
                    found = Some(conn);
                    break;
                }
            }
            found
        };
        match pooled {
            Some(conn) => Ok(conn),
            None => open(&self.config.servers[server], &self.config.connect, self.config.auth_token.as_deref())
                .await
                .map_err(|e| e.into_lock_error("connect")),
        }
    }

    fn put_conn(&self, conn: Connection) {
        let Some(server) = self.config.servers.iter().position(|s| s == conn.addr()) else { return };
        if !conn.is_poisoned() {
            let used = conn.last_reply_at().unwrap_or_else(Instant::now);
            self.idle[server].lock().unwrap_or_else(|e| e.into_inner()).push((conn, used));
        }
    }

    fn held_key(&self, lease: &Lease) -> HeldKey {
        let server = self.server_of(lease.key());
        (self.addrs[server].clone(), lease.owner().bits())
    }

    fn namespace(&self, request: &LeaseRequest) -> Result<Namespace, LockError> {
        if request.limit() == 1 {
            return Ok(Namespace::Lock);
        }
        if !self.capabilities().semaphores {
            return Err(LockError::Unsupported { operation: "semaphores" });
        }
        Ok(Namespace::Semaphore)
    }

    /// `granted_at`: when the server granted, bounded from below ([`Connection::took_effect_after`]).
    fn lease_from(&self, request: &LeaseRequest, grant: &Grant, granted_at: Instant) -> Result<Lease, LockError> {
        let owner = OwnerToken::from_str(&grant.token)
            .map_err(|_| LockError::Protocol(format!("token {:?} is not 32 hex digits", grant.token)))?;
        let fence = match self.kind {
            ServerKind::Fencing => FencingToken((owner.bits() >> 64) as u64),
            // Random tokens order nothing; the capability says so.
            ServerKind::Legacy => FencingToken(0),
        };
        Ok(Lease::new(request.key(), owner, fence, Duration::from_secs(grant.lease_s), granted_at, request.limit()))
    }

    fn hold(&self, lease: &Lease, conn: Connection, ns: Namespace) {
        let held = Held { conn: Arc::new(AsyncMutex::new(conn)), ns, key: lease.key().to_owned(), owner: self.id };
        held_table().insert(self.held_key(lease), held);
    }

    fn take_held(&self, lease: &Lease) -> Option<Held> {
        let mut table = held_table();
        let key = self.held_key(lease);
        if table.get(&key)?.key != lease.key() {
            return None;
        }
        table.remove(&key)
    }

    fn map_acquire_error(&self, request: &LeaseRequest, error: DflockdError) -> LockError {
        match error {
            // The protocol does not say which limit the key has.
            DflockdError::LimitMismatch => {
                LockError::LimitMismatch { key: request.key().to_owned(), existing: 0, requested: request.limit() }
            }
            e => e.into_lock_error("acquire"),
        }
    }

    async fn acquire_on(
        &self,
        request: &LeaseRequest,
        wait: Duration,
    ) -> Result<Result<Lease, (DflockdError, Option<Connection>, usize)>, LockError> {
        request.validate()?;
        validate_wait(wait)?;
        let ns = self.namespace(request)?;
        let server = self.server_of(request.key());
        let conn = self.take_conn(server).await?;
        let lease_s = whole_seconds(request.ttl());
        let mut pending = PendingAcquire {
            conn: Some(conn),
            ns,
            key: request.key(),
            // The server may grant until its own (whole-second) wait bound runs out.
            patience: Duration::from_secs(whole_seconds(wait)) + Duration::from_secs(2),
            config: &self.config,
            server,
        };
        let sent_at = Instant::now();
        let outcome = commands::acquire_ns(
            pending.conn.as_mut().expect("armed"),
            ns,
            request.key(),
            wait,
            request.limit(),
            Some(lease_s),
        )
        .await;
        let conn = pending.conn.take().expect("armed");
        match outcome {
            Ok(grant) => {
                let lease = self.lease_from(request, &grant, conn.took_effect_after().unwrap_or(sent_at))?;
                self.hold(&lease, conn, ns);
                Ok(Ok(lease))
            }
            Err(e) if e.status().is_some() => Ok(Err((e, Some(conn), server))),
            Err(e) => Ok(Err((e, None, server))),
        }
    }
}

#[async_trait]
impl Locker for DflockdLocker {
    fn describe(&self) -> String {
        format!("dflockd://{}", self.config.servers.join(","))
    }

    fn capabilities(&self) -> Capabilities {
        let newest = self.kind == ServerKind::Fencing;
        Capabilities::none()
            .with_fencing(newest)
            // The client cannot see whether the server persists its fence ceiling: its
            // configuration says.
            .with_fencing_survives_restart(newest && self.config.fences_persisted)
            .with_fifo(true)
            .with_server_side_expiry(true)
            .with_survives_server_restart(false)
            .with_semaphores(newest)
            .with_push_wakeups(true)
            .with_session_bound(self.config.session_bound)
            // Every dflockd server we know times leases by a monotonic clock: the Python 0.5
            // server by `time.monotonic()`, `lockcheck serve` by tokio's `Instant`, the Go
            // server by `time.Time`'s monotonic reading. A wall-clock step does not end them.
            .with_expiry_by_monotonic_clock(true)
    }

    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        match self.acquire_on(request, Duration::ZERO).await? {
            Ok(lease) => Ok(Some(lease)),
            Err((DflockdError::Timeout, Some(conn), _)) => {
                self.put_conn(conn);
                Ok(None)
            }
            Err((e, _, _)) => Err(self.map_acquire_error(request, e)),
        }
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        let started = Instant::now();
        // The server counts whole seconds; the caller's bound is enforced here. Running out
        // drops the connection mid-request, which cancels the wait on the server.
        match tokio::time::timeout(wait, self.acquire_on(request, wait)).await {
            // The request may be queued on the server, which learns of the departure only
            // when it notices the closed connection.
            Err(_) => Err(LockError::TimedOutLocally { waited: started.elapsed() }),
            Ok(result) => match result? {
                Ok(lease) => Ok(lease),
                Err((DflockdError::Timeout, Some(conn), _)) => {
                    self.put_conn(conn);
                    Err(LockError::TimedOut { waited: started.elapsed() })
                }
                Err((e, _, _)) => Err(self.map_acquire_error(request, e)),
            },
        }
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let token = token_text(lease.owner());
        let held = self.take_held(lease);
        let ns = match &held {
            Some(held) => held.ns,
            None if lease.limit() == 1 => Namespace::Lock,
            None => Namespace::Semaphore,
        };
        // The lease's own connection if nothing else is using it; otherwise (a concurrent
        // refresh, or a lease not held through any locker here) any connection will do:
        // the server decides by token alone. The lease's connection closes when dropped.
        let mut conn = match held.map(|h| Arc::try_unwrap(h.conn)) {
            Some(Ok(conn)) => conn.into_inner(),
            _ => self.take_conn(self.server_of(lease.key())).await?,
        };
        match commands::release_ns(&mut conn, ns, lease.key(), &token).await {
            Ok(()) => {
                self.put_conn(conn);
                Ok(true)
            }
            Err(DflockdError::Server { .. }) => Ok(false),
            Err(e) => Err(e.into_lock_error("release")),
        }
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        crate::validate_ttl(ttl)?;
        let token = token_text(lease.owner());
        let lease_s = whole_seconds(ttl);
        let entry =
            held_table().get(&self.held_key(lease)).filter(|h| h.key == lease.key()).map(|h| (h.conn.clone(), h.ns));
        let sent_at = Instant::now();
        let (outcome, renewed_at) = match entry {
            Some((conn, ns)) => {
                let mut conn = conn.lock().await;
                let outcome = commands::renew_ns(&mut conn, ns, lease.key(), &token, Some(lease_s)).await;
                (outcome, conn.took_effect_after())
            }
            // Not held through a locker of this process: the server decides by token.
            None => {
                let ns = if lease.limit() == 1 { Namespace::Lock } else { Namespace::Semaphore };
                let mut conn = self.take_conn(self.server_of(lease.key())).await?;
                let outcome = commands::renew_ns(&mut conn, ns, lease.key(), &token, Some(lease_s)).await;
                let renewed_at = conn.took_effect_after();
                if outcome.is_ok() {
                    self.put_conn(conn);
                }
                (outcome, renewed_at)
            }
        };
        match outcome {
            Ok(_) => Ok(Some(lease.refreshed(Duration::from_secs(lease_s), renewed_at.unwrap_or(sent_at)))),
            Err(DflockdError::Server { .. }) => {
                self.take_held(lease);
                Ok(None)
            }
            Err(e) => Err(e.into_lock_error("refresh")),
        }
    }

    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        let held = held_table().get(&self.held_key(lease)).is_some_and(|h| h.key == lease.key());
        let remaining = lease.locally_remaining();
        Ok((held && !remaining.is_zero()).then_some(remaining))
    }
}

/// A token as the server spelled it (32 lowercase hex digits), without `format!`.
fn token_text(owner: OwnerToken) -> TokenText {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = owner.bits();
    TokenText(std::array::from_fn(|i| HEX[((bits >> (124 - 4 * i)) & 0xf) as usize]))
}

struct TokenText([u8; 32]);

impl std::ops::Deref for TokenText {
    type Target = str;
    fn deref(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}
