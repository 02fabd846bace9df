//! Push wake-ups: releases that name one waiter on its locker's wake channel, and (for the
//! multi-server lockers) keyspace notifications, subscribed per key while someone waits.
//!
//! Each locker keeps **one pub/sub connection per server**. On it, it always listens on its
//! own wake channel (`<prefix>wake:<locker id>`), where a release script publishes
//! `n:<waiter id>:<lock key>` to name the one waiter of this locker that should try next, and
//! `w:<waiter id>:<lock key>` to the waiter next in line (see the module docs of `redis`);
//! each wakes exactly that waiter, and a naming of a waiter that has gone is handed back to be
//! passed on. A release thus reaches one or two lockers, however many wait for the key.
//!
//! The multi-server lockers, which do not queue, also subscribe to
//! `__keyspace@<db>__:<lock key>` — the locker's own database, not database 0 (the Go
//! original's hard-coded `@0` never fires for a locker on another database) — only while at
//! least one of their waiters waits for that key (reference-counted; the subscription lingers
//! a second after the last waiter left, for the next one), and wake every waiter of the key
//! on its `del` and `expired` events. A locker whose keys nobody waits for receives nothing:
//! an uncontended acquire and release cost two round trips and no pub/sub traffic.
//! (Subscribing every locker to the database-wide `__keyevent@<db>__:del` channel instead
//! would make every release publish to every locker of the database.)
//!
//! A waiter must never miss the release that happens between its failed try and its wait
//! (the lost wake-up). So it registers its interest and waits until the server has
//! *confirmed* the subscription before its try ([`Waiters::register`]), and it takes a
//! `Notified` ticket before each try: `notify_waiters` wakes every ticket taken before the
//! event, whether or not its owner is already asleep. A naming is kept as a permit
//! (`notify_one`) for the one waiter it names.
//!
//! One task per server owns the subscription state: it reconciles the set of subscribed
//! channels with the set of keys that have waiters, one command at a time on one connection,
//! so an `UNSUBSCRIBE` for a key whose last waiter left can never overtake the `SUBSCRIBE` of a
//! waiter that arrived later. A key's subscription counts as confirmed only at a moment when
//! the server has acknowledged it and the wake channel, and the key still has waiters. When
//! the connection drops, every waiter is woken to retry and retries on a bounded backoff
//! (without queueing) until the task has reconnected and resubscribed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use super::instance::Instance;
use redis::aio::PubSubSink;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::QueuedCount;

/// The keyspace events that free a lock: a release (`DEL` in the release script) and an
/// expiry. Anything else on the key's channel (`expire` from a refresh) frees nothing.
const FREEING_EVENTS: [&[u8]; 2] = [b"del", b"expired"];

/// One key's waiters in one locker.
struct Entry {
    /// Woken when the key expired (and on a lost connection): every waiter retries.
    freed: Notify,
    /// Woken when the key was deleted (a release; keyspace channels only).
    released: Notify,
    /// Per server: whether its subscription to this key's channel (and the locker's wake
    /// channel) is confirmed.
    confirmed: watch::Sender<Vec<bool>>,
}

/// A key's entry and how many waiters hold an [`Interest`] in it.
struct Slot {
    entry: Arc<Entry>,
    count: usize,
    /// Since when nobody waits (`count` is 0): the subscription lingers for [`LINGER`].
    idle_since: Option<Instant>,
}

/// How long a key's subscription outlives its last waiter. A contended key's waiters come and
/// go with every hand-off; without the linger, each would pay a `SUBSCRIBE` round trip (and
/// its predecessor an `UNSUBSCRIBE`) before it could wait.
const LINGER: Duration = Duration::from_secs(1);

/// One server's subscription task: what it needs to know, and how to nudge it.
struct Server {
    db: i64,
    /// The locker's wake channel on this server: releases name our waiters there.
    wake_channel: String,
    /// Whether the task has a working connection (if not, waiters do not wait for
    /// confirmations that cannot come; they poll).
    connected: AtomicBool,
    /// Set when the keys with waiters changed: the task reconciles its subscriptions.
    dirty: Notify,
}

