//! The `selftest` document: how each mutant (a deliberately broken locker) fared against the
//! suite.

use std::fmt;
use std::time::Duration;

use lockcheck_history::Counterexample;
use lockcheck_model::spec::{Property, Status};
use serde::{Deserialize, Serialize};

use super::Document;

/// `lockcheck selftest --json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SelftestDocument {
    /// The seed of the run.
    pub seed: u64,
    /// One outcome per mutant.
    pub mutants: Vec<MutantOutcome>,
}

impl Document for SelftestDocument {
    const KIND: &'static str = "lockcheck.selftest";
    const VERSION: u32 = 1;

    /// Before documents were marked, `selftest --json` wrote the same body.
    fn legacy(text: &str) -> Option<Result<Self, serde_json::Error>> {
        Some(serde_json::from_str(text))
    }
}

/// What became of a mutant: the self-test's own verdict vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hunt {
    /// A check found the property it breaks violated.
    Caught,
    /// A check found another property violated.
    CaughtOther,
    /// Every check passed it: the harness missed a broken locker.
    Survived,
    /// Its server could not be reached, so it was not tested.
    NotRun,
}

impl Hunt {
    /// The hunt as a status of the self-test: a caught mutant is the harness passing, a
    /// survivor the harness failing, and a mutant not run was not checked.
    pub fn status(self) -> Status {
        match self {
            Hunt::Caught | Hunt::CaughtOther => Status::Passed,
            Hunt::Survived => Status::Violated,
            Hunt::NotRun => Status::NotChecked,
        }
    }

    /// How it is written (`caught`, `caught-other`, `survived`, `not-run`).
    pub fn name(self) -> &'static str {
        match self {
            Hunt::Caught => "caught",
            Hunt::CaughtOther => "caught-other",
            Hunt::Survived => "survived",
            Hunt::NotRun => "not-run",
        }
    }
}

impl fmt::Display for Hunt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How one mutant fared.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MutantOutcome {
    /// The mutant's name.
    pub mutant: String,
    /// The kind of flaw it has.
    pub failure_class: String,
    /// The property it is built to break.
    pub expected: Property,
    /// What became of it.
    pub status: Hunt,
    /// The property a check found violated.
    pub caught_by: Option<Property>,
    /// The check that caught it (or why it was not run).
    pub check: Option<String>,
    /// The length of the counterexample.
    pub counterexample_operations: Option<usize>,
    /// The time the checks took until one caught it.
    pub time_to_catch: Duration,
    /// The counterexample.
    pub counterexample: Option<Counterexample>,
}
