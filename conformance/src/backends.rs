//! Backend URLs → [`Backend`]s: the one place `lockcheck check --backend URL` is parsed.
//!
//! | URL | backend | feature |
//! |---|---|---|
//! | `memory` | the in-process [`MemoryLocker`](lockcheck_impls::MemoryLocker) | always |
//! | `redis://host:port[/db]`, `redis+all://h1,h2`, `redis+quorum://h1,h2,h3` | Redis | `redis` |
//! | `nats://host:port[?bucket=B]` | NATS JetStream KV | `nats` |
//! | `dflockd://host:port[,host2...][?auth=SECRET]` | dflockd protocol | `dflockd` |
//! | `etcd://host:port[,host:port…]`, `etcd+lockservice://…` | etcd (revision queue, lock service) | `etcd` |
//! | `postgres://user@host:port/db` | Postgres advisory locks | `postgres` |
//! | `dflockd-embedded` | lockcheck's reference dflockd server, started in-process | `dflockd` |
//! | `exec:COMMAND ARGS…` | a driver process per client, speaking the driver protocol (`docs/driver-protocol.md`) | `services` |
//!
//! The lockers' schemes are parsed by the lock API ([`lockcheck_impls::parse`]), so their
//! syntax lives in one place; this module adds what only the harness knows: `dflockd-embedded`
//! and the `cleanup=` parameter.
//!
//! Every URL also takes `cleanup=DURATION` (`500ms`, `13s`): how long after a cancelled or
//! locally timed-out acquire the backend may still hold a grant for it
//! ([`Timing::cancel_cleanup`](crate::Timing::cancel_cleanup)). Set it for a server that notices
//! a departed waiter late: the Python dflockd server does not read a connection while its
//! blocking `l` waits, so it keeps such a waiter queued — and may grant it — until the waiter's
//! own wait bound. `dflockd://` URLs also take `session=bound|ttl`: whether the servers free a
//! connection's leases when it closes (the default, `bound`) or only at release or expiry
//! (`ttl`, for a server run without auto-release on disconnect).
//!
//! An `exec:` URL is a command line, split at whitespace, taken as it is: it has no parameters
//! of its own (a `?` belongs to the command's arguments), and is judged with networked time
//! scales ([`exec::ExecBackend::with_timing`] sets others).

#[cfg(feature = "dflockd")]
pub mod dflockd;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "services")]
pub mod exec;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
use lockcheck_impls::{InvalidInput, LockerUrl};

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
    #[cfg(feature = "services")]
    schemes.push("exec");
    #[cfg(feature = "etcd")]
    schemes.extend(["etcd", "etcd+lockservice"]);
    #[cfg(feature = "postgres")]
    schemes.extend(["postgres", "postgresql"]);
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
    // A command line, not a URL: its `?` and `cleanup=` are the command's.
    if url.starts_with("exec:") {
        return exec_url(url);
    }
    let (rest, cleanup) = take_cleanup(url)?;
    let backend = from_url_without_cleanup(url, &rest)?;
    Ok(match cleanup {
        Some(bound) => {
            let timing = crate::Timing { cancel_cleanup: Some(bound), ..backend.timing() };
            Box::new(Retimed { inner: backend, timing })
        }
        None => backend,
    })
}

fn exec_url(url: &str) -> Result<Box<dyn Backend>, BadBackendUrl> {
    #[cfg(feature = "services")]
    {
        exec::ExecBackend::from_url(url)
            .map(|backend| Box::new(backend) as Box<dyn Backend>)
            .map_err(|reason| BadBackendUrl::Malformed { url: url.to_owned(), reason })
    }
    #[cfg(not(feature = "services"))]
    {
        not_built_in(url, "services")
    }
}

