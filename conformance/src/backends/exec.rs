//! `exec:COMMAND ARGS…`: a locker in another process, in any language, driven over the driver
//! protocol (`docs/driver-protocol.md`; the messages are [`crate::driver::protocol`]).
//!
//! Each [`Backend::connect`] spawns one driver process (one client connection of its
//! backend), reads its hello, and returns an [`ExecLocker`] that forwards every call as a
//! request line and waits for the reply with the same id. Requests are pipelined: an acquire
//! may wait while a cancel, a release or another acquire goes out.
//!
//! The harness never trusts a driver to behave. Every request has a bound (its wait, plus a
//! margin for the round trip); a driver that exits, writes a line that is not a reply, or
//! misses a bound makes the request's outcome unknown ([`LockError::Indeterminate`]), with the
//! tail of the driver's stderr in the message, and is killed — never a hang. The process is
//! killed when its locker is dropped, so nothing outlives a check.
//!
//! An acquire whose caller gave up (its future dropped) is cancelled at the driver where it
//! serves `cancel`; a grant that still comes back for it is released at once, so a dropped
//! acquire leaves nothing behind beyond the driver's own clean-up.

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lockcheck_history::Timing;
use lockcheck_impls::{Capabilities, FencingToken, Lease, LeaseRequest, LockError, Locker, OwnerToken, validate_wait};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::backend::Backend;
use crate::driver::protocol::{Done, HELLO, Hello, Op, Outcome, PROTOCOL_VERSION, Reply, Request};

/// How many lines of a driver's stderr an error quotes.
const STDERR_LINES: usize = 12;

/// Drivers as a suite backend: every client is a fresh driver process.
#[derive(Clone, Debug)]
pub struct ExecBackend {
    command: Vec<String>,
    timing: Timing,
    margin: Duration,
    hello_within: Duration,
    // Shared by every client of the backend, so a lease granted through one driver can be named
    // to another (a release by a stranger, as the suite tries).
    leases: Arc<Mutex<HashMap<u128, String>>>,
}

impl ExecBackend {
    /// Drivers started as `program args…`, judged with networked time scales.
    pub fn new(command: Vec<String>) -> Result<Self, String> {
        if command.is_empty() || command[0].is_empty() {
            return Err("`exec:` needs a command, e.g. `exec:python3 driver.py`".into());
        }
        Ok(ExecBackend {
            command,
            timing: Timing::networked(),
            margin: Duration::from_secs(2),
            hello_within: Duration::from_secs(20),
            leases: Arc::default(),
        })
    }

    /// From `exec:COMMAND ARGS…`: the rest of the URL split at whitespace (no shell quoting).
    pub fn from_url(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("exec:").ok_or_else(|| format!("not an exec: URL: {url}"))?;
        Self::new(rest.split_whitespace().map(str::to_owned).collect())
    }

    /// The same drivers judged with other time scales (the backend behind them has its own:
    /// whole-second leases for dflockd).
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// How long past a request's own bound (its wait; zero for the others) a reply may come
    /// before the driver counts as hung. Default 2 s.
    pub fn with_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// How long a driver may take to write its hello. Default 20 s (an interpreter starting).
    pub fn with_hello_within(mut self, within: Duration) -> Self {
        self.hello_within = within;
        self
    }

    /// The command line.
    pub fn command(&self) -> &[String] {
        &self.command
    }

    /// Starts a driver and reads its hello.
    pub async fn spawn(&self) -> Result<ExecLocker, LockError> {
        ExecLocker::spawn(self).await
    }
}

#[async_trait]
impl Backend for ExecBackend {
    fn name(&self) -> String {
        format!("exec:{}", self.command.join(" "))
    }

    async fn connect(&self) -> Result<Arc<dyn Locker>, LockError> {
        Ok(Arc::new(self.spawn().await?))
    }

    fn timing(&self) -> Timing {
        self.timing
    }
}

