//! Push wake-ups from Redis key-event notifications.
//!
//! One subscriber task per server listens on `__keyevent@<db>__:del` and
//! `__keyevent@<db>__:expired` — the database the locker uses, not database 0 (the Go
//! original's hard-coded `@0` never fires for a locker on another database) — and wakes the
//! waiters of the key named in each event.
//!
//! A waiter must never miss the release that happens between its failed try and its wait
//! (the lost wake-up). So it takes a `Notified` ticket *before* it tries; `notify_waiters`
//! wakes every ticket taken before the event, whether or not its owner is already asleep.
//! The subscription itself is live before the first acquire (connect waits for the
//! `SUBSCRIBE` confirmation), and when it drops, every waiter is woken to retry and falls back
//! to timed retries until it is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// The waiters of one locker, by Redis key.
pub(crate) struct Waiters {
    keys: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
    /// How many servers' subscriptions are live, out of `subscriptions`.
    live: AtomicUsize,
    subscriptions: usize,
}

/// A waiter's interest in one key, withdrawn on drop.
pub(crate) struct Interest {
    waiters: Arc<Waiters>,
    key: String,
    pub(crate) notify: Arc<Notify>,
}

impl Waiters {
    /// Waiters fed by `subscriptions` subscriber tasks (one per server).
    pub(crate) fn new(subscriptions: usize) -> Arc<Self> {
        Arc::new(Waiters { keys: Mutex::default(), live: AtomicUsize::new(0), subscriptions })
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<Notify>, usize)>> {
        self.keys.lock().expect("waiters map poisoned")
    }

    /// Registers interest in `redis_key` until the returned value is dropped.
    pub(crate) fn interest(self: &Arc<Self>, redis_key: &str) -> Interest {
        let mut keys = self.keys();
        let entry = keys.entry(redis_key.to_owned()).or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Interest { waiters: self.clone(), key: redis_key.to_owned(), notify: entry.0.clone() }
    }

    /// Whether every server's events reach us right now.
    pub(crate) fn events_live(&self) -> bool {
        self.live.load(Ordering::Acquire) == self.subscriptions
    }

    fn wake(&self, redis_key: &str) {
        if let Some((notify, _)) = self.keys().get(redis_key) {
            notify.notify_waiters();
        }
    }

    fn wake_all(&self) {
        for (notify, _) in self.keys().values() {
            notify.notify_waiters();
        }
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut keys = self.waiters.keys();
        if let Some(entry) = keys.get_mut(&self.key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                keys.remove(&self.key);
            }
        }
    }
}

/// A subscriber task, aborted when the locker is dropped.
pub(crate) struct Subscriber(JoinHandle<()>);

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Subscribes to `client`'s key events on `db` and feeds them to `waiters`, resubscribing
/// after a dropped connection. Returns once the first subscription is confirmed, or with the
/// reason it failed (the task keeps trying in the background either way).
pub(crate) async fn subscribe(
    client: redis::Client,
    db: i64,
    waiters: Arc<Waiters>,
) -> (Subscriber, Result<(), String>) {
    let (first_tx, first_rx) = oneshot::channel();
    let task = tokio::spawn(run(client, db, waiters, first_tx));
    let first = first_rx.await.unwrap_or_else(|_| Err("the subscriber task ended".to_owned()));
    (Subscriber(task), first)
}

async fn run(client: redis::Client, db: i64, waiters: Arc<Waiters>, first: oneshot::Sender<Result<(), String>>) {
    let mut first = Some(first);
    let mut backoff = Duration::from_millis(50);
    loop {
        match open(&client, db).await {
            Ok(mut messages) => {
                backoff = Duration::from_millis(50);
                waiters.live.fetch_add(1, Ordering::AcqRel);
                // Events may have been missed while we were down: everyone retries.
                waiters.wake_all();
                if let Some(first) = first.take() {
                    let _ = first.send(Ok(()));
                }
                while let Some(message) = messages.next().await {
                    if let Ok(key) = message.get_payload::<String>() {
                        waiters.wake(&key);
                    }
                }
                waiters.live.fetch_sub(1, Ordering::AcqRel);
                waiters.wake_all();
            }
            Err(error) => {
                if let Some(first) = first.take() {
                    let _ = first.send(Err(error));
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn open(client: &redis::Client, db: i64) -> Result<redis::aio::PubSubStream, String> {
    let mut pubsub =
        client.get_async_pubsub().await.map_err(|e| format!("cannot open a subscriber connection: {e}"))?;
    for event in ["del", "expired"] {
        pubsub
            .subscribe(format!("__keyevent@{db}__:{event}"))
            .await
            .map_err(|e| format!("SUBSCRIBE __keyevent@{db}__:{event} failed: {e}"))?;
    }
    Ok(pubsub.into_on_message())
}
