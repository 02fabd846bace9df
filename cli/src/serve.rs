//! `lockcheck serve`: the reference dflockd server.
//!
//! Flags and environment variables have the Go server's names and defaults; as there, a set
//! `DFLOCKD_*` variable wins over the flag. Every value is checked before the server binds
//! (`ServerConfig::validate`): a value out of bounds stops the start with an error naming the
//! setting and its bound. Durations are whole seconds (the auth failure delay milliseconds),
//! so converting them cannot overflow; their bounds are the library's.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use lockcheck_impls::dflockd::ServerTls;
use lockcheck_server::{Server, ServerConfig};

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
    /// Default lease, seconds, at most --max-lease-ttl [env DFLOCKD_DEFAULT_LEASE_TTL_S]
    #[arg(long, default_value_t = 33)]
    default_lease_ttl: u64,
    /// Longest lease granted, seconds (longer requests are granted this long), at most a
    /// year [env DFLOCKD_MAX_LEASE_TTL_S]
    #[arg(long, default_value_t = 86_400)]
    max_lease_ttl: u64,
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
    /// Distinct keys one connection may hold, 0 = unlimited [env DFLOCKD_MAX_KEYS_PER_CONNECTION]
    #[arg(long, default_value_t = 64)]
    max_keys_per_connection: usize,
    /// Pending two-phase requests per connection, 0 = unlimited [env DFLOCKD_MAX_WAITERS_PER_CONNECTION]
    #[arg(long, default_value_t = 64)]
    max_waiters_per_connection: usize,
    /// Largest permit limit a semaphore request may name [env DFLOCKD_MAX_SEMAPHORE_LIMIT]
    #[arg(long, default_value_t = 1024)]
    max_semaphore_limit: u32,
    /// With a secret: connections not yet authenticated, at most [env DFLOCKD_MAX_UNAUTHENTICATED_CONNECTIONS]
    #[arg(long, default_value_t = 64)]
    max_unauthenticated_connections: usize,
    /// With a secret: seconds from connect by which `auth` must succeed [env DFLOCKD_AUTH_TIMEOUT_S]
    #[arg(long, default_value_t = 5)]
    auth_timeout: u64,
    /// Delay before a wrong secret is answered, milliseconds, doubling per failure from the
    /// same address up to 5 s [env DFLOCKD_AUTH_FAILURE_DELAY_MS]
    #[arg(long, default_value_t = 100)]
    auth_failure_delay_ms: u64,
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

/// The environment as the settings see it: `DFLOCKD_*` name → value, if set.
trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        // A value that is not Unicode is passed on (lossily) to be refused by its parser,
        // not silently ignored.
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    }
}

/// Shows at most 64 characters of a value in an error.
fn shown(value: &str) -> String {
    let short: String = value.chars().take(64).collect();
    if short.len() < value.len() { format!("{short:?}…") } else { format!("{short:?}") }
}

/// `DFLOCKD_<name>` if set (and parseable), else the flag's value.
fn env_or<T: FromStr>(env: &impl Env, name: &str, flag: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match env.get(name) {
        Some(value) => value.trim().parse().map_err(|e| anyhow::anyhow!("{name}={}: {e}", shown(&value))),
        None => Ok(flag),
    }
}

fn env_or_opt<T: FromStr>(env: &impl Env, name: &str, flag: Option<T>) -> anyhow::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    match env.get(name) {
        Some(value) if !value.is_empty() => {
            value.parse().map(Some).map_err(|e| anyhow::anyhow!("{name}={}: {e}", shown(&value)))
        }
        _ => Ok(flag),
    }
}

fn env_bool(env: &impl Env, name: &str, flag: bool) -> anyhow::Result<bool> {
    match env.get(name) {
        Some(value) => match value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => anyhow::bail!("{name}={}: expected true or false", shown(&value)),
        },
        None => Ok(flag),
    }
}

fn config(args: Args) -> anyhow::Result<ServerConfig> {
    config_from(args, &ProcessEnv)
}

/// The settings from the flags and `env`, validated; a secret file is read here.
fn config_from(args: Args, env: &impl Env) -> anyhow::Result<ServerConfig> {
    let Settings { mut server, auth_token_file, tls_cert, tls_key } = settings(args, env)?;
    let token_file = env_or_opt(env, "DFLOCKD_AUTH_TOKEN_FILE", auth_token_file)?;
    if server.auth_token.is_none()
        && let Some(file) = token_file
    {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading the auth token file {}", file.display()))?;
        // A file usually ends in a newline: only line ends are dropped, so a secret with
        // outer spaces is refused (no client could send it) rather than silently changed.
        server.auth_token = Some(text.trim_end_matches(['\n', '\r']).to_owned());
    }
    server.validate()?;
    let cert = env_or_opt(env, "DFLOCKD_TLS_CERT", tls_cert)?;
    let key = env_or_opt(env, "DFLOCKD_TLS_KEY", tls_key)?;
    server.tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(ServerTls::from_files(&cert, &key)?),
        (None, None) => None,
        _ => anyhow::bail!("TLS needs both --tls-cert and --tls-key"),
    };
    Ok(server)
}

