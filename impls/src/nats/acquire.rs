//! Taking a key: the conditional create, the acquire loop around it, and the guards that
//! keep a cancelled acquire from leaving a grant behind.

use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{context::PublishAckFuture, kv};
use tokio::time::{Instant, sleep_until};

use super::Inner;
use super::entry::{encode_key, entry_value, server_ttl};
use super::stream::{Published, published};
use super::wakeups::{self, RECHECK_AFTER, Waiting, Wake};
use crate::cleanup;
use crate::{FencingToken, Lease, OwnerToken};
use crate::{InvalidInput, LockError};
use crate::{LeaseRequest, validate_wait};

/// What a create expects the key's last revision to be.
#[derive(Clone)]
pub(super) enum Expect {
    /// Nothing known: this locker's last release of the key, else no message at all.
    Guess,
    /// Read the key first: a try that already failed would fail again on a guess.
    Read,
    /// The revision of a removal a wake-up announced.
    Freed(u64),
    /// The revision of a lease its holder offered; the outcome is answered to `reply`.
    Offered { revision: u64, reply: async_nats::Subject },
}

impl From<Wake> for Expect {
    fn from(wake: Wake) -> Self {
        match wake {
            Wake::Freed(revision) => Expect::Freed(revision),
            Wake::Recheck => Expect::Read,
            Wake::Offered { revision, reply } => Expect::Offered { revision, reply },
        }
    }
}

/// The outcome of one look at a key.
pub(super) enum Attempt {
    Granted(Lease),
    /// Someone holds it.
    Held,
    /// The look was refused, and a wake-up that explains why had already arrived: act on it
    /// rather than read the key.
    Woken(Wake),
}

pub(super) fn check_request(request: &LeaseRequest) -> Result<(), LockError> {
    request.validate()?;
    if request.limit() != 1 {
        return Err(LockError::Unsupported { operation: "semaphores" });
    }
    if encode_key(request.key()).len() > 3 * crate::MAX_KEY_BYTES {
        // Unreachable with the shared key limit; kept so a change there is caught here.
        return Err(InvalidInput::Backend("key too long for a NATS subject".to_owned()).into());
    }
    Ok(())
}

impl Inner {
    /// One attempt to take a free key. `waiting`: the caller's membership of the key's
    /// waiters, joined before this attempt, so every later change of the key is announced to
    /// them (see [`wakeups`]).
    ///
    /// Cancel-safe: dropped while its create is on the wire, it leaves a task to await the
    /// answer and remove the entry if it was stored ([`PendingCreate`]); a create whose answer
    /// never comes is removed if it was stored (an indeterminate outcome).
    pub(super) async fn create(
        self: &Arc<Self>,
        request: &LeaseRequest,
        expect: Expect,
        mut waiting: Option<&mut Waiting>,
    ) -> Result<Attempt, LockError> {
        let joined = waiting.is_some();
        let owner = OwnerToken::random();
        let encoded = encode_key(request.key());
        let ttl = request.ttl();
        let mut offer = None;
        // What the key's last revision is expected to be, and whether that was learnt after
        // joining (then anything that replaced it has been announced to the waiters).
        let (mut expected, mut learnt_after_joining) = match expect {
            // Most keys are absent (expect 0), held, or last released by this locker; another
            // client's tombstone costs one extra read.
            Expect::Guess => (self.released().get(&encoded).copied().unwrap_or(0), false),
            Expect::Read => match self.entry("acquire", &encoded).await? {
                Some(entry) if entry.operation == kv::Operation::Put => return Ok(Attempt::Held),
                Some(tombstone) => (tombstone.revision, joined),
                None => (0, false),
            },
            Expect::Freed(revision) => (revision, joined),
            // Not "learnt after joining": the offer may be stale (its holder's lease replaced
            // before this waiter joined), so a refused take-over reads the key.
            Expect::Offered { revision, reply } => {
                offer = Some(reply);
                (revision, false)
            }
        };
        // Each conflict means the key changed under us; a key cannot churn forever between a
        // read and a write of the same client, but bound the loop rather than trust that.
        for _ in 0..16 {
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_TTL, server_ttl(ttl).as_secs().to_string().as_str());
            let answer_to = offer.take();
            let value = entry_value(owner, ttl, answer_to.as_ref().map(|_| expected));
            let sent_at = Instant::now();
            let ack = self.send_expecting("acquire", &encoded, expected, headers, value).await?;
            let ack = Some(ack.into_future());
            let pending =
                PendingCreate { inner: self, key: request.key(), encoded_key: &encoded, owner, ack, answer_to };
            let answer = pending.answer().await;
            match answer? {
                Published::Stored(revision) => {
                    self.remember(request.key(), owner, revision, sent_at + server_ttl(ttl));
                    let lease = Lease::new(request.key(), owner, FencingToken(revision), ttl, sent_at, 1);
                    return Ok(Attempt::Granted(lease));
                }
                // `expected` was the key's last revision after joining, and something later
                // replaced it: that was announced to the waiters (and whatever frees the key
                // after it will be). Wait instead of reading — after a hand-off every waiter
                // that lost a race lands here, and their reads would queue before the next one.
                Published::Conflict { last: Some(last) } if learnt_after_joining && last > expected => {
                    self.stats.creates_refused.fetch_add(1, Ordering::Relaxed);
                    return Ok(Attempt::Held);
                }
                Published::Conflict { last } => {
                    self.stats.creates_refused.fetch_add(1, Ordering::Relaxed);
                    // What changed the key may have been announced already (an arrival that
                    // raced a release finds the release's offer or notice waiting): acting on
                    // it is a look after joining too, and saves the read.
                    if let Some(wake) = waiting.as_deref_mut().and_then(Waiting::arrived) {
                        return Ok(Attempt::Woken(wake));
                    }
                    let entry = self.entry("acquire", &encoded).await?;
                    // The read shows what the create expected, yet the create was refused: a
                    // clustered stream's leader (whose refusal names no sequence) checks
                    // against the writes it has accepted, while reads show those it has
                    // applied. Another client's create is accepted and not applied yet: the
                    // key is being taken. (Under load this outlasted 16 read–write rounds in
                    // the cluster suite.)
                    let unapplied = last.is_none() && entry.as_ref().map_or(0, |entry| entry.revision) == expected;
                    match entry {
                        Some(entry) if entry.operation == kv::Operation::Put => return Ok(Attempt::Held),
                        _ if unapplied => return Ok(Attempt::Held),
                        Some(tombstone) => (expected, learnt_after_joining) = (tombstone.revision, joined),
                        None => (expected, learnt_after_joining) = (0, false),
                    }
                }
            }
        }
        Err(LockError::unavailable(format!("acquire: key {:?} kept changing between read and write", request.key())))
    }
}

