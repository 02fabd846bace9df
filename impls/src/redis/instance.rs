//! One Redis server as the lockers see it: a reconnecting connection, the Lua scripts, the key
//! names, and the mapping of Redis errors onto [`LockError`]'s three outcomes.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Script};

use super::RedisConfig;
use crate::error::LockError;
use crate::lease::OwnerToken;

/// Takes the lock and mints its fencing token in one atomic step, so no other grant can come
/// between the two. The fence key never expires and is never deleted: tokens stay monotonic
/// across releases (not across a restart without persistence). On a refused grant it returns
/// the holder's remaining time, so a waiter can retry the moment it ends even if the
/// `expired` event comes late (Redis expires keys lazily or in a 10 Hz sweep).
const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fence = redis.pcall('INCR', KEYS[2])
  if type(fence) == 'table' and fence.err then
    -- Leave nothing behind: a grant without a fencing token is no grant.
    redis.call('DEL', KEYS[1])
    return redis.error_reply(fence.err)
  end
  return {1, fence}
end
return {0, redis.call('PTTL', KEYS[1])}
";

/// Deletes the lock only if the caller's token still holds it (never a successor's lock).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Extends the lock only if the caller's token still holds it.
const REFRESH: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Raises the fence counter to at least ARGV[2], only while the caller's token holds the lock
/// (Redlock's fencing write-back; see `multi.rs`).
const RAISE_FENCE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  local current = tonumber(redis.call('GET', KEYS[2]) or '0')
  if current < tonumber(ARGV[2]) then
    redis.call('SET', KEYS[2], ARGV[2])
  end
  return 1
end
return 0
";

/// The remaining time of the caller's lock; -2 if the token does not hold it.
const REMAINING: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PTTL', KEYS[1])
end
return -2
";

/// The answer of one grant attempt on one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Granted, with this instance's fencing token.
    Granted(u64),
    /// Held by someone else; their remaining time if the key has one.
    Held(Option<Duration>),
}

/// A Redis server and the scripts loaded on it.
pub(crate) struct Instance {
    /// `redis://host:port/db`, without credentials.
    pub(crate) display: String,
    pub(crate) db: i64,
    pub(crate) client: Client,
    connection: ConnectionManager,
    prefix: String,
    acquire: Script,
    release: Script,
    refresh: Script,
    remaining: Script,
    raise_fence: Script,
}

/// Milliseconds for `PX`/`PEXPIRE`, rounded *up*: the server must never expire a lease before
/// the holder believes it ends.
pub(crate) fn millis_ceil(ttl: Duration) -> u64 {
    let millis = ttl.as_millis();
    let rounded = if ttl > Duration::from_millis(millis as u64) { millis + 1 } else { millis };
    rounded.max(1) as u64
}

