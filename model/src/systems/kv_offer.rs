//! The NATS locker's wake-up protocol as `impls` runs it: a KV lock (as in [`super::kv_watch`])
//! whose waiters form a queue group, so each removal is announced to **one** waiter, and
//! whose holders release by **offering** their lease to one waiter before they purge it.
//!
//! - **The store**: one key per lock; `Create(key, token)` succeeds iff the key is free and
//!   returns the entry's revision (the fencing token); a lease has a server TTL, a timer
//!   that may fire at any moment and removes it; `Delete(key, revision)` removes the entry
//!   only if it is still at that revision; `TakeOver(key, token, revision)` rewrites the
//!   entry as the taker's lease, at a new revision, only if it is still the lease at
//!   `revision` (a KV update with the last revision expected).
//! - **The waiters' queue group** (core NATS): a client joins before its first look, leaves
//!   once it holds the key (the store drops it from the group with the grant). Every removal
//!   (a release's purge, a TTL's expiry) is announced to exactly one member, and a holder's
//!   offer is handed to exactly one member, or answered `NoResponders` if there is none.
//! - **Acquire**: join, then create; if the key exists, wait. A waiter that receives a
//!   removal notice creates again; one that receives an offer takes the lease over and
//!   answers the holder `Taken`, or, refused (the lease had changed), answers `Declined` and
//!   creates (the impl reads the key and creates if it is free: on a store whose create
//!   succeeds iff the key is free, that is the same). A wake-up that finds its member not
//!   waiting (its create or take-over still on the wire, or holding) is not acted on: an
//!   offer is declined; a notice is dropped, because the look on the wire is answered after
//!   the removal it announces (rule 2 of the impl's "Why no wake-up is lost").
//! - **Release by offer**: the holder offers its lease at its revision and arms its offer
//!   timer. `Taken`: released. `Declined`, `NoResponders`, or the timer firing first (no
//!   answer in time, which a model may decide at any moment): it deletes revision-checked,
//!   and that removal is announced as every removal is. A late answer is ignored. The
//!   take-over and the delete both expect the offered revision, so exactly one of them can
//!   be stored. Until it is answered or gives up, the holder has ended its cycle but not its
//!   release ([`Algorithm::still_releasing`]): it still takes messages.
//!
//! The flawed variant (`kv-offer-unchecked`) takes over without expecting the revision: an
//! offer that outlives its lease (the TTL ran out, another waiter created the key) then
//! overwrites the new holder's lease. That needs three clients.
//!
//! **How "exactly one member" is modelled.** When a removal or an offer is announced, the
//! router arms one `Deliver` timer per current member; the first to fire hands the
//! announcement to its member and disarms the others. Timers fire in any order, so every
//! choice of member is explored. Choosing when the timer fires rather than when the
//! announcement is made changes nothing a client can see: the announcement still travels
//! to a member of the group as it was then (one that left meanwhile ignores it, as a client
//! whose subscription ended does). An empty group drops a notice.
//!
//! **Crashes.** A client may crash (once per run). The server's failure detector notices a
//! crashed client's connection at some later moment and drops it from the groups (NATS
//! drops a dead connection's subscriptions); its lease, if it held one, stays until its
//! TTL. Core NATS delivers at most once, so a waiter that crashes may take a wake-up with
//! it: one routed to it, or one it took and had not acted on yet (a notice that came while
//! its take-over was on the wire). A holder whose offer is lost so recovers by its offer
//! timer; the other waiters by their **recheck** (the impl's `RECHECK_AFTER`, 1 s): a
//! waiter's timer, armed while it waits, on which it creates again. Liveness counts the
//! recheck as pending only once a client crashed while acquiring
//! ([`Algorithm::is_recheck`]): in every other run — with no crash, or with a crashed
//! holder — a waiter must be woken by a notice or an offer, so the no-lost-wake-up and
//! crash-liveness checks still catch a protocol that loses one. (The recheck may fire at
//! any moment in every run, as the impl's does: safety is checked with it.)
//!
//! Left out: a waiter that gives up (its pass-on `Recheck` notice, its declining of offers
//! on the way out), reconnects, the impl's guess of the last revision and its read after a
//! refused create (a create here is answered with the key's state), the impl's keeping of a
//! wake-up that arrives while its look is on the wire (`Waiting::arrived`: it acts on it
//! after a refusal, which saves a read; here it is dropped or declined, which the argument
//! above shows loses nothing), the impl's choice not to offer when no waiter was seen
//! lately (a release here always offers), and clusters. A holder that forgets the fallback
//! delete is not a liveness flaw in this model: its lease's TTL frees the key and is
//! announced (the waiters only wait longer), so no variant of that is registered.
//!
//! Source: `impls/src/nats/wakeups.rs` ("Why no wake-up is lost", "Hand-off by offer") and
//! `impls/src/nats.rs`; NATS KV `Create`/`Update`/`Delete` with the last revision, per-message
//! TTLs (nats-server 2.11+), core NATS queue groups and no-responders.

