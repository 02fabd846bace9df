//! Every conformance check against real NATS, one `#[test]` per check: on one server, and on a
//! three-node JetStream cluster with an R3 bucket. Every test starts its own servers
//! (containers, or a `nats-server` process for the single node without Docker) and stops them
//! when it ends, so a red run names the check and the deployment.
#![cfg(feature = "nats")]

use lockcheck_conformance::backends::nats::{NatsBackend, cluster_locker};
use lockcheck_conformance::conformance_suite;
use lockcheck_conformance::{Served, SuiteConfig};
use lockcheck_impls::nats::BucketConfig;
use lockcheck_support::nats::{NatsCluster, nats};
use tokio::runtime::Handle;

fn single_server() -> Option<Served<NatsBackend>> {
    let server = Handle::current().block_on(nats()).expect("a NATS server (scripts/setup/nats.sh)")?;
    Some(Served::new(NatsBackend::on(&server, BucketConfig::new("suite")), server))
}

fn cluster_of_three() -> Option<Served<NatsBackend>> {
    Handle::current().block_on(async {
        let cluster = NatsCluster::provision().await.expect("a three-node NATS cluster")?;
        // Opening one locker first waits for the cluster's JetStream to elect its meta leader.
        cluster_locker(&cluster, "suite").await.expect("the R3 bucket is placed");
        Some(Served::new(NatsBackend::on_cluster(&cluster, "suite"), cluster))
    })
}

conformance_suite!(one_server, single_server(), SuiteConfig::default());
conformance_suite!(three_node_cluster, cluster_of_three(), SuiteConfig::default());
