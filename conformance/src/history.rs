//! Recording the history of a running backend. A [`Recorder`] wraps any [`Locker`]:
//! [`Recorder::client`] returns a [`RecordingLocker`] that forwards every call and records it
//! as an [`Operation`] of a [`History`], on the recorder's clock.
//!
//! The history format (calls, outcomes, JSON) and the [checkers](crate::checkers) that judge
//! it are the `lockcheck-history` crate's, which needs no async runtime; the format is
//! re-exported here so that one import path serves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lockcheck_impls::{Capabilities, Lease, LeaseRequest, LockError, Locker, Queued};
use lockcheck_model::spec::{LeaseId, Micros};
use tokio::time::Instant;

pub use lockcheck_history::{Call, History, ImpossibleHistory, KeptHistory, Operation, Outcome};

/// Where histories the checkers did not pass are kept: `$LOCKCHECK_HISTORY_DIR`, if set.
pub fn history_dir() -> Option<PathBuf> {
    std::env::var_os("LOCKCHECK_HISTORY_DIR").map(PathBuf::from)
}

/// Writes a history the checkers did not pass, with the time scales and claims they checked
/// it against, to `<dir>/<name>.json`, for `lockcheck check --recheck` and for reading, and
/// says where on stderr. Best effort: the verdict is reported either way. The path, if
/// written.
pub fn keep_history(history: &KeptHistory, dir: &Path, name: &str) -> Option<PathBuf> {
    let path = dir.join(format!("{name}.json"));
    let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, history.to_json()));
    match written {
        Ok(()) => {
            eprintln!("lockcheck: history kept in {}", path.display());
            Some(path)
        }
        Err(error) => {
            eprintln!("lockcheck: could not keep the history in {}: {error}", path.display());
            None
        }
    }
}

fn micros(duration: Duration) -> Micros {
    duration.as_micros().min(u128::from(Micros::MAX)) as Micros
}

#[derive(Default)]
struct Log {
    operations: Vec<Operation>,
    leases: HashMap<u128, LeaseId>,
    next_lease: u32,
}

impl Log {
    fn fresh_lease(&mut self) -> LeaseId {
        self.next_lease += 1;
        LeaseId(self.next_lease)
    }

    fn lease_of(&mut self, lease: &Lease) -> LeaseId {
        let bits = lease.owner().bits();
        if let Some(id) = self.leases.get(&bits) {
            return *id;
        }
        let id = self.fresh_lease();
        self.leases.insert(bits, id);
        id
    }
}

/// Records the operations of every client it wraps, on one clock.
pub struct Recorder {
    started: Instant,
    log: Mutex<Log>,
}

impl Recorder {
    /// An empty recorder; its clock starts now.
    pub fn new() -> Arc<Self> {
        Arc::new(Recorder { started: Instant::now(), log: Mutex::new(Log::default()) })
    }

    /// `locker` as client number `client`: every call is recorded.
    pub fn client(self: &Arc<Self>, client: u32, locker: Arc<dyn Locker>) -> RecordingLocker {
        RecordingLocker { recorder: self.clone(), client, inner: locker }
    }

    /// µs since the recorder started.
    pub fn now(&self) -> Micros {
        self.at(Instant::now())
    }

    fn at(&self, instant: Instant) -> Micros {
        micros(instant.saturating_duration_since(self.started))
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        // A panicking client thread must not hide the history from the report.
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The id this history gives `lease`, if a recorded grant produced it.
    pub fn lease_id(&self, lease: &Lease) -> Option<LeaseId> {
        self.log().leases.get(&lease.owner().bits()).copied()
    }

    /// The history so far (operations still running show as pending).
    pub fn history(&self) -> History {
        let mut operations = self.log().operations.clone();
        operations.sort_by_key(|op| op.invoked);
        History { operations }
    }

    fn invoke(&self, client: u32, key: &str, call: impl FnOnce(&mut Log) -> Call) -> InFlight<'_> {
        let mut log = self.log();
        let call = call(&mut log);
        let cancelled = if call.is_acquire() {
            Outcome::Cancelled
        } else {
            Outcome::Indeterminate { error: "cancelled while in flight".into() }
        };
        log.operations.push(Operation {
            client,
            key: key.to_owned(),
            call,
            invoked: self.now(),
            returned: None,
            outcome: Outcome::Pending,
        });
        InFlight { recorder: self, index: log.operations.len() - 1, cancelled: Some(cancelled) }
    }
}

/// An operation between invocation and return; if dropped unfinished (the caller's future
/// was cancelled) it records the cancellation.
struct InFlight<'a> {
    recorder: &'a Recorder,
    index: usize,
    cancelled: Option<Outcome>,
}

