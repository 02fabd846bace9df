//! What the report is rendered from: benchmark runs, and the JSON results other subcommands
//! write (`check`, `selftest`, `model`, fault runs) — read tolerantly, because a report with
//! one input missing or in an older shape is still worth having; what is missing is said.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

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

/// A JSON result file of another subcommand: absent, unreadable, or its value.
#[derive(Debug)]
pub enum JsonInput {
    /// No file at the path.
    Missing(PathBuf),
    /// The file exists but is not JSON.
    Unreadable(PathBuf, String),
    /// The parsed file.
    Loaded(PathBuf, Value),
}

impl JsonInput {
    /// Reads `path`.
    pub fn load(path: &Path) -> JsonInput {
        match std::fs::read_to_string(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => JsonInput::Missing(path.to_owned()),
            Err(e) => JsonInput::Unreadable(path.to_owned(), e.to_string()),
            Ok(text) => match serde_json::from_str(&text) {
                Ok(value) => JsonInput::Loaded(path.to_owned(), value),
                Err(e) => JsonInput::Unreadable(path.to_owned(), e.to_string()),
            },
        }
    }

    /// The value, if loaded.
    pub fn value(&self) -> Option<&Value> {
        match self {
            JsonInput::Loaded(_, v) => Some(v),
            _ => None,
        }
    }
}

/// The plain-English property names, P1..P10, in the order of DESIGN.md.
pub const PROPERTIES: [&str; 10] = [
    "mutual-exclusion",
    "ownership",
    "fencing",
    "expiry",
    "no-lost-wakeup",
    "bounded-wait",
    "cancel-safety",
    "fifo",
    "crash-safety",
    "resource-safety",
];

/// Every object in `value` (depth first) that satisfies `pick`, with the `backend`, `check`
/// or `mutant` names of its ancestors as context.
pub fn find_objects<'a>(
    value: &'a Value,
    pick: &dyn Fn(&serde_json::Map<String, Value>) -> bool,
) -> Vec<(Vec<String>, &'a Value)> {
    fn walk<'a>(
        value: &'a Value,
        context: &mut Vec<String>,
        pick: &dyn Fn(&serde_json::Map<String, Value>) -> bool,
        out: &mut Vec<(Vec<String>, &'a Value)>,
    ) {
        match value {
            Value::Object(map) => {
                let named = ["backend", "mutant", "check", "system", "fault"]
                    .iter()
                    .find_map(|k| map.get(*k).and_then(Value::as_str).map(|v| format!("{k} {v}")));
                if let Some(name) = &named {
                    context.push(name.clone());
                }
                if pick(map) {
                    out.push((context.clone(), value));
                } else {
                    for child in map.values() {
                        walk(child, context, pick, out);
                    }
                }
                if named.is_some() {
                    context.pop();
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, context, pick, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), pick, &mut out);
    out
}

/// A status word as the report shows it, normalized from the spellings the subcommands use.
/// A parenthesized reason after the word (`predicted (survives_server_restart: false)`, as
/// the fault runs write it) does not change the status.
pub fn normalize_status(raw: &str) -> &'static str {
    let word = raw.split(" (").next().unwrap_or(raw).trim();
    match word.to_ascii_lowercase().replace(['_', ' '], "-").as_str() {
        "passed" | "ok" | "valid" | "safe" | "pass" | "held" => "ok",
        "violated" | "invalid" | "violation" | "fail" | "failed" => "VIOLATED",
        "predicted" | "violation-predicted" | "predicted-violation" | "expected" | "expected-violation" => "predicted",
        "not-claimed" | "unclaimed" | "informational" => "not claimed",
        "unknown" | "indeterminate" | "error" => "UNKNOWN",
        "skipped" | "skip" | "not-run" | "not-checked" => "not run",
        _ => "other",
    }
}

/// A duration as serde writes `std::time::Duration` (`{"secs":…,"nanos":…}`), or seconds,
/// or milliseconds in a field named `*_ms`.
pub fn duration_secs(value: &Value) -> Option<f64> {
    match value {
        Value::Object(map) => {
            let secs = map.get("secs")?.as_f64()?;
            let nanos = map.get("nanos").and_then(Value::as_f64).unwrap_or(0.0);
            Some(secs + nanos / 1e9)
        }
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// A table of the array of objects in `value` with the most rows: one row per object, one
/// column per scalar field (durations formatted), at most `max_columns` columns.
pub fn generic_table(value: &Value, max_columns: usize) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    fn arrays<'a>(value: &'a Value, out: &mut Vec<&'a Vec<Value>>) {
        match value {
            Value::Array(items) => {
                if !items.is_empty() && items.iter().all(Value::is_object) {
                    out.push(items);
                }
                items.iter().for_each(|i| arrays(i, out));
            }
            Value::Object(map) => map.values().for_each(|v| arrays(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    arrays(value, &mut found);
    let rows = found.into_iter().max_by_key(|a| a.len())?;
    let cell = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => Some(String::new()),
            Value::Object(_) => duration_secs(v).map(|s| format!("{s:.3} s")),
            Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => Some(
                items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned).unwrap_or_else(|| i.to_string()))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Value::Array(items) => Some(format!("{} items", items.len())),
        }
    };
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        for (k, v) in row.as_object().into_iter().flatten() {
            // A column is worth showing when some row has a value (not just null) for it.
            if !columns.contains(k) && !v.is_null() && cell(v).is_some() {
                columns.push(k.clone());
            }
        }
    }
    // JSON objects come back with sorted keys; put the naming columns first.
    const FIRST: [&str; 12] = [
        "mutant", "system", "backend", "name", "failure", "expected", "status", "caught", "check", "property", "fault",
        "time",
    ];
    columns.sort_by_key(|c| FIRST.iter().position(|f| c.starts_with(f)).unwrap_or(FIRST.len()));
    columns.truncate(max_columns);
    let table = rows
        .iter()
        .map(|row| columns.iter().map(|c| row.get(c).and_then(cell).unwrap_or_default()).collect())
        .collect();
    Some((columns, table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_normalize() {
        assert_eq!(normalize_status("passed"), "ok");
        assert_eq!(normalize_status("Violated"), "VIOLATED");
        assert_eq!(normalize_status("not-claimed"), "not claimed");
        assert_eq!(normalize_status("violation_predicted"), "predicted");
        assert_eq!(normalize_status("predicted (survives_server_restart: false)"), "predicted");
        assert_eq!(normalize_status("violated (no reason given)"), "VIOLATED");
        assert_eq!(normalize_status("UNKNOWN"), "UNKNOWN");
    }

    #[test]
    fn objects_are_found_with_their_context() {
        let v = json!({"reports": [{"backend": "memory", "checks": [{"check": "wake-up", "counterexamples": [{"property": "fifo", "history": {"operations": []}}]}]}]});
        let found = find_objects(&v, &|m| m.contains_key("history") && m.contains_key("property"));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, vec!["backend memory".to_owned(), "check wake-up".to_owned()]);
    }

    #[test]
    fn generic_tables_take_scalars_and_durations() {
        let v = json!({"mutants": [{"mutant": "a", "caught": true, "elapsed": {"secs": 1, "nanos": 500_000_000}, "history": {"x": 1}}]});
        let (columns, rows) = generic_table(&v, 8).unwrap();
        assert_eq!(columns, vec!["mutant", "caught", "elapsed"]);
        assert_eq!(rows[0], vec!["a", "true", "1.500 s"]);
    }
}
