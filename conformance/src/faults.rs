//! Fault injection: what becomes of a lock when its server or its client misbehaves.
//!
//! A fault run injects one [`Fault`] through a [`Service`](lockcheck_support::Service) (pause,
//! kill, restart, network disconnect) or through the client itself (a holder that stalls past
//! its lease), observes the lock from several clients, and judges the result as a
//! [`FaultOutcome`]:
//!
//! - **safe**: no property was broken;
//! - **violation**: a property was broken that the backend claims;
//! - **predicted violation**: a property was broken, but the backend's declared
//!   [`Capabilities`] say it would be — a Redis server restarted without persistence forgets
//!   its locks, and a locker that claims `survives_server_restart: false` has said so. The
//!   report shows it as predicted rather than hiding it.
//!
//! Backends add their fault runs in `faults/<backend>.rs` behind their feature.

#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;

use std::fmt;

use lockcheck_impls::Capabilities;
use lockcheck_model::spec::{Property, Status};
use lockcheck_report::documents::{FaultRecord, FaultsDocument};

/// The faults lockcheck injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// The server is frozen for longer than the lease, then resumes.
    ServerPausedPastTtl,
    /// The server is killed and started again, empty, while a lock is held.
    ServerRestartedWithoutPersistence,
    /// The same, with append-only persistence fsynced on every write.
    ServerRestartedWithPersistence,
    /// One server of a multi-server lock is killed while a lock is held.
    OneInstanceKilled,
    /// One server of a multi-server lock is killed and started again, empty.
    OneInstanceRestarted,
    /// The holder stalls (a GC pause) past its lease and then writes to a resource that
    /// checks fencing tokens.
    ClientPausedPastLease,
    /// The server is cut off from its clients (Docker network disconnect), then reconnected.
    NetworkPartition,
    /// The holder's process dies while holding (its connection closes, nothing is released).
    ClientCrashedWhileHolding,
    /// The leader of a replicated lock (a JetStream stream's Raft leader) is killed.
    LeaderKilled,
    /// One node of a cluster, the leader, is cut off from the others and from its clients.
    NodePartitioned,
    /// The server's wall clock (`CLOCK_REALTIME`) steps forward by a few leases, as an NTP
    /// step or a VM resumed with a stale clock does; its monotonic clock does not move. A step
    /// is not an outage: healing leaves the clock where it is (see
    /// [`ClockTarget`](crate::nemesis::ClockTarget)).
    ServerClockJumpedForward,
    /// The server's wall clock runs fast (×2.5 in `ClockTarget`) for a while; its monotonic clock does
    /// not. Healing stops the skew and leaves the clock where it got to.
    ServerClockSkewed,
    /// Every client session of the server is ended by the server (Postgres
    /// `pg_terminate_backend`, a failover, a restarted pooler) while the server stays up: a
    /// live holder's session-bound lease ends under it.
    SessionsCut,
}

