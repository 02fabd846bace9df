//! ZooKeeper servers for the drivers of ZooKeeper lock recipes (kazoo's `Lock` and
//! `Semaphore`, tooz's `zookeeper://` driver): one standalone server per [`Service`], run as a
//! process.
//!
//! The process runtime runs a short `sh` script in the service's scratch directory: it writes a
//! `zoo.cfg` there (the data directory beside it, the service's port on loopback, no admin
//! server) and `exec`s `java … QuorumPeerMain zoo.cfg`, so the JVM is the process the service
//! kills, pauses and reaps, and it dies with the test (the orphan protection of every process
//! service, [`crate::orphans`]). Debian's `zookeeperd` (3.8, `scripts/setup/zookeeper.sh`)
//! ships `zookeeper.jar`, whose manifest names the rest of its class path; slf4j's simple
//! binding puts the server's log on stderr, for the ready line and the log tail of an error.
//!
//! * **Short sessions.** A 50 ms tick lets a client ask for sessions as short as 100 ms (two
//!   ticks); a session's ephemeral nodes (kazoo's lock nodes) are removed when it expires, so a
//!   crashed holder's lock frees within its session timeout.
//! * **Readiness** is the `srvr` four-letter word answered (the only one allowed here), after
//!   the request processor's start line.
//!
//! `LOCKCHECK_ZOOKEEPER_CLASSPATH` replaces the class path (default
//! `/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar`). There is no Docker image:
//! the server runs as a process on every machine.

use crate::{Probe, Service, ServiceError, ServiceSpec, provision};

/// The class path of Debian's `zookeeperd`, with slf4j's simple binding for the log.
pub const DEFAULT_CLASSPATH: &str = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar";

const SCRIPT: &str = r#"set -eu
port="$1"
classpath="$2"
cat > zoo.cfg <<EOF
tickTime=50
minSessionTimeout=100
maxSessionTimeout=10000
dataDir=$PWD/data
clientPort=$port
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=srvr
EOF
exec java -Xms64m -Xmx256m -XX:+UseSerialGC -cp "$classpath" org.apache.zookeeper.server.quorum.QuorumPeerMain zoo.cfg
"#;

/// The spec of a standalone ZooKeeper server (process runtime only: its image name names no
/// image).
pub fn spec() -> ServiceSpec {
    let classpath = std::env::var("LOCKCHECK_ZOOKEEPER_CLASSPATH").unwrap_or_else(|_| DEFAULT_CLASSPATH.to_owned());
    ServiceSpec::new("zookeeper", "lockcheck/zookeeper-not-built:3.8", "sh", 2181)
        .args(move |port| {
            vec![
                "-c".to_owned(),
                SCRIPT.to_owned(),
                "lockcheck-zookeeper".to_owned(),
                port.to_string(),
                classpath.clone(),
            ]
        })
        .ready_log("PrepRequestProcessor (sid:0) started")
        .probe(Probe::Exchange { send: b"srvr".to_vec(), expect: b"Zookeeper version:".to_vec() })
}

/// One ZooKeeper server (see [`provision`] for the skip policy).
pub async fn zookeeper() -> Result<Option<Service>, ServiceError> {
    provision(&spec()).await
}

/// The `HOST:PORT` connection string of a server, as kazoo and tooz take it.
pub fn hosts(service: &Service) -> String {
    service.address().to_string()
}