impl InFlight<'_> {
    fn finish(mut self, outcome: impl FnOnce(&mut Log) -> Outcome) {
        self.cancelled = None;
        let returned = self.recorder.now();
        let mut log = self.recorder.log();
        let outcome = outcome(&mut log);
        let op = &mut log.operations[self.index];
        op.returned = Some(returned);
        op.outcome = outcome;
    }

    fn finish_err(self, error: &LockError) {
        let outcome = if matches!(error, LockError::TimedOutLocally { .. }) {
            Outcome::TimedOutLocally
        } else if error.is_timeout() {
            Outcome::TimedOut
        } else if error.definitely_not_applied() {
            Outcome::Failed { error: error.to_string() }
        } else {
            Outcome::Indeterminate { error: error.to_string() }
        };
        self.finish(|_| outcome);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(outcome) = self.cancelled.take() {
            let returned = self.recorder.now();
            let mut log = self.recorder.log();
            let op = &mut log.operations[self.index];
            op.returned = Some(returned);
            op.outcome = outcome;
        }
    }
}

/// A [`Locker`] that records every call of one client into its [`Recorder`].
#[derive(Clone)]
pub struct RecordingLocker {
    recorder: Arc<Recorder>,
    client: u32,
    inner: Arc<dyn Locker>,
}

impl RecordingLocker {
    /// The client number.
    pub fn client_id(&self) -> u32 {
        self.client
    }

    /// The recorder.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// Records that this client's session ended under `leases` (see [`Call::SessionEnded`]):
    /// `crashed` when the client is gone, not merely cut off. The caller ends the session
    /// itself (drops the client, cuts its connections).
    pub fn session_ended(&self, leases: &[Lease], crashed: bool) {
        let now = self.recorder.now();
        let mut log = self.recorder.log();
        for lease in leases {
            let id = log.lease_of(lease);
            log.operations.push(Operation {
                client: self.client,
                key: lease.key().to_owned(),
                call: Call::SessionEnded { lease: id, crashed },
                invoked: now,
                returned: Some(now),
                outcome: Outcome::Done,
            });
        }
    }

    /// A grant of `request` as lease `id`; its duration is recorded where the backend changed it.
    fn granted(&self, log: &mut Log, request: &LeaseRequest, lease: &Lease, id: LeaseId) -> Outcome {
        log.leases.insert(lease.owner().bits(), id);
        let ttl = (lease.ttl() != request.ttl()).then(|| micros(lease.ttl()));
        Outcome::Granted { fence: lease.fence().0, acquired_at: self.recorder.at(lease.acquired_at()), ttl }
    }
}

#[async_trait]
impl Locker for RecordingLocker {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        let mut id = LeaseId(0);
        let flight = self.recorder.invoke(self.client, request.key(), |log| {
            id = log.fresh_lease();
            Call::TryAcquire { lease: id, ttl: micros(request.ttl()), limit: request.limit() }
        });
        let result = self.inner.try_acquire(request).await;
        match &result {
            Ok(Some(lease)) => flight.finish(|log| self.granted(log, request, lease, id)),
            Ok(None) => flight.finish(|_| Outcome::NotGranted),
            Err(error) => flight.finish_err(error),
        }
        result
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        let mut id = LeaseId(0);
        let flight = self.recorder.invoke(self.client, request.key(), |log| {
            id = log.fresh_lease();
            Call::Acquire { lease: id, ttl: micros(request.ttl()), limit: request.limit(), wait: micros(wait) }
        });
        let result = self.inner.acquire(request, wait).await;
        match &result {
            Ok(lease) => flight.finish(|log| self.granted(log, request, lease, id)),
            Err(error) => flight.finish_err(error),
        }
        result
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let flight = self.recorder.invoke(self.client, lease.key(), |log| Call::Release { lease: log.lease_of(lease) });
        let result = self.inner.release(lease).await;
        match &result {
            Ok(held) => flight.finish(|_| Outcome::Released { held: *held }),
            Err(error) => flight.finish_err(error),
        }
        result
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        let flight = self
            .recorder
            .invoke(self.client, lease.key(), |log| Call::Refresh { lease: log.lease_of(lease), ttl: micros(ttl) });
        let result = self.inner.refresh(lease, ttl).await;
        match &result {
            Ok(renewed) => flight.finish(|_| Outcome::Refreshed {
                held: renewed.is_some(),
                ttl: renewed.as_ref().filter(|renewed| renewed.ttl() != ttl).map(|renewed| micros(renewed.ttl())),
            }),
            Err(error) => flight.finish_err(error),
        }
        result
    }

    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        let flight =
            self.recorder.invoke(self.client, lease.key(), |log| Call::RemainingTtl { lease: log.lease_of(lease) });
        let result = self.inner.remaining_ttl(lease).await;
        match &result {
            Ok(left) => flight.finish(|_| Outcome::Remaining { left: left.map(micros) }),
            Err(error) => flight.finish_err(error),
        }
        result
    }

    fn queued(&self) -> Option<Queued> {
        self.inner.queued()
    }
}
