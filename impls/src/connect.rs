//! From a backend URL to a locker, for every scheme this crate's lockers serve: the one
//! place their URL syntax is parsed.
//!
//! | URL | locker | feature |
//! |---|---|---|
//! | `memory` | a new [`MemoryLocker`] | always |
//! | `redis://[user:pass@]host:port[/db]` | `redis::RedisLocker` | `redis` |
//! | `redis+all://h1:p1,h2:p2[/db]` | `redis::RedisAllLocker` (every server, in order) | `redis` |
//! | `redis+quorum://h1,h2,h3[/db]` | `redis::RedlockLocker` (a majority) | `redis` |
//! | `nats://host:port[,host:port…][?bucket=B&replicas=N&storage=memory\|file&offers=on\|off]` | `nats::NatsLocker` | `nats` |
//! | `dflockd://host:port[,host:port…][?auth=SECRET&session=bound\|ttl]` | `dflockd::DflockdLocker` | `dflockd` |
//! | `etcd://host:port[,host:port…][?prefix=P]` | `etcd::EtcdLocker` (the revision queue) | `etcd` |
//! | `postgres://user[:password]@host:port/db` | `postgres::PostgresLocker` | `postgres` |
//! | `etcd+lockservice://host:port[,host:port…][?prefix=P]` | `etcd::EtcdLocker` (etcd's lock service) | `etcd` |
//!
//! [`parse`] checks a URL without connecting: a malformed URL, an unknown scheme or a
//! scheme whose feature is off is [`InvalidInput`] there, before anything is sent. Only
//! [`LockerUrl::connect`] reaches the servers, so an unreachable one is
//! [`LockError::Unavailable`], never invalid input.

use std::sync::Arc;

use crate::Locker;
use crate::memory::MemoryLocker;
use crate::{InvalidInput, LockError};

/// A backend URL, checked: which locker it names and with what settings.
#[derive(Clone)]
#[non_exhaustive]
pub enum LockerUrl {
    /// `memory`: a new in-process [`MemoryLocker`].
    Memory,
    /// `redis://`, `redis+all://` or `redis+quorum://`.
    #[cfg(feature = "redis")]
    Redis(crate::redis::RedisUrl),
    /// `nats://`.
    #[cfg(feature = "nats")]
    Nats {
        /// `host:port`, comma-separated.
        hosts: String,
        /// The bucket and its settings.
        bucket: crate::nats::BucketConfig,
    },
    /// `dflockd://`.
    #[cfg(feature = "dflockd")]
    Dflockd(crate::dflockd::DflockdLockerConfig),
    /// `etcd://` or `etcd+lockservice://`.
    #[cfg(feature = "etcd")]
    Etcd(crate::etcd::EtcdConfig),
    /// `postgres://` (or `postgresql://`).
    #[cfg(feature = "postgres")]
    Postgres {
        /// The URL as given (it may carry a password).
        url: String,
        /// The URL without its password.
        shown: String,
    },
}

impl std::fmt::Debug for LockerUrl {
    // By hand: a dflockd URL's auth secret stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockerUrl::Memory => f.write_str("Memory"),
            #[cfg(feature = "redis")]
            LockerUrl::Redis(redis) => f.debug_tuple("Redis").field(redis).finish(),
            #[cfg(feature = "nats")]
            LockerUrl::Nats { hosts, bucket } => {
                f.debug_struct("Nats").field("hosts", hosts).field("bucket", bucket).finish()
            }
            #[cfg(feature = "dflockd")]
            LockerUrl::Dflockd(config) => f.debug_struct("Dflockd").field("servers", &config.servers).finish(),
            #[cfg(feature = "etcd")]
            LockerUrl::Etcd(config) => f.debug_tuple("Etcd").field(config).finish(),
            #[cfg(feature = "postgres")]
            LockerUrl::Postgres { shown, .. } => f.debug_tuple("Postgres").field(shown).finish(),
        }
    }
}

/// Every scheme, and the feature its locker needs (`None`: always built).
const SCHEMES: [(&str, Option<&str>); 10] = [
    ("memory", None),
    ("redis", Some("redis")),
    ("redis+all", Some("redis")),
    ("redis+quorum", Some("redis")),
    ("nats", Some("nats")),
    ("dflockd", Some("dflockd")),
    ("etcd", Some("etcd")),
    ("etcd+lockservice", Some("etcd")),
    ("postgres", Some("postgres")),
    ("postgresql", Some("postgres")),
];

/// The schemes this build serves.
pub fn schemes() -> Vec<&'static str> {
    SCHEMES.iter().filter(|(_, feature)| feature.is_none_or(feature_on)).map(|(scheme, _)| *scheme).collect()
}

