//! Fault runs of the Redis lockers on real servers.
//!
//! Each run takes the servers it injects into, opens its own clients (short response
//! timeouts, so a request to a frozen server turns indeterminate quickly instead of hanging),
//! and returns a [`FaultReport`]. The pause and partition durations are the faults themselves
//! — how long the server is frozen or cut off — not waits for something to happen.

use std::sync::Arc;
use std::time::Duration;

use lockcheck_history::checkers::fencing::FencedResource;
use lockcheck_impls::redis::{RedisConfig, RedisLocker, RedlockLocker};
use lockcheck_impls::{AutoRenew, LeaseRequest, LockGuard, Locker};
use lockcheck_model::spec::Property;
use tokio::time::{Instant, sleep_until};

use super::{Fault, FaultError, FaultOutcome, FaultReport};
use lockcheck_support::Service;
use lockcheck_support::redis::url;

/// The lockers' settings under faults: answers within 300 ms, or indeterminate.
fn config() -> RedisConfig {
    let mut config = RedisConfig::default();
    config.response_timeout = Duration::from_millis(300);
    config.connect_timeout = Duration::from_millis(500);
    config
}

async fn client(server: &Service) -> Result<RedisLocker, FaultError> {
    RedisLocker::connect_with(&url(server, 1), config()).await.map_err(FaultError::lock("connect"))
}

fn ms(duration: Duration) -> String {
    format!("{:.0}ms", duration.as_secs_f64() * 1e3)
}

/// Freezes the server for twice the lease while a lock is held; the holder's refresh and a
/// contender's try during the freeze must not grant anything, and after it the contender gets
/// the lock only once the holder's lease has ended, with a larger fencing token.
pub async fn server_paused_past_ttl(server: &Service) -> Result<FaultReport, FaultError> {
    let (holder, contender) = (client(server).await?, client(server).await?);
    let ttl = Duration::from_millis(400);
    let request = LeaseRequest::lock("fault-pause", ttl);
    let lease = holder.try_acquire(&request).await.map_err(FaultError::lock("first grant"))?;
    let lease =
        lease.ok_or_else(|| FaultError::lock("first grant")(lockcheck_impls::LockError::unavailable("key busy")))?;
    let mut notes = Vec::new();
    server.pause().await?;
    let paused_at = Instant::now();
    let refresh = holder.refresh(&lease, ttl).await;
    notes.push(format!("holder's refresh during the pause: {refresh:?}"));
    let during = contender.try_acquire(&request).await;
    notes.push(format!("contender's try during the pause: {:?}", during.as_ref().map(Option::is_some)));
    let mut broken = None;
    if let Ok(Some(granted)) = &during {
        broken = Some((Property::MutualExclusion, format!("a frozen server granted {granted:?}")));
    }
    sleep_until(paused_at + ttl * 2).await;
    server.unpause().await?;
    let next = contender
        .acquire(&LeaseRequest::lock("fault-pause", Duration::from_secs(10)), Duration::from_secs(3))
        .await
        .map_err(FaultError::lock("grant after the pause"))?;
    notes.push(format!("next grant {} after the holder's lease ended", ms(next.acquired_at() - lease.expires_at())));
    if broken.is_none() && next.acquired_at() < lease.expires_at() {
        broken = Some((Property::MutualExclusion, "the next grant came before the holder's lease ended".to_owned()));
    }
    if broken.is_none() && next.fence() <= lease.fence() {
        broken = Some((Property::Fencing, format!("fence {} after {}", next.fence(), lease.fence())));
    }
    // The holder's late refresh ran after the key had expired: it must not have touched the
    // new holder's lock, and the old lease must be gone.
    if broken.is_none() && holder.remaining_ttl(&lease).await.map_err(FaultError::lock("old lease"))?.is_some() {
        broken = Some((Property::Ownership, "the expired lease still reports time left".to_owned()));
    }
    let capabilities = holder.capabilities();
    Ok(FaultReport {
        backend: holder.describe(),
        fault: Fault::ServerPausedPastTtl,
        outcome: FaultOutcome::judge(Fault::ServerPausedPastTtl, capabilities, broken),
        notes,
    })
}