impl Fault {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::ServerPausedPastTtl => "server paused past the TTL",
            Fault::ServerRestartedWithoutPersistence => "server restarted without persistence",
            Fault::ServerRestartedWithPersistence => "server restarted with persistence (AOF, JetStream file storage)",
            Fault::OneInstanceKilled => "one instance killed",
            Fault::OneInstanceRestarted => "one instance restarted empty",
            Fault::ClientPausedPastLease => "client paused past its lease, fenced resource",
            Fault::NetworkPartition => "network partition between client and server",
            Fault::ClientCrashedWhileHolding => "client crashed while holding",
            Fault::LeaderKilled => "leader killed",
            Fault::NodePartitioned => "leader partitioned away from the cluster",
            Fault::ServerClockJumpedForward => "server wall clock jumped forward",
            Fault::ServerClockSkewed => "server wall clock running fast",
            Fault::SessionsCut => "client sessions cut by the server",
        }
    }

    /// Whether the fault takes the server (or an instance, or the leader) out of service for
    /// a while — frozen, cut off, or down — so that it cannot act on time: expire a lease,
    /// clean up a cancelled acquire's grant.
    pub fn is_outage(self) -> bool {
        match self {
            Fault::ServerPausedPastTtl
            | Fault::ServerRestartedWithoutPersistence
            | Fault::ServerRestartedWithPersistence
            | Fault::OneInstanceKilled
            | Fault::OneInstanceRestarted
            | Fault::NetworkPartition
            | Fault::LeaderKilled
            | Fault::NodePartitioned => true,
            // A clock fault leaves the server serving: nothing it owes falls due late; nor
            // does a cut session.
            Fault::ClientPausedPastLease
            | Fault::ClientCrashedWhileHolding
            | Fault::ServerClockJumpedForward
            | Fault::ServerClockSkewed
            | Fault::SessionsCut => false,
        }
    }

    /// The capability whose absence predicts a violation of `property` under this fault,
    /// if any.
    ///
    /// A restart that loses the server's state — the whole server, or one instance of a
    /// multi-instance lock coming back empty — forgets leases: another client may be granted
    /// a held key, and a holder's release or refresh finds its lease gone. A server whose
    /// leases are timed by its wall clock ends them early when that clock jumps or runs fast,
    /// with the same consequences.
    ///
    /// A holder stopped past its lease writes when it wakes, as if it still held the key:
    /// without fencing tokens the resource cannot tell its write is stale. A holder killed
    /// while it holds leaves the key to the backend: without server-side expiry or leases bound
    /// to its session, nothing ever frees it.
    pub fn predicted_by(self, property: Property, capabilities: Capabilities) -> Option<&'static str> {
        let restart = matches!(self, Fault::ServerRestartedWithoutPersistence | Fault::OneInstanceRestarted);
        let clock = matches!(self, Fault::ServerClockJumpedForward | Fault::ServerClockSkewed);
        // A session-bound lease ends with its session: a live holder whose session is cut
        // loses its lease while it still believes it holds it.
        let cut = self == Fault::SessionsCut && capabilities.session_bound;
        match property {
            Property::MutualExclusion | Property::Expiry if cut => Some("session_bound: true"),
            Property::MutualExclusion | Property::Expiry | Property::Ownership
                if clock && !capabilities.expiry_by_monotonic_clock =>
            {
                Some("expiry_by_monotonic_clock: false")
            }
            Property::MutualExclusion | Property::Expiry | Property::Ownership
                if restart && !capabilities.survives_server_restart =>
            {
                Some("survives_server_restart: false")
            }
            Property::Fencing | Property::ResourceSafety if restart && !capabilities.fencing_survives_restart => {
                Some("fencing_survives_restart: false")
            }
            Property::ResourceSafety if self == Fault::ClientPausedPastLease && !capabilities.fencing => {
                Some("fencing: false")
            }
            Property::Expiry | Property::CrashSafety | Property::NoLostWakeup
                if self == Fault::ClientCrashedWhileHolding
                    && !capabilities.server_side_expiry
                    && !capabilities.session_bound =>
            {
                Some("server_side_expiry: false")
            }
            _ => None,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The verdict of one fault run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultOutcome {
    /// Nothing the backend claims was broken.
    Safe,
    /// A claimed property was broken.
    Violation {
        /// The broken property.
        property: Property,
        /// What happened, with instants.
        evidence: String,
    },
    /// A property was broken that the backend's declared capabilities say it cannot keep.
    PredictedViolation {
        /// The broken property.
        property: Property,
        /// What happened, with instants.
        evidence: String,
        /// The declaration that predicts it, e.g. `survives_server_restart: false`.
        predicted_by: &'static str,
    },
}

impl FaultOutcome {
    /// Judges an observation: `broken` is the property the run saw broken (with evidence),
    /// or `None`.
    pub fn judge(fault: Fault, capabilities: Capabilities, broken: Option<(Property, String)>) -> FaultOutcome {
        match broken {
            None => FaultOutcome::Safe,
            Some((property, evidence)) => match fault.predicted_by(property, capabilities) {
                Some(predicted_by) => FaultOutcome::PredictedViolation { property, evidence, predicted_by },
                None => FaultOutcome::Violation { property, evidence },
            },
        }
    }

    /// The outcome as a status: safe passes, a violation is violated, and a violation the
    /// backend's declared capabilities predict is predicted.
    pub fn status(&self) -> Status {
        match self {
            FaultOutcome::Safe => Status::Passed,
            FaultOutcome::Violation { .. } => Status::Violated,
            FaultOutcome::PredictedViolation { .. } => Status::Predicted,
        }
    }

    /// Whether the run broke a claimed property.
    pub fn is_violation(&self) -> bool {
        matches!(self, FaultOutcome::Violation { .. })
    }
}

impl fmt::Display for FaultOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultOutcome::Safe => f.write_str("safe"),
            FaultOutcome::Violation { property, evidence } => write!(f, "VIOLATION of {property:?}: {evidence}"),
            FaultOutcome::PredictedViolation { property, evidence, predicted_by } => {
                write!(f, "predicted violation of {property:?} ({predicted_by}): {evidence}")
            }
        }
    }
}

