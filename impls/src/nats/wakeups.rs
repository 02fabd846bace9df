//! Push wake-ups for waiters: one waiter per release, whatever the queue length.
//!
//! The bucket's stream republishes the headers of every message it stores — a lease, a
//! release, the marker of an expired lease — on core NATS, at
//! `lockcheck.kv.<bucket>.<key>` ([`republish_for`]; the stream does this when it stores the
//! message, before the writer's acknowledgement goes out). A waiter subscribes to its key's
//! subject in the queue group [`WAITERS`], so NATS hands each notice to exactly **one** of
//! the key's waiters, across every locker: a release wakes one waiter, which creates the
//! key's entry — not a herd of creates of which all but one lose (with 64 waiters the herd
//! kept the server busy with 63 refused writes per hand-off). Subscribing costs no round
//! trip and no JetStream consumer: the server feeds nobody who does not wait.
//!
//! # Why no wake-up is lost
//!
//! 1. **Join before the look.** A waiter subscribes before the create that tells it the key
//!    is held. A subscription and a later publish on one connection reach the server in that
//!    order — and in a cluster, the subscription's interest travels between servers the way
//!    the create does, so the stream's server has it before it checks the create — so every
//!    message stored after that check is announced to the group, which includes the waiter.
//!    (A read that follows tells whether the key is held; one that finds a removal creates
//!    over it at once. The look itself must not be a read: a JetStream API request may
//!    overtake the interest between servers.)
//! 2. **Every removal notice is acted on.** The waiter that receives one creates over it.
//!    The create wins, or it loses to a later message, which was stored after the look and
//!    so was announced too: a lease (whose end will be announced) or another removal (which
//!    another waiter acts on).
//! 3. **A waiter that leaves without the lock passes the turn on.** A notice the server
//!    routed to it before its unsubscribe arrived would otherwise be lost with it. So it
//!    unsubscribes, and then — the same connection, so in this order at the server —
//!    publishes a [`Wake::Recheck`] notice to the group: one remaining waiter reads the key
//!    and takes it if it is free. A waiter that leaves with the lock drops nothing: every
//!    notice it had not read is of a revision its own create already followed.
//! 4. **Core NATS delivers at most once.** Notices in flight when a connection drops are
//!    lost, so a locker that reconnects has each of its waiters look again. And a waiter
//!    that has heard nothing for [`RECHECK_AFTER`] looks again on its own, for what no
//!    connection event reports (a clustered stream's leader changing hands between storing
//!    a message and republishing it). A grant found that way is counted
//!    ([`super::NatsStats::grants_after_recheck`]): every one is a wake-up that did not
//!    arrive, and a healthy run has none — the tests check that.
//!
//! # Hand-off by offer
//!
//! A release that frees the key and a create that takes it are two JetStream writes in a
//! row, with a notice between them. A holder that expects waiters (its locker found the key
//! held within the last second) first **offers** its lease to the queue group instead
//! ([`offer`]): a core NATS request, carrying the lease's revision, that NATS hands to one
//! waiter. That waiter rewrites the entry as its own lease *only if its last revision is
//! still the offered one* — one JetStream write, from holder to waiter, and the hand-off
//! costs a core message and that write instead of two writes and a notice. It answers
//! [`Offered::Taken`] once the write is stored, and only then does the holder's release
//! return: at that point the holder's entry is gone. The offer changes none of the rules
//! above, because whatever it does not settle falls back to them:
//!
//! * nobody in the group (no responders), a waiter that declines (its rewrite was refused:
//!   the lease had changed), or no answer within [`OFFER_TIMEOUT`] (a waiter that left or
//!   vanished with the offer): the holder purges as without an offer, revision-checked, and
//!   that purge is announced as every removal is. The rewrite and the purge both expect the
//!   offered revision, so exactly one of them can be stored.
//! * the taker's entry is a lease like any other: its end will be announced.
//! * a waiter leaving with offers it has received but not answered declines them (rule 3's
//!   pass-on does), so its holder does not wait out the timeout.
//!
//! Waiters are not served in arrival order (NATS picks a queue member at random), as before.

use std::time::Duration;

use async_nats::{Client, HeaderMap, Subject, Subscriber};
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;

use crate::LockError;

