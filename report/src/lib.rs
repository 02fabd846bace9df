//! lockcheck's results as documents, and the report rendered from them.
//!
//! Every command's results are a typed, versioned [document](documents): `check`'s
//! [`SuiteReport`](documents::SuiteReport)s, `selftest`'s mutant hunts, `model`'s outcomes,
//! the fault runs' results and benchmark runs. The producers write them and the renderer
//! reads them through the same types. Without the `render` feature (on by default) the crate
//! is the documents alone, for producers that should not compile the drawing library.
//!
//! A benchmark run is a [`BenchRun`]: the machine, the versions, the mode and every
//! measurement with its latency [`Summary`] (p50/p90/p99/max and a CDF), written as JSON by
//! `cargo bench -p lockcheck-bench`. [`render`](render::render) turns the latest runs, and
//! the JSON results of `lockcheck check`, `selftest`, `model` and the fault runs, into
//! `reports/`: pictures (SVG and PNG) and a README — medians over repeated runs, ratios to
//! the floor of the same run.
//!
//! This crate depends on neither the lockers nor criterion, so a program that only reads or
//! renders results (the `lockcheck` binary) compiles neither.
//!
//! ```
//! use lockcheck_report::{Samples, median};
//!
//! let mut samples = Samples::new();
//! samples.extend([900, 1_000, 1_100, 5_000].map(std::time::Duration::from_nanos));
//! let summary = samples.summary().ok_or("no samples")?;
//! assert_eq!(summary.max_ns, 5_000.0);
//! assert_eq!(median(&[1.0, 3.0, 2.0]), Some(2.0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod documents;
#[cfg(feature = "render")]
pub mod render;
mod results;
mod stats;
pub mod targets;

use std::path::PathBuf;

pub use results::{
    BenchRun, Kind, Machine, Measurement, Mode, Role, UNCONTENDED_GROUP, base_versions, results_dir, unix_now,
    workspace_root,
};
pub use stats::{Samples, Summary, median, percentile};

/// Why a results file could not be read or written, or a picture drawn.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// A results file could not be read or written.
    #[error("{path}: {source}", path = .0.display(), source = .1)]
    File(PathBuf, #[source] std::io::Error),
    /// A results file is not valid JSON of the expected shape.
    #[error("results JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// A results file is not a result document of the expected kind and version.
    #[error("{path}: {source}", path = .0.display(), source = .1)]
    Document(PathBuf, #[source] documents::DocumentError),
    /// PNG text needs a TTF font and none was found or it could not be read.
    #[error("{0}")]
    NoFont(String),
    /// Drawing a picture failed.
    #[error("drawing {path}: {what}", path = .0.display(), what = .1)]
    Draw(PathBuf, String),
}
