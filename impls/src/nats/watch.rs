//! One watch of the whole bucket per locker, dispatched to waiters by key.
//!
//! A waiter must learn of every release that happens after its failed try. A KV watch per
//! acquire does that, but costs a consumer create (a JetStream API round trip, more in a
//! cluster) before every wait, and leaves one consumer per waiter on the stream, each of
//! which the server must feed. Instead, every locker starts one push
//! consumer for the locker on the bucket's whole subject space: new messages only, headers
//! only (a lease's value is of no use to a waiter), no acks. Every message it delivers sets
//! the key's [`View`]: `Held` for a lease entry, `Freed` for a delete, purge or expiry
//! marker, each with the message's revision. A waiter subscribes to its key's view (a
//! `tokio::sync::watch` channel, no round trip) *before* it tries, and is woken by every
//! later change.
//!
//! # Why no wake-up is lost
//!
//! JetStream delivers a consumer's messages in stream order, each stamped with a consumer
//! sequence that counts deliveries without gaps. The watch checks that sequence (and the
//! last one the server's idle heartbeats report): on a gap, a missed heartbeat (the consumer
//! or the connection is gone — a server restart, a stream leader moving), or any status it
//! does not know, it drops the consumer and opens a new one. Messages stored in between are
//! not delivered to the new one, so once it exists every key's view is reset to
//! [`View::Unknown`], which wakes every waiter to try again: a release before that retry is
//! seen by the retry, one after it is delivered. The same reset follows the very first
//! consumer create, so a waiter that subscribed while the watch was starting also retries
//! once the watch is live.
//!
//! A view is only ever set from this ordered delivery, so a waiter may act on it without a
//! round trip: `Held(r)` means a release of `r` has not been delivered *yet* and will be,
//! `Freed(t)` means a create expecting revision `t` may well succeed (and if it conflicts,
//! whatever replaced `t` is later in the stream, so it will be delivered too).
//!
//! The price: a locker receives a small headers-only notice of every write to the bucket
//! for as long as it lives.
//!
//! # The queue and hand-offs
//!
//! The same delivery carries the waiters' queue entries (`<key>.q.<owner>`, see the parent
//! module) and the owner of every lease entry (the `Lockcheck-Owner` header). The watch
//! keeps each key's queue in stream order, so a holder knows, without a round trip, whom to
//! hand its lease to ([`BucketWatch::next_in_line`]); and it routes a lease entry that
//! names one of this locker's waiting owners to that waiter ([`BucketWatch::register`]). A
//! lease entry naming an owner removes that owner from the key's queue in every locker's
//! view at the same point of the stream, so no holder can name a waiter that was already
//! served. A lease handed to an owner of this locker that no longer waits (it was cancelled
//! or timed out, and the holder's view had not yet seen it withdraw) is passed on at once
//! ([`Unwanted`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::LockError;
use crate::lease::OwnerToken;

use super::{DEADLINE_HEADER, HAND_OFF_HEADER, OWNER_HEADER, QUEUE_INFIX, TTL_HEADER};

/// The consumer's idle heartbeat. Three missed in a row mean the consumer (or the
/// connection) is gone.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long the server keeps the consumer after this locker stops listening.
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(10);

/// Past this many keys with a view, keys nobody waits on are forgotten (their view becomes
/// `Unknown`, which costs one read the next time someone waits on them).
const VIEWED_KEYS: usize = 4096;

/// What the watch last delivered for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum View {
    /// Nothing delivered since the watch (re)started: ask the server.
    Unknown,
    /// The key's last message is a lease entry (a grant or a refresh) at this revision.
    Held(u64),
    /// The key's last message is a delete, purge or expiry marker at this revision.
    Freed(u64),
}

/// A waiter in a key's queue, as its queue entry announced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Queued {
    pub(super) owner: OwnerToken,
    /// The revision of the queue entry: the queue's order.
    pub(super) revision: u64,
    /// The TTL the waiter asked for: the lease it is handed has it.
    pub(super) ttl: Duration,
    /// When the waiter stops waiting, by the wall clock (ms since the Unix epoch).
    pub(super) deadline_ms: u64,
}

/// What the watch knows of one key.
struct KeyState {
    view: watch::Sender<View>,
    /// Waiters in stream order.
    queue: Vec<Queued>,
}

