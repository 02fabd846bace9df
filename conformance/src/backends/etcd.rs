//! etcd as the suite sees it: an [`EtcdBackend`] hands out a fresh etcd locker (its own gRPC
//! connection) per client, running the revision queue or etcd's lock service.

use lockcheck_impls::etcd::{EtcdConfig, EtcdLocker, EtcdMode};
use lockcheck_support::Service;

/// etcd as a conformance [`Backend`](crate::Backend).
#[derive(Clone, Debug)]
pub struct EtcdBackend {
    config: EtcdConfig,
}

impl EtcdBackend {
    /// A backend of `config` (from an `etcd://` or `etcd+lockservice://` URL).
    pub fn new(config: EtcdConfig) -> Self {
        EtcdBackend { config }
    }

    /// A backend of `mode` on running servers (the members of one cluster).
    pub fn on(mode: EtcdMode, servers: &[Service]) -> Self {
        Self::new(EtcdConfig::new(mode, servers.iter().map(|server| server.address().to_string()).collect()))
    }

    /// Its configuration.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }
}

#[async_trait::async_trait]
impl crate::Backend for EtcdBackend {
    fn name(&self) -> String {
        self.config.url()
    }

    fn url(&self) -> Option<String> {
        Some(self.config.url())
    }

    async fn connect(&self) -> Result<std::sync::Arc<dyn lockcheck_impls::Locker>, lockcheck_impls::LockError> {
        Ok(std::sync::Arc::new(EtcdLocker::connect(self.config.clone()).await?))
    }

    /// etcd leases are whole seconds, and etcd sweeps expired leases every 500 ms: a lease may
    /// be seen held up to that sweep, plus a round trip, past its (rounded-up, reported) TTL.
    fn timing(&self) -> crate::Timing {
        crate::Timing::whole_seconds()
    }
}
