//! The conformance suite: checks written once, run against any [`Backend`].
//!
//! Each check is a scenario (a fixed story such as "the holder releases while someone waits"),
//! the sequential model-based test (proptest-state-machine with the spec as reference), or a
//! seeded concurrent random workload. Every check records its operations; after the
//! check's own assertions pass, its history also goes through the history checkers
//! (linearizability against the spec, real-time exclusion, fencing order, bounded waits, FIFO
//! where claimed), so a scenario can fail for a reason it did not set out to test.
//!
//! Checks that need a capability (fencing, FIFO, server-side expiry, semaphores) run only
//! where the backend claims it; elsewhere they are reported as *not claimed* — never silently
//! dropped.
//!
//! Keys are prefixed with a random run id, so runs against a shared server never collide.

mod bad_input;
mod in_test;
mod scenarios;
mod sequential;
pub(crate) mod workload;

#[doc(hidden)]
pub use in_test::run_check_in_test;
pub use workload::checked_with as workload_timing;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockcheck_history::Timing;
use lockcheck_history::checkers::linearizability::Reference;
use lockcheck_history::checkers::{self, Counterexample, Verdict};
use lockcheck_impls::{Capabilities, Lease, LockError};
use lockcheck_model::spec::Property;
// The result types are the `check` document's (shared with the report), and the status is
// the spec's: every producer and reader speaks one vocabulary.
pub use lockcheck_model::spec::Status;
pub use lockcheck_report::documents::{CheckResult, SuiteReport};

use crate::backend::Backend;
use crate::history::{Operation, Recorder, RecordingLocker};

/// How a suite run is set up.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SuiteConfig {
    /// The seed of every randomized check. Printed in every report; rerun with it to replay
    /// the same operations (the interleaving of real concurrency cannot be replayed).
    pub seed: u64,
    /// How many random cases the sequential model test and the concurrent workload run.
    pub cases: u32,
    /// Time scales; `None` uses the backend's own ([`Backend::timing`]).
    pub timing: Option<Timing>,
    /// The time budget of each linearizability check. Running out gives Unknown, never a pass.
    pub checker_budget: Duration,
    /// How many times the lost wake-up race is run (the Go original ran 200).
    pub wakeup_iterations: u32,
    /// Clients of the concurrent workload.
    pub clients: u32,
    /// Operations per client per workload case.
    pub ops_per_client: u32,
    /// Run only the checks with these names (all if empty).
    pub only: Vec<String>,
    /// Measure the backend's round-trip jitter before checking and widen the early tolerance
    /// to cover it ([`Timing::calibrated`]). On by default.
    pub calibrate: bool,
}

impl Default for SuiteConfig {
    fn default() -> Self {
        SuiteConfig {
            seed: seed_from_env().unwrap_or_else(rand::random),
            cases: 4,
            timing: None,
            checker_budget: Duration::from_secs(10),
            wakeup_iterations: 200,
            clients: 4,
            ops_per_client: 25,
            only: Vec::new(),
            calibrate: true,
        }
    }
}

/// `LOCKCHECK_SEED`, if set: replays a printed seed in every suite run, tests included.
pub fn seed_from_env() -> Option<u64> {
    std::env::var("LOCKCHECK_SEED").ok()?.trim().parse().ok()
}

impl SuiteConfig {
    /// The default configuration with this seed.
    pub fn with_seed(seed: u64) -> Self {
        SuiteConfig { seed, ..SuiteConfig::default() }
    }

    /// Sets the number of random cases.
    pub fn cases(mut self, cases: u32) -> Self {
        self.cases = cases;
        self
    }

    /// Overrides the backend's time scales.
    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = Some(timing);
        self
    }

    /// Runs only the named checks.
    pub fn only(mut self, checks: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.only = checks.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the time budget of each linearizability check.
    pub fn checker_budget(mut self, budget: Duration) -> Self {
        self.checker_budget = budget;
        self
    }

    /// Sets the concurrent workload's size: clients, and operations per client per case.
    pub fn workload(mut self, clients: u32, ops_per_client: u32) -> Self {
        self.clients = clients;
        self.ops_per_client = ops_per_client;
        self
    }

    /// Sets how often the lost wake-up race runs.
    pub fn wakeup_iterations(mut self, iterations: u32) -> Self {
        self.wakeup_iterations = iterations;
        self
    }
}

