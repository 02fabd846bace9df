//! A backend plugged in the way a crate outside lockcheck would: only the public API, a
//! locker of its own that states its capabilities with the public setters, and a constructor
//! that needs a tokio runtime (it spawns its housekeeping task), which the generated tests
//! must therefore provide before they build the backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use lockcheck_conformance::{
    Backend, Capabilities, Lease, LeaseRequest, LockError, Locker, Status, SuiteConfig, Timing, conformance_suite,
    run_suite_observed,
};
use lockcheck_impls::MemoryLocker;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What this backend promises: everything its memory locker keeps, stated from outside.
const CLAIMS: Capabilities = Capabilities::none()
    .with_fencing(true)
    .with_fifo(true)
    .with_server_side_expiry(true)
    .with_semaphores(true)
    .with_push_wakeups(true);

/// A memory locker with an audit trail: every grant is reported to a housekeeping task that
/// counts them, as a real client reports to a connection driver.
struct Audited {
    locker: Arc<MemoryLocker>,
    grants: mpsc::UnboundedSender<()>,
    counted: Arc<AtomicU64>,
    housekeeping: JoinHandle<()>,
}

impl Audited {
    /// Spawns the housekeeping task: panics outside a tokio runtime.
    fn new() -> Self {
        let (grants, mut reported) = mpsc::unbounded_channel();
        let counted = Arc::new(AtomicU64::new(0));
        let housekeeping = tokio::spawn({
            let counted = counted.clone();
            async move {
                while reported.recv().await.is_some() {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Audited { locker: Arc::new(MemoryLocker::new()), grants, counted, housekeeping }
    }
}

impl Drop for Audited {
    fn drop(&mut self) {
        self.housekeeping.abort();
    }
}

#[async_trait]
impl Backend for Audited {
    fn name(&self) -> String {
        "audited-memory".into()
    }

    async fn connect(&self) -> Result<Arc<dyn Locker>, LockError> {
        Ok(Arc::new(AuditedClient { locker: self.locker.clone(), grants: self.grants.clone() }))
    }

    fn timing(&self) -> Timing {
        Timing::in_process()
    }
}

/// One client: a fresh handle per `connect`.
struct AuditedClient {
    locker: Arc<MemoryLocker>,
    grants: mpsc::UnboundedSender<()>,
}

impl AuditedClient {
    fn audit(&self, lease: Lease) -> Lease {
        // The housekeeping task outlives every client; a send can only fail after the
        // backend was dropped, and then nobody is counting.
        let _ = self.grants.send(());
        lease
    }
}

#[async_trait]
impl Locker for AuditedClient {
    fn describe(&self) -> String {
        "audited-memory".into()
    }

    fn capabilities(&self) -> Capabilities {
        CLAIMS
    }

    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        Ok(self.locker.try_acquire(request).await?.map(|lease| self.audit(lease)))
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        self.locker.acquire(request, wait).await.map(|lease| self.audit(lease))
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        self.locker.release(lease).await
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        self.locker.refresh(lease, ttl).await
    }

    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        self.locker.remaining_ttl(lease).await
    }
}

// Every check, each in its own test. A macro that built the backend before entering the
// test's runtime fails every one of them on `Audited::new`'s spawn.
conformance_suite!(audited, Audited::new(), SuiteConfig::default().cases(1).wakeup_iterations(20));

/// The whole-suite entry point from the crate root, on the same backend: the report carries
/// the claims as stated from outside, and the observer sees every selected check start and end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suite_run_reports_the_claims_stated_outside() {
    let backend = Audited::new();
    let checks = ["double_try_acquire_fails", "fencing_increases", "fifo_hand_off"];
    let config = SuiteConfig::default().only(checks);
    let mut seen = Vec::new();
    let report = run_suite_observed(&backend, &config, &mut |check, result| {
        seen.push((check.name, result.map(|result| result.status())));
    })
    .await;
    assert_eq!(report.status(), Status::Passed, "{report}");
    assert_eq!(report.capabilities, Some(CLAIMS));
    let expected: Vec<_> = checks.iter().flat_map(|name| [(*name, None), (*name, Some(Status::Passed))]).collect();
    assert_eq!(seen, expected);
    // The housekeeping task ran alongside the suite: it counts every grant the checks made
    // (two, ten on the fenced key, the holder's and four waiters'), once it catches up.
    let granted = 2 + 10 + 5;
    let caught_up = tokio::time::timeout(Duration::from_secs(5), async {
        while backend.counted.load(Ordering::Relaxed) < granted {
            tokio::task::yield_now().await;
        }
    });
    assert!(
        caught_up.await.is_ok(),
        "the housekeeping task counted {} grants",
        backend.counted.load(Ordering::Relaxed)
    );
}
