//! Redis servers for the Redis lockers' tests, suites and faults.
//!
//! The image is `LOCKCHECK_REDIS_IMAGE` (default `lockcheck/redis:7`, built from Debian's
//! `redis-server` by `scripts/setup/redis.sh`); the process runtime runs
//! `LOCKCHECK_REDIS_SERVER` (default `redis-server` from `PATH`). Servers run without
//! persistence, so a restart loses every lock — the fault the restart tests inject.

use crate::{Probe, Service, ServiceError, ServiceSpec, provision, provision_many};

/// The default image, built by `scripts/setup/redis.sh`.
pub const DEFAULT_IMAGE: &str = "lockcheck/redis:7";

/// Extra server options for a test (appended to the command line as `--name value`).
#[derive(Clone, Debug, Default)]
pub struct RedisOptions {
    /// `notify-keyspace-events` at start (`None`: the server default, events off — the
    /// locker must enable them itself or fall back).
    pub keyspace_events: Option<String>,
    /// `rename-command` pairs, e.g. `("CONFIG", "")` to disable `CONFIG` (a locked-down
    /// managed Redis).
    pub renamed_commands: Vec<(String, String)>,
    /// Append-only persistence fsynced on every write (`--appendonly yes --appendfsync
    /// always`): locks and fence counters survive a restart.
    pub append_only: bool,
}

/// The spec of a Redis server with `options`.
pub fn spec(options: &RedisOptions) -> ServiceSpec {
    let image = std::env::var("LOCKCHECK_REDIS_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_owned());
    let binary = std::env::var("LOCKCHECK_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
    let options = options.clone();
    ServiceSpec::new("redis", image, binary, 6379)
        .args(move |port| {
            let mut args: Vec<String> = ["--port", &port.to_string(), "--bind", "0.0.0.0", "--protected-mode", "no"]
                .into_iter()
                .map(str::to_owned)
                .collect();
            args.extend(["--save".to_owned(), String::new()]);
            args.extend(["--appendonly".to_owned(), if options.append_only { "yes" } else { "no" }.to_owned()]);
            if options.append_only {
                // Every write on disk before the reply: a kill loses nothing acknowledged.
                args.extend(["--appendfsync".to_owned(), "always".to_owned()]);
            }
            if let Some(events) = &options.keyspace_events {
                args.extend(["--notify-keyspace-events".to_owned(), events.clone()]);
            }
            for (command, renamed) in &options.renamed_commands {
                args.extend(["--rename-command".to_owned(), command.clone(), renamed.clone()]);
            }
            args
        })
        .ready_log("Ready to accept connections")
        .probe(Probe::Exchange { send: b"PING\r\n".to_vec(), expect: b"+PONG".to_vec() })
}

/// One Redis server (see [`provision`] for the skip policy).
pub async fn redis(options: &RedisOptions) -> Result<Option<Service>, ServiceError> {
    provision(&spec(options)).await
}

/// `count` Redis servers started in parallel (see [`provision_many`]).
pub async fn redis_many(options: &RedisOptions, count: usize) -> Result<Option<Vec<Service>>, ServiceError> {
    provision_many(&spec(options), count).await
}

/// The `redis://` URL of a server, database `db`.
pub fn url(service: &Service, db: u32) -> String {
    format!("redis://{}/{db}", service.address())
}
