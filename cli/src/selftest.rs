//! `lockcheck selftest`: runs the suite against every mutant (deliberately broken locker)
//! and shows each one caught — by which property, with how short a counterexample, in how
//! long. Exit 1 if any mutant survives: a harness that cannot fail proves nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use lockcheck_conformance::SuiteConfig;
use lockcheck_conformance::mutants::{self, Hunt, Mutant};
use lockcheck_report::documents::{Document, SelftestDocument};

/// Arguments of `lockcheck selftest`.
#[derive(clap::Args)]
pub struct Args {
    /// Seed of the randomized checks (default: random, printed; also `LOCKCHECK_SEED`).
    #[arg(long)]
    seed: Option<u64>,
    /// Only the mutant with this name; repeatable (see `--list`).
    #[arg(long = "mutant", value_name = "NAME")]
    only: Vec<String>,
    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// List the mutants and exit.
    #[arg(long)]
    list: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let all = mutants::all();
    if args.list {
        for mutant in &all {
            println!("{:<34} {:<22} {}", mutant.name, mutant.expected_to_violate.to_string(), mutant.failure_class);
        }
        return Ok(ExitCode::SUCCESS);
    }
    for name in &args.only {
        anyhow::ensure!(all.iter().any(|m| m.name == name), "no mutant named {name} (see --list)");
    }
    let chosen: Vec<Mutant> =
        all.into_iter().filter(|m| args.only.is_empty() || args.only.iter().any(|name| name == m.name)).collect();
    let mut config = SuiteConfig::default();
    if let Some(seed) = args.seed.or(crate::seed_from_env()?) {
        config.seed = seed;
    }
    eprintln!("lockcheck selftest: seed {} (rerun with --seed {})", config.seed, config.seed);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let progress = ProgressBar::new(chosen.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}").expect("template").progress_chars("=> "),
    );
    let mut outcomes = Vec::new();
    for mutant in &chosen {
        progress.set_message(mutant.name);
        outcomes.push(runtime.block_on(mutants::hunt(mutant, &config)));
        progress.inc(1);
    }
    progress.finish_and_clear();

    println!("{:<34} {:<20} {:<20} {:>5} {:>9}  check", "mutant", "expected", "caught by", "ops", "time");
    for outcome in &outcomes {
        let caught = match (outcome.caught_by, outcome.status) {
            (Some(property), _) => property.to_string(),
            (None, Hunt::NotRun) => "NOT RUN".to_owned(),
            (None, _) => "SURVIVED".to_owned(),
        };
        println!(
            "{:<34} {:<20} {:<20} {:>5} {:>8.2}s  {}",
            outcome.mutant,
            outcome.expected.to_string(),
            caught,
            outcome.counterexample_operations.map_or("-".to_owned(), |n| n.to_string()),
            outcome.time_to_catch.as_secs_f64(),
            outcome.check.as_deref().unwrap_or("-")
        );
    }
    for outcome in &outcomes {
        if let Some(counterexample) = &outcome.counterexample {
            println!("\n{} — {}\n{counterexample}", outcome.mutant, outcome.failure_class);
        }
    }
    let named = |status: Hunt| -> Vec<&str> {
        outcomes.iter().filter(|o| o.status == status).map(|o| o.mutant.as_str()).collect()
    };
    let (survivors, not_run, other) = (named(Hunt::Survived), named(Hunt::NotRun), named(Hunt::CaughtOther));
    println!(
        "\n{} of {} mutants caught{}",
        outcomes.len() - survivors.len() - not_run.len(),
        outcomes.len(),
        if other.is_empty() {
            String::new()
        } else {
            format!(" ({} by another property than expected: {})", other.len(), other.join(", "))
        }
    );
    if let Some(path) = &args.json {
        SelftestDocument { seed: config.seed, mutants: outcomes.clone() }.write(path)?;
        eprintln!("wrote {}", path.display());
    }
    if !not_run.is_empty() {
        println!("NOT RUN (their servers could not be reached; see the check column): {}", not_run.join(", "));
    }
    if !survivors.is_empty() {
        println!("SURVIVED: {}", survivors.join(", "));
    }
    if !survivors.is_empty() || !not_run.is_empty() {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
