//! Locks over several independent Redis instances, each a [`LeaseTable`] with
//! `SET NX PX`, an `INCR` fencing counter per key, token-checked release and keyspace
//! notifications — the two lockers of `impls/src/redis/multi.rs`.
//!
//! - **all in order** (`RedisAllLocker`; the seeds' Go multi-Redis package): acquire
//!   instance 0, then 1, …; on a busy instance, roll back the ones already taken and wait
//!   for that instance to free. Holding *every* instance means any two holders meet on
//!   every instance, so one instance restarting without persistence cannot produce a
//!   double grant. The fencing token is the **first instance's counter**: every grant holds
//!   instance 0, so without faults its counter orders the grants. A restart of instance 0
//!   without persistence resets that counter and tokens repeat — which the impl declares
//!   (`fencing_survives_restart: false`).
//! - **majority quorum** (`RedlockLocker`; Redlock,
//!   <https://redis.io/docs/latest/develop/use/patterns/distributed-locks/>): ask every
//!   instance at once and wait for every answer; with a majority of grants, the token is
//!   the largest counter `M` among them, and the client **writes it back**: `RAISE_FENCE`
//!   on each instance that granted raises that instance's counter to at least `M`, but only
//!   if the caller's token still holds the lock there. The lock is used only if a majority
//!   of the write-backs succeeded; otherwise (and without a majority of grants) the client
//!   releases what it got and waits for a wake-up. Any later majority shares an instance
//!   with the write-back's majority, whose counter it can only increment after the lock
//!   there is gone, so after the write-back: its token exceeds `M`. Kleppmann ("How to do
//!   distributed locking", 2016) showed two ways Redlock breaks exclusion: an instance that
//!   restarts without persistence forgets a lease and grants it again to a second majority;
//!   and a client that pauses past its lease keeps acting on it.
//!
//! What the checks find (`lockcheck model SYSTEM`; exhaustive with 2 clients):
//!
//! - all in order, no faults (`multi-all`): every property holds, with 3 clients too.
//! - Redlock, no faults (`redlock`): every property holds, with 3 clients too (exhaustive,
//!   without a bound on split-vote rounds: without counters the rounds repeat states).
//! - all in order, one restart (`multi-all-restart`): exclusion holds, but a restart of
//!   instance 0 resets the counter the tokens come from, and the next holder gets a token
//!   handed out before ("fencing tokens never reused" violated) — as the impl declares.
//! - Redlock with a restart: exclusion is violated (both believed and at the resource);
//!   with the write-back and a fenced resource tokens still repeat — the restart wipes the
//!   write-back with the counter — and the resource accepts both holders.
//! - Redlock with a pause: without fencing the resource sees interleaved critical
//!   sections; with the write-back and a fenced resource two clients still *believe* they
//!   hold the lock, but no token repeats and the resource rejects the paused holder's late
//!   writes. (Before the write-back was modelled, the largest counter of a majority did
//!   repeat: it can come from an instance the earlier holder's majority did not include.)
//!
//! A restarted instance drops its connections; clients see that as a wake-up and retry.
//! The impls retry a split vote after a short random delay; here a client that rolled back
//! waits for a wake-up, which the others' rollbacks send (each busy answer subscribed it).
//!
//! Reductions: the majority lock's instances are interchangeable (checked with instance
//! symmetry, [`super::symmetry`]); where no fencing is checked the counters are left out
//! ([`MultiInstance::counters`]); where they are modelled, Redlock's split-vote rounds are
//! bounded ([`GRANTS_PER_CLIENT`]). And clients take the answers and wake-ups on their way
//! to them at once ([`super::symmetry::with_clients_caught_up`], a partial-order reduction
//! argued there): a client only tallies answers until the last one is in, so the order in
//! which it takes them, and when, leaves no trace that a property can see.
//!
//! Why that reduction matters: with 3 clients and 3 instances up to nine answers and a few
//! wake-ups are on their way at once (a breadth-first look at the first 400 000 states of
//! the 3-client `redlock` found typically 7–10 messages in flight: 2–5 `SET NX` requests,
//! 2–6 answers, 1–3 wake-ups), and the states differed mostly in how far each client had got
//! in taking its answers — interleavings of steps no property can see. Split votes (each
//! instance granting a different client, all rolling back) then repeat those interleavings
//! round after round. Without the reduction the 3-client search did not finish (over 11.7
//! million states in 1 440 s, 24 GB: the depth-first search also carried each pending
//! state's path); with it, it is exhaustive in 56 088 states (about 5 s in a release build,
//! 4 s as a debug-build test), no bound on the rounds needed. With 2 clients: 94 states
//! (596 with the other reductions only, 8 406 unreduced).

