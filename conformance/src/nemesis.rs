//! The nemesis: faults injected on a seeded schedule while the seeded random workload runs,
//! and the whole history judged, as Jepsen does.
//!
//! A scripted fault run ([`faults`](crate::faults)) tells one story per fault. The nemesis
//! instead interleaves a fault with everything the random workload does — waits, refreshes,
//! cancellations, releases — on several clients, so the fault lands on whatever operation
//! happens to be in flight. Operations the fault leaves undecided (a request sent to a frozen
//! server) are recorded as indeterminate, and the checkers judge every way they could have
//! gone.
//!
//! A run has three parts:
//!
//! 1. the workload, while a [`Schedule`] derived from the seed injects and heals the fault
//!    through a [`FaultTarget`] (the service as the nemesis sees it);
//! 2. after the last heal, a quiet period longer than any lease the workload asks for;
//! 3. a liveness probe: a fresh client acquires every key the workload used, within a bound.
//!    Every lease has ended by then, so a key that is not granted again is a lock lost for
//!    good.
//!
//! The history goes through every checker with the backend's claims, and the run's
//! [`NemesisOutcome`] is ok, a violation the claims predict ([`Fault::predicted_by`]), a
//! violation, unknown (a fault that failed to inject or heal, a checker out of budget) or not
//! checked (a fault the target cannot be put through).
//!
//! Describing a service to the nemesis takes a few lines. A process-based server through
//! [`Service`]:
//!
//! ```no_run
//! use async_trait::async_trait;
//! use lockcheck_conformance::faults::{Fault, FaultError};
//! use lockcheck_conformance::nemesis::FaultTarget;
//! use lockcheck_support::Service;
//! use tokio::sync::Mutex;
//!
//! struct MyServer(Mutex<Service>);
//!
//! #[async_trait]
//! impl FaultTarget for MyServer {
//!     fn name(&self) -> String {
//!         "my-server".into()
//!     }
//!     fn faults(&self) -> Vec<Fault> {
//!         vec![Fault::ServerPausedPastTtl, Fault::ServerRestartedWithoutPersistence]
//!     }
//!     async fn inject(&self, fault: Fault, _instance: usize) -> Result<(), FaultError> {
//!         let mut server = self.0.lock().await;
//!         Ok(match fault {
//!             Fault::ServerPausedPastTtl => server.pause().await?,
//!             _ => server.kill().await?,
//!         })
//!     }
//!     async fn heal(&self, fault: Fault, _instance: usize) -> Result<(), FaultError> {
//!         let mut server = self.0.lock().await;
//!         Ok(match fault {
//!             Fault::ServerPausedPastTtl => server.unpause().await?,
//!             _ => server.start_again().await?,
//!         })
//!     }
//! }
//! ```
//!
//! [`ServiceTarget`] is that, for every fault a [`Service`] offers, and [`InstancesTarget`]
//! the same for the instances of a multi-instance lock (one instance killed, or restarted
//! empty). [`HolderTarget`] faults a client instead of a server: a holder running as a driver
//! process of its own, stopped past its lease or killed while it holds; a target with clients
//! of its own runs them beside the workload ([`FaultTarget::run_clients`]) and adds their
//! verdicts to the run's.

mod clock;
#[cfg(feature = "nats")]
mod cluster;
mod holders;
mod lockers;
mod schedule;

pub use clock::{CLOCK_FAULTS, ClockTarget};
#[cfg(feature = "nats")]
pub use cluster::ClusterTarget;
pub use holders::HolderTarget;
pub use lockers::{GuessingBackend, PessimistBackend};
pub use schedule::{Schedule, Window};

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lockcheck_history::Timing;
use lockcheck_history::checkers::{Counterexample, Verdict};
use lockcheck_impls::{Capabilities, LeaseRequest, Locker};
use lockcheck_model::spec::{Property, Status};
use lockcheck_report::documents::{FaultRecord, FaultRun};
use lockcheck_support::{Runtime, Service};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::Mutex;
use tokio::time::{Instant, sleep, sleep_until};

use crate::backend::Backend;
use crate::faults::{Fault, FaultError};
use crate::history::{History, KeptHistory, Recorder, RecordingLocker};
use crate::suite::workload::{Plan, checked_with};
use crate::suite::{Stop, check_recorded};

/// A service as the nemesis sees it: which faults it can be put through, and how to inject
/// and heal each. `instance` picks one server of a multi-instance service (always 0 for one
/// server); [`Schedule`] chooses it from the seed among [`FaultTarget::instances`].
#[async_trait]
pub trait FaultTarget: Send + Sync {
    /// A short name for reports (`redis (process)`).
    fn name(&self) -> String;

