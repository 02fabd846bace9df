//! dflockd as the suite sees it: a [`DflockdBackend`] hands out a fresh dflockd client per
//! client, against the real Python server (a `lockcheck_support::dflockd` process) or
//! lockcheck's reference server started in-process ([`EmbeddedDflockd`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lockcheck_history::Timing;
use lockcheck_impls::dflockd::{DflockdLocker, DflockdLockerConfig, ServerKind};
use lockcheck_impls::{LockError, Locker};
use lockcheck_server::{Server, ServerConfig, ServerError};
use tokio::sync::OnceCell;

use lockcheck_support::Service;
use lockcheck_support::proxy::TcpProxy;

use crate::backend::Backend;

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

    /// The same backend reported under another name (its row in the fault matrix is the
    /// name's scheme: `lockcheck-serve://…`).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
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

    /// The servers, the session binding and the secret; not a TLS client's settings.
    fn url(&self) -> Option<String> {
        if self.config.connect.tls.is_some() {
            return None;
        }
        let mut params = Vec::new();
        if let Some(secret) = &self.config.auth_token {
            params.push(format!("auth={secret}"));
        }
        params.push(format!("session={}", if self.config.session_bound { "bound" } else { "ttl" }));
        Some(format!("dflockd://{}?{}", self.config.servers.join(","), params.join("&")))
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
