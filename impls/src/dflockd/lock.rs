//! The high-level client: [`Lock`] and [`Semaphore`] own a connection to the server their key
//! shards to, renew the lease in the background, and signal when it is lost.
//!
//! Renewal runs at a fraction of the lease (default ½) minus an *early-only* random jitter
//! (default up to 10 % of the lease), so many holders do not renew in lockstep and no holder
//! ever renews later than planned. When a renewal is refused or fails, the lock is marked
//! lost ([`Lock::lost`] resolves) and the renew-failure callback runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use super::commands::{self, Enqueued, Grant};
use super::connection::{ConnectOptions, Connection};
use super::error::DflockdError;
use super::protocol::Namespace;
use super::shard::{ShardFn, crc32_shard};

/// Called with the error when a background renewal fails (the lease is then lost).
pub type RenewErrorCallback = Arc<dyn Fn(&DflockdError) + Send + Sync>;

/// Settings of a [`Lock`] or [`Semaphore`] (the Go client's fields).
#[derive(Clone)]
pub struct LockOptions {
    /// Servers, `host:port`; the key picks one with `shard`. Default `127.0.0.1:6388`.
    pub servers: Vec<String>,
    /// Server choice; default [`crc32_shard`], which every dflockd client uses.
    pub shard: ShardFn,
    /// How long `acquire` waits on the server. Default 10 s.
    pub acquire_timeout: Duration,
    /// Lease in seconds; `None` = the server's default.
    pub lease_ttl_s: Option<u64>,
    /// Renew once this fraction of the lease has passed. Default 0.5.
    pub renew_ratio: f64,
    /// Renew up to this fraction of the lease earlier, at random. Default 0.1.
    pub renew_jitter: f64,
    /// How long a renewal may take before it counts as failed. Default 5 s.
    pub renew_timeout: Duration,
    /// TLS and connect timeout.
    pub connect: ConnectOptions,
    /// Shared secret, sent with `auth` right after connecting.
    pub auth_token: Option<String>,
    /// Called when a background renewal fails.
    pub on_renew_error: Option<RenewErrorCallback>,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            servers: vec!["127.0.0.1:6388".into()],
            shard: crc32_shard,
            acquire_timeout: Duration::from_secs(10),
            lease_ttl_s: None,
            renew_ratio: 0.5,
            renew_jitter: 0.1,
            renew_timeout: Duration::from_secs(5),
            connect: ConnectOptions::default(),
            auth_token: None,
            on_renew_error: None,
        }
    }
}

impl std::fmt::Debug for LockOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockOptions")
            .field("servers", &self.servers)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("lease_ttl_s", &self.lease_ttl_s)
            .field("renew_ratio", &self.renew_ratio)
            .field("renew_jitter", &self.renew_jitter)
            .finish_non_exhaustive()
    }
}

impl LockOptions {
    /// The defaults with these servers.
    pub fn with_servers<I: IntoIterator<Item = S>, S: Into<String>>(servers: I) -> Self {
        LockOptions { servers: servers.into_iter().map(Into::into).collect(), ..LockOptions::default() }
    }
}

/// Opens a connection to `addr` and authenticates if a secret is given.
pub(crate) async fn open(addr: &str, connect: &ConnectOptions, auth: Option<&str>) -> Result<Connection, DflockdError> {
    let mut conn = Connection::connect(addr, connect).await?;
    if let Some(secret) = auth {
        commands::authenticate(&mut conn, secret).await?;
    }
    Ok(conn)
}

enum State {
    Idle,
    Queued(Connection),
    Held { conn: Arc<Mutex<Connection>>, grant: Grant, renewer: JoinHandle<()> },
}

struct Handle {
    key: String,
    ns: Namespace,
    limit: u32,
    options: LockOptions,
    state: State,
    lost: watch::Sender<bool>,
}

impl Handle {
    fn new(key: String, ns: Namespace, limit: u32, options: LockOptions) -> Self {
        Handle { key, ns, limit, options, state: State::Idle, lost: watch::Sender::new(false) }
    }

    fn server(&self) -> Result<&str, DflockdError> {
        let n = self.options.servers.len();
        if n == 0 {
            return Err(DflockdError::InvalidArgument("no servers configured".into()));
        }
        let index = (self.options.shard)(&self.key, n);
        self.options
            .servers
            .get(index)
            .map(String::as_str)
            .ok_or_else(|| DflockdError::InvalidArgument(format!("shard function chose server {index} of {n}")))
    }

