//! The server's settings, their bounds, and what the server reports while it runs.
//!
//! Every setting is checked once, at the edge ([`ServerConfig::validate`], which
//! [`super::Server::start`] calls and `lockcheck serve` calls before it binds), so that the
//! code behind it can rely on the bounds: a duration that is added to an instant fits well
//! inside what an instant can hold, a lease fits what every client can parse (and what the
//! server's own timers can hold exactly), and no setting makes the server useless while it
//! looks as if it were running (a read timeout of zero, a table with no room for a key, a
//! secret no client can send).
//!
//! # Fair share
//! The Go server's caps are global: one client can fill the whole key table, ask for a
//! semaphore with four billion permits, or queue on every key. The reference server adds
//! per-connection caps with defaults small enough that one connection cannot shut others
//! out ([`ServerConfig::max_keys_per_connection`], [`ServerConfig::max_waiters_per_connection`],
//! [`ServerConfig::max_semaphore_limit`]). A client with many connections gets many shares:
//! bound those with [`ServerConfig::max_connections`]. With a secret set, connections that
//! have not yet authenticated are capped in number and in time, and every failed attempt is
//! answered only after a delay that doubles with each failure from the same address.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lockcheck_impls::dflockd::ServerTls;
use lockcheck_impls::dflockd::protocol::{MAX_LINE_BYTES, MAX_PROTOCOL_SECONDS};

