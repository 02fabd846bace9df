//! A driver for any backend URL lockcheck knows: the other end of the `exec:` backend
//! ([`crate::backends::exec`]), speaking the driver protocol (`docs/driver-protocol.md`) on a
//! pair of streams — the process's stdin and stdout in `lockcheck driver URL` and the
//! `lockcheck-driver` binary.
//!
//! It is a client connection in a process of its own: what the nemesis pauses (`SIGSTOP`) or
//! kills (`SIGKILL`) to put a real holder process through a fault. Requests are served
//! concurrently (an acquire waits while a cancel or a release is answered); a lease's name in
//! the protocol is self-describing (owner token, fence, limit), so any driver of the same
//! backend can release a lease another one was granted, as with the lockers themselves.
//!
//! A [`Flaw`] makes the driver broken (the checks must catch it), unusual but correct (they
//! must pass it) or hostile (the `exec:` backend must survive it), so that every claim about
//! drivers is proven both ways.

pub mod protocol;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockcheck_impls::{FencingToken, Lease, LeaseRequest, LockError, Locker, OwnerToken};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::backends::{BadBackendUrl, from_url};
use protocol::{Done, HELLO, Hello, OPERATIONS, Op, Outcome, PROTOCOL_VERSION, Reply, Request};

/// A deliberate flaw of the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Flaw {
    /// Broken: a try-acquire that was not granted, or an acquire that would have to wait, is
    /// reported granted at once (a lease nobody holds at the backend).
    DoubleGrant,
    /// Broken: every grant of a key reports the first fencing token this driver saw for it.
    StaleFence,
    /// Correct but unusual: lease names that are not owner tokens, replies in whatever order
    /// they finish (each delayed a few random milliseconds), and a hello with fields this
    /// lockcheck does not know.
    Unusual,
    /// Hostile: exits on the n-th request (counting from 1) without replying.
    CrashOn(u64),
    /// Hostile: answers the first request with a line that is not JSON.
    Garbage,
    /// Hostile: says hello, then never replies.
    Silent,
    /// Hostile: every reply comes this much later.
    Late(Duration),
}

impl FromStr for Flaw {
    type Err = String;

    /// `double-grant`, `stale-fence`, `unusual`, `crash-on=N`, `garbage`, `silent`, `late=MS`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let number = |value: &str| value.parse::<u64>().map_err(|_| format!("{text:?}: {value:?} is not a number"));
        Ok(match text.split_once('=') {
            None if text == "double-grant" => Flaw::DoubleGrant,
            None if text == "stale-fence" => Flaw::StaleFence,
            None if text == "unusual" => Flaw::Unusual,
            None if text == "garbage" => Flaw::Garbage,
            None if text == "silent" => Flaw::Silent,
            Some(("crash-on", n)) => Flaw::CrashOn(number(n)?),
            Some(("late", ms)) => Flaw::Late(Duration::from_millis(number(ms)?)),
            _ => {
                return Err(format!(
                    "unknown driver flaw {text:?}; known: double-grant, stale-fence, unusual, crash-on=N, garbage, silent, late=MS"
                ));
            }
        })
    }
}