    /// The faults this target can be put through.
    fn faults(&self) -> Vec<Fault>;

    /// Why a fault this target cannot be put through is impossible here, if it is a matter of
    /// where the target runs rather than of what it is (a network partition of a process).
    fn impossible(&self, _fault: Fault) -> Option<String> {
        None
    }

    /// How many instances faults may pick from.
    fn instances(&self) -> usize {
        1
    }

    /// Starts `fault` on `instance`.
    async fn inject(&self, fault: Fault, instance: usize) -> Result<(), FaultError>;

    /// Ends `fault` on `instance` and waits until the service answers again.
    async fn heal(&self, fault: Fault, instance: usize) -> Result<(), FaultError>;

    /// Runs clients of the target's own beside the workload until `run.end` (a holder in a
    /// process the target pauses or kills), recording into `run.recorder`, and returns what
    /// they found: verdicts the history checkers cannot reach (a protected resource's writes),
    /// notes, and keys the liveness probe must also get. None by default.
    async fn run_clients(&self, _run: TargetRun<'_>) -> TargetClients {
        TargetClients::default()
    }
}

/// What a target's own clients run with ([`FaultTarget::run_clients`]).
#[non_exhaustive]
pub struct TargetRun<'a> {
    /// The backend under test.
    pub backend: &'a dyn Backend,
    /// The run's recorder.
    pub recorder: &'a Arc<Recorder>,
    /// A prefix for the clients' keys, unique to the run.
    pub namespace: &'a str,
    /// The run's time scales.
    pub timing: Timing,
    /// The backend's claims.
    pub capabilities: Capabilities,
    /// When the clients stop.
    pub end: Instant,
    /// The first client number the target's clients may use (numbers above it are theirs).
    pub first_client: u32,
}

/// What a target's own clients found.
#[derive(Default)]
#[non_exhaustive]
pub struct TargetClients {
    /// Verdicts beside the history checkers'.
    pub verdicts: Vec<(Property, Verdict)>,
    /// What the clients observed.
    pub notes: Vec<String>,
    /// The requests whose keys the liveness probe must also get.
    pub requests: Vec<LeaseRequest>,
}

/// The Service operations a fault is made of: the injection and its heal.
async fn inject_into(service: &Mutex<Service>, fault: Fault) -> Result<(), FaultError> {
    let mut service = service.lock().await;
    match fault {
        Fault::ServerPausedPastTtl => service.pause().await?,
        Fault::NetworkPartition => service.disconnect().await?,
        _ => service.kill().await?,
    }
    Ok(())
}

async fn heal_of(service: &Mutex<Service>, fault: Fault) -> Result<(), FaultError> {
    let mut service = service.lock().await;
    match fault {
        Fault::ServerPausedPastTtl => service.unpause().await?,
        Fault::NetworkPartition => service.reconnect().await?,
        _ => service.start_again().await?,
    }
    Ok(())
}

/// One server ([`Service`]) as a fault target: paused past the lease, killed and restarted
/// (with or without persistence, as the server was started), cut off from its clients where
/// it runs in Docker.
pub struct ServiceTarget {
    service: Mutex<Service>,
    name: String,
    runtime: Runtime,
    persistent: bool,
}

impl ServiceTarget {
    /// `service`, started without persistence: a restart forgets every lock.
    pub fn new(service: Service) -> Self {
        ServiceTarget {
            name: format!("{} ({})", service.name(), service.runtime()),
            runtime: service.runtime(),
            service: Mutex::new(service),
            persistent: false,
        }
    }

    /// `service`, started with persistence (Redis append-only, JetStream file storage): a
    /// restart keeps what was acknowledged.
    pub fn persistent(service: Service) -> Self {
        ServiceTarget { persistent: true, ..ServiceTarget::new(service) }
    }

    /// The service.
    pub fn service(&self) -> &Mutex<Service> {
        &self.service
    }
}

#[async_trait]
impl FaultTarget for ServiceTarget {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn faults(&self) -> Vec<Fault> {
        let restart = if self.persistent {
            Fault::ServerRestartedWithPersistence
        } else {
            Fault::ServerRestartedWithoutPersistence
        };
        let mut faults = vec![Fault::ServerPausedPastTtl, restart];
        if self.runtime == Runtime::Docker {
            faults.push(Fault::NetworkPartition);
        }
        faults
    }

    fn impossible(&self, fault: Fault) -> Option<String> {
        if CLOCK_FAULTS.contains(&fault) {
            return Some("a clock fault needs the server started on a fake clock (ClockTarget)".to_owned());
        }
        (fault == Fault::NetworkPartition && self.runtime != Runtime::Docker)
            .then(|| format!("a network partition needs the docker runtime; this server runs as a {}", self.runtime))
    }