/// The longest duration any setting may have: one year. Far below what an instant can hold
/// on any platform, so `now + setting` never overflows.
pub const MAX_SETTING_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The longest lease the server grants, in seconds (one year). Every client parses it (the
/// protocol's bound, [`MAX_PROTOCOL_SECONDS`], is about 292 years) and the server's own lease
/// timers hold it exactly, so the lease a client is told is the lease it gets.
pub const MAX_LEASE_TTL_S: u64 = 365 * 24 * 3600;
const _: () = assert!(MAX_LEASE_TTL_S <= MAX_PROTOCOL_SECONDS);

/// The most keys the table may be configured for (2^24).
pub const MAX_KEYS: usize = 1 << 24;

/// The largest permit limit the server may be configured to accept for a semaphore (2^20).
pub const MAX_SEMAPHORE_LIMIT: u32 = 1 << 20;

/// The longest base delay after a failed authentication (one second; it doubles per failure
/// from the same address up to [`MAX_AUTH_FAILURE_DELAY`]).
pub const MAX_AUTH_FAILURE_BASE_DELAY: Duration = Duration::from_secs(1);

/// The longest delay before a failed authentication is answered.
pub const MAX_AUTH_FAILURE_DELAY: Duration = Duration::from_secs(5);

/// The server's settings. Defaults are the Go server's where it has the setting (`--flag` /
/// `DFLOCKD_*` names in brackets; `lockcheck serve` reads both, the variable winning); the
/// fair-share and authentication limits are this server's own.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Bind address [`--host`, `DFLOCKD_HOST`] = 127.0.0.1.
    pub host: String,
    /// Bind port, 0 = any free port [`--port`, `DFLOCKD_PORT`] = 6388.
    pub port: u16,
    /// Lease when a request names none, seconds, at most `max_lease_ttl_s`
    /// [`--default-lease-ttl`, `DFLOCKD_DEFAULT_LEASE_TTL_S`] = 33.
    pub default_lease_ttl_s: u64,
    /// The longest lease granted, seconds, at most [`MAX_LEASE_TTL_S`]. A request for a longer
    /// lease (acquire, enqueue or renew) is granted this long, and the reply says so: the
    /// protocol's replies carry the lease granted, and clients count from that
    /// [`--max-lease-ttl`, `DFLOCKD_MAX_LEASE_TTL_S`] = 86400 (a day).
    pub max_lease_ttl_s: u64,
    /// Longest sleep of the expiry sweeper, 1 ms to a year
    /// [`--lease-sweep-interval`, `DFLOCKD_LEASE_SWEEP_INTERVAL_S`] = 1 s.
    pub lease_sweep_interval: Duration,
    /// How often idle keys are pruned, 1 ms to a year [`--gc-interval`, `DFLOCKD_GC_LOOP_SLEEP`] = 5 s.
    pub gc_interval: Duration,
    /// Idle time after which a free key is pruned, at most a year
    /// [`--gc-max-idle`, `DFLOCKD_GC_MAX_UNUSED_TIME`] = 60 s.
    pub gc_max_idle: Duration,
    /// Keys, locks and semaphores together, 1 to [`MAX_KEYS`] [`--max-locks`, `DFLOCKD_MAX_LOCKS`] = 1024.
    pub max_locks: usize,
    /// Concurrent connections, 0 = unlimited [`--max-connections`, `DFLOCKD_MAX_CONNECTIONS`] = 0.
    pub max_connections: usize,
    /// Waiters per key, 0 = unlimited [`--max-waiters`, `DFLOCKD_MAX_WAITERS`] = 0.
    pub max_waiters: usize,
    /// Distinct keys one connection may hold at once, 0 = unlimited. A request that would make
    /// a connection hold one more key gets `error_max_locks` (a grant handed on to a waiter
    /// is not refused: the cap is checked when the request is made)
    /// [`--max-keys-per-connection`, `DFLOCKD_MAX_KEYS_PER_CONNECTION`] = 64.
    pub max_keys_per_connection: usize,
    /// Two-phase requests (`e`/`se`) one connection may have pending (enqueued, not yet
    /// waited for) at once, 0 = unlimited; over it, `error_max_waiters`. A blocking `l` or
    /// `w` occupies its connection, so this bounds a connection's waiters
    /// [`--max-waiters-per-connection`, `DFLOCKD_MAX_WAITERS_PER_CONNECTION`] = 64.
    pub max_waiters_per_connection: usize,
    /// The largest permit limit a semaphore request may name, 1 to [`MAX_SEMAPHORE_LIMIT`];
    /// a larger limit is a malformed request (`error`)
    /// [`--max-semaphore-limit`, `DFLOCKD_MAX_SEMAPHORE_LIMIT`] = 1024.
    pub max_semaphore_limit: u32,
    /// Time allowed for each request line, idle time between requests included, 1 ms to a
    /// year [`--read-timeout`, `DFLOCKD_READ_TIMEOUT_S`] = 23 s.
    pub read_timeout: Duration,
    /// Time allowed to write a reply, 1 ms to a year [`--write-timeout`, `DFLOCKD_WRITE_TIMEOUT_S`] = 5 s.
    pub write_timeout: Duration,
    /// Drain time on shutdown, zero = wait forever, at most a year
    /// [`--shutdown-timeout`, `DFLOCKD_SHUTDOWN_TIMEOUT_S`] = 30 s.
    pub shutdown_timeout: Duration,
    /// Release a connection's slots when it closes
    /// [`--auto-release-on-disconnect`, `DFLOCKD_AUTO_RELEASE_ON_DISCONNECT`] = true.
    pub auto_release_on_disconnect: bool,
    /// Shared secret; when set, the first command must be `auth`
    /// [`--auth-token`, `DFLOCKD_AUTH_TOKEN`; or `--auth-token-file`, `DFLOCKD_AUTH_TOKEN_FILE`].
    /// It must be something a client can send: 1 to [`MAX_LINE_BYTES`] bytes, no control
    /// characters, and no leading or trailing whitespace (the server trims what it receives,
    /// so such a secret could never match).
    pub auth_token: Option<String>,
    /// With a secret set: connections not yet authenticated (TLS handshakes included), at
    /// most; over it a new connection is closed at once. Authenticated connections do not
    /// count, so unauthenticated ones cannot take every slot (with `max_connections` set, this
    /// must be below it)
    /// [`--max-unauthenticated-connections`, `DFLOCKD_MAX_UNAUTHENTICATED_CONNECTIONS`] = 64.
    pub max_unauthenticated_connections: usize,
    /// With a secret set: the time from accept (TLS handshake included) by which `auth`
    /// must have succeeded, 1 ms to a year [`--auth-timeout`, `DFLOCKD_AUTH_TIMEOUT_S`] = 5 s.
    pub auth_timeout: Duration,
    /// A failed `auth` is answered (`error_auth`, then close) only after this delay, doubled
    /// for each earlier failure from the same address in the last minute, at most
    /// [`MAX_AUTH_FAILURE_DELAY`]; 1 ms to [`MAX_AUTH_FAILURE_BASE_DELAY`]
    /// [`--auth-failure-delay-ms`, `DFLOCKD_AUTH_FAILURE_DELAY_MS`] = 100 ms.
    pub auth_failure_delay: Duration,
    /// TLS on the port [`--tls-cert` + `--tls-key`, `DFLOCKD_TLS_CERT` + `DFLOCKD_TLS_KEY`].
    pub tls: Option<ServerTls>,
    /// Where the fence ceiling is persisted [`--fence-state-file`, `DFLOCKD_FENCE_STATE_FILE`].
    pub fence_state_file: Option<PathBuf>,
    /// Where the server reports what an operator must hear about (failed authentication,
    /// fence exhaustion, a state file that cannot be written) = standard error.
    pub events: EventSink,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 6388,
            default_lease_ttl_s: 33,
            max_lease_ttl_s: 24 * 3600,
            lease_sweep_interval: Duration::from_secs(1),
            gc_interval: Duration::from_secs(5),
            gc_max_idle: Duration::from_secs(60),
            max_locks: 1024,
            max_connections: 0,
            max_waiters: 0,
            max_keys_per_connection: 64,
            max_waiters_per_connection: 64,
            max_semaphore_limit: 1024,
            read_timeout: Duration::from_secs(23),
            write_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
            auto_release_on_disconnect: true,
            auth_token: None,
            max_unauthenticated_connections: 64,
            auth_timeout: Duration::from_secs(5),
            auth_failure_delay: Duration::from_millis(100),
            tls: None,
            fence_state_file: None,
            events: EventSink::default(),
        }
    }
}

