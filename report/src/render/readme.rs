//! `reports/README.md`: the tables that tie the pictures together.

use std::fmt::Write;
use std::path::Path;

use super::charts::format_rate;
use super::inputs::Figure;
use super::{Report, check_matrix, fault_matrix, format_ns, status_word};
use crate::documents::{FaultRecord, FaultsDocument, ModelDocument, SelftestDocument};
use crate::results::{Kind, Role};
use lockcheck_model::spec::Status;

/// A target from the issues, as a ratio to the floor of the same run.
struct Target {
    what: String,
    kind: fn(Kind) -> bool,
    at_most: f64,
}

/// The targets of a suite as rows of the report (see [`crate::targets`]).
fn targets(suite: &str) -> Vec<Target> {
    let t = crate::targets::for_suite(suite);
    let mut rows = Vec::new();
    if let Some(at_most) = t.uncontended {
        rows.push(Target {
            what: format!("uncontended acquire + release ≤ {at_most}× {}", t.floor),
            kind: |k| k == Kind::Uncontended,
            at_most,
        });
    }
    if let Some(at_most) = t.hand_off {
        rows.push(Target {
            what: format!("hand-off ≤ {at_most}× {}, at every queue length", t.floor),
            kind: |k| matches!(k, Kind::HandOff { .. }),
            at_most,
        });
    }
    rows
}

/// dflockd: the reference server's throughput with the most clients, at least this multiple
/// of the Python server's in the same runs.
const PEER_THROUGHPUT: f64 = match crate::targets::DFLOCKD.peer_speedup {
    Some(speedup) => speedup,
    None => f64::INFINITY,
};

const FLATNESS: f64 = crate::targets::FLATNESS;

fn picture(out: &mut String, report: &Report, png: &Path, alt: &str) {
    let name = png.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let svg = name.replace(".png", ".svg");
    let _ = writeln!(out, "![{alt}]({name})\n\n[SVG]({svg})\n");
    let _ = report;
}

fn ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "–".to_owned())
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The subject's throughput with the most clients against the peer's at the same shape: a
/// row of the targets table.
fn peer_throughput(o: &mut String, figures: &[Figure], subject: &str) {
    let most = |role: Role| {
        figures
            .iter()
            .filter(|f| f.role == role && (role != Role::Subject || f.subject == subject))
            .filter_map(|f| match f.kind {
                Kind::Throughput { clients, keys } => Some((clients, keys, f.ops_per_sec?, f.subject.clone())),
                _ => None,
            })
            .max_by_key(|t| (t.0, t.1))
    };
    let (Some(ours), Some(theirs)) = (most(Role::Subject), most(Role::Peer)) else { return };
    if (ours.0, ours.1) != (theirs.0, theirs.1) || theirs.2 <= 0.0 {
        return;
    }
    let speedup = ours.2 / theirs.2;
    let verdict = if speedup >= PEER_THROUGHPUT { "met" } else { "**missed**" };
    let _ = writeln!(
        o,
        "| {} | throughput at {} clients ≥ {}× {} | {} vs {} = {speedup:.1}× | {verdict} |",
        escape(subject),
        ours.0,
        PEER_THROUGHPUT,
        escape(&theirs.3),
        format_rate(ours.2),
        format_rate(theirs.2),
    );
}