/// The URL without its `cleanup=` parameter, and that parameter's duration.
fn take_cleanup(url: &str) -> Result<(String, Option<std::time::Duration>), BadBackendUrl> {
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_owned(), None)) };
    let mut cleanup = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix("cleanup=") {
            Some(value) => {
                cleanup = Some(parse_duration(value).ok_or_else(|| BadBackendUrl::Malformed {
                    url: url.to_owned(),
                    reason: format!("cleanup={value:?} is not a duration such as 500ms or 13s (at most 1h)"),
                })?)
            }
            None => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((rest, cleanup))
}

/// `500ms`, `13s`, `1.5s`: at most an hour.
fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let (number, unit) = match text.strip_suffix("ms") {
        Some(number) => (number, 1e-3),
        None => (text.strip_suffix('s')?, 1.0),
    };
    let seconds = number.parse::<f64>().ok()? * unit;
    (seconds.is_finite() && (0.0..=3600.0).contains(&seconds)).then(|| std::time::Duration::from_secs_f64(seconds))
}

/// A backend checked with other time scales than its own.
struct Retimed {
    inner: Box<dyn Backend>,
    timing: crate::Timing,
}

#[async_trait::async_trait]
impl Backend for Retimed {
    fn name(&self) -> String {
        self.inner.name()
    }
    async fn connect(&self) -> Result<std::sync::Arc<dyn lockcheck_impls::Locker>, lockcheck_impls::LockError> {
        self.inner.connect().await
    }
    fn timing(&self) -> crate::Timing {
        self.timing
    }
    async fn cut_sessions(&self) -> bool {
        self.inner.cut_sessions().await
    }
    fn url(&self) -> Option<String> {
        self.inner.url()
    }
}

fn from_url_without_cleanup(original: &str, url: &str) -> Result<Box<dyn Backend>, BadBackendUrl> {
    // The harness's own schemes first; every other URL is a locker's, parsed by the lock API.
    let head = url.split('?').next().unwrap_or(url);
    let scheme = head.split_once("://").map_or(head, |(scheme, _)| scheme);
    if scheme == "dflockd-embedded" {
        return embedded_dflockd(original, url);
    }
    let malformed = |reason: String| BadBackendUrl::Malformed { url: original.to_owned(), reason };
    let parsed = lockcheck_impls::parse(url).map_err(|error| match error {
        InvalidInput::UnknownScheme { .. } => {
            BadBackendUrl::UnknownScheme { url: url.to_owned(), known: known_schemes().join(", ") }
        }
        InvalidInput::SchemeNotBuiltIn { feature, .. } => BadBackendUrl::NotBuiltIn { url: url.to_owned(), feature },
        other => malformed(other.to_string()),
    })?;
    Ok(match parsed {
        LockerUrl::Memory => Box::new(SharedLocker::memory()),
        #[cfg(feature = "redis")]
        LockerUrl::Redis(_) => Box::new(redis::RedisBackend::from_url(url).map_err(malformed)?),
        #[cfg(feature = "nats")]
        LockerUrl::Nats { hosts, bucket } => Box::new(nats::NatsBackend::new(hosts, bucket)),
        #[cfg(feature = "dflockd")]
        LockerUrl::Dflockd(config) => Box::new(dflockd::DflockdBackend::new(config)),
        #[cfg(feature = "etcd")]
        LockerUrl::Etcd(config) => Box::new(etcd::EtcdBackend::new(config)),
        #[cfg(feature = "postgres")]
        LockerUrl::Postgres { .. } => Box::new(postgres::PostgresBackend::new(url).map_err(malformed)?),
        // The lock API was built with a backend feature this crate was not (another crate
        // of the build turned it on).
        #[allow(unreachable_patterns)]
        other => return not_built_in(url, feature_of(&other)),
    })
}

