//! The reference dflockd lock server (`lockcheck serve`), on tokio: the protocol of
//! `lockcheck_impls::dflockd`, served.
//!
//! The whole protocol of the newest servers: FIFO leases, semaphores with limit rules, two-phase
//! acquisition per connection, renew, auth (constant-time compare), TLS on the same port,
//! `stats`, `ping`, caps on keys, waiters and connections, a read timeout, auto-release on
//! disconnect, idle-state GC, graceful drain (`error_draining`), and fencing tokens (16 hex of
//! a monotonic counter + 16 hex of salt) that stay monotonic across restarts with a state file.
//!
//! Leases expire at their exact deadline (a timer on the earliest deadline), not only at the
//! next periodic sweep, so a hand-off after expiry is not delayed by the sweep interval; the
//! interval still bounds how long the sweeper sleeps.
//!
//! # Hostile clients and settings
//! Settings are validated before the server binds ([`ServerConfig::validate`]); leases are
//! clamped to [`ServerConfig::max_lease_ttl_s`]; fencing stops (`error_fence_exhausted`)
//! rather than wraps; per-connection caps keep one client from taking every key, permit or
//! queue place; failed authentication is delayed and reported ([`ServerEvent`]).
//!
//! # Memory
//! Per connection the server keeps a fixed 1 KiB inbox (one request at its longest, never
//! grown) and a reply buffer that is back to at most [`REPLY_BUFFER_KEEP`] bytes after
//! every reply. A connection reads its next request only once its previous reply is
//! written in full: a client that pipelines requests without reading replies stalls its
//! own connection after one reply (what it sent beyond that waits in the kernel's socket
//! buffers, bounded by `net.ipv4.tcp_rmem`/`tcp_wmem`), and it is closed at the write
//! timeout. A `stats` document is the only large reply: it lists at most 1024 keys, and at
//! most [`MAX_CONCURRENT_STATS`] are being built or written at once across the server.
//! [`Server::reply_buffer_bytes`] reports what the reply buffers hold now.
//!
//! ```
//! use lockcheck_impls::dflockd::{Connection, ConnectOptions, commands};
//! use lockcheck_server::{Server, ServerConfig};
//! use std::time::Duration;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let server = Server::start(ServerConfig::ephemeral()).await?;
//! let mut conn = Connection::connect(&server.local_addr().to_string(), &ConnectOptions::default()).await?;
//! let grant = commands::acquire(&mut conn, "reports", Duration::ZERO, Some(5)).await?;
//! commands::release(&mut conn, "reports", &grant.token).await?;
//! server.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

mod auth;
mod config;
mod fence;
mod session;
mod table;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

pub use config::{
    ConfigError, EventSink, MAX_AUTH_FAILURE_BASE_DELAY, MAX_AUTH_FAILURE_DELAY, MAX_KEYS, MAX_LEASE_TTL_S,
    MAX_SEMAPHORE_LIMIT, MAX_SETTING_DURATION, ServerConfig, ServerEvent,
};
pub use fence::{FenceStateError, parse_ceiling};
pub use session::REPLY_BUFFER_KEEP;

use auth::AuthGate;
use fence::FenceCounter;
use table::{Table, TableLimits, later};

/// How many `stats` documents may be built or written at once across the server; a further
/// `stats` request waits its turn (bounds the memory large replies take in total).
pub const MAX_CONCURRENT_STATS: usize = 8;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A setting is out of its bounds.
    #[error("invalid setting: {0}")]
    Config(#[from] ConfigError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The fence state file could not be used.
    #[error(transparent)]
    FenceState(#[from] FenceStateError),
}

pub(crate) struct Shared {
    table: Table,
    default_lease_s: u64,
    max_lease_s: u64,
    max_semaphore_limit: u32,
    max_waiters_per_connection: usize,
    read_timeout: Duration,
    write_timeout: Duration,
    auth_token: Option<String>,
    auth: AuthGate,
    draining: watch::Receiver<bool>,
    connections: watch::Sender<usize>,
    /// Bytes held by reply buffers (and `stats` documents being written), all connections.
    reply_bytes: AtomicUsize,
    /// Connections whose reply waits for the peer to read.
    stalled: watch::Sender<usize>,
    stats_turns: Semaphore,
}

/// Counts a connection from accept to close.
struct ConnectionSlot(Arc<Shared>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.send_modify(|n| *n -= 1);
    }
}

