//! One function per protocol command, on a [`Connection`]: the middle layer of the client.
//!
//! Timeouts and leases are whole seconds on the wire. A wait bound with a fraction of a
//! second is rounded *up* here (the server never gives up early); callers that need a
//! sub-second bound enforce it locally and close the connection (see [`super::DflockdLocker`]).

use std::time::Duration;

use super::connection::Connection;
use super::error::DflockdError;
use super::protocol::{MAX_PROTOCOL_SECONDS, Namespace, Status};

/// A grant: the holder's token and the lease in whole seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The token; release and renew present it.
    pub token: String,
    /// The lease the server granted, in seconds.
    pub lease_s: u64,
}

/// What `enqueue` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// The key was free: held at once (`wait` will confirm it).
    Acquired(Grant),
    /// Queued: call `wait` on the same connection.
    Queued,
}

/// Whole seconds for the wire, rounded up.
pub fn whole_seconds(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.min(MAX_PROTOCOL_SECONDS)
}

fn lease_arg(lease_s: Option<u64>) -> Result<String, DflockdError> {
    let mut arg = String::new();
    push_lease(&mut arg, lease_s)?;
    Ok(arg)
}

/// Appends ` <lease_s>` (nothing for `None`).
fn push_lease(arg: &mut String, lease_s: Option<u64>) -> Result<(), DflockdError> {
    use std::fmt::Write;
    match lease_s {
        None => Ok(()),
        Some(0) => Err(DflockdError::InvalidArgument("a lease is at least one second".into())),
        Some(s) if s > MAX_PROTOCOL_SECONDS => Err(DflockdError::InvalidArgument("lease too long".into())),
        Some(s) => {
            write!(arg, " {s}").expect("writing to a String");
            Ok(())
        }
    }
}

fn check_key(key: &str) -> Result<(), DflockdError> {
    if !super::protocol::is_valid_key(key) {
        return Err(DflockdError::InvalidArgument(format!(
            "key {key:?}: keys are non-empty, at most 256 bytes, without whitespace or control characters"
        )));
    }
    Ok(())
}

fn unexpected(command: &'static str, reply: &str) -> DflockdError {
    DflockdError::UnexpectedReply { command, reply: reply.chars().take(64).collect() }
}

fn status_or_unexpected(command: &'static str, reply: &str) -> DflockdError {
    match Status::parse(reply) {
        Some(status) => DflockdError::from_status(status, command),
        None => unexpected(command, reply),
    }
}

fn parse_grant(command: &'static str, word: &str, reply: &str) -> Result<Grant, DflockdError> {
    let mut fields = reply.split(' ');
    match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some(w), Some(token), Some(lease), None) if w == word && !token.is_empty() => {
            let lease_s =
                super::protocol::parse_seconds(lease).filter(|&s| s > 0).ok_or_else(|| unexpected(command, reply))?;
            Ok(Grant { token: token.to_owned(), lease_s })
        }
        _ => Err(status_or_unexpected(command, reply)),
    }
}

fn names(ns: Namespace) -> [&'static str; 5] {
    match ns {
        Namespace::Lock => ["l", "r", "n", "e", "w"],
        Namespace::Semaphore => ["sl", "sr", "sn", "se", "sw"],
    }
}

async fn acquire_in(
    conn: &mut Connection,
    ns: Namespace,
    key: &str,
    timeout: Duration,
    limit: Option<u32>,
    lease_s: Option<u64>,
) -> Result<Grant, DflockdError> {
    check_key(key)?;
    use std::fmt::Write;
    let cmd = names(ns)[0];
    let mut arg = String::with_capacity(32);
    write!(arg, "{}", whole_seconds(timeout)).expect("writing to a String");
    if let Some(limit) = limit {
        write!(arg, " {limit}").expect("writing to a String");
    }
    push_lease(&mut arg, lease_s)?;
    let reply = conn.request_line(cmd, cmd, key, &arg).await?;
    parse_grant(cmd, "ok", reply)
}