use std::collections::BTreeSet;

use stateright::actor::Id;

use super::actor::{Algorithm, Event, Fence, Key, Me, Outbox, Setup, Token};
use super::lease_table::{Lease, LeaseTable, ReleaseCheck};
use super::symmetry::{Rename, Renaming};

/// The KV lock with wake-one notices and hand-off by offer.
#[derive(Clone, Copy, Debug)]
pub struct KvOffer {
    /// Whether the store's take-over expects the offered revision (correct) or rewrites
    /// the key whatever holds it (flawed).
    pub take_over_checked: bool,
    /// Whether a holder whose offer was not taken deletes its lease (correct) or leaves it
    /// to its TTL (flawed).
    pub delete_after_failed_offer: bool,
}

/// Messages of the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// Join the key's queue group of waiters.
    Join(Key),
    /// Create the key's entry if the key is free, with a TTL.
    Create(Key, Token),
    /// The caller now holds the key at this revision (created or taken over).
    Granted(Key, Fence),
    /// The key is held.
    Exists(Key),
    /// Delete the key's entry if it is still at this revision.
    Delete(Key, Fence),
    /// To one waiter: the key's entry was removed.
    Removed(Key),
    /// Holder to the group: hand my lease at this revision to one waiter.
    Offer(Key, Fence),
    /// To one waiter: this holder offers its lease at this revision.
    Offered(Key, Fence, Id),
    /// To a holder: its offer found nobody in the group.
    NoResponders(Key),
    /// Rewrite the key's entry as this token's lease if it is still at this revision.
    TakeOver(Key, Token, Fence),
    /// The take-over was refused: the entry had changed.
    Refused(Key),
    /// Taker to holder: the take-over is stored.
    Taken(Key),
    /// Taker to holder: the take-over was refused (or the taker was not waiting).
    Declined(Key),
}

/// What the router hands to one member of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Announcement {
    /// The removal of the entry at this revision.
    Removed(Fence),
    /// A holder's offer of its lease at this revision.
    Offer {
        /// The offered lease's revision.
        revision: Fence,
        /// The holder, to be answered.
        holder: Id,
    },
}

/// Timers of the store, the router, and the clients.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Store: the entry's TTL runs out and the store removes it.
    Purge(Key, Token),
    /// Router: hands the announcement to this member (the first such timer to fire wins).
    Deliver(Key, Id, Announcement),
    /// Server: notices that this client's connection dropped.
    Disconnect(u8),
    /// Holder: no answer to its offer in time.
    OfferTimeout,
    /// Waiter: looks at the key again on its own.
    Recheck,
}

/// The server: the KV store and the core-NATS router.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Server {
    /// Per key the entry and its revision counter; the watchers are the queue group.
    pub table: LeaseTable,
    /// Ghost: clients whose dropped connection the server acted on.
    pub dropped: BTreeSet<u8>,
}