/// A capability a check needs the backend to claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Claim {
    /// Fencing tokens strictly increase per key.
    Fencing,
    /// Waiters are granted in arrival order.
    Fifo,
    /// Leases expire on the backend itself.
    ServerSideExpiry,
    /// Permit limits above 1.
    Semaphores,
    /// Waiters are woken by the backend, not by polling.
    PushWakeups,
    /// Leases end with the client's session.
    SessionBound,
    /// Leases end at their TTL (every backend but those that claim `no_ttl`).
    Ttl,
}

impl Claim {
    /// Whether `capabilities` claims it.
    pub fn claimed_by(self, capabilities: &Capabilities) -> bool {
        match self {
            Claim::Fencing => capabilities.fencing,
            Claim::Fifo => capabilities.fifo,
            Claim::ServerSideExpiry => capabilities.server_side_expiry,
            Claim::Semaphores => capabilities.semaphores,
            Claim::PushWakeups => capabilities.push_wakeups,
            Claim::SessionBound => capabilities.session_bound,
            Claim::Ttl => !capabilities.no_ttl,
        }
    }

    /// The claim a property depends on, if any.
    pub fn for_property(property: Property) -> Option<Claim> {
        match property {
            Property::Fencing | Property::ResourceSafety => Some(Claim::Fencing),
            Property::Fifo => Some(Claim::Fifo),
            Property::CrashSafety => Some(Claim::ServerSideExpiry),
            _ => None,
        }
    }
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Claim::Fencing => "fencing",
            Claim::Fifo => "FIFO",
            Claim::ServerSideExpiry => "server-side expiry",
            Claim::Semaphores => "semaphores",
            Claim::PushWakeups => "push wake-ups",
            Claim::SessionBound => "session-bound leases",
            Claim::Ttl => "leases that end at their TTL",
        })
    }
}

/// One check of the suite.
#[derive(Clone, Copy, Debug)]
pub struct CheckInfo {
    /// Its name (also the test name the [`conformance_suite!`](crate::conformance_suite) macro
    /// generates).
    pub name: &'static str,
    /// The properties it checks; the first is the one it is about.
    pub covers: &'static [Property],
    /// The capability it needs, if any.
    pub requires: Option<Claim>,
    /// What it does, in a sentence.
    pub about: &'static str,
}

use Property::*;

