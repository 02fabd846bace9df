//! The NATS JetStream KV locker on a three-node JetStream cluster (containers on a private
//! Docker network, an R3 bucket), with the cluster faults and their outcomes
//! asserted:
//!
//! * **stream leader killed** — safe: a held lease survives the failover (replicated by
//!   Raft before the create was acknowledged), nobody else is granted it, the survivors keep
//!   enforcing the TTL of a short lease, and fencing stays monotonic;
//! * **node partitioned away** (the stream leader, cut off by `docker network disconnect`) —
//!   safe: the majority elects a new leader and keeps the lease held; the isolated node
//!   cannot grant anything (it has no quorum), and after healing the cluster still agrees.
//!
//! Each test prints `REAL-SERVER nats-cluster: <test>` and its fault report.
#![cfg(feature = "nats")]

use std::time::Duration;

use lockcheck_conformance::backends::nats::cluster_locker;
use lockcheck_conformance::faults::{Fault, FaultOutcome, FaultReport};
use lockcheck_impls::nats::{BucketConfig, NatsLocker};
use lockcheck_impls::{Lease, LeaseRequest, LockError, Locker};
use lockcheck_support::nats::NatsCluster;
use tokio::time::Instant;

const LONG: Duration = Duration::from_secs(60);

/// Prints the fault's report. Every way the run could break a property panics before this,
/// with the evidence, so a run that gets here is safe.
fn report(fault: Fault, locker: &NatsLocker, notes: Vec<String>) {
    let report = FaultReport { backend: locker.describe(), fault, outcome: FaultOutcome::Safe, notes };
    print!("REAL NATS: fault {report}");
    report.record();
}

async fn fixture(test: &str) -> Option<(NatsCluster, NatsLocker)> {
    let cluster =
        NatsCluster::provision().await.expect("a three-node NATS cluster (Docker and scripts/setup/nats.sh)")?;
    let locker = cluster_locker(&cluster, test).await.expect("the R3 bucket is placed");
    println!("REAL-SERVER nats-cluster: {test} against {}", locker.describe());
    Some((cluster, locker))
}