/// Why a driver stopped before it could serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The URL names no backend.
    #[error(transparent)]
    Url(#[from] BadBackendUrl),
    /// The backend could not be reached.
    #[error("could not connect: {0}")]
    Connect(#[from] LockError),
    /// The streams failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves the backend `url` names on `input` (requests) and `output` (the hello, replies),
/// until `input` ends.
pub async fn serve<R, W>(url: &str, input: R, output: W) -> Result<(), DriverError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    serve_with(url, None, input, output).await
}

/// [`serve`], with a deliberate [`Flaw`].
pub async fn serve_with<R, W>(url: &str, flaw: Option<Flaw>, input: R, output: W) -> Result<(), DriverError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let backend = from_url(url)?;
    let locker: Arc<dyn Locker> = backend.connect().await?;
    eprintln!("lockcheck driver: serving {} (flaw: {flaw:?})", locker.describe());
    let (replies, mut outgoing) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        let mut output = output;
        while let Some(mut line) = outgoing.recv().await {
            line.push('\n');
            output.write_all(line.as_bytes()).await?;
            output.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let operations = OPERATIONS.iter().map(|op| (*op).to_owned()).collect();
    let hello = Hello {
        hello: HELLO.to_owned(),
        protocol: PROTOCOL_VERSION,
        name: Some(format!("lockcheck driver for {}", locker.describe())),
        capabilities: locker.capabilities(),
        operations,
    };
    let mut hello = serde_json::to_value(&hello).expect("a hello serializes");
    if flaw == Some(Flaw::Unusual) {
        hello["dialect"] = "from the future".into();
        hello["capabilities"]["teleportation"] = true.into();
    }
    let _ = replies.send(hello.to_string());
    let driver = Arc::new(Driver { locker, flaw, first_fences: Mutex::default(), leases: Mutex::default() });
    let cancels: Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>> = Arc::default();
    let mut lines = BufReader::new(input).lines();
    let mut served = 0u64;
    while let Some(line) = lines.next_line().await? {
        served += 1;
        match flaw {
            Some(Flaw::CrashOn(n)) if served >= n => {
                eprintln!("lockcheck driver: crashing on request {served}, as told");
                std::process::exit(3);
            }
            Some(Flaw::Garbage) => {
                eprintln!("lockcheck driver: answering garbage, as told");
                let _ = replies.send("this is not a reply {".to_owned());
                continue;
            }
            Some(Flaw::Silent) => continue,
            _ => {}
        }
        let request = match serde_json::from_str::<Request>(&line) {
            Ok(request) => request,
            Err(error) => {
                // No id to answer: say so where a person will read it.
                eprintln!("lockcheck driver: not a request ({error}): {line:?}");
                continue;
            }
        };
        if let Op::Cancel { target } = request.op {
            if let Some(cancel) = cancels.lock().unwrap_or_else(|p| p.into_inner()).remove(&target) {
                let _ = cancel.send(());
            }
            let _ = replies.send(reply(request.id, Outcome::Ok(Done::default())));
            continue;
        }
        let (cancel, cancelled) = oneshot::channel();
        cancels.lock().unwrap_or_else(|p| p.into_inner()).insert(request.id, cancel);
        let (driver, replies, cancels) = (driver.clone(), replies.clone(), cancels.clone());
        tokio::spawn(async move {
            let outcome = tokio::select! {
                outcome = driver.serve(request.op) => outcome,
                // Dropping the acquire's future is how the lock API cancels it (cancel-safe).
                Ok(()) = cancelled => Outcome::Cancelled,
            };
            cancels.lock().unwrap_or_else(|p| p.into_inner()).remove(&request.id);
            match flaw {
                Some(Flaw::Late(by)) => tokio::time::sleep(by).await,
                Some(Flaw::Unusual) => tokio::time::sleep(Duration::from_millis(rand::random_range(0..5))).await,
                _ => {}
            }
            let _ = replies.send(reply(request.id, outcome));
        });
    }
    drop(replies);
    // What is in flight is abandoned with the input, as a client that exits abandons it.
    writer.abort();
    Ok(())
}

fn reply(id: u64, result: Outcome) -> String {
    serde_json::to_string(&Reply { id, result }).expect("replies serialize")
}

struct Driver {
    locker: Arc<dyn Locker>,
    flaw: Option<Flaw>,
    first_fences: Mutex<HashMap<String, u64>>,
    /// The leases this driver granted, by name: a backend whose remaining TTL is the holder's
    /// own reckoning (dflockd has no command for it) needs the grant's instant and duration,
    /// which a name does not carry.
    leases: Mutex<HashMap<String, Lease>>,
}

impl Driver {
    async fn serve(&self, op: Op) -> Outcome {
        match op {
            Op::Acquire { key, ttl_ms, wait_ms, limit } => {
                let request = lease_request(key, ttl_ms, limit);
                if self.flaw == Some(Flaw::DoubleGrant) {
                    return match self.locker.try_acquire(&request).await {
                        Ok(Some(lease)) => self.granted(&lease),
                        Ok(None) => self.forged(&request),
                        Err(error) => failure(error),
                    };
                }
                match self.locker.acquire(&request, Duration::from_millis(wait_ms)).await {
                    Ok(lease) => self.granted(&lease),
                    Err(error) if error.is_timeout() => Outcome::TimedOut,
                    Err(error) => failure(error),
                }
            }
            Op::TryAcquire { key, ttl_ms, limit } => {
                let request = lease_request(key, ttl_ms, limit);
                match self.locker.try_acquire(&request).await {
                    Ok(Some(lease)) => self.granted(&lease),
                    Ok(None) if self.flaw == Some(Flaw::DoubleGrant) => self.forged(&request),
                    Ok(None) => Outcome::NotGranted,
                    Err(error) => failure(error),
                }
            }
            Op::Release { key, lease: name, limit } => {
                match self.locker.release(&self.lease(&key, &name, limit, 1)).await {
                    Ok(held) => {
                        self.leases.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
                        if held { Outcome::Ok(Done::default()) } else { Outcome::NotHeld }
                    }
                    Err(error) => failure(error),
                }
            }
            Op::Refresh { key, lease: name, limit, ttl_ms } => {
                let ttl = Duration::from_millis(ttl_ms);
                match self.locker.refresh(&self.lease(&key, &name, limit, ttl_ms), ttl).await {
                    Ok(Some(renewed)) => {
                        let granted = renewed.ttl();
                        self.leases.lock().unwrap_or_else(|p| p.into_inner()).insert(name, renewed);
                        Outcome::Ok(Done {
                            ttl_ms: (granted != ttl).then_some(granted.as_millis() as u64),
                            ..Done::default()
                        })
                    }
                    Ok(None) => Outcome::NotHeld,
                    Err(error) => failure(error),
                }
            }
            Op::RemainingTtl { key, lease: name, limit } => {
                match self.locker.remaining_ttl(&self.lease(&key, &name, limit, 1)).await {
                    Ok(Some(left)) => {
                        Outcome::Ok(Done { remaining_ms: Some(left.as_millis() as u64), ..Done::default() })
                    }
                    Ok(None) => Outcome::NotHeld,
                    Err(error) => failure(error),
                }
            }
            Op::Cancel { .. } => Outcome::Ok(Done::default()),
        }
    }

    /// The lease `name` stands for: as granted here, or as its name describes it.
    fn lease(&self, key: &str, name: &str, limit: u32, ttl_ms: u64) -> Lease {
        let known = self.leases.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned();
        known.filter(|lease| lease.key() == key).unwrap_or_else(|| named(key, name, limit, ttl_ms))
    }

    fn granted(&self, lease: &Lease) -> Outcome {
        let name = self.name(lease.owner(), lease.fence().0, lease.limit());
        self.leases.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone(), lease.clone());
        let mut fence = lease.fence().0;
        if self.flaw == Some(Flaw::StaleFence) {
            fence = *self
                .first_fences
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(lease.key().to_owned())
                .or_insert(fence);
        }
        Outcome::Ok(Done {
            lease: Some(name),
            fence: Some(fence),
            ttl_ms: Some(lease.ttl().as_millis() as u64),
            elapsed_us: Some(lease.acquired_at().elapsed().as_micros() as u64),
            remaining_ms: None,
        })
    }

    /// A grant the backend never made (the double-grant flaw).
    fn forged(&self, request: &LeaseRequest) -> Outcome {
        let fence = self.first_fences.lock().unwrap_or_else(|p| p.into_inner()).get(request.key()).copied();
        let lease = Lease::new(
            request.key(),
            OwnerToken::random(),
            FencingToken(fence.unwrap_or(1)),
            request.ttl(),
            Instant::now(),
            request.limit(),
        );
        self.granted(&lease)
    }

    /// The lease's name on the wire: `OWNER.FENCE.LIMIT` (the unusual driver: `lease/FENCE/LIMIT/OWNER`).
    fn name(&self, owner: OwnerToken, fence: u64, limit: u32) -> String {
        match self.flaw {
            Some(Flaw::Unusual) => format!("lease/{fence}/{limit}/{owner}"),
            _ => format!("{owner}.{fence}.{limit}"),
        }
    }
}