    async fn inject(&self, fault: Fault, _instance: usize) -> Result<(), FaultError> {
        inject_into(&self.service, fault).await
    }

    async fn heal(&self, fault: Fault, _instance: usize) -> Result<(), FaultError> {
        heal_of(&self.service, fault).await
    }
}

/// The instances of a multi-instance lock (Redlock's servers): one of them, chosen by the
/// schedule, killed for a while (up to three base leases), or killed and restarted at once.
/// Either way the instance is started again at the end of its window, empty: the next window
/// may pick another instance, and the quorum must survive the run.
pub struct InstancesTarget {
    services: Vec<Mutex<Service>>,
    name: String,
}

impl InstancesTarget {
    /// `services`, started without persistence.
    pub fn new(services: Vec<Service>) -> Self {
        let name = match services.first() {
            Some(first) => format!("{} × {} ({})", services.len(), first.name(), first.runtime()),
            None => "no instances".to_owned(),
        };
        InstancesTarget { services: services.into_iter().map(Mutex::new).collect(), name }
    }
}

#[async_trait]
impl FaultTarget for InstancesTarget {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn faults(&self) -> Vec<Fault> {
        vec![Fault::OneInstanceKilled, Fault::OneInstanceRestarted]
    }

    fn instances(&self) -> usize {
        self.services.len()
    }

    async fn inject(&self, _fault: Fault, instance: usize) -> Result<(), FaultError> {
        // Both faults begin with the kill; they differ in how long the instance stays down.
        inject_into(&self.services[instance], Fault::OneInstanceKilled).await
    }

    async fn heal(&self, _fault: Fault, instance: usize) -> Result<(), FaultError> {
        heal_of(&self.services[instance], Fault::OneInstanceKilled).await
    }
}

/// How a nemesis run is set up.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NemesisConfig {
    /// The seed of the schedule and of the clients' plans; printed, and replayed by itself.
    pub seed: u64,
    /// Concurrent clients.
    pub clients: u32,
    /// How long the workload runs (longer if the schedule's last window ends later).
    pub duration: Duration,
    /// Time scales; `None` uses the backend's own.
    pub timing: Option<Timing>,
    /// The linearizability checker's time budget: running out gives unknown.
    pub checker_budget: Duration,
    /// Where the whole history of a run that is violated or unknown is kept (default
    /// `$LOCKCHECK_HISTORY_DIR`; `None`: not kept).
    pub histories: Option<PathBuf>,
}

impl NemesisConfig {
    /// A run of `duration` with `seed`: four clients, a 10 s checker budget.
    pub fn new(seed: u64, duration: Duration) -> Self {
        NemesisConfig {
            seed,
            clients: 4,
            duration,
            timing: None,
            checker_budget: Duration::from_secs(10),
            histories: crate::history::history_dir(),
        }
    }

    /// Keeps the whole history of a run that is violated or unknown in `dir`.
    pub fn histories(mut self, dir: PathBuf) -> Self {
        self.histories = Some(dir);
        self
    }

    /// Sets the number of clients.
    pub fn clients(mut self, clients: u32) -> Self {
        self.clients = clients;
        self
    }

    /// Overrides the backend's time scales.
    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = Some(timing);
        self
    }

    /// Sets the linearizability checker's time budget. A fault leaves operations undecided,
    /// and each one multiplies the orders the search must weigh.
    pub fn checker_budget(mut self, budget: Duration) -> Self {
        self.checker_budget = budget;
        self
    }
}

/// The verdict of one nemesis run.
#[derive(Clone, Debug)]
pub enum NemesisVerdict {
    /// Every checker passed the history and the probe got every key.
    Ok,
    /// The history breaks a property the backend's claims say it cannot keep under this fault.
    Predicted {
        /// The counterexample (shrunk by its checker).
        counterexample: Box<Counterexample>,
        /// The claim that predicts it, e.g. `survives_server_restart: false`.
        predicted_by: String,
    },
    /// The history breaks a property the backend claims.
    Violated {
        /// The counterexample (shrunk by its checker).
        counterexample: Box<Counterexample>,
    },
    /// The run decided nothing.
    Unknown {
        /// Why.
        reason: String,
    },
    /// The target cannot be put through the fault.
    NotChecked {
        /// Why.
        reason: String,
    },
}

impl NemesisVerdict {
    /// The verdict in the spec's vocabulary.
    pub fn status(&self) -> Status {
        match self {
            NemesisVerdict::Ok => Status::Passed,
            NemesisVerdict::Predicted { .. } => Status::Predicted,
            NemesisVerdict::Violated { .. } => Status::Violated,
            NemesisVerdict::Unknown { .. } => Status::Unknown,
            NemesisVerdict::NotChecked { .. } => Status::NotChecked,
        }
    }
}

