//! Postgres servers for the Postgres locker's tests, suites and faults: one cluster per
//! [`Service`], run as a process.
//!
//! The process runtime runs a short `sh` script in the service's scratch directory: on the
//! first start `initdb` makes a cluster there (superuser `lockcheck`, `trust` authentication on
//! loopback), then `postgres` serves it on the service's port, with its Unix socket in the data
//! directory. Postgres refuses to run as root: when the tests run as root, both run as the
//! `postgres` system user (Debian's `postgresql` package creates it) through `setpriv`, which
//! also re-arms the parent-death signal that the change of user clears, and the scratch
//! directory is handed to that user. A restart ([`Service::restart`]) keeps the data directory:
//! the fencing sequence survives it.
//!
//! `LOCKCHECK_POSTGRES_BIN` names the directory of `initdb` and `postgres` (default
//! `/usr/lib/postgresql/15/bin`, Debian bookworm's). There is no Docker image: the Postgres
//! faults are a pause, a restart and a cut session, none of which needs a network of its own.

use crate::{Probe, Service, ServiceError, ServiceSpec, provision};

/// The superuser `initdb` creates; the URL's user.
pub const USER: &str = "lockcheck";

const SCRIPT: &str = r#"set -eu
port="$1"
bin="${LOCKCHECK_POSTGRES_BIN:-/usr/lib/postgresql/15/bin}"
dir="$PWD/pgdata"
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    exec setpriv --reuid=postgres --regid=postgres --clear-groups --pdeathsig KILL -- "$@"
  else
    exec "$@"
  fi
}
if [ ! -s "$dir/PG_VERSION" ]; then
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PWD" "$dir"; fi
  ( as_owner "$bin/initdb" -D "$dir" -U lockcheck --auth=trust -E UTF8 --no-sync --no-instructions ) >/dev/null
fi
# After a kill, the old server's backends notice their postmaster's death and exit within
# moments; until the last one has detached from the shared memory, a new postmaster refuses to
# start. Wait for that (bounded: 5 s), by the segment's attach count.
if [ -f "$dir/postmaster.pid" ]; then
  shmid="$(sed -n 7p "$dir/postmaster.pid" | awk '{print $2}')"
  tries=0
  while [ -n "$shmid" ] && [ "$tries" -lt 100 ] \
    && awk -v id="$shmid" '$2 == id && $7 > 0 { found = 1 } END { exit !found }' /proc/sysvipc/shm 2>/dev/null; do
    sleep 0.05
    tries=$((tries + 1))
  done
fi
as_owner "$bin/postgres" -D "$dir" -p "$port" -k "$dir" -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300
"#;

/// The spec of a Postgres server (process runtime only: its image name names no image).
pub fn spec() -> ServiceSpec {
    ServiceSpec::new("postgres", "lockcheck/postgres-not-built:15", "sh", 5432)
        .args(|port| vec!["-c".to_owned(), SCRIPT.to_owned(), "lockcheck-postgres".to_owned(), port.to_string()])
        .ready_log("database system is ready to accept connections")
        // An SSLRequest: a Postgres server answers it with one byte, 'N' without TLS.
        .probe(Probe::Exchange { send: vec![0, 0, 0, 8, 4, 210, 22, 47], expect: b"N".to_vec() })
}

/// One Postgres server (see [`provision`] for the skip policy).
pub async fn postgres() -> Result<Option<Service>, ServiceError> {
    provision(&spec()).await
}

/// The `postgres://` URL of a server (database `postgres`, user [`USER`]).
pub fn url(service: &Service) -> String {
    format!("postgres://{USER}@{}/postgres", service.address())
}
