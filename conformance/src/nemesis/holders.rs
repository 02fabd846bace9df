//! Client-process faults: a holder that is a real process of its own (a driver, through the
//! `exec:` backend) is stopped past its lease (`SIGSTOP`, then `SIGCONT`) or killed while it
//! holds (`SIGKILL`: its connections close, nothing is released).
//!
//! Beside the random workload, two clients contend for one key of their own and write to a
//! protected resource whenever they believe they hold it:
//!
//! - the **holder**, a driver process: after each grant it writes with its fencing token, asks
//!   the driver one more round trip (its work), writes again when the reply comes, and
//!   releases. A pause is injected right after a grant, so the work's reply — and the second
//!   write — come only when the process runs again: with its lease long gone, as after a GC
//!   pause (Kleppmann 2016). A kill is injected at the same point, and a fresh driver starts
//!   when the window heals;
//! - a **contender** in this process, which takes the key whenever it is free and writes.
//!
//! The resource checks fencing tokens where the backend claims fencing
//! ([`FencedResource`]); elsewhere it cannot, and accepts every write. Either way the run
//! judges resource safety (P10) from the writes: a write accepted from a holder whose key had
//! been granted to, and written by, someone after it is a stale write that got through; a
//! write refused from the newest holder means tokens out of grant order. Without fencing the
//! stale write is unsafe by design, and predicted by the claim `fencing: false`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lockcheck_history::Timing;
use lockcheck_history::checkers::fencing::FencedResource;
use lockcheck_history::checkers::{Counterexample, Verdict};
use lockcheck_impls::{Lease, LeaseRequest, Locker};
use lockcheck_model::spec::{Micros, Property};
use tokio::sync::{Notify, oneshot};
use tokio::time::{Instant, sleep, timeout};

use super::{FaultTarget, TargetClients, TargetRun};
use crate::backends::exec::{ExecBackend, ExecLocker};
use crate::faults::{Fault, FaultError};
use crate::history::{Recorder, RecordingLocker};

/// A fault the holder's loop is asked to inject at its next grant.
struct Order {
    fault: Fault,
    done: oneshot::Sender<Result<(), String>>,
}

/// What the schedule (inject, heal) and the holder's loop share.
#[derive(Default)]
struct Control {
    armed: Mutex<Option<Order>>,
    /// The holder's driver while it is stopped, and since when.
    paused: Mutex<Option<(Arc<ExecLocker>, Instant)>>,
    /// The shortest pause that outlasts the holder's lease: the schedule's windows are longer,
    /// but the injection waits for a grant and may eat into its window.
    min_pause: Mutex<Duration>,
    healed: Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A holder in a driver process as a fault target: paused past its lease, or killed while it
/// holds.
pub struct HolderTarget {
    driver: ExecBackend,
    control: Control,
    /// Every driver process the target started, for the caller to see that none is left.
    pids: Mutex<Vec<u32>>,
}

impl HolderTarget {
    /// Holders started as `driver`'s processes (the Rust driver over the backend's URL:
    /// [`HolderTarget::for_backend`]; or any driver of the same service).
    pub fn new(driver: ExecBackend) -> Self {
        HolderTarget { driver, control: Control::default(), pids: Mutex::default() }
    }

    /// Holders started as `program args… URL`, where `URL` is `backend`'s
    /// ([`Backend::url`](crate::Backend::url)) and `program args…` a driver that serves URLs
    /// (`lockcheck-driver`, `lockcheck driver`). `None` for a backend no other process can
    /// reach (the memory locker).
    pub fn for_backend(program: Vec<String>, backend: &dyn crate::Backend) -> Option<Self> {
        let mut command = program;
        command.push(backend.url()?);
        Some(Self::new(ExecBackend::new(command).ok()?.with_timing(backend.timing())))
    }

    /// The process ids of every driver the target started.
    pub fn pids(&self) -> Vec<u32> {
        lock(&self.pids).clone()
    }

    /// A fresh holder process; its requests may wait out a pause longer than any the
    /// schedule makes before it counts as hung.
    async fn spawn(&self, timing: &Timing) -> Result<Arc<ExecLocker>, String> {
        let driver = self.driver.clone().with_margin(timing.base_ttl * 4 + Duration::from_secs(2));
        let locker = driver.spawn().await.map_err(|error| format!("the holder's driver: {error}"))?;
        lock(&self.pids).extend(locker.pid());
        Ok(Arc::new(locker))
    }
}

#[async_trait]
impl FaultTarget for HolderTarget {
    fn name(&self) -> String {
        format!("holder process {}", self.driver.command().join(" "))
    }

    fn faults(&self) -> Vec<Fault> {
        vec![Fault::ClientPausedPastLease, Fault::ClientCrashedWhileHolding]
    }

    /// Asks the holder's loop to inject `fault` at its next grant, and waits until it has.
    async fn inject(&self, fault: Fault, _instance: usize) -> Result<(), FaultError> {
        let (done, injected) = oneshot::channel();
        *lock(&self.control.armed) = Some(Order { fault, done });
        let outcome = match timeout(Duration::from_secs(30), injected).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err("the holder's loop ended before its next grant".to_owned()),
            Err(_) => Err("the holder was not granted the key within 30 s".to_owned()),
        };
        lock(&self.control.armed).take();
        outcome.map_err(|message| FaultError::Service(client_fault(fault, message)))
    }

