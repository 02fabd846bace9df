//! dflockd servers for the suites: the real Python server (`dflockd` 0.5 from PyPI, run as a
//! process from the venv `scripts/setup/python.sh` makes) and lockcheck's reference server
//! started in-process ([`EmbeddedDflockd`]), plus the [`DflockdBackend`] the suite runs.
//!
//! | variable | meaning |
//! |---|---|
//! | `LOCKCHECK_DFLOCKD_SERVER` | the Python `dflockd` console script (default: `$LOCKCHECK_VENV/bin/dflockd`, else `dflockd` on `PATH`). |
//! | `LOCKCHECK_VENV` | the venv holding the Python server and client (default `~/.cache/lockcheck/venv`). |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lockcheck_history::Timing;
use lockcheck_impls::dflockd::{DflockdLocker, DflockdLockerConfig, ServerKind};
use lockcheck_impls::{LockError, Locker};
use lockcheck_server::{Server, ServerConfig, ServerError};
use tokio::sync::OnceCell;

use super::proxy::TcpProxy;
use super::{Probe, Service, ServiceError, ServiceSpec, provision};
use crate::backend::Backend;

/// The venv of the Python peers.
pub fn venv() -> PathBuf {
    if let Some(venv) = std::env::var_os("LOCKCHECK_VENV") {
        return PathBuf::from(venv);
    }
    let home = std::env::var_os("LOCKCHECK_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/lockcheck"));
    home.join("venv")
}

/// The venv's Python (for the Python client's scripts).
pub fn venv_python() -> PathBuf {
    venv().join("bin/python")
}

fn python_server_binary() -> String {
    if let Ok(binary) = std::env::var("LOCKCHECK_DFLOCKD_SERVER") {
        return binary;
    }
    let in_venv = venv().join("bin/dflockd");
    if in_venv.is_file() { in_venv.to_string_lossy().into_owned() } else { "dflockd".to_owned() }
}

/// Settings of the Python server, passed as flags (its `DFLOCKD_*` variables are mostly
/// overridden by flag defaults).
#[derive(Clone, Debug)]
pub struct PythonDflockdOptions {
    /// `--default-lease-ttl` (default 33).
    pub default_lease_ttl_s: u64,
    /// `--read-timeout` (default 23).
    pub read_timeout_s: u64,
    /// `--max-locks` (default 1024).
    pub max_locks: u64,
    /// `--[no-]auto-release-on-disconnect` (default on).
    pub auto_release_on_disconnect: bool,
}

impl Default for PythonDflockdOptions {
    fn default() -> Self {
        PythonDflockdOptions {
            default_lease_ttl_s: 33,
            read_timeout_s: 23,
            max_locks: 1024,
            auto_release_on_disconnect: true,
        }
    }
}

/// How to run the Python server: a process only (there is no image of it); ready when it
/// logs `listening on` and accepts a connection. It has no `ping`, so the probe only connects.
pub fn python_spec(options: &PythonDflockdOptions) -> ServiceSpec {
    let options = options.clone();
    ServiceSpec::new("dflockd-python", "lockcheck/dflockd-python:0.5", python_server_binary(), 6388)
        .args(move |port| {
            let auto_release = if options.auto_release_on_disconnect {
                "--auto-release-on-disconnect"
            } else {
                "--no-auto-release-on-disconnect"
            };
            [
                auto_release,
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--default-lease-ttl",
                &options.default_lease_ttl_s.to_string(),
                "--read-timeout",
                &options.read_timeout_s.to_string(),
                "--max-locks",
                &options.max_locks.to_string(),
            ]
            .map(str::to_owned)
            .to_vec()
        })
        .ready_log("listening on")
        .probe(Probe::Connect)
}

/// Starts the Python server (`Ok(None)`, printed, only under `LOCKCHECK_SERVICES=skip`).
pub async fn python_dflockd(options: &PythonDflockdOptions) -> Result<Option<Service>, ServiceError> {
    provision(&python_spec(options)).await
}

/// The reference server running in-process on a thread of its own (with its own tokio
/// runtime), so it can be started from synchronous code such as a backend URL and outlives
/// the runtime of any one test. A [`TcpProxy`] in front of it, on the same thread, lets a
/// check cut every client session as a network fault would. Stopped (connections closed,
/// state gone) on drop.
pub struct EmbeddedDflockd {
    addr: SocketAddr,
    proxy: Arc<TcpProxy>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedDflockd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedDflockd").field("addr", &self.addr).finish()
    }
}

impl EmbeddedDflockd {
    /// Starts the reference server with `config` (use [`ServerConfig::ephemeral`] for a
    /// free loopback port).
    pub fn start(config: ServerConfig) -> Result<Self, ServerError> {
        let (started_tx, started_rx) = std::sync::mpsc::channel::<Result<(SocketAddr, Arc<TcpProxy>), ServerError>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("dflockd-embedded".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for the embedded server");
                runtime.block_on(async move {
                    match Server::start(config).await {
                        Ok(server) => {
                            let proxy = match TcpProxy::start(server.local_addr()).await {
                                Ok(proxy) => Arc::new(proxy),
                                Err(error) => {
                                    let _ = started_tx
                                        .send(Err(ServerError::Bind { addr: "127.0.0.1:0".into(), source: error }));
                                    return;
                                }
                            };
                            let _ = started_tx.send(Ok((server.local_addr(), proxy)));
                            let _ = stopped.await;
                            drop(server);
                        }
                        Err(error) => {
                            let _ = started_tx.send(Err(error));
                        }
                    }
                });
            })
            .expect("spawn the embedded server's thread");
        let (addr, proxy) = started_rx.recv().expect("the embedded server's thread reports its start")?;
        Ok(EmbeddedDflockd { addr, proxy, stop: Some(stop), thread: Some(thread) })
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy in front of the server: clients that connect to its address can have their
    /// sessions cut ([`TcpProxy::cut_all`]).
    pub fn proxy(&self) -> &Arc<TcpProxy> {
        &self.proxy
    }
}