impl fmt::Display for NemesisVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NemesisVerdict::Ok => f.write_str("ok"),
            NemesisVerdict::Predicted { counterexample, predicted_by } => write!(
                f,
                "predicted violation of {:?} ({predicted_by}): {}",
                counterexample.property, counterexample.summary
            ),
            NemesisVerdict::Violated { counterexample } => write!(f, "VIOLATED: {counterexample}"),
            NemesisVerdict::Unknown { reason } => write!(f, "unknown: {reason}"),
            NemesisVerdict::NotChecked { reason } => write!(f, "not checked: {reason}"),
        }
    }
}

/// What one nemesis run found.
#[derive(Clone, Debug)]
pub struct NemesisOutcome {
    /// The backend (its name).
    pub backend: String,
    /// The target (its name).
    pub target: String,
    /// The fault.
    pub fault: Fault,
    /// The seed.
    pub seed: u64,
    /// The schedule the run followed.
    pub schedule: Schedule,
    /// The verdict.
    pub verdict: NemesisVerdict,
    /// Recorded operations (the probe's included).
    pub operations: usize,
    /// Operations whose outcome is unknown (the fault's footprint on the history).
    pub indeterminate: usize,
    /// What the run observed on the way.
    pub notes: Vec<String>,
}

impl NemesisOutcome {
    /// The verdict in the spec's vocabulary.
    pub fn status(&self) -> Status {
        self.verdict.status()
    }

    /// The fault matrix's column for nemesis runs of `fault`, apart from the scripted story.
    pub fn column(fault: Fault) -> String {
        format!("nemesis: {}", fault.name())
    }

    /// The run as a record of the `faults` document: the backend kind as the row, the fault
    /// as a `nemesis: …` column, the seed and schedule among the notes.
    pub fn to_record(&self) -> FaultRecord {
        let (property, evidence, predicted_by) = match &self.verdict {
            NemesisVerdict::Predicted { counterexample, predicted_by } => {
                (Some(counterexample.property), Some(counterexample.to_string()), Some(predicted_by.clone()))
            }
            NemesisVerdict::Violated { counterexample } => {
                (Some(counterexample.property), Some(counterexample.to_string()), None)
            }
            NemesisVerdict::Unknown { reason } | NemesisVerdict::NotChecked { reason } => {
                (None, Some(reason.clone()), None)
            }
            NemesisVerdict::Ok => (None, None, None),
        };
        let counterexample = match &self.verdict {
            NemesisVerdict::Predicted { counterexample, .. } | NemesisVerdict::Violated { counterexample } => {
                Some(counterexample.as_ref().clone())
            }
            _ => None,
        };
        let mut notes = vec![
            format!("seed {} (target {})", self.seed, self.target),
            format!("schedule: {}", self.schedule),
            format!("{} operations, {} indeterminate", self.operations, self.indeterminate),
        ];
        notes.extend(self.notes.iter().cloned());
        FaultRecord {
            backend: crate::faults::backend_kind(&self.backend),
            fault: Self::column(self.fault),
            status: self.status(),
            property,
            evidence,
            predicted_by,
            notes,
            counterexample,
            runs: vec![FaultRun { seed: self.seed, status: self.status() }],
        }
    }

    /// Adds this run to the `faults` document in `$LOCKCHECK_FAULTS_OUT`, if set, as
    /// [`FaultReport::record`](crate::faults::FaultReport::record) does.
    pub fn record(&self) {
        crate::faults::record_in_env(self.to_record());
    }
}

impl fmt::Display for NemesisOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} × nemesis {} (seed {}): {}", self.backend, self.fault, self.seed, self.verdict)?;
        writeln!(f, "    target {}; schedule: {}", self.target, self.schedule)?;
        writeln!(f, "    {} operations, {} indeterminate", self.operations, self.indeterminate)?;
        for note in &self.notes {
            writeln!(f, "    note: {note}")?;
        }
        Ok(())
    }
}