async fn release_in(conn: &mut Connection, ns: Namespace, key: &str, token: &str) -> Result<(), DflockdError> {
    check_key(key)?;
    let cmd = names(ns)[1];
    match conn.request_line(cmd, cmd, key, token).await? {
        "ok" => Ok(()),
        reply => Err(status_or_unexpected(cmd, reply)),
    }
}

async fn renew_in(
    conn: &mut Connection,
    ns: Namespace,
    key: &str,
    token: &str,
    lease_s: Option<u64>,
) -> Result<u64, DflockdError> {
    check_key(key)?;
    let cmd = names(ns)[2];
    let reply = conn.request(cmd, cmd, key, &format!("{token}{}", lease_arg(lease_s)?)).await?;
    match reply.split_once(' ') {
        Some(("ok", seconds)) => super::protocol::parse_seconds(seconds).ok_or_else(|| unexpected(cmd, &reply)),
        _ => Err(status_or_unexpected(cmd, &reply)),
    }
}

async fn enqueue_in(
    conn: &mut Connection,
    ns: Namespace,
    key: &str,
    limit: Option<u32>,
    lease_s: Option<u64>,
) -> Result<Enqueued, DflockdError> {
    check_key(key)?;
    let cmd = names(ns)[3];
    let arg = match limit {
        Some(l) => format!("{l}{}", lease_arg(lease_s)?),
        None => lease_arg(lease_s)?.trim_start().to_owned(),
    };
    let reply = conn.request(cmd, cmd, key, &arg).await?;
    if reply == "queued" {
        return Ok(Enqueued::Queued);
    }
    parse_grant(cmd, "acquired", &reply).map(Enqueued::Acquired)
}

async fn wait_in(conn: &mut Connection, ns: Namespace, key: &str, timeout: Duration) -> Result<Grant, DflockdError> {
    check_key(key)?;
    let cmd = names(ns)[4];
    let reply = conn.request(cmd, cmd, key, &whole_seconds(timeout).to_string()).await?;
    parse_grant(cmd, "ok", &reply)
}

/// `l`: takes the lock, waiting up to `timeout` (zero = try once). `Err(Timeout)` if the
/// wait ran out. `lease_s` `None` = the server's default lease.
pub async fn acquire(
    conn: &mut Connection,
    key: &str,
    timeout: Duration,
    lease_s: Option<u64>,
) -> Result<Grant, DflockdError> {
    acquire_in(conn, Namespace::Lock, key, timeout, None, lease_s).await
}

/// `r`: releases the lock. `Err(Server)` if the token is not the holder's.
pub async fn release(conn: &mut Connection, key: &str, token: &str) -> Result<(), DflockdError> {
    release_in(conn, Namespace::Lock, key, token).await
}

/// `n`: renews the lease; returns the seconds the server reports (the new lease on newest
/// servers, the remaining whole seconds on Python 0.5). `Err(Server)` if it was lost.
pub async fn renew(conn: &mut Connection, key: &str, token: &str, lease_s: Option<u64>) -> Result<u64, DflockdError> {
    renew_in(conn, Namespace::Lock, key, token, lease_s).await
}

/// `e`: joins the key's queue (or takes it at once); `wait` follows on the same connection.
pub async fn enqueue(conn: &mut Connection, key: &str, lease_s: Option<u64>) -> Result<Enqueued, DflockdError> {
    enqueue_in(conn, Namespace::Lock, key, None, lease_s).await
}

/// `w`: waits for the grant of a prior `enqueue` on this connection.
pub async fn wait(conn: &mut Connection, key: &str, timeout: Duration) -> Result<Grant, DflockdError> {
    wait_in(conn, Namespace::Lock, key, timeout).await
}

/// `sl`: takes one of `limit` permits.
pub async fn sem_acquire(
    conn: &mut Connection,
    key: &str,
    timeout: Duration,
    limit: u32,
    lease_s: Option<u64>,
) -> Result<Grant, DflockdError> {
    acquire_in(conn, Namespace::Semaphore, key, timeout, Some(limit), lease_s).await
}