/// A running server. Dropping it stops everything at once (connections are closed, so
/// their slots are released); [`Server::shutdown`] drains gracefully first.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    drain: watch::Sender<bool>,
    shutdown_timeout: Duration,
    accept: JoinHandle<()>,
    timers: Vec<JoinHandle<()>>,
    sessions: Arc<Mutex<JoinSet<()>>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Server {
    /// Binds and starts serving in the background on the current tokio runtime.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        config.validate()?;
        let addr = format!("{}:{}", config.host, config.port);
        let listener =
            TcpListener::bind(&addr).await.map_err(|source| ServerError::Bind { addr: addr.clone(), source })?;
        let local = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
        let fence = FenceCounter::new(config.fence_state_file.clone())?;
        let (drain, draining) = watch::channel(false);
        let shared = Arc::new(Shared {
            table: Table::new(
                TableLimits {
                    max_locks: config.max_locks,
                    max_waiters: config.max_waiters,
                    max_keys_per_connection: config.max_keys_per_connection,
                    auto_release: config.auto_release_on_disconnect,
                },
                fence,
                config.events.clone(),
            ),
            default_lease_s: config.default_lease_ttl_s,
            max_lease_s: config.max_lease_ttl_s,
            max_semaphore_limit: config.max_semaphore_limit,
            max_waiters_per_connection: config.max_waiters_per_connection,
            read_timeout: config.read_timeout,
            write_timeout: config.write_timeout,
            auth_token: config.auth_token.clone(),
            auth: AuthGate::new(
                config.auth_failure_delay,
                config.max_unauthenticated_connections,
                config.events.clone(),
            ),
            draining,
            connections: watch::Sender::new(0),
            reply_bytes: AtomicUsize::new(0),
            stalled: watch::Sender::new(0),
            stats_turns: Semaphore::new(MAX_CONCURRENT_STATS),
        });
        let sessions = Arc::new(Mutex::new(JoinSet::new()));
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), sessions.clone(), config.clone()));
        let sweeper = tokio::spawn(sweep_leases(shared.clone(), config.lease_sweep_interval));
        let gc = tokio::spawn(collect_idle(shared.clone(), config.gc_interval, config.gc_max_idle));
        Ok(Server {
            addr: local,
            shared,
            drain,
            shutdown_timeout: config.shutdown_timeout,
            accept,
            timers: vec![sweeper, gc],
            sessions,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `stats` document.
    pub fn stats(&self) -> serde_json::Value {
        self.shared.table.stats(*self.shared.connections.borrow())
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        *self.shared.connections.borrow()
    }

    /// Waits until the number of open connections satisfies `condition` (tests: "all my
    /// connections are gone" without polling).
    pub async fn wait_for_connections(&self, condition: impl FnMut(&usize) -> bool) {
        let mut connections = self.shared.connections.subscribe();
        let _ = connections.wait_for(condition).await;
    }

    /// Bytes the connections' reply buffers hold now (with `stats` documents being written):
    /// at most [`REPLY_BUFFER_KEEP`] per connection between replies.
    pub fn reply_buffer_bytes(&self) -> usize {
        self.shared.reply_bytes.load(Ordering::Relaxed)
    }

    /// Waits until the number of connections whose reply is waiting for the peer to read
    /// satisfies `condition` (tests: "that client's connection has stalled").
    pub async fn wait_for_stalled_replies(&self, condition: impl FnMut(&usize) -> bool) {
        let mut stalled = self.shared.stalled.subscribe();
        let _ = stalled.wait_for(condition).await;
    }

    /// Connections that have not authenticated yet (always 0 without a secret).
    pub fn unauthenticated_connections(&self) -> usize {
        self.shared.auth.unauthenticated()
    }

    /// Keys in the table (held, queued or not yet collected).
    pub fn key_count(&self) -> usize {
        self.shared.table.key_count()
    }

    /// Stops accepting, answers every further request (and every blocked waiter) with
    /// `error_draining`, closes idle connections, and waits up to the shutdown timeout for
    /// the rest to close before dropping them.
    pub async fn shutdown(self) {
        self.accept.abort();
        self.drain.send_replace(true);
        let mut connections = self.shared.connections.subscribe();
        let all_closed = connections.wait_for(|n| *n == 0);
        if self.shutdown_timeout.is_zero() {
            let _ = all_closed.await;
        } else {
            let _ = tokio::time::timeout(self.shutdown_timeout, all_closed).await;
        }
    }

    /// Serves until `signal` resolves, then shuts down gracefully (the CLI passes ctrl-c).
    pub async fn serve_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
        for timer in &self.timers {
            timer.abort();
        }
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).abort_all();
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    sessions: Arc<Mutex<JoinSet<()>>>,
    config: ServerConfig,
) {
    static NEXT_CONN: AtomicU64 = AtomicU64::new(1);
    let tls = config.tls.as_ref().map(|t| tokio_rustls::TlsAcceptor::from(t.rustls_config()));
    let auth_required = shared.auth_token.is_some();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of file descriptors or a connection reset before accept: back off a
                // little instead of spinning, then keep serving.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let mut over_cap = false;
        shared.connections.send_modify(|n| {
            if config.max_connections > 0 && *n >= config.max_connections {
                over_cap = true;
            } else {
                *n += 1;
            }
        });
        if over_cap {
            drop(tcp);
            continue;
        }
        let slot = ConnectionSlot(shared.clone());
        // With a secret, a connection holds a pre-auth pass until it authenticates; with
        // all passes taken, it is closed at once.
        // The auth deadline counts from accept, so the TLS handshake is within it.
        let pre_auth = if auth_required {
            match shared.auth.admit(peer.ip()) {
                Some(pass) => Some((pass, later(Instant::now(), config.auth_timeout))),
                None => continue,
            }
        } else {
            None
        };
        let _ = tcp.set_nodelay(true);
        let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let tls = tls.clone();
        // Before authentication, the auth timeout bounds the handshake too.
        let handshake_timeout =
            if auth_required { config.read_timeout.min(config.auth_timeout) } else { config.read_timeout };
        let mut sessions = sessions.lock().unwrap_or_else(|e| e.into_inner());
        while sessions.try_join_next().is_some() {}
        sessions.spawn(async move {
            let _slot = slot;
            match tls {
                None => session::serve(tcp, shared, conn, peer.ip(), pre_auth).await,
                Some(acceptor) => {
                    if let Ok(Ok(stream)) = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        session::serve(stream, shared, conn, peer.ip(), pre_auth).await;
                    }
                }
            }
        });
    }
}

async fn sweep_leases(shared: Arc<Shared>, interval: Duration) {
    let interval = interval.max(Duration::from_millis(10));
    loop {
        let now = Instant::now();
        let next = shared.table.expire_due(now);
        let wake = next.map_or(later(now, interval), |at| at.min(later(now, interval)));
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = shared.table.deadline_added.notified() => {}
        }
    }
}

async fn collect_idle(shared: Arc<Shared>, interval: Duration, max_idle: Duration) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        shared.table.collect_idle(Instant::now(), max_idle);
    }
}
