//! `lockcheck`: checks lock backends against the locking spec, proves the checks can fail,
//! model-checks lock algorithms, serves the reference lock server and renders reports.

mod check;
mod model;
mod report;
mod selftest;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "lockcheck", version, about = "Makes distributed locks trustworthy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the conformance suite against backends (default: the embedded ones).
    Check(check::Args),
    /// Run the suite against the built-in flawed lockers and show each one caught.
    Selftest(selftest::Args),
    /// Model-check a lock algorithm.
    Model(model::Args),
    /// Run the reference lock server (dflockd protocol).
    Serve(serve::Args),
    /// Render reports/ from the latest benchmark, check and model results.
    Report(report::Args),
}

/// `LOCKCHECK_SEED`, checked: a seed that does not parse is an error, never a silent random
/// seed (a replay that replays something else).
pub(crate) fn seed_from_env() -> anyhow::Result<Option<u64>> {
    match std::env::var("LOCKCHECK_SEED") {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(raw)) => anyhow::bail!("LOCKCHECK_SEED={raw:?} is not a seed"),
        Ok(raw) => {
            raw.trim().parse().map(Some).map_err(|_| {
                anyhow::anyhow!("LOCKCHECK_SEED={raw:?} is not a seed (an integer from 0 to {})", u64::MAX)
            })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Check(args) => check::run(args),
        Command::Selftest(args) => selftest::run(args),
        Command::Model(args) => model::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Report(args) => report::run(args),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("lockcheck: {error:#}");
            ExitCode::from(2)
        }
    }
}
