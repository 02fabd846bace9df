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
    ClockTarget, ClusterTarget, FaultTarget, HolderTarget, InstancesTarget, NemesisConfig, NemesisOutcome,
    ServiceTarget, run_nemesis,
};
use lockcheck_conformance::{Backend, Served, Status, Timing};
use lockcheck_impls::etcd::EtcdMode;
use lockcheck_report::documents::{Document, FaultsDocument};
use lockcheck_support::redis::RedisOptions;
use lockcheck_support::{ServiceError, ServiceSpec};
use tokio::signal::unix::SignalKind;

/// A backend the command can start servers for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// One Redis server (`redis://`).
    Redis,
    /// Redlock over three Redis servers (`redis+quorum://`).
    RedisQuorum,
    /// A lock held on every one of three Redis servers (`redis+all://`).
    RedisAll,
    /// One NATS server, JetStream KV.
    Nats,
    /// The Python dflockd server (a process).
    DflockdPython,
    /// `lockcheck serve`, the reference dflockd server: this executable as a process.
    LockcheckServe,
    /// A three-node NATS JetStream cluster (Docker), an R3 bucket.
    NatsCluster,
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
    /// The server's wall clock stepped forward by a few leases (a process on libfaketime).
    ClockJump,
    /// The server's wall clock running fast for a while (a process on libfaketime).
    ClockSkew,
    /// The cluster's stream leader killed and started again.
    LeaderKilled,
    /// The cluster's stream leader cut off from the other nodes and the clients (Docker).
    LeaderPartitioned,
    /// A holder, a client process of its own, stopped past its lease and resumed; it writes
    /// to a fenced resource when it wakes.
    HolderPaused,
    /// A holder, a client process of its own, killed while it holds.
    ClientKilled,
    /// Every client session ended by the server, which stays up (Postgres).
    SessionCut,
}

/// The faults of a client process (this binary's hidden `driver` subcommand over the
/// backend's URL): they apply to every backend, all of which other processes can reach.
const CLIENT_FAULTS: [FaultName; 2] = [FaultName::HolderPaused, FaultName::ClientKilled];

impl FaultName {
    fn fault(self) -> Fault {
        match self {
            FaultName::Pause => Fault::ServerPausedPastTtl,
            FaultName::Restart => Fault::ServerRestartedWithoutPersistence,
            FaultName::RestartPersistent => Fault::ServerRestartedWithPersistence,
            FaultName::InstanceKilled => Fault::OneInstanceKilled,
            FaultName::InstanceRestarted => Fault::OneInstanceRestarted,
            FaultName::Partition => Fault::NetworkPartition,
            FaultName::ClockJump => Fault::ServerClockJumpedForward,
            FaultName::ClockSkew => Fault::ServerClockSkewed,
            FaultName::LeaderKilled => Fault::LeaderKilled,
            FaultName::LeaderPartitioned => Fault::NodePartitioned,
            FaultName::HolderPaused => Fault::ClientPausedPastLease,
            FaultName::ClientKilled => Fault::ClientCrashedWhileHolding,
            FaultName::SessionCut => Fault::SessionsCut,
        }
    }
}