/// Runs the random workload on `backend` while `target` goes through `fault` on the seeded
/// schedule, then a quiet period and the liveness probe, and judges the whole history.
pub async fn run_nemesis(
    backend: &dyn Backend,
    target: &dyn FaultTarget,
    fault: Fault,
    config: &NemesisConfig,
) -> NemesisOutcome {
    let timing = match config.timing {
        Some(timing) => timing,
        // Widened to the backend's measured jitter before the faults begin, as the suite does:
        // a busy machine's noise is not the fault's doing.
        None => crate::suite::timing_for(backend, &crate::SuiteConfig::with_seed(config.seed)).await,
    };
    let schedule = Schedule::new(config.seed, fault, target.instances(), config.duration, &timing);
    let mut outcome = NemesisOutcome {
        backend: backend.name(),
        target: target.name(),
        fault,
        seed: config.seed,
        schedule: schedule.clone(),
        verdict: NemesisVerdict::Ok,
        operations: 0,
        indeterminate: 0,
        notes: Vec::new(),
    };
    if !target.faults().contains(&fault) {
        let reason =
            target.impossible(fault).unwrap_or_else(|| format!("{} cannot be put through {fault}", target.name()));
        outcome.verdict = NemesisVerdict::NotChecked { reason };
        return outcome;
    }
    let capabilities = match backend.connect().await {
        Ok(client) => client.capabilities(),
        Err(error) => {
            outcome.verdict = NemesisVerdict::Unknown { reason: format!("could not connect before the run: {error}") };
            return outcome;
        }
    };
    let namespace = format!("lc-{:08x}-nemesis", rand::random::<u32>());
    let requests = if capabilities.semaphores {
        vec![
            LeaseRequest::lock(format!("{namespace}-lock"), timing.base_ttl),
            LeaseRequest::semaphore(format!("{namespace}-sem"), 2, timing.base_ttl),
        ]
    } else {
        vec![
            LeaseRequest::lock(format!("{namespace}-lock"), timing.base_ttl),
            LeaseRequest::lock(format!("{namespace}-lock2"), timing.base_ttl),
        ]
    };
    let recorder = Recorder::new();
    let started = Instant::now();
    let end = started + schedule.span().max(config.duration);
    let nemesis = run_schedule(target, &schedule, started);
    let clients = futures::future::join_all((0..config.clients).map(|client| {
        let plan = ClientPlan { backend, recorder: &recorder, requests: &requests, timing, seed: config.seed };
        plan.run(client, config.clients, end)
    }));
    let own = target.run_clients(TargetRun {
        backend,
        recorder: &recorder,
        namespace: &namespace,
        timing,
        capabilities,
        end,
        // Far above the workload's clients (one number per connection) and below the probe's.
        first_client: 1 << 30,
    });
    let (injected, client_notes, own) = tokio::join!(nemesis, clients, own);
    outcome.notes.extend(client_notes.into_iter().flatten());
    outcome.notes.extend(own.notes);
    let mut requests = requests;
    requests.extend(own.requests);
    if let Err(reason) = injected {
        outcome.verdict = NemesisVerdict::Unknown { reason };
        outcome.notes.push(format!("history of {} operations not judged", recorder.history().operations.len()));
        return outcome;
    }
    // Longer than any lease the workload asks for (at most twice the base), so every lease
    // has ended when the probe asks.
    sleep(timing.base_ttl * 2 + timing.tolerance).await;
    let probe = probe(backend, &recorder, &requests, &timing, config.clients).await;
    let history = recorder.history();
    outcome.operations = history.operations.len();
    outcome.indeterminate = history
        .operations
        .iter()
        .filter(|op| matches!(op.outcome, crate::history::Outcome::Indeterminate { .. }))
        .count();
    let judged = through_outages(timing, &schedule);
    if let Some(outage) = judged.outage {
        outcome.notes.push(format!(
            "a lease may be seen held up to {} ms past its end: the server could not end it during a {} ms outage",
            judged.late_tolerance().as_millis(),
            outage.as_millis()
        ));
    }
    let (verdict, also) = judge(&history, fault, &capabilities, &judged, config.checker_budget, probe, own.verdicts);
    outcome.verdict = verdict;
    outcome.notes.extend(also);
    if matches!(outcome.verdict, NemesisVerdict::Violated { .. } | NemesisVerdict::Unknown { .. }) {
        outcome.notes.push(format!("replay with seed {}", config.seed));
        // The whole history: the counterexample is shrunk, and a fault's finding may not
        // come back on replay (the timing is the machine's).
        let kept = KeptHistory { timing: Some(judged), capabilities: Some(capabilities), history };
        let name = format!(
            "nemesis-{}-{}-{}",
            file_name_part(&target.name()),
            file_name_part(&format!("{fault:?}")),
            config.seed
        );
        let path = config.histories.as_deref().and_then(|dir| crate::history::keep_history(&kept, dir, &name));
        if let Some(path) = path {
            outcome.notes.push(format!("whole history in {} (lockcheck check --recheck FILE)", path.display()));
        }
    }
    outcome
}

/// `text` with every character but ASCII letters, digits and `-` replaced by `-`.
fn file_name_part(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect()
}

