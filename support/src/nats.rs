//! NATS servers with JetStream for the NATS KV locker's suites and faults: one server, or a
//! three-node JetStream cluster in containers on a private Docker network.
//!
//! The image is `LOCKCHECK_NATS_IMAGE` (default `lockcheck/nats:2`, built from PyPI's static
//! `nats-server` by `scripts/setup/nats.sh`); the process runtime runs `LOCKCHECK_NATS_SERVER`
//! (default `nats-server` from `PATH`, which `scripts/env.sh` points at the venv). JetStream
//! stores under `data/` in the server's working directory (the container's `/data`, the
//! process's scratch directory), so a restart keeps it: storage is lost only where a test
//! asks for a memory bucket.
//!
//! The cluster needs container networking: its nodes route to each other by address, and a
//! partition is a `docker network disconnect`. Without Docker it fails loudly (or, under
//! `LOCKCHECK_SERVICES=skip`, skips, printed).

use std::time::Duration;

use tokio::time::Instant;

use crate::docker::docker;
use crate::{Probe, Runtime, Service, ServiceError, ServiceSpec, provision};

/// The default image, built by `scripts/setup/nats.sh`.
pub const DEFAULT_IMAGE: &str = "lockcheck/nats:2";

/// The port clients connect to inside a container.
pub const CLIENT_PORT: u16 = 4222;

/// The port cluster routes use inside a container.
pub const ROUTE_PORT: u16 = 6222;

fn image() -> String {
    std::env::var("LOCKCHECK_NATS_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_owned())
}

fn binary() -> String {
    std::env::var("LOCKCHECK_NATS_SERVER").unwrap_or_else(|_| "nats-server".to_owned())
}

fn base_args(port: u16) -> Vec<String> {
    ["--port", &port.to_string(), "--addr", "0.0.0.0", "--jetstream", "--store_dir", "data"]
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// The spec of one NATS server with JetStream.
pub fn spec() -> ServiceSpec {
    ServiceSpec::new("nats", image(), binary(), CLIENT_PORT)
        .args(base_args)
        .ready_log("Server is ready")
        // NATS greets every client with INFO before anything is sent.
        .probe(Probe::Exchange { send: Vec::new(), expect: b"INFO ".to_vec() })
}

/// One NATS server (see [`provision`] for the skip policy).
pub async fn nats() -> Result<Option<Service>, ServiceError> {
    provision(&spec()).await
}

/// The `nats://` URL of a server, with the bucket the locker should use.
pub fn url(service: &Service, bucket: &str) -> String {
    format!("nats://{}?bucket={bucket}", service.address())
}

/// A three-node JetStream cluster in containers on a private network of its own, removed on
/// drop (containers first, then the network).
pub struct NatsCluster {
    network: String,
    nodes: Vec<Service>,
}

impl std::fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCluster").field("network", &self.network).field("nodes", &self.nodes).finish()
    }
}

/// How many nodes a [`NatsCluster`] has.
pub const CLUSTER_SIZE: usize = 3;

/// The server name of node `index` (what JetStream reports as a stream's leader).
pub fn node_name(index: usize) -> String {
    format!("n{index}")
}

impl NatsCluster {
    /// Starts the cluster: node 0 first, then the others with a route to node 0's address
    /// (NATS gossips the rest of the mesh; container addresses are only known once a
    /// container runs, and the generic service layer does not name containers). JetStream's own readiness (a meta leader) is
    /// awaited by whoever creates the first bucket.
    pub async fn start() -> Result<NatsCluster, ServiceError> {
        let start_error = |message: String| ServiceError::Start {
            name: "nats-cluster".to_owned(),
            runtime: Runtime::Docker,
            message,
        };
        if std::env::var("LOCKCHECK_SERVICE_RUNTIME").as_deref() == Ok("process") {
            return Err(ServiceError::Unsupported { operation: "a NATS cluster", runtime: Runtime::Process });
        }
        let network = format!("lockcheck-nats-{}-{:08x}", std::process::id(), rand::random::<u32>());
        crate::orphans::sweep_once().await;
        let owner = format!("{}={}", crate::orphans::OWNER_LABEL, crate::orphans::owner());
        docker(&["network", "create", "--label", &owner, &network]).await.map_err(start_error)?;
        let mut cluster = NatsCluster { network: network.clone(), nodes: Vec::new() };
        let mut seed = None::<String>;
        for index in 0..CLUSTER_SIZE {
            let routes = seed.clone();
            let spec = spec()
                .args(move |port| {
                    // The image's config: dead routes detected in seconds, not minutes.
                    let mut args = vec!["--config".to_owned(), "/etc/nats/lockcheck.conf".to_owned()];
                    args.extend(base_args(port));
                    args.extend(["--server_name".to_owned(), node_name(index)]);
                    args.extend(["--cluster_name".to_owned(), "lockcheck".to_owned()]);
                    args.extend(["--cluster".to_owned(), format!("nats://0.0.0.0:{ROUTE_PORT}")]);
                    // JetStream refuses to cluster without configured routes; node 0 routes to
                    // itself (NATS drops a route to self) until the others route to it.
                    let routes = routes.clone().unwrap_or_else(|| format!("nats://127.0.0.1:{ROUTE_PORT}"));
                    args.extend(["--routes".to_owned(), routes]);
                    args
                })
                .network(network.clone());
            let node = Service::start(&spec).await?;
            if node.runtime() != Runtime::Docker {
                return Err(ServiceError::Unsupported { operation: "a NATS cluster", runtime: node.runtime() });
            }
            if seed.is_none() {
                let id = node.container_id().expect("docker nodes have a container");
                let template = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
                let ip = docker(&["inspect", "--format", &template, id]).await.map_err(start_error)?;
                seed = Some(format!("nats://{ip}:{ROUTE_PORT}"));
            }
            cluster.nodes.push(node);
        }
        Ok(cluster)
    }