impl BackendKind {
    fn name(self) -> &'static str {
        match self {
            BackendKind::Redis => "redis",
            BackendKind::RedisQuorum => "redis-quorum",
            BackendKind::RedisAll => "redis-all",
            BackendKind::Nats => "nats",
            BackendKind::DflockdPython => "dflockd-python",
            BackendKind::LockcheckServe => "lockcheck-serve",
            BackendKind::NatsCluster => "nats-cluster",
            BackendKind::Etcd => "etcd",
            BackendKind::Postgres => "postgres",
        }
    }

    /// The fault a run of `name` injects. `lockcheck serve` persists its fencing counter's
    /// ceiling, never its leases: its "restart with persistence" is a restart that loses every
    /// lease (as declared) but must keep fencing tokens increasing, which its client then
    /// claims.
    fn fault_of(self, name: FaultName) -> Fault {
        match (self, name) {
            (BackendKind::LockcheckServe, FaultName::RestartPersistent) => Fault::ServerRestartedWithoutPersistence,
            _ => name.fault(),
        }
    }

    /// What a run of `name` on this backend is, for the table.
    fn label(self, name: FaultName) -> String {
        match (self, name) {
            (BackendKind::LockcheckServe, FaultName::RestartPersistent) => {
                format!("{} (fence ceiling persisted)", self.fault_of(name))
            }
            _ => name.fault().name().to_owned(),
        }
    }

    /// The faults that apply to the backend's servers.
    fn faults(self) -> &'static [FaultName] {
        use FaultName::*;
        match self {
            BackendKind::Redis => &[Pause, Restart, RestartPersistent, Partition, ClockJump, ClockSkew],
            BackendKind::RedisQuorum | BackendKind::RedisAll => &[InstanceKilled, InstanceRestarted],
            // Its clock faults are not checked (a Go program), and say so.
            BackendKind::Nats => &[Pause, Restart, RestartPersistent, Partition, ClockJump, ClockSkew],
            BackendKind::DflockdPython => &[Pause, Restart, Partition, ClockJump, ClockSkew],
            BackendKind::LockcheckServe => &[Pause, Restart, RestartPersistent, ClockJump, ClockSkew],
            BackendKind::NatsCluster => &[LeaderKilled, LeaderPartitioned],
            // Restart: the data directory lost with it (etcd promises nothing then).
            BackendKind::Etcd => &[Pause, Restart, RestartPersistent, Partition],
            // Restart: every session, and so every lock, ends; the fencing sequence survives.
            BackendKind::Postgres => &[Pause, Restart, SessionCut],
        }
    }

    /// Every fault that applies: the servers' and the client process's.
    fn applicable(self) -> Vec<FaultName> {
        self.faults().iter().copied().chain(CLIENT_FAULTS).collect()
    }

    /// Starts fresh servers for one run of `fault`: the backend and the fault target, one of
    /// which owns the servers (removed when it is dropped). A client fault's target is a holder
    /// process: this binary's `driver` subcommand over the backend's URL.
    async fn start(self, fault: FaultName) -> anyhow::Result<(Box<dyn Backend>, Box<dyn FaultTarget>)> {
        let (backend, servers) = self.start_servers(fault).await?;
        if !CLIENT_FAULTS.contains(&fault) {
            return Ok((backend, servers));
        }
        let program = vec![std::env::current_exe()?.display().to_string(), "driver".to_owned()];
        let holder = HolderTarget::for_backend(program, backend.as_ref())
            .with_context(|| format!("{} has no URL a holder process could reach it by", backend.name()))?;
        Ok((Box::new(Served::new(backend, servers)), Box::new(holder)))
    }

    /// Starts fresh servers: the backend, and the servers' fault target (which owns them).
    async fn start_servers(self, fault: FaultName) -> anyhow::Result<(Box<dyn Backend>, Box<dyn FaultTarget>)> {
        fn started<T>(service: Result<Option<T>, ServiceError>) -> anyhow::Result<T> {
            service?.context("the server could not be started and LOCKCHECK_SERVICES=skip allows skipping")
        }
        let persistent = fault == FaultName::RestartPersistent;
        let clock = matches!(fault, FaultName::ClockJump | FaultName::ClockSkew);
        // A server on a fake clock (libfaketime), or where its clock cannot be faked, started
        // as usual with its clock faults not checked.
        async fn on_a_clock(spec: &ServiceSpec, base: Duration) -> anyhow::Result<Box<dyn FaultTarget>> {
            let target = ClockTarget::start(spec, base, false).await?;
            Ok(Box::new(target.context("the server could not be started and LOCKCHECK_SERVICES=skip allows skipping")?))
        }
        if clock {
            return Ok(match self {
                BackendKind::Redis => {
                    let spec = lockcheck_support::redis::spec(&RedisOptions::default());
                    let target = ClockTarget::start(&spec, Timing::networked().base_ttl, false).await?;
                    let target = target
                        .context("the server could not be started and LOCKCHECK_SERVICES=skip allows skipping")?;
                    let backend = {
                        let service = target.service().lock().await;
                        RedisBackend::on(RedisMode::Single, std::slice::from_ref(&*service), 1)
                            .with_config(redis_config())
                    };
                    (Box::new(backend), Box::new(target))
                }
                BackendKind::Nats => {
                    let target = on_a_clock(&lockcheck_support::nats::spec(), Timing::whole_seconds().base_ttl).await?;
                    // The clock faults are not checked here: no workload runs, no address is needed.
                    let backend = NatsBackend::new("127.0.0.1:1", lockcheck_impls::nats::BucketConfig::new("nemesis"));
                    (Box::new(backend), target)
                }
                BackendKind::DflockdPython | BackendKind::LockcheckServe => {
                    let spec = match self {
                        BackendKind::DflockdPython => lockcheck_support::dflockd::python_spec(
                            &lockcheck_support::dflockd::PythonDflockdOptions::default(),
                        ),
                        _ => serve_spec(false)?,
                    };
                    let target = ClockTarget::start(&spec, Timing::whole_seconds().base_ttl, false).await?;
                    let target = target
                        .context("the server could not be started and LOCKCHECK_SERVICES=skip allows skipping")?;
                    let address = target.service().lock().await.address().to_string();
                    (Box::new(self.dflockd(address, false)), Box::new(target))
                }
                BackendKind::RedisQuorum
                | BackendKind::RedisAll
                | BackendKind::NatsCluster
                | BackendKind::Etcd
                | BackendKind::Postgres => {
                    anyhow::bail!("no clock faults for {}", self.name())
                }
            });
        }
        Ok(match self {
            BackendKind::Redis => {
                let options = RedisOptions { append_only: persistent, ..RedisOptions::default() };
                let server = started(lockcheck_support::redis::redis(&options).await)?;
                let backend =
                    RedisBackend::on(RedisMode::Single, std::slice::from_ref(&server), 1).with_config(redis_config());
                let target = if persistent { ServiceTarget::persistent(server) } else { ServiceTarget::new(server) };
                (Box::new(backend), Box::new(target))
            }
            BackendKind::RedisQuorum | BackendKind::RedisAll => {
                let servers = started(lockcheck_support::redis::redis_many(&RedisOptions::default(), 3).await)?;
                let mode = if self == BackendKind::RedisAll { RedisMode::All } else { RedisMode::Quorum };
                let backend = RedisBackend::on(mode, &servers, 1).with_config(redis_config());
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
            BackendKind::NatsCluster => {
                let cluster = lockcheck_support::nats::NatsCluster::provision().await?;
                let cluster =
                    cluster.context("the cluster could not be started and LOCKCHECK_SERVICES=skip allows skipping")?;
                let bucket = "nemesis";
                lockcheck_conformance::backends::nats::cluster_locker(&cluster, bucket).await?;
                let backend = NatsBackend::on_cluster(&cluster, bucket);
                (Box::new(backend), Box::new(ClusterTarget::new(cluster, bucket)))
            }
            BackendKind::LockcheckServe => {
                let server = started(lockcheck_support::provision(&serve_spec(persistent)?).await)?;
                let backend = self.dflockd(server.address().to_string(), persistent);
                // Leases do not survive its restart, with or without the fence file.
                (Box::new(backend), Box::new(ServiceTarget::new(server)))
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

    /// The dflockd client on `address`; `lockcheck serve` is named apart from the Python
    /// server (its own row of the fault matrix), and with `fences_persisted` claims fencing
    /// across restarts.
    fn dflockd(self, address: String, fences_persisted: bool) -> DflockdBackend {
        let mut config = lockcheck_impls::dflockd::DflockdLockerConfig::new([address.clone()]);
        config.fences_persisted = fences_persisted;
        let backend = DflockdBackend::new(config);
        match (self, fences_persisted) {
            (BackendKind::LockcheckServe, false) => backend.named(format!("lockcheck-serve://{address}")),
            (BackendKind::LockcheckServe, true) => backend.named(format!("lockcheck-serve+fences://{address}")),
            _ => backend,
        }
    }
}

/// `lockcheck serve` as a process: this executable.
fn serve_spec(persist_fences: bool) -> anyhow::Result<ServiceSpec> {
    let exe = std::env::current_exe().context("the lockcheck executable, to run `lockcheck serve`")?;
    Ok(lockcheck_support::dflockd::lockcheck_serve_spec(exe.display().to_string(), persist_fences))
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
    /// Write the results as a `lockcheck.faults` document to FILE; where FILE already holds
    /// one, each backend × fault run here joins its cell (runs of the same seed replaced).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Keep the whole history of every run that is violated or unknown in DIR, for
    /// `lockcheck check --recheck` (default: `$LOCKCHECK_HISTORY_DIR`, else
    /// `lockcheck-histories` in the temporary directory).
    #[arg(long, value_name = "DIR")]
    histories: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.runs > 0, "--runs 0 runs nothing: nothing tested is not a pass");
    // The runs join the cells of a document already there (a rerun of one cell updates it
    // in place); a file that is not a faults document is refused now, not after the runs.
    let mut document = match &args.json {
        Some(path) if path.exists() => FaultsDocument::read(path).with_context(|| {
            format!("--json {}: not a faults document this build reads, so it is not overwritten", path.display())
        })?,
        _ => FaultsDocument::default(),
    };
    let seed = match args.seed {
        Some(seed) => seed,
        None => crate::seed_from_env()?.unwrap_or_else(rand::random),
    };
    let backends = if args.backends.is_empty() {
        vec![
            BackendKind::Redis,
            BackendKind::RedisQuorum,
            BackendKind::RedisAll,
            BackendKind::Nats,
            BackendKind::DflockdPython,
            BackendKind::LockcheckServe,
            BackendKind::NatsCluster,
            BackendKind::Etcd,
            BackendKind::Postgres,
        ]
    } else {
        args.backends.clone()
    };
    let mut plan = Vec::new();
    for backend in backends {
        let faults: Vec<FaultName> = if args.faults.is_empty() {
            backend.applicable()
        } else {
            args.faults.iter().copied().filter(|fault| backend.applicable().contains(fault)).collect()
        };
        plan.extend(faults.into_iter().map(|fault| (backend, fault)));
    }
    anyhow::ensure!(!plan.is_empty(), "none of these faults applies to these backends: nothing tested is not a pass");
    let histories = args
        .histories
        .clone()
        .or_else(lockcheck_conformance::history::history_dir)
        .unwrap_or_else(|| std::env::temp_dir().join("lockcheck-histories"));
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
            let config = NemesisConfig::new(run_seed, Duration::from_secs(args.seconds)).histories(histories.clone());
            let outcome = runtime.block_on(async {
                let (locker, target) = backend.start(fault).await?;
                // Ctrl-C drops the run here, inside the runtime: the servers' `Drop` removes
                // them (containers, networks, processes) before the command exits.
                anyhow::Ok(tokio::select! {
                    biased;
                    _ = interrupt.recv() => None,
                    outcome = run_nemesis(locker.as_ref(), target.as_ref(), backend.fault_of(fault), &config) => {
                        Some(outcome)
                    }
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
        println!("{:<16} {:<64} {}", backend.name(), backend.label(*fault), runs.join(" "));
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
    fn a_json_file_that_is_not_a_faults_document_is_refused_before_anything_runs_and_kept() {
        let path = std::env::temp_dir().join(format!("lockcheck-faults-json-{}.json", std::process::id()));
        std::fs::write(&path, "{\"kind\": \"lockcheck.check\", \"version\": 1}").unwrap();
        let error = run(args(&["--backend", "redis", "--fault", "pause", "--json", path.to_str().unwrap()]))
            .expect_err("refused");
        assert!(format!("{error:#}").contains("not a faults document"), "{error:#}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"kind\": \"lockcheck.check\", \"version\": 1}");
        std::fs::remove_file(&path).unwrap();
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
            assert!(CLIENT_FAULTS.iter().all(|fault| backend.applicable().contains(fault)), "{}", backend.name());
        }
        let faults: std::collections::HashSet<Fault> =
            FaultName::value_variants().iter().map(|name| name.fault()).collect();
        assert_eq!(faults.len(), FaultName::value_variants().len());
    }
}