/// Kills and restarts the server while a long lock is held, then lets another client try.
/// Without persistence the server forgets the lock and its fence counter: a double grant with
/// a fencing token that went backwards — a violation the locker's capabilities predict. With
/// AOF fsynced on every write (`persistent`), the lock survives.
pub async fn server_restarted(server: &mut Service, persistent: bool) -> Result<FaultReport, FaultError> {
    let fault =
        if persistent { Fault::ServerRestartedWithPersistence } else { Fault::ServerRestartedWithoutPersistence };
    let holder = client(server).await?;
    let request = LeaseRequest::lock("fault-restart", Duration::from_secs(20));
    // A few grants first, so a reset counter shows as a token going backwards.
    for _ in 0..3 {
        let lease = holder.try_acquire(&request).await.map_err(FaultError::lock("warm-up grant"))?;
        if let Some(lease) = lease {
            holder.release(&lease).await.map_err(FaultError::lock("warm-up release"))?;
        }
    }
    let lease = holder.try_acquire(&request).await.map_err(FaultError::lock("grant"))?;
    let lease = lease.ok_or_else(|| FaultError::lock("grant")(lockcheck_impls::LockError::unavailable("key busy")))?;
    server.restart().await?;
    // Another client, connected after the restart.
    let contender = client(server).await?;
    let mut notes = vec![format!("holder's fence {}", lease.fence())];
    let broken = match contender.acquire(&request, Duration::from_secs(1)).await {
        Ok(second) => {
            notes.push(format!("contender granted fence {}", second.fence()));
            let mut evidence = format!(
                "granted to a second client {} before the holder's lease ends",
                ms(lease.expires_at() - second.acquired_at())
            );
            if second.fence() <= lease.fence() {
                evidence.push_str(&format!("; its fencing token {} is not above {}", second.fence(), lease.fence()));
            }
            Some((Property::MutualExclusion, evidence))
        }
        Err(error) if error.is_timeout() => None,
        Err(error) => return Err(FaultError::lock("grant after the restart")(error)),
    };
    Ok(FaultReport {
        backend: contender.describe(),
        fault,
        outcome: FaultOutcome::judge(fault, contender.capabilities(), broken),
        notes,
    })
}

/// Kills one server of a majority lock (and with `restart`, starts it again empty) while a
/// lock is held: the majority still holds it, so nobody else may get it, the holder can still
/// refresh and release, and after the release the lock is free again.
pub async fn one_instance_killed(servers: &mut [Service], restart: bool) -> Result<FaultReport, FaultError> {
    let fault = if restart { Fault::OneInstanceRestarted } else { Fault::OneInstanceKilled };
    let urls: Vec<String> = servers.iter().map(|server| url(server, 1)).collect();
    let holder = RedlockLocker::connect(&urls, config()).await.map_err(FaultError::lock("connect"))?;
    let contender = RedlockLocker::connect(&urls, config()).await.map_err(FaultError::lock("connect"))?;
    let request = LeaseRequest::lock("fault-quorum", Duration::from_secs(20));
    let lease = holder.try_acquire(&request).await.map_err(FaultError::lock("grant"))?;
    let lease = lease.ok_or_else(|| FaultError::lock("grant")(lockcheck_impls::LockError::unavailable("key busy")))?;
    servers[0].kill().await?;
    if restart {
        servers[0].start_again().await?;
    }
    let mut notes = Vec::new();
    let mut broken = None;
    // The first request to a restarted server may fail on the old connection; a second try
    // then reaches it. Both must be refused.
    for round in 0..2 {
        match contender.try_acquire(&request).await {
            Ok(Some(second)) => {
                broken = Some((Property::MutualExclusion, format!("round {round}: granted {second:?} while held")));
            }
            Ok(None) => notes.push(format!("round {round}: contender refused")),
            Err(error) => notes.push(format!("round {round}: contender error {error}")),
        }
    }
    let refreshed = holder.refresh(&lease, request.ttl()).await.map_err(FaultError::lock("refresh"))?;
    notes.push(format!(
        "holder's refresh with one instance {}: {}",
        if restart { "empty" } else { "down" },
        refreshed.is_some()
    ));
    let lease = refreshed.unwrap_or(lease);
    let released = holder.release(&lease).await.map_err(FaultError::lock("release"))?;
    if broken.is_none() && !released {
        broken = Some((Property::Ownership, "the holder's release found the lock lost".to_owned()));
    }
    let after = contender.try_acquire(&request).await.map_err(FaultError::lock("grant after release"))?;
    match after {
        Some(lease) => {
            contender.release(&lease).await.map_err(FaultError::lock("release"))?;
        }
        None if broken.is_none() => {
            broken = Some((Property::Expiry, "the released lock could not be taken again".to_owned()));
        }
        None => {}
    }
    Ok(FaultReport {
        backend: holder.describe(),
        fault,
        outcome: FaultOutcome::judge(fault, holder.capabilities(), broken),
        notes,
    })
}

