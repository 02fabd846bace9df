//! Connecting to NATS and setting up the KV bucket: its configuration, its creation, and
//! the checks a bucket must pass before leases can live in it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};

use super::stream::unavailable;
use super::wakeups::{self, Reconnects};
use super::{Counters, Inner, NatsLocker};
use crate::{InvalidInput, LockError};

/// The bucket a [`NatsLocker`] uses when none is named.
pub const DEFAULT_BUCKET: &str = "lockcheck";

/// How long the server keeps the purge marker it writes when a lease expires, and the
/// marker this locker writes on release. Long enough for a waiter to read it; short
/// enough that tombstones of one-off keys do not pile up in the bucket.
pub const DEFAULT_MARKER_TTL: Duration = Duration::from_secs(60);

/// How a [`NatsLocker`] sets up its bucket.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BucketConfig {
    /// The KV bucket's name (`[-_a-zA-Z0-9]+`).
    pub name: String,
    /// Replicas of the bucket's stream: 1 on a single server, 3 on a three-node cluster.
    pub replicas: usize,
    /// Keep entries in memory instead of on disk. Memory buckets lose every lock (and the
    /// fencing counter) when the server restarts.
    pub memory_storage: bool,
    /// See [`DEFAULT_MARKER_TTL`].
    pub marker_ttl: Duration,
    /// Whether a contended release offers its lease to a waiter before it purges (see "Hand-off
    /// by offer" in `nats/wakeups.rs`; on by default). Off, every release purges and the woken
    /// waiter creates: two JetStream writes per hand-off, but a waiter that vanishes with an
    /// offer can never cost a release [`OFFER_TIMEOUT`](super::OFFER_TIMEOUT). A locker setting, not the bucket's:
    /// lockers with and without it share a bucket.
    pub offers: bool,
}

impl BucketConfig {
    /// A file-backed single-replica bucket called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        BucketConfig {
            name: name.into(),
            replicas: 1,
            memory_storage: false,
            marker_ttl: DEFAULT_MARKER_TTL,
            offers: true,
        }
    }

    /// The same bucket with `replicas` replicas.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// The hosts and bucket a backend URL names: `nats://host:port[,host:port…][?bucket=B]
    /// [&replicas=N][&storage=memory|file][&offers=on|off]` (bucket [`DEFAULT_BUCKET`], one
    /// replica, file storage, offers on unless given).
    pub fn from_url(url: &str) -> Result<(String, BucketConfig), InvalidInput> {
        let rest = url.strip_prefix("nats://").unwrap_or(url);
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        if hosts.split(',').all(|host| host.trim().is_empty()) {
            return Err(InvalidInput::Backend(format!("no NATS hosts in {url}")));
        }
        let mut bucket = BucketConfig::default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let bad = || {
                InvalidInput::Backend(format!(
                    "bad NATS URL parameter {pair:?} in {url} (bucket=B, replicas=N, storage=memory|file, \
                     offers=on|off)"
                ))
            };
            match pair.split_once('=').ok_or_else(bad)? {
                ("bucket", name) if !name.is_empty() => bucket.name = name.to_owned(),
                ("replicas", n) => bucket.replicas = n.parse().map_err(|_| bad())?,
                ("storage", "memory") => bucket.memory_storage = true,
                ("storage", "file") => bucket.memory_storage = false,
                ("offers", "on") => bucket.offers = true,
                ("offers", "off") => bucket.offers = false,
                _ => return Err(bad()),
            }
        }
        Ok((hosts.to_owned(), bucket))
    }

    /// The same bucket, used by a locker that never offers its leases (see
    /// [`BucketConfig::offers`]).
    pub fn without_offers(mut self) -> Self {
        self.offers = false;
        self
    }

    /// The same bucket kept in memory.
    pub fn in_memory(mut self) -> Self {
        self.memory_storage = true;
        self
    }
}

impl Default for BucketConfig {
    fn default() -> Self {
        BucketConfig::new(DEFAULT_BUCKET)
    }
}