/// A client's protocol state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Client {
    /// Its last look found the key held: it waits for a notice, an offer, or its recheck.
    pub waiting: bool,
    /// The revision it holds the key at.
    pub revision: Option<Fence>,
    /// It is taking over the lease this holder offered, and answers it once the store decided.
    pub taking_over: Option<Id>,
    /// It released by offering its lease at this revision, and awaits the answer.
    pub offered: Option<Fence>,
}

impl KvOffer {
    /// Hands an announcement to one member of `key`'s group; to none if the group is empty.
    fn announce(&self, table: &LeaseTable, key: Key, announcement: Announcement, out: &mut Outbox<Self>) -> bool {
        let members = table.watchers(key);
        for member in &members {
            out.set_timer(Timer::Deliver(key, *member, announcement));
        }
        !members.is_empty()
    }

    fn removed(&self, table: &LeaseTable, key: Key, lease: Lease, out: &mut Outbox<Self>) {
        self.announce(table, key, Announcement::Removed(lease.fence), out);
    }

    /// The store's take-over: the entry becomes `token`'s lease at a new revision if it is
    /// still the lease at `revision` (or, unchecked, whatever holds the key). Returns the new
    /// lease and the one it replaced.
    fn take_over(
        &self,
        table: &mut LeaseTable,
        key: Key,
        token: Token,
        revision: Fence,
    ) -> Option<(Lease, Option<Lease>)> {
        let before = table.holder(key);
        if self.take_over_checked && before.is_none_or(|lease| lease.fence != revision) {
            return None;
        }
        if let Some(replaced) = before.filter(|lease| lease.fence != revision)
            && table.foreign_release.is_none()
        {
            table.foreign_release = Some((replaced.token, token));
        }
        let slot = table.slot(key);
        slot.last_fence += 1;
        let lease = Lease { token, fence: slot.last_fence };
        slot.holder = Some(lease);
        // The ghost speaks of the token's latest lease only.
        table.expired.remove(&token);
        Some((lease, before))
    }

    /// A holder whose offer was not taken falls back to the revision-checked delete.
    fn offer_not_taken(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) {
        let Some(revision) = client.offered.take() else { return };
        out.cancel_timer(Timer::OfferTimeout);
        if self.delete_after_failed_offer {
            out.send(setup.server(0), Msg::Delete(me.key, revision));
        }
    }

    /// A waiter stops waiting to act on a wake-up.
    fn stop_waiting(client: &mut Client, out: &mut Outbox<Self>) -> bool {
        let was = std::mem::take(&mut client.waiting);
        if was {
            out.cancel_timer(Timer::Recheck);
        }
        was
    }
}

impl Algorithm for KvOffer {
    type Msg = Msg;
    type Timer = Timer;
    type Server = Server;
    type Client = Client;

    /// Clients are told apart only by their tokens and connections: the router arms a timer
    /// per member, so which member it picks is left to the order timers fire in; every
    /// client has its own failure detector.
    fn clients_interchangeable(&self, _: &Setup) -> bool {
        true
    }

    fn still_releasing(client: &Client) -> bool {
        client.offered.is_some()
    }

    fn server_start(&self, setup: &Setup, _: Id, _: u8, out: &mut Outbox<Self>) -> Server {
        out.watch_connections(setup, Timer::Disconnect);
        Server::default()
    }