/// What a request's waiter is, in the table of requests in flight.
enum Waiting {
    /// A caller waits for the reply (of an acquire of `key` and `limit`, for the grant to be
    /// given back if the caller is gone by the time it arrives).
    Caller(oneshot::Sender<Outcome>, Option<(String, u32)>),
    /// The caller of this acquire gave up: a grant that comes back is released.
    Abandoned { key: String, limit: u32 },
    /// Nobody waits (a cancel, the release of an abandoned grant).
    Nobody,
}

/// What the driver's reader and the callers share.
struct Shared {
    pending: Mutex<HashMap<u64, Waiting>>,
    /// Why the driver can no longer be used, once it cannot.
    broken: Mutex<Option<String>>,
    stderr: Mutex<VecDeque<String>>,
    stderr_done: tokio::sync::Notify,
    stderr_closed: std::sync::atomic::AtomicBool,
    lines: mpsc::UnboundedSender<String>,
    next_id: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn stderr_tail(&self) -> String {
        let tail = lock(&self.stderr);
        if tail.is_empty() {
            "(its stderr is empty)".to_owned()
        } else {
            format!("its stderr ends with:\n    {}", tail.iter().cloned().collect::<Vec<_>>().join("\n    "))
        }
    }

    /// Marks the driver broken (the first reason stays) and wakes every caller: their
    /// requests' outcomes are unknown.
    fn break_with(&self, reason: String) {
        lock(&self.broken).get_or_insert(reason);
        lock(&self.pending).clear();
    }

    fn broken(&self) -> Option<String> {
        lock(&self.broken).clone()
    }

    fn send(&self, op: Op, waiting: Waiting) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let line = serde_json::to_string(&Request { id, op }).expect("requests serialize");
        lock(&self.pending).insert(id, waiting);
        // A closed channel means the writer is gone; the reader breaks the driver then.
        let _ = self.lines.send(line);
        id
    }

    /// Waits (bounded) until stderr is read to its end, so an error quotes the driver's last
    /// words.
    async fn stderr_read(&self) {
        let done = self.stderr_done.notified();
        if !self.stderr_closed.load(Ordering::Acquire) {
            let _ = tokio::time::timeout(Duration::from_secs(2), done).await;
        }
    }
}

/// A locker in a driver process: each call is a request line, each result its reply.
pub struct ExecLocker {
    describe: String,
    capabilities: Capabilities,
    operations: Vec<String>,
    margin: Duration,
    shared: Arc<Shared>,
    leases: Arc<Mutex<HashMap<u128, String>>>,
    // Killed on drop (`kill_on_drop`): no driver outlives its locker.
    child: Mutex<Child>,
    pid: Option<u32>,
}

