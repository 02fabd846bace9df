//! Fault runs of the NATS JetStream KV locker on real servers.
//!
//! - **server restarted, storage kept**: a file-backed bucket keeps the held entry and the
//!   stream's sequence across a kill and restart, so the lease survives (nobody else gets
//!   it, its holder releases it) and the next fencing token is still larger — safe.
//! - **server restarted, storage lost**: a memory-backed bucket comes back empty at sequence
//!   0: the key is free while its holder still believes it holds it, and the next fencing
//!   token is *smaller* — a violation the locker's capabilities for memory storage predict
//!   (`survives_server_restart: false`).
//! - **client crashed while holding**: the holder's connection closes without a release;
//!   the server's per-message TTL frees the key within the lease (plus the server's expiry
//!   slack) and wakes the waiter — safe, where the original Go locker kept the TTL in the
//!   holder's process and held the key forever.
//!
//! The cluster faults (stream leader killed, leader partitioned away) run in
//! `tests/nats_cluster.rs` on a [`NatsCluster`](lockcheck_support::nats::NatsCluster).

use std::time::Duration;

use lockcheck_impls::nats::{BucketConfig, NatsLocker};
use lockcheck_impls::{LeaseRequest, LockError, Locker};
use lockcheck_model::spec::Property;
use tokio::time::Instant;

use super::{Fault, FaultError, FaultOutcome, FaultReport};
use crate::backends::nats::locker;
use lockcheck_support::Service;

fn ms(duration: Duration) -> String {
    format!("{:.0}ms", duration.as_secs_f64() * 1e3)
}

fn busy(step: &'static str) -> FaultError {
    FaultError::lock(step)(LockError::unavailable("the key was already held"))
}

/// Kills and restarts the server while a long lock is held on a file-backed bucket
/// (`storage_kept`) or a memory-backed one, then lets a fresh client try for the key.
pub async fn server_restarted(server: &mut Service, storage_kept: bool) -> Result<FaultReport, FaultError> {
    let fault =
        if storage_kept { Fault::ServerRestartedWithPersistence } else { Fault::ServerRestartedWithoutPersistence };
    let bucket = if storage_kept {
        BucketConfig::new("fault-restart-file")
    } else {
        BucketConfig::new("fault-restart-memory").in_memory()
    };
    let holder = locker(server, bucket.clone()).await.map_err(FaultError::lock("connect"))?;
    let request = LeaseRequest::lock("fault-restart", Duration::from_secs(30));
    // A few grants first, so a reset sequence shows as a fencing token going backwards.
    for _ in 0..3 {
        let lease = holder
            .try_acquire(&request)
            .await
            .map_err(FaultError::lock("warm-up grant"))?
            .ok_or_else(|| busy("warm-up grant"))?;
        holder.release(&lease).await.map_err(FaultError::lock("warm-up release"))?;
    }
    let lease = holder.try_acquire(&request).await.map_err(FaultError::lock("grant"))?.ok_or_else(|| busy("grant"))?;
    server.restart().await?;
    let mut notes = vec![
        format!("storage {}", if storage_kept { "kept (file)" } else { "lost (memory)" }),
        format!("holder's fence {}", lease.fence()),
    ];
    // A client connected after the restart. Opening the bucket waits for JetStream to have
    // recovered it (bounded: readiness, not a retry of an operation under test).
    let address = server.address().to_string();
    let contender =
        lockcheck_support::nats::await_ready("JetStream after the restart", Duration::from_secs(20), || {
            let (address, bucket) = (address.clone(), bucket.clone());
            async move { NatsLocker::connect(&address, bucket).await }
        })
        .await?;
    let broken = match contender.acquire(&request, Duration::from_secs(1)).await {
        Ok(second) => {
            notes.push(format!("contender granted fence {}", second.fence()));
            let mut evidence = format!(
                "granted to a second client {} before the holder's lease ends",
                ms(lease.expires_at().saturating_duration_since(second.acquired_at()))
            );
            if second.fence() <= lease.fence() {
                evidence.push_str(&format!("; its fencing token {} is not above {}", second.fence(), lease.fence()));
            }
            Some((Property::MutualExclusion, evidence))
        }
        Err(error) if error.is_timeout() => {
            // The lease survived: its holder (reconnected by the client) still owns it.
            let released = holder.release(&lease).await.map_err(FaultError::lock("release after the restart"))?;
            notes.push(format!("holder's release after the restart: {released}"));
            let next = contender.try_acquire(&request).await.map_err(FaultError::lock("grant after the release"))?;
            match next {
                Some(next) if next.fence() > lease.fence() => {
                    notes.push(format!("next fence {}", next.fence()));
                    (!released).then(|| {
                        (Property::Ownership, "the holder's lease survived but its release said not held".to_owned())
                    })
                }
                Some(next) => Some((Property::Fencing, format!("fence {} after {}", next.fence(), lease.fence()))),
                None => Some((Property::Expiry, "released, yet the key is still held".to_owned())),
            }
        }
        Err(error) => return Err(FaultError::lock("grant after the restart")(error)),
    };
    Ok(FaultReport {
        backend: contender.describe(),
        fault,
        outcome: FaultOutcome::judge(fault, contender.capabilities(), broken),
        notes,
    })
}

/// A holder takes a 2 s lease on its own connection and vanishes; a waiter on another
/// connection must be granted once the lease has ended and within one second of server
/// expiry slack after it.
pub async fn client_crashed_while_holding(server: &Service) -> Result<FaultReport, FaultError> {
    let fault = Fault::ClientCrashedWhileHolding;
    let bucket = BucketConfig::new("fault-crash");
    let ttl = Duration::from_secs(2);
    let request = LeaseRequest::lock("fault-crash", ttl);
    let crashed = locker(server, bucket.clone()).await.map_err(FaultError::lock("connect"))?;
    let lease = crashed.try_acquire(&request).await.map_err(FaultError::lock("grant"))?.ok_or_else(|| busy("grant"))?;
    // The process dies: its connection closes and nothing of it runs any more.
    drop(crashed);
    let survivor = locker(server, bucket).await.map_err(FaultError::lock("connect"))?;
    let slack = Duration::from_secs(1);
    let mut notes = Vec::new();
    let broken = match survivor.acquire(&LeaseRequest::lock("fault-crash", Duration::from_secs(30)), ttl * 4).await {
        Ok(next) => {
            let granted = Instant::now();
            notes.push(format!(
                "granted {} after the crashed holder's lease ended",
                ms(granted.saturating_duration_since(lease.expires_at()))
            ));
            if next.acquired_at() < lease.expires_at() {
                Some((Property::MutualExclusion, "granted before the crashed holder's lease ended".to_owned()))
            } else if granted > lease.expires_at() + slack {
                Some((
                    Property::CrashSafety,
                    format!("freed only {} after the lease ended", ms(granted - lease.expires_at())),
                ))
            } else {
                None
            }
        }
        Err(error) if error.is_timeout() => Some((
            Property::CrashSafety,
            format!("a crashed holder's {} lease still blocked the key after {}", ms(ttl), ms(ttl * 4)),
        )),
        Err(error) => return Err(FaultError::lock("grant after the crash")(error)),
    };
    Ok(FaultReport {
        backend: survivor.describe(),
        fault,
        outcome: FaultOutcome::judge(fault, survivor.capabilities(), broken),
        notes,
    })
}