pub(crate) fn readme(report: &Report) -> String {
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(o, "# lockcheck reports\n");
    let _ = writeln!(
        o,
        "Rendered by `lockcheck report` from the newest benchmark runs (medians over up to {} runs per backend; \
         every ratio compares figures of the *same* run) and the result documents of `lockcheck check`, `selftest` and `model`.\n",
        report.options.runs
    );
    let _ = writeln!(o, "**Regenerate:**\n");
    let _ = writeln!(o, "```sh");
    let _ = writeln!(o, "export CARGO_TARGET_DIR=${{CARGO_TARGET_DIR:-target}}");
    let _ = writeln!(
        o,
        "for run in 1 2 3; do LOCKCHECK_BENCH=quick cargo bench -p lockcheck-bench; done   # full mode: drop LOCKCHECK_BENCH"
    );
    let _ = writeln!(
        o,
        "cargo run --release --bin lockcheck -- check --backend memory --backend redis://HOST:PORT/1 --backend nats://HOST:PORT --json reports/raw/check.json"
    );
    let _ = writeln!(o, "cargo run --release --bin lockcheck -- selftest --json reports/raw/selftest.json");
    let _ = writeln!(o, "cargo run --release --bin lockcheck -- model --until-expected --json reports/raw/model.json");
    let _ = writeln!(o, "cargo run --release --bin lockcheck -- report");
    let _ = writeln!(o, "```\n");
    let _ = writeln!(
        o,
        "`check` runs against any Redis and NATS servers given (the committed results: `lockcheck/redis:7` and \
         `lockcheck/nats:2` containers from `scripts/setup`); the fault results come from the fault tests in \
         `scripts/test` (`$LOCKCHECK_HOME/results/faults.json`, copied to `reports/raw/faults.json`).\n"
    );
    let _ = writeln!(
        o,
        "The benchmark runs used here are copied to `reports/raw/bench/` on the machine that renders this page, where `lockcheck report` renders them again as they are; `reports/raw/` is git-ignored (machine-specific JSON), so a clone has the rendered figures only.\n"
    );

    // At a glance.
    let _ = writeln!(o, "## At a glance\n");
    if let Some((_, png)) = report.pictures.get("hand-off").and_then(|p| p.first()) {
        picture(o, report, png, "hand-off latency against queued waiters, every backend");
        let _ = writeln!(
            o,
            "Hand-off latency: the time from the holder calling release to the next waiter running with the lock, \
             with 1 … 64 waiters queued. The holder releases once every waiter has called lock and, where the \
             contender counts its waiting acquires (our NATS and Redis lockers, the Go original's Redis port, rslock), is \
             counted: a look made after its subscription or queue entry reached the server found the key held. Dots are medians, whiskers reach the 99th percentile; dashed lines are floors (the \
             fastest possible equivalent, measured in the same run). A good lock is close to its floor and flat.\n"
        );
    }
    if !report.figures.is_empty() {
        let _ = writeln!(
            o,
            "| backend | uncontended p50 | hand-off p50, fewest → most waiters | × floor (fewest → most) | best throughput | runs |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|");
        for figures in report.figures.values() {
            for subject in subjects(figures, |r| r != Role::Floor) {
                let mine: Vec<&Figure> =
                    figures.iter().filter(|f| f.subject == subject.0 && f.role == subject.1).collect();
                let unc = mine.iter().find(|f| f.kind == Kind::Uncontended);
                let hand: Vec<&&Figure> = mine.iter().filter(|f| matches!(f.kind, Kind::HandOff { .. })).collect();
                let (first, last) = (hand.first(), hand.last());
                let best = mine
                    .iter()
                    .filter_map(|f| f.ops_per_sec)
                    .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
                let name = if subject.1 == Role::Peer { format!("{} (peer)", subject.0) } else { subject.0.clone() };
                let _ = writeln!(
                    o,
                    "| {} | {} ({}) | {} → {} | {} → {} | {} | {} |",
                    escape(&name),
                    unc.map(|f| format_ns(f.p50_ns)).unwrap_or_else(|| "–".into()),
                    ratio(unc.and_then(|f| f.ratio)),
                    first.map(|f| format_ns(f.p50_ns)).unwrap_or_else(|| "–".into()),
                    last.map(|f| format_ns(f.p50_ns)).unwrap_or_else(|| "–".into()),
                    ratio(first.and_then(|f| f.ratio)),
                    ratio(last.and_then(|f| f.ratio)),
                    best.map(format_rate).unwrap_or_else(|| "–".into()),
                    mine.first().map(|f| f.runs).unwrap_or(0),
                );
            }
        }
        let _ = writeln!(o);
    }

    // Targets.
    if !report.figures.is_empty() {
        let _ = writeln!(o, "## Targets\n");
        let _ = writeln!(o, "Ratios are medians over runs of (subject p50 ÷ floor p50 in the same run).\n");
        let _ = writeln!(o, "| backend | target | measured | verdict |");
        let _ = writeln!(o, "|---|---|---|---|");
        for (suite, figures) in &report.figures {
            for subject in subjects(figures, |r| r == Role::Subject) {
                let mine: Vec<&Figure> =
                    figures.iter().filter(|f| f.subject == subject.0 && f.role == Role::Subject).collect();
                for t in targets(suite) {
                    let ratios: Vec<(Kind, f64)> =
                        mine.iter().filter(|f| (t.kind)(f.kind)).filter_map(|f| Some((f.kind, f.ratio?))).collect();
                    if ratios.is_empty() {
                        continue;
                    }
                    let worst = ratios.iter().map(|r| r.1).fold(f64::MIN, f64::max);
                    let measured = if ratios.len() == 1 {
                        format!("{worst:.2}×")
                    } else {
                        let best = ratios.iter().map(|r| r.1).fold(f64::MAX, f64::min);
                        format!("{best:.2}× … {worst:.2}×")
                    };
                    let verdict = if worst <= t.at_most { "met" } else { "**missed**" };
                    let _ = writeln!(o, "| {} | {} | {measured} | {verdict} |", escape(&subject.0), t.what);
                }
                let hand: Vec<(usize, f64)> = mine
                    .iter()
                    .filter_map(
                        |f| if let Kind::HandOff { waiters } = f.kind { Some((waiters, f.p50_ns)) } else { None },
                    )
                    .collect();
                if suite == "dflockd" {
                    peer_throughput(o, figures, &subject.0);
                }
                if let (Some(few), Some(many)) = (hand.iter().min_by_key(|h| h.0), hand.iter().max_by_key(|h| h.0))
                    && few.0 != many.0
                {
                    let growth = many.1 / few.1;
                    let verdict = if growth <= FLATNESS { "met" } else { "**missed**" };
                    let _ = writeln!(
                        o,
                        "| {} | hand-off flat in waiters: p50 at {} ≤ {FLATNESS}× p50 at {} | {growth:.2}× | {verdict} |",
                        escape(&subject.0),
                        many.0,
                        few.0
                    );
                }
            }
        }
        let _ = writeln!(o);
    }

    // Machine and versions.
    if !report.bench.runs.is_empty() {
        let _ = writeln!(o, "## Machine and versions\n");
        let _ = writeln!(o, "| backend | mode | runs | measured (UTC) | machine | load avg at start | versions |");
        let _ = writeln!(o, "|---|---|---|---|---|---|---|");
        for (suite, runs) in &report.bench.runs {
            let newest = &runs[0].1;
            let m = &newest.machine;
            let loads: Vec<String> =
                runs.iter().filter_map(|r| r.1.machine.load_average.map(|l| format!("{l:.1}"))).collect();
            let versions: Vec<String> = newest
                .versions
                .iter()
                .map(|(k, v)| if v.starts_with(k.as_str()) { v.clone() } else { format!("{k} {v}") })
                .collect();
            let when = |t: u64| utc(t);
            let oldest = runs.last().map(|r| r.1.started_unix).unwrap_or(newest.started_unix);
            let _ = writeln!(
                o,
                "| {suite} | {:?} | {} | {} … {} | {}, {} CPUs, {} MiB, {} | {} | {} |",
                newest.mode,
                runs.len(),
                when(oldest),
                when(newest.finished_unix),
                escape(&m.cpu),
                m.cpus,
                m.memory_mib.map(|x| x.to_string()).unwrap_or_else(|| "?".into()),
                escape(&m.os),
                loads.join(", "),
                escape(&versions.join(", ")),
            );
        }
        let _ = writeln!(
            o,
            "\nEach backend's newest run was produced by: {}\n",
            report.bench.runs.values().map(|r| format!("`{}`", r[0].1.command)).collect::<Vec<_>>().join(", ")
        );
    }

    // Per-suite tables.
    for (suite, figures) in &report.figures {
        let _ = writeln!(o, "## Benchmark: {suite}\n");
        let _ = writeln!(o, "| measurement | subject | p50 | p99 | max | × floor | ops/s | runs |");
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
        let mut sorted: Vec<&Figure> = figures.iter().collect();
        sorted.sort_by(|a, b| a.kind.cmp(&b.kind).then(a.role.cmp(&b.role)).then(a.subject.cmp(&b.subject)));
        for f in sorted {
            let who = match f.role {
                Role::Subject => f.subject.clone(),
                Role::Floor => format!("{} (floor)", f.subject),
                Role::Peer => format!("{} (peer)", f.subject),
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                f.kind.label(),
                escape(&who),
                format_ns(f.p50_ns),
                format_ns(f.p99_ns),
                format_ns(f.max_ns),
                if f.role == Role::Floor { "1 (floor)".to_owned() } else { ratio(f.ratio) },
                f.ops_per_sec.map(format_rate).unwrap_or_default(),
                f.runs
            );
        }
        let _ = writeln!(
            o,
            "\n× floor: how many times slower than the floor of the same run — median latencies, or for throughput the floor's operations per second over the subject's.\n"
        );
        if let Some((_, png)) = report.pictures.get("cdf").and_then(|p| p.iter().find(|(s, _)| s == suite)) {
            picture(o, report, png, &format!("{suite}: hand-off latency CDF"));
            let _ = writeln!(
                o,
                "How often a hand-off is at most this slow (newest run; dashed: floor). A curve far to the right of its floor, or with a long flat tail, is a lock that makes some waiters wait much longer than others.\n"
            );
        }
        let _ = writeln!(
            o,
            "Uncontended figures of in-process lockers are means over groups of {} operations (one clock read costs about as much as an uncontended tokio mutex); \
             those of network backends timed against a round-trip floor (Redis) are per operation, like hand-off and throughput figures.\n",
            crate::UNCONTENDED_GROUP
        );
    }
    if let Some((_, png)) = report.pictures.get("throughput").and_then(|p| p.first()) {
        let _ = writeln!(o, "## Throughput\n");
        picture(o, report, png, "throughput against clients");
        let _ = writeln!(
            o,
            "Operations per second as clients grow (each: lock, hold it for one turn of the scheduler, release): solid lines contend on one shared key, dashed lines give each client its own key (how the backend scales when clients do not contend).\n"
        );
    }

    // Conformance.
    let _ = writeln!(o, "## Conformance: `lockcheck check`\n");
    match report.check.document().and_then(check_matrix) {
        Some((rows, columns, cells)) => {
            if let Some((_, png)) = report.pictures.get("check").and_then(|p| p.first()) {
                picture(o, report, png, "backend × property verdicts");
            }
            let _ = writeln!(o, "| backend | {} |", columns.join(" | "));
            let _ = writeln!(o, "|---|{}", "---|".repeat(columns.len()));
            for (r, row) in rows.iter().enumerate() {
                let cells: Vec<&str> =
                    (0..columns.len()).map(|c| cells.get(&(r, c)).map_or("–", |(_, text)| text.as_str())).collect();
                let _ = writeln!(o, "| {} | {} |", escape(row), cells.join(" | "));
            }
            let _ = writeln!(o);
        }
        None => {
            let _ = writeln!(
                o,
                "_No check results: run `lockcheck check --json {}`._\n",
                super::shown(&report.options.check)
            );
        }
    }
    let _ = writeln!(o, "## Self-test: `lockcheck selftest` (each flawed locker and what caught it)\n");
    match report.selftest.document() {
        Some(document) if !document.mutants.is_empty() => {
            let _ = writeln!(o, "{}", selftest_table(document));
        }
        Some(_) => {
            let _ = writeln!(o, "_{} holds no table of results._\n", super::shown(&report.options.selftest));
        }
        None => {
            let _ = writeln!(
                o,
                "_No results: run `lockcheck selftest --json {}`._\n",
                super::shown(&report.options.selftest)
            );
        }
    }
    let _ = writeln!(o, "## Model checking: `lockcheck model`\n");
    match report.model.document() {
        Some(document) if !document.outcomes.is_empty() => {
            let _ = writeln!(o, "{}", model_table(document));
        }
        Some(_) => {
            let _ = writeln!(o, "_{} holds no table of results._\n", super::shown(&report.options.model));
        }
        None => {
            let _ =
                writeln!(o, "_No results: run `lockcheck model --json {}`._\n", super::shown(&report.options.model));
        }
    }

    let _ = writeln!(o, "## Faults\n");
    match report.faults.document().and_then(fault_matrix) {
        Some((rows, columns, cells)) => {
            if let Some((_, png)) = report.pictures.get("faults").and_then(|p| p.first()) {
                picture(o, report, png, "backend × fault outcomes");
            }
            let _ = writeln!(o, "| backend | {} |", columns.join(" | "));
            let _ = writeln!(o, "|---|{}", "---|".repeat(columns.len()));
            for (r, row) in rows.iter().enumerate() {
                let cells: Vec<&str> =
                    (0..columns.len()).map(|c| cells.get(&(r, c)).map_or("–", |(_, text)| text.as_str())).collect();
                let _ = writeln!(o, "| {} | {} |", escape(row), cells.join(" | "));
            }
            let _ = writeln!(
                o,
                "\n`predicted`: a violation the backend's declared capabilities predict (e.g. lock loss on a restart without persistence). \
                 `2/3`: two of the cell's three seeded runs had its status (the worst of them).\n"
            );
            if let Some(document) = report.faults.document() {
                fault_findings(o, document);
            }
        }
        None => {
            let _ = writeln!(o, "_No fault results: {}._\n", super::shown(&report.options.faults));
        }
    }

    if let Some(timelines) = report.pictures.get("timeline") {
        let _ = writeln!(o, "## Counterexample timelines\n");
        let _ = writeln!(
            o,
            "One row per client. Boxes are operations from invocation to return (faded: never returned); green bars are the \
             time a client believed it held the lock (grant → release or expiry); red bands are where two clients held it at once.\n"
        );
        for (title, png) in timelines {
            let _ = writeln!(o, "### {}\n", escape(title));
            picture(o, report, png, title);
        }
    }

    if let Some(timelines) = report.pictures.get("fault-timeline") {
        let _ = writeln!(o, "## Fault timelines\n");
        let _ = writeln!(
            o,
            "The history each fault run's checker shrank its violation to, drawn as above: the fault's footprint is in the \
             operations it left undecided (faded).\n"
        );
        for (title, png) in timelines {
            let _ = writeln!(o, "### {}\n", escape(title));
            picture(o, report, png, title);
        }
    }

    if !report.missing.is_empty() {
        let _ = writeln!(o, "## Missing inputs\n");
        for m in &report.missing {
            let _ = writeln!(o, "- {}", escape(m));
        }
        let _ = writeln!(o);
    }
    out
}