/// Injects and heals each window of `schedule`, on time as far as the service allows (a
/// restart takes as long as the server takes to answer). An error ends the schedule, after
/// an attempt to heal what was injected.
async fn run_schedule(target: &dyn FaultTarget, schedule: &Schedule, started: Instant) -> Result<(), String> {
    for window in &schedule.windows {
        sleep_until(started + window.at).await;
        if let Err(error) = target.inject(window.fault, window.instance).await {
            let healed = target.heal(window.fault, window.instance).await;
            return Err(format!("could not inject {window}: {error} (heal afterwards: {healed:?})"));
        }
        sleep_until(started + window.at + window.hold).await;
        target
            .heal(window.fault, window.instance)
            .await
            .map_err(|error| format!("could not heal {window}: {error}"))?;
    }
    Ok(())
}

/// One workload client: rounds of the random workload's [`Plan`] until the end. A client
/// whose round stops on an error that says nothing happened (a server that is down refuses
/// the connection) starts the next round on a fresh connection, as an application would;
/// those errors are recorded as failed operations and counted in the notes.
struct ClientPlan<'a> {
    backend: &'a dyn Backend,
    recorder: &'a Arc<Recorder>,
    requests: &'a [LeaseRequest],
    timing: Timing,
    seed: u64,
}

impl ClientPlan<'_> {
    async fn run(self, client: u32, clients: u32, end: Instant) -> Vec<String> {
        let mut errors = 0u32;
        let mut connections = 0u32;
        let mut last_error = None;
        let mut locker: Option<RecordingLocker> = None;
        let mut round = 0u64;
        while Instant::now() < end {
            let recorded = match &locker {
                Some(locker) => locker.clone(),
                None => match self.backend.connect().await {
                    Ok(inner) => {
                        // Each connection is a client of its own in the history: a session
                        // that ended with its connection is not confused with the next one.
                        let id = client + clients * connections;
                        connections += 1;
                        let recorded = self.recorder.client(id, inner);
                        locker = Some(recorded.clone());
                        recorded
                    }
                    Err(error) => {
                        errors += 1;
                        last_error = Some(format!("connect: {error}"));
                        // The server is down: the client backs off for a moment, as a client
                        // would, instead of spinning on refused connections.
                        sleep(self.timing.base_ttl / 4).await;
                        continue;
                    }
                },
            };
            let rng = StdRng::seed_from_u64(self.seed ^ (round << 32) ^ u64::from(client));
            let plan = Plan { requests: self.requests.to_vec(), ops: 8, base: self.timing.base_ttl };
            if let Err(stop) = plan.run(recorded, rng).await {
                errors += 1;
                last_error = Some(match stop {
                    Stop::Error(message) | Stop::NotChecked(message) => message,
                    Stop::Violated(counterexample) => counterexample.summary,
                });
                locker = None;
                // A client whose server is down backs off before it tries again, as above.
                sleep(self.timing.base_ttl / 4).await;
            }
            round += 1;
        }
        match last_error {
            Some(last) => vec![format!("client {client}: {errors} rounds ended on an error (last: {last})")],
            None => Vec::new(),
        }
    }
}

/// What the liveness probe saw.
enum Probe {
    /// Every key was granted within the bound.
    Granted,
    /// A key was not granted within the bound, with every lease long over.
    Stuck { key: String, waited: Duration },
    /// The probe could not ask.
    Failed(String),
}

/// A fresh client acquires every key the workload used, each within a bound that covers the
/// backend's hand-off and tolerance, and releases it.
async fn probe(
    backend: &dyn Backend,
    recorder: &Arc<Recorder>,
    requests: &[LeaseRequest],
    timing: &Timing,
    clients: u32,
) -> Probe {
    let locker = match backend.connect().await {
        Ok(locker) => recorder.client(u32::MAX - clients, locker),
        Err(error) => return Probe::Failed(format!("the probe could not connect: {error}")),
    };
    let bound = timing.base_ttl + timing.prompt + timing.tolerance;
    for request in requests {
        let request = LeaseRequest::semaphore(request.key(), request.limit(), timing.base_ttl);
        match locker.acquire(&request, bound).await {
            Ok(lease) => {
                if let Err(error) = locker.release(&lease).await {
                    return Probe::Failed(format!("the probe's release of {}: {error}", request.key()));
                }
            }
            Err(error) if error.is_timeout() => return Probe::Stuck { key: request.key().to_owned(), waited: bound },
            Err(error) => return Probe::Failed(format!("the probe's acquire of {}: {error}", request.key())),
        }
    }
    Probe::Granted
}

