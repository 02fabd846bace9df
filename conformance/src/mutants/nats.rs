//! Flawed NATS lockers, run on a real NATS server: the failure classes of the original Go
//! NATS JetStream KV locker (go-warp's `lock.NATS`), each ported on its own so the suite must
//! catch exactly that flaw.
//!
//! - **watch opened after the failed try** ([`WatchAfterFailedTry`]): the correct
//!   [`NatsLocker`] except that a waiter first tries, and only *then* opens an updates-only KV
//!   watch (the Go `Acquire` loop: `TryLock`, then `kv.Watch(ctx, key, UpdatesOnly())`). A
//!   release that lands between the failed try and the watch is never seen, so the waiter
//!   sleeps until its wait bound or the holder's lease ends; caught as a lost wake-up;
//! - **expiry only in the holder's process** ([`PortedNatsLocker`] with the watch opened
//!   first): `kv.Create` without a TTL, and a timer in the holder's process that deletes the
//!   entry when the lease ends (the Go `TryLock`: "per-key TTL, since JetStream KV TTL is
//!   bucket-level only"). When the holder crashes so does its timer, and the key is locked
//!   forever; caught as a crash-safety violation.
//!
//! The Go locker itself, both flaws at once, is a peer: `crate::peers::nats`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use lockcheck_history::Timing;
use lockcheck_impls::nats::{BucketConfig, NatsLocker, encode_key};
use lockcheck_impls::{Capabilities, Lease, LeaseRequest, LockError, Locker, validate_wait};
use lockcheck_model::spec::Property;
use lockcheck_support::Service;
use lockcheck_support::nats::spec;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::Mutant;
use crate::backend::Backend;
use crate::peers::nats::{PortedNatsLocker, next_removal_after, unavailable};

/// The correct NATS locker with the Go waiter's ordering: try, *then* watch for updates.
pub struct WatchAfterFailedTry {
    locker: NatsLocker,
}

impl WatchAfterFailedTry {
    /// Wraps a correct locker.
    pub fn new(locker: NatsLocker) -> Self {
        WatchAfterFailedTry { locker }
    }
}

#[async_trait]
impl Locker for WatchAfterFailedTry {
    fn describe(&self) -> String {
        format!("{} (watch after the failed try)", self.locker.describe())
    }

    fn capabilities(&self) -> Capabilities {
        self.locker.capabilities()
    }

    async fn try_acquire(&self, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        self.locker.try_acquire(request).await
    }

    async fn acquire(&self, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        validate_wait(wait)?;
        let started = Instant::now();
        let deadline = started + wait;
        loop {
            if let Some(lease) = self.locker.try_acquire(request).await? {
                return Ok(lease);
            }
            // THE FLAW: the watch is opened after the try failed; a release in between is
            // in the past by the time it looks.
            let opened_at = SystemTime::now();
            let mut watch =
                self.locker.store().watch(encode_key(request.key())).await.map_err(|e| unavailable("watch", e))?;
            if next_removal_after(&mut watch, opened_at, deadline).await.is_none() && Instant::now() >= deadline {
                return Err(LockError::TimedOut { waited: started.elapsed() });
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

#[derive(Clone, Copy)]
enum Flaw {
    WatchAfterFailedTry,
    ClientSideExpiry,
}

/// A mutant's backend: starts its own NATS server on the first client (so `selftest` needs
/// NATS only when it runs the NATS mutants) and gives each client a fresh flawed locker.
struct FlawedBackend {
    name: &'static str,
    flaw: Flaw,
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
                Service::start(&spec())
                    .await
                    .map_err(|e| LockError::unavailable(format!("no NATS for the {} mutant: {e}", self.name)))
            })
            .await?;
        let hosts = server.address().to_string();
        Ok(match self.flaw {
            Flaw::WatchAfterFailedTry => Arc::new(WatchAfterFailedTry::new(
                NatsLocker::connect(&hosts, BucketConfig::new("mutant-watch")).await?,
            )),
            Flaw::ClientSideExpiry => Arc::new(PortedNatsLocker::connect(&hosts, "mutant-expiry", true).await?),
        })
    }

    /// 1 s leases, the shortest a NATS per-message TTL can be, where the real NATS backend
    /// uses 2 s ([`Timing::whole_seconds`]): the flaws do not depend on the lease length (a
    /// lock that is never freed is not freed after any TTL), and every scenario that waits
    /// out a lease waits a multiple of it, so `selftest` catches the crash-safety flaw in
    /// well under half a minute. The tolerance stays a whole second: the correct locker
    /// rounds TTLs up to whole seconds while its leases keep the TTL asked for.
    fn timing(&self) -> Timing {
        Timing { base_ttl: Duration::from_secs(1), ..Timing::whole_seconds() }
    }
}

/// The NATS mutants (each starts a NATS server when first connected).
pub fn mutants() -> Vec<Mutant> {
    let mutant = |name, failure_class, expected_to_violate, flaw| Mutant {
        name,
        failure_class,
        expected_to_violate,
        also_violates: &[],
        backend: Box::new(FlawedBackend { name, flaw, server: OnceCell::new() }),
    };
    vec![
        mutant(
            "nats-watch-after-failed-try",
            "Lost wake-up between a failed try and subscribing: the KV watch is opened after the create failed.",
            Property::NoLostWakeup,
            Flaw::WatchAfterFailedTry,
        ),
        mutant(
            "nats-client-side-expiry",
            "A lock held forever after its holder crashed: the KV entry has no TTL, expiry is a timer in the holder's process.",
            Property::CrashSafety,
            Flaw::ClientSideExpiry,
        ),
    ]
}