    fn server_msg(&self, setup: &Setup, _: Id, server: &mut Server, src: Id, msg: Msg, out: &mut Outbox<Self>) {
        // Nothing more arrives on a connection the server has seen drop (a join still on its
        // way would otherwise put the crashed client back in the group).
        if setup.from_dropped_connection(src, &server.dropped) {
            return;
        }
        let table = &mut server.table;
        match msg {
            Msg::Join(key) => table.watch(key, src),
            Msg::Create(key, token) => match table.try_acquire(key, token) {
                Some(lease) => {
                    table.unwatch(key, src);
                    out.set_timer(Timer::Purge(key, token));
                    out.send(src, Msg::Granted(key, lease.fence));
                }
                None => out.send(src, Msg::Exists(key)),
            },
            Msg::TakeOver(key, token, revision) => match self.take_over(table, key, token, revision) {
                Some((lease, replaced)) => {
                    if let Some(replaced) = replaced {
                        out.cancel_timer(Timer::Purge(key, replaced.token));
                    }
                    table.unwatch(key, src);
                    out.set_timer(Timer::Purge(key, token));
                    out.send(src, Msg::Granted(key, lease.fence));
                }
                None => out.send(src, Msg::Refused(key)),
            },
            Msg::Delete(key, revision) => {
                if let Some(lease) = table.release(key, ReleaseCheck::Fence(revision)) {
                    out.cancel_timer(Timer::Purge(key, lease.token));
                    self.removed(table, key, lease, out);
                }
            }
            Msg::Offer(key, revision) => {
                if !self.announce(table, key, Announcement::Offer { revision, holder: src }, out) {
                    out.send(src, Msg::NoResponders(key));
                }
            }
            Msg::Granted(..)
            | Msg::Exists(_)
            | Msg::Removed(_)
            | Msg::Offered(..)
            | Msg::NoResponders(_)
            | Msg::Refused(_)
            | Msg::Taken(_)
            | Msg::Declined(_) => {}
        }
    }

    fn server_timer(&self, setup: &Setup, _: Id, server: &mut Server, timer: &Timer, out: &mut Outbox<Self>) {
        let table = &mut server.table;
        match *timer {
            Timer::Purge(key, token) => {
                if let Some(lease) = table.expire(key, token) {
                    self.removed(table, key, lease, out);
                }
            }
            Timer::Deliver(key, member, announcement) => {
                for client in 0..setup.clients {
                    out.cancel_timer(Timer::Deliver(key, setup.client(client), announcement));
                }
                let msg = match announcement {
                    Announcement::Removed(_) => Msg::Removed(key),
                    Announcement::Offer { revision, holder } => Msg::Offered(key, revision, holder),
                };
                out.send(member, msg);
            }
            Timer::Disconnect(client) => {
                server.dropped.insert(client);
                let id = setup.client(client as usize);
                for slot in table.slots.values_mut() {
                    slot.watchers.remove(&id);
                }
            }
            Timer::OfferTimeout | Timer::Recheck => {}
        }
    }

    fn client_acquire(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) {
        *client = Client::default();
        out.send(setup.server(0), Msg::Join(me.key));
        out.send(setup.server(0), Msg::Create(me.key, me.token));
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
        let store = setup.server(0);
        match msg {
            Msg::Granted(key, revision) => {
                client.revision = Some(revision);
                if let Some(holder) = client.taking_over.take() {
                    out.send(holder, Msg::Taken(key));
                }
                return Event::Granted(Some(revision));
            }
            Msg::Exists(_) => {
                client.waiting = true;
                out.set_timer(Timer::Recheck);
            }
            Msg::Removed(key) => {
                if Self::stop_waiting(client, out) {
                    out.send(store, Msg::Create(key, me.token));
                }
            }
            Msg::Offered(key, revision, holder) => {
                if Self::stop_waiting(client, out) {
                    client.taking_over = Some(holder);
                    out.send(store, Msg::TakeOver(key, me.token, revision));
                } else {
                    out.send(holder, Msg::Declined(key));
                }
            }
            Msg::Refused(key) => {
                if let Some(holder) = client.taking_over.take() {
                    out.send(holder, Msg::Declined(key));
                }
                out.send(store, Msg::Create(key, me.token));
            }
            Msg::Taken(_) => {
                if client.offered.take().is_some() {
                    out.cancel_timer(Timer::OfferTimeout);
                }
            }
            Msg::Declined(_) | Msg::NoResponders(_) => self.offer_not_taken(setup, me, client, out),
            Msg::Join(_) | Msg::Create(..) | Msg::Delete(..) | Msg::Offer(..) | Msg::TakeOver(..) => {}
        }
        let _ = src;
        Event::Nothing
    }

