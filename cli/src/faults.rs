//! `lockcheck faults`: the nemesis against servers the command starts and removes itself —
//! for each backend × fault, a few runs of the random workload while a seeded schedule
//! injects the fault, each history judged with the backend's claims. Prints a backend × fault
//! table of the runs' verdicts; exit 1 on an unexplained violation or an undecided run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lockcheck_conformance::backends::dflockd::DflockdBackend;
use lockcheck_conformance::backends::etcd::EtcdBackend;
use lockcheck_conformance::backends::nats::NatsBackend;
use lockcheck_conformance::backends::postgres::PostgresBackend;
use lockcheck_conformance::backends::redis::{RedisBackend, RedisMode};
use lockcheck_conformance::faults::Fault;
use lockcheck_conformance::faults::postgres::PostgresTarget;
use lockcheck_conformance::nemesis::{
    FaultTarget, InstancesTarget, NemesisConfig, NemesisOutcome, ServiceTarget, run_nemesis,
};
use lockcheck_conformance::{Backend, Status};
use lockcheck_impls::etcd::EtcdMode;
use lockcheck_report::documents::{Document, FaultsDocument};
use lockcheck_support::ServiceError;
use lockcheck_support::redis::RedisOptions;
use tokio::signal::unix::SignalKind;

/// A backend the command can start servers for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// One Redis server (`redis://`).
    Redis,
    /// Redlock over three Redis servers (`redis+quorum://`).
    RedisQuorum,
    /// One NATS server, JetStream KV.
    Nats,
    /// The Python dflockd server (a process).
    DflockdPython,
    /// One etcd server, the revision-queue recipe (`etcd://`).
    Etcd,
    /// One Postgres server (a process), advisory locks (`postgres://`).
    Postgres,
}

/// A fault, by its command-line name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultName {
    /// The server frozen past the longest lease, then resumed.
    Pause,
    /// The server killed and started again, empty.
    Restart,
    /// The server killed and started again with its storage (Redis AOF, JetStream files).
    RestartPersistent,
    /// One instance of a multi-instance lock killed for a while.
    InstanceKilled,
    /// One instance of a multi-instance lock killed and restarted empty.
    InstanceRestarted,
    /// The server cut off from its clients (Docker only).
    Partition,
    /// Every client session ended by the server, which stays up (Postgres).
    SessionCut,
}

impl FaultName {
    fn fault(self) -> Fault {
        match self {
            FaultName::Pause => Fault::ServerPausedPastTtl,
            FaultName::Restart => Fault::ServerRestartedWithoutPersistence,
            FaultName::RestartPersistent => Fault::ServerRestartedWithPersistence,
            FaultName::InstanceKilled => Fault::OneInstanceKilled,
            FaultName::InstanceRestarted => Fault::OneInstanceRestarted,
            FaultName::Partition => Fault::NetworkPartition,
            FaultName::SessionCut => Fault::SessionsCut,
        }
    }
}

