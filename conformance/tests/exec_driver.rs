//! Lockers in other processes through the driver protocol (`exec:` URLs): the whole suite
//! through the Rust driver over a real Redis; the checks proven both ways through drivers
//! (a broken one caught, an unusual but correct one passed); hostile drivers (a crash, a
//! garbage line, silence, late replies) turned into unknown outcomes that quote the driver's
//! stderr, never a hang; and the minimal Python driver (redis-py's Lock) passing what it
//! claims.
//!
//! A memory locker lives in one process, so every driver here serves a real server that all
//! of a test's driver processes share.
#![cfg(all(feature = "redis", feature = "dflockd"))]

use std::time::Duration;

use lockcheck_conformance::backends::exec::ExecBackend;
use lockcheck_conformance::{
    Backend, LeaseRequest, LockError, Locker, Property, Served, Status, SuiteConfig, conformance_suite, run_check,
    run_suite, suite::check_info,
};
use lockcheck_support::Service;
use lockcheck_support::redis::{RedisOptions, redis, url};

const DRIVER: &str = env!("CARGO_BIN_EXE_lockcheck-driver");

/// A fresh Redis server; `None` only where the run allows skipping.
async fn redis_server() -> Option<Service> {
    redis(&RedisOptions::default()).await.expect("a Redis server (scripts/setup/redis.sh)")
}

/// The Rust driver (with `flaw`) over `server`'s database 1.
fn rust_driver(server: &Service, flaw: Option<&str>) -> ExecBackend {
    let mut command = vec![DRIVER.to_owned()];
    if let Some(flaw) = flaw {
        command.extend(["--flaw".to_owned(), flaw.to_owned()]);
    }
    command.push(url(server, 1));
    ExecBackend::new(command).expect("a command")
}

/// The Rust driver over a fresh Redis, for `conformance_suite!` (built inside the test's
/// runtime).
fn exec_over_redis(flaw: Option<&'static str>) -> Option<Served<ExecBackend>> {
    let server = tokio::runtime::Handle::current().block_on(redis_server())?;
    Some(Served::new(rust_driver(&server, flaw), server))
}

conformance_suite!(rust_driver_over_redis, exec_over_redis(None));

/// The checks that exercise what an unusual driver does differently: lease names that are not
/// tokens (a stranger's release), replies out of order (a cancel overtaking its acquire's
/// grant).
const UNUSUAL: [&str; 7] = [
    "release_by_non_holder_is_noop",
    "cancelled_acquire_leaves_nothing",
    "acquire_waits_then_wins",
    "refresh_extends",
    "fencing_increases",
    "sequential_model",
    "random_workload",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusual_but_correct_driver_passes() {
    let Some(server) = redis_server().await else { return };
    let backend = rust_driver(&server, Some("unusual"));
    let locker = backend.spawn().await.expect("the unusual driver says hello");
    assert!(locker.describe().contains("lockcheck driver"), "{}", locker.describe());
    drop(locker);
    let report = run_suite(&backend, &SuiteConfig::default().only(UNUSUAL).cases(2)).await;
    println!("{report}");
    assert_eq!(report.checks.len(), UNUSUAL.len(), "{report}");
    assert_eq!(report.status(), Status::Passed, "{report}");
}

/// Every broken driver is caught, by the property its flaw breaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_drivers_are_caught() {
    let Some(server) = redis_server().await else { return };
    let config = SuiteConfig::default().cases(2);
    for (flaw, check, property) in [
        ("double-grant", "double_try_acquire_fails", Property::MutualExclusion),
        ("stale-fence", "fencing_increases", Property::Fencing),
    ] {
        let result = run_check(&rust_driver(&server, Some(flaw)), check_info(check).unwrap(), &config).await;
        println!("{flaw}: {result:?}");
        assert_eq!(result.properties.get(&property), Some(&Status::Violated), "{flaw} must be caught: {result:?}");
    }
}

/// What a hostile driver did to a request, within a bound (a hang fails the test).
async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future).await.unwrap_or_else(|_| panic!("{what} hung"))
}

