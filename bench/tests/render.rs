//! `lockcheck report`'s renderer end to end: a run measured by the harness, a check result
//! with a counterexample, rendered into a temporary folder.

use std::path::PathBuf;
use std::sync::Arc;

use lockcheck_bench::render::{RenderOptions, render};
use lockcheck_bench::{BenchRun, Kind, LockerContender, Machine, Measurement, Mode, Role, Samples, TokioMutexFloor};
use lockcheck_impls::MemoryLocker;

/// A folder removed on drop, even when the test panics.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lockcheck-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A real (tiny) run of the harness: hand-offs with 1 and 4 waiters, memory and its floor.
fn measured_run() -> BenchRun {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut measurements = Vec::new();
    runtime.block_on(async {
        let memory = Arc::new(LockerContender::new(Arc::new(MemoryLocker::new()), 4));
        let floor = Arc::new(TokioMutexFloor::new(4));
        for waiters in [1, 4] {
            for (role, batch) in [
                (Role::Floor, lockcheck_bench::hand_off(floor.clone(), waiters, 300).await.unwrap()),
                (Role::Subject, lockcheck_bench::hand_off(memory.clone(), waiters, 300).await.unwrap()),
            ] {
                let mut samples = Samples::new();
                samples.extend(batch.latencies);
                let subject = if role == Role::Floor { "tokio::sync::Mutex" } else { "memory" };
                measurements.push(Measurement {
                    subject: subject.to_owned(),
                    role,
                    kind: Kind::HandOff { waiters },
                    latency: samples.summary().unwrap(),
                    ops_per_sec: None,
                });
            }
        }
        for (role, batch) in [
            (Role::Floor, lockcheck_bench::throughput(floor.clone(), 4, 1, 400).await.unwrap()),
            (Role::Subject, lockcheck_bench::throughput(memory.clone(), 4, 1, 400).await.unwrap()),
        ] {
            let mut samples = Samples::new();
            let ops = batch.latencies.len() as f64 / batch.total.as_secs_f64();
            samples.extend(batch.latencies);
            let subject = if role == Role::Floor { "tokio::sync::Mutex" } else { "memory" };
            measurements.push(Measurement {
                subject: subject.to_owned(),
                role,
                kind: Kind::Throughput { clients: 4, keys: 1 },
                latency: samples.summary().unwrap(),
                ops_per_sec: Some(ops),
            });
        }
    });
    BenchRun {
        suite: "memory".to_owned(),
        mode: Mode::Quick,
        started_unix: 1_795_919_241,
        finished_unix: 1_795_919_300,
        machine: Machine::current(),
        versions: lockcheck_bench::base_versions(),
        command: "test".to_owned(),
        measurements,
    }
}

/// A `lockcheck check --json` document with a double grant (the report crate's fixture).
const CHECK_JSON: &str = include_str!("../../report/tests/fixtures/check.json");

#[test]
fn renders_every_picture_and_says_what_is_missing() {
    let fonts_optional = std::env::var("LOCKCHECK_SERVICES").is_ok_and(|v| v == "skip");
    let out = TempDir::new("report");
    let runs = TempDir::new("runs");
    measured_run().write_to(&runs.0).unwrap();
    std::fs::create_dir_all(out.0.join("raw")).unwrap();
    std::fs::write(out.0.join("raw/check.json"), CHECK_JSON).unwrap();
    let mut options = RenderOptions::new(out.0.clone());
    options.bench_dirs = vec![runs.0.clone()];
    let rendered = match render(&options) {
        Err(lockcheck_report::ReportError::NoFont(why)) if fonts_optional => {
            println!("SKIPPED (LOCKCHECK_SERVICES=skip): {why}");
            return;
        }
        other => other.unwrap(),
    };
    for picture in ["hand-off-vs-waiters", "throughput-vs-clients", "cdf-memory", "check-matrix", "timeline-1"] {
        for ext in ["svg", "png"] {
            let path = out.0.join(format!("{picture}.{ext}"));
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            assert!(len > 1000, "{} is missing or empty ({len} bytes)", path.display());
        }
    }
    let readme = std::fs::read_to_string(out.0.join("README.md")).unwrap();
    for section in [
        "## At a glance",
        "## Targets",
        "## Machine and versions",
        "## Benchmark: memory",
        "VIOLATED",
        "## Counterexample timelines",
    ] {
        assert!(readme.contains(section), "README lacks {section:?}:\n{readme}");
    }
    // The run was copied next to the report so it can be rendered again from there.
    assert_eq!(std::fs::read_dir(out.0.join("raw/bench/memory")).unwrap().count(), 1);
    // Selftest, model and fault results were not given: the report says so.
    for what in ["selftest results", "model results", "fault results"] {
        assert!(
            rendered.missing.iter().any(|m| m.starts_with(what)),
            "{what} not reported missing: {:?}",
            rendered.missing
        );
        assert!(readme.contains(what), "README does not say {what} is missing");
    }
}
