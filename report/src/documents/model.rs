//! The `model` document: the outcome of every system `lockcheck model` checked.

use lockcheck_model::outcome::Outcome;
use serde::{Deserialize, Serialize};

use super::Document;

/// `lockcheck model --json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelDocument {
    /// One outcome per system checked, with each property's verdict and the property of
    /// P1–P10 it checks.
    pub outcomes: Vec<Outcome>,
}

impl Document for ModelDocument {
    const KIND: &'static str = "lockcheck.model";
    const VERSION: u32 = 1;

    /// Before documents were marked, `model --json` wrote the bare list of outcomes.
    fn legacy(text: &str) -> Option<Result<Self, serde_json::Error>> {
        Some(serde_json::from_str(text).map(|outcomes| ModelDocument { outcomes }))
    }
}
