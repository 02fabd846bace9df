//! The `faults` document: the outcome of every fault run, backend × fault. The fault tests
//! add their results to it one at a time (`FaultReport::record` in the conformance crate,
//! into the file `$LOCKCHECK_FAULTS_OUT`), and `lockcheck report --faults` renders it.

use std::path::Path;

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
}

impl FaultsDocument {
    /// Adds `record`, replacing an earlier result for the same backend and fault.
    pub fn record(&mut self, record: FaultRecord) {
        self.results.retain(|old| !(old.backend == record.backend && old.fault == record.fault));
        self.results.push(record);
    }

    /// Adds `record` to the document at `path` (a new one where there is none, or where the
    /// file is not a faults document of a version this build reads) and writes it back.
    pub fn record_in(path: &Path, record: FaultRecord) -> Result<(), crate::ReportError> {
        let mut document = FaultsDocument::read(path).unwrap_or_default();
        document.record(record);
        document.write(path)
    }
}
