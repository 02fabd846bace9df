//! The results format every benchmark writes and `lockcheck report` reads.
//!
//! One JSON file per run of one suite: `<out>/<suite>/<unix-seconds>-<pid>.json` holding a
//! [`BenchRun`] document (kind `lockcheck.bench`, see [`crate::documents`]) — the machine and versions it ran on, the mode, and every [`Measurement`] with
//! its latency distribution. Floors and peers are measurements of the same run, so every
//! ratio the report prints compares figures taken side by side.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ReportError;
use crate::documents::Document;
use crate::stats::Summary;

/// How long a suite measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A few seconds per backend: CI, and a first look.
    Quick,
    /// Criterion's longer sampling: figures to publish.
    Full,
}

impl Mode {
    /// `LOCKCHECK_BENCH=quick` (or criterion's `--quick` flag on the command line) selects
    /// the quick mode; anything else the full one.
    pub fn from_env() -> Mode {
        let quick_env = std::env::var("LOCKCHECK_BENCH").is_ok_and(|v| v.eq_ignore_ascii_case("quick"));
        let quick_flag = std::env::args().any(|a| a == "--quick");
        if quick_env || quick_flag { Mode::Quick } else { Mode::Full }
    }
}

/// What a measurement is to its suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The backend the suite is about.
    Subject,
    /// The cheapest possible equivalent, measured in the same run; ratios are taken to it.
    Floor,
    /// Another implementation to beat (the original polling strategy, `rslock`, the Python
    /// dflockd server).
    Peer,
}

/// What was measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    /// Try-lock + release with nobody else around.
    Uncontended,
    /// Release → next waiter running, with `waiters` queued.
    HandOff {
        /// Waiters queued when the holder releases.
        waiters: usize,
    },
    /// Lock, one scheduler turn holding it, release — by `clients` tasks over `keys` keys.
    Throughput {
        /// Concurrent clients.
        clients: usize,
        /// Distinct keys (client `i` uses key `i % keys`).
        keys: usize,
    },
    /// One request/response round trip (a floor).
    RoundTrip,
}

impl Kind {
    /// A short label, e.g. `hand-off, 8 waiters`.
    pub fn label(&self) -> String {
        match self {
            Kind::Uncontended => "uncontended".to_owned(),
            Kind::HandOff { waiters } => format!("hand-off, {waiters} waiter{}", if *waiters == 1 { "" } else { "s" }),
            Kind::Throughput { clients, keys } => format!("throughput, {clients} clients / {keys} keys"),
            Kind::RoundTrip => "round trip".to_owned(),
        }
    }
}

/// One measurement of one subject, floor or peer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// What was measured, e.g. `memory`, `tokio::sync::Mutex`, `redis://127.0.0.1:6379/0`.
    pub subject: String,
    /// Its role in the suite.
    pub role: Role,
    /// What operation.
    #[serde(flatten)]
    pub kind: Kind,
    /// The latency distribution of the operation.
    pub latency: Summary,
    /// Operations per second over the whole measurement (throughput runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_per_sec: Option<f64>,
}

/// The machine a run measured on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// `linux x86_64 6.1.0` and the like.
    pub os: String,
    /// The CPU model (from /proc/cpuinfo where available).
    pub cpu: String,
    /// Logical CPUs available to the process.
    pub cpus: usize,
    /// Total memory in MiB, where known.
    pub memory_mib: Option<u64>,
    /// The 1-minute load average when the run started: a busy machine explains a noisy run.
    pub load_average: Option<f64>,
}

impl Machine {
    /// Describes this machine.
    pub fn current() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
        let memory_mib = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map(|kib| kib / 1024);
        let load_average = read("/proc/loadavg").split_whitespace().next().and_then(|v| v.parse().ok());
        Machine {
            os: format!("{} {} {}", std::env::consts::OS, std::env::consts::ARCH, kernel).trim().to_owned(),
            cpu,
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            memory_mib,
            load_average,
        }
    }
}

/// One run of one benchmark suite.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchRun {
    /// The suite (one per backend): `memory`, `redis`, `nats`, `dflockd`…
    pub suite: String,
    /// Quick or full.
    pub mode: Mode,
    /// Unix seconds at start.
    pub started_unix: u64,
    /// Unix seconds at the end.
    pub finished_unix: u64,
    /// The machine.
    pub machine: Machine,
    /// rustc, lockcheck, the crates that matter and whatever the suite added (server
    /// versions).
    pub versions: BTreeMap<String, String>,
    /// The command that produces this file again.
    pub command: String,
    /// Everything measured.
    pub measurements: Vec<Measurement>,
}

impl BenchRun {
    /// The first measurement of `kind` whose subject starts with `subject`.
    pub fn find(&self, subject: &str, kind: Kind) -> Option<&Measurement> {
        self.measurements.iter().find(|m| m.subject.starts_with(subject) && m.kind == kind)
    }

    /// The median latency (ns) of [`BenchRun::find`]'s measurement.
    pub fn p50(&self, subject: &str, kind: Kind) -> Option<f64> {
        self.find(subject, kind).map(|m| m.latency.p50_ns)
    }