use std::collections::BTreeMap;

use stateright::actor::Id;

use super::actor::{Algorithm, Event, Fence, Key, Me, Outbox, Setup, Token};
use super::lease_table::{LeaseTable, ReleaseCheck};
use super::symmetry::{Rename, Renaming};

/// The bound on the grants an instance makes per key and client in a majority run whose
/// fencing counters are modelled (the fenced Redlock variants); see the `within_bounds` of
/// [`MultiInstance`]. Their verdicts ("holds" included) speak of the runs within it.
pub const GRANTS_PER_CLIENT: Fence = 2;

/// How a client combines the instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    /// Every instance, one after the other, with rollback.
    AllInOrder,
    /// A majority, asked in parallel (Redlock).
    Majority,
}

/// The multi-instance lock.
#[derive(Clone, Copy, Debug)]
pub struct MultiInstance {
    /// How instances are combined.
    pub combine: Combine,
    /// Whether instances expire leases. Needed only where a lease must end without its
    /// holder's release (a pause); elsewhere an expiry is just a release arriving late,
    /// and leaving it out keeps the state space small.
    pub ttl: bool,
    /// Whether the instances' fencing counters are modelled. Only where fencing is checked
    /// (a resource that checks tokens, the fencing property): elsewhere no property reads a
    /// counter and no step depends on one (the write-back succeeds or fails on the lock being
    /// held, not on the value), so every lease gets fence 1 — which also makes Redlock's
    /// split-vote rounds repeat states instead of raising the counters without end.
    pub counters: bool,
}

/// Each instance's TTL timers are those of the single-server protocol.
pub use super::redis_single::Timer;

/// Messages between clients and instances: the single-server protocol
/// ([`super::redis_single::Msg`]) plus Redlock's fencing write-back.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// `SET key token NX PX ttl` with `INCR` of the key's counter on a grant, subscribed to
    /// the key's notifications.
    SetNx(Key, Token),
    /// The lock was set here; this instance's counter is now at this value.
    Granted(Key, Fence),
    /// The key is held by someone else here; a notification will follow when it frees.
    Busy(Key),
    /// Keyspace notification: the key was deleted or expired (or the instance restarted).
    Freed(Key),
    /// Token-checked release.
    Release(Key, Token),
    /// `RAISE_FENCE`: if `token` still holds the key here, raise the key's counter to at
    /// least this fencing token.
    RaiseFence(Key, Token, Fence),
    /// `RAISE_FENCE`'s answer: whether the caller still held the key (and the counter was
    /// raised).
    Raised(Key, bool),
}

/// A client's protocol state for the current attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Client {
    /// An attempt or a hold is under way (replies after the release are stale).
    pub active: bool,
    /// The attempt succeeded: the client holds the lock until it releases, and what still
    /// arrives from the attempt (a wake-up) changes nothing.
    pub holding: bool,
    /// Instances that granted, with their counters.
    pub granted: BTreeMap<u8, Fence>,
    /// How many instances answered busy (a majority attempt only needs the count).
    pub busy: u8,
    /// Majority: every instance answered and a majority granted; the fencing token being
    /// written back to the instances that granted.
    pub writing_back: Option<Fence>,
    /// Write-backs answered: the caller still held the key there.
    pub raised: u8,
    /// Write-backs answered: the caller no longer held the key there.
    pub refused: u8,
    /// Rolled back; waiting for a wake-up.
    pub waiting: bool,
    /// A wake-up arrived while the attempt was still collecting replies.
    pub freed_seen: bool,
}

