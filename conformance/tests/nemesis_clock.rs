//! The nemesis's clock faults on real servers: a server process on a fake clock
//! (libfaketime) whose wall clock steps forward by a few leases, or runs fast, while the
//! random workload runs. A lease timed by the wall clock (Redis `PX`) ends early and another
//! client is granted the key — predicted by `expiry_by_monotonic_clock: false`; a server that
//! times leases monotonically (the Python dflockd server: `time.monotonic()`) is unaffected.
//! The runs take turns, as in `nemesis.rs`.
#![cfg(all(feature = "redis", feature = "nats", feature = "dflockd"))]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lockcheck_conformance::backends::dflockd::DflockdBackend;
use lockcheck_conformance::backends::redis::{RedisBackend, RedisMode};
use lockcheck_conformance::faults::Fault;
use lockcheck_conformance::nemesis::{ClockTarget, NemesisConfig, NemesisOutcome, NemesisVerdict, run_nemesis};
use lockcheck_conformance::{Backend, Property, Status, Timing};
use lockcheck_impls::dflockd::DflockdLockerConfig;
use lockcheck_impls::redis::RedisConfig;
use lockcheck_impls::{Capabilities, Lease, LeaseRequest, LockError, Locker, Queued};
use lockcheck_support::dflockd::{PythonDflockdOptions, python_spec};
use lockcheck_support::redis::{RedisOptions, spec as redis_spec};

static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn seed(fixed: u64) -> u64 {
    lockcheck_conformance::suite::seed_from_env().unwrap_or(fixed)
}

fn config(seed: u64, seconds: u64) -> NemesisConfig {
    NemesisConfig::new(seed, Duration::from_secs(seconds)).checker_budget(Duration::from_secs(40))
}

fn redis_config() -> RedisConfig {
    let mut config = RedisConfig::default();
    config.response_timeout = Duration::from_millis(300);
    config.connect_timeout = Duration::from_millis(500);
    config
}

/// A Redis server process on a fake clock, and the single-instance locker on it.
async fn redis_on_a_fake_clock() -> Option<(RedisBackend, ClockTarget)> {
    let base = Timing::networked().base_ttl;
    let target = ClockTarget::start(&redis_spec(&RedisOptions::default()), base, false).await.expect("redis")?;
    let backend = {
        let service = target.service().lock().await;
        RedisBackend::on(RedisMode::Single, std::slice::from_ref(&*service), 1).with_config(redis_config())
    };
    assert_eq!(backend.timing().base_ttl, base, "the jump is sized by the backend's own lease");
    Some((backend, target))
}

async fn python_dflockd_on_a_fake_clock() -> Option<(DflockdBackend, ClockTarget)> {
    let spec = python_spec(&PythonDflockdOptions::default());
    // dflockd leases are whole seconds.
    let base = Timing::whole_seconds().base_ttl;
    let target = ClockTarget::start(&spec, base, false).await.expect("the Python dflockd")?;
    let address = target.service().lock().await.address().to_string();
    let backend = DflockdBackend::new(DflockdLockerConfig::new([address]));
    assert_eq!(backend.timing().base_ttl, base, "the jump is sized by the backend's own lease");
    Some((backend, target))
}

fn show(outcome: &NemesisOutcome) {
    print!("NEMESIS: {outcome}");
    outcome.record();
}