/// The time scales a run's history is judged with: with the schedule's longest outage
/// ([`Timing::outage`]). While a server is frozen, cut off or down it cannot end a lease or
/// clean up after a cancelled acquire, and once back it may take its usual slack to catch up:
/// a lease seen held late, or a cancelled acquire's grant given back late, only delays the
/// next holder (the spec's late side). Nothing widens the early side or a holder's belief,
/// which guard against two holders: no fault excuses those.
fn through_outages(timing: Timing, schedule: &Schedule) -> Timing {
    let outage = schedule.windows.iter().filter(|window| window.fault.is_outage()).map(|window| window.hold).max();
    Timing { outage, ..timing }
}

/// The fault a window amounts to once healed, for what the claims predict: the nemesis starts
/// a killed instance again (or the quorum would be gone after a few windows), and a server
/// without persistence comes back empty, so a kill ends as a restart without its state.
fn as_healed(fault: Fault) -> Fault {
    match fault {
        Fault::OneInstanceKilled => Fault::OneInstanceRestarted,
        fault => fault,
    }
}

/// The verdict on a run's history: every checker with the claims, and the probe; with a
/// note for each further property found broken, which the verdict (one counterexample) does
/// not show.
fn judge(
    history: &History,
    fault: Fault,
    capabilities: &Capabilities,
    timing: &Timing,
    budget: Duration,
    probe: Probe,
    beside: Vec<(Property, Verdict)>,
) -> (NemesisVerdict, Vec<String>) {
    let timing = checked_with(*timing);
    let mut violated = None;
    let mut predicted = None;
    let mut unknown = Vec::new();
    let mut seen = BTreeSet::new();
    let mut also = Vec::new();
    let mut verdicts = check_recorded(history, &timing, capabilities, budget);
    verdicts.extend(beside);
    if let Probe::Stuck { key, waited } = &probe {
        let operations: Vec<_> = history.operations.iter().filter(|op| &op.key == key).cloned().collect();
        let summary = format!(
            "the liveness probe waited {waited:?} for {key} after every lease had ended and was not granted it"
        );
        let counterexample = Counterexample::new(Property::Expiry, summary, operations);
        verdicts.push((Property::Expiry, Verdict::Invalid { counterexample: Box::new(counterexample) }));
    }
    if let Probe::Failed(reason) = probe {
        unknown.push(reason);
    }
    for (property, verdict) in verdicts {
        match verdict {
            Verdict::Valid => {}
            Verdict::Unknown { reason } => unknown.push(format!("{property:?}: {reason}")),
            Verdict::Invalid { counterexample } => {
                if !seen.insert(counterexample.property) {
                    continue;
                }
                let claim = as_healed(fault)
                    .predicted_by(counterexample.property, *capabilities)
                    .map(str::to_owned)
                    .or_else(|| counterexample.predicted.clone());
                let found = match &claim {
                    Some(predicted_by) => format!("{:?} broken, predicted by {predicted_by}", counterexample.property),
                    None => format!("{:?} broken: {}", counterexample.property, counterexample.summary),
                };
                also.push((counterexample.property, found));
                match claim {
                    Some(predicted_by) => {
                        predicted.get_or_insert(NemesisVerdict::Predicted { counterexample, predicted_by });
                    }
                    None => {
                        violated.get_or_insert(NemesisVerdict::Violated { counterexample });
                    }
                }
            }
        }
    }
    // Invalid > Unknown > predicted > ok: an unexplained violation is never hidden behind
    // an undecided checker or a predicted one.
    let verdict = match (violated, predicted) {
        (Some(violated), _) => violated,
        _ if !unknown.is_empty() => NemesisVerdict::Unknown { reason: unknown.join("; ") },
        (None, predicted) => predicted.unwrap_or(NemesisVerdict::Ok),
    };
    // The verdict's own counterexample is not repeated among the notes.
    let shown = match &verdict {
        NemesisVerdict::Violated { counterexample } | NemesisVerdict::Predicted { counterexample, .. } => {
            Some(counterexample.property)
        }
        _ => None,
    };
    let also = also.into_iter().filter(|(property, _)| Some(*property) != shown);
    (verdict, also.map(|(_, found)| format!("also: {found}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SharedLocker;

    /// A target that can be put through a pause and does nothing: the workload runs as
    /// without faults, so the verdict is the locker's alone. `fail` makes injection fail.
    struct Inert {
        fail: bool,
    }

    #[async_trait]
    impl FaultTarget for Inert {
        fn name(&self) -> String {
            "inert".into()
        }
        fn faults(&self) -> Vec<Fault> {
            vec![Fault::ServerPausedPastTtl]
        }
        async fn inject(&self, _fault: Fault, _instance: usize) -> Result<(), FaultError> {
            match self.fail {
                true => Err(FaultError::Service(lockcheck_support::ServiceError::Unsupported {
                    operation: "pause",
                    runtime: Runtime::Process,
                })),
                false => Ok(()),
            }
        }
        async fn heal(&self, _fault: Fault, _instance: usize) -> Result<(), FaultError> {
            Ok(())
        }
    }

    fn quick(seed: u64) -> NemesisConfig {
        NemesisConfig::new(seed, Duration::from_millis(800)).timing(Timing::in_process())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_correct_locker_is_ok_and_the_double_grant_mutant_is_violated() {
        let outcome =
            run_nemesis(&SharedLocker::memory(), &Inert { fail: false }, Fault::ServerPausedPastTtl, &quick(3)).await;
        assert!(matches!(outcome.verdict, NemesisVerdict::Ok), "{outcome}");
        assert!(outcome.operations > 20, "{outcome}");
        let mutant = crate::mutants::builtin().into_iter().find(|mutant| mutant.name == "double-grant").unwrap();
        let outcome =
            run_nemesis(mutant.backend.as_ref(), &Inert { fail: false }, Fault::ServerPausedPastTtl, &quick(3)).await;
        assert_eq!(outcome.status(), Status::Violated, "{outcome}");
        assert_eq!(outcome.to_record().status, Status::Violated);
        assert_eq!(outcome.to_record().fault, "nemesis: server paused past the TTL");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fault_that_cannot_be_injected_is_unknown_and_one_not_offered_is_not_checked() {
        let memory = SharedLocker::memory();
        let outcome = run_nemesis(&memory, &Inert { fail: true }, Fault::ServerPausedPastTtl, &quick(4)).await;
        assert_eq!(outcome.status(), Status::Unknown, "{outcome}");
        let outcome = run_nemesis(&memory, &Inert { fail: false }, Fault::NetworkPartition, &quick(4)).await;
        assert_eq!(outcome.status(), Status::NotChecked, "{outcome}");
    }

    #[test]
    fn a_violation_is_predicted_only_under_a_fault_and_claim_that_predict_it() {
        use crate::history::{Call, Operation, Outcome};
        let grant = |client, lease, at| Operation {
            client,
            key: "k".into(),
            call: Call::TryAcquire { lease: lease_id(lease), ttl: 1_000_000, limit: 1 },
            invoked: at,
            returned: Some(at + 10),
            outcome: Outcome::Granted { fence: u64::from(lease), acquired_at: at, ttl: None },
        };
        fn lease_id(n: u32) -> lockcheck_model::spec::LeaseId {
            lockcheck_model::spec::LeaseId(n)
        }
        let history = History { operations: vec![grant(0, 1, 0), grant(1, 2, 1_000)] };
        let mut claims = Capabilities::all_in_process();
        let timing = Timing::in_process();
        let budget = Duration::from_secs(5);
        claims.survives_server_restart = false;
        let restart = Fault::ServerRestartedWithoutPersistence;
        let (verdict, _) = judge(&history, restart, &claims, &timing, budget, Probe::Granted, Vec::new());
        assert_eq!(verdict.status(), Status::Predicted, "{verdict}");
        let (verdict, _) =
            judge(&history, Fault::ServerPausedPastTtl, &claims, &timing, budget, Probe::Granted, Vec::new());
        assert_eq!(verdict.status(), Status::Violated, "{verdict}");
        // An outage widens the late side only: two live holders are still two live holders.
        let through_outage = Timing { outage: Some(Duration::from_secs(30)), ..timing };
        let (verdict, _) =
            judge(&history, Fault::ServerPausedPastTtl, &claims, &through_outage, budget, Probe::Granted, Vec::new());
        let NemesisVerdict::Violated { counterexample } = &verdict else { panic!("{verdict}") };
        assert_eq!(counterexample.property, Property::MutualExclusion);
        claims.survives_server_restart = true;
        let (verdict, _) = judge(&history, restart, &claims, &timing, budget, Probe::Granted, Vec::new());
        assert_eq!(verdict.status(), Status::Violated, "{verdict}");
        claims.survives_server_restart = false;
        let (verdict, _) =
            judge(&history, Fault::OneInstanceKilled, &claims, &timing, budget, Probe::Granted, Vec::new());
        assert_eq!(verdict.status(), Status::Predicted, "a killed instance comes back empty: {verdict}");
        claims.survives_server_restart = true;
        let stuck = Probe::Stuck { key: "k".into(), waited: Duration::from_secs(1) };
        let alone = History { operations: vec![grant(0, 1, 0)] };
        let (verdict, _) = judge(&alone, Fault::ServerPausedPastTtl, &claims, &timing, budget, stuck, Vec::new());
        let NemesisVerdict::Violated { counterexample } = verdict else { panic!("a stuck key is a violation") };
        assert_eq!(counterexample.property, Property::Expiry);
    }
}