/// Asks `locker` to take `key` until the cluster answers (bounded: elections take seconds).
/// Every answer must be a refusal: a grant while `held` is unexpired is a double grant.
async fn assert_still_held(locker: &NatsLocker, held: &Lease, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match locker.try_acquire(&LeaseRequest::lock(held.key(), LONG)).await {
            Ok(None) => return,
            Ok(Some(lease)) => {
                panic!("double grant: {:?} granted fence {} while {} held it", held.key(), lease.fence(), held.fence())
            }
            // Unavailable or indeterminate while the cluster elects: not a grant we know of.
            Err(error) if Instant::now() < deadline && !error.is_invalid_input() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("the cluster did not answer within {within:?}: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_grants_releases_and_wakes_waiters() {
    let Some((cluster, locker)) = fixture("basics").await else { return };
    let request = LeaseRequest::lock("k", LONG);
    let first = locker.try_acquire(&request).await.unwrap().expect("free key");
    assert!(locker.try_acquire(&request).await.unwrap().is_none());
    // Four waiters, each on a connection of its own (spread over the nodes): every release
    // wakes one of them, announced by whichever node leads the stream.
    let mut waiters = Vec::new();
    for _ in 0..4 {
        waiters.push(cluster_locker(&cluster, "basics").await.expect("another client"));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for waiter in &waiters {
        let (waiter, request) = (waiter.clone(), request.clone());
        tasks.spawn(async move {
            let lease = waiter.acquire(&request, Duration::from_secs(20)).await?;
            let refreshed = waiter.refresh(&lease, LONG).await?.expect("held");
            assert!(refreshed.fence() >= lease.fence());
            waiter.release(&refreshed).await.map(|released| (lease.fence(), released))
        });
    }
    for waiter in &waiters {
        let mut queued = waiter.queued().expect("the NATS locker counts its queued acquires");
        let queued = tokio::time::timeout(LONG, queued.until_at_least(1)).await;
        assert_eq!(queued, Ok(true), "a waiter never started waiting");
    }
    assert!(locker.release(&first).await.unwrap());
    while let Some(outcome) = tasks.join_next().await {
        let (fence, released) = outcome.unwrap().expect("the waiter is woken by a release");
        assert!(fence > first.fence());
        assert!(released, "a waiter's lease was gone before its release");
    }
    let stats: Vec<_> = waiters.iter().map(NatsLocker::stats).collect();
    println!("4 hand-offs in the cluster: {stats:?}");
    assert!(stats.iter().all(|stats| stats.grants_after_recheck == 0), "a wake-up did not arrive: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_loses_no_lease_and_keeps_expiry() {
    let Some((mut cluster, locker)) = fixture("leader_killed").await else { return };
    let long = locker.try_acquire(&LeaseRequest::lock("long", LONG)).await.unwrap().unwrap();
    let short = locker.try_acquire(&LeaseRequest::lock("short", Duration::from_secs(3))).await.unwrap().unwrap();
    let leader = cluster.stream_leader("leader_killed").await.unwrap().expect("the stream has a leader");
    // A client of the survivors only (opened before the fault: opening reads the bucket).
    let survivors =
        NatsLocker::connect(&cluster.addresses_except(leader), BucketConfig::new("leader_killed").replicas(3))
            .await
            .expect("the survivors answer");
    println!("killing stream leader n{leader}");
    cluster.node_mut(leader).kill().await.expect("kill the leader");
    let killed_at = Instant::now();
    assert_still_held(&survivors, &long, Duration::from_secs(20)).await;
    // The survivors answer refusals before the stream has a new leader that can host a
    // watch: the waiter below starts once the election is over.
    let new_leader = cluster
        .await_stream_settled("leader_killed", Some(leader), Duration::from_secs(30))
        .await
        .expect("the survivors elect a new stream leader");
    println!("n{new_leader} leads the stream {:?} after the kill", killed_at.elapsed());
    // The short lease must still expire, now on the new leader's timers.
    let next = survivors.acquire(&LeaseRequest::lock("short", LONG), Duration::from_secs(20)).await.unwrap();
    assert!(Instant::now() >= short.expires_at(), "granted before the short lease ended");
    assert!(next.fence() > short.fence() && next.fence() > long.fence(), "fencing stays monotonic across failover");
    println!("short lease re-granted {:?} after the kill", killed_at.elapsed());
    // The original holder (its client fails over) still owns its lease.
    assert!(locker.release(&long).await.unwrap(), "the holder's lease survived the failover");
    cluster.node_mut(leader).start_again().await.expect("the old leader rejoins");
    report(
        Fault::LeaderKilled,
        &locker,
        vec![
            format!("killed stream leader n{leader}"),
            format!(
                "short lease re-granted {:?} after the kill, fence {} > {}",
                killed_at.elapsed(),
                next.fence(),
                long.fence()
            ),
            "long lease kept and released by its holder".to_owned(),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_cannot_grant_and_the_majority_keeps_the_lease() {
    let Some((cluster, locker)) = fixture("partition").await else { return };
    let held = locker.try_acquire(&LeaseRequest::lock("k", LONG)).await.unwrap().unwrap();
    let leader = cluster.stream_leader("partition").await.unwrap().expect("the stream has a leader");
    // A client that can only reach the node about to be isolated: it must not learn the
    // other nodes' addresses from the cluster's gossip and fail over to the majority.
    let isolated_address = cluster.nodes()[leader].address();
    let isolated_connection = async_nats::ConnectOptions::new()
        .ignore_discovered_servers()
        .connect(format!("nats://{isolated_address}"))
        .await
        .expect("connects before the partition");
    let isolated_client = NatsLocker::with_client(
        isolated_connection,
        &format!("nats://{isolated_address}"),
        BucketConfig::new("partition").replicas(3),
    )
    .await
    .expect("opens the bucket before the partition");
    let majority = NatsLocker::connect(&cluster.addresses_except(leader), BucketConfig::new("partition").replicas(3))
        .await
        .expect("the majority answers");
    println!("partitioning stream leader n{leader} away");
    cluster.nodes()[leader].disconnect().await.expect("docker network disconnect");
    assert_still_held(&majority, &held, Duration::from_secs(20)).await;
    let free = majority.try_acquire(&LeaseRequest::lock("other", LONG)).await.unwrap();
    assert!(free.is_some(), "the majority still grants free keys");

    // Whatever the isolated side answers, it is never a grant. Its request asks for a short
    // lease: one it could not get acknowledged may still be stored once the partition heals
    // (an indeterminate outcome), and must then expire on the servers like any lease.
    let isolated_ttl = Duration::from_secs(3);
    let isolated = tokio::time::timeout(
        Duration::from_secs(10),
        isolated_client.try_acquire(&LeaseRequest::lock("k2", isolated_ttl)),
    )
    .await;
    let isolated_outcome = match isolated {
        Ok(Ok(Some(lease))) => panic!("the isolated node granted fence {} without a quorum", lease.fence()),
        Ok(Ok(None)) => "refused".to_owned(),
        Ok(Err(error)) => {
            assert!(matches!(error, LockError::Unavailable { .. } | LockError::Indeterminate { .. }), "{error}");
            error.to_string()
        }
        Err(_) => "no answer within 10 s".to_owned(),
    };

    cluster.nodes()[leader].reconnect().await.expect("heal the partition");
    assert_still_held(&majority, &held, Duration::from_secs(20)).await;
    // The holder's client may sit on the node that was cut off: its release is answered
    // once that node has caught up with the leader.
    cluster.await_stream_settled("partition", None, Duration::from_secs(30)).await.expect("the healed node catches up");
    assert!(locker.release(&held).await.unwrap(), "the holder still owns its lease after healing");
    // `k2`: the isolated attempt was never acknowledged, but it may have been stored after
    // the heal (the client resends what it buffered). Then it is a lease nobody knows of, and
    // it must end with its TTL on the servers; a refused attempt must have left nothing.
    let k2 = majority.try_acquire(&LeaseRequest::lock("k2", LONG)).await.unwrap();
    let k2_note = match k2 {
        Some(_) => "k2 free after healing".to_owned(),
        None => {
            assert!(isolated_outcome != "refused", "k2 is held although the isolated attempt was refused");
            let started = Instant::now();
            majority
                .acquire(&LeaseRequest::lock("k2", LONG), isolated_ttl + Duration::from_secs(3))
                .await
                .expect("the unacknowledged lease on k2 expires on the servers");
            format!(
                "the unacknowledged attempt on k2 was stored after healing; it expired {:?} later",
                started.elapsed()
            )
        }
    };
    report(
        Fault::NodePartitioned,
        &locker,
        vec![
            format!("partitioned stream leader n{leader} away"),
            format!("isolated client: {isolated_outcome}"),
            k2_note,
            "lease kept by the majority and released by its holder after healing".to_owned(),
        ],
    );
}
