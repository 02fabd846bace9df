//! Locks over several independent Redis instances, each a [`LeaseTable`] with
//! `SET NX PX`, token-checked release and keyspace notifications.
//!
//! - **all in order** (the seeds' Go multi-Redis package): acquire instance 0, then 1, …;
//!   on a busy instance, roll back the ones already taken and wait for that instance to
//!   free. Holding *every* instance means any two holders meet on every instance, so one
//!   instance restarting without persistence cannot produce a double grant. The fencing
//!   token is the maximum of the instances' counters. That is *not* unique: rollbacks
//!   raise one counter and not the other, and once the instance with the highest counter
//!   restarts, a later holder can get the same maximum (found with 3 clients; the impls'
//!   all-instances locker takes its token from the first server instead).
//! - **majority quorum** (Redlock, <https://redis.io/docs/latest/develop/use/patterns/distributed-locks/>):
//!   ask all instances at once; a majority of grants is the lock, otherwise roll back and
//!   wait. Kleppmann ("How to do distributed locking", 2016) showed two ways it breaks:
//!   an instance that restarts without persistence forgets a lease and grants it again
//!   to a second majority; and a client that pauses past its lease keeps acting on it.
//!   A fenced resource stops neither: the fencing token (the maximum of the majority's
//!   counters) can repeat once an instance loses its counter, and even without restarts,
//!   since the maximum can come from an instance the earlier holder's majority did not
//!   include (the impls' Redlock writes the token back to its majority as a floor).
//!
//! A restarted instance drops its connections; clients see that as a wake-up and retry.

use std::collections::{BTreeMap, BTreeSet};

use stateright::actor::Id;

use super::actor::{Algorithm, Event, Fence, Key, Me, Outbox, Setup, Token};
use super::lease_table::{LeaseTable, ReleaseCheck};
use super::symmetry::{Rename, Renaming};

/// The bound on the grants an instance makes per key and client in a majority run; see
/// the `within_bounds` of [`MultiInstance`].
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
}

/// Each instance speaks the single-server protocol: messages between clients and instances,
/// and the instances' TTL timers, are those of [`super::redis_single`].
pub use super::redis_single::{Msg, Timer};

/// A client's protocol state for the current attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Client {
    /// An attempt or a hold is under way (replies after the release are stale).
    pub active: bool,
    /// The attempt succeeded: the client holds the lock until it releases, and what still
    /// arrives from the attempt (a late grant or busy, a wake-up) changes nothing.
    pub holding: bool,
    /// Instances that granted, with their counters.
    pub granted: BTreeMap<u8, Fence>,
    /// Instances that answered busy.
    pub busy: BTreeSet<u8>,
    /// Rolled back; waiting for a wake-up.
    pub waiting: bool,
    /// A wake-up arrived while the attempt was still collecting replies.
    pub freed_seen: bool,
}

fn notify(table: &LeaseTable, key: Key, out: &mut Outbox<MultiInstance>) {
    for watcher in table.watchers(key) {
        out.send(watcher, Msg::Freed(key));
    }
}

impl MultiInstance {
    fn start_attempt(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) {
        client.granted.clear();
        client.busy.clear();
        client.waiting = false;
        client.freed_seen = false;
        match self.combine {
            Combine::AllInOrder => out.send(setup.server(0), Msg::SetNx(me.key, me.token)),
            Combine::Majority => {
                for instance in setup.server_ids() {
                    out.send(instance, Msg::SetNx(me.key, me.token));
                }
            }
        }
    }

    fn roll_back(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) {
        for instance in client.granted.keys() {
            out.send(setup.server(*instance as usize), Msg::Release(me.key, me.token));
        }
        client.granted.clear();
        client.busy.clear();
        if client.freed_seen {
            self.start_attempt(setup, me, client, out);
        } else {
            client.waiting = true;
        }
    }

    /// After each reply of a parallel attempt: a majority of grants is the lock (once);
    /// all replies in without one means roll back.
    fn majority_reply(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) -> Event {
        let majority = setup.servers / 2 + 1;
        if client.granted.len() >= majority {
            return Self::granted(client);
        }
        if client.granted.len() + client.busy.len() == setup.servers {
            self.roll_back(setup, me, client, out);
        }
        Event::Nothing
    }

    /// The attempt has its lock: the fencing token, and the attempt's bookkeeping cleared
    /// (the release goes to every instance anyway, so nothing of it is needed any more, and
    /// keeping it would only split states).
    fn granted(client: &mut Client) -> Event {
        let fence = client.granted.values().copied().max();
        *client = Client { active: true, holding: true, ..Client::default() };
        Event::Granted(fence)
    }
}

impl Algorithm for MultiInstance {
    type Msg = Msg;
    type Timer = Timer;
    type Server = LeaseTable;
    type Client = Client;

    /// Clients are told apart only by their tokens and connections; a restarted instance
    /// drops every client's connection alike.
    fn clients_interchangeable(&self, _: &Setup) -> bool {
        true
    }

    /// Majority attempts can fail all at once (a split vote: with 3 clients each instance
    /// grants a different one) and then retry forever, every round raising the counters:
    /// real Redlock clients break the tie with a random delay, which a model cannot. Runs
    /// are cut once an instance has granted a key more than `GRANTS_PER_CLIENT` times per
    /// client. With 2 clients no run reaches the bound (the state count is the same without
    /// it); with more it bounds the split-vote rounds explored.
    fn within_bounds(&self, setup: &Setup, table: &LeaseTable) -> bool {
        self.combine == Combine::AllInOrder
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
            Msg::Granted(..) | Msg::Busy(_) | Msg::Freed(_) => {}
        }
    }

    fn server_timer(&self, _: &Setup, _: Id, table: &mut LeaseTable, timer: &Timer, out: &mut Outbox<Self>) {
        let Timer::Expire(key, token) = *timer;
        if table.expire(key, token).is_some() {
            notify(table, key, out);
        }
    }

    fn client_acquire(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) {
        client.active = true;
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
        let all = setup.servers;
        match msg {
            Msg::Granted(_, fence) if !client.waiting => {
                client.granted.insert(instance, fence);
                match self.combine {
                    Combine::AllInOrder if client.granted.len() == all => Self::granted(client),
                    Combine::AllInOrder => {
                        out.send(setup.server(instance as usize + 1), Msg::SetNx(me.key, me.token));
                        Event::Nothing
                    }
                    Combine::Majority => self.majority_reply(setup, me, client, out),
                }
            }
            Msg::Busy(_) if !client.waiting => {
                client.busy.insert(instance);
                match self.combine {
                    Combine::AllInOrder => {
                        self.roll_back(setup, me, client, out);
                        Event::Nothing
                    }
                    Combine::Majority => self.majority_reply(setup, me, client, out),
                }
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

    fn client_release(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) {
        for instance in setup.server_ids() {
            out.send(instance, Msg::Release(me.key, me.token));
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

/// A client's attempt names instances (by index), never other clients.
impl Rename for Client {
    fn rename(&self, _: &Renaming) -> Self {
        self.clone()
    }
}
