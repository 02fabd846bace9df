//! The one status vocabulary of every lockcheck result: a property's status in a check, a
//! model's verdict, a fault run's outcome, a mutant hunt. Each producer maps its own outcome
//! onto [`Status`] with one function next to that outcome (`Verdict::status`,
//! `FaultOutcome::status`…), so a report combines and orders them without knowing where they
//! came from.
//!
//! The order is the order of how bad the news is: combining two statuses keeps the worse one
//! ([`Status::and`]), so a property checked by several checks is as good as its worst check
//! (Jepsen's Invalid > Unknown > Valid, with the informational statuses below a pass).

use std::fmt;

/// The outcome of one property in one run, from informational to violated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The backend does not claim the capability the property needs: informational.
    NotClaimed,
    /// Claimed, but this run could not check it (the backend cannot be put through the fault
    /// the check needs): reported, never read as a pass.
    NotChecked,
    /// Checked and held.
    Passed,
    /// Violated in a way the backend's own claims predict (a session-bound lease freed under a
    /// live holder whose session was cut): not a broken promise, but shown, with its remedy.
    Predicted,
    /// Could not be decided (a backend error, a checker out of budget): not a pass.
    Unknown,
    /// Violated: there is a counterexample.
    Violated,
}

impl Status {
    /// Every status, from informational to violated (the order [`Status::and`] combines by).
    pub const ALL: [Status; 6] =
        [Status::NotClaimed, Status::NotChecked, Status::Passed, Status::Predicted, Status::Unknown, Status::Violated];

    /// Combines two statuses: Violated > Unknown > Predicted > Passed > NotChecked > NotClaimed.
    pub fn and(self, other: Status) -> Status {
        self.max(other)
    }

    /// Whether this status should fail a CI gate.
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Violated | Status::Unknown)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::NotClaimed => "not claimed",
            Status::NotChecked => "not checked",
            Status::Passed => "ok",
            Status::Predicted => "predicted",
            Status::Unknown => "UNKNOWN",
            Status::Violated => "VIOLATED",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_combine_worst_first() {
        assert_eq!(Status::Passed.and(Status::Violated), Status::Violated);
        assert_eq!(Status::Unknown.and(Status::Passed), Status::Unknown);
        assert_eq!(Status::NotClaimed.and(Status::Passed), Status::Passed);
        assert_eq!(Status::NotClaimed.and(Status::NotChecked), Status::NotChecked);
        assert_eq!(Status::Predicted.and(Status::Unknown), Status::Unknown);
        assert!(Status::Unknown.is_failure() && Status::Violated.is_failure());
        assert!(!Status::Predicted.is_failure() && !Status::NotChecked.is_failure());
        let mut sorted = Status::ALL;
        sorted.sort();
        assert_eq!(sorted, Status::ALL);
    }

    #[test]
    fn statuses_keep_their_json_names() {
        let names: Vec<String> = Status::ALL.iter().map(|s| serde_json::to_string(s).unwrap()).collect();
        assert_eq!(
            names,
            ["\"not-claimed\"", "\"not-checked\"", "\"passed\"", "\"predicted\"", "\"unknown\"", "\"violated\""]
        );
    }
}
