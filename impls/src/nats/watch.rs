//! One watch of the whole bucket per locker, dispatched to waiters by key.
//!
//! A waiter must learn of every release that happens after its failed try. A KV watch per
//! acquire does that, but costs a consumer create (a JetStream API round trip, more in a
//! cluster) before every wait, and leaves one consumer per waiter on the stream, each of
//! which the server must feed. Instead, the first acquire that has to wait starts one push
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
//! The price: a locker that has waited once receives a small headers-only notice of every
//! write to the bucket for as long as it lives.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::LockError;

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

/// The per-key views, shared by the watch's task and the waiters.
#[derive(Default)]
struct Views {
    keys: Mutex<HashMap<String, watch::Sender<View>>>,
}

impl Views {
    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<View>>> {
        // Only inserts, removals and channel sends happen under this lock.
        self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn subscribe(&self, encoded_key: &str) -> watch::Receiver<View> {
        let mut keys = self.keys();
        if let Some(sender) = keys.get(encoded_key) {
            return sender.subscribe();
        }
        if keys.len() >= VIEWED_KEYS {
            keys.retain(|_, sender| sender.receiver_count() > 0);
        }
        let (sender, receiver) = watch::channel(View::Unknown);
        keys.insert(encoded_key.to_owned(), sender);
        receiver
    }

    fn observe(&self, encoded_key: &str, view: View) {
        let mut keys = self.keys();
        if let Some(sender) = keys.get(encoded_key) {
            sender.send_replace(view);
            return;
        }
        if keys.len() >= VIEWED_KEYS {
            keys.retain(|_, sender| sender.receiver_count() > 0);
            if keys.len() >= VIEWED_KEYS {
                return;
            }
        }
        keys.insert(encoded_key.to_owned(), watch::channel(view).0);
    }

    /// Forgets every view and wakes every waiter: what happened before now may not have
    /// been delivered.
    fn reset(&self) {
        for sender in self.keys().values() {
            sender.send_replace(View::Unknown);
        }
    }
}

/// Where the watch reads from.
#[derive(Clone)]
struct Source {
    js: jetstream::Context,
    stream: String,
    /// `$KV.<bucket>.`: the subjects' prefix before the encoded key.
    prefix: String,
}

/// A locker's watch of its bucket, started by the first acquire that waits.
pub(super) struct BucketWatch {
    source: Source,
    views: Arc<Views>,
    running: AtomicBool,
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
    pub(super) fn new(js: jetstream::Context, stream: String, prefix: String) -> Self {
        BucketWatch {
            source: Source { js, stream, prefix },
            views: Arc::default(),
            running: AtomicBool::new(false),
            task: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether the watch has been started (it then keeps itself alive).
    pub(super) fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
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
        *task = Some(tokio::spawn(run(self.source.clone(), self.views.clone(), delivery)));
        self.running.store(true, Ordering::Release);
        Ok(())
    }

    /// A receiver of `encoded_key`'s view, its current value marked seen: subscribe before
    /// the try, then await `changed()`.
    pub(super) fn subscribe(&self, encoded_key: &str) -> watch::Receiver<View> {
        self.views.subscribe(encoded_key)
    }
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
    async fn dispatch(&mut self, source: &Source, views: &Views) {
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
            views.observe(key, if removed { View::Freed(revision) } else { View::Held(revision) });
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
async fn run(source: Source, views: Arc<Views>, mut delivery: Delivery) {
    loop {
        delivery.dispatch(&source, &views).await;
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