/// The queue group every waiter of a key joins.
pub(super) const WAITERS: &str = "lockcheck-waiters";

/// How long a waiter that has heard nothing waits before it looks at the key itself
/// (rule 4 of the module docs). Long enough that a healthy hand-off never gets there, short
/// enough that a lost notice costs a second, not the rest of the wait.
pub const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// The header of a notice that asks one waiter to look at the key again.
const RECHECK_HEADER: &str = "Lockcheck-Recheck";

/// The header of a holder's offer: the revision of the lease it hands over.
const OFFER_HEADER: &str = "Lockcheck-Offer";

/// How long a holder waits for the answer to its offer before it purges instead. A waiter
/// answers within one JetStream write; one that does not has left or vanished with the offer
/// (rare: a waiter that leaves declines what it holds), and this bounds what that costs the
/// release — the purge that follows hands the key on as without an offer.
pub const OFFER_TIMEOUT: Duration = Duration::from_millis(200);

/// The answer payloads of an offer.
const TAKEN: &str = "taken";
const DECLINED: &str = "declined";

/// The prefix of the subjects a bucket's messages are republished on.
pub(super) fn notice_prefix(bucket: &str) -> String {
    format!("lockcheck.kv.{bucket}.")
}

/// The stream republish rule that announces every message of `bucket` to its waiters.
pub(super) fn republish_for(bucket: &str) -> async_nats::jetstream::stream::Republish {
    async_nats::jetstream::stream::Republish {
        source: format!("$KV.{bucket}.>"),
        destination: format!("{}>", notice_prefix(bucket)),
        headers_only: true,
    }
}

/// What woke a waiter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Wake {
    /// The key was freed (a delete, purge or expiry marker) at this revision.
    Freed(u64),
    /// A notice may have been missed: look at the key again.
    Recheck,
    /// The holder of the lease at this revision offers it: take it over, and answer `reply`.
    Offered { revision: u64, reply: Subject },
}

/// What a republished (or passed-on) notice says, if it can wake a waiter: a lease entry
/// cannot, a removal or a recheck can.
fn wake_of(message: &async_nats::Message) -> Option<Wake> {
    let headers = message.headers.as_ref()?;
    if headers.get(RECHECK_HEADER).is_some() {
        return Some(Wake::Recheck);
    }
    if let Some(offered) = headers.get(OFFER_HEADER) {
        let revision = offered.as_str().parse().ok()?;
        return Some(Wake::Offered { revision, reply: message.reply.clone()? });
    }
    if super::entry::operation_of(headers) == async_nats::jetstream::kv::Operation::Put {
        return None;
    }
    let revision = headers.get(async_nats::header::NATS_SEQUENCE)?.as_str().parse().ok()?;
    Some(Wake::Freed(revision))
}

/// One waiter's membership of its key's queue group, from before its first look until it
/// has the lock or gives up. Dropped while waiting (a cancelled acquire), it passes the turn
/// on in a task of its own.
pub(super) struct Waiting {
    client: Client,
    subject: String,
    /// `None` once it has left.
    subscriber: Option<Subscriber>,
    /// Changes when the connection is re-established (see [`Reconnects`]).
    reconnects: watch::Receiver<u64>,
}

impl Waiting {
    /// Joins the waiters of `encoded_key`. Returns once the subscription is on its way to the
    /// server ahead of anything this connection sends later.
    pub(super) async fn join(
        client: &Client,
        bucket: &str,
        encoded_key: &str,
        reconnects: &Reconnects,
    ) -> Result<Waiting, LockError> {
        let subject = format!("{}{encoded_key}", notice_prefix(bucket));
        let subscriber =
            client.queue_subscribe(subject.clone(), WAITERS.to_owned()).await.map_err(|e| LockError::Unavailable {
                message: "acquire: cannot subscribe to wake-ups".to_owned(),
                source: Some(Box::new(e)),
            })?;
        let mut reconnects = reconnects.0.subscribe();
        reconnects.mark_unchanged();
        Ok(Waiting { client: client.clone(), subject, subscriber: Some(subscriber), reconnects })
    }