    /// Resumes a stopped holder, once its lease has surely ended; lets a killed one's
    /// successor start.
    async fn heal(&self, fault: Fault, _instance: usize) -> Result<(), FaultError> {
        let paused = lock(&self.control.paused).take();
        self.control.healed.notify_waiters();
        match paused {
            Some((driver, since)) => {
                let min_pause = *lock(&self.control.min_pause);
                tokio::time::sleep_until(since + min_pause).await;
                driver.signal("CONT").await.map_err(|message| FaultError::Service(client_fault(fault, message)))
            }
            None => Ok(()),
        }
    }

    async fn run_clients(&self, run: TargetRun<'_>) -> TargetClients {
        let request = LeaseRequest::lock(format!("{}-fenced", run.namespace), run.timing.base_ttl);
        *lock(&self.control.min_pause) = run.timing.base_ttl * 2 + run.timing.tolerance;
        let resource = Resource::new(run.capabilities.fencing);
        let contender = async {
            let locker = match run.backend.connect().await {
                Ok(locker) => run.recorder.client(run.first_client, locker),
                Err(error) => return Some(format!("the contender could not connect: {error}")),
            };
            contend(&locker, &request, &resource, &run.timing, run.end).await;
            None
        };
        let (holder, contender) = tokio::join!(self.hold(&run, &request, &resource), contender);
        let mut notes: Vec<String> = holder.into_iter().chain(contender).collect();
        let writes = lock(&resource.writes).clone();
        notes.push(format!(
            "{} writes to the {} resource, {} refused",
            writes.len(),
            if resource.fenced.is_some() { "fenced" } else { "unchecked" },
            writes.iter().filter(|write| !write.accepted).count()
        ));
        let verdict = judge_writes(&writes, &run.recorder.history().operations, request.key());
        TargetClients { verdicts: vec![(Property::ResourceSafety, verdict)], notes, requests: vec![request] }
    }
}

fn client_fault(fault: Fault, message: String) -> lockcheck_support::ServiceError {
    lockcheck_support::ServiceError::Fault {
        operation: if fault == Fault::ClientPausedPastLease { "pause" } else { "kill" },
        name: "holder".into(),
        runtime: lockcheck_support::Runtime::Process,
        message,
    }
}

impl HolderTarget {
    /// The holder's loop until `run.end`; a note if it could not run.
    async fn hold(&self, run: &TargetRun<'_>, request: &LeaseRequest, resource: &Resource) -> Option<String> {
        let mut next_client = run.first_client + 1;
        let mut driver = match self.spawn(&run.timing).await {
            Ok(driver) => driver,
            Err(error) => return Some(error),
        };
        let mut client = run.recorder.client(next_client, driver.clone());
        let mut errors = Vec::new();
        while Instant::now() < run.end {
            let lease = match client.acquire(request, run.timing.base_ttl * 2).await {
                Ok(lease) => lease,
                Err(error) if error.is_timeout() => continue,
                Err(error) => {
                    errors.push(error.to_string());
                    // A driver that broke is replaced, as a supervisor restarts a client.
                    next_client += 1;
                    driver = match self.spawn(&run.timing).await {
                        Ok(driver) => driver,
                        Err(error) => return Some(error),
                    };
                    client = run.recorder.client(next_client, driver.clone());
                    continue;
                }
            };
            resource.write(&client, &lease);
            let order = lock(&self.control.armed).take();
            match order {
                Some(Order { fault: Fault::ClientCrashedWhileHolding, done }) => {
                    // Listening for the heal before the schedule hears of the kill, so it is
                    // not missed.
                    let healed = self.control.healed.notified();
                    driver.kill();
                    client.session_ended(std::slice::from_ref(&lease), true);
                    let _ = done.send(Ok(()));
                    // A fresh process once the window heals (or the run ends).
                    let _ = timeout(run.end.saturating_duration_since(Instant::now()), healed).await;
                    next_client += 1;
                    driver = match self.spawn(&run.timing).await {
                        Ok(driver) => driver,
                        Err(error) => return Some(error),
                    };
                    client = run.recorder.client(next_client, driver.clone());
                    continue;
                }
                Some(Order { done, .. }) => {
                    let stopped = driver.signal("STOP").await;
                    if stopped.is_ok() {
                        *lock(&self.control.paused) = Some((driver.clone(), Instant::now()));
                    }
                    let _ = done.send(stopped);
                }
                None => {}
            }
            // The holder's work: a round trip through its process, which a pause holds up.
            let _ = client.remaining_ttl(&lease).await;
            resource.write(&client, &lease);
            let _ = client.release(&lease).await;
        }
        (!errors.is_empty())
            .then(|| format!("the holder replaced {} drivers (last: {})", errors.len(), errors[errors.len() - 1]))
    }
}

