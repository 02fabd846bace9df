//! Postgres as the suite sees it: a [`PostgresBackend`] hands out a fresh Postgres locker
//! (its own sessions) per client, and cuts every client session on demand
//! (`pg_terminate_backend`), which its session-bound leases predict.

use lockcheck_impls::postgres::PostgresLocker;

/// Postgres as a conformance [`Backend`](crate::Backend).
#[derive(Clone)]
pub struct PostgresBackend {
    url: String,
    shown: String,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PostgresBackend").field(&self.shown).finish()
    }
}

impl PostgresBackend {
    /// A backend on the database a `postgres://` URL names.
    pub fn new(url: impl Into<String>) -> Result<Self, String> {
        let url = url.into();
        let (_, shown) = lockcheck_impls::postgres::parse_url(&url).map_err(|error| error.to_string())?;
        Ok(PostgresBackend { url, shown })
    }
}

/// Ends every client session of the database but the caller's: what a failover, a restarted
/// connection pooler or an administrator's `pg_terminate_backend` does to live holders.
pub async fn cut_sessions(url: &str) -> Result<u64, lockcheck_impls::LockError> {
    let locker = PostgresLocker::connect(url).await?;
    locker
        .client()
        .execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND datname = current_database()",
            &[],
        )
        .await
        .map_err(|error| lockcheck_impls::LockError::unavailable(error.to_string()))
}

#[async_trait::async_trait]
impl crate::Backend for PostgresBackend {
    fn name(&self) -> String {
        self.shown.clone()
    }

    fn url(&self) -> Option<String> {
        Some(self.url.clone())
    }

    async fn connect(&self) -> Result<std::sync::Arc<dyn lockcheck_impls::Locker>, lockcheck_impls::LockError> {
        Ok(std::sync::Arc::new(PostgresLocker::connect(&self.url).await?))
    }

    fn timing(&self) -> crate::Timing {
        crate::Timing::networked()
    }

    async fn cut_sessions(&self) -> bool {
        cut_sessions(&self.url).await.is_ok()
    }
}