fn unknown_with(error: &LockError, words: &[&str]) {
    assert!(error.is_indeterminate(), "not an unknown outcome: {error}");
    for word in words {
        assert!(error.to_string().contains(word), "{word:?} missing from: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_drivers_give_unknown_outcomes_with_their_stderr_and_leave_no_process() {
    let Some(server) = redis_server().await else { return };
    let before = children();
    let request = LeaseRequest::lock("hostile", Duration::from_secs(5));

    let crashing = rust_driver(&server, Some("crash-on=3")).spawn().await.expect("hello");
    let lease = bounded("request 1", crashing.try_acquire(&request)).await.expect("request 1").expect("granted");
    assert!(bounded("request 2", crashing.remaining_ttl(&lease)).await.expect("request 2").is_some());
    let error = bounded("request 3", crashing.release(&lease)).await.expect_err("the driver crashed");
    unknown_with(&error, &["crashing on request 3", "exited"]);
    let error = bounded("request 4", crashing.release(&lease)).await.expect_err("the driver is gone");
    assert!(error.definitely_not_applied(), "nothing was sent to a dead driver: {error}");

    let garbage = rust_driver(&server, Some("garbage")).spawn().await.expect("hello");
    let error = bounded("garbage", garbage.try_acquire(&request)).await.expect_err("a garbage reply");
    unknown_with(&error, &["not a reply", "this is not a reply", "answering garbage"]);

    let silent = rust_driver(&server, Some("silent")).with_margin(Duration::from_millis(300)).spawn().await.unwrap();
    let error = bounded("silence", silent.acquire(&request, Duration::from_millis(100))).await.expect_err("silence");
    unknown_with(&error, &["no reply", "within", "serving"]);

    let late = rust_driver(&server, Some("late=3000")).with_margin(Duration::from_millis(300));
    let late = late.spawn().await.unwrap();
    let error = bounded("a late reply", late.try_acquire(&request)).await.expect_err("too late");
    unknown_with(&error, &["no reply", "killed"]);

    for (command, words) in [
        (vec!["sh", "-c", "echo 'hello there'; echo 'about to fail' >&2"], ["not a hello", "about to fail"]),
        (vec!["sh", "-c", "echo 'no hello for you' >&2; exit 1"], ["before its hello", "no hello for you"]),
        (vec!["/nonexistent/driver"], ["could not start", "/nonexistent/driver"]),
    ] {
        let backend = ExecBackend::new(command.iter().map(|s| s.to_string()).collect()).unwrap();
        let error = bounded("a driver that is not one", backend.connect()).await.err().expect("no locker");
        assert!(error.is_unavailable(), "{error}");
        for word in words {
            assert!(error.to_string().contains(word), "{word:?} missing from: {error}");
        }
    }
    let healthy = rust_driver(&server, None).spawn().await.expect("hello");
    let started: Vec<u32> = children().into_iter().filter(|pid| !before.contains(pid)).collect();
    assert!(started.contains(&healthy.pid().unwrap()), "a driver runs until its locker is dropped");
    drop((crashing, garbage, silent, late, healthy));
    // The kill on drop is delivered at once, the exit a moment later: awaited, within a bound.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let left = || children().into_iter().filter(|pid| started.contains(pid)).count();
    while left() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(left(), 0, "every driver process is gone with its locker");
}

/// An operation a driver does not serve leaves the checks that need it "not checked", never
/// failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_a_driver_does_not_serve_is_not_checked() {
    let Some(server) = redis_server().await else { return };
    let script =
        include_str!("../../drivers/python/minimal_redis.py").replace(r#""remaining_ttl", "cancel"]"#, r#""cancel"]"#);
    let backend = ExecBackend::new(vec![python(), "-c".into(), script, url(&server, 1)]).unwrap();
    let locker = backend.spawn().await.expect("hello");
    let lease = locker.try_acquire(&LeaseRequest::lock("k", Duration::from_secs(1))).await.unwrap().unwrap();
    assert!(matches!(locker.remaining_ttl(&lease).await, Err(LockError::Unsupported { .. })));
    let result = run_check(&backend, check_info("remaining_ttl_counts_down").unwrap(), &SuiteConfig::default()).await;
    println!("{result:?}");
    assert_eq!(result.status(), Status::NotChecked, "{result:?}");
    // A release not served ends a sequential case there: the steps generated after it count on
    // the key it freed (they used to run on, and the check crashed).
    let script = include_str!("../../drivers/python/minimal_redis.py").replace(r#""release", "#, "");
    let backend = ExecBackend::new(vec![python(), "-c".into(), script, url(&server, 1)]).unwrap();
    let result = run_check(&backend, check_info("sequential_model").unwrap(), &SuiteConfig::default().cases(8)).await;
    println!("{result:?}");
    assert_eq!(result.status(), Status::Passed, "{result:?}");
}

/// The minimal Python driver (drivers/python/minimal_redis.py: redis-py's Lock) passes every
/// check of what it claims, against a real Redis; what it does not claim is not claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minimal_python_driver_passes_what_it_claims() {
    let Some(server) = redis_server().await else { return };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../drivers/python/minimal_redis.py");
    let backend = ExecBackend::new(vec![python(), script.to_owned(), url(&server, 1)]).unwrap();
    let locker = backend.spawn().await.expect("the Python driver says hello (redis-py: scripts/setup/python.sh)");
    let claims = locker.capabilities();
    assert!(claims.server_side_expiry && !claims.fencing && !claims.fifo && !claims.semaphores, "{claims:?}");
    drop(locker);
    let report = run_suite(&backend, &SuiteConfig::default().cases(2).wakeup_iterations(30)).await;
    println!("{report}");
    assert!(report.checks.iter().all(|result| result.status() <= Status::Passed), "{report}");
    let passed = report.checks.iter().filter(|result| result.status() == Status::Passed).count();
    assert!(passed >= 15, "most checks apply to a lock with server-side expiry: {report}");
    for unclaimed in ["fencing_increases", "fifo_hand_off", "semaphore_admits_limit"] {
        let result = report.checks.iter().find(|result| result.check == unclaimed).unwrap();
        assert_eq!(result.status(), Status::NotClaimed, "{unclaimed}: {result:?}");
    }
}

/// redis-py's Lock with no TTL (`timeout=None`: held until released), claiming `no_ttl`; or,
/// `expiring`, a broken driver that claims it and still leases for the TTL asked.
fn without_ttl_driver(server: &Service, expiring: bool) -> ExecBackend {
    let mut script = include_str!("../../drivers/python/minimal_redis.py")
        .replace(r#""capabilities": {"server_side_expiry": True}"#, r#""capabilities": {"no_ttl": True}"#)
        .replace(r#""release", "refresh", "remaining_ttl", "cancel"]"#, r#""release", "cancel"]"#);
    if !expiring {
        script = script.replace("timeout=ttl_ms / 1000)", "timeout=None)");
    }
    ExecBackend::new(vec![python(), "-c".into(), script, url(server, 1)]).unwrap()
}

/// A lock without TTL (`no_ttl`) passes every check of what it claims: the checks that wait
/// out a TTL are not claimed, the random workload's leases are judged held until released,
/// and its lease is shown to outlast the TTL asked for. A driver that claims `no_ttl` but
/// lets leases expire is caught handing a held lock to another client (P1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_without_ttl_passes_and_one_that_expires_anyway_is_caught() {
    let Some(server) = redis_server().await else { return };
    let correct = without_ttl_driver(&server, false);
    let report = run_suite(&correct, &SuiteConfig::default().cases(2).wakeup_iterations(30)).await;
    println!("{report}");
    assert!(report.checks.iter().all(|result| result.status() <= Status::Passed), "{report}");
    for check in
        ["ttl_expiry_frees_lock", "refresh_extends", "refresh_after_loss_reports_loss", "remaining_ttl_counts_down"]
    {
        let result = report.checks.iter().find(|result| result.check == check).unwrap();
        assert_eq!(result.status(), Status::NotClaimed, "{check}: {result:?}");
    }
    for check in ["lease_lasts_its_ttl", "random_workload", "next_holder_survives_old_ttl"] {
        let result = report.checks.iter().find(|result| result.check == check).unwrap();
        assert_eq!(result.status(), Status::Passed, "{check}: {result:?}");
    }
    let broken = without_ttl_driver(&server, true);
    let caught = run_check(&broken, check_info("lease_lasts_its_ttl").unwrap(), &SuiteConfig::default()).await;
    println!("{caught:?}");
    assert_eq!(caught.properties.get(&Property::MutualExclusion), Some(&Status::Violated), "{caught:?}");
}

/// The project's Python (scripts/setup/python.sh), with redis-py.
fn python() -> String {
    let venv = std::env::var("LOCKCHECK_VENV").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        std::env::var("LOCKCHECK_HOME").map_or(format!("{home}/.cache/lockcheck/venv"), |home| format!("{home}/venv"))
    });
    format!("{venv}/bin/python")
}

/// This process's child processes that are still running.
fn children() -> Vec<u32> {
    lockcheck_support::orphans::live_children(std::process::id())
}