/// What the flags and variables say, before any file is read.
struct Settings {
    server: ServerConfig,
    auth_token_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// Parses every flag and variable (no file is read): the part of the start-up that takes
/// arbitrary text, kept pure for the property test.
fn settings(args: Args, env: &impl Env) -> anyhow::Result<Settings> {
    let secs = |name: &str, flag: u64| env_or(env, name, flag).map(Duration::from_secs);
    let mut config = ServerConfig::default();
    config.host = env_or(env, "DFLOCKD_HOST", args.host)?;
    config.port = env_or(env, "DFLOCKD_PORT", args.port)?;
    config.default_lease_ttl_s = env_or(env, "DFLOCKD_DEFAULT_LEASE_TTL_S", args.default_lease_ttl)?;
    config.max_lease_ttl_s = env_or(env, "DFLOCKD_MAX_LEASE_TTL_S", args.max_lease_ttl)?;
    config.lease_sweep_interval = secs("DFLOCKD_LEASE_SWEEP_INTERVAL_S", args.lease_sweep_interval)?;
    config.gc_interval = secs("DFLOCKD_GC_LOOP_SLEEP", args.gc_interval)?;
    config.gc_max_idle = secs("DFLOCKD_GC_MAX_UNUSED_TIME", args.gc_max_idle)?;
    config.max_locks = env_or(env, "DFLOCKD_MAX_LOCKS", args.max_locks)?;
    config.max_connections = env_or(env, "DFLOCKD_MAX_CONNECTIONS", args.max_connections)?;
    config.max_waiters = env_or(env, "DFLOCKD_MAX_WAITERS", args.max_waiters)?;
    config.max_keys_per_connection = env_or(env, "DFLOCKD_MAX_KEYS_PER_CONNECTION", args.max_keys_per_connection)?;
    config.max_waiters_per_connection =
        env_or(env, "DFLOCKD_MAX_WAITERS_PER_CONNECTION", args.max_waiters_per_connection)?;
    config.max_semaphore_limit = env_or(env, "DFLOCKD_MAX_SEMAPHORE_LIMIT", args.max_semaphore_limit)?;
    config.max_unauthenticated_connections =
        env_or(env, "DFLOCKD_MAX_UNAUTHENTICATED_CONNECTIONS", args.max_unauthenticated_connections)?;
    config.auth_timeout = secs("DFLOCKD_AUTH_TIMEOUT_S", args.auth_timeout)?;
    config.auth_failure_delay =
        Duration::from_millis(env_or(env, "DFLOCKD_AUTH_FAILURE_DELAY_MS", args.auth_failure_delay_ms)?);
    config.read_timeout = secs("DFLOCKD_READ_TIMEOUT_S", args.read_timeout)?;
    config.write_timeout = secs("DFLOCKD_WRITE_TIMEOUT_S", args.write_timeout)?;
    config.shutdown_timeout = secs("DFLOCKD_SHUTDOWN_TIMEOUT_S", args.shutdown_timeout)?;
    config.auto_release_on_disconnect =
        env_bool(env, "DFLOCKD_AUTO_RELEASE_ON_DISCONNECT", args.auto_release_on_disconnect)?;
    config.fence_state_file = env_or_opt(env, "DFLOCKD_FENCE_STATE_FILE", args.fence_state_file)?;
    config.auth_token = env_or_opt(env, "DFLOCKD_AUTH_TOKEN", args.auth_token)?;
    Ok(Settings {
        server: config,
        auth_token_file: args.auth_token_file,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    struct MapEnv(HashMap<String, String>);

    impl Env for MapEnv {
        fn get(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    fn parse(flags: &[&str], env: &[(&str, &str)]) -> anyhow::Result<ServerConfig> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(flags.iter().copied()))?;
        let env = MapEnv(env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        config_from(cli.args, &env)
    }

    #[test]
    fn the_defaults_start() {
        let config = parse(&[], &[]).unwrap();
        assert_eq!(config.max_keys_per_connection, 64);
        assert_eq!(config.max_lease_ttl_s, 86_400);
    }

    /// Guards against settings that used to start a broken server: an overflowing sweep
    /// interval killed the expiry task, a huge read timeout made every connection panic, a
    /// read timeout of 0 or no keys left a server that answers nothing.
    #[test]
    fn settings_that_break_the_server_stop_the_start_naming_the_bound() {
        let max = u64::MAX.to_string();
        for (flags, env, setting) in [
            (vec!["--lease-sweep-interval", max.as_str()], vec![], "--lease-sweep-interval"),
            (vec!["--read-timeout", max.as_str()], vec![], "--read-timeout"),
            (vec!["--read-timeout", "0"], vec![], "--read-timeout"),
            (vec![], vec![("DFLOCKD_READ_TIMEOUT_S", "0")], "--read-timeout"),
            (vec!["--write-timeout", max.as_str()], vec![], "--write-timeout"),
            (vec!["--default-lease-ttl", max.as_str()], vec![], "--default-lease-ttl"),
            (vec!["--max-lease-ttl", "9223372036"], vec![], "--max-lease-ttl"),
            (vec!["--max-locks", "0"], vec![], "--max-locks"),
            (vec!["--auth-token", " padded"], vec![], "--auth-token"),
            (vec![], vec![("DFLOCKD_AUTH_TOKEN", "padded ")], "--auth-token"),
        ] {
            let error = parse(&flags, &env).expect_err(setting).to_string();
            assert!(error.contains(setting) && error.contains("must"), "{flags:?} {env:?}: {error}");
        }
        let long = "s".repeat(300);
        let error = parse(&["--auth-token", &long], &[]).unwrap_err().to_string();
        assert!(error.contains("at most 256 bytes"), "{error}");
    }

    #[test]
    fn a_secret_file_keeps_its_outer_spaces_and_is_refused_for_them() {
        let dir = std::env::temp_dir().join(format!("lockcheck-serve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        let config = parse(&["--auth-token-file", file.to_str().unwrap()], &[]).unwrap();
        assert_eq!(config.auth_token.as_deref(), Some("s3cret"), "the line end is dropped");
        std::fs::write(&file, " s3cret \n").unwrap();
        assert!(parse(&["--auth-token-file", file.to_str().unwrap()], &[]).is_err());
        std::fs::write(&file, "\n").unwrap();
        assert!(parse(&["--auth-token-file", file.to_str().unwrap()], &[]).is_err(), "empty");
        std::fs::remove_dir_all(dir).unwrap();
    }

    const NAMES: &[&str] = &[
        "DFLOCKD_PORT",
        "DFLOCKD_DEFAULT_LEASE_TTL_S",
        "DFLOCKD_MAX_LEASE_TTL_S",
        "DFLOCKD_LEASE_SWEEP_INTERVAL_S",
        "DFLOCKD_GC_LOOP_SLEEP",
        "DFLOCKD_GC_MAX_UNUSED_TIME",
        "DFLOCKD_MAX_LOCKS",
        "DFLOCKD_MAX_CONNECTIONS",
        "DFLOCKD_MAX_WAITERS",
        "DFLOCKD_MAX_KEYS_PER_CONNECTION",
        "DFLOCKD_MAX_WAITERS_PER_CONNECTION",
        "DFLOCKD_MAX_SEMAPHORE_LIMIT",
        "DFLOCKD_MAX_UNAUTHENTICATED_CONNECTIONS",
        "DFLOCKD_AUTH_TIMEOUT_S",
        "DFLOCKD_AUTH_FAILURE_DELAY_MS",
        "DFLOCKD_READ_TIMEOUT_S",
        "DFLOCKD_WRITE_TIMEOUT_S",
        "DFLOCKD_SHUTDOWN_TIMEOUT_S",
        "DFLOCKD_AUTO_RELEASE_ON_DISCONNECT",
        "DFLOCKD_AUTH_TOKEN",
    ];

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            (0u64..100).prop_map(|n| n.to_string()),
            Just(u64::MAX.to_string()),
            Just("18446744073709551616".to_string()),
            Just("-1".to_string()),
            Just("".to_string()),
            Just("NaN".to_string()),
            ".{0,300}",
        ]
    }

    proptest! {
        /// Any variables: the start-up settings are accepted (and then valid) or refused with
        /// an error, never a panic.
        #[test]
        fn arbitrary_variables_never_panic(
            vars in proptest::collection::vec((proptest::sample::select(NAMES), value()), 0..6)
        ) {
            let cli = Cli::try_parse_from(["serve"]).unwrap();
            let env = MapEnv(vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
            if let Ok(config) = config_from(cli.args, &env) {
                prop_assert!(config.validate().is_ok());
            }
        }

        /// Any flag values: clap refuses or the settings are accepted or refused, never a panic.
        #[test]
        fn arbitrary_flags_never_panic(
            flags in proptest::collection::vec(
                (proptest::sample::select(NAMES), value()),
                0..6,
            )
        ) {
            let mut argv = vec!["serve".to_string()];
            for (name, value) in flags {
                let flag = name.trim_start_matches("DFLOCKD_").to_ascii_lowercase().replace('_', "-");
                argv.push(format!("--{}", flag.strip_suffix("-s").unwrap_or(&flag)));
                argv.push(value);
            }
            if let Ok(cli) = Cli::try_parse_from(&argv) {
                let _ = config_from(cli.args, &MapEnv(HashMap::new()));
            }
        }
    }
}