    fn client_timer(&self, setup: &Setup, me: Me, client: &mut Client, timer: &Timer, out: &mut Outbox<Self>) -> Event {
        match timer {
            Timer::OfferTimeout => self.offer_not_taken(setup, me, client, out),
            Timer::Recheck => {
                if Self::stop_waiting(client, out) {
                    out.send(setup.server(0), Msg::Create(me.key, me.token));
                }
            }
            Timer::Purge(..) | Timer::Deliver(..) | Timer::Disconnect(_) => {}
        }
        Event::Nothing
    }

    fn client_release(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) {
        if let Some(revision) = client.revision.take() {
            client.offered = Some(revision);
            out.send(setup.server(0), Msg::Offer(me.key, revision));
            out.set_timer(Timer::OfferTimeout);
        }
    }

    fn holds(&self, server: &Server, token: Token) -> bool {
        server.table.slots.values().any(|slot| slot.holder.is_some_and(|l| l.token == token))
    }

    fn lease_expired(&self, server: &Server, token: Token) -> bool {
        server.table.expired.contains(&token)
    }

    fn foreign_release(&self, server: &Server) -> bool {
        server.table.foreign_release.is_some()
    }

    fn dropped_connection(&self, server: &Server, client: u8) -> bool {
        server.dropped.contains(&client)
    }

    fn failure_detector_of(&self, timer: &Timer) -> Option<u8> {
        match timer {
            Timer::Disconnect(client) => Some(*client),
            Timer::Purge(..) | Timer::Deliver(..) | Timer::OfferTimeout | Timer::Recheck => None,
        }
    }

    fn is_recheck(&self, timer: &Timer) -> bool {
        *timer == Timer::Recheck
    }
}

impl Rename for Msg {
    fn rename(&self, r: &Renaming) -> Self {
        match *self {
            Msg::Create(key, token) => Msg::Create(key, r.token(token)),
            Msg::TakeOver(key, token, revision) => Msg::TakeOver(key, r.token(token), revision),
            Msg::Offered(key, revision, holder) => Msg::Offered(key, revision, r.id(holder)),
            Msg::Join(_)
            | Msg::Granted(..)
            | Msg::Exists(_)
            | Msg::Delete(..)
            | Msg::Removed(_)
            | Msg::Offer(..)
            | Msg::NoResponders(_)
            | Msg::Refused(_)
            | Msg::Taken(_)
            | Msg::Declined(_) => self.clone(),
        }
    }
}

impl Rename for Announcement {
    fn rename(&self, r: &Renaming) -> Self {
        match *self {
            Announcement::Removed(_) => *self,
            Announcement::Offer { revision, holder } => Announcement::Offer { revision, holder: r.id(holder) },
        }
    }
}

impl Rename for Timer {
    fn rename(&self, r: &Renaming) -> Self {
        match self {
            Timer::Purge(key, token) => Timer::Purge(*key, r.token(*token)),
            Timer::Deliver(key, member, announcement) => Timer::Deliver(*key, r.id(*member), announcement.rename(r)),
            Timer::Disconnect(client) => Timer::Disconnect(r.client(*client)),
            Timer::OfferTimeout | Timer::Recheck => self.clone(),
        }
    }
}

impl Rename for Server {
    fn rename(&self, r: &Renaming) -> Self {
        Server { table: self.table.rename(r), dropped: self.dropped.iter().map(|c| r.client(*c)).collect() }
    }
}

impl Rename for Client {
    fn rename(&self, r: &Renaming) -> Self {
        Client { taking_over: self.taking_over.map(|id| r.id(id)), ..self.clone() }
    }
}