/// Every check, in the order a suite run performs them.
pub const CHECKS: &[CheckInfo] = &[
    CheckInfo {
        name: "double_try_acquire_fails",
        covers: &[MutualExclusion],
        requires: None,
        about: "try-acquire, a second try-acquire fails, release, try-acquire succeeds again (Go: TestTryLock_basic)",
    },
    CheckInfo {
        name: "release_by_non_holder_is_noop",
        covers: &[Ownership],
        requires: None,
        about: "a release or refresh with a forged or stale token changes nothing (Go: TestRelease_ownershipCheck)",
    },
    CheckInfo {
        name: "acquire_waits_then_wins",
        covers: &[NoLostWakeup],
        requires: None,
        about: "acquire blocks while the lock is held and wins promptly after release (Go: TestAcquire_waits)",
    },
    CheckInfo {
        name: "ttl_expiry_frees_lock",
        covers: &[Expiry],
        requires: Some(Claim::Ttl),
        about: "an expired lease frees the key for try-acquire and for a waiter (Go: TestTTL_expiry)",
    },
    CheckInfo {
        name: "lease_lasts_its_ttl",
        covers: &[MutualExclusion, Expiry],
        requires: None,
        about: "a lease is not handed to anyone else before its TTL runs out (probed every few ms across its end); without TTL, not before it is released",
    },
    CheckInfo {
        name: "acquire_honours_wait_bound",
        covers: &[BoundedWait],
        requires: None,
        about: "acquire on a held key times out at its wait bound, not later (Go: TestInMemoryAcquireTimeout)",
    },
    CheckInfo {
        name: "wait_bound_under_contention",
        covers: &[BoundedWait],
        requires: None,
        about: "a waiter that is woken and loses the key to a barging holder, again and again, still returns within its original bound",
    },
    CheckInfo {
        name: "no_lost_wakeup",
        covers: &[NoLostWakeup],
        requires: None,
        about: "a release racing a waiter's subscription never strands it (Go: TestInMemoryAcquireNoLostWakeup)",
    },
    CheckInfo {
        name: "next_holder_survives_old_ttl",
        covers: &[MutualExclusion],
        requires: None,
        about: "a lease released early leaves no timer behind that frees the next holder at the old TTL",
    },
    CheckInfo {
        name: "refresh_extends",
        covers: &[Expiry],
        requires: Some(Claim::Ttl),
        about: "a refreshed lease outlives its original TTL",
    },
    CheckInfo {
        name: "refresh_after_loss_reports_loss",
        covers: &[Ownership],
        requires: Some(Claim::Ttl),
        about: "refresh and release of an expired lease report the loss and do not touch the next holder",
    },
    CheckInfo {
        name: "remaining_ttl_counts_down",
        covers: &[Expiry],
        requires: Some(Claim::Ttl),
        about: "remaining TTL is at most the TTL and decreases with time",
    },
    CheckInfo {
        name: "racing_try_acquires",
        covers: &[MutualExclusion],
        requires: None,
        about: "clients racing for a free key: exactly one wins",
    },
    CheckInfo {
        name: "fencing_increases",
        covers: &[Fencing],
        requires: Some(Claim::Fencing),
        about: "successive grants of a key carry strictly increasing fencing tokens",
    },
    CheckInfo {
        name: "cancelled_acquire_leaves_nothing",
        covers: &[CancelSafety],
        requires: None,
        about: "an acquire dropped while a grant races to it leaves the key free",
    },
    CheckInfo {
        name: "fifo_hand_off",
        covers: &[Fifo],
        requires: Some(Claim::Fifo),
        about: "queued waiters are granted in arrival order, and a newcomer does not barge past them",
    },
    CheckInfo {
        name: "hand_off_is_pushed",
        covers: &[NoLostWakeup],
        requires: Some(Claim::PushWakeups),
        about: "a waiter is handed a released lock within a few round trips, not a polling period",
    },
    CheckInfo {
        name: "semaphore_admits_limit",
        covers: &[MutualExclusion],
        requires: Some(Claim::Semaphores),
        about: "a semaphore of limit 3 admits three holders, refuses a fourth, admits it after a release",
    },
    CheckInfo {
        name: "semaphore_waiters",
        covers: &[MutualExclusion, NoLostWakeup],
        requires: Some(Claim::Semaphores),
        about: "acquires queued on a full semaphore: each release admits exactly one of them",
    },
    CheckInfo {
        name: "crashed_holder_frees_within_ttl",
        covers: &[CrashSafety],
        requires: Some(Claim::ServerSideExpiry),
        about: "a client that vanishes while holding frees the key within its TTL",
    },
    CheckInfo {
        name: "session_cut_under_holder",
        covers: &[MutualExclusion, ResourceSafety],
        requires: Some(Claim::SessionBound),
        about: "a live holder's session is cut: the backend may free its lease while it still believes it holds it (predicted by the claim); fencing keeps its stale write out",
    },
    CheckInfo {
        name: "stale_holder_fenced_off",
        covers: &[ResourceSafety],
        requires: Some(Claim::Fencing),
        about: "a holder paused past its lease cannot write to a fenced resource after the next holder did",
    },
    CheckInfo {
        name: "bad_input_changes_nothing",
        covers: &[MutualExclusion, CancelSafety, Expiry, Ownership],
        requires: None,
        about: "requests the lock API refuses (bad keys, TTLs, limits, waits), on a held key and a free one, change nothing: the holder keeps its lease, nothing refused stays queued",
    },
    CheckInfo {
        name: "sequential_model",
        covers: &[MutualExclusion, Ownership, Fencing],
        requires: None,
        about: "random operation sequences agree with the spec (proptest-state-machine, shrunk on failure)",
    },
    CheckInfo {
        name: "random_workload",
        covers: &[MutualExclusion, Ownership, Fencing, Expiry, BoundedWait, Fifo],
        requires: None,
        about: "seeded concurrent clients with cancellations, checked for linearizability, exclusion, fencing, waits, FIFO",
    },
];