    async fn open(&self) -> Result<Connection, DflockdError> {
        open(self.server()?, &self.options.connect, self.options.auth_token.as_deref()).await
    }

    fn hold(&mut self, conn: Connection, grant: Grant) {
        self.lost.send_replace(false);
        let conn = Arc::new(Mutex::new(conn));
        let renewer = tokio::spawn(renew_loop(
            conn.clone(),
            self.ns,
            self.key.clone(),
            grant.clone(),
            self.options.clone(),
            self.lost.clone(),
        ));
        self.state = State::Held { conn, grant, renewer };
    }

    async fn acquire(&mut self) -> Result<bool, DflockdError> {
        if matches!(self.state, State::Held { .. }) {
            return Ok(true);
        }
        // A queued connection is replaced: closing it leaves the queue.
        self.state = State::Idle;
        // The connection lives in this future until the grant is stored: dropping the future
        // closes it, which cancels the wait on the server (and releases a racing grant).
        let mut conn = self.open().await?;
        let timeout = self.options.acquire_timeout;
        match commands::acquire_ns(&mut conn, self.ns, &self.key, timeout, self.limit, self.options.lease_ttl_s).await {
            Ok(grant) => {
                self.hold(conn, grant);
                Ok(true)
            }
            Err(DflockdError::Timeout) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn enqueue(&mut self) -> Result<Enqueued, DflockdError> {
        if matches!(self.state, State::Held { .. } | State::Queued(_)) {
            return Err(DflockdError::AlreadyEnqueued);
        }
        let mut conn = self.open().await?;
        match commands::enqueue_ns(&mut conn, self.ns, &self.key, self.limit, self.options.lease_ttl_s).await? {
            Enqueued::Acquired(grant) => {
                self.hold(conn, grant.clone());
                Ok(Enqueued::Acquired(grant))
            }
            Enqueued::Queued => {
                self.state = State::Queued(conn);
                Ok(Enqueued::Queued)
            }
        }
    }

    async fn wait(&mut self, timeout: Duration) -> Result<bool, DflockdError> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => Err(DflockdError::NotEnqueued),
            held @ State::Held { .. } => {
                self.state = held;
                Ok(true)
            }
            // On timeout (or any error) the connection is dropped here, which leaves the
            // queue; enqueue again to re-queue.
            State::Queued(mut conn) => match commands::wait_ns(&mut conn, self.ns, &self.key, timeout).await {
                Ok(grant) => {
                    self.hold(conn, grant);
                    Ok(true)
                }
                Err(DflockdError::Timeout) => Ok(false),
                Err(e) => Err(e),
            },
        }
    }