impl Inner {
    /// [`Locker::try_acquire`](crate::Locker::try_acquire): one create on a guessed revision.
    pub(super) async fn try_acquire(self: &Arc<Self>, request: &LeaseRequest) -> Result<Option<Lease>, LockError> {
        check_request(request)?;
        Ok(match self.create(request, Expect::Guess, None).await? {
            Attempt::Granted(lease) => Some(lease),
            Attempt::Held | Attempt::Woken(_) => None,
        })
    }

    /// [`Locker::acquire`](crate::Locker::acquire): try, join the key's waiters, and create over each wake-up.
    pub(super) async fn acquire(self: &Arc<Self>, request: &LeaseRequest, wait: Duration) -> Result<Lease, LockError> {
        check_request(request)?;
        validate_wait(wait)?;
        let started = Instant::now();
        let deadline = started + wait;
        let timed_out = || LockError::TimedOut { waited: started.elapsed() };
        // The wait ran out with a create on the wire: the server may still store it (a frozen
        // or leaderless server answers late). Its guard removes such a grant when the answer
        // comes; to the history it is a time-out given up locally, not a refusal.
        let given_up = || LockError::TimedOutLocally { waited: started.elapsed() };
        let inner = self;
        let encoded = encode_key(request.key());
        // Most acquires find the key free: try before joining the waiters — unless the key
        // was found held a moment ago (see `Inner::found_held`).
        if !inner.is_contended(&encoded) {
            let first = tokio::select! {
                attempt = inner.create(request, Expect::Guess, None) => attempt?,
                () = sleep_until(deadline) => return Err(given_up()),
            };
            if let Attempt::Granted(lease) = first {
                return Ok(lease);
            }
            inner.note_found_held(&encoded);
        }
        let client = inner.js.client();
        let mut waiting = tokio::select! {
            joined = Waiting::join(&client, &inner.bucket, &encoded, &inner.reconnects) => joined?,
            () = sleep_until(deadline) => return Err(timed_out()),
        };
        // Joined: look again (the key may have been freed before the subscription), then
        // create over each removal announced to this waiter. The first look is a create, not
        // a read: a create travels to the stream the way the subscription's interest does, so
        // in a cluster the stream's server knows of this waiter before it checks the create
        // (rule 1 of `nats/wakeups.rs`). A read goes through the JetStream API, which may
        // overtake the interest on its way between servers: the cluster suite lost a wake-up
        // that way (the waiter read the lease, the release's notice found no interest yet).
        let mut expect = Expect::Guess;
        let mut after_silence = false;
        let mut counted = None;
        loop {
            // Biased: a wake-up in hand is tried before the deadline is looked at. A create
            // dropped on the wire is cleaned up by its guard, and a waiter that gives up passes
            // the turn on (`give_up`).
            let attempt = tokio::select! {
                biased;
                attempt = inner.create(request, expect, Some(&mut waiting)) => Some(attempt?),
                () = sleep_until(deadline) => None,
            };
            let attempt = match attempt {
                Some(attempt) => attempt,
                None => {
                    waiting.give_up().await;
                    return Err(given_up());
                }
            };
            match attempt {
                Attempt::Granted(lease) => {
                    if after_silence {
                        inner.stats.grants_after_recheck.fetch_add(1, Ordering::Relaxed);
                    }
                    // Others may be waiting too: this lease's release offers it to them.
                    inner.note_found_held(&encoded);
                    // Leaving takes a send to the connection: a caller gone by then must not
                    // strand the lease.
                    let unclaimed = Unclaimed { inner, lease: Some(lease) };
                    waiting.granted().await;
                    return Ok(unclaimed.claim());
                }
                Attempt::Woken(wake) => {
                    (expect, after_silence) = (wake.into(), false);
                    continue;
                }
                Attempt::Held => {}
            }
            counted.get_or_insert_with(|| inner.stats.waiting.count());
            inner.note_found_held(&encoded);
            (expect, after_silence) = tokio::select! {
                biased;
                wake = waiting.next() => (wake.into(), false),
                () = sleep_until(deadline) => {
                    waiting.give_up().await;
                    return Err(timed_out());
                }
                () = tokio::time::sleep(RECHECK_AFTER) => (Expect::Read, true),
            };
        }
    }
}