impl ExecLocker {
    async fn spawn(backend: &ExecBackend) -> Result<ExecLocker, LockError> {
        let mut child = Command::new(&backend.command[0])
            .args(&backend.command[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                LockError::unavailable(format!("could not start the driver {:?}: {error}", backend.command.join(" ")))
            })?;
        let pid = child.id();
        let (stdin, stdout, stderr) = (
            child.stdin.take().expect("piped"),
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        let (lines, mut outgoing) = mpsc::unbounded_channel::<String>();
        let shared = Arc::new(Shared {
            pending: Mutex::default(),
            broken: Mutex::default(),
            stderr: Mutex::default(),
            stderr_done: tokio::sync::Notify::new(),
            stderr_closed: std::sync::atomic::AtomicBool::new(false),
            lines,
            next_id: AtomicU64::new(1),
        });
        // The writer: one line at a time, in the order requests were made.
        tokio::spawn(async move {
            let mut stdin = stdin;
            while let Some(mut line) = outgoing.recv().await {
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
        });
        let collector = shared.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut tail = lock(&collector.stderr);
                if tail.len() == STDERR_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.chars().take(300).collect());
            }
            collector.stderr_closed.store(true, Ordering::Release);
            collector.stderr_done.notify_waiters();
        });
        let mut stdout = BufReader::new(stdout).lines();
        let name = backend.name();
        let hello = match tokio::time::timeout(backend.hello_within, stdout.next_line()).await {
            Ok(Ok(Some(line))) => serde_json::from_str::<Hello>(&line)
                .map_err(|error| format!("its first line is not a hello ({error}): {}", quote(&line))),
            Ok(Ok(None)) => Err("it exited (or closed its stdout) before its hello".to_owned()),
            Ok(Err(error)) => Err(format!("its stdout could not be read: {error}")),
            Err(_) => Err(format!("no hello within {:?}", backend.hello_within)),
        }
        .and_then(|hello| match (hello.hello.as_str(), hello.protocol) {
            (HELLO, PROTOCOL_VERSION) => Ok(hello),
            (HELLO, version) => Err(format!("it speaks protocol {version}; this lockcheck speaks {PROTOCOL_VERSION}")),
            (other, _) => Err(format!("its hello says {other:?}, not {HELLO:?}")),
        });
        let hello = match hello {
            Ok(hello) => hello,
            Err(reason) => {
                let _ = child.start_kill();
                shared.stderr_read().await;
                return Err(LockError::unavailable(format!("driver {name}: {reason}; {}", shared.stderr_tail())));
            }
        };
        tokio::spawn(read_replies(stdout, shared.clone()));
        let describe = match &hello.name {
            Some(driver) => format!("{name} ({driver})"),
            None => name,
        };
        Ok(ExecLocker {
            describe,
            capabilities: hello.capabilities,
            operations: hello.operations,
            margin: backend.margin,
            shared,
            leases: backend.leases.clone(),
            child: Mutex::new(child),
            pid,
        })
    }

    /// The driver's process id (`None` once it has been reaped).
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Kills the driver at once (`SIGKILL`): its connections close, nothing is released. Every
    /// request in flight becomes unknown.
    pub fn kill(&self) {
        let _ = lock(&self.child).start_kill();
        self.shared.break_with("the driver was killed".into());
    }

    /// Sends `signal` (`STOP`, `CONT`) to the driver process.
    pub async fn signal(&self, signal: &str) -> Result<(), String> {
        let pid = self.pid.ok_or("the driver has no process id")?;
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .await
            .map_err(|error| format!("kill -{signal} {pid}: {error}"))?;
        if status.success() { Ok(()) } else { Err(format!("kill -{signal} {pid}: {status}")) }
    }

    fn serves(&self, operation: &str) -> bool {
        self.operations.iter().any(|served| served == operation)
    }

    /// The name the driver knows `lease` by: the one its grant gave, or, for a lease no driver
    /// of this backend granted, its owner token (which no driver will find held).
    fn handle(&self, lease: &Lease) -> String {
        lock(&self.leases).get(&lease.owner().bits()).cloned().unwrap_or_else(|| lease.owner().to_string())
    }

    /// Sends `op` and waits for its reply, at most `bound` plus the margin.
    async fn call(&self, op: Op, bound: Duration) -> Result<Outcome, LockError> {
        let operation = op.name();
        if !self.serves(operation) {
            return Err(LockError::Unsupported { operation });
        }
        if let Some(reason) = self.shared.broken() {
            // Nothing is sent to a broken driver: definitely not applied.
            return Err(LockError::unavailable(format!("driver {}: {reason}", self.describe)));
        }
        let acquire = match &op {
            Op::Acquire { key, limit, .. } => Some((key.clone(), *limit)),
            _ => None,
        };
        let (reply, replied) = oneshot::channel();
        let id = self.shared.send(op, Waiting::Caller(reply, acquire.clone()));
        let mut in_flight = InFlight { shared: &self.shared, id, acquire, cancel: self.serves("cancel"), replied };
        let waited = tokio::time::timeout(bound + self.margin, &mut in_flight.replied).await;
        in_flight.acquire = None;
        match waited {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => {
                // A driver that broke its protocol is not trusted with anything more.
                let _ = lock(&self.child).start_kill();
                let reason = self.shared.broken().unwrap_or_else(|| "the driver went away".into());
                Err(self.unknown(operation, format!("no reply to request {id}: {reason}")))
            }
            Err(_) => {
                let reason = format!("no reply to request {id} within {:?}; the driver is killed", bound + self.margin);
                self.shared.break_with(reason.clone());
                self.kill();
                Err(self.unknown(operation, reason))
            }
        }
    }

    fn unknown(&self, operation: &'static str, reason: String) -> LockError {
        LockError::indeterminate(
            operation,
            format!("driver {}: {reason}; {}", self.describe, self.shared.stderr_tail()),
        )
    }

    /// The lease a grant's reply describes; `sent` is when its request went out.
    fn granted(&self, request: &LeaseRequest, done: Done, sent: Instant) -> Result<Lease, LockError> {
        let operation = "acquire";
        let Some(handle) = done.lease else {
            return Err(self.unknown(operation, "a grant without a `lease`".into()));
        };
        let fence = match (done.fence, self.capabilities.fencing) {
            (Some(fence), _) => fence,
            (None, false) => 0,
            (None, true) => {
                return Err(
                    self.unknown(operation, "a grant without a `fence` from a driver that claims fencing".into())
                );
            }
        };
        // The driver's own estimate of the grant instant, never before the request was sent
        // (a lower bound on the grant: the lease's end is never believed later than it is).
        let acquired_at = match done.elapsed_us {
            Some(elapsed) => Instant::now().checked_sub(Duration::from_micros(elapsed)).unwrap_or(sent).max(sent),
            None => sent,
        };
        let ttl = done.ttl_ms.map_or(request.ttl(), Duration::from_millis);
        let owner = handle.get(..32).and_then(|hex| hex.parse::<OwnerToken>().ok()).unwrap_or_else(OwnerToken::random);
        lock(&self.leases).insert(owner.bits(), handle);
        Ok(Lease::new(request.key(), owner, FencingToken(fence), ttl, acquired_at, request.limit()))
    }

    fn failed(&self, operation: &'static str, outcome: Outcome) -> LockError {
        match outcome {
            Outcome::Failed { error } => LockError::unavailable(format!("driver {}: {error}", self.describe)),
            Outcome::Indeterminate { error } => self.unknown(operation, error),
            Outcome::Unsupported { .. } => LockError::Unsupported { operation },
            other => self.unknown(operation, format!("{other:?} does not answer {operation}")),
        }
    }
}