/// Wakes the key's subscribers, once: a subscriber is notified of the first free after its
/// busy answer and then dropped until its next busy answer subscribes it again. Nothing is
/// lost: a client that receives a wake-up from an instance always asks that instance again
/// before it can wait again (the wake-up either starts its next attempt or, arriving during
/// one, makes it retry at once), and if the instance is still busy the answer subscribes it
/// anew. Later notifications of the same instance in between would only repeat "retry after
/// this attempt". Keeping the subscription (as Redis does) lets them pile up without bound
/// on the channel of a client that is slow to read while others split votes forever.
fn notify(table: &mut LeaseTable, key: Key, out: &mut Outbox<MultiInstance>) {
    for watcher in table.watchers(key) {
        out.send(watcher, Msg::Freed(key));
    }
    table.slot(key).watchers.clear();
}

impl MultiInstance {
    fn start_attempt(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) {
        *client = Client { active: true, ..Client::default() };
        match self.combine {
            Combine::AllInOrder => out.send(setup.server(0), Msg::SetNx(me.key, me.token)),
            Combine::Majority => {
                for instance in setup.server_ids() {
                    out.send(instance, Msg::SetNx(me.key, me.token));
                }
            }
        }
    }

    /// Gives back what the attempt got and waits for a wake-up (or retries at once if one
    /// came during the attempt). The impls' Redlock sends the release to every instance; an
    /// instance that did not grant holds nothing of this token, so only those that granted
    /// are sent one here.
    fn roll_back(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) {
        for instance in client.granted.keys() {
            out.send(setup.server(*instance as usize), Msg::Release(me.key, me.token));
        }
        if client.freed_seen {
            self.start_attempt(setup, me, client, out);
        } else {
            *client = Client { active: true, waiting: true, ..Client::default() };
        }
    }

    /// After each answer of a parallel attempt, like the impls' `join_all`: once every
    /// instance answered, a majority of grants starts the write-back of their largest
    /// counter to each instance that granted; fewer means roll back.
    fn majority_reply(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) -> Event {
        if client.granted.len() + usize::from(client.busy) < setup.servers {
            return Event::Nothing;
        }
        if client.granted.len() < setup.servers / 2 + 1 {
            self.roll_back(setup, me, client, out);
            return Event::Nothing;
        }
        let fence = client.granted.values().copied().max().expect("a majority is not empty");
        if !self.counters && !setup.faults.server_restart {
            // Every RAISE_FENCE would find the lock held (only a restart, or an expiry during
            // the acquisition — outside the runs, see `Faults::pauses` — takes it away) and
            // would raise no modelled counter: the round could only delay the moment the
            // client holds, and a later hold shows no overlap that the earlier one does not.
            return self.granted(client, fence);
        }
        for instance in client.granted.keys() {
            out.send(setup.server(*instance as usize), Msg::RaiseFence(me.key, me.token, fence));
        }
        client.writing_back = Some(fence);
        Event::Nothing
    }

    /// After each write-back answer: once all are in, the lock is held if a majority of the
    /// instances still held it and took the floor; otherwise roll back.
    fn write_back_reply(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) -> Event {
        let Some(fence) = client.writing_back else { return Event::Nothing };
        if usize::from(client.raised + client.refused) < client.granted.len() {
            return Event::Nothing;
        }
        let majority = setup.servers / 2 + 1;
        if usize::from(client.raised) >= majority {
            return self.granted(client, fence);
        }
        self.roll_back(setup, me, client, out);
        Event::Nothing
    }

    /// The attempt has its lock, with this fencing token; of the attempt's bookkeeping only
    /// the instances that granted stay (their counters cleared: keeping them would only split
    /// states), for the release.
    fn granted(&self, client: &mut Client, fence: Fence) -> Event {
        let granted = client.granted.keys().map(|ix| (*ix, 0)).collect();
        *client = Client { active: true, holding: true, granted, ..Client::default() };
        Event::Granted(self.counters.then_some(fence))
    }
}