// Each arm is a `cfg!`, true or false by build: a `matches!` would hold for one build only.
#[allow(clippy::match_like_matches_macro)]
fn feature_on(feature: &str) -> bool {
    match feature {
        "redis" => cfg!(feature = "redis"),
        "nats" => cfg!(feature = "nats"),
        "dflockd" => cfg!(feature = "dflockd"),
        "etcd" => cfg!(feature = "etcd"),
        "postgres" => cfg!(feature = "postgres"),
        _ => false,
    }
}

/// Checks `url` and says which locker it names, without connecting (see the module docs for
/// the syntax).
pub fn parse(url: &str) -> Result<LockerUrl, InvalidInput> {
    let head = url.split('?').next().unwrap_or(url);
    let scheme = head.split_once("://").map_or(head, |(scheme, _)| scheme);
    let Some(&(scheme, feature)) = SCHEMES.iter().find(|(known, _)| *known == scheme) else {
        return Err(InvalidInput::UnknownScheme { url: url.to_owned(), known: schemes().join(", ") });
    };
    if let Some(feature) = feature.filter(|feature| !feature_on(feature)) {
        return Err(InvalidInput::SchemeNotBuiltIn { url: url.to_owned(), feature });
    }
    match scheme {
        "memory" if url == "memory" => Ok(LockerUrl::Memory),
        "memory" => Err(InvalidInput::Backend("`memory` takes no address or parameters".to_owned())),
        #[cfg(feature = "redis")]
        "redis" | "redis+all" | "redis+quorum" => crate::redis::RedisUrl::parse(url).map(LockerUrl::Redis),
        #[cfg(feature = "nats")]
        "nats" => {
            if !url.starts_with("nats://") {
                return Err(InvalidInput::Backend("not a nats:// URL".to_owned()));
            }
            let (hosts, bucket) = crate::nats::BucketConfig::from_url(url)?;
            Ok(LockerUrl::Nats { hosts, bucket })
        }
        #[cfg(feature = "dflockd")]
        "dflockd" => {
            crate::dflockd::DflockdLockerConfig::from_url(url).map(LockerUrl::Dflockd).map_err(|error| match error {
                LockError::InvalidInput(invalid) => invalid,
                other => InvalidInput::Backend(other.to_string()),
            })
        }
        #[cfg(feature = "etcd")]
        "etcd" | "etcd+lockservice" => crate::etcd::EtcdConfig::from_url(url).map(LockerUrl::Etcd),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => {
            crate::postgres::parse_url(url).map(|(_, shown)| LockerUrl::Postgres { url: url.to_owned(), shown })
        }
        _ => unreachable!("every scheme of SCHEMES whose feature is on has an arm"),
    }
}

impl LockerUrl {
    /// Connects the locker the URL names, with each backend's default settings.
    pub async fn connect(&self) -> Result<Arc<dyn Locker>, LockError> {
        Ok(match self {
            LockerUrl::Memory => Arc::new(MemoryLocker::new()),
            #[cfg(feature = "redis")]
            LockerUrl::Redis(redis) => redis.connect(crate::redis::RedisConfig::default()).await?,
            #[cfg(feature = "nats")]
            LockerUrl::Nats { hosts, bucket } => {
                Arc::new(crate::nats::NatsLocker::connect(hosts, bucket.clone()).await?)
            }
            #[cfg(feature = "dflockd")]
            LockerUrl::Dflockd(config) => Arc::new(crate::dflockd::DflockdLocker::connect(config.clone()).await?),
            #[cfg(feature = "etcd")]
            LockerUrl::Etcd(config) => Arc::new(crate::etcd::EtcdLocker::connect(config.clone()).await?),
            #[cfg(feature = "postgres")]
            LockerUrl::Postgres { url, .. } => Arc::new(crate::postgres::PostgresLocker::connect(url).await?),
        })
    }
}