impl KeyState {
    fn new(view: View) -> Self {
        KeyState { view: watch::channel(view).0, queue: Vec::new() }
    }

    /// Kept when keys are forgotten: someone here waits on it, or a holder here may need
    /// its queue.
    fn in_use(&self) -> bool {
        self.view.receiver_count() > 0 || !self.queue.is_empty()
    }
}

impl View {
    /// The revision the view reports (0: none).
    fn revision(self) -> u64 {
        match self {
            View::Unknown => 0,
            View::Held(revision) | View::Freed(revision) => revision,
        }
    }
}

/// Whom a lease entry names.
#[derive(Clone, Copy, Debug)]
pub(super) enum Named {
    /// A holder that created or refreshed its lease.
    Holder(OwnerToken),
    /// A waiter a holder handed its lease to (the entry has the hand-off header).
    HandedTo(OwnerToken),
}

/// Removes `owner` from `queue`, and every entry queued before it: a holder hands its lease
/// to the first waiter in its view, so those were served or withdrew (their entries are gone
/// from the stream) or are the holder itself.
fn served(queue: &mut Vec<Queued>, owner: OwnerToken) {
    if let Some(at) = queue.iter().position(|queued| queued.owner == owner) {
        queue.drain(..=at);
    }
}

/// The per-key views and queues, shared by the watch's task, the waiters and the holders.
#[derive(Default)]
struct Views {
    keys: Mutex<HashMap<String, KeyState>>,
}