impl Instance {
    /// Connects and loads every script. A server that refuses scripts fails here, with a
    /// clear error, before any lock is touched.
    pub(crate) async fn connect(url: &str, config: &RedisConfig) -> Result<Instance, LockError> {
        let client = Client::open(url).map_err(|e| LockError::Unavailable {
            message: format!("not a Redis URL {url:?}: {e}"),
            source: Some(Box::new(e)),
        })?;
        let info = client.get_connection_info();
        let db = info.redis_settings().db();
        let display = format!("redis://{}/{db}", info.addr());
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.response_timeout))
            .set_connection_timeout(Some(config.connect_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection = client.get_connection_manager_with_config(manager_config).await.map_err(|e| {
            LockError::Unavailable { message: format!("cannot connect to {display}: {e}"), source: Some(Box::new(e)) }
        })?;
        let instance = Instance {
            display,
            db,
            client,
            connection,
            prefix: config.key_prefix.clone(),
            acquire: Script::new(ACQUIRE),
            release: Script::new(RELEASE),
            refresh: Script::new(REFRESH),
            remaining: Script::new(REMAINING),
            raise_fence: Script::new(RAISE_FENCE),
        };
        for script in
            [&instance.acquire, &instance.release, &instance.refresh, &instance.remaining, &instance.raise_fence]
        {
            script.prepare_invoke().load_async(&mut instance.connection.clone()).await.map_err(|e| {
                LockError::Unavailable {
                    message: format!(
                        "{} refuses Lua scripts (SCRIPT LOAD failed: {e}); the Redis lockers need EVALSHA and SCRIPT",
                        instance.display
                    ),
                    source: Some(Box::new(e)),
                }
            })?;
        }
        Ok(instance)
    }

    /// The Redis key of a lock: `{prefix}{key}`, braces included, so that the lock and its
    /// fence key share a Cluster hash slot (a key that itself starts with `}` has an empty
    /// hash tag; on Cluster its two keys may then land in different slots and the script
    /// fails with CROSSSLOT — an error, never a wrong grant).
    pub(crate) fn lock_key(&self, key: &str) -> String {
        format!("{}{{{key}}}", self.prefix)
    }

    fn fence_key(&self, key: &str) -> String {
        format!("{}{{{key}}}:fence", self.prefix)
    }

    pub(crate) async fn try_grant(&self, key: &str, token: OwnerToken, ttl: Duration) -> Result<Attempt, LockError> {
        let reply: (i64, i64) = self
            .acquire
            .key(self.lock_key(key))
            .key(self.fence_key(key))
            .arg(token.to_string())
            .arg(millis_ceil(ttl))
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| self.error("acquire", true, e))?;
        match reply {
            (1, fence) if fence > 0 => Ok(Attempt::Granted(fence as u64)),
            (0, pttl) if pttl >= 0 => Ok(Attempt::Held(Some(Duration::from_millis(pttl as u64)))),
            // -1: a key without expiry (not ours; someone set it by hand); -2: it vanished
            // between SET and PTTL, which a script cannot see happen.
            (0, _) => Ok(Attempt::Held(None)),
            other => Err(LockError::Protocol(format!("{}: acquire script answered {other:?}", self.display))),
        }
    }

    pub(crate) async fn release(&self, key: &str, token: OwnerToken) -> Result<bool, LockError> {
        let deleted: i64 = self
            .release
            .key(self.lock_key(key))
            .arg(token.to_string())
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| self.error("release", true, e))?;
        Ok(deleted == 1)
    }

    pub(crate) async fn refresh(&self, key: &str, token: OwnerToken, ttl: Duration) -> Result<bool, LockError> {
        let extended: i64 = self
            .refresh
            .key(self.lock_key(key))
            .arg(token.to_string())
            .arg(millis_ceil(ttl))
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| self.error("refresh", true, e))?;
        Ok(extended == 1)
    }

    pub(crate) async fn remaining(&self, key: &str, token: OwnerToken) -> Result<Option<Duration>, LockError> {
        let pttl: i64 = self
            .remaining
            .key(self.lock_key(key))
            .arg(token.to_string())
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| self.error("remaining_ttl", false, e))?;
        Ok((pttl >= 0).then(|| Duration::from_millis(pttl as u64)))
    }

    /// Raises the key's fence counter to at least `floor` while `token` holds the lock;
    /// `false` if it no longer does.
    pub(crate) async fn raise_fence(&self, key: &str, token: OwnerToken, floor: u64) -> Result<bool, LockError> {
        let raised: i64 = self
            .raise_fence
            .key(self.lock_key(key))
            .key(self.fence_key(key))
            .arg(token.to_string())
            .arg(floor)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| self.error("acquire", true, e))?;
        Ok(raised == 1)
    }

    /// Makes sure the server publishes `del` and `expired` key-event notifications, enabling
    /// them when `enable` allows. `Err` says why waiters must poll instead.
    pub(crate) async fn ensure_keyspace_events(&self, enable: bool) -> Result<(), String> {
        let mut connection = self.connection.clone();
        let current: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query_async(&mut connection)
            .await
            .map_err(|e| format!("{} does not let us read notify-keyspace-events ({e})", self.display))?;
        let flags = current.get(1).cloned().unwrap_or_default();
        let missing = missing_event_flags(&flags);
        if missing.is_empty() {
            return Ok(());
        }
        if !enable {
            return Err(format!(
                "{} has notify-keyspace-events={flags:?}; the lockers need \"Egx\" and were told not to change it",
                self.display
            ));
        }
        let wanted = format!("{flags}{missing}");
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg(&wanted)
            .query_async::<()>(&mut connection)
            .await
            .map_err(|e| format!("{} refused CONFIG SET notify-keyspace-events {wanted} ({e})", self.display))
    }

    /// `PING`, for readiness checks and the benchmark floor.
    pub(crate) async fn ping(&self) -> Result<(), LockError> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.connection.clone())
            .await
            .map(drop)
            .map_err(|e| self.error("ping", false, e))
    }

    /// Maps a Redis error onto the outcome it implies. A refused connection or a server error
    /// reply means nothing happened; a timeout or a dropped connection after a mutating
    /// request was sent means nobody knows.
    fn error(&self, operation: &'static str, mutating: bool, error: RedisError) -> LockError {
        let message = format!("{}: {error}", self.display);
        if error.is_connection_refusal() {
            LockError::Unavailable { message, source: Some(Box::new(error)) }
        } else if error.is_timeout() || error.is_io_error() || error.is_connection_dropped() {
            if mutating {
                LockError::Indeterminate { operation, message, source: Some(Box::new(error)) }
            } else {
                LockError::Unavailable { message, source: Some(Box::new(error)) }
            }
        } else if matches!(error.kind(), redis::ErrorKind::Server(_)) || error.code().is_some() {
            LockError::Unavailable {
                message: format!("{} refused {operation}: {error}", self.display),
                source: Some(Box::new(error)),
            }
        } else {
            LockError::Protocol(message)
        }
    }
}

/// The `notify-keyspace-events` flags the lockers need that `flags` lacks: `E` (key-event
/// channels), `g` (`del`) and `x` (`expired`); `A` stands for every type, `g` and `x` included.
pub(crate) fn missing_event_flags(flags: &str) -> String {
    let mut missing = String::new();
    if !flags.contains('E') {
        missing.push('E');
    }
    if !flags.contains('A') {
        for flag in ['g', 'x'] {
            if !flags.contains(flag) {
                missing.push(flag);
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_milliseconds() {
        assert_eq!(millis_ceil(Duration::from_millis(1)), 1);
        assert_eq!(millis_ceil(Duration::from_micros(1500)), 2);
        assert_eq!(millis_ceil(Duration::from_secs(2)), 2000);
    }

    #[test]
    fn event_flags_needed_for_wakeups() {
        assert_eq!(missing_event_flags(""), "Egx");
        assert_eq!(missing_event_flags("KA"), "E");
        assert_eq!(missing_event_flags("Ex"), "g");
        assert_eq!(missing_event_flags("AKE"), "");
        assert_eq!(missing_event_flags("Egx"), "");
    }
}
