//! Renders `reports/`: pictures (SVG and PNG) and `reports/README.md` from the latest
//! benchmark runs and the JSON results of `lockcheck check`, `selftest`, `model` and the fault
//! runs.
//!
//! Inputs are read tolerantly: a missing or unreadable input leaves its section saying so
//! (and which command produces it) instead of failing the whole report. The benchmark runs a
//! report uses are copied to `reports/raw/bench/`, so the committed report can be rendered
//! again from what is committed.

mod charts;
mod font;
pub mod inputs;
mod readme;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::ReportError;
use crate::results::{Kind, Role};
use charts::{Cell, Curve, Holding, MatrixLayout, TimelineOp, both, ensure_dir};
use inputs::{BenchInputs, Figure, JsonInput, PROPERTIES, collect_runs, find_objects, normalize_status};
use plotters::prelude::*;

/// What to render from and where to.
#[derive(Clone, Debug)]
pub struct RenderOptions {
    /// The report folder (`reports/`).
    pub out: PathBuf,
    /// Folders of benchmark runs (`<dir>/<suite>/*.json`); `<out>/raw/bench` is always read
    /// too.
    pub bench_dirs: Vec<PathBuf>,
    /// How many of the newest runs per suite the medians are over.
    pub runs: usize,
    /// `lockcheck check --json` output.
    pub check: PathBuf,
    /// `lockcheck selftest --json` output.
    pub selftest: PathBuf,
    /// `lockcheck model --json` output.
    pub model: PathBuf,
    /// Fault-run results.
    pub faults: PathBuf,
}

impl RenderOptions {
    /// The defaults: `reports/` of the workspace, runs from [`crate::results_dir`], the other
    /// results from `reports/raw/{check,selftest,model,faults}.json`.
    pub fn new(out: PathBuf) -> Self {
        let raw = out.join("raw");
        RenderOptions {
            bench_dirs: vec![crate::results_dir()],
            runs: 5,
            check: raw.join("check.json"),
            selftest: raw.join("selftest.json"),
            model: raw.join("model.json"),
            faults: raw.join("faults.json"),
            out,
        }
    }
}

/// What a render produced.
#[derive(Debug, Default)]
pub struct Rendered {
    /// Every file written.
    pub files: Vec<PathBuf>,
    /// Inputs that were missing or unreadable, in words.
    pub missing: Vec<String>,
}

/// Everything the README is written from.
pub(crate) struct Report {
    pub options: RenderOptions,
    pub bench: BenchInputs,
    pub figures: BTreeMap<String, Vec<Figure>>,
    pub pictures: BTreeMap<&'static str, Vec<(String, PathBuf)>>,
    pub check: JsonInput,
    pub selftest: JsonInput,
    pub model: JsonInput,
    pub faults: JsonInput,
    pub missing: Vec<String>,
}