/// A setting out of its bounds. Names the setting (by its `lockcheck serve` flag), the value
/// and the bound it breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{setting} = {value}: {requirement}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The setting, as its `lockcheck serve` flag.
    pub setting: &'static str,
    /// The value given (a secret is not repeated: its length is).
    pub value: String,
    /// The bound it breaks.
    pub requirement: String,
}

fn refuse(setting: &'static str, value: impl fmt::Display, requirement: impl Into<String>) -> ConfigError {
    ConfigError { setting, value: value.to_string(), requirement: requirement.into() }
}

fn duration_within(setting: &'static str, value: Duration, min: Duration, max: Duration) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(refuse(setting, format_args!("{value:?}"), format!("must be from {min:?} to {max:?}")));
    }
    Ok(())
}

impl ServerConfig {
    /// The defaults on 127.0.0.1 and a free port (tests, the in-process backend).
    pub fn ephemeral() -> Self {
        ServerConfig { port: 0, ..ServerConfig::default() }
    }

    /// Checks every setting against its bound; the first one out of bounds is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const MS: Duration = Duration::from_millis(1);
        if !(1..=MAX_LEASE_TTL_S).contains(&self.max_lease_ttl_s) {
            return Err(refuse(
                "--max-lease-ttl",
                self.max_lease_ttl_s,
                format!("must be from 1 to {MAX_LEASE_TTL_S} seconds (a year)"),
            ));
        }
        if !(1..=self.max_lease_ttl_s).contains(&self.default_lease_ttl_s) {
            return Err(refuse(
                "--default-lease-ttl",
                self.default_lease_ttl_s,
                format!("must be from 1 to --max-lease-ttl ({} seconds)", self.max_lease_ttl_s),
            ));
        }
        duration_within("--lease-sweep-interval", self.lease_sweep_interval, MS, MAX_SETTING_DURATION)?;
        duration_within("--gc-interval", self.gc_interval, MS, MAX_SETTING_DURATION)?;
        duration_within("--gc-max-idle", self.gc_max_idle, Duration::ZERO, MAX_SETTING_DURATION)?;
        duration_within("--read-timeout", self.read_timeout, MS, MAX_SETTING_DURATION)?;
        duration_within("--write-timeout", self.write_timeout, MS, MAX_SETTING_DURATION)?;
        duration_within("--shutdown-timeout", self.shutdown_timeout, Duration::ZERO, MAX_SETTING_DURATION)?;
        duration_within("--auth-timeout", self.auth_timeout, MS, MAX_SETTING_DURATION)?;
        duration_within("--auth-failure-delay-ms", self.auth_failure_delay, MS, MAX_AUTH_FAILURE_BASE_DELAY)?;
        if !(1..=MAX_KEYS).contains(&self.max_locks) {
            return Err(refuse(
                "--max-locks",
                self.max_locks,
                format!("must be from 1 to {MAX_KEYS} (with no room for a key every request fails)"),
            ));
        }
        if !(1..=MAX_SEMAPHORE_LIMIT).contains(&self.max_semaphore_limit) {
            return Err(refuse(
                "--max-semaphore-limit",
                self.max_semaphore_limit,
                format!("must be from 1 to {MAX_SEMAPHORE_LIMIT}"),
            ));
        }
        if let Some(secret) = &self.auth_token {
            let shown = format!("a secret of {} bytes", secret.len());
            if secret.is_empty() {
                return Err(refuse("--auth-token", shown, "must not be empty"));
            }
            if secret.len() > MAX_LINE_BYTES {
                return Err(refuse(
                    "--auth-token",
                    shown,
                    format!("must be at most {MAX_LINE_BYTES} bytes, the longest request line"),
                ));
            }
            if secret.chars().any(char::is_control) {
                return Err(refuse("--auth-token", shown, "must not contain control characters (newlines included)"));
            }
            if secret.trim() != secret {
                return Err(refuse(
                    "--auth-token",
                    shown,
                    "must not start or end with whitespace (the server trims what clients send)",
                ));
            }
            if self.max_unauthenticated_connections == 0 {
                return Err(refuse(
                    "--max-unauthenticated-connections",
                    0,
                    "must be at least 1 with a secret set (no client could authenticate)",
                ));
            }
            if self.max_connections > 0 && self.max_unauthenticated_connections >= self.max_connections {
                return Err(refuse(
                    "--max-unauthenticated-connections",
                    self.max_unauthenticated_connections,
                    format!(
                        "must be below --max-connections ({}) with a secret set, or unauthenticated \
                         connections could take every slot",
                        self.max_connections
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Something the operator must hear about. Shown with `Display` as one log line.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A client sent a wrong secret; its reply is delayed by `delay`. Reported for the first
    /// failures from an address and then at every power of two, so a flood is heard but does
    /// not flood the log.
    AuthFailed {
        /// The client's address.
        peer: IpAddr,
        /// Failures from that address in the last minute, this one included.
        failures: u32,
        /// How long the server waits before answering `error_auth`.
        delay: Duration,
    },
    /// A connection was closed at once because too many connections have not authenticated
    /// yet. Reported for the first and then at every power of two.
    UnauthenticatedLimit {
        /// The client's address.
        peer: IpAddr,
        /// The limit.
        limit: usize,
        /// Connections refused so far for this reason.
        refused: u64,
    },
    /// The fencing counter reached its largest value: the server grants nothing more (every
    /// grant is answered `error_fence_exhausted`). Reported once.
    FenceExhausted {
        /// The last fencing value handed out, if any was.
        last: Option<u64>,
    },
    /// The fence state file could not be written: grants are refused until it can be.
    /// Reported for the first refusals and then at every power of two.
    FenceStateUnwritable {
        /// Why.
        message: String,
    },
}

impl fmt::Display for ServerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerEvent::AuthFailed { peer, failures, delay } => {
                write!(
                    f,
                    "authentication failed from {peer} ({failures} in the last minute); answering after {delay:?}"
                )
            }
            ServerEvent::UnauthenticatedLimit { peer, limit, refused } => write!(
                f,
                "closed a connection from {peer}: {limit} connections have not authenticated yet ({refused} refused so far)"
            ),
            ServerEvent::FenceExhausted { last: Some(last) } => write!(
                f,
                "the fencing counter is exhausted (last value {last:#x}); refusing every grant: start over with a new fence state file"
            ),
            ServerEvent::FenceExhausted { last: None } => write!(
                f,
                "the fencing counter is exhausted (the state file holds the largest value); refusing every grant"
            ),
            ServerEvent::FenceStateUnwritable { message } => {
                write!(f, "cannot persist the fence ceiling, refusing grants until it can be: {message}")
            }
        }
    }
}

type Handler = dyn Fn(&ServerEvent) + Send + Sync;

/// Where [`ServerEvent`]s go: standard error by default, or a function of yours (tests
/// collect them).
#[derive(Clone)]
pub struct EventSink(Arc<Handler>);

impl EventSink {
    /// Calls `handler` for each event (on the server's tasks: keep it quick).
    pub fn new(handler: impl Fn(&ServerEvent) + Send + Sync + 'static) -> Self {
        EventSink(Arc::new(handler))
    }

    /// One line per event on standard error, `lockcheck serve: <event>`.
    pub fn stderr() -> Self {
        EventSink::new(|event| eprintln!("lockcheck serve: {event}"))
    }

    pub(crate) fn emit(&self, event: ServerEvent) {
        (self.0)(&event);
    }
}

impl Default for EventSink {
    fn default() -> Self {
        EventSink::stderr()
    }
}

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventSink")
    }
}

