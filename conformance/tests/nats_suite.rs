//! The whole conformance suite against real NATS: one server, and a three-node JetStream
//! cluster with an R3 bucket. Each test starts its servers (containers, or a `nats-server`
//! process for the single node without Docker), runs every check, prints the report and fails
//! on any violated or unknown property the locker claims.
#![cfg(feature = "nats")]

use lockcheck_conformance::services::nats::{NatsBackend, NatsCluster, nats};
use lockcheck_conformance::{Backend, Status, SuiteConfig, run_suite};
use lockcheck_impls::nats::BucketConfig;

async fn suite(backend: &NatsBackend, runtime: &str) {
    println!("REAL NATS: conformance suite against {} ({runtime})", backend.name());
    let config = SuiteConfig::default();
    let report = run_suite(backend, &config).await;
    println!("{report}");
    assert_eq!(report.status(), Status::Passed, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_one_server() {
    let Some(server) = nats().await.expect("a NATS server (scripts/setup/nats.sh)") else { return };
    suite(&NatsBackend::on(&server, BucketConfig::new("suite")), &server.runtime().to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_a_three_node_cluster() {
    let Some(cluster) = NatsCluster::provision().await.expect("a three-node NATS cluster") else { return };
    // Opening one locker first waits for the cluster's JetStream to elect its meta leader.
    cluster.locker("suite").await.expect("the R3 bucket is placed");
    suite(&NatsBackend::on_cluster(&cluster, "suite"), "docker, 3 nodes, R3").await;
}