/// The waiters of one locker, by Redis key, and the subscription tasks that wake them.
pub(crate) struct Waiters {
    keys: Mutex<HashMap<String, Slot>>,
    /// The waiters of this locker by waiter id, woken when a release names them.
    named: Mutex<HashMap<String, Arc<Signals>>>,
    /// Whether waiters also need the keyspace channels of their keys (the multi-server
    /// lockers, which do not queue). The single-server locker's waiters queue and are woken
    /// through the wake channel only: a key's every release then reaches one locker, not
    /// every locker waiting for the key.
    key_channels: bool,
    servers: Vec<Server>,
    /// Whether key events can arrive at all (false: every waiter polls).
    push: bool,
    /// How long a waiter waits for its subscription to be confirmed before it polls instead.
    confirm_timeout: Duration,
    /// How many of this locker's acquires wait: their first try was refused, and they
    /// listen (and, on one server, queue) for the key (`Locker::queued`).
    waiting: QueuedCount,
}

/// A waiter's interest in one key, withdrawn on drop.
pub(crate) struct Interest {
    waiters: Arc<Waiters>,
    key: String,
    entry: Arc<Entry>,
    /// The waiter's own id, and what wakes it when a release names it.
    waiter: String,
    signals: Arc<Signals>,
}

/// What a release tells one waiter through its locker's wake channel.
#[derive(Default)]
struct Signals {
    /// Named: try now.
    named: Notify,
    /// Next in line after a naming: try after the fallback unless named first.
    watch: Notify,
}

impl Interest {
    /// Woken when the key expired, or when wake-ups may have been missed: retry now.
    pub(crate) fn freed(&self) -> &Notify {
        &self.entry.freed
    }

    /// Woken when the key was deleted by a release.
    pub(crate) fn released(&self) -> &Notify {
        &self.entry.released
    }

    /// Woken (with a stored permit, `notify_one`) when a release names this waiter.
    pub(crate) fn named(&self) -> &Notify {
        &self.signals.named
    }

    /// Woken (with a stored permit) when a release named the waiter just ahead of this one:
    /// if that one never takes the lock, this one should, after the fallback.
    pub(crate) fn watch(&self) -> &Notify {
        &self.signals.watch
    }

    /// This waiter's id, as its queue entries carry it.
    pub(crate) fn waiter(&self) -> &str {
        &self.waiter
    }

    /// The locker's wake channel on server `index`.
    pub(crate) fn wake_channel(&self, index: usize) -> &str {
        &self.waiters.servers[index].wake_channel
    }

    /// Whether every server's subscription to the key is confirmed right now: a release
    /// from now on wakes us.
    pub(crate) fn live(&self) -> bool {
        self.waiters.push && self.entry.confirmed.borrow().iter().all(|&confirmed| confirmed)
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        self.waiters.named().remove(&self.waiter);
        let mut keys = self.waiters.keys();
        if let Some(slot) = keys.get_mut(&self.key) {
            slot.count -= 1;
            if slot.count == 0 {
                // Unsubscribed later, by the server's task (never out of order), unless a
                // waiter comes back within the linger.
                slot.idle_since = Some(Instant::now());
            }
        }
    }
}

/// The subscription tasks of a locker, aborted when the locker is dropped.
pub(crate) struct Subscribers(Vec<JoinHandle<()>>);

impl Drop for Subscribers {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Why key events cannot wake waiters: the message of the polling fallback.
pub(crate) type NoEvents = String;

impl Waiters {
    /// How many of this locker's acquires wait for their key.
    pub(crate) fn waiting(&self) -> &QueuedCount {
        &self.waiting
    }

    /// Waiters that poll: no server publishes the events they would need.
    pub(crate) fn polling() -> Arc<Self> {
        Arc::new(Waiters {
            keys: Mutex::default(),
            named: Mutex::default(),
            key_channels: false,
            servers: Vec::new(),
            push: false,
            confirm_timeout: Duration::ZERO,
            waiting: QueuedCount::new(),
        })
    }

