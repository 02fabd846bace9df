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
pub mod timing;

use std::fmt;

use std::time::Duration;

use lockcheck_impls::Capabilities;
use lockcheck_model::spec::Property;

use crate::backend::Timing;
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
    verdicts.push((Property::MutualExclusion, exclusion::check_sessions(history, tolerance, capabilities.session_bound)));
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
    /// Why the backend's own claims predict this violation (a lease bound to a session that
    /// was cut under a live holder): it is reported as predicted, not as a broken promise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<String>,
}

impl Counterexample {
    /// A counterexample from the operations that show it.
    pub fn new(property: Property, summary: impl Into<String>, operations: Vec<Operation>) -> Self {
        Counterexample { property, summary: summary.into(), history: History { operations }, predicted: None }
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.history.operations.len()
    }

    /// Whether it has no operations (a scenario that failed before recording any).
    pub fn is_empty(&self) -> bool {
        self.history.operations.is_empty()
    }
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} violated: {}", self.property, self.summary)?;
        if let Some(why) = &self.predicted {
            writeln!(f, "  predicted by the backend's claims: {why}")?;
        }
        write!(f, "{}", self.history)
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