    async fn release(&mut self) -> Result<bool, DflockdError> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle | State::Queued(_) => Ok(false),
            State::Held { conn, grant, renewer } => {
                renewer.abort();
                let mut conn = conn.lock().await;
                match commands::release_ns(&mut conn, self.ns, &self.key, &grant.token).await {
                    Ok(()) => Ok(true),
                    Err(DflockdError::Server { .. }) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn token(&self) -> Option<&str> {
        match &self.state {
            State::Held { grant, .. } => Some(&grant.token),
            _ => None,
        }
    }

    fn lease_s(&self) -> Option<u64> {
        match &self.state {
            State::Held { grant, .. } => Some(grant.lease_s),
            _ => None,
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let State::Held { renewer, .. } = &self.state {
            renewer.abort();
        }
    }
}

async fn renew_loop(
    conn: Arc<Mutex<Connection>>,
    ns: Namespace,
    key: String,
    grant: Grant,
    options: LockOptions,
    lost: watch::Sender<bool>,
) {
    let mut lease_s = grant.lease_s;
    loop {
        let lease = Duration::from_secs(lease_s.max(1));
        let planned = lease.mul_f64(options.renew_ratio.clamp(0.05, 0.95));
        let jitter = lease.mul_f64(options.renew_jitter.clamp(0.0, 0.5) * rand::random::<f64>());
        // Early-only: jitter shortens the wait, never lengthens it.
        let wait = planned.saturating_sub(jitter).max(Duration::from_millis(100));
        tokio::time::sleep(wait).await;
        let renewal = async {
            let mut conn = conn.lock().await;
            commands::renew_ns(&mut conn, ns, &key, &grant.token, options.lease_ttl_s).await
        };
        let outcome = match tokio::time::timeout(options.renew_timeout, renewal).await {
            Ok(outcome) => outcome,
            Err(_) => Err(DflockdError::Io {
                command: "n",
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "renewal took longer than renew_timeout"),
            }),
        };
        match outcome {
            // The Go server answers the lease, Python 0.5 the remaining whole seconds; both
            // are the time the server now promises, so the next renewal is planned from it.
            Ok(seconds) => lease_s = seconds.max(1),
            Err(error) => {
                if let Some(callback) = &options.on_renew_error {
                    callback(&error);
                }
                lost.send_replace(true);
                return;
            }
        }
    }
}

macro_rules! high_level {
    ($name:ident, $what:literal) => {
        impl $name {
            /// Takes it, waiting up to `acquire_timeout` on the server: `Ok(true)` when held
            /// (renewal starts), `Ok(false)` when the wait ran out. Already held: `Ok(true)`.
            /// Cancel-safe: dropping the future closes its connection.
            pub async fn acquire(&mut self) -> Result<bool, DflockdError> {
                self.0.acquire().await
            }

            /// Phase one of two-phase acquisition: `Acquired` (held now, renewal starts) or
            /// `Queued` (call [`Self::wait`] next).
            pub async fn enqueue(&mut self) -> Result<Enqueued, DflockdError> {
                self.0.enqueue().await
            }

            /// Phase two: waits up to `timeout` for the grant. `Ok(false)` on timeout, after
            /// which the queue place is gone (the connection is closed). `NotEnqueued` without
            /// a prior enqueue.
            pub async fn wait(&mut self, timeout: Duration) -> Result<bool, DflockdError> {
                self.0.wait(timeout).await
            }

            /// Releases it. Idempotent: `Ok(false)` if it was not held (or no longer held);
            /// a queued caller just leaves the queue.
            pub async fn release(&mut self) -> Result<bool, DflockdError> {
                self.0.release().await
            }

            /// The token of the current grant.
            pub fn token(&self) -> Option<&str> {
                self.0.token()
            }

            /// The fencing token carried by the current grant's token (newest servers), if
            /// the token has the 32-hex fenced format.
            pub fn fence(&self) -> Option<u64> {
                let token = self.0.token()?;
                (token.len() == 32).then(|| u64::from_str_radix(&token[..16], 16).ok()).flatten()
            }

            /// The lease the server granted, in seconds.
            pub fn lease_s(&self) -> Option<u64> {
                self.0.lease_s()
            }

            /// Whether background renewal has failed since the latest grant.
            pub fn is_lost(&self) -> bool {
                *self.0.lost.borrow()
            }

            /// Resolves when background renewal fails: the lease must be assumed gone.
            pub async fn lost(&self) {
                let mut lost = self.0.lost.subscribe();
                let _ = lost.wait_for(|lost| *lost).await;
            }

            /// The key.
            pub fn key(&self) -> &str {
                &self.0.key
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("key", &self.0.key)
                    .field("held", &self.0.token().is_some())
                    .finish()
            }
        }
    };
}

/// A distributed lock on one key. Dropping it closes its connection, which (with the
/// server's auto-release) releases the lock.
pub struct Lock(Handle);

impl Lock {
    /// A lock on `key`; nothing is sent until [`Lock::acquire`] or [`Lock::enqueue`].
    pub fn new(key: impl Into<String>, options: LockOptions) -> Self {
        Lock(Handle::new(key.into(), Namespace::Lock, 1, options))
    }
}

/// One permit of a counting semaphore of `limit` permits on one key.
pub struct Semaphore(Handle);

impl Semaphore {
    /// A permit of the semaphore `key` with `limit` permits (every user of the key must
    /// agree on the limit; the server answers `error_limit_mismatch` otherwise).
    pub fn new(key: impl Into<String>, limit: u32, options: LockOptions) -> Self {
        Semaphore(Handle::new(key.into(), Namespace::Semaphore, limit, options))
    }
}

high_level!(Lock, "lock");
high_level!(Semaphore, "semaphore");