/// The check named `name`.
pub fn check_info(name: &str) -> Option<&'static CheckInfo> {
    CHECKS.iter().find(|check| check.name == name)
}

/// Why a check stopped early.
#[derive(Debug)]
pub(crate) enum Stop {
    /// A property was violated.
    Violated(Counterexample),
    /// The backend failed in a way that decides nothing.
    Error(String),
    /// The check cannot be run against this backend (it cannot be put through the fault).
    NotChecked(String),
}

impl From<LockError> for Stop {
    fn from(error: LockError) -> Self {
        match error {
            // An operation the backend does not offer (a driver that serves no
            // `remaining_ttl`) leaves the check's claim untested, not failed.
            LockError::Unsupported { operation } => {
                Stop::NotChecked(format!("the backend does not support {operation}"))
            }
            error => Stop::Error(format!("backend error: {error}")),
        }
    }
}

/// What a check runs with: the backend, the time scales, a recorder and a key namespace.
pub(crate) struct Ctx<'a> {
    backend: &'a dyn Backend,
    pub(crate) config: &'a SuiteConfig,
    pub(crate) timing: Timing,
    pub(crate) capabilities: Capabilities,
    pub(crate) recorder: Arc<Recorder>,
    check: &'static CheckInfo,
    namespace: String,
    clients: u32,
}

impl Ctx<'_> {
    /// Cuts every open client session of the backend ([`Backend::cut_sessions`]).
    pub(crate) async fn cut_sessions(&self) -> bool {
        self.backend.cut_sessions().await
    }

    /// A fresh recorded client.
    pub(crate) async fn client(&mut self) -> Result<RecordingLocker, Stop> {
        let locker = self.backend.connect().await.map_err(|error| Stop::Error(format!("connect failed: {error}")))?;
        self.clients += 1;
        Ok(self.recorder.client(self.clients - 1, locker))
    }

    /// A key unique to this run and check.
    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}-{name}", self.namespace)
    }

    /// The check's main property is violated; the history so far is the counterexample.
    pub(crate) fn violated(&self, summary: impl Into<String>) -> Stop {
        self.violated_as(self.check.covers[0], summary)
    }

    /// `property` is violated; the history so far of the key last operated on is the
    /// counterexample (scenarios fail right after the operation that showed the violation).
    pub(crate) fn violated_as(&self, property: Property, summary: impl Into<String>) -> Stop {
        let mut operations = self.recorder.history().operations;
        if let Some(key) = operations.iter().max_by_key(|op| op.invoked).map(|op| op.key.clone()) {
            operations.retain(|op| op.key == key);
        }
        Stop::Violated(self.counterexample(property, summary, operations))
    }

    /// `property` is violated, shown by the operations on `leases` alone (a scenario that
    /// knows which grants clash, among many probes that do not matter).
    pub(crate) fn violated_between(&self, property: Property, summary: impl Into<String>, leases: &[&Lease]) -> Stop {
        let ids: Vec<_> = leases.iter().filter_map(|lease| self.recorder.lease_id(lease)).collect();
        let mut operations = self.recorder.history().operations;
        operations.retain(|op| ids.contains(&op.call.lease()));
        Stop::Violated(self.counterexample(property, summary, operations))
    }

    /// A scenario's counterexample, blaming the operation the scenario just saw misbehave.
    /// Scenarios clean up before they report (release the intruder's lease, the holder's), so
    /// it is not simply the last one: where the operations are not linearizable it is the
    /// operation that cannot follow (the first anomaly, by return events); else, for a
    /// property of *when* a grant comes (P5–P9), the last acquire to return; else the last
    /// operation to return.
    fn counterexample(
        &self,
        property: Property,
        summary: impl Into<String>,
        operations: Vec<Operation>,
    ) -> Counterexample {
        let reference = Reference::for_backend(&self.timing, &self.capabilities);
        let about_waiting = matches!(property, NoLostWakeup | BoundedWait | CancelSafety | Fifo | CrashSafety);
        let last_returned = |acquires_only: bool| {
            (0..operations.len())
                .filter(|&i| !acquires_only || operations[i].call.is_acquire())
                .max_by_key(|&i| (operations[i].returned.unwrap_or(operations[i].invoked), operations[i].invoked))
        };
        let blamed = reference
            .blame(&operations, Instant::now() + Duration::from_secs(2))
            .or_else(|| if about_waiting { last_returned(true) } else { None })
            .or_else(|| last_returned(false));
        let counterexample = Counterexample::new(property, summary, operations);
        match blamed {
            Some(blamed) => counterexample.blaming(blamed),
            None => counterexample,
        }
    }

    /// The seed of this check (the suite seed mixed with the check's name, so checks do not
    /// share random streams).
    pub(crate) fn seed(&self) -> u64 {
        let mut seed = self.config.seed;
        for byte in self.check.name.bytes() {
            seed = seed.rotate_left(5) ^ u64::from(byte);
            seed = seed.wrapping_mul(0x100_0000_01b3);
        }
        seed
    }
}

