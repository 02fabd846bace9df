//! The Postgres locker: session-level advisory locks, one database session per held lease,
//! fencing tokens from a sequence, and lease expiry judged by the database's clock.
//!
//! # How it works
//!
//! * **A lock is an advisory lock** on a 64-bit id, the FNV-1a hash of the key
//!   ([`lock_id`]). Two keys whose hashes collide share one lock: never two holders of a key,
//!   only contention between two keys that should not contend. With `n` keys in use at once
//!   the chance of any collision is about `n² / 2⁶⁵` (a million keys: 3 · 10⁻⁸).
//! * **Bound to a session.** An advisory lock belongs to the database session (the backend
//!   process) that took it, and ends with it. Each grant takes a session of its own from the
//!   locker's pool — advisory locks are re-entrant within a session, so one session per lease
//!   is what keeps two acquires of one locker from both "holding" a key — and keeps it until the
//!   lease is released; then the session goes back to the pool. A holder that crashes (its
//!   connections close) frees its locks at once ([`Capabilities::session_bound`]); a *live*
//!   holder whose session is cut (`pg_terminate_backend`, a proxy, a failover) loses its lock
//!   while it still believes it holds it: the violation that claim predicts, and the reason
//!   for fencing.
//! * **Fencing tokens are `nextval('lockcheck_fence')`**, drawn in the same statement as the
//!   grant, *after* the advisory lock is taken and while it is held: a later grant of the key
//!   can only start once this one's lock is gone, so it draws a larger value. A sequence never
//!   goes back, also across a restart or a crash (it may skip values), so the tokens survive a
//!   restart of the server.
//! * **Every grant is recorded** in `lockcheck_holders` (lock id → owner token, fence, the
//!   session's pid, and its expiry by the database's clock), in the statement that takes the
//!   lock. Release, refresh and remaining TTL go through the record, so any client can release
//!   or refresh a lease it was handed (its owner token proves ownership); only the lease's own
//!   session can unlock an advisory lock, so another client's release ends that session
//!   (`pg_terminate_backend`, waiting until it is gone).
//!
//! # Expiry: what this locker promises, and what it does not
//!
//! **Postgres has no TTL for an advisory lock: while its session lives, it is held.** This
//! locker gives leases their TTL on top: the record's expiry (`clock_timestamp() + ttl` at the
//! grant, by the database's clock, never before the holder's own belief ends) is enforced by
//! the *contenders*: a try that finds the key held past its recorded expiry ends the holder's
//! session and takes the key; a waiter sets a timer for the holder's expiry and, when it fires,
//! has the locker's control session end the expired holder's session while the waiter stays
//! queued (so the lock goes to the first waiter, in order). Release, refresh and remaining
//! TTL treat a lease past its recorded expiry as gone. So a lease does end at its TTL whenever
//! someone wants the key — but nothing ends it on the server by itself: an expired lease nobody
//! contends stays locked (harmlessly), and [`Capabilities::server_side_expiry`] is **not**
//! claimed. Refresh moves the recorded expiry; `remaining_ttl` reads it.
//!
//! # Waiting
//!
//! A waiter blocks in `pg_advisory_lock` with `lock_timeout` set to what is left of its wait
//! bound (a time-out is Postgres's `55P03`, and then nothing is held). Postgres queues waiters
//! of one lock in arrival order and hands a released lock straight to the first of them, so
//! waiters are granted FIFO and a newcomer's try cannot barge in. A cancelled or locally
//! timed-out wait cancels its statement (`pg_cancel_backend` through the cancel token) and
//! closes its session, so a grant that raced the cancellation ends with the session.
//!
//! # Limits
//!
//! Semaphores are not offered (an advisory lock is exclusive; waiting for any of `n` slots is
//! not a single lock wait). [`Locker::queued`] is `None`: a statement blocked in the lock
//! queue is not announced to its client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::{Instant, sleep};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::{Capabilities, FencingToken, InvalidInput, Lease, LeaseRequest, LockError, Locker, OwnerToken};

