//! Which Redis servers a backend URL names, and how a lock is held across them.

use std::sync::Arc;

use super::{RedisAllLocker, RedisConfig, RedisLocker, RedlockLocker, check_url};
use crate::Locker;
use crate::{InvalidInput, LockError};

/// How a lock is held on the servers of a Redis URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisMode {
    /// One server ([`RedisLocker`], `redis://`).
    Single,
    /// Every server, in order ([`RedisAllLocker`], `redis+all://`).
    All,
    /// A majority of the servers ([`RedlockLocker`], `redis+quorum://`).
    Quorum,
}

impl RedisMode {
    /// The URL scheme of the mode.
    pub fn scheme(self) -> &'static str {
        match self {
            RedisMode::Single => "redis",
            RedisMode::All => "redis+all",
            RedisMode::Quorum => "redis+quorum",
        }
    }
}

/// The servers a Redis backend URL names, checked but not connected to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisUrl {
    /// How the lock is held on them.
    pub mode: RedisMode,
    /// One `redis://host:port/db` URL per server, in the URL's order (the acquisition order
    /// of [`RedisMode::All`]).
    pub urls: Vec<String>,
}

impl RedisUrl {
    /// Servers already checked (`redis://host:port/db` each), held in `mode`.
    pub fn new(mode: RedisMode, urls: Vec<String>) -> Self {
        RedisUrl { mode, urls }
    }

    /// Parses `redis://[user:pass@]host:port[/db]` (any URL the Redis client accepts),
    /// `redis+all://h1:p1,h2:p2[/db]` or `redis+quorum://h1,h2,h3[/db]` (a host without a
    /// port uses 6379; the database applies to every host).
    pub fn parse(url: &str) -> Result<Self, InvalidInput> {
        let malformed = |reason: String| InvalidInput::Backend(reason);
        let (scheme, rest) = url.split_once("://").ok_or_else(|| malformed("no scheme".to_owned()))?;
        let mode = match scheme {
            "redis" => RedisMode::Single,
            "redis+all" => RedisMode::All,
            "redis+quorum" => RedisMode::Quorum,
            other => return Err(malformed(format!("{other} is not a Redis scheme"))),
        };
        if mode == RedisMode::Single {
            check_url(url)?;
            return Ok(RedisUrl { mode, urls: vec![url.to_owned()] });
        }
        let (hosts, db) = match rest.split_once('/') {
            Some((hosts, db)) => {
                let db: u32 = db.parse().map_err(|_| malformed(format!("database {db:?} is not a number")))?;
                (hosts, db)
            }
            None => (rest, 0),
        };
        let urls: Vec<String> =
            hosts
                .split(',')
                .map(str::trim)
                .filter(|host| !host.is_empty())
                .map(|host| {
                    if host.contains(':') {
                        format!("redis://{host}/{db}")
                    } else {
                        format!("redis://{host}:6379/{db}")
                    }
                })
                .collect();
        if urls.is_empty() {
            return Err(malformed("no hosts".to_owned()));
        }
        for url in &urls {
            check_url(url)?;
        }
        Ok(RedisUrl { mode, urls })
    }

    /// Connects a locker of the URL's mode with `config`.
    pub async fn connect(&self, config: RedisConfig) -> Result<Arc<dyn Locker>, LockError> {
        Ok(match self.mode {
            RedisMode::Single => Arc::new(RedisLocker::connect_with(&self.urls[0], config).await?),
            RedisMode::All => Arc::new(RedisAllLocker::connect(&self.urls, config).await?),
            RedisMode::Quorum => Arc::new(RedlockLocker::connect(&self.urls, config).await?),
        })
    }
}
