//! NATS as the suite sees it: a [`NatsBackend`] hands out a fresh NATS KV locker, on its own
//! connection, per client, on one server or a cluster.

use std::time::Duration;

use lockcheck_support::nats::{CLUSTER_SIZE, NatsCluster, await_ready};
use lockcheck_support::{Service, ServiceError};

/// A locker on `service`'s bucket `bucket`.
pub async fn locker(
    service: &Service,
    bucket: lockcheck_impls::nats::BucketConfig,
) -> Result<lockcheck_impls::nats::NatsLocker, lockcheck_impls::LockError> {
    lockcheck_impls::nats::NatsLocker::connect(&service.address().to_string(), bucket).await
}

/// A locker on an R3 bucket `bucket` of `cluster`, connected to every node. Waits (bounded) for
/// the cluster to elect its JetStream meta leader and place the bucket.
pub async fn cluster_locker(
    cluster: &NatsCluster,
    bucket: &str,
) -> Result<lockcheck_impls::nats::NatsLocker, ServiceError> {
    let hosts: Vec<String> = cluster.nodes().iter().map(|node| node.address().to_string()).collect();
    let hosts = hosts.join(",");
    await_ready("the JetStream cluster", Duration::from_secs(30), || {
        let config = lockcheck_impls::nats::BucketConfig::new(bucket).replicas(CLUSTER_SIZE);
        let hosts = hosts.clone();
        async move { lockcheck_impls::nats::NatsLocker::connect(&hosts, config).await }
    })
    .await
}

/// NATS as a conformance [`Backend`](crate::Backend): every client is a new locker on its own
/// connection, on one bucket of one server or cluster.
#[derive(Clone, Debug)]
pub struct NatsBackend {
    /// Comma-separated `host:port` list.
    hosts: String,
    bucket: lockcheck_impls::nats::BucketConfig,
}

impl NatsBackend {
    /// A backend on `hosts` (`host:port[,host:port…]`) and `bucket`.
    pub fn new(hosts: impl Into<String>, bucket: lockcheck_impls::nats::BucketConfig) -> Self {
        NatsBackend { hosts: hosts.into(), bucket }
    }

    /// A backend on a running server.
    pub fn on(service: &Service, bucket: lockcheck_impls::nats::BucketConfig) -> Self {
        Self::new(service.address().to_string(), bucket)
    }

    /// A backend on every node of a cluster, with an R3 bucket.
    pub fn on_cluster(cluster: &NatsCluster, bucket: &str) -> Self {
        let hosts: Vec<String> = cluster.nodes().iter().map(|node| node.address().to_string()).collect();
        Self::new(hosts.join(","), lockcheck_impls::nats::BucketConfig::new(bucket).replicas(CLUSTER_SIZE))
    }

    /// Parses a NATS backend URL (see `lockcheck_impls::parse`).
    pub fn from_url(url: &str) -> Result<Self, String> {
        match lockcheck_impls::parse(url).map_err(|e| e.to_string())? {
            lockcheck_impls::LockerUrl::Nats { hosts, bucket } => Ok(Self::new(hosts, bucket)),
            _ => Err("not a nats:// URL".to_owned()),
        }
    }
}

#[async_trait::async_trait]
impl crate::Backend for NatsBackend {
    fn name(&self) -> String {
        let offers = if self.bucket.offers { "" } else { "&offers=off" };
        format!("nats://{}?bucket={}{offers}", self.hosts, self.bucket.name)
    }

    async fn connect(&self) -> Result<std::sync::Arc<dyn lockcheck_impls::Locker>, lockcheck_impls::LockError> {
        Ok(std::sync::Arc::new(lockcheck_impls::nats::NatsLocker::connect(&self.hosts, self.bucket.clone()).await?))
    }

    /// NATS per-message TTLs are whole seconds: the suite's leases must be too.
    fn timing(&self) -> crate::Timing {
        crate::Timing::whole_seconds()
    }

    /// The hosts and the bucket with its settings (a marker TTL is the default's).
    fn url(&self) -> Option<String> {
        let bucket = &self.bucket;
        let storage = if bucket.memory_storage { "memory" } else { "file" };
        let offers = if bucket.offers { "on" } else { "off" };
        Some(format!(
            "nats://{}?bucket={}&replicas={}&storage={storage}&offers={offers}",
            self.hosts, bucket.name, bucket.replicas
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_hosts_bucket_and_options() {
        let backend = NatsBackend::from_url("nats://a:1,b:2?bucket=locks&replicas=3&storage=memory").unwrap();
        assert_eq!(backend.hosts, "a:1,b:2");
        assert_eq!(
            (backend.bucket.name.as_str(), backend.bucket.replicas, backend.bucket.memory_storage),
            ("locks", 3, true)
        );
        let plain = NatsBackend::from_url("nats://127.0.0.1:4222").unwrap();
        assert_eq!(plain.bucket.name, lockcheck_impls::nats::DEFAULT_BUCKET);
        assert!(plain.bucket.offers, "contended releases offer their lease unless told not to");
        assert!(!NatsBackend::from_url("nats://a:1?offers=off").unwrap().bucket.offers);
        assert!(NatsBackend::from_url("nats://a:1?offers=maybe").is_err());
        assert!(NatsBackend::from_url("nats://").is_err());
        assert!(NatsBackend::from_url("nats://a:1?colour=red").is_err());
        assert!(NatsBackend::from_url("redis://a:1").is_err());
    }
}
