//! A lock on a key-value store with revisions and watches (NATS JetStream KV, etcd):
//! `create(key, token)` succeeds only if the key is absent and returns the entry's
//! revision, which serves as the fencing token; the release is a delete checked against
//! that revision; the key carries a TTL after which the store purges it; a waiter watches
//! the key and retries its create when it sees a delete or purge.
//!
//! - **watch before the try** (correct): the watch is in place before the failed create, so
//!   any later delete reaches the waiter. This is the plain design the NATS locker in `impls`
//!   grew from; its current design — waiters in a queue group woken one per removal, release
//!   by offering the lease to one waiter — is [`super::kv_offer`];
//! - **watch after the try** (flawed; the original Go NATS locker): a delete that lands
//!   between the failed create and the watch is never seen, and the waiter sleeps forever
//!   — a lost wake-up.
//!
//! Source: NATS KV `Create`/`Delete` with `LastRevision`, per-message TTLs
//! (nats-server 2.11+); the seeds' Go NATS locker for the flawed order.

use stateright::actor::Id;

use super::actor::{Algorithm, Event, Fence, Key, Me, Outbox, Setup, Token};
use super::lease_table::{LeaseTable, ReleaseCheck};
use super::symmetry::{Rename, Renaming};

/// The KV-store lock.
#[derive(Clone, Copy, Debug)]
pub struct KvWatch {
    /// Watch before the first create (correct) or only after it failed (flawed).
    pub watch_first: bool,
}

/// Messages of the KV protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// Start watching the key.
    Watch(Key),
    /// Create the key if absent, with a TTL.
    Create(Key, Token),
    /// Created at this revision.
    Created(Key, Fence),
    /// The key exists.
    Exists(Key),
    /// Delete the key if it is still at this revision.
    Delete(Key, Fence),
    /// Watch event: the key was deleted or purged.
    Deleted(Key),
}

/// Store timers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The entry's TTL runs out and the store purges it.
    Purge(Key, Token),
}

/// A client's protocol state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Client {
    /// Got `Exists`, waiting for a delete event.
    pub waiting: bool,
    /// The revision of the entry it created.
    pub revision: Option<Fence>,
}

fn notify(table: &LeaseTable, key: Key, out: &mut Outbox<KvWatch>) {
    for watcher in table.watchers(key) {
        out.send(watcher, Msg::Deleted(key));
    }
}

impl Algorithm for KvWatch {
    type Msg = Msg;
    type Timer = Timer;
    type Server = LeaseTable;
    type Client = Client;

    /// Clients are told apart only by their tokens and connections.
    fn clients_interchangeable(&self, _: &Setup) -> bool {
        true
    }

    fn server_start(&self, _: &Setup, _: Id, _: u8, _: &mut Outbox<Self>) -> LeaseTable {
        LeaseTable::default()
    }

    fn server_msg(&self, _: &Setup, _: Id, table: &mut LeaseTable, src: Id, msg: Msg, out: &mut Outbox<Self>) {
        match msg {
            Msg::Watch(key) => table.watch(key, src),
            Msg::Create(key, token) => match table.try_acquire(key, token) {
                Some(lease) => {
                    // The client stops watching once it holds the key.
                    table.unwatch(key, src);
                    out.set_timer(Timer::Purge(key, token));
                    out.send(src, Msg::Created(key, lease.fence));
                }
                None => out.send(src, Msg::Exists(key)),
            },
            Msg::Delete(key, revision) => {
                if let Some(lease) = table.release(key, ReleaseCheck::Fence(revision)) {
                    out.cancel_timer(Timer::Purge(key, lease.token));
                    notify(table, key, out);
                }
            }
            Msg::Created(..) | Msg::Exists(_) | Msg::Deleted(_) => {}
        }
    }

    fn server_timer(&self, _: &Setup, _: Id, table: &mut LeaseTable, timer: &Timer, out: &mut Outbox<Self>) {
        let Timer::Purge(key, token) = *timer;
        if table.expire(key, token).is_some() {
            notify(table, key, out);
        }
    }

    fn client_acquire(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) {
        *client = Client::default();
        if self.watch_first {
            out.send(setup.server(0), Msg::Watch(me.key));
        }
        out.send(setup.server(0), Msg::Create(me.key, me.token));
    }

    fn client_msg(&self, setup: &Setup, me: Me, client: &mut Client, _: Id, msg: Msg, out: &mut Outbox<Self>) -> Event {
        match msg {
            Msg::Created(_, revision) => {
                client.revision = Some(revision);
                Event::Granted(Some(revision))
            }
            Msg::Exists(key) => {
                client.waiting = true;
                if !self.watch_first {
                    out.send(setup.server(0), Msg::Watch(key));
                }
                Event::Nothing
            }
            Msg::Deleted(key) if client.waiting => {
                client.waiting = false;
                out.send(setup.server(0), Msg::Create(key, me.token));
                Event::Nothing
            }
            _ => Event::Nothing,
        }
    }

    fn client_release(&self, setup: &Setup, me: Me, client: &mut Client, out: &mut Outbox<Self>) {
        if let Some(revision) = client.revision.take() {
            out.send(setup.server(0), Msg::Delete(me.key, revision));
        }
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
            Msg::Create(key, token) => Msg::Create(key, r.token(token)),
            Msg::Watch(_) | Msg::Created(..) | Msg::Exists(_) | Msg::Delete(..) | Msg::Deleted(_) => self.clone(),
        }
    }
}

impl Rename for Timer {
    fn rename(&self, r: &Renaming) -> Self {
        let Timer::Purge(key, token) = *self;
        Timer::Purge(key, r.token(token))
    }
}

impl Rename for Client {
    fn rename(&self, _: &Renaming) -> Self {
        self.clone()
    }
}
