//! Flawed Redis lockers, run on a real Redis server: the Go Redis locker's port
//! ([`PortedRedisLocker`]) with one flaw switched on each, so the suite must catch exactly that
//! flaw.

use std::sync::Arc;

use async_trait::async_trait;
use lockcheck_history::Timing;
use lockcheck_impls::{LockError, Locker};
use lockcheck_model::spec::Property;
use lockcheck_support::Service;
use lockcheck_support::redis::{RedisOptions, spec};
use tokio::sync::OnceCell;

use super::Mutant;
use crate::backend::Backend;
use crate::peers::redis::{Port, PortedRedisLocker};

/// A mutant's backend: starts its own Redis server on the first client (so `selftest` needs
/// Redis only when it runs the Redis mutants) and gives each client a fresh ported locker on
/// database 1.
struct PortedBackend {
    name: &'static str,
    port: Port,
    server: OnceCell<Service>,
}

#[async_trait]
impl Backend for PortedBackend {
    fn name(&self) -> String {
        self.name.to_owned()
    }

    async fn connect(&self) -> Result<Arc<dyn Locker>, LockError> {
        let server = self
            .server
            .get_or_try_init(|| async {
                Service::start(&spec(&RedisOptions::default()))
                    .await
                    .map_err(|e| LockError::unavailable(format!("no Redis for the {} mutant: {e}", self.name)))
            })
            .await?;
        let url = format!("redis://{}/1", server.address());
        Ok(Arc::new(PortedRedisLocker::connect(&url, self.port).await?))
    }

    fn timing(&self) -> Timing {
        Timing::networked()
    }
}

/// The Redis mutants (each starts a Redis server when first connected).
pub fn mutants() -> Vec<Mutant> {
    let correct = Port { poll_backoff: None, events_db: 1, ..Port::GO_ORIGINAL };
    let mutant = |name, failure_class, expected_to_violate, port| Mutant {
        name,
        failure_class,
        expected_to_violate,
        also_violates: &[],
        backend: Box::new(PortedBackend { name, port, server: OnceCell::new() }),
    };
    vec![
        mutant(
            "redis-unconditional-del",
            "Release by a non-owner: release is a plain DEL of the key, whoever holds it.",
            Property::Ownership,
            Port { release_checks_owner: false, ..correct },
        ),
        mutant(
            "redis-keyevents-on-db0",
            "Lost wake-up: waiters subscribe to __keyevent@0__ while the locks live in database 1.",
            Property::NoLostWakeup,
            Port { events_db: 0, ..correct },
        ),
        mutant(
            "redis-client-side-expiry",
            "A lock held forever after its holder crashed: expiry is a timer in the holder's process, not a server TTL.",
            Property::CrashSafety,
            Port { server_side_ttl: false, ..correct },
        ),
    ]
}
