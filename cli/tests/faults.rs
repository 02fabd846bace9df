//! `lockcheck faults` end to end: the binary starts `lockcheck serve` (itself) as a process,
//! runs the nemesis against it and writes the `lockcheck.faults` document.

use std::process::Command;

use lockcheck_model::spec::Status;
use lockcheck_report::documents::{Document, FaultsDocument};

/// The processes (of anyone) whose environment holds `mark`.
fn marked_processes(mark: &str) -> Vec<u32> {
    let Ok(processes) = std::fs::read_dir("/proc") else { return Vec::new() };
    processes
        .flatten()
        .filter_map(|process| {
            let pid: u32 = process.file_name().to_str()?.parse().ok()?;
            let environ = std::fs::read(process.path().join("environ")).ok()?;
            let state = std::fs::read_to_string(process.path().join("stat")).ok()?;
            let zombie = state.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            (!zombie && environ.split(|&b| b == 0).any(|var| var == mark.as_bytes())).then_some(pid)
        })
        .collect()
}

/// `lockcheck serve` paused past the lease and its wall clock stepped forward: both cells ok
/// (it times leases with a monotonic clock), and no server process outlives the command.
#[test]
fn lockcheck_serve_under_a_pause_and_a_clock_jump_is_ok() {
    let dir = std::env::temp_dir().join(format!("lockcheck-cli-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("faults.json");
    let mark = format!("LOCKCHECK_TEST_MARK={}", std::process::id());
    let (name, value) = mark.split_once('=').unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_lockcheck"))
        .args(["faults", "--backend", "lockcheck-serve", "--fault", "pause", "--fault", "clock-jump"])
        .args(["--runs", "1", "--seed", "1", "--json"])
        .arg(&json)
        .env(name, value)
        .output()
        .expect("lockcheck runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "lockcheck faults failed");
    let document = FaultsDocument::read(&json).expect("a lockcheck.faults document");
    let cell = |fault: &str| {
        document
            .results
            .iter()
            .find(|record| record.backend == "lockcheck-serve" && record.fault == format!("nemesis: {fault}"))
            .unwrap_or_else(|| panic!("no cell for {fault}: {:?}", document.results))
    };
    for fault in ["server paused past the TTL", "server wall clock jumped forward"] {
        assert_eq!(cell(fault).status, Status::Passed, "{:?}", cell(fault));
    }
    assert_eq!(document.results.len(), 2);
    assert_eq!(marked_processes(&mark), Vec::<u32>::new(), "a server process outlived lockcheck faults");
    std::fs::remove_dir_all(dir).unwrap();
}
