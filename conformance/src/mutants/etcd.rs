//! A flawed etcd locker, run on a real etcd: the revision-queue recipe whose waiter takes its
//! predecessor's deletion for its own grant.
//!
//! - **trusts the predecessor's deletion** ([`TrustsPredecessorDeletion`]): the correct
//!   [`EtcdLocker`] except that a waiter, woken by the deletion of the key just ahead of its
//!   own, holds without looking again whether it is now first. A predecessor that was itself a
//!   waiter (one that timed out, was cancelled, or whose lease ran out) leaves while the holder
//!   still holds, and two clients believe they hold the lock; caught as a mutual-exclusion
//!   violation. The correct locker looks again at one revision (its own key still there, and
//!   first) before it holds.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{EventType, GetOptions, LeaseGrantOptions, PutOptions, SortOrder, SortTarget, WatchOptions};
use lockcheck_history::Timing;
use lockcheck_impls::etcd::{DEFAULT_PREFIX, EtcdConfig, EtcdLocker, EtcdMode, encode_key, lease_id, whole_seconds};
use lockcheck_impls::{Capabilities, FencingToken, Lease, LeaseRequest, LockError, Locker, OwnerToken, validate_wait};
use lockcheck_model::spec::Property;
use lockcheck_support::Service;
use lockcheck_support::etcd::{EtcdOptions, spec};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::Mutant;
use crate::backend::Backend;

/// The correct etcd locker, except that a woken waiter does not look again (module docs).
pub struct TrustsPredecessorDeletion {
    locker: EtcdLocker,
}

/// Revokes a waiter's lease when its acquire is dropped or gives up (the correct locker's
/// cancel safety, kept so that the mutant has its one flaw only).
struct RevokeOnDrop {
    client: Option<etcd_client::Client>,
    lease: i64,
}

impl RevokeOnDrop {
    fn disarm(mut self) {
        self.client = None;
    }
}

impl Drop for RevokeOnDrop {
    fn drop(&mut self) {
        if let (Some(mut client), Ok(runtime)) = (self.client.take(), tokio::runtime::Handle::try_current()) {
            let lease = self.lease;
            runtime.spawn(async move {
                let _ = client.lease_revoke(lease).await;
            });
        }
    }
}

fn failed(error: etcd_client::Error) -> LockError {
    LockError::indeterminate("acquire", error.to_string())
}

#[async_trait]
impl Locker for TrustsPredecessorDeletion {
    fn describe(&self) -> String {
        format!("{} (trusts its predecessor's deletion)", self.locker.describe())
    }

    fn capabilities(&self) -> Capabilities {
        self.locker.capabilities().with_semaphores(false)
    }

    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        self.locker.try_acquire(request).await
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        request.validate()?;
        validate_wait(wait)?;
        let started = Instant::now();
        if let Some(lease) = self.locker.try_acquire(request).await? {
            return Ok(lease);
        }
        let mut client = self.locker.client().clone();
        let owner = OwnerToken::random();
        let id = lease_id(owner);
        let sent = Instant::now();
        let granted = client
            .lease_grant(whole_seconds(request.ttl()), Some(LeaseGrantOptions::new().with_id(id)))
            .await
            .map_err(failed)?;
        let lease = |revision: i64| {
            Lease::new(
                request.key(),
                owner,
                FencingToken(revision as u64),
                Duration::from_secs(granted.ttl() as u64),
                sent,
                1,
            )
        };
        let guard = RevokeOnDrop { client: Some(client.clone()), lease: id };
        let key = self.locker.lease_key(&lease(0));
        let value = format!("limit=1;ttl={}", granted.ttl());
        let put = client.put(key, value, Some(PutOptions::new().with_lease(id))).await.map_err(failed)?;
        let revision = put.header().map_or(0, |header| header.revision());
        let dir = format!("{DEFAULT_PREFIX}/{}/", encode_key(request.key()));
        let ahead = GetOptions::new()
            .with_prefix()
            .with_max_create_revision(revision - 1)
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(1)
            .with_keys_only();
        let found = client.get(dir, Some(ahead)).await.map_err(failed)?;
        let Some(predecessor) = found.kvs().first().map(|kv| kv.key().to_vec()) else {
            guard.disarm();
            return Ok(lease(revision));
        };
        let from = found.header().map_or(0, |header| header.revision()) + 1;
        let mut watch =
            client.watch(predecessor, Some(WatchOptions::new().with_start_revision(from))).await.map_err(failed)?;
        let deadline = started + wait;
        loop {
            tokio::select! {
                message = watch.message() => match message.map_err(failed)? {
                    // The flaw: the predecessor is gone, so this waiter "holds".
                    Some(answer) if answer.events().iter().any(|event| event.event_type() == EventType::Delete) => {
                        guard.disarm();
                        return Ok(lease(revision));
                    }
                    Some(_) => {}
                    None => return Err(LockError::indeterminate("acquire", "the watch ended")),
                },
                () = tokio::time::sleep_until(deadline) => {
                    let revoked = client.lease_revoke(id).await.is_ok();
                    if revoked {
                        guard.disarm();
                        return Err(LockError::TimedOut { waited: started.elapsed() });
                    }
                    return Err(LockError::TimedOutLocally { waited: started.elapsed() });
                }
            }
        }
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        self.locker.release(lease).await
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LockError> {
        self.locker.refresh(lease, ttl).await
    }

    async fn remaining_ttl(&self, lease: &Lease) -> Result<Option<Duration>, LockError> {
        self.locker.remaining_ttl(lease).await
    }
}

/// Starts its own etcd on first use and gives each client a fresh flawed locker.
struct FlawedBackend {
    name: &'static str,
    server: OnceCell<Service>,
}

#[async_trait]
impl Backend for FlawedBackend {
    fn name(&self) -> String {
        self.name.to_owned()
    }

    async fn connect(&self) -> Result<Arc<dyn Locker>, LockError> {
        let server = self
            .server
            .get_or_try_init(|| async {
                Service::start(&spec(&EtcdOptions::default()))
                    .await
                    .map_err(|e| LockError::unavailable(format!("no etcd for the {} mutant: {e}", self.name)))
            })
            .await?;
        let config = EtcdConfig::new(EtcdMode::Queue, vec![server.address().to_string()]);
        Ok(Arc::new(TrustsPredecessorDeletion { locker: EtcdLocker::connect(config).await? }))
    }

    fn timing(&self) -> Timing {
        Timing::whole_seconds()
    }
}

/// The etcd mutants (each starts an etcd server when first connected).
pub fn mutants() -> Vec<Mutant> {
    vec![Mutant {
        name: "etcd-trusts-predecessor-deletion",
        failure_class: "Double grant: a revision-queue waiter takes its predecessor's deletion for a grant without looking whether it is now first.",
        expected_to_violate: Property::MutualExclusion,
        also_violates: &[],
        backend: Box::new(FlawedBackend { name: "etcd-trusts-predecessor-deletion", server: OnceCell::new() }),
    }]
}
