//! One Redis server as the lockers see it: a reconnecting connection, the Lua scripts, the key
//! names, and the mapping of Redis errors onto [`LockError`]'s three outcomes.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, RedisError, Script};

use super::RedisConfig;
use crate::LockError;
use crate::OwnerToken;

/// Shared by the scripts that may free a lock: names the longest-waiting live waiter of the
/// key's queue (a sorted set scored by arrival) by publishing `n:<waiter id>:<lock key>` on
/// its locker's wake channel, so that one waiter — not every waiter — tries next. An entry is
/// `<deadline ms>:<waiter id>:<wake channel>`; entries whose waiter gave up (deadline passed,
/// by the server's clock) are dropped on the way. The named entry leaves the queue: a waiter
/// that then loses the race to a newcomer re-enters it with its old score. The waiter next in
/// line gets `w:<waiter id>:<lock key>`: it keeps watch, and tries after its fallback delay
/// unless it is named first — so a named waiter that died strands nobody for long, at the
/// cost of one more message per release, not one per waiter.
const NAME_HEAD: &str = r"
local function name_head(lock, queue)
  local now
  -- Bounded: a script must stay short; the rest of the dead entries go on later calls or
  -- with the queue key's expiry.
  for _ = 1, 64 do
    local head = redis.call('ZPOPMIN', queue)
    if head[1] == nil then return 0 end
    -- The clock only once someone waits: an uncontended release pays for one ZPOPMIN.
    if not now then
      local time = redis.call('TIME')
      now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
    end
    local deadline, id, channel = string.match(head[1], '^(%d+):(%x+):(.+)$')
    if deadline and tonumber(deadline) > now then
      -- The watch goes out first: Redis writes the replies of one event-loop turn last
      -- client first, so the naming leaves right after the releaser's own answer.
      local next = redis.call('ZRANGE', queue, 0, 0)[1]
      if next then
        local _, next_id, next_channel = string.match(next, '^(%d+):(%x+):(.+)$')
        if next_id then
          redis.call('PUBLISH', next_channel, 'w:' .. next_id .. ':' .. lock)
        end
      end
      redis.call('PUBLISH', channel, 'n:' .. id .. ':' .. lock)
      return 1
    end
  end
  return 0
end
";

/// Takes the lock and mints its fencing token in one atomic step, so no other grant can come
/// between the two. The fence key never expires and is never deleted: tokens stay monotonic
/// across releases (not across a restart without persistence). On a refused grant it returns
/// the holder's remaining time, so a waiter can retry the moment it ends even if the
/// `expired` event comes late (Redis expires keys lazily or in a 10 Hz sweep).
///
/// A waiter's try (ARGV[3..7] given) also, if refused, enters the key's waiter queue
/// (KEYS[3]) in the same step — so no release can come between the refusal and the entry —
/// and answers the entry and its score, which later tries pass back to keep their place. A
/// granted waiter's entry leaves the queue with the grant. The queue key expires a second
/// after the last deadline of its entries, so abandoned entries cannot pile up.
const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fence = redis.pcall('INCR', KEYS[2])
  if type(fence) == 'table' and fence.err then
    -- Leave nothing behind: a grant without a fencing token is no grant.
    redis.call('DEL', KEYS[1])
    return redis.error_reply(fence.err)
  end
  if ARGV[3] and ARGV[3] ~= '' then
    redis.call('ZREM', KEYS[3], ARGV[3])
  end
  return {1, fence}
end
local pttl = redis.call('PTTL', KEYS[1])
if not ARGV[5] then
  return {0, pttl}
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local entry, score = ARGV[3], ARGV[4]
if entry == '' then
  entry = string.format('%d:%s:%s', now + tonumber(ARGV[5]), ARGV[6], ARGV[7])
  score = string.format('%d', tonumber(time[1]) * 1000000 + tonumber(time[2]))
end
redis.call('ZADD', KEYS[3], 'NX', score, entry)
local keep = tonumber(string.match(entry, '^(%d+)')) - now + 1000
if keep > 0 and redis.call('PTTL', KEYS[3]) < keep then
  redis.call('PEXPIRE', KEYS[3], keep)
end
return {0, pttl, entry, score}
";

