//! dflockd: lockcheck's reference server and the real Python dflockd 0.5 server, both driven
//! by the Rust client, against a raw TCP echo round trip on loopback (the floor). Each server
//! has a thread of its own, and so does the echo (it shares the reference server's).
//!
//! Measured in one run: the echo round trip; uncontended acquire + release on one connection;
//! throughput with 1, 10 and 100 concurrent clients on distinct keys; hand-off latency with
//! 1, 8 and 64 waiters — for both servers. Every client has its own connections, as separate
//! processes would.
//!
//! The targets: uncontended ≤ 3× the echo (it is two round trips, so this also bounds
//! the server's own work); hand-off ≤ 3× the echo and flat in waiters; throughput at 100
//! clients ≥ 10× the Python server's.
//!
//! `cargo bench -p lockcheck-bench --bench dflockd`, or with `LOCKCHECK_BENCH=quick`.

use std::sync::Arc;

use lockcheck_bench::{BenchRun, Kind, LockerContender, Role, Suite, TcpEcho};
use lockcheck_impls::Locker;
use lockcheck_impls::dflockd::{DflockdLocker, DflockdLockerConfig, ServerKind};
use lockcheck_server::{Server, ServerConfig};
use lockcheck_support::Service;
use lockcheck_support::dflockd::{PythonDflockdOptions, python_spec};

// The targets, as the report judges them too.
const TARGETS: lockcheck_report::targets::SuiteTargets = lockcheck_report::targets::DFLOCKD;
const UNCONTENDED_TARGET: f64 = TARGETS.uncontended.unwrap();
const HAND_OFF_TARGET: f64 = TARGETS.hand_off.unwrap();
const FLATNESS_TARGET: f64 = TARGETS.flatness;
const THROUGHPUT_TARGET: f64 = TARGETS.peer_speedup.unwrap();
const WAITERS: [usize; 3] = [1, 8, 64];
const CLIENTS: [usize; 3] = [1, 10, 100];

const OURS: &str = "lockcheck serve";
const PYTHON: &str = "Python dflockd 0.5";

async fn clients(
    addr: String,
    kind: ServerKind,
    count: usize,
) -> Result<Vec<Arc<dyn Locker>>, lockcheck_impls::LockError> {
    let mut config = DflockdLockerConfig::new([addr]);
    // Known: skip the per-client `ping` probe (Python 0.5 logs it as a protocol error).
    config.kind = Some(kind);
    let mut lockers: Vec<Arc<dyn Locker>> = Vec::with_capacity(count);
    for _ in 0..count {
        lockers.push(Arc::new(DflockdLocker::connect(config.clone()).await?));
    }
    Ok(lockers)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut suite = Suite::new("dflockd")?;
    let mut c = suite.criterion();
    let count = CLIENTS.into_iter().chain(WAITERS.map(|w| w + 1)).max().unwrap_or(1);
    // Each server gets a thread of its own, as it would serving other machines: the Python
    // server is a process (one asyncio thread); the reference server runs on a one-worker
    // runtime of its own (`lockcheck serve` runs one worker per core). (On the suite's runtime it
    // would share one thread with the 100 clients driving it, and the clients' work would be
    // charged to the server.)
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("lockcheck-serve")
        .enable_all()
        .build()?;
    let server = server_runtime.block_on(Server::start(ServerConfig::ephemeral()))?;
    // The floor: an echo server on that same thread, so both pay the wake-up across threads.
    let echo = Arc::new(suite.block_on(TcpEcho::start_on(server_runtime.handle()))?);
    let python: Service = suite.block_on(Service::start(&python_spec(&PythonDflockdOptions::default())))?;
    suite.add_version("dflockd (Python)", "0.5.0 from PyPI");
    let (ours, theirs) = suite.block_on(async {
        let ours = clients(server.local_addr().to_string(), ServerKind::Fencing, count).await?;
        let theirs = clients(python.address().to_string(), ServerKind::Legacy, count).await?;
        Ok::<_, lockcheck_impls::LockError>((ours, theirs))
    })?;
    let ours = Arc::new(LockerContender::per_client(ours, count).named(OURS));
    let theirs = Arc::new(LockerContender::per_client(theirs, count).named(PYTHON));

    suite.round_trip(&mut c, &echo);
    suite.uncontended(&mut c, Role::Subject, &ours);
    suite.uncontended(&mut c, Role::Peer, &theirs);
    suite.throughput(&mut c, Role::Subject, &ours, &CLIENTS, false);
    suite.throughput(&mut c, Role::Peer, &theirs, &CLIENTS, false);
    suite.hand_off(&mut c, Role::Subject, &ours, &WAITERS);
    suite.hand_off(&mut c, Role::Peer, &theirs, &WAITERS);

    let verdicts = targets(suite.run());
    suite.finish()?;
    println!("{verdicts}");
    c.final_summary();
    drop(python);
    drop(server);
    drop(echo);
    drop(server_runtime);
    Ok(())
}

