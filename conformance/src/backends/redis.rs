//! Redis as the suite sees it: a [`RedisBackend`] hands out a fresh Redis locker (one server,
//! all of several, or a majority) per client.

use lockcheck_support::Service;
use lockcheck_support::redis::url;

pub use lockcheck_impls::redis::RedisMode;
use lockcheck_impls::redis::RedisUrl;

/// Redis servers as a conformance [`Backend`](crate::Backend): every client is a new locker
/// with its own connections (and its own key-event subscriber), so clients really are
/// separate processes as far as Redis can tell.
#[derive(Clone, Debug)]
pub struct RedisBackend {
    target: RedisUrl,
    config: lockcheck_impls::redis::RedisConfig,
}

impl RedisBackend {
    /// A backend on `redis://` URLs (one for [`RedisMode::Single`]).
    pub fn new(mode: RedisMode, urls: Vec<String>) -> Self {
        RedisBackend { target: RedisUrl::new(mode, urls), config: lockcheck_impls::redis::RedisConfig::default() }
    }

    /// A backend on running servers, database `db`.
    pub fn on(mode: RedisMode, servers: &[Service], db: u32) -> Self {
        Self::new(mode, servers.iter().map(|server| url(server, db)).collect())
    }

    /// The same backend with other locker settings.
    pub fn with_config(mut self, config: lockcheck_impls::redis::RedisConfig) -> Self {
        self.config = config;
        self
    }

    /// Parses `redis://host:port[/db]`, `redis+all://h1:p1,h2:p2[/db]` or
    /// `redis+quorum://h1,h2,h3[/db]` (a host without a port uses 6379; the database applies
    /// to every host).
    pub fn from_url(url: &str) -> Result<Self, String> {
        let target = RedisUrl::parse(url).map_err(|error| error.to_string())?;
        Ok(RedisBackend { target, config: lockcheck_impls::redis::RedisConfig::default() })
    }

    /// Connects a fresh locker of the backend's mode.
    pub async fn locker(&self) -> Result<std::sync::Arc<dyn lockcheck_impls::Locker>, lockcheck_impls::LockError> {
        self.target.connect(self.config.clone()).await
    }
}

#[async_trait::async_trait]
impl crate::Backend for RedisBackend {
    fn name(&self) -> String {
        match self.target.mode {
            RedisMode::Single => self.target.urls[0].clone(),
            mode => {
                let hosts: Vec<&str> = self.target.urls.iter().map(|url| url.trim_start_matches("redis://")).collect();
                format!("{}://{}", mode.scheme(), hosts.join(","))
            }
        }
    }

    async fn connect(&self) -> Result<std::sync::Arc<dyn lockcheck_impls::Locker>, lockcheck_impls::LockError> {
        self.locker().await
    }

    fn timing(&self) -> crate::Timing {
        crate::Timing::networked()
    }

    /// The servers and database (the locker settings are the defaults of a new process).
    fn url(&self) -> Option<String> {
        if self.target.mode == RedisMode::Single {
            return self.target.urls.first().cloned();
        }
        let mut db = "0";
        let hosts: Vec<&str> = self
            .target
            .urls
            .iter()
            .map(|url| {
                let (host, rest) = url.trim_start_matches("redis://").split_once('/').unwrap_or((url, "0"));
                db = rest;
                host
            })
            .collect();
        Some(format!("{}://{}/{db}", self.target.mode.scheme(), hosts.join(",")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_every_mode_parse() {
        let single = RedisBackend::from_url("redis://127.0.0.1:6379/1").unwrap();
        assert_eq!(single.target, RedisUrl::new(RedisMode::Single, vec!["redis://127.0.0.1:6379/1".to_owned()]));
        let all = RedisBackend::from_url("redis+all://a:1,b/2").unwrap();
        assert_eq!(
            all.target,
            RedisUrl::new(RedisMode::All, vec!["redis://a:1/2".to_owned(), "redis://b:6379/2".to_owned()])
        );
        let quorum = RedisBackend::from_url("redis+quorum://a,b,c").unwrap();
        assert_eq!(quorum.target.mode, RedisMode::Quorum);
        assert_eq!(quorum.target.urls.len(), 3);
        assert!(RedisBackend::from_url("redis+all://").is_err());
        assert!(RedisBackend::from_url("redis+all://a/x").is_err());
        use crate::Backend;
        for url in ["redis://127.0.0.1:6379/1", "redis+all://a:1,b:6379/2", "redis+quorum://a:1,b:2,c:3/0"] {
            let backend = RedisBackend::from_url(url).unwrap();
            assert_eq!(RedisBackend::from_url(&backend.url().unwrap()).unwrap().target, backend.target, "{url}");
        }
    }
}