/// How long one request may take before its outcome is unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The least time an acquire is given past its wait bound to finish the request in flight.
const LEAST_ATTEMPT: Duration = Duration::from_millis(100);

/// Idle sessions a locker keeps for its next grants.
const IDLE_SESSIONS: usize = 16;

/// The schema every locker sets up (idempotently) when it connects. Statements are separated
/// by `;;`, one transaction under an advisory lock of the two-key form (a space of its own, no
/// key's lock) so concurrent lockers do not race each other's `CREATE`.
const SCHEMA: &str = r#"
CREATE SEQUENCE IF NOT EXISTS lockcheck_fence;;
CREATE TABLE IF NOT EXISTS lockcheck_holders (
    lock_id bigint PRIMARY KEY,
    owner text NOT NULL,
    fence bigint NOT NULL,
    pid integer NOT NULL,
    expires_at timestamptz NOT NULL
);;
CREATE OR REPLACE FUNCTION lockcheck_holds(p_pid integer, p_lock bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND pid = p_pid AND objsubid = 1
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND ((classid::bigint << 32) | objid::bigint) = p_lock)
$$;;
CREATE OR REPLACE FUNCTION lockcheck_record(p_lock bigint, p_owner text, p_ttl_us bigint,
    OUT o_fence bigint, OUT o_waited_us bigint)
LANGUAGE plpgsql AS $$
DECLARE
    now_ timestamptz;
BEGIN
    o_fence := nextval('lockcheck_fence');
    now_ := clock_timestamp();
    INSERT INTO lockcheck_holders AS h (lock_id, owner, fence, pid, expires_at)
        VALUES (p_lock, p_owner, o_fence, pg_backend_pid(), now_ + p_ttl_us * interval '1 microsecond')
        ON CONFLICT (lock_id) DO UPDATE
        SET owner = excluded.owner, fence = excluded.fence, pid = excluded.pid, expires_at = excluded.expires_at;
    o_waited_us := (extract(epoch FROM now_ - statement_timestamp()) * 1e6)::bigint;
