//! `lockcheck serve`: the reference dflockd server.
//!
//! Flags and environment variables have the Go server's names and defaults; as there, a set
//! `DFLOCKD_*` variable wins over the flag.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use lockcheck_impls::dflockd::{Server, ServerConfig, ServerTls};

/// Arguments of `lockcheck serve` (each also read from the `DFLOCKD_*` variable named in
/// its help, which takes precedence).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Bind address [env DFLOCKD_HOST]
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Bind port [env DFLOCKD_PORT]
    #[arg(long, default_value_t = 6388)]
    port: u16,
    /// Default lease, seconds [env DFLOCKD_DEFAULT_LEASE_TTL_S]
    #[arg(long, default_value_t = 33)]
    default_lease_ttl: u64,
    /// Longest sleep of the lease expiry sweeper, seconds [env DFLOCKD_LEASE_SWEEP_INTERVAL_S]
    #[arg(long, default_value_t = 1)]
    lease_sweep_interval: u64,
    /// Idle-state GC interval, seconds [env DFLOCKD_GC_LOOP_SLEEP]
    #[arg(long, default_value_t = 5)]
    gc_interval: u64,
    /// Idle seconds before a free key is pruned [env DFLOCKD_GC_MAX_UNUSED_TIME]
    #[arg(long, default_value_t = 60)]
    gc_max_idle: u64,
    /// Maximum number of keys, locks and semaphores together [env DFLOCKD_MAX_LOCKS]
    #[arg(long, default_value_t = 1024)]
    max_locks: usize,
    /// Maximum concurrent connections, 0 = unlimited [env DFLOCKD_MAX_CONNECTIONS]
    #[arg(long, default_value_t = 0)]
    max_connections: usize,
    /// Maximum waiters per key, 0 = unlimited [env DFLOCKD_MAX_WAITERS]
    #[arg(long, default_value_t = 0)]
    max_waiters: usize,
    /// Client read timeout, seconds [env DFLOCKD_READ_TIMEOUT_S]
    #[arg(long, default_value_t = 23)]
    read_timeout: u64,
    /// Client write timeout, seconds [env DFLOCKD_WRITE_TIMEOUT_S]
    #[arg(long, default_value_t = 5)]
    write_timeout: u64,
    /// Graceful shutdown drain timeout, seconds, 0 = wait forever [env DFLOCKD_SHUTDOWN_TIMEOUT_S]
    #[arg(long, default_value_t = 30)]
    shutdown_timeout: u64,
    /// Release a connection's locks when it closes: true or false [env DFLOCKD_AUTO_RELEASE_ON_DISCONNECT]
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    auto_release_on_disconnect: bool,
    /// Shared secret clients must send with `auth` [env DFLOCKD_AUTH_TOKEN]
    #[arg(long)]
    auth_token: Option<String>,
    /// File holding the shared secret [env DFLOCKD_AUTH_TOKEN_FILE]
    #[arg(long)]
    auth_token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM) [env DFLOCKD_TLS_CERT]
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) [env DFLOCKD_TLS_KEY]
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// File persisting the fencing counter's ceiling, so fencing tokens stay monotonic across
    /// restarts whatever the clock does [env DFLOCKD_FENCE_STATE_FILE]
    #[arg(long)]
    fence_state_file: Option<PathBuf>,
}

/// `DFLOCKD_<name>` if set (and parseable), else the flag's value.
fn env_or<T: FromStr>(name: &str, flag: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) => value.trim().parse().map_err(|e| anyhow::anyhow!("{name}={value:?}: {e}")),
        Err(_) => Ok(flag),
    }
}

fn env_or_opt<T: FromStr>(name: &str, flag: Option<T>) -> anyhow::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value.parse().map(Some).map_err(|e| anyhow::anyhow!("{name}={value:?}: {e}")),
        _ => Ok(flag),
    }
}

fn env_bool(name: &str, flag: bool) -> anyhow::Result<bool> {
    match std::env::var(name) {
        Ok(value) => match value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            other => anyhow::bail!("{name}={other:?}: expected true or false"),
        },
        Err(_) => Ok(flag),
    }
}

fn config(args: Args) -> anyhow::Result<ServerConfig> {
    let secs = |name: &str, flag: u64| env_or(name, flag).map(Duration::from_secs);
    let mut config = ServerConfig::default();
    config.host = env_or("DFLOCKD_HOST", args.host)?;
    config.port = env_or("DFLOCKD_PORT", args.port)?;
    config.default_lease_ttl_s = env_or("DFLOCKD_DEFAULT_LEASE_TTL_S", args.default_lease_ttl)?;
    config.lease_sweep_interval = secs("DFLOCKD_LEASE_SWEEP_INTERVAL_S", args.lease_sweep_interval)?;
    config.gc_interval = secs("DFLOCKD_GC_LOOP_SLEEP", args.gc_interval)?;
    config.gc_max_idle = secs("DFLOCKD_GC_MAX_UNUSED_TIME", args.gc_max_idle)?;
    config.max_locks = env_or("DFLOCKD_MAX_LOCKS", args.max_locks)?;
    config.max_connections = env_or("DFLOCKD_MAX_CONNECTIONS", args.max_connections)?;
    config.max_waiters = env_or("DFLOCKD_MAX_WAITERS", args.max_waiters)?;
    config.read_timeout = secs("DFLOCKD_READ_TIMEOUT_S", args.read_timeout)?;
    config.write_timeout = secs("DFLOCKD_WRITE_TIMEOUT_S", args.write_timeout)?;
    config.shutdown_timeout = secs("DFLOCKD_SHUTDOWN_TIMEOUT_S", args.shutdown_timeout)?;
    config.auto_release_on_disconnect =
        env_bool("DFLOCKD_AUTO_RELEASE_ON_DISCONNECT", args.auto_release_on_disconnect)?;
    config.fence_state_file = env_or_opt("DFLOCKD_FENCE_STATE_FILE", args.fence_state_file)?;
    let token_file = env_or_opt("DFLOCKD_AUTH_TOKEN_FILE", args.auth_token_file)?;
    config.auth_token = match (env_or_opt("DFLOCKD_AUTH_TOKEN", args.auth_token)?, token_file) {
        (Some(token), _) => Some(token),
        (None, Some(file)) => Some(
            std::fs::read_to_string(&file)
                .with_context(|| format!("reading the auth token file {}", file.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    if config.auth_token.as_deref() == Some("") {
        anyhow::bail!("the auth token is empty");
    }
    let cert = env_or_opt("DFLOCKD_TLS_CERT", args.tls_cert)?;
    let key = env_or_opt("DFLOCKD_TLS_KEY", args.tls_key)?;
    config.tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(ServerTls::from_files(&cert, &key)?),
        (None, None) => None,
        _ => anyhow::bail!("TLS needs both --tls-cert and --tls-key"),
    };
    Ok(config)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = config(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let tls = config.tls.is_some();
        let server = Server::start(config).await?;
        // Tests and scripts wait for this line before connecting.
        eprintln!("lockcheck serve: listening on {}{}", server.local_addr(), if tls { " (TLS)" } else { "" });
        server
            .serve_until(async {
                let _ = tokio::signal::ctrl_c().await;
                eprintln!("lockcheck serve: draining");
            })
            .await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
