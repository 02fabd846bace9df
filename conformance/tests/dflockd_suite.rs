//! The conformance suite against dflockd servers, one `#[test]` per check and server:
//! lockcheck's reference server (in-process, claiming FIFO and fencing) with and without
//! auto-release on disconnect, and the real Python dflockd 0.5 server (which claims no fencing
//! and no semaphores: its tokens are random and it has no `sl`). Every test starts its own
//! server and stops it when it ends.
#![cfg(feature = "dflockd")]

use std::time::Duration;

use lockcheck_conformance::backends::dflockd::{DflockdBackend, EmbeddedDflockd};
use lockcheck_conformance::suite::check_info;
use lockcheck_conformance::{Property, Status, SuiteConfig, Timing, conformance_suite, run_check, run_suite};
use lockcheck_impls::dflockd::DflockdLockerConfig;
use lockcheck_server::ServerConfig;
use lockcheck_support::dflockd::{PythonDflockdOptions, python_dflockd};
use lockcheck_support::proxy::TcpProxy;

fn reference_server() -> DflockdBackend {
    DflockdBackend::embedded().expect("the reference server starts")
}

/// The reference server without auto-release on disconnect: leases end only by release or
/// expiry, and the client, told so (`session_bound: false`), is held to that.
fn reference_server_without_auto_release() -> DflockdBackend {
    let mut config = ServerConfig::ephemeral();
    config.auto_release_on_disconnect = false;
    let backend = DflockdBackend::embedded_with(config).expect("the reference server starts");
    assert!(!backend.config().session_bound);
    backend
}

/// The Python server in its default configuration (auto-release on disconnect), a process of
/// the test's own.
///
/// The Python server does not read a connection while its blocking `l` waits, so a waiter
/// whose client gave up stays queued until its own wait bound and may be granted then (and
/// the grant freed at once, as the connection is found closed). The checkers are told so: a
/// cancelled acquire's grant may last as long as the longest wait the workload gives a
/// cancelled acquire (1.5 base leases, 3 s in whole seconds) plus the tolerance. Python 0.5's
/// tokens are random, so it claims no fencing, and the checkers hold it to everything else.
fn python_server() -> Option<DflockdBackend> {
    let service = tokio::runtime::Handle::current()
        .block_on(python_dflockd(&PythonDflockdOptions::default()))
        .expect("the Python dflockd server starts")?;
    let whole_seconds = Timing::whole_seconds();
    let timing = Timing { cancel_cleanup: Some(Duration::from_secs(3) + whole_seconds.tolerance), ..whole_seconds };
    Some(DflockdBackend::python(service).with_timing(timing))
}

// Its leases are bound to sessions (auto-release on disconnect, the default): a session cut
// under a live holder frees the lease, which its claims predict (shown by the test below).
conformance_suite!(reference, reference_server(), SuiteConfig::default());
conformance_suite!(reference_without_auto_release, reference_server_without_auto_release(), SuiteConfig::default());
conformance_suite!(python, python_server(), SuiteConfig::default().workload(4, 12).cases(8));

/// A session cut under a live holder of the reference server (auto-release on disconnect)
/// frees the lease: mutual exclusion is broken as the claims predict, and nothing else is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cut_frees_a_session_bound_lease_as_predicted() {
    let check = check_info("session_cut_under_holder").expect("the check exists");
    let result = run_check(&reference_server(), check, &SuiteConfig::default()).await;
    assert_eq!(result.status(), Status::Predicted, "{result:?}");
    assert_eq!(result.properties.get(&Property::MutualExclusion), Some(&Status::Predicted), "{result:?}");
    assert_eq!(result.properties.get(&Property::ResourceSafety), Some(&Status::Passed), "{result:?}");
}

/// With auto-release on disconnect a crashed holder's lock is freed at once. Claimed
/// (`session=bound`, the default), that is correct and the check says when it was freed;
/// not claimed (`session=ttl`), it is a lease ended before its TTL, and the checkers say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_release_on_disconnect_passes_only_where_sessions_are_claimed() {
    let check = check_info("crashed_holder_frees_within_ttl").expect("the check exists");
    let claimed = DflockdBackend::embedded().expect("the reference server starts");
    let result = run_check(&claimed, check, &SuiteConfig::default()).await;
    assert_eq!(result.status(), Status::Passed, "{result:?}");
    assert!(result.notes.iter().any(|note| note.contains("with the session")), "{result:?}");

    let mut unclaimed = DflockdBackend::embedded().expect("the reference server starts");
    unclaimed.config_mut().session_bound = false;
    let result = run_check(&unclaimed, check, &SuiteConfig::default()).await;
    assert_eq!(result.violated(), Some(Property::MutualExclusion), "{result:?}");
}

/// A server that notices a departed waiter late: the reference server behind a proxy that
/// delays every client's close by 1.5 s (as the Python server, which does not read a waiting
/// connection, does until the waiter's bound). Cancelled and locally timed-out acquires may be
/// granted in that window; with the clean-up bound set to cover it, every check passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_notices_departures_late_passes_with_its_clean_up_bound() {
    let server = EmbeddedDflockd::start(ServerConfig::ephemeral()).expect("the reference server starts");
    let proxy =
        TcpProxy::start(server.addr()).await.expect("the proxy starts").with_close_delay(Duration::from_millis(1500));
    let whole_seconds = Timing::whole_seconds();
    let timing =
        Timing { cancel_cleanup: Some(Duration::from_millis(1500) + whole_seconds.tolerance), ..whole_seconds };
    let backend = DflockdBackend::new(DflockdLockerConfig::new([proxy.addr().to_string()])).with_timing(timing);
    let config = SuiteConfig::default().only(["cancelled_acquire_leaves_nothing", "random_workload"]);
    let report = run_suite(&backend, &config).await;
    println!("{report}");
    assert_eq!(report.status(), Status::Passed, "{report}");
    drop(server);
}