/// One backend × fault result.
#[derive(Clone, Debug)]
pub struct FaultReport {
    /// The backend (its URL).
    pub backend: String,
    /// The fault injected.
    pub fault: Fault,
    /// The verdict.
    pub outcome: FaultOutcome,
    /// What the run observed on the way (errors during the fault, timings).
    pub notes: Vec<String>,
}

/// Where [`FaultReport::record`] collects fault results for `lockcheck report`'s fault matrix.
pub const FAULTS_OUT: &str = "LOCKCHECK_FAULTS_OUT";

impl FaultReport {
    /// The backend as a row of the fault matrix: its URL scheme, and how many servers
    /// (`nats (3 servers)`), without the run's ports.
    pub fn backend_kind(&self) -> String {
        backend_kind(&self.backend)
    }

    /// The result as a record of the `faults` document.
    pub fn to_record(&self) -> FaultRecord {
        let (property, evidence, predicted_by) = match &self.outcome {
            FaultOutcome::Safe => (None, None, None),
            FaultOutcome::Violation { property, evidence } => (Some(*property), Some(evidence.clone()), None),
            FaultOutcome::PredictedViolation { property, evidence, predicted_by } => {
                (Some(*property), Some(evidence.clone()), Some((*predicted_by).to_owned()))
            }
        };
        FaultRecord {
            backend: self.backend_kind(),
            fault: self.fault.name().to_owned(),
            status: self.outcome.status(),
            property,
            evidence,
            predicted_by,
            notes: self.notes.clone(),
            counterexample: None,
            runs: Vec::new(),
        }
    }

    /// Adds this result to the `faults` document in the file `$LOCKCHECK_FAULTS_OUT`, if set
    /// (the test command sets it; `lockcheck report --faults FILE` renders it). Replaces an
    /// earlier result for the same backend kind and fault. Best effort: a write error is
    /// printed, since the test's own assertions are what decide it.
    pub fn record(&self) {
        record_in_env(self.to_record());
    }
}

/// Adds `record` to the `faults` document in `$LOCKCHECK_FAULTS_OUT`, if set; one writer at a
/// time within a process. Best effort: a write error is printed.
pub(crate) fn record_in_env(record: FaultRecord) {
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let Some(path) = std::env::var_os(FAULTS_OUT) else { return };
    let _writing = WRITING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Err(error) = FaultsDocument::record_in(std::path::Path::new(&path), record) {
        eprintln!("lockcheck: could not record the fault result: {error}");
    }
}

impl fmt::Display for FaultReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} × {}: {}", self.backend, self.fault, self.outcome)?;
        for note in &self.notes {
            writeln!(f, "    note: {note}")?;
        }
        Ok(())
    }
}

/// Why a fault run could not produce a verdict.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FaultError {
    /// The fault could not be injected (or is impossible on this runtime).
    #[error(transparent)]
    Service(#[from] lockcheck_support::ServiceError),
    /// A lock operation failed where the run needed an answer.
    #[error("{step}: {source}")]
    Lock {
        /// What the run was doing.
        step: &'static str,
        /// The error.
        #[source]
        source: lockcheck_impls::LockError,
    },
}

impl FaultError {
    /// Wraps a lock error with the step it interrupted.
    pub fn lock(step: &'static str) -> impl FnOnce(lockcheck_impls::LockError) -> FaultError {
        move |source| FaultError::Lock { step, source }
    }
}