END $$;;
CREATE OR REPLACE FUNCTION lockcheck_reap(p_lock bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    h record;
BEGIN
    SELECT pid, expires_at INTO h FROM lockcheck_holders WHERE lock_id = p_lock FOR UPDATE;
    IF NOT FOUND OR NOT lockcheck_holds(h.pid, p_lock) THEN
        RETURN NULL;
    END IF;
    IF h.expires_at > clock_timestamp() THEN
        RETURN greatest((extract(epoch FROM h.expires_at - clock_timestamp()) * 1e6)::bigint, 1);
    END IF;
    PERFORM pg_terminate_backend(h.pid, 5000);
    RETURN 0;
END $$;;
CREATE OR REPLACE FUNCTION lockcheck_try(p_lock bigint, p_owner text, p_ttl_us bigint,
    OUT o_fence bigint, OUT o_waited_us bigint, OUT o_holder_left_us bigint)
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_lock(p_lock) THEN
        o_holder_left_us := lockcheck_reap(p_lock);
        IF o_holder_left_us IS DISTINCT FROM 0 OR NOT pg_try_advisory_lock(p_lock) THEN
            RETURN;
        END IF;
    END IF;
    SELECT r.o_fence, r.o_waited_us INTO o_fence, o_waited_us FROM lockcheck_record(p_lock, p_owner, p_ttl_us) r;
END $$;;
CREATE OR REPLACE FUNCTION lockcheck_wait(p_lock bigint, p_owner text, p_ttl_us bigint, p_timeout_ms bigint,
    OUT o_fence bigint, OUT o_waited_us bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('lock_timeout', p_timeout_ms || 'ms', true);
    PERFORM pg_advisory_lock(p_lock);
    SELECT r.o_fence, r.o_waited_us INTO o_fence, o_waited_us FROM lockcheck_record(p_lock, p_owner, p_ttl_us) r;
END $$;;
CREATE OR REPLACE FUNCTION lockcheck_release(p_lock bigint, p_owner text, p_fence bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    h record;
    held boolean;
BEGIN
    DELETE FROM lockcheck_holders WHERE lock_id = p_lock AND owner = p_owner AND fence = p_fence
        RETURNING pid, expires_at INTO h;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    held := lockcheck_holds(h.pid, p_lock);
    IF h.pid = pg_backend_pid() THEN
        PERFORM pg_advisory_unlock(p_lock);
    ELSIF held THEN
        PERFORM pg_terminate_backend(h.pid, 5000);
    END IF;
    RETURN held AND h.expires_at > clock_timestamp();
END $$
"#;

/// The advisory lock id of a key: 64-bit FNV-1a of its bytes (stable across processes,
/// versions and platforms). See "How it works" for the collision risk.
pub fn lock_id(key: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

/// A locker on a Postgres database. Cheap to clone; clones share its sessions.
///
/// ```no_run
/// use std::time::Duration;
/// use lockcheck_impls::{LeaseRequest, Locker, postgres::PostgresLocker};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let locker = PostgresLocker::connect("postgres://lockcheck@127.0.0.1:5432/postgres").await?;
/// let lease = locker.acquire(&LeaseRequest::lock("invoice-42", Duration::from_secs(10)), Duration::from_secs(1)).await?;
/// assert!(locker.release(&lease).await?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct PostgresLocker {
    inner: Arc<Inner>,
}

struct Inner {
    config: tokio_postgres::Config,
    describe: String,
    /// For what needs no session of its own: another client's lease, a waiter's reaping.
    control: Client,
    idle: Mutex<Vec<Client>>,
    /// The session of each lease this locker granted, by owner token.
    held: Mutex<HashMap<OwnerToken, Client>>,
}

/// Checks a `postgres://` URL without connecting: its configuration, and the URL without a
/// password for messages.
pub fn parse_url(url: &str) -> Result<(tokio_postgres::Config, String), InvalidInput> {
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        return Err(InvalidInput::Backend(format!("{url:?} is not a postgres:// URL")));
    }
    let config: tokio_postgres::Config =
        url.parse().map_err(|error| InvalidInput::Backend(format!("bad postgres URL: {error}")))?;
    if config.get_hosts().is_empty() {
        return Err(InvalidInput::Backend(format!("{url:?} names no host")));
    }
    let shown = match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, rest)), Some((userinfo, host))) if rest.contains('@') => {
            let user = userinfo.trim_start_matches(&format!("{scheme}://")).split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        _ => url.to_owned(),
    };
    Ok((config, shown))
}

/// An error and its causes (tokio-postgres says "error connecting to server" and keeps the
/// reason, "connection refused", in its source).
fn with_causes(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        text.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    text
}

fn unavailable(error: tokio_postgres::Error) -> LockError {
    LockError::Unavailable { message: format!("postgres: {}", with_causes(&error)), source: Some(Box::new(error)) }
}

fn indeterminate(operation: &'static str, error: tokio_postgres::Error) -> LockError {
    LockError::Indeterminate {
        operation,
        message: format!("postgres: {}", with_causes(&error)),
        source: Some(Box::new(error)),
    }
}

/// `request` with the request time-out.
async fn bounded<T>(
    operation: &'static str,
    request: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, LockError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(indeterminate(operation, error)),
        Err(_) => {
            Err(LockError::indeterminate(operation, format!("postgres did not answer within {REQUEST_TIMEOUT:?}")))
        }
    }
}

fn micros(duration: Duration) -> i64 {
    duration.as_micros().min(i64::MAX as u128) as i64
}

