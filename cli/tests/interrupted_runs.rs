//! A `lockcheck faults` run that is interrupted leaves nothing behind: Ctrl-C removes its
//! servers before it exits, and a run killed outright (SIGKILL, nothing can be caught) has its
//! server processes killed by the kernel with it and its containers removed by the next run.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LOCKCHECK: &str = env!("CARGO_BIN_EXE_lockcheck");

/// `lockcheck faults` on one Redis server, long enough to be interrupted mid-run.
fn start_faults(runtime: &str) -> Child {
    Command::new(LOCKCHECK)
        .args(["faults", "--backend", "redis", "--fault", "pause", "--runs", "1", "--seconds", "120", "--seed", "7"])
        .env("LOCKCHECK_SERVICE_RUNTIME", runtime)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("lockcheck runs")
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill").args([format!("-{signal}"), pid.to_string()]).status().expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Containers whose owner label names `pid`.
fn containers_of(pid: u32) -> BTreeSet<String> {
    let output = Command::new("docker")
        .args([
            "ps",
            "--all",
            "--filter",
            "label=lockcheck.owner",
            "--format",
            "{{.ID}} {{.Label \"lockcheck.owner\"}}",
        ])
        .output()
        .expect("docker runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let prefix = format!("{pid}-");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, owner)| owner.starts_with(&prefix))
        .map(|(id, _)| id.to_owned())
        .collect()
}

/// The live (not zombie) children of `pid`.
fn children_of(pid: u32) -> BTreeSet<u32> {
    lockcheck_support::orphans::live_children(pid).into_iter().collect()
}

/// `pid`'s state letter (`Z` for a zombie), while the process exists.
fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].split_whitespace().next()?.chars().next()
}

fn is_alive(pid: u32) -> bool {
    state_of(pid).is_some_and(|state| state != 'Z')
}

/// Waits for `condition`, polling: what it waits for happens in another process.
fn wait_for(what: &str, bound: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn docker_answers() -> bool {
    Command::new("docker").args(["info"]).output().is_ok_and(|output| output.status.success())
}

#[test]
fn ctrl_c_removes_the_runs_containers_before_it_exits() {
    if !docker_answers() {
        eprintln!("SKIPPED: no Docker engine");
        return;
    }
    let mut run = start_faults("docker");
    let pid = run.id();
    wait_for("the run's Redis container", Duration::from_secs(60), || !containers_of(pid).is_empty());
    signal(pid, "INT");
    let status = run.wait().expect("the run ends");
    assert_eq!(status.code(), Some(130), "an interrupted run says so: {status}");
    assert_eq!(containers_of(pid), BTreeSet::new(), "containers left behind");
}

#[test]
fn a_killed_runs_server_processes_die_with_it() {
    let mut run = start_faults("process");
    let pid = run.id();
    wait_for("the run's redis-server process", Duration::from_secs(60), || !children_of(pid).is_empty());
    let servers = children_of(pid);
    signal(pid, "KILL");
    run.wait().expect("the run ends");
    for server in servers {
        wait_for("the server process to die with its run", Duration::from_secs(10), || !is_alive(server));
    }
}

#[test]
fn a_killed_runs_containers_are_removed_by_the_next_run() {
    if !docker_answers() {
        eprintln!("SKIPPED: no Docker engine");
        return;
    }
    let mut run = start_faults("docker");
    let pid = run.id();
    wait_for("the run's Redis container", Duration::from_secs(60), || !containers_of(pid).is_empty());
    let left = containers_of(pid);
    signal(pid, "KILL");
    run.wait().expect("the run ends");
    assert_eq!(containers_of(pid), left, "a killed run cannot clean up by itself");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // The other tests' runs sweep too, at their first container: whoever gets there first
    // removes them.
    runtime.block_on(lockcheck_support::orphans::remove_orphans()).expect("the sweep runs");
    // A removal another sweep had begun may still be under way.
    wait_for("the killed run's containers to be removed", Duration::from_secs(30), || containers_of(pid).is_empty());
}