/// An in-flight request: if its caller gives up, an acquire is marked abandoned (its grant
/// will be released) and cancelled where the driver can.
struct InFlight<'a> {
    shared: &'a Shared,
    id: u64,
    acquire: Option<(String, u32)>,
    cancel: bool,
    replied: oneshot::Receiver<Outcome>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let Some((key, limit)) = self.acquire.take() else {
            lock(&self.shared.pending).remove(&self.id);
            return;
        };
        // The grant may have arrived after the caller's last look: it is given back here.
        // Closed first, so that from now on the reader's send fails and it gives a grant back
        // itself: one of the two always sees it.
        self.replied.close();
        if let Ok(Outcome::Ok(Done { lease: Some(lease), .. })) = self.replied.try_recv() {
            self.shared.send(Op::Release { key, lease, limit }, Waiting::Nobody);
            return;
        }
        let still_pending = {
            let mut pending = lock(&self.shared.pending);
            match pending.get_mut(&self.id) {
                Some(waiting) => {
                    *waiting = Waiting::Abandoned { key, limit };
                    true
                }
                None => false,
            }
        };
        if still_pending && self.cancel {
            self.shared.send(Op::Cancel { target: self.id }, Waiting::Nobody);
        }
    }
}

/// Reads replies until the driver's stdout ends or says something that is not a reply.
async fn read_replies(mut stdout: tokio::io::Lines<BufReader<ChildStdout>>, shared: Arc<Shared>) {
    let (reason, exited) = loop {
        let line = match stdout.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break ("it exited (or closed its stdout)".to_owned(), true),
            Err(error) => break (format!("its stdout could not be read: {error}"), true),
        };
        let reply = match serde_json::from_str::<Reply>(&line) {
            Ok(reply) => reply,
            Err(error) => {
                break (format!("it wrote a line that is not a reply ({error}): {}", quote(&line)), false);
            }
        };
        let waiting = lock(&shared.pending).remove(&reply.id);
        match (waiting, reply.result) {
            (Some(Waiting::Caller(caller, acquire)), result) => {
                // The caller left between the reader's look and this send: its grant is given
                // back here (the caller's side covers the other order).
                if let (Err(Outcome::Ok(Done { lease: Some(lease), .. })), Some((key, limit))) =
                    (caller.send(result), acquire)
                {
                    shared.send(Op::Release { key, lease, limit }, Waiting::Nobody);
                }
            }
            // A grant nobody waits for any more: given back at once (cancel safety).
            (Some(Waiting::Abandoned { key, limit }), Outcome::Ok(Done { lease: Some(lease), .. })) => {
                shared.send(Op::Release { key, lease, limit }, Waiting::Nobody);
            }
            // A reply to a request nobody waits for (a cancel's, a late one): nothing to do.
            _ => {}
        }
    };
    if exited {
        shared.stderr_read().await;
    } else {
        // A driver that is still running has its stderr open: what it has written by now is
        // given a moment to be read, no more.
        let _ = tokio::time::timeout(Duration::from_millis(50), shared.stderr_read()).await;
    }
    shared.break_with(reason);
}