impl PostgresLocker {
    /// Connects to the database the URL names (`postgres://user[:password]@host:port/db`) and
    /// sets up the locker's sequence, table and functions there if they are missing.
    pub async fn connect(url: &str) -> Result<Self, LockError> {
        let (config, describe) = parse_url(url)?;
        let control = open(&config).await?;
        // The schema, once per database, under a transaction-level advisory lock.
        let setup = async {
            control.batch_execute("BEGIN; SELECT pg_advisory_xact_lock(27499, 0)").await?;
            for statement in SCHEMA.split(";;") {
                control.batch_execute(statement).await?;
            }
            control.batch_execute("COMMIT").await
        };
        match tokio::time::timeout(REQUEST_TIMEOUT * 5, setup).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(unavailable(error)),
            Err(_) => return Err(LockError::unavailable("postgres did not set up the locker's schema in time")),
        }
        Ok(PostgresLocker {
            inner: Arc::new(Inner {
                config,
                describe,
                control,
                idle: Mutex::new(Vec::new()),
                held: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The control session (for tests and tools).
    pub fn client(&self) -> &Client {
        &self.inner.control
    }

    /// How many sessions hold leases of this locker now.
    pub fn held_sessions(&self) -> usize {
        self.inner.held.lock().expect("sessions poisoned").len()
    }
}

/// A new session.
async fn open(config: &tokio_postgres::Config) -> Result<Client, LockError> {
    let (client, connection) = tokio::time::timeout(REQUEST_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| {
            LockError::unavailable(format!("postgres at {} did not accept a connection in time", address(config)))
        })?
        .map_err(|error| LockError::Unavailable {
            message: format!("postgres at {}: {}", address(config), with_causes(&error)),
            source: Some(Box::new(error)),
        })?;
    // The connection runs until its client is dropped (closing the session) or the server ends it.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `host:port` of a configuration, for messages.
fn address(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => String::new(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// Cancels the statement a session is running when dropped, unless disarmed, and closes the
/// session (it is dropped with this guard): a wait given up leaves nothing queued and no grant.
struct Abandon {
    client: Option<Client>,
}

impl Abandon {
    fn new(client: Client) -> Self {
        Abandon { client: Some(client) }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("present until taken")
    }

    fn take(mut self) -> Client {
        self.client.take().expect("present until taken")
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let cancel = client.cancel_token();
            crate::cleanup::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, cancel.cancel_query(NoTls)).await;
                drop(client);
            });
        }
    }
}

/// What a try or a wait returned.
struct Attempt {
    /// The fence and the server's time from the statement's arrival to the grant.
    granted: Option<(i64, Duration)>,
    /// The holder's recorded time left (`None`: no recorded holder yet).
    holder_left: Option<Duration>,
}

impl Inner {
    async fn session(&self) -> Result<Client, LockError> {
        let idle = self.idle.lock().expect("sessions poisoned").pop();
        match idle {
            Some(client) if !client.is_closed() => Ok(client),
            _ => open(&self.config).await,
        }
    }

    fn put_back(&self, client: Client) {
        let mut idle = self.idle.lock().expect("sessions poisoned");
        if !client.is_closed() && idle.len() < IDLE_SESSIONS {
            idle.push(client);
        }
    }

    fn refuse_unsupported(request: &LeaseRequest) -> Result<(), LockError> {
        if request.limit() > 1 {
            return Err(LockError::Unsupported { operation: "semaphores (an advisory lock is exclusive)" });
        }
        Ok(())
    }

    fn granted(&self, request: &LeaseRequest, owner: OwnerToken, session: Client, fence: i64, at: Instant) -> Lease {
        self.held.lock().expect("sessions poisoned").insert(owner, session);
        Lease::new(request.key(), owner, FencingToken(fence as u64), request.ttl(), at, 1)
    }

    async fn try_once(
        &self,
        session: &Client,
        request: &LeaseRequest,
        owner: OwnerToken,
    ) -> Result<Attempt, LockError> {
        let row = bounded(
            "try-acquire",
            session.query_one(
                "SELECT o_fence, o_waited_us, o_holder_left_us FROM lockcheck_try($1, $2, $3)",
                &[&lock_id(request.key()), &owner.to_string(), &micros(request.ttl())],
            ),
        )
        .await?;
        let fence: Option<i64> = row.get(0);
        let waited: Option<i64> = row.get(1);
        let left: Option<i64> = row.get(2);
        Ok(Attempt {
            granted: fence.map(|fence| (fence, Duration::from_micros(waited.unwrap_or(0).max(0) as u64))),
            holder_left: left.map(|left| Duration::from_micros(left.max(0) as u64)),
        })
    }

    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        request.validate()?;
        Self::refuse_unsupported(request)?;
        let session = Abandon::new(self.session().await?);
        let owner = OwnerToken::random();
        let sent = Instant::now();
        let attempt = self.try_once(session.client(), request, owner).await?;
        let session = session.take();
        match attempt.granted {
            Some((fence, waited)) => Ok(Some(self.granted(request, owner, session, fence, sent + waited))),
            None => {
                self.put_back(session);
                Ok(None)
            }
        }
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        request.validate()?;
        crate::validate_wait(wait)?;
        Self::refuse_unsupported(request)?;
        let started = Instant::now();
        let deadline = started + wait;
        // A frozen or unreachable server must not hold the caller past its bound (the nemesis
        // caught 500 ms overruns while a new session waited for a paused postmaster): give up
        // locally one round trip's allowance past it; the session is cancelled and closed.
        match tokio::time::timeout_at(deadline + LEAST_ATTEMPT, self.acquire_until(request, started, deadline)).await {
            Ok(result) => result,
            Err(_) => Err(LockError::TimedOutLocally { waited: started.elapsed() }),
        }
    }

    async fn acquire_until(
        &self,
        request: &LeaseRequest,
        started: Instant,
        deadline: Instant,
    ) -> Result<Lease, LockError> {
        let session = Abandon::new(self.session().await?);
        let owner = OwnerToken::random();
        loop {
            let sent = Instant::now();
            let attempt = self.try_once(session.client(), request, owner).await?;
            if let Some((fence, waited)) = attempt.granted {
                return Ok(self.granted(request, owner, session.take(), fence, sent + waited));
            }
            let now = Instant::now();
            if now >= deadline {
                self.put_back(session.take());
                return Err(LockError::TimedOut { waited: now - started });
            }
            let timeout_ms = (deadline - now).as_millis().max(1) as i64;
            let sent = Instant::now();
            let (id, owner_text, ttl) = (lock_id(request.key()), owner.to_string(), micros(request.ttl()));
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&id, &owner_text, &ttl, &timeout_ms];
            let answer = {
                let waiting = session
                    .client()
                    .query_one("SELECT o_fence, o_waited_us FROM lockcheck_wait($1, $2, $3, $4)", &params);
                tokio::pin!(waiting);
                // Until the holder's recorded expiry, then have it reaped (see "Expiry").
                let mut reap_in = reap_after(attempt.holder_left);
                loop {
                    tokio::select! {
                        answer = &mut waiting => break answer,
                        () = sleep(reap_in) => {
                            let row = bounded("acquire", self.control.query_one(
                                "SELECT lockcheck_reap($1)", &[&lock_id(request.key())],
                            )).await?;
                            reap_in = reap_after(row.get::<_, Option<i64>>(0).map(|left| Duration::from_micros(left.max(0) as u64)));
                        }
                        () = tokio::time::sleep_until(deadline + REQUEST_TIMEOUT) => {
                            // The server's lock_timeout should have ended the wait: give up here.
                            return Err(LockError::TimedOutLocally { waited: started.elapsed() });
                        }
                    }
                }
            };
            match answer {
                Ok(row) => {
                    let fence: i64 = row.get(0);
                    let waited: i64 = row.get(1);
                    let at = sent + Duration::from_micros(waited.max(0) as u64);
                    return Ok(self.granted(request, owner, session.take(), fence, at));
                }
                // lock_timeout: the wait bound ran out at the server, nothing is held. Look once
                // more (the key may have been freed at the last moment), then give up.
                Err(error) if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => continue,
                Err(error) => return Err(indeterminate("acquire", error)),
            }
        }
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        lease_shape(lease)?;
        let own = self.held.lock().expect("sessions poisoned").remove(&lease.owner());
        let session = own.as_ref().filter(|session| !session.is_closed()).unwrap_or(&self.control);
        let released = bounded(
            "release",
            session.query_one(
                "SELECT lockcheck_release($1, $2, $3)",
                &[&lock_id(lease.key()), &lease.owner().to_string(), &(lease.fence().0 as i64)],
            ),
        )
        .await;
        match (released, own) {
            (Ok(row), own) => {
                if let Some(own) = own {
                    self.put_back(own);
                }
                Ok(row.get(0))
            }
            // The lease's own session is gone: its lock went with it.
            (Err(_), Some(own)) if own.is_closed() => Ok(false),
            (Err(error), _) => Err(error),
        }
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        lease_shape(lease)?;
        crate::validate_ttl(ttl)?;
        let sent = Instant::now();
        let updated = bounded(
            "refresh",
            self.control.execute(
                "UPDATE lockcheck_holders SET expires_at = clock_timestamp() + $4::bigint * interval '1 microsecond'
                 WHERE lock_id = $1 AND owner = $2 AND fence = $3 AND expires_at > clock_timestamp()
                   AND lockcheck_holds(pid, $1)",
                &[&lock_id(lease.key()), &lease.owner().to_string(), &(lease.fence().0 as i64), &micros(ttl)],
            ),
        )
        .await?;
        Ok((updated == 1).then(|| lease.refreshed(ttl, sent)))
    }

    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        lease_shape(lease)?;
        let rows = bounded(
            "remaining TTL",
            self.control.query(
                "SELECT (extract(epoch FROM expires_at - clock_timestamp()) * 1e6)::bigint FROM lockcheck_holders
                 WHERE lock_id = $1 AND owner = $2 AND fence = $3 AND expires_at > clock_timestamp()
                   AND lockcheck_holds(pid, $1)",
                &[&lock_id(lease.key()), &lease.owner().to_string(), &(lease.fence().0 as i64)],
            ),
        )
        .await?;
        Ok(rows.first().map(|row| Duration::from_micros(row.get::<_, i64>(0).max(0) as u64).min(lease.ttl())))
    }
}