/// Connects the locker `url` names: [`parse`], then [`LockerUrl::connect`]. A malformed URL
/// is [`LockError::InvalidInput`]; a server that cannot be reached is
/// [`LockError::Unavailable`].
///
/// ```
/// use std::time::Duration;
/// use lockcheck_impls::{LeaseRequest, Locker, connect};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
/// let locker = connect("memory").await?;
/// let lease = locker.acquire(&LeaseRequest::lock("invoice-42", Duration::from_secs(10)), Duration::from_secs(1)).await?;
/// assert!(locker.release(&lease).await?);
/// assert!(connect("memory://elsewhere").await.is_err_and(|error| error.is_invalid_input()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub async fn connect(url: &str) -> Result<Arc<dyn Locker>, LockError> {
    parse(url)?.connect().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(url: &str) -> InvalidInput {
        parse(url).err().unwrap_or_else(|| panic!("{url} was accepted"))
    }

    #[test]
    fn memory_takes_nothing_else() {
        assert!(matches!(parse("memory"), Ok(LockerUrl::Memory)));
        for bad in ["memory://x", "memory?x=1", "memory?"] {
            assert!(matches!(invalid(bad), InvalidInput::Backend(_)), "{bad}");
        }
    }

    #[test]
    fn unknown_schemes_say_what_is_known() {
        for url in ["zookeeper://localhost:2181", "", "redis+some://a", "REDIS://a:1"] {
            let InvalidInput::UnknownScheme { known, .. } = invalid(url) else { panic!("{url}") };
            assert!(known.split(", ").any(|scheme| scheme == "memory"), "{known}");
        }
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_urls_name_their_servers_and_database() {
        use crate::redis::RedisMode;
        let Ok(LockerUrl::Redis(single)) = parse("redis://127.0.0.1:6379/2") else { panic!() };
        assert_eq!((single.mode, single.urls), (RedisMode::Single, vec!["redis://127.0.0.1:6379/2".to_owned()]));
        let Ok(LockerUrl::Redis(all)) = parse("redis+all://a:1, b /3") else { panic!() };
        assert_eq!(all.mode, RedisMode::All);
        assert_eq!(all.urls, ["redis://a:1/3", "redis://b:6379/3"]);
        let Ok(LockerUrl::Redis(quorum)) = parse("redis+quorum://a,b,c") else { panic!() };
        assert_eq!(quorum.mode, RedisMode::Quorum);
        assert_eq!(quorum.urls, ["redis://a:6379/0", "redis://b:6379/0", "redis://c:6379/0"]);
        for bad in
            ["redis://", "redis://host:notaport", "redis+quorum://a:x,b:1,c:1", "redis+all://h/db", "redis+all://,"]
        {
            assert!(matches!(invalid(bad), InvalidInput::Backend(_)), "{bad}");
        }
    }

    #[cfg(feature = "nats")]
    #[test]
    fn nats_urls_name_hosts_and_bucket() {
        let Ok(LockerUrl::Nats { hosts, bucket }) = parse("nats://a:1,b:2?bucket=locks&replicas=3&storage=memory")
        else {
            panic!()
        };
        assert_eq!(
            (hosts.as_str(), bucket.name.as_str(), bucket.replicas, bucket.memory_storage),
            ("a:1,b:2", "locks", 3, true)
        );
        let Ok(LockerUrl::Nats { bucket, .. }) = parse("nats://127.0.0.1:4222") else { panic!() };
        assert_eq!(bucket.name, crate::nats::DEFAULT_BUCKET);
        for bad in ["nats://", "nats://a:1?colour=red", "nats?bucket=x", "nats://a:1?replicas=many"] {
            assert!(matches!(invalid(bad), InvalidInput::Backend(_)), "{bad}");
        }
    }

    #[cfg(feature = "dflockd")]
    #[test]
    fn dflockd_urls_name_servers_and_options() {
        let Ok(LockerUrl::Dflockd(config)) = parse("dflockd://a:1,b:2?auth=s3cret&session=ttl") else { panic!() };
        assert_eq!(config.servers, ["a:1", "b:2"]);
        assert_eq!(config.auth_token.as_deref(), Some("s3cret"));
        assert!(!config.session_bound);
        assert!(!format!("{:?}", parse("dflockd://a:1?auth=s3cret").unwrap()).contains("s3cret"), "no secret in Debug");
        for bad in ["dflockd://", "dflockd://a:1?colour=red", "dflockd?auth=x"] {
            assert!(matches!(invalid(bad), InvalidInput::Backend(_)), "{bad}");
        }
    }

    /// Each scheme behind a feature that is off says which feature.
    #[test]
    fn a_scheme_whose_feature_is_off_names_the_feature() {
        for (url, feature) in [
            ("redis://a:1", "redis"),
            ("redis+quorum://a,b,c", "redis"),
            ("nats://a:1", "nats"),
            ("dflockd://a:1", "dflockd"),
            ("etcd://a:1", "etcd"),
            ("etcd+lockservice://a:1", "etcd"),
            ("postgres://u@a:1/db", "postgres"),
        ] {
            if feature_on(feature) {
                assert!(parse(url).is_ok(), "{url}");
            } else {
                assert_eq!(invalid(url), InvalidInput::SchemeNotBuiltIn { url: url.to_owned(), feature }, "{url}");
            }
        }
    }

    #[tokio::test]
    async fn connect_makes_a_memory_locker_and_refuses_bad_urls_as_invalid_input() {
        let locker = connect("memory").await.expect("memory needs no server");
        assert_eq!(locker.describe(), "memory");
        assert!(connect("gopher://x").await.err().is_some_and(|error| error.is_invalid_input()));
    }
}