/// Whether `n` is reported: the first few, then powers of two.
pub(crate) fn worth_reporting(n: u64) -> bool {
    n <= 3 || n.is_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_defaults_are_valid() {
        ServerConfig::default().validate().unwrap();
        ServerConfig::ephemeral().validate().unwrap();
    }

    #[test]
    fn useless_or_overflowing_settings_are_refused_naming_the_bound() {
        let refused = |change: fn(&mut ServerConfig)| {
            let mut config = ServerConfig::ephemeral();
            change(&mut config);
            config.validate().unwrap_err()
        };
        let e = refused(|c| c.read_timeout = Duration::ZERO);
        assert_eq!(e.setting, "--read-timeout");
        assert!(e.to_string().contains("from 1ms to"), "{e}");
        assert_eq!(refused(|c| c.read_timeout = Duration::MAX).setting, "--read-timeout");
        assert_eq!(refused(|c| c.write_timeout = Duration::from_secs(u64::MAX)).setting, "--write-timeout");
        assert_eq!(refused(|c| c.lease_sweep_interval = Duration::MAX).setting, "--lease-sweep-interval");
        assert_eq!(refused(|c| c.gc_interval = Duration::ZERO).setting, "--gc-interval");
        assert_eq!(refused(|c| c.shutdown_timeout = Duration::MAX).setting, "--shutdown-timeout");
        assert_eq!(refused(|c| c.max_locks = 0).setting, "--max-locks");
        assert_eq!(refused(|c| c.default_lease_ttl_s = 0).setting, "--default-lease-ttl");
        assert_eq!(refused(|c| c.default_lease_ttl_s = u64::MAX).setting, "--default-lease-ttl");
        let e = refused(|c| c.max_lease_ttl_s = MAX_PROTOCOL_SECONDS);
        assert!(e.to_string().contains(&MAX_LEASE_TTL_S.to_string()), "{e}");
        assert_eq!(refused(|c| c.max_semaphore_limit = 0).setting, "--max-semaphore-limit");
        assert_eq!(refused(|c| c.auth_failure_delay = Duration::from_secs(60)).setting, "--auth-failure-delay-ms");
        for secret in ["", " padded", "padded ", "two\nlines", "tab\t"] {
            let mut config = ServerConfig::ephemeral();
            config.auth_token = Some(secret.into());
            assert_eq!(config.validate().unwrap_err().setting, "--auth-token", "{secret:?}");
        }
        let mut config = ServerConfig::ephemeral();
        config.auth_token = Some("s".repeat(MAX_LINE_BYTES + 1));
        let e = config.validate().unwrap_err();
        assert!(e.to_string().contains("256 bytes"), "{e}");
        assert!(!e.to_string().contains("sss"), "the secret is not repeated: {e}");
        config.auth_token = Some("s".repeat(MAX_LINE_BYTES));
        config.validate().unwrap();
        config.max_unauthenticated_connections = 0;
        assert_eq!(config.validate().unwrap_err().setting, "--max-unauthenticated-connections");
        config.max_unauthenticated_connections = 64;
        config.max_connections = 64;
        let e = config.validate().unwrap_err();
        assert!(e.to_string().contains("below --max-connections (64)"), "{e}");
        config.max_connections = 65;
        config.validate().unwrap();
    }

    fn any_duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::MAX),
            (0u64..=u64::MAX, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
            (0u64..100_000_000_000).prop_map(Duration::from_millis),
        ]
    }

    proptest! {
        /// Whatever the settings, validation answers (never panics), and settings it accepts
        /// can be added to the clock and to each other where the server does so.
        #[test]
        fn validation_never_panics_and_accepted_settings_fit_an_instant(
            durations in proptest::collection::vec(any_duration(), 8),
            lease in prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>(), 0u64..100_000],
            max_lease in prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>(), 0u64..100_000_000],
            max_locks in prop_oneof![Just(0usize), any::<usize>(), 0usize..10],
            sem in any::<u32>(),
            secret in proptest::option::of(".{0,300}"),
        ) {
            let mut config = ServerConfig::ephemeral();
            config.lease_sweep_interval = durations[0];
            config.gc_interval = durations[1];
            config.gc_max_idle = durations[2];
            config.read_timeout = durations[3];
            config.write_timeout = durations[4];
            config.shutdown_timeout = durations[5];
            config.auth_timeout = durations[6];
            config.auth_failure_delay = durations[7];
            config.default_lease_ttl_s = lease;
            config.max_lease_ttl_s = max_lease;
            config.max_locks = max_locks;
            config.max_semaphore_limit = sem;
            config.auth_token = secret;
            if config.validate().is_ok() {
                let now = tokio::time::Instant::now();
                for d in durations.iter().copied().chain([Duration::from_secs(config.max_lease_ttl_s)]) {
                    prop_assert!(now.checked_add(d).is_some());
                    prop_assert!(now.checked_add(d + MAX_SETTING_DURATION).is_some());
                }
                prop_assert!(config.default_lease_ttl_s <= MAX_PROTOCOL_SECONDS);
                let secret = config.auth_token.unwrap_or_else(|| "x".into());
                prop_assert!(secret.len() <= MAX_LINE_BYTES && !secret.contains('\n'));
            }
        }
    }
}
