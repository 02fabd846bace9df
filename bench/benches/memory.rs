//! The in-memory locker against its floor, `tokio::sync::Mutex`, in the same run (the memory
//! row of the contention suite).
//!
//! Both are FIFO and in-process, so the targets are tight: hand-off (release → next waiter
//! running) within 2× of tokio's mutex and flat in the number of waiters; uncontended
//! try-lock + release — with validation, an owner token and a fencing token — within 10× of
//! tokio's lock + unlock.
//!
//! The memory locker is measured twice: through `dyn Locker` (`memory`: the way the CLI and
//! the conformance suite reach it, one boxed future per call) and through its inherent
//! methods (`memory (direct)`: a caller that holds a `MemoryLocker`, no boxing). A caller
//! generic over `L: Locker` pays what `dyn` pays: the trait's `async_trait` methods box their
//! futures whatever the dispatch.
//!
//! `cargo bench -p lockcheck-bench --bench memory` (full) or with `LOCKCHECK_BENCH=quick`.

use std::sync::Arc;

use lockcheck_bench::{BenchRun, DirectMemory, Kind, LockerContender, Role, Suite, TokioMutexFloor};
use lockcheck_impls::MemoryLocker;

// The targets, as the report judges them too.
const TARGETS: lockcheck_report::targets::SuiteTargets = lockcheck_report::targets::MEMORY;
const HAND_OFF_TARGET: f64 = TARGETS.hand_off.unwrap();
const UNCONTENDED_TARGET: f64 = TARGETS.uncontended.unwrap();
const FLATNESS_TARGET: f64 = TARGETS.flatness;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut suite = Suite::new("memory")?;
    let mut c = suite.criterion();
    let shape = suite.shape().clone();
    let keys = shape.clients.iter().copied().max().unwrap_or(1);
    let floor = Arc::new(TokioMutexFloor::new(keys));
    let memory = Arc::new(LockerContender::new(Arc::new(MemoryLocker::new()), keys));
    let direct = Arc::new(DirectMemory::new(keys));

    // Floor and subjects alternate figure by figure, so a burst of load on a shared machine
    // hits every side of a ratio alike.
    suite.uncontended(&mut c, Role::Floor, &floor);
    suite.uncontended(&mut c, Role::Subject, &memory);
    suite.uncontended(&mut c, Role::Subject, &direct);
    for &waiters in &shape.waiters {
        suite.hand_off(&mut c, Role::Floor, &floor, &[waiters]);
        suite.hand_off(&mut c, Role::Subject, &memory, &[waiters]);
        suite.hand_off(&mut c, Role::Subject, &direct, &[waiters]);
    }
    for shared_key in [true, false] {
        for &clients in &shape.clients {
            suite.throughput(&mut c, Role::Floor, &floor, &[clients], shared_key);
            suite.throughput(&mut c, Role::Subject, &memory, &[clients], shared_key);
            suite.throughput(&mut c, Role::Subject, &direct, &[clients], shared_key);
        }
    }

    let verdicts = targets(suite.run());
    suite.finish()?;
    println!("{verdicts}");
    c.final_summary();
    Ok(())
}

/// The targets against this run's figures, for each way of calling the memory locker.
fn targets(run: &BenchRun) -> String {
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let mut lines = vec!["targets (p50 ratios to tokio::sync::Mutex, this run):".to_owned()];
    let mut subjects: Vec<&str> = Vec::new();
    for m in run.measurements.iter().filter(|m| m.role == Role::Subject) {
        if !subjects.contains(&m.subject.as_str()) {
            subjects.push(&m.subject);
        }
    }
    for subject in subjects {
        lines.push(format!("  {subject}:"));
        let measured = || run.measurements.iter().filter(|m| m.role == Role::Subject && m.subject == subject);
        if let Some(ratio) = measured().find(|m| m.kind == Kind::Uncontended).and_then(|m| run.ratio_to_floor(m)) {
            lines.push(format!(
                "    uncontended: {ratio:.2}x (target <= {UNCONTENDED_TARGET}x) {}",
                verdict(ratio <= UNCONTENDED_TARGET)
            ));
        }
        let mut hand_offs = Vec::new();
        for m in measured() {
            if let (Kind::HandOff { waiters }, Some(ratio)) = (m.kind, run.ratio_to_floor(m)) {
                lines.push(format!(
                    "    hand-off, {waiters:>2} waiters: {ratio:.2}x (target <= {HAND_OFF_TARGET}x) {}",
                    verdict(ratio <= HAND_OFF_TARGET)
                ));
                hand_offs.push((waiters, m.latency.p50_ns));
            }
        }
        if let (Some(&(few, first)), Some(&(many, last))) =
            (hand_offs.iter().min_by_key(|h| h.0), hand_offs.iter().max_by_key(|h| h.0))
        {
            let growth = last / first;
            lines.push(format!(
                "    flat in waiters: p50 at {many} / p50 at {few} = {growth:.2} (target <= {FLATNESS_TARGET}) {}",
                verdict(growth <= FLATNESS_TARGET)
            ));
        }
    }
    lines.join("\n")
}
