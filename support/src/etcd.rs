//! etcd servers for the etcd lockers' tests, suites and faults: one single-node cluster per
//! [`Service`].
//!
//! The image is `LOCKCHECK_ETCD_IMAGE` (default `lockcheck/etcd:3.4`, built from Debian's
//! `etcd-server` by `scripts/setup/etcd.sh`); the process runtime runs `LOCKCHECK_ETCD_SERVER`
//! (default `etcd` from `PATH`).
//!
//! * **Short elections, short leases.** etcd refuses leases shorter than 1.5 election timeouts
//!   (rounded up to whole seconds; 2 s with the default 1 s timeout) and silently grants the
//!   minimum instead. The servers here run with a 10 ms heartbeat and a 100 ms election
//!   timeout, so a 1 s lease is granted as asked.
//! * **Peers on a Unix socket.** A single node still listens for peers; a Unix socket in the
//!   server's own directory (the process runtime's scratch directory, or the container's
//!   root) needs no second free port and cannot collide with a parallel test.
//! * **Persistence.** etcd writes every change to its write-ahead log before it answers, so a
//!   killed and restarted server keeps its keys, its leases and its revision counter
//!   ([`EtcdOptions::persistent`], the default). Without persistence every start gets an empty
//!   data directory: the process runtime names a fresh one per start, the container keeps it
//!   on `/dev/shm`, a tmpfs Docker mounts afresh at every start of the container.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Probe, Service, ServiceError, ServiceSpec, provision};

/// The default image, built by `scripts/setup/etcd.sh`.
pub const DEFAULT_IMAGE: &str = "lockcheck/etcd:3.4";

/// How an etcd server runs.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Keys, leases and revisions survive a kill and restart (etcd's normal mode). `false`:
    /// every start is an empty server (a lost disk, a replaced machine).
    pub persistent: bool,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions { persistent: true }
    }
}

/// The spec of an etcd server with `options`.
pub fn spec(options: &EtcdOptions) -> ServiceSpec {
    let image = std::env::var("LOCKCHECK_ETCD_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_owned());
    let binary = std::env::var("LOCKCHECK_ETCD_SERVER").unwrap_or_else(|_| "etcd".to_owned());
    let persistent = options.persistent;
    // Each start of a non-persistent process server gets a data directory of its own.
    let starts = Arc::new(AtomicU64::new(0));
    ServiceSpec::new("etcd", image, binary, 2379)
        .args(move |port| {
            let start = starts.fetch_add(1, Ordering::Relaxed);
            // The container port is 2379 and the container has /dev/shm; a process listens on
            // its own loopback port in its scratch directory.
            let in_container = port == 2379;
            let data_dir = match (persistent, in_container) {
                (true, true) => "/data/etcd".to_owned(),
                (true, false) => "data".to_owned(),
                (false, true) => "/dev/shm/etcd".to_owned(),
                (false, false) => format!("data-{start}"),
            };
            let listen = if in_container { "0.0.0.0" } else { "127.0.0.1" };
            let peer = "unix://etcd-peer.sock:1";
            [
                "--name",
                "lockcheck",
                "--data-dir",
                &data_dir,
                "--listen-client-urls",
                &format!("http://{listen}:{port}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{port}"),
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                &format!("lockcheck={peer}"),
                "--heartbeat-interval",
                "10",
                "--election-timeout",
                "100",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect()
        })
        .ready_log("ready to serve client requests")
        // Docker's port proxy accepts connections before the server listens (after a restart
        // above all): ask etcd itself, over HTTP/1 on its client port. 200 once it has a leader.
        .probe(Probe::Exchange { send: b"GET /health HTTP/1.0\r\n\r\n".to_vec(), expect: b"HTTP/1.0 200".to_vec() })
}

/// One etcd server (see [`provision`] for the skip policy).
pub async fn etcd(options: &EtcdOptions) -> Result<Option<Service>, ServiceError> {
    provision(&spec(options)).await
}

/// The `etcd://` URL of a server.
pub fn url(service: &Service) -> String {
    format!("etcd://{}", service.address())
}