/// When a waiter looks at the holder's record again: just past its recorded expiry, or soon
/// when no holder is recorded yet (one that has just been granted the lock and is recording it).
fn reap_after(holder_left: Option<Duration>) -> Duration {
    holder_left.map_or(Duration::from_millis(50), |left| left + Duration::from_millis(1))
}

/// Refuses a lease this locker could not have granted.
fn lease_shape(lease: &Lease) -> Result<(), LockError> {
    crate::validate_key(lease.key())?;
    if lease.limit() != 1 {
        return Err(LockError::Unsupported { operation: "semaphores (an advisory lock is exclusive)" });
    }
    Ok(())
}

#[async_trait]
impl Locker for PostgresLocker {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_fencing(true)
            .with_fencing_survives_restart(true)
            .with_fifo(true)
            .with_server_side_expiry(false)
            // A restart ends every session, and with them every advisory lock.
            .with_survives_server_restart(false)
            .with_semaphores(false)
            .with_push_wakeups(true)
            .with_session_bound(true)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ids_are_fnv1a() {
        // FNV-1a 64 test vectors.
        assert_eq!(lock_id("") as u64, 0xcbf2_9ce4_8422_2325);
        assert_eq!(lock_id("a") as u64, 0xaf63_dc4c_8601_ec8c);
        assert_ne!(lock_id("k"), lock_id("k/"));
    }

    #[test]
    fn urls_are_checked_and_shown_without_password() {
        let (config, shown) = parse_url("postgres://lockcheck:secret@127.0.0.1:5432/postgres").unwrap();
        assert_eq!(config.get_user(), Some("lockcheck"));
        assert_eq!(shown, "postgres://lockcheck@127.0.0.1:5432/postgres");
        assert!(parse_url("redis://a:1").is_err());
        assert!(parse_url("postgres://").is_err());
    }
}
