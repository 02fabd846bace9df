//! A benchmark suite: criterion for the means, our own samples for the distributions, one
//! results file per run.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};

use crate::BenchError;
use crate::contender::Contender;
use crate::floor::RoundTrip;
use crate::measure::{self, Batch};
use lockcheck_report::Samples;
use lockcheck_report::{self as results, BenchRun, Kind, Machine, Measurement, Mode, Role};

/// The contention shape every backend is profiled with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Queue lengths of the hand-off measurement.
    pub waiters: Vec<usize>,
    /// Client counts of the throughput measurement; each runs on one shared key and on
    /// one key per client.
    pub clients: Vec<usize>,
}

impl Shape {
    /// The standard shape of `mode`: waiters 1, 2, 4 … 64 in both modes; clients 1, 2, 4 … 64
    /// in full mode and 1, 4, 16, 64 in quick mode.
    pub fn standard(mode: Mode) -> Shape {
        let doubling: Vec<usize> = (0..=6).map(|i| 1 << i).collect();
        let clients = match mode {
            Mode::Quick => vec![1, 4, 16, 64],
            Mode::Full => doubling.clone(),
        };
        Shape { waiters: doubling, clients }
    }
}

/// One benchmark suite run: owns the tokio runtime everything runs on, feeds criterion, keeps
/// every latency distribution, and writes a [`BenchRun`] at [`Suite::finish`].
///
/// The runtime is current-thread by default: the servers of network backends run in other
/// processes anyway, and on one thread a hand-off measures the lock — not the cost of waking
/// a parked worker thread, which would drown the in-memory figures in scheduler noise. Use
/// [`Suite::with_runtime`] for another runtime.
pub struct Suite {
    runtime: tokio::runtime::Runtime,
    run: BenchRun,
    shape: Shape,
    uncontended_group: u64,
}