/// `sr`: releases a permit.
pub async fn sem_release(conn: &mut Connection, key: &str, token: &str) -> Result<(), DflockdError> {
    release_in(conn, Namespace::Semaphore, key, token).await
}

/// `sn`: renews a permit's lease.
pub async fn sem_renew(
    conn: &mut Connection,
    key: &str,
    token: &str,
    lease_s: Option<u64>,
) -> Result<u64, DflockdError> {
    renew_in(conn, Namespace::Semaphore, key, token, lease_s).await
}

/// `se`: joins the semaphore's queue (or takes a permit at once).
pub async fn sem_enqueue(
    conn: &mut Connection,
    key: &str,
    limit: u32,
    lease_s: Option<u64>,
) -> Result<Enqueued, DflockdError> {
    enqueue_in(conn, Namespace::Semaphore, key, Some(limit), lease_s).await
}

/// `sw`: waits for the permit of a prior `sem_enqueue` on this connection.
pub async fn sem_wait(conn: &mut Connection, key: &str, timeout: Duration) -> Result<Grant, DflockdError> {
    wait_in(conn, Namespace::Semaphore, key, timeout).await
}

/// Generic over the name space: `l` or `sl`.
pub async fn acquire_ns(
    conn: &mut Connection,
    ns: Namespace,
    key: &str,
    timeout: Duration,
    limit: u32,
    lease_s: Option<u64>,
) -> Result<Grant, DflockdError> {
    let limit = (ns == Namespace::Semaphore).then_some(limit);
    acquire_in(conn, ns, key, timeout, limit, lease_s).await
}

/// Generic over the name space: `r` or `sr`.
pub async fn release_ns(conn: &mut Connection, ns: Namespace, key: &str, token: &str) -> Result<(), DflockdError> {
    release_in(conn, ns, key, token).await
}

/// Generic over the name space: `n` or `sn`.
pub async fn renew_ns(
    conn: &mut Connection,
    ns: Namespace,
    key: &str,
    token: &str,
    lease_s: Option<u64>,
) -> Result<u64, DflockdError> {
    renew_in(conn, ns, key, token, lease_s).await
}

/// Generic over the name space: `e` or `se`.
pub async fn enqueue_ns(
    conn: &mut Connection,
    ns: Namespace,
    key: &str,
    limit: u32,
    lease_s: Option<u64>,
) -> Result<Enqueued, DflockdError> {
    let limit = (ns == Namespace::Semaphore).then_some(limit);
    enqueue_in(conn, ns, key, limit, lease_s).await
}

/// Generic over the name space: `w` or `sw`.
pub async fn wait_ns(
    conn: &mut Connection,
    ns: Namespace,
    key: &str,
    timeout: Duration,
) -> Result<Grant, DflockdError> {
    wait_in(conn, ns, key, timeout).await
}

/// `auth`: presents the shared secret. `Err(Auth)` if refused (the server then closes).
pub async fn authenticate(conn: &mut Connection, secret: &str) -> Result<(), DflockdError> {
    if secret.contains(['\n', '\r']) {
        return Err(DflockdError::InvalidArgument("the secret contains a newline".into()));
    }
    match conn.request("auth", "auth", "_", secret).await?.as_str() {
        "ok" => Ok(()),
        reply => Err(status_or_unexpected("auth", reply)),
    }
}

/// `stats`: the server's JSON snapshot, parsed.
pub async fn stats(conn: &mut Connection) -> Result<serde_json::Value, DflockdError> {
    let reply = conn.request("stats", "stats", "_", "_").await?;
    match reply.split_once(' ') {
        Some(("ok", json)) => serde_json::from_str(json).map_err(|_| unexpected("stats", &reply)),
        _ => Err(status_or_unexpected("stats", &reply)),
    }
}

/// `ping` (newest servers): `Ok` if the server answered `ok`.
pub async fn ping(conn: &mut Connection) -> Result<(), DflockdError> {
    match conn.request("ping", "ping", "_", "_").await?.as_str() {
        "ok" => Ok(()),
        reply => Err(status_or_unexpected("ping", reply)),
    }
}