    /// The floor to compare `m` with: a floor of the same kind in this run, else the run's
    /// round-trip floor (the unit of a network backend's latency).
    pub fn floor_for(&self, m: &Measurement) -> Option<&Measurement> {
        let floors = || self.measurements.iter().filter(|f| f.role == Role::Floor);
        floors().find(|f| f.kind == m.kind).or_else(|| floors().find(|f| f.kind == Kind::RoundTrip))
    }

    /// How many times slower than its floor `m` is: the ratio of median latencies, or for
    /// throughput the floor's operations per second over `m`'s (per-operation latency under
    /// contention is mostly queueing, which says little about the lock itself).
    pub fn ratio_to_floor(&self, m: &Measurement) -> Option<f64> {
        let floor = self.floor_for(m)?;
        if let (Kind::Throughput { .. }, Some(ours), Some(theirs)) = (m.kind, m.ops_per_sec, floor.ops_per_sec) {
            return (ours > 0.0).then(|| theirs / ours);
        }
        (floor.latency.p50_ns > 0.0).then(|| m.latency.p50_ns / floor.latency.p50_ns)
    }

    /// Writes the run as pretty JSON to `<dir>/<suite>/<started>-<pid>.json`.
    pub fn write_to(&self, dir: &Path) -> Result<PathBuf, ReportError> {
        let folder = dir.join(&self.suite);
        std::fs::create_dir_all(&folder).map_err(|e| ReportError::File(folder.clone(), e))?;
        let path = folder.join(format!("{}-{}.json", self.started_unix, std::process::id()));
        Document::write(self, &path)?;
        Ok(path)
    }

    /// Reads one run.
    pub fn read(path: &Path) -> Result<BenchRun, ReportError> {
        <BenchRun as Document>::read(path)
    }
}

impl Document for BenchRun {
    const KIND: &'static str = "lockcheck.bench";
    const VERSION: u32 = 1;

    /// Runs written before documents were marked carry `"schema": 1` instead of a kind; the
    /// body is the same.
    fn legacy(text: &str) -> Option<Result<Self, serde_json::Error>> {
        Some(serde_json::from_str(text))
    }
}

/// The workspace root (this crate's parent folder).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("report/ has a parent").to_owned()
}

/// Where runs are written: `LOCKCHECK_BENCH_OUT`, else `$CARGO_TARGET_DIR/lockcheck-bench`,
/// else `<workspace>/target/lockcheck-bench`.
pub fn results_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LOCKCHECK_BENCH_OUT") {
        return PathBuf::from(dir);
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"));
    target.join("lockcheck-bench")
}

/// The versions every run records: rustc, lockcheck, and the locked versions of the crates
/// that shape the figures (from the workspace's Cargo.lock).
pub fn base_versions() -> BTreeMap<String, String> {
    let mut versions = BTreeMap::new();
    versions.insert("rustc".to_owned(), env!("LOCKCHECK_RUSTC_VERSION").to_owned());
    versions.insert("lockcheck".to_owned(), env!("CARGO_PKG_VERSION").to_owned());
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).unwrap_or_default();
    let wanted = ["tokio", "criterion", "redis", "async-nats", "rslock"];
    let mut name: Option<&str> = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = \"") {
            name = n.strip_suffix('"');
        } else if let (Some(n), Some(v)) = (name, line.strip_prefix("version = \"")) {
            if wanted.contains(&n) {
                versions.insert(n.to_owned(), v.trim_end_matches('"').to_owned());
            }
            name = None;
        }
    }
    if let Some(commit) = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
    {
        versions.insert("lockcheck commit".to_owned(), commit.trim().to_owned());
    }
    versions
}

/// Uncontended operations are timed in groups of this many: one clock read (~20–30 ns) is as
/// long as an uncontended `tokio::sync::Mutex` lock+unlock, so timing each would measure the
/// clock. Each latency sample of an uncontended measurement is a group's mean.
pub const UNCONTENDED_GROUP: u64 = 32;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurement(subject: &str, role: Role, kind: Kind, p50: f64) -> Measurement {
        let mut latency = Summary::of(&[1]).unwrap();
        latency.p50_ns = p50;
        Measurement { subject: subject.to_owned(), role, kind, latency, ops_per_sec: None }
    }

    #[test]
    fn ratios_use_the_same_kind_of_floor_else_the_round_trip() {
        let run = BenchRun {
            suite: "t".to_owned(),
            mode: Mode::Quick,
            started_unix: 0,
            finished_unix: 0,
            machine: Machine::current(),
            versions: base_versions(),
            command: String::new(),
            measurements: vec![
                measurement("floor", Role::Floor, Kind::HandOff { waiters: 8 }, 100.0),
                measurement("rtt", Role::Floor, Kind::RoundTrip, 50.0),
                measurement("x", Role::Subject, Kind::HandOff { waiters: 8 }, 150.0),
                measurement("x", Role::Subject, Kind::HandOff { waiters: 64 }, 500.0),
            ],
        };
        assert_eq!(run.ratio_to_floor(&run.measurements[2]), Some(1.5));
        assert_eq!(run.ratio_to_floor(&run.measurements[3]), Some(10.0));
        let dir = std::env::temp_dir().join(format!("lockcheck-bench-test-{}", std::process::id()));
        let path = run.write_to(&dir).unwrap();
        assert_eq!(BenchRun::read(&path).unwrap(), run);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn versions_name_the_compiler() {
        assert!(base_versions()["rustc"].starts_with("rustc"));
    }
}