/// Deletes the lock only if the caller's token still holds it (never a successor's lock),
/// and names the next waiter (see [`NAME_HEAD`]).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  name_head(KEYS[1], KEYS[2])
  return 1
end
return 0
";

/// A waiter leaves the queue (it gave up, or its acquire was cancelled). If its entry was
/// already gone — most likely named by a release it will now never act on — and the lock is
/// free, the next waiter is named in its place, so a cancelled waiter strands nobody.
const WITHDRAW: &str = r"
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  return name_head(KEYS[1], KEYS[2])
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

/// The Redis key of a lock: `{prefix}{key}`, braces included, so that the lock, its fence
/// key ([`fence_key`]: the lock key plus `:fence`) and its queue key ([`queue_key`]: plus
/// `:waiters`) share a Cluster hash slot. Both extend the lock key, so all three have the
/// same hash tag (the text between the first `{` and the next `}`) whenever it is non-empty —
/// for every key that does not itself start with `}` (with a prefix without braces). For
/// those few the tag is empty, Cluster hashes the whole key, the keys may land in different
/// slots and the scripts fail with `CROSSSLOT`: an error, never a wrong grant. Their naming
/// is kept rather than changed, so that lockers of every version agree on every key.
pub(crate) fn lock_key(prefix: &str, key: &str) -> String {
    format!("{prefix}{{{key}}}")
}

/// The Redis key of a lock's fencing counter (see [`lock_key`]).
pub(crate) fn fence_key(prefix: &str, key: &str) -> String {
    format!("{}:fence", lock_key(prefix, key))
}

/// The Redis key of a lock's waiter queue (see [`lock_key`] and [`ACQUIRE`]); it extends the
/// lock key like the fence key, so all three share a Cluster hash slot.
pub(crate) fn queue_key(prefix: &str, key: &str) -> String {
    queue_of(&lock_key(prefix, key))
}

/// The queue key of the lock stored under `lock_key`.
fn queue_of(lock_key: &str) -> String {
    format!("{lock_key}:waiters")
}

/// A waiter's entry in a key's queue, as the server made it: passed back on later tries so
/// the waiter keeps its place, and used to withdraw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct QueueEntry {
    /// `<deadline ms>:<waiter id>:<wake channel>`.
    pub(crate) entry: String,
    /// Arrival, in microseconds of the server's clock.
    pub(crate) score: String,
}

/// How a waiter's try enters the key's queue if it is refused.
pub(crate) struct Enqueue {
    /// The entry of an earlier try, if any (then the rest only matters for a first entry).
    pub(crate) entry: Option<QueueEntry>,
    /// How long the waiter may still wait: the entry's deadline, counted by the server.
    pub(crate) wait: Duration,
    /// The waiter's id (hex), published on its wake channel when it is named.
    pub(crate) waiter: String,
    /// Its locker's wake channel on this server.
    pub(crate) channel: String,
}

