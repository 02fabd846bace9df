//! Fuzzes the server's settings validator (`ServerConfig::validate`), the edge every setting
//! crosses before `lockcheck serve` binds: arbitrary values for every bounded setting. It
//! must never panic, and what it accepts must be safe where the server uses it: every
//! duration can be added to the clock, the default lease is within the maximum and both fit
//! what clients parse, and a secret fits a request line and survives the server's trim.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use lockcheck_server::ServerConfig;
use lockcheck_impls::dflockd::protocol::{MAX_LINE_BYTES, MAX_PROTOCOL_SECONDS};

fn duration(u: &mut Unstructured<'_>) -> Result<Duration> {
    Ok(Duration::new(u.arbitrary()?, u.int_in_range(0..=999_999_999)?))
}

fn config(u: &mut Unstructured<'_>) -> Result<ServerConfig> {
    let mut c = ServerConfig::ephemeral();
    c.default_lease_ttl_s = u.arbitrary()?;
    c.max_lease_ttl_s = u.arbitrary()?;
    c.lease_sweep_interval = duration(u)?;
    c.gc_interval = duration(u)?;
    c.gc_max_idle = duration(u)?;
    c.read_timeout = duration(u)?;
    c.write_timeout = duration(u)?;
    c.shutdown_timeout = duration(u)?;
    c.auth_timeout = duration(u)?;
    c.auth_failure_delay = duration(u)?;
    c.max_locks = u.arbitrary()?;
    c.max_connections = u.arbitrary()?;
    c.max_waiters = u.arbitrary()?;
    c.max_keys_per_connection = u.arbitrary()?;
    c.max_waiters_per_connection = u.arbitrary()?;
    c.max_semaphore_limit = u.arbitrary()?;
    c.max_unauthenticated_connections = u.arbitrary()?;
    c.auth_token = u.arbitrary()?;
    Ok(c)
}

fuzz_target!(|data: &[u8]| {
    let Ok(c) = config(&mut Unstructured::new(data)) else { return };
    if c.validate().is_err() {
        return;
    }
    let now = std::time::Instant::now();
    for d in [
        c.lease_sweep_interval,
        c.gc_interval,
        c.gc_max_idle,
        c.read_timeout,
        c.write_timeout,
        c.shutdown_timeout,
        c.auth_timeout,
        c.auth_failure_delay,
        Duration::from_secs(c.max_lease_ttl_s),
    ] {
        assert!(now.checked_add(d).is_some(), "{d:?} overflows the clock");
    }
    assert!(!c.read_timeout.is_zero() && c.max_locks > 0, "a useless server was accepted");
    assert!(1 <= c.default_lease_ttl_s && c.default_lease_ttl_s <= c.max_lease_ttl_s);
    assert!(c.max_lease_ttl_s <= MAX_PROTOCOL_SECONDS);
    if let Some(secret) = &c.auth_token {
        assert!(!secret.is_empty() && secret.len() <= MAX_LINE_BYTES && secret.trim() == secret);
        assert!(!secret.contains(['\n', '\r']));
    }
});
