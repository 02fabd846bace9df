//! A replicated lock's cluster as a fault target: the three-node NATS JetStream cluster, its KV
//! stream's Raft leader killed and started again, or cut off from the other nodes and from
//! every client (`docker network disconnect`) and reconnected.
//!
//! The leader is found when the window opens (the stream's info, `cluster.leader`), so each
//! window hits whichever node leads then. A heal waits, bounded, until the stream has a leader
//! again and every replica is current: the next window then finds a settled cluster rather than
//! one still electing, and the liveness probe asks a cluster that can answer.

use std::time::Duration;

use async_trait::async_trait;
use lockcheck_support::nats::{NatsCluster, node_name};
use lockcheck_support::{Runtime, ServiceError};
use tokio::sync::Mutex;

use super::FaultTarget;
use crate::faults::{Fault, FaultError};

/// How long a heal waits for the stream to settle (an election, a replica catching up).
const SETTLE: Duration = Duration::from_secs(30);

/// A [`NatsCluster`] and the KV bucket the workload uses, as a fault target.
pub struct ClusterTarget {
    cluster: Mutex<NatsCluster>,
    bucket: String,
    /// The node the open window hit.
    hit: Mutex<Option<usize>>,
}

impl ClusterTarget {
    /// `cluster`, whose faults aim at the leader of bucket `bucket`'s stream (the bucket must
    /// exist: [`cluster_locker`](crate::backends::nats::cluster_locker) places it).
    pub fn new(cluster: NatsCluster, bucket: impl Into<String>) -> Self {
        ClusterTarget { cluster: Mutex::new(cluster), bucket: bucket.into(), hit: Mutex::new(None) }
    }

    /// The cluster.
    pub fn cluster(&self) -> &Mutex<NatsCluster> {
        &self.cluster
    }
}

fn fault_error(operation: &'static str, message: String) -> FaultError {
    FaultError::Service(ServiceError::Fault {
        operation,
        name: "nats-cluster".to_owned(),
        runtime: Runtime::Docker,
        message,
    })
}

#[async_trait]
impl FaultTarget for ClusterTarget {
    fn name(&self) -> String {
        "nats cluster (3 nodes, docker)".to_owned()
    }

    fn faults(&self) -> Vec<Fault> {
        vec![Fault::LeaderKilled, Fault::NodePartitioned]
    }

    async fn inject(&self, fault: Fault, _instance: usize) -> Result<(), FaultError> {
        let mut cluster = self.cluster.lock().await;
        let leader = cluster
            .stream_leader(&self.bucket)
            .await
            .map_err(|error| fault_error("find the stream leader", error))?
            .ok_or_else(|| fault_error("find the stream leader", format!("KV_{} has no leader", self.bucket)))?;
        *self.hit.lock().await = Some(leader);
        match fault {
            Fault::LeaderKilled => cluster.node_mut(leader).kill().await?,
            Fault::NodePartitioned => cluster.nodes()[leader].disconnect().await?,
            other => return Err(fault_error("inject", format!("{other} is not a cluster fault"))),
        }
        Ok(())
    }

    async fn heal(&self, fault: Fault, _instance: usize) -> Result<(), FaultError> {
        let Some(node) = self.hit.lock().await.take() else { return Ok(()) };
        let mut cluster = self.cluster.lock().await;
        match fault {
            Fault::LeaderKilled => cluster.node_mut(node).start_again().await?,
            Fault::NodePartitioned => cluster.nodes()[node].reconnect().await?,
            other => return Err(fault_error("heal", format!("{other} is not a cluster fault"))),
        }
        cluster.await_stream_settled(&self.bucket, None, SETTLE).await.map_err(|error| {
            fault_error("heal", format!("{} back, but the stream did not settle: {error}", node_name(node)))
        })?;
        Ok(())
    }
}