/// The answer of one grant attempt on one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Granted, with this instance's fencing token.
    Granted(u64),
    /// Held by someone else.
    Held {
        /// The holder's remaining time, if the key has one.
        retry_in: Option<Duration>,
        /// The waiter's queue entry, if the try was to enter the queue.
        queued: Option<QueueEntry>,
    },
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
    withdraw: Script,
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
        let not_a_url = |e: RedisError| LockError::from(not_a_redis_url(url, &e));
        let info = url.into_connection_info().map_err(not_a_url)?;
        // No Nagle: a lock request is one small write, and a waiter's retry must not wait
        // for the acknowledgement of the previous one.
        let nodelay = info.tcp_settings().clone().set_nodelay(true);
        let client = Client::open(info.set_tcp_settings(nodelay)).map_err(not_a_url)?;
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
            release: Script::new(&format!("{NAME_HEAD}{RELEASE}")),
            withdraw: Script::new(&format!("{NAME_HEAD}{WITHDRAW}")),
            refresh: Script::new(REFRESH),
            remaining: Script::new(REMAINING),
            raise_fence: Script::new(RAISE_FENCE),
        };
        for script in [
            &instance.acquire,
            &instance.release,
            &instance.withdraw,
            &instance.refresh,
            &instance.remaining,
            &instance.raise_fence,
        ] {
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

    /// The Redis key of a lock on `key` (see [`lock_key`]).
    pub(crate) fn lock_key(&self, key: &str) -> String {
        lock_key(&self.prefix, key)
    }

    fn fence_key(&self, key: &str) -> String {
        fence_key(&self.prefix, key)
    }

    fn queue_key(&self, key: &str) -> String {
        queue_key(&self.prefix, key)
    }

    /// The wake channel of the locker whose id is `locker` on this server.
    pub(crate) fn wake_channel(&self, locker: &str) -> String {
        format!("{}wake:{locker}", self.prefix)
    }

    /// One grant attempt; if refused and `enqueue` says so, the waiter enters the key's queue
    /// in the same step.
    pub(crate) async fn try_grant(
        &self,
        key: &str,
        token: OwnerToken,
        ttl: Duration,
        enqueue: Option<Enqueue>,
    ) -> Result<Attempt, LockError> {
        let mut invocation = self.acquire.key(self.lock_key(key));
        invocation.key(self.fence_key(key)).key(self.queue_key(key)).arg(token.to_string()).arg(millis_ceil(ttl));
        if let Some(enqueue) = &enqueue {
            let (entry, score) = enqueue.entry.as_ref().map_or(("", ""), |queued| (&*queued.entry, &*queued.score));
            invocation.arg(entry).arg(score).arg(millis_ceil(enqueue.wait)).arg(&enqueue.waiter).arg(&enqueue.channel);
        }
        let reply: Vec<redis::Value> =
            invocation.invoke_async(&mut self.connection.clone()).await.map_err(|e| self.error("acquire", true, e))?;
        let unexpected = || LockError::Protocol(format!("{}: acquire script answered {reply:?}", self.display));
        let int = |at: usize| reply.get(at).and_then(|value| redis::from_redis_value_ref::<i64>(value).ok());
        let text = |at: usize| reply.get(at).and_then(|value| redis::from_redis_value_ref::<String>(value).ok());
        match (int(0), int(1)) {
            (Some(1), Some(fence)) if fence > 0 => Ok(Attempt::Granted(fence as u64)),
            (Some(0), Some(pttl)) => {
                // -1: a key without expiry (not ours; someone set it by hand); -2: it vanished
                // between SET and PTTL, which a script cannot see happen.
                let retry_in = (pttl >= 0).then(|| Duration::from_millis(pttl as u64));
                let queued = match (enqueue.is_some(), text(2), text(3)) {
                    (false, _, _) => None,
                    (true, Some(entry), Some(score)) => Some(QueueEntry { entry, score }),
                    (true, _, _) => return Err(unexpected()),
                };
                Ok(Attempt::Held { retry_in, queued })
            }
            _ => Err(unexpected()),
        }
    }

    pub(crate) async fn release(&self, key: &str, token: OwnerToken) -> Result<bool, LockError> {
        let deleted: i64 = self
            .release
            .key(self.lock_key(key))
            .key(self.queue_key(key))
            .arg(token.to_string())
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| self.error("release", true, e))?;
        Ok(deleted == 1)
    }

    /// Takes a waiter's entry out of the key's queue; if it had already been named while the
    /// lock is free, names the next waiter instead (see [`WITHDRAW`]).
    pub(crate) async fn withdraw(&self, key: &str, queued: &QueueEntry) -> Result<(), LockError> {
        self.withdraw_entry(&self.lock_key(key), &queued.entry).await
    }

    /// A release named a waiter of ours that no longer waits (its acquire ended before its
    /// entry could be withdrawn, or its entry was never known to it): if the lock is still
    /// free, the next waiter is named in its place.
    pub(crate) async fn pass_on(&self, lock_key: &str) -> Result<(), LockError> {
        self.withdraw_entry(lock_key, "").await
    }

    async fn withdraw_entry(&self, lock_key: &str, entry: &str) -> Result<(), LockError> {
        self.withdraw
            .key(lock_key)
            .key(queue_of(lock_key))
            .arg(entry)
            .invoke_async::<i64>(&mut self.connection.clone())
            .await
            .map(drop)
            .map_err(|e| self.error("withdraw", true, e))
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

    /// Makes sure the server publishes `del` and `expired` keyspace notifications (on each
    /// key's own channel), enabling them when `enable` allows. `Err` says why waiters must
    /// poll instead.
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
                "{} has notify-keyspace-events={flags:?}; the lockers need \"Kgx\" and were told not to change it",
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

/// The `notify-keyspace-events` flags the lockers need that `flags` lacks: `K` (keyspace
/// channels, one per key), `g` (`del`) and `x` (`expired`); `A` stands for every type, `g` and
/// `x` included.
pub(crate) fn missing_event_flags(flags: &str) -> String {
    let mut missing = String::new();
    if !flags.contains('K') {
        missing.push('K');
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

/// CRC16/XMODEM, Redis Cluster's key hash.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// The Redis Cluster slot (0–16383) of a key: the CRC16 of its `{tag}` if it has a non-empty
/// one, else of the whole key — what a cluster uses to place it, and what keeps a lock key and
/// its fence key on one node.
pub fn cluster_slot(key: &str) -> u16 {
    let tag = key
        .find('{')
        .and_then(|open| key[open + 1..].find('}').map(|close| &key[open + 1..open + 1 + close]))
        .filter(|tag| !tag.is_empty())
        .unwrap_or(key);
    crc16(tag.as_bytes()) % 16384
}

/// A URL the Redis client cannot parse is the caller's mistake, not an unreachable server.
pub(crate) fn not_a_redis_url(url: &str, error: &RedisError) -> crate::InvalidInput {
    crate::InvalidInput::Backend(format!("not a Redis URL {url:?}: {error}"))
}

/// Checks that `url` is a URL the Redis client accepts, without connecting.
pub fn check_url(url: &str) -> Result<(), crate::InvalidInput> {
    url.into_connection_info().map(drop).map_err(|error| not_a_redis_url(url, &error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(key: &str) -> u16 {
        cluster_slot(key)
    }

    #[test]
    fn ttl_rounds_up_to_whole_milliseconds() {
        assert_eq!(millis_ceil(Duration::from_millis(1)), 1);
        assert_eq!(millis_ceil(Duration::from_micros(1500)), 2);
        assert_eq!(millis_ceil(Duration::from_secs(2)), 2000);
    }

    #[test]
    fn lock_fence_and_queue_keys_hash_to_one_cluster_slot() {
        assert_eq!(crc16(b"123456789"), 0x31C3, "CRC16/XMODEM check value");
        // Examples from the Cluster specification.
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(slot("foo{{bar}}zap"), crc16(b"{bar") % 16384);
        let keys = ["orders", "a:b:c", "x}y", "with{braces}", "{", "{}", "ünï", "k", "a{b}c}d"];
        for prefix in ["lockcheck:", "", "app:v2:"] {
            for key in keys {
                let (lock, fence, queue) = (lock_key(prefix, key), fence_key(prefix, key), queue_key(prefix, key));
                assert!(fence.starts_with(&lock), "{fence} extends {lock}");
                assert!(queue.starts_with(&lock), "{queue} extends {lock}");
                assert_eq!(slot(&lock), slot(&fence), "{prefix:?} {key:?}: {lock} / {fence}");
                assert_eq!(slot(&lock), slot(&queue), "{prefix:?} {key:?}: {lock} / {queue}");
                // The tag is the key up to its first `}`: the same for every prefix.
                let tag = key.split('}').next().unwrap_or(key);
                assert_eq!(slot(&lock), crc16(tag.as_bytes()) % 16384, "{prefix:?} {key:?}");
            }
        }
        // The documented exception: a key that starts with `}` has an empty hash tag.
        let (lock, fence) = (lock_key("lockcheck:", "}x"), fence_key("lockcheck:", "}x"));
        assert_ne!(slot(&lock), slot(&fence), "if this holds now, update the lock_key docs");
    }

    #[test]
    fn event_flags_needed_for_wakeups() {
        assert_eq!(missing_event_flags(""), "Kgx");
        assert_eq!(missing_event_flags("KA"), "");
        assert_eq!(missing_event_flags("Kx"), "g");
        assert_eq!(missing_event_flags("AKE"), "");
        assert_eq!(missing_event_flags("Egx"), "K");
        assert_eq!(missing_event_flags("EA"), "K");
    }
}
