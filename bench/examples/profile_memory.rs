//! Where the in-memory locker's time goes, for a profiler: runs one workload of the memory
//! benchmark (or its tokio::sync::Mutex floor) in a loop, with nothing else in the process.
//!
//! On a shared, noisy machine wall-clock profiles lie; instruction counts do not:
//!
//! ```sh
//! cargo build --release -p lockcheck-bench --example profile_memory
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.memory \
//!     $CARGO_TARGET_DIR/release/examples/profile_memory uncontended memory 200000
//! callgrind_annotate --inclusive=yes /tmp/cg.memory | head -60
//! ```
//!
//! Arguments: `uncontended|hand-off` `memory|direct|tokio` `[iterations]` `[waiters]` — `memory`
//! is the memory locker through `dyn Locker`, `direct` through its inherent methods.

use std::sync::Arc;

use lockcheck_bench::{Contender, DirectMemory, LockerContender, TokioMutexFloor, hand_off, uncontended};
use lockcheck_impls::MemoryLocker;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workload = args.first().map(String::as_str).unwrap_or("uncontended");
    let subject = args.get(1).map(String::as_str).unwrap_or("memory");
    let iterations: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(200_000);
    let waiters: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let took = runtime.block_on(async {
        match subject {
            "memory" => {
                run(Arc::new(LockerContender::new(Arc::new(MemoryLocker::new()), 1)), workload, iterations, waiters)
                    .await
            }
            "direct" => run(Arc::new(DirectMemory::new(1)), workload, iterations, waiters).await,
            "tokio" => run(Arc::new(TokioMutexFloor::new(1)), workload, iterations, waiters).await,
            other => Err(format!("unknown subject {other:?}: memory, direct or tokio").into()),
        }
    })?;
    println!(
        "{workload} {subject}: {iterations} operations, {:.1} ns each",
        took.as_nanos() as f64 / iterations as f64
    );
    Ok(())
}

async fn run<C: Contender>(
    contender: Arc<C>,
    workload: &str,
    iterations: u64,
    waiters: usize,
) -> Result<std::time::Duration, Box<dyn std::error::Error>> {
    Ok(match workload {
        "uncontended" => uncontended(&*contender, iterations).await?.total,
        "hand-off" => hand_off(contender, waiters, iterations).await?.total,
        other => return Err(format!("unknown workload {other:?}: uncontended or hand-off").into()),
    })
}