/// The contender: takes the key whenever it can, writes, works a little, writes, releases.
async fn contend(locker: &RecordingLocker, request: &LeaseRequest, resource: &Resource, timing: &Timing, end: Instant) {
    while Instant::now() < end {
        match locker.acquire(request, timing.base_ttl * 3).await {
            Ok(lease) => {
                resource.write(locker, &lease);
                // Holding for a while, as work does: the key is not always free for the holder.
                sleep(timing.base_ttl / 5).await;
                resource.write(locker, &lease);
                let _ = locker.release(&lease).await;
            }
            Err(error) if error.is_timeout() => {}
            // A server that is down: back off a little, as a client would.
            Err(_) => sleep(timing.base_ttl / 4).await,
        }
    }
}

/// One write the resource saw, with the instants the judgement needs.
#[derive(Clone, Debug)]
struct WriteAt {
    client: u32,
    /// When the writer's lease was granted (its grant's return), µs on the recorder's clock.
    granted: Micros,
    /// When the write was applied.
    at: Micros,
    fence: u64,
    accepted: bool,
}

/// The protected resource: fenced where the backend claims fencing, else one that cannot
/// check tokens and accepts every write.
struct Resource {
    fenced: Option<FencedResource>,
    writes: Mutex<Vec<WriteAt>>,
}

impl Resource {
    fn new(fencing: bool) -> Self {
        Resource { fenced: fencing.then(FencedResource::new), writes: Mutex::default() }
    }

    fn write(&self, writer: &RecordingLocker, lease: &Lease) {
        let recorder: &Recorder = writer.recorder();
        let at = recorder.now();
        let granted = granted_at(recorder, lease).unwrap_or(at);
        let accepted =
            self.fenced.as_ref().is_none_or(|fenced| fenced.write(writer.client_id(), lease.key(), lease.fence().0));
        lock(&self.writes).push(WriteAt { client: writer.client_id(), granted, at, fence: lease.fence().0, accepted });
    }
}

/// When the grant of `lease` returned, from the history.
fn granted_at(recorder: &Recorder, lease: &Lease) -> Option<Micros> {
    let id = recorder.lease_id(lease)?;
    recorder
        .history()
        .operations
        .iter()
        .find(|op| op.call.is_acquire() && op.call.lease() == id)
        .and_then(|op| op.returned)
}

/// P10 from the writes: a stale write accepted (its writer's key was granted to and written by
/// another client after it), or the newest holder's write refused.
fn judge_writes(writes: &[WriteAt], operations: &[crate::history::Operation], key: &str) -> Verdict {
    let newer = |write: &WriteAt| {
        writes.iter().find(|other| {
            other.accepted && other.client != write.client && other.granted > write.granted && other.at < write.at
        })
    };
    for write in writes {
        let summary = match (write.accepted, newer(write)) {
            (true, Some(other)) => format!(
                "client {} wrote with token {} at {}ms, accepted, although client {} had been granted the key after it (at {}ms) and written with token {} at {}ms: a stale write got through",
                write.client,
                write.fence,
                ms(write.at),
                other.client,
                ms(other.granted),
                other.fence,
                ms(other.at)
            ),
            (false, None) => format!(
                "client {}, the newest holder (granted at {}ms), wrote with token {} at {}ms and was refused: an earlier grant carried a larger token",
                write.client,
                ms(write.granted),
                write.fence,
                ms(write.at)
            ),
            _ => continue,
        };
        let from =
            writes.iter().map(|w| w.granted).filter(|g| *g <= write.granted).max().unwrap_or(0).min(write.granted);
        let shown = operations
            .iter()
            .filter(|op| op.key == key && op.returned.is_none_or(|returned| returned >= from) && op.invoked <= write.at)
            .cloned()
            .collect();
        return Verdict::invalid(Counterexample::new(Property::ResourceSafety, summary, shown));
    }
    Verdict::Valid
}

fn ms(micros: Micros) -> String {
    format!("{:.1}", micros as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(client: u32, granted: Micros, at: Micros, fence: u64, accepted: bool) -> WriteAt {
        WriteAt { client, granted, at, fence, accepted }
    }

    #[test]
    fn a_stale_write_accepted_and_the_newest_holder_refused_are_violations() {
        // The holder (0) stopped after its grant; the contender (1) took the key and wrote.
        let refused = [write(0, 10, 11, 1, true), write(1, 500, 501, 2, true), write(0, 10, 900, 1, false)];
        assert!(matches!(judge_writes(&refused, &[], "k"), Verdict::Valid));
        let through = [write(0, 10, 11, 1, true), write(1, 500, 501, 2, true), write(0, 10, 900, 1, true)];
        assert!(matches!(judge_writes(&through, &[], "k"), Verdict::Invalid { .. }));
        let newest_refused = [write(0, 10, 11, 5, true), write(1, 500, 501, 2, false)];
        assert!(matches!(judge_writes(&newest_refused, &[], "k"), Verdict::Invalid { .. }));
        // One after the other, each writing while it holds: nothing stale.
        let in_turn = [write(0, 10, 11, 1, true), write(0, 10, 20, 1, true), write(1, 30, 31, 2, true)];
        assert!(matches!(judge_writes(&in_turn, &[], "k"), Verdict::Valid));
    }
}
