//! `lockcheck check`: runs the conformance suite against backends and prints a property ×
//! backend table and the minimal counterexamples; exit 1 on any violated or undecided
//! property.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lockcheck_conformance::suite::selected;
use lockcheck_conformance::{Backend, Property, Status, SuiteConfig, SuiteReport, Timing, backends};
use lockcheck_history::{Capabilities, History, KeptHistory, Verdict, check_all};
use lockcheck_report::documents::{CheckDocument, Document, DocumentError};

/// Arguments of `lockcheck check`.
#[derive(clap::Args)]
pub struct Args {
    /// A backend URL; repeatable. Default: the embedded backends (`memory`, …). Schemes:
    /// memory, redis://host:port[/db], redis+all://h1,h2, redis+quorum://h1,h2,h3,
    /// nats://host:port[,host2...][?bucket=B&replicas=N&storage=memory|file&offers=on|off],
    /// dflockd://host:port[,host2...], etcd://host:port[,host2...][?prefix=P],
    /// etcd+lockservice://host:port[,host2...], postgres://user@host:port/db.
    #[arg(long = "backend", value_name = "URL")]
    backends: Vec<String>,
    /// Seed of the randomized checks (default: random, printed; also `LOCKCHECK_SEED`).
    #[arg(long)]
    seed: Option<u64>,
    /// Random cases of the sequential model test and the concurrent workload.
    #[arg(long)]
    cases: Option<u32>,
    /// Write the full results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Run only this check; repeatable (see `--list`).
    #[arg(long = "only", value_name = "CHECK")]
    only: Vec<String>,
    /// Multiply every time bound of the backends' own time scales (slow machines).
    #[arg(long, value_name = "FACTOR")]
    time_scale: Option<f64>,
    /// List the checks and exit.
    #[arg(long)]
    list: bool,
    /// Re-check a recorded history (JSON, as in `--json` output's counterexamples or
    /// `History::to_json`) with every history checker instead of running backends. Timing
    /// and claims are those kept with the history (`$LOCKCHECK_HISTORY_DIR`), else the
    /// in-process defaults; times `--time-scale`.
    #[arg(long, value_name = "FILE", conflicts_with = "backends")]
    recheck: Option<PathBuf>,
}

