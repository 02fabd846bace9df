//! Histories: every lock operation a client performed, with the instants it was invoked and
//! returned and what came back.
//!
//! An outcome is *ok* (granted, refused, released…), *failed* (the operation definitely did
//! not happen: invalid input, backend unreachable), *cancelled* (an acquire whose future was
//! dropped: it may have been granted while its request was in flight, but the cancel-safety
//! contract says its clean-up gives the grant back promptly) or *indeterminate* (a timeout
//! or a dropped connection: it may or may not have happened). Checkers treat indeterminate
//! operations as possibly taking effect at any time after their invocation, as Jepsen does.
//!
//! The conformance harness records histories from a running backend; anyone can build one
//! by hand or read one back from JSON. Histories serialize to JSON for reports and reruns.

use std::collections::BTreeMap;
use std::fmt;

use lockcheck_model::spec::{Capabilities, LeaseId, LockOp, LockRet, Micros, Window};

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "call", rename_all = "kebab-case")]
pub enum Call {
    /// `try_acquire`: no waiting. `lease` names the grant it would produce.
    TryAcquire {
        /// The grant it would produce.
        lease: LeaseId,
        /// Lease duration, µs.
        ttl: Micros,
        /// Permit limit.
        limit: u32,
    },
    /// `acquire` with a wait bound.
    Acquire {
        /// The grant it would produce.
        lease: LeaseId,
        /// Lease duration, µs.
        ttl: Micros,
        /// Permit limit.
        limit: u32,
        /// Wait bound, µs.
        wait: Micros,
    },
    /// `release`.
    Release {
        /// The lease given back.
        lease: LeaseId,
    },
    /// `refresh`.
    Refresh {
        /// The lease extended.
        lease: LeaseId,
        /// New lease duration, µs.
        ttl: Micros,
    },
    /// `remaining_ttl`.
    RemainingTtl {
        /// The lease asked about.
        lease: LeaseId,
    },
    /// Not a call but a fault the harness caused: the session of the client holding `lease`
    /// ended. `crashed`: the client is gone (a crash) and believes nothing any more; otherwise
    /// its connection was cut under it and it still believes it holds the lease. Where leases
    /// are bound to sessions ([`Capabilities::session_bound`]) the backend may free the lease
    /// from here on.
    SessionEnded {
        /// The lease whose holder's session ended.
        lease: LeaseId,
        /// Whether the holder crashed (rather than living on without its session).
        crashed: bool,
    },
}

impl Call {
    /// The lease the call produces or acts on.
    pub fn lease(&self) -> LeaseId {
        match self {
            Call::TryAcquire { lease, .. }
            | Call::Acquire { lease, .. }
            | Call::Release { lease }
            | Call::Refresh { lease, .. }
            | Call::RemainingTtl { lease }
            | Call::SessionEnded { lease, .. } => *lease,
        }
    }

    /// Its name as histories are written (`try-acquire`, `release`…).
    pub fn name(&self) -> &'static str {
        match self {
            Call::TryAcquire { .. } => "try-acquire",
            Call::Acquire { .. } => "acquire",
            Call::Release { .. } => "release",
            Call::Refresh { .. } => "refresh",
            Call::RemainingTtl { .. } => "remaining-ttl",
            Call::SessionEnded { .. } => "session-ended",
        }
    }

    /// Whether the call asks for a grant.
    pub fn is_acquire(&self) -> bool {
        matches!(self, Call::TryAcquire { .. } | Call::Acquire { .. })
    }
}