/// The predicted violation must be the double grant (or a lease seen ended early), the
/// claim `expiry_by_monotonic_clock: false`: a plain ok would mean the nemesis did not look.
fn assert_predicted_by_the_wall_clock(outcome: &NemesisOutcome) {
    match &outcome.verdict {
        NemesisVerdict::Predicted { counterexample, predicted_by } => {
            assert_eq!(predicted_by, "expiry_by_monotonic_clock: false", "{outcome}");
            assert!(
                matches!(counterexample.property, Property::MutualExclusion | Property::Expiry),
                "a lease ended by the wall clock shows as a double grant: {outcome}"
            );
        }
        other => panic!("Redis expires keys by its wall clock, as declared: {other}\n{outcome}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_its_clock_jumped_forward_is_a_predicted_double_grant() {
    let _turn = TURNS.lock().await;
    let before = children();
    let started = {
        let Some((backend, target)) = redis_on_a_fake_clock().await else { return };
        let outcome = run_nemesis(&backend, &target, Fault::ServerClockJumpedForward, &config(seed(41), 4)).await;
        show(&outcome);
        assert_predicted_by_the_wall_clock(&outcome);
        assert!(target.ahead().await >= Timing::networked().base_ttl * 2, "the clock was stepped");
        started_since(&before)
    };
    assert_gone(started).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_its_clock_running_fast_is_a_predicted_double_grant() {
    let _turn = TURNS.lock().await;
    let Some((backend, target)) = redis_on_a_fake_clock().await else { return };
    let outcome = run_nemesis(&backend, &target, Fault::ServerClockSkewed, &config(seed(42), 5)).await;
    show(&outcome);
    assert_predicted_by_the_wall_clock(&outcome);
}

/// The Python server times leases with `time.monotonic()` (its `_now`), and its client claims
/// `expiry_by_monotonic_clock`: neither a step nor a skew of its wall clock may break anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_dflockd_server_keeps_its_leases_when_its_clock_jumps_or_runs_fast() {
    let _turn = TURNS.lock().await;
    let before = children();
    let started = {
        let Some((backend, target)) = python_dflockd_on_a_fake_clock().await else { return };
        for (fault, seed_) in [(Fault::ServerClockJumpedForward, seed(43)), (Fault::ServerClockSkewed, seed(44))] {
            let outcome = run_nemesis(&backend, &target, fault, &config(seed_, 4)).await;
            show(&outcome);
            assert!(matches!(outcome.verdict, NemesisVerdict::Ok), "{outcome}");
        }
        assert!(target.ahead().await >= Timing::whole_seconds().base_ttl * 2, "the clock was moved");
        started_since(&before)
    };
    assert_gone(started).await;
}

/// The proof the other way: the Redis locker claiming a monotonic clock it does not have is
/// caught, on the same server and fault, as a violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_lock_that_claims_a_monotonic_clock_is_violated() {
    let _turn = TURNS.lock().await;
    let Some((backend, target)) = redis_on_a_fake_clock().await else { return };
    let overclaiming = Overclaiming(backend);
    let outcome = run_nemesis(&overclaiming, &target, Fault::ServerClockJumpedForward, &config(seed(41), 4)).await;
    print!("NEMESIS: {outcome}");
    assert_eq!(outcome.status(), Status::Violated, "the nemesis must catch the false claim:\n{outcome}");
}

/// The NATS server is a Go program: libfaketime cannot reach its clock. Its clock faults are
/// not checked, with that reason, and its other faults still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_servers_clock_cannot_be_faked_so_its_clock_faults_are_not_checked() {
    let _turn = TURNS.lock().await;
    let spec = lockcheck_support::nats::spec();
    let base = Timing::networked().base_ttl;
    let Some(target) = ClockTarget::start(&spec, base, false).await.expect("a NATS server") else { return };
    let address = target.service().lock().await.address();
    let bucket = lockcheck_impls::nats::BucketConfig::new("nemesis");
    let backend = lockcheck_conformance::backends::nats::NatsBackend::new(address.to_string(), bucket);
    for fault in [Fault::ServerClockJumpedForward, Fault::ServerClockSkewed] {
        let outcome = run_nemesis(&backend, &target, fault, &config(seed(45), 1)).await;
        show(&outcome);
        assert_eq!(outcome.status(), Status::NotChecked, "{outcome}");
        assert!(outcome.verdict.to_string().contains("Go program"), "{outcome}");
    }
    use lockcheck_conformance::nemesis::FaultTarget as _;
    assert!(target.faults().contains(&Fault::ServerPausedPastTtl), "its other faults remain");
}

/// The Redis locker with `expiry_by_monotonic_clock` switched on: a false claim.
struct Overclaiming(RedisBackend);

#[async_trait]
impl Backend for Overclaiming {
    fn name(&self) -> String {
        format!("{} (claiming a monotonic clock)", self.0.name())
    }
    async fn connect(&self) -> Result<Arc<dyn Locker>, LockError> {
        Ok(Arc::new(OverclaimingLocker(self.0.connect().await?)))
    }
    fn timing(&self) -> Timing {
        self.0.timing()
    }
}

struct OverclaimingLocker(Arc<dyn Locker>);

#[async_trait]
impl Locker for OverclaimingLocker {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities().with_expiry_by_monotonic_clock(true)
    }
    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        self.0.try_acquire(request).await
    }
    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        self.0.acquire(request, wait).await
    }
    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        self.0.release(lease).await
    }
    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        self.0.refresh(lease, ttl).await
    }
    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        self.0.remaining_ttl(lease).await
    }
    fn queued(&self) -> Option<Queued> {
        self.0.queued()
    }
}

/// The child processes started since `before`.
fn started_since(before: &[u32]) -> Vec<u32> {
    let started: Vec<u32> = children().into_iter().filter(|pid| !before.contains(pid)).collect();
    assert!(!started.is_empty(), "the server runs as a child process");
    started
}

/// Waits (within a bound) until none of `started` runs: the kill on drop is delivered at once,
/// the exit a moment later.
async fn assert_gone(started: Vec<u32>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let left = || children().into_iter().filter(|pid| started.contains(pid)).count();
    while left() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(left(), 0, "the server's process is gone with its target");
}

/// This process's child processes that are still running.
fn children() -> Vec<u32> {
    lockcheck_support::orphans::live_children(std::process::id())
}