    /// Opens one pub/sub connection per server and starts its subscription task, which also
    /// listens on the locker's wake channel there. Fails, with the reason, if a first
    /// connection cannot be opened: the caller falls back to [`Waiters::polling`].
    pub(crate) async fn start(
        instances: &[Arc<Instance>],
        key_channels: bool,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<(Arc<Self>, Subscribers), NoEvents> {
        let mut connections = Vec::with_capacity(instances.len());
        for instance in instances {
            let db = instance.db;
            connections.push(open(&instance.client, connect_timeout).await.map_err(|e| format!("db {db}: {e}"))?);
        }
        let id = random_id();
        let waiters = Arc::new(Waiters {
            keys: Mutex::default(),
            named: Mutex::default(),
            key_channels,
            servers: instances
                .iter()
                .map(|instance| Server {
                    db: instance.db,
                    wake_channel: instance.wake_channel(&id),
                    connected: AtomicBool::new(true),
                    dirty: Notify::new(),
                })
                .collect(),
            push: true,
            confirm_timeout: response_timeout,
            waiting: QueuedCount::new(),
        });
        let tasks = instances
            .iter()
            .zip(connections)
            .enumerate()
            .map(|(index, (instance, connection))| {
                let task = Task {
                    waiters: waiters.clone(),
                    index,
                    instance: instance.clone(),
                    connect_timeout,
                    response_timeout,
                };
                tokio::spawn(task.run(connection))
            })
            .collect();
        Ok((waiters, Subscribers(tasks)))
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.keys.lock().expect("waiters map poisoned")
    }

    fn named(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Signals>>> {
        self.named.lock().expect("named waiters map poisoned")
    }

    /// Registers interest in `redis_key` until the returned value is dropped, and waits (at
    /// most `limit`, and at most the response timeout) until every server has confirmed the
    /// key's subscription. If it has not by then, [`Interest::live`] says so and the waiter
    /// polls.
    pub(crate) async fn register(self: &Arc<Self>, redis_key: &str, limit: Duration) -> Interest {
        let (interest, fresh) = {
            let mut keys = self.keys();
            let fresh = !keys.contains_key(redis_key);
            let slot = keys.entry(redis_key.to_owned()).or_insert_with(|| Slot {
                entry: Arc::new(Entry {
                    freed: Notify::new(),
                    released: Notify::new(),
                    confirmed: watch::Sender::new(vec![false; self.servers.len()]),
                }),
                count: 0,
                idle_since: None,
            });
            slot.count += 1;
            slot.idle_since = None;
            let waiter = random_id();
            let signals = Arc::new(Signals::default());
            self.named().insert(waiter.clone(), signals.clone());
            let interest = Interest {
                waiters: self.clone(),
                key: redis_key.to_owned(),
                entry: slot.entry.clone(),
                waiter,
                signals,
            };
            (interest, fresh)
        };
        if !self.push || !self.servers.iter().all(|server| server.connected.load(Ordering::Acquire)) {
            return interest;
        }
        if fresh {
            for server in &self.servers {
                server.dirty.notify_one();
            }
        }
        let mut confirmed = interest.entry.confirmed.subscribe();
        let all_confirmed = confirmed.wait_for(|servers| servers.iter().all(|&confirmed| confirmed));
        let _ = tokio::time::timeout(limit.min(self.confirm_timeout), all_confirmed).await;
        interest
    }

    /// Forgets the keys nobody has waited for during [`LINGER`]; true if there were any
    /// (their channels are then to be unsubscribed).
    fn reap(&self) -> bool {
        let now = Instant::now();
        let mut keys = self.keys();
        let before = keys.len();
        keys.retain(|_, slot| slot.idle_since.is_none_or(|idle| now - idle < LINGER));
        keys.len() != before
    }

    /// The channels server `index` must be subscribed to: the locker's wake channel, and the
    /// keyspace channels of the keys with waiters if the locker uses them.
    fn wanted_channels(&self, index: usize) -> HashSet<String> {
        self.wanted_in(index, &self.keys())
    }

    fn wanted_in(&self, index: usize, keys: &HashMap<String, Slot>) -> HashSet<String> {
        let server = &self.servers[index];
        let mut wanted: HashSet<String> =
            if self.key_channels { keys.keys().map(|key| channel(server.db, key)).collect() } else { HashSet::new() };
        wanted.insert(server.wake_channel.clone());
        wanted
    }

    /// Marks every key with waiters confirmed on server `index` if `subscribed` is exactly
    /// what they need (checked under the same lock, so no key can have come or gone in
    /// between); false if the set of keys changed since the caller looked.
    fn confirm(&self, index: usize, subscribed: &HashSet<String>) -> bool {
        let keys = self.keys();
        if self.wanted_in(index, &keys) != *subscribed {
            return false;
        }
        for slot in keys.values() {
            slot.entry.confirmed.send_if_modified(|servers| !std::mem::replace(&mut servers[index], true));
        }
        true
    }

    /// Server `index`'s subscriptions are gone: no key is confirmed there, and every waiter
    /// retries (a release may have been published while we were not listening).
    fn lost(&self, index: usize) {
        self.servers[index].connected.store(false, Ordering::Release);
        for slot in self.keys().values() {
            slot.entry.confirmed.send_if_modified(|servers| std::mem::replace(&mut servers[index], false));
            slot.entry.freed.notify_waiters();
        }
    }

    /// A message on one of server `index`'s channels: a release naming one of our waiters,
    /// or a keyspace event. A release that named a waiter of ours that no longer waits
    /// answers the lock key, to be passed on.
    fn on_message(&self, index: usize, message: &redis::Msg) -> Option<String> {
        let server = &self.servers[index];
        if message.get_channel_name() == server.wake_channel {
            let payload = String::from_utf8_lossy(message.get_payload_bytes());
            let (kind, rest) = payload.split_once(':')?;
            let (waiter, lock_key) = rest.split_once(':')?;
            let signals = self.named().get(waiter).cloned();
            return match (kind, signals) {
                ("n", Some(signals)) => {
                    signals.named.notify_one();
                    None
                }
                ("w", Some(signals)) => {
                    signals.watch.notify_one();
                    None
                }
                ("n", None) => Some(lock_key.to_owned()),
                _ => None,
            };
        }
        let event = message.get_payload_bytes();
        if !FREEING_EVENTS.contains(&event) {
            return None;
        }
        let prefix = channel(server.db, "");
        let key = message.get_channel_name().strip_prefix(prefix.as_str())?;
        if let Some(slot) = self.keys().get(key) {
            if event == b"del" {
                slot.entry.released.notify_waiters();
            } else {
                slot.entry.freed.notify_waiters();
            }
        }
        None
    }
}

/// 128 random bits in hex: ids (of lockers, of waiters) nobody else picks.
fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The keyspace channel of `redis_key` on database `db`.
fn channel(db: i64, redis_key: &str) -> String {
    format!("__keyspace@{db}__:{redis_key}")
}

async fn open(client: &redis::Client, timeout: Duration) -> Result<redis::aio::PubSub, String> {
    match tokio::time::timeout(timeout, client.get_async_pubsub()).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(e)) => Err(format!("cannot open a subscriber connection: {e}")),
        Err(_) => Err(format!("cannot open a subscriber connection within {timeout:?}")),
    }
}

/// One server's subscription task.
struct Task {
    waiters: Arc<Waiters>,
    index: usize,
    instance: Arc<Instance>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl Task {
    async fn run(self, first: redis::aio::PubSub) {
        let mut connection = Some(first);
        let mut backoff = Duration::from_millis(50);
        loop {
            let pubsub = match connection.take() {
                Some(pubsub) => pubsub,
                None => match open(&self.instance.client, self.connect_timeout).await {
                    Ok(pubsub) => {
                        backoff = Duration::from_millis(50);
                        pubsub
                    }
                    Err(_) => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                },
            };
            self.serve(pubsub).await;
            // The connection is gone, and with it every subscription.
            self.waiters.lost(self.index);
            tokio::time::sleep(backoff).await;
        }
    }

    /// Reconciles subscriptions and forwards messages until the connection fails.
    async fn serve(&self, pubsub: redis::aio::PubSub) {
        let (mut sink, mut messages) = pubsub.split();
        let mut subscribed = HashSet::new();
        self.waiters.servers[self.index].connected.store(true, Ordering::Release);
        // Whatever waiters registered before this connection existed need subscribing.
        self.waiters.servers[self.index].dirty.notify_one();
        let mut reaping = tokio::time::interval(LINGER);
        reaping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Wait for a change of the keys with waiters, forwarding messages meanwhile.
            loop {
                tokio::select! {
                    message = messages.next() => match message {
                        Some(message) => self.on_message(&message),
                        None => return,
                    },
                    () = self.waiters.servers[self.index].dirty.notified() => break,
                    _ = reaping.tick() => if self.waiters.reap() {
                        for server in &self.waiters.servers {
                            server.dirty.notify_one();
                        }
                    },
                }
            }
            // Reconcile, still forwarding messages: a wake-up for one key must not wait for
            // another key's subscription round trip.
            let reconcile = self.reconcile(&mut sink, &mut subscribed);
            tokio::pin!(reconcile);
            loop {
                tokio::select! {
                    biased;
                    message = messages.next() => match message {
                        Some(message) => self.on_message(&message),
                        None => return,
                    },
                    done = &mut reconcile => match done {
                        Ok(()) => break,
                        Err(()) => return,
                    },
                }
            }
        }
    }