/// A create on the wire. Dropped before its answer (the acquire was cancelled, or its wait
/// bound ran out), it leaves a task that awaits the answer and removes the entry if it was
/// stored: nobody will ever use that grant. An answer that never comes (indeterminate) is
/// handled alike. A create that takes over an offered lease tells the offering holder how
/// it went (`answer_to`), on either path.
pub(super) struct PendingCreate<'a> {
    inner: &'a Arc<Inner>,
    key: &'a str,
    encoded_key: &'a str,
    owner: OwnerToken,
    ack: Option<<PublishAckFuture as IntoFuture>::IntoFuture>,
    answer_to: Option<async_nats::Subject>,
}

impl PendingCreate<'_> {
    async fn answer(mut self) -> Result<Published, LockError> {
        let ack = self.ack.as_mut().expect("awaited once");
        let answer = published("acquire", ack.await);
        self.ack = None;
        if let Err(LockError::Indeterminate { .. }) = answer {
            // It may have been stored; nobody learnt the revision. Free it if so (if this
            // fails too, the server's TTL frees it).
            self.inner.release_owner_later(self.key, self.owner);
        }
        if let Some(reply) = self.answer_to.take() {
            let taken = matches!(answer, Ok(Published::Stored(_)));
            wakeups::answer(&self.inner.js.client(), reply, taken).await;
        }
        answer
    }
}

impl Drop for PendingCreate<'_> {
    fn drop(&mut self) {
        let Some(ack) = self.ack.take() else { return };
        let (inner, key, encoded_key, owner, answer_to) =
            (self.inner.clone(), self.key.to_owned(), self.encoded_key.to_owned(), self.owner, self.answer_to.take());
        cleanup::spawn(async move {
            let answer = published("acquire", ack.await);
            // The offering holder's lease is gone if the take-over was stored, even though
            // nobody will use the grant.
            if let Some(reply) = answer_to {
                wakeups::answer(&inner.js.client(), reply, matches!(answer, Ok(Published::Stored(_)))).await;
            }
            match answer {
                // Revision-checked: if anything followed the entry, it is not ours to touch.
                Ok(Published::Stored(revision)) => {
                    let _ = inner.purge(&encoded_key, revision).await;
                }
                Ok(Published::Conflict { .. }) => {}
                Err(_) => {
                    let _ = inner.release_owner(&key, owner).await;
                }
            }
        });
    }
}

/// A grant not yet handed to the caller: released if dropped before [`Unclaimed::claim`].
pub(super) struct Unclaimed<'a> {
    inner: &'a Arc<Inner>,
    lease: Option<Lease>,
}

impl Unclaimed<'_> {
    fn claim(mut self) -> Lease {
        self.lease.take().expect("a lease is claimed once")
    }
}

impl Drop for Unclaimed<'_> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.inner.release_owner_later(lease.key(), lease.owner());
        }
    }
}