    /// Starts the cluster, honouring `LOCKCHECK_SERVICES` like [`provision`].
    pub async fn provision() -> Result<Option<NatsCluster>, ServiceError> {
        match NatsCluster::start().await {
            Ok(cluster) => Ok(Some(cluster)),
            Err(error) if super::Policy::from_env() == super::Policy::Skip => {
                eprintln!("SKIPPED (LOCKCHECK_SERVICES=skip): {error}");
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// The nodes, indexed like [`node_name`].
    pub fn nodes(&self) -> &[Service] {
        &self.nodes
    }

    /// Node `index`, mutably (to kill and restart it).
    pub fn node_mut(&mut self, index: usize) -> &mut Service {
        &mut self.nodes[index]
    }

    /// The index of the node called `name` (see [`node_name`]).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        (0..self.nodes.len()).find(|&index| node_name(index) == name)
    }

    /// A `nats://` URL listing every node, so a client fails over between them.
    pub fn url(&self, bucket: &str) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|node| node.address().to_string()).collect();
        format!("nats://{}?bucket={bucket}", hosts.join(","))
    }

    /// The comma-separated client addresses of every node except `excluded`.
    pub fn addresses_except(&self, excluded: usize) -> String {
        let hosts: Vec<String> = (0..self.nodes.len())
            .filter(|&index| index != excluded)
            .map(|index| self.nodes[index].address().to_string())
            .collect();
        hosts.join(",")
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        // Containers first: a network with endpoints cannot be removed.
        self.nodes.clear();
        let _ = std::process::Command::new("docker").args(["network", "rm", &self.network]).output();
    }
}

/// Waits until `attempt` succeeds or `timeout` passes — for readiness only (a cluster electing
/// its JetStream meta leader), never to paper over a failing operation under test.
pub async fn await_ready<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    timeout: Duration,
    mut attempt: impl FnMut() -> F,
) -> Result<T, ServiceError> {
    let deadline = Instant::now() + timeout;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() >= deadline => {
                return Err(ServiceError::Start {
                    name: "nats".to_owned(),
                    runtime: Runtime::Docker,
                    message: format!("{what} not ready after {timeout:?}: {error}"),
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

impl NatsCluster {
    /// The index of the node that currently leads the stream of KV bucket `bucket`, asked of
    /// any node that answers. `None` while the stream has no leader (an election).
    pub async fn stream_leader(&self, bucket: &str) -> Result<Option<usize>, String> {
        Ok(self.stream_state(bucket).await?.leader)
    }

    /// Waits (bounded by `timeout`) until the stream of bucket `bucket` has a leader other
    /// than `excluded`, every replica except `excluded` is current, and the cluster reads keys
    /// and creates consumers again — the state after an election or a healed partition. Returns the leader.
    /// A fault test awaits this instead of sleeping; it never retries the operation under test.
    pub async fn await_stream_settled(
        &self,
        bucket: &str,
        excluded: Option<usize>,
        timeout: Duration,
    ) -> Result<usize, ServiceError> {
        await_ready("the stream's leader and replicas", timeout, || async {
            let state = self.stream_state(bucket).await?;
            match state.leader {
                Some(leader)
                    if Some(leader) != excluded && state.lagging.iter().all(|&node| Some(node) == excluded) =>
                {
                    Ok(leader)
                }
                _ => Err(format!("leader {:?}, replicas not current {:?}", state.leader, state.lagging)),
            }
        })
        .await
    }

    /// The stream's leader and its replicas that are not current, asked of any node.
    async fn stream_state(&self, bucket: &str) -> Result<StreamState, String> {
        let servers: Vec<async_nats::ServerAddr> = self
            .nodes
            .iter()
            .map(|node| format!("nats://{}", node.address()).parse())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{e}"))?;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(servers.as_slice())
            .await
            .map_err(|e| e.to_string())?;
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(format!("KV_{bucket}")).await.map_err(|e| e.to_string())?;
        let info = stream.info().await.map_err(|e| e.to_string())?.clone();
        // What an acquire needs of the cluster must answer too: reading a key (the stream
        // leader) and creating a consumer for a watch (the JetStream meta leader).
        match stream.get_last_raw_message_by_subject(&format!("$KV.{bucket}.settled-probe")).await {
            Ok(_) => {}
            Err(error) if error.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {}
            Err(error) => return Err(format!("reading a key: {error}")),
        }
        let probe = async_nats::jetstream::consumer::pull::Config {
            inactive_threshold: Duration::from_secs(2),
            ..Default::default()
        };
        stream.create_consumer(probe).await.map_err(|error| format!("creating a consumer: {error}"))?;
        let Some(cluster) = info.cluster.as_ref() else { return Ok(StreamState { leader: None, lagging: Vec::new() }) };
        let leader = cluster.leader.as_deref().and_then(|leader| self.index_of(leader));
        let lagging = cluster
            .replicas
            .iter()
            .filter(|replica| !replica.current || replica.offline)
            .filter_map(|replica| self.index_of(&replica.name))
            .collect();
        Ok(StreamState { leader, lagging })
    }
}

/// What [`NatsCluster::stream_state`] reads off a stream: its leader and the replicas that
/// are behind or offline (node indexes).
struct StreamState {
    leader: Option<usize>,
    lagging: Vec<usize>,
}