/// The cargo feature a parsed URL's backend needs here.
#[allow(dead_code, unreachable_patterns)]
fn feature_of(url: &LockerUrl) -> &'static str {
    match url {
        LockerUrl::Memory => "memory",
        #[cfg(feature = "redis")]
        LockerUrl::Redis(_) => "redis",
        #[cfg(feature = "nats")]
        LockerUrl::Nats { .. } => "nats",
        #[cfg(feature = "dflockd")]
        LockerUrl::Dflockd(_) => "dflockd",
        #[cfg(feature = "etcd")]
        LockerUrl::Etcd(_) => "etcd",
        #[cfg(feature = "postgres")]
        LockerUrl::Postgres { .. } => "postgres",
        _ => "a backend",
    }
}

/// `dflockd-embedded`: the reference server started in-process (harness only).
fn embedded_dflockd(original: &str, url: &str) -> Result<Box<dyn Backend>, BadBackendUrl> {
    #[cfg(feature = "dflockd")]
    {
        if url != "dflockd-embedded" {
            return Err(BadBackendUrl::Malformed {
                url: original.to_owned(),
                reason: "`dflockd-embedded` takes no address or parameters (only ?cleanup=)".into(),
            });
        }
        dflockd::DflockdBackend::embedded()
            .map(|backend| Box::new(backend) as Box<dyn Backend>)
            .map_err(|error| BadBackendUrl::Malformed { url: url.to_owned(), reason: error.to_string() })
    }
    #[cfg(not(feature = "dflockd"))]
    {
        let _ = original;
        not_built_in(url, "dflockd")
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
    fn cleanup_is_taken_from_any_url_and_checked() {
        let backend = from_url("memory?cleanup=2.5s").expect("memory with a clean-up bound");
        assert_eq!(backend.timing().cancel_cleanup, Some(std::time::Duration::from_millis(2500)));
        assert_eq!(backend.timing().base_ttl, SharedLocker::memory().timing().base_ttl);
        for bad in [
            "memory?cleanup=soon",
            "memory?cleanup=-1s",
            "memory?cleanup=2h",
            "memory?cleanup=NaNs",
            "memory://x",
            "memory?x=1",
        ] {
            assert!(matches!(from_url(bad), Err(BadBackendUrl::Malformed { .. })), "{bad}");
        }
        assert_eq!(take_cleanup("dflockd://h:1?auth=x&cleanup=13s").expect("parses").0, "dflockd://h:1?auth=x");
    }

    #[test]
    fn malformed_urls_are_refused_as_malformed_before_anything_connects() {
        #[allow(unused_mut)]
        let mut malformed = vec!["memory://x"];
        #[cfg(feature = "redis")]
        malformed.extend(["redis://", "redis://host:notaport", "redis+quorum://a:x,b:1,c:1", "redis+all://h/db"]);
        #[cfg(feature = "nats")]
        malformed.extend(["nats://", "nats://a:1?colour=red"]);
        #[cfg(feature = "dflockd")]
        malformed.extend(["dflockd-embedded?x=1", "dflockd-embedded://h:1"]);
        #[cfg(feature = "services")]
        malformed.extend(["exec:", "exec:   "]);
        for url in malformed {
            let error = from_url(url).err().unwrap_or_else(|| panic!("{url} was accepted"));
            assert!(matches!(error, BadBackendUrl::Malformed { .. }), "{url}: {error}");
        }
    }

    #[test]
    fn memory_parses_and_unknown_schemes_say_what_is_known() {
        assert_eq!(from_url("memory").map(|backend| backend.name()).ok(), Some("memory".to_owned()));
        let error = from_url("zookeeper://localhost:2181").err().expect("unknown scheme");
        assert!(matches!(error, BadBackendUrl::UnknownScheme { .. }));
        assert!(error.to_string().contains("memory"), "{error}");
    }

    #[cfg(feature = "services")]
    #[test]
    fn an_exec_url_is_a_command_line_taken_as_it_is() {
        let backend = from_url("exec:python3 driver.py redis://h:1/0?cleanup=2s").expect("a command line");
        assert_eq!(backend.name(), "exec:python3 driver.py redis://h:1/0?cleanup=2s");
        assert_eq!(backend.timing(), crate::Timing::networked());
    }
}