fn lease_request(key: String, ttl_ms: u64, limit: u32) -> LeaseRequest {
    LeaseRequest::semaphore(key, limit, Duration::from_millis(ttl_ms))
}

/// The lease a name stands for. A name this driver cannot read (a stranger's owner token, a
/// forgery) becomes a lease with a token nobody holds, which the backend finds not held.
fn named(key: &str, name: &str, limit: u32, ttl_ms: u64) -> Lease {
    let parts: Vec<&str> = if name.starts_with("lease/") {
        let mut parts: Vec<&str> = name.split('/').skip(1).collect();
        parts.rotate_right(1);
        parts
    } else {
        name.split('.').collect()
    };
    let owner = parts.first().and_then(|owner| owner.parse().ok()).unwrap_or_else(OwnerToken::random);
    let fence = parts.get(1).and_then(|fence| fence.parse().ok()).unwrap_or(0);
    let limit = parts.get(2).and_then(|limit| limit.parse().ok()).unwrap_or(limit);
    Lease::new(key, owner, FencingToken(fence), Duration::from_millis(ttl_ms.max(1)), Instant::now(), limit)
}

/// A lock error as a reply: definite failures, unknown outcomes and unsupported requests kept
/// apart, as the lock API keeps them.
fn failure(error: LockError) -> Outcome {
    match error {
        LockError::Unsupported { operation } => Outcome::Unsupported { error: Some(operation.to_owned()) },
        LockError::Cancelled => Outcome::Cancelled,
        error if error.definitely_not_applied() => Outcome::Failed { error: error.to_string() },
        error => Outcome::Indeterminate { error: error.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_round_trip_in_both_dialects() {
        let owner = OwnerToken::random();
        let lease = named("k", &format!("{owner}.7.3"), 1, 100);
        assert_eq!((lease.owner(), lease.fence().0, lease.limit()), (owner, 7, 3));
        let lease = named("k", &format!("lease/7/3/{owner}"), 1, 100);
        assert_eq!((lease.owner(), lease.fence().0, lease.limit()), (owner, 7, 3));
        assert_ne!(named("k", "forged", 1, 100).owner(), owner);
        assert_eq!("crash-on=3".parse::<Flaw>(), Ok(Flaw::CrashOn(3)));
        assert_eq!("late=50".parse::<Flaw>(), Ok(Flaw::Late(Duration::from_millis(50))));
        assert!("crash-on=x".parse::<Flaw>().is_err() && "nice".parse::<Flaw>().is_err());
    }
}
