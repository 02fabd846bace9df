//! `lockcheck`: checks lock backends against the locking spec, proves the checks can fail,
//! injects faults during random workloads, model-checks lock algorithms, serves the reference
//! lock server and renders reports.

mod check;
mod driver;
mod faults;
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
    /// Inject faults on a seeded schedule during random workloads (the nemesis), on servers
    /// the command starts and removes itself.
    Faults(faults::Args),
    /// Run the suite against the built-in flawed lockers and show each one caught.
    Selftest(selftest::Args),
    /// Model-check a lock algorithm.
    Model(model::Args),
    /// Run the reference lock server (dflockd protocol).
    Serve(serve::Args),
    /// Render reports/ from the latest benchmark, check and model results.
    Report(report::Args),
    /// Serve a backend URL over the driver protocol on stdin/stdout (the nemesis's client
    /// process).
    #[command(hide = true)]
    Driver(driver::Args),
}

/// `LOCKCHECK_SEED`, checked: a seed that does not parse is an error, never a silent random
/// seed (a replay that replays something else).
pub(crate) fn seed_from_env() -> anyhow::Result<Option<u64>> {
    parse_seed(std::env::var("LOCKCHECK_SEED"))
}

fn parse_seed(value: Result<String, std::env::VarError>) -> anyhow::Result<Option<u64>> {
    match value {
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
        Command::Faults(args) => faults::run(args),
        Command::Selftest(args) => selftest::run(args),
        Command::Model(args) => model::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Report(args) => report::run(args),
        Command::Driver(args) => driver::run(args),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("lockcheck: {error:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_that_does_not_parse_is_an_error_not_a_random_seed() {
        assert_eq!(parse_seed(Err(std::env::VarError::NotPresent)).unwrap(), None);
        assert_eq!(parse_seed(Ok(" 42 ".into())).unwrap(), Some(42));
        for bad in ["", "-1", "0x10", "18446744073709551616", "seed"] {
            let error = parse_seed(Ok(bad.into())).expect_err(bad);
            assert!(error.to_string().contains("not a seed"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_driver_subcommand_parses_its_flaw_and_stays_out_of_the_help() {
        let cli =
            Cli::try_parse_from(["lockcheck", "driver", "redis://h:1/0", "--flaw", "crash-on=3"]).expect("parses");
        assert!(matches!(cli.command, Command::Driver(_)));
        assert!(Cli::try_parse_from(["lockcheck", "driver", "memory", "--flaw", "nice"]).is_err());
        use clap::CommandFactory;
        let help = Cli::command().render_help().to_string();
        assert!(!help.contains("driver"), "{help}");
    }

    #[test]
    fn check_refuses_to_test_nothing() {
        let cli = Cli::try_parse_from(["lockcheck", "check", "--cases", "0"]).expect("the flags parse");
        let Command::Check(args) = cli.command else { panic!("parsed as check") };
        let error = check::run(args).expect_err("--cases 0 tests nothing");
        assert!(error.to_string().contains("nothing tested"), "{error}");
    }
}