/// What came back.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// Not returned yet (or never: the client was abandoned). Indeterminate.
    Pending,
    /// Granted with this fencing token; the lease counts from `acquired_at` (µs).
    Granted {
        /// The fencing token.
        fence: u64,
        /// The lease's `acquired_at` on the recorder's clock.
        acquired_at: Micros,
        /// The granted lease's duration (µs) where the backend changed the one asked for
        /// (dflockd and NATS round up to whole seconds); `None`: as asked. Serialized as
        /// `granted_ttl`: the call's own `ttl` shares the operation's JSON object.
        #[serde(default, rename = "granted_ttl", skip_serializing_if = "Option::is_none")]
        ttl: Option<Micros>,
    },
    /// `try_acquire` found the key at its limit.
    NotGranted,
    /// `acquire` ran out of its wait bound.
    TimedOut,
    /// `acquire` ran out of its wait bound on the caller's side with its request still at the
    /// backend (the lock API's `LockError::TimedOutLocally`): like a cancellation, the backend
    /// may still grant it, and the clean-up gives such a grant back.
    TimedOutLocally,
    /// `release` answered whether the lease was still held.
    Released {
        /// Whether it was still held.
        held: bool,
    },
    /// `refresh` answered whether the lease was still held.
    Refreshed {
        /// Whether it was still held.
        held: bool,
        /// The renewed lease's duration (µs) where the backend changed the one asked for;
        /// `None`: as asked. Serialized as `granted_ttl`, like a grant's.
        #[serde(default, rename = "granted_ttl", skip_serializing_if = "Option::is_none")]
        ttl: Option<Micros>,
    },
    /// `remaining_ttl` answered (µs), `None` if the lease is no longer held.
    Remaining {
        /// Time left, µs.
        left: Option<Micros>,
    },
    /// The operation definitely did not take effect.
    Failed {
        /// The error.
        error: String,
    },
    /// An acquire was cancelled (its future dropped) at the return instant: by contract its
    /// clean-up leaves nothing held soon after.
    Cancelled,
    /// A harness event ([`Call::SessionEnded`]) took place at its instant.
    Done,
    /// The operation may or may not have taken effect.
    Indeterminate {
        /// The error, or why the outcome is unknown.
        error: String,
    },
}

impl Outcome {
    /// Its name as histories are written (`granted`, `timed-out-locally`…).
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Granted { .. } => "granted",
            Outcome::NotGranted => "not-granted",
            Outcome::TimedOut => "timed-out",
            Outcome::TimedOutLocally => "timed-out-locally",
            Outcome::Released { .. } => "released",
            Outcome::Refreshed { .. } => "refreshed",
            Outcome::Remaining { .. } => "remaining",
            Outcome::Failed { .. } => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Done => "done",
            Outcome::Indeterminate { .. } => "indeterminate",
        }
    }

    /// Whether the outcome is unknown (pending or indeterminate).
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, Outcome::Pending | Outcome::Indeterminate { .. })
    }
}

