//! Renders `reports/`: pictures (SVG and PNG) and `reports/README.md` from the latest
//! benchmark runs and the result documents of `lockcheck check`, `selftest`, `model` and the
//! fault runs, read through their types ([`crate::documents`]).
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

use lockcheck_history::{Call, Counterexample, Outcome};
use lockcheck_model::spec::{Property, Status};

use crate::ReportError;
use crate::documents::{CheckDocument, FaultRecord, FaultsDocument, ModelDocument, SelftestDocument};
use crate::results::{Kind, Role};
use charts::{Cell, Curve, Holding, MatrixLayout, TimelineOp, both, ensure_dir};
use inputs::{BenchInputs, Figure, Input, collect_runs};
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
    /// The fault runs' results (the `faults` document the fault tests write).
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
    pub check: Input<CheckDocument>,
    pub selftest: Input<SelftestDocument>,
    pub model: Input<ModelDocument>,
    pub faults: Input<FaultsDocument>,
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

    let check = Input::<CheckDocument>::load(&options.check);
    let selftest = Input::<SelftestDocument>::load(&options.selftest);
    let model = Input::<ModelDocument>::load(&options.model);
    let faults = Input::<FaultsDocument>::load(&options.faults);
    for (what, path, problem, command) in [
        (
            "check results",
            &options.check,
            problem(&check),
            "produce it with `lockcheck check --json reports/raw/check.json`",
        ),
        (
            "selftest results",
            &options.selftest,
            problem(&selftest),
            "produce it with `lockcheck selftest --json reports/raw/selftest.json`",
        ),
        (
            "model results",
            &options.model,
            problem(&model),
            "produce it with `lockcheck model --json reports/raw/model.json`",
        ),
        (
            "fault results",
            &options.faults,
            problem(&faults),
            "the fault tests write it where $LOCKCHECK_FAULTS_OUT names (scripts/test)",
        ),
    ] {
        match problem {
            Some(None) => missing.push(format!("{what}: no {} ({command})", shown(path))),
            Some(Some(why)) => missing.push(format!("{what}: {} is unreadable: {why}", shown(path))),
            None => {}
        }
    }
    let legend = |statuses: &[Status]| -> Vec<(&'static str, RGBColor)> {
        statuses.iter().map(|s| (status_word(*s), charts::status_color(*s))).collect()
    };
    if let Some(document) = check.document() {
        if let Some((rows, columns, cells)) = check_matrix(document) {
            let layout = MatrixLayout::new(&rows, &columns);
            let lookup = |r: usize, c: usize| {
                cells.get(&(r, c)).map(|(s, text)| Cell { text: text.clone(), fill: charts::status_color(*s) })
            };
            let legend = legend(&[Status::Passed, Status::Violated, Status::Unknown, Status::NotClaimed]);
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
            missing.push(format!("check results: {} holds no backend reports", shown(&options.check)));
        }
    }
    if let Some((rows, columns, cells)) = faults.document().and_then(fault_matrix) {
        let layout = MatrixLayout::new(&rows, &columns);
        let lookup = |r: usize, c: usize| {
            cells.get(&(r, c)).map(|(s, text)| Cell { text: text.clone(), fill: charts::status_color(*s) })
        };
        let legend = legend(&[Status::Passed, Status::Violated, Status::Predicted, Status::Unknown]);
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
    } else if faults.document().is_some() {
        missing.push(format!("fault results: {} holds no fault outcomes", shown(&options.faults)));
    }
    let counterexamples = counterexamples(check.document(), selftest.document());
    // A few pictures, one per violated property, mutual exclusion first: it is the one a
    // timeline shows best (two green bars over one red band).
    let mut chosen: Vec<&(String, &Counterexample)> = Vec::new();
    let mut ordered: Vec<&(String, &Counterexample)> = counterexamples.iter().collect();
    ordered.sort_by_key(|c| c.1.property != Property::MutualExclusion);
    for c in ordered {
        if chosen.len() < 4 && !chosen.iter().any(|d| d.1.property == c.1.property) {
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
        missing.push("counterexample timeline: no counterexample history in the check or selftest results".to_owned());
    }
    for (i, (context, counterexample)) in fault_counterexamples(faults.document()).into_iter().enumerate() {
        let Some((title, ops, holdings)) = timeline_of(&context, counterexample) else { continue };
        let height = charts::TimelineLayout::new(&ops, &holdings, 1200).pixel_height().max(360);
        let (svg, png) = both!(out, format!("fault-timeline-{}", i + 1), (1200, height), |a| charts::timeline(
            a, &title, &ops, &holdings
        ))?;
        pictures.entry("fault-timeline").or_default().push((title.clone(), png.clone()));
        rendered.files.extend([svg, png]);
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

/// What is wrong with an input: `None` if it was read, `Some(None)` if it is missing,
/// `Some(Some(why))` if it could not be read.
fn problem<D>(input: &Input<D>) -> Option<Option<&str>> {
    match input {
        Input::Loaded(..) => None,
        Input::Missing(_) => Some(None),
        Input::Unreadable(_, why) => Some(Some(why)),
    }
}

/// A status as the report writes it: one word each.
pub(crate) fn status_word(status: Status) -> &'static str {
    match status {
        Status::NotClaimed => "not claimed",
        Status::NotChecked => "not run",
        Status::Passed => "ok",
        Status::Predicted => "predicted",
        Status::Unknown => "UNKNOWN",
        Status::Violated => "VIOLATED",
    }
}

/// Rows, columns, and each filled cell's status and the words shown in it.
type Matrix = (Vec<String>, Vec<String>, BTreeMap<(usize, usize), (Status, String)>);

/// Backend × property from `lockcheck check` results: each property's status combined over
/// the checks ([`crate::documents::SuiteReport::by_property`]), properties in P1–P10 order.
pub(crate) fn check_matrix(document: &CheckDocument) -> Option<Matrix> {
    if document.backends.is_empty() {
        return None;
    }
    let rows: Vec<String> = document.backends.iter().map(|report| report.backend.clone()).collect();
    let by_row: Vec<BTreeMap<Property, Status>> = document.backends.iter().map(|r| r.by_property()).collect();
    let columns: Vec<Property> =
        Property::ALL.into_iter().filter(|p| by_row.iter().any(|r| r.contains_key(p))).collect();
    let mut cells = BTreeMap::new();
    for (ri, r) in by_row.iter().enumerate() {
        for (ci, c) in columns.iter().enumerate() {
            if let Some(s) = r.get(c) {
                cells.insert((ri, ci), (*s, status_word(*s).to_owned()));
            }
        }
    }
    Some((rows, columns.iter().map(|p| p.id().to_owned()).collect(), cells))
}

/// Backend × fault from the fault runs' results, rows and columns in name order, whatever
/// order the fault tests (which run in parallel) recorded them in.
pub(crate) fn fault_matrix(document: &FaultsDocument) -> Option<Matrix> {
    if document.results.is_empty() {
        return None;
    }
    let outcomes: BTreeMap<(&str, &str), (Status, String)> =
        document.results.iter().map(|r| ((r.backend.as_str(), r.fault.as_str()), (r.status, fault_cell(r)))).collect();
    let rows: Vec<String> = outcomes.keys().map(|(b, _)| b.to_string()).collect::<BTreeSet<_>>().into_iter().collect();
    let columns: Vec<String> =
        outcomes.keys().map(|(_, f)| f.to_string()).collect::<BTreeSet<_>>().into_iter().collect();
    let position = |names: &[String], name: &str| names.iter().position(|x| x == name).expect("collected above");
    let cells = outcomes
        .into_iter()
        .map(|((backend, fault), cell)| ((position(&rows, backend), position(&columns, fault)), cell))
        .collect();
    Some((rows, columns, cells))
}

/// A fault cell's words: its status, and for seeded runs how many of them had it (`ok 3/3`,
/// `VIOLATED 1/3`).
fn fault_cell(record: &FaultRecord) -> String {
    match record.tally() {
        Some((with, of)) => format!("{} {with}/{of}", status_word(record.status)),
        None => status_word(record.status).to_owned(),
    }
}

/// Every counterexample of the check and selftest results, with where it was found
/// (`backend memory, check racing_try_acquires`, `mutant no_ttl`).
fn counterexamples<'a>(
    check: Option<&'a CheckDocument>,
    selftest: Option<&'a SelftestDocument>,
) -> Vec<(String, &'a Counterexample)> {
    let found = check.into_iter().flat_map(|document| {
        document.backends.iter().flat_map(|report| {
            report.counterexamples().map(move |(check, c)| (format!("backend {}, check {check}", report.backend), c))
        })
    });
    let caught = selftest.into_iter().flat_map(|document| {
        document.mutants.iter().filter_map(|m| Some((format!("mutant {}", m.mutant), m.counterexample.as_ref()?)))
    });
    found.chain(caught).collect()
}