/// The targets against this run's figures.
fn targets(run: &BenchRun) -> String {
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let find = |name: &str, kind: Kind| run.find(name, kind);
    let p50 = |name: &str, kind: Kind| run.p50(name, kind);
    let Some(floor) = run.measurements.iter().find(|m| m.kind == Kind::RoundTrip).map(|m| m.latency.p50_ns) else {
        return "no TCP echo floor measured".to_owned();
    };
    let mut lines = vec![format!("targets (p50, this run; TCP echo = {:.1} µs):", floor / 1e3)];
    for server in [OURS, PYTHON] {
        if let Some(uncontended) = p50(server, Kind::Uncontended) {
            let ratio = uncontended / floor;
            let target = if server == OURS {
                format!(" (target <= {UNCONTENDED_TARGET}x) {}", verdict(ratio <= UNCONTENDED_TARGET))
            } else {
                String::new()
            };
            lines.push(format!(
                "  {server}: uncontended acquire+release {:.1} µs = {ratio:.2}x echo{target}",
                uncontended / 1e3
            ));
        }
        for waiters in WAITERS {
            if let Some(hand_off) = p50(server, Kind::HandOff { waiters }) {
                let ratio = hand_off / floor;
                let target = if server == OURS {
                    format!(" (target <= {HAND_OFF_TARGET}x) {}", verdict(ratio <= HAND_OFF_TARGET))
                } else {
                    String::new()
                };
                lines.push(format!(
                    "  {server}: hand-off, {waiters:>2} waiters {:.1} µs = {ratio:.2}x echo{target}",
                    hand_off / 1e3
                ));
            }
        }
    }
    if let (Some(one), Some(many)) = (p50(OURS, Kind::HandOff { waiters: 1 }), p50(OURS, Kind::HandOff { waiters: 64 }))
    {
        let growth = many / one;
        lines.push(format!(
            "  {OURS}: flat in waiters: p50 at 64 / p50 at 1 = {growth:.2} (target <= {FLATNESS_TARGET}) {}",
            verdict(growth <= FLATNESS_TARGET)
        ));
    }
    for clients in CLIENTS {
        let kind = Kind::Throughput { clients, keys: clients };
        let ops = |name| find(name, kind).and_then(|m| m.ops_per_sec);
        if let (Some(ours), Some(theirs)) = (ops(OURS), ops(PYTHON)) {
            let speedup = ours / theirs;
            let target = if clients == 100 {
                format!(" (target >= {THROUGHPUT_TARGET}x) {}", verdict(speedup >= THROUGHPUT_TARGET))
            } else {
                String::new()
            };
            lines.push(format!(
                "  throughput, {clients:>3} clients on distinct keys: {ours:.0} ops/s vs Python {theirs:.0} ops/s = {speedup:.1}x{target}"
            ));
        }
    }
    lines.join("\n")
}