/// Renders the report folder. Fails only when nothing can be drawn at all (no font) or a file
/// cannot be written; missing inputs are listed in [`Rendered::missing`] and in the README.
pub fn render(options: &RenderOptions) -> Result<Rendered, ReportError> {
    font::ensure_font()?;
    let out = &options.out;
    let raw_bench = out.join("raw").join("bench");
    ensure_dir(&raw_bench)?;
    let mut dirs = options.bench_dirs.clone();
    dirs.push(raw_bench.clone());
    let bench = collect_runs(&dirs, options.runs.max(1));
    let mut rendered = Rendered::default();
    keep_runs(&bench, &raw_bench, &mut rendered)?;

    let figures: BTreeMap<String, Vec<Figure>> =
        bench.runs.iter().map(|(suite, runs)| (suite.clone(), inputs::figures(suite, runs))).collect();
    let all: Vec<Figure> = figures.values().flatten().cloned().collect();
    let mut pictures: BTreeMap<&'static str, Vec<(String, PathBuf)>> = BTreeMap::new();
    let mut missing = bench.problems.clone();
    if bench.runs.is_empty() {
        missing.push(format!(
            "no benchmark runs in {}: run `cargo bench -p lockcheck-bench` (or with LOCKCHECK_BENCH=quick)",
            dirs.iter().map(|d| shown(d)).collect::<Vec<_>>().join(" or ")
        ));
    }

    if all.iter().any(|f| matches!(f.kind, Kind::HandOff { .. })) {
        let (svg, png) = both!(out, "hand-off-vs-waiters", (1400, 700), |a| charts::hand_off_vs_waiters(a, &all))?;
        pictures.entry("hand-off").or_default().push(("all backends".to_owned(), png.clone()));
        rendered.files.extend([svg, png]);
    }
    if all.iter().any(|f| f.ops_per_sec.is_some()) {
        let (svg, png) = both!(out, "throughput-vs-clients", (1400, 700), |a| charts::throughput_vs_clients(a, &all))?;
        pictures.entry("throughput").or_default().push(("all backends".to_owned(), png.clone()));
        rendered.files.extend([svg, png]);
    }
    for (suite, runs) in &bench.runs {
        let curves = cdf_curves(&runs[0].1);
        if curves.is_empty() {
            continue;
        }
        let title = format!("{suite}: hand-off latency distribution (newest run)");
        let (svg, png) = both!(out, format!("cdf-{suite}"), (1400, 660), |a| charts::cdf_chart(a, &title, &curves))?;
        pictures.entry("cdf").or_default().push((suite.clone(), png.clone()));
        rendered.files.extend([svg, png]);
    }

    let check = JsonInput::load(&options.check);
    let selftest = JsonInput::load(&options.selftest);
    let model = JsonInput::load(&options.model);
    let faults = JsonInput::load(&options.faults);
    for (what, input, command) in [
        ("check results", &check, "produce it with `lockcheck check --json reports/raw/check.json`"),
        ("selftest results", &selftest, "produce it with `lockcheck selftest --json reports/raw/selftest.json`"),
        ("model results", &model, "produce it with `lockcheck model --json reports/raw/model.json`"),
        (
            "fault results",
            &faults,
            "a JSON array of {backend, fault, outcome: safe | violation | predicted-violation}; no command writes it yet",
        ),
    ] {
        match input {
            JsonInput::Missing(path) => missing.push(format!("{what}: no {} ({command})", shown(path))),
            JsonInput::Unreadable(path, why) => missing.push(format!("{what}: {} is unreadable: {why}", shown(path))),
            JsonInput::Loaded(..) => {}
        }
    }
    if let Some(value) = check.value() {
        if let Some((rows, columns, cells)) = check_matrix(value) {
            let layout = MatrixLayout::new(&rows, &columns);
            let lookup = |r: usize, c: usize| {
                cells.get(&(r, c)).map(|s| Cell { text: s.to_string(), fill: charts::status_color(s) })
            };
            let legend = [
                ("ok", charts::status_color("ok")),
                ("VIOLATED", charts::status_color("VIOLATED")),
                ("UNKNOWN", charts::status_color("UNKNOWN")),
                ("not claimed", charts::status_color("not claimed")),
            ];
            let (svg, png) = both!(out, "check-matrix", layout.size(), |a| charts::matrix(
                a,
                "lockcheck check: backend × property",
                &rows,
                &columns,
                &lookup,
                &legend
            ))?;
            pictures.entry("check").or_default().push(("check".to_owned(), png.clone()));
            rendered.files.extend([svg, png]);
        } else {
            missing.push(format!(
                "check results: {} holds no backend reports (objects with `backend` and `checks`)",
                shown(&options.check)
            ));
        }
    }
    let fault_sources: Vec<&Value> = [faults.value(), check.value()].into_iter().flatten().collect();
    if let Some((rows, columns, cells)) = fault_sources.iter().find_map(|v| fault_matrix(v)) {
        let layout = MatrixLayout::new(&rows, &columns);
        let lookup = |r: usize, c: usize| {
            cells.get(&(r, c)).map(|s| Cell { text: s.to_string(), fill: charts::status_color(s) })
        };
        let legend = [
            ("ok", charts::status_color("ok")),
            ("VIOLATED", charts::status_color("VIOLATED")),
            ("predicted", charts::status_color("predicted")),
            ("UNKNOWN", charts::status_color("UNKNOWN")),
        ];
        let (svg, png) = both!(out, "fault-matrix", layout.size(), |a| charts::matrix(
            a,
            "Faults: backend × fault",
            &rows,
            &columns,
            &lookup,
            &legend
        ))?;
        pictures.entry("faults").or_default().push(("faults".to_owned(), png.clone()));
        rendered.files.extend([svg, png]);
    } else if faults.value().is_some() {
        missing.push(format!(
            "fault results: {} holds no fault outcomes (objects with `fault` and an outcome)",
            shown(&options.faults)
        ));
    }
    let counterexamples: Vec<(String, &Value)> = [check.value(), selftest.value(), faults.value()]
        .into_iter()
        .flatten()
        .flat_map(|v| {
            find_objects(v, &|m| {
                m.contains_key("property") && m.get("history").is_some_and(|h| h.get("operations").is_some())
            })
        })
        .map(|(context, v)| (context.join(", "), v))
        .collect();
    // A few pictures, one per violated property, mutual exclusion first: it is the one a
    // timeline shows best (two green bars over one red band).
    let mut chosen: Vec<&(String, &Value)> = Vec::new();
    let property = |c: &(String, &Value)| c.1.get("property").and_then(Value::as_str).unwrap_or("").to_owned();
    let mut ordered: Vec<&(String, &Value)> = counterexamples.iter().collect();
    ordered.sort_by_key(|c| property(c) != "mutual-exclusion");
    for c in ordered {
        if chosen.len() < 4 && !chosen.iter().any(|d| property(d) == property(c)) {
            chosen.push(c);
        }
    }
    for (i, (context, counterexample)) in chosen.into_iter().enumerate() {
        let Some((title, ops, holdings)) = timeline_of(context, counterexample) else { continue };
        let height = charts::TimelineLayout::new(&ops, &holdings, 1200).pixel_height().max(360);
        let (svg, png) = both!(out, format!("timeline-{}", i + 1), (1200, height), |a| charts::timeline(
            a, &title, &ops, &holdings
        ))?;
        pictures.entry("timeline").or_default().push((title.clone(), png.clone()));
        rendered.files.extend([svg, png]);
    }
    if counterexamples.is_empty() {
        missing.push(
            "counterexample timeline: no counterexample history in the check, selftest or fault results".to_owned(),
        );
    }

    let report = Report { options: options.clone(), bench, figures, pictures, check, selftest, model, faults, missing };
    let readme = out.join("README.md");
    std::fs::write(&readme, readme::readme(&report)).map_err(|e| ReportError::File(readme.clone(), e))?;
    rendered.files.push(readme);
    rendered.missing = report.missing;
    Ok(rendered)
}