/// One recorded operation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Operation {
    /// The client that performed it (0-based).
    pub client: u32,
    /// The key.
    pub key: String,
    /// What was asked.
    #[serde(flatten)]
    pub call: Call,
    /// Invocation instant, µs since the recorder started.
    pub invoked: Micros,
    /// Return instant; `None` if it never returned.
    pub returned: Option<Micros>,
    /// What came back.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Operation {
    /// The lease duration (µs) an acquire or refresh asked for, or the one granted where the
    /// backend changed it (a whole-seconds backend rounds up). `None` for other calls.
    pub fn lease_ttl(&self) -> Option<Micros> {
        let granted = match &self.outcome {
            Outcome::Granted { ttl, .. } | Outcome::Refreshed { ttl, .. } => *ttl,
            _ => None,
        };
        let asked = match &self.call {
            Call::TryAcquire { ttl, .. } | Call::Acquire { ttl, .. } | Call::Refresh { ttl, .. } => Some(*ttl),
            Call::Release { .. } | Call::RemainingTtl { .. } | Call::SessionEnded { .. } => None,
        };
        granted.or(asked)
    }

    /// The operation as the spec sees it: `None` when it definitely did not take effect;
    /// a `None` return means the outcome is unknown. A cancelled acquire gives `None` here:
    /// the linearizability checker models it with its clean-up
    /// ([`Reference`](crate::checkers::linearizability::Reference)).
    pub fn to_spec(&self) -> Option<(LockOp, Option<LockRet>)> {
        let ret = match &self.outcome {
            Outcome::Failed { .. } => return None,
            Outcome::Cancelled | Outcome::TimedOutLocally if self.call.is_acquire() => return None,
            Outcome::Cancelled | Outcome::TimedOutLocally | Outcome::Pending | Outcome::Indeterminate { .. } => None,
            Outcome::Done => Some(LockRet::SessionEnded),
            Outcome::Granted { fence, .. } => Some(LockRet::Granted { fence: *fence }),
            Outcome::NotGranted | Outcome::TimedOut => Some(LockRet::NotGranted),
            Outcome::Released { held } => Some(LockRet::Released(*held)),
            Outcome::Refreshed { held, .. } => Some(LockRet::Refreshed(*held)),
            Outcome::Remaining { left } => Some(LockRet::Remaining(*left)),
        };
        let to = match (&ret, self.returned) {
            (Some(_), Some(returned)) => returned,
            _ => Micros::MAX,
        };
        let at = Window::new(self.invoked, to);
        let op = match &self.call {
            Call::TryAcquire { lease, limit, .. } | Call::Acquire { lease, limit, .. } => {
                LockOp::Acquire { lease: *lease, ttl: self.lease_ttl().unwrap_or_default(), limit: *limit, at }
            }
            Call::Release { lease } => LockOp::Release { lease: *lease, at },
            Call::Refresh { lease, .. } => {
                LockOp::Refresh { lease: *lease, ttl: self.lease_ttl().unwrap_or_default(), at }
            }
            Call::RemainingTtl { lease } => LockOp::Remaining { lease: *lease, at },
            Call::SessionEnded { lease, .. } => LockOp::SessionEnded { lease: *lease, at },
        };
        Some((op, ret))
    }
}

fn ms(us: Micros) -> String {
    format!("{:.1}ms", us as f64 / 1000.0)
}

impl fmt::Display for Operation {
    /// `client 1  k  acquire(ttl 60.0ms, wait 5.0ms) → L3  [0.1ms → 2.3ms]  granted fence 7`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let call = match &self.call {
            Call::TryAcquire { lease, ttl, limit } => {
                let of = if *limit > 1 { format!(", limit {limit}") } else { String::new() };
                format!("try_acquire(ttl {}{of}) as {lease}", ms(*ttl))
            }
            Call::Acquire { lease, ttl, limit, wait } => {
                let of = if *limit > 1 { format!(", limit {limit}") } else { String::new() };
                format!("acquire(ttl {}, wait {}{of}) as {lease}", ms(*ttl), ms(*wait))
            }
            Call::Release { lease } => format!("release({lease})"),
            Call::Refresh { lease, ttl } => format!("refresh({lease}, ttl {})", ms(*ttl)),
            Call::RemainingTtl { lease } => format!("remaining_ttl({lease})"),
            Call::SessionEnded { lease, crashed: true } => format!("crashed holding {lease}"),
            Call::SessionEnded { lease, crashed: false } => format!("session cut under {lease}"),
        };
        let returned = self.returned.map_or_else(|| "…".to_owned(), ms);
        let outcome = match &self.outcome {
            Outcome::Pending => "no return".to_owned(),
            Outcome::Granted { fence, ttl: None, .. } => format!("granted, fence {fence}"),
            Outcome::Granted { fence, ttl: Some(ttl), .. } => format!("granted, fence {fence}, lease {}", ms(*ttl)),
            Outcome::NotGranted => "not granted".to_owned(),
            Outcome::TimedOut => "timed out".to_owned(),
            Outcome::TimedOutLocally => {
                "timed out locally (the backend may still grant it; the clean-up gives it back)".to_owned()
            }
            Outcome::Done => "(harness event)".to_owned(),
            Outcome::Released { held } => format!("released: {}", if *held { "was held" } else { "was not held" }),
            Outcome::Refreshed { held: false, .. } => "refreshed: was not held".to_owned(),
            Outcome::Refreshed { held: true, ttl: None } => "refreshed: was held".to_owned(),
            Outcome::Refreshed { held: true, ttl: Some(ttl) } => format!("refreshed: was held, lease {}", ms(*ttl)),
            Outcome::Remaining { left: Some(left) } => format!("{} left", ms(*left)),
            Outcome::Remaining { left: None } => "not held".to_owned(),
            Outcome::Failed { error } => format!("failed: {error}"),
            Outcome::Cancelled => "cancelled".to_owned(),
            Outcome::Indeterminate { error } => format!("indeterminate: {error}"),
        };
        write!(f, "client {} {} {call} [{} → {returned}] {outcome}", self.client, self.key, ms(self.invoked))
    }
}

