//! The nemesis on the three-node NATS JetStream cluster (Docker): the KV stream's Raft leader
//! killed and started again, or cut off from the other nodes and from every client, while the
//! random workload runs on an R3 bucket. JetStream replicates a write through Raft before it
//! acknowledges it, so the locker claims that leases and fencing survive both: any broken
//! property is a violation. Each run leaves no container or network behind.
#![cfg(feature = "nats")]

use std::time::Duration;

use lockcheck_conformance::backends::nats::{NatsBackend, cluster_locker};
use lockcheck_conformance::faults::Fault;
use lockcheck_conformance::nemesis::{ClusterTarget, NemesisConfig, NemesisVerdict, run_nemesis};
use lockcheck_support::nats::NatsCluster;

static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn seed(fixed: u64) -> u64 {
    lockcheck_conformance::suite::seed_from_env().unwrap_or(fixed)
}

/// Runs `fault` on a fresh cluster and asserts the run ok; then that the cluster's containers
/// are gone with the target.
async fn cluster_run_is_ok(fault: Fault, bucket: &str, seed: u64) {
    let _turn = TURNS.lock().await;
    let containers = {
        let Some(cluster) = NatsCluster::provision().await.expect("a three-node NATS cluster (Docker)") else {
            return;
        };
        cluster_locker(&cluster, bucket).await.expect("the R3 bucket is placed");
        let backend = NatsBackend::on_cluster(&cluster, bucket);
        let containers: Vec<String> =
            cluster.nodes().iter().filter_map(|node| node.container_id().map(str::to_owned)).collect();
        let target = ClusterTarget::new(cluster, bucket);
        let config = NemesisConfig::new(seed, Duration::from_secs(10)).checker_budget(Duration::from_secs(40));
        let outcome = run_nemesis(&backend, &target, fault, &config).await;
        print!("NEMESIS: {outcome}");
        outcome.record();
        assert!(matches!(outcome.verdict, NemesisVerdict::Ok), "{outcome}");
        // Between elections the workload must have run: connections refused while the stream
        // has no leader are not the whole history.
        assert!(outcome.operations > 15, "the workload hardly ran: {outcome}");
        containers
    };
    assert_eq!(containers.len(), 3);
    for id in containers {
        assert!(docker_ps(&id).is_empty(), "the container {id} is removed with its target");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_again_and_again_is_ok() {
    cluster_run_is_ok(Fault::LeaderKilled, "nemesis_leader", seed(51)).await;
}

/// Ignored, with findings to diagnose (seed 52, 2 runs of 5 failed, different each time):
///
/// * **P1**: during the partition a try-acquire got no acknowledgement (indeterminate), an
///   acquire with a 103 ms wait returned *timed out* — which the spec reads as "held by someone
///   throughout the wait", and only the indeterminate try-acquire could have held it — and then
///   another client was granted the key while that lease would still run. The NATS locker
///   reports `TimedOut` when its wait runs out with a create still unanswered
///   (`impls/src/nats/acquire.rs`, the `select!`s on the deadline), though the cluster never
///   said the key was held; the API's `LockError::TimedOutLocally` ("ran out of its wait while
///   its request was still with the backend") is the answer for that case. The create's guard
///   removes a late grant only when the answer arrives, which in a leaderless cluster can take
///   the JetStream request time-out — longer than the NATS backend's clean-up bound (500 ms).
/// * **P7**: after the heal (the stream settled), an acquire cancelled at 6977 ms still held
///   the key at 7728 ms, past its 500 ms clean-up bound: likely the same guard, given its
///   answer late (the same mechanism as above, seen from the other side).
///
/// Run with `--ignored --nocapture`; the runs print the shrunk counterexamples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "findings: P1 after a timed-out acquire during a leader partition, P7 after the heal (seed 52, 2 runs in 5)"]
async fn partitioning_the_stream_leader_away_again_and_again_is_ok() {
    cluster_run_is_ok(Fault::NodePartitioned, "nemesis_partition", seed(52)).await;
}

/// The ids of containers (running or not) matching `id`.
fn docker_ps(id: &str) -> String {
    let output = std::process::Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter", &format!("id={id}")])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