pub(crate) use checkers::check_all as check_recorded;

/// The spread of `backend`'s round trips: 20 try-acquires (each released) on a scratch key,
/// the 90th percentile less the fastest. `None` if the backend could not be reached.
pub async fn measure_jitter(backend: &dyn Backend) -> Option<Duration> {
    let client = backend.connect().await.ok()?;
    let request = lockcheck_impls::LeaseRequest::lock(
        format!("lc-{:08x}-calibration", rand::random::<u32>()),
        Duration::from_secs(10),
    );
    let mut samples = Vec::with_capacity(20);
    for _ in 0..20 {
        let sent = Instant::now();
        let granted = client.try_acquire(&request).await.ok()?;
        samples.push(sent.elapsed());
        if let Some(lease) = granted {
            client.release(&lease).await.ok()?;
        }
    }
    samples.sort_unstable();
    Some(samples[17] - samples[0])
}

/// The time scales a check of `backend` runs with: the configured or the backend's own,
/// calibrated to the backend's measured jitter when the configuration asks for it.
pub async fn timing_for(backend: &dyn Backend, config: &SuiteConfig) -> Timing {
    let timing = config.timing.unwrap_or_else(|| backend.timing());
    match config.calibrate {
        true => measure_jitter(backend).await.map_or(timing, |jitter| timing.calibrated(jitter)),
        false => timing,
    }
}

