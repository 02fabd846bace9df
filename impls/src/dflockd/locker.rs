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
//! - There is no query for a lease's remaining time: [`Locker::remaining_ttl`] answers from
//!   the holder's own clock while the lease's connection is open (the server's expiry is never
//!   earlier, since the clock starts when the request is sent).
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
use crate::error::LockError;
use crate::lease::{FencingToken, Lease, OwnerToken};
use crate::locker::{Capabilities, Locker};
use crate::request::{LeaseRequest, validate_wait};

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
        }
    }

    /// From a backend URL: `dflockd://host:port[,host:port...][?auth=SECRET]`.
    pub fn from_url(url: &str) -> Result<Self, LockError> {
        let rest = url
            .strip_prefix("dflockd://")
            .ok_or_else(|| crate::error::InvalidInput::Backend(format!("not a dflockd:// URL: {url}")))?;
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let servers: Vec<String> = hosts.split(',').filter(|h| !h.is_empty()).map(str::to_owned).collect();
        if servers.is_empty() {
            return Err(crate::error::InvalidInput::Backend(format!("no servers in {url}")).into());
        }
        let mut config = DflockdLockerConfig::new(servers);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("auth", secret)) => config.auth_token = Some(secret.to_owned()),
                _ => return Err(crate::error::InvalidInput::Backend(format!("unknown URL parameter {pair:?}")).into()),
            }
        }
        Ok(config)
    }
}

struct Held {
    conn: Arc<AsyncMutex<Connection>>,
    ns: Namespace,
    server: usize,
}

/// A [`Locker`] over one or more dflockd servers (keys sharded by CRC-32).
pub struct DflockdLocker {
    config: DflockdLockerConfig,
    kind: ServerKind,
    /// Connections holding nothing, per server, with the instant they were last used.
    idle: Vec<std::sync::Mutex<Vec<(Connection, Instant)>>>,
    /// The connection of each held lease, by (key, token).
    held: std::sync::Mutex<HashMap<(String, u128), Held>>,
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
            return Err(crate::error::InvalidInput::Backend("no dflockd servers configured".into()).into());
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
        Ok(DflockdLocker { config, kind, idle, held: std::sync::Mutex::new(HashMap::new()) })
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

    fn put_conn(&self, server: usize, conn: Connection) {
        if !conn.is_poisoned() {
            self.idle[server].lock().unwrap_or_else(|e| e.into_inner()).push((conn, Instant::now()));
        }
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

    fn lease_from(&self, request: &LeaseRequest, grant: &Grant, sent_at: Instant) -> Result<Lease, LockError> {
        let owner = OwnerToken::from_str(&grant.token)
            .map_err(|_| LockError::Protocol(format!("token {:?} is not 32 hex digits", grant.token)))?;
        let fence = match self.kind {
            ServerKind::Fencing => FencingToken((owner.bits() >> 64) as u64),
            // Random tokens order nothing; the capability says so.
            ServerKind::Legacy => FencingToken(0),
        };
        Ok(Lease::new(request.key(), owner, fence, Duration::from_secs(grant.lease_s), sent_at, request.limit()))
    }

    fn hold(&self, lease: &Lease, conn: Connection, ns: Namespace, server: usize) {
        let held = Held { conn: Arc::new(AsyncMutex::new(conn)), ns, server };
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((lease.key().to_owned(), lease.owner().bits()), held);
    }

    fn take_held(&self, lease: &Lease) -> Option<Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).remove(&(lease.key().to_owned(), lease.owner().bits()))
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
        let mut conn = self.take_conn(server).await?;
        let lease_s = whole_seconds(request.ttl());
        let sent_at = Instant::now();
        match commands::acquire_ns(&mut conn, ns, request.key(), wait, request.limit(), Some(lease_s)).await {
            Ok(grant) => {
                let lease = self.lease_from(request, &grant, sent_at)?;
                self.hold(&lease, conn, ns, server);
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
        Capabilities {
            fencing: newest,
            // The client cannot see whether the server persists its fence ceiling.
            fencing_survives_restart: false,
            fifo: true,
            server_side_expiry: true,
            survives_server_restart: false,
            semaphores: newest,
            push_wakeups: true,
        }
    }

    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        match self.acquire_on(request, Duration::ZERO).await? {
            Ok(lease) => Ok(Some(lease)),
            Err((DflockdError::Timeout, Some(conn), server)) => {
                self.put_conn(server, conn);
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
            Err(_) => Err(LockError::TimedOut { waited: started.elapsed() }),
            Ok(result) => match result? {
                Ok(lease) => Ok(lease),
                Err((DflockdError::Timeout, Some(conn), server)) => {
                    self.put_conn(server, conn);
                    Err(LockError::TimedOut { waited: started.elapsed() })
                }
                Err((e, _, _)) => Err(self.map_acquire_error(request, e)),
            },
        }
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let token = lease.owner().to_string();
        match self.take_held(lease) {
            Some(held) => {
                let conn = Arc::try_unwrap(held.conn).map(AsyncMutex::into_inner);
                let mut conn = match conn {
                    Ok(conn) => conn,
                    // A refresh is using it concurrently; release on a fresh connection. The
                    // shared one closes when the refresh finishes.
                    Err(_) => self.take_conn(held.server).await?,
                };
                match commands::release_ns(&mut conn, held.ns, lease.key(), &token).await {
                    Ok(()) => {
                        self.put_conn(held.server, conn);
                        Ok(true)
                    }
                    Err(DflockdError::Server { .. }) => Ok(false),
                    Err(e) => Err(e.into_lock_error("release")),
                }
            }
            // Not held through this locker (already released, lost, or never ours): the
            // server decides by token alone.
            None => {
                let ns = if lease.limit() == 1 { Namespace::Lock } else { Namespace::Semaphore };
                let server = self.server_of(lease.key());
                let mut conn = self.take_conn(server).await?;
                match commands::release_ns(&mut conn, ns, lease.key(), &token).await {
                    Ok(()) => {
                        self.put_conn(server, conn);
                        Ok(true)
                    }
                    Err(DflockdError::Server { .. }) => Ok(false),
                    Err(e) => Err(e.into_lock_error("release")),
                }
            }
        }
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        crate::request::validate_ttl(ttl)?;
        let token = lease.owner().to_string();
        let lease_s = whole_seconds(ttl);
        let entry = {
            let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.get(&(lease.key().to_owned(), lease.owner().bits())).map(|h| (h.conn.clone(), h.ns))
        };
        let Some((conn, ns)) = entry else {
            // Released or lost through this locker, or never ours: not renewable here.
            return Ok(None);
        };
        let sent_at = Instant::now();
        let outcome = {
            let mut conn = conn.lock().await;
            commands::renew_ns(&mut conn, ns, lease.key(), &token, Some(lease_s)).await
        };
        match outcome {
            Ok(_) => Ok(Some(lease.refreshed(Duration::from_secs(lease_s), sent_at))),
            Err(DflockdError::Server { .. }) => {
                self.take_held(lease);
                Ok(None)
            }
            Err(e) => Err(e.into_lock_error("refresh")),
        }
    }

    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        let held = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&(lease.key().to_owned(), lease.owner().bits()));
        let remaining = lease.locally_remaining();
        Ok((held && !remaining.is_zero()).then_some(remaining))
    }
}
