//! The result documents of lockcheck's commands: one typed, versioned JSON document per
//! command — `check`, `selftest`, `model`, the fault runs — and per benchmark run.
//!
//! Every document is written as one JSON object whose first two fields say what it is:
//! `{"kind": "lockcheck.check", "version": 1, …}`. A reader asks for one kind
//! ([`Document::from_json`]) and refuses a document of another kind, or of a version newer
//! than it knows, naming both, instead of misreading it. A file from before documents were
//! marked (no `kind`) is read as version 0 where that shape is known ([`Document::legacy`]).
//!
//! The documents use the shared vocabularies of the spec: [`Property`](lockcheck_model::spec::Property)
//! for P1–P10 and [`Status`](lockcheck_model::spec::Status) for every verdict; each producer
//! maps its own outcomes onto them where it produces them.

mod check;
mod faults;
mod model;
mod selftest;

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use check::{CheckDocument, CheckResult, SuiteReport};
pub use faults::{FaultRecord, FaultRun, FaultsDocument};
pub use model::ModelDocument;
pub use selftest::{Hunt, MutantOutcome, SelftestDocument};

/// A result document: a kind, a version, and a body that serde reads and writes.
pub trait Document: Serialize + DeserializeOwned {
    /// What it is, e.g. `lockcheck.check`.
    const KIND: &'static str;
    /// The version this build writes and the newest it reads.
    const VERSION: u32;

    /// Reads a file written before documents named their kind (version 0), where this kind's
    /// shape then is known; `None` refuses it.
    fn legacy(text: &str) -> Option<Result<Self, serde_json::Error>> {
        let _ = text;
        None
    }

    /// The document as pretty JSON, its kind and version first.
    fn to_json(&self) -> Result<String, DocumentError> {
        #[derive(Serialize)]
        struct Marked<'a, D> {
            kind: &'static str,
            version: u32,
            #[serde(flatten)]
            body: &'a D,
        }
        serde_json::to_string_pretty(&Marked { kind: Self::KIND, version: Self::VERSION, body: self })
            .map_err(|source| DocumentError::Json { kind: Self::KIND, source })
    }

    /// Reads a document of this kind: another kind, or a version newer than
    /// [`Document::VERSION`], is an error naming both.
    fn from_json(text: &str) -> Result<Self, DocumentError> {
        #[derive(serde::Deserialize)]
        struct Header {
            kind: Option<String>,
            version: Option<u32>,
        }
        let json = |source| DocumentError::Json { kind: Self::KIND, source };
        // A JSON array or a non-object has no header: it can only be an unmarked file.
        let header = match text.trim_start().starts_with('{') {
            true => serde_json::from_str::<Header>(text).ok(),
            false => None,
        };
        match header {
            Some(Header { kind: Some(kind), version }) => {
                if kind != Self::KIND {
                    return Err(DocumentError::WrongKind { expected: Self::KIND, found: kind });
                }
                let version = version.unwrap_or(0);
                if version > Self::VERSION {
                    return Err(DocumentError::NewerVersion {
                        kind: Self::KIND,
                        found: version,
                        supported: Self::VERSION,
                    });
                }
                serde_json::from_str(text).map_err(json)
            }
            _ => match Self::legacy(text) {
                Some(read) => read.map_err(json),
                None => Err(DocumentError::Unmarked { expected: Self::KIND }),
            },
        }
    }

    /// Writes the document to `path`.
    fn write(&self, path: &Path) -> Result<(), crate::ReportError> {
        let json = self.to_json().map_err(|e| crate::ReportError::Document(path.to_owned(), e))?;
        std::fs::write(path, json).map_err(|e| crate::ReportError::File(path.to_owned(), e))
    }

    /// Reads the document at `path`.
    fn read(path: &Path) -> Result<Self, crate::ReportError> {
        let text = std::fs::read_to_string(path).map_err(|e| crate::ReportError::File(path.to_owned(), e))?;
        Self::from_json(&text).map_err(|e| crate::ReportError::Document(path.to_owned(), e))
    }
}

/// Why a result document could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentError {
    /// The document is of another kind.
    #[error("a {found} document, where a {expected} document was expected")]
    WrongKind {
        /// The kind asked for.
        expected: &'static str,
        /// The kind the document says it is.
        found: String,
    },
    /// The document is newer than this build reads.
    #[error("a {kind} document of version {found}, where this lockcheck reads versions up to {supported}")]
    NewerVersion {
        /// Its kind.
        kind: &'static str,
        /// The version it says it is.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The file names no kind, and is not an earlier shape of the kind asked for.
    #[error("not a {expected} document: it names no kind and version")]
    Unmarked {
        /// The kind asked for.
        expected: &'static str,
    },
    /// The document's kind and version are right but its body is not.
    #[error("{kind} document: {source}")]
    Json {
        /// The kind asked for.
        kind: &'static str,
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
}

#[cfg(test)]
mod tests;
