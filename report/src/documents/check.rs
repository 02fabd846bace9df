//! The `check` document: one [`SuiteReport`] per backend, as `lockcheck check --json` writes
//! it and `lockcheck check --recheck` and `lockcheck report` read it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use lockcheck_history::{Counterexample, Timing};
use lockcheck_model::spec::{Capabilities, Property, Status};
use serde::{Deserialize, Serialize};

use super::Document;

/// `lockcheck check --json`: the seed, the backend × property table and every backend's
/// report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckDocument {
    /// The seed of the run.
    pub seed: u64,
    /// Backend → property → status, combined over the checks ([`SuiteReport::by_property`]).
    #[serde(default)]
    pub table: BTreeMap<String, BTreeMap<Property, Status>>,
    /// Every backend's report.
    pub backends: Vec<SuiteReport>,
}

impl CheckDocument {
    /// The document of a run: `reports` with their table.
    pub fn new(seed: u64, backends: Vec<SuiteReport>) -> CheckDocument {
        let table = backends.iter().map(|report| (report.backend.clone(), report.by_property())).collect();
        CheckDocument { seed, table, backends }
    }
}

impl Document for CheckDocument {
    const KIND: &'static str = "lockcheck.check";
    const VERSION: u32 = 1;

    /// Before documents were marked, `check --json` wrote the same body without kind and
    /// version: users keep such files to re-check their counterexamples.
    fn legacy(text: &str) -> Option<Result<Self, serde_json::Error>> {
        Some(serde_json::from_str(text))
    }
}

/// The result of one check.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CheckResult {
    /// The check's name.
    pub check: String,
    /// The status of every property it covers.
    pub properties: BTreeMap<Property, Status>,
    /// The counterexamples it found.
    pub counterexamples: Vec<Counterexample>,
    /// Why something is unknown or not claimed.
    pub notes: Vec<String>,
    /// How long it took.
    pub elapsed: Duration,
    /// The operations it performed.
    pub operations: usize,
}

impl CheckResult {
    /// The combined status.
    pub fn status(&self) -> Status {
        self.properties.values().copied().fold(Status::NotClaimed, Status::and)
    }

    /// The first property it found violated.
    pub fn violated(&self) -> Option<Property> {
        self.counterexamples.first().map(|counterexample| counterexample.property)
    }
}

/// The result of a suite run against one backend.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SuiteReport {
    /// The backend's name.
    pub backend: String,
    /// What it claimed (`None` if no client could connect).
    pub capabilities: Option<Capabilities>,
    /// The seed (rerun with `--seed` / `LOCKCHECK_SEED`).
    pub seed: u64,
    /// The time scales used.
    pub timing: Timing,
    /// Every check's result.
    pub checks: Vec<CheckResult>,
    /// How long the run took.
    pub elapsed: Duration,
}

impl SuiteReport {
    /// Property × status, combined over checks (Violated > Unknown > Passed > NotClaimed).
    pub fn by_property(&self) -> BTreeMap<Property, Status> {
        let mut table: BTreeMap<Property, Status> = BTreeMap::new();
        for check in &self.checks {
            for (property, status) in &check.properties {
                let entry = table.entry(*property).or_insert(*status);
                *entry = entry.and(*status);
            }
        }
        table
    }

    /// The combined status of the whole run.
    pub fn status(&self) -> Status {
        if self.checks.is_empty() {
            // Nothing tested is not a pass.
            return Status::Unknown;
        }
        self.checks.iter().map(CheckResult::status).fold(Status::NotClaimed, Status::and)
    }

    /// The claims no check of this suite can judge (they need faults: a server restart), each
    /// with where they are checked instead. Reported as "claimed, not checked", never as passed.
    pub fn unchecked_claims(&self) -> Vec<&'static str> {
        let Some(capabilities) = self.capabilities else { return Vec::new() };
        let mut unchecked = Vec::new();
        if capabilities.survives_server_restart {
            unchecked.push("survives server restart (checked by the fault runs, not by `check`)");
        }
        if capabilities.fencing_survives_restart {
            unchecked.push("fencing survives restart (checked by the fault runs, not by `check`)");
        }
        if capabilities.expiry_by_monotonic_clock {
            unchecked.push("expiry by a monotonic clock (checked by the clock-fault runs, not by `check`)");
        }
        unchecked
    }

    /// Every counterexample, in check order.
    pub fn counterexamples(&self) -> impl Iterator<Item = (&str, &Counterexample)> {
        self.checks.iter().flat_map(|check| check.counterexamples.iter().map(move |c| (check.check.as_str(), c)))
    }
}

impl fmt::Display for SuiteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "backend {} (seed {}, {:.1}s)", self.backend, self.seed, self.elapsed.as_secs_f64())?;
        for check in &self.checks {
            writeln!(
                f,
                "  {:<34} {:<12} {:>7.0}ms",
                check.check,
                check.status().to_string(),
                check.elapsed.as_secs_f64() * 1e3
            )?;
            for note in &check.notes {
                writeln!(f, "      note: {note}")?;
            }
        }
        for (check, counterexample) in self.counterexamples() {
            writeln!(f, "\n[{check}] {counterexample}")?;
        }
        Ok(())
    }
}