impl Drop for EmbeddedDflockd {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What keeps a backend's server alive as long as the backend (held for its `Drop`).
#[derive(Clone)]
#[allow(dead_code)]
enum Owned {
    Nothing,
    Embedded(Arc<EmbeddedDflockd>),
    Service(Arc<Service>),
}

/// dflockd servers as a suite backend: each client is a fresh [`DflockdLocker`] (its own
/// connections). The server generation is detected once (`ping`) and then reused.
#[derive(Clone)]
pub struct DflockdBackend {
    name: String,
    timing: Timing,
    config: DflockdLockerConfig,
    kind: Arc<OnceCell<ServerKind>>,
    owned: Owned,
}

impl DflockdBackend {
    /// Servers that are already running. A dflockd server may not read a connection while
    /// its blocking `l` waits (the Python one does not), so it can keep a departed waiter
    /// queued and grant it until the waiter's own wait bound: the clean-up bound covers the
    /// longest wait the suite gives an acquire it then cancels (1.5 base leases, 3 s) plus the
    /// tolerance. Override with `cleanup=` in the URL.
    pub fn new(config: DflockdLockerConfig) -> Self {
        let name = format!("dflockd://{}", config.servers.join(","));
        let whole_seconds = Timing::whole_seconds();
        DflockdBackend {
            name,
            timing: Timing { cancel_cleanup: Some(Duration::from_secs(3) + whole_seconds.tolerance), ..whole_seconds },
            config,
            kind: Arc::new(OnceCell::new()),
            owned: Owned::Nothing,
        }
    }

    /// From `dflockd://host:port[,host:port...][?auth=SECRET&session=bound|ttl]`.
    pub fn from_url(url: &str) -> Result<Self, String> {
        match lockcheck_impls::parse(url).map_err(|e| e.to_string())? {
            lockcheck_impls::LockerUrl::Dflockd(config) => Ok(DflockdBackend::new(config)),
            _ => Err(format!("not a dflockd:// URL: {url}")),
        }
    }

    /// The reference server with its defaults, started in-process on a free port for the
    /// suite (`dflockd-embedded`, part of `lockcheck check`'s embedded defaults). Like every
    /// dflockd server by default it frees a connection's leases when the connection closes:
    /// its leases are bound to sessions, which the client claims.
    pub fn embedded() -> Result<Self, ServerError> {
        Self::embedded_with(ServerConfig::ephemeral())
    }

    /// The reference server, started in-process with `config`.
    pub fn embedded_with(config: ServerConfig) -> Result<Self, ServerError> {
        let session_bound = config.auto_release_on_disconnect;
        let server = EmbeddedDflockd::start(config)?;
        // Through the proxy, so that a check can cut the clients' sessions.
        let mut client = DflockdLockerConfig::new([server.proxy().addr().to_string()]);
        client.session_bound = session_bound;
        // It reads every waiting connection, so it drops a departed waiter at once.
        let mut backend = DflockdBackend::new(client).with_timing(Timing::whole_seconds());
        backend.name = "dflockd-embedded".into();
        backend.owned = Owned::Embedded(Arc::new(server));
        Ok(backend)
    }

    /// A running Python server (owned by the backend from now on).
    pub fn python(service: Service) -> Self {
        let mut backend = DflockdBackend::new(DflockdLockerConfig::new([service.address().to_string()]));
        backend.name = "dflockd-python-0.5".into();
        backend.owned = Owned::Service(Arc::new(service));
        backend
    }

    /// The same backend checked with other time bounds.
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// The client configuration (servers, TLS, auth).
    pub fn config(&self) -> &DflockdLockerConfig {
        &self.config
    }

    /// The client configuration, to change (what the client claims, TLS, auth).
    pub fn config_mut(&mut self) -> &mut DflockdLockerConfig {
        &mut self.config
    }

    /// A client of these servers.
    pub async fn locker(&self) -> Result<DflockdLocker, LockError> {
        let mut config = self.config.clone();
        if config.kind.is_none() {
            let detected = self
                .kind
                .get_or_try_init(|| async {
                    DflockdLocker::connect(self.config.clone()).await.map(|l| l.server_kind())
                })
                .await?;
            config.kind = Some(*detected);
        }
        DflockdLocker::connect(config).await
    }
}

#[async_trait]
impl Backend for DflockdBackend {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn connect(&self) -> Result<Arc<dyn Locker>, LockError> {
        Ok(Arc::new(self.locker().await?))
    }

    /// dflockd leases are whole seconds ([`Timing::whole_seconds`] unless
    /// [`DflockdBackend::with_timing`] said otherwise).
    fn timing(&self) -> Timing {
        self.timing
    }

    /// The embedded server's clients connect through a proxy, which cuts them all.
    async fn cut_sessions(&self) -> bool {
        match &self.owned {
            Owned::Embedded(server) => {
                server.proxy().cut_all();
                true
            }
            _ => false,
        }
    }
}