impl BackendKind {
    fn name(self) -> &'static str {
        match self {
            BackendKind::Redis => "redis",
            BackendKind::RedisQuorum => "redis-quorum",
            BackendKind::Nats => "nats",
            BackendKind::DflockdPython => "dflockd-python",
            BackendKind::Etcd => "etcd",
            BackendKind::Postgres => "postgres",
        }
    }

    /// The faults that apply to the backend's servers.
    fn faults(self) -> &'static [FaultName] {
        use FaultName::*;
        match self {
            BackendKind::Redis => &[Pause, Restart, RestartPersistent, Partition],
            BackendKind::RedisQuorum => &[InstanceKilled, InstanceRestarted],
            BackendKind::Nats => &[Pause, Restart, RestartPersistent, Partition],
            BackendKind::DflockdPython => &[Pause, Restart, Partition],
            // Restart: the data directory lost with it (etcd promises nothing then).
            BackendKind::Etcd => &[Pause, Restart, RestartPersistent, Partition],
            // Restart: every session, and so every lock, ends; the fencing sequence survives.
            BackendKind::Postgres => &[Pause, Restart, SessionCut],
        }
    }

    /// Starts fresh servers for one run of `fault`: the backend and the fault target, which
    /// owns the servers (removed when it is dropped).
    async fn start(self, fault: FaultName) -> anyhow::Result<(Box<dyn Backend>, Box<dyn FaultTarget>)> {
        fn started<T>(service: Result<Option<T>, ServiceError>) -> anyhow::Result<T> {
            service?.context("the server could not be started and LOCKCHECK_SERVICES=skip allows skipping")
        }
        let persistent = fault == FaultName::RestartPersistent;
        Ok(match self {
            BackendKind::Redis => {
                let options = RedisOptions { append_only: persistent, ..RedisOptions::default() };
                let server = started(lockcheck_support::redis::redis(&options).await)?;
                let backend =
                    RedisBackend::on(RedisMode::Single, std::slice::from_ref(&server), 1).with_config(redis_config());
                let target = if persistent { ServiceTarget::persistent(server) } else { ServiceTarget::new(server) };
                (Box::new(backend), Box::new(target))
            }
            BackendKind::RedisQuorum => {
                let servers = started(lockcheck_support::redis::redis_many(&RedisOptions::default(), 3).await)?;
                let backend = RedisBackend::on(RedisMode::Quorum, &servers, 1).with_config(redis_config());
                (Box::new(backend), Box::new(InstancesTarget::new(servers)))
            }
            BackendKind::Nats => {
                let server = started(lockcheck_support::nats::nats().await)?;
                let bucket = lockcheck_impls::nats::BucketConfig::new("nemesis");
                // A memory-backed bucket is what a restart without persistence empties.
                let bucket = if fault == FaultName::Restart { bucket.in_memory() } else { bucket };
                let backend = NatsBackend::on(&server, bucket);
                let target = if persistent { ServiceTarget::persistent(server) } else { ServiceTarget::new(server) };
                (Box::new(backend), Box::new(target))
            }
            BackendKind::DflockdPython => {
                let options = lockcheck_support::dflockd::PythonDflockdOptions::default();
                let server = started(lockcheck_support::dflockd::python_dflockd(&options).await)?;
                let config = lockcheck_impls::dflockd::DflockdLockerConfig::new([server.address().to_string()]);
                (Box::new(DflockdBackend::new(config)), Box::new(ServiceTarget::new(server)))
            }
            BackendKind::Etcd => {
                let options = lockcheck_support::etcd::EtcdOptions { persistent: fault != FaultName::Restart };
                let server = started(lockcheck_support::etcd::etcd(&options).await)?;
                let backend = EtcdBackend::on(EtcdMode::Queue, std::slice::from_ref(&server));
                let target =
                    if options.persistent { ServiceTarget::persistent(server) } else { ServiceTarget::new(server) };
                (Box::new(backend), Box::new(target))
            }
            BackendKind::Postgres => {
                let server = started(lockcheck_support::postgres::postgres().await)?;
                let url = lockcheck_support::postgres::url(&server);
                let backend = PostgresBackend::new(url.clone()).map_err(anyhow::Error::msg)?;
                (Box::new(backend), Box::new(PostgresTarget::new(server, url)))
            }
        })
    }
}

/// The Redis lockers' settings under faults: an answer within 300 ms, or indeterminate, so a
/// request to a frozen server does not hang past every bound.
fn redis_config() -> lockcheck_impls::redis::RedisConfig {
    let mut config = lockcheck_impls::redis::RedisConfig::default();
    config.response_timeout = Duration::from_millis(300);
    config.connect_timeout = Duration::from_millis(500);
    config
}

/// Arguments of `lockcheck faults`.
#[derive(clap::Args)]
pub struct Args {
    /// A backend whose servers the command starts and removes; repeatable. Default: all.
    #[arg(long = "backend", value_enum, value_name = "BACKEND")]
    backends: Vec<BackendKind>,
    /// A fault to inject; repeatable. Default: every fault that applies to the backend.
    #[arg(long = "fault", value_enum, value_name = "NAME")]
    faults: Vec<FaultName>,
    /// Seed of the schedules and workloads (default: random, printed; also `LOCKCHECK_SEED`).
    /// Run `i` uses seed + i.
    #[arg(long)]
    seed: Option<u64>,
    /// Runs per backend × fault, each on fresh servers.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Seconds of workload per run (longer when the schedule's one window needs it).
    #[arg(long, default_value_t = 4)]
    seconds: u64,
    /// Write the results as a `lockcheck.faults` document to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.runs > 0, "--runs 0 runs nothing: nothing tested is not a pass");
    let seed = match args.seed {
        Some(seed) => seed,
        None => crate::seed_from_env()?.unwrap_or_else(rand::random),
    };
    let backends = if args.backends.is_empty() {
        vec![
            BackendKind::Redis,
            BackendKind::RedisQuorum,
            BackendKind::Nats,
            BackendKind::DflockdPython,
            BackendKind::Etcd,
            BackendKind::Postgres,
        ]
    } else {
        args.backends.clone()
    };
    let mut plan = Vec::new();
    for backend in backends {
        let faults: Vec<FaultName> = if args.faults.is_empty() {
            backend.faults().to_vec()
        } else {
            args.faults.iter().copied().filter(|fault| backend.faults().contains(fault)).collect()
        };
        plan.extend(faults.into_iter().map(|fault| (backend, fault)));
    }
    anyhow::ensure!(!plan.is_empty(), "none of these faults applies to these backends: nothing tested is not a pass");
    eprintln!("lockcheck faults: seed {seed} (rerun with --seed {seed})");
    let progress = ProgressBar::new(plan.len() as u64 * u64::from(args.runs));
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid progress template")
            .progress_chars("=> "),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // Installed before the first server starts, and kept: a Ctrl-C while a server is starting
    // waits in it until the start has returned a handle whose drop removes the server.
    let mut interrupt = runtime.block_on(async { tokio::signal::unix::signal(SignalKind::interrupt()) })?;
    let mut rows: Vec<(BackendKind, FaultName, Vec<NemesisOutcome>)> = Vec::new();
    for (backend, fault) in plan {
        let mut outcomes = Vec::new();
        for run in 0..args.runs {
            let run_seed = seed.wrapping_add(u64::from(run));
            progress.set_message(format!("{} × {} run {} (seed {run_seed})", backend.name(), fault.fault(), run + 1));
            let config = NemesisConfig::new(run_seed, Duration::from_secs(args.seconds));
            let outcome = runtime.block_on(async {
                let (locker, target) = backend.start(fault).await?;
                // Ctrl-C drops the run here, inside the runtime: the servers' `Drop` removes
                // them (containers, networks, processes) before the command exits.
                anyhow::Ok(tokio::select! {
                    biased;
                    _ = interrupt.recv() => None,
                    outcome = run_nemesis(locker.as_ref(), target.as_ref(), fault.fault(), &config) => Some(outcome),
                })
            });
            let outcome = outcome.with_context(|| format!("{} × {}", backend.name(), fault.fault()))?;
            let Some(outcome) = outcome else {
                progress.finish_and_clear();
                // Belt and braces: anything this process still owns in Docker.
                if let Err(error) = runtime.block_on(lockcheck_support::orphans::remove_own()) {
                    eprintln!("lockcheck faults: could not look for servers left behind: {error}");
                }
                eprintln!("lockcheck faults: interrupted; the run's servers are removed");
                return Ok(ExitCode::from(130));
            };
            if outcome.status() == Status::Violated {
                progress.println(format!("{} × {} (seed {run_seed}): VIOLATED", backend.name(), fault.fault()));
            }
            outcomes.push(outcome);
            progress.inc(1);
        }
        rows.push((backend, fault, outcomes));
    }
    progress.finish_and_clear();

