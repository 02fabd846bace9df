//! Backend URLs → [`Backend`]s: the one place `lockcheck check --backend URL` is parsed.
//!
//! | URL | backend | feature |
//! |---|---|---|
//! | `memory` | the in-process [`MemoryLocker`](lockcheck_impls::MemoryLocker) | always |
//! | `redis://host:port[/db]`, `redis+all://h1,h2`, `redis+quorum://h1,h2,h3` | Redis | `redis` |
//! | `nats://host:port[?bucket=B]` | NATS JetStream KV | `nats` |
//! | `dflockd://host:port[,host2...][?auth=SECRET]` | dflockd protocol | `dflockd` |
//! | `dflockd-embedded` | lockcheck's reference dflockd server, started in-process | `dflockd` |
//!
//! Backend modules add their scheme to [`from_url`] behind their feature.

use crate::backend::{Backend, SharedLocker};

/// Why a URL names no backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadBackendUrl {
    /// The scheme is not one lockcheck knows.
    #[error("unknown backend scheme in {url:?}; known: {known}")]
    UnknownScheme {
        /// The URL.
        url: String,
        /// The schemes this build knows.
        known: String,
    },
    /// The scheme is known but this build lacks the feature that implements it.
    #[error("{url:?} needs lockcheck built with the `{feature}` feature")]
    NotBuiltIn {
        /// The URL.
        url: String,
        /// The missing cargo feature.
        feature: &'static str,
    },
    /// The URL is malformed for its scheme.
    #[error("bad backend URL {url:?}: {reason}")]
    Malformed {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// The schemes this build understands.
pub fn known_schemes() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut schemes = vec!["memory"];
    #[cfg(feature = "redis")]
    schemes.extend(["redis", "redis+all", "redis+quorum"]);
    #[cfg(feature = "nats")]
    schemes.push("nats");
    #[cfg(feature = "dflockd")]
    schemes.extend(["dflockd", "dflockd-embedded"]);
    schemes
}

/// What `lockcheck check` runs without `--backend`: the backends that need no server
/// (memory; backend modules add embedded servers, such as the reference dflockd server).
pub fn default_urls() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut urls = vec!["memory"];
    #[cfg(feature = "dflockd")]
    urls.push("dflockd-embedded");
    urls
}

/// The backend a URL names.
pub fn from_url(url: &str) -> Result<Box<dyn Backend>, BadBackendUrl> {
    let scheme = url.split_once("://").map_or(url, |(scheme, _)| scheme);
    match scheme {
        "memory" => Ok(Box::new(SharedLocker::memory())),
        #[cfg(feature = "redis")]
        "redis" | "redis+all" | "redis+quorum" => crate::services::redis::RedisBackend::from_url(url)
            .map(|backend| Box::new(backend) as Box<dyn Backend>)
            .map_err(|reason| BadBackendUrl::Malformed { url: url.to_owned(), reason }),
        #[cfg(not(feature = "redis"))]
        "redis" | "redis+all" | "redis+quorum" => not_built_in(url, "redis"),
        #[cfg(feature = "nats")]
        "nats" => crate::services::nats::NatsBackend::from_url(url)
            .map(|backend| Box::new(backend) as Box<dyn Backend>)
            .map_err(|reason| BadBackendUrl::Malformed { url: url.to_owned(), reason }),
        #[cfg(not(feature = "nats"))]
        "nats" => not_built_in(url, "nats"),
        #[cfg(feature = "dflockd")]
        "dflockd" => crate::services::dflockd::DflockdBackend::from_url(url)
            .map(|backend| Box::new(backend) as Box<dyn Backend>)
            .map_err(|reason| BadBackendUrl::Malformed { url: url.to_owned(), reason }),
        #[cfg(feature = "dflockd")]
        "dflockd-embedded" => crate::services::dflockd::DflockdBackend::embedded()
            .map(|backend| Box::new(backend) as Box<dyn Backend>)
            .map_err(|error| BadBackendUrl::Malformed { url: url.to_owned(), reason: error.to_string() }),
        #[cfg(not(feature = "dflockd"))]
        "dflockd" | "dflockd-embedded" => not_built_in(url, "dflockd"),
        _ => Err(BadBackendUrl::UnknownScheme { url: url.to_owned(), known: known_schemes().join(", ") }),
    }
}

// Unused when every backend feature is on.
#[cfg_attr(all(feature = "redis", feature = "nats", feature = "dflockd"), allow(dead_code))]
fn not_built_in(url: &str, feature: &'static str) -> Result<Box<dyn Backend>, BadBackendUrl> {
    Err(BadBackendUrl::NotBuiltIn { url: url.to_owned(), feature })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_parses_and_unknown_schemes_say_what_is_known() {
        assert_eq!(from_url("memory").map(|backend| backend.name()).ok(), Some("memory".to_owned()));
        let error = from_url("zookeeper://localhost:2181").err().expect("unknown scheme");
        assert!(matches!(error, BadBackendUrl::UnknownScheme { .. }));
        assert!(error.to_string().contains("memory"), "{error}");
    }
}