/// A backend as a row of the fault matrix: its URL's scheme, and how many servers where more
/// than one (`redis+quorum (3 servers)`).
pub fn backend_kind(backend: &str) -> String {
    let (scheme, rest) = backend.split_once("://").unwrap_or(("?", backend));
    let hosts = rest.split(['/', '?']).next().unwrap_or_default();
    match hosts.split(',').count() {
        1 => scheme.to_owned(),
        n => format!("{scheme} ({n} servers)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_violations_are_predicted_only_by_an_unclaimed_capability() {
        let mut claims = Capabilities::all_in_process();
        let broken = || Some((Property::MutualExclusion, "double grant".to_owned()));
        claims.survives_server_restart = false;
        let outcome = FaultOutcome::judge(Fault::ServerRestartedWithoutPersistence, claims, broken());
        assert!(matches!(outcome, FaultOutcome::PredictedViolation { .. }), "{outcome}");
        claims.survives_server_restart = true;
        let outcome = FaultOutcome::judge(Fault::ServerRestartedWithoutPersistence, claims, broken());
        assert!(outcome.is_violation(), "{outcome}");
        let outcome = FaultOutcome::judge(Fault::NetworkPartition, claims, broken());
        assert!(outcome.is_violation(), "{outcome}");
        assert_eq!(FaultOutcome::judge(Fault::NetworkPartition, claims, None), FaultOutcome::Safe);
    }

    #[test]
    fn clock_violations_are_predicted_only_without_a_monotonic_clock() {
        let claims = Capabilities::all_in_process().with_expiry_by_monotonic_clock(false);
        for fault in [Fault::ServerClockJumpedForward, Fault::ServerClockSkewed] {
            for property in [Property::MutualExclusion, Property::Expiry, Property::Ownership] {
                assert_eq!(fault.predicted_by(property, claims), Some("expiry_by_monotonic_clock: false"));
            }
            assert_eq!(fault.predicted_by(Property::Fencing, claims), None);
            assert_eq!(fault.predicted_by(Property::BoundedWait, claims), None);
            let claimed = claims.with_expiry_by_monotonic_clock(true);
            assert_eq!(fault.predicted_by(Property::MutualExclusion, claimed), None);
        }
        assert_eq!(Fault::ServerPausedPastTtl.predicted_by(Property::MutualExclusion, claims), None);
    }

    #[test]
    fn client_faults_are_predicted_by_the_claims_that_would_have_prevented_them() {
        let stale = || Some((Property::ResourceSafety, "a stale write got through".to_owned()));
        let mut claims = Capabilities::none().with_server_side_expiry(true);
        let outcome = FaultOutcome::judge(Fault::ClientPausedPastLease, claims, stale());
        assert_eq!(outcome.status(), Status::Predicted, "{outcome}");
        claims.fencing = true;
        assert!(FaultOutcome::judge(Fault::ClientPausedPastLease, claims, stale()).is_violation());
        let stuck = || Some((Property::Expiry, "never freed".to_owned()));
        assert!(FaultOutcome::judge(Fault::ClientCrashedWhileHolding, claims, stuck()).is_violation());
        let outcome = FaultOutcome::judge(Fault::ClientCrashedWhileHolding, Capabilities::none(), stuck());
        assert_eq!(outcome.status(), Status::Predicted, "{outcome}");
    }

    #[test]
    fn a_fault_result_is_recorded_as_a_typed_document() {
        let mut claims = Capabilities::all_in_process();
        claims.survives_server_restart = false;
        let broken = Some((Property::MutualExclusion, "double grant".to_owned()));
        let report = FaultReport {
            backend: "redis://127.0.0.1:6379,127.0.0.1:6380/0".to_owned(),
            fault: Fault::ServerRestartedWithoutPersistence,
            outcome: FaultOutcome::judge(Fault::ServerRestartedWithoutPersistence, claims, broken),
            notes: vec!["restarted".to_owned()],
        };
        let record = report.to_record();
        assert_eq!(record.backend, "redis (2 servers)");
        assert_eq!(record.status, Status::Predicted);
        assert_eq!(record.predicted_by.as_deref(), Some("survives_server_restart: false"));
        let dir = std::env::temp_dir().join(format!("lockcheck-faults-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("faults.json");
        FaultsDocument::record_in(&path, record.clone()).unwrap();
        FaultsDocument::record_in(&path, record.clone()).unwrap();
        use lockcheck_report::documents::Document;
        assert_eq!(FaultsDocument::read(&path).unwrap().results, vec![record]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
