//! Fault injection on real Redis, each fault with its asserted outcome: safe where the
//! locker's claims hold, a *predicted* violation where its declared capabilities say it
//! cannot cope (a restart without persistence), never an unpredicted violation.
#![cfg(feature = "redis")]

use lockcheck_conformance::faults::{FaultOutcome, FaultReport, redis as faults};
use lockcheck_model::spec::Property;
use lockcheck_support::Runtime;
use lockcheck_support::redis::{RedisOptions, redis, redis_many};

fn show(report: &FaultReport) {
    print!("REAL REDIS: fault {report}");
    report.record();
}

fn assert_safe(report: &FaultReport) {
    show(report);
    assert_eq!(report.outcome, FaultOutcome::Safe, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_paused_past_the_ttl_is_safe() {
    let Some(server) = redis(&RedisOptions::default()).await.expect("a Redis server") else { return };
    assert_safe(&faults::server_paused_past_ttl(&server).await.expect("fault run"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_persistence_is_a_predicted_double_grant() {
    let Some(mut server) = redis(&RedisOptions::default()).await.expect("a Redis server") else { return };
    let report = faults::server_restarted(&mut server, false).await.expect("fault run");
    show(&report);
    match &report.outcome {
        FaultOutcome::PredictedViolation { property, predicted_by, evidence } => {
            assert_eq!(*property, Property::MutualExclusion, "{report}");
            assert_eq!(*predicted_by, "survives_server_restart: false");
            assert!(evidence.contains("fencing token"), "the fence counter restarts too: {evidence}");
        }
        other => panic!("a restart without persistence must lose the lock, as declared: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_fsynced_aof_keeps_the_lock() {
    let options = RedisOptions { append_only: true, ..RedisOptions::default() };
    let Some(mut server) = redis(&options).await.expect("a Redis server") else { return };
    assert_safe(&faults::server_restarted(&mut server, true).await.expect("fault run"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_three_quorum_instances_killed_is_safe() {
    let Some(mut servers) = redis_many(&RedisOptions::default(), 3).await.expect("Redis servers") else { return };
    assert_safe(&faults::one_instance_killed(&mut servers, false).await.expect("fault run"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_five_quorum_instances_restarted_empty_is_safe() {
    let Some(mut servers) = redis_many(&RedisOptions::default(), 5).await.expect("Redis servers") else { return };
    assert_safe(&faults::one_instance_killed(&mut servers, true).await.expect("fault run"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_client_is_fenced_off_by_the_resource() {
    let Some(server) = redis(&RedisOptions::default()).await.expect("a Redis server") else { return };
    assert_safe(&faults::client_paused_past_lease(&server).await.expect("fault run"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_partition_is_safe_and_the_guard_learns_it_lost() {
    let Some(server) = redis(&RedisOptions::default()).await.expect("a Redis server") else { return };
    if server.runtime() == Runtime::Process {
        // A local process cannot be partitioned without privileges; say so, loudly.
        println!("NOT RUN: network partition needs the Docker runtime (this run uses processes)");
        return;
    }
    assert_safe(&faults::network_partition(&server).await.expect("fault run"));
}