/// The fault runs' counterexamples worth a picture: one per backend × fault, unexplained
/// violations first, at most eight.
fn fault_counterexamples(faults: Option<&FaultsDocument>) -> Vec<(String, &Counterexample)> {
    let mut records: Vec<&FaultRecord> =
        faults.into_iter().flat_map(|document| &document.results).filter(|r| r.counterexample.is_some()).collect();
    records.sort_by(|a, b| (b.status, &a.backend, &a.fault).cmp(&(a.status, &b.backend, &b.fault)));
    records
        .into_iter()
        .take(8)
        .filter_map(|record| {
            let seeds: Vec<String> =
                record.runs.iter().filter(|run| run.status == record.status).map(|run| run.seed.to_string()).collect();
            let seeds = if seeds.is_empty() { String::new() } else { format!(", seed {}", seeds.join(", ")) };
            let context = format!("{} × {}{seeds}", record.backend, record.fault);
            Some((context, record.counterexample.as_ref()?))
        })
        .collect()
}

/// A counterexample's operations and holding intervals, in ms.
fn timeline_of(context: &str, counterexample: &Counterexample) -> Option<(String, Vec<TimelineOp>, Vec<Holding>)> {
    let operations = &counterexample.history.operations;
    if operations.is_empty() {
        return None;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    let mut ops = Vec::new();
    let mut grants: Vec<(u32, u32, f64, Option<f64>)> = Vec::new(); // lease, client, from, expiry
    let mut ends: BTreeMap<u32, f64> = BTreeMap::new();
    let mut refreshed: BTreeMap<u32, f64> = BTreeMap::new();
    for op in operations {
        let client = op.client;
        let lease = op.call.lease().0;
        let asked_ttl = match op.call {
            Call::TryAcquire { ttl, .. } | Call::Acquire { ttl, .. } | Call::Refresh { ttl, .. } => Some(ms(ttl)),
            _ => None,
        };
        let start = ms(op.invoked);
        let end = op.returned.map(ms);
        let detail = match &op.outcome {
            Outcome::Granted { fence, .. } => format!("granted, fence {fence}"),
            Outcome::Released { held } | Outcome::Refreshed { held, .. } => {
                format!("{}, held={held}", op.outcome.name())
            }
            other => other.name().replace('-', " "),
        };
        let status = match op.outcome {
            Outcome::Pending | Outcome::Indeterminate { .. } => Some(Status::Unknown),
            Outcome::Granted { .. }
            | Outcome::Released { .. }
            | Outcome::Refreshed { .. }
            | Outcome::Remaining { .. } => Some(Status::Passed),
            _ => None,
        };
        ops.push(TimelineOp {
            client,
            start_ms: start,
            end_ms: end,
            label: format!("{} L{lease} → {detail}", op.call.name()),
            status,
        });
        match (&op.call, &op.outcome) {
            (Call::Acquire { .. } | Call::TryAcquire { .. }, Outcome::Granted { acquired_at, .. }) => {
                let from = end.unwrap_or(start);
                grants.push((lease, client, from, asked_ttl.map(|t| ms(*acquired_at) + t)));
            }
            (Call::Acquire { .. } | Call::TryAcquire { .. }, Outcome::Pending | Outcome::Indeterminate { .. }) => {
                // It may have been granted: a holding that may have started at once.
                grants.push((lease, client, start, asked_ttl.map(|t| start + t)));
            }
            (Call::Release { .. }, _) => {
                ends.entry(lease).and_modify(|e| *e = e.min(start)).or_insert(start);
            }
            (Call::Refresh { .. }, Outcome::Refreshed { held: true, .. }) => {
                if let Some(t) = asked_ttl {
                    let until = end.unwrap_or(start) + t;
                    refreshed.entry(lease).and_modify(|e| *e = e.max(until)).or_insert(until);
                }
            }
            _ => {}
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
    let title = format!("{} violated{where_}: {}", counterexample.property.id(), counterexample.summary);
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
mod tests;