/// The holder stalls past its lease (a stop-the-world pause of the client), the lock passes
/// on, and the stalled holder then writes with its old fencing token: a resource that checks
/// tokens must refuse it (Kleppmann 2016).
pub async fn client_paused_past_lease(server: &Service) -> Result<FaultReport, FaultError> {
    let (holder, contender) = (client(server).await?, client(server).await?);
    let resource = FencedResource::new();
    let ttl = Duration::from_millis(300);
    let request = LeaseRequest::lock("fault-client-pause", ttl);
    let stalled = holder.try_acquire(&request).await.map_err(FaultError::lock("grant"))?;
    let stalled =
        stalled.ok_or_else(|| FaultError::lock("grant")(lockcheck_impls::LockError::unavailable("key busy")))?;
    let mut broken = None;
    if !resource.write(1, request.key(), stalled.fence().0) {
        broken = Some((Property::ResourceSafety, "the holder's first write was refused".to_owned()));
    }
    // The holder is stalled from here on; the contender is woken by the expiry.
    let next = contender
        .acquire(&LeaseRequest::lock(request.key(), Duration::from_secs(10)), Duration::from_secs(3))
        .await
        .map_err(FaultError::lock("grant after expiry"))?;
    let mut notes = vec![format!(
        "next holder granted {} after the stalled lease ended",
        ms(next.acquired_at() - stalled.expires_at())
    )];
    if !resource.write(2, request.key(), next.fence().0) && broken.is_none() {
        broken = Some((Property::ResourceSafety, "the new holder's write was refused".to_owned()));
    }
    // The stalled holder resumes, unaware.
    if resource.write(1, request.key(), stalled.fence().0) && broken.is_none() {
        broken = Some((
            Property::ResourceSafety,
            format!(
                "the stalled holder's write with fence {} was accepted after fence {}",
                stalled.fence(),
                next.fence()
            ),
        ));
    }
    let released = holder.release(&stalled).await.map_err(FaultError::lock("stale release"))?;
    notes.push(format!("stalled holder's release reported held: {released}"));
    if released && broken.is_none() {
        broken = Some((Property::Ownership, "the stalled holder released the new holder's lock".to_owned()));
    }
    Ok(FaultReport {
        backend: holder.describe(),
        fault: Fault::ClientPausedPastLease,
        outcome: FaultOutcome::judge(Fault::ClientPausedPastLease, holder.capabilities(), broken),
        notes,
    })
}

/// Cuts the server off (`docker network disconnect`) while a guard with auto-renew holds the
/// lock: the guard must report the lock lost no later than its lease's end, and after the
/// partition heals another client gets the lock only after that end.
pub async fn network_partition(server: &Service) -> Result<FaultReport, FaultError> {
    let holder: Arc<dyn Locker> = Arc::new(client(server).await?);
    let ttl = Duration::from_millis(800);
    let request = LeaseRequest::lock("fault-partition", ttl);
    let guard = LockGuard::acquire(holder.clone(), &request, Duration::from_secs(1), Some(AutoRenew::default()))
        .await
        .map_err(FaultError::lock("grant"))?;
    server.disconnect().await?;
    let cut_at = Instant::now();
    let reason = tokio::time::timeout(ttl * 4, guard.lost()).await;
    let lost_at = Instant::now();
    let belief_end = guard.lease().expires_at();
    server.reconnect().await?;
    let mut notes = vec![format!("guard lost: {reason:?}, {} after the cut", ms(lost_at - cut_at))];
    let mut broken = None;
    if reason.is_err() {
        broken = Some((
            Property::Expiry,
            format!("the guard still believed it held the lock {} into the partition", ms(ttl * 4)),
        ));
    }
    let contender = client(server).await?;
    let next = contender
        .acquire(&LeaseRequest::lock(request.key(), Duration::from_secs(10)), Duration::from_secs(3))
        .await
        .map_err(FaultError::lock("grant after the partition"))?;
    notes.push(format!("next grant {} after the guard's lease ended", ms(next.acquired_at() - belief_end)));
    if next.acquired_at() < belief_end && broken.is_none() {
        broken =
            Some((Property::MutualExclusion, "granted to another client before the guard's lease ended".to_owned()));
    }
    drop(guard);
    Ok(FaultReport {
        backend: contender.describe(),
        fault: Fault::NetworkPartition,
        outcome: FaultOutcome::judge(Fault::NetworkPartition, contender.capabilities(), broken),
        notes,
    })
}
