//! The reference dflockd server (`lockcheck serve`), on tokio.
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
//! ```
//! use lockcheck_impls::dflockd::{Connection, ConnectOptions, Server, ServerConfig, commands};
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

mod fence;
mod session;
mod table;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

pub use fence::FenceStateError;

use super::tls::ServerTls;
use fence::FenceCounter;
use table::{Table, TableLimits};

/// The server's settings. Defaults are the Go server's (`--flag` / `DFLOCKD_*` names in
/// brackets; `lockcheck serve` reads both, the variable winning).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Bind address [`--host`, `DFLOCKD_HOST`] = 127.0.0.1.
    pub host: String,
    /// Bind port, 0 = any free port [`--port`, `DFLOCKD_PORT`] = 6388.
    pub port: u16,
    /// Lease when a request names none, seconds [`--default-lease-ttl`, `DFLOCKD_DEFAULT_LEASE_TTL_S`] = 33.
    pub default_lease_ttl_s: u64,
    /// Longest sleep of the expiry sweeper [`--lease-sweep-interval`, `DFLOCKD_LEASE_SWEEP_INTERVAL_S`] = 1 s.
    pub lease_sweep_interval: Duration,
    /// How often idle keys are pruned [`--gc-interval`, `DFLOCKD_GC_LOOP_SLEEP`] = 5 s.
    pub gc_interval: Duration,
    /// Idle time after which a free key is pruned [`--gc-max-idle`, `DFLOCKD_GC_MAX_UNUSED_TIME`] = 60 s.
    pub gc_max_idle: Duration,
    /// Keys, locks and semaphores together [`--max-locks`, `DFLOCKD_MAX_LOCKS`] = 1024.
    pub max_locks: usize,
    /// Concurrent connections, 0 = unlimited [`--max-connections`, `DFLOCKD_MAX_CONNECTIONS`] = 0.
    pub max_connections: usize,
    /// Waiters per key, 0 = unlimited [`--max-waiters`, `DFLOCKD_MAX_WAITERS`] = 0.
    pub max_waiters: usize,
    /// Time allowed for each request line, idle time between requests included
    /// [`--read-timeout`, `DFLOCKD_READ_TIMEOUT_S`] = 23 s.
    pub read_timeout: Duration,
    /// Time allowed to write a reply [`--write-timeout`, `DFLOCKD_WRITE_TIMEOUT_S`] = 5 s.
    pub write_timeout: Duration,
    /// Drain time on shutdown, zero = wait forever [`--shutdown-timeout`, `DFLOCKD_SHUTDOWN_TIMEOUT_S`] = 30 s.
    pub shutdown_timeout: Duration,
    /// Release a connection's slots when it closes
    /// [`--auto-release-on-disconnect`, `DFLOCKD_AUTO_RELEASE_ON_DISCONNECT`] = true.
    pub auto_release_on_disconnect: bool,
    /// Shared secret; when set, the first command must be `auth`
    /// [`--auth-token`, `DFLOCKD_AUTH_TOKEN`; or `--auth-token-file`, `DFLOCKD_AUTH_TOKEN_FILE`].
    pub auth_token: Option<String>,
    /// TLS on the port [`--tls-cert` + `--tls-key`, `DFLOCKD_TLS_CERT` + `DFLOCKD_TLS_KEY`].
    pub tls: Option<ServerTls>,
    /// Where the fence ceiling is persisted [`--fence-state-file`, `DFLOCKD_FENCE_STATE_FILE`].
    pub fence_state_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 6388,
            default_lease_ttl_s: 33,
            lease_sweep_interval: Duration::from_secs(1),
            gc_interval: Duration::from_secs(5),
            gc_max_idle: Duration::from_secs(60),
            max_locks: 1024,
            max_connections: 0,
            max_waiters: 0,
            read_timeout: Duration::from_secs(23),
            write_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
            auto_release_on_disconnect: true,
            auth_token: None,
            tls: None,
            fence_state_file: None,
        }
    }
}

impl ServerConfig {
    /// The defaults on 127.0.0.1 and a free port (tests, the in-process backend).
    pub fn ephemeral() -> Self {
        ServerConfig { port: 0, ..ServerConfig::default() }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
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
    read_timeout: Duration,
    write_timeout: Duration,
    auth_token: Option<String>,
    draining: watch::Receiver<bool>,
    connections: watch::Sender<usize>,
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
                    auto_release: config.auto_release_on_disconnect,
                },
                fence,
            ),
            default_lease_s: config.default_lease_ttl_s.max(1),
            read_timeout: config.read_timeout,
            write_timeout: config.write_timeout,
            auth_token: config.auth_token.clone(),
            draining,
            connections: watch::Sender::new(0),
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
    let tls = config.tls.as_ref().map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
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
        let _ = tcp.set_nodelay(true);
        let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let tls = tls.clone();
        let handshake_timeout = config.read_timeout;
        let mut sessions = sessions.lock().unwrap_or_else(|e| e.into_inner());
        while sessions.try_join_next().is_some() {}
        sessions.spawn(async move {
            let _slot = slot;
            match tls {
                None => session::serve(tcp, shared, conn).await,
                Some(acceptor) => {
                    if let Ok(Ok(stream)) = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        session::serve(stream, shared, conn).await;
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
        let wake = next.map_or(now + interval, |at| at.min(now + interval));
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
