//! What the report is rendered from: benchmark runs, and the result documents other
//! subcommands write (`check`, `selftest`, `model`, fault runs) — read tolerantly, because a
//! report with one input missing or unreadable is still worth having; what is missing is said.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::documents::Document;
use crate::results::{BenchRun, Kind, Role};
use crate::stats::median;

/// The latest runs of every suite, newest first.
#[derive(Debug, Default)]
pub struct BenchInputs {
    /// Suite name → (file, run), newest first.
    pub runs: BTreeMap<String, Vec<(PathBuf, BenchRun)>>,
    /// Files that could not be read, and why.
    pub problems: Vec<String>,
}

/// Reads every `<dir>/<suite>/*.json` of `dirs` and keeps the `keep` newest runs per suite
/// (by start time; the same file name found in two folders counts once).
pub fn collect_runs(dirs: &[PathBuf], keep: usize) -> BenchInputs {
    let mut inputs = BenchInputs::default();
    let mut seen = std::collections::HashSet::new();
    for dir in dirs {
        let Ok(suites) = std::fs::read_dir(dir) else { continue };
        for suite in suites.flatten().filter(|e| e.path().is_dir()) {
            let Ok(files) = std::fs::read_dir(suite.path()) else { continue };
            for file in files.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")) {
                let name = (suite.file_name(), file.file_name().unwrap_or_default().to_owned());
                if !seen.insert(name) {
                    continue;
                }
                match BenchRun::read(&file) {
                    Ok(run) => inputs.runs.entry(run.suite.clone()).or_default().push((file, run)),
                    Err(e) => inputs.problems.push(format!("skipped {}: {e}", file.display())),
                }
            }
        }
    }
    for runs in inputs.runs.values_mut() {
        runs.sort_by(|a, b| b.1.started_unix.cmp(&a.1.started_unix).then_with(|| b.0.cmp(&a.0)));
        // Quick and full runs are not comparable: keep the newest run's mode only.
        if let Some(mode) = runs.first().map(|r| r.1.mode) {
            runs.retain(|r| r.1.mode == mode);
        }
        runs.truncate(keep);
    }
    inputs
}

/// One figure of one subject, as medians over the kept runs of its suite.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// The suite.
    pub suite: String,
    /// What was measured.
    pub subject: String,
    /// Subject, floor or peer.
    pub role: Role,
    /// Which measurement.
    pub kind: Kind,
    /// Median over runs of the run's p50, ns.
    pub p50_ns: f64,
    /// Median over runs of the run's p99, ns.
    pub p99_ns: f64,
    /// Median over runs of the run's max, ns.
    pub max_ns: f64,
    /// Median over runs of the run's p50 ratio to its floor.
    pub ratio: Option<f64>,
    /// Median over runs of operations per second (throughput).
    pub ops_per_sec: Option<f64>,
    /// How many runs the medians are over.
    pub runs: usize,
}

/// Every figure of `runs` (one suite), in the order the newest run measured them.
pub fn figures(suite: &str, runs: &[(PathBuf, BenchRun)]) -> Vec<Figure> {
    let Some((_, newest)) = runs.first() else { return Vec::new() };
    let mut out: Vec<Figure> = Vec::new();
    for m in &newest.measurements {
        if out.iter().any(|f| f.subject == m.subject && f.role == m.role && f.kind == m.kind) {
            continue;
        }
        let same: Vec<(&BenchRun, &crate::Measurement)> = runs
            .iter()
            .filter_map(|(_, run)| {
                run.measurements
                    .iter()
                    .find(|x| x.subject == m.subject && x.role == m.role && x.kind == m.kind)
                    .map(|x| (run, x))
            })
            .collect();
        let pick = |f: &dyn Fn(&crate::Measurement) -> f64| median(&same.iter().map(|(_, x)| f(x)).collect::<Vec<_>>());
        let ratios: Vec<f64> = if m.role == Role::Floor {
            Vec::new()
        } else {
            same.iter().filter_map(|(run, x)| run.ratio_to_floor(x)).collect()
        };
        let ops: Vec<f64> = same.iter().filter_map(|(_, x)| x.ops_per_sec).collect();
        out.push(Figure {
            suite: suite.to_owned(),
            subject: m.subject.clone(),
            role: m.role,
            kind: m.kind,
            p50_ns: pick(&|x| x.latency.p50_ns).unwrap_or(f64::NAN),
            p99_ns: pick(&|x| x.latency.p99_ns).unwrap_or(f64::NAN),
            max_ns: pick(&|x| x.latency.max_ns).unwrap_or(f64::NAN),
            ratio: median(&ratios),
            ops_per_sec: median(&ops),
            runs: same.len(),
        });
    }
    out
}

/// A result document of another subcommand: absent, unreadable (or of another kind or a
/// newer version), or read.
#[derive(Debug)]
pub enum Input<D> {
    /// No file at the path.
    Missing(PathBuf),
    /// The file exists but is not a document of the expected kind and version: why.
    Unreadable(PathBuf, String),
    /// The document read.
    Loaded(PathBuf, D),
}

impl<D: Document> Input<D> {
    /// Reads the document at `path`.
    pub fn load(path: &Path) -> Input<D> {
        match std::fs::read_to_string(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Input::Missing(path.to_owned()),
            Err(e) => Input::Unreadable(path.to_owned(), e.to_string()),
            Ok(text) => match D::from_json(&text) {
                Ok(document) => Input::Loaded(path.to_owned(), document),
                Err(e) => Input::Unreadable(path.to_owned(), e.to_string()),
            },
        }
    }
}

impl<D> Input<D> {
    /// The document, if read.
    pub fn document(&self) -> Option<&D> {
        match self {
            Input::Loaded(_, document) => Some(document),
            _ => None,
        }
    }
}
