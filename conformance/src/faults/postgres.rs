//! A Postgres server as a fault target of the nemesis: paused (the postmaster *and* every
//! backend process: a `SIGSTOP` of the postmaster alone leaves the sessions serving), killed
//! and restarted (every session, and so every advisory lock, ends; the fencing sequence
//! survives), and its client sessions cut while it stays up (`pg_terminate_backend`), which the
//! locker's session-bound leases predict.

use async_trait::async_trait;
use lockcheck_support::Service;
use tokio::sync::Mutex;

use crate::faults::{Fault, FaultError};
use crate::nemesis::FaultTarget;

/// A fault step that failed, as a [`FaultError`].
fn failed(step: &'static str, message: impl std::fmt::Display) -> FaultError {
    FaultError::Lock { step, source: lockcheck_impls::LockError::unavailable(message.to_string()) }
}

/// One Postgres server (a process) and the URL its lockers use.
pub struct PostgresTarget {
    service: Mutex<Service>,
    url: String,
    name: String,
}

impl PostgresTarget {
    /// `service`, reached at `url` (see `lockcheck_support::postgres::url`).
    pub fn new(service: Service, url: String) -> Self {
        PostgresTarget {
            name: format!("{} ({})", service.name(), service.runtime()),
            service: Mutex::new(service),
            url,
        }
    }

    /// The postmaster and its children, by the data directory's `postmaster.pid` (read through
    /// a session while the server answers).
    async fn processes(&self) -> Result<Vec<u32>, FaultError> {
        let fail = |message: String| failed("finding the postgres processes", message);
        let locker =
            lockcheck_impls::postgres::PostgresLocker::connect(&self.url).await.map_err(|e| fail(e.to_string()))?;
        let row = locker.client().query_one("SHOW data_directory", &[]).await.map_err(|e| fail(e.to_string()))?;
        let dir: String = row.get(0);
        drop(locker);
        let pid_file = std::fs::read_to_string(format!("{dir}/postmaster.pid")).map_err(|e| fail(e.to_string()))?;
        let postmaster: u32 =
            pid_file.lines().next().and_then(|line| line.trim().parse().ok()).ok_or_else(|| fail("no pid".into()))?;
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").map_err(|e| fail(e.to_string()))?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // `pid (comm) state ppid …`: the ppid follows the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(postmaster) {
                pids.push(pid);
            }
        }
        Ok(pids)
    }

    /// Signals the postmaster (which must work) and each child (which may have exited since
    /// it was listed: a session ending).
    async fn signal(pids: &[u32], signal: &str) -> Result<(), FaultError> {
        for (i, pid) in pids.iter().enumerate() {
            let status = tokio::process::Command::new("kill")
                .args([format!("-{signal}"), pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status()
                .await
                .map_err(|e| failed("signalling postgres", e))?;
            if i == 0 && !status.success() {
                return Err(failed("signalling postgres", format!("kill -{signal} {pid} (the postmaster): {status}")));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl FaultTarget for PostgresTarget {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn faults(&self) -> Vec<Fault> {
        vec![Fault::ServerPausedPastTtl, Fault::ServerRestartedWithoutPersistence, Fault::SessionsCut]
    }

    async fn inject(&self, fault: Fault, _instance: usize) -> Result<(), FaultError> {
        match fault {
            Fault::ServerPausedPastTtl => {
                let pids = self.processes().await?;
                // Remembered by the heal: the same processes resume.
                *PAUSED.lock().await = pids.clone();
                Self::signal(&pids, "STOP").await
            }
            Fault::SessionsCut => crate::backends::postgres::cut_sessions(&self.url)
                .await
                .map(drop)
                .map_err(|e| failed("cutting the sessions", e)),
            _ => Ok(self.service.lock().await.kill().await?),
        }
    }

    async fn heal(&self, fault: Fault, _instance: usize) -> Result<(), FaultError> {
        match fault {
            Fault::ServerPausedPastTtl => {
                let pids = std::mem::take(&mut *PAUSED.lock().await);
                Self::signal(&pids, "CONT").await
            }
            Fault::SessionsCut => Ok(()),
            _ => Ok(self.service.lock().await.start_again().await?),
        }
    }
}

static PAUSED: Mutex<Vec<u32>> = Mutex::const_new(Vec::new());