/// A recorded history.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct History {
    /// The operations, in invocation order.
    pub operations: Vec<Operation>,
}

impl History {
    /// The operations of each key, in invocation order.
    pub fn by_key(&self) -> BTreeMap<&str, Vec<&Operation>> {
        let mut keys: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
        for op in &self.operations {
            keys.entry(op.key.as_str()).or_default().push(op);
        }
        keys
    }

    /// Whether this history could have happened: every operation returned no earlier than it
    /// was invoked, within a day of the recording's start; every acquire named a grant of its
    /// own and asked for a limit of at least 1 and a lease of at most a day. A history read from a file is checked with this
    /// before any checker sees it.
    pub fn validate(&self) -> Result<(), ImpossibleHistory> {
        const DAY: Micros = 86_400_000_000;
        let mut acquired = std::collections::HashSet::new();
        for (index, op) in self.operations.iter().enumerate() {
            let bad = |why: String| Err(ImpossibleHistory { operation: index + 1, why });
            // The recorder names every acquire's grant afresh.
            if op.call.is_acquire() && !acquired.insert(op.call.lease()) {
                return bad(format!("it names grant {} that an earlier acquire already named", op.call.lease()));
            }
            if op.invoked > DAY || op.returned.is_some_and(|returned| returned > DAY) {
                return bad("its instants are more than a day after the recording started".into());
            }
            if op.returned.is_some_and(|returned| returned < op.invoked) {
                return bad("it returned before it was invoked".into());
            }
            match &op.call {
                Call::TryAcquire { limit: 0, .. } | Call::Acquire { limit: 0, .. } => {
                    return bad("it asked for a permit limit of 0".into());
                }
                _ => {}
            }
            if op.lease_ttl().is_some_and(|ttl| ttl > DAY)
                || matches!(op.call, Call::Acquire { wait, .. } if wait > DAY)
            {
                return bad("it asked for a lease or a wait of more than a day".into());
            }
            if let Outcome::Granted { acquired_at, .. } = op.outcome
                && acquired_at > DAY
            {
                return bad("its grant counts from more than a day after the recording started".into());
            }
        }
        Ok(())
    }

    /// The history as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a history always serializes")
    }

    /// A history read back from [`History::to_json`].
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Numbered lines, one per operation, for a person to read.
    pub fn numbered(&self) -> Vec<String> {
        self.operations.iter().enumerate().map(|(i, op)| format!("{:>3}. {op}", i + 1)).collect()
    }
}

/// Why a history read from a file cannot have happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operation {operation}: {why}")]
pub struct ImpossibleHistory {
    /// The operation's number (1-based, as [`History::numbered`] shows it).
    pub operation: usize,
    /// What is impossible about it.
    pub why: String,
}

/// A history together with what it was checked against, as a random workload keeps it in
/// `$LOCKCHECK_HISTORY_DIR`: `lockcheck check --recheck` checks it again with the same time
/// scales and claims. The fields sit beside `operations`, so a plain [`History`] reads it too.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeptHistory {
    /// The time scales the checkers used (`None`: not recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<crate::Timing>,
    /// What the backend claimed (`None`: not recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// The operations.
    #[serde(flatten)]
    pub history: History,
}

