//! Checkers: each reads a [`History`] and says [`Verdict::Valid`], [`Verdict::Invalid`] with a
//! minimal counterexample, or [`Verdict::Unknown`] when it could not decide (budget exhausted)
//! — never a silent pass. Verdicts combine as Invalid > Unknown > Valid.
//!
//! - [`linearizability`]: the history against the sequential spec
//!   ([`lockcheck_model::spec::LockSpec`]), per key, with a memoizing Wing–Gong–Lowe search.
//! - [`exclusion`]: real-time exclusion — no more than `limit` believed-held intervals overlap.
//! - [`fencing`]: fencing tokens increase in real-time grant order, and a fenced resource
//!   never accepts a stale writer.
//! - [`timing`]: acquires return within their wait bound; FIFO order where claimed.

pub mod exclusion;
pub mod fencing;
pub mod linearizability;
mod timeline;
pub mod timing;

use std::fmt;

use std::time::Duration;

use lockcheck_model::spec::{Capabilities, Property, Status};

use crate::Timing;
use crate::history::{History, Operation};

/// Every history checker that applies to a backend with `capabilities`, with the
/// tolerance, hand-off bound and arrival gap of `scales`; `budget` bounds the linearizability search.
/// One verdict per checker, labelled with the property it is about (for an invalid verdict,
/// the property its counterexample breaks). Use it to re-check a history saved as JSON.
pub fn check_all(
    history: &History,
    scales: &Timing,
    capabilities: &Capabilities,
    budget: Duration,
) -> Vec<(Property, Verdict)> {
    let tolerance = scales.tolerance.as_micros() as u64;
    let mut verdicts = Vec::new();
    let reference = linearizability::Reference::for_backend(scales, capabilities);
    let linearizable = linearizability::check_history_against(history, &reference, budget);
    let linearizable_property = linearizable.counterexample().map_or(Property::MutualExclusion, |c| c.property);
    verdicts.push((linearizable_property, linearizable));
    verdicts.push((Property::MutualExclusion, exclusion::check_claims(history, tolerance, capabilities)));
    if capabilities.fencing {
        verdicts.push((Property::Fencing, fencing::check_order(history)));
    }
    verdicts.push((Property::BoundedWait, timing::check_bounded_waits(history, scales.prompt.as_micros() as u64)));
    if capabilities.fifo {
        verdicts.push((Property::Fifo, timing::check_fifo(history, scales.arrival_gap.as_micros() as u64)));
    }
    verdicts
}

/// A history that shows a property violated, kept as short as the checker could make it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counterexample {
    /// The violated property.
    pub property: Property,
    /// What went wrong, in a sentence.
    pub summary: String,
    /// The operations that show it.
    pub history: History,
    /// The operation that misbehaved, as a position in `history` (for the linearizability
    /// checker: the operation that cannot follow the ones before it). `None` where no single
    /// operation is to blame.
    #[serde(default)]
    pub blamed: Option<usize>,
    /// Why the backend's own claims predict this violation (a lease bound to a session that
    /// was cut under a live holder): it is reported as predicted, not as a broken promise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<String>,
}

impl Counterexample {
    /// What the counterexample makes of its property: violated, or predicted by the claims.
    pub fn status(&self) -> Status {
        if self.predicted.is_some() { Status::Predicted } else { Status::Violated }
    }

    /// A counterexample from the operations that show it.
    pub fn new(property: Property, summary: impl Into<String>, operations: Vec<Operation>) -> Self {
        Counterexample {
            property,
            summary: summary.into(),
            history: History { operations },
            blamed: None,
            predicted: None,
        }
    }

    /// The same counterexample, blaming the operation at `position` in its history.
    pub fn blaming(mut self, position: usize) -> Self {
        self.blamed = (position < self.len()).then_some(position);
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.history.operations.len()
    }

    /// Whether it has no operations (a scenario that failed before recording any).
    pub fn is_empty(&self) -> bool {
        self.history.operations.is_empty()
    }

    /// The operation blamed, if any.
    pub fn blamed_operation(&self) -> Option<&Operation> {
        self.history.operations.get(self.blamed?)
    }

    /// A text picture of the counterexample: one lane per client, time across
    /// [`TIMELINE_COLUMNS`] columns; each operation a bar from its invocation to its return
    /// (`T──┤`), each grant's lease held (`═`) from the grant to its release or expiry; the
    /// blamed operation's lane marked `>>` and the operation pointed at (`^`) under it.
    ///
    /// ```text
    /// time 0.0ms → 310.0ms, one column ≈ 4.4ms
    ///    client 0 │T═══════════════════════════════════════════════════════════════R═     │
    ///    client 1 │                                   T                                  │
    /// >> client 2 │                                                                     T│
    ///             │                                                                     ^ 4
    /// T try_acquire  A acquire  R release  F refresh  Q remaining_ttl  ─ until it returned
    /// ✗ refused  ? outcome unknown  ═ held
    /// ```
    pub fn timeline(&self) -> String {
        timeline::draw(self)
    }
}

/// The width of [`Counterexample::timeline`]'s time axis, in columns.
pub const TIMELINE_COLUMNS: usize = 72;

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} violated: {}", self.property, self.summary)?;
        if let Some(why) = &self.predicted {
            writeln!(f, "  predicted by the backend's claims: {why}")?;
        }
        for (position, line) in self.history.numbered().iter().enumerate() {
            let mark = if self.blamed == Some(position) { ">>" } else { "  " };
            writeln!(f, "{mark}{line}")?;
        }
        if !self.is_empty() {
            write!(f, "\n{}", self.timeline())?;
        }
        Ok(())
    }
}

/// A checker's answer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// The history satisfies the property.
    Valid,
    /// The history violates it.
    Invalid {
        /// The shortest history the checker found that shows it.
        counterexample: Box<Counterexample>,
    },
    /// The checker could not decide.
    Unknown {
        /// Why not.
        reason: String,
    },
}

impl Verdict {
    /// An invalid verdict.
    pub fn invalid(counterexample: Counterexample) -> Self {
        Verdict::Invalid { counterexample: Box::new(counterexample) }
    }

    /// An unknown verdict.
    pub fn unknown(reason: impl Into<String>) -> Self {
        Verdict::Unknown { reason: reason.into() }
    }

    /// Combines two verdicts: Invalid > Unknown > Valid (the first Invalid wins).
    pub fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (invalid @ Verdict::Invalid { .. }, _) | (_, invalid @ Verdict::Invalid { .. }) => invalid,
            (unknown @ Verdict::Unknown { .. }, _) | (_, unknown @ Verdict::Unknown { .. }) => unknown,
            _ => Verdict::Valid,
        }
    }

    /// The verdict as a status: Valid passes, Unknown stays unknown, and Invalid is
    /// violated, or predicted where the backend's own claims predict it.
    pub fn status(&self) -> Status {
        match self {
            Verdict::Valid => Status::Passed,
            Verdict::Invalid { counterexample } => counterexample.status(),
            Verdict::Unknown { .. } => Status::Unknown,
        }
    }

    /// Whether the verdict is [`Verdict::Valid`].
    pub fn is_valid(&self) -> bool {
        matches!(self, Verdict::Valid)
    }

    /// Whether the verdict is [`Verdict::Invalid`].
    pub fn is_invalid(&self) -> bool {
        matches!(self, Verdict::Invalid { .. })
    }

    /// The counterexample of an invalid verdict.
    pub fn counterexample(&self) -> Option<&Counterexample> {
        match self {
            Verdict::Invalid { counterexample } => Some(counterexample),
            _ => None,
        }
    }
}
