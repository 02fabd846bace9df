//! What a model check found, as plain data: readable (and deserializable) without the model
//! checker, so a report of model runs does not compile stateright.
//!
//! Each property outcome names its property twice: by the model's plain-English name
//! (`"mutual exclusion (believed by clients)"`) and, where the model property checks one of
//! P1–P10, through the catalogue ([`Property`]). Its verdict maps onto the shared [`Status`]
//! with [`Verdict::status`].

use serde::{Deserialize, Serialize};

use crate::spec::{Property, Status};

/// The verdict on one property.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The exhaustive search finished and found no violation.
    Holds,
    /// A violation, with the shortest run that shows it.
    Violated {
        /// The numbered steps of the counterexample.
        trace: Vec<String>,
    },
    /// No violation found, but the search did not finish (depth bound), so nothing is proven.
    Unknown,
}

impl Verdict {
    /// The verdict as a status: an incomplete search proves nothing, so it is unknown.
    pub fn status(&self) -> Status {
        match self {
            Verdict::Holds => Status::Passed,
            Verdict::Violated { .. } => Status::Violated,
            Verdict::Unknown => Status::Unknown,
        }
    }
}

/// One property's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PropertyOutcome {
    /// The property's plain-English name in the model.
    pub name: String,
    /// The property of P1–P10 it checks; `None` for a model-only property.
    #[serde(default)]
    pub property: Option<Property>,
    /// What the check found.
    pub verdict: Verdict,
}

impl PropertyOutcome {
    /// The verdict as a status.
    pub fn status(&self) -> Status {
        self.verdict.status()
    }
}

/// The outcome of checking one system.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The system's name.
    pub system: String,
    /// Clients in the configuration.
    pub clients: usize,
    /// Keys in the configuration.
    pub keys: usize,
    /// Whether the search visited every reachable state.
    pub complete: bool,
    /// Whether the search was reduced (see `systems::symmetry`): then `unique_states`
    /// counts classes of states that differ only in garbage in flight.
    pub reduced: bool,
    /// Whether the reduction included client symmetry: then `unique_states` counts classes
    /// of states that also differ only in which client is which.
    pub symmetry: bool,
    /// Whether the reduction included server symmetry too (interchangeable instances):
    /// then `unique_states` counts classes of states that also differ only in which server
    /// is which.
    pub server_symmetry: bool,
    /// Whether the reduction let clients take the messages on their way to them at once
    /// (`systems::symmetry::with_clients_caught_up`): then `unique_states` counts only the
    /// states in which no acquiring client has a server's message waiting for it.
    pub replies_taken_at_once: bool,
    /// Unique states visited.
    pub unique_states: usize,
    /// States generated (with repeats).
    pub states: usize,
    /// The deepest path explored.
    pub max_depth: usize,
    /// Wall-clock time of the exhaustive search, in seconds.
    pub seconds: f64,
    /// Unique states per second of the search.
    pub states_per_second: f64,
    /// Per-property verdicts.
    pub properties: Vec<PropertyOutcome>,
}

impl Outcome {
    /// The names of the violated properties.
    pub fn violated(&self) -> Vec<&str> {
        self.properties
            .iter()
            .filter(|p| matches!(p.verdict, Verdict::Violated { .. }))
            .map(|p| p.name.as_str())
            .collect()
    }

    /// The verdict on a property, if it was checked.
    pub fn verdict(&self, name: &str) -> Option<&Verdict> {
        self.properties.iter().find(|p| p.name == name).map(|p| &p.verdict)
    }

    /// The status of every catalogued property the system was checked against (P1–P10),
    /// combined where two model properties check the same one.
    pub fn by_property(&self) -> std::collections::BTreeMap<Property, Status> {
        let mut table = std::collections::BTreeMap::new();
        for outcome in &self.properties {
            if let Some(property) = outcome.property {
                let status = table.entry(property).or_insert(outcome.status());
                *status = status.and(outcome.status());
            }
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verdict_is_one_status() {
        assert_eq!(Verdict::Holds.status(), Status::Passed);
        assert_eq!(Verdict::Violated { trace: vec![] }.status(), Status::Violated);
        assert_eq!(Verdict::Unknown.status(), Status::Unknown);
    }
}