impl KeptHistory {
    /// As JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a kept history always serializes")
    }

    /// Read back from [`KeptHistory::to_json`] or [`History::to_json`].
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.numbered() {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_outcomes_are_named_as_they_are_written() {
        let lease = LeaseId(1);
        let calls = [
            Call::TryAcquire { lease, ttl: 1, limit: 1 },
            Call::Acquire { lease, ttl: 1, limit: 1, wait: 1 },
            Call::Release { lease },
            Call::Refresh { lease, ttl: 1 },
            Call::RemainingTtl { lease },
            Call::SessionEnded { lease, crashed: true },
        ];
        for call in calls {
            assert_eq!(serde_json::to_value(&call).unwrap()["call"], call.name());
        }
        let outcomes = [
            Outcome::Pending,
            Outcome::Granted { fence: 1, acquired_at: 1, ttl: None },
            Outcome::NotGranted,
            Outcome::TimedOut,
            Outcome::TimedOutLocally,
            Outcome::Released { held: true },
            Outcome::Refreshed { held: true, ttl: None },
            Outcome::Remaining { left: None },
            Outcome::Failed { error: String::new() },
            Outcome::Cancelled,
            Outcome::Done,
            Outcome::Indeterminate { error: String::new() },
        ];
        for outcome in outcomes {
            assert_eq!(serde_json::to_value(&outcome).unwrap()["outcome"], outcome.name());
        }
    }

    #[test]
    fn an_impossible_history_is_refused_naming_the_operation() {
        let fine = Operation {
            client: 0,
            key: "k".into(),
            call: Call::Acquire { lease: LeaseId(1), ttl: 1_000, limit: 1, wait: 0 },
            invoked: 10,
            returned: Some(20),
            outcome: Outcome::Granted { fence: 1, acquired_at: 15, ttl: None },
        };
        assert_eq!(History { operations: vec![fine.clone()] }.validate(), Ok(()));
        let acquire = |lease, limit| Call::Acquire { lease: LeaseId(lease), ttl: 1_000, limit, wait: 0 };
        let backwards = Operation { call: acquire(2, 1), returned: Some(5), ..fine.clone() };
        let no_permit = Operation { call: acquire(3, 0), ..fine.clone() };
        let far = Operation { call: acquire(4, 1), returned: Some(u64::MAX), ..fine.clone() };
        let same_grant = fine.clone();
        for (bad, word) in
            [(backwards, "before"), (no_permit, "limit of 0"), (far, "day"), (same_grant, "already named")]
        {
            let error = History { operations: vec![fine.clone(), bad] }.validate().expect_err("impossible");
            assert_eq!(error.operation, 2);
            assert!(error.to_string().contains(word), "{error}");
        }
    }

    /// A grant whose lease the backend rounded up carries two durations: the one asked for
    /// and the one granted. Both survive the JSON a history is kept in.
    #[test]
    fn a_history_with_a_rounded_up_grant_reads_back() {
        let granted = Operation {
            client: 0,
            key: "k".into(),
            call: Call::Acquire { lease: LeaseId(1), ttl: 1_500_000, limit: 1, wait: 0 },
            invoked: 10,
            returned: Some(20),
            outcome: Outcome::Granted { fence: 3, acquired_at: 15, ttl: Some(2_000_000) },
        };
        let refreshed = Operation {
            call: Call::Refresh { lease: LeaseId(1), ttl: 1_500_000 },
            outcome: Outcome::Refreshed { held: true, ttl: Some(2_000_000) },
            ..granted.clone()
        };
        let history = History { operations: vec![granted, refreshed] };
        assert_eq!(History::from_json(&history.to_json()).expect("reads back"), history);
        let kept = KeptHistory::from_json(&history.to_json()).expect("a plain history is a kept one");
        assert_eq!((kept.history, kept.timing), (history, None));
    }
}