    fn on_message(&self, message: &redis::Msg) {
        if let Some(lock_key) = self.waiters.on_message(self.index, message) {
            // Named a waiter that is gone: hand the wake-up on, off this task (which must keep
            // reading messages).
            let instance = self.instance.clone();
            tokio::spawn(async move {
                let _ = instance.pass_on(&lock_key).await;
            });
        }
    }

    /// Subscribes to the channels of keys with waiters and unsubscribes from the others, one
    /// command at a time, until a confirmed state matches the waiters; then marks their
    /// subscriptions confirmed. `Err` if the connection failed or did not answer in time.
    async fn reconcile(&self, sink: &mut PubSubSink, subscribed: &mut HashSet<String>) -> Result<(), ()> {
        loop {
            if self.waiters.confirm(self.index, subscribed) {
                return Ok(());
            }
            let wanted = self.waiters.wanted_channels(self.index);
            let stale: Vec<String> = subscribed.difference(&wanted).cloned().collect();
            let new: Vec<String> = wanted.difference(subscribed).cloned().collect();
            if !stale.is_empty() {
                self.command(sink.unsubscribe(&stale)).await?;
                for channel in &stale {
                    subscribed.remove(channel);
                }
            }
            if !new.is_empty() {
                self.command(sink.subscribe(&new)).await?;
                subscribed.extend(new);
            }
        }
    }