    /// The next notice that can wake this waiter.
    pub(super) async fn next(&mut self) -> Wake {
        let Some(subscriber) = self.subscriber.as_mut() else { return Wake::Recheck };
        loop {
            tokio::select! {
                message = subscriber.next() => match message {
                    Some(message) => {
                        if let Some(wake) = wake_of(&message) {
                            return wake;
                        }
                    }
                    // The connection is closed for good: nothing more will come (the caller's
                    // own recheck and wait bound still run).
                    None => std::future::pending::<()>().await,
                },
                changed = self.reconnects.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                    return Wake::Recheck;
                }
            }
        }
    }

    /// A notice that has already arrived, if any: lets a look that found the key changed act
    /// on what changed it instead of reading the key.
    pub(super) fn arrived(&mut self) -> Option<Wake> {
        let subscriber = self.subscriber.as_mut()?;
        while let Some(Some(message)) = subscriber.next().now_or_never() {
            if let Some(wake) = wake_of(&message) {
                return Some(wake);
            }
        }
        None
    }

    /// Leaves with the lock: unsubscribes, nothing to pass on (rule 3).
    pub(super) async fn granted(mut self) {
        if let Some(mut subscriber) = self.subscriber.take() {
            let _ = subscriber.unsubscribe().await;
        }
    }

    /// Leaves without the lock: unsubscribes, then passes the turn on (rule 3).
    pub(super) async fn give_up(mut self) {
        if let Some(subscriber) = self.subscriber.take() {
            pass_on(self.client.clone(), self.subject.clone(), subscriber).await;
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(subscriber) = self.subscriber.take() {
            crate::cleanup::spawn(pass_on(self.client.clone(), self.subject.clone(), subscriber));
        }
    }
}

async fn pass_on(client: Client, subject: String, mut subscriber: Subscriber) {
    // Unsubscribed first: the server handles the two in this order, so the notice goes to
    // another waiter, never back to this one.
    let _ = subscriber.unsubscribe().await;
    let mut headers = HeaderMap::new();
    headers.insert(RECHECK_HEADER, "1");
    let _ = client.publish_with_headers(subject, headers, Default::default()).await;
    // Offers that reached this waiter are declined, so their holders purge at once instead of
    // waiting out OFFER_TIMEOUT. (The subscription ends once the connection has dropped it.)
    let _ = tokio::time::timeout(OFFER_TIMEOUT, async {
        while let Some(message) = subscriber.next().await {
            if let Some(Wake::Offered { reply, .. }) = wake_of(&message) {
                answer(&client, reply, false).await;
            }
        }
    })
    .await;
}

/// How a holder's offer ended (see "Hand-off by offer" in the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Offered {
    /// A waiter took the lease over: the holder's entry is gone.
    Taken,
    /// Nobody waits, or the waiter it reached declined.
    Declined,
    /// No answer came within [`OFFER_TIMEOUT`]: the lease may or may not have been taken.
    Unanswered,
}

/// Offers the lease stored at `revision` to one of the key's waiters, and awaits the answer.
pub(super) async fn offer(client: &Client, bucket: &str, encoded_key: &str, revision: u64) -> Offered {
    let mut headers = HeaderMap::new();
    headers.insert(OFFER_HEADER, revision.to_string().as_str());
    let request = async_nats::Request::new().headers(headers).timeout(Some(OFFER_TIMEOUT));
    match client.send_request(format!("{}{encoded_key}", notice_prefix(bucket)), request).await {
        Ok(answer) if answer.payload.as_ref() == TAKEN.as_bytes() => Offered::Taken,
        Ok(_) => Offered::Declined,
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Offered::Declined,
        Err(_) => Offered::Unanswered,
    }
}

/// A waiter's answer to an offer: whether its take-over was stored.
pub(super) async fn answer(client: &Client, reply: Subject, taken: bool) {
    let _ = client.publish(reply, if taken { TAKEN } else { DECLINED }.into()).await;
}

/// Counts the connection's re-establishments, so that waiters look again after one (rule 4).
#[derive(Clone)]
pub(super) struct Reconnects(std::sync::Arc<watch::Sender<u64>>);

impl Reconnects {
    pub(super) fn new() -> Self {
        Reconnects(std::sync::Arc::new(watch::Sender::new(0)))
    }

    /// Call on every (re)connection of the client.
    pub(super) fn connected(&self) {
        self.0.send_modify(|count| *count += 1);
    }
}
