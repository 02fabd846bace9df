//! Contention benchmarks of lockcheck's lockers against their floors and peers.
//!
//! # The harness
//!
//! Every backend is profiled the same way, by one bench file per backend
//! (`bench/benches/<backend>.rs`) that builds its lockers and hands them to a [`Suite`]:
//!
//! - **uncontended** try-lock + release — for a network backend, about two round trips;
//! - **hand-off latency**: from the holder calling release to the next waiter *running with
//!   the lock*, with 1, 2, 4 … 64 waiters queued (counted once the queue has formed: see
//!   [`hand_off`]) — it should be one or two round trips and flat in the number of waiters;
//!   a polling backend shows its polling interval here;
//! - **throughput** as clients grow (1 … 64), on one shared key and on one key per client;
//! - a **floor** measured in the same run — `tokio::sync::Mutex` for the memory locker
//!   ([`TokioMutexFloor`]), a loopback round trip for network backends ([`TcpEcho`], or the
//!   backend's own [`RoundTrip`] such as Redis `PING`) — and **peers** (the original polling
//!   strategy, `rslock`, the Python dflockd server) as [`Role::Peer`] measurements.
//!
//! Criterion drives the runs and prints its means; the harness records every latency itself
//! ([`Samples`]) because a lock user lives in the tail: results carry p50/p90/p99/max and a
//! CDF. [`Suite::finish`] writes one JSON [`BenchRun`] per run (machine, versions, mode,
//! every measurement) to [`results_dir`], and `lockcheck report` renders `reports/` from the
//! latest runs — medians over repeated runs, ratios to the floor of the same run.
//!
//! A backend's bench file, in full (a `harness = false` `[[bench]]` in bench/Cargo.toml):
//!
//! ```no_run
//! use std::sync::Arc;
//! use lockcheck_bench::{LockerContender, Role, Suite, TcpEcho};
//! use lockcheck_impls::{Locker, MemoryLocker};
//!
//! let mut suite = Suite::new("example")?;
//! let mut c = suite.criterion();
//! // Build lockers and fixtures on the suite's runtime: connections belong to it.
//! let locker: Arc<dyn Locker> = suite.block_on(async { Arc::new(MemoryLocker::new()) });
//! let echo = Arc::new(suite.block_on(TcpEcho::start())?);
//! suite.round_trip(&mut c, &echo);
//! let keys = suite.shape().clients.iter().copied().max().unwrap_or(1);
//! suite.contention_profile(&mut c, Role::Subject, &Arc::new(LockerContender::new(locker, keys)));
//! suite.finish()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Modes
//!
//! `cargo bench -p lockcheck-bench` runs the **full** mode (criterion samples for seconds per
//! figure; minutes per backend). `LOCKCHECK_BENCH=quick cargo bench -p lockcheck-bench` (or
//! criterion's `--quick` flag after `--`) runs the **quick** mode for CI: under a second per
//! figure, fewer client counts, a few minutes for everything. Run either a few times: the
//! report takes the median of the latest runs.
//!
//! # Environment
//!
//! | variable | effect |
//! |---|---|
//! | `LOCKCHECK_BENCH` | `quick` selects the quick mode |
//! | `LOCKCHECK_BENCH_OUT` | where results go (default `$CARGO_TARGET_DIR/lockcheck-bench`, else `target/lockcheck-bench`) |
//! | `CARGO_TARGET_DIR` | see above |
//! | `LOCKCHECK_FONT` | the TTF file PNG pictures are drawn with (default: DejaVu Sans from `fonts-dejavu-core`) |
#![deny(missing_docs)]

mod contender;
mod floor;
mod measure;
mod suite;

pub use contender::{BENCH_TTL, BENCH_WAIT, Contender, DirectMemory, HeldLease, LockerContender, TokioMutexFloor};
pub use floor::{RoundTrip, TcpEcho};
pub use measure::{Batch, UNCONTENDED_GROUP, hand_off, throughput, uncontended, uncontended_in_groups};
// The run documents and their statistics live with the renderer, which reads them.
pub use lockcheck_report::{
    BenchRun, Kind, Machine, Measurement, Mode, Role, Samples, Summary, base_versions, median, percentile, render,
    results_dir, workspace_root,
};
pub use suite::{Shape, Suite};

/// Why a benchmark or a rendering failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The locker under test failed an operation.
    #[error("lock operation failed: {0}")]
    Lock(#[from] lockcheck_impls::LockError),
    /// A release said the lease was no longer held: the benchmark TTL ran out or the backend
    /// lost the lease — either way the figures would be meaningless.
    #[error("the lease on {key} was lost during the benchmark")]
    LeaseLost {
        /// The key.
        key: String,
    },
    /// An uncontended try-lock found its key taken.
    #[error("an uncontended try-lock found the key held")]
    UnexpectedlyHeld,
    /// A benchmark task stopped making progress.
    #[error("benchmark stuck: {0}")]
    Stuck(&'static str),
    /// A benchmark task panicked or was cancelled.
    #[error("benchmark task failed: {0}")]
    TaskFailed(String),
    /// Socket or runtime setup failed.
    #[error("I/O: {0}")]
    Io(#[source] std::io::Error),
    /// A run document could not be written.
    #[error(transparent)]
    Report(#[from] lockcheck_report::ReportError),
}

/// A plain-text table of a run: every measurement's p50 / p99 / max and its ratio to the
/// floor of the same run.
pub fn summary_table(run: &BenchRun) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:<42} {:>10} {:>10} {:>10} {:>8}",
        "subject", "measurement", "p50", "p99", "max", "x floor"
    );
    for m in &run.measurements {
        let ratio =
            run.ratio_to_floor(m).filter(|_| m.role != Role::Floor).map(|r| format!("{r:.2}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<28} {:<42} {:>10} {:>10} {:>10} {:>8}",
            m.subject,
            m.kind.label(),
            render::format_ns(m.latency.p50_ns),
            render::format_ns(m.latency.p99_ns),
            render::format_ns(m.latency.max_ns),
            ratio
        );
    }
    out
}
