//! The process runtime, for machines without a Docker engine: the server binary runs as a
//! child of the test on a free loopback port, in a scratch directory removed on drop.
//!
//! Faults map onto signals: pause is `SIGSTOP`, unpause `SIGCONT`, kill `SIGKILL`. A network
//! partition of a local process is not possible without privileges, so it is refused as
//! unsupported rather than faked.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::{Runtime, ServiceError, ServiceSpec};

/// How many log lines to keep for error messages.
const LOG_TAIL: usize = 30;

pub(super) struct ProcessService {
    spec: ServiceSpec,
    host_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// The binary's path: as given if it contains a `/`, else the first match on `PATH`.
pub(super) fn find_binary(binary: &str) -> Result<PathBuf, String> {
    if binary.contains('/') {
        let path = PathBuf::from(binary);
        return if path.is_file() { Ok(path) } else { Err(format!("no binary at {binary}")) };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(binary))
        .find(|path| path.is_file())
        .ok_or_else(|| format!("no {binary} on PATH"))
}

/// A scratch directory per process, unique within this test binary and across test binaries.
fn scratch_dir(name: &str) -> std::io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "lockcheck-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

impl ProcessService {
    pub(super) async fn start(spec: &ServiceSpec, host_port: u16) -> Result<Self, ServiceError> {
        let dir = scratch_dir(&spec.name).map_err(|e| ServiceError::Start {
            name: spec.name.clone(),
            runtime: Runtime::Process,
            message: format!("no scratch directory: {e}"),
        })?;
        let mut service = ProcessService { spec: spec.clone(), host_port, dir, child: None };
        service.spawn().await?;
        Ok(service)
    }

    fn start_error(&self, message: String) -> ServiceError {
        ServiceError::Start { name: self.spec.name.clone(), runtime: Runtime::Process, message }
    }

    /// Spawns the binary and waits for its ready line (when the spec names one); the probe
    /// is the caller's.
    async fn spawn(&mut self) -> Result<(), ServiceError> {
        let binary = find_binary(&self.spec.binary).map_err(|e| self.start_error(e))?;
        let mut child = crate::orphans::dying_with_parent(&binary)
            .args((self.spec.args)(self.host_port))
            .envs(self.spec.env.iter().map(|(name, value)| (name, value)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| self.start_error(format!("cannot run {}: {e}", binary.display())))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (ready_tx, mut ready_rx) = watch::channel(false);
        let ready_line = self.spec.ready_log.clone();
        // Drain both pipes for the life of the process (a full pipe would stall the server),
        // keeping a tail for error messages and flagging the ready line.
        for pipe in [child.stdout.take().map(boxed), child.stderr.take().map(boxed)].into_iter().flatten() {
            let (tail, ready_tx, ready_line) = (tail.clone(), ready_tx.clone(), ready_line.clone());
            tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if ready_line.as_deref().is_some_and(|ready| line.contains(ready)) {
                        ready_tx.send_replace(true);
                    }
                    let mut tail = tail.lock().expect("log tail poisoned");
                    if tail.len() == LOG_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }
        drop(ready_tx);
        let tail_text = |tail: &Mutex<VecDeque<String>>| {
            tail.lock().expect("log tail poisoned").iter().cloned().collect::<Vec<_>>().join("\n")
        };
        if self.spec.ready_log.is_some() {
            let ready = tokio::time::timeout(self.spec.startup_timeout, async {
                tokio::select! {
                    // Both drains ended without the line: the process exited.
                    changed = ready_rx.wait_for(|ready| *ready) => changed.is_ok(),
                    _ = child.wait() => false,
                }
            })
            .await;
            match ready {
                Ok(true) => {}
                Ok(false) => {
                    return Err(self.start_error(format!("exited before it was ready; log:\n{}", tail_text(&tail))));
                }
                Err(_) => {
                    return Err(self.start_error(format!(
                        "no ready line within {:?}; log:\n{}",
                        self.spec.startup_timeout,
                        tail_text(&tail)
                    )));
                }
            }
        }
        self.child = Some(child);
        Ok(())
    }

    fn pid(&self, operation: &'static str) -> Result<u32, ServiceError> {
        self.child.as_ref().and_then(Child::id).ok_or_else(|| ServiceError::Fault {
            operation,
            name: self.spec.name.clone(),
            runtime: Runtime::Process,
            message: "the process is not running".to_owned(),
        })
    }

    pub(super) async fn signal(&self, operation: &'static str, signal: &str) -> Result<(), ServiceError> {
        let pid = self.pid(operation)?;
        let fault = |message: String| ServiceError::Fault {
            operation,
            name: self.spec.name.clone(),
            runtime: Runtime::Process,
            message,
        };
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .await
            .map_err(|e| fault(format!("kill -{signal}: {e}")))?;
        if status.success() { Ok(()) } else { Err(fault(format!("kill -{signal} {pid}: {status}"))) }
    }

    pub(super) async fn kill(&mut self) -> Result<(), ServiceError> {
        let pid = self.pid("kill")?;
        let mut child = self.child.take().expect("pid checked");
        let killed = child.kill().await.map_err(|e| ServiceError::Fault {
            operation: "kill",
            name: self.spec.name.clone(),
            runtime: Runtime::Process,
            message: e.to_string(),
        });
        self.remove_left_behind(pid);
        killed
    }

    /// Removes what a killed process leaves behind (libfaketime's shared memory: a process
    /// killed with SIGKILL never runs its clean-up).
    fn remove_left_behind(&self, pid: u32) {
        for path in &self.spec.leaves_behind {
            let _ = std::fs::remove_file(path.replace("{pid}", &pid.to_string()));
        }
    }

    pub(super) async fn start_again(&mut self) -> Result<(), ServiceError> {
        if self.child.is_some() {
            return Err(ServiceError::Fault {
                operation: "start",
                name: self.spec.name.clone(),
                runtime: Runtime::Process,
                message: "still running; kill it first".to_owned(),
            });
        }
        self.spawn().await
    }
}

fn boxed(pipe: impl AsyncRead + Send + Unpin + 'static) -> Box<dyn AsyncRead + Send + Unpin> {
    Box::new(pipe)
}

impl Drop for ProcessService {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL works on a stopped (paused) process too; reap it so no zombie is left.
            // (tokio reaps a killed child it no longer owns in the background).
            let pid = child.id();
            let _ = child.start_kill();
            let _ = child.try_wait();
            if let Some(pid) = pid {
                self.remove_left_behind(pid);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