/// `lockcheck model --json` output as a table: one row per system, with its search's size
/// and speed and which properties it violated.
fn model_table(document: &ModelDocument) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "| system | clients | unique states | states/s | seconds | search | violated |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|");
    for outcome in &document.outcomes {
        let violated = outcome.violated();
        let search = match (outcome.complete, violated.is_empty()) {
            (true, _) => "exhaustive",
            (false, false) => "stopped at the expected violations",
            (false, true) => "incomplete",
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.0} | {:.2} | {search} | {} |",
            outcome.system,
            outcome.clients,
            outcome.unique_states,
            outcome.states_per_second,
            outcome.seconds,
            if violated.is_empty() { "none".to_owned() } else { escape(&violated.join("; ")) },
        );
    }
    let _ = writeln!(
        o,
        "\nA correct system must be searched exhaustively with nothing violated; a flawed one is searched until its \
         expected violations are found (`--until-expected`), each with a counterexample trace (`lockcheck model SYSTEM`)."
    );
    o
}

/// `lockcheck selftest --json` output as a table: one row per mutant, with the property it
/// breaks, what became of it, what caught it and how fast.
fn selftest_table(document: &SelftestDocument) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| mutant | failure_class | expected | status | caught_by | check | time_to_catch | counterexample_operations |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
    for m in &document.mutants {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {:.3} s | {} |",
            escape(&m.mutant),
            escape(&m.failure_class),
            m.expected.id(),
            m.status,
            m.caught_by.map_or("", |p| p.id()),
            escape(m.check.as_deref().unwrap_or_default()),
            m.time_to_catch.as_secs_f64(),
            m.counterexample_operations.map(|n| n.to_string()).unwrap_or_default(),
        );
    }
    o
}