impl Algorithm for MultiInstance {
    type Msg = Msg;
    type Timer = Timer;
    type Server = LeaseTable;
    type Client = Client;

    /// Clients are told apart only by their tokens and connections; a restarted instance
    /// drops every client's connection alike.
    /// A holder returns before looking at any message (`client_msg`).
    const HOLDER_IGNORES_SERVERS: bool = true;

    /// A subscription only ever makes the instance send a wake-up.
    fn forget_subscriber(table: &mut LeaseTable, client: Id) {
        for slot in table.slots.values_mut() {
            slot.watchers.remove(&client);
        }
    }

    fn clients_interchangeable(&self, _: &Setup) -> bool {
        true
    }

    /// An answer only adds to the attempt's tally (the instances that granted, the busy
    /// count, the write-backs) and a wake-up only notes itself (`freed_seen`); what follows
    /// the last answer reads the whole tally, so the order in which a client takes its
    /// messages leaves no trace. A wake-up and the last answer commute too: taken first, the
    /// wake-up makes the rollback retry at once; taken second, it ends the wait the rollback
    /// began — the same new attempt either way (and a holder ignores it). Only a client
    /// crash could stop a client from taking what is on its way: no majority or in-order
    /// configuration has one.
    fn clients_take_replies_at_once(&self, setup: &Setup) -> bool {
        !setup.faults.client_crash
    }

    /// In a majority lock every instance is asked at once and every answer counts alike,
    /// so the instances are interchangeable (a restart may strike any of them, and each is
    /// as likely). In order, instance 0 is asked first and gives the token: not so.
    fn servers_interchangeable(&self, _: &Setup) -> bool {
        self.combine == Combine::Majority
    }

    /// Majority attempts can fail all at once (a split vote: with 3 clients each instance
    /// grants a different one) and then retry forever, every round raising the counters:
    /// real Redlock clients break the tie with a random delay, which a model cannot. Where
    /// the counters are modelled, runs are cut once an instance has granted a key more than
    /// `GRANTS_PER_CLIENT` times per client. Without counters (no fencing checked) the rounds
    /// repeat the same states and the search ends without a bound.
    fn within_bounds(&self, setup: &Setup, table: &LeaseTable) -> bool {
        self.combine == Combine::AllInOrder
            || !self.counters
            || table.slots.values().all(|slot| slot.last_fence <= GRANTS_PER_CLIENT * setup.clients as Fence)
    }

    fn server_start(&self, setup: &Setup, _: Id, restarts: u8, out: &mut Outbox<Self>) -> LeaseTable {
        if restarts > 0 {
            for client in 0..setup.clients {
                out.send(setup.client(client), Msg::Freed(setup.key_of(client)));
            }
        }
        LeaseTable::default()
    }

    fn server_msg(&self, _: &Setup, _: Id, table: &mut LeaseTable, src: Id, msg: Msg, out: &mut Outbox<Self>) {
        match msg {
            Msg::SetNx(key, token) => match table.try_acquire(key, token) {
                Some(lease) => {
                    table.unwatch(key, src);
                    if !self.counters {
                        // Every lease gets fence 1: no property reads them (see `counters`).
                        table.slot(key).last_fence = 0;
                    }
                    if self.ttl {
                        out.set_timer(Timer::Expire(key, token));
                    }
                    out.send(src, Msg::Granted(key, lease.fence));
                }
                None => {
                    table.watch(key, src);
                    out.send(src, Msg::Busy(key));
                }
            },
            Msg::Release(key, token) => {
                if let Some(lease) = table.release(key, ReleaseCheck::Token(token)) {
                    out.cancel_timer(Timer::Expire(key, lease.token));
                    notify(table, key, out);
                }
            }
            Msg::RaiseFence(key, token, fence) => {
                let held = table.raise_fence(key, token, if self.counters { fence } else { 0 });
                out.send(src, Msg::Raised(key, held));
            }
            Msg::Granted(..) | Msg::Busy(_) | Msg::Freed(_) | Msg::Raised(..) => {}
        }
    }