impl Suite {
    /// A suite named after its backend (`memory`, `redis`…), in the mode the environment
    /// selects ([`Mode::from_env`]).
    pub fn new(name: &str) -> Result<Suite, BenchError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(BenchError::Io)?;
        Ok(Self::with_runtime(name, runtime))
    }

    /// A suite on a runtime of the caller's choosing.
    pub fn with_runtime(name: &str, runtime: tokio::runtime::Runtime) -> Suite {
        let mode = Mode::from_env();
        let command = match mode {
            Mode::Quick => format!("LOCKCHECK_BENCH=quick cargo bench -p lockcheck-bench --bench {name}"),
            Mode::Full => format!("cargo bench -p lockcheck-bench --bench {name}"),
        };
        let run = BenchRun {
            suite: name.to_owned(),
            mode,
            started_unix: results::unix_now(),
            finished_unix: 0,
            machine: Machine::current(),
            versions: results::base_versions(),
            command,
            measurements: Vec::new(),
        };
        Suite { runtime, run, shape: Shape::standard(mode), uncontended_group: measure::UNCONTENDED_GROUP }
    }

    /// Quick or full.
    pub fn mode(&self) -> Mode {
        self.run.mode
    }

    /// Times [`Suite::uncontended`] in groups of `group` operations instead of
    /// [`UNCONTENDED_GROUP`](crate::UNCONTENDED_GROUP) (see [`measure::uncontended_in_groups`]):
    /// 1 for a network backend compared against a per-round-trip floor.
    pub fn set_uncontended_group(&mut self, group: u64) {
        self.uncontended_group = group.max(1);
    }

    /// The contention shape of this run.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// A criterion configured for the mode, honouring criterion's command-line flags
    /// (filters, `--quick`, `--list`). Criterion's own HTML plots are off: `lockcheck report`
    /// draws ours.
    pub fn criterion(&self) -> Criterion {
        let c = Criterion::default().without_plots();
        let c = match self.mode() {
            Mode::Quick => {
                c.warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_millis(800)).sample_size(10)
            }
            Mode::Full => {
                c.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4)).sample_size(30)
            }
        };
        c.configure_from_args()
    }

    /// Runs `future` on the suite's runtime — build lockers and fixtures with it, so their
    /// connections live on the runtime that will use them.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Records a version the report should show (e.g. `redis-server` → `7.0.15`).
    pub fn add_version(&mut self, name: impl Into<String>, version: impl Into<String>) {
        self.run.versions.insert(name.into(), version.into());
    }

    /// The standard profile of one contender: uncontended, hand-off with [`Shape::waiters`],
    /// throughput with [`Shape::clients`] on one key and on one key per client. Build the
    /// contender with at least `max(clients)` keys.
    pub fn contention_profile<C: Contender>(&mut self, c: &mut Criterion, role: Role, contender: &Arc<C>) {
        self.uncontended(c, role, contender);
        let waiters = self.shape.waiters.clone();
        self.hand_off(c, role, contender, &waiters);
        let clients = self.shape.clients.clone();
        self.throughput(c, role, contender, &clients, true);
        self.throughput(c, role, contender, &clients, false);
    }

    /// Uncontended try-lock + release ([`measure::uncontended`]).
    pub fn uncontended<C: Contender>(&mut self, c: &mut Criterion, role: Role, contender: &Arc<C>) {
        let name = contender.name();
        let mut recorder = Recorder::default();
        let operations_per_sample = self.uncontended_group;
        let mut group = c.benchmark_group(format!("{}/uncontended", self.run.suite));
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter_custom(|iters| {
                let batch =
                    self.runtime.block_on(measure::uncontended_in_groups(&**contender, iters, operations_per_sample));
                recorder.take(&name, iters, batch)
            })
        });
        group.finish();
        self.record(recorder, name, role, Kind::Uncontended);
    }

    /// Hand-off latency with each queue length in `waiters` ([`measure::hand_off`]).
    pub fn hand_off<C: Contender>(&mut self, c: &mut Criterion, role: Role, contender: &Arc<C>, waiters: &[usize]) {
        let name = contender.name();
        let mut group = c.benchmark_group(format!("{}/hand-off", self.run.suite));
        group.throughput(Throughput::Elements(1));
        let mut recorded = Vec::new();
        for &n in waiters {
            let mut recorder = Recorder::default();
            group.bench_function(BenchmarkId::new(&name, n), |b| {
                b.iter_custom(|iters| {
                    let batch = self.runtime.block_on(measure::hand_off(contender.clone(), n, iters));
                    recorder.take(&name, iters, batch)
                })
            });
            recorded.push((n, recorder));
        }
        group.finish();
        for (n, recorder) in recorded {
            self.record(recorder, name.clone(), role, Kind::HandOff { waiters: n });
        }
    }

    /// Throughput with each client count in `clients`, on one shared key (`shared_key`) or
    /// one key per client ([`measure::throughput`]).
    pub fn throughput<C: Contender>(
        &mut self,
        c: &mut Criterion,
        role: Role,
        contender: &Arc<C>,
        clients: &[usize],
        shared_key: bool,
    ) {
        let name = contender.name();
        let label = if shared_key { "throughput-one-key" } else { "throughput-key-per-client" };
        let mut group = c.benchmark_group(format!("{}/{label}", self.run.suite));
        group.throughput(Throughput::Elements(1));
        let mut recorded = Vec::new();
        for &n in clients {
            let keys = if shared_key { 1 } else { n.min(contender.keys()) };
            let kind = Kind::Throughput { clients: n, keys };
            // One client on one key is both shapes: measured once.
            if self.run.measurements.iter().any(|m| m.subject == name && m.role == role && m.kind == kind) {
                continue;
            }
            let mut recorder = Recorder::default();
            group.bench_function(BenchmarkId::new(&name, n), |b| {
                b.iter_custom(|iters| {
                    let batch = self.runtime.block_on(measure::throughput(contender.clone(), n, keys, iters));
                    recorder.take(&name, iters, batch)
                })
            });
            recorded.push((n, keys, recorder));
        }
        group.finish();
        for (n, keys, recorder) in recorded {
            self.record(recorder, name.clone(), role, Kind::Throughput { clients: n, keys });
        }
    }

    /// A round-trip floor ([`RoundTrip`]).
    pub fn round_trip<R: RoundTrip>(&mut self, c: &mut Criterion, floor: &Arc<R>) {
        let name = floor.name();
        let mut recorder = Recorder::default();
        let mut group = c.benchmark_group(format!("{}/round-trip", self.run.suite));
        group.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter_custom(|iters| {
                let batch = self.runtime.block_on(async {
                    let mut batch = Batch::default();
                    for _ in 0..iters {
                        let started = tokio::time::Instant::now();
                        floor.round_trip().await?;
                        let took = started.elapsed();
                        batch.latencies.push(took);
                        batch.total += took;
                    }
                    Ok(batch)
                });
                recorder.take(&name, iters, batch)
            })
        });
        group.finish();
        self.record(recorder, name, Role::Floor, Kind::RoundTrip);
    }

    /// Everything measured so far.
    pub fn measurements(&self) -> &[Measurement] {
        &self.run.measurements
    }

    /// The run as it stands.
    pub fn run(&self) -> &BenchRun {
        &self.run
    }

    fn record(&mut self, recorder: Recorder, subject: String, role: Role, kind: Kind) {
        // A measurement criterion filtered out was never called: nothing to record.
        let Some(latency) = recorder.samples.summary() else { return };
        if self.run.measurements.iter().any(|m| m.subject == subject && m.role == role && m.kind == kind) {
            return;
        }
        let ops_per_sec = matches!(kind, Kind::Throughput { .. })
            .then(|| recorder.operations as f64 / recorder.wall.as_secs_f64().max(f64::MIN_POSITIVE));
        self.run.measurements.push(Measurement { subject, role, kind, latency, ops_per_sec });
    }

    /// Writes the run to [`results::results_dir`], prints a summary with ratios to the floors,
    /// and returns the file's path — or `None` when nothing was measured (criterion's
    /// `--test` and `--list` modes, or a filter that matched nothing), so such runs never
    /// stand in for real ones in a report.
    pub fn finish(mut self) -> Result<Option<PathBuf>, BenchError> {
        self.run.finished_unix = results::unix_now();
        if self.run.measurements.is_empty() {
            println!("lockcheck-bench: suite {:?} measured nothing; no results written", self.run.suite);
            return Ok(None);
        }
        let path = self.run.write_to(&results::results_dir())?;
        println!("\n{}", crate::summary_table(&self.run));
        println!("lockcheck-bench: results of suite {:?} written to {}", self.run.suite, path.display());
        Ok(Some(path))
    }
}

/// Collects the batches criterion asks for.
#[derive(Default)]
struct Recorder {
    samples: Samples,
    operations: u64,
    wall: Duration,
    calls: u64,
}

impl Recorder {
    /// Keeps `batch`'s samples and returns what criterion should see. The very first batch is
    /// dropped from the distribution: it pays for cold caches and lazily built state.
    fn take(&mut self, name: &str, iters: u64, batch: Result<Batch, BenchError>) -> Duration {
        let batch = batch.unwrap_or_else(|error| panic!("benchmark of {name} failed: {error}"));
        self.calls += 1;
        if self.calls > 1 {
            self.samples.extend(batch.latencies.iter().copied());
            self.operations += iters;
            self.wall += batch.total;
        }
        batch.total
    }
}