/// The distinct (subject, role) pairs of `figures` whose role passes `keep`, in order.
fn subjects(figures: &[Figure], keep: impl Fn(Role) -> bool) -> Vec<(String, Role)> {
    let mut out: Vec<(String, Role)> = Vec::new();
    for f in figures.iter().filter(|f| keep(f.role)) {
        if !out.iter().any(|(s, r)| *s == f.subject && *r == f.role) {
            out.push((f.subject.clone(), f.role));
        }
    }
    out
}

/// `2026-11-24 02:40` from Unix seconds (UTC; no calendar crate needed).
fn utc(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

/// Every fault cell that is not plainly ok, named: the property, the claim that predicts it or
/// why it is unknown, and the seeds that replay it.
fn fault_findings(o: &mut String, document: &FaultsDocument) {
    let mut findings: Vec<&FaultRecord> =
        document.results.iter().filter(|record| record.status != Status::Passed).collect();
    if findings.is_empty() {
        return;
    }
    findings.sort_by(|a, b| (&a.backend, &a.fault).cmp(&(&b.backend, &b.fault)));
    for record in findings {
        let mut line =
            format!("- **{} × {}**: {}", escape(&record.backend), escape(&record.fault), status_word(record.status));
        if let Some(property) = record.property {
            line.push_str(&format!(" — {property}"));
        }
        if let Some(claim) = &record.predicted_by {
            line.push_str(&format!(", predicted by `{claim}`"));
        }
        let seeds: Vec<String> =
            record.runs.iter().filter(|run| run.status == record.status).map(|run| run.seed.to_string()).collect();
        if !seeds.is_empty() {
            line.push_str(&format!("; seeds {}", seeds.join(", ")));
        }
        if record.property.is_none()
            && let Some(why) = &record.evidence
        {
            line.push_str(&format!(": {}", escape(why.lines().next().unwrap_or_default())));
        }
        let _ = writeln!(o, "{line}");
    }
    let _ = writeln!(o);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(1_795_919_241), "2026-11-29 02:27");
    }

    #[test]
    fn model_outcomes_become_a_table() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/model.json")).unwrap();
        let document = <ModelDocument as crate::documents::Document>::from_json(&text).unwrap();
        let table = model_table(&document);
        assert!(table.contains("| redis-single | 2 | 321 | 59403 | 0.01 | exhaustive | none |"), "{table}");
        assert!(
            table.contains("| redis-del | 2 | 345 | 65379 | 0.01 | stopped at the expected violations | ownership (only its holder or its TTL frees a lease) |"),
            "{table}"
        );
    }
}