/// Copies the runs a report uses into `raw_bench` and removes the ones it no longer uses, so
/// the committed report can be rendered again from what is committed.
fn keep_runs(bench: &BenchInputs, raw_bench: &Path, rendered: &mut Rendered) -> Result<(), ReportError> {
    for (suite, runs) in &bench.runs {
        let folder = raw_bench.join(suite);
        ensure_dir(&folder)?;
        let keep: Vec<PathBuf> =
            runs.iter().map(|(path, _)| folder.join(path.file_name().unwrap_or_default())).collect();
        for (path, _) in runs {
            let target = folder.join(path.file_name().unwrap_or_default());
            if *path != target {
                std::fs::copy(path, &target).map_err(|e| ReportError::File(target.clone(), e))?;
            }
            rendered.files.push(target);
        }
        for old in std::fs::read_dir(&folder).map_err(|e| ReportError::File(folder.clone(), e))?.flatten() {
            if !keep.contains(&old.path()) {
                std::fs::remove_file(old.path()).map_err(|e| ReportError::File(old.path(), e))?;
            }
        }
    }
    Ok(())
}

/// Hand-off CDFs of the newest run: the fewest, a middle and the most waiters, for every
/// subject, floor and peer.
fn cdf_curves(run: &crate::BenchRun) -> Vec<Curve> {
    let mut waiters: Vec<usize> = run
        .measurements
        .iter()
        .filter_map(|m| if let Kind::HandOff { waiters } = m.kind { Some(waiters) } else { None })
        .collect();
    waiters.sort_unstable();
    waiters.dedup();
    let picked: Vec<usize> = match waiters.len() {
        0 => return Vec::new(),
        1 | 2 => waiters.clone(),
        n => vec![waiters[0], waiters[n / 2], waiters[n - 1]],
    };
    let mut subjects: Vec<(String, Role)> = Vec::new();
    for m in &run.measurements {
        if matches!(m.kind, Kind::HandOff { .. }) && !subjects.contains(&(m.subject.clone(), m.role)) {
            subjects.push((m.subject.clone(), m.role));
        }
    }
    let mut curves = Vec::new();
    for (subject, role) in &subjects {
        // The how-manieth subject of its role: two peers (or two subjects) get colours of
        // their own instead of sharing the queue lengths' colours.
        let nth = subjects.iter().filter(|s| s.1 == *role).position(|s| &s.0 == subject).unwrap_or(0);
        for &w in &picked {
            if let Some(m) = run
                .measurements
                .iter()
                .find(|m| &m.subject == subject && m.role == *role && m.kind == Kind::HandOff { waiters: w })
            {
                let who = match role {
                    Role::Subject => subject.clone(),
                    Role::Floor => format!("{subject} (floor)"),
                    Role::Peer => format!("{subject} (peer)"),
                };
                curves.push(Curve {
                    label: format!("{who}, {w} waiter{}", if w == 1 { "" } else { "s" }),
                    floor: *role == Role::Floor,
                    thin: *role == Role::Peer,
                    // One colour per queue length and series of a role; floors dashed, peers
                    // thin, subjects thick.
                    color: picked.iter().position(|&p| p == w).unwrap_or(0) + nth * picked.len(),
                    points: m.latency.cdf.clone(),
                    p999: m.latency.p999_ns,
                });
            }
        }
    }
    curves
}