    async fn command(&self, command: impl Future<Output = redis::RedisResult<()>>) -> Result<(), ()> {
        match tokio::time::timeout(self.response_timeout, command).await {
            Ok(Ok(())) => Ok(()),
            // A refused or unanswered command leaves the connection's state unknown: start over.
            Ok(Err(error)) => {
                tracing::warn!("Redis key-event subscription failed ({error}); reconnecting");
                Err(())
            }
            Err(_) => Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_channels_name_the_database_and_the_key() {
        assert_eq!(channel(3, "lockcheck:{orders}"), "__keyspace@3__:lockcheck:{orders}");
    }

    /// Waiters for two servers (databases 1 and 2) whose tasks are not running.
    fn disconnected() -> Arc<Waiters> {
        let server = |db| Server {
            db,
            wake_channel: format!("lockcheck:wake:{db}"),
            connected: AtomicBool::new(false),
            dirty: Notify::new(),
        };
        Arc::new(Waiters {
            keys: Mutex::default(),
            named: Mutex::default(),
            key_channels: true,
            servers: vec![server(1), server(2)],
            push: true,
            confirm_timeout: Duration::from_secs(1),
            waiting: QueuedCount::new(),
        })
    }

    /// `channels` plus server `index`'s wake channel.
    fn with_wake(index: usize, channels: &[&str]) -> HashSet<String> {
        let mut set: HashSet<String> = channels.iter().map(|channel| (*channel).to_owned()).collect();
        set.insert(format!("lockcheck:wake:{}", index + 1));
        set
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscription_is_confirmed_only_when_it_matches_the_waiters() {
        let waiters = disconnected();
        // Disconnected servers: registering does not wait for a confirmation that cannot come.
        let first = waiters.register("lockcheck:{a}", Duration::from_secs(5)).await;
        assert!(!first.live(), "nothing is subscribed yet");
        assert_eq!(waiters.wanted_channels(1), with_wake(1, &["__keyspace@2__:lockcheck:{a}"]));
        assert!(!waiters.confirm(0, &HashSet::new()), "a key with a waiter is not subscribed");
        let on_first = with_wake(0, &["__keyspace@1__:lockcheck:{a}"]);
        let on_second = with_wake(1, &["__keyspace@2__:lockcheck:{a}"]);
        let without_wake = HashSet::from(["__keyspace@1__:lockcheck:{a}".to_owned()]);
        assert!(!waiters.confirm(0, &without_wake), "the wake channel is not subscribed");
        assert!(waiters.confirm(0, &on_first));
        assert!(!first.live(), "confirmed on one server of two");
        assert!(waiters.confirm(1, &on_second));
        assert!(first.live());
        // A second key: the old subscriptions no longer cover every waiter.
        let second = waiters.register("lockcheck:{b}", Duration::from_secs(5)).await;
        assert!(!waiters.confirm(0, &on_first));
        assert!(!second.live());
        // A lost connection unconfirms everything.
        waiters.lost(1);
        assert!(!first.live());
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscription_lingers_after_its_last_waiter_then_goes() {
        let waiters = disconnected();
        let interest = waiters.register("lockcheck:{a}", Duration::from_secs(5)).await;
        let subscribed = |index: usize| with_wake(index, &[&format!("__keyspace@{}__:lockcheck:{{a}}", index + 1)]);
        assert!(waiters.confirm(0, &subscribed(0)) && waiters.confirm(1, &subscribed(1)));
        drop(interest);
        assert!(!waiters.reap(), "kept for the linger");
        // A waiter that comes back within the linger finds its subscription confirmed.
        let again = waiters.register("lockcheck:{a}", Duration::from_secs(5)).await;
        assert!(again.live());
        drop(again);
        tokio::time::advance(LINGER).await;
        assert!(waiters.reap(), "gone after the linger");
        assert_eq!(waiters.wanted_channels(0), with_wake(0, &[]), "only the wake channel stays");
        assert!(waiters.confirm(0, &with_wake(0, &[])), "nothing else left to subscribe");
    }

    #[tokio::test(start_paused = true)]
    async fn queueing_waiters_need_only_the_wake_channel() {
        let mut waiters = Arc::into_inner(disconnected()).expect("not shared yet");
        waiters.key_channels = false;
        let waiters = Arc::new(waiters);
        let interest = waiters.register("lockcheck:{a}", Duration::from_secs(5)).await;
        assert_eq!(waiters.wanted_channels(0), with_wake(0, &[]), "no keyspace channel");
        assert!(!waiters.confirm(0, &HashSet::new()), "the wake channel is not subscribed");
        assert!(waiters.confirm(0, &with_wake(0, &[])) && waiters.confirm(1, &with_wake(1, &[])));
        assert!(interest.live(), "a naming now reaches the waiter");
    }

    /// A message as the server sends it on `channel`.
    fn message(channel: &str, payload: &str) -> redis::Msg {
        let value = redis::Value::Array(vec![
            redis::Value::BulkString(b"message".to_vec()),
            redis::Value::BulkString(channel.as_bytes().to_vec()),
            redis::Value::BulkString(payload.as_bytes().to_vec()),
        ]);
        redis::Msg::from_owned_value(value).expect("a pub/sub message")
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_wakes_only_the_waiter_it_names() {
        let waiters = disconnected();
        let (named, other) = (
            waiters.register("lockcheck:{a}", Duration::from_secs(5)).await,
            waiters.register("lockcheck:{a}", Duration::from_secs(5)).await,
        );
        assert_ne!(named.waiter(), other.waiter(), "every waiter has its own id");
        let (released, freed) = (other.released().notified(), other.freed().notified());
        tokio::pin!(released, freed);
        released.as_mut().enable();
        freed.as_mut().enable();
        // A release deletes the key (every waiter of the key hears it) and names one waiter.
        let wake = format!("n:{}:lockcheck:{{a}}", named.waiter());
        let watch = format!("w:{}:lockcheck:{{a}}", other.waiter());
        assert_eq!(waiters.on_message(0, &message("__keyspace@1__:lockcheck:{a}", "del")), None);
        assert_eq!(waiters.on_message(0, &message("lockcheck:wake:1", &wake)), None);
        assert_eq!(waiters.on_message(0, &message("lockcheck:wake:1", &watch)), None);
        assert!(futures::poll!(released.as_mut()).is_ready(), "the key's waiters hear of the release");
        assert!(futures::poll!(freed.as_mut()).is_pending(), "a release is not an expiry: no herd");
        assert!(futures::poll!(std::pin::pin!(named.named().notified())).is_ready(), "the named waiter is woken");
        assert!(futures::poll!(std::pin::pin!(other.named().notified())).is_pending(), "the other is not");
        assert!(futures::poll!(std::pin::pin!(other.watch().notified())).is_ready(), "the next in line watches");
        assert!(futures::poll!(std::pin::pin!(named.watch().notified())).is_pending());
        // An expiry wakes everyone.
        assert_eq!(waiters.on_message(0, &message("__keyspace@1__:lockcheck:{a}", "expired")), None);
        assert!(futures::poll!(freed.as_mut()).is_ready());
        // A waiter named after it left: the lock key comes back, to be passed on.
        let gone = named.waiter().to_owned();
        drop(named);
        let wake = format!("n:{gone}:lockcheck:{{a}}");
        assert_eq!(waiters.on_message(0, &message("lockcheck:wake:1", &wake)), Some("lockcheck:{a}".to_owned()));
    }

    #[test]
    fn only_freeing_events_wake() {
        assert!(FREEING_EVENTS.contains(&b"del".as_slice()));
        assert!(FREEING_EVENTS.contains(&b"expired".as_slice()));
        assert!(!FREEING_EVENTS.contains(&b"expire".as_slice()), "a refresh frees nothing");
    }
}