    print_table(&rows);
    println!("\nschedules (each replayed by its seed):");
    for (backend, _, outcomes) in &rows {
        for outcome in outcomes {
            println!("  {} seed {}: {}", backend.name(), outcome.seed, outcome.schedule);
        }
    }
    for (_, _, outcomes) in &rows {
        for outcome in outcomes.iter().filter(|outcome| outcome.status() >= Status::Predicted) {
            println!("\n{outcome}");
        }
    }
    if let Some(path) = &args.json {
        let mut document = FaultsDocument::default();
        for (_, _, outcomes) in &rows {
            document.record(combined(outcomes));
        }
        document.write(path).with_context(|| format!("--json {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    let failed = rows.iter().flat_map(|(_, _, outcomes)| outcomes).any(|outcome| outcome.status().is_failure());
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The runs of one backend × fault as one record: the worst run's, with every run's verdict
/// among the notes.
fn combined(outcomes: &[NemesisOutcome]) -> lockcheck_report::documents::FaultRecord {
    let worst = outcomes.iter().max_by_key(|outcome| outcome.status()).expect("at least one run");
    let mut record = worst.to_record();
    record.runs = outcomes.iter().flat_map(|outcome| outcome.to_record().runs).collect();
    let runs: Vec<String> =
        outcomes.iter().map(|outcome| format!("seed {}: {}", outcome.seed, verdict(outcome))).collect();
    record.notes.insert(0, format!("{} runs: {}", outcomes.len(), runs.join(", ")));
    record
}

fn verdict(outcome: &NemesisOutcome) -> &'static str {
    match outcome.status() {
        Status::Passed => "ok",
        Status::Predicted => "predicted",
        Status::Violated => "VIOLATED",
        Status::Unknown => "unknown",
        Status::NotChecked => "not checked",
        Status::NotClaimed => "not claimed",
    }
}

fn print_table(rows: &[(BackendKind, FaultName, Vec<NemesisOutcome>)]) {
    println!("{:<16} {:<64} runs", "backend", "fault");
    for (backend, fault, outcomes) in rows {
        let runs: Vec<&str> = outcomes.iter().map(verdict).collect();
        println!("{:<16} {:<64} {}", backend.name(), fault.fault().name(), runs.join(" "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Parser, ValueEnum as _};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(argv: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("faults").chain(argv.iter().copied())).expect("the flags parse").args
    }

    #[test]
    fn nothing_to_run_is_an_error_not_a_pass() {
        let error = run(args(&["--runs", "0"])).expect_err("no run");
        assert!(error.to_string().contains("nothing tested"), "{error}");
        let error = run(args(&["--backend", "redis-quorum", "--fault", "pause"])).expect_err("no fault applies");
        assert!(error.to_string().contains("nothing tested"), "{error}");
    }

    #[test]
    fn every_backend_has_faults_and_names_map_to_distinct_faults() {
        for backend in BackendKind::value_variants() {
            assert!(!backend.faults().is_empty(), "{}", backend.name());
        }
        let faults: std::collections::HashSet<Fault> =
            FaultName::value_variants().iter().map(|name| name.fault()).collect();
        assert_eq!(faults.len(), FaultName::value_variants().len());
    }
}