fn quote(line: &str) -> String {
    let short: String = line.chars().take(200).collect();
    format!("{short:?}")
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().min(u128::from(u64::MAX)) as u64
}

#[async_trait]
impl Locker for ExecLocker {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        request.validate()?;
        let op =
            Op::TryAcquire { key: request.key().to_owned(), ttl_ms: millis(request.ttl()), limit: request.limit() };
        let sent = Instant::now();
        match self.call(op, Duration::ZERO).await? {
            Outcome::Ok(done) => self.granted(request, done, sent).map(Some),
            Outcome::NotGranted => Ok(None),
            other => Err(self.failed("try_acquire", other)),
        }
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        request.validate()?;
        validate_wait(wait)?;
        let op = Op::Acquire {
            key: request.key().to_owned(),
            ttl_ms: millis(request.ttl()),
            wait_ms: millis(wait),
            limit: request.limit(),
        };
        let sent = Instant::now();
        match self.call(op, wait).await? {
            Outcome::Ok(done) => self.granted(request, done, sent),
            Outcome::TimedOut | Outcome::NotGranted => Err(LockError::TimedOut { waited: wait }),
            Outcome::Cancelled => Err(LockError::Cancelled),
            other => Err(self.failed("acquire", other)),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let op = Op::Release { key: lease.key().to_owned(), lease: self.handle(lease), limit: lease.limit() };
        match self.call(op, Duration::ZERO).await? {
            Outcome::Ok(_) => Ok(true),
            Outcome::NotHeld => Ok(false),
            other => Err(self.failed("release", other)),
        }
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        lockcheck_impls::validate_ttl(ttl)?;
        let op = Op::Refresh {
            key: lease.key().to_owned(),
            lease: self.handle(lease),
            limit: lease.limit(),
            ttl_ms: millis(ttl),
        };
        let sent = Instant::now();
        match self.call(op, Duration::ZERO).await? {
            Outcome::Ok(done) => Ok(Some(lease.refreshed(done.ttl_ms.map_or(ttl, Duration::from_millis), sent))),
            Outcome::NotHeld => Ok(None),
            other => Err(self.failed("refresh", other)),
        }
    }

    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        let op = Op::RemainingTtl { key: lease.key().to_owned(), lease: self.handle(lease), limit: lease.limit() };
        match self.call(op, Duration::ZERO).await? {
            Outcome::Ok(Done { remaining_ms: Some(left), .. }) => Ok(Some(Duration::from_millis(left))),
            Outcome::NotHeld => Ok(None),
            other => Err(self.failed("remaining_ttl", other)),
        }
    }
}