impl NatsLocker {
    /// Connects to `url` (`nats://host:port`, comma-separated for a cluster) and opens or
    /// creates the bucket.
    pub async fn connect(url: &str, bucket: BucketConfig) -> Result<Self, LockError> {
        let servers = url
            .split(',')
            .map(|host| {
                let host = host.trim();
                let with_scheme = if host.contains("://") { host.to_owned() } else { format!("nats://{host}") };
                with_scheme.parse::<async_nats::ServerAddr>().map_err(|e| {
                    LockError::from(InvalidInput::Backend(format!("bad NATS server address {host:?}: {e}")))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let reconnects = Reconnects::new();
        let on_connect = reconnects.clone();
        let client = async_nats::ConnectOptions::new()
            .event_callback(move |event| {
                if let async_nats::Event::Connected = event {
                    on_connect.connected();
                }
                std::future::ready(())
            })
            // The first connection must succeed (each server tried once, within the
            // connection timeout): a server that cannot be reached is reported at once, with
            // its address, instead of as a JetStream time-out minutes later. Once connected,
            // the client reconnects for ever.
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .connect(servers.as_slice())
            .await
            .map_err(|e| unavailable(format!("cannot connect to NATS at {url}: {e}"), e))?;
        let hosts: Vec<&str> = url.split(',').map(|host| host.trim().trim_start_matches("nats://")).collect();
        let describe = format!("nats://{}?bucket={}", hosts.join(","), bucket.name);
        Self::open_bucket(client, &describe, bucket, reconnects).await
    }

    /// Opens the locker a backend URL names (see [`BucketConfig::from_url`]).
    pub async fn open(url: &str) -> Result<Self, LockError> {
        let (hosts, bucket) = BucketConfig::from_url(url)?;
        Self::connect(&hosts, bucket).await
    }

    /// Uses an existing connection; `describe` names the backend in reports. Waiters cannot
    /// see this connection's reconnections, so a notice lost to one costs them up to
    /// [`RECHECK_AFTER`](super::RECHECK_AFTER) (a locker from [`NatsLocker::connect`] looks again at once).
    pub async fn with_client(
        client: async_nats::Client,
        describe: &str,
        bucket: BucketConfig,
    ) -> Result<Self, LockError> {
        Self::open_bucket(client, describe, bucket, Reconnects::new()).await
    }

    async fn open_bucket(
        client: async_nats::Client,
        describe: &str,
        bucket: BucketConfig,
        reconnects: Reconnects,
    ) -> Result<Self, LockError> {
        let js = jetstream::new(client);
        let config = kv::Config {
            bucket: bucket.name.clone(),
            description: "lockcheck leases: one entry per held lock".to_owned(),
            history: 1,
            num_replicas: bucket.replicas,
            storage: if bucket.memory_storage {
                jetstream::stream::StorageType::Memory
            } else {
                jetstream::stream::StorageType::File
            },
            limit_markers: Some(bucket.marker_ttl),
            republish: Some(wakeups::republish_for(&bucket.name)),
            ..Default::default()
        };
        let kv = match js.create_key_value(config).await {
            Ok(kv) => kv,
            // It exists with another configuration (say, other replicas): use it as it is,
            // but only if it can expire leases.
            Err(create_error) => js.get_key_value(bucket.name.clone()).await.map_err(|e| {
                unavailable(format!("cannot create ({create_error}) or open KV bucket {}", bucket.name), e)
            })?,
        };
        let mut stream = js
            .get_stream(kv.stream_name.clone())
            .await
            .map_err(|e| unavailable(format!("cannot read the configuration of bucket {}", bucket.name), e))?;
        let mut config =
            stream.info().await.map_err(|e| unavailable("cannot read the bucket's stream info", e))?.config.clone();
        if !config.allow_message_ttl || config.subject_delete_marker_ttl.is_none() {
            return Err(LockError::unavailable(format!(
                "KV bucket {} has no per-message TTLs or limit markers (needs NATS ≥ 2.11 and a bucket created with \
                 limit markers); without them a crashed holder's lock would never expire",
                bucket.name
            )));
        }
        let republish = wakeups::republish_for(&bucket.name);
        match &config.republish {
            Some(existing) if *existing == republish => {}
            // A bucket made before waiters were woken this way (or by another tool): add the
            // rule, which changes nothing else about the bucket.
            None => {
                config.republish = Some(republish);
                js.update_stream(config.clone()).await.map_err(|e| {
                    unavailable(format!("cannot add the waiters' republish rule to bucket {}", bucket.name), e)
                })?;
            }
            Some(other) => {
                return Err(LockError::unavailable(format!(
                    "KV bucket {} already republishes {} to {}; its waiters need {} to {}",
                    bucket.name, other.source, other.destination, republish.source, republish.destination
                )));
            }
        }
        let subject_prefix = kv.put_prefix.clone().unwrap_or_else(|| kv.prefix.clone());
        Ok(NatsLocker {
            inner: Arc::new(Inner {
                js,
                kv,
                subject_prefix,
                describe: describe.to_owned(),
                marker_ttl: bucket.marker_ttl,
                memory_storage: config.storage == jetstream::stream::StorageType::Memory,
                offers: bucket.offers,
                direct_reads: config.num_replicas == 1 && config.allow_direct,
                revisions: Mutex::new(HashMap::new()),
                released: Mutex::new(HashMap::new()),
                found_held: Mutex::new(HashMap::new()),
                bucket: bucket.name.clone(),
                reconnects,
                stats: Counters::default(),
            }),
        })
    }
}
