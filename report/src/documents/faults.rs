//! The `faults` document: the outcome of every fault run, backend × fault. The fault tests
//! add their results to it one at a time (`FaultReport::record` in the conformance crate,
//! into the file `$LOCKCHECK_FAULTS_OUT`), and `lockcheck report --faults` renders it.

use std::path::Path;

use lockcheck_history::Counterexample;
use lockcheck_model::spec::{Property, Status};
use serde::{Deserialize, Serialize};

use super::Document;

/// The fault runs' results.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultsDocument {
    /// One result per backend kind and fault.
    pub results: Vec<FaultRecord>,
}

impl Document for FaultsDocument {
    const KIND: &'static str = "lockcheck.faults";
    const VERSION: u32 = 1;
}

/// One backend × fault result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// The backend, as a row of the fault matrix (`redis`, `nats (3 servers)`).
    pub backend: String,
    /// The fault injected, as a column of the fault matrix.
    pub fault: String,
    /// The verdict: passed (safe), violated, or predicted by the backend's claims.
    pub status: Status,
    /// The property broken, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<Property>,
    /// What happened, with instants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// The declaration that predicts a predicted violation, e.g.
    /// `survives_server_restart: false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_by: Option<String>,
    /// What the run observed on the way.
    #[serde(default)]
    pub notes: Vec<String>,
    /// The history that shows the violation, shrunk by its checker (nemesis runs; a scripted
    /// fault tells its story in `evidence`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counterexample: Option<Counterexample>,
    /// Each run's seed and verdict, where the cell is made of several (the nemesis runs each
    /// backend × fault from several seeds; `status` is the worst of them). Empty for a
    /// scripted fault's one run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<FaultRun>,
}

/// One run of a backend × fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRun {
    /// The seed that replays it.
    pub seed: u64,
    /// Its verdict.
    pub status: Status,
}

impl FaultRecord {
    /// How many of its runs share its (worst) status, and how many runs there were: `(2, 3)`
    /// for one ok run and two violated; `None` for a scripted fault's one run.
    pub fn tally(&self) -> Option<(usize, usize)> {
        (!self.runs.is_empty())
            .then(|| (self.runs.iter().filter(|run| run.status == self.status).count(), self.runs.len()))
    }
}

impl FaultsDocument {
    /// Adds `record`, replacing an earlier result for the same backend and fault — or, where
    /// both are made of seeded runs, joining them into one cell: every seed's latest run, the
    /// cell's status the worst of them.
    pub fn record(&mut self, record: FaultRecord) {
        let same = |old: &FaultRecord| old.backend == record.backend && old.fault == record.fault;
        let Some(position) = self.results.iter().position(same) else {
            self.results.push(record);
            return;
        };
        let old = self.results.remove(position);
        if record.runs.is_empty() || old.runs.is_empty() {
            self.results.push(record);
            return;
        }
        let mut runs: Vec<FaultRun> =
            old.runs.iter().filter(|run| record.runs.iter().all(|new| new.seed != run.seed)).copied().collect();
        runs.extend(record.runs.iter().copied());
        let worst = runs.iter().map(|run| run.status).max().expect("runs on both sides");
        let mut joined = if record.status == worst || old.status != worst { record } else { old };
        joined.runs = runs;
        self.results.push(joined);
    }

    /// Adds `record` to the document at `path` (a new one where there is none, or where the
    /// file is not a faults document of a version this build reads) and writes it back.
    pub fn record_in(path: &Path, record: FaultRecord) -> Result<(), crate::ReportError> {
        let mut document = FaultsDocument::read(path).unwrap_or_default();
        document.record(record);
        document.write(path)
    }
}