impl Views {
    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, KeyState>> {
        // Only inserts, removals and channel sends happen under this lock.
        self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn subscribe(&self, encoded_key: &str) -> watch::Receiver<View> {
        let mut keys = self.keys();
        if let Some(state) = keys.get(encoded_key) {
            return state.view.subscribe();
        }
        if keys.len() >= VIEWED_KEYS {
            keys.retain(|_, state| state.in_use());
        }
        let state = KeyState::new(View::Unknown);
        let receiver = state.view.subscribe();
        keys.insert(encoded_key.to_owned(), state);
        receiver
    }

    /// The key's state, created if there is room for it.
    fn with_key(&self, encoded_key: &str, update: impl FnOnce(&mut KeyState)) {
        let mut keys = self.keys();
        if !keys.contains_key(encoded_key) {
            if keys.len() >= VIEWED_KEYS {
                keys.retain(|_, state| state.in_use());
                if keys.len() >= VIEWED_KEYS {
                    return;
                }
            }
            keys.insert(encoded_key.to_owned(), KeyState::new(View::Unknown));
        }
        if let Some(state) = keys.get_mut(encoded_key) {
            update(state);
        }
    }

    /// A lease entry (naming `owner`, if it says) or a removal of the key. Views only move
    /// forward: this locker also reports its own writes as soon as they are stored, before
    /// the watch delivers them.
    fn observe(&self, encoded_key: &str, view: View, owner: Option<Named>) {
        self.with_key(encoded_key, |state| {
            state.view.send_if_modified(|current| {
                let newer = view.revision() > current.revision();
                if newer {
                    *current = view;
                }
                newer
            });
            match owner {
                Some(Named::HandedTo(owner)) => served(&mut state.queue, owner),
                Some(Named::Holder(owner)) => state.queue.retain(|queued| queued.owner != owner),
                None => {}
            }
        });
    }

    fn enqueue(&self, encoded_key: &str, queued: Queued) {
        self.with_key(encoded_key, |state| {
            state.queue.retain(|other| other.owner != queued.owner);
            state.queue.push(queued);
        });
    }

    /// Removes a waiter whose entry was withdrawn or expired.
    fn dequeue(&self, encoded_key: &str, owner: OwnerToken) {
        if let Some(state) = self.keys().get_mut(encoded_key) {
            state.queue.retain(|queued| queued.owner != owner);
        }
    }

    /// The longest-waiting owner other than `except` whose wait has not ended.
    fn next_in_line(&self, encoded_key: &str, except: OwnerToken) -> Option<Queued> {
        let now_ms = unix_ms(SystemTime::now());
        let keys = self.keys();
        keys.get(encoded_key)?
            .queue
            .iter()
            .find(|queued| queued.owner != except && queued.deadline_ms > now_ms)
            .copied()
    }

    /// Forgets every view and queue and wakes every waiter: what happened before now may not
    /// have been delivered.
    fn reset(&self) {
        for state in self.keys().values_mut() {
            state.queue.clear();
            state.view.send_replace(View::Unknown);
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(super) fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

/// A lease handed to an owner of this locker that no longer waits for it: the locker passes
/// it on (or frees it) at this revision.
#[derive(Debug)]
pub(super) struct Unwanted {
    pub(super) encoded_key: String,
    pub(super) owner: OwnerToken,
    pub(super) revision: u64,
}

/// How long an owner that stopped waiting is remembered, so that a lease handed to it late
/// is passed on rather than left to expire. Far longer than any view lags behind.
const RETIRED_FOR: Duration = Duration::from_secs(120);

/// This locker's waiting owners, and those that stopped waiting.
struct Waiters {
    /// Owners waiting for a hand-off; the revision of the lease entry naming them is sent.
    pending: HashMap<OwnerToken, oneshot::Sender<u64>>,
    /// Owners that stopped waiting, until when they are remembered.
    retired: HashMap<OwnerToken, Instant>,
    unwanted: mpsc::UnboundedSender<Unwanted>,
}

impl Waiters {
    fn granted(&mut self, encoded_key: &str, owner: OwnerToken, revision: u64) {
        let unwanted = match self.pending.remove(&owner) {
            Some(waiter) => waiter.send(revision).is_err(),
            None => self.retired.contains_key(&owner),
        };
        if unwanted {
            let _ = self.unwanted.send(Unwanted { encoded_key: encoded_key.to_owned(), owner, revision });
        }
    }

    fn retire(&mut self, owner: OwnerToken) {
        let now = Instant::now();
        if self.retired.len() >= VIEWED_KEYS {
            self.retired.retain(|_, until| *until > now);
        }
        self.retired.insert(owner, now + RETIRED_FOR);
    }
}

/// A registered waiter's end of the hand-off channel; see [`BucketWatch::register`].
pub(super) struct Turn {
    pub(super) owner: OwnerToken,
    pub(super) granted: oneshot::Receiver<u64>,
    /// The waiter took a lease handed to it: its queue entry is spent.
    pub(super) taken: bool,
}

/// Where the watch reads from.
#[derive(Clone)]
struct Source {
    js: jetstream::Context,
    stream: String,
    /// `$KV.<bucket>.`: the subjects' prefix before the encoded key.
    prefix: String,
}

/// A locker's watch of its bucket, started when the locker connects.
pub(super) struct BucketWatch {
    source: Source,
    views: Arc<Views>,
    waiters: Arc<Mutex<Waiters>>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for BucketWatch {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().take() {
            task.abort();
        }
    }
}

impl BucketWatch {
    /// The watch, and where it reports leases handed to owners of this locker that no
    /// longer wait.
    pub(super) fn new(
        js: jetstream::Context,
        stream: String,
        prefix: String,
    ) -> (Self, mpsc::UnboundedReceiver<Unwanted>) {
        let (unwanted, unwanted_receiver) = mpsc::unbounded_channel();
        let waiters = Waiters { pending: HashMap::new(), retired: HashMap::new(), unwanted };
        let watch = BucketWatch {
            source: Source { js, stream, prefix },
            views: Arc::default(),
            waiters: Arc::new(Mutex::new(waiters)),
            task: tokio::sync::Mutex::new(None),
        };
        (watch, unwanted_receiver)
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        lock_waiters(&self.waiters)
    }

    /// Registers `owner` as waiting: a lease entry naming it is sent to the returned turn.
    /// Register before the queue entry is published.
    pub(super) fn register(&self, owner: OwnerToken) -> Turn {
        let (sender, granted) = oneshot::channel();
        self.waiters().pending.insert(owner, sender);
        Turn { owner, granted, taken: false }
    }

    /// `owner` stops waiting (granted or not). A lease handed to it from now on is passed
    /// on; one already handed to it and not taken is returned, for the caller to pass on.
    pub(super) fn withdraw(&self, turn: &mut Turn) -> Option<u64> {
        let mut waiters = self.waiters();
        waiters.pending.remove(&turn.owner);
        // Taken or not: a watch that missed the hand-off (it delivers only a key's latest
        // message, see `observe_own`) may still show this owner queued, and name it again.
        waiters.retire(turn.owner);
        drop(waiters);
        // Closed first: a grant sent after this fails, and the watch reports it unwanted.
        turn.granted.close();
        turn.granted.try_recv().ok()
    }

    /// Reports a lease handed to an owner that no longer waits (found by its waiter).
    pub(super) fn unwanted(&self, unwanted: Unwanted) {
        let _ = self.waiters().unwanted.send(unwanted);
    }

    /// The owner a holder of `encoded_key` other than `except` should hand it to.
    pub(super) fn next_in_line(&self, encoded_key: &str, except: OwnerToken) -> Option<Queued> {
        self.views.next_in_line(encoded_key, except)
    }

    /// This locker's own write to `encoded_key`, stored at the view's revision: a lease entry
    /// naming `owner`, or a removal. Reported at once, so that this locker's next acquire
    /// does not wait for the delivery of its own release.
    ///
    /// Also the cure for what the delivery cannot promise: a push consumer delivers a key's
    /// messages in order, but a message already replaced by a newer one of the same key
    /// (KV history 1) is skipped — so a watch that lags behind may never see a hand-off, and
    /// keep the served waiter queued. A holder that hands over removes the grantee here;
    /// the grantee's locker passes on a lease handed to it again ([`Unwanted`]).
    pub(super) fn observe_own(&self, encoded_key: &str, view: View, owner: Option<Named>) {
        self.views.observe(encoded_key, view, owner);
    }

    /// Starts the watch unless it runs; returns once its consumer exists. Fails if the first
    /// consumer cannot be created (later restarts retry on their own).
    pub(super) async fn start(&self) -> Result<(), LockError> {
        let mut task = self.task.lock().await;
        if task.as_ref().is_some_and(|task| !task.is_finished()) {
            return Ok(());
        }
        let delivery = Delivery::open(&self.source).await?;
        self.views.reset();
        let shared = Shared { views: self.views.clone(), waiters: self.waiters.clone() };
        *task = Some(tokio::spawn(run(self.source.clone(), shared, delivery)));
        Ok(())
    }

    /// A receiver of `encoded_key`'s view, its current value marked seen: subscribe before
    /// the try, then await `changed()`.
    pub(super) fn subscribe(&self, encoded_key: &str) -> watch::Receiver<View> {
        self.views.subscribe(encoded_key)
    }
}

fn lock_waiters(waiters: &Mutex<Waiters>) -> std::sync::MutexGuard<'_, Waiters> {
    // Only map inserts, removals and channel sends happen under this lock.
    waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the watch's task updates.
struct Shared {
    views: Arc<Views>,
    waiters: Arc<Mutex<Waiters>>,
}

fn header<T: std::str::FromStr>(headers: Option<&HeaderMap>, name: &str) -> Option<T> {
    headers?.get(name)?.as_str().parse().ok()
}

fn owner_header(headers: Option<&HeaderMap>) -> Option<OwnerToken> {
    let text = headers?.get(OWNER_HEADER)?.as_str().to_owned();
    u128::from_str_radix(&text, 16).ok().map(OwnerToken::from_bits)
}

/// One consumer and the subscription it pushes to.
struct Delivery {
    subscriber: async_nats::Subscriber,
    consumer: String,
    /// The consumer sequence of the last message received.
    delivered: u64,
}

impl Delivery {
    async fn open(source: &Source) -> Result<Delivery, LockError> {
        let unavailable = |what: &str, e: Box<dyn std::error::Error + Send + Sync>| LockError::Unavailable {
            message: format!("acquire: cannot watch the bucket ({what})"),
            source: Some(e),
        };
        let client = source.js.client();
        let inbox = client.new_inbox();
        // Subscribed before the consumer exists (same connection, so in this order at the
        // server): its first message cannot arrive unheard.
        let subscriber = client.subscribe(inbox.clone()).await.map_err(|e| unavailable("subscribe", Box::new(e)))?;
        let config = consumer::push::Config {
            deliver_subject: inbox,
            description: Some("lockcheck: wake-ups for one locker's waiters".to_owned()),
            filter_subject: format!("{}>", source.prefix),
            deliver_policy: consumer::DeliverPolicy::New,
            ack_policy: consumer::AckPolicy::None,
            replay_policy: consumer::ReplayPolicy::Instant,
            headers_only: true,
            idle_heartbeat: HEARTBEAT,
            inactive_threshold: INACTIVE_THRESHOLD,
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        };
        let consumer = source
            .js
            .create_consumer_on_stream(config, source.stream.as_str())
            .await
            .map_err(|e| unavailable("consumer create", Box::new(e)))?;
        Ok(Delivery { subscriber, consumer: consumer.cached_info().name.clone(), delivered: 0 })
    }

    /// Dispatches messages until the delivery breaks (see the module docs for when).
    async fn dispatch(&mut self, source: &Source, shared: &Shared) {
        use async_nats::header::{NATS_LAST_CONSUMER, NATS_MARKER_REASON};
        loop {
            let message = match tokio::time::timeout(HEARTBEAT * 3, self.subscriber.next()).await {
                Ok(Some(message)) => message,
                // Missed heartbeats, or the subscription ended.
                Err(_) | Ok(None) => return,
            };
            match message.status {
                None => {}
                Some(async_nats::StatusCode::IDLE_HEARTBEAT) => {
                    let last = message.headers.as_ref().and_then(|headers| headers.get(NATS_LAST_CONSUMER));
                    match last.map(|last| last.as_str().parse::<u64>()) {
                        Some(Ok(last)) if last == self.delivered => continue,
                        None => continue,
                        // A delivery this watch never received.
                        Some(_) => return,
                    }
                }
                Some(_) => return,
            }
            let message = jetstream::Message { message, context: source.js.clone() };
            let Ok(info) = message.info() else { return };
            if info.consumer_sequence != self.delivered + 1 {
                return;
            }
            self.delivered = info.consumer_sequence;
            let revision = info.stream_sequence;
            let Some(key) = message.subject.as_str().strip_prefix(source.prefix.as_str()) else { continue };
            let headers = message.headers.as_ref();
            let removed = headers.is_some_and(|headers| {
                headers.get("KV-Operation").is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE")
                    || headers.get(NATS_MARKER_REASON).is_some()
            });
            if let Some((lock_key, owner)) = key.split_once(QUEUE_INFIX) {
                let Ok(owner) = u128::from_str_radix(owner, 16).map(OwnerToken::from_bits) else { continue };
                if removed {
                    shared.views.dequeue(lock_key, owner);
                } else {
                    let ttl = header(headers, TTL_HEADER).map(Duration::from_millis);
                    let deadline_ms = header(headers, DEADLINE_HEADER);
                    let (Some(ttl), Some(deadline_ms)) = (ttl, deadline_ms) else { continue };
                    shared.views.enqueue(lock_key, Queued { owner, revision, ttl, deadline_ms });
                }
            } else if removed {
                shared.views.observe(key, View::Freed(revision), None);
            } else {
                let owner = owner_header(headers);
                let handed = headers.is_some_and(|headers| headers.get(HAND_OFF_HEADER).is_some());
                let named = owner.map(|owner| if handed { Named::HandedTo(owner) } else { Named::Holder(owner) });
                shared.views.observe(key, View::Held(revision), named);
                if let Some(owner) = owner {
                    lock_waiters(&shared.waiters).granted(key, owner, revision);
                }
            }
        }
    }

    fn close(self, source: &Source) {
        let (js, stream, consumer) = (source.js.clone(), source.stream.clone(), self.consumer);
        drop(self.subscriber);
        // Best effort: the server also removes it once inactive.
        tokio::spawn(async move {
            let _ = js.delete_consumer_from_stream(consumer, stream).await;
        });
    }
}

/// The watch's task: dispatch, and on any break open a new consumer and reset every view.
async fn run(source: Source, shared: Shared, mut delivery: Delivery) {
    let views = shared.views.clone();
    loop {
        delivery.dispatch(&source, &shared).await;
        delivery.close(&source);
        views.reset();
        let mut backoff = Duration::from_millis(50);
        delivery = loop {
            match Delivery::open(&source).await {
                Ok(delivery) => break delivery,
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        };
        views.reset();
    }
}