    fn server_timer(&self, _: &Setup, _: Id, table: &mut LeaseTable, timer: &Timer, out: &mut Outbox<Self>) {
        let Timer::Expire(key, token) = *timer;
        if table.expire(key, token).is_some() {
            notify(table, key, out);
        }
    }

    fn client_acquire(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) {
        self.start_attempt(setup, me, client, out);
    }

    fn client_msg(
        &self,
        setup: &Setup,
        me: Me,
        client: &mut Client,
        src: Id,
        msg: Msg,
        out: &mut Outbox<Self>,
    ) -> Event {
        if !client.active || client.holding {
            return Event::Nothing;
        }
        let Some(instance) = setup.server_ix(src) else { return Event::Nothing };
        let instance = instance as u8;
        match msg {
            Msg::Granted(_, fence) if !client.waiting => {
                client.granted.insert(instance, fence);
                match self.combine {
                    // The impls' all-instances locker: the token is the first instance's counter.
                    Combine::AllInOrder if client.granted.len() == setup.servers => {
                        let first = client.granted[&0];
                        self.granted(client, first)
                    }
                    Combine::AllInOrder => {
                        out.send(setup.server(instance as usize + 1), Msg::SetNx(me.key, me.token));
                        Event::Nothing
                    }
                    Combine::Majority => self.majority_reply(setup, me, client, out),
                }
            }
            Msg::Busy(_) if !client.waiting => {
                client.busy += 1;
                match self.combine {
                    Combine::AllInOrder => {
                        self.roll_back(setup, me, client, out);
                        Event::Nothing
                    }
                    Combine::Majority => self.majority_reply(setup, me, client, out),
                }
            }
            Msg::Raised(_, held) if client.writing_back.is_some() => {
                if held {
                    client.raised += 1;
                } else {
                    client.refused += 1;
                }
                self.write_back_reply(setup, me, client, out)
            }
            Msg::Freed(_) if client.waiting => {
                self.start_attempt(setup, me, client, out);
                Event::Nothing
            }
            Msg::Freed(_) => {
                client.freed_seen = true;
                Event::Nothing
            }
            _ => Event::Nothing,
        }
    }

    /// The impls release on every instance; those that did not grant hold nothing of this
    /// token (every answer was in before the client held), so only those that did are sent one.
    fn client_release(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) {
        for instance in client.granted.keys() {
            out.send(setup.server(*instance as usize), Msg::Release(me.key, me.token));
        }
        *client = Client::default();
    }

    fn holds(&self, table: &LeaseTable, token: Token) -> bool {
        table.slots.values().any(|slot| slot.holder.is_some_and(|l| l.token == token))
    }

    fn lease_expired(&self, table: &LeaseTable, token: Token) -> bool {
        table.expired.contains(&token)
    }

    fn foreign_release(&self, table: &LeaseTable) -> bool {
        table.foreign_release.is_some()
    }
}

impl Rename for Msg {
    fn rename(&self, r: &Renaming) -> Self {
        match *self {
            Msg::SetNx(key, token) => Msg::SetNx(key, r.token(token)),
            Msg::Release(key, token) => Msg::Release(key, r.token(token)),
            Msg::RaiseFence(key, token, fence) => Msg::RaiseFence(key, r.token(token), fence),
            Msg::Granted(..) | Msg::Busy(_) | Msg::Freed(_) | Msg::Raised(..) => self.clone(),
        }
    }
}

/// A client's attempt names instances (by index), never other clients. Where a renaming maps
/// several instances onto one (a signature erasing the servers), the largest counter stays:
/// the result must not depend on the order the instances are visited in.
impl Rename for Client {
    fn rename(&self, r: &Renaming) -> Self {
        let mut granted: Vec<(u8, Fence)> = self.granted.iter().map(|(ix, fence)| (r.server(*ix), *fence)).collect();
        granted.sort_unstable();
        Client { granted: granted.into_iter().collect(), ..self.clone() }
    }
}