/// Runs one check against `backend`.
pub async fn run_check(backend: &dyn Backend, check: &'static CheckInfo, config: &SuiteConfig) -> CheckResult {
    let started = Instant::now();
    let timing = timing_for(backend, config).await;
    let mut result = CheckResult {
        check: check.name.to_owned(),
        properties: BTreeMap::new(),
        counterexamples: Vec::new(),
        notes: Vec::new(),
        elapsed: Duration::ZERO,
        operations: 0,
    };
    let unknown = |mut result: CheckResult, note: String| {
        for property in check.covers {
            result.properties.insert(*property, Status::Unknown);
        }
        result.notes.push(note);
        result.elapsed = started.elapsed();
        result
    };
    let capabilities = match backend.connect().await {
        Ok(client) => client.capabilities(),
        Err(error) => return unknown(result, format!("could not connect to {}: {error}", backend.name())),
    };
    if let Some(claim) = check.requires
        && !claim.claimed_by(&capabilities)
    {
        for property in check.covers {
            result.properties.insert(*property, Status::NotClaimed);
        }
        result.notes.push(format!("{} does not claim {claim}", backend.name()));
        result.elapsed = started.elapsed();
        return result;
    }
    let mut ctx = Ctx {
        backend,
        config,
        timing,
        capabilities,
        recorder: Recorder::new(),
        check,
        namespace: format!("lc-{:08x}-{}", rand::random::<u32>(), check.name),
        clients: 0,
    };
    let outcome = match check.name {
        "sequential_model" => sequential::run(&mut ctx).await,
        "random_workload" => workload::run(&mut ctx).await,
        "bad_input_changes_nothing" => bad_input::run(&mut ctx).await,
        name => scenarios::run(name, &mut ctx).await,
    };
    let history = ctx.recorder.history();
    result.operations = history.operations.len();
    for property in check.covers {
        let claimed = Claim::for_property(*property).is_none_or(|claim| claim.claimed_by(&capabilities));
        result.properties.insert(*property, if claimed { Status::Passed } else { Status::NotClaimed });
    }
    match outcome {
        Err(Stop::NotChecked(why)) => {
            for property in check.covers {
                let claimed = Claim::for_property(*property).is_none_or(|claim| claim.claimed_by(&capabilities));
                result.properties.insert(*property, if claimed { Status::NotChecked } else { Status::NotClaimed });
            }
            result.notes.push(format!("claimed, not checked: {why}"));
            result.elapsed = started.elapsed();
            return result;
        }
        Ok(notes) => result.notes.extend(notes),
        Err(Stop::Violated(counterexample)) => {
            result.properties.insert(counterexample.property, status_of(&counterexample));
            result.counterexamples.push(counterexample);
        }
        Err(Stop::Error(message)) => return unknown(result, message),
    }
    if result.counterexamples.is_empty() && check.name != "random_workload" {
        // The workload checks its own histories case by case.
        for (property, verdict) in check_recorded(&history, &timing, &capabilities, config.checker_budget) {
            match verdict {
                Verdict::Valid => {}
                Verdict::Invalid { counterexample } => {
                    let status = result.properties.entry(counterexample.property).or_insert(Status::Passed);
                    *status = status.and(status_of(&counterexample));
                    result.counterexamples.push(*counterexample);
                }
                Verdict::Unknown { reason } => {
                    let status = result.properties.entry(property).or_insert(Status::Unknown);
                    *status = status.and(Status::Unknown);
                    result.notes.push(reason);
                }
            }
        }
    }
    result.elapsed = started.elapsed();
    result
}

/// What a counterexample makes of its property: violated, or predicted by the claims.
fn status_of(counterexample: &Counterexample) -> Status {
    if counterexample.predicted.is_some() { Status::Predicted } else { Status::Violated }
}

/// Runs every check of the suite (or those in `config.only`) against `backend`.
pub async fn run_suite(backend: &dyn Backend, config: &SuiteConfig) -> SuiteReport {
    run_suite_observed(backend, config, &mut |_, _| {}).await
}

/// [`run_suite`], calling `observe(check, Some(result))` after each check and
/// `observe(check, None)` before it (for progress bars).
pub async fn run_suite_observed(
    backend: &dyn Backend,
    config: &SuiteConfig,
    observe: &mut (dyn FnMut(&CheckInfo, Option<&CheckResult>) + Send),
) -> SuiteReport {
    let started = Instant::now();
    let capabilities = backend.connect().await.ok().map(|client| client.capabilities());
    // Calibrated once, so every check and the report use the same time scales.
    let timing = timing_for(backend, config).await;
    let config = SuiteConfig { timing: Some(timing), calibrate: false, ..config.clone() };
    let mut checks = Vec::new();
    for check in selected(&config) {
        observe(check, None);
        let result = run_check(backend, check, &config).await;
        observe(check, Some(&result));
        checks.push(result);
    }
    SuiteReport { backend: backend.name(), capabilities, seed: config.seed, timing, checks, elapsed: started.elapsed() }
}

/// The checks `config` selects, in suite order.
pub fn selected(config: &SuiteConfig) -> impl Iterator<Item = &'static CheckInfo> + '_ {
    CHECKS.iter().filter(|check| config.only.is_empty() || config.only.iter().any(|name| name == check.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_macro_lists_every_check_in_suite_order() {
        let source = include_str!("lib.rs");
        let start = source.find("@tests $name, $backend, $config,").expect("the macro's check list");
        let end = start + source[start..].find(");").expect("end of the list");
        let listed: Vec<&str> = source[start..end].split_whitespace().skip(4).collect();
        let names: Vec<&str> = CHECKS.iter().map(|check| check.name).collect();
        assert_eq!(listed, names);
    }
}
