//! Fault injection on real NATS, each fault with its asserted outcome: a restart that keeps
//! JetStream's storage is safe; one that loses it (a memory bucket) is a violation the
//! locker's declared capabilities predict; a holder that crashes frees its lock through the
//! server's TTL. The cluster faults are in `nats_cluster.rs`.
#![cfg(feature = "nats")]

use lockcheck_conformance::faults::{FaultOutcome, FaultReport, nats as faults};
use lockcheck_model::spec::Property;
use lockcheck_support::nats::nats;

fn show(report: &FaultReport) {
    print!("REAL NATS: fault {report}");
    report.record();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_storage_kept_is_safe() {
    let Some(mut server) = nats().await.expect("a NATS server") else { return };
    let report = faults::server_restarted(&mut server, true).await.expect("fault run");
    show(&report);
    assert_eq!(report.outcome, FaultOutcome::Safe, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_storage_lost_is_a_predicted_double_grant() {
    let Some(mut server) = nats().await.expect("a NATS server") else { return };
    let report = faults::server_restarted(&mut server, false).await.expect("fault run");
    show(&report);
    match &report.outcome {
        FaultOutcome::PredictedViolation { property, predicted_by, evidence } => {
            assert_eq!(*property, Property::MutualExclusion, "{report}");
            assert_eq!(*predicted_by, "survives_server_restart: false");
            assert!(evidence.contains("fencing token"), "the stream's sequence restarts too: {evidence}");
        }
        other => panic!("a memory bucket must lose the lock on restart, as declared: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holder_is_freed_by_the_server() {
    let Some(server) = nats().await.expect("a NATS server") else { return };
    let report = faults::client_crashed_while_holding(&server).await.expect("fault run");
    show(&report);
    assert_eq!(report.outcome, FaultOutcome::Safe, "{report}");
}