/// The largest `--time-scale`: a factor beyond it makes minute-long leases of a suite that
/// would take hours, and is a typo.
const MAX_TIME_SCALE: f64 = 100.0;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(factor) = args.time_scale {
        anyhow::ensure!(
            factor.is_finite() && factor > 0.0 && factor <= MAX_TIME_SCALE,
            "--time-scale {factor}: a factor above 0 and at most {MAX_TIME_SCALE} is expected"
        );
    }
    anyhow::ensure!(args.cases != Some(0), "--cases 0 runs no random case: nothing tested is not a pass");
    let env_seed = crate::seed_from_env()?;
    if args.list {
        for check in lockcheck_conformance::CHECKS {
            let covers: Vec<String> = check.covers.iter().map(|p| p.code()).collect();
            println!("{:<34} {:<22} {}", check.name, covers.join(","), check.about);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(path) = &args.recheck {
        return recheck(path, args.time_scale.unwrap_or(1.0));
    }
    let urls = if args.backends.is_empty() {
        backends::default_urls().into_iter().map(str::to_owned).collect()
    } else {
        args.backends.clone()
    };
    let backends: Vec<Box<dyn Backend>> = urls
        .iter()
        .map(|url| backends::from_url(url).with_context(|| format!("--backend {url}")))
        .collect::<anyhow::Result<_>>()?;
    if backends.is_empty() {
        anyhow::bail!("no backend to check: nothing tested is not a pass");
    }
    let mut config = SuiteConfig::default();
    if let Some(seed) = args.seed.or(env_seed) {
        config.seed = seed;
    }
    if let Some(cases) = args.cases {
        config.cases = cases;
    }
    for name in &args.only {
        anyhow::ensure!(lockcheck_conformance::suite::check_info(name).is_some(), "no check named {name} (see --list)");
    }
    config.only = args.only.clone();

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    for backend in &backends {
        reachable(&runtime, backend.as_ref())?;
    }
    eprintln!("lockcheck check: seed {} (rerun with --seed {})", config.seed, config.seed);
    let checks = selected(&config).count() as u64;
    let progress = ProgressBar::new(checks * backends.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid progress template")
            .progress_chars("=> "),
    );
    let mut reports = Vec::new();
    for backend in &backends {
        let mut backend_config = config.clone();
        if let Some(factor) = args.time_scale {
            backend_config.timing = Some(backend.timing().scaled(factor));
        }
        let name = backend.name();
        let report = runtime.block_on(lockcheck_conformance::suite::run_suite_observed(
            backend.as_ref(),
            &backend_config,
            &mut |check, result| match result {
                None => progress.set_message(format!("{name}: {}", check.name)),
                Some(result) => {
                    if result.status() == Status::Violated {
                        progress.println(format!("{name}: {} VIOLATED", check.name));
                    }
                    progress.inc(1);
                }
            },
        ));
        reports.push(report);
    }
    progress.finish_and_clear();

    print_table(&reports);
    print_counterexamples(&reports);
    let failed = reports.iter().any(|report| report.status().is_failure());
    if let Some(path) = &args.json {
        CheckDocument::new(config.seed, reports).write(path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn print_table(reports: &[SuiteReport]) {
    let width = reports.iter().map(|r| r.backend.len()).max().unwrap_or(0).max(12);
    print!("{:<28}", "property");
    for report in reports {
        print!(" {:<width$}", report.backend);
    }
    println!();
    let tables: Vec<_> = reports.iter().map(SuiteReport::by_property).collect();
    for property in Property::ALL {
        print!("{:<28}", property.to_string());
        for table in &tables {
            let cell = table.get(&property).map_or("-".to_owned(), ToString::to_string);
            print!(" {cell:<width$}");
        }
        println!();
    }
    for report in reports {
        let checks = report.checks.len();
        let operations: usize = report.checks.iter().map(|c| c.operations).sum();
        println!(
            "{}: {checks} checks, {operations} operations, {:.1}s, {}",
            report.backend,
            report.elapsed.as_secs_f64(),
            timing_note(&report.timing)
        );
        for claim in report.unchecked_claims() {
            println!("  claimed, not checked: {claim}");
        }
        for check in &report.checks {
            if check.status().is_failure() || matches!(check.status(), Status::Predicted | Status::NotChecked) {
                for note in &check.notes {
                    println!("  {}: {note}", check.check);
                }
            }
        }
    }
}

fn timing_note(timing: &Timing) -> String {
    format!(
        "leases {:?}, tolerance {:?} late / {:?} early, hand-off bound {:?}, cancelled acquires cleaned up within {:?}",
        timing.base_ttl,
        timing.tolerance,
        timing.early_tolerance(),
        timing.prompt,
        timing.cancel_cleanup_bound()
    )
}

fn print_counterexamples(reports: &[SuiteReport]) {
    for report in reports {
        for (check, counterexample) in report.counterexamples() {
            println!("\n{} / {check}: {counterexample}", report.backend);
        }
    }
}

/// How long a backend has to accept one connection before `check` runs anything on it.
const REACH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One connection to `backend` before any check runs: a backend that cannot be reached is
/// reported within seconds, once, with its address and the reason, instead of as an unknown
/// verdict on every check; and since nothing has run yet, nothing is lost.
fn reachable(runtime: &tokio::runtime::Runtime, backend: &dyn Backend) -> anyhow::Result<()> {
    let name = backend.name();
    match runtime.block_on(async { tokio::time::timeout(REACH_TIMEOUT, backend.connect()).await }) {
        Ok(Ok(_locker)) => Ok(()),
        // The locker's message already names the cause; its source chain would repeat it.
        Ok(Err(error)) => anyhow::bail!("{name} cannot be reached; nothing was checked: {error}"),
        Err(_) => anyhow::bail!("{name} accepted no connection within {REACH_TIMEOUT:?}; nothing was checked"),
    }
}

/// `--recheck FILE`: every history checker over a saved history — a kept history
/// (`$LOCKCHECK_HISTORY_DIR`, `History::to_json`), or every counterexample of a `check --json`
/// output, each judged with the time scales and claims of the run that found it.
fn recheck(path: &std::path::Path, time_scale: f64) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let output = match CheckDocument::from_json(&text) {
        Ok(output) => Some(output),
        // Another kind of document, or a newer check document, is refused as such rather
        // than misread as a history.
        Err(error @ (DocumentError::WrongKind { .. } | DocumentError::NewerVersion { .. })) => {
            return Err(anyhow::Error::new(error).context(format!("reading {}", path.display())));
        }
        Err(_) => None,
    };
    if let Some(output) = output {
        let mut failed = false;
        let mut found = 0;
        for report in &output.backends {
            let capabilities = report.capabilities.unwrap_or_else(Capabilities::all_in_process);
            for (check, counterexample) in report.counterexamples() {
                found += 1;
                let timing = match check {
                    "random_workload" => lockcheck_conformance::suite::workload_timing(report.timing),
                    _ => report.timing,
                };
                println!("{} / {check}: {}", report.backend, counterexample.summary);
                counterexample.history.validate().with_context(|| {
                    format!(
                        "{} / {check} in {} is not a history that can have happened",
                        report.backend,
                        path.display()
                    )
                })?;
                failed |= recheck_history(&counterexample.history, checked_timing(timing, time_scale)?, capabilities);
            }
        }
        anyhow::ensure!(found > 0, "{} holds no counterexample to re-check", path.display());
        return Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS });
    }
    let kept = KeptHistory::from_json(&text).with_context(|| format!("parsing {}", path.display()))?;
    let timing = kept.timing.unwrap_or_else(Timing::in_process);
    let capabilities = kept.capabilities.unwrap_or_else(Capabilities::all_in_process);
    kept.history.validate().with_context(|| format!("{} is not a history that can have happened", path.display()))?;
    let failed = recheck_history(&kept.history, checked_timing(timing, time_scale)?, capabilities);
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Kept time scales times `--time-scale`, refused when a duration is beyond a day (a hostile
/// or corrupt file; the checkers' arithmetic stays in range below that).
fn checked_timing(timing: Timing, time_scale: f64) -> anyhow::Result<Timing> {
    anyhow::ensure!(
        time_scale.is_finite() && time_scale > 0.0 && time_scale <= MAX_TIME_SCALE,
        "--time-scale {time_scale}: a factor above 0 and at most {MAX_TIME_SCALE} is expected"
    );
    const DAY_SECONDS: f64 = 86_400.0;
    let durations = [
        timing.base_ttl,
        timing.tolerance,
        timing.early_tolerance.unwrap_or_default(),
        timing.prompt,
        timing.arrival_gap,
        timing.cancel_cleanup.unwrap_or_default(),
    ];
    anyhow::ensure!(
        // In floating point: scaling a huge duration as a `Duration` would overflow.
        durations.iter().all(|d| d.as_secs_f64() * time_scale <= DAY_SECONDS),
        "the kept time scales ({}) are beyond a day once scaled: not the scales of a run",
        timing_note(&timing)
    );
    Ok(timing.scaled(time_scale))
}

/// Prints every checker's verdict on `history`; whether any failed.
fn recheck_history(history: &History, timing: Timing, capabilities: Capabilities) -> bool {
    let verdicts = check_all(history, &timing, &capabilities, std::time::Duration::from_secs(60));
    let mut failed = false;
    println!("{} operations, {}", history.operations.len(), timing_note(&timing));
    for (property, verdict) in verdicts {
        let property = property.to_string();
        let status = verdict.status();
        failed |= status.is_failure();
        match verdict {
            Verdict::Valid => println!("{property:<28} {status}"),
            Verdict::Unknown { reason } => println!("{property:<28} {status}: {reason}"),
            Verdict::Invalid { counterexample } => println!("{property:<28} {status}\n{counterexample}"),
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_backends_are_reported_at_once_with_their_address() {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port();
        for url in [
            format!("redis://127.0.0.1:{port}"),
            format!("nats://127.0.0.1:{port}"),
            format!("dflockd://127.0.0.1:{port}"),
            format!("etcd://127.0.0.1:{port}"),
            format!("etcd+lockservice://127.0.0.1:{port}"),
            format!("postgres://lockcheck@127.0.0.1:{port}/postgres"),
        ] {
            let backend = backends::from_url(&url).expect("a well-formed URL");
            let started = std::time::Instant::now();
            let error = reachable(&runtime, backend.as_ref()).expect_err("nothing listens there");
            let message = format!("{error:#}");
            assert!(started.elapsed() < REACH_TIMEOUT, "{url}: reported after {:?}", started.elapsed());
            assert!(message.contains(&format!("127.0.0.1:{port}")), "{url}: {message}");
            assert!(message.contains("refused"), "{url}: the cause is named: {message}");
        }
    }

    fn any_duration() -> impl proptest::strategy::Strategy<Value = std::time::Duration> {
        use proptest::prelude::*;
        prop_oneof![
            (0..10_000_000u64).prop_map(std::time::Duration::from_micros),
            (any::<u64>(), 0..1_000_000_000u32).prop_map(|(secs, nanos)| std::time::Duration::new(secs, nanos)),
        ]
    }

    proptest::proptest! {
        /// Kept time scales and factors from a file or a flag, however hostile, are scaled or
        /// refused, never a panic; what is accepted stays within a day.
        #[test]
        fn any_kept_time_scales_are_scaled_or_refused(
            base_ttl in any_duration(), tolerance in any_duration(), early in proptest::option::of(any_duration()),
            prompt in any_duration(), arrival_gap in any_duration(), cleanup in proptest::option::of(any_duration()),
            factor in proptest::prop_oneof![0.0..200.0f64, proptest::num::f64::ANY],
        ) {
            let timing = Timing {
                base_ttl,
                tolerance,
                early_tolerance: early,
                prompt,
                arrival_gap,
                cancel_cleanup: cleanup,
                outage: None,
            };
            if let Ok(scaled) = checked_timing(timing, factor) {
                proptest::prop_assert!(scaled.base_ttl <= std::time::Duration::from_secs(86_400));
            }
        }
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../report/tests/fixtures").join(name)
    }

    /// `check --json` output from before documents were marked is what users have kept: it
    /// still re-checks, as does the marked document.
    #[test]
    fn recheck_reads_the_check_document_and_its_unmarked_predecessor() {
        for name in ["check-v0.json", "check.json"] {
            // The fixture's counterexample is a double grant: re-checked, it fails again.
            let code = recheck(&fixture(name), 1.0).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(code, ExitCode::from(1), "{name}");
        }
    }

    #[test]
    fn recheck_refuses_another_kind_of_document_naming_both() {
        let error = recheck(&fixture("selftest.json"), 1.0).expect_err("a selftest document is no check output");
        let message = format!("{error:#}");
        assert!(message.contains("lockcheck.selftest") && message.contains("lockcheck.check"), "{message}");
        let dir = std::env::temp_dir().join(format!("lockcheck-recheck-newer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let newer = dir.join("check.json");
        std::fs::write(&newer, r#"{"kind": "lockcheck.check", "version": 99, "seed": 1, "backends": []}"#).unwrap();
        let message = format!("{:#}", recheck(&newer, 1.0).expect_err("a newer check document"));
        assert!(message.contains("version 99") && message.contains("up to 1"), "{message}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn hostile_time_scales_are_refused_and_sane_ones_scale() {
        for factor in [f64::NAN, f64::INFINITY, -1.0, 0.0, 1e9] {
            assert!(checked_timing(Timing::in_process(), factor).is_err(), "{factor}");
        }
        let huge = Timing { base_ttl: std::time::Duration::from_secs(u64::MAX / 2), ..Timing::in_process() };
        assert!(checked_timing(huge, 1.0).is_err());
        let doubled = checked_timing(Timing::in_process(), 2.0).expect("a sane factor");
        assert_eq!(doubled.base_ttl, Timing::in_process().base_ttl * 2);
    }
}