type Matrix = (Vec<String>, Vec<String>, BTreeMap<(usize, usize), &'static str>);

/// Backend × property from `lockcheck check` results: each property's status combined over
/// the checks (violated > unknown > ok > not claimed).
pub(crate) fn check_matrix(value: &Value) -> Option<Matrix> {
    let reports = find_objects(value, &|m| {
        m.get("backend").is_some_and(Value::is_string) && m.get("checks").is_some_and(Value::is_array)
    });
    if reports.is_empty() {
        return None;
    }
    let rank = |s: &str| match s {
        "VIOLATED" => 5,
        "UNKNOWN" => 4,
        "predicted" => 3,
        "ok" => 2,
        "not claimed" => 1,
        _ => 0,
    };
    let mut rows = Vec::new();
    let mut by_row: Vec<BTreeMap<String, &'static str>> = Vec::new();
    for (_, report) in &reports {
        let mut statuses: BTreeMap<String, &'static str> = BTreeMap::new();
        for check in report["checks"].as_array().into_iter().flatten() {
            for (property, status) in check.get("properties").and_then(Value::as_object).into_iter().flatten() {
                let s = normalize_status(status.as_str().unwrap_or("unknown"));
                let entry = statuses.entry(property.clone()).or_insert(s);
                if rank(s) > rank(entry) {
                    *entry = s;
                }
            }
        }
        rows.push(report["backend"].as_str().unwrap_or("?").to_owned());
        by_row.push(statuses);
    }
    let mut columns: Vec<String> =
        PROPERTIES.iter().map(|p| p.to_string()).filter(|p| by_row.iter().any(|r| r.contains_key(p))).collect();
    for r in &by_row {
        for p in r.keys() {
            if !columns.contains(p) {
                columns.push(p.clone());
            }
        }
    }
    let mut cells = BTreeMap::new();
    for (ri, r) in by_row.iter().enumerate() {
        for (ci, c) in columns.iter().enumerate() {
            if let Some(s) = r.get(c) {
                cells.insert((ri, ci), *s);
            }
        }
    }
    Some((rows, columns, cells))
}

/// Backend × fault from fault results: objects with a `fault` name and an outcome (`outcome`,
/// `verdict`, `status` or `result`, a string or a tagged object); the backend comes from the
/// object or an enclosing one.
pub(crate) fn fault_matrix(value: &Value) -> Option<Matrix> {
    let outcome_of = |m: &serde_json::Map<String, Value>| -> Option<&'static str> {
        ["outcome", "verdict", "status", "result"].iter().find_map(|k| match m.get(*k)? {
            Value::String(s) => Some(normalize_status(s)),
            Value::Object(o) => o
                .values()
                .find_map(Value::as_str)
                .map(normalize_status)
                .or_else(|| o.keys().next().map(|k| normalize_status(k))),
            _ => None,
        })
    };
    let found = find_objects(value, &|m| m.get("fault").is_some_and(Value::is_string) && outcome_of(m).is_some());
    if found.is_empty() {
        return None;
    }
    // Outcomes by (backend, fault); rows and columns in name order, whatever order the fault
    // tests (which run in parallel) appended them in.
    let mut outcomes: BTreeMap<(String, String), &str> = BTreeMap::new();
    for (context, v) in found {
        let m = v.as_object()?;
        let backend = m
            .get("backend")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| context.iter().rev().find_map(|c| c.strip_prefix("backend ").map(str::to_owned)))
            .unwrap_or_else(|| "?".to_owned());
        let fault = m["fault"].as_str().unwrap_or("?").to_owned();
        outcomes.insert((backend, fault), outcome_of(m).unwrap_or("UNKNOWN"));
    }
    let rows: Vec<String> =
        outcomes.keys().map(|(backend, _)| backend.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let columns: Vec<String> =
        outcomes.keys().map(|(_, fault)| fault.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let position = |names: &[String], name: &str| names.iter().position(|x| x == name).expect("collected above");
    let cells = outcomes
        .into_iter()
        .map(|((backend, fault), outcome)| ((position(&rows, &backend), position(&columns, &fault)), outcome))
        .collect();
    Some((rows, columns, cells))
}

/// A counterexample's operations and holding intervals, in ms.
fn timeline_of(context: &str, counterexample: &Value) -> Option<(String, Vec<TimelineOp>, Vec<Holding>)> {
    let property = counterexample.get("property").and_then(Value::as_str).unwrap_or("?");
    let summary = counterexample.get("summary").and_then(Value::as_str).unwrap_or("");
    let ops_json = counterexample["history"]["operations"].as_array()?;
    if ops_json.is_empty() {
        return None;
    }
    let ms = |v: &Value| v.as_f64().map(|us| us / 1000.0);
    let mut ops = Vec::new();
    let mut grants: Vec<(u64, u32, f64, Option<f64>)> = Vec::new(); // lease, client, from, expiry
    let mut ends: BTreeMap<u64, f64> = BTreeMap::new();
    let mut refreshed: BTreeMap<u64, f64> = BTreeMap::new();
    for op in ops_json {
        let client = op.get("client").and_then(Value::as_u64).unwrap_or(0) as u32;
        let call = op.get("call").and_then(Value::as_str).unwrap_or("?");
        let outcome = op.get("outcome").and_then(Value::as_str).unwrap_or("?");
        let lease = op.get("lease").and_then(Value::as_u64);
        let start = op.get("invoked").and_then(ms).unwrap_or(0.0);
        let end = op.get("returned").and_then(ms);
        let detail = match outcome {
            "granted" => format!("granted, fence {}", op.get("fence").map(|f| f.to_string()).unwrap_or_default()),
            "released" | "refreshed" => {
                format!("{outcome}, held={}", op.get("held").map(|h| h.to_string()).unwrap_or_default())
            }
            other => other.replace('-', " "),
        };
        let status = match outcome {
            "pending" | "indeterminate" => "UNKNOWN",
            "granted" | "released" | "refreshed" | "remaining" => "ok",
            _ => "other",
        };
        let lease_label = lease.map(|l| format!(" L{l}")).unwrap_or_default();
        ops.push(TimelineOp {
            client,
            start_ms: start,
            end_ms: end,
            label: format!("{call}{lease_label} → {detail}"),
            status,
        });
        if let Some(lease) = lease {
            match (call, outcome) {
                ("acquire" | "try-acquire", "granted") => {
                    let from = end.unwrap_or(start);
                    let ttl = op.get("ttl").and_then(ms);
                    let at = op.get("acquired_at").and_then(ms).unwrap_or(start);
                    grants.push((lease, client, from, ttl.map(|t| at + t)));
                }
                ("acquire" | "try-acquire", "pending" | "indeterminate") => {
                    // It may have been granted: a holding that may have started at once.
                    let ttl = op.get("ttl").and_then(ms);
                    grants.push((lease, client, start, ttl.map(|t| start + t)));
                }
                ("release", _) => {
                    ends.entry(lease).and_modify(|e| *e = e.min(start)).or_insert(start);
                }
                ("refresh", "refreshed") if op.get("held").and_then(Value::as_bool) == Some(true) => {
                    if let Some(t) = op.get("ttl").and_then(ms) {
                        let until = end.unwrap_or(start) + t;
                        refreshed.entry(lease).and_modify(|e| *e = e.max(until)).or_insert(until);
                    }
                }
                _ => {}
            }
        }
    }
    let history_end = ops.iter().map(|o| o.end_ms.unwrap_or(o.start_ms)).fold(0.0, f64::max);
    let holdings = grants
        .into_iter()
        .map(|(lease, client, from, expiry)| {
            let expiry = match (expiry, refreshed.get(&lease)) {
                (Some(e), Some(r)) => Some(e.max(*r)),
                (e, r) => e.or(r.copied()),
            };
            let to = [ends.get(&lease).copied(), expiry].into_iter().flatten().fold(f64::MAX, f64::min);
            let to = if to == f64::MAX { history_end } else { to };
            Holding { client, from_ms: from, to_ms: to.max(from), label: format!("L{lease} held") }
        })
        .collect();
    let where_ = if context.is_empty() { String::new() } else { format!(" ({context})") };
    let title = format!("{property} violated{where_}: {summary}");
    let title =
        if title.chars().count() > 110 { format!("{}…", title.chars().take(109).collect::<String>()) } else { title };
    Some((title, ops, holdings))
}

/// A path as the report shows it: relative to the workspace when inside it, so a committed
/// report does not name one machine's folders.
pub(crate) fn shown(path: &Path) -> String {
    let root = crate::workspace_root();
    path.strip_prefix(&root).unwrap_or(path).display().to_string()
}

/// A latency for humans: `850 ns`, `12.3 µs`, `4.56 ms`, `1.2 s`.
pub fn format_ns(ns: f64) -> String {
    if !ns.is_finite() {
        return "–".to_owned();
    }
    // Three significant digits, no trailing zeros: `1 µs`, `12.3 µs`, `456 µs`.
    let (value, unit) = match ns {
        _ if ns < 1e3 => return format!("{ns:.0} ns"),
        _ if ns < 1e6 => (ns / 1e3, "µs"),
        _ if ns < 1e9 => (ns / 1e6, "ms"),
        _ => (ns / 1e9, "s"),
    };
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.') } else { &text };
    format!("{text} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fault_matrix_does_not_depend_on_the_order_faults_were_recorded_in() {
        let outcome = |backend: &str, fault: &str, outcome: &str| serde_json::json!({ "backend": backend, "fault": fault, "outcome": outcome });
        let recorded = vec![
            outcome("redis", "server restarted", "ok"),
            outcome("nats", "client crashed", "ok"),
            outcome("redis+quorum", "one instance killed", "ok"),
            outcome("nats", "server restarted", "predicted"),
        ];
        let mut reversed = recorded.clone();
        reversed.reverse();
        let forward = fault_matrix(&Value::Array(recorded)).expect("faults found");
        let backward = fault_matrix(&Value::Array(reversed)).expect("faults found");
        assert_eq!(forward, backward);
        let (rows, columns, cells) = forward;
        assert_eq!(rows, ["nats", "redis", "redis+quorum"]);
        assert_eq!(columns, ["client crashed", "one instance killed", "server restarted"]);
        assert_eq!(cells.get(&(0, 2)).copied(), Some(normalize_status("predicted")));
        assert_eq!(cells.len(), 4);
    }
}
